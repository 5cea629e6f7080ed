// SPDX-License-Identifier: Apache-2.0
// Sim: the discrete-event simulation behind Simulate(), shared by the files
// that implement it. Each file owns one concept:
//
//   simulator.cc       Simulate, option names, Init (checks and set-up) and
//                      Run: the event queue and the driver loop
//   placement.cc       a request's way in and out: arrival, placement by the
//                      Scheduler (retried on heartbeats), rejection and
//                      completion; the load reports, heartbeats and role
//                      rebalancing that feed and steer the ClusterView
//   node_model.cc      one node's engine: admission, prefill-first and
//                      chunked batching, prefill/decode steps and their cost,
//                      hybrid (colocated) prefill-to-decode hand-over
//   transfer_model.cc  KV transfers between nodes: call counts per transfer
//                      mode, aligned runs, links (one transfer at a time per
//                      node pair), EstimateTransfer
//   metrics.cc         the result: percentiles, SLO attainment, node records,
//                      the CSV and JSON forms of a SimResult
//   prefix_cache_model.cc  the prefix cache: a request's block hashes from
//                      its trace hash_ids, lookups that pin a node's cached
//                      prefix, caching computed and received prompts, and
//                      the nodes' KV events delivered to the router's
//                      PrefixIndex after kv_event_delay_ms
//
// Time is simulated milliseconds (now_); nothing here reads a clock.
//
// Thread safety: externally synchronized. One Sim serves one Simulate call.

#ifndef FLOWKV_LIB_SIM_SIMULATOR_IMPL_H_
#define FLOWKV_LIB_SIM_SIMULATOR_IMPL_H_

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "flowkv/block_allocator.h"
#include "flowkv/block_list.h"
#include "flowkv/kv_events.h"
#include "flowkv/sim/simulator.h"

namespace flowkv::internal::sim {

using Index = uint32_t;

enum class EventType : uint8_t {
  kStepDone,
  kTransferDone,
  kHeartbeat,
  kRebalance,
  kKvEvents,  // target: node whose oldest in-flight event batch arrives
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
  // Chained hashes of the prompt's full blocks (prefix cache only).
  std::vector<uint64_t> hashes;
  // Prompt tokens counted in the P node's queued_prefill_tokens (the part
  // its cache does not hold).
  uint32_t queued = 0;
  bool admitted = false;  // prompt blocks allocated on pn
  double queued_ms = 0;   // its term of the P node's queued_ms
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
  // The node's estimate of its queued prefill time (NodeLoad::
  // queued_prefill_ms): the sum of its queued prompts' prefill times.
  double queued_ms = 0;
  // Requests whose KV is ready on their P node, waiting for blocks here.
  std::deque<Index> inbound;
  uint32_t incoming = 0;  // transfers in flight to this node
  // KV events: the last seq read from alloc, and the batches on their way
  // to the router (delivered in order, kv_event_delay_ms after reading).
  uint64_t events_read = 0;
  std::deque<KvEventBatch> events_in_flight;
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
    const uint64_t f = alloc->available_blocks();
    return f > reserved ? f - reserved : 0;
  }
  double BusyAt(double now) const {
    return busy_ms + (busy ? now - step_start : 0);
  }
};

inline uint64_t CeilDiv(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

// Calls per aligned run / per block for each transfer mode, from KvLayout.
struct CallCounts {
  uint64_t per_run_block_major = 1;
  uint64_t per_run_layer_major = 1;
  uint64_t per_block_layer_major = 1;
  uint64_t block_bytes = 0;
};

// The call counts of `model`'s layouts (transfer_model.cc).
absl::StatusOr<CallCounts> ComputeCallCounts(const KvGeometry& model);

// One simulation run over `requests` (sorted by arrival) on the nodes given
// to Init. REQUIRES: Init returned OK before Run; Run is called once.
class Sim {
 public:
  Sim(const SimOptions& o, absl::Span<const SimRequest> requests)
      : o_(o), input_(requests) {}

  // simulator.cc
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
  // placement.cc
  void Arrive(Index r);
  bool TryPlace(Index r);
  // node_model.cc
  // Prefill time of r's prompt on n with `cached` tokens reused.
  double PromptMs(const Node& n, Index r, uint32_t cached) const;
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
  // transfer_model.cc
  void KvReady(Index r);
  void DrainInbound(Node& d);
  void StartTransfer(Index r);
  void TransferDone(Index r);
  // prefix_cache_model.cc
  void BuildHashes(Req& q, const SimRequest& in) const;
  // The node's cached prefix of r's prompt, pinned (empty without a cache).
  BlockList PinPrefix(Node& n, Index r);
  // Prompt tokens of r the node's cache holds now (nothing stays pinned).
  uint32_t PeekCachedTokens(Node& n, Index r);
  // Records r's prompt hashes on `blocks` (its prompt, in token order).
  void CacheHashes(Node& n, const BlockList& blocks, Index r);
  // Reads the node's new KV events and sends them to the router.
  void PublishEvents(Node& n);
  void DeliverEvents(Index node);
  // placement.cc
  void Finish(Index r);
  void Reject(Index r);
  void Report(Node& n);
  void Heartbeat();
  void Rebalance();
  bool Idle() const;
  // metrics.cc
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
  bool prefix_cache_ = false;
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

}  // namespace flowkv::internal::sim

#endif  // FLOWKV_LIB_SIM_SIMULATOR_IMPL_H_
