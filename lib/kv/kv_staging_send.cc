// SPDX-License-Identifier: Apache-2.0
// KvStaging's sending side (see kv_staging.h and docs/gpu.md "Staging
// protocol"), on the worker unless noted: a staged send is cut into slots,
// each gathered into a send slot lent by KvRingSlots and announced by a
// slot notice; the peer's credit frees the slot; once every slot is
// credited the data notice goes, and the send is done when it is
// acknowledged. A failure (the gather, a refused slot, the deadline, a
// cancel, the peer's disconnection) stops the cutting; the receiver learns
// of it once every slot out was answered. Calls the pool memory (Gather),
// the engine's public API (Write) and KvStagingHost (SendFailed,
// CountMalformedNotice, PeerDead).
#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/str_format.h"
#include "lib/engine/engine_internal.h"
#include "lib/kv/kv_staging.h"

namespace flowkv::internal {

// One staged Send, owned by the worker (and by completions pending).
struct KvStaging::StagedSend {
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
  uint64_t slot_limit = 0;  // bytes per chunk: the smaller slot
  uint32_t next_slot_seq = 0;
  uint32_t outstanding = 0;  // slots holding this send's slots
  bool waiting = false;      // in waiting_sends_
  bool finishing = false;    // the data or failure notice is out
  absl::Status failure;      // set: stop gathering, fail once drained
  void* ready_event = nullptr;
  std::string data_notice;
  std::optional<absl::Duration> timeout;
  absl::Time deadline = absl::InfiniteFuture();
  LocalTransfer transfer;
  TransferHandle final_write;  // the data notice's Write
  bool cut_all() const { return op_index >= ops.size(); }
};

// Any thread.
TransferHandle KvStaging::Send(PeerId peer, const KvPeerRing& peer_ring,
                               std::vector<TransferOp> ops,
                               const KvNotice& data_notice, const KvPiece& r) {
  auto send = std::make_shared<StagedSend>();
  uint64_t bytes = 0;
  for (const TransferOp& op : ops) bytes += op.length;
  const absl::Time now = absl::Now();
  send->peer = peer;
  send->ops = std::move(ops);
  send->slot_limit = std::min(ring_.slot_bytes, peer_ring.slot_bytes);
  send->ready_event = r.ready_event;
  send->data_notice = EncodeKvNotice(data_notice);
  send->timeout = r.timeout;
  if (r.timeout) send->deadline = now + *r.timeout;
  send->request_id = data_notice.request_id;
  send->rank = data_notice.sender_rank;
  send->senders = data_notice.num_senders;
  std::shared_ptr<KvStaging> self = shared_from_this();
  std::weak_ptr<StagedSend> weak = send;
  auto started =
      LocalTransfer::Start(send->ops.size(), bytes, now, [self, weak] {
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

absl::Time KvStaging::NextSendDeadline() const {
  absl::Time next = absl::InfiniteFuture();
  for (const auto& [id, send] : sends_) {
    if (send->failure.ok() && !send->finishing) {
      next = std::min(next, send->deadline);
    }
  }
  return next;
}

void KvStaging::ApplySendDeadlines(absl::Time now) {
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

// A stopped send whose slots are still out: its handle reports the failure
// now (a Send never outlives its deadline, and Cancel() returns at once even
// when the receiver stalls); its slots stay held, and the receiver learns of
// the failure, once the credits come back or the peer fails.
void KvStaging::ReportStopped(const std::shared_ptr<StagedSend>& send) {
  if (!send->finishing && !send->failure.ok()) {
    send->transfer.Complete(send->failure, absl::Now());
  }
}

void KvStaging::Pump(const std::shared_ptr<StagedSend>& send) {
  while (send->failure.ok() && !send->cut_all()) {
    const std::optional<uint32_t> slot =
        slots_.AcquireSend(send->id, send->peer, send->request_id);
    if (!slot) break;
    PublishSlots();
    ++send->outstanding;
    // Cut the next chunk: runs from the cursor, up to slot_limit bytes and
    // kMaxKvSlotRuns runs, packed from the slot's start.
    uint8_t* host = ring_.base + *slot * ring_.slot_bytes;
    std::vector<PoolHostCopy> copies;
    KvNotice incoming;
    incoming.kind = KvNoticeKind::kSlot;
    incoming.request_id = send->request_id;
    incoming.sender_rank = send->rank;
    incoming.num_senders = send->senders;
    incoming.slot_seq = send->next_slot_seq++;
    incoming.slot = *slot;
    uint64_t used = 0;
    while (!send->cut_all() && used < send->slot_limit &&
           incoming.runs.size() < kMaxKvSlotRuns) {
      const TransferOp& op = send->ops[send->op_index];
      const uint64_t n =
          std::min(op.length - send->op_offset, send->slot_limit - used);
      copies.push_back({.region = op.src_region,
                        .offset = op.src_offset + send->op_offset,
                        .host = host + used,
                        .length = n});
      incoming.runs.push_back({.region = op.dst_region,
                               .offset = op.dst_offset + send->op_offset,
                               .length = n});
      used += n;
      send->op_offset += n;
      if (send->op_offset == op.length) {
        ++send->op_index;
        send->op_offset = 0;
      }
    }
    void* after = incoming.slot_seq == 0 ? send->ready_event : nullptr;
    std::shared_ptr<KvStaging> self = shared_from_this();
    pool_->Gather(std::move(copies), after,
                  [self, send, slot = *slot, notice = EncodeKvNotice(incoming),
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

void KvStaging::PumpWaiting() {
  while (slots_.HasFreeSend() && !waiting_sends_.empty()) {
    std::shared_ptr<StagedSend> send = std::move(waiting_sends_.front());
    waiting_sends_.pop_front();
    send->waiting = false;
    Pump(send);
  }
}

void KvStaging::GatherDone(const std::shared_ptr<StagedSend>& send,
                           uint32_t slot, std::string slot_notice,
                           uint64_t bytes, absl::Status s) {
  slots_.GatherEnded(slot, send->id);
  if (!s.ok() || !send->failure.ok()) {
    if (!s.ok()) StopSend(send, std::move(s));
    if (slots_.ReleaseSend(slot, send->id)) SendSlotsReturned(send, 1);
    return;
  }
  slots_sent_.fetch_add(1);
  bytes_sent_.fetch_add(bytes);
  TransferOptions options;
  options.notification = std::move(slot_notice);
  // No deadline: a slot notice fails only with its peer. (A notice that
  // timed out might still arrive and have the receiver read the slot, so
  // the slot is freed only by the credit or the peer's death.)
  options.timeout = absl::InfiniteDuration();
  std::shared_ptr<KvStaging> self = shared_from_this();
  options.on_complete = [self, send, slot](const absl::Status& status,
                                           const TransferStats&) {
    if (status.ok()) return;
    self->Post([self, send, slot, status] {
      // With no deadline, only the connection fails it (UCX may say
      // "canceled" for a dying endpoint): the peer is unavailable.
      self->StopSend(send,
                     absl::UnavailableError(absl::StrFormat(
                         "KvTransfer::Send: request '%s': slot notice "
                         "to peer %d failed: %s",
                         send->request_id, send->peer, status.ToString())));
      std::shared_ptr<KvStagingHost> host = self->host_.lock();
      // Otherwise PeerGone returns the slot once the peer's disconnection
      // is seen.
      if (host != nullptr && host->PeerDead(send->peer) &&
          self->slots_.ReleaseSend(slot, send->id)) {
        self->SendSlotsReturned(send, 1);
      }
      self->MaybeFinish(send);
    });
  };
  TransferHandle ignored = engine_->Write(send->peer, {}, std::move(options));
}

// `count` slots of `send` were freed: cut more slots, of it or of the
// sends waiting.
void KvStaging::SendSlotsReturned(const std::shared_ptr<StagedSend>& send,
                                  uint32_t count) {
  PublishSlots();
  send->outstanding -= count;
  Pump(send);
  PumpWaiting();
}

void KvStaging::StopSend(const std::shared_ptr<StagedSend>& send,
                         absl::Status status) {
  if (send->failure.ok()) send->failure = std::move(status);
}

void KvStaging::MaybeFinish(const std::shared_ptr<StagedSend>& send) {
  if (send->finishing || send->outstanding > 0) return;
  if (send->failure.ok() && !send->cut_all()) return;
  send->finishing = true;
  if (!send->failure.ok()) {
    // Every slot was scattered or dropped by the receiver: now it may
    // learn of the failure.
    if (std::shared_ptr<KvStagingHost> host = host_.lock()) {
      host->SendFailed(send->peer, send->request_id, send->rank, send->senders,
                       send->failure);
    }
    send->transfer.Complete(send->failure, absl::Now());
    sends_.erase(send->id);
    return;
  }
  TransferOptions options;
  options.notification = send->data_notice;
  options.acknowledged = true;
  options.timeout = send->timeout;
  std::shared_ptr<KvStaging> self = shared_from_this();
  options.on_complete = [self, send](const absl::Status& s,
                                     const TransferStats&) {
    if (!s.ok()) {
      if (std::shared_ptr<KvStagingHost> host = self->host_.lock()) {
        host->SendFailed(send->peer, send->request_id, send->rank,
                         send->senders, s);
      }
    }
    send->transfer.Complete(s, absl::Now());
    self->Post([self, id = send->id] { self->sends_.erase(id); });
  };
  send->final_write = engine_->Write(send->peer, {}, std::move(options));
}

void KvStaging::HandleCredit(PeerId peer, const KvNotice& credit) {
  absl::StatusOr<uint64_t> id =
      slots_.Credit(peer, credit.slot, credit.request_id);
  auto it = id.ok() ? sends_.find(*id) : sends_.end();
  if (it == sends_.end()) {
    if (std::shared_ptr<KvStagingHost> host = host_.lock()) {
      host->CountMalformedNotice();
    }
    return;
  }
  std::shared_ptr<StagedSend> send = it->second;
  if (credit.code != absl::StatusCode::kOk) {
    StopSend(send, absl::Status(credit.code,
                                absl::StrFormat("peer %d refused a slot of "
                                                "request '%s': %s",
                                                peer, credit.request_id,
                                                credit.message)));
  }
  SendSlotsReturned(send, 1);
}

void KvStaging::SendsPeerGone(PeerId peer) {
  // Slots lent to sends to it: their credits will never come. (A slot
  // still being gathered into is returned when the gather ends.)
  std::vector<KvRingSlots::Freed> freed = slots_.PeerFailed(peer);
  for (const KvRingSlots::Freed& f : freed) {
    auto it = sends_.find(f.send);
    if (it == sends_.end()) continue;
    std::shared_ptr<StagedSend> send = it->second;
    StopSend(send, absl::UnavailableError(absl::StrFormat(
                       "KvTransfer::Send: peer %d disconnected during the "
                       "staged send of request '%s'",
                       peer, send->request_id)));
    SendSlotsReturned(send, 1);
  }
  PublishSlots();
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
}

void KvStaging::CancelSends() {
  const absl::Time now = absl::Now();
  for (auto& [id, send] : sends_) {
    send->final_write.Cancel();
    send->transfer.Complete(
        absl::CancelledError("KvTransfer: destroyed with the send in flight"),
        now);
  }
  sends_.clear();
  waiting_sends_.clear();
}

}  // namespace flowkv::internal
