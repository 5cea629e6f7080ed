// SPDX-License-Identifier: Apache-2.0
// KvLayout's named presets and the KvLayoutSpec orders: each is a dense
// tensor order handed to BuildDense, which computes the strides and lets
// MakeLayout (layout_validate.cc) validate the table like any other.
// docs/layouts.md lists the engine sources each preset was checked against.

#include <array>
#include <utility>

#include "absl/strings/str_format.h"
#include "lib/layout/kv_layout_internal.h"

namespace flowkv {
namespace internal {

absl::StatusOr<KvLayout> BuildDense(const KvGeometry& g, std::string name,
                                    const std::array<Dim, 5>& order,
                                    int region_dims) {
  if (absl::Status s = CheckGeometry(g, "KvLayout"); !s.ok()) return s;
  const std::array<uint64_t, 5> extent = {
      g.num_layers, g.num_blocks, g.num_parts, g.kv_heads, g.block_tokens};
  std::array<uint64_t, 5> stride = {0, 0, 0, 0, 0};
  std::array<uint64_t, 5> radix = {0, 0, 0, 0, 0};  // Region index weight.
  const std::array<Dim, 5>& dims = order;
  // Bytes: innermost first. CheckGeometry proved the whole product fits.
  uint64_t bytes = uint64_t{g.head_dim} * g.dtype_bytes;
  for (int i = static_cast<int>(dims.size()) - 1; i >= region_dims; --i) {
    const auto d = static_cast<size_t>(dims[i]);
    stride[d] = bytes;
    bytes *= extent[d];
  }
  uint64_t regions = 1;
  for (int i = region_dims - 1; i >= 0; --i) {
    const auto d = static_cast<size_t>(dims[i]);
    radix[d] = regions;
    regions *= extent[d];
  }
  const auto layer = static_cast<size_t>(Dim::kLayer);
  const auto part = static_cast<size_t>(Dim::kPart);
  std::vector<KvTensor> tensors;
  tensors.reserve(uint64_t{g.num_layers} * g.num_parts);
  for (uint64_t l = 0; l < g.num_layers; ++l) {
    for (uint64_t p = 0; p < g.num_parts; ++p) {
      tensors.push_back(
          {.region = static_cast<uint32_t>(l * radix[layer] + p * radix[part]),
           .offset = l * stride[layer] + p * stride[part],
           .block_stride = stride[static_cast<size_t>(Dim::kBlock)],
           .token_stride = stride[static_cast<size_t>(Dim::kToken)],
           .head_stride = stride[static_cast<size_t>(Dim::kHead)]});
    }
  }
  return MakeLayout(g, std::move(name), std::move(tensors));
}

namespace {

const char* OrderName(BlockOrder order) {
  return order == BlockOrder::kHND ? "HND" : "NHD";
}

absl::Status CheckBlockOrder(BlockOrder order, const char* what) {
  if (static_cast<uint8_t>(order) > 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: block_order %u is not a BlockOrder (0 = kNHD, 1 = kHND)", what,
        static_cast<uint8_t>(order)));
  }
  return absl::OkStatus();
}

absl::Status RequireParts(const KvGeometry& g, uint32_t parts,
                          const char* what) {
  if (g.num_parts != parts) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: num_parts %u, this layout stores %u parts", what,
                        g.num_parts, parts));
  }
  return absl::OkStatus();
}

std::string Named(const char* preset, BlockOrder order) {
  return absl::StrFormat("%s(%s)", preset, OrderName(order));
}

}  // namespace
}  // namespace internal

using internal::BuildDense;
using internal::Dim;

absl::StatusOr<KvLayout> KvLayout::Create(const KvLayoutSpec& spec) {
  if (static_cast<uint8_t>(spec.pool_order) > 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "KvLayout: pool_order %u is not a PoolOrder (0 = kLayerMajor, 1 = "
        "kBlockMajor)",
        static_cast<uint8_t>(spec.pool_order)));
  }
  if (absl::Status s = internal::CheckBlockOrder(spec.block_order, "KvLayout");
      !s.ok()) {
    return s;
  }
  if (static_cast<uint8_t>(spec.region_split) > 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "KvLayout: region_split %u is not a RegionSplit (0 = kOnePerPool, 1 "
        "= kOnePerLayer)",
        static_cast<uint8_t>(spec.region_split)));
  }
  const bool hnd = spec.block_order == BlockOrder::kHND;
  const Dim inner = hnd ? Dim::kHead : Dim::kToken;
  const Dim innermost = hnd ? Dim::kToken : Dim::kHead;
  if (spec.pool_order == PoolOrder::kBlockMajor) {
    if (spec.region_split == RegionSplit::kOnePerLayer) {
      return absl::InvalidArgumentError(
          "KvLayout: region_split=kOnePerLayer requires "
          "pool_order=kLayerMajor");
    }
    return FlowKvBlockMajor(spec.geometry, spec.block_order);
  }
  if (spec.region_split == RegionSplit::kOnePerLayer) {
    return VllmFlashAttn(spec.geometry, spec.block_order);
  }
  return BuildDense(
      spec.geometry, internal::Named("layer_major", spec.block_order),
      {Dim::kLayer, Dim::kPart, Dim::kBlock, inner, innermost}, 0);
}

absl::StatusOr<KvLayout> KvLayout::FlowKvBlockMajor(const KvGeometry& g,
                                                    BlockOrder order) {
  if (absl::Status s = internal::CheckBlockOrder(order, "FlowKvBlockMajor");
      !s.ok()) {
    return s;
  }
  const bool hnd = order == BlockOrder::kHND;
  return BuildDense(
      g, internal::Named("flowkv_block_major", order),
      {Dim::kBlock, Dim::kLayer, Dim::kPart, hnd ? Dim::kHead : Dim::kToken,
       hnd ? Dim::kToken : Dim::kHead},
      0);
}

absl::StatusOr<KvLayout> KvLayout::VllmFlashAttn(const KvGeometry& g,
                                                 BlockOrder order) {
  if (absl::Status s = internal::CheckBlockOrder(order, "VllmFlashAttn");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = internal::RequireParts(g, 2, "VllmFlashAttn"); !s.ok()) {
    return s;
  }
  const bool hnd = order == BlockOrder::kHND;
  return BuildDense(
      g, internal::Named("vllm_flash_attn", order),
      {Dim::kLayer, Dim::kPart, Dim::kBlock, hnd ? Dim::kHead : Dim::kToken,
       hnd ? Dim::kToken : Dim::kHead},
      1);
}

absl::StatusOr<KvLayout> KvLayout::VllmFlashInfer(const KvGeometry& g,
                                                  BlockOrder order) {
  if (absl::Status s = internal::CheckBlockOrder(order, "VllmFlashInfer");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = internal::RequireParts(g, 2, "VllmFlashInfer");
      !s.ok()) {
    return s;
  }
  const bool hnd = order == BlockOrder::kHND;
  return BuildDense(
      g, internal::Named("vllm_flash_infer", order),
      {Dim::kLayer, Dim::kBlock, Dim::kPart, hnd ? Dim::kHead : Dim::kToken,
       hnd ? Dim::kToken : Dim::kHead},
      1);
}

absl::StatusOr<KvLayout> KvLayout::VllmCrossLayer(const KvGeometry& g,
                                                  BlockOrder order) {
  if (absl::Status s = internal::CheckBlockOrder(order, "VllmCrossLayer");
      !s.ok()) {
    return s;
  }
  if (order == BlockOrder::kHND) {
    return BuildDense(
        g, internal::Named("vllm_cross_layer", order),
        {Dim::kBlock, Dim::kHead, Dim::kLayer, Dim::kPart, Dim::kToken}, 0);
  }
  return BuildDense(
      g, internal::Named("vllm_cross_layer", order),
      {Dim::kBlock, Dim::kLayer, Dim::kPart, Dim::kToken, Dim::kHead}, 0);
}

absl::StatusOr<KvLayout> KvLayout::Vllm(const KvGeometry& g,
                                        VllmKvLayout layout,
                                        RegionSplit split) {
  struct Variant {
    const char* name;
    std::array<Dim, 5> order;
  };
  // The content dimension C = [P, D]: the part is the dim just outside D.
  static const Variant kVariants[] = {
      {"LBNHC",
       {{Dim::kLayer, Dim::kBlock, Dim::kToken, Dim::kHead, Dim::kPart}}},
      {"LBHNC",
       {{Dim::kLayer, Dim::kBlock, Dim::kHead, Dim::kToken, Dim::kPart}}},
      {"LHBNC",
       {{Dim::kLayer, Dim::kHead, Dim::kBlock, Dim::kToken, Dim::kPart}}},
      {"BLNHC",
       {{Dim::kBlock, Dim::kLayer, Dim::kToken, Dim::kHead, Dim::kPart}}},
      {"BLHNC",
       {{Dim::kBlock, Dim::kLayer, Dim::kHead, Dim::kToken, Dim::kPart}}},
      {"BHLNC",
       {{Dim::kBlock, Dim::kHead, Dim::kLayer, Dim::kToken, Dim::kPart}}},
  };
  const auto index = static_cast<uint8_t>(layout);
  if (index >= std::size(kVariants)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("Vllm: layout %u is not a VllmKvLayout (0 to %u)",
                        index, std::size(kVariants) - 1));
  }
  if (static_cast<uint8_t>(split) > 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Vllm: region_split %u is not a RegionSplit (0 = kOnePerPool, 1 = "
        "kOnePerLayer)",
        static_cast<uint8_t>(split)));
  }
  const Variant& v = kVariants[index];
  const bool per_layer = split == RegionSplit::kOnePerLayer;
  if (per_layer && v.order[0] != Dim::kLayer) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Vllm: region_split=kOnePerLayer needs the layer dimension outermost, "
        "layout %s has blocks outermost",
        v.name));
  }
  return BuildDense(
      g, absl::StrFormat("vllm(%s%s)", v.name, per_layer ? ",per_layer" : ""),
      v.order, per_layer ? 1 : 0);
}

absl::StatusOr<KvLayout> KvLayout::SglangMha(const KvGeometry& g) {
  if (absl::Status s = internal::RequireParts(g, 2, "SglangMha"); !s.ok()) {
    return s;
  }
  return BuildDense(
      g, "sglang_mha",
      {Dim::kPart, Dim::kLayer, Dim::kBlock, Dim::kToken, Dim::kHead}, 2);
}

absl::StatusOr<KvLayout> KvLayout::Mla(const KvGeometry& g) {
  if (absl::Status s = internal::RequireParts(g, 1, "Mla"); !s.ok()) return s;
  if (g.kv_heads != 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Mla: kv_heads %u, the latent cache has one vector per token (1)",
        g.kv_heads));
  }
  return BuildDense(
      g, "mla", {Dim::kLayer, Dim::kPart, Dim::kBlock, Dim::kToken, Dim::kHead},
      1);
}

absl::StatusOr<KvLayout> KvLayout::TrtllmBlockPool(const KvGeometry& g) {
  return BuildDense(
      g, "trtllm_block_pool",
      {Dim::kBlock, Dim::kLayer, Dim::kPart, Dim::kHead, Dim::kToken}, 0);
}

}  // namespace flowkv
