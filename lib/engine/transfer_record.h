// SPDX-License-Identifier: Apache-2.0
// Shared state of one transfer (behind TransferHandle) and the inbox through
// which any thread hands work to an engine's progress thread.
//
// Thread safety: thread-safe.

#ifndef FLOWKV_LIB_ENGINE_TRANSFER_RECORD_H_
#define FLOWKV_LIB_ENGINE_TRANSFER_RECORD_H_

#include <atomic>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "flowkv/transfer_handle.h"

namespace flowkv::internal {

class TransferRecord;

// A mutex-protected queue of closures for the progress thread plus a way to
// wake it (ucp_worker_signal, safe from any thread), used only while the
// thread sleeps: a spinning thread finds the work without a system call.
class Inbox {
 public:
  using Command = std::function<void()>;

  explicit Inbox(std::function<void()> wake) : wake_(std::move(wake)) {}

  // Queues `command` and wakes the progress thread; false (and `command`
  // dropped) once Close() was called.
  bool Post(Command command);
  // Queues a cancellation request.
  void RequestCancel(std::shared_ptr<TransferRecord> record);

  // Takes everything queued.
  void Drain(std::vector<Command>* commands,
             std::vector<std::shared_ptr<TransferRecord>>* cancels);
  bool Empty() const;
  // Rejects later posts; the wake function is not called again.
  void Close();

  // The progress thread is about to sleep: false (and it must not sleep)
  // when work is queued; otherwise later posts wake it until EndSleep.
  bool BeginSleep();
  void EndSleep();

  // Records the calling thread as the one that drains this inbox.
  void SetOwnerThread();
  // True on the thread that drains this inbox (where waiting for the
  // engine would deadlock).
  bool OnOwnerThread() const;

 private:
  mutable absl::Mutex mu_;
  std::function<void()> wake_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  bool sleeping_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<std::thread::id> owner_{};
  std::vector<Command> commands_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<TransferRecord>> cancels_ ABSL_GUARDED_BY(mu_);
};

class TransferRecord : public std::enable_shared_from_this<TransferRecord> {
 public:
  using Callback =
      std::function<void(const absl::Status&, const TransferStats&)>;

  TransferRecord(uint64_t id, uint64_t ops, uint64_t bytes,
                 absl::Time submit_time, Callback on_complete,
                 std::weak_ptr<Inbox> inbox);

  uint64_t id() const { return id_; }
  TransferState state() const;
  absl::Status status() const;
  TransferStats stats() const;
  // Blocks until done or `timeout`; true when done. Returns false at once
  // on the engine's progress thread (waiting there would deadlock).
  bool WaitFor(absl::Duration timeout) const;
  // Whether the caller runs on the engine's progress thread.
  bool OnProgressThread() const;

  // kPending -> kInFlight (the first op was posted).
  void MarkInFlight();
  // -> kInFlight; records the post time (every op was posted).
  void MarkPosted(absl::Time now);
  // -> kDone with `status` (first call wins; later calls return false).
  // Runs the completion callback on the calling thread, outside the lock,
  // before the state becomes kDone.
  bool Complete(absl::Status status, absl::Time now);
  void Cancel();
  // For records no engine drives (KvTransfer's staged and IPC transfers):
  // Cancel() calls `hook` (once per call, outside the lock) instead of
  // asking the engine. Set before the record is shared.
  void SetCancelHook(std::function<void()> hook) {
    cancel_hook_ = std::move(hook);
  }

 private:
  std::function<void()> cancel_hook_;
  const uint64_t id_;
  const std::weak_ptr<Inbox> inbox_;
  mutable absl::Mutex mu_;
  TransferState state_ ABSL_GUARDED_BY(mu_) = TransferState::kPending;
  bool completing_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  TransferStats stats_ ABSL_GUARDED_BY(mu_);
  Callback on_complete_ ABSL_GUARDED_BY(mu_);
  mutable absl::CondVar done_cv_;
};

}  // namespace flowkv::internal

#endif  // FLOWKV_LIB_ENGINE_TRANSFER_RECORD_H_
