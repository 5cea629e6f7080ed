// SPDX-License-Identifier: Apache-2.0
// The result of a run: latency percentiles (linear interpolation between
// the sorted samples), SLO attainment, throughput, transfer totals and the
// node records that Sim::Collect gathers once the loop ends; and the CSV and
// JSON forms of a SimResult. It reads Sim's state and calls nothing else.

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "flowkv/block_allocator.h"
#include "flowkv/sim/simulator.h"
#include "lib/sim/simulator_impl.h"

namespace flowkv {
namespace internal::sim {
namespace {

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

}  // namespace

SimResult Sim::Collect() {
  std::vector<double> ttft, tpot, e2e, xfer;
  double first = reqs_.empty() ? 0 : reqs_.front().rec.arrival_ms;
  double last = first;
  uint64_t ok_ttft = 0, ok_tpot = 0, ok_both = 0;
  uint64_t src_runs = 0, dst_runs = 0;
  uint64_t cached = 0, decode_cached = 0, transferred_prompt = 0;
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
    cached += r.cached_tokens;
    if (r.transfer_end_ms > 0) {
      decode_cached += r.decode_cached_tokens;
      transferred_prompt += r.input_tokens;
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
  if (res_.input_tokens > 0) {
    res_.prefix_hit_rate = static_cast<double>(cached) / res_.input_tokens;
  }
  if (transferred_prompt > 0) {
    res_.decode_prefix_hit_rate =
        static_cast<double>(decode_cached) / transferred_prompt;
  }
  if (res_.transfers > 0) {
    res_.mean_src_runs = static_cast<double>(src_runs) / res_.transfers;
    res_.mean_dst_runs = static_cast<double>(dst_runs) / res_.transfers;
  }
  for (Node& n : nodes_) {
    n.rec.busy_ms = n.busy_ms;
    n.rec.kv_blocks_total = n.alloc->num_blocks();
    // Cached blocks are reclaimable: not counted as used.
    n.rec.final_kv_blocks_used =
        n.alloc->num_blocks() - n.alloc->available_blocks();
    res_.nodes.push_back(n.rec);
  }
  if (o_.keep_requests) {
    res_.requests_detail.reserve(reqs_.size());
    for (const Req& q : reqs_) res_.requests_detail.push_back(q.rec);
  }
  return std::move(res_);
}

}  // namespace internal::sim

std::string RequestsCsv(const SimResult& result) {
  std::string out =
      "id,input_tokens,output_tokens,prefill_node,decode_node,arrival_ms,"
      "placed_ms,prefill_start_ms,first_token_ms,transfer_start_ms,"
      "transfer_end_ms,finish_ms,ttft_ms,tpot_ms,e2e_ms,transfer_calls,"
      "transfer_bytes,src_runs,dst_runs,completed,cached_tokens,"
      "decode_cached_tokens\n";
  for (const RequestRecord& r : result.requests_detail) {
    absl::StrAppendFormat(
        &out,
        "%d,%d,%d,%d,%d,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,"
        "%d,%d,%d,%d,%d,%d,%d\n",
        r.id, r.input_tokens, r.output_tokens, r.prefill_node, r.decode_node,
        r.arrival_ms, r.placed_ms, r.prefill_start_ms, r.first_token_ms,
        r.transfer_start_ms, r.transfer_end_ms, r.finish_ms,
        r.completed ? r.ttft_ms() : 0, r.completed ? r.tpot_ms() : 0,
        r.completed ? r.e2e_ms() : 0, r.transfer_calls, r.transfer_bytes,
        r.src_runs, r.dst_runs, r.completed ? 1 : 0, r.cached_tokens,
        r.decode_cached_tokens);
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
      "\"role_violations\": %d, \"events\": %d, "
      "\"prefix_hit_rate\": %.4f, \"decode_prefix_hit_rate\": %.4f, "
      "\"kv_event_batches\": %d, \"index_resyncs\": %d}",
      r.duration_s, r.input_tokens, r.output_tokens, r.throughput_tok_s,
      r.total_tok_s, r.request_rate, r.mean_in_system, r.slo_ttft, r.slo_tpot,
      r.slo_attainment, r.transfers, r.transfer_calls, r.transfer_bytes,
      r.mean_src_runs, r.mean_dst_runs, r.role_switches, r.rebalances,
      r.scale_out_advice, r.scale_in_advice, r.place_retries, r.role_violations,
      r.events, r.prefix_hit_rate, r.decode_prefix_hit_rate, r.kv_event_batches,
      r.index_resyncs);
  return out;
}

}  // namespace flowkv
