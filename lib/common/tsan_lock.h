// SPDX-License-Identifier: Apache-2.0
// absl::Mutex locking that ThreadSanitizer can see.
//
// The system Abseil is not built with -fsanitize=thread, so TSan does not see
// absl::Mutex (or absl::Notification) order memory and reports every access
// they protect. TsanMutexLock takes the mutex like absl::MutexLock and, in
// TSan builds only, tells TSan about the acquire / release.
//
// Thread safety: thread-safe (as absl::Mutex).

#ifndef FLOWKV_LIB_COMMON_TSAN_LOCK_H_
#define FLOWKV_LIB_COMMON_TSAN_LOCK_H_

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define FLOWKV_TSAN_ACQUIRE(addr) \
  __tsan_acquire(const_cast<void*>(static_cast<const volatile void*>(addr)))
#define FLOWKV_TSAN_RELEASE(addr) \
  __tsan_release(const_cast<void*>(static_cast<const volatile void*>(addr)))
#else
#define FLOWKV_TSAN_ACQUIRE(addr) ((void)(addr))
#define FLOWKV_TSAN_RELEASE(addr) ((void)(addr))
#endif

namespace flowkv::internal {

class ABSL_SCOPED_LOCKABLE TsanMutexLock {
 public:
  explicit TsanMutexLock(absl::Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu)
      : mu_(mu) {
    mu_->Lock();
    FLOWKV_TSAN_ACQUIRE(mu_);
  }
  ~TsanMutexLock() ABSL_UNLOCK_FUNCTION() {
    FLOWKV_TSAN_RELEASE(mu_);
    mu_->Unlock();
  }
  TsanMutexLock(const TsanMutexLock&) = delete;
  TsanMutexLock& operator=(const TsanMutexLock&) = delete;

  // Waits on `cv` with the held mutex (released while waiting) until
  // signalled or `deadline`; true when it timed out. Use a CondVar rather
  // than absl::Condition: absl evaluates conditions on other threads, where
  // TSan cannot see the lock.
  bool WaitWithDeadline(absl::CondVar* cv, absl::Time deadline) {
    FLOWKV_TSAN_RELEASE(mu_);
    const bool timed_out = cv->WaitWithDeadline(mu_, deadline);
    FLOWKV_TSAN_ACQUIRE(mu_);
    return timed_out;
  }

 private:
  absl::Mutex* const mu_;
};

// absl::Notification whose Notify -> WaitForNotification edge TSan sees.
class TsanNotification {
 public:
  void Notify() {
    FLOWKV_TSAN_RELEASE(&notification_);
    notification_.Notify();
  }
  void WaitForNotification() const {
    notification_.WaitForNotification();
    FLOWKV_TSAN_ACQUIRE(&notification_);
  }

 private:
  absl::Notification notification_;
};

}  // namespace flowkv::internal

#endif  // FLOWKV_LIB_COMMON_TSAN_LOCK_H_
