// SPDX-License-Identifier: Apache-2.0
// Seeded weight generation (model_weights.h). Integer arithmetic only up to
// the final scale, so the weights are the same on every machine.

#include "tools/cluster/model/model_weights.h"

#include <cmath>
#include <cstdint>

namespace flowkv::cluster {
namespace {

uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// A tensor of `count` values uniform in [center - half_width, center +
// half_width), from stream `stream` of the seed.
kernels::FloatBuffer Uniform(uint64_t seed, uint64_t stream, size_t count,
                             float center, float half_width) {
  uint64_t state = seed ^ (stream * 0xd1b54a32d192ed03ULL);
  SplitMix64(&state);
  kernels::FloatBuffer values(count);
  for (size_t i = 0; i < count; ++i) {
    // 24 random bits -> [-1, 1) exactly representable in float.
    const float unit =
        static_cast<float>(static_cast<int32_t>(SplitMix64(&state) >> 40) -
                           (1 << 23)) /
        static_cast<float>(1 << 23);
    values[i] = center + half_width * unit;
  }
  return values;
}

// Half-width of a uniform distribution with standard deviation `std`.
float HalfWidth(double std) { return static_cast<float>(std * std::sqrt(3.0)); }

}  // namespace

ModelWeights MakeModelWeights(const ModelConfig& c) {
  const size_t d = c.d_model;
  const size_t qkv =
      static_cast<size_t>(c.q_heads + 2 * c.kv_heads) * c.head_dim;
  const size_t attn_out = static_cast<size_t>(c.q_heads) * c.head_dim;
  const size_t ffn = c.ffn_dim;
  const double residual_scale = 1.0 / std::sqrt(2.0 * c.layers);
  uint64_t stream = 0;
  ModelWeights w;
  w.embedding = Uniform(c.seed, ++stream, c.vocab * d, 0.0f, 1.0f);
  for (int l = 0; l < c.layers; ++l) {
    LayerWeights layer;
    layer.attn_norm = Uniform(c.seed, ++stream, d, 1.0f, 0.1f);
    layer.wqkv =
        Uniform(c.seed, ++stream, d * qkv, 0.0f, HalfWidth(1.0 / std::sqrt(d)));
    layer.wo = Uniform(c.seed, ++stream, attn_out * d, 0.0f,
                       HalfWidth(residual_scale / std::sqrt(attn_out)));
    layer.mlp_norm = Uniform(c.seed, ++stream, d, 1.0f, 0.1f);
    layer.w_gate_up = Uniform(c.seed, ++stream, d * 2 * ffn, 0.0f,
                              HalfWidth(1.0 / std::sqrt(d)));
    layer.w_down = Uniform(c.seed, ++stream, ffn * d, 0.0f,
                           HalfWidth(residual_scale / std::sqrt(ffn)));
    w.layers.push_back(std::move(layer));
  }
  w.final_norm = Uniform(c.seed, ++stream, d, 1.0f, 0.1f);
  w.lm_head = Uniform(c.seed, ++stream, d * c.vocab, 0.0f,
                      HalfWidth(2.0 / std::sqrt(d)));
  return w;
}

}  // namespace flowkv::cluster
