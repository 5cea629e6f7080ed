// SPDX-License-Identifier: Apache-2.0
// CopyQueue: the stream a CudaPoolMemory (and every KvPeerPool opened from
// it) enqueues its copies on, and the thread that completes them. Private to
// flowkv_cuda.
//
// Submit enqueues a batch of copies after an optional event, records an
// event behind it and returns; the completion thread queries the events in
// submission order (cudaEventQuery, backing off from yielding to short
// sleeps while the GPU is busy) and runs each batch's `done` once its event
// completed. `done` runs without any lock held, on the completion thread, or
// inside Submit when the batch failed before anything was enqueued.
//
// Thread safety: thread-safe.

#ifndef FLOWKV_CUDA_COPY_QUEUE_H_
#define FLOWKV_CUDA_COPY_QUEUE_H_

#include <atomic>
#include <cstdint>
#include <cuda_runtime_api.h>
#include <deque>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "flowkv/kv_pool_memory.h"

namespace flowkv::cuda::internal {

// One contiguous copy between any two addresses CUDA knows (device, IPC
// mapped, page-locked host); the direction comes from unified addressing.
struct Copy {
  void* dst = nullptr;
  const void* src = nullptr;
  uint64_t length = 0;
};

// Makes `device` current for the calling thread and restores the previous
// device when it goes out of scope. status() is the error of switching.
class ScopedDevice {
 public:
  explicit ScopedDevice(int device);
  ~ScopedDevice();
  ScopedDevice(const ScopedDevice&) = delete;
  ScopedDevice& operator=(const ScopedDevice&) = delete;
  const absl::Status& status() const { return status_; }

 private:
  int previous_ = -1;
  absl::Status status_;
};

class CopyQueue {
 public:
  // A non-blocking stream on `device` and the completion thread. Batches of
  // at least `batch_min_runs` copies use cudaMemcpyBatchAsync (0: never).
  static absl::StatusOr<std::shared_ptr<CopyQueue>> Create(
      int device, uint32_t batch_min_runs);
  // Waits for every batch submitted (their `done` ran), then stops the
  // thread and destroys the stream. When the last owner lets go inside a
  // `done` (on the completion thread), it waits for the stream instead,
  // completes the batches still pending there and lets the thread end on
  // its own.
  ~CopyQueue();
  CopyQueue(const CopyQueue&) = delete;
  CopyQueue& operator=(const CopyQueue&) = delete;

  int device() const { return device_; }

  // Enqueues `copies` after `after` (a cudaEvent_t or null) and completes
  // `done` once they landed, or with the first error: an error before any
  // copy was enqueued completes `done` at once; after that, `done` waits
  // until what was enqueued has run (no late write after `done`). Never
  // waits for the GPU, except when CUDA cannot even record the completion
  // event (then it synchronizes the stream before reporting).
  void Submit(std::vector<Copy> copies, void* after, PoolCopyDone done);

  // Returns once every batch submitted before the call completed. Inside a
  // `done` (on the completion thread, which cannot wait for itself) it
  // returns once every copy enqueued so far has run; later `done`s still
  // follow.
  void Drain();

 private:
  struct Pending {
    uint64_t sequence = 0;
    cudaEvent_t event = nullptr;
    absl::Status status;  // error of enqueueing, reported after the event
    PoolCopyDone done;
  };

  CopyQueue(int device, uint32_t batch_min_runs, cudaStream_t stream);
  // Enqueues the copies on the stream (the device is current).
  // `*enqueued_any`: whether any copy (or, for no copies, nothing at all)
  // entered the stream, so that a completion event must follow.
  absl::Status Enqueue(const std::vector<Copy>& copies, bool* enqueued_any);
  cudaError_t EnqueueBatch(const Copy* copies, size_t count);
  void CompletionLoop(std::shared_ptr<std::atomic<bool>> destroyed);
  bool OnCompletionThread() const {
    return std::this_thread::get_id() == thread_.get_id();
  }

  const int device_;
  const uint32_t batch_min_runs_;
  cudaStream_t const stream_;
  // Cleared when the driver rejects cudaMemcpyBatchAsync (then one
  // cudaMemcpyAsync per run).
  std::atomic<bool> batch_supported_{true};

  absl::Mutex mu_;
  absl::CondVar changed_;
  std::deque<Pending> pending_ ABSL_GUARDED_BY(mu_);
  uint64_t submitted_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t completed_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Set by Create; the completion thread holds a reference while it runs a
  // `done`, so a `done` that drops the last other owner does not destroy
  // the queue under the loop.
  std::weak_ptr<CopyQueue> weak_self_;
  // Set by a destructor that ran on the completion thread: the loop must
  // not touch the queue again.
  const std::shared_ptr<std::atomic<bool>> destroyed_ =
      std::make_shared<std::atomic<bool>>(false);
  std::thread thread_;
};

}  // namespace flowkv::cuda::internal

#endif  // FLOWKV_CUDA_COPY_QUEUE_H_
