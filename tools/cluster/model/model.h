// SPDX-License-Identifier: Apache-2.0
// Model: flowkv-cluster's decoder-only transformer on the CPU (the shape is
// ModelConfig's), with paged attention: prefill writes every prompt token's
// keys and values into a KV pool through its KvLayout and the request's
// BlockList (PagedKv), and each decode step appends one token's K/V and
// attends over the pool in place, in whatever layout and block size that
// pool has. Greedy decoding.
//
// Disaggregated use (flowkv-cluster's nodes; only the public flowkv API):
//
//   auto model = flowkv::cluster::Model::Create(config);      // both nodes
//   // Prefill node, SGLang pool with 16-token blocks:
//   absl::StatusOr<int> first = (*model)->Prefill(prompt, prefill_kv,
//       [&](int layer) { return StreamLayer(layer); });   // KvTransfer
//   // Decode node, vLLM pool with 32-token blocks, after the KV arrived:
//   int token = *first;
//   for (int pos = prompt.size(); pos < prompt.size() + n - 1; ++pos)
//     token = *(*model)->DecodeStep(token, pos, decode_kv);
//
// Colocated reference: Generate() runs the same Prefill and DecodeStep in
// one process on one pool.
//
// Exactness. The generated tokens of a request are a function of the
// config, the prompt and the MatmulBackend only: K/V bytes are copied
// bit-exactly between pools, and every kernel computes each value with a
// fixed sequence of float operations independent of where its inputs are
// stored (model_kernels.h, "Exactness"); attention reads K/V in position
// order. Prefill of a prompt is always one call (a fixed matrix shape, the
// config's backend); decode always uses the loop products, whose result for
// a row does not depend on the other rows, so a request decodes the same
// alone (DecodeStep) or in any batch (DecodeBatch). So a request served by a
// prefill node and a decode node with different pool layouts yields exactly
// the tokens of Generate() on the same build and backend.
//
// Thread safety: const methods thread-safe (each call uses its own
// scratch); concurrent calls must not write the same request's KV.

#ifndef FLOWKV_TOOLS_CLUSTER_MODEL_MODEL_H_
#define FLOWKV_TOOLS_CLUSTER_MODEL_MODEL_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "tools/cluster/model/model_config.h"
#include "tools/cluster/model/model_weights.h"
#include "tools/cluster/model/paged_kv.h"

namespace flowkv::cluster {

// One request's decode step in a batch (Model::DecodeBatch).
struct DecodeRequest {
  // The last generated token, and its position (= tokens before it).
  int token = 0;
  int pos = 0;
  // The request's KV (borrowed for the call).
  const PagedKv* kv = nullptr;
};

// Called by Prefill once layer `layer`'s K/V of every prompt token is in the
// pool, before later layers are computed (layers 0, 1, ... in order). A
// non-OK status stops the prefill and is returned by it.
using LayerDone = std::function<absl::Status(int layer)>;

struct GenerateOptions {
  // Tokens to generate (the first comes from the prefill). Default: 16.
  int max_new_tokens = 16;
  // Stop after emitting eos_token (it is the last token returned).
  // Default: true.
  bool stop_at_eos = true;
  // The pool of the colocated run. Default: FlowKV block-major, 16-token
  // blocks (any pool gives the same tokens).
  KvPreset preset = KvPreset::kFlowKvBlockMajor;
  uint32_t block_tokens = 16;
};

class Model {
 public:
  // Validates `config` (ValidateConfig's errors) and generates the weights.
  // kBlas/kAuto with BLAS: OpenBLAS is limited to one thread.
  static absl::StatusOr<std::unique_ptr<Model>> Create(
      const ModelConfig& config);

  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  // The backend kAuto resolved to (prefill's matrix products; decode
  // always runs the loops).
  MatmulBackend backend() const { return backend_; }

  // Runs `prompt` (positions 0..n-1), writing each layer's K/V of every
  // prompt token into `kv` and then calling on_layer(layer) (may be empty).
  // Returns the first generated token (greedy). Errors, before anything is
  // written: InvalidArgument for an empty prompt, a token outside [0,
  // vocab) (naming its index), a prompt longer than max_context, or a `kv`
  // PagedKvView::Create rejects (too few blocks for n positions, a layout
  // that does not fit the model, ...); OutOfRange for a block outside the
  // pool. An error of on_layer is returned as is (layers before it were
  // written).
  absl::StatusOr<int> Prefill(absl::Span<const int> prompt, const PagedKv& kv,
                              const LayerDone& on_layer) const;

  // One decode step: appends `token`'s K/V at position `pos` to `kv`,
  // attends over positions [0, pos] (0..pos-1 must hold the request's K/V,
  // from Prefill and earlier steps, possibly in another pool moved here
  // bit-exactly) and returns the next token (greedy). Errors, before
  // anything is written: InvalidArgument for a token outside [0, vocab), pos
  // < 0 or >= max_context, or a `kv` that cannot hold pos + 1 positions;
  // OutOfRange for a block outside the pool.
  absl::StatusOr<int> DecodeStep(int token, int pos, const PagedKv& kv) const;

  // One decode step of several requests at once (the weights are read once
  // for the batch): the next token of each, in order. Each request's result
  // is bit-identical to DecodeStep alone, whatever else is in the batch.
  // Errors as DecodeStep, naming the entry ("batch[2]: ..."), before
  // anything is written; a null kv is InvalidArgument. Empty batch: empty
  // result. REQUIRES: no two entries write the same pool slot.
  absl::StatusOr<std::vector<int>> DecodeBatch(
      absl::Span<const DecodeRequest> batch) const;

  // As Prefill / DecodeStep, returning the vocab logits of the last
  // position instead of the greedy token (tests, sampling).
  absl::StatusOr<std::vector<float>> PrefillLogits(
      absl::Span<const int> prompt, const PagedKv& kv,
      const LayerDone& on_layer) const;
  absl::StatusOr<std::vector<float>> DecodeLogits(int token, int pos,
                                                  const PagedKv& kv) const;
  absl::StatusOr<std::vector<std::vector<float>>> DecodeBatchLogits(
      absl::Span<const DecodeRequest> batch) const;

  // The colocated reference: Prefill, then DecodeStep until max_new_tokens
  // tokens (or EOS), in a pool of this process. Errors as Prefill, plus
  // InvalidArgument when max_new_tokens < 0, block_tokens is 0, or prompt
  // + max_new_tokens - 1 positions exceed max_context.
  absl::StatusOr<std::vector<int>> Generate(
      absl::Span<const int> prompt, const GenerateOptions& options) const;

  // KV bytes one token takes (all layers, K and V).
  uint64_t kv_bytes_per_token() const;

 private:
  Model(const ModelConfig& config, MatmulBackend backend);

  // One row of a forward pass: a position of a request and its pool.
  struct Row {
    const PagedKvView* view = nullptr;
    int pos = 0;
  };
  struct Scratch;
  // One layer over `rows` (the residual stream scratch->x [rows][d_model]),
  // in two halves: WriteKv computes each row's Q, K, V (RoPE applied) and
  // writes its K/V into its pool; FinishLayer attends each row over
  // positions [0, pos] of its pool (causal; every key and value read from
  // the pool), then runs the MLP. `blas`: the matrix products' backend.
  void WriteKv(int layer, absl::Span<const Row> rows, bool blas,
               Scratch* scratch) const;
  void FinishLayer(int layer, absl::Span<const Row> rows, bool blas,
                   Scratch* scratch) const;
  // The logits of `rows` rows of the residual stream x [rows][d_model].
  std::vector<std::vector<float>> Logits(const float* x, int rows,
                                         bool blas) const;
  bool use_blas() const { return backend_ == MatmulBackend::kBlas; }

  ModelConfig config_;
  MatmulBackend backend_;
  ModelWeights weights_;
  // RoPE: cos/sin of position p, pair i at [p * head_dim / 2 + i].
  std::vector<float> rope_cos_;
  std::vector<float> rope_sin_;
};

}  // namespace flowkv::cluster

#endif  // FLOWKV_TOOLS_CLUSTER_MODEL_MODEL_H_
