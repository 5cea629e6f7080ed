// SPDX-License-Identifier: Apache-2.0
// ModelWeights: every parameter of flowkv-cluster's model, generated from
// ModelConfig::seed alone (splitmix64, one stream per tensor), so two
// processes given the same config hold bit-identical weights.
//
// Matrices are row-major [in][out] (y = x * W). Scales: entries uniform with
// standard deviation 1 / sqrt(in) (output projections of attention and MLP
// further by 1 / sqrt(2 * layers)); norm weights 1 +- 0.1; embeddings
// uniform in [-1, 1).
//
// Thread safety: immutable after MakeModelWeights (const access
// thread-safe).

#ifndef FLOWKV_TOOLS_CLUSTER_MODEL_MODEL_WEIGHTS_H_
#define FLOWKV_TOOLS_CLUSTER_MODEL_MODEL_WEIGHTS_H_

#include <vector>

#include "tools/cluster/model/model_config.h"
#include "tools/cluster/model/model_kernels.h"

namespace flowkv::cluster {

struct LayerWeights {
  kernels::FloatBuffer attn_norm;  // [d_model]
  // [d_model][q_heads * head_dim + 2 * kv_heads * head_dim]: Q, K, V
  // columns side by side.
  kernels::FloatBuffer wqkv;
  kernels::FloatBuffer wo;        // [q_heads * head_dim][d_model]
  kernels::FloatBuffer mlp_norm;  // [d_model]
  // [d_model][2 * ffn_dim]: gate columns, then up columns.
  kernels::FloatBuffer w_gate_up;
  kernels::FloatBuffer w_down;  // [ffn_dim][d_model]
};

struct ModelWeights {
  kernels::FloatBuffer embedding;  // [vocab][d_model]
  std::vector<LayerWeights> layers;
  kernels::FloatBuffer final_norm;  // [d_model]
  kernels::FloatBuffer lm_head;     // [d_model][vocab]
};

// The weights of `config`. REQUIRES: ValidateConfig(config).ok().
ModelWeights MakeModelWeights(const ModelConfig& config);

}  // namespace flowkv::cluster

#endif  // FLOWKV_TOOLS_CLUSTER_MODEL_MODEL_WEIGHTS_H_
