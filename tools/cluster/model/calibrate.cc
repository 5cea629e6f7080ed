// SPDX-License-Identifier: Apache-2.0
// Calibration of the model's cost (calibrate.h): timed Prefill and
// DecodeStep runs on a pool of this process, and non-negative least-squares
// fits of the simulator's cost formulas.

#include "tools/cluster/model/calibrate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <set>

#include "absl/strings/str_format.h"

namespace flowkv::cluster {
namespace {

// Least squares over the basis terms x^p for p in `powers` (normal
// equations, Gaussian elimination with partial pivoting, x scaled to [0, 1]
// first). Returns the coefficient of each power 0..2 (0 when not in the
// subset) and the residual sum of squares; nullopt-like {inf} when singular.
struct Fit {
  std::array<double, 3> coef{0, 0, 0};
  double residual = std::numeric_limits<double>::infinity();
};

Fit LeastSquares(absl::Span<const TimingSample> samples,
                 const std::vector<int>& powers) {
  const size_t k = powers.size();
  double x_max = 0;
  for (const TimingSample& s : samples) x_max = std::max(x_max, s.tokens);
  if (x_max <= 0) x_max = 1;
  double m[3][4] = {};
  for (const TimingSample& s : samples) {
    const double x = s.tokens / x_max;
    double basis[3];
    for (size_t i = 0; i < k; ++i) basis[i] = std::pow(x, powers[i]);
    for (size_t i = 0; i < k; ++i) {
      for (size_t j = 0; j < k; ++j) m[i][j] += basis[i] * basis[j];
      m[i][k] += basis[i] * s.ms;
    }
  }
  for (size_t col = 0; col < k; ++col) {
    size_t pivot = col;
    for (size_t r = col + 1; r < k; ++r) {
      if (std::abs(m[r][col]) > std::abs(m[pivot][col])) pivot = r;
    }
    if (std::abs(m[pivot][col]) < 1e-12) return Fit{};
    for (size_t j = 0; j <= k; ++j) std::swap(m[col][j], m[pivot][j]);
    for (size_t r = 0; r < k; ++r) {
      if (r == col) continue;
      const double f = m[r][col] / m[col][col];
      for (size_t j = col; j <= k; ++j) m[r][j] -= f * m[col][j];
    }
  }
  Fit fit;
  for (size_t i = 0; i < k; ++i) {
    fit.coef[powers[i]] = m[i][k] / m[i][i] / std::pow(x_max, powers[i]);
  }
  fit.residual = 0;
  for (const TimingSample& s : samples) {
    const double x = s.tokens;
    const double e = fit.coef[0] + fit.coef[1] * x + fit.coef[2] * x * x - s.ms;
    fit.residual += e * e;
  }
  return fit;
}

// The best fit over the subsets of `powers` whose coefficients are all >= 0.
Fit NonNegativeFit(absl::Span<const TimingSample> samples,
                   const std::vector<int>& powers) {
  Fit best;
  best.residual = std::numeric_limits<double>::infinity();
  const size_t subsets = size_t{1} << powers.size();
  for (size_t mask = 1; mask < subsets; ++mask) {
    std::vector<int> subset;
    for (size_t i = 0; i < powers.size(); ++i) {
      if (mask & (size_t{1} << i)) subset.push_back(powers[i]);
    }
    const Fit fit = LeastSquares(samples, subset);
    if (!std::isfinite(fit.residual)) continue;
    if (std::any_of(fit.coef.begin(), fit.coef.end(),
                    [](double c) { return c < 0; })) {
      continue;
    }
    if (fit.residual < best.residual) best = fit;
  }
  if (!std::isfinite(best.residual)) best.coef = {0, 0, 0};
  return best;
}

std::vector<int> CalibrationPrompt(int length) {
  std::vector<int> prompt(length);
  for (int i = 0; i < length; ++i) prompt[i] = (i * 31 + 7) % 256;
  return prompt;
}

double MillisecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now() - start)
      .count();
}

absl::Status CheckOptions(const Model& model, const CalibrationOptions& o) {
  const int max_context = model.config().max_context;
  if (o.repeats < 1 || o.decode_steps < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Calibrate: repeats %d and decode_steps %d must be at least 1",
        o.repeats, o.decode_steps));
  }
  if (o.block_tokens == 0) {
    return absl::InvalidArgumentError("Calibrate: block_tokens is 0");
  }
  for (int n : o.prompt_lengths) {
    if (n < 1 || n > max_context) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "Calibrate: prompt length %d is outside [1, %d]", n, max_context));
    }
  }
  for (int n : o.decode_contexts) {
    if (n < 1 || int64_t{n} + o.decode_steps > max_context) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "Calibrate: decode context %d + %d steps is outside [1, %d]", n,
          o.decode_steps, max_context));
    }
  }
  if (std::set<int>(o.prompt_lengths.begin(), o.prompt_lengths.end()).size() <
      3) {
    return absl::InvalidArgumentError(
        "Calibrate: prompt_lengths needs at least 3 distinct lengths");
  }
  if (std::set<int>(o.decode_contexts.begin(), o.decode_contexts.end()).size() <
      2) {
    return absl::InvalidArgumentError(
        "Calibrate: decode_contexts needs at least 2 distinct lengths");
  }
  return absl::OkStatus();
}

}  // namespace

std::array<double, 3> FitQuadratic(absl::Span<const TimingSample> samples) {
  return NonNegativeFit(samples, {0, 1, 2}).coef;
}

std::array<double, 2> FitLine(absl::Span<const TimingSample> samples) {
  const Fit fit = NonNegativeFit(samples, {0, 1});
  return {fit.coef[0], fit.coef[1]};
}

absl::StatusOr<ModelCalibration> Calibrate(const Model& model,
                                           const CalibrationOptions& options) {
  if (absl::Status s = CheckOptions(model, options); !s.ok()) return s;
  const ModelConfig& config = model.config();
  int max_positions = 0;
  for (int n : options.prompt_lengths)
    max_positions = std::max(max_positions, n);
  for (int n : options.decode_contexts) {
    max_positions = std::max(max_positions, n + options.decode_steps);
  }
  const uint32_t num_blocks =
      (max_positions + options.block_tokens - 1) / options.block_tokens;
  absl::StatusOr<KvLayout> layout =
      MakeKvLayout(config, options.preset, num_blocks, options.block_tokens);
  if (!layout.ok()) return layout.status();
  HostKvPool pool(*layout);
  const PagedKv kv{.layout = &*layout,
                   .region_bases = pool.bases(),
                   .blocks = BlockList{{0, num_blocks}}};

  ModelCalibration result;
  result.backend = std::string(MatmulBackendName(model.backend()));
  result.kv_bytes_per_token = static_cast<double>(model.kv_bytes_per_token());
  for (int n : options.prompt_lengths) {
    const std::vector<int> prompt = CalibrationPrompt(n);
    double best = std::numeric_limits<double>::infinity();
    for (int r = 0; r < options.repeats; ++r) {
      const auto start = std::chrono::steady_clock::now();
      absl::StatusOr<int> token = model.Prefill(prompt, kv, nullptr);
      if (!token.ok()) return token.status();
      best = std::min(best, MillisecondsSince(start));
    }
    result.prefill.push_back({static_cast<double>(n), best});
  }
  for (int n : options.decode_contexts) {
    const std::vector<int> prompt = CalibrationPrompt(n);
    absl::StatusOr<int> first = model.Prefill(prompt, kv, nullptr);
    if (!first.ok()) return first.status();
    double best = std::numeric_limits<double>::infinity();
    for (int r = 0; r < options.repeats; ++r) {
      int token = *first;
      const auto start = std::chrono::steady_clock::now();
      for (int step = 0; step < options.decode_steps; ++step) {
        absl::StatusOr<int> next = model.DecodeStep(token, n + step, kv);
        if (!next.ok()) return next.status();
        token = *next;
      }
      best = std::min(best, MillisecondsSince(start) / options.decode_steps);
    }
    // Step s attends over n + s + 1 positions.
    result.decode.push_back({n + (options.decode_steps + 1) / 2.0, best});
  }
  const std::array<double, 3> prefill = FitQuadratic(result.prefill);
  const std::array<double, 2> decode = FitLine(result.decode);
  result.cost.a = prefill[0];
  result.cost.b = prefill[1];
  result.cost.c = prefill[2];
  result.cost.t0 = 0;
  result.cost.k = decode[1];
  result.cost.e = decode[0];
  return result;
}

}  // namespace flowkv::cluster
