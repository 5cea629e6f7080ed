// SPDX-License-Identifier: Apache-2.0
// ModelRunner over flowkv-cluster's CPU transformer (tools/cluster/model/):
// maps a ModelSpec to a ModelConfig, a node's pool to a PagedKv, and the
// model's int tokens to the control channel's u32 ones. A node's pool has
// the layout preset of its ModelSpec; the colocated reference uses FlowKV's
// block-major pool (any pool gives the same tokens).

#include "tools/cluster/model_runner.h"

#include "absl/strings/str_cat.h"
#include "tools/cluster/model/calibrate.h"
#include "tools/cluster/model/model.h"
#include "tools/cluster/model/model_config.h"
#include "tools/cluster/model/paged_kv.h"

namespace flowkv::cluster {
namespace {

class TransformerRunner final : public ModelRunner {
 public:
  TransformerRunner(const ModelSpec& spec, std::unique_ptr<Model> model)
      : spec_(spec), model_(std::move(model)) {}

  absl::StatusOr<KvLayout> MakeLayout(uint32_t num_blocks) const override {
    absl::StatusOr<KvPreset> preset = ParseKvPreset(spec_.kv_preset);
    if (!preset.ok()) return preset.status();
    return MakeKvLayout(model_->config(), *preset, num_blocks,
                        spec_.block_tokens);
  }
  uint64_t kv_bytes_per_token() const override {
    return model_->kv_bytes_per_token();
  }
  const ModelSpec& spec() const override { return spec_; }

  absl::StatusOr<uint32_t> Prefill(
      const std::vector<uint32_t>& prompt, const KvPool& pool,
      const BlockList& blocks,
      const std::function<void(uint32_t)>& on_layer) const override {
    const std::vector<int> tokens(prompt.begin(), prompt.end());
    absl::StatusOr<int> first = model_->Prefill(
        tokens, PagedKv{&pool.layout, pool.region_bases, blocks},
        [&](int layer) {
          if (on_layer) on_layer(static_cast<uint32_t>(layer));
          return absl::OkStatus();
        });
    if (!first.ok()) return first.status();
    return static_cast<uint32_t>(*first);
  }

  absl::StatusOr<uint32_t> DecodeStep(uint32_t token, uint32_t pos,
                                      const KvPool& pool,
                                      const BlockList& blocks) const override {
    absl::StatusOr<int> next =
        model_->DecodeStep(static_cast<int>(token), static_cast<int>(pos),
                           PagedKv{&pool.layout, pool.region_bases, blocks});
    if (!next.ok()) return next.status();
    return static_cast<uint32_t>(*next);
  }

  absl::StatusOr<std::vector<uint32_t>> DecodeBatch(
      const std::vector<BatchEntry>& batch, const KvPool& pool) const override {
    std::vector<PagedKv> kvs;
    kvs.reserve(batch.size());
    std::vector<DecodeRequest> requests;
    for (const BatchEntry& e : batch) {
      kvs.push_back(PagedKv{&pool.layout, pool.region_bases, *e.blocks});
      requests.push_back({.token = static_cast<int>(e.token),
                          .pos = static_cast<int>(e.pos),
                          .kv = &kvs.back()});
    }
    absl::StatusOr<std::vector<int>> next = model_->DecodeBatch(requests);
    if (!next.ok()) return next.status();
    return std::vector<uint32_t>(next->begin(), next->end());
  }

  absl::StatusOr<NodeCostModel> Calibrate() const override {
    CalibrationOptions options;
    options.block_tokens = spec_.block_tokens;
    const int context = static_cast<int>(spec_.max_context);
    // Short of the whole context and two runs each: seconds on a busy
    // machine, and the fit still spans the lengths the cluster replays.
    options.prompt_lengths = {context / 16, context / 8, context / 4,
                              context / 2};
    options.decode_steps = 4;
    options.repeats = 2;
    options.decode_contexts = {context / 16, context / 2,
                               context - options.decode_steps - 1};
    absl::StatusOr<ModelCalibration> c =
        flowkv::cluster::Calibrate(*model_, options);
    if (!c.ok()) return c.status();
    return c->cost;
  }

  absl::StatusOr<std::vector<uint32_t>> Generate(
      const std::vector<uint32_t>& prompt, uint32_t max_new) const override {
    const std::vector<int> tokens(prompt.begin(), prompt.end());
    absl::StatusOr<std::vector<int>> out =
        model_->Generate(tokens, {.max_new_tokens = static_cast<int>(max_new),
                                  .stop_at_eos = false,
                                  .preset = KvPreset::kFlowKvBlockMajor,
                                  .block_tokens = spec_.block_tokens});
    if (!out.ok()) return out.status();
    return std::vector<uint32_t>(out->begin(), out->end());
  }

 private:
  ModelSpec spec_;
  std::unique_ptr<Model> model_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ModelRunner>> ModelRunner::Create(
    const ModelSpec& spec) {
  if (spec.heads == 0 || spec.block_tokens == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("model spec: heads ", spec.heads, ", block_tokens ",
                     spec.block_tokens, " must be > 0"));
  }
  ModelConfig config;
  config.layers = static_cast<int>(spec.layers);
  config.d_model = static_cast<int>(spec.d_model);
  config.q_heads = static_cast<int>(spec.heads);
  config.kv_heads = static_cast<int>(spec.kv_heads);
  config.head_dim = static_cast<int>(spec.d_model / spec.heads);
  config.ffn_dim = spec.ffn_dim != 0
                       ? static_cast<int>(spec.ffn_dim)
                       : static_cast<int>((spec.d_model * 11 / 4 + 7) / 8 * 8);
  config.max_context = static_cast<int>(spec.max_context);
  config.seed = spec.seed;
  if (absl::StatusOr<KvPreset> preset = ParseKvPreset(spec.kv_preset);
      !preset.ok()) {
    return preset.status();
  }
  absl::StatusOr<std::unique_ptr<Model>> model = Model::Create(config);
  if (!model.ok()) return model.status();
  return std::make_unique<TransformerRunner>(spec, *std::move(model));
}

}  // namespace flowkv::cluster
