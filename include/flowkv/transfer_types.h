// SPDX-License-Identifier: Apache-2.0
// The small value types every transfer API shares: a copy (TransferOp), the
// ids of regions and peers, where memory lives (MemoryKind) and what is known
// of a region (RegionInfo). Apart so that a header that needs one of them
// (the planner, the engine, KV pools) does not pull in the others' APIs.
//
// Thread safety: value types.

#ifndef FLOWKV_TRANSFER_TYPES_H_
#define FLOWKV_TRANSFER_TYPES_H_

#include <cstdint>

namespace flowkv {

// One contiguous copy: `length` bytes from (src_region, src_offset) of the
// source to (dst_region, dst_offset) of the destination. The planner
// (transfer_plan.h) numbers regions as the pools' KvLayouts do; the engine
// (transfer_engine.h) as each side's registered regions; a KvPeerPool
// (kv_pool_memory.h) as the two pools' layouts.
struct TransferOp {
  uint32_t src_region = 0;
  uint64_t src_offset = 0;
  uint32_t dst_region = 0;
  uint64_t dst_offset = 0;
  uint64_t length = 0;

  friend bool operator==(const TransferOp&, const TransferOp&) = default;
};

// Where registered memory lives.
enum class MemoryKind : uint8_t { kHost = 0, kCudaDevice = 1 };

// An engine-local region id (see "Regions" in transfer_engine.h).
using RegionId = uint32_t;
// An engine-local peer id; never reused by one engine. 0 is never a peer.
using PeerId = uint64_t;

// What an engine knows of one of its own or a peer's regions.
struct RegionInfo {
  RegionId id = 0;
  MemoryKind kind = MemoryKind::kHost;
  uint64_t base = 0;  // Address in the owner's address space.
  uint64_t length = 0;

  friend bool operator==(const RegionInfo&, const RegionInfo&) = default;
};

}  // namespace flowkv

#endif  // FLOWKV_TRANSFER_TYPES_H_
