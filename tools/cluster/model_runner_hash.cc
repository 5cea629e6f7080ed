// SPDX-License-Identifier: Apache-2.0
// A stand-in ModelRunner until the CPU transformer (tools/cluster/model/)
// lands: a deterministic hash "model" with the same data flow. Layer l's
// K/V of a token mixes the token, its position and layer l-1's K/V read
// back from the pool; the next token hashes every K/V byte of the context
// through the pool's layout. Any byte lost, misplaced or stale in a
// transfer changes the output, as with the real model. Replaced by the
// adapter over flowkv::cluster::Model when that exists.

#include <cstring>

#include "absl/strings/str_cat.h"
#include "tools/cluster/model_runner.h"

namespace flowkv::cluster {
namespace {

uint64_t Mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  return x ^ (x >> 33);
}

class HashModel final : public ModelRunner {
 public:
  explicit HashModel(const ModelSpec& spec) : spec_(spec) {}

  absl::StatusOr<KvLayout> MakeLayout(uint32_t num_blocks) const override {
    return KvLayout::Create({.geometry = Geometry(num_blocks)});
  }
  uint64_t kv_bytes_per_token() const override {
    return 2ull * spec_.layers * spec_.d_model * 2;
  }
  uint32_t vocab() const { return kPromptVocab; }

  KvGeometry Geometry(uint32_t num_blocks) const {
    return {.num_layers = spec_.layers,
            .num_blocks = num_blocks,
            .block_tokens = spec_.block_tokens,
            .kv_heads = spec_.heads,
            .head_dim = spec_.d_model / spec_.heads,
            .dtype_bytes = 2};
  }
  const ModelSpec& spec() const override { return spec_; }

  absl::StatusOr<uint32_t> Prefill(
      const std::vector<uint32_t>& prompt, const KvPool& pool,
      const BlockList& blocks,
      const std::function<void(uint32_t)>& on_layer) const override {
    if (absl::Status s = Check(prompt.size(), prompt, pool, blocks); !s.ok()) {
      return s;
    }
    for (uint32_t l = 0; l < spec_.layers; ++l) {
      for (uint32_t pos = 0; pos < prompt.size(); ++pos) {
        WriteKv(pool, blocks, prompt[pos], pos, l);
      }
      if (on_layer) on_layer(l);
    }
    return Next(pool, blocks, prompt.size());
  }

  absl::StatusOr<uint32_t> DecodeStep(uint32_t token, uint32_t pos,
                                      const KvPool& pool,
                                      const BlockList& blocks) const override {
    if (token >= vocab()) {
      return absl::InvalidArgumentError(
          absl::StrCat("token ", token, " is not below vocab ", vocab()));
    }
    if (pos + 1 > spec_.max_context ||
        blocks.num_blocks() * spec_.block_tokens < pos + 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "position ", pos, " is past the context or the request's blocks"));
    }
    for (uint32_t l = 0; l < spec_.layers; ++l) {
      WriteKv(pool, blocks, token, pos, l);
    }
    return Next(pool, blocks, pos + 1);
  }

  absl::StatusOr<std::vector<uint32_t>> Generate(
      const std::vector<uint32_t>& prompt, uint32_t max_new) const override {
    const uint32_t tokens = static_cast<uint32_t>(prompt.size()) + max_new;
    const uint32_t num_blocks =
        (tokens + spec_.block_tokens - 1) / spec_.block_tokens;
    absl::StatusOr<KvLayout> layout =
        KvLayout::Create({.geometry = Geometry(num_blocks)});
    if (!layout.ok()) return layout.status();
    std::vector<uint8_t> memory(layout->total_bytes());
    KvPool pool{*layout, {memory.data()}};
    BlockList blocks;
    blocks.Append(0, num_blocks);
    std::vector<uint32_t> out;
    absl::StatusOr<uint32_t> token = Prefill(prompt, pool, blocks, nullptr);
    uint32_t pos = static_cast<uint32_t>(prompt.size());
    while (token.ok()) {
      out.push_back(*token);
      if (out.size() >= max_new) return out;
      token = DecodeStep(*token, pos++, pool, blocks);
    }
    return token.status();
  }

 private:
  absl::Status Check(size_t n, const std::vector<uint32_t>& prompt,
                     const KvPool& pool, const BlockList& blocks) const {
    if (n == 0) return absl::InvalidArgumentError("empty prompt");
    if (n > spec_.max_context) {
      return absl::InvalidArgumentError(absl::StrCat(
          "prompt of ", n, " tokens is over max_context ", spec_.max_context));
    }
    if (blocks.num_blocks() * spec_.block_tokens < n) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt of ", n, " tokens needs more than ",
                       blocks.num_blocks(), " blocks"));
    }
    for (uint32_t t : prompt) {
      if (t >= vocab()) {
        return absl::InvalidArgumentError(
            absl::StrCat("token ", t, " is not below vocab ", vocab()));
      }
    }
    (void)pool;
    return absl::OkStatus();
  }

  uint8_t* At(const KvPool& pool, const BlockList& blocks, uint32_t pos,
              uint32_t layer, KvPart part, uint32_t head) const {
    const BlockId block = blocks.BlockAt(pos / spec_.block_tokens);
    return static_cast<uint8_t*>(pool.region_bases[0]) +
           pool.layout
               .ElementAddress(layer, part, block, pos % spec_.block_tokens,
                               head)
               .offset;
  }

  void WriteKv(const KvPool& pool, const BlockList& blocks, uint32_t token,
               uint32_t pos, uint32_t layer) const {
    const uint32_t head_dim = spec_.d_model / spec_.heads;
    // The previous layer's K of this token feeds this layer.
    uint64_t prev = spec_.seed;
    if (layer > 0) {
      for (uint32_t h = 0; h < spec_.heads; ++h) {
        const uint8_t* k = At(pool, blocks, pos, layer - 1, KvPart::kKey, h);
        uint64_t word;
        for (uint32_t i = 0; i + 8 <= 2 * head_dim; i += 8) {
          std::memcpy(&word, k + i, 8);
          prev = Mix(prev ^ word);
        }
      }
    }
    for (KvPart part : {KvPart::kKey, KvPart::kValue}) {
      for (uint32_t h = 0; h < spec_.heads; ++h) {
        uint8_t* v = At(pool, blocks, pos, layer, part, h);
        for (uint32_t d = 0; d < head_dim; ++d) {
          const uint16_t x = static_cast<uint16_t>(
              Mix(prev + token * 1000003ULL + pos * 8191 + layer * 131 +
                  static_cast<int>(part) * 17 + h * 7 + d));
          std::memcpy(v + 2 * d, &x, 2);
        }
      }
    }
  }

  uint32_t Next(const KvPool& pool, const BlockList& blocks,
                uint64_t tokens) const {
    const uint32_t head_bytes = 2 * (spec_.d_model / spec_.heads);
    uint64_t h = tokens;
    for (uint32_t pos = 0; pos < tokens; ++pos) {
      for (uint32_t l = 0; l < spec_.layers; ++l) {
        for (KvPart part : {KvPart::kKey, KvPart::kValue}) {
          for (uint32_t head = 0; head < spec_.heads; ++head) {
            const uint8_t* v = At(pool, blocks, pos, l, part, head);
            uint64_t word;
            for (uint32_t i = 0; i + 8 <= head_bytes; i += 8) {
              std::memcpy(&word, v + i, 8);
              h = Mix(h ^ word);
            }
          }
        }
      }
    }
    return static_cast<uint32_t>(h % vocab());
  }

  ModelSpec spec_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ModelRunner>> ModelRunner::Create(
    const ModelSpec& spec) {
  if (spec.layers == 0 || spec.heads == 0 || spec.d_model % spec.heads != 0 ||
      (spec.d_model / spec.heads) % 4 != 0 || spec.block_tokens == 0 ||
      spec.max_context == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model spec: layers ", spec.layers, ", d_model ", spec.d_model,
        ", heads ", spec.heads,
        " (need layers > 0, heads dividing d_model into a multiple of 4), "
        "block_tokens ",
        spec.block_tokens, ", max_context ", spec.max_context));
  }
  return std::make_unique<HashModel>(spec);
}

}  // namespace flowkv::cluster
