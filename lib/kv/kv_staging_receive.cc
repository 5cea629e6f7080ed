// SPDX-License-Identifier: Apache-2.0
// KvTransfer's receiving side of the staging path (see kv_transfer_impl.h
// and docs/gpu.md "Staging protocol"), on the staging worker: chunk
// notices are checked against this pool (a run outside it refuses the
// chunk and fails its request: nothing is written), wait for a receive slot
// of the ring, are read from the sender's slot into it (engine Read),
// scattered into the pool and answered with a credit. Scatters are counted
// under mu_ so that a request's failure, or its sender's disconnection, is
// reported only after the scatters that started before it ended. Calls the
// pool memory and the engine's public API.
#include <utility>

#include "absl/strings/str_format.h"
#include "lib/common/tsan_lock.h"
#include "lib/kv/kv_notice.h"
#include "lib/kv/kv_transfer_impl.h"

namespace flowkv {

using internal::KvChunkRun;
using internal::KvNotice;
using internal::KvNoticeKind;
using internal::TsanMutexLock;

void KvTransfer::Impl::HandleStagingNotice(PeerId peer,
                                           const std::string& bytes) {
  absl::StatusOr<KvNotice> notice = internal::ParseKvNotice(bytes);
  if (!notice.ok()) {
    {
      TsanMutexLock lock(&mu_);
      ++malformed_notices_;
    }
    if (log_) {
      log_(LogSeverity::kWarning,
           absl::StrFormat("KvTransfer: dropped a malformed staging notice "
                           "from peer %d: %s",
                           peer, notice.status().message()));
    }
    return;
  }
  if (notice->kind == KvNoticeKind::kCredit) {
    HandleCredit(peer, *notice);
  } else {
    ReceiveChunk(peer, *std::move(notice));
  }
}

void KvTransfer::Impl::SendCredit(PeerId peer, const KvNotice& chunk,
                                  const absl::Status& status) {
  KvNotice credit;
  credit.kind = KvNoticeKind::kCredit;
  credit.request_id = chunk.request_id;
  credit.sender_rank = chunk.sender_rank;
  credit.num_senders = chunk.num_senders;
  credit.slot = chunk.slot;
  credit.code = status.code();
  credit.message = std::string(status.message());
  SendNotice(peer, credit);
}

void KvTransfer::Impl::RefuseChunk(PeerId peer, const KvNotice& chunk,
                                   absl::Status why) {
  chunks_refused_.fetch_add(1);
  why = absl::Status(why.code(),
                     absl::StrFormat("request '%s': chunk %d from sender rank "
                                     "%d (peer %d) refused: %s",
                                     chunk.request_id, chunk.chunk_index,
                                     chunk.sender_rank, peer, why.message()));
  if (log_) log_(LogSeverity::kWarning, why.ToString());
  {
    TsanMutexLock lock(&mu_);
    tracker_.AddFailure(chunk.request_id, chunk.sender_rank, why);
  }
  SendCredit(peer, chunk, why);
}

void KvTransfer::Impl::ReceiveChunk(PeerId peer, KvNotice notice) {
  {
    TsanMutexLock lock(&mu_);
    if (dead_peers_.contains(peer)) return;
  }
  if (ring_.slot_count == 0) {
    RefuseChunk(peer, notice,
                absl::FailedPreconditionError("this side has no staging ring"));
    return;
  }
  absl::StatusOr<std::shared_ptr<const PeerPoolInfo>> pool =
      FindPool("KvTransfer (staged chunk)", peer);
  if (!pool.ok() || (*pool)->slot_count == 0) {
    RefuseChunk(peer, notice,
                absl::FailedPreconditionError(
                    "no staging ring of the sender is known (its pool "
                    "descriptor did not arrive or named none)"));
    return;
  }
  const PeerPoolInfo& sender = **pool;
  if (notice.slot >= sender.slot_count) {
    RefuseChunk(peer, notice,
                absl::InvalidArgumentError(absl::StrFormat(
                    "sender slot %d is not in its ring of %d slots",
                    notice.slot, sender.slot_count)));
    return;
  }
  uint64_t bytes = 0;
  for (const KvChunkRun& run : notice.runs) {
    if (run.region >= layout_.num_regions() ||
        run.offset > layout_.region_bytes(run.region) ||
        run.length > layout_.region_bytes(run.region) - run.offset) {
      RefuseChunk(
          peer, notice,
          absl::InvalidArgumentError(absl::StrFormat(
              "run [%d, +%d) of region %d is outside this pool (%d regions)",
              run.offset, run.length, run.region, layout_.num_regions())));
      return;
    }
    bytes += run.length;
  }
  const uint64_t limit = std::min(ring_.slot_bytes, sender.slot_bytes);
  if (bytes > limit) {
    RefuseChunk(
        peer, notice,
        absl::InvalidArgumentError(absl::StrFormat(
            "the chunk's %d bytes exceed the slot size %d", bytes, limit)));
    return;
  }
  // An honest sender has at most one chunk per slot of its ring out.
  uint32_t& held = chunks_held_[peer];
  if (held >= sender.slot_count) {
    RefuseChunk(peer, notice,
                absl::InvalidArgumentError(absl::StrFormat(
                    "more chunks outstanding than the sender's ring has "
                    "slots (%d)",
                    sender.slot_count)));
    return;
  }
  ++held;
  auto chunk = std::make_shared<IncomingChunk>();
  chunk->peer = peer;
  chunk->bytes = bytes;
  chunk->peer_ring = sender.ring_region;
  chunk->peer_offset = notice.slot * sender.slot_bytes;
  chunk->notice = std::move(notice);
  incoming_.push_back(std::move(chunk));
  PumpReceive();
}

void KvTransfer::Impl::ChunkDone(PeerId peer) {
  auto it = chunks_held_.find(peer);
  if (it != chunks_held_.end() && --it->second == 0) chunks_held_.erase(it);
}

void KvTransfer::Impl::PumpReceive() {
  while (!free_recv_slots_.empty() && !incoming_.empty()) {
    std::shared_ptr<IncomingChunk> chunk = std::move(incoming_.front());
    incoming_.pop_front();
    const uint32_t slot = free_recv_slots_.back();
    TakeSlot(&free_recv_slots_);
    const TransferOp op{chunk->peer_ring, chunk->peer_offset, ring_.region,
                        slot * ring_.slot_bytes, chunk->bytes};
    TransferOptions options;
    std::shared_ptr<Impl> self = shared_from_this();
    options.on_complete = [self, chunk, slot](const absl::Status& s,
                                              const TransferStats&) {
      self->Post([self, chunk, slot, s] { self->ReadDone(chunk, slot, s); });
    };
    TransferHandle ignored = engine_->Read(chunk->peer, {&op, 1}, options);
  }
}

void KvTransfer::Impl::ReadDone(std::shared_ptr<IncomingChunk> chunk,
                                uint32_t slot, absl::Status s) {
  const KvNotice& notice = chunk->notice;
  auto release = [this, slot, peer = chunk->peer] {
    ChunkDone(peer);
    free_recv_slots_.push_back(slot);
    ++slots_free_;
    PumpReceive();
  };
  if (!s.ok()) {
    // Best effort: the sender is usually gone.
    SendCredit(chunk->peer, notice, s);
    release();
    return;
  }
  bool scatter = false;
  {
    TsanMutexLock lock(&mu_);
    scatter = !dead_peers_.contains(chunk->peer) &&
              tracker_.Accepts(notice.request_id);
    if (scatter) {
      ++scattering_[notice.request_id];
      ++scattering_peers_[chunk->peer];
    }
  }
  if (!scatter) {
    SendCredit(chunk->peer, notice,
               absl::FailedPreconditionError(absl::StrFormat(
                   "request '%s' already finished, failed or was forgotten "
                   "here: the chunk was dropped",
                   notice.request_id)));
    release();
    return;
  }
  std::vector<PoolHostCopy> copies;
  copies.reserve(notice.runs.size());
  uint8_t* host = ring_.base + slot * ring_.slot_bytes;
  for (const KvChunkRun& run : notice.runs) {
    copies.push_back({.region = run.region,
                      .offset = run.offset,
                      .host = host,
                      .length = run.length});
    host += run.length;
  }
  std::shared_ptr<Impl> self = shared_from_this();
  pool_->Scatter(std::move(copies), [self, chunk, slot](absl::Status done) {
    {
      TsanMutexLock lock(&self->mu_);
      const std::string& id = chunk->notice.request_id;
      if (--self->scattering_[id] == 0) self->scattering_.erase(id);
      if (--self->scattering_peers_[chunk->peer] == 0) {
        self->scattering_peers_.erase(chunk->peer);
      }
      self->scatter_cv_.SignalAll();
    }
    self->Post([self, chunk, slot, done] {
      if (done.ok()) {
        self->chunks_received_.fetch_add(1);
        self->bytes_received_.fetch_add(chunk->bytes);
        self->SendCredit(chunk->peer, chunk->notice, absl::OkStatus());
      } else {
        self->RefuseChunk(chunk->peer, chunk->notice, done);
      }
      self->ChunkDone(chunk->peer);
      self->free_recv_slots_.push_back(slot);
      ++self->slots_free_;
      self->PumpReceive();
    });
  });
}

}  // namespace flowkv
