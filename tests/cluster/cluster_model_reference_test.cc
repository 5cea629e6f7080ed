// SPDX-License-Identifier: Apache-2.0
// flowkv-cluster's model against its definition: paged prefill and decode
// logits (scattered 4-token blocks) equal those of a dense double-precision
// forward pass written out from the weights, within rounding, for each
// matrix backend.

#include <algorithm>
#include <cmath>
#include <vector>

#include <catch2/catch.hpp>

#include "tests/support/cluster_model_test_util.h"
#include "tools/cluster/model/model.h"

namespace flowkv::cluster::testing {
namespace {

// The model's forward pass written out densely in double precision: the
// logits after each position of `tokens`.
std::vector<std::vector<double>> DenseLogits(const Model& model,
                                             const std::vector<int>& tokens) {
  const ModelConfig& c = model.config();
  const ModelWeights& w = model.weights();
  const int n = static_cast<int>(tokens.size());
  const int d = c.d_model, hd = c.head_dim, half = hd / 2;
  const int q_cols = c.q_heads * hd, kv_cols = c.kv_heads * hd;
  const int qkv_cols = q_cols + 2 * kv_cols;
  auto norm = [&](const std::vector<double>& x, const auto& weight) {
    double ms = 0;
    for (double v : x) ms += v * v;
    const double inv = 1.0 / std::sqrt(ms / x.size() + c.norm_eps);
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * inv * weight[i];
    return y;
  };
  auto matvec = [&](const std::vector<double>& x, const auto& m, int out) {
    std::vector<double> y(out, 0.0);
    for (size_t k = 0; k < x.size(); ++k) {
      for (int j = 0; j < out; ++j) y[j] += x[k] * m[k * out + j];
    }
    return y;
  };
  auto rope = [&](double* v, int pos) {
    for (int i = 0; i < half; ++i) {
      const double angle = pos * std::pow(c.rope_theta, -2.0 * i / hd);
      const double a = v[i], b = v[i + half];
      v[i] = a * std::cos(angle) - b * std::sin(angle);
      v[i + half] = a * std::sin(angle) + b * std::cos(angle);
    }
  };
  std::vector<std::vector<double>> x(n, std::vector<double>(d));
  for (int p = 0; p < n; ++p) {
    for (int i = 0; i < d; ++i) x[p][i] = w.embedding[tokens[p] * d + i];
  }
  for (int l = 0; l < c.layers; ++l) {
    const LayerWeights& lw = w.layers[l];
    std::vector<std::vector<double>> qkv(n);
    for (int p = 0; p < n; ++p) {
      qkv[p] = matvec(norm(x[p], lw.attn_norm), lw.wqkv, qkv_cols);
      for (int h = 0; h < c.q_heads + c.kv_heads; ++h) rope(&qkv[p][h * hd], p);
    }
    for (int p = 0; p < n; ++p) {
      std::vector<double> attn(q_cols, 0.0);
      for (int h = 0; h < c.q_heads; ++h) {
        const int g = h / (c.q_heads / c.kv_heads);
        std::vector<double> s(p + 1);
        double max_s = -1e300, total = 0;
        for (int j = 0; j <= p; ++j) {
          s[j] = 0;
          for (int i = 0; i < hd; ++i) {
            s[j] += qkv[p][h * hd + i] * qkv[j][q_cols + g * hd + i];
          }
          s[j] /= std::sqrt(static_cast<double>(hd));
          max_s = std::max(max_s, s[j]);
        }
        for (int j = 0; j <= p; ++j) total += (s[j] = std::exp(s[j] - max_s));
        for (int j = 0; j <= p; ++j) {
          for (int i = 0; i < hd; ++i) {
            attn[h * hd + i] +=
                s[j] / total * qkv[j][q_cols + kv_cols + g * hd + i];
          }
        }
      }
      const std::vector<double> o = matvec(attn, lw.wo, d);
      for (int i = 0; i < d; ++i) x[p][i] += o[i];
      const std::vector<double> gu =
          matvec(norm(x[p], lw.mlp_norm), lw.w_gate_up, 2 * c.ffn_dim);
      std::vector<double> act(c.ffn_dim);
      for (int i = 0; i < c.ffn_dim; ++i) {
        act[i] = gu[i] / (1.0 + std::exp(-gu[i])) * gu[c.ffn_dim + i];
      }
      const std::vector<double> down = matvec(act, lw.w_down, d);
      for (int i = 0; i < d; ++i) x[p][i] += down[i];
    }
  }
  std::vector<std::vector<double>> logits(n);
  for (int p = 0; p < n; ++p) {
    logits[p] = matvec(norm(x[p], w.final_norm), w.lm_head, c.vocab);
  }
  return logits;
}

TEST_CASE("Paged prefill and decode logits match a dense double reference",
          "[cluster_model]") {
  for (MatmulBackend backend : Backends()) {
    ModelConfig config = TinyConfig();
    config.backend = backend;
    INFO("backend " << MatmulBackendName(backend));
    const std::unique_ptr<Model> model = MustCreate(config);
    // 4-token blocks, scattered, in a layout with K and V of a block
    // adjacent (vLLM FlashInfer).
    const KvLayout layout =
        MustLayout(config, KvPreset::kVllmFlashInfer, 32, 4);
    HostKvPool pool = MustPool(layout);
    const PagedKv kv{.layout = &layout,
                     .region_bases = pool.bases(),
                     .blocks = BlockList{{30, 2}, {3, 4}, {11, 1}}};
    std::vector<int> tokens = Prompt(13, 5);
    const int prompt_length = static_cast<int>(tokens.size());
    std::vector<std::vector<float>> logits;
    absl::StatusOr<std::vector<float>> prefill =
        model->PrefillLogits(tokens, kv, nullptr);
    REQUIRE(prefill.ok());
    logits.push_back(*prefill);
    for (int pos = prompt_length; pos < 28; ++pos) {
      tokens.push_back((pos * 7) % 256);  // forced inputs, not greedy
      absl::StatusOr<std::vector<float>> step =
          model->DecodeLogits(tokens.back(), pos, kv);
      REQUIRE(step.ok());
      logits.push_back(*step);
    }
    const std::vector<std::vector<double>> dense = DenseLogits(*model, tokens);
    for (size_t i = 0; i < logits.size(); ++i) {
      const std::vector<double>& want = dense[prompt_length - 1 + i];
      REQUIRE(logits[i].size() == want.size());
      for (size_t v = 0; v < want.size(); ++v) {
        INFO("position " << prompt_length - 1 + i << " token " << v);
        REQUIRE(logits[i][v] == Approx(want[v]).margin(2e-4));
      }
    }
  }
}

}  // namespace
}  // namespace flowkv::cluster::testing
