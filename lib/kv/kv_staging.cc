// SPDX-License-Identifier: Apache-2.0
// KvStaging's lifecycle and plumbing (see kv_staging.h): Start and Stop,
// the engine notification tap, the worker thread and its queue, the one
// entry point for decoded staging notices (OnNotice; the tap's notices are
// decoded once, on the worker, and take the same path), a peer's
// disconnection, and the stats. The sending and receiving sides are
// kv_staging_send.cc's and kv_staging_receive.cc's. Calls the engine's
// notification tap (through lib/engine/engine_internal.h) and KvStagingHost.
#include "lib/kv/kv_staging.h"

#include <utility>

#include "absl/strings/str_format.h"
#include "lib/common/tsan_lock.h"
#include "lib/engine/engine_internal.h"

namespace flowkv::internal {

namespace {

// A transfer notification that carries a staging notice (by its kind byte;
// the notice is parsed once, after this).
bool IsStagingNotice(const std::string& bytes) {
  // magic (4) + version (2) + kind (1)
  if (bytes.size() < 7 || !IsKvNotice(bytes)) return false;
  const auto kind = static_cast<KvNoticeKind>(bytes[6]);
  return kind == KvNoticeKind::kSlot || kind == KvNoticeKind::kCredit;
}

}  // namespace

KvStaging::KvStaging(TransferEngine* engine, const KvLayout& layout,
                     KvRing ring, std::shared_ptr<KvPoolMemory> pool,
                     std::function<void(LogSeverity, std::string_view)> log,
                     std::weak_ptr<KvStagingHost> host)
    : engine_(engine),
      layout_(layout),
      ring_(ring),
      pool_(std::move(pool)),
      log_(std::move(log)),
      host_(std::move(host)),
      slots_(ring.slot_count, ring.send_slots) {
  PublishSlots();
}

std::shared_ptr<KvStaging> KvStaging::Start(
    TransferEngine* engine, const KvLayout& layout, KvRing ring,
    std::shared_ptr<KvPoolMemory> pool,
    std::function<void(LogSeverity, std::string_view)> log,
    std::weak_ptr<KvStagingHost> host) {
  std::shared_ptr<KvStaging> staging(new KvStaging(
      engine, layout, ring, std::move(pool), std::move(log), std::move(host)));
  // The worker and the tap hold `this`: Stop ends both.
  staging->worker_ = std::thread([s = staging.get()] { s->WorkerLoop(); });
  staging->tap_id_ = EngineInternal::AddNotificationTap(
      *engine,
      [s = staging.get()](const Notification& n) { return s->Tap(n); });
  return staging;
}

KvStaging::~KvStaging() {
  if (worker_.joinable()) Stop();
}

void KvStaging::Stop() {
  if (tap_id_ != 0) {
    EngineInternal::RemoveNotificationTap(*engine_, tap_id_);
    tap_id_ = 0;
  }
  {
    TsanMutexLock lock(&work_mu_);
    work_stopped_ = true;
    work_cv_.SignalAll();
  }
  if (worker_.joinable()) worker_.join();
  // Jobs left in the queue hold this object: drop them (outside the lock).
  std::deque<std::function<void()>> dropped;
  {
    TsanMutexLock lock(&work_mu_);
    dropped.swap(work_);
  }
  dropped.clear();
  // The worker is gone: its state is this thread's now.
  CancelSends();
  incoming_.clear();
}

bool KvStaging::Tap(const Notification& n) {
  if (n.kind == Notification::Kind::kPeerDisconnected) {
    if (std::shared_ptr<KvStagingHost> host = host_.lock()) {
      host->MarkPeerDead(n.peer);
    }
    Post([this, peer = n.peer] { PeerGone(peer); });
    return false;
  }
  if (n.kind != Notification::Kind::kTransfer || !IsStagingNotice(n.bytes)) {
    return false;
  }
  // Decoded on the worker, not here: the progress thread never waits on
  // staging work (a slot notice may carry thousands of runs).
  Post([this, peer = n.peer, bytes = n.bytes] {
    absl::StatusOr<KvNotice> notice = ParseKvNotice(bytes);
    if (!notice.ok()) {
      if (std::shared_ptr<KvStagingHost> host = host_.lock()) {
        host->CountMalformedNotice();
      }
      if (log_) {
        log_(LogSeverity::kWarning,
             absl::StrFormat("KvTransfer: dropped a malformed staging notice "
                             "from peer %d: %s",
                             peer, notice.status().message()));
      }
      return;
    }
    Dispatch(peer, *std::move(notice));
  });
  return true;
}

void KvStaging::OnNotice(PeerId peer, KvNotice notice) {
  Post([this, peer, notice = std::move(notice)]() mutable {
    Dispatch(peer, std::move(notice));
  });
}

void KvStaging::Dispatch(PeerId peer, KvNotice notice) {
  if (notice.kind == KvNoticeKind::kCredit) {
    HandleCredit(peer, notice);
  } else if (notice.kind == KvNoticeKind::kSlot) {
    ReceiveSlot(peer, std::move(notice));
  }
}

void KvStaging::Post(std::function<void()> job) {
  TsanMutexLock lock(&work_mu_);
  if (work_stopped_) return;
  work_.push_back(std::move(job));
  work_cv_.Signal();
}

void KvStaging::WorkerLoop() {
  std::deque<std::function<void()>> jobs;
  while (true) {
    {
      TsanMutexLock lock(&work_mu_);
      const absl::Time deadline = NextSendDeadline();
      while (work_.empty() && !work_stopped_ && absl::Now() < deadline) {
        lock.WaitWithDeadline(&work_cv_, deadline);
      }
      if (work_stopped_) return;
      jobs.swap(work_);
    }
    for (std::function<void()>& job : jobs) job();
    jobs.clear();
    ApplySendDeadlines(absl::Now());
  }
}

void KvStaging::PublishSlots() {
  slots_free_.store(slots_.free());
  slots_max_in_use_.store(slots_.max_in_use());
}

void KvStaging::PeerGone(PeerId peer) {
  SendsPeerGone(peer);
  ReceivePeerGone(peer);
}

void KvStaging::Stats(KvTransferStats* stats) const {
  stats->staged_slots_sent = slots_sent_.load();
  stats->staged_bytes_sent = bytes_sent_.load();
  stats->staged_slots_received = slots_received_.load();
  stats->staged_bytes_received = bytes_received_.load();
  stats->ring_slots = ring_.slot_count;
  stats->ring_slots_free = slots_free_.load();
  stats->ring_slots_max_in_use = slots_max_in_use_.load();
}

}  // namespace flowkv::internal
