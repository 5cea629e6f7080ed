// SPDX-License-Identifier: Apache-2.0
// KvTransfer (include/flowkv/kv_transfer.h): the public methods (forwarded
// to KvTransfer::Impl) and the sending side (Send, Fetch: validation,
// planning from a snapshot of the peer's pool, posting through the
// TransferEngine, IpcSendOrFetch or KvStaging::Send, failure and release
// notices from completion callbacks). Create and the lifecycle are
// kv_transfer_lifecycle.cc's, the receiving side kv_receive.cc's, peers'
// pools kv_pool_exchange.cc's (see kv_transfer_impl.h). Calls the planner,
// the engine's public API and KvStaging.
#include "flowkv/kv_transfer.h"

#include <algorithm>
#include <numeric>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "flowkv/transfer_plan.h"
#include "lib/common/tsan_lock.h"
#include "lib/kv/kv_notice.h"
#include "lib/kv/kv_request_tracker.h"
#include "lib/kv/kv_staging.h"
#include "lib/kv/kv_transfer_impl.h"

namespace flowkv {

absl::Status internal::CheckKvRequestId(const char* caller,
                                        std::string_view id) {
  if (id.empty() || id.size() > kMaxKvRequestIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: a request id of %d bytes is not in [1, %d]",
                        caller, id.size(), kMaxKvRequestIdBytes));
  }
  return absl::OkStatus();
}

namespace {

using internal::CheckKvRequestId;
using internal::KvNotice;
using internal::KvNoticeKind;
using internal::KvRequestTracker;
using internal::TsanMutexLock;
using Direction = internal::KvDirection;

const char* Caller(Direction direction) {
  return direction == Direction::kSend ? "KvTransfer::Send"
                                       : "KvTransfer::Fetch";
}

}  // namespace

// A handle that is already done with `status`.
TransferHandle internal::FailedKvHandle(absl::Status status) {
  return internal::LocalTransfer::Failed(std::move(status));
}

namespace {

using internal::FailedKvHandle;

absl::Status CheckRank(const char* caller, const KvPiece& r) {
  if (r.num_senders == 0 || r.num_senders > kMaxKvSenders) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: num_senders %d is not in [1, %d]", caller,
                        r.num_senders, kMaxKvSenders));
  }
  if (r.sender_rank >= r.num_senders) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: sender_rank %d >= num_senders %d", caller,
                        r.sender_rank, r.num_senders));
  }
  return absl::OkStatus();
}

// The arguments' checks that need no layout of the peer. Sets `*notify`
// when a failure notice can name the request and rank.
absl::Status CheckPiece(const char* caller, std::string_view id,
                        const KvPiece& r, uint32_t num_layers, bool* notify) {
  *notify = false;
  if (absl::Status s = CheckKvRequestId(caller, id); !s.ok()) return s;
  if (absl::Status s = CheckRank(caller, r); !s.ok()) return s;
  *notify = true;
  if (r.num_tokens == 0 || r.src_blocks.empty() || r.dst_blocks.empty()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: request '%s' moves nothing (num_tokens %d, %d source and %d "
        "destination blocks)",
        caller, id, r.num_tokens, r.src_blocks.num_blocks(),
        r.dst_blocks.num_blocks()));
  }
  if (r.token_begin > UINT64_MAX - r.num_tokens) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: token_begin %d + num_tokens %d overflows", caller,
                        r.token_begin, r.num_tokens));
  }
  const bool every_layer = r.layer_begin == 0 && r.layer_end == 0;
  if (!every_layer &&
      (r.layer_begin >= r.layer_end || r.layer_end > num_layers)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: layer range [%d, %d) is not a non-empty part of [0, %d)", caller,
        r.layer_begin, r.layer_end, num_layers));
  }
  if (r.payload.size() > kMaxKvPayloadBytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: payload of %d bytes exceeds the limit %d", caller,
                        r.payload.size(), kMaxKvPayloadBytes));
  }
  return absl::OkStatus();
}

// `list` without its first `blocks` blocks.
BlockList SkipBlocks(const BlockList& list, uint64_t blocks) {
  if (blocks == 0) return list;
  BlockList out;
  for (const BlockRun& run : list.runs()) {
    if (blocks >= run.count) {
      blocks -= run.count;
      continue;
    }
    out.Append(run.first + static_cast<uint32_t>(blocks),
               run.count - static_cast<uint32_t>(blocks));
    blocks = 0;
  }
  return out;
}

absl::Status CheckList(const char* caller, const char* side,
                       const KvLayout& layout, const BlockList& list,
                       uint64_t token_end) {
  const uint64_t tokens = list.num_blocks() * layout.geometry().block_tokens;
  if (tokens < token_end) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: the %s blocks hold %d tokens (%d blocks of %d), the piece ends "
        "at token %d",
        caller, side, tokens, list.num_blocks(), layout.geometry().block_tokens,
        token_end));
  }
  if (absl::Status s = layout.CheckBlocks(list); !s.ok()) {
    return absl::OutOfRangeError(
        absl::StrCat(caller, ": ", side, " ", s.message()));
  }
  return absl::OkStatus();
}

// InvalidArgument when `list` names a block twice (two of its runs
// overlap): the later copy would silently overwrite the earlier one. Runs
// in ascending order (a contiguous or sorted block table) are checked in
// one pass; other lists sort a copy of their runs (never of their blocks).
absl::Status CheckDistinctBlocks(const char* caller, const char* side,
                                 const BlockList& list) {
  absl::Span<const BlockRun> runs = list.runs();
  std::vector<BlockRun> sorted;
  for (size_t i = 1; i < runs.size(); ++i) {
    if (runs[i].first < runs[i - 1].first) {
      sorted.assign(runs.begin(), runs.end());
      std::sort(sorted.begin(), sorted.end(),
                [](const BlockRun& a, const BlockRun& b) {
                  return a.first < b.first;
                });
      runs = sorted;
      break;
    }
  }
  for (size_t i = 1; i < runs.size(); ++i) {
    if (runs[i].first < runs[i - 1].end()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: the %s blocks name block %d more than once",
                          caller, side, runs[i].first));
    }
  }
  return absl::OkStatus();
}

}  // namespace

TransferHandle KvTransfer::Impl::SendOrFetch(Direction direction,
                                             std::string_view request_id,
                                             PeerId peer, const KvPiece& r) {
  const char* caller = Caller(direction);
  bool notify = false;
  absl::Status status =
      CheckPiece(caller, request_id, r, layout_.geometry().num_layers, &notify);
  std::shared_ptr<const PeerPoolInfo> pool;
  if (status.ok()) {
    absl::StatusOr<std::shared_ptr<const PeerPoolInfo>> found =
        FindPool(caller, peer);
    if (found.ok()) {
      pool = *std::move(found);
    } else {
      status = found.status();
    }
  }
  // Planned outside any lock, into this thread's buffer (the engine
  // copies the ops).
  thread_local std::vector<TransferOp> ops;
  ops.clear();
  if (status.ok() && !pool->path_error.ok()) {
    status =
        absl::Status(pool->path_error.code(),
                     absl::StrCat(caller, ": ", pool->path_error.message()));
  }
  if (status.ok() && r.ready_event != nullptr &&
      (direction == Direction::kFetch || pool_ == nullptr ||
       pool_->kind() == MemoryKind::kHost)) {
    status = absl::InvalidArgumentError(absl::StrCat(
        caller, ": ready_event must be null ",
        direction == Direction::kFetch ? "for a Fetch" : "for a host pool"));
  }
  if (status.ok() && direction == Direction::kFetch &&
      pool->path == KvPath::kStaging) {
    status = absl::UnimplementedError(absl::StrCat(
        caller,
        ": fetching over the staging path is not implemented (push "
        "with Send instead)"));
  }
  if (status.ok()) {
    status = Plan(direction, *pool, r, pool->path == KvPath::kDirect, &ops);
  }
  if (!status.ok()) {
    if (notify) {
      PieceFailed(direction, peer, request_id, r.sender_rank, r.num_senders,
                  status);
    }
    return FailedKvHandle(std::move(status));
  }
  KvNotice notice;
  notice.kind = KvNoticeKind::kData;
  notice.request_id = std::string(request_id);
  notice.sender_rank = r.sender_rank;
  notice.num_senders = r.num_senders;
  const bool every_layer = r.layer_begin == 0 && r.layer_end == 0;
  notice.layer_begin = every_layer ? 0 : r.layer_begin;
  notice.layer_end = every_layer ? layout_.geometry().num_layers : r.layer_end;
  notice.token_begin = r.token_begin;
  notice.token_end = r.token_begin + r.num_tokens;
  notice.final_chunk = r.final_chunk;
  notice.payload = r.payload;

  if (pool->path == KvPath::kIpc) {
    return IpcSendOrFetch(direction, peer, *pool, ops, std::move(notice), r);
  }
  if (pool->path == KvPath::kStaging) {
    // A staging path is chosen only when both sides have a ring.
    return staging_->Send(peer,
                          {.region = pool->ring_region,
                           .slot_bytes = pool->slot_bytes,
                           .slot_count = pool->slot_count},
                          ops, notice, r);
  }
  TransferOptions options;
  options.timeout = r.timeout;
  std::shared_ptr<Impl> self = shared_from_this();
  if (direction == Direction::kSend) {
    options.notification = internal::EncodeKvNotice(notice);
    options.acknowledged = true;
    options.on_complete = [self, peer, id = std::move(notice.request_id),
                           rank = r.sender_rank, senders = r.num_senders](
                              const absl::Status& s, const TransferStats&) {
      if (!s.ok())
        self->PieceFailed(Direction::kSend, peer, id, rank, senders, s);
    };
    return engine_->Write(peer, ops, std::move(options));
  }
  options.on_complete = [self, peer, notice = std::move(notice)](
                            const absl::Status& s, const TransferStats&) {
    self->FetchDone(peer, notice, s);
  };
  return engine_->Read(peer, ops, std::move(options));
}

// Plans the piece's ops (engine region ids) onto the end of `*ops`. A
// non-final chunk moves only the blocks common to both pools that it
// fills; its partial last block moves with the next chunk (see
// KvPiece::token_begin).
absl::Status KvTransfer::Impl::Plan(Direction direction,
                                    const PeerPoolInfo& pool, const KvPiece& r,
                                    bool engine_regions,
                                    std::vector<TransferOp>* ops) const {
  const char* caller = Caller(direction);
  const bool push = direction == Direction::kSend;
  const KvLayout& src = push ? layout_ : pool.layout;
  const KvLayout& dst = push ? pool.layout : layout_;
  const std::vector<RegionId>& src_regions = push ? regions_ : pool.regions;
  const std::vector<RegionId>& dst_regions = push ? pool.regions : regions_;
  const uint64_t src_tokens = src.geometry().block_tokens;
  const uint64_t dst_tokens = dst.geometry().block_tokens;
  const uint64_t token_end = r.token_begin + r.num_tokens;
  if (absl::Status s =
          CheckList(caller, "source", src, r.src_blocks, token_end);
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          CheckList(caller, "destination", dst, r.dst_blocks, token_end);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckDistinctBlocks(caller, "destination", r.dst_blocks);
      !s.ok()) {
    return s;
  }
  const uint64_t common = std::lcm(src_tokens, dst_tokens);
  const uint64_t move_begin = r.token_begin / common * common;
  const uint64_t move_end =
      r.final_chunk ? token_end : token_end / common * common;
  if (move_end <= move_begin) return absl::OkStatus();  // notice only
  const TransferPlanRequest plan{
      .src_layout = &src,
      .src_blocks = SkipBlocks(r.src_blocks, move_begin / src_tokens),
      .dst_layout = &dst,
      .dst_blocks = SkipBlocks(r.dst_blocks, move_begin / dst_tokens),
      .num_tokens = move_end - move_begin,
      .layer_begin = r.layer_begin,
      .layer_end = r.layer_end,
      .src_head_begin = r.src_head_begin,
      .dst_head_begin = r.dst_head_begin,
      .num_heads = r.num_heads};
  const size_t first = ops->size();
  if (absl::Status s = AppendTransferPlan(plan, ops); !s.ok()) return s;
  if (!engine_regions) return absl::OkStatus();
  for (size_t i = first; i < ops->size(); ++i) {
    TransferOp& op = (*ops)[i];
    op.src_region = src_regions[op.src_region];
    op.dst_region = dst_regions[op.dst_region];
  }
  return absl::OkStatus();
}

// A piece failed on this side. Push: tell the receiver. Pull: fail the
// request here and release the peer's blocks.
void KvTransfer::Impl::PieceFailed(Direction direction, PeerId peer,
                                   std::string_view request_id, uint32_t rank,
                                   uint32_t num_senders,
                                   const absl::Status& status) {
  KvNotice notice;
  notice.request_id = std::string(request_id);
  notice.sender_rank = rank;
  notice.num_senders = num_senders;
  notice.code = status.code();
  notice.message = std::string(status.message());
  if (direction == Direction::kSend) {
    notice.kind = KvNoticeKind::kFailed;
  } else {
    notice.kind = KvNoticeKind::kReleased;
    TsanMutexLock lock(&mu_);
    tracker_.AddFailure(
        request_id, rank,
        absl::Status(
            status.code(),
            absl::StrFormat("request '%s': fetch of sender rank "
                            "%d from peer %d failed: %s",
                            request_id, rank, peer, status.message())));
  }
  SendNotice(peer, notice);
}

// A Fetch's Read finished: count the piece and release the peer's blocks
// once this rank's part is complete (or failed).
void KvTransfer::Impl::FetchDone(PeerId peer, const KvNotice& piece,
                                 const absl::Status& status) {
  if (!status.ok()) {
    PieceFailed(Direction::kFetch, peer, piece.request_id, piece.sender_rank,
                piece.num_senders, status);
    return;
  }
  KvRequestTracker::PieceOutcome outcome;
  {
    TsanMutexLock lock(&mu_);
    outcome = tracker_.AddPiece(piece, peer, absl::Now());
  }
  absl::Status release;
  if (outcome.late) {
    release = absl::FailedPreconditionError(absl::StrFormat(
        "request '%s' was already finished, failed or forgotten by the "
        "fetching side",
        piece.request_id));
  } else if (!outcome.failure.ok()) {
    release = outcome.failure;
  } else if (!outcome.rank_complete) {
    return;
  }
  KvNotice notice;
  notice.kind = KvNoticeKind::kReleased;
  notice.request_id = piece.request_id;
  notice.sender_rank = piece.sender_rank;
  notice.num_senders = piece.num_senders;
  notice.code = release.code();
  notice.message = std::string(release.message());
  SendNotice(peer, notice);
}

void KvTransfer::Impl::SendFailed(PeerId peer, std::string_view request_id,
                                  uint32_t rank, uint32_t num_senders,
                                  const absl::Status& status) {
  PieceFailed(Direction::kSend, peer, request_id, rank, num_senders, status);
}

// Best effort: a notice with no data, as a Write (so the engine never
// drops it); a refused Write (e.g. the failure closed the endpoint) is
// left to the peer's disconnect handling.
void KvTransfer::Impl::SendNotice(PeerId peer, const KvNotice& notice) {
  SendNoticeBytes(peer, internal::EncodeKvNotice(notice));
}

void KvTransfer::Impl::SendNoticeBytes(PeerId peer, std::string bytes) {
  TransferOptions options;
  options.notification = std::move(bytes);
  TsanMutexLock lock(&engine_mu_);
  if (notice_engine_ == nullptr) return;
  TransferHandle ignored = notice_engine_->Write(peer, {}, std::move(options));
}

absl::StatusOr<KvPath> KvTransfer::PeerPath(PeerId peer) const {
  return impl_->PeerPath(peer);
}

absl::Status KvTransfer::AddPeerPool(PeerId peer, const KvLayout& layout,
                                     std::vector<RegionId> peer_regions) {
  return impl_->AddPeerPool(peer, layout, std::move(peer_regions));
}
absl::Status KvTransfer::AnnouncePool(PeerId peer) {
  return impl_->AnnouncePool(peer);
}
absl::StatusOr<KvLayout> KvTransfer::PeerPool(PeerId peer) const {
  return impl_->PeerPool(peer);
}
absl::Status KvTransfer::WaitForPeerPool(PeerId peer, absl::Duration timeout) {
  return impl_->WaitForPeerPool(peer, timeout);
}
TransferHandle KvTransfer::Send(std::string_view request_id, PeerId peer,
                                const KvPiece& request) {
  return impl_->SendOrFetch(Direction::kSend, request_id, peer, request);
}
TransferHandle KvTransfer::Fetch(std::string_view request_id, PeerId peer,
                                 const KvPiece& request) {
  return impl_->SendOrFetch(Direction::kFetch, request_id, peer, request);
}
absl::Status KvTransfer::Expect(std::string_view request_id,
                                absl::Time deadline) {
  return impl_->Expect(request_id, deadline);
}
void KvTransfer::Forget(std::string_view request_id) {
  impl_->Forget(request_id);
}
KvPollResult KvTransfer::Poll(absl::Duration wait) { return impl_->Poll(wait); }
bool KvTransfer::HandleNotification(const Notification& notification) {
  return impl_->HandleNotification(notification);
}
KvPollResult KvTransfer::TakeResults() { return impl_->TakeResults(); }
uint32_t KvTransfer::LayersArrived(std::string_view request_id) const {
  return impl_->LayersArrived(request_id);
}
KvTransferStats KvTransfer::Stats() const { return impl_->Stats(); }
const KvLayout& KvTransfer::layout() const { return impl_->layout(); }

}  // namespace flowkv
