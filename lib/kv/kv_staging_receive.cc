// SPDX-License-Identifier: Apache-2.0
// KvStaging's receiving side (see kv_staging.h and docs/gpu.md "Staging
// protocol"), on the worker: slot notices are checked against this pool (a
// run outside it refuses the slot and fails its request: nothing is
// written), wait for a receive slot lent by KvRingSlots, are read from the
// sender's slot into it (engine Read), scattered into the pool and answered
// with a credit. Each scatter is announced to KvStagingHost (BeginScatter,
// EndScatter) so that a request's failure, or its sender's disconnection,
// is reported only after the scatters that started before it ended. Calls
// the pool memory (Scatter), the engine's public API (Read) and
// KvStagingHost.
#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"
#include "lib/kv/kv_staging.h"

namespace flowkv::internal {

// A staged slot received, waiting for a slot or in flight.
struct KvStaging::IncomingSlot {
  PeerId peer = 0;
  KvNotice notice;
  uint64_t bytes = 0;
  RegionId peer_ring = 0;
  uint64_t peer_offset = 0;
};

KvNotice KvCreditFor(const KvNotice& incoming, const absl::Status& status) {
  KvNotice credit;
  credit.kind = KvNoticeKind::kCredit;
  credit.request_id = incoming.request_id;
  credit.sender_rank = incoming.sender_rank;
  credit.num_senders = incoming.num_senders;
  credit.slot = incoming.slot;
  credit.code = status.code();
  credit.message = std::string(status.message());
  return credit;
}

void KvStaging::ReceiveSlot(PeerId peer, KvNotice notice) {
  std::shared_ptr<KvStagingHost> host = host_.lock();
  if (host == nullptr || host->PeerDead(peer)) return;
  const std::optional<KvPeerRing> sender = host->PeerRing(peer);
  if (!sender) {
    host->RefuseSlot(peer, notice,
                     absl::FailedPreconditionError(
                         "no staging ring of the sender is known (its pool "
                         "descriptor did not arrive or named none)"));
    return;
  }
  if (notice.slot >= sender->slot_count) {
    host->RefuseSlot(peer, notice,
                     absl::InvalidArgumentError(absl::StrFormat(
                         "sender slot %d is not in its ring of %d slots",
                         notice.slot, sender->slot_count)));
    return;
  }
  uint64_t bytes = 0;
  for (const KvSlotRun& run : notice.runs) {
    if (run.region >= layout_.num_regions() ||
        run.offset > layout_.region_bytes(run.region) ||
        run.length > layout_.region_bytes(run.region) - run.offset) {
      host->RefuseSlot(
          peer, notice,
          absl::InvalidArgumentError(absl::StrFormat(
              "run [%d, +%d) of region %d is outside this pool (%d regions)",
              run.offset, run.length, run.region, layout_.num_regions())));
      return;
    }
    bytes += run.length;
  }
  const uint64_t limit = std::min(ring_.slot_bytes, sender->slot_bytes);
  if (bytes > limit) {
    host->RefuseSlot(
        peer, notice,
        absl::InvalidArgumentError(absl::StrFormat(
            "the slot's %d bytes exceed the slot size %d", bytes, limit)));
    return;
  }
  // An honest sender has at most one chunk per slot of its ring out.
  if (!slots_.HoldSlot(peer, sender->slot_count)) {
    host->RefuseSlot(peer, notice,
                     absl::InvalidArgumentError(absl::StrFormat(
                         "more slots outstanding than the sender's ring has "
                         "slots (%d)",
                         sender->slot_count)));
    return;
  }
  auto incoming = std::make_shared<IncomingSlot>();
  incoming->peer = peer;
  incoming->bytes = bytes;
  incoming->peer_ring = sender->region;
  incoming->peer_offset = notice.slot * sender->slot_bytes;
  incoming->notice = std::move(notice);
  incoming_.push_back(std::move(incoming));
  PumpReceive();
}

void KvStaging::PumpReceive() {
  while (!incoming_.empty()) {
    const std::optional<uint32_t> slot = slots_.AcquireReceive();
    if (!slot) break;
    PublishSlots();
    std::shared_ptr<IncomingSlot> incoming = std::move(incoming_.front());
    incoming_.pop_front();
    const TransferOp op{incoming->peer_ring, incoming->peer_offset,
                        ring_.region, *slot * ring_.slot_bytes,
                        incoming->bytes};
    TransferOptions options;
    std::shared_ptr<KvStaging> self = shared_from_this();
    options.on_complete = [self, incoming, slot = *slot](const absl::Status& s,
                                                         const TransferStats&) {
      self->Post(
          [self, incoming, slot, s] { self->ReadDone(incoming, slot, s); });
    };
    TransferHandle ignored = engine_->Read(incoming->peer, {&op, 1}, options);
  }
}

void KvStaging::ReadDone(std::shared_ptr<IncomingSlot> incoming, uint32_t slot,
                         absl::Status s) {
  const KvNotice& notice = incoming->notice;
  std::shared_ptr<KvStagingHost> host = host_.lock();
  auto release = [this, slot, peer = incoming->peer] {
    slots_.SlotDone(peer);
    slots_.ReleaseReceive(slot);
    PublishSlots();
    PumpReceive();
  };
  if (host == nullptr) {
    release();
    return;
  }
  if (!s.ok()) {
    // Best effort: the sender is usually gone.
    host->SendNotice(incoming->peer, KvCreditFor(notice, s));
    release();
    return;
  }
  if (!host->BeginScatter(incoming->peer, notice.request_id)) {
    host->SendNotice(
        incoming->peer,
        KvCreditFor(notice, absl::FailedPreconditionError(absl::StrFormat(
                                "request '%s' already finished, failed or was "
                                "forgotten here: the slot was dropped",
                                notice.request_id))));
    release();
    return;
  }
  std::vector<PoolHostCopy> copies;
  copies.reserve(notice.runs.size());
  uint8_t* base = ring_.base + slot * ring_.slot_bytes;
  for (const KvSlotRun& run : notice.runs) {
    copies.push_back({.region = run.region,
                      .offset = run.offset,
                      .host = base,
                      .length = run.length});
    base += run.length;
  }
  std::shared_ptr<KvStaging> self = shared_from_this();
  pool_->Scatter(std::move(copies), [self, incoming, slot](absl::Status done) {
    // Any thread: the scatter ended, whether or not the worker still runs.
    if (std::shared_ptr<KvStagingHost> host = self->host_.lock()) {
      host->EndScatter(incoming->peer, incoming->notice.request_id);
    }
    self->Post([self, incoming, slot, done] {
      self->ScatterDone(incoming, slot, done);
    });
  });
}

void KvStaging::ScatterDone(const std::shared_ptr<IncomingSlot>& incoming,
                            uint32_t slot, const absl::Status& done) {
  if (std::shared_ptr<KvStagingHost> host = host_.lock()) {
    if (done.ok()) {
      slots_received_.fetch_add(1);
      bytes_received_.fetch_add(incoming->bytes);
      host->SendNotice(incoming->peer, KvCreditFor(incoming->notice, done));
    } else {
      host->RefuseSlot(incoming->peer, incoming->notice, done);
    }
  }
  slots_.SlotDone(incoming->peer);
  slots_.ReleaseReceive(slot);
  PublishSlots();
  PumpReceive();
}

void KvStaging::ReceivePeerGone(PeerId peer) {
  // Slots from it that wait for a slot. (Its count of slots held goes
  // once those in flight are answered.)
  std::erase_if(incoming_, [this, peer](const auto& c) {
    if (c->peer != peer) return false;
    slots_.SlotDone(peer);
    return true;
  });
}

}  // namespace flowkv::internal
