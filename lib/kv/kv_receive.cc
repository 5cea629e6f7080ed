// SPDX-License-Identifier: Apache-2.0
// KvTransfer's receiving side (see kv_transfer_impl.h): notifications in,
// each decoded once by kv_notice.cc and passed on decoded (request notices
// fed to the KvRequestTracker, pool descriptors to kv_pool_exchange.cc,
// staging notices to KvStaging::OnNotice or, with no ring here, refused),
// results out (Poll, TakeResults), the calls on the tracker (Expect,
// Forget, LayersArrived, Stats), and the receiving side's part of
// KvStagingHost: refused slots, peers gone, and the scatters counted under
// mu_ so that a request's failure, or its sender's disconnection, is
// reported only after the scatters that started before it ended. Calls the
// engine's TakeNotifications and KvStaging (OnNotice, Stats).
#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"
#include "lib/common/tsan_lock.h"
#include "lib/kv/kv_notice.h"
#include "lib/kv/kv_staging.h"
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
    // scatter of its slots starts now; the ones running end first.
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
  if (notice.ok() && (notice->kind == KvNoticeKind::kSlot ||
                      notice->kind == KvNoticeKind::kCredit)) {
    // With a ring, staging notices normally reach KvStaging through its tap.
    if (staging_ != nullptr) {
      staging_->OnNotice(n.peer, *std::move(notice));
    } else {
      NoStagingNotice(n.peer, *notice);
    }
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
    case KvNoticeKind::kSlot:
    case KvNoticeKind::kCredit:
      break;  // handled above
  }
  return true;
}

absl::Status KvTransfer::Impl::CheckNotice(const Notification& n) const {
  if (n.kind != Notification::Kind::kTransfer ||
      !internal::IsKvNotice(n.bytes)) {
    return absl::OkStatus();
  }
  absl::StatusOr<KvNotice> notice = internal::ParseKvNotice(n.bytes);
  // A malformed notice is counted when it is handled.
  if (!notice.ok() || notice->kind != KvNoticeKind::kData) {
    return absl::OkStatus();
  }
  TsanMutexLock lock(&mu_);
  if (tracker_.Accepts(notice->request_id)) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrFormat(
      "KvTransfer: request '%s' (sender rank %d) was already finished, "
      "failed or forgotten by the receiver, which did not Expect it again",
      notice->request_id, notice->sender_rank));
}

KvPollResult KvTransfer::Impl::TakeResults() {
  KvPollResult result;
  TsanMutexLock lock(&mu_);
  tracker_.ApplyDeadlines(absl::Now());
  tracker_.TakeResults(&result.finished, &result.failed);
  requests_finished_ += result.finished.size();
  for (const KvFailed& failed : result.failed) {
    ++(failed.status.code() == absl::StatusCode::kDeadlineExceeded
           ? requests_timed_out_
           : requests_failed_);
  }
  // A failed request's staged slots being scattered end before the
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
  // Deadlines are applied only after the queued notifications were handled
  // (in TakeResults): a piece or notice that arrived before a request's
  // deadline counts even when Poll comes after it.
  {
    TsanMutexLock lock(&mu_);
    const absl::Time now = absl::Now();
    if (tracker_.HasResults() || !released_.empty() || !other_.empty() ||
        tracker_.NextDeadline() <= now) {
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

void KvTransfer::Impl::NoStagingNotice(PeerId peer, const KvNotice& notice) {
  if (notice.kind == KvNoticeKind::kCredit) {
    CountMalformedNotice();  // no send slot here: it names none held
    return;
  }
  if (PeerDead(peer)) return;
  RefuseSlot(peer, notice,
             absl::FailedPreconditionError("this side has no staging ring"));
}

void KvTransfer::Impl::RefuseSlot(PeerId peer, const KvNotice& incoming,
                                  absl::Status why) {
  slots_refused_.fetch_add(1);
  why = absl::Status(
      why.code(), absl::StrFormat("request '%s': slot %d from sender rank "
                                  "%d (peer %d) refused: %s",
                                  incoming.request_id, incoming.slot_seq,
                                  incoming.sender_rank, peer, why.message()));
  if (log_) log_(LogSeverity::kWarning, why.ToString());
  {
    TsanMutexLock lock(&mu_);
    tracker_.AddFailure(incoming.request_id, incoming.sender_rank, why);
  }
  SendNotice(peer, internal::KvCreditFor(incoming, why));
}

void KvTransfer::Impl::CountMalformedNotice() {
  TsanMutexLock lock(&mu_);
  ++malformed_notices_;
}

void KvTransfer::Impl::MarkPeerDead(PeerId peer) {
  TsanMutexLock lock(&mu_);
  dead_peers_.insert(peer);
}

bool KvTransfer::Impl::PeerDead(PeerId peer) const {
  TsanMutexLock lock(&mu_);
  return dead_peers_.contains(peer);
}

bool KvTransfer::Impl::BeginScatter(PeerId peer, std::string_view request_id) {
  TsanMutexLock lock(&mu_);
  if (dead_peers_.contains(peer) || !tracker_.Accepts(request_id)) {
    return false;
  }
  ++scattering_[std::string(request_id)];
  ++scattering_peers_[peer];
  return true;
}

void KvTransfer::Impl::EndScatter(PeerId peer, std::string_view request_id) {
  TsanMutexLock lock(&mu_);
  auto it = scattering_.find(std::string(request_id));
  if (it != scattering_.end() && --it->second == 0) scattering_.erase(it);
  auto p = scattering_peers_.find(peer);
  if (p != scattering_peers_.end() && --p->second == 0) {
    scattering_peers_.erase(p);
  }
  scatter_cv_.SignalAll();
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
  KvTransferStats stats;
  if (staging_ != nullptr) staging_->Stats(&stats);
  stats.pools_refused = pools_refused;
  stats.slots_refused = slots_refused_.load();
  stats.ipc_copies = ipc_copies_.load();
  TsanMutexLock lock(&mu_);
  stats.requests_active = tracker_.active();
  stats.results_pending = tracker_.results_pending();
  stats.tombstones = tracker_.tombstones();
  stats.malformed_notices = malformed_notices_;
  stats.late_notices = tracker_.late_notices();
  stats.requests_finished = requests_finished_;
  stats.requests_failed = requests_failed_;
  stats.requests_timed_out = requests_timed_out_;
  return stats;
}

}  // namespace flowkv
