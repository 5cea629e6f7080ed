// SPDX-License-Identifier: Apache-2.0
// CopyQueue (cuda/copy_queue.h): enqueueing copies on the pool's stream and
// completing them from the completion thread.

#include "cuda/copy_queue.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "cuda/cuda_status.h"
#include "lib/common/tsan_lock.h"

namespace flowkv::cuda::internal {
namespace {

using ::flowkv::internal::CudaStatus;
using ::flowkv::internal::TsanMutexLock;

// cudaMemcpyBatchAsync takes at most this many copies per call here (the
// API names no limit; chunks keep the argument arrays small).
constexpr size_t kMaxBatch = 4096;

}  // namespace

ScopedDevice::ScopedDevice(int device) {
  int current = -1;
  status_ = CudaStatus(cudaGetDevice(&current), "cudaGetDevice");
  if (!status_.ok()) return;
  if (current != device) {
    status_ = CudaStatus(cudaSetDevice(device),
                         absl::StrFormat("cudaSetDevice(%d)", device));
    if (status_.ok()) previous_ = current;
  }
}

ScopedDevice::~ScopedDevice() {
  if (previous_ >= 0) cudaSetDevice(previous_);
}

absl::StatusOr<std::shared_ptr<CopyQueue>> CopyQueue::Create(
    int device, uint32_t batch_min_runs) {
  ScopedDevice scoped(device);
  if (!scoped.status().ok()) return scoped.status();
  cudaStream_t stream = nullptr;
  if (absl::Status s =
          CudaStatus(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking),
                     "cudaStreamCreateWithFlags");
      !s.ok()) {
    return s;
  }
  std::shared_ptr<CopyQueue> queue(
      new CopyQueue(device, batch_min_runs, stream));
  queue->weak_self_ = queue;
  queue->thread_ =
      std::thread([raw = queue.get(), destroyed = queue->destroyed_] {
        raw->CompletionLoop(destroyed);
      });
  return queue;
}

CopyQueue::CopyQueue(int device, uint32_t batch_min_runs, cudaStream_t stream)
    : device_(device), batch_min_runs_(batch_min_runs), stream_(stream) {}

CopyQueue::~CopyQueue() {
  if (OnCompletionThread()) {
    // The last owner let go inside a `done`: finish here.
    ScopedDevice scoped(device_);
    cudaStreamSynchronize(stream_);
    std::deque<Pending> left;
    {
      TsanMutexLock lock(&mu_);
      left.swap(pending_);
      stopping_ = true;
    }
    for (Pending& batch : left) {
      const cudaError_t error = cudaEventQuery(batch.event);
      cudaEventDestroy(batch.event);
      if (batch.status.ok() && error != cudaSuccess) {
        batch.status = CudaStatus(error, "copies on the pool stream");
      }
      batch.done(std::move(batch.status));
    }
    destroyed_->store(true);
    thread_.detach();
    cudaStreamDestroy(stream_);
    return;
  }
  Drain();
  {
    TsanMutexLock lock(&mu_);
    stopping_ = true;
    changed_.SignalAll();
  }
  thread_.join();
  ScopedDevice scoped(device_);
  cudaStreamDestroy(stream_);
}

void CopyQueue::Submit(std::vector<Copy> copies, void* after,
                       PoolCopyDone done) {
  ScopedDevice scoped(device_);
  if (!scoped.status().ok()) {
    done(scoped.status());
    return;
  }
  absl::Status failed_early;
  {
    // Held across enqueueing so that batches enter the stream and the
    // pending queue in the same order.
    TsanMutexLock lock(&mu_);
    absl::Status status;
    if (after != nullptr) {
      status = CudaStatus(
          cudaStreamWaitEvent(stream_, static_cast<cudaEvent_t>(after), 0),
          "cudaStreamWaitEvent(after)");
    }
    bool enqueued_any = false;
    if (status.ok()) status = Enqueue(copies, &enqueued_any);
    if (!enqueued_any) {
      failed_early = status;
    } else {
      cudaEvent_t event = nullptr;
      absl::Status recorded =
          CudaStatus(cudaEventCreateWithFlags(&event, cudaEventDisableTiming),
                     "cudaEventCreateWithFlags");
      if (recorded.ok()) {
        recorded = CudaStatus(cudaEventRecord(event, stream_),
                              "cudaEventRecord(completion)");
      }
      if (recorded.ok()) {
        pending_.push_back(
            Pending{++submitted_, event, std::move(status), std::move(done)});
        changed_.SignalAll();
        return;
      }
      // No event to poll: wait here so that no copy lands after `done`.
      if (event != nullptr) cudaEventDestroy(event);
      cudaStreamSynchronize(stream_);
      failed_early = status.ok() ? recorded : status;
    }
  }
  done(failed_early);
}

absl::Status CopyQueue::Enqueue(const std::vector<Copy>& copies,
                                bool* enqueued_any) {
  *enqueued_any = false;
  if (copies.empty()) {
    *enqueued_any = true;  // the completion event still follows `after`
    return absl::OkStatus();
  }
  if (batch_min_runs_ != 0 && copies.size() >= batch_min_runs_ &&
      batch_supported_.load(std::memory_order_relaxed)) {
    for (size_t first = 0; first < copies.size(); first += kMaxBatch) {
      const size_t count = std::min(kMaxBatch, copies.size() - first);
      const cudaError_t error = EnqueueBatch(&copies[first], count);
      if (error == cudaSuccess) {
        *enqueued_any = true;
        continue;
      }
      if (first == 0) {
        // The driver rejects batches here (or one of the copies, which the
        // per-run path reports by name): fall back for good.
        cudaGetLastError();
        batch_supported_.store(false, std::memory_order_relaxed);
        break;
      }
      return CudaStatus(error,
                        absl::StrFormat("cudaMemcpyBatchAsync of %d runs from "
                                        "run %d",
                                        count, first));
    }
    if (batch_supported_.load(std::memory_order_relaxed)) {
      return absl::OkStatus();
    }
  }
  for (size_t i = 0; i < copies.size(); ++i) {
    const Copy& copy = copies[i];
    const cudaError_t error = cudaMemcpyAsync(copy.dst, copy.src, copy.length,
                                              cudaMemcpyDefault, stream_);
    if (error != cudaSuccess) {
      return CudaStatus(
          error, absl::StrFormat("cudaMemcpyAsync of run %d (%d bytes, %p -> "
                                 "%p)",
                                 i, copy.length, copy.src, copy.dst));
    }
    *enqueued_any = true;
  }
  return absl::OkStatus();
}

cudaError_t CopyQueue::EnqueueBatch(const Copy* copies, size_t count) {
  std::vector<void*> dsts(count);
  std::vector<const void*> srcs(count);
  std::vector<size_t> sizes(count);
  for (size_t i = 0; i < count; ++i) {
    dsts[i] = copies[i].dst;
    srcs[i] = copies[i].src;
    sizes[i] = copies[i].length;
  }
  cudaMemcpyAttributes attributes{};
  attributes.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
  size_t attribute_index = 0;
#if CUDART_VERSION >= 13000
  return cudaMemcpyBatchAsync(dsts.data(), srcs.data(), sizes.data(), count,
                              &attributes, &attribute_index, 1, stream_);
#else
  size_t failed_index = 0;
  return cudaMemcpyBatchAsync(dsts.data(), srcs.data(), sizes.data(), count,
                              &attributes, &attribute_index, 1, &failed_index,
                              stream_);
#endif
}

void CopyQueue::Drain() {
  if (OnCompletionThread()) {
    ScopedDevice scoped(device_);
    cudaStreamSynchronize(stream_);
    return;
  }
  TsanMutexLock lock(&mu_);
  const uint64_t target = submitted_;
  while (completed_ < target) {
    lock.WaitWithDeadline(&changed_, absl::InfiniteFuture());
  }
}

void CopyQueue::CompletionLoop(std::shared_ptr<std::atomic<bool>> destroyed) {
  ScopedDevice scoped(device_);
  int idle_polls = 0;
  while (true) {
    cudaEvent_t event = nullptr;
    {
      TsanMutexLock lock(&mu_);
      while (pending_.empty() && !stopping_) {
        lock.WaitWithDeadline(&changed_, absl::InfiniteFuture());
      }
      if (pending_.empty()) return;
      event = pending_.front().event;
    }
    const cudaError_t error = cudaEventQuery(event);
    if (error == cudaErrorNotReady) {
      // Yield first (copies of a few MB take tens of microseconds), then
      // sleep briefly so a long copy does not burn a core.
      if (++idle_polls < 64) {
        std::this_thread::yield();
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(20));
      }
      continue;
    }
    idle_polls = 0;
    Pending done_batch;
    {
      TsanMutexLock lock(&mu_);
      done_batch = std::move(pending_.front());
      pending_.pop_front();
    }
    cudaEventDestroy(event);
    absl::Status status = std::move(done_batch.status);
    if (status.ok() && error != cudaSuccess) {
      status = CudaStatus(error, "cudaEventQuery (copies on the pool stream)");
    }
    // Null while another thread destroys the queue (it waits for this
    // loop in Drain, so the queue outlives this iteration).
    std::shared_ptr<CopyQueue> keep = weak_self_.lock();
    done_batch.done(std::move(status));
    {
      TsanMutexLock lock(&mu_);
      completed_ = done_batch.sequence;
      changed_.SignalAll();
    }
    keep.reset();  // may run the destructor, on this thread
    if (destroyed->load()) return;
  }
}

}  // namespace flowkv::cuda::internal
