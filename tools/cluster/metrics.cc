// SPDX-License-Identifier: Apache-2.0
// Summaries and the JSON of a flowkv-cluster run (see metrics.h).

#include "tools/cluster/metrics.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_join.h"
#include "fmt/core.h"

namespace flowkv::cluster {
namespace {

double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const double rank = p * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo);
}

std::string DistJson(const Distribution& d) {
  return fmt::format(
      "{{\"mean\": {:.3f}, \"p50\": {:.3f}, \"p90\": {:.3f}, \"p99\": {:.3f}, "
      "\"max\": {:.3f}}}",
      d.mean, d.p50, d.p90, d.p99, d.max);
}

struct Totals {
  uint64_t finished = 0, failed = 0, retried = 0, bytes = 0, tokens = 0;
  bool exact = true;
  double transfer_ms = 0;
  std::vector<double> ttft, tpot, e2e, transfer;
};

Totals Total(const std::vector<RequestRecord>& requests) {
  Totals t;
  for (const RequestRecord& r : requests) {
    if (r.retries > 0) ++t.retried;
    if (r.failed || !r.finished) {
      ++t.failed;
      continue;
    }
    ++t.finished;
    t.exact = t.exact && r.exact;
    t.bytes += r.kv_bytes;
    t.tokens += r.tokens.size();
    t.transfer_ms += r.transfer_ms;
    t.ttft.push_back(r.ttft_ms());
    t.e2e.push_back(r.e2e_ms());
    if (r.tokens.size() > 1) t.tpot.push_back(r.tpot_ms());
    if (r.kv_bytes > 0) t.transfer.push_back(r.transfer_ms);
  }
  if (t.finished == 0) t.exact = false;
  return t;
}

}  // namespace

Distribution Summarize(std::vector<double> values) {
  Distribution d;
  if (values.empty()) return d;
  std::sort(values.begin(), values.end());
  double sum = 0;
  for (double v : values) sum += v;
  d.mean = sum / static_cast<double>(values.size());
  d.p50 = Percentile(values, 0.5);
  d.p90 = Percentile(values, 0.9);
  d.p99 = Percentile(values, 0.99);
  d.max = values.back();
  return d;
}

std::string RunJson(const RunInfo& info,
                    const std::vector<RequestRecord>& requests,
                    const std::vector<NodeSample>& samples) {
  const Totals t = Total(requests);
  const double seconds = info.duration_ms / 1000;
  std::string out = "{\n";
  out += fmt::format(
      "  \"policy\": \"{}\", \"workload\": \"{}\", \"colocated\": {}, "
      "\"prefill_nodes\": {}, \"decode_nodes\": {}, \"length_scale\": "
      "{:.6f},\n",
      info.policy, info.workload, info.colocated, info.prefill_nodes,
      info.decode_nodes, info.length_scale);
  out += fmt::format(
      "  \"requests\": {}, \"requests_finished\": {}, \"requests_failed\": {}, "
      "\"requests_retried\": {}, \"exact\": {},\n",
      requests.size(), t.finished, t.failed, t.retried, t.exact);
  out += fmt::format(
      "  \"role_switches\": {}, \"rebalances\": {}, \"killed_nodes\": [{}],\n",
      info.role_switches, info.rebalances,
      absl::StrJoin(info.killed_nodes, ", "));
  if (info.etcd) {
    out += fmt::format("  \"etcd_members\": {}, \"etcd_lost_nodes\": [{}],\n",
                       info.etcd_members,
                       absl::StrJoin(info.etcd_lost_nodes, ", "));
  }
  out += fmt::format(
      "  \"duration_s\": {:.3f}, \"throughput_tok_s\": {:.3f}, "
      "\"throughput_req_s\": {:.3f},\n",
      seconds, seconds > 0 ? t.tokens / seconds : 0,
      seconds > 0 ? t.finished / seconds : 0);
  out += fmt::format(
      "  \"bytes_moved\": {}, \"transfer_ms_total\": {:.3f}, \"transfer_ms\": "
      "{},\n",
      t.bytes, t.transfer_ms, DistJson(Summarize(t.transfer)));
  out +=
      fmt::format("  \"ttft_ms\": {},\n  \"tpot_ms\": {},\n  \"e2e_ms\": {},\n",
                  DistJson(Summarize(t.ttft)), DistJson(Summarize(t.tpot)),
                  DistJson(Summarize(t.e2e)));
  if (info.has_sim) {
    out += fmt::format(
        "  \"sim\": {{\"ttft_ms\": {{\"mean\": {:.3f}}}, \"e2e_ms\": "
        "{{\"mean\": {:.3f}}}}},\n",
        info.sim_ttft_mean_ms, info.sim_e2e_mean_ms);
  }
  out += "  \"per_request\": [\n";
  for (size_t i = 0; i < requests.size(); ++i) {
    const RequestRecord& r = requests[i];
    const bool done = r.finished && !r.failed;
    out += fmt::format(
        "    {{\"id\": {}, \"prompt_tokens\": {}, \"output_tokens\": {}, "
        "\"arrival_ms\": {:.3f}, \"finished\": {}, \"retries\": {}, "
        "\"prefill_node\": {}, \"decode_node\": {}, \"ttft_ms\": {:.3f}, "
        "\"tpot_ms\": {:.3f}, \"e2e_ms\": {:.3f}, \"kv_bytes\": {}, "
        "\"transfer_ms\": {:.3f}, \"prefill_ms\": {:.3f}, \"exact\": "
        "{}}}{}\n",
        r.id, r.prompt_tokens, r.output_tokens, r.arrival_ms, done, r.retries,
        r.prefill_node, r.decode_node, done ? r.ttft_ms() : -1,
        done ? r.tpot_ms() : -1, done ? r.e2e_ms() : -1, r.kv_bytes,
        r.transfer_ms, r.prefill_ms, r.exact,
        i + 1 < requests.size() ? "," : "");
  }
  out += "  ],\n  \"node_samples\": [\n";
  for (size_t i = 0; i < samples.size(); ++i) {
    const NodeSample& s = samples[i];
    out += fmt::format(
        "    {{\"t_ms\": {:.1f}, \"node\": {}, \"role\": \"{}\", "
        "\"queued_prefill_tokens\": {:.0f}, \"running_decode\": {:.0f}, "
        "\"kv_blocks_used\": {:.0f}}}{}\n",
        s.t_ms, s.node, NodeRoleName(s.role), s.queued_prefill_tokens,
        s.running_decode, s.kv_blocks_used, i + 1 < samples.size() ? "," : "");
  }
  out += "  ]\n}\n";
  return out;
}

std::string RunTable(const RunInfo& info,
                     const std::vector<RequestRecord>& requests) {
  const Totals t = Total(requests);
  const Distribution ttft = Summarize(t.ttft), tpot = Summarize(t.tpot),
                     e2e = Summarize(t.e2e);
  return fmt::format(
      "policy {}{}  nodes {}P+{}D  workload {}  length scale {:.4f}\n"
      "requests {}  finished {}  failed {}  retried {}  exact {}\n"
      "ttft ms  mean {:.1f}  p50 {:.1f}  p99 {:.1f}\n"
      "tpot ms  mean {:.2f}  p50 {:.2f}  p99 {:.2f}\n"
      "e2e ms   mean {:.1f}  p50 {:.1f}  p99 {:.1f}\n"
      "duration {:.2f} s  role switches {}  bytes moved {}  transfer ms total "
      "{:.1f}\n",
      info.policy, info.colocated ? " (colocated)" : "", info.prefill_nodes,
      info.decode_nodes, info.workload, info.length_scale, requests.size(),
      t.finished, t.failed, t.retried, t.exact ? "yes" : "NO", ttft.mean,
      ttft.p50, ttft.p99, tpot.mean, tpot.p50, tpot.p99, e2e.mean, e2e.p50,
      e2e.p99, info.duration_ms / 1000, info.role_switches, t.bytes,
      t.transfer_ms);
}

}  // namespace flowkv::cluster
