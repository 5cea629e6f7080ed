// SPDX-License-Identifier: Apache-2.0
#include "flowkv/sim/workload.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace flowkv {
namespace {

// LongBench v1 averages from the table in docs/design.md (words; 1.3 tokens
// per word for prose, code counted the same way) and max new tokens.
constexpr LongBenchSubset kSubsets[] = {
    {"gov_report", 8734, 1.3, 512}, {"qmsum", 10614, 1.3, 512},
    {"multi_news", 2113, 1.3, 512}, {"narrativeqa", 18409, 1.3, 128},
    {"qasper", 3619, 1.3, 128},     {"hotpotqa", 9151, 1.3, 32},
    {"musique", 11214, 1.3, 32},    {"triviaqa", 8209, 1.3, 32},
    {"lcc", 1235, 1.3, 64},
};

constexpr double kLongBenchSigma = 0.3;
constexpr double kShiftSigma = 0.1;

std::string KnownForms() {
  std::vector<absl::string_view> names;
  for (const LongBenchSubset& s : kSubsets) {
    names.push_back(absl::string_view(s.name.data(), s.name.size()));
  }
  return absl::StrCat("synthetic:IN:OUT, longbench:NAME or NAME (",
                      absl::StrJoin(names, ", "),
                      "), shift[:PHASE_S], trace:PATH");
}

// A lognormal draw whose mean is `mean`, clipped to [lo, hi] x mean.
uint32_t LognormalTokens(std::mt19937_64& rng, double mean, double sigma,
                         double lo, double hi) {
  // E[exp(N(mu, s))] = exp(mu + s^2/2).
  std::lognormal_distribution<double> dist(std::log(mean) - sigma * sigma / 2,
                                           sigma);
  const double v = std::clamp(dist(rng), lo * mean, hi * mean);
  return static_cast<uint32_t>(std::max(1.0, std::round(v)));
}

using LengthFn =
    std::function<void(std::mt19937_64&, double arrival_ms, SimRequest*)>;

std::vector<SimRequest> Poisson(const WorkloadOptions& o, const LengthFn& fn) {
  std::mt19937_64 rng(o.seed);
  // Unit-rate gaps scaled by 1/rate: the same seed at a higher rate gives
  // the same requests, proportionally earlier.
  std::exponential_distribution<double> gap(1.0);
  std::vector<SimRequest> out;
  out.reserve(o.num_requests);
  double t = 0;
  for (uint64_t i = 0; i < o.num_requests; ++i) {
    if (i > 0) t += gap(rng) / o.rate * 1000.0;
    SimRequest r;
    r.id = i;
    r.arrival_ms = t;
    fn(rng, t, &r);
    out.push_back(r);
  }
  return out;
}

}  // namespace

absl::Span<const LongBenchSubset> LongBenchSubsets() { return kSubsets; }

std::vector<SimRequest> RequestsFromTrace(
    const std::vector<TraceRecord>& records, double time_scale,
    uint64_t max_requests) {
  const size_t n = max_requests == 0
                       ? records.size()
                       : std::min<size_t>(records.size(), max_requests);
  std::vector<SimRequest> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    out.push_back({.id = i,
                   .arrival_ms = records[i].arrival_ms / time_scale,
                   .input_tokens = records[i].input_tokens,
                   .output_tokens = records[i].output_tokens,
                   .hash_ids = records[i].hash_ids});
  }
  return out;
}

absl::StatusOr<std::vector<SimRequest>> MakeWorkload(
    const WorkloadOptions& options) {
  const absl::string_view spec(options.spec);
  if (absl::StartsWith(spec, "trace:")) {
    if (!(options.time_scale > 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("time_scale must be > 0, got ", options.time_scale));
    }
    absl::StatusOr<std::vector<TraceRecord>> records =
        ReadTraceFile(std::string(spec.substr(6)));
    if (!records.ok()) return records.status();
    return RequestsFromTrace(*records, options.time_scale,
                             options.num_requests);
  }
  if (!(options.rate > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("rate must be > 0 requests/s, got ", options.rate));
  }
  if (options.num_requests == 0) {
    return absl::InvalidArgumentError(
        "num_requests must be >= 1 for a generated workload");
  }
  const std::vector<absl::string_view> parts = absl::StrSplit(spec, ':');
  if (parts[0] == "synthetic") {
    uint32_t in = 0, out = 0;
    if (parts.size() != 3 || !absl::SimpleAtoi(parts[1], &in) ||
        !absl::SimpleAtoi(parts[2], &out) || in < 1 || out < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("workload \"", spec,
                       "\": want synthetic:IN:OUT with IN, OUT integers >= 1"));
    }
    return Poisson(options, [in, out](std::mt19937_64&, double, SimRequest* r) {
      r->input_tokens = in;
      r->output_tokens = out;
    });
  }
  if (parts[0] == "shift") {
    double phase_s = 60;
    if (parts.size() > 2 ||
        (parts.size() == 2 &&
         (!absl::SimpleAtod(parts[1], &phase_s) || !(phase_s > 0)))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "workload \"", spec, "\": want shift or shift:PHASE_S, PHASE_S > 0"));
    }
    const double phase_ms = phase_s * 1000;
    return Poisson(
        options, [phase_ms](std::mt19937_64& rng, double t, SimRequest* r) {
          const bool prefill_heavy =
              static_cast<uint64_t>(std::floor(t / phase_ms)) % 2 == 0;
          r->input_tokens = LognormalTokens(rng, prefill_heavy ? 10000 : 500,
                                            kShiftSigma, 0.5, 1.5);
          r->output_tokens = LognormalTokens(rng, prefill_heavy ? 32 : 512,
                                             kShiftSigma, 0.5, 1.5);
        });
  }
  absl::string_view name = spec;
  if (parts.size() == 2 && parts[0] == "longbench") name = parts[1];
  for (const LongBenchSubset& s : kSubsets) {
    if (absl::string_view(s.name.data(), s.name.size()) != name) continue;
    const double mean = s.MeanInputTokens();
    const uint32_t out = s.max_new_tokens;
    return Poisson(options, [mean, out](std::mt19937_64& rng, double,
                                        SimRequest* r) {
      r->input_tokens = LognormalTokens(rng, mean, kLongBenchSigma, 0.25, 2.5);
      r->output_tokens = out;
    });
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown workload \"", spec, "\"; known: ", KnownForms()));
}

}  // namespace flowkv
