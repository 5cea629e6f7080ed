// SPDX-License-Identifier: Apache-2.0
// Calibration of flowkv-cluster's model (tools/cluster/model/calibrate.h):
// the constrained fits recover known coefficients, never go negative, and
// Calibrate measures every point it was asked for (no timing is asserted).

#include <cmath>
#include <vector>

#include <catch2/catch.hpp>

#include "tools/cluster/model/calibrate.h"

namespace flowkv::cluster {
namespace {

TEST_CASE("FitPrefill recovers a + b n + c n^2", "[cluster_model]") {
  std::vector<PrefillSample> samples;
  for (int n : {16, 64, 100, 256, 512}) {
    samples.push_back({n, 2.0 + 0.5 * n + 0.001 * n * n});
  }
  const std::vector<double> fit = FitPrefill(samples);
  REQUIRE(fit.size() == 3);
  CHECK(fit[0] == Approx(2.0).epsilon(1e-6));
  CHECK(fit[1] == Approx(0.5).epsilon(1e-6));
  CHECK(fit[2] == Approx(0.001).epsilon(1e-6));
}

TEST_CASE("The fits keep every coefficient >= 0", "[cluster_model]") {
  // A concave curve: the unconstrained quadratic term is negative.
  std::vector<PrefillSample> samples;
  for (int n : {10, 100, 200, 300, 400}) {
    samples.push_back({n, 5.0 + 0.1 * n - 0.0001 * n * n});
  }
  const std::vector<double> fit = FitPrefill(samples);
  for (double c : fit) CHECK(c >= 0);
  CHECK(fit[2] == 0);
  CHECK(fit[1] > 0);
  // Falling times: a constant.
  const std::vector<double> falling =
      FitPrefill(std::vector<PrefillSample>{{10, 9}, {20, 8}, {30, 7}});
  CHECK(falling[1] == 0);
  CHECK(falling[2] == 0);
  CHECK(falling[0] == Approx(8.0));
}

TEST_CASE("FitDecode recovers t0 + k ctx + e B", "[cluster_model]") {
  std::vector<DecodeSample> samples;
  for (int batch : {1, 4, 8}) {
    for (int context : {32, 256, 1024}) {
      const double ctx = double{1.0} * batch * context;
      samples.push_back({batch, ctx, 0.3 + 2e-4 * ctx + 7.5 * batch});
    }
  }
  const std::vector<double> fit = FitDecode(samples);
  REQUIRE(fit.size() == 3);
  CHECK(fit[0] == Approx(0.3).epsilon(1e-6));
  CHECK(fit[1] == Approx(2e-4).epsilon(1e-6));
  CHECK(fit[2] == Approx(7.5).epsilon(1e-6));
}

ModelConfig TinyConfig() {
  ModelConfig c;
  c.layers = 2;
  c.d_model = 64;
  c.q_heads = 4;
  c.kv_heads = 2;
  c.head_dim = 16;
  c.ffn_dim = 96;
  c.max_context = 128;
  return c;
}

TEST_CASE("Calibrate measures every point and fits the simulator's cost",
          "[cluster_model]") {
  absl::StatusOr<std::unique_ptr<Model>> model = Model::Create(TinyConfig());
  REQUIRE(model.ok());
  CalibrationOptions options;
  options.prompt_lengths = {8, 16, 32, 64};
  options.decode_batches = {1, 3};
  options.decode_contexts = {8, 60};
  options.decode_steps = 2;
  options.repeats = 1;
  options.preset = KvPreset::kSglangMha;
  options.block_tokens = 8;
  absl::StatusOr<ModelCalibration> calibration = Calibrate(**model, options);
  INFO(calibration.status().ToString());
  REQUIRE(calibration.ok());
  REQUIRE(calibration->prefill.size() == 4);
  REQUIRE(calibration->decode.size() == 4);
  CHECK(calibration->prefill[3].tokens == 64);
  CHECK(calibration->decode[3].batch == 3);
  CHECK(calibration->decode[3].context_tokens == Approx(3 * 61.5));
  for (const PrefillSample& s : calibration->prefill) CHECK(s.ms > 0);
  for (const DecodeSample& s : calibration->decode) CHECK(s.ms > 0);
  const NodeCostModel& cost = calibration->cost;
  for (double c : {cost.a, cost.b, cost.c, cost.t0, cost.k, cost.e}) {
    CHECK(std::isfinite(c));
    CHECK(c >= 0);
  }
  CHECK(cost.PrefillMs(64) > 0);
  CHECK(cost.DecodeStepMs(3, 180) > 0);
  // 2 layers x (K, V) x 2 heads x 16 floats.
  CHECK(calibration->kv_bytes_per_token == 2 * 2 * 2 * 16 * 4);
  CHECK(calibration->backend == MatmulBackendName(MatmulBackend::kAuto));
}

TEST_CASE("Calibrate rejects options it cannot measure", "[cluster_model]") {
  absl::StatusOr<std::unique_ptr<Model>> model = Model::Create(TinyConfig());
  REQUIRE(model.ok());
  auto code = [&](const CalibrationOptions& o) {
    return Calibrate(**model, o).status().code();
  };
  CalibrationOptions o;
  o.decode_contexts = {8, 64};
  o.prompt_lengths = {8, 16, 32};
  REQUIRE(code(o) == absl::StatusCode::kOk);
  CalibrationOptions bad = o;
  bad.prompt_lengths = {8, 8, 16};
  CHECK(code(bad) == absl::StatusCode::kInvalidArgument);
  bad = o;
  bad.prompt_lengths = {8, 16, 129};
  CHECK(code(bad) == absl::StatusCode::kInvalidArgument);
  bad = o;
  bad.decode_contexts = {8, 127};  // + 4 steps > max_context 128
  CHECK(code(bad) == absl::StatusCode::kInvalidArgument);
  bad = o;
  bad.decode_batches = {};
  CHECK(code(bad) == absl::StatusCode::kInvalidArgument);
  bad = o;
  bad.decode_batches = {1};
  bad.decode_contexts = {8, 16};
  CHECK(code(bad) == absl::StatusCode::kInvalidArgument);
  bad = o;
  bad.repeats = 0;
  CHECK(code(bad) == absl::StatusCode::kInvalidArgument);
  bad = o;
  bad.block_tokens = 0;
  CHECK(code(bad) == absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace flowkv::cluster
