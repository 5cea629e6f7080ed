// SPDX-License-Identifier: Apache-2.0
// KvTransfer's staging worker and its sending side (see kv_transfer_impl.h
// and docs/gpu.md "Staging protocol"): the engine tap that feeds the
// worker, the worker thread and its queue, the ring's send slots, staged
// sends (cut into chunks, gathered into slots, announced by chunk notices,
// freed by credits, finished by the data notice). Calls the pool memory,
// the engine's public API and its notification tap.
#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "lib/common/tsan_lock.h"
#include "lib/kv/kv_notice.h"
#include "lib/kv/kv_transfer_impl.h"

namespace flowkv {

using internal::KvChunkRun;
using internal::KvNotice;
using internal::KvNoticeKind;
using internal::TsanMutexLock;

// One staged Send, owned by the staging worker (and by the slots it holds).
struct KvTransfer::Impl::StagedSend {
  uint64_t id = 0;
  PeerId peer = 0;
  std::string request_id;
  uint32_t rank = 0;
  uint32_t senders = 1;
  // The planned runs (this pool's region and offset -> the peer's) and the
  // cursor of the next chunk: run index and bytes of it already cut.
  std::vector<TransferOp> ops;
  size_t op_index = 0;
  uint64_t op_offset = 0;
  uint64_t chunk_limit = 0;  // bytes per chunk: the smaller slot
  uint32_t next_chunk = 0;
  uint32_t outstanding = 0;  // slots holding this send's chunks
  bool waiting = false;      // in waiting_sends_
  bool finishing = false;    // the data or failure notice is out
  absl::Status failure;      // set: stop gathering, fail once drained
  void* ready_event = nullptr;
  std::string data_notice;
  std::optional<absl::Duration> timeout;
  absl::Time deadline = absl::InfiniteFuture();
  internal::LocalTransfer transfer;
  TransferHandle final_write;  // the data notice's Write
  bool cut_all() const { return op_index >= ops.size(); }
};

namespace {

bool IsStagingNotice(const std::string& bytes) {
  // magic (4) + version (2) + kind (1)
  if (bytes.size() < 7 || !internal::IsKvNotice(bytes)) return false;
  const auto kind = static_cast<KvNoticeKind>(bytes[6]);
  return kind == KvNoticeKind::kChunk || kind == KvNoticeKind::kCredit;
}

}  // namespace

KvTransfer::Impl::~Impl() {
  if (worker_.joinable()) Detach();
}

void KvTransfer::Impl::Start() {
  for (uint32_t s = 0; s < ring_.send_slots; ++s) free_send_slots_.push_back(s);
  for (uint32_t s = ring_.send_slots; s < ring_.slot_count; ++s) {
    free_recv_slots_.push_back(s);
  }
  std::reverse(free_send_slots_.begin(), free_send_slots_.end());
  std::reverse(free_recv_slots_.begin(), free_recv_slots_.end());
  slot_owner_.resize(ring_.send_slots);
  slot_gathering_.resize(ring_.send_slots);
  slots_free_ = ring_.slot_count;
  worker_ = std::thread([this] { WorkerLoop(); });
  tap_id_ = internal::EngineInternal::AddNotificationTap(
      *engine_, [this](const Notification& n) { return Tap(n); });
}

void KvTransfer::Impl::Detach() {
  {
    TsanMutexLock lock(&engine_mu_);
    notice_engine_ = nullptr;
  }
  if (tap_id_ != 0) {
    internal::EngineInternal::RemoveNotificationTap(*engine_, tap_id_);
    tap_id_ = 0;
  }
  {
    TsanMutexLock lock(&work_mu_);
    work_stopped_ = true;
    work_cv_.SignalAll();
  }
  if (worker_.joinable()) worker_.join();
  // Jobs left in the queue hold this Impl: drop them (outside the lock).
  std::deque<std::function<void()>> dropped;
  {
    TsanMutexLock lock(&work_mu_);
    dropped.swap(work_);
  }
  dropped.clear();
  // The worker is gone: its state is this thread's now.
  const absl::Time now = absl::Now();
  for (auto& [id, send] : sends_) {
    send->final_write.Cancel();
    send->transfer.Complete(
        absl::CancelledError("KvTransfer: destroyed with the send in flight"),
        now);
  }
  sends_.clear();
  waiting_sends_.clear();
  slot_owner_.clear();
  incoming_.clear();
}

bool KvTransfer::Impl::Tap(const Notification& n) {
  if (n.kind == Notification::Kind::kPeerDisconnected) {
    {
      // Before the notification is queued: no scatter from this peer
      // starts once anyone can see that it disconnected.
      TsanMutexLock lock(&mu_);
      dead_peers_.insert(n.peer);
    }
    Post([this, peer = n.peer] { StagingPeerGone(peer); });
    return false;
  }
  if (n.kind != Notification::Kind::kTransfer || !IsStagingNotice(n.bytes)) {
    return false;
  }
  Post([this, peer = n.peer, bytes = n.bytes] {
    HandleStagingNotice(peer, bytes);
  });
  return true;
}

void KvTransfer::Impl::Post(std::function<void()> job) {
  TsanMutexLock lock(&work_mu_);
  if (work_stopped_) return;
  work_.push_back(std::move(job));
  work_cv_.Signal();
}

void KvTransfer::Impl::WorkerLoop() {
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

absl::Time KvTransfer::Impl::NextSendDeadline() const {
  absl::Time next = absl::InfiniteFuture();
  for (const auto& [id, send] : sends_) {
    if (send->failure.ok() && !send->finishing) {
      next = std::min(next, send->deadline);
    }
  }
  return next;
}

void KvTransfer::Impl::ApplySendDeadlines(absl::Time now) {
  std::vector<std::shared_ptr<StagedSend>> expired;
  for (const auto& [id, send] : sends_) {
    if (send->failure.ok() && !send->finishing && send->deadline <= now) {
      expired.push_back(send);
    }
  }
  for (const auto& send : expired) {
    StopSend(send, absl::DeadlineExceededError(absl::StrFormat(
                       "KvTransfer::Send: staged send of request '%s' to peer "
                       "%d passed its deadline",
                       send->request_id, send->peer)));
    MaybeFinish(send);
    ReportStopped(send);
  }
}

// A stopped send whose chunks are still out: its handle reports the failure
// now (a Send never outlives its deadline, and Cancel() returns at once even
// when the receiver stalls); its slots stay held, and the receiver learns of
// the failure, once the credits come back or the peer fails.
void KvTransfer::Impl::ReportStopped(const std::shared_ptr<StagedSend>& send) {
  if (!send->finishing && !send->failure.ok()) {
    send->transfer.Complete(send->failure, absl::Now());
  }
}

TransferHandle KvTransfer::Impl::StartStagedSend(
    PeerId peer, std::shared_ptr<const PeerPoolInfo> pool,
    std::vector<TransferOp> ops, const KvNotice& data_notice,
    const KvSendRequest& r) {
  auto send = std::make_shared<StagedSend>();
  uint64_t bytes = 0;
  for (const TransferOp& op : ops) bytes += op.length;
  const absl::Time now = absl::Now();
  send->peer = peer;
  send->ops = std::move(ops);
  send->chunk_limit = std::min(ring_.slot_bytes, pool->slot_bytes);
  send->ready_event = r.ready_event;
  send->data_notice = internal::EncodeKvNotice(data_notice);
  send->timeout = r.timeout;
  if (r.timeout) send->deadline = now + *r.timeout;
  send->request_id = data_notice.request_id;
  send->rank = data_notice.sender_rank;
  send->senders = data_notice.num_senders;
  std::shared_ptr<Impl> self = shared_from_this();
  std::weak_ptr<StagedSend> weak = send;
  auto started = internal::LocalTransfer::Start(
      send->ops.size(), bytes, now, [self, weak] {
        self->Post([self, weak] {
          std::shared_ptr<StagedSend> s = weak.lock();
          if (s == nullptr) return;
          self->StopSend(s, absl::CancelledError(absl::StrFormat(
                                "KvTransfer::Send: request '%s' cancelled",
                                s->request_id)));
          s->final_write.Cancel();
          self->MaybeFinish(s);
          self->ReportStopped(s);
        });
      });
  send->transfer = started.first;
  TransferHandle handle = std::move(started.second);
  Post([self, send] {
    send->id = self->next_send_id_++;
    self->sends_[send->id] = send;
    self->Pump(send);
  });
  return handle;
}

void KvTransfer::Impl::TakeSlot(std::vector<uint32_t>* free_slots) {
  free_slots->pop_back();
  const uint64_t free = --slots_free_;
  const uint64_t in_use = ring_.slot_count - free;
  uint64_t max = slots_max_in_use_.load();
  while (in_use > max &&
         !slots_max_in_use_.compare_exchange_weak(max, in_use)) {
  }
}

void KvTransfer::Impl::Pump(const std::shared_ptr<StagedSend>& send) {
  while (send->failure.ok() && !send->cut_all() && !free_send_slots_.empty()) {
    const uint32_t slot = free_send_slots_.back();
    TakeSlot(&free_send_slots_);
    slot_owner_[slot] = send;
    slot_gathering_[slot] = true;
    ++send->outstanding;
    // Cut the next chunk: runs from the cursor, up to chunk_limit bytes and
    // kMaxKvChunkRuns runs, packed from the slot's start.
    uint8_t* host = ring_.base + slot * ring_.slot_bytes;
    std::vector<PoolHostCopy> copies;
    KvNotice chunk;
    chunk.kind = KvNoticeKind::kChunk;
    chunk.request_id = send->request_id;
    chunk.sender_rank = send->rank;
    chunk.num_senders = send->senders;
    chunk.chunk_index = send->next_chunk++;
    chunk.slot = slot;
    uint64_t used = 0;
    while (!send->cut_all() && used < send->chunk_limit &&
           chunk.runs.size() < internal::kMaxKvChunkRuns) {
      const TransferOp& op = send->ops[send->op_index];
      const uint64_t n =
          std::min(op.length - send->op_offset, send->chunk_limit - used);
      copies.push_back({.region = op.src_region,
                        .offset = op.src_offset + send->op_offset,
                        .host = host + used,
                        .length = n});
      chunk.runs.push_back({.region = op.dst_region,
                            .offset = op.dst_offset + send->op_offset,
                            .length = n});
      used += n;
      send->op_offset += n;
      if (send->op_offset == op.length) {
        ++send->op_index;
        send->op_offset = 0;
      }
    }
    void* after = chunk.chunk_index == 0 ? send->ready_event : nullptr;
    std::shared_ptr<Impl> self = shared_from_this();
    pool_->Gather(std::move(copies), after,
                  [self, send, slot, notice = internal::EncodeKvNotice(chunk),
                   used](absl::Status s) mutable {
                    self->Post([self, send, slot, notice = std::move(notice),
                                used, s = std::move(s)]() mutable {
                      self->GatherDone(send, slot, std::move(notice), used,
                                       std::move(s));
                    });
                  });
  }
  if (send->failure.ok() && !send->cut_all() && !send->waiting) {
    send->waiting = true;
    waiting_sends_.push_back(send);
  }
  MaybeFinish(send);
}

void KvTransfer::Impl::PumpWaiting() {
  while (!free_send_slots_.empty() && !waiting_sends_.empty()) {
    std::shared_ptr<StagedSend> send = std::move(waiting_sends_.front());
    waiting_sends_.pop_front();
    send->waiting = false;
    Pump(send);
  }
}

void KvTransfer::Impl::GatherDone(const std::shared_ptr<StagedSend>& send,
                                  uint32_t slot, std::string chunk_notice,
                                  uint64_t bytes, absl::Status s) {
  slot_gathering_[slot] = false;
  if (!s.ok() || !send->failure.ok()) {
    if (!s.ok()) StopSend(send, std::move(s));
    SendSlotReturned(send, slot);
    return;
  }
  chunks_sent_.fetch_add(1);
  bytes_sent_.fetch_add(bytes);
  TransferOptions options;
  options.notification = std::move(chunk_notice);
  // No deadline: a chunk notice fails only with its peer. (A notice that
  // timed out might still arrive and have the receiver read the slot, so
  // the slot is freed only by the credit or the peer's death.)
  options.timeout = absl::InfiniteDuration();
  std::shared_ptr<Impl> self = shared_from_this();
  options.on_complete = [self, send, slot](const absl::Status& status,
                                           const TransferStats&) {
    if (status.ok()) return;
    self->Post([self, send, slot, status] {
      // With no deadline, only the connection fails it (UCX may say
      // "canceled" for a dying endpoint): the peer is unavailable.
      self->StopSend(send,
                     absl::UnavailableError(absl::StrFormat(
                         "KvTransfer::Send: request '%s': chunk notice "
                         "to peer %d failed: %s",
                         send->request_id, send->peer, status.ToString())));
      bool dead = false;
      {
        TsanMutexLock lock(&self->mu_);
        dead = self->dead_peers_.contains(send->peer);
      }
      // Otherwise StagingPeerGone returns the slot once the peer's
      // disconnection is seen.
      if (dead) self->SendSlotReturned(send, slot);
      self->MaybeFinish(send);
    });
  };
  TransferHandle ignored = engine_->Write(send->peer, {}, std::move(options));
}

void KvTransfer::Impl::SendSlotReturned(const std::shared_ptr<StagedSend>& send,
                                        uint32_t slot) {
  if (slot >= slot_owner_.size() || slot_owner_[slot] != send) return;
  slot_owner_[slot] = nullptr;
  slot_gathering_[slot] = false;
  free_send_slots_.push_back(slot);
  ++slots_free_;
  --send->outstanding;
  Pump(send);
  PumpWaiting();
}

void KvTransfer::Impl::StopSend(const std::shared_ptr<StagedSend>& send,
                                absl::Status status) {
  if (send->failure.ok()) send->failure = std::move(status);
}

void KvTransfer::Impl::MaybeFinish(const std::shared_ptr<StagedSend>& send) {
  if (send->finishing || send->outstanding > 0) return;
  if (send->failure.ok() && !send->cut_all()) return;
  send->finishing = true;
  if (!send->failure.ok()) {
    // Every chunk was scattered or dropped by the receiver: now it may
    // learn of the failure.
    PieceFailed(internal::KvDirection::kPush, send->peer, send->request_id,
                send->rank, send->senders, send->failure);
    send->transfer.Complete(send->failure, absl::Now());
    sends_.erase(send->id);
    return;
  }
  TransferOptions options;
  options.notification = send->data_notice;
  options.acknowledged = true;
  options.timeout = send->timeout;
  std::shared_ptr<Impl> self = shared_from_this();
  options.on_complete = [self, send](const absl::Status& s,
                                     const TransferStats&) {
    if (!s.ok()) {
      self->PieceFailed(internal::KvDirection::kPush, send->peer,
                        send->request_id, send->rank, send->senders, s);
    }
    send->transfer.Complete(s, absl::Now());
    self->Post([self, id = send->id] { self->sends_.erase(id); });
  };
  send->final_write = engine_->Write(send->peer, {}, std::move(options));
}

void KvTransfer::Impl::HandleCredit(PeerId peer, const KvNotice& credit) {
  if (credit.slot >= slot_owner_.size() ||
      slot_owner_[credit.slot] == nullptr ||
      slot_owner_[credit.slot]->peer != peer ||
      slot_owner_[credit.slot]->request_id != credit.request_id) {
    TsanMutexLock lock(&mu_);
    ++malformed_notices_;
    return;
  }
  std::shared_ptr<StagedSend> send = slot_owner_[credit.slot];
  if (credit.code != absl::StatusCode::kOk) {
    StopSend(send, absl::Status(credit.code,
                                absl::StrFormat("peer %d refused a chunk of "
                                                "request '%s': %s",
                                                peer, credit.request_id,
                                                credit.message)));
  }
  SendSlotReturned(send, credit.slot);
}

void KvTransfer::Impl::StagingPeerGone(PeerId peer) {
  // Sends to it: their credits will never come.
  for (uint32_t slot = 0; slot < slot_owner_.size(); ++slot) {
    std::shared_ptr<StagedSend> send = slot_owner_[slot];
    // A slot still being gathered into is returned when the gather ends.
    if (send == nullptr || send->peer != peer || slot_gathering_[slot]) {
      continue;
    }
    StopSend(send, absl::UnavailableError(absl::StrFormat(
                       "KvTransfer::Send: peer %d disconnected during the "
                       "staged send of request '%s'",
                       peer, send->request_id)));
    SendSlotReturned(send, slot);
  }
  std::vector<std::shared_ptr<StagedSend>> to_peer;
  for (const auto& [id, send] : sends_) {
    if (send->peer == peer) to_peer.push_back(send);
  }
  for (const auto& send : to_peer) {
    StopSend(send, absl::UnavailableError(absl::StrFormat(
                       "KvTransfer::Send: peer %d disconnected", peer)));
    MaybeFinish(send);
  }
  std::erase_if(waiting_sends_, [peer](const auto& s) {
    if (s->peer != peer) return false;
    s->waiting = false;
    return true;
  });
  // Chunks from it that wait for a slot. (Its count in chunks_held_ goes
  // once those in flight are answered.)
  std::erase_if(incoming_, [this, peer](const auto& c) {
    if (c->peer != peer) return false;
    ChunkDone(peer);
    return true;
  });
}

}  // namespace flowkv
