// SPDX-License-Identifier: Apache-2.0
// Workload replay for flowkv-cluster (see replay.h).

#include "tools/cluster/replay.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"
#include "flowkv/sim/workload.h"

namespace flowkv::cluster {

absl::StatusOr<std::vector<ClusterRequest>> MakeRequests(
    const ReplayOptions& options, double* length_scale_used) {
  if (options.length_scale < 0 || !std::isfinite(options.length_scale)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "length scale ", options.length_scale, " must be >= 0 (0: auto)"));
  }
  if (options.max_context < 2 || options.vocab == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_context ", options.max_context, " must be >= 2"));
  }
  WorkloadOptions wo;
  wo.spec = options.workload;
  wo.rate = options.rate;
  wo.num_requests = options.requests;
  wo.seed = options.seed;
  wo.time_scale = options.time_scale;
  absl::StatusOr<std::vector<SimRequest>> sim = MakeWorkload(wo);
  if (!sim.ok()) return sim.status();
  double scale = options.length_scale;
  if (scale == 0) {
    uint64_t longest = 1;
    for (const SimRequest& r : *sim) {
      longest = std::max<uint64_t>(longest,
                                   uint64_t{r.input_tokens} + r.output_tokens);
    }
    scale = std::min(1.0, static_cast<double>(options.max_context) /
                              static_cast<double>(longest));
  }
  if (length_scale_used != nullptr) *length_scale_used = scale;
  std::vector<ClusterRequest> out;
  out.reserve(sim->size());
  for (const SimRequest& r : *sim) {
    ClusterRequest c;
    c.id = r.id;
    c.arrival_ms = r.arrival_ms;
    const uint32_t in = std::max<uint32_t>(
        1, static_cast<uint32_t>(std::floor(r.input_tokens * scale)));
    c.max_new = std::max<uint32_t>(
        1, static_cast<uint32_t>(std::floor(r.output_tokens * scale)));
    if (uint64_t{in} + c.max_new > options.max_context) {
      return absl::InvalidArgumentError(
          absl::StrCat("request ", r.id, " needs ", in, " + ", c.max_new,
                       " tokens at length scale ", scale, ", over max_context ",
                       options.max_context));
    }
    std::mt19937_64 rng(options.seed * 1000003ULL + r.id);
    c.prompt.resize(in);
    for (uint32_t& t : c.prompt)
      t = static_cast<uint32_t>(rng() % options.vocab);
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace flowkv::cluster
