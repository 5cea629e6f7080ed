// SPDX-License-Identifier: Apache-2.0
// KvPoolMemory: the memory a KvTransfer pool lives in, for pools that UCX
// cannot move directly (GPU memory with a UCX built without CUDA, as
// Debian's), and the copies KvTransfer asks of it: gathering runs of the
// pool into host staging memory, scattering host staging memory into runs of
// the pool, and copying runs straight into a peer's pool that this process
// opened (same host: CUDA IPC for GPU pools).
//
// KvTransfer chooses how a peer's bytes move (KvTransfer::PeerPath):
//   kDirect   UCX moves bytes between the two pools' engine regions (host
//             pools; device pools registered with a CUDA-aware UCX).
//   kIpc      both pools can be shared (ShareDescriptor) and this side
//             opened the peer's (OpenPeer): one copy per run that is
//             contiguous on both sides, straight into the peer's pool.
//   kStaging  otherwise: runs are gathered into a registered host staging
//             ring, moved by UCX, and scattered into the receiver's pool;
//             flow control by credits.
//
// Implementations: MakeHostPool (memory of this process, memcpy),
// MakeSharedHostPool (host memory other processes of this host can map:
// the CPU counterpart of CUDA IPC), and the CUDA pools of
// "flowkv/cuda/cuda_pool_memory.h" (flowkv_cuda).
//
//   // A GPU engine (links flowkv::flowkv_cuda):
//   auto pool = flowkv::cuda::CudaPoolMemory::Create(device, bases, sizes);
//   auto kv = flowkv::KvTransfer::Create(engine.get(), layout,
//                                         std::move(*pool), {});
//
// Thread safety: implementations are thread-safe; KvTransfer calls them
// from its own threads and from the engine's progress thread.

#ifndef FLOWKV_KV_POOL_MEMORY_H_
#define FLOWKV_KV_POOL_MEMORY_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "flowkv/export.h"
#include "flowkv/transfer_types.h"

namespace flowkv {

// One contiguous run between a pool region and host memory.
struct PoolHostCopy {
  uint32_t region = 0;   // layout region index of the pool
  uint64_t offset = 0;   // byte offset in that region
  void* host = nullptr;  // host bytes (e.g. a slot of the staging ring)
  uint64_t length = 0;
};

// Called exactly once when every copy of a batch completed (OK) or the
// batch failed; from any thread, possibly inside the call that started the
// batch (synchronous implementations). It must not block.
using PoolCopyDone = std::function<void(absl::Status)>;

// A peer's pool opened in this process (KvPoolMemory::OpenPeer).
class FLOWKV_EXPORT KvPeerPool {
 public:
  virtual ~KvPeerPool() = default;
  // Copies runs of this process's pool into the peer's pool (push) after
  // `after` (an opaque event of the pool's kind, e.g. a cudaEvent_t; null:
  // none) completed. `done` runs once the bytes are in the peer's pool.
  virtual void CopyTo(std::vector<TransferOp> copies, void* after,
                      PoolCopyDone done) = 0;
  // Copies runs of the peer's pool into this process's pool (pull): src =
  // the peer's, dst = this pool's.
  virtual void CopyFrom(std::vector<TransferOp> copies, PoolCopyDone done) = 0;
};

class FLOWKV_EXPORT KvPoolMemory {
 public:
  virtual ~KvPoolMemory() = default;

  // Where the pool's bytes live.
  virtual MemoryKind kind() const = 0;
  // The pool's regions (as KvLayout::num_regions()) and their sizes.
  virtual uint32_t num_regions() const = 0;
  virtual uint64_t region_bytes(uint32_t region) const = 0;
  // The address of region `region` in this process (device pointer for a
  // device pool): for registering it with a CUDA-aware UCX.
  virtual void* region_base(uint32_t region) const = 0;

  // Pool -> host: copies every run once `after` (see KvPeerPool::CopyTo)
  // completed. Runs are within the pool (KvTransfer checks).
  virtual void Gather(std::vector<PoolHostCopy> copies, void* after,
                      PoolCopyDone done) = 0;
  // Host -> pool.
  virtual void Scatter(std::vector<PoolHostCopy> copies, PoolCopyDone done) = 0;

  // Same-host sharing. An opaque descriptor a peer process passes to its
  // own pool's OpenPeer; empty when this pool cannot be shared.
  virtual std::string ShareDescriptor() const { return {}; }
  // Opens a peer's pool from its ShareDescriptor. Unavailable when it
  // cannot be opened here (another host, another kind of memory, a pool
  // that cannot be shared); InvalidArgument for a malformed descriptor.
  virtual absl::StatusOr<std::unique_ptr<KvPeerPool>> OpenPeer(
      std::string_view descriptor);
};

// A pool in this process's host memory, given by its region bases and sizes
// (not owned; they must outlive the pool). Gather and Scatter are memcpy,
// synchronous. Cannot be shared. InvalidArgument when the counts differ, a
// base is null or a size is 0.
FLOWKV_EXPORT absl::StatusOr<std::unique_ptr<KvPoolMemory>> MakeHostPool(
    std::vector<void*> bases, std::vector<uint64_t> sizes);

// A pool in host memory that other processes of this host can map: the CPU
// counterpart of a CUDA IPC pool (tests, and engines whose pools are host
// memory shared by process). Allocates one shared-memory object per region
// of the given sizes (owned; unmapped and unlinked with the pool).
// ShareDescriptor names the objects and this host (its boot id); OpenPeer
// maps a peer's. Errors: InvalidArgument for no or zero sizes; the
// system's (ResourceExhausted, Internal) when allocating fails.
FLOWKV_EXPORT absl::StatusOr<std::unique_ptr<KvPoolMemory>> MakeSharedHostPool(
    std::vector<uint64_t> sizes);

}  // namespace flowkv

#endif  // FLOWKV_KV_POOL_MEMORY_H_
