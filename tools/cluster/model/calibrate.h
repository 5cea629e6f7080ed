// SPDX-License-Identifier: Apache-2.0
// Calibrate: measures flowkv-cluster's model on this machine and expresses
// it in the simulator's units (flowkv::NodeCostModel, milliseconds), for
// `flowkv-cluster --calibrate` to write into the cluster file flowkv-sim
// reads:
//
//   prefill_ms(n)           = a + b * n + c * n^2    one prompt of n tokens
//   decode_step_ms(B, ctx)  = t0 + k * ctx + e * B   one DecodeBatch of B
//                                                    requests whose contexts
//                                                    sum to ctx tokens
//
// Prefill is timed on prompts of each of `prompt_lengths` tokens; decode on
// batches of each size in `decode_batches` at each context length in
// `decode_contexts` (every request of the batch at that length). Decode
// timing does not depend on the K/V values, so its requests attend over a
// zeroed pool instead of running a prefill first. The coefficients are
// least-squares fits constrained to be >= 0 (a cost never falls with
// length).
//
//   absl::StatusOr<ModelCalibration> calibration =
//       flowkv::cluster::Calibrate(*model, {});
//   node_type.cost = calibration->cost;
//
// Thread safety: Calibrate is thread-safe (it only reads the model), but
// other work on the machine skews its figures.

#ifndef FLOWKV_TOOLS_CLUSTER_MODEL_CALIBRATE_H_
#define FLOWKV_TOOLS_CLUSTER_MODEL_CALIBRATE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "flowkv/scheduler.h"
#include "tools/cluster/model/model.h"

namespace flowkv::cluster {

struct CalibrationOptions {
  // Default: 32, 64, 128, 256, 512.
  std::vector<int> prompt_lengths = {32, 64, 128, 256, 512};
  // Default: 1, 4, 8.
  std::vector<int> decode_batches = {1, 4, 8};
  // Default: 32, 256, 1024.
  std::vector<int> decode_contexts = {32, 256, 1024};
  // Decode steps timed per (batch, context); their mean is one sample.
  // Default: 4.
  int decode_steps = 4;
  // Each sample is the fastest of this many runs. Default: 3.
  int repeats = 3;
  // The pool used while timing. Default: FlowKV block-major, 16 tokens.
  KvPreset preset = KvPreset::kFlowKvBlockMajor;
  uint32_t block_tokens = 16;
};

struct PrefillSample {
  int tokens = 0;
  double ms = 0;
};

struct DecodeSample {
  int batch = 0;
  // Summed context of the batch's requests (mean over the timed steps).
  double context_tokens = 0;
  double ms = 0;
};

struct ModelCalibration {
  // a, b, c (prefill) and t0, k, e (decode), milliseconds, as above.
  NodeCostModel cost;
  // KV bytes per token, all layers, K and V (NodeInfo::kv_bytes_per_token).
  double kv_bytes_per_token = 0;
  // The samples the fits come from.
  std::vector<PrefillSample> prefill;
  std::vector<DecodeSample> decode;
  // MatmulBackendName of the model's prefill.
  std::string backend;
};

// Times the model and fits the cost model. InvalidArgument naming the
// option when a list is empty or holds a value < 1, a length (plus
// decode_steps) exceeds max_context, prompt_lengths has fewer than 3
// distinct values, decode_batches and decode_contexts give fewer than 3
// distinct (batch, summed context) points, or decode_steps, repeats or
// block_tokens is < 1.
absl::StatusOr<ModelCalibration> Calibrate(const Model& model,
                                           const CalibrationOptions& options);

// The fits Calibrate uses (exposed for tests): the least-squares
// coefficients of ms over the given regressors, each >= 0 (the best fit
// over the subsets of regressors whose coefficients come out >= 0).
// FitPrefill: {a, b, c} over {1, n, n^2}. FitDecode: {t0, k, e} over {1,
// context_tokens, batch}.
std::vector<double> FitPrefill(absl::Span<const PrefillSample> samples);
std::vector<double> FitDecode(absl::Span<const DecodeSample> samples);

}  // namespace flowkv::cluster

#endif  // FLOWKV_TOOLS_CLUSTER_MODEL_CALIBRATE_H_
