// SPDX-License-Identifier: Apache-2.0
// flowkv-cluster's model (tools/cluster/model/model.h): deterministic
// generation, the disaggregated path (prefill into an SGLang pool with
// 16-token blocks, K/V moved layer by layer with PlanTransfer into a vLLM
// FlashAttention pool with 32-token blocks, decode there) giving exactly the
// colocated tokens, logits against a dense double-precision reference, and
// the errors for bad input (which leave the pool untouched).

#include <cmath>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/types/span.h"
#include "flowkv/kv_layout.h"
#include "flowkv/transfer_plan.h"
#include "tools/cluster/model/model.h"
#include "tools/cluster/model/tokenizer.h"

namespace flowkv::cluster {
namespace {

// A small model for the slow checks (dense reference, many errors).
ModelConfig TinyConfig() {
  ModelConfig c;
  c.layers = 2;
  c.d_model = 64;
  c.q_heads = 4;
  c.kv_heads = 2;
  c.head_dim = 16;
  c.ffn_dim = 96;
  c.max_context = 256;
  return c;
}

std::unique_ptr<Model> MustCreate(const ModelConfig& config) {
  absl::StatusOr<std::unique_ptr<Model>> model = Model::Create(config);
  INFO(model.status().ToString());
  REQUIRE(model.ok());
  return *std::move(model);
}

KvLayout MustLayout(const ModelConfig& config, KvPreset preset,
                    uint32_t num_blocks, uint32_t block_tokens) {
  absl::StatusOr<KvLayout> layout =
      MakeKvLayout(config, preset, num_blocks, block_tokens);
  INFO(layout.status().ToString());
  REQUIRE(layout.ok());
  return *std::move(layout);
}

HostKvPool MustPool(const KvLayout& layout) {
  absl::StatusOr<HostKvPool> pool = HostKvPool::Create(layout);
  INFO(pool.status().ToString());
  REQUIRE(pool.ok());
  return *std::move(pool);
}

std::vector<MatmulBackend> Backends() {
  std::vector<MatmulBackend> backends = {MatmulBackend::kLoops};
  if (BlasAvailable()) backends.push_back(MatmulBackend::kBlas);
  return backends;
}

std::vector<int> Prompt(int length, int salt) {
  std::vector<int> prompt = EncodeBytes(
      "The quick brown fox jumps over the lazy dog; pack my box with five "
      "dozen liquor jugs. ");
  prompt.resize(length, 0);
  for (int i = 0; i < length; ++i) prompt[i] = (prompt[i] + salt * i) % 256;
  return prompt;
}

std::vector<absl::Span<const uint8_t>> ConstRegions(const KvLayout& layout,
                                                    const HostKvPool& pool) {
  std::vector<absl::Span<const uint8_t>> regions;
  for (uint32_t r = 0; r < layout.num_regions(); ++r) {
    regions.emplace_back(static_cast<const uint8_t*>(pool.bases()[r]),
                         layout.region_bytes(r));
  }
  return regions;
}

std::vector<absl::Span<uint8_t>> Regions(const KvLayout& layout,
                                         const HostKvPool& pool) {
  std::vector<absl::Span<uint8_t>> regions;
  for (uint32_t r = 0; r < layout.num_regions(); ++r) {
    regions.emplace_back(static_cast<uint8_t*>(pool.bases()[r]),
                         layout.region_bytes(r));
  }
  return regions;
}

std::string PoolBytes(const KvLayout& layout, const HostKvPool& pool) {
  std::string bytes;
  for (absl::Span<const uint8_t> region : ConstRegions(layout, pool)) {
    bytes.append(reinterpret_cast<const char*>(region.data()), region.size());
  }
  return bytes;
}

TEST_CASE("Generate is deterministic and the same in every pool layout",
          "[cluster_model]") {
  const ModelConfig config;  // the full 8 x 512 model
  const std::unique_ptr<Model> model = MustCreate(config);
  const std::vector<int> prompt = Prompt(40, 1);
  const GenerateOptions options{.max_new_tokens = 6, .stop_at_eos = false};
  absl::StatusOr<std::vector<int>> first = model->Generate(prompt, options);
  REQUIRE(first.ok());
  REQUIRE(first->size() == 6);
  absl::StatusOr<std::vector<int>> again = model->Generate(prompt, options);
  REQUIRE(again.ok());
  CHECK(*again == *first);

  // A second model from the same config holds the same weights.
  const std::unique_ptr<Model> twin = MustCreate(config);
  CHECK(twin->weights().lm_head == model->weights().lm_head);
  absl::StatusOr<std::vector<int>> twin_tokens =
      twin->Generate(prompt, options);
  REQUIRE(twin_tokens.ok());
  CHECK(*twin_tokens == *first);

  for (KvPreset preset : {KvPreset::kVllmFlashAttn, KvPreset::kSglangMha,
                          KvPreset::kTrtllmBlockPool}) {
    for (uint32_t block_tokens : {1u, 16u, 32u}) {
      INFO(KvPresetName(preset) << " block_tokens " << block_tokens);
      GenerateOptions other = options;
      other.preset = preset;
      other.block_tokens = block_tokens;
      absl::StatusOr<std::vector<int>> tokens = model->Generate(prompt, other);
      REQUIRE(tokens.ok());
      CHECK(*tokens == *first);
    }
  }

  // Another seed: other weights.
  ModelConfig reseeded = config;
  reseeded.seed = config.seed + 1;
  CHECK(MustCreate(reseeded)->weights().lm_head != model->weights().lm_head);
}

TEST_CASE(
    "Prefill in an SGLang pool, KV streamed per layer into a vLLM pool "
    "with other blocks, decode there: the colocated tokens",
    "[cluster_model]") {
  for (MatmulBackend backend : Backends()) {
    ModelConfig config;
    config.backend = backend;
    INFO("backend " << MatmulBackendName(backend));
    const std::unique_ptr<Model> model = MustCreate(config);
    for (int prompt_length : {1, 50, 77}) {
      INFO("prompt " << prompt_length);
      const int new_tokens = 10;
      const std::vector<int> prompt = Prompt(prompt_length, 3);
      absl::StatusOr<std::vector<int>> reference = model->Generate(
          prompt, {.max_new_tokens = new_tokens, .stop_at_eos = false});
      REQUIRE(reference.ok());

      // Prefill node: SGLang MHA pool, 16-token blocks, scattered blocks.
      const KvLayout prefill_layout =
          MustLayout(config, KvPreset::kSglangMha, 64, 16);
      HostKvPool prefill_pool = MustPool(prefill_layout);
      const PagedKv prefill_kv{.layout = &prefill_layout,
                               .region_bases = prefill_pool.bases(),
                               .blocks = BlockList{{40, 2}, {7, 1}, {12, 3}}};
      // Decode node: vLLM FlashAttention pool, 32-token blocks.
      const KvLayout decode_layout =
          MustLayout(config, KvPreset::kVllmFlashAttn, 16, 32);
      HostKvPool decode_pool = MustPool(decode_layout);
      const PagedKv decode_kv{.layout = &decode_layout,
                              .region_bases = decode_pool.bases(),
                              .blocks = BlockList{{9, 1}, {2, 2}}};

      // Each layer moves as soon as the prefill wrote it (as KvTransfer
      // streams it), planned by the library and applied on the CPU.
      std::vector<int> layers_done;
      auto stream_layer = [&](int layer) -> absl::Status {
        layers_done.push_back(layer);
        absl::StatusOr<std::vector<TransferOp>> ops =
            PlanTransfer({.src_layout = &prefill_layout,
                          .src_blocks = prefill_kv.blocks,
                          .dst_layout = &decode_layout,
                          .dst_blocks = decode_kv.blocks,
                          .num_tokens = prompt.size(),
                          .layer_begin = static_cast<uint32_t>(layer),
                          .layer_end = static_cast<uint32_t>(layer + 1)});
        if (!ops.ok()) return ops.status();
        return ApplyPlanLocally(*ops,
                                ConstRegions(prefill_layout, prefill_pool),
                                Regions(decode_layout, decode_pool));
      };
      absl::StatusOr<int> first =
          model->Prefill(prompt, prefill_kv, stream_layer);
      INFO(first.status().ToString());
      REQUIRE(first.ok());
      CHECK(layers_done == std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7});

      std::vector<int> tokens = {*first};
      for (int pos = prompt_length;
           static_cast<int>(tokens.size()) < new_tokens; ++pos) {
        absl::StatusOr<int> next =
            model->DecodeStep(tokens.back(), pos, decode_kv);
        INFO(next.status().ToString());
        REQUIRE(next.ok());
        tokens.push_back(*next);
      }
      CHECK(tokens == *reference);
    }
  }
}

TEST_CASE("DecodeBatch gives each request exactly its tokens alone",
          "[cluster_model]") {
  for (MatmulBackend backend : Backends()) {
    ModelConfig config = TinyConfig();
    config.backend = backend;
    INFO("backend " << MatmulBackendName(backend));
    const std::unique_ptr<Model> model = MustCreate(config);
    // Three requests in three pools of different layouts and block sizes.
    const std::vector<KvLayout> layouts = {
        MustLayout(config, KvPreset::kSglangMha, 16, 16),
        MustLayout(config, KvPreset::kVllmFlashAttn, 16, 32),
        MustLayout(config, KvPreset::kFlowKvBlockMajor, 64, 4)};
    const std::vector<int> prompt_lengths = {5, 33, 18};
    const int new_tokens = 12;
    std::vector<HostKvPool> pools;
    std::vector<PagedKv> kvs;
    std::vector<std::vector<int>> references;
    for (size_t i = 0; i < layouts.size(); ++i) {
      pools.push_back(MustPool(layouts[i]));
      kvs.push_back(PagedKv{.layout = &layouts[i],
                            .region_bases = pools.back().bases(),
                            .blocks = BlockList{{2, 13}}});
      absl::StatusOr<std::vector<int>> reference =
          model->Generate(Prompt(prompt_lengths[i], 7 + i),
                          {.max_new_tokens = new_tokens, .stop_at_eos = false});
      REQUIRE(reference.ok());
      references.push_back(*reference);
    }
    std::vector<std::vector<int>> tokens(layouts.size());
    for (size_t i = 0; i < layouts.size(); ++i) {
      absl::StatusOr<int> first =
          model->Prefill(Prompt(prompt_lengths[i], 7 + i), kvs[i], nullptr);
      REQUIRE(first.ok());
      tokens[i].push_back(*first);
    }
    // Steps of the whole batch, then of requests 0 and 2 only.
    for (int step = 1; step < new_tokens; ++step) {
      std::vector<DecodeRequest> batch;
      std::vector<size_t> members;
      for (size_t i = 0; i < layouts.size(); ++i) {
        if (step > 6 && i == 1) continue;
        batch.push_back({.token = tokens[i].back(),
                         .pos = prompt_lengths[i] + step - 1,
                         .kv = &kvs[i]});
        members.push_back(i);
      }
      absl::StatusOr<std::vector<int>> next = model->DecodeBatch(batch);
      INFO(next.status().ToString());
      REQUIRE(next.ok());
      REQUIRE(next->size() == members.size());
      for (size_t m = 0; m < members.size(); ++m) {
        tokens[members[m]].push_back((*next)[m]);
      }
    }
    // Request 1 finishes alone.
    while (static_cast<int>(tokens[1].size()) < new_tokens) {
      absl::StatusOr<int> next = model->DecodeStep(
          tokens[1].back(),
          prompt_lengths[1] + static_cast<int>(tokens[1].size()) - 1, kvs[1]);
      REQUIRE(next.ok());
      tokens[1].push_back(*next);
    }
    for (size_t i = 0; i < layouts.size(); ++i) {
      INFO("request " << i);
      CHECK(tokens[i] == references[i]);
    }

    // A bad entry: an error naming it, nothing written.
    const std::string before = PoolBytes(layouts[0], pools[0]);
    const std::vector<DecodeRequest> bad = {
        {.token = 1, .pos = 30, .kv = &kvs[0]},
        {.token = 1, .pos = 300, .kv = &kvs[1]}};
    absl::StatusOr<std::vector<int>> error = model->DecodeBatch(bad);
    CHECK(error.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(error.status().message().find("batch[1]") != std::string::npos);
    const std::vector<DecodeRequest> null_kv = {{.token = 1, .pos = 3}};
    CHECK(model->DecodeBatch(null_kv).status().code() ==
          absl::StatusCode::kInvalidArgument);
    CHECK(PoolBytes(layouts[0], pools[0]) == before);
    absl::StatusOr<std::vector<int>> empty = model->DecodeBatch({});
    REQUIRE(empty.ok());
    CHECK(empty->empty());
  }
}

TEST_CASE("Requests decoded from many threads at once get their own tokens",
          "[cluster_model]") {
  const ModelConfig config = TinyConfig();
  const std::unique_ptr<Model> model = MustCreate(config);
  const int threads = 4;
  const int new_tokens = 20;
  std::vector<std::vector<int>> references;
  for (int t = 0; t < threads; ++t) {
    absl::StatusOr<std::vector<int>> reference = model->Generate(
        Prompt(10 + 7 * t, t), {.max_new_tokens = new_tokens,
                                .stop_at_eos = false,
                                .preset = KvPreset::kVllmFlashInfer,
                                .block_tokens = 8});
    REQUIRE(reference.ok());
    references.push_back(*reference);
  }
  // One pool shared by the threads, each request in its own blocks.
  const KvLayout layout = MustLayout(config, KvPreset::kSglangMha, 64, 4);
  HostKvPool pool = MustPool(layout);
  std::vector<std::vector<int>> tokens(threads);
  std::vector<absl::Status> errors(threads);
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      const PagedKv kv{.layout = &layout,
                       .region_bases = pool.bases(),
                       .blocks = BlockList{{static_cast<BlockId>(16 * t), 16}}};
      const std::vector<int> prompt = Prompt(10 + 7 * t, t);
      absl::StatusOr<int> token = model->Prefill(prompt, kv, nullptr);
      int pos = static_cast<int>(prompt.size());
      while (token.ok()) {
        tokens[t].push_back(*token);
        if (static_cast<int>(tokens[t].size()) == new_tokens) break;
        token = model->DecodeStep(*token, pos++, kv);
      }
      errors[t] = token.status();
    });
  }
  for (std::thread& worker : workers) worker.join();
  for (int t = 0; t < threads; ++t) {
    INFO("thread " << t << ": " << errors[t].ToString());
    CHECK(errors[t].ok());
    CHECK(tokens[t] == references[t]);
  }
}

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

TEST_CASE("Bad input is an error and leaves the pool untouched",
          "[cluster_model]") {
  const ModelConfig config = TinyConfig();
  const std::unique_ptr<Model> model = MustCreate(config);
  const KvLayout layout = MustLayout(config, KvPreset::kSglangMha, 8, 4);
  HostKvPool pool = MustPool(layout);
  const PagedKv kv{.layout = &layout,
                   .region_bases = pool.bases(),
                   .blocks = BlockList{{1, 3}}};  // 12 positions
  const std::vector<int> prompt = Prompt(6, 1);
  REQUIRE(model->Prefill(prompt, kv, nullptr).ok());
  const std::string before = PoolBytes(layout, pool);
  auto code = [](const auto& result) { return result.status().code(); };

  SECTION("tokens outside the vocabulary") {
    CHECK(code(model->Prefill(std::vector<int>{1, 257}, kv, nullptr)) ==
          absl::StatusCode::kInvalidArgument);
    CHECK(code(model->Prefill(std::vector<int>{-1}, kv, nullptr)) ==
          absl::StatusCode::kInvalidArgument);
    CHECK(code(model->DecodeStep(config.vocab, 6, kv)) ==
          absl::StatusCode::kInvalidArgument);
    CHECK(code(model->DecodeStep(-5, 6, kv)) ==
          absl::StatusCode::kInvalidArgument);
  }
  SECTION("positions past max_context or past the blocks") {
    CHECK(code(model->DecodeStep(1, config.max_context, kv)) ==
          absl::StatusCode::kInvalidArgument);
    CHECK(code(model->DecodeStep(1, -1, kv)) ==
          absl::StatusCode::kInvalidArgument);
    absl::StatusOr<int> past = model->DecodeStep(1, 12, kv);
    CHECK(code(past) == absl::StatusCode::kInvalidArgument);
    CHECK(past.status().message().find("12 positions") != std::string::npos);
    CHECK(code(model->Prefill(Prompt(13, 1), kv, nullptr)) ==
          absl::StatusCode::kInvalidArgument);
    CHECK(code(model->Prefill(Prompt(config.max_context + 1, 1), kv,
                              nullptr)) == absl::StatusCode::kInvalidArgument);
    CHECK(code(model->Prefill(std::vector<int>{}, kv, nullptr)) ==
          absl::StatusCode::kInvalidArgument);
  }
  SECTION("blocks outside the pool") {
    PagedKv outside = kv;
    outside.blocks = BlockList{{6, 3}};
    CHECK(code(model->Prefill(prompt, outside, nullptr)) ==
          absl::StatusCode::kOutOfRange);
    CHECK(code(model->DecodeStep(1, 0, outside)) ==
          absl::StatusCode::kOutOfRange);
  }
  SECTION("a layout that does not fit the model") {
    KvGeometry geometry = ModelKvGeometry(config, 8, 4);
    geometry.head_dim = 32;
    absl::StatusOr<KvLayout> wrong = KvLayout::SglangMha(geometry);
    REQUIRE(wrong.ok());
    HostKvPool wrong_pool = MustPool(*wrong);
    const PagedKv wrong_kv{.layout = &*wrong,
                           .region_bases = wrong_pool.bases(),
                           .blocks = BlockList{{1, 3}}};
    absl::StatusOr<int> result = model->Prefill(prompt, wrong_kv, nullptr);
    CHECK(code(result) == absl::StatusCode::kInvalidArgument);
    CHECK(result.status().message().find("head_dim") != std::string::npos);
    geometry = ModelKvGeometry(config, 8, 4);
    geometry.dtype_bytes = 2;
    absl::StatusOr<KvLayout> half = KvLayout::SglangMha(geometry);
    REQUIRE(half.ok());
    CHECK(CheckModelLayout(config, *half).code() ==
          absl::StatusCode::kInvalidArgument);
  }
  SECTION("region bases: missing, null, no layout") {
    PagedKv missing = kv;
    missing.region_bases.pop_back();
    CHECK(code(model->DecodeStep(1, 6, missing)) ==
          absl::StatusCode::kInvalidArgument);
    PagedKv null_base = kv;
    null_base.region_bases[0] = nullptr;
    CHECK(code(model->DecodeStep(1, 6, null_base)) ==
          absl::StatusCode::kInvalidArgument);
    PagedKv no_layout = kv;
    no_layout.layout = nullptr;
    CHECK(code(model->DecodeStep(1, 6, no_layout)) ==
          absl::StatusCode::kInvalidArgument);
  }
  SECTION("an on_layer error stops the prefill and is returned") {
    int calls = 0;
    absl::StatusOr<int> result = model->Prefill(prompt, kv, [&](int layer) {
      ++calls;
      return layer == 0 ? absl::OkStatus()
                        : absl::CancelledError("the transfer failed");
    });
    CHECK(code(result) == absl::StatusCode::kCancelled);
    CHECK(calls == 2);
  }
  SECTION("Generate past max_context, negative max_new_tokens") {
    CHECK(code(model->Generate(Prompt(250, 1), {.max_new_tokens = 8})) ==
          absl::StatusCode::kInvalidArgument);
    CHECK(code(model->Generate(prompt, {.max_new_tokens = -1})) ==
          absl::StatusCode::kInvalidArgument);
    CHECK(code(model->Generate(prompt,
                               {.max_new_tokens = 2, .block_tokens = 0})) ==
          absl::StatusCode::kInvalidArgument);
    absl::StatusOr<std::vector<int>> none =
        model->Generate(prompt, {.max_new_tokens = 0});
    REQUIRE(none.ok());
    CHECK(none->empty());
  }
  CHECK(PoolBytes(layout, pool) == before);
}

TEST_CASE("Invalid configs are rejected naming the field", "[cluster_model]") {
  auto message = [](const ModelConfig& c) {
    absl::StatusOr<std::unique_ptr<Model>> model = Model::Create(c);
    REQUIRE_FALSE(model.ok());
    return std::string(model.status().message());
  };
  ModelConfig c = TinyConfig();
  c.layers = 0;
  CHECK(message(c).find("layers") != std::string::npos);
  c = TinyConfig();
  c.d_model = 65;
  CHECK(message(c).find("d_model") != std::string::npos);
  c = TinyConfig();
  c.kv_heads = 3;
  CHECK(message(c).find("kv_heads") != std::string::npos);
  c = TinyConfig();
  c.vocab = 200;
  CHECK(message(c).find("vocab") != std::string::npos);
  c = TinyConfig();
  c.eos_token = 12;
  CHECK(message(c).find("eos_token") != std::string::npos);
  c = TinyConfig();
  c.max_context = (1 << 20) + 1;
  CHECK(message(c).find("max_context") != std::string::npos);
  c = TinyConfig();
  c.ffn_dim = 1 << 30;
  CHECK(message(c).find("floats") != std::string::npos);
  c = TinyConfig();
  c.norm_eps = 0;
  CHECK(message(c).find("norm_eps") != std::string::npos);
  if (!BlasAvailable()) {
    c = TinyConfig();
    c.backend = MatmulBackend::kBlas;
    CHECK(Model::Create(c).status().code() ==
          absl::StatusCode::kFailedPrecondition);
  }
  CHECK(ParseKvPreset("sglang_mha").value() == KvPreset::kSglangMha);
  CHECK(ParseKvPreset("nope").status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(
      MakeKvLayout(TinyConfig(), KvPreset::kSglangMha, 0, 16).status().code() ==
      absl::StatusCode::kInvalidArgument);
}

TEST_CASE("The byte tokenizer round-trips and skips EOS", "[cluster_model]") {
  const std::string text("bytes \x00\xff ok", 11);
  std::vector<int> tokens = EncodeBytes(text);
  REQUIRE(tokens.size() == 11);
  CHECK(tokens[7] == 255);
  tokens.push_back(256);
  absl::StatusOr<std::string> back = DecodeBytes(tokens);
  REQUIRE(back.ok());
  CHECK(*back == text);
  CHECK(DecodeBytes(std::vector<int>{1, 257}).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(DecodeBytes(std::vector<int>{-1}).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace flowkv::cluster
