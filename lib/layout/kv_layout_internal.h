// SPDX-License-Identifier: Apache-2.0
// The private side of KvLayout, shared by the files that implement it
// (lib/layout/: kv_layout.cc address math, layout_presets.cc, layout_
// validate.cc, layout_serialize.cc) and by the planner, which walks layouts
// fast (lib/layout/transfer_plan.cc).
// Everything here is immutable once a KvLayout holds it.

#ifndef FLOWKV_LIB_LAYOUT_KV_LAYOUT_INTERNAL_H_
#define FLOWKV_LIB_LAYOUT_KV_LAYOUT_INTERNAL_H_

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "flowkv/export.h"
#include "flowkv/kv_layout.h"

namespace flowkv::internal {

// A layout's tables and the facts derived from them once, at creation.
struct KvLayoutData {
  KvGeometry geometry;
  std::string name;
  std::vector<KvTensor> tensors;       // [layer * num_parts + part]
  std::vector<uint64_t> region_bytes;  // per region
  uint64_t head_bytes = 0;
  uint64_t tile_bytes = 0;
  uint64_t total_bytes = 0;
  uint64_t max_region_bytes = 0;
  std::optional<BlockOrder> tile_order;

  // Every tensor has the same block, token and head strides.
  bool uniform_strides = false;
  uint64_t block_stride = 0;
  uint64_t token_stride = 0;
  uint64_t head_stride = 0;

  // uniform_strides, and tensor (l, p) is at region r0 + l * layer_region_step
  // + p * part_region_step, offset o0 + l * layer_offset_step + p *
  // part_offset_step (offset steps in two's complement: layers may be stored
  // in any order). Region steps are 0 or positive.
  bool affine = false;
  uint32_t layer_region_step = 0;
  uint32_t part_region_step = 0;
  uint64_t layer_offset_step = 0;
  uint64_t part_offset_step = 0;

  const KvTensor& tensor(uint32_t layer, uint32_t part) const {
    return tensors[uint64_t{layer} * geometry.num_parts + part];
  }
};

// The private constructor and tables of a KvLayout.
struct KvLayoutAccess {
  static const KvLayoutData& Data(const KvLayout& layout) {
    return *layout.data_;
  }
  static KvLayout Make(std::shared_ptr<const KvLayoutData> data) {
    return KvLayout(std::move(data));
  }
};
inline const KvLayoutData& LayoutData(const KvLayout& layout) {
  return KvLayoutAccess::Data(layout);
}

// The dense preset builder: `order` names the physical dimensions outermost
// first (each of L, B, P, H, T exactly once; D is innermost); the first
// `region_dims` of them index regions (mixed radix in that order) instead of
// bytes. Validates the result like CreateStrided.
enum class Dim : uint8_t { kLayer, kBlock, kPart, kHead, kToken };
absl::StatusOr<KvLayout> BuildDense(const KvGeometry& geometry,
                                    std::string name,
                                    const std::array<Dim, 5>& order,
                                    int region_dims);

// Validates `geometry` and `tensors` and derives the rest (layout_validate.cc).
absl::StatusOr<KvLayout> MakeLayout(const KvGeometry& geometry,
                                    std::string name,
                                    std::vector<KvTensor> tensors);

// Checks a geometry alone: InvalidArgument naming the zero or out-of-range
// field, or the overflowing product.
absl::Status CheckGeometry(const KvGeometry& geometry, const char* what);

// The dense in-block order of `tensor`, or nullopt (see tile_order()).
std::optional<BlockOrder> DenseTileOrder(const KvGeometry& geometry,
                                         uint64_t head_bytes,
                                         const KvTensor& tensor);

}  // namespace flowkv::internal

#endif  // FLOWKV_LIB_LAYOUT_KV_LAYOUT_INTERNAL_H_
