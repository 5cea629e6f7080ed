// SPDX-License-Identifier: Apache-2.0
// Workloads for the simulator: the requests of one run, with their arrival
// times and token counts, from a workload spec.
//
// Specs (rate and count come from WorkloadOptions):
//
//   synthetic:IN:OUT     Poisson arrivals, every request IN prompt tokens
//                        and OUT output tokens.
//   longbench:NAME       Poisson arrivals, lengths like LongBench v1 subset
//   NAME                 NAME (gov_report, qmsum, multi_news, narrativeqa,
//                        qasper, hotpotqa, musique, triviaqa, lcc): prompt
//                        tokens lognormal (sigma 0.3) around the subset's
//                        mean words x tokens-per-word, clipped to
//                        [0.25, 2.5] x mean; output = the subset's max new
//                        tokens.
//   shift[:PHASE_S]      Poisson arrivals in alternating phases of PHASE_S
//                        seconds (default 60): prefill-heavy (about 10,000
//                        in / 32 out) first, then decode-heavy (about 500 in
//                        / 512 out); lengths lognormal with sigma 0.1.
//   trace:PATH           replay of a trace file (see flowkv/sim/trace.h);
//                        arrivals divided by time_scale, the first
//                        num_requests requests (all when 0).
//
//   auto requests = flowkv::MakeWorkload(
//       {.spec = "gov_report", .rate = 0.5, .num_requests = 200, .seed = 7});
//
// The same options give the same requests (seeded std::mt19937_64).
// Thread safety: the functions are thread-safe (no shared state).

#ifndef FLOWKV_SIM_WORKLOAD_H_
#define FLOWKV_SIM_WORKLOAD_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "flowkv/export.h"
#include "flowkv/sim/trace.h"

namespace flowkv {

// One request of a simulated workload.
struct SimRequest {
  uint64_t id = 0;
  // Arrival, milliseconds of simulated time.
  double arrival_ms = 0;
  uint32_t input_tokens = 0;
  uint32_t output_tokens = 0;
  // Prompt block ids as a Mooncake trace gives them (TraceRecord::hash_ids):
  // one per SimOptions::hash_block_tokens tokens of the prompt, equal ids at
  // the same position meaning the same prefix. Empty: no prefix sharing.
  std::vector<uint64_t> hash_ids = {};

  friend bool operator==(const SimRequest&, const SimRequest&) = default;
};

struct WorkloadOptions {
  // The workload spec (see the file comment). Default: "synthetic:1000:128".
  std::string spec = "synthetic:1000:128";
  // Mean arrivals per second for the Poisson workloads, > 0. Default: 1.
  double rate = 1.0;
  // Requests to generate; for traces the first N (0: the whole trace).
  // Default: 100.
  uint64_t num_requests = 100;
  // Seed of the random engine. Default: 1.
  uint64_t seed = 1;
  // Trace replay speed-up: arrivals are divided by it, > 0. Default: 1.
  double time_scale = 1.0;
};

// A LongBench v1 subset as docs/design.md's table describes it.
struct LongBenchSubset {
  std::string_view name;
  // Mean prompt length in words, and tokens per word.
  double mean_words = 0;
  double tokens_per_word = 1.3;
  // Max new tokens of the subset: the output length used.
  uint32_t max_new_tokens = 0;

  double MeanInputTokens() const { return mean_words * tokens_per_word; }
};

FLOWKV_EXPORT absl::Span<const LongBenchSubset> LongBenchSubsets();

// The requests for `options`, sorted by arrival, ids 0, 1, ...
// InvalidArgument for a malformed or unknown spec (naming it and the known
// forms), a rate or time_scale <= 0, or num_requests == 0 for a generated
// workload; trace errors as ReadTraceFile returns them.
FLOWKV_EXPORT absl::StatusOr<std::vector<SimRequest>> MakeWorkload(
    const WorkloadOptions& options);

// Requests from trace records: arrival_ms / time_scale, the first
// `max_requests` records (all when 0). REQUIRES: time_scale > 0.
FLOWKV_EXPORT std::vector<SimRequest> RequestsFromTrace(
    const std::vector<TraceRecord>& records, double time_scale,
    uint64_t max_requests);

}  // namespace flowkv

#endif  // FLOWKV_SIM_WORKLOAD_H_
