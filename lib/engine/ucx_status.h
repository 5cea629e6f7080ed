// SPDX-License-Identifier: Apache-2.0
// The one place where UCX status codes become absl::Status.
//
// Thread safety: thread-safe (pure functions).

#ifndef FLOWKV_LIB_ENGINE_UCX_STATUS_H_
#define FLOWKV_LIB_ENGINE_UCX_STATUS_H_

#include <string_view>
#include <ucs/type/status.h>

#include "absl/status/status.h"

namespace flowkv::internal {

// Maps `status` to the closest absl code; the message is
// "<what>: <UCX's description> (UCX status <n>)". UCS_OK gives OkStatus.
absl::Status UcxStatus(ucs_status_t status, std::string_view what);

}  // namespace flowkv::internal

#endif  // FLOWKV_LIB_ENGINE_UCX_STATUS_H_
