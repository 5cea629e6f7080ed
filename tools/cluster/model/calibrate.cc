// SPDX-License-Identifier: Apache-2.0
// Calibration of the model's cost (calibrate.h): timed Prefill and
// DecodeBatch runs on a pool of this process, and least-squares fits with
// non-negative coefficients of the simulator's cost formulas.

#include "tools/cluster/model/calibrate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <set>
#include <utility>

#include "absl/strings/str_format.h"

namespace flowkv::cluster {
namespace {

struct Fit {
  std::vector<double> coef;
  double residual = std::numeric_limits<double>::infinity();
};

// Least squares of y over the columns `cols` of x (normal equations on
// columns scaled to a maximum of 1, Gaussian elimination with partial
// pivoting). Coefficients of the other columns are 0; residual infinite
// when the columns are dependent on these samples.
Fit LeastSquares(const std::vector<std::vector<double>>& x,
                 const std::vector<double>& y, const std::vector<size_t>& cols,
                 size_t num_cols) {
  const size_t k = cols.size();
  std::vector<double> scale(k, 0.0);
  for (const std::vector<double>& row : x) {
    for (size_t i = 0; i < k; ++i) {
      scale[i] = std::max(scale[i], std::abs(row[cols[i]]));
    }
  }
  for (double& s : scale) s = s > 0 ? s : 1.0;
  std::vector<std::vector<double>> m(k, std::vector<double>(k + 1, 0.0));
  for (size_t r = 0; r < x.size(); ++r) {
    for (size_t i = 0; i < k; ++i) {
      const double xi = x[r][cols[i]] / scale[i];
      for (size_t j = 0; j < k; ++j) m[i][j] += xi * x[r][cols[j]] / scale[j];
      m[i][k] += xi * y[r];
    }
  }
  for (size_t col = 0; col < k; ++col) {
    size_t pivot = col;
    for (size_t r = col + 1; r < k; ++r) {
      if (std::abs(m[r][col]) > std::abs(m[pivot][col])) pivot = r;
    }
    if (std::abs(m[pivot][col]) < 1e-9) return Fit{};
    std::swap(m[col], m[pivot]);
    for (size_t r = 0; r < k; ++r) {
      if (r == col) continue;
      const double f = m[r][col] / m[col][col];
      for (size_t j = col; j <= k; ++j) m[r][j] -= f * m[col][j];
    }
  }
  Fit fit;
  fit.coef.assign(num_cols, 0.0);
  for (size_t i = 0; i < k; ++i)
    fit.coef[cols[i]] = m[i][k] / m[i][i] / scale[i];
  fit.residual = 0;
  for (size_t r = 0; r < x.size(); ++r) {
    double e = -y[r];
    for (size_t c = 0; c < num_cols; ++c) e += fit.coef[c] * x[r][c];
    fit.residual += e * e;
  }
  return fit;
}

// The best least-squares fit over the subsets of columns whose coefficients
// are all >= 0 (all zero when none is).
std::vector<double> NonNegativeFit(const std::vector<std::vector<double>>& x,
                                   const std::vector<double>& y,
                                   size_t num_cols) {
  Fit best;
  for (size_t mask = 1; mask < (size_t{1} << num_cols); ++mask) {
    std::vector<size_t> cols;
    for (size_t c = 0; c < num_cols; ++c) {
      if (mask & (size_t{1} << c)) cols.push_back(c);
    }
    Fit fit = LeastSquares(x, y, cols, num_cols);
    if (!std::isfinite(fit.residual)) continue;
    if (std::any_of(fit.coef.begin(), fit.coef.end(),
                    [](double c) { return c < 0; })) {
      continue;
    }
    // Ties (within rounding) go to the fit with fewer terms (lower mask
    // bits first is arbitrary; fewer terms is the simpler model).
    if (fit.residual < best.residual * (1 - 1e-12)) best = std::move(fit);
  }
  if (best.coef.empty()) best.coef.assign(num_cols, 0.0);
  return best.coef;
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

absl::Status CheckList(std::string_view name, const std::vector<int>& values,
                       int64_t limit, int64_t extra) {
  if (values.empty()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("Calibrate: %s is empty", name));
  }
  for (int v : values) {
    if (v < 1 || v + extra > limit) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "Calibrate: %s holds %d, outside [1, %d]", name, v, limit - extra));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckOptions(const Model& model, const CalibrationOptions& o) {
  const int max_context = model.config().max_context;
  if (o.repeats < 1 || o.decode_steps < 1 || o.block_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Calibrate: repeats %d, decode_steps %d and block_tokens %u must be "
        "at least 1",
        o.repeats, o.decode_steps, o.block_tokens));
  }
  if (absl::Status s =
          CheckList("prompt_lengths", o.prompt_lengths, max_context, 0);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckList("decode_contexts", o.decode_contexts,
                                 max_context, o.decode_steps);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckList("decode_batches", o.decode_batches, 4096, 0);
      !s.ok()) {
    return s;
  }
  if (std::set<int>(o.prompt_lengths.begin(), o.prompt_lengths.end()).size() <
      3) {
    return absl::InvalidArgumentError(
        "Calibrate: prompt_lengths needs at least 3 distinct lengths");
  }
  std::set<std::pair<int, int64_t>> points;
  for (int b : o.decode_batches) {
    for (int c : o.decode_contexts) points.insert({b, int64_t{b} * c});
  }
  if (points.size() < 3) {
    return absl::InvalidArgumentError(
        "Calibrate: decode_batches x decode_contexts needs at least 3 "
        "distinct points");
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<double> FitPrefill(absl::Span<const PrefillSample> samples) {
  std::vector<std::vector<double>> x;
  std::vector<double> y;
  for (const PrefillSample& s : samples) {
    const double n = s.tokens;
    x.push_back({1.0, n, n * n});
    y.push_back(s.ms);
  }
  return NonNegativeFit(x, y, 3);
}

std::vector<double> FitDecode(absl::Span<const DecodeSample> samples) {
  std::vector<std::vector<double>> x;
  std::vector<double> y;
  for (const DecodeSample& s : samples) {
    x.push_back({1.0, s.context_tokens, static_cast<double>(s.batch)});
    y.push_back(s.ms);
  }
  return NonNegativeFit(x, y, 3);
}

absl::StatusOr<ModelCalibration> Calibrate(const Model& model,
                                           const CalibrationOptions& options) {
  if (absl::Status s = CheckOptions(model, options); !s.ok()) return s;
  const ModelConfig& config = model.config();
  const int max_prompt = *std::max_element(options.prompt_lengths.begin(),
                                           options.prompt_lengths.end());
  const int max_batch = *std::max_element(options.decode_batches.begin(),
                                          options.decode_batches.end());
  const int max_context = *std::max_element(options.decode_contexts.begin(),
                                            options.decode_contexts.end());
  // One pool: max_batch requests of max_context + decode_steps positions
  // (the prefill uses the first request's blocks).
  const uint32_t T = options.block_tokens;
  const uint32_t blocks_per_request = static_cast<uint32_t>(
      (std::max(max_prompt, max_context + options.decode_steps) + T - 1) / T);
  absl::StatusOr<KvLayout> layout =
      MakeKvLayout(config, options.preset, blocks_per_request * max_batch, T);
  if (!layout.ok()) return layout.status();
  absl::StatusOr<HostKvPool> pool = HostKvPool::Create(*layout);
  if (!pool.ok()) return pool.status();
  std::vector<PagedKv> kvs;
  for (int i = 0; i < max_batch; ++i) {
    kvs.push_back(PagedKv{
        .layout = &*layout,
        .region_bases = pool->bases(),
        .blocks = BlockList{{i * blocks_per_request, blocks_per_request}}});
  }

  ModelCalibration result;
  result.backend = std::string(MatmulBackendName(model.backend()));
  result.kv_bytes_per_token = static_cast<double>(model.kv_bytes_per_token());
  for (int n : options.prompt_lengths) {
    const std::vector<int> prompt = CalibrationPrompt(n);
    double best = std::numeric_limits<double>::infinity();
    for (int r = 0; r < options.repeats; ++r) {
      const auto start = std::chrono::steady_clock::now();
      absl::StatusOr<int> token = model.Prefill(prompt, kvs[0], nullptr);
      if (!token.ok()) return token.status();
      best = std::min(best, MillisecondsSince(start));
    }
    result.prefill.push_back({n, best});
  }
  for (int batch_size : options.decode_batches) {
    for (int context : options.decode_contexts) {
      double best = std::numeric_limits<double>::infinity();
      std::vector<DecodeRequest> batch(batch_size);
      for (int r = 0; r < options.repeats; ++r) {
        const auto start = std::chrono::steady_clock::now();
        for (int step = 0; step < options.decode_steps; ++step) {
          for (int i = 0; i < batch_size; ++i) {
            batch[i] = {.token = 'a', .pos = context + step, .kv = &kvs[i]};
          }
          absl::StatusOr<std::vector<int>> next = model.DecodeBatch(batch);
          if (!next.ok()) return next.status();
        }
        best = std::min(best, MillisecondsSince(start) / options.decode_steps);
      }
      // Step s attends over context + s + 1 positions per request.
      const double mean_context = context + (options.decode_steps + 1) / 2.0;
      result.decode.push_back({batch_size, batch_size * mean_context, best});
    }
  }
  const std::vector<double> prefill = FitPrefill(result.prefill);
  const std::vector<double> decode = FitDecode(result.decode);
  result.cost.a = prefill[0];
  result.cost.b = prefill[1];
  result.cost.c = prefill[2];
  result.cost.t0 = decode[0];
  result.cost.k = decode[1];
  result.cost.e = decode[2];
  return result;
}

}  // namespace flowkv::cluster
