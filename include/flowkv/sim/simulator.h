// SPDX-License-Identifier: Apache-2.0
// Simulator: a discrete-event model of a P/D cluster that runs a real
// Scheduler (flowkv/scheduler.h) on a workload and measures latency.
//
// Model (details and calibration in docs/simulator.md):
//   * Nodes run a continuous-batching loop, prefill first: a step is either
//     a prefill batch (FIFO prompts under a token budget; time
//     a + sum(b*n + c*n^2)) or a decode step over the running batch (time
//     t0 + k*sum(ctx) + e*B). A prefill node only prefills, a decode node
//     only decodes; a hybrid node does both for its own requests (vLLM's
//     prefill-first scheduling, no transfer).
//   * Each node has a BlockAllocator over its KV capacity: prompt blocks are
//     allocated on the P node for the prefill and on the D node for the
//     transfer, decode grows the D list one block at a time, and the
//     resulting runs set the transfer's call count.
//   * KV moves over a link (one transfer at a time per directed pair):
//     fixed + calls * call_overhead + bytes / bandwidth, calls from the KV
//     layout of TransferMode (KvLayout::BlockListRanges of the aligned runs).
//   * On every arrival the Scheduler's Place picks the P and D node; nodes
//     report NodeLoad to a ClusterView on every change and on a heartbeat;
//     every rebalance interval the Scheduler's Rebalance runs and its role
//     directives are applied (ClusterView::SetRole / TickRoleCycles).
//   * The first token is produced by the prefill (TTFT = prefill end -
//     arrival); TPOT = (finish - first token) / (output - 1).
// The run is deterministic: the same requests and options give the same
// result.
//
//   auto nodes = flowkv::ParseClusterSpec("p:a100x1,d:a100x1");
//   auto requests = flowkv::MakeWorkload({.spec = "gov_report", .rate = 1});
//   absl::StatusOr<flowkv::SimResult> r =
//       flowkv::Simulate(*nodes, *requests, {.policy = "load_aware"});
//
// Thread safety: Simulate is thread-safe (each call has its own state).

#ifndef FLOWKV_SIM_SIMULATOR_H_
#define FLOWKV_SIM_SIMULATOR_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "flowkv/export.h"
#include "flowkv/kv_layout.h"
#include "flowkv/scheduler.h"
#include "flowkv/sim/cluster.h"
#include "flowkv/sim/workload.h"

namespace flowkv {

// How a request's KV blocks map to transfer calls.
enum class TransferMode : uint8_t {
  // Block-major pools (FlowKV): one call per run aligned on both sides.
  kFlowKv,
  // Layer-major pools, one region per layer, one call per block per layer
  // per K/V (vLLM's block-wise transfer): 2 * L * blocks calls.
  kBlockwise,
  // Layer-major pools, runs merged: 2 * L calls per aligned run.
  kLayerMajor,
};

// "flowkv", "blockwise", "layer_major".
FLOWKV_EXPORT const char* TransferModeName(TransferMode mode);
// InvalidArgument (listing the names) for an unknown name.
FLOWKV_EXPORT absl::StatusOr<TransferMode> ParseTransferMode(
    std::string_view name);

// Progress of a running simulation, for long runs.
struct SimProgress {
  double sim_time_ms = 0;
  uint64_t arrived = 0;
  uint64_t completed = 0;
  uint64_t total = 0;
};

// How a node batches prefill and decode work.
enum class NodeBatching : uint8_t {
  // vLLM's default: a step is either a prefill batch (whole prompts, taken
  // first whenever any wait) or a decode step over the running batch.
  kPrefillFirst,
  // Chunked prefill (vLLM --enable-chunked-prefill, Sarathi): every step
  // decodes the running batch and fills the rest of chunk_tokens with
  // prompt chunks; time = decode_step + sum(b*chunk + c*((done+chunk)^2 -
  // done^2)), plus a when the step has no decode.
  kChunkedPrefill,
};

// "prefill_first", "chunked".
FLOWKV_EXPORT const char* NodeBatchingName(NodeBatching batching);
// InvalidArgument (listing the names) for an unknown name.
FLOWKV_EXPORT absl::StatusOr<NodeBatching> ParseNodeBatching(
    std::string_view name);

struct SimOptions {
  // Registered scheduler name and its options. Default: "load_aware".
  std::string policy = "load_aware";
  SchedulerOptions scheduler_options;
  // Default: kFlowKv.
  TransferMode transfer = TransferMode::kFlowKv;
  // Model geometry. Default: Llama-3.1-8B (32 layers, 8 KV heads x 128,
  // BF16), 16-token blocks: 128 KiB of KV per token. num_blocks is ignored
  // (each node's comes from its KV capacity).
  KvGeometry model = {.num_layers = 32,
                      .num_blocks = 1,
                      .block_tokens = 16,
                      .kv_heads = 8,
                      .head_dim = 128,
                      .dtype_bytes = 2};
  // Link between every pair of nodes. Default: LinkModel{} (1.5 ms fixed,
  // 45 us per call, 23.5 GB/s).
  LinkModel link;
  // Prefill batch token budget (a longer prompt runs alone). Default: 16384.
  uint32_t prefill_token_budget = 16384;
  // Default: kPrefillFirst.
  NodeBatching batching = NodeBatching::kPrefillFirst;
  // Token budget of a chunked-prefill step (decodes count one each).
  // Default: 2048.
  uint32_t chunk_tokens = 2048;
  // Most requests in a node's running decode batch (vLLM max_num_seqs).
  // Default: 256.
  uint32_t max_batch = 256;
  // Scheduler Rebalance period, simulated ms. 0 disables. Default: 1000.
  double rebalance_interval_ms = 1000;
  // Every node reports its load on every change and at least this often
  // (simulated ms); it also bounds the retry period of unplaced requests.
  // Default: 100.
  double heartbeat_interval_ms = 100;
  // ClusterView smoothing weight of a new report, (0, 1]. Default: 0.5.
  double load_smoothing = 0.5;
  // All-hybrid clusters run colocated: the decode runs where the prefill
  // ran, whatever the placement's decode node. Default: true.
  bool colocate_hybrid = true;
  // Prefix caching (docs/simulator.md, "Prefix cache"). Each node's
  // BlockAllocator runs its prefix cache (enable_prefix_cache): a prompt's
  // full blocks carry hashes derived from the request's hash_ids, a prefill
  // reuses the longest cached prefix on its P node (computing only the
  // rest), a decode node reuses the prefix it holds (receiving only the
  // rest), and freed prompt blocks stay cached until evicted. The nodes' KV
  // events reach the router's PrefixIndex (ClusterView::prefix_index())
  // kv_event_delay_ms after they happen. Default: false.
  bool prefix_cache = false;
  // Prompt tokens per id of SimRequest::hash_ids. Default: 512 (Mooncake).
  uint32_t hash_block_tokens = 512;
  // Delay of the KV events from a node to the router, simulated ms, >= 0.
  // Default: 5.
  double kv_event_delay_ms = 5;
  // SLO limits for attainment. Default: 2000 ms TTFT, 100 ms TPOT.
  double slo_ttft_ms = 2000;
  double slo_tpot_ms = 100;
  // Keep the per-request records in SimResult::requests. Default: true.
  bool keep_requests = true;
  // Called about every `progress_every_ms` of simulated time when set.
  std::function<void(const SimProgress&)> progress;
  double progress_every_ms = 10000;
};

struct LatencyStats {
  double mean = 0;
  double p50 = 0;
  double p90 = 0;
  double p99 = 0;
  double max = 0;
  uint64_t count = 0;
};

// What happened to one request.
struct RequestRecord {
  uint64_t id = 0;
  uint32_t input_tokens = 0;
  uint32_t output_tokens = 0;
  NodeId prefill_node = 0;
  NodeId decode_node = 0;
  double arrival_ms = 0;
  // Placed by the scheduler (later than arrival when it was retried).
  double placed_ms = 0;
  double prefill_start_ms = 0;
  double first_token_ms = 0;
  // The link transfer: start (after any wait for D blocks and the link)
  // and end; both 0 for a colocated request or a one-token output.
  double transfer_start_ms = 0;
  double transfer_end_ms = 0;
  double finish_ms = 0;
  uint64_t transfer_calls = 0;
  uint64_t transfer_bytes = 0;
  // Runs of the P-side and D-side block lists at transfer time.
  uint32_t src_runs = 0;
  uint32_t dst_runs = 0;
  // Prompt tokens found in the prefix cache: on the P node (not computed)
  // and on the D node (not transferred). 0 without prefix_cache.
  uint32_t cached_tokens = 0;
  uint32_t decode_cached_tokens = 0;
  bool completed = false;

  double ttft_ms() const { return first_token_ms - arrival_ms; }
  double e2e_ms() const { return finish_ms - arrival_ms; }
  // 0 for a one-token output.
  double tpot_ms() const {
    return output_tokens > 1
               ? (finish_ms - first_token_ms) / (output_tokens - 1)
               : 0;
  }
  double transfer_ms() const { return transfer_end_ms - transfer_start_ms; }
};

// Per-node totals.
struct NodeRecord {
  NodeId id = 0;
  NodeRole role = NodeRole::kHybrid;
  std::string type;
  double busy_ms = 0;
  uint64_t prefill_tokens = 0;
  uint64_t decode_tokens = 0;
  uint64_t prefill_steps = 0;
  uint64_t decode_steps = 0;
  // Changes of the node's current role.
  uint64_t role_switches = 0;
  double peak_kv_fraction = 0;
  // KV blocks still allocated when the run ended (0 unless a request leaked).
  uint64_t final_kv_blocks_used = 0;
  uint64_t kv_blocks_total = 0;
};

struct SimResult {
  std::string policy;
  std::string transfer;
  std::string batching;
  uint64_t requests = 0;
  uint64_t completed = 0;
  // Requests the scheduler could not place before the cluster ran idle, or
  // larger than any node's KV capacity.
  uint64_t rejected = 0;
  LatencyStats ttft_ms;
  // Over requests with more than one output token.
  LatencyStats tpot_ms;
  LatencyStats e2e_ms;
  // Link time of transferred requests (no queueing).
  LatencyStats transfer_ms;
  // From the first arrival to the last finish, seconds.
  double duration_s = 0;
  uint64_t input_tokens = 0;
  uint64_t output_tokens = 0;
  // Output tokens per second, and input + output tokens per second.
  double throughput_tok_s = 0;
  double total_tok_s = 0;
  // Completed requests per second.
  double request_rate = 0;
  // Time-average number of requests in the system (arrived, not finished).
  double mean_in_system = 0;
  // Fraction of completed requests within the TTFT limit, the TPOT limit,
  // and both.
  double slo_ttft = 0;
  double slo_tpot = 0;
  double slo_attainment = 0;
  uint64_t transfers = 0;
  uint64_t transfer_calls = 0;
  uint64_t transfer_bytes = 0;
  // Mean runs per transferred request, sender and receiver side.
  double mean_src_runs = 0;
  double mean_dst_runs = 0;
  // Prefix cache (0 without prefix_cache): prompt tokens served from the P
  // nodes' caches / from the D nodes' caches, over the prompt tokens of
  // completed requests (transferred ones for the D side).
  double prefix_hit_rate = 0;
  double decode_prefix_hit_rate = 0;
  // KV event batches delivered to the router, and the resynchronisations
  // (snapshots) the router's index needed.
  uint64_t kv_event_batches = 0;
  uint64_t index_resyncs = 0;
  uint64_t role_switches = 0;
  uint64_t rebalances = 0;
  uint64_t scale_out_advice = 0;
  uint64_t scale_in_advice = 0;
  // Placement attempts that failed and were retried later.
  uint64_t place_retries = 0;
  // Placements onto a node whose current role does not serve that phase
  // (the placement is still executed).
  uint64_t role_violations = 0;
  // Events processed.
  uint64_t events = 0;
  std::vector<NodeRecord> nodes;
  std::vector<RequestRecord> requests_detail;
};

// Runs `requests` (sorted by arrival) on a cluster of `nodes`.
// InvalidArgument for no nodes, requests not sorted by arrival or with zero
// tokens, or bad options; NotFound for an unknown policy (from
// CreateScheduler).
FLOWKV_EXPORT absl::StatusOr<SimResult> Simulate(
    absl::Span<const SimNodeSpec> nodes, absl::Span<const SimRequest> requests,
    const SimOptions& options);

// The simulator's cost of moving `input_tokens` of KV in one fresh block
// list on each side over `link`: calls and milliseconds.
struct TransferEstimate {
  uint64_t calls = 0;
  uint64_t bytes = 0;
  double ms = 0;
};
FLOWKV_EXPORT absl::StatusOr<TransferEstimate> EstimateTransfer(
    uint32_t input_tokens, TransferMode mode, const KvGeometry& model,
    const LinkModel& link);

// Writes per-request records as CSV (header + one row per request).
FLOWKV_EXPORT std::string RequestsCsv(const SimResult& result);

// The result as one JSON object (see docs/simulator.md for the fields).
FLOWKV_EXPORT std::string SimResultJson(const SimResult& result);

}  // namespace flowkv

#endif  // FLOWKV_SIM_SIMULATOR_H_
