// SPDX-License-Identifier: Apache-2.0
// ModelRunner: the one door from flowkv-cluster's nodes to the model that
// computes tokens. A node owns a KV pool (memory + KvLayout) and hands the
// runner a request's blocks; the runner writes the request's K/V into them
// and reads them back, so any byte the KV transfer loses or misplaces
// changes the tokens.
//
//   auto model = ModelRunner::Create(spec);
//   uint32_t first = *model->Prefill(prompt, pool, blocks,
//                                    [&](uint32_t layer) { SendLayer(layer);
//                                    });
//   uint32_t next = *model->DecodeStep(first, prompt.size(), pool, blocks);
//
// Thread safety: const methods are thread-safe (the weights are read-only);
// the pool's blocks of one request must be used by one thread at a time.

#ifndef FLOWKV_TOOLS_CLUSTER_MODEL_RUNNER_H_
#define FLOWKV_TOOLS_CLUSTER_MODEL_RUNNER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "flowkv/block_list.h"
#include "flowkv/kv_layout.h"
#include "flowkv/scheduler.h"

namespace flowkv::cluster {

struct ModelSpec {
  uint32_t layers = 4;
  uint32_t d_model = 128;
  // Query heads; KV heads (grouped-query attention: kv_heads divides heads).
  uint32_t heads = 4;
  uint32_t kv_heads = 2;
  // SwiGLU hidden size (0: 2.75 x d_model rounded to a multiple of 8).
  uint32_t ffn_dim = 0;
  // Tokens a request may hold (prompt + generated).
  uint32_t max_context = 1024;
  // Tokens per KV block of a node's pool.
  uint32_t block_tokens = 16;
  // The pool's layout preset: flowkv_block_major, vllm_flash_attn,
  // vllm_flash_infer, sglang_mha or trtllm_block_pool. Nodes with different
  // presets exchange KV (KvTransfer converts); the tokens stay the same.
  std::string kv_preset = "flowkv_block_major";
  uint64_t seed = 1;
};

// A node's KV pool: `layout`, region r of which starts at region_bases[r].
struct KvPool {
  KvLayout layout;
  std::vector<void*> region_bases;
};

class ModelRunner {
 public:
  // InvalidArgument for a spec the model cannot run (0 layers, heads not
  // dividing d_model, ...).
  static absl::StatusOr<std::unique_ptr<ModelRunner>> Create(
      const ModelSpec& spec);
  virtual ~ModelRunner() = default;

  // The layout of a node's pool of `num_blocks` blocks for this model.
  virtual absl::StatusOr<KvLayout> MakeLayout(uint32_t num_blocks) const = 0;
  // KV bytes one token takes (all layers, K and V).
  virtual uint64_t kv_bytes_per_token() const = 0;
  // Prompt tokens are bytes: [0, 256).
  static constexpr uint32_t kPromptVocab = 256;
  virtual const ModelSpec& spec() const = 0;

  // Computes the prompt's K/V into `blocks` (positions [0, prompt.size()))
  // layer by layer, calling on_layer(l) once layer l's K/V is written, and
  // returns the first generated token. InvalidArgument for an empty prompt,
  // a token out of the vocabulary, a prompt over max_context or blocks too few.
  virtual absl::StatusOr<uint32_t> Prefill(
      const std::vector<uint32_t>& prompt, const KvPool& pool,
      const BlockList& blocks,
      const std::function<void(uint32_t layer)>& on_layer) const = 0;

  // Writes the K/V of `token` at position `pos` and returns the next token
  // (reads the K/V of positions [0, pos]).
  virtual absl::StatusOr<uint32_t> DecodeStep(
      uint32_t token, uint32_t pos, const KvPool& pool,
      const BlockList& blocks) const = 0;

  // One decode step of several requests of `pool` at once (the weights are
  // read once): the next token of each, in order, each bit-identical to its
  // DecodeStep alone. Errors as DecodeStep, for the first bad entry.
  struct BatchEntry {
    uint32_t token = 0;
    uint32_t pos = 0;
    const BlockList* blocks = nullptr;
  };
  virtual absl::StatusOr<std::vector<uint32_t>> DecodeBatch(
      const std::vector<BatchEntry>& batch, const KvPool& pool) const = 0;

  // Times Prefill and DecodeStep on this machine and fits the scheduler's
  // cost model (NodeCostModel, ms) to the timings: what the simulator needs
  // to model this cluster (--compare_sim). Takes seconds.
  virtual absl::StatusOr<NodeCostModel> Calibrate() const = 0;

  // The colocated reference: prefill then decode in a private pool;
  // `max_new` tokens, the first from the prefill.
  virtual absl::StatusOr<std::vector<uint32_t>> Generate(
      const std::vector<uint32_t>& prompt, uint32_t max_new) const = 0;
};

}  // namespace flowkv::cluster

#endif  // FLOWKV_TOOLS_CLUSTER_MODEL_RUNNER_H_
