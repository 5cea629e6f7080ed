// SPDX-License-Identifier: Apache-2.0
// Bounds checks and memcpy loops shared by the host pools
// (host_pool_memory.cc, shared_host_pool_memory.cc).
//
// Thread safety: thread-safe (pure functions over caller memory).

#ifndef FLOWKV_LIB_POOL_HOST_POOL_COPY_H_
#define FLOWKV_LIB_POOL_HOST_POOL_COPY_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "flowkv/kv_pool_memory.h"

namespace flowkv::internal {

// InvalidArgument (naming `what`) unless [offset, +length) lies in region
// `region` of a pool with region sizes `sizes`.
absl::Status CheckPoolRun(const char* what, const std::vector<uint64_t>& sizes,
                          uint32_t region, uint64_t offset, uint64_t length);

// Checks every copy, then copies pool -> host (`to_host`) or host -> pool;
// on an error nothing is copied.
absl::Status HostGatherScatter(const std::vector<uint8_t*>& bases,
                               const std::vector<uint64_t>& sizes,
                               const std::vector<PoolHostCopy>& copies,
                               bool to_host);

}  // namespace flowkv::internal

#endif  // FLOWKV_LIB_POOL_HOST_POOL_COPY_H_
