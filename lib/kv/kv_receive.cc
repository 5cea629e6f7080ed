// SPDX-License-Identifier: Apache-2.0
// KvTransfer's receiving side (see kv_transfer_impl.h): notifications in
// (parsed by kv_notice.cc, request notices fed to the KvRequestTracker, pool
// descriptors handed to kv_pool_exchange.cc), results out (Poll,
// TakeResults), and the calls on the tracker (Expect, Forget,
// LayersArrived, Stats). Calls the engine's TakeNotifications only.
#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"
#include "lib/common/tsan_lock.h"
#include "lib/kv/kv_notice.h"
#include "lib/kv/kv_transfer_impl.h"

namespace flowkv {

using internal::KvNotice;
using internal::KvNoticeKind;
using internal::TsanMutexLock;

absl::Status KvTransfer::Impl::Expect(std::string_view request_id,
                                      absl::Time deadline) {
  if (absl::Status s =
          internal::CheckKvRequestId("KvTransfer::Expect", request_id);
      !s.ok()) {
    return s;
  }
  TsanMutexLock lock(&mu_);
  tracker_.Expect(request_id, deadline);
  return absl::OkStatus();
}

void KvTransfer::Impl::Forget(std::string_view request_id) {
  if (!internal::CheckKvRequestId("KvTransfer::Forget", request_id).ok()) {
    return;
  }
  TsanMutexLock lock(&mu_);
  tracker_.Forget(request_id);
}

bool KvTransfer::Impl::HandleNotification(const Notification& n) {
  if (n.kind == Notification::Kind::kPeerDisconnected) {
    ForgetPeerPool(n.peer);
    TsanMutexLock lock(&mu_);
    // The tap marked the peer dead before the notification was queued: no
    // scatter of its chunks starts now; the ones running end first.
    dead_peers_.insert(n.peer);
    while (scattering_peers_.contains(n.peer)) {
      lock.WaitWithDeadline(&scatter_cv_, absl::InfiniteFuture());
    }
    tracker_.PeerDisconnected(n.peer, n.bytes);
    return false;
  }
  if (n.kind != Notification::Kind::kTransfer ||
      !internal::IsKvNotice(n.bytes)) {
    return false;
  }
  absl::StatusOr<KvNotice> notice = internal::ParseKvNotice(n.bytes);
  if (notice.ok() && (notice->kind == KvNoticeKind::kChunk ||
                      notice->kind == KvNoticeKind::kCredit)) {
    // Staging notices normally reach the staging worker through the tap.
    Post([this, peer = n.peer, bytes = n.bytes] {
      HandleStagingNotice(peer, bytes);
    });
    return true;
  }
  if (notice.ok() && notice->kind == KvNoticeKind::kPool) {
    // Checked and answered outside mu_ (it asks the engine).
    HandlePoolNotice(n.peer, *notice);
    return true;
  }
  TsanMutexLock lock(&mu_);
  if (!notice.ok()) {
    ++malformed_notices_;
    if (log_) {
      log_(LogSeverity::kWarning,
           absl::StrFormat("KvTransfer: dropped a malformed notice from "
                           "peer %d: %s",
                           n.peer, notice.status().message()));
    }
    return true;
  }
  switch (notice->kind) {
    case KvNoticeKind::kData:
      tracker_.AddPiece(*notice, n.peer, absl::Now());
      break;
    case KvNoticeKind::kFailed:
      tracker_.AddFailure(
          notice->request_id, notice->sender_rank,
          absl::Status(notice->code,
                       absl::StrFormat("request '%s': sender rank %d (peer "
                                       "%d) failed: %s",
                                       notice->request_id, notice->sender_rank,
                                       n.peer, notice->message)));
      break;
    case KvNoticeKind::kReleased:
      released_.push_back({std::move(notice->request_id), n.peer,
                           notice->code == absl::StatusCode::kOk
                               ? absl::OkStatus()
                               : absl::Status(notice->code, notice->message)});
      break;
    case KvNoticeKind::kPool:
    case KvNoticeKind::kChunk:
    case KvNoticeKind::kCredit:
      break;  // handled above
  }
  return true;
}

KvPollResult KvTransfer::Impl::TakeResults() {
  KvPollResult result;
  TsanMutexLock lock(&mu_);
  tracker_.ApplyDeadlines(absl::Now());
  tracker_.TakeResults(&result.finished, &result.failed);
  // A failed request's staged chunks being scattered end before the
  // failure is reported (none starts after the failure: ReadDone checks).
  for (const KvFailed& failed : result.failed) {
    while (scattering_.contains(failed.request_id)) {
      lock.WaitWithDeadline(&scatter_cv_, absl::InfiniteFuture());
    }
  }
  result.released = std::exchange(released_, {});
  result.other = std::exchange(other_, {});
  return result;
}

KvPollResult KvTransfer::Impl::Poll(absl::Duration wait) {
  {
    TsanMutexLock lock(&mu_);
    const absl::Time now = absl::Now();
    tracker_.ApplyDeadlines(now);
    if (tracker_.HasResults() || !released_.empty() || !other_.empty()) {
      wait = absl::ZeroDuration();
    } else {
      wait = std::min(wait, tracker_.NextDeadline() - now);
    }
  }
  std::vector<Notification> other;
  for (Notification& n :
       engine_->TakeNotifications(std::max(wait, absl::ZeroDuration()))) {
    if (!HandleNotification(n)) other.push_back(std::move(n));
  }
  // Notifications WaitForPeerPool kept come first: they arrived earlier.
  KvPollResult result = TakeResults();
  for (Notification& n : other) result.other.push_back(std::move(n));
  return result;
}

uint32_t KvTransfer::Impl::LayersArrived(std::string_view request_id) const {
  TsanMutexLock lock(&mu_);
  return tracker_.LayersArrived(request_id);
}

KvTransferStats KvTransfer::Impl::Stats() const {
  uint64_t pools_refused = 0;
  {
    TsanMutexLock lock(&pools_mu_);
    pools_refused = pools_refused_;
  }
  TsanMutexLock lock(&mu_);
  return {.requests_active = tracker_.active(),
          .results_pending = tracker_.results_pending(),
          .tombstones = tracker_.tombstones(),
          .malformed_notices = malformed_notices_,
          .late_notices = tracker_.late_notices(),
          .pools_refused = pools_refused,
          .staged_chunks_sent = chunks_sent_.load(),
          .staged_bytes_sent = bytes_sent_.load(),
          .staged_chunks_received = chunks_received_.load(),
          .staged_bytes_received = bytes_received_.load(),
          .chunks_refused = chunks_refused_.load(),
          .ipc_copies = ipc_copies_.load(),
          .ring_slots = ring_.slot_count,
          .ring_slots_free = slots_free_.load(),
          .ring_slots_max_in_use = slots_max_in_use_.load()};
}

}  // namespace flowkv
