// SPDX-License-Identifier: Apache-2.0
// The requests flowkv-cluster replays: the simulator's workloads and traces
// (flowkv/sim/workload.h) with their lengths scaled to the model's context
// and each prompt filled with deterministic byte tokens, so a run is the
// same run every time.
//
// Thread safety: pure functions.

#ifndef FLOWKV_TOOLS_CLUSTER_REPLAY_H_
#define FLOWKV_TOOLS_CLUSTER_REPLAY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace flowkv::cluster {

struct ReplayOptions {
  // A flowkv-sim workload spec ("shift:5", "synthetic:200:16", ...), or
  // "trace:PATH".
  std::string workload = "synthetic:200:16";
  double rate = 2.0;
  uint64_t requests = 24;
  uint64_t seed = 1;
  double time_scale = 1.0;
  // Tokens a request may hold (prompt + output) in the model.
  uint32_t max_context = 1024;
  // Multiplies prompt and output lengths; 0: the largest scale <= 1 at
  // which every request fits max_context.
  double length_scale = 0;
  uint32_t vocab = 256;  // prompt tokens are bytes
};

struct ClusterRequest {
  uint64_t id = 0;
  // Arrival, ms after the start of the run.
  double arrival_ms = 0;
  std::vector<uint32_t> prompt;
  // Tokens to generate (>= 1; the first comes from the prefill).
  uint32_t max_new = 1;
};

// InvalidArgument for a bad spec, rate, time scale or length scale, or a
// request that does not fit max_context at the scale given.
absl::StatusOr<std::vector<ClusterRequest>> MakeRequests(
    const ReplayOptions& options, double* length_scale_used);

}  // namespace flowkv::cluster

#endif  // FLOWKV_TOOLS_CLUSTER_REPLAY_H_
