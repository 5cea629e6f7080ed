// SPDX-License-Identifier: Apache-2.0
// The ShareDescriptor of a pool from MakeSharedHostPool (include/flowkv/
// kv_pool_memory.h): what a process of the same host needs to map the
// pool's POSIX shared-memory objects. It arrives from a peer (inside a
// KvTransfer pool notice), so the parser checks everything before use.
//
// All integers little-endian; bytes = u32 length + the bytes.
//
//   "FKVS"  u16 version (1)
//   bytes boot_id (0..255: the exporter's HostBootId(), lib/common/
//                  host_identity.h)
//   u32 num_regions (1..kMaxHostShareRegions), then per region:
//     bytes name (2..255: "/" then at least one byte, no further "/" and
//                 no NUL: a shm_open name)
//     u64 size (> 0: the object's bytes the pool uses)
//
// No trailing bytes. No checksum: descriptors travel over UCX's reliable
// transports, and every field is validated. Whether the boot id is this
// host's, and whether the objects exist and are large enough, is checked by
// OpenPeer (Unavailable / InvalidArgument). Only processes of the same
// build exchange descriptors; another version is refused.
//
// Thread safety: thread-safe (pure functions and value types).

#ifndef FLOWKV_LIB_POOL_HOST_SHARE_DESCRIPTOR_H_
#define FLOWKV_LIB_POOL_HOST_SHARE_DESCRIPTOR_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace flowkv::internal {

inline constexpr std::string_view kHostShareMagic = "FKVS";
inline constexpr uint16_t kHostShareVersion = 1;
inline constexpr size_t kMaxHostShareRegions = 1024;
inline constexpr size_t kMaxHostShareBootIdBytes = 255;
inline constexpr size_t kMaxHostShareNameBytes = 255;  // NAME_MAX

struct HostShareRegion {
  std::string name;  // the shm_open name
  uint64_t size = 0;
  friend bool operator==(const HostShareRegion&,
                         const HostShareRegion&) = default;
};

struct HostShareDescriptor {
  std::string boot_id;
  std::vector<HostShareRegion> regions;
  friend bool operator==(const HostShareDescriptor&,
                         const HostShareDescriptor&) = default;
};

// REQUIRES: the descriptor obeys the limits above (ParseHostShareDescriptor
// of the result then gives an equal descriptor).
std::string EncodeHostShareDescriptor(const HostShareDescriptor& descriptor);

// InvalidArgument naming the field for anything else: bad magic, another
// version, truncation, a length or count outside its limit, a malformed
// name, a region of 0 bytes, trailing bytes.
absl::StatusOr<HostShareDescriptor> ParseHostShareDescriptor(
    std::string_view bytes);

}  // namespace flowkv::internal

#endif  // FLOWKV_LIB_POOL_HOST_SHARE_DESCRIPTOR_H_
