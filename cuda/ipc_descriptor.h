// SPDX-License-Identifier: Apache-2.0
// The ShareDescriptor of a CudaPoolMemory: what a process on the same host
// needs to open the pool through CUDA IPC. Private to flowkv_cuda.
//
// It arrives from a peer (inside a KvTransfer pool notice), so the parser
// checks everything before use.
//
// All integers little-endian; encoded and parsed with lib/common/byte_io.h.
//
//   "FKVCUDA"  u8 version (2)
//   u8 boot_id length (0..255), the boot id's bytes  (the exporter's
//                      HostBootId(), lib/common/host_identity.h)
//   u32 pid  u8[16] device UUID
//   u32 region count (1..kMaxIpcRegions), then per region (96 bytes):
//     u64 size (> 0)  u64 address in the exporter
//     u64 offset of the region in its allocation  u64 allocation size
//                      (offset + size <= allocation size)
//     u8[64] cudaIpcMemHandle_t (of the allocation: CUDA IPC shares whole
//                      allocations)
//   u64 checksum: FNV-1a (Fnv1a64) of every byte before it
//
// No trailing bytes. Whether the boot id is this host's, and whether the
// handles open, is checked by OpenPeer. Pure (no CUDA header): the tests and
// the fuzz target (tests/fuzz/cuda_ipc_descriptor_fuzz.cc) compile
// ipc_descriptor.cc without CUDA.

#ifndef FLOWKV_CUDA_IPC_DESCRIPTOR_H_
#define FLOWKV_CUDA_IPC_DESCRIPTOR_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace flowkv::cuda::internal {

inline constexpr uint32_t kMaxIpcRegions = 4096;
inline constexpr size_t kIpcHandleBytes = 64;  // CUDA_IPC_HANDLE_SIZE

// One region: [address, address + size) in the exporter, `offset` bytes into
// an allocation of `allocation_bytes` whose IPC handle is `handle` (regions
// of one allocation carry the same handle).
struct IpcRegion {
  uint64_t size = 0;
  uint64_t address = 0;
  uint64_t offset = 0;
  uint64_t allocation_bytes = 0;
  std::array<char, kIpcHandleBytes> handle{};
  friend bool operator==(const IpcRegion&, const IpcRegion&) = default;
};

struct IpcDescriptor {
  std::string boot_id;
  uint32_t pid = 0;
  std::array<uint8_t, 16> device_uuid{};
  std::vector<IpcRegion> regions;
  friend bool operator==(const IpcDescriptor&, const IpcDescriptor&) = default;
};

// REQUIRES: 1..kMaxIpcRegions regions (a boot id over 255 bytes is cut).
std::string EncodeIpcDescriptor(const IpcDescriptor& descriptor);
// InvalidArgument naming what is wrong for truncated, oversized, corrupted
// (checksum) or foreign bytes, another version, or a region that leaves its
// allocation.
absl::StatusOr<IpcDescriptor> ParseIpcDescriptor(std::string_view bytes);

}  // namespace flowkv::cuda::internal

#endif  // FLOWKV_CUDA_IPC_DESCRIPTOR_H_
