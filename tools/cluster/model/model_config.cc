// SPDX-License-Identifier: Apache-2.0
// ModelConfig validation, the model's KV geometry and the pool presets
// (model_config.h). Pure functions over the public KvLayout API.

#include "tools/cluster/model/model_config.h"

#include <array>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace flowkv::cluster {
namespace {

constexpr int kMaxContextLimit = 1 << 20;
// 4 GiB of float32.
constexpr double kMaxModelFloats = double{1 << 30};

constexpr std::array<std::pair<KvPreset, std::string_view>, 5> kPresetNames{{
    {KvPreset::kFlowKvBlockMajor, "flowkv_block_major"},
    {KvPreset::kVllmFlashAttn, "vllm_flash_attn"},
    {KvPreset::kVllmFlashInfer, "vllm_flash_infer"},
    {KvPreset::kSglangMha, "sglang_mha"},
    {KvPreset::kTrtllmBlockPool, "trtllm_block_pool"},
}};

absl::Status Positive(std::string_view field, int value) {
  if (value <= 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("ModelConfig.%s: %d, must be positive", field, value));
  }
  return absl::OkStatus();
}

absl::Status Match(std::string_view field, uint32_t layout_value,
                   uint32_t model_value) {
  if (layout_value == model_value) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrFormat(
      "KV layout does not fit the model: %s is %u in the layout, %u in the "
      "model",
      field, layout_value, model_value));
}

}  // namespace

std::string_view MatmulBackendName(MatmulBackend backend) {
  switch (backend) {
    case MatmulBackend::kAuto:
      return BlasAvailable() ? "blas" : "loops";
    case MatmulBackend::kBlas:
      return "blas";
    case MatmulBackend::kLoops:
      return "loops";
  }
  return "unknown";
}

absl::Status ValidateConfig(const ModelConfig& c) {
  for (auto [field, value] :
       {std::pair<std::string_view, int>{"layers", c.layers},
        {"d_model", c.d_model},
        {"q_heads", c.q_heads},
        {"kv_heads", c.kv_heads},
        {"head_dim", c.head_dim},
        {"ffn_dim", c.ffn_dim},
        {"vocab", c.vocab},
        {"max_context", c.max_context}}) {
    if (absl::Status s = Positive(field, value); !s.ok()) return s;
  }
  if (int64_t{c.q_heads} * c.head_dim != c.d_model) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ModelConfig: q_heads * head_dim = %d * %d must equal d_model %d",
        c.q_heads, c.head_dim, c.d_model));
  }
  if (c.q_heads % c.kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ModelConfig: q_heads %d is not a multiple of kv_heads %d", c.q_heads,
        c.kv_heads));
  }
  if (c.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ModelConfig.head_dim: %d, must be even (RoPE rotates pairs)",
        c.head_dim));
  }
  if (c.vocab < 257) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ModelConfig.vocab: %d, must be at least 257 (256 bytes and EOS)",
        c.vocab));
  }
  if (c.eos_token < 256 || c.eos_token >= c.vocab) {
    return absl::InvalidArgumentError(
        absl::StrFormat("ModelConfig.eos_token: %d, must be in [256, %d)",
                        c.eos_token, c.vocab));
  }
  if (c.max_context > kMaxContextLimit) {
    return absl::InvalidArgumentError(
        absl::StrFormat("ModelConfig.max_context: %d, at most %d",
                        c.max_context, kMaxContextLimit));
  }
  // The floats Model::Create allocates: weights and RoPE tables.
  const double d = c.d_model, hd = c.head_dim;
  const double floats =
      2.0 * c.vocab * d + d +
      c.layers * (d * (c.q_heads + 2.0 * c.kv_heads) * hd + c.q_heads * hd * d +
                  3.0 * d * c.ffn_dim + 2.0 * d) +
      double{1.0} * c.max_context * hd;
  if (floats > kMaxModelFloats) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ModelConfig: %.0f floats of weights and tables, at most %.0f "
        "(layers, d_model, ffn_dim, vocab or max_context too large)",
        floats, kMaxModelFloats));
  }
  if (!(c.rope_theta > 1.0)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ModelConfig.rope_theta: %g, must be above 1", c.rope_theta));
  }
  if (!(c.norm_eps > 0.0f)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ModelConfig.norm_eps: %g, must be positive", c.norm_eps));
  }
  if (c.backend == MatmulBackend::kBlas && !BlasAvailable()) {
    return absl::FailedPreconditionError(
        "ModelConfig.backend: kBlas, but this build has no BLAS "
        "(configure with FLOWKV_WITH_BLAS=ON and libopenblas-dev)");
  }
  if (c.backend != MatmulBackend::kAuto && c.backend != MatmulBackend::kBlas &&
      c.backend != MatmulBackend::kLoops) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ModelConfig.backend: unknown value ", static_cast<int>(c.backend)));
  }
  return absl::OkStatus();
}

KvGeometry ModelKvGeometry(const ModelConfig& config, uint32_t num_blocks,
                           uint32_t block_tokens) {
  return KvGeometry{.num_layers = static_cast<uint32_t>(config.layers),
                    .num_blocks = num_blocks,
                    .block_tokens = block_tokens,
                    .kv_heads = static_cast<uint32_t>(config.kv_heads),
                    .head_dim = static_cast<uint32_t>(config.head_dim),
                    .dtype_bytes = kKvDtypeBytes,
                    .num_parts = 2};
}

absl::Status CheckModelLayout(const ModelConfig& config,
                              const KvLayout& layout) {
  const KvGeometry& g = layout.geometry();
  const KvGeometry want = ModelKvGeometry(config, 0, 0);
  if (absl::Status s = Match("num_layers", g.num_layers, want.num_layers);
      !s.ok())
    return s;
  if (absl::Status s = Match("num_parts", g.num_parts, want.num_parts); !s.ok())
    return s;
  if (absl::Status s = Match("kv_heads", g.kv_heads, want.kv_heads); !s.ok())
    return s;
  if (absl::Status s = Match("head_dim", g.head_dim, want.head_dim); !s.ok())
    return s;
  return Match("dtype_bytes", g.dtype_bytes, want.dtype_bytes);
}

std::string_view KvPresetName(KvPreset preset) {
  for (const auto& [p, name] : kPresetNames) {
    if (p == preset) return name;
  }
  return "unknown";
}

absl::StatusOr<KvPreset> ParseKvPreset(std::string_view name) {
  std::string known;
  for (const auto& [p, preset_name] : kPresetNames) {
    if (preset_name == name) return p;
    absl::StrAppend(&known, known.empty() ? "" : ", ",
                    std::string(preset_name));
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown KV layout preset '",
                                                 std::string(name),
                                                 "' (known: ", known, ")"));
}

absl::StatusOr<KvLayout> MakeKvLayout(const ModelConfig& config,
                                      KvPreset preset, uint32_t num_blocks,
                                      uint32_t block_tokens) {
  if (absl::Status s = ValidateConfig(config); !s.ok()) return s;
  const KvGeometry geometry = ModelKvGeometry(config, num_blocks, block_tokens);
  switch (preset) {
    case KvPreset::kFlowKvBlockMajor:
      return KvLayout::FlowKvBlockMajor(geometry);
    case KvPreset::kVllmFlashAttn:
      return KvLayout::VllmFlashAttn(geometry);
    case KvPreset::kVllmFlashInfer:
      return KvLayout::VllmFlashInfer(geometry);
    case KvPreset::kSglangMha:
      return KvLayout::SglangMha(geometry);
    case KvPreset::kTrtllmBlockPool:
      return KvLayout::TrtllmBlockPool(geometry);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("MakeKvLayout: unknown preset ", static_cast<int>(preset)));
}

}  // namespace flowkv::cluster
