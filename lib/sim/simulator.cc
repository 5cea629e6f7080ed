#include "flowkv/sim/simulator.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "flowkv/block_allocator.h"
#include "flowkv/block_list.h"

namespace flowkv {
namespace {

using Index = uint32_t;

enum class EventType : uint8_t {
  kStepDone,
  kTransferDone,
  kHeartbeat,
  kRebalance,
};

struct Event {
  double t;
  uint64_t seq;
  EventType type;
  Index target;  // node for kStepDone, request for kTransferDone
};

struct EventLater {
  bool operator()(const Event& a, const Event& b) const {
    if (a.t != b.t) return a.t > b.t;
    return a.seq > b.seq;
  }
};

struct Req {
  RequestRecord rec;
  Index pn = 0;
  Index dn = 0;
  BlockList p_blocks;      // KV on the P node (until transferred)
  BlockList d_blocks;      // KV on the D node (or the colocated node)
  uint32_t prefilled = 0;  // prompt tokens computed so far
  uint32_t generated = 0;
  uint32_t kv_tokens = 0;
  uint32_t growth_left = 0;  // reserved blocks still to Extend on dn
  bool placed = false;
  bool done = false;
};

struct Node {
  NodeId id = 0;
  NodeType type;
  std::unique_ptr<BlockAllocator> alloc;
  // Blocks promised to admitted requests for decode growth.
  uint64_t reserved = 0;
  std::deque<Index> prefill_q;
  uint64_t queued_prefill_tokens = 0;
  // Requests whose KV is ready on their P node, waiting for blocks here.
  std::deque<Index> inbound;
  uint32_t incoming = 0;  // transfers in flight to this node
  std::deque<Index> decode_wait;
  std::vector<Index> running;
  uint64_t running_ctx = 0;
  // The step in progress.
  bool busy = false;
  bool step_prefill = false;
  bool step_decode = false;
  // Prompts of the step and the tokens of each it computes.
  std::vector<std::pair<Index, uint32_t>> chunks;
  uint64_t batch_tokens = 0;
  double step_start = 0;
  // Utilization window.
  double busy_ms = 0;
  double window_busy = 0;
  double window_start = 0;
  double util = 0;
  NodeRecord rec;

  uint64_t Available() const {
    const uint64_t f = alloc->free_blocks();
    return f > reserved ? f - reserved : 0;
  }
  double BusyAt(double now) const {
    return busy_ms + (busy ? now - step_start : 0);
  }
};

// Simulated time without any step, transfer or arrival after which a run
// stops with an error instead of spinning on heartbeats.
constexpr double kStallMs = 600000;

uint64_t CeilDiv(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

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

LatencyStats Stats(std::vector<double> v) {
  LatencyStats s;
  s.count = v.size();
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / v.size();
  auto pct = [&v](double p) {
    const double pos = p * (v.size() - 1);
    const size_t lo = static_cast<size_t>(std::floor(pos));
    const size_t hi = std::min(lo + 1, v.size() - 1);
    return v[lo] + (v[hi] - v[lo]) * (pos - lo);
  };
  s.p50 = pct(0.5);
  s.p90 = pct(0.9);
  s.p99 = pct(0.99);
  s.max = v.back();
  return s;
}

// Calls per aligned run / per block for each transfer mode, from KvLayout.
struct CallCounts {
  uint64_t per_run_block_major = 1;
  uint64_t per_run_layer_major = 1;
  uint64_t per_block_layer_major = 1;
  uint64_t block_bytes = 0;
};

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

class Sim {
 public:
  Sim(const SimOptions& o, absl::Span<const SimRequest> requests)
      : o_(o), input_(requests) {}

  absl::Status Init(absl::Span<const SimNodeSpec> specs);
  absl::StatusOr<SimResult> Run();

 private:
  absl::Time Abs(double t) const {
    return absl::UnixEpoch() + absl::Microseconds(t * 1000.0);
  }
  void Push(double t, EventType type, Index target) {
    events_.push({t, seq_++, type, target});
  }
  void Advance(double t) {
    area_ += static_cast<double>(in_system_) * (t - now_);
    now_ = t;
  }
  void Arrive(Index r);
  bool TryPlace(Index r);
  void Enqueue(Index r);
  void TryStart(Node& n);
  bool AdmitPrefill(Node& n, Index r, size_t in_batch);
  void AdmitDecodes(Node& n);
  void BeginStep(Node& n, bool prefill, bool decode, double ms);
  bool StartPrefill(Node& n);
  bool StartDecode(Node& n);
  bool StartChunked(Node& n);
  void PrefillDone(Node& n, Index r);
  void DecodeDone(Node& n);
  void StepDone(Node& n);
  void KvReady(Index r);
  void DrainInbound(Node& d);
  void StartTransfer(Index r);
  void TransferDone(Index r);
  void Finish(Index r);
  void Reject(Index r);
  void Report(Node& n);
  void Heartbeat();
  void Rebalance();
  bool Idle() const;
  SimResult Collect();

  const SimOptions& o_;
  absl::Span<const SimRequest> input_;
  std::vector<Req> reqs_;
  std::vector<Node> nodes_;
  std::optional<ClusterView> view_;
  std::unique_ptr<Scheduler> sched_;
  CallCounts cc_;
  bool colocated_ = false;
  uint32_t block_tokens_ = 16;
  std::map<std::pair<Index, Index>, double> link_free_;
  std::priority_queue<Event, std::vector<Event>, EventLater> events_;
  uint64_t seq_ = 0;
  double now_ = 0;
  double area_ = 0;
  uint64_t in_system_ = 0;
  size_t next_arrival_ = 0;
  uint64_t finished_ = 0;      // completed + rejected
  std::deque<Index> pending_;  // arrived, not yet placed
  uint32_t idle_failures_ = 0;
  double last_progress_ = 0;
  double next_progress_ = 0;
  SimResult res_;
};

absl::Status Sim::Init(absl::Span<const SimNodeSpec> specs) {
  if (specs.empty()) return absl::InvalidArgumentError("cluster has no nodes");
  if (!(o_.load_smoothing > 0 && o_.load_smoothing <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "load_smoothing must be in (0, 1], got ", o_.load_smoothing));
  }
  if (!(o_.heartbeat_interval_ms > 0) || !(o_.rebalance_interval_ms >= 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "heartbeat_interval_ms must be > 0 and rebalance_interval_ms >= 0, "
        "got ",
        o_.heartbeat_interval_ms, " and ", o_.rebalance_interval_ms));
  }
  if (o_.max_batch == 0 || o_.prefill_token_budget == 0 ||
      (o_.batching == NodeBatching::kChunkedPrefill &&
       o_.chunk_tokens <= o_.max_batch)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_batch and prefill_token_budget must be >= 1, and chunk_tokens "
        "above max_batch in chunked mode; got max_batch ",
        o_.max_batch, ", prefill_token_budget ", o_.prefill_token_budget,
        ", chunk_tokens ", o_.chunk_tokens));
  }
  absl::StatusOr<CallCounts> cc = ComputeCallCounts(o_.model);
  if (!cc.ok()) return cc.status();
  cc_ = *cc;
  block_tokens_ = o_.model.block_tokens;
  double prev = 0;
  for (size_t i = 0; i < input_.size(); ++i) {
    const SimRequest& r = input_[i];
    if (r.input_tokens == 0 || r.output_tokens == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("request ", r.id, " has zero input or output tokens"));
    }
    if (r.arrival_ms < prev || !std::isfinite(r.arrival_ms)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "requests must be sorted by arrival: request ", r.id, " arrives at ",
          r.arrival_ms, " ms, before ", prev, " ms"));
    }
    prev = r.arrival_ms;
  }
  absl::StatusOr<std::unique_ptr<Scheduler>> s =
      CreateScheduler(o_.policy, o_.scheduler_options);
  if (!s.ok()) return s.status();
  sched_ = std::move(*s);

  ClusterView::Options vo;
  vo.smoothing = o_.load_smoothing;
  vo.default_link = o_.link;
  view_.emplace(vo);
  colocated_ = o_.colocate_hybrid;
  nodes_.resize(specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    const SimNodeSpec& spec = specs[i];
    if (spec.role != NodeRole::kHybrid) colocated_ = false;
    Node& n = nodes_[i];
    n.id = static_cast<NodeId>(i);
    n.type = spec.type;
    const double blocks = std::floor(spec.type.kv_capacity_bytes /
                                     static_cast<double>(cc_.block_bytes));
    if (!(blocks >= 1) || blocks >= 4294967295.0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "node %d (%s): KV capacity %.0f bytes gives %.0f blocks; want [1, "
          "2^32-1)",
          i, spec.type.name, spec.type.kv_capacity_bytes, blocks));
    }
    absl::StatusOr<std::unique_ptr<BlockAllocator>> a =
        BlockAllocator::Create({.num_blocks = static_cast<uint32_t>(blocks)});
    if (!a.ok()) return a.status();
    n.alloc = std::move(*a);
    n.rec.id = n.id;
    n.rec.role = spec.role;
    n.rec.type = spec.type.name;
    NodeInfo info;
    info.id = n.id;
    info.role = spec.role;
    info.current_role = spec.role;
    info.cost = spec.type.cost;
    info.kv_bytes_per_token =
        static_cast<double>(cc_.block_bytes) / block_tokens_;
    info.block_tokens = block_tokens_;
    absl::Status st = view_->AddNode(info);
    if (!st.ok()) return st;
  }
  reqs_.resize(input_.size());
  for (size_t i = 0; i < input_.size(); ++i) {
    RequestRecord& rec = reqs_[i].rec;
    rec.id = input_[i].id;
    rec.input_tokens = input_[i].input_tokens;
    rec.output_tokens = input_[i].output_tokens;
    rec.arrival_ms = input_[i].arrival_ms;
  }
  res_.policy = o_.policy;
  res_.transfer = TransferModeName(o_.transfer);
  res_.batching = NodeBatchingName(o_.batching);
  res_.requests = input_.size();
  return absl::OkStatus();
}

absl::StatusOr<SimResult> Sim::Run() {
  if (!reqs_.empty()) {
    now_ = reqs_[0].rec.arrival_ms;
    next_progress_ = now_ + o_.progress_every_ms;
    last_progress_ = now_;
    for (Node& n : nodes_) {
      n.window_start = now_;
      Report(n);
    }
    Push(now_ + o_.heartbeat_interval_ms, EventType::kHeartbeat, 0);
    if (o_.rebalance_interval_ms > 0) {
      Push(now_ + o_.rebalance_interval_ms, EventType::kRebalance, 0);
    }
  }
  while (finished_ < reqs_.size()) {
    const bool arrival_next =
        next_arrival_ < reqs_.size() &&
        (events_.empty() ||
         reqs_[next_arrival_].rec.arrival_ms <= events_.top().t);
    if (arrival_next) {
      const Index r = static_cast<Index>(next_arrival_++);
      Advance(reqs_[r].rec.arrival_ms);
      ++res_.events;
      Arrive(r);
    } else {
      if (events_.empty()) {
        return absl::InternalError(
            absl::StrCat("simulator: no events left with ",
                         reqs_.size() - finished_, " requests unfinished"));
      }
      const Event e = events_.top();
      events_.pop();
      Advance(e.t);
      ++res_.events;
      switch (e.type) {
        case EventType::kStepDone:
          StepDone(nodes_[e.target]);
          break;
        case EventType::kTransferDone:
          TransferDone(e.target);
          break;
        case EventType::kHeartbeat:
          // An empty system waiting for the next arrival is not stalled.
          if (in_system_ == 0) last_progress_ = now_;
          if (now_ - last_progress_ > kStallMs) {
            return absl::InternalError(absl::StrFormat(
                "simulator: no progress for %.0f s of simulated time at t=%.3f "
                "s with %d requests unfinished (KV deadlock between nodes?)",
                kStallMs / 1000, now_ / 1000, reqs_.size() - finished_));
          }
          Heartbeat();
          if (finished_ < reqs_.size()) {
            Push(now_ + o_.heartbeat_interval_ms, EventType::kHeartbeat, 0);
          }
          break;
        case EventType::kRebalance:
          Rebalance();
          if (finished_ < reqs_.size()) {
            Push(now_ + o_.rebalance_interval_ms, EventType::kRebalance, 0);
          }
          break;
      }
    }
    if (o_.progress && now_ >= next_progress_) {
      next_progress_ = now_ + o_.progress_every_ms;
      o_.progress({now_, next_arrival_, res_.completed, reqs_.size()});
    }
  }
  return Collect();
}

void Sim::Arrive(Index r) {
  last_progress_ = now_;
  ++in_system_;
  if (!pending_.empty() || !TryPlace(r)) pending_.push_back(r);
}

bool Sim::TryPlace(Index r) {
  Req& q = reqs_[r];
  RequestInfo info{.id = q.rec.id,
                   .input_tokens = q.rec.input_tokens,
                   .expected_output_tokens = q.rec.output_tokens};
  absl::StatusOr<Placement> p = sched_->Place(info, *view_, Abs(now_));
  if (!p.ok() || p->prefill_node >= nodes_.size() ||
      p->decode_node >= nodes_.size()) {
    ++res_.place_retries;
    return false;
  }
  q.pn = p->prefill_node;
  q.dn = colocated_ ? q.pn : p->decode_node;
  const NodeInfo* pi = view_->Find(q.pn);
  const NodeInfo* di = view_->Find(q.dn);
  if ((pi != nullptr && pi->current_role == NodeRole::kDecode) ||
      (di != nullptr && di->current_role == NodeRole::kPrefill)) {
    ++res_.role_violations;
  }
  q.placed = true;
  q.rec.placed_ms = now_;
  q.rec.prefill_node = nodes_[q.pn].id;
  q.rec.decode_node = nodes_[q.dn].id;
  const uint64_t prompt_blocks = CeilDiv(q.rec.input_tokens, block_tokens_);
  const uint64_t total_blocks = CeilDiv(
      uint64_t{q.rec.input_tokens} + q.rec.output_tokens, block_tokens_);
  const bool too_big =
      q.pn == q.dn ? total_blocks > nodes_[q.pn].alloc->num_blocks()
                   : prompt_blocks > nodes_[q.pn].alloc->num_blocks() ||
                         total_blocks > nodes_[q.dn].alloc->num_blocks();
  if (too_big) {
    Reject(r);
    return true;
  }
  Enqueue(r);
  return true;
}

void Sim::Enqueue(Index r) {
  Node& n = nodes_[reqs_[r].pn];
  n.prefill_q.push_back(r);
  n.queued_prefill_tokens += reqs_[r].rec.input_tokens;
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
  if (n.Available() < total_blocks) return false;
  if (local &&
      n.running.size() + n.decode_wait.size() + in_batch >= o_.max_batch) {
    return false;
  }
  absl::StatusOr<BlockList> blocks =
      n.alloc->Allocate(static_cast<uint32_t>(prompt_blocks));
  if (!blocks.ok()) return false;  // cannot happen: Available() checked
  q.p_blocks = std::move(*blocks);
  q.growth_left = static_cast<uint32_t>(total_blocks - prompt_blocks);
  n.reserved += q.growth_left;
  q.rec.prefill_start_ms = now_;
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
    const uint32_t in = reqs_[r].rec.input_tokens;
    if (!n.chunks.empty() && n.batch_tokens + in > o_.prefill_token_budget) {
      break;
    }
    if (!AdmitPrefill(n, r, n.chunks.size())) break;
    n.chunks.push_back({r, in});
    n.batch_tokens += in;
    ms += c.b * in + c.c * static_cast<double>(in) * in;
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
    if (q.prefilled == 0 && !AdmitPrefill(n, r, n.chunks.size())) break;
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
      static_cast<double>(n.alloc->num_blocks() - n.alloc->free_blocks()) /
      n.alloc->num_blocks();
  n.rec.peak_kv_fraction = std::max(n.rec.peak_kv_fraction, used);
  DrainInbound(n);
  TryStart(n);
  Report(n);
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
  absl::StatusOr<BlockList> blocks =
      d.alloc->Allocate(static_cast<uint32_t>(prompt_blocks));
  if (!blocks.ok()) {  // cannot happen: DrainInbound checked Available()
    d.inbound.push_front(r);
    return;
  }
  q.d_blocks = std::move(*blocks);
  q.growth_left = static_cast<uint32_t>(total - prompt_blocks);
  d.reserved += q.growth_left;
  ++d.incoming;
  const uint64_t pieces = AlignedRuns(q.p_blocks, q.d_blocks);
  q.rec.src_runs = static_cast<uint32_t>(q.p_blocks.num_runs());
  q.rec.dst_runs = static_cast<uint32_t>(q.d_blocks.num_runs());
  q.rec.transfer_calls = TransferCalls(o_.transfer, cc_, pieces, prompt_blocks);
  q.rec.transfer_bytes = prompt_blocks * cc_.block_bytes;
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
  (void)p.alloc->Free(q.p_blocks);
  q.p_blocks.Clear();
  --d.incoming;
  d.decode_wait.push_back(r);
  DrainInbound(p);  // p may also decode (a hybrid or switched node)
  TryStart(p);
  Report(p);
  TryStart(d);
  Report(d);
}

void Sim::Finish(Index r) {
  Req& q = reqs_[r];
  // A one-token output finishes on its P node, with its prompt blocks.
  const bool on_p = q.rec.output_tokens == 1;
  Node& owner = nodes_[on_p ? q.pn : q.dn];
  BlockList& blocks = on_p ? q.p_blocks : q.d_blocks;
  (void)owner.alloc->Free(blocks);
  blocks.Clear();
  owner.reserved -= q.growth_left;
  q.growth_left = 0;
  q.done = true;
  q.rec.completed = true;
  q.rec.finish_ms = now_;
  ++res_.completed;
  ++finished_;
  --in_system_;
}

void Sim::Reject(Index r) {
  Req& q = reqs_[r];
  q.done = true;
  q.rec.completed = false;
  q.rec.finish_ms = now_;
  ++res_.rejected;
  ++finished_;
  --in_system_;
}

void Sim::Report(Node& n) {
  NodeLoad load;
  load.queued_prefill_tokens = static_cast<double>(n.queued_prefill_tokens);
  load.running_decode = static_cast<double>(n.running.size());
  load.waiting_decode =
      static_cast<double>(n.decode_wait.size() + n.inbound.size() + n.incoming);
  load.decode_context_tokens = static_cast<double>(n.running_ctx);
  load.kv_blocks_total = n.alloc->num_blocks();
  load.kv_blocks_used =
      static_cast<double>(n.alloc->num_blocks() - n.alloc->free_blocks());
  load.utilization = n.util;
  (void)view_->ReportLoad(n.id, load, Abs(now_));
}

bool Sim::Idle() const {
  for (const Node& n : nodes_) {
    if (n.busy || !n.prefill_q.empty() || !n.inbound.empty() ||
        n.incoming > 0 || !n.decode_wait.empty() || !n.running.empty()) {
      return false;
    }
  }
  return true;
}

void Sim::Heartbeat() {
  for (Node& n : nodes_) {
    const double span = now_ - n.window_start;
    const double busy = n.BusyAt(now_);
    if (span > 0) n.util = std::clamp((busy - n.window_busy) / span, 0.0, 1.0);
    n.window_busy = busy;
    n.window_start = now_;
    Report(n);
  }
  bool placed_any = false;
  while (!pending_.empty()) {
    if (!TryPlace(pending_.front())) break;
    pending_.pop_front();
    placed_any = true;
  }
  if (pending_.empty() || placed_any || !Idle()) {
    idle_failures_ = 0;
    return;
  }
  // Nothing runs and nothing can be placed: after 50 tries the pending
  // requests are rejected (e.g. a cluster without a usable prefill node).
  if (++idle_failures_ >= 50 && next_arrival_ >= reqs_.size()) {
    while (!pending_.empty()) {
      Reject(pending_.front());
      pending_.pop_front();
    }
  }
}

void Sim::Rebalance() {
  ++res_.rebalances;
  std::vector<NodeRole> before;
  before.reserve(nodes_.size());
  for (const Node& n : nodes_)
    before.push_back(view_->Find(n.id)->current_role);
  view_->TickRoleCycles();
  RebalancePlan plan = sched_->Rebalance(*view_, Abs(now_));
  for (const RoleDirective& d : plan.directives) {
    (void)view_->SetRole(d.node, d.role, d.cycles);
  }
  if (plan.scale == ScaleAdvice::kScaleOut) ++res_.scale_out_advice;
  if (plan.scale == ScaleAdvice::kScaleIn) ++res_.scale_in_advice;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    if (view_->Find(nodes_[i].id)->current_role != before[i]) {
      ++nodes_[i].rec.role_switches;
      ++res_.role_switches;
    }
  }
}

SimResult Sim::Collect() {
  std::vector<double> ttft, tpot, e2e, xfer;
  double first = reqs_.empty() ? 0 : reqs_.front().rec.arrival_ms;
  double last = first;
  uint64_t ok_ttft = 0, ok_tpot = 0, ok_both = 0;
  uint64_t src_runs = 0, dst_runs = 0;
  for (const Req& q : reqs_) {
    const RequestRecord& r = q.rec;
    last = std::max(last, r.finish_ms);
    if (!r.completed) continue;
    ttft.push_back(r.ttft_ms());
    e2e.push_back(r.e2e_ms());
    if (r.output_tokens > 1) tpot.push_back(r.tpot_ms());
    res_.input_tokens += r.input_tokens;
    res_.output_tokens += r.output_tokens;
    const bool t1 = r.ttft_ms() <= o_.slo_ttft_ms;
    const bool t2 = r.tpot_ms() <= o_.slo_tpot_ms;
    ok_ttft += t1;
    ok_tpot += t2;
    ok_both += t1 && t2;
    if (r.transfer_end_ms > 0) {
      xfer.push_back(r.transfer_ms());
      ++res_.transfers;
      res_.transfer_calls += r.transfer_calls;
      res_.transfer_bytes += r.transfer_bytes;
      src_runs += r.src_runs;
      dst_runs += r.dst_runs;
    }
  }
  res_.ttft_ms = Stats(std::move(ttft));
  res_.tpot_ms = Stats(std::move(tpot));
  res_.e2e_ms = Stats(std::move(e2e));
  res_.transfer_ms = Stats(std::move(xfer));
  res_.duration_s = (last - first) / 1000.0;
  if (res_.duration_s > 0) {
    res_.throughput_tok_s = res_.output_tokens / res_.duration_s;
    res_.total_tok_s =
        (res_.input_tokens + res_.output_tokens) / res_.duration_s;
    res_.request_rate = res_.completed / res_.duration_s;
    res_.mean_in_system = area_ / (last - first);
  }
  if (res_.completed > 0) {
    res_.slo_ttft = static_cast<double>(ok_ttft) / res_.completed;
    res_.slo_tpot = static_cast<double>(ok_tpot) / res_.completed;
    res_.slo_attainment = static_cast<double>(ok_both) / res_.completed;
  }
  if (res_.transfers > 0) {
    res_.mean_src_runs = static_cast<double>(src_runs) / res_.transfers;
    res_.mean_dst_runs = static_cast<double>(dst_runs) / res_.transfers;
  }
  for (Node& n : nodes_) {
    n.rec.busy_ms = n.busy_ms;
    n.rec.kv_blocks_total = n.alloc->num_blocks();
    n.rec.final_kv_blocks_used = n.alloc->num_blocks() - n.alloc->free_blocks();
    res_.nodes.push_back(n.rec);
  }
  if (o_.keep_requests) {
    res_.requests_detail.reserve(reqs_.size());
    for (const Req& q : reqs_) res_.requests_detail.push_back(q.rec);
  }
  return std::move(res_);
}

}  // namespace

const char* TransferModeName(TransferMode mode) {
  switch (mode) {
    case TransferMode::kFlowKv:
      return "flowkv";
    case TransferMode::kBlockwise:
      return "blockwise";
    case TransferMode::kLayerMajor:
      return "layer_major";
  }
  return "?";
}

const char* NodeBatchingName(NodeBatching batching) {
  return batching == NodeBatching::kPrefillFirst ? "prefill_first" : "chunked";
}

absl::StatusOr<NodeBatching> ParseNodeBatching(std::string_view name_std) {
  const absl::string_view name(name_std.data(), name_std.size());
  if (name == "prefill_first") return NodeBatching::kPrefillFirst;
  if (name == "chunked") return NodeBatching::kChunkedPrefill;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown batching \"", name, "\"; known: prefill_first, chunked"));
}

absl::StatusOr<TransferMode> ParseTransferMode(std::string_view name_std) {
  const absl::string_view name(name_std.data(), name_std.size());
  for (TransferMode m : {TransferMode::kFlowKv, TransferMode::kBlockwise,
                         TransferMode::kLayerMajor}) {
    if (name == TransferModeName(m)) return m;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown transfer mode \"", name,
                   "\"; known: flowkv, blockwise, layer_major"));
}

absl::StatusOr<SimResult> Simulate(absl::Span<const SimNodeSpec> nodes,
                                   absl::Span<const SimRequest> requests,
                                   const SimOptions& options) {
  Sim sim(options, requests);
  absl::Status s = sim.Init(nodes);
  if (!s.ok()) return s;
  return sim.Run();
}

absl::StatusOr<TransferEstimate> EstimateTransfer(uint32_t input_tokens,
                                                  TransferMode mode,
                                                  const KvGeometry& model,
                                                  const LinkModel& link) {
  if (input_tokens == 0) {
    return absl::InvalidArgumentError("input_tokens must be >= 1");
  }
  absl::StatusOr<CallCounts> cc = ComputeCallCounts(model);
  if (!cc.ok()) return cc.status();
  const uint64_t blocks = CeilDiv(input_tokens, model.block_tokens);
  TransferEstimate e;
  e.calls = TransferCalls(mode, *cc, 1, blocks);
  e.bytes = blocks * cc->block_bytes;
  e.ms = link.TransferMs(static_cast<double>(e.bytes),
                         static_cast<double>(e.calls));
  return e;
}

std::string RequestsCsv(const SimResult& result) {
  std::string out =
      "id,input_tokens,output_tokens,prefill_node,decode_node,arrival_ms,"
      "placed_ms,prefill_start_ms,first_token_ms,transfer_start_ms,"
      "transfer_end_ms,finish_ms,ttft_ms,tpot_ms,e2e_ms,transfer_calls,"
      "transfer_bytes,src_runs,dst_runs,completed\n";
  for (const RequestRecord& r : result.requests_detail) {
    absl::StrAppendFormat(
        &out,
        "%d,%d,%d,%d,%d,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,"
        "%d,%d,%d,%d,%d\n",
        r.id, r.input_tokens, r.output_tokens, r.prefill_node, r.decode_node,
        r.arrival_ms, r.placed_ms, r.prefill_start_ms, r.first_token_ms,
        r.transfer_start_ms, r.transfer_end_ms, r.finish_ms,
        r.completed ? r.ttft_ms() : 0, r.completed ? r.tpot_ms() : 0,
        r.completed ? r.e2e_ms() : 0, r.transfer_calls, r.transfer_bytes,
        r.src_runs, r.dst_runs, r.completed ? 1 : 0);
  }
  return out;
}

std::string SimResultJson(const SimResult& r) {
  auto stats = [](absl::string_view name, const LatencyStats& s) {
    return absl::StrFormat(
        "\"mean_%s_ms\": %.3f, \"p50_%s_ms\": %.3f, \"p90_%s_ms\": %.3f, "
        "\"p99_%s_ms\": %.3f, \"max_%s_ms\": %.3f, ",
        name, s.mean, name, s.p50, name, s.p90, name, s.p99, name, s.max);
  };
  std::string out = absl::StrFormat(
      "{\"policy\": \"%s\", \"transfer\": \"%s\", \"batching\": \"%s\", "
      "\"requests\": %d, \"completed\": %d, \"rejected\": %d, ",
      r.policy, r.transfer, r.batching, r.requests, r.completed, r.rejected);
  out += stats("e2e", r.e2e_ms);
  out += stats("ttft", r.ttft_ms);
  out += stats("tpot", r.tpot_ms);
  out += stats("transfer", r.transfer_ms);
  absl::StrAppendFormat(
      &out,
      "\"duration_s\": %.3f, \"input_tokens\": %d, \"output_tokens\": %d, "
      "\"throughput_tok_s\": %.3f, \"total_tok_s\": %.3f, "
      "\"request_rate\": %.4f, \"mean_in_system\": %.4f, "
      "\"slo_ttft\": %.4f, \"slo_tpot\": %.4f, \"slo_attainment\": %.4f, "
      "\"transfers\": %d, \"transfer_calls\": %d, \"transfer_bytes\": %d, "
      "\"mean_src_runs\": %.4f, \"mean_dst_runs\": %.4f, "
      "\"role_switches\": %d, \"rebalances\": %d, \"scale_out_advice\": %d, "
      "\"scale_in_advice\": %d, \"place_retries\": %d, "
      "\"role_violations\": %d, \"events\": %d}",
      r.duration_s, r.input_tokens, r.output_tokens, r.throughput_tok_s,
      r.total_tok_s, r.request_rate, r.mean_in_system, r.slo_ttft, r.slo_tpot,
      r.slo_attainment, r.transfers, r.transfer_calls, r.transfer_bytes,
      r.mean_src_runs, r.mean_dst_runs, r.role_switches, r.rebalances,
      r.scale_out_advice, r.scale_in_advice, r.place_retries, r.role_violations,
      r.events);
  return out;
}

}  // namespace flowkv
