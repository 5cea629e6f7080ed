// SPDX-License-Identifier: Apache-2.0
// flowkv-cluster: a live disaggregated serving cluster on one machine — a
// router and N prefill + M decode node processes on 127.0.0.1, a CPU model,
// KV moved layer by layer through KvTransfer (UCX), requests placed by a
// flowkv Scheduler. See docs/cluster.md.
//
//   flowkv-cluster --prefill 2 --decode 2 --policy load_aware \
//                  --workload shift:5 --rate 4 --requests 60 --json out.json
//   flowkv-cluster --prefill 2 --decode 2 --colocated ...   (the baseline)
//
// The same executable is the node process (--node, started by the router).

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "fmt/core.h"
#include "tools/cluster/node.h"
#include "tools/cluster/replay.h"
#include "tools/cluster/router.h"
#include "tools/cluster/sim_compare.h"

ABSL_FLAG(uint32_t, prefill, 2, "Prefill node processes");
ABSL_FLAG(uint32_t, decode, 2, "Decode node processes");
ABSL_FLAG(bool, colocated, false,
          "Baseline: the same number of nodes, each doing prefill and decode "
          "of its requests (no KV transfer)");
ABSL_FLAG(std::string, policy, "load_aware",
          "Scheduler policy (round_robin, least_loaded, kv_cost, load_aware)");
ABSL_FLAG(std::vector<std::string>, policy_param, {},
          "Policy options NAME=VALUE, comma-separated (docs/scheduler.md)");
ABSL_FLAG(std::string, workload, "synthetic:200:16",
          "flowkv-sim workload: synthetic:IN:OUT | NAME | shift[:PHASE_S]");
ABSL_FLAG(std::string, trace, "",
          "Trace to replay (data/traces/*.jsonl|csv); overrides --workload");
ABSL_FLAG(double, rate, 2.0, "Poisson arrival rate, requests per second");
ABSL_FLAG(uint64_t, requests, 24, "Requests (the first N of a trace)");
ABSL_FLAG(uint64_t, seed, 1, "Workload seed");
ABSL_FLAG(double, time_scale, 1.0, "Trace speed-up: arrivals divided by it");
ABSL_FLAG(double, length_scale, 0,
          "Multiplies prompt and output lengths (0: fit the model's context)");
ABSL_FLAG(std::string, json, "", "Write the summary and per-request rows here");
ABSL_FLAG(uint32_t, layers, 4, "Model layers");
ABSL_FLAG(uint32_t, d_model, 128, "Model width");
ABSL_FLAG(uint32_t, heads, 4, "Attention (query) heads");
ABSL_FLAG(uint32_t, kv_heads, 2, "KV heads (divides --heads)");
ABSL_FLAG(uint32_t, ffn_dim, 0, "MLP hidden size (0: 2.75 x d_model)");
ABSL_FLAG(uint32_t, max_context, 1024, "Tokens per request (prompt + output)");
ABSL_FLAG(uint32_t, block_tokens, 16, "Tokens per KV block");
ABSL_FLAG(uint64_t, model_seed, 1, "Seed of the model's weights");
ABSL_FLAG(std::string, prefill_kv_layout, "flowkv_block_major",
          "Pool layout of prefill (and colocated) nodes: flowkv_block_major, "
          "vllm_flash_attn, vllm_flash_infer, sglang_mha, trtllm_block_pool");
ABSL_FLAG(std::string, decode_kv_layout, "flowkv_block_major",
          "Pool layout of decode nodes (as --prefill_kv_layout)");
ABSL_FLAG(std::string, kv_preset, "flowkv_block_major",
          "Node: its pool layout (set by the router)");
ABSL_FLAG(uint32_t, blocks_per_node, 2048, "KV blocks in each node's pool");
ABSL_FLAG(double, rebalance_ms, 500, "Rebalance period, ms (0: never)");
ABSL_FLAG(double, report_ms, 100, "Node load report period, ms");
ABSL_FLAG(int, kill_node, -1,
          "Fault injection: SIGKILL this node (ids: prefill 0..N-1, then "
          "decode) once --kill_after requests finished");
ABSL_FLAG(uint32_t, kill_after, 5, "See --kill_node");
ABSL_FLAG(bool, kill_found_by_eof, false,
          "See --kill_node: the router learns of the death from the node's "
          "socket (EOF) instead of at the kill");
ABSL_FLAG(bool, verbose, false, "Router events on stderr");
ABSL_FLAG(bool, pin_cores, false,
          "Pin node i to core i mod (cores): independent nodes on a machine "
          "with a core per node");
ABSL_FLAG(int, pin_core, -1, "Node: the core to pin to (set by the router)");
ABSL_FLAG(bool, calibrate, true,
          "Before the run, time the model on this machine and give the "
          "scheduler the fitted cost model (else: each node's measured speed)");
ABSL_FLAG(bool, compare_sim, false,
          "After the run, simulate the same run with the calibrated cost "
          "model (flowkv::Simulate; JSON field \"sim\")");
ABSL_FLAG(std::string, cluster_file, "",
          "After the run, write the measured cluster here for flowkv-sim "
          "--cluster_file: the calibrated cost model, the model's KV "
          "geometry and pool, the nodes, and the link fitted to the run's "
          "KV transfers (implies --calibrate)");
ABSL_FLAG(std::string, cost_from, "",
          "Take the cost model from this cluster file (an earlier run's "
          "--cluster_file) instead of calibrating: several runs compared "
          "with one calibration");
ABSL_FLAG(std::string, etcd, "",
          "Keep membership in etcd (http://127.0.0.1:PORT, etcd 3.4's JSON "
          "gateway): each node registers its role and engine address with a "
          "lease; a node that dies disappears when its lease expires");
ABSL_FLAG(std::string, cluster_name, "flowkv",
          "--etcd: the cluster's keys are under /flowkv/<cluster_name>");
ABSL_FLAG(double, etcd_ttl_ms, 3000,
          "--etcd: lease time of a node's entry, ms (etcd grants >= ~2 s)");
// Node process flags (set by the router).
ABSL_FLAG(bool, node, false, "Run as a node process (started by the router)");
ABSL_FLAG(uint32_t, node_id, 0, "Node: its id");
ABSL_FLAG(std::string, node_role, "hybrid", "Node: prefill|decode|hybrid");
ABSL_FLAG(uint32_t, router_port, 0, "Node: the router's port on 127.0.0.1");

namespace {

// Abseil flag names use '_': accept --time-scale as --time_scale.
std::vector<char*> NormalizeFlagNames(int argc, char** argv,
                                      std::vector<std::string>* storage) {
  storage->reserve(argc);
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
  std::vector<char*> out;
  for (std::string& s : *storage) out.push_back(s.data());
  return out;
}

int Fail(const absl::Status& s) {
  fmt::print(stderr, "flowkv-cluster: {}\n", s.ToString());
  return 1;
}

flowkv::cluster::ModelSpec ModelFromFlags() {
  return {.layers = absl::GetFlag(FLAGS_layers),
          .d_model = absl::GetFlag(FLAGS_d_model),
          .heads = absl::GetFlag(FLAGS_heads),
          .kv_heads = absl::GetFlag(FLAGS_kv_heads),
          .ffn_dim = absl::GetFlag(FLAGS_ffn_dim),
          .max_context = absl::GetFlag(FLAGS_max_context),
          .block_tokens = absl::GetFlag(FLAGS_block_tokens),
          .kv_preset = absl::GetFlag(FLAGS_kv_preset),
          .seed = absl::GetFlag(FLAGS_model_seed)};
}

int RunNodeFromFlags() {
  const std::string role = absl::GetFlag(FLAGS_node_role);
  flowkv::NodeRole r = flowkv::NodeRole::kHybrid;
  if (role == "prefill")
    r = flowkv::NodeRole::kPrefill;
  else if (role == "decode")
    r = flowkv::NodeRole::kDecode;
  else if (role != "hybrid") {
    return Fail(absl::InvalidArgumentError("unknown --node_role " + role));
  }
  return flowkv::cluster::RunNode(
      {.id = absl::GetFlag(FLAGS_node_id),
       .role = r,
       .router_port = static_cast<uint16_t>(absl::GetFlag(FLAGS_router_port)),
       .model = ModelFromFlags(),
       .num_blocks = absl::GetFlag(FLAGS_blocks_per_node),
       .report_ms = absl::GetFlag(FLAGS_report_ms),
       .pin_core = absl::GetFlag(FLAGS_pin_core),
       .etcd_endpoint = absl::GetFlag(FLAGS_etcd),
       .cluster_name = absl::GetFlag(FLAGS_cluster_name),
       .etcd_ttl_ms = absl::GetFlag(FLAGS_etcd_ttl_ms)});
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Runs a live P/D cluster on this machine.\n"
      "  flowkv-cluster --prefill 2 --decode 2 --policy load_aware "
      "--workload shift:5 --rate 4 --requests 60 [--colocated] [--json F]");
  std::vector<std::string> storage;
  std::vector<char*> args = NormalizeFlagNames(argc, argv, &storage);
  absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  setenv("UCX_NET_DEVICES", "lo", 0);  // loopback unless told otherwise
  if (absl::GetFlag(FLAGS_node)) return RunNodeFromFlags();

  flowkv::cluster::ReplayOptions ro;
  ro.workload = absl::GetFlag(FLAGS_trace).empty()
                    ? absl::GetFlag(FLAGS_workload)
                    : "trace:" + absl::GetFlag(FLAGS_trace);
  ro.rate = absl::GetFlag(FLAGS_rate);
  ro.requests = absl::GetFlag(FLAGS_requests);
  ro.seed = absl::GetFlag(FLAGS_seed);
  ro.time_scale = absl::GetFlag(FLAGS_time_scale);
  ro.max_context = absl::GetFlag(FLAGS_max_context);
  ro.length_scale = absl::GetFlag(FLAGS_length_scale);
  double scale = 1;
  absl::StatusOr<std::vector<flowkv::cluster::ClusterRequest>> requests =
      flowkv::cluster::MakeRequests(ro, &scale);
  if (!requests.ok()) return Fail(requests.status());

  flowkv::cluster::RouterOptions options;
  options.prefill_nodes = absl::GetFlag(FLAGS_prefill);
  options.decode_nodes = absl::GetFlag(FLAGS_decode);
  if (options.prefill_nodes + options.decode_nodes == 0 ||
      options.prefill_nodes + options.decode_nodes > 64) {
    return Fail(absl::InvalidArgumentError(
        "--prefill + --decode must be between 1 and 64"));
  }
  options.colocated = absl::GetFlag(FLAGS_colocated);
  if (!options.colocated &&
      (options.prefill_nodes == 0 || options.decode_nodes == 0)) {
    return Fail(absl::InvalidArgumentError(
        "a disaggregated cluster needs --prefill >= 1 and --decode >= 1"));
  }
  options.policy = absl::GetFlag(FLAGS_policy);
  for (const std::string& kv : absl::GetFlag(FLAGS_policy_param)) {
    const std::vector<std::string> parts = absl::StrSplit(kv, '=');
    double value;
    if (parts.size() != 2 || !absl::SimpleAtod(parts[1], &value)) {
      return Fail(absl::InvalidArgumentError(
          "--policy_param wants NAME=VALUE with a number, got \"" + kv + "\""));
    }
    options.scheduler.params[parts[0]] = value;
  }
  options.model = ModelFromFlags();
  options.blocks_per_node = absl::GetFlag(FLAGS_blocks_per_node);
  options.prefill_kv_preset = absl::GetFlag(FLAGS_prefill_kv_layout);
  options.decode_kv_preset = absl::GetFlag(FLAGS_decode_kv_layout);
  for (const std::string& preset :
       {options.prefill_kv_preset, options.decode_kv_preset}) {
    flowkv::cluster::ModelSpec spec = options.model;
    spec.kv_preset = preset;
    if (auto model = flowkv::cluster::ModelRunner::Create(spec); !model.ok()) {
      return Fail(model.status());
    }
  }
  options.rebalance_ms = absl::GetFlag(FLAGS_rebalance_ms);
  options.report_ms = absl::GetFlag(FLAGS_report_ms);
  options.kill_node = absl::GetFlag(FLAGS_kill_node);
  options.kill_after = absl::GetFlag(FLAGS_kill_after);
  options.kill_found_by_eof = absl::GetFlag(FLAGS_kill_found_by_eof);
  options.verbose = absl::GetFlag(FLAGS_verbose);
  options.pin_cores = absl::GetFlag(FLAGS_pin_cores);
  if (options.kill_node >=
      static_cast<int>(options.prefill_nodes + options.decode_nodes)) {
    return Fail(absl::InvalidArgumentError("--kill_node is not a node id"));
  }
  if (!(options.report_ms > 0) || options.rebalance_ms < 0) {
    return Fail(absl::InvalidArgumentError(
        "--report_ms must be > 0 and --rebalance_ms >= 0"));
  }

  options.etcd_endpoint = absl::GetFlag(FLAGS_etcd);
  options.cluster_name = absl::GetFlag(FLAGS_cluster_name);
  options.etcd_ttl_ms = absl::GetFlag(FLAGS_etcd_ttl_ms);
  if (!options.etcd_endpoint.empty()) {
#if !FLOWKV_CLUSTER_ETCD
    return Fail(absl::UnimplementedError("--etcd needs a build with libcurl"));
#endif
    if (!(options.etcd_ttl_ms >= 1 && options.etcd_ttl_ms <= 3600e3)) {
      return Fail(absl::InvalidArgumentError(
          "--etcd_ttl_ms must be between 1 and 3600000"));
    }
  }

  const bool want_file = !absl::GetFlag(FLAGS_cluster_file).empty();
  if (!absl::GetFlag(FLAGS_cost_from).empty()) {
    absl::StatusOr<flowkv::sim_tools::ClusterFile> file =
        flowkv::sim_tools::ReadClusterFile(absl::GetFlag(FLAGS_cost_from));
    if (!file.ok()) return Fail(file.status());
    options.node_cost = file->type.cost;
  } else if (absl::GetFlag(FLAGS_calibrate) ||
             absl::GetFlag(FLAGS_compare_sim) || want_file) {
    auto model = flowkv::cluster::ModelRunner::Create(options.model);
    if (!model.ok()) return Fail(model.status());
    absl::StatusOr<flowkv::NodeCostModel> cost = (*model)->Calibrate();
    if (!cost.ok()) return Fail(cost.status());
    fmt::print(stderr,
               "calibrated: prefill(n) = {:.3g} + {:.3g} n + {:.3g} n^2 ms, "
               "decode step = {:.3g} + {:.3g} ctx + {:.3g} batch ms\n",
               cost->a, cost->b, cost->c, cost->t0, cost->k, cost->e);
    options.node_cost = *cost;
  }
  absl::StatusOr<flowkv::cluster::RunReport> report =
      flowkv::cluster::RunCluster(options, *requests);
  if (!report.ok()) return Fail(report.status());
  // Calibrated above (--compare_sim and --cluster_file imply it); the link
  // is fitted to this run's transfers.
  absl::StatusOr<flowkv::sim_tools::ClusterFile> measured =
      absl::UnknownError("not calibrated");
  if (absl::GetFlag(FLAGS_compare_sim) || want_file) {
    const flowkv::LinkModel link = flowkv::cluster::FitLink(report->requests);
    fmt::print(stderr, "link fit: {:.3g} ms + bytes / {:.3g} B/s\n",
               link.fixed_ms, link.bandwidth_bytes_per_s);
    measured =
        flowkv::cluster::MeasuredCluster(options, *options.node_cost, link);
    if (!measured.ok()) return Fail(measured.status());
  }
  if (want_file) {
    if (absl::Status w = flowkv::sim_tools::WriteClusterFile(
            absl::GetFlag(FLAGS_cluster_file), *measured);
        !w.ok()) {
      return Fail(w);
    }
  }
  if (absl::GetFlag(FLAGS_compare_sim)) {
    absl::StatusOr<flowkv::cluster::SimPrediction> sim =
        flowkv::cluster::PredictWithSimulator(options, *requests, *measured);
    if (!sim.ok()) return Fail(sim.status());
    report->info.has_sim = true;
    report->info.sim_ttft_mean_ms = sim->ttft_mean_ms;
    report->info.sim_e2e_mean_ms = sim->e2e_mean_ms;
    fmt::print("simulator: ttft mean {:.1f} ms, e2e mean {:.1f} ms\n",
               sim->ttft_mean_ms, sim->e2e_mean_ms);
  }
  report->info.workload = ro.workload;
  report->info.length_scale = scale;
  fmt::print("{}", flowkv::cluster::RunTable(report->info, report->requests));
  if (!absl::GetFlag(FLAGS_json).empty()) {
    std::ofstream out(absl::GetFlag(FLAGS_json));
    out << flowkv::cluster::RunJson(report->info, report->requests,
                                    report->samples);
    if (!out) {
      return Fail(
          absl::UnavailableError("cannot write " + absl::GetFlag(FLAGS_json)));
    }
  }
  return 0;
}
