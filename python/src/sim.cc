// SPDX-License-Identifier: Apache-2.0
// Bindings of the cluster simulator (flowkv/sim/): the submodule
// flowkv._flowkv.sim with simulate(...) (the flags of tools/flowkv_sim.cc
// as keyword arguments; the metrics as a dict), make_workload, node types
// and the cluster spec parser. Simulate runs with the GIL released; a
// policy written in Python takes it for each call (scheduler.cc).

#include <map>
#include <pybind11/stl.h>
#include <string>
#include <vector>

#include "bindings.h"
#include "flowkv/sim/cluster.h"
#include "flowkv/sim/simulator.h"
#include "flowkv/sim/workload.h"

namespace flowkv::python {
namespace {

py::dict LatencyDict(const LatencyStats& s) {
  py::dict d;
  d["mean"] = s.mean;
  d["p50"] = s.p50;
  d["p90"] = s.p90;
  d["p99"] = s.p99;
  d["max"] = s.max;
  d["count"] = s.count;
  return d;
}

py::dict ResultDict(const SimResult& r) {
  py::dict d;
  d["policy"] = r.policy;
  d["transfer"] = r.transfer;
  d["batching"] = r.batching;
  d["requests"] = r.requests;
  d["completed"] = r.completed;
  d["rejected"] = r.rejected;
  d["ttft_ms"] = LatencyDict(r.ttft_ms);
  d["tpot_ms"] = LatencyDict(r.tpot_ms);
  d["e2e_ms"] = LatencyDict(r.e2e_ms);
  d["transfer_ms"] = LatencyDict(r.transfer_ms);
  d["duration_s"] = r.duration_s;
  d["input_tokens"] = r.input_tokens;
  d["output_tokens"] = r.output_tokens;
  d["throughput_tok_s"] = r.throughput_tok_s;
  d["total_tok_s"] = r.total_tok_s;
  d["request_rate"] = r.request_rate;
  d["mean_in_system"] = r.mean_in_system;
  d["slo_ttft"] = r.slo_ttft;
  d["slo_tpot"] = r.slo_tpot;
  d["slo_attainment"] = r.slo_attainment;
  d["transfers"] = r.transfers;
  d["transfer_calls"] = r.transfer_calls;
  d["transfer_bytes"] = r.transfer_bytes;
  d["mean_src_runs"] = r.mean_src_runs;
  d["mean_dst_runs"] = r.mean_dst_runs;
  d["role_switches"] = r.role_switches;
  d["rebalances"] = r.rebalances;
  d["scale_out_advice"] = r.scale_out_advice;
  d["scale_in_advice"] = r.scale_in_advice;
  d["place_retries"] = r.place_retries;
  d["role_violations"] = r.role_violations;
  d["events"] = r.events;
  d["prefix_hit_rate"] = r.prefix_hit_rate;
  d["decode_prefix_hit_rate"] = r.decode_prefix_hit_rate;
  d["kv_event_batches"] = r.kv_event_batches;
  d["index_resyncs"] = r.index_resyncs;
  py::list nodes;
  for (const NodeRecord& n : r.nodes) {
    py::dict nd;
    nd["id"] = n.id;
    nd["role"] = NodeRoleName(n.role);
    nd["type"] = n.type;
    nd["busy_ms"] = n.busy_ms;
    nd["prefill_tokens"] = n.prefill_tokens;
    nd["decode_tokens"] = n.decode_tokens;
    nd["prefill_steps"] = n.prefill_steps;
    nd["decode_steps"] = n.decode_steps;
    nd["role_switches"] = n.role_switches;
    nd["peak_kv_fraction"] = n.peak_kv_fraction;
    nd["final_kv_blocks_used"] = n.final_kv_blocks_used;
    nd["kv_blocks_total"] = n.kv_blocks_total;
    nodes.append(nd);
  }
  d["nodes"] = nodes;
  py::list requests;
  for (const RequestRecord& q : r.requests_detail) {
    py::dict qd;
    qd["id"] = q.id;
    qd["input_tokens"] = q.input_tokens;
    qd["output_tokens"] = q.output_tokens;
    qd["prefill_node"] = q.prefill_node;
    qd["decode_node"] = q.decode_node;
    qd["arrival_ms"] = q.arrival_ms;
    qd["placed_ms"] = q.placed_ms;
    qd["first_token_ms"] = q.first_token_ms;
    qd["transfer_start_ms"] = q.transfer_start_ms;
    qd["transfer_end_ms"] = q.transfer_end_ms;
    qd["finish_ms"] = q.finish_ms;
    qd["transfer_calls"] = q.transfer_calls;
    qd["transfer_bytes"] = q.transfer_bytes;
    qd["completed"] = q.completed;
    qd["cached_tokens"] = q.cached_tokens;
    qd["decode_cached_tokens"] = q.decode_cached_tokens;
    requests.append(qd);
  }
  d["requests_detail"] = requests;
  return d;
}

std::vector<SimRequest> Workload(const std::string& spec, double rate,
                                 uint64_t num_requests, uint64_t seed,
                                 double time_scale) {
  WorkloadOptions o;
  o.spec = spec;
  o.rate = rate;
  o.num_requests = num_requests;
  o.seed = seed;
  o.time_scale = time_scale;
  return Unwrap(MakeWorkload(o));
}

}  // namespace

void InitSim(py::module_& parent) {
  py::module_ m = parent.def_submodule(
      "sim", "The discrete-event P/D cluster simulator (flowkv/sim/).");

  py::class_<SimRequest>(m, "SimRequest")
      .def(py::init([](U64<"id"> id, double arrival_ms,
                       U32<"input_tokens"> input_tokens,
                       U32<"output_tokens"> output_tokens,
                       std::vector<uint64_t> hash_ids) {
             return SimRequest{id, arrival_ms, input_tokens, output_tokens,
                               std::move(hash_ids)};
           }),
           py::arg("id"), py::arg("arrival_ms"), py::arg("input_tokens"),
           py::arg("output_tokens"), py::kw_only(),
           py::arg("hash_ids") = std::vector<uint64_t>{})
      .def_readwrite("hash_ids", &SimRequest::hash_ids)
      .def_property("id", FLOWKV_INT_FIELD(SimRequest, id))
      .def_readwrite("arrival_ms", &SimRequest::arrival_ms)
      .def_property("input_tokens", FLOWKV_INT_FIELD(SimRequest, input_tokens))
      .def_property("output_tokens",
                    FLOWKV_INT_FIELD(SimRequest, output_tokens));

  m.def("make_workload", &Workload, py::arg("spec") = "synthetic:1000:128",
        py::kw_only(), py::arg("rate") = 1.0, py::arg("requests") = 100,
        py::arg("seed") = 1, py::arg("time_scale") = 1.0,
        "The requests of a workload spec (see flowkv/sim/workload.h).");
  m.def(
      "node_types",
      [] {
        std::vector<std::string> names;
        for (const NodeType& t : NodeTypes()) names.push_back(t.name);
        return names;
      },
      "The built-in node type names.");
  m.def(
      "parse_cluster_spec",
      [](const std::string& spec) {
        std::vector<std::pair<std::string, std::string>> out;
        for (const SimNodeSpec& n : Unwrap(ParseClusterSpec(spec))) {
          out.emplace_back(NodeRoleName(n.role), n.type.name);
        }
        return out;
      },
      py::arg("spec"), "[(role, type)] per node of a cluster spec.");

  m.def(
      "simulate",
      [](const std::string& cluster, py::object workload, double rate,
         U64<"requests"> requests, U64<"seed"> seed, double time_scale,
         const std::string& policy,
         const std::map<std::string, double>& policy_params,
         const std::string& transfer, const std::string& batching,
         double slo_ttft_ms, double slo_tpot_ms, double rebalance_ms,
         double heartbeat_ms, double smoothing,
         U32<"prefill_budget"> prefill_budget, U32<"chunk_tokens"> chunk_tokens,
         U32<"max_batch"> max_batch, double bandwidth_gbps,
         double call_overhead_us, double fixed_ms, bool keep_requests,
         bool prefix_cache, double kv_event_delay_ms,
         U32<"hash_block_tokens"> hash_block_tokens) {
        const std::vector<SimNodeSpec> nodes =
            Unwrap(ParseClusterSpec(cluster));
        std::vector<SimRequest> reqs;
        if (py::isinstance<py::str>(workload)) {
          reqs = Workload(workload.cast<std::string>(), rate, requests, seed,
                          time_scale);
        } else {
          try {
            reqs = workload.cast<std::vector<SimRequest>>();
          } catch (const py::cast_error&) {
            ThrowStatus(absl::InvalidArgumentError(
                "workload: expected a spec string or a list of "
                "flowkv.sim.SimRequest"));
          }
        }
        SimOptions so;
        so.policy = policy;
        so.scheduler_options.params = policy_params;
        so.transfer = Unwrap(ParseTransferMode(transfer));
        so.batching = Unwrap(ParseNodeBatching(batching));
        so.slo_ttft_ms = slo_ttft_ms;
        so.slo_tpot_ms = slo_tpot_ms;
        so.rebalance_interval_ms = rebalance_ms;
        so.heartbeat_interval_ms = heartbeat_ms;
        so.load_smoothing = smoothing;
        so.prefill_token_budget = prefill_budget;
        so.chunk_tokens = chunk_tokens;
        so.max_batch = max_batch;
        so.link.bandwidth_bytes_per_s = bandwidth_gbps * 1e9;
        so.link.call_overhead_ms = call_overhead_us / 1000;
        so.link.fixed_ms = fixed_ms;
        so.keep_requests = keep_requests;
        so.prefix_cache = prefix_cache;
        so.kv_event_delay_ms = kv_event_delay_ms;
        so.hash_block_tokens = hash_block_tokens;
        absl::StatusOr<SimResult> result = [&] {
          py::gil_scoped_release release;
          return Simulate(nodes, reqs, so);
        }();
        return ResultDict(Unwrap(std::move(result)));
      },
      py::arg("cluster") = "p:a100x1,d:a100x1",
      py::arg("workload") = "synthetic:1000:128", py::kw_only(),
      py::arg("rate") = 1.0, py::arg("requests") = 100, py::arg("seed") = 1,
      py::arg("time_scale") = 1.0, py::arg("policy") = "load_aware",
      py::arg("policy_params") = std::map<std::string, double>{},
      py::arg("transfer") = "flowkv", py::arg("batching") = "prefill_first",
      py::arg("slo_ttft_ms") = 2000.0, py::arg("slo_tpot_ms") = 100.0,
      py::arg("rebalance_ms") = 1000.0, py::arg("heartbeat_ms") = 100.0,
      py::arg("smoothing") = 0.5, py::arg("prefill_budget") = 16384,
      py::arg("chunk_tokens") = 2048, py::arg("max_batch") = 256,
      py::arg("bandwidth_gbps") = 23.5, py::arg("call_overhead_us") = 45.0,
      py::arg("fixed_ms") = 1.5, py::arg("keep_requests") = false,
      py::arg("prefix_cache") = false, py::arg("kv_event_delay_ms") = 5.0,
      py::arg("hash_block_tokens") = 512,
      "Runs `policy` (built-in, or registered from C++ or Python) on a "
      "simulated cluster (spec 'p:a100x1,d:a100x1') and returns the metrics "
      "as a dict (the fields of flowkv::SimResult; latencies as dicts of "
      "mean/p50/p90/p99/max/count). `workload` is a spec string or a list of "
      "SimRequest. The keyword arguments are flowkv-sim's flags. Runs with "
      "the GIL released.");
}

}  // namespace flowkv::python
