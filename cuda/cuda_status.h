// SPDX-License-Identifier: Apache-2.0
// The one place where CUDA runtime errors become absl::Status.

#ifndef FLOWKV_CUDA_CUDA_STATUS_H_
#define FLOWKV_CUDA_CUDA_STATUS_H_

#include <cuda_runtime_api.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace flowkv::internal {

// OK for cudaSuccess; otherwise a status whose message is
// "<what>: <cudaGetErrorName>: <cudaGetErrorString>" and whose code is
// FailedPrecondition when no usable GPU or driver is present,
// InvalidArgument for arguments CUDA rejects, ResourceExhausted for out of
// memory and Internal for everything else (including errors that leave the
// CUDA context unusable, such as an illegal address in an earlier kernel).
absl::Status CudaStatus(cudaError_t error, absl::string_view what);

}  // namespace flowkv::internal

#endif  // FLOWKV_CUDA_CUDA_STATUS_H_
