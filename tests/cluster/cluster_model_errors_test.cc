// SPDX-License-Identifier: Apache-2.0
// flowkv-cluster's model on bad input: tokens outside the vocabulary,
// positions past max_context or the request's blocks, blocks outside the
// pool, layouts that do not fit, missing region bases, a failing on_layer,
// invalid configs; each an absl::Status that leaves the pool untouched.
// And the byte tokenizer.

#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "flowkv/kv_layout.h"
#include "tests/support/cluster_model_test_util.h"
#include "tools/cluster/model/model.h"
#include "tools/cluster/model/tokenizer.h"

namespace flowkv::cluster::testing {
namespace {

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
}  // namespace flowkv::cluster::testing
