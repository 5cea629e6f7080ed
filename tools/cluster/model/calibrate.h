// SPDX-License-Identifier: Apache-2.0
// Calibrate: measures flowkv-cluster's model on this machine and expresses
// it in the simulator's units (flowkv::NodeCostModel, milliseconds), for
// `flowkv-cluster --calibrate` to write into the cluster file flowkv-sim
// reads.
//
//   prefill_ms(n)            = a + b * n + c * n^2     (one prompt of n tokens)
//   decode_step_ms(B, ctx)   = t0 + k * ctx + e * B    (B requests, ctx their
//                                                       summed context)
//
// The model decodes one request per DecodeStep, so a decode iteration over
// B requests costs the sum of their steps: e is the per-step cost at zero
// context, k the added cost per context token, t0 = 0.
//
//   auto calibration = flowkv::cluster::Calibrate(*model, {});
//   node_type.cost = calibration->cost;
//
// Thread safety: Calibrate is thread-safe (it only reads the model), but
// concurrent work on the machine skews the figures.

#ifndef FLOWKV_TOOLS_CLUSTER_MODEL_CALIBRATE_H_
#define FLOWKV_TOOLS_CLUSTER_MODEL_CALIBRATE_H_

#include <array>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "flowkv/scheduler.h"
#include "tools/cluster/model/model.h"

namespace flowkv::cluster {

struct CalibrationOptions {
  // Prompt lengths to time Prefill at. Default: 32, 64, 128, 256, 512.
  std::vector<int> prompt_lengths = {32, 64, 128, 256, 512};
  // Context lengths to time DecodeStep at. Default: 32, 256, 1024.
  std::vector<int> decode_contexts = {32, 256, 1024};
  // Decode steps timed per context (their mean is one sample). Default: 8.
  int decode_steps = 8;
  // Each figure is the fastest of this many runs. Default: 3.
  int repeats = 3;
  // The pool used while timing. Default: FlowKV block-major, 16 tokens.
  KvPreset preset = KvPreset::kFlowKvBlockMajor;
  uint32_t block_tokens = 16;
};

// One measurement: `tokens` (prompt length, or mean context of the decode
// steps) and its time.
struct TimingSample {
  double tokens = 0;
  double ms = 0;
};

struct ModelCalibration {
  // a, b, c (prefill) and t0, k, e (decode) in milliseconds, as above.
  NodeCostModel cost;
  // KV bytes per token (NodeInfo::kv_bytes_per_token).
  double kv_bytes_per_token = 0;
  // The samples the fits come from.
  std::vector<TimingSample> prefill;
  std::vector<TimingSample> decode;
  // MatmulBackendName of the model.
  std::string backend;
};

// Times the model (see CalibrationOptions) and fits the cost model.
// InvalidArgument when a list is empty, a length is < 1, the lengths exceed
// the model's max_context, prompt_lengths has fewer than 3 distinct values
// or decode_contexts fewer than 2, decode_steps or repeats < 1.
absl::StatusOr<ModelCalibration> Calibrate(const Model& model,
                                           const CalibrationOptions& options);

// Least-squares fits (exposed for tests). FitQuadratic: {a, b, c} of a + b
// x + c x^2; FitLine: {a, b} of a + b x. A negative coefficient is set to 0
// and the others refitted (costs do not fall with length). REQUIRES: at
// least 3 (2) distinct x.
std::array<double, 3> FitQuadratic(absl::Span<const TimingSample> samples);
std::array<double, 2> FitLine(absl::Span<const TimingSample> samples);

}  // namespace flowkv::cluster

#endif  // FLOWKV_TOOLS_CLUSTER_MODEL_CALIBRATE_H_
