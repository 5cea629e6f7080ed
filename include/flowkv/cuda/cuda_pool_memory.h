// SPDX-License-Identifier: Apache-2.0
// CudaPoolMemory: a KvPoolMemory ("flowkv/kv_pool_memory.h") over CUDA
// device memory, for engines whose KV pools live on a GPU. KvTransfer uses
// it to gather pool runs into its host staging ring and scatter them back
// (a UCX without CUDA support, as Debian's), and to copy runs straight into
// a peer process's pool on the same host through CUDA IPC. Part of the
// optional library flowkv::cuda; this header needs no CUDA headers.
//
//   // The engine's pool: one cudaMalloc per layout region.
//   auto pool = flowkv::cuda::CudaPoolMemory::Create(device, bases, sizes);
//   std::shared_ptr<flowkv::KvPoolMemory> memory = *std::move(pool);
//
// Copies. Every batch (Gather, Scatter, KvPeerPool::CopyTo / CopyFrom) is
// enqueued on a stream the pool owns (non-blocking with respect to the
// legacy default stream) after the optional `after` event (a cudaEvent_t
// recorded by the caller on its own stream), then an event is recorded; a
// thread the pool owns polls the events in order (cudaEventQuery) and runs
// `done` once the batch's bytes arrived, or with the error that stopped it.
// A call never waits for the GPU. Batches of CudaPoolOptions::batch_min_runs
// runs or more are enqueued with one cudaMemcpyBatchAsync call (CUDA 12.8+),
// smaller ones with one cudaMemcpyAsync per run.
//
// Host memory (the staging ring). Gather and Scatter copy to and from host
// memory the caller allocated. A copy is asynchronous only when that memory
// is page-locked, so the pool pins every host page a batch touches that is
// not page-locked yet (cudaHostRegister, once per page range: the first batch
// into a new staging ring pays for it) and unpins what it pinned in its
// destructor. REQUIRES: host memory given to Gather or Scatter stays mapped
// until the pool is destroyed (unmapping memory CUDA has pinned is
// undefined); memory the caller pinned itself (cudaHostAlloc,
// cudaHostRegister) is used as it is and never unpinned by the pool.
//
// Sharing (CUDA IPC, legacy cudaIpcGetMemHandle). CUDA IPC shares whole
// cudaMalloc allocations; a region may lie anywhere inside one (a tensor of
// PyTorch's caching allocator, a view of a larger tensor). ShareDescriptor
// carries this host's boot id, the process id, the device UUID and per
// region the IPC handle of its allocation, the region's offset in it, its
// size and address; OpenPeer opens each of the peer's allocations once
// (cudaIpcOpenMemHandle with lazy peer access), places each region at its
// offset, and the KvPeerPool closes them in its destructor. A descriptor of
// this same process opens without IPC (CUDA cannot open its own handles).
// docs/gpu.md "Allocating pools so IPC works" says which memory can be
// shared.
//
// Errors: every CUDA error becomes an absl::Status naming the call:
// FailedPrecondition when no usable GPU or driver is present,
// InvalidArgument for arguments CUDA rejects, ResourceExhausted for out of
// memory, Internal otherwise.
//
// Thread safety: thread-safe (as every KvPoolMemory).

#ifndef FLOWKV_CUDA_CUDA_POOL_MEMORY_H_
#define FLOWKV_CUDA_CUDA_POOL_MEMORY_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "flowkv/export.h"
#include "flowkv/kv_pool_memory.h"

namespace flowkv::cuda {

namespace internal {
class CopyQueue;
class HostPins;
}  // namespace internal

struct CudaPoolOptions {
  // A batch of at least this many runs is enqueued with one
  // cudaMemcpyBatchAsync call instead of one cudaMemcpyAsync per run; 0
  // never batches. Default: 16 (the driver's per-call cost dominates
  // copies of small runs; see docs/gpu.md).
  uint32_t batch_min_runs = 16;
  // Whether the pool can be shared with other processes (CUDA IPC): Create
  // then takes the IPC handle of each region's allocation, which must come
  // from cudaMalloc. false: ShareDescriptor() is empty and any device
  // memory of the device will do (also memory from cuMemCreate or a
  // cudaMallocAsync pool). Default: true.
  bool share = true;
};

class FLOWKV_EXPORT CudaPoolMemory final : public KvPoolMemory {
 public:
  // A pool over device memory the engine allocated: region i is [bases[i],
  // bases[i] + sizes[i]) on device `device` (not owned; it must outlive the
  // pool and every KvPeerPool other processes opened from it).
  // InvalidArgument naming the index when the counts differ or are 0, a size
  // is 0, `device` is not a device of this process, a base is not device
  // memory of `device` (host memory, another device, managed memory) or the
  // region leaves its allocation; FailedPrecondition without a usable GPU;
  // CUDA's errors otherwise (with CudaPoolOptions::share, also
  // cudaIpcGetMemHandle's for an allocation IPC cannot share; the message
  // says how to allocate). Creates the stream and the completion thread.
  static absl::StatusOr<std::unique_ptr<CudaPoolMemory>> Create(
      int device, std::vector<void*> bases, std::vector<uint64_t> sizes,
      const CudaPoolOptions& options = {});

  // A pool that allocates its regions itself, one cudaMalloc per region
  // (owned, freed by the destructor), so every region can be shared.
  // Errors as Create, and ResourceExhausted when the device is out of
  // memory.
  static absl::StatusOr<std::unique_ptr<CudaPoolMemory>> Allocate(
      int device, std::vector<uint64_t> sizes,
      const CudaPoolOptions& options = {});

  // Waits for every batch in flight (their `done` run), then unpins the
  // host memory the pool pinned and frees the regions it allocated.
  // KvPeerPools opened from this pool stay usable (they share its stream).
  ~CudaPoolMemory() override;

  CudaPoolMemory(const CudaPoolMemory&) = delete;
  CudaPoolMemory& operator=(const CudaPoolMemory&) = delete;

  int device() const { return device_; }

  MemoryKind kind() const override { return MemoryKind::kCudaDevice; }
  uint32_t num_regions() const override {
    return static_cast<uint32_t>(bases_.size());
  }
  // REQUIRES: region < num_regions().
  uint64_t region_bytes(uint32_t region) const override {
    return sizes_[region];
  }
  void* region_base(uint32_t region) const override { return bases_[region]; }

  // Outcomes through `done`: InvalidArgument for a run outside the pool, a
  // null host pointer or a run whose bytes end past 2^64 (nothing is
  // copied); CUDA's errors (pinning, enqueueing or running the copies: bytes
  // enqueued before the error have landed when `done` runs).
  void Gather(std::vector<PoolHostCopy> copies, void* after,
              PoolCopyDone done) override;
  void Scatter(std::vector<PoolHostCopy> copies, PoolCopyDone done) override;

  std::string ShareDescriptor() const override;
  // Unavailable: the descriptor is of another host (boot id), of a process
  // that is gone, of a device this process cannot see or reach (no peer
  // access), or cudaIpcOpenMemHandle fails (the exporter freed the memory,
  // IPC is not supported here). InvalidArgument: malformed descriptor.
  absl::StatusOr<std::unique_ptr<KvPeerPool>> OpenPeer(
      std::string_view descriptor) override;

 private:
  CudaPoolMemory(int device, std::vector<void*> bases,
                 std::vector<uint64_t> sizes, bool owned,
                 std::shared_ptr<internal::CopyQueue> queue,
                 std::string descriptor);
  // Checks `copies` against the pool and pins their host memory; OK or the
  // error to report.
  absl::Status PrepareHostCopies(const std::vector<PoolHostCopy>& copies);
  void HostCopies(std::vector<PoolHostCopy> copies, bool to_host, void* after,
                  PoolCopyDone done);

  const int device_;
  const std::vector<void*> bases_;
  const std::vector<uint64_t> sizes_;
  bool owned_;  // regions allocated by Allocate (set once, before sharing)
  const std::shared_ptr<internal::CopyQueue> queue_;
  std::unique_ptr<internal::HostPins> pins_;  // reset by the destructor
  const std::string descriptor_;
};

}  // namespace flowkv::cuda

#endif  // FLOWKV_CUDA_CUDA_POOL_MEMORY_H_
