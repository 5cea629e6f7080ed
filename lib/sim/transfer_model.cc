// SPDX-License-Identifier: Apache-2.0
// The transfer model: a prompt's KV moving from its prefill node to its
// decode node. The call counts of each transfer mode from KvLayout, the
// aligned runs of a transfer plan, the wait for blocks on the decode node
// (inbound queue), the link that carries one transfer at a time per node
// pair, and the hand-over to decode when the transfer completes; also
// EstimateTransfer, the same figures for one transfer on an idle link. It
// may call the node model (TryStart), Report (placement.cc) and Push.

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "flowkv/block_allocator.h"
#include "flowkv/block_list.h"
#include "flowkv/sim/simulator.h"
#include "lib/sim/simulator_impl.h"

namespace flowkv {
namespace internal::sim {
namespace {

// Number of pieces when `a` and `b` (the same number of blocks) are cut at
// every run boundary of either: the aligned runs of the transfer plan.
uint64_t AlignedRuns(const BlockList& a, const BlockList& b) {
  auto ra = a.runs();
  auto rb = b.runs();
  size_t i = 0, j = 0;
  uint32_t oi = 0, oj = 0;
  uint64_t pieces = 0;
  while (i < ra.size() && j < rb.size()) {
    const uint32_t n = std::min(ra[i].count - oi, rb[j].count - oj);
    ++pieces;
    oi += n;
    oj += n;
    if (oi == ra[i].count) ++i, oi = 0;
    if (oj == rb[j].count) ++j, oj = 0;
  }
  return pieces;
}

// The blocks of `list` from index `from` on.
BlockList Suffix(const BlockList& list, uint64_t from) {
  std::vector<BlockRun> runs;
  for (const BlockRun& run : list.runs()) {
    if (from >= run.count) {
      from -= run.count;
      continue;
    }
    runs.push_back({run.first + static_cast<BlockId>(from),
                    run.count - static_cast<uint32_t>(from)});
    from = 0;
  }
  return BlockList::FromRuns(runs);
}

uint64_t TransferCalls(TransferMode mode, const CallCounts& cc,
                       uint64_t aligned_runs, uint64_t blocks) {
  switch (mode) {
    case TransferMode::kFlowKv:
      return aligned_runs * cc.per_run_block_major;
    case TransferMode::kLayerMajor:
      return aligned_runs * cc.per_run_layer_major;
    case TransferMode::kBlockwise:
      return blocks * cc.per_block_layer_major;
  }
  return 0;
}

}  // namespace

absl::StatusOr<CallCounts> ComputeCallCounts(const KvGeometry& model) {
  KvGeometry g = model;
  g.num_blocks = 4;
  absl::StatusOr<KvLayout> bm =
      KvLayout::Create({.geometry = g, .pool_order = PoolOrder::kBlockMajor});
  if (!bm.ok()) return bm.status();
  absl::StatusOr<KvLayout> lm =
      KvLayout::Create({.geometry = g,
                        .pool_order = PoolOrder::kLayerMajor,
                        .region_split = RegionSplit::kOnePerLayer});
  if (!lm.ok()) return lm.status();
  const BlockList run({BlockRun{0, 2}});
  const BlockList one({BlockRun{0, 1}});
  CallCounts c;
  absl::StatusOr<std::vector<ByteRange>> r = bm->BlockListRanges(run);
  if (!r.ok()) return r.status();
  c.per_run_block_major = r->size();
  r = lm->BlockListRanges(run);
  if (!r.ok()) return r.status();
  c.per_run_layer_major = r->size();
  r = lm->BlockListRanges(one);
  if (!r.ok()) return r.status();
  c.per_block_layer_major = r->size();
  c.block_bytes = bm->block_bytes();
  return c;
}

void Sim::KvReady(Index r) {
  Node& d = nodes_[reqs_[r].dn];
  d.inbound.push_back(r);
  DrainInbound(d);
  Report(d);
}

void Sim::DrainInbound(Node& d) {
  while (!d.inbound.empty()) {
    const Req& q = reqs_[d.inbound.front()];
    const uint64_t total = CeilDiv(
        uint64_t{q.rec.input_tokens} + q.rec.output_tokens, block_tokens_);
    if (d.Available() < total) break;
    const Index r = d.inbound.front();
    d.inbound.pop_front();
    StartTransfer(r);
  }
}

void Sim::StartTransfer(Index r) {
  Req& q = reqs_[r];
  Node& d = nodes_[q.dn];
  const uint64_t prompt_blocks = q.p_blocks.num_blocks();
  const uint64_t total = CeilDiv(
      uint64_t{q.rec.input_tokens} + q.rec.output_tokens, block_tokens_);
  // The prefix the decode node already caches is reused there, pinned; only
  // the rest of the prompt crosses the link.
  BlockList prefix = PinPrefix(d, r);
  const uint64_t kept = std::min(prefix.num_blocks(), prompt_blocks);
  const uint32_t moved = static_cast<uint32_t>(prompt_blocks - kept);
  absl::StatusOr<BlockList> blocks =
      moved == 0       ? BlockList()
      : prefix.empty() ? d.alloc->Allocate(moved)
                       : d.alloc->Allocate(moved, prefix.runs().back());
  if (!blocks.ok()) {  // cannot happen: DrainInbound checked Available()
    if (!prefix.empty()) (void)d.alloc->Free(prefix);
    d.inbound.push_front(r);
    return;
  }
  const BlockList src = Suffix(q.p_blocks, kept);
  const uint64_t pieces = AlignedRuns(src, *blocks);
  q.rec.src_runs = static_cast<uint32_t>(src.num_runs());
  q.rec.dst_runs = static_cast<uint32_t>(blocks->num_runs());
  prefix.AppendList(*blocks);
  q.d_blocks = std::move(prefix);
  q.rec.decode_cached_tokens = static_cast<uint32_t>(
      std::min<uint64_t>(kept * block_tokens_, q.rec.input_tokens));
  q.growth_left = static_cast<uint32_t>(total - prompt_blocks);
  d.reserved += q.growth_left;
  ++d.incoming;
  q.rec.transfer_calls = TransferCalls(o_.transfer, cc_, pieces, moved);
  q.rec.transfer_bytes = moved * cc_.block_bytes;
  const LinkModel& link = view_->Link(nodes_[q.pn].id, d.id);
  const double ms = link.TransferMs(static_cast<double>(q.rec.transfer_bytes),
                                    static_cast<double>(q.rec.transfer_calls));
  double& free_at = link_free_[{q.pn, q.dn}];
  const double start = std::max(now_, free_at);
  free_at = start + ms;
  q.rec.transfer_start_ms = start;
  q.rec.transfer_end_ms = start + ms;
  Push(start + ms, EventType::kTransferDone, r);
}

void Sim::TransferDone(Index r) {
  last_progress_ = now_;
  Req& q = reqs_[r];
  Node& p = nodes_[q.pn];
  Node& d = nodes_[q.dn];
  (void)p.alloc->Free(q.p_blocks);  // its hashes keep it cached on p
  q.p_blocks.Clear();
  // The decode node now holds the prompt: findable in its cache too.
  CacheHashes(d, q.d_blocks, r);
  --d.incoming;
  d.decode_wait.push_back(r);
  DrainInbound(p);  // p may also decode (a hybrid or switched node)
  TryStart(p);
  Report(p);
  TryStart(d);
  Report(d);
}

}  // namespace internal::sim

absl::StatusOr<TransferEstimate> EstimateTransfer(uint32_t input_tokens,
                                                  TransferMode mode,
                                                  const KvGeometry& model,
                                                  const LinkModel& link) {
  if (input_tokens == 0) {
    return absl::InvalidArgumentError("input_tokens must be >= 1");
  }
  absl::StatusOr<internal::sim::CallCounts> cc =
      internal::sim::ComputeCallCounts(model);
  if (!cc.ok()) return cc.status();
  const uint64_t blocks =
      internal::sim::CeilDiv(input_tokens, model.block_tokens);
  TransferEstimate e;
  e.calls = internal::sim::TransferCalls(mode, *cc, 1, blocks);
  e.bytes = blocks * cc->block_bytes;
  e.ms = link.TransferMs(static_cast<double>(e.bytes),
                         static_cast<double>(e.calls));
  return e;
}

}  // namespace flowkv
