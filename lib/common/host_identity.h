// SPDX-License-Identifier: Apache-2.0
// HostBootId: which boot of which host this process runs in, for the pools
// whose share descriptors only a process of the same host can open
// (MakeSharedHostPool, lib/pool/; CudaPoolMemory, cuda/). Header-only so
// that flowkv_cuda, a library of its own, uses this very function.
//
// Thread safety: thread-safe.

#ifndef FLOWKV_LIB_COMMON_HOST_IDENTITY_H_
#define FLOWKV_LIB_COMMON_HOST_IDENTITY_H_

#include <fstream>
#include <string>

namespace flowkv::internal {

// This host's boot id (/proc/sys/kernel/random/boot_id without its newline),
// "" when it cannot be read. Processes that see the same one share
// /dev/shm and the GPUs unless their namespaces differ (opening a peer's
// pool then fails to find its objects: Unavailable).
inline std::string HostBootId() {
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string id;
  std::getline(in, id);
  return id;
}

}  // namespace flowkv::internal

#endif  // FLOWKV_LIB_COMMON_HOST_IDENTITY_H_
