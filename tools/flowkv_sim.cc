// SPDX-License-Identifier: Apache-2.0
// flowkv-sim: runs a scheduling policy on a simulated P/D cluster.
//
//   flowkv-sim --cluster p:a100x1,d:a100x1 --policy load_aware \
//              --workload gov_report --rate 0.5 --requests 200 --json
//
// See docs/simulator.md for the model and the flags.

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <unistd.h>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "flowkv/scheduler.h"
#include "flowkv/sim/cluster.h"
#include "flowkv/sim/simulator.h"
#include "flowkv/sim/workload.h"
#include "fmt/core.h"
#include "tools/sim/cluster_file.h"

ABSL_FLAG(std::string, cluster, "p:a100x1,d:a100x1",
          "Nodes: comma-separated ROLE:TYPE[xN], ROLE p|d|hybrid, TYPE "
          "a100|h100|l20|h20");
ABSL_FLAG(std::string, cluster_file, "",
          "A measured cluster (flowkv-cluster --calibrate --cluster_file): "
          "its nodes, cost model, KV geometry and link replace --cluster and "
          "the link flags");
ABSL_FLAG(std::string, policy, "load_aware",
          "Scheduler policy (round_robin, least_loaded, kv_cost, load_aware, "
          "or any registered name)");
ABSL_FLAG(std::vector<std::string>, policy_param, {},
          "Policy options NAME=VALUE, comma-separated (see docs/scheduler.md)");
ABSL_FLAG(std::string, workload, "synthetic:1000:128",
          "synthetic:IN:OUT | longbench:NAME | NAME (gov_report, qmsum, ...) "
          "| shift[:PHASE_S] | trace:PATH");
ABSL_FLAG(std::string, trace, "",
          "Trace file to replay (Mooncake .jsonl or Azure .csv); overrides "
          "--workload");
ABSL_FLAG(double, rate, 1.0, "Poisson arrival rate, requests per second");
ABSL_FLAG(uint64_t, requests, 100,
          "Requests to generate, or the first N of a trace (0: whole trace)");
ABSL_FLAG(uint64_t, seed, 1, "Seed of the workload generator");
ABSL_FLAG(double, time_scale, 1.0,
          "Trace speed-up: arrival times are divided by it");
ABSL_FLAG(std::string, transfer, "flowkv",
          "KV layout for transfer calls: flowkv | blockwise | layer_major");
ABSL_FLAG(bool, json, false, "Print one JSON object instead of a table");
ABSL_FLAG(std::string, csv, "", "Write per-request records to this CSV file");
ABSL_FLAG(double, slo_ttft_ms, 2000, "TTFT limit for SLO attainment, ms");
ABSL_FLAG(double, slo_tpot_ms, 100, "TPOT limit for SLO attainment, ms");
ABSL_FLAG(double, rebalance_ms, 1000,
          "Scheduler Rebalance period, simulated ms (0: never)");
ABSL_FLAG(double, heartbeat_ms, 100, "Load report heartbeat, simulated ms");
ABSL_FLAG(double, smoothing, 0.5, "ClusterView smoothing of load reports");
ABSL_FLAG(uint32_t, prefill_budget, 16384, "Prefill batch token budget");
ABSL_FLAG(std::string, batching, "prefill_first",
          "Node batching: prefill_first (vLLM default) | chunked (chunked "
          "prefill)");
ABSL_FLAG(uint32_t, chunk_tokens, 2048,
          "Token budget of a chunked-prefill step");
ABSL_FLAG(uint32_t, max_batch, 256, "Max running decode requests per node");
ABSL_FLAG(double, bandwidth_gbps, 23.5, "Link bandwidth, GB/s (1e9 B/s)");
ABSL_FLAG(double, call_overhead_us, 45, "Link per-call overhead, us");
ABSL_FLAG(double, fixed_ms, 1.5, "Link fixed cost per transfer, ms");
ABSL_FLAG(bool, prefix_cache, false,
          "Model each node's prefix cache (hits from the trace's hash_ids) "
          "and feed the router's prefix index with the nodes' KV events");
ABSL_FLAG(double, kv_event_delay_ms, 5,
          "Delay of KV events from a node to the router, simulated ms");
ABSL_FLAG(uint32_t, hash_block_tokens, 512,
          "Prompt tokens per trace hash id (Mooncake: 512)");
ABSL_FLAG(bool, progress, true,
          "Print a progress line on stderr for runs longer than 3 s");

namespace {

// Abseil flag names use '_': accept --time-scale as --time_scale.
std::vector<char*> NormalizeFlagNames(int argc, char** argv,
                                      std::vector<std::string>* storage) {
  storage->reserve(argc);
  std::vector<char*> out;
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (i > 0 && arg.size() > 2 && arg.rfind("--", 0) == 0) {
      const size_t end = arg.find('=');
      for (size_t j = 2; j < std::min(end, arg.size()); ++j) {
        if (arg[j] == '-') arg[j] = '_';
      }
    }
    storage->push_back(std::move(arg));
  }
  for (std::string& s : *storage) out.push_back(s.data());
  return out;
}

int Fail(const absl::Status& s) {
  fmt::print(stderr, "flowkv-sim: {}\n", s.ToString());
  return 1;
}

void PrintTable(const flowkv::SimResult& r, const std::string& cluster,
                const std::string& workload) {
  fmt::print("cluster {}  policy {}  transfer {}  batching {}  workload {}\n",
             cluster, r.policy, r.transfer, r.batching, workload);
  fmt::print("requests {}  completed {}  rejected {}  duration {:.1f} s\n",
             r.requests, r.completed, r.rejected, r.duration_s);
  fmt::print("{:<14}{:>12}{:>12}{:>12}{:>12}{:>12}\n", "latency (ms)", "mean",
             "p50", "p90", "p99", "max");
  auto row = [](const char* name, const flowkv::LatencyStats& s) {
    fmt::print("{:<14}{:>12.1f}{:>12.1f}{:>12.1f}{:>12.1f}{:>12.1f}\n", name,
               s.mean, s.p50, s.p90, s.p99, s.max);
  };
  row("e2e", r.e2e_ms);
  row("ttft", r.ttft_ms);
  row("tpot", r.tpot_ms);
  row("kv transfer", r.transfer_ms);
  fmt::print(
      "throughput {:.1f} output tok/s, {:.1f} total tok/s, {:.3f} req/s; "
      "mean in system {:.2f}\n",
      r.throughput_tok_s, r.total_tok_s, r.request_rate, r.mean_in_system);
  fmt::print("SLO attainment {:.1f}% (ttft {:.1f}%, tpot {:.1f}%)\n",
             100 * r.slo_attainment, 100 * r.slo_ttft, 100 * r.slo_tpot);
  fmt::print(
      "transfers {}  calls {}  bytes {:.3f} GB  runs/request src {:.2f} dst "
      "{:.2f}\n",
      r.transfers, r.transfer_calls, r.transfer_bytes / 1e9, r.mean_src_runs,
      r.mean_dst_runs);
  fmt::print(
      "role switches {}  rebalances {}  scale-out advice {}  scale-in advice "
      "{}  place retries {}  role violations {}\n",
      r.role_switches, r.rebalances, r.scale_out_advice, r.scale_in_advice,
      r.place_retries, r.role_violations);
  fmt::print(
      "prefix cache hit rate {:.1f}% (decode side {:.1f}%)  kv event batches "
      "{}  index resyncs {}\n",
      100 * r.prefix_hit_rate, 100 * r.decode_prefix_hit_rate,
      r.kv_event_batches, r.index_resyncs);
  fmt::print("{:<6}{:<9}{:<6}{:>10}{:>14}{:>14}{:>10}{:>10}\n", "node", "role",
             "type", "busy %", "prefill tok", "decode tok", "kv peak",
             "switches");
  for (const flowkv::NodeRecord& n : r.nodes) {
    fmt::print("{:<6}{:<9}{:<6}{:>10.1f}{:>14}{:>14}{:>9.0f}%{:>10}\n", n.id,
               flowkv::NodeRoleName(n.role), n.type,
               r.duration_s > 0 ? n.busy_ms / (10 * r.duration_s) : 0.0,
               n.prefill_tokens, n.decode_tokens, 100 * n.peak_kv_fraction,
               n.role_switches);
  }
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Simulates a P/D cluster running a flowkv scheduler.\n"
      "  flowkv-sim --cluster p:a100x1,d:a100x1 --policy load_aware "
      "--workload gov_report --rate 0.5 --requests 200 [--json]");
  std::vector<std::string> storage;
  std::vector<char*> args = NormalizeFlagNames(argc, argv, &storage);
  absl::ParseCommandLine(static_cast<int>(args.size()), args.data());

  absl::StatusOr<std::vector<flowkv::SimNodeSpec>> nodes =
      flowkv::ParseClusterSpec(absl::GetFlag(FLAGS_cluster));
  if (!nodes.ok()) return Fail(nodes.status());

  flowkv::WorkloadOptions wo;
  wo.spec = absl::GetFlag(FLAGS_trace).empty()
                ? absl::GetFlag(FLAGS_workload)
                : "trace:" + absl::GetFlag(FLAGS_trace);
  wo.rate = absl::GetFlag(FLAGS_rate);
  wo.num_requests = absl::GetFlag(FLAGS_requests);
  wo.seed = absl::GetFlag(FLAGS_seed);
  wo.time_scale = absl::GetFlag(FLAGS_time_scale);
  absl::StatusOr<std::vector<flowkv::SimRequest>> requests =
      flowkv::MakeWorkload(wo);
  if (!requests.ok()) return Fail(requests.status());

  flowkv::SimOptions so;
  so.policy = absl::GetFlag(FLAGS_policy);
  for (const std::string& kv : absl::GetFlag(FLAGS_policy_param)) {
    const std::vector<std::string> parts = absl::StrSplit(kv, '=');
    double value;
    if (parts.size() != 2 || !absl::SimpleAtod(parts[1], &value)) {
      return Fail(absl::InvalidArgumentError(
          "--policy_param wants NAME=VALUE with a number, got \"" + kv + "\""));
    }
    so.scheduler_options.params[parts[0]] = value;
  }
  absl::StatusOr<flowkv::TransferMode> mode =
      flowkv::ParseTransferMode(absl::GetFlag(FLAGS_transfer));
  if (!mode.ok()) return Fail(mode.status());
  so.transfer = *mode;
  so.slo_ttft_ms = absl::GetFlag(FLAGS_slo_ttft_ms);
  so.slo_tpot_ms = absl::GetFlag(FLAGS_slo_tpot_ms);
  so.rebalance_interval_ms = absl::GetFlag(FLAGS_rebalance_ms);
  so.heartbeat_interval_ms = absl::GetFlag(FLAGS_heartbeat_ms);
  so.load_smoothing = absl::GetFlag(FLAGS_smoothing);
  so.prefill_token_budget = absl::GetFlag(FLAGS_prefill_budget);
  so.max_batch = absl::GetFlag(FLAGS_max_batch);
  absl::StatusOr<flowkv::NodeBatching> batching =
      flowkv::ParseNodeBatching(absl::GetFlag(FLAGS_batching));
  if (!batching.ok()) return Fail(batching.status());
  so.batching = *batching;
  so.chunk_tokens = absl::GetFlag(FLAGS_chunk_tokens);
  so.link.bandwidth_bytes_per_s = absl::GetFlag(FLAGS_bandwidth_gbps) * 1e9;
  so.link.call_overhead_ms = absl::GetFlag(FLAGS_call_overhead_us) / 1000;
  so.link.fixed_ms = absl::GetFlag(FLAGS_fixed_ms);
  so.keep_requests = !absl::GetFlag(FLAGS_csv).empty();
  so.prefix_cache = absl::GetFlag(FLAGS_prefix_cache);
  so.kv_event_delay_ms = absl::GetFlag(FLAGS_kv_event_delay_ms);
  so.hash_block_tokens = absl::GetFlag(FLAGS_hash_block_tokens);
  if (!absl::GetFlag(FLAGS_cluster_file).empty()) {
    absl::StatusOr<flowkv::sim_tools::ClusterFile> file =
        flowkv::sim_tools::ReadClusterFile(absl::GetFlag(FLAGS_cluster_file));
    if (!file.ok()) return Fail(file.status());
    *nodes = file->Nodes();
    so.link = file->link;
    so.model = file->geometry;
    so.colocate_hybrid = true;
  }

  const auto wall_start = std::chrono::steady_clock::now();
  auto last_print = wall_start;
  bool printed = false;
  const bool tty = isatty(STDERR_FILENO) != 0;
  if (absl::GetFlag(FLAGS_progress)) {
    so.progress_every_ms = 1000;
    so.progress = [&](const flowkv::SimProgress& p) {
      const auto now = std::chrono::steady_clock::now();
      if (now - wall_start < std::chrono::seconds(3) ||
          now - last_print < std::chrono::seconds(1)) {
        return;
      }
      last_print = now;
      printed = true;
      // One updating line on a terminal, one line per update otherwise.
      fmt::print(stderr,
                 "{}flowkv-sim: t={:.0f} s simulated, {}/{} arrived, {} "
                 "completed{}",
                 tty ? "\r" : "", p.sim_time_ms / 1000, p.arrived, p.total,
                 p.completed, tty ? "  " : "\n");
    };
  }
  absl::StatusOr<flowkv::SimResult> result =
      flowkv::Simulate(*nodes, *requests, so);
  if (printed && tty) fmt::print(stderr, "\n");
  if (!result.ok()) return Fail(result.status());

  if (!absl::GetFlag(FLAGS_csv).empty()) {
    std::ofstream out(absl::GetFlag(FLAGS_csv));
    out << flowkv::RequestsCsv(*result);
    if (!out) {
      return Fail(
          absl::UnavailableError("cannot write " + absl::GetFlag(FLAGS_csv)));
    }
  }
  if (absl::GetFlag(FLAGS_json)) {
    fmt::print("{}\n", flowkv::SimResultJson(*result));
  } else {
    PrintTable(*result, flowkv::ClusterSpecString(*nodes), wo.spec);
  }
  return 0;
}
