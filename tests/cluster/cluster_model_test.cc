// SPDX-License-Identifier: Apache-2.0
// flowkv-cluster's model (tools/cluster/model/model.h): deterministic
// generation, and exactness: the disaggregated path (prefill into an SGLang
// pool with 16-token blocks, K/V moved layer by layer with PlanTransfer into
// a vLLM FlashAttention pool with 32-token blocks, decode there), a shared
// host pool, batches mixing pools, and threads all give exactly the
// colocated tokens.

#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "flowkv/kv_layout.h"
#include "flowkv/kv_pool_memory.h"
#include "flowkv/transfer_plan.h"
#include "tests/support/cluster_model_test_util.h"
#include "tools/cluster/model/model.h"

namespace flowkv::cluster::testing {
namespace {

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

TEST_CASE(
    "A PagedKv over a KvPoolMemory (shared host pool) decodes the "
    "colocated tokens",
    "[cluster_model]") {
  const ModelConfig config = TinyConfig();
  const std::unique_ptr<Model> model = MustCreate(config);
  const std::vector<int> prompt = Prompt(21, 2);
  absl::StatusOr<std::vector<int>> reference =
      model->Generate(prompt, {.max_new_tokens = 9, .stop_at_eos = false});
  REQUIRE(reference.ok());
  const KvLayout layout = MustLayout(config, KvPreset::kTrtllmBlockPool, 12, 8);
  std::vector<uint64_t> sizes;
  for (uint32_t r = 0; r < layout.num_regions(); ++r) {
    sizes.push_back(layout.region_bytes(r));
  }
  absl::StatusOr<std::unique_ptr<KvPoolMemory>> memory =
      MakeSharedHostPool(sizes);
  INFO(memory.status().ToString());
  REQUIRE(memory.ok());
  const PagedKv kv =
      PagedKv::FromPool(&layout, **memory, BlockList{{7, 2}, {1, 2}});
  REQUIRE(kv.region_bases.size() == layout.num_regions());
  absl::StatusOr<int> token = model->Prefill(prompt, kv, nullptr);
  REQUIRE(token.ok());
  std::vector<int> tokens = {*token};
  for (int pos = static_cast<int>(prompt.size()); tokens.size() < 9; ++pos) {
    token = model->DecodeStep(tokens.back(), pos, kv);
    REQUIRE(token.ok());
    tokens.push_back(*token);
  }
  CHECK(tokens == *reference);
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

}  // namespace
}  // namespace flowkv::cluster::testing
