// SPDX-License-Identifier: Apache-2.0
// The node model: one simulated engine per node. Admission of prompts (KV
// blocks allocated, decode growth reserved) and of decodes into the running
// batch; the two batching modes (prefill-first: whole prompts up to the
// token budget, else one decode step; chunked: decodes plus prompt chunks in
// one step); each step's duration from the node's cost model; and what a
// finished step does: prompts that completed hand their KV to decode, on the
// same node when it is hybrid (colocated) or through a transfer otherwise.
// It may call the transfer model (KvReady, DrainInbound), Finish and Report
// (placement.cc), and Push (the event queue).

#include <algorithm>
#include <utility>

#include "absl/status/statusor.h"
#include "flowkv/block_allocator.h"
#include "flowkv/block_list.h"
#include "flowkv/sim/simulator.h"
#include "lib/sim/simulator_impl.h"

namespace flowkv::internal::sim {

double Sim::PromptMs(const Node& n, Index r, uint32_t cached) const {
  const NodeCostModel& c = n.type.cost;
  const double in = reqs_[r].rec.input_tokens;
  const double done = cached;
  return c.a + c.b * (in - done) + c.c * (in * in - done * done);
}

void Sim::Enqueue(Index r) {
  Node& n = nodes_[reqs_[r].pn];
  Req& q = reqs_[r];
  n.prefill_q.push_back(r);
  // The node's queue counts the prompt tokens its cache does not hold.
  q.queued = q.rec.input_tokens - PeekCachedTokens(n, r);
  n.queued_prefill_tokens += q.queued;
  q.queued_ms = PromptMs(n, r, q.rec.input_tokens - q.queued);
  n.queued_ms += q.queued_ms;
  TryStart(n);
  Report(n);
}

void Sim::TryStart(Node& n) {
  if (n.busy) return;
  if (o_.batching == NodeBatching::kChunkedPrefill) {
    StartChunked(n);
    return;
  }
  if (StartPrefill(n)) return;
  StartDecode(n);
}

bool Sim::AdmitPrefill(Node& n, Index r, size_t in_batch) {
  Req& q = reqs_[r];
  const uint32_t in = q.rec.input_tokens;
  const bool local = q.dn == q.pn;
  const uint64_t prompt_blocks = CeilDiv(in, block_tokens_);
  const uint64_t total_blocks =
      local ? CeilDiv(uint64_t{in} + q.rec.output_tokens, block_tokens_)
            : prompt_blocks;
  if (local &&
      n.running.size() + n.decode_wait.size() + in_batch >= o_.max_batch) {
    return false;
  }
  // The cached prefix is reused in place (pinned); the rest is allocated
  // right after it where the pool allows.
  BlockList prefix = PinPrefix(n, r);
  const uint64_t cached_blocks = std::min(prefix.num_blocks(), prompt_blocks);
  if (n.Available() < total_blocks - cached_blocks) {
    if (!prefix.empty()) (void)n.alloc->Free(prefix);
    return false;
  }
  const uint32_t fresh_blocks =
      static_cast<uint32_t>(prompt_blocks - cached_blocks);
  absl::StatusOr<BlockList> blocks =
      fresh_blocks == 0 ? BlockList()
      : prefix.empty()  ? n.alloc->Allocate(fresh_blocks)
                        : n.alloc->Allocate(fresh_blocks, prefix.runs().back());
  if (!blocks.ok()) {  // cannot happen: Available() checked
    if (!prefix.empty()) (void)n.alloc->Free(prefix);
    return false;
  }
  prefix.AppendList(*blocks);
  q.p_blocks = std::move(prefix);
  q.growth_left = static_cast<uint32_t>(total_blocks - prompt_blocks);
  n.reserved += q.growth_left;
  q.rec.prefill_start_ms = now_;
  // The last prompt token is always computed.
  const uint32_t cached = static_cast<uint32_t>(
      std::min<uint64_t>(cached_blocks * block_tokens_, in - 1));
  q.rec.cached_tokens = cached;
  q.prefilled = cached;
  q.admitted = true;
  // The queue held the estimate from Enqueue; it now holds the real rest.
  n.queued_prefill_tokens = n.queued_prefill_tokens - q.queued + (in - cached);
  q.queued = in - cached;
  const double ms = PromptMs(n, r, cached);
  n.queued_ms += ms - q.queued_ms;
  q.queued_ms = ms;
  return true;
}

void Sim::AdmitDecodes(Node& n) {
  while (!n.decode_wait.empty() && n.running.size() < o_.max_batch) {
    const Index r = n.decode_wait.front();
    n.decode_wait.pop_front();
    n.running.push_back(r);
    n.running_ctx += reqs_[r].kv_tokens;
  }
}

void Sim::BeginStep(Node& n, bool prefill, bool decode, double ms) {
  n.busy = true;
  n.step_prefill = prefill;
  n.step_decode = decode;
  n.step_start = now_;
  Push(now_ + ms, EventType::kStepDone, static_cast<Index>(&n - nodes_.data()));
}

bool Sim::StartPrefill(Node& n) {
  n.chunks.clear();
  n.batch_tokens = 0;
  double ms = n.type.cost.a;
  const NodeCostModel& c = n.type.cost;
  while (!n.prefill_q.empty()) {
    const Index r = n.prefill_q.front();
    Req& q = reqs_[r];
    if (!n.chunks.empty() &&
        n.batch_tokens + q.queued > o_.prefill_token_budget) {
      break;
    }
    if (!AdmitPrefill(n, r, n.chunks.size())) break;
    // A cached prefix is not computed; the rest attends to it.
    const uint32_t in = q.rec.input_tokens;
    const double done = q.prefilled;
    const uint32_t take = in - q.prefilled;
    n.chunks.push_back({r, take});
    n.batch_tokens += take;
    ms += c.b * take + c.c * (static_cast<double>(in) * in - done * done);
    n.prefill_q.pop_front();
  }
  if (n.chunks.empty()) return false;
  BeginStep(n, /*prefill=*/true, /*decode=*/false, ms);
  return true;
}

bool Sim::StartDecode(Node& n) {
  AdmitDecodes(n);
  if (n.running.empty()) return false;
  BeginStep(n, /*prefill=*/false, /*decode=*/true,
            n.type.cost.DecodeStepMs(static_cast<double>(n.running.size()),
                                     static_cast<double>(n.running_ctx)));
  return true;
}

bool Sim::StartChunked(Node& n) {
  AdmitDecodes(n);
  n.chunks.clear();
  n.batch_tokens = 0;
  const NodeCostModel& c = n.type.cost;
  // Decodes take one token of the budget each; prompts fill the rest, the
  // last one possibly partly (it stays at the head of the queue).
  uint64_t budget = o_.chunk_tokens > n.running.size()
                        ? o_.chunk_tokens - n.running.size()
                        : 0;
  double prefill_ms = 0;
  for (const Index r : n.prefill_q) {
    if (budget == 0) break;
    Req& q = reqs_[r];
    if (!q.admitted && !AdmitPrefill(n, r, n.chunks.size())) break;
    const uint32_t take = static_cast<uint32_t>(
        std::min<uint64_t>(budget, q.rec.input_tokens - q.prefilled));
    const double done = q.prefilled;
    // Chunks of one prompt sum to b*n + c*n^2: the chunk's attention covers
    // the prompt so far.
    prefill_ms +=
        c.b * take + c.c * ((done + take) * (done + take) - done * done);
    n.chunks.push_back({r, take});
    n.batch_tokens += take;
    budget -= take;
  }
  if (n.chunks.empty() && n.running.empty()) return false;
  const double ms = n.running.empty()
                        ? c.a + prefill_ms
                        : c.DecodeStepMs(static_cast<double>(n.running.size()),
                                         static_cast<double>(n.running_ctx)) +
                              prefill_ms;
  BeginStep(n, !n.chunks.empty(), !n.running.empty(), ms);
  return true;
}

void Sim::PrefillDone(Node& n, Index r) {
  Req& q = reqs_[r];
  q.rec.first_token_ms = now_;
  q.generated = 1;
  q.kv_tokens = q.rec.input_tokens;
  n.queued_ms = std::max(0.0, n.queued_ms - q.queued_ms);
  q.queued_ms = 0;
  // The computed prompt is findable in this node's cache from now on.
  CacheHashes(n, q.p_blocks, r);
  if (q.rec.output_tokens == 1) {
    Finish(r);
  } else if (q.dn == q.pn) {
    q.d_blocks = std::move(q.p_blocks);
    q.p_blocks.Clear();
    n.decode_wait.push_back(r);
  } else {
    KvReady(r);
  }
}

void Sim::DecodeDone(Node& n) {
  ++n.rec.decode_steps;
  n.rec.decode_tokens += n.running.size();
  size_t keep = 0;
  for (size_t i = 0; i < n.running.size(); ++i) {
    const Index r = n.running[i];
    Req& q = reqs_[r];
    ++q.generated;
    ++q.kv_tokens;
    ++n.running_ctx;
    if (q.kv_tokens > q.d_blocks.num_blocks() * block_tokens_ &&
        q.growth_left > 0) {
      // Reserved at admission, so Extend has the blocks.
      if (n.alloc->Extend(&q.d_blocks, 1).ok()) {
        --q.growth_left;
        --n.reserved;
      }
    }
    if (q.generated >= q.rec.output_tokens) {
      n.running_ctx -= q.kv_tokens;
      Finish(r);
    } else {
      n.running[keep++] = r;
    }
  }
  n.running.resize(keep);
}

void Sim::StepDone(Node& n) {
  last_progress_ = now_;
  n.busy = false;
  n.busy_ms += now_ - n.step_start;
  // Decode first: prompts finishing in this step join the batch next step.
  if (n.step_decode) DecodeDone(n);
  if (n.step_prefill) {
    ++n.rec.prefill_steps;
    n.rec.prefill_tokens += n.batch_tokens;
    n.queued_prefill_tokens -= n.batch_tokens;
    const bool chunked = o_.batching == NodeBatching::kChunkedPrefill;
    for (const auto& [r, take] : n.chunks) {
      Req& q = reqs_[r];
      q.prefilled += take;
      if (q.prefilled < q.rec.input_tokens) continue;  // partial chunk
      // Chunked mode leaves prompts queued until their last chunk; the
      // finished ones are the head of the queue.
      if (chunked) n.prefill_q.pop_front();
      PrefillDone(n, r);
    }
    n.chunks.clear();
    n.batch_tokens = 0;
  }
  const double used =
      static_cast<double>(n.alloc->num_blocks() - n.alloc->available_blocks()) /
      n.alloc->num_blocks();
  n.rec.peak_kv_fraction = std::max(n.rec.peak_kv_fraction, used);
  DrainInbound(n);
  TryStart(n);
  Report(n);
}

}  // namespace flowkv::internal::sim
