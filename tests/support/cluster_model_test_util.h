// SPDX-License-Identifier: Apache-2.0
// Helpers shared by the tests of flowkv-cluster's model (tests/cluster/): a
// tiny model config, checked construction of models, layouts and host pools,
// the backends this build has, prompts, and a pool's regions and bytes.
#ifndef FLOWKV_TESTS_SUPPORT_CLUSTER_MODEL_TEST_UTIL_H_
#define FLOWKV_TESTS_SUPPORT_CLUSTER_MODEL_TEST_UTIL_H_

#include <memory>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/types/span.h"
#include "flowkv/kv_layout.h"
#include "tools/cluster/model/model.h"
#include "tools/cluster/model/tokenizer.h"

namespace flowkv::cluster::testing {

// A small model for the slow checks (dense reference, many errors).
inline ModelConfig TinyConfig() {
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

inline std::unique_ptr<Model> MustCreate(const ModelConfig& config) {
  absl::StatusOr<std::unique_ptr<Model>> model = Model::Create(config);
  INFO(model.status().ToString());
  REQUIRE(model.ok());
  return *std::move(model);
}

inline KvLayout MustLayout(const ModelConfig& config, KvPreset preset,
                           uint32_t num_blocks, uint32_t block_tokens) {
  absl::StatusOr<KvLayout> layout =
      MakeKvLayout(config, preset, num_blocks, block_tokens);
  INFO(layout.status().ToString());
  REQUIRE(layout.ok());
  return *std::move(layout);
}

inline HostKvPool MustPool(const KvLayout& layout) {
  absl::StatusOr<HostKvPool> pool = HostKvPool::Create(layout);
  INFO(pool.status().ToString());
  REQUIRE(pool.ok());
  return *std::move(pool);
}

inline std::vector<MatmulBackend> Backends() {
  std::vector<MatmulBackend> backends = {MatmulBackend::kLoops};
  if (BlasAvailable()) backends.push_back(MatmulBackend::kBlas);
  return backends;
}

inline std::vector<int> Prompt(int length, int salt) {
  std::vector<int> prompt = EncodeBytes(
      "The quick brown fox jumps over the lazy dog; pack my box with five "
      "dozen liquor jugs. ");
  prompt.resize(length, 0);
  for (int i = 0; i < length; ++i) prompt[i] = (prompt[i] + salt * i) % 256;
  return prompt;
}

inline std::vector<absl::Span<const uint8_t>> ConstRegions(
    const KvLayout& layout, const HostKvPool& pool) {
  std::vector<absl::Span<const uint8_t>> regions;
  for (uint32_t r = 0; r < layout.num_regions(); ++r) {
    regions.emplace_back(static_cast<const uint8_t*>(pool.bases()[r]),
                         layout.region_bytes(r));
  }
  return regions;
}

inline std::vector<absl::Span<uint8_t>> Regions(const KvLayout& layout,
                                                const HostKvPool& pool) {
  std::vector<absl::Span<uint8_t>> regions;
  for (uint32_t r = 0; r < layout.num_regions(); ++r) {
    regions.emplace_back(static_cast<uint8_t*>(pool.bases()[r]),
                         layout.region_bytes(r));
  }
  return regions;
}

inline std::string PoolBytes(const KvLayout& layout, const HostKvPool& pool) {
  std::string bytes;
  for (absl::Span<const uint8_t> region : ConstRegions(layout, pool)) {
    bytes.append(reinterpret_cast<const char*>(region.data()), region.size());
  }
  return bytes;
}

}  // namespace flowkv::cluster::testing

#endif  // FLOWKV_TESTS_SUPPORT_CLUSTER_MODEL_TEST_UTIL_H_
