// SPDX-License-Identifier: Apache-2.0
#include "flowkv/transfer_handle.h"

#include <utility>

#include "lib/common/tsan_lock.h"
#include "lib/engine/transfer_record.h"

namespace flowkv {
namespace internal {

bool Inbox::Post(Command command) {
  TsanMutexLock lock(&mu_);
  if (closed_) return false;
  commands_.push_back(std::move(command));
  if (sleeping_) wake_();
  return true;
}

void Inbox::RequestCancel(std::shared_ptr<TransferRecord> record) {
  TsanMutexLock lock(&mu_);
  if (closed_) return;
  cancels_.push_back(std::move(record));
  if (sleeping_) wake_();
}

void Inbox::Drain(std::vector<Command>* commands,
                  std::vector<std::shared_ptr<TransferRecord>>* cancels) {
  TsanMutexLock lock(&mu_);
  commands->swap(commands_);
  cancels->swap(cancels_);
}

bool Inbox::Empty() const {
  TsanMutexLock lock(&mu_);
  return commands_.empty() && cancels_.empty();
}

bool Inbox::BeginSleep() {
  TsanMutexLock lock(&mu_);
  if (!commands_.empty() || !cancels_.empty()) return false;
  sleeping_ = true;
  return true;
}

void Inbox::EndSleep() {
  TsanMutexLock lock(&mu_);
  sleeping_ = false;
}

void Inbox::SetOwnerThread() { owner_.store(std::this_thread::get_id()); }

bool Inbox::OnOwnerThread() const {
  return owner_.load() == std::this_thread::get_id();
}

void Inbox::Close() {
  TsanMutexLock lock(&mu_);
  closed_ = true;
  wake_ = [] {};
}

TransferRecord::TransferRecord(uint64_t id, uint64_t ops, uint64_t bytes,
                               absl::Time submit_time, Callback on_complete,
                               std::weak_ptr<Inbox> inbox)
    : id_(id), inbox_(std::move(inbox)), on_complete_(std::move(on_complete)) {
  stats_.ops = ops;
  stats_.bytes = bytes;
  stats_.submit_time = submit_time;
}

TransferState TransferRecord::state() const {
  TsanMutexLock lock(&mu_);
  return state_;
}

absl::Status TransferRecord::status() const {
  TsanMutexLock lock(&mu_);
  if (state_ != TransferState::kDone) {
    return absl::FailedPreconditionError(
        "TransferHandle::status: the transfer is not done yet");
  }
  return status_;
}

TransferStats TransferRecord::stats() const {
  TsanMutexLock lock(&mu_);
  return stats_;
}

bool TransferRecord::OnProgressThread() const {
  std::shared_ptr<Inbox> inbox = inbox_.lock();
  return inbox != nullptr && inbox->OnOwnerThread();
}

bool TransferRecord::WaitFor(absl::Duration timeout) const {
  if (state() != TransferState::kDone && OnProgressThread()) return false;
  const absl::Time deadline = timeout == absl::InfiniteDuration()
                                  ? absl::InfiniteFuture()
                                  : absl::Now() + timeout;
  TsanMutexLock lock(&mu_);
  while (state_ != TransferState::kDone) {
    if (lock.WaitWithDeadline(&done_cv_, deadline) &&
        state_ != TransferState::kDone) {
      return false;
    }
  }
  return true;
}

void TransferRecord::MarkInFlight() {
  TsanMutexLock lock(&mu_);
  if (state_ == TransferState::kPending) state_ = TransferState::kInFlight;
}

void TransferRecord::MarkPosted(absl::Time now) {
  TsanMutexLock lock(&mu_);
  if (state_ == TransferState::kDone) return;
  state_ = TransferState::kInFlight;
  if (stats_.post_time == absl::InfiniteDuration()) {
    stats_.post_time = now - stats_.submit_time;
  }
}

bool TransferRecord::Complete(absl::Status status, absl::Time now) {
  Callback callback;
  TransferStats stats;
  {
    TsanMutexLock lock(&mu_);
    if (state_ == TransferState::kDone || completing_) return false;
    completing_ = true;
    stats_.completion_time = now - stats_.submit_time;
    if (stats_.post_time == absl::InfiniteDuration()) {
      stats_.post_time = stats_.completion_time;
    }
    callback = std::move(on_complete_);
    stats = stats_;
  }
  // The callback runs before waiters wake up, so Wait() returning implies
  // the callback finished.
  if (callback) callback(status, stats);
  TsanMutexLock lock(&mu_);
  state_ = TransferState::kDone;
  status_ = std::move(status);
  done_cv_.SignalAll();
  return true;
}

void TransferRecord::Cancel() {
  if (state() == TransferState::kDone) return;
  if (cancel_hook_) {
    cancel_hook_();
    return;
  }
  if (std::shared_ptr<Inbox> inbox = inbox_.lock()) {
    inbox->RequestCancel(shared_from_this());
  }
}

}  // namespace internal

TransferHandle::TransferHandle() = default;
TransferHandle::~TransferHandle() = default;
TransferHandle::TransferHandle(TransferHandle&& other) noexcept = default;
TransferHandle& TransferHandle::operator=(TransferHandle&& other) noexcept =
    default;
TransferHandle::TransferHandle(std::shared_ptr<internal::TransferRecord> record)
    : record_(std::move(record)) {}

TransferState TransferHandle::state() const {
  return record_ ? record_->state() : TransferState::kDone;
}

bool TransferHandle::Wait(absl::Duration timeout) const {
  return record_ ? record_->WaitFor(timeout) : true;
}

absl::Status TransferHandle::Wait() const {
  if (!record_) {
    return absl::FailedPreconditionError("TransferHandle: empty handle");
  }
  if (!record_->WaitFor(absl::InfiniteDuration())) {
    return absl::FailedPreconditionError(
        "TransferHandle::Wait on the engine's progress thread (from a "
        "callback) would wait for itself");
  }
  return record_->status();
}

absl::Status TransferHandle::status() const {
  if (!record_) {
    return absl::FailedPreconditionError("TransferHandle: empty handle");
  }
  return record_->status();
}

TransferStats TransferHandle::stats() const {
  return record_ ? record_->stats() : TransferStats{};
}

void TransferHandle::Cancel() {
  if (record_) record_->Cancel();
}

}  // namespace flowkv
