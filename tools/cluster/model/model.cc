// SPDX-License-Identifier: Apache-2.0
// The forward pass of flowkv-cluster's model (model.h): prefill over a
// prompt and single-token decode steps, both through one Layer() that
// writes K/V into the paged pool and reads attention's keys and values back
// from it, so prefill and decode see the same bytes whichever pool holds
// them. Numerics are in model_kernels.cc.

#include "tools/cluster/model/model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tools/cluster/model/model_kernels.h"

namespace flowkv::cluster {

using kernels::FloatBuffer;

struct Model::Scratch {
  Scratch(const ModelConfig& c, int rows, int64_t max_keys)
      : x(static_cast<size_t>(rows) * c.d_model),
        h(x.size()),
        qkv(static_cast<size_t>(rows) * (c.q_heads + 2 * c.kv_heads) *
            c.head_dim),
        attn(static_cast<size_t>(rows) * c.q_heads * c.head_dim),
        proj(x.size()),
        gate_up(static_cast<size_t>(rows) * 2 * c.ffn_dim),
        act(static_cast<size_t>(rows) * c.ffn_dim),
        scores(static_cast<size_t>(c.q_heads / c.kv_heads) * max_keys) {}
  FloatBuffer x;        // [rows][d_model] residual stream
  FloatBuffer h;        // [rows][d_model] normed
  FloatBuffer qkv;      // [rows][(q_heads + 2 kv_heads) * head_dim]
  FloatBuffer attn;     // [rows][q_heads * head_dim]
  FloatBuffer proj;     // [rows][d_model] attention / MLP output
  FloatBuffer gate_up;  // [rows][2 * ffn_dim]
  FloatBuffer act;      // [rows][ffn_dim]
  FloatBuffer scores;   // [q_heads / kv_heads][max_keys]
};

namespace {

absl::Status CheckToken(const ModelConfig& config, int token,
                        std::string_view what, size_t index) {
  if (token < 0 || token >= config.vocab) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s[%u] = %d is outside the vocabulary [0, %d)", what,
                        index, token, config.vocab));
  }
  return absl::OkStatus();
}

}  // namespace

Model::Model(const ModelConfig& config, MatmulBackend backend)
    : config_(config), backend_(backend), weights_(MakeModelWeights(config)) {
  const int half = config.head_dim / 2;
  rope_cos_.resize(static_cast<size_t>(config.max_context) * half);
  rope_sin_.resize(rope_cos_.size());
  for (int pos = 0; pos < config.max_context; ++pos) {
    for (int i = 0; i < half; ++i) {
      const double freq =
          std::pow(config.rope_theta, -2.0 * i / config.head_dim);
      const double angle = pos * freq;
      rope_cos_[static_cast<size_t>(pos) * half + i] =
          static_cast<float>(std::cos(angle));
      rope_sin_[static_cast<size_t>(pos) * half + i] =
          static_cast<float>(std::sin(angle));
    }
  }
}

absl::StatusOr<std::unique_ptr<Model>> Model::Create(
    const ModelConfig& config) {
  if (absl::Status s = ValidateConfig(config); !s.ok()) return s;
  MatmulBackend backend = config.backend;
  if (backend == MatmulBackend::kAuto) {
    backend = BlasAvailable() ? MatmulBackend::kBlas : MatmulBackend::kLoops;
  }
  if (backend == MatmulBackend::kBlas) kernels::ForceSingleThreadedBlas();
  return std::unique_ptr<Model>(new Model(config, backend));
}

uint64_t Model::kv_bytes_per_token() const {
  return uint64_t{2} * config_.layers * config_.kv_heads * config_.head_dim *
         kKvDtypeBytes;
}

void Model::WriteKv(int layer, absl::Span<const Row> rows, bool blas,
                    Scratch* s) const {
  const ModelConfig& c = config_;
  const LayerWeights& w = weights_.layers[layer];
  const int d = c.d_model;
  const int hd = c.head_dim;
  const int q_cols = c.q_heads * hd;
  const int kv_cols = c.kv_heads * hd;
  const int qkv_cols = q_cols + 2 * kv_cols;
  const int half = hd / 2;
  const int n = static_cast<int>(rows.size());

  for (int r = 0; r < n; ++r) {
    kernels::RmsNorm(&s->x[static_cast<size_t>(r) * d], w.attn_norm.data(), d,
                     c.norm_eps, &s->h[static_cast<size_t>(r) * d]);
  }
  kernels::MatMul(blas, s->h.data(), n, d, w.wqkv.data(), qkv_cols,
                  s->qkv.data());
  for (int r = 0; r < n; ++r) {
    const int pos = rows[r].pos;
    const float* cos_row = &rope_cos_[static_cast<size_t>(pos) * half];
    const float* sin_row = &rope_sin_[static_cast<size_t>(pos) * half];
    float* row = &s->qkv[static_cast<size_t>(r) * qkv_cols];
    for (int head = 0; head < c.q_heads + c.kv_heads; ++head) {
      kernels::ApplyRope(row + head * hd, hd, cos_row, sin_row);
    }
    for (int g = 0; g < c.kv_heads; ++g) {
      std::memcpy(rows[r].view->Key(layer, pos, g), row + q_cols + g * hd,
                  sizeof(float) * hd);
      std::memcpy(rows[r].view->Value(layer, pos, g),
                  row + q_cols + kv_cols + g * hd, sizeof(float) * hd);
    }
  }
}

void Model::FinishLayer(int layer, absl::Span<const Row> rows, bool blas,
                        Scratch* s) const {
  const ModelConfig& c = config_;
  const LayerWeights& w = weights_.layers[layer];
  const int d = c.d_model;
  const int hd = c.head_dim;
  const int q_cols = c.q_heads * hd;
  const int qkv_cols = q_cols + 2 * c.kv_heads * hd;
  const int group = c.q_heads / c.kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int n = static_cast<int>(rows.size());

  // Causal attention: each row's query heads over positions [0, pos] of its
  // own pool, read in position order.
  for (int r = 0; r < n; ++r) {
    const PagedKvView& view = *rows[r].view;
    const int64_t num_keys = rows[r].pos + 1;
    const float* q_row = &s->qkv[static_cast<size_t>(r) * qkv_cols];
    float* out_row = &s->attn[static_cast<size_t>(r) * q_cols];
    for (int g = 0; g < c.kv_heads; ++g) {
      kernels::AttendGroup(
          q_row + g * group * hd, group, hd, num_keys, scale,
          [&](const auto& f) { view.ForEachKv(layer, g, num_keys, f); },
          s->scores.data(), out_row + g * group * hd);
    }
  }
  kernels::MatMul(blas, s->attn.data(), n, q_cols, w.wo.data(), d,
                  s->proj.data());
  for (size_t i = 0; i < static_cast<size_t>(n) * d; ++i) {
    s->x[i] += s->proj[i];
  }

  // SwiGLU MLP.
  const int ffn = c.ffn_dim;
  for (int r = 0; r < n; ++r) {
    kernels::RmsNorm(&s->x[static_cast<size_t>(r) * d], w.mlp_norm.data(), d,
                     c.norm_eps, &s->h[static_cast<size_t>(r) * d]);
  }
  kernels::MatMul(blas, s->h.data(), n, d, w.w_gate_up.data(), 2 * ffn,
                  s->gate_up.data());
  for (int r = 0; r < n; ++r) {
    const float* gate = &s->gate_up[static_cast<size_t>(r) * 2 * ffn];
    kernels::SwiGlu(gate, gate + ffn, ffn,
                    &s->act[static_cast<size_t>(r) * ffn]);
  }
  kernels::MatMul(blas, s->act.data(), n, ffn, w.w_down.data(), d,
                  s->proj.data());
  for (size_t i = 0; i < static_cast<size_t>(n) * d; ++i) {
    s->x[i] += s->proj[i];
  }
}

std::vector<std::vector<float>> Model::Logits(const float* x, int rows,
                                              bool blas) const {
  const ModelConfig& c = config_;
  FloatBuffer h(static_cast<size_t>(rows) * c.d_model);
  for (int r = 0; r < rows; ++r) {
    kernels::RmsNorm(x + static_cast<size_t>(r) * c.d_model,
                     weights_.final_norm.data(), c.d_model, c.norm_eps,
                     &h[static_cast<size_t>(r) * c.d_model]);
  }
  FloatBuffer logits(static_cast<size_t>(rows) * c.vocab);
  kernels::MatMul(blas, h.data(), rows, c.d_model, weights_.lm_head.data(),
                  c.vocab, logits.data());
  std::vector<std::vector<float>> out;
  for (int r = 0; r < rows; ++r) {
    const float* row = &logits[static_cast<size_t>(r) * c.vocab];
    out.emplace_back(row, row + c.vocab);
  }
  return out;
}

absl::StatusOr<std::vector<float>> Model::PrefillLogits(
    absl::Span<const int> prompt, const PagedKv& kv,
    const LayerDone& on_layer) const {
  const ModelConfig& c = config_;
  if (prompt.empty()) {
    return absl::InvalidArgumentError("Prefill: the prompt is empty");
  }
  if (prompt.size() > static_cast<size_t>(c.max_context)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("Prefill: the prompt has %u tokens, max_context is %d",
                        prompt.size(), c.max_context));
  }
  for (size_t i = 0; i < prompt.size(); ++i) {
    if (absl::Status st = CheckToken(c, prompt[i], "Prefill: prompt", i);
        !st.ok()) {
      return st;
    }
  }
  const int n = static_cast<int>(prompt.size());
  absl::StatusOr<PagedKvView> view = PagedKvView::Create(c, kv, n);
  if (!view.ok()) return view.status();

  std::vector<Row> rows(n);
  for (int r = 0; r < n; ++r) rows[r] = Row{&*view, r};
  Scratch s(c, n, n);
  for (int r = 0; r < n; ++r) {
    std::memcpy(&s.x[static_cast<size_t>(r) * c.d_model],
                &weights_.embedding[static_cast<size_t>(prompt[r]) * c.d_model],
                sizeof(float) * c.d_model);
  }
  for (int layer = 0; layer < c.layers; ++layer) {
    WriteKv(layer, rows, use_blas(), &s);
    if (on_layer) {
      if (absl::Status st = on_layer(layer); !st.ok()) return st;
    }
    FinishLayer(layer, rows, use_blas(), &s);
  }
  return std::move(
      Logits(&s.x[static_cast<size_t>(n - 1) * c.d_model], 1, use_blas())[0]);
}

absl::StatusOr<std::vector<std::vector<float>>> Model::DecodeBatchLogits(
    absl::Span<const DecodeRequest> batch) const {
  const ModelConfig& c = config_;
  std::vector<PagedKvView> views;
  views.reserve(batch.size());
  int64_t max_keys = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    const DecodeRequest& request = batch[i];
    const std::string where = absl::StrFormat("DecodeStep: batch[%u]", i);
    if (absl::Status st = CheckToken(c, request.token, where + " token", 0);
        !st.ok()) {
      return st;
    }
    if (request.pos < 0 || request.pos >= c.max_context) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: position %d is outside [0, %d) (max_context)",
                          where, request.pos, c.max_context));
    }
    if (request.kv == nullptr) {
      return absl::InvalidArgumentError(where + ": kv is null");
    }
    absl::StatusOr<PagedKvView> view =
        PagedKvView::Create(c, *request.kv, request.pos + 1);
    if (!view.ok()) {
      return absl::Status(view.status().code(),
                          absl::StrCat(where, ": ", view.status().message()));
    }
    views.push_back(*std::move(view));
    max_keys = std::max<int64_t>(max_keys, request.pos + 1);
  }
  const int n = static_cast<int>(batch.size());
  if (n == 0) return std::vector<std::vector<float>>();
  std::vector<Row> rows(n);
  for (int r = 0; r < n; ++r) rows[r] = Row{&views[r], batch[r].pos};
  Scratch s(c, n, max_keys);
  for (int r = 0; r < n; ++r) {
    std::memcpy(
        &s.x[static_cast<size_t>(r) * c.d_model],
        &weights_.embedding[static_cast<size_t>(batch[r].token) * c.d_model],
        sizeof(float) * c.d_model);
  }
  // Decode runs the loop products whatever the backend: each row's result
  // is then independent of the batch (model_kernels.h, "Exactness").
  for (int layer = 0; layer < c.layers; ++layer) {
    WriteKv(layer, rows, /*blas=*/false, &s);
    FinishLayer(layer, rows, /*blas=*/false, &s);
  }
  return Logits(s.x.data(), n, /*blas=*/false);
}

absl::StatusOr<std::vector<float>> Model::DecodeLogits(
    int token, int pos, const PagedKv& kv) const {
  const DecodeRequest request{.token = token, .pos = pos, .kv = &kv};
  absl::StatusOr<std::vector<std::vector<float>>> logits =
      DecodeBatchLogits({&request, 1});
  if (!logits.ok()) return logits.status();
  return std::move((*logits)[0]);
}

absl::StatusOr<std::vector<int>> Model::DecodeBatch(
    absl::Span<const DecodeRequest> batch) const {
  absl::StatusOr<std::vector<std::vector<float>>> logits =
      DecodeBatchLogits(batch);
  if (!logits.ok()) return logits.status();
  std::vector<int> tokens;
  tokens.reserve(logits->size());
  for (const std::vector<float>& row : *logits) {
    tokens.push_back(kernels::Argmax(row.data(), config_.vocab));
  }
  return tokens;
}

absl::StatusOr<int> Model::Prefill(absl::Span<const int> prompt,
                                   const PagedKv& kv,
                                   const LayerDone& on_layer) const {
  absl::StatusOr<std::vector<float>> logits =
      PrefillLogits(prompt, kv, on_layer);
  if (!logits.ok()) return logits.status();
  return kernels::Argmax(logits->data(), config_.vocab);
}

absl::StatusOr<int> Model::DecodeStep(int token, int pos,
                                      const PagedKv& kv) const {
  absl::StatusOr<std::vector<float>> logits = DecodeLogits(token, pos, kv);
  if (!logits.ok()) return logits.status();
  return kernels::Argmax(logits->data(), config_.vocab);
}

absl::StatusOr<std::vector<int>> Model::Generate(
    absl::Span<const int> prompt, const GenerateOptions& options) const {
  if (options.max_new_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Generate: max_new_tokens %d is negative", options.max_new_tokens));
  }
  if (options.block_tokens == 0) {
    return absl::InvalidArgumentError("Generate: block_tokens is 0");
  }
  const int64_t positions = static_cast<int64_t>(prompt.size()) +
                            std::max(options.max_new_tokens - 1, 0);
  if (positions > config_.max_context) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Generate: %u prompt tokens + %d new tokens need %d positions, "
        "max_context is %d",
        prompt.size(), options.max_new_tokens, positions, config_.max_context));
  }
  std::vector<int> tokens;
  if (options.max_new_tokens == 0) return tokens;
  const uint32_t num_blocks = static_cast<uint32_t>(
      (std::max<int64_t>(positions, 1) + options.block_tokens - 1) /
      options.block_tokens);
  absl::StatusOr<KvLayout> layout =
      MakeKvLayout(config_, options.preset, num_blocks, options.block_tokens);
  if (!layout.ok()) return layout.status();
  absl::StatusOr<HostKvPool> pool = HostKvPool::Create(*layout);
  if (!pool.ok()) return pool.status();
  const PagedKv kv{.layout = &*layout,
                   .region_bases = pool->bases(),
                   .blocks = BlockList{{0, num_blocks}}};
  absl::StatusOr<int> token = Prefill(prompt, kv, nullptr);
  if (!token.ok()) return token.status();
  tokens.push_back(*token);
  int pos = static_cast<int>(prompt.size());
  while (static_cast<int>(tokens.size()) < options.max_new_tokens &&
         !(options.stop_at_eos && tokens.back() == config_.eos_token)) {
    token = DecodeStep(tokens.back(), pos++, kv);
    if (!token.ok()) return token.status();
    tokens.push_back(*token);
  }
  return tokens;
}

}  // namespace flowkv::cluster
