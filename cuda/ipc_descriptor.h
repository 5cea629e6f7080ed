// SPDX-License-Identifier: Apache-2.0
// The ShareDescriptor of a CudaPoolMemory: what a process on the same host
// needs to open the pool through CUDA IPC. Private to flowkv_cuda.
//
// Wire form (little-endian), every length checked before use:
//   magic "FKVCUDA" + version byte (2)
//   u8 boot id length, boot id bytes   (this host's /proc boot id)
//   u32 pid, 16 bytes device UUID
//   u32 region count (1..kMaxIpcRegions), then per region:
//     u64 size, u64 address in the exporter, u64 offset of the region in
//     its allocation, u64 allocation size, 64 bytes cudaIpcMemHandle_t
//     (of the allocation: CUDA IPC shares whole allocations)
//   u64 FNV-1a of everything before it

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
};

struct IpcDescriptor {
  std::string boot_id;
  uint32_t pid = 0;
  std::array<uint8_t, 16> device_uuid{};
  std::vector<IpcRegion> regions;
};

std::string EncodeIpcDescriptor(const IpcDescriptor& descriptor);
// InvalidArgument naming what is wrong for truncated, oversized, corrupted
// (checksum) or foreign bytes, another version, or a region that leaves its
// allocation.
absl::StatusOr<IpcDescriptor> ParseIpcDescriptor(std::string_view bytes);

// This host's boot id (/proc/sys/kernel/random/boot_id, newline stripped),
// "" when it cannot be read.
std::string HostBootId();

}  // namespace flowkv::cuda::internal

#endif  // FLOWKV_CUDA_IPC_DESCRIPTOR_H_
