// SPDX-License-Identifier: Apache-2.0
// The C API of KvLayout (flowkv_layout_* in include/flowkv/flowkv_c.h):
// presets, strided layouts, the wire form, properties and address math.
// Every C++ precondition (REQUIRES) is checked here first.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "lib/c_api/c_api_internal.h"

namespace flowkv::c_api {
namespace {

KvGeometry GeometryFromC(const flowkv_geometry_t& g) {
  return {.num_layers = g.num_layers,
          .num_blocks = g.num_blocks,
          .block_tokens = g.block_tokens,
          .kv_heads = g.kv_heads,
          .head_dim = g.head_dim,
          .dtype_bytes = g.dtype_bytes,
          .num_parts = g.num_parts};
}

// `preset_value` and `order_value` are the C enums' values (EnumValue).
absl::StatusOr<KvLayout> Preset(const char* fn, int64_t preset_value,
                                const KvGeometry& geometry,
                                int64_t order_value) {
  if (order_value != FLOWKV_BLOCK_ORDER_NHD &&
      order_value != FLOWKV_BLOCK_ORDER_HND) {
    return absl::InvalidArgumentError(
        absl::StrCat(fn, ": order ", order_value, " is unknown"));
  }
  const BlockOrder order = static_cast<BlockOrder>(order_value);
  auto no_order = [&](const char* name) -> absl::Status {
    if (order == BlockOrder::kNHD) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat(fn, ": order: preset ", name,
                     " takes no block order (give FLOWKV_BLOCK_ORDER_NHD)"));
  };
  switch (preset_value) {
    case FLOWKV_LAYOUT_FLOWKV_BLOCK_MAJOR:
      return KvLayout::FlowKvBlockMajor(geometry, order);
    case FLOWKV_LAYOUT_VLLM_FLASH_ATTN:
      return KvLayout::VllmFlashAttn(geometry, order);
    case FLOWKV_LAYOUT_VLLM_FLASH_INFER:
      return KvLayout::VllmFlashInfer(geometry, order);
    case FLOWKV_LAYOUT_VLLM_CROSS_LAYER:
      return KvLayout::VllmCrossLayer(geometry, order);
    case FLOWKV_LAYOUT_SGLANG_MHA:
      if (absl::Status s = no_order("SGLANG_MHA"); !s.ok()) return s;
      return KvLayout::SglangMha(geometry);
    case FLOWKV_LAYOUT_MLA:
      if (absl::Status s = no_order("MLA"); !s.ok()) return s;
      return KvLayout::Mla(geometry);
    case FLOWKV_LAYOUT_TRTLLM_BLOCK_POOL:
      if (absl::Status s = no_order("TRTLLM_BLOCK_POOL"); !s.ok()) return s;
      return KvLayout::TrtllmBlockPool(geometry);
  }
  return absl::InvalidArgumentError(
      absl::StrCat(fn, ": preset ", preset_value, " is unknown"));
}

// Stores a made layout in *out.
absl::Status Emit(absl::StatusOr<KvLayout> layout, flowkv_layout_t** out) {
  if (!layout.ok()) return layout.status();
  *out = new flowkv_layout{*std::move(layout)};
  return absl::OkStatus();
}

absl::Status IndexBelow(const char* fn, const char* name, uint32_t value,
                        uint32_t limit, const char* limit_name) {
  if (value < limit) return absl::OkStatus();
  return absl::OutOfRangeError(absl::StrCat(
      fn, ": ", name, " ", value, " is not below ", limit_name, " ", limit));
}

}  // namespace
}  // namespace flowkv::c_api

using flowkv::c_api::Guard;
using flowkv::c_api::GuardVoid;
using flowkv::c_api::NotNull;

extern "C" {

flowkv_status_t flowkv_layout_create_preset(flowkv_layout_preset_t preset,
                                            const flowkv_geometry_t* geometry,
                                            flowkv_block_order_t order,
                                            flowkv_layout_t** layout) {
  static constexpr char kFn[] = "flowkv_layout_create_preset";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, geometry, "geometry"); !s.ok()) return s;
    if (absl::Status s = NotNull(kFn, layout, "layout"); !s.ok()) return s;
    return flowkv::c_api::Emit(
        flowkv::c_api::Preset(kFn, flowkv::c_api::EnumValue(preset),
                              flowkv::c_api::GeometryFromC(*geometry),
                              flowkv::c_api::EnumValue(order)),
        layout);
  });
}

flowkv_status_t flowkv_layout_create_vllm(const flowkv_geometry_t* geometry,
                                          flowkv_vllm_layout_t vllm_layout,
                                          bool one_region_per_layer,
                                          flowkv_layout_t** layout) {
  static constexpr char kFn[] = "flowkv_layout_create_vllm";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, geometry, "geometry"); !s.ok()) return s;
    if (absl::Status s = NotNull(kFn, layout, "layout"); !s.ok()) return s;
    const int64_t layout_value = flowkv::c_api::EnumValue(vllm_layout);
    if (layout_value < FLOWKV_VLLM_LBNHC || layout_value > FLOWKV_VLLM_BHLNC) {
      return absl::InvalidArgumentError(
          absl::StrCat(kFn, ": vllm_layout ", layout_value, " is unknown"));
    }
    return flowkv::c_api::Emit(
        flowkv::KvLayout::Vllm(flowkv::c_api::GeometryFromC(*geometry),
                               static_cast<flowkv::VllmKvLayout>(layout_value),
                               one_region_per_layer
                                   ? flowkv::RegionSplit::kOnePerLayer
                                   : flowkv::RegionSplit::kOnePerPool),
        layout);
  });
}

flowkv_status_t flowkv_layout_create_strided(const flowkv_geometry_t* geometry,
                                             const flowkv_tensor_t* tensors,
                                             size_t num_tensors,
                                             flowkv_layout_t** layout) {
  static constexpr char kFn[] = "flowkv_layout_create_strided";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, geometry, "geometry"); !s.ok()) return s;
    if (absl::Status s =
            flowkv::c_api::Buffer(kFn, tensors, num_tensors, "tensors");
        !s.ok()) {
      return s;
    }
    if (absl::Status s = NotNull(kFn, layout, "layout"); !s.ok()) return s;
    flowkv::KvStridedSpec spec;
    spec.geometry = flowkv::c_api::GeometryFromC(*geometry);
    spec.tensors.reserve(num_tensors);
    for (size_t i = 0; i < num_tensors; ++i) {
      spec.tensors.push_back({.region = tensors[i].region,
                              .offset = tensors[i].offset,
                              .block_stride = tensors[i].block_stride,
                              .token_stride = tensors[i].token_stride,
                              .head_stride = tensors[i].head_stride});
    }
    return flowkv::c_api::Emit(flowkv::KvLayout::CreateStrided(spec), layout);
  });
}

flowkv_status_t flowkv_layout_parse(const void* bytes, size_t len,
                                    flowkv_layout_t** layout) {
  static constexpr char kFn[] = "flowkv_layout_parse";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = flowkv::c_api::Buffer(kFn, bytes, len, "bytes");
        !s.ok()) {
      return s;
    }
    if (absl::Status s = NotNull(kFn, layout, "layout"); !s.ok()) return s;
    return flowkv::c_api::Emit(
        flowkv::KvLayout::Parse(flowkv::c_api::View(bytes, len)), layout);
  });
}

flowkv_status_t flowkv_layout_serialize(const flowkv_layout_t* layout,
                                        void* out, size_t capacity,
                                        size_t* length) {
  static constexpr char kFn[] = "flowkv_layout_serialize";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = flowkv::c_api::SourceAndOutBuffer(
            kFn, layout, "layout", out, capacity, length, "out");
        !s.ok()) {
      return s;
    }
    return flowkv::c_api::CopyOut(kFn, layout->layout.Serialize(), out,
                                  capacity, length, /*terminate=*/false);
  });
}

void flowkv_layout_free(flowkv_layout_t* layout) {
  GuardVoid([&] { delete layout; });
}

flowkv_status_t flowkv_layout_geometry(const flowkv_layout_t* layout,
                                       flowkv_geometry_t* geometry) {
  return flowkv::c_api::Getter(
      "flowkv_layout_geometry", layout, "layout", geometry, "geometry",
      [](const flowkv_layout& l) {
        const flowkv::KvGeometry& g = l.layout.geometry();
        return flowkv_geometry_t{.num_layers = g.num_layers,
                                 .num_blocks = g.num_blocks,
                                 .block_tokens = g.block_tokens,
                                 .kv_heads = g.kv_heads,
                                 .head_dim = g.head_dim,
                                 .dtype_bytes = g.dtype_bytes,
                                 .num_parts = g.num_parts};
      });
}

flowkv_status_t flowkv_layout_name(const flowkv_layout_t* layout, char* name,
                                   size_t capacity, size_t* length) {
  static constexpr char kFn[] = "flowkv_layout_name";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = flowkv::c_api::SourceAndOutBuffer(
            kFn, layout, "layout", name, capacity, length, "name");
        !s.ok()) {
      return s;
    }
    return flowkv::c_api::CopyOut(kFn, layout->layout.name(), name, capacity,
                                  length, /*terminate=*/true);
  });
}

flowkv_status_t flowkv_layout_num_regions(const flowkv_layout_t* layout,
                                          uint32_t* num_regions) {
  return flowkv::c_api::Getter(
      "flowkv_layout_num_regions", layout, "layout", num_regions, "num_regions",
      [](const flowkv_layout& l) { return l.layout.num_regions(); });
}

flowkv_status_t flowkv_layout_region_bytes(const flowkv_layout_t* layout,
                                           uint32_t region, uint64_t* bytes) {
  static constexpr char kFn[] = "flowkv_layout_region_bytes";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, layout, "layout"); !s.ok()) return s;
    if (absl::Status s = NotNull(kFn, bytes, "bytes"); !s.ok()) return s;
    if (absl::Status s = flowkv::c_api::IndexBelow(
            kFn, "region", region, layout->layout.num_regions(), "num_regions");
        !s.ok()) {
      return s;
    }
    *bytes = layout->layout.region_bytes(region);
    return absl::OkStatus();
  });
}

flowkv_status_t flowkv_layout_fingerprint(const flowkv_layout_t* layout,
                                          uint64_t* fingerprint) {
  return flowkv::c_api::Getter(
      "flowkv_layout_fingerprint", layout, "layout", fingerprint, "fingerprint",
      [](const flowkv_layout& l) { return l.layout.Fingerprint(); });
}

flowkv_status_t flowkv_layout_element_address(const flowkv_layout_t* layout,
                                              uint32_t layer, uint32_t part,
                                              uint32_t block, uint32_t token,
                                              uint32_t head, uint32_t* region,
                                              uint64_t* offset) {
  static constexpr char kFn[] = "flowkv_layout_element_address";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, layout, "layout"); !s.ok()) return s;
    if (absl::Status s = NotNull(kFn, region, "region"); !s.ok()) return s;
    if (absl::Status s = NotNull(kFn, offset, "offset"); !s.ok()) return s;
    const flowkv::KvGeometry& g = layout->layout.geometry();
    using flowkv::c_api::IndexBelow;
    for (absl::Status s :
         {IndexBelow(kFn, "layer", layer, g.num_layers, "num_layers"),
          IndexBelow(kFn, "part", part, g.num_parts, "num_parts"),
          IndexBelow(kFn, "block", block, g.num_blocks, "num_blocks"),
          IndexBelow(kFn, "token", token, g.block_tokens, "block_tokens"),
          IndexBelow(kFn, "head", head, g.kv_heads, "kv_heads")}) {
      if (!s.ok()) return s;
    }
    const flowkv::ByteAddress address = layout->layout.ElementAddress(
        layer, static_cast<flowkv::KvPart>(part), block, token, head);
    *region = address.region;
    *offset = address.offset;
    return absl::OkStatus();
  });
}

flowkv_status_t flowkv_layout_check_exchange(const flowkv_layout_t* a,
                                             const flowkv_layout_t* b) {
  static constexpr char kFn[] = "flowkv_layout_check_exchange";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, a, "a"); !s.ok()) return s;
    if (absl::Status s = NotNull(kFn, b, "b"); !s.ok()) return s;
    return flowkv::CheckKvExchange(a->layout, b->layout);
  });
}

}  // extern "C"
