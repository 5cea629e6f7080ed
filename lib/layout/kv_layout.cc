// SPDX-License-Identifier: Apache-2.0
// KvLayout's accessors and address math: element and tile addresses, slice
// ranges, block-list ranges, printing and equality. Construction lives in
// layout_presets.cc and layout_validate.cc, the wire form in
// layout_serialize.cc. Calls nothing but Abseil.

#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"
#include "lib/layout/kv_layout_internal.h"

namespace flowkv {
namespace {

using internal::KvLayoutData;

// Appends `range` to `out`, extending the last range when it ends exactly
// where `range` begins in the same region.
void AppendMerged(const ByteRange& range, std::vector<ByteRange>* out) {
  if (!out->empty()) {
    ByteRange& last = out->back();
    if (last.region == range.region && last.end() == range.offset) {
      last.length += range.length;
      return;
    }
  }
  out->push_back(range);
}

bool RangeBefore(const ByteRange& a, const ByteRange& b) {
  return a.region != b.region ? a.region < b.region : a.offset < b.offset;
}

// One dimension of a one-sided strided walk.
struct WalkDim {
  uint64_t extent;
  uint64_t stride;
  uint32_t region_step;
};

// Calls emit(range) for every contiguous range of the strided array at
// `base` with dims `dims` (any order) and `element` contiguous bytes per
// index: outermost dims (region steps, then larger strides) first, the
// innermost dims that continue each other folded into one range.
template <typename Emit>
void Walk(ByteAddress base, std::vector<WalkDim> dims, uint64_t element,
          Emit&& emit) {
  dims.erase(std::remove_if(dims.begin(), dims.end(),
                            [](const WalkDim& d) { return d.extent <= 1; }),
             dims.end());
  std::sort(dims.begin(), dims.end(), [](const WalkDim& a, const WalkDim& b) {
    return a.region_step != b.region_step ? a.region_step > b.region_step
                                          : a.stride > b.stride;
  });
  uint64_t chunk = element;
  while (!dims.empty() && dims.back().region_step == 0 &&
         dims.back().stride == chunk) {
    chunk *= dims.back().extent;
    dims.pop_back();
  }
  const int n = static_cast<int>(dims.size());
  std::vector<uint64_t> index(n, 0);
  ByteRange range{base.region, base.offset, chunk};
  while (true) {
    emit(range);
    int k = n - 1;
    for (; k >= 0; --k) {
      const WalkDim& d = dims[k];
      if (++index[k] < d.extent) {
        range.offset += d.stride;
        range.region += d.region_step;
        break;
      }
      index[k] = 0;
      range.offset -= d.stride * (d.extent - 1);
      range.region -= static_cast<uint32_t>(d.region_step * (d.extent - 1));
    }
    if (k < 0) return;
  }
}

}  // namespace

KvLayout::KvLayout(std::shared_ptr<const internal::KvLayoutData> data)
    : data_(std::move(data)) {}

const KvGeometry& KvLayout::geometry() const { return data_->geometry; }
const std::string& KvLayout::name() const { return data_->name; }
absl::Span<const KvTensor> KvLayout::tensors() const { return data_->tensors; }
const KvTensor& KvLayout::tensor(uint32_t layer, KvPart part) const {
  return data_->tensor(layer, static_cast<uint32_t>(part));
}
std::optional<BlockOrder> KvLayout::tile_order() const {
  return data_->tile_order;
}
uint32_t KvLayout::num_regions() const {
  return static_cast<uint32_t>(data_->region_bytes.size());
}
uint64_t KvLayout::region_bytes(uint32_t region) const {
  return data_->region_bytes[region];
}
uint64_t KvLayout::region_bytes() const { return data_->max_region_bytes; }
uint64_t KvLayout::total_bytes() const { return data_->total_bytes; }
uint64_t KvLayout::head_bytes() const { return data_->head_bytes; }
uint64_t KvLayout::token_bytes() const {
  return data_->head_bytes * data_->geometry.kv_heads;
}
uint64_t KvLayout::tile_bytes() const { return data_->tile_bytes; }
uint64_t KvLayout::block_bytes() const {
  return data_->tile_bytes * data_->geometry.num_parts *
         data_->geometry.num_layers;
}
uint64_t KvLayout::bytes_per_token() const {
  return token_bytes() * data_->geometry.num_parts * data_->geometry.num_layers;
}

ByteAddress KvLayout::TileAddress(uint32_t layer, KvPart part,
                                  BlockId block) const {
  const KvTensor& t = tensor(layer, part);
  return {t.region, t.offset + uint64_t{block} * t.block_stride};
}

ByteAddress KvLayout::ElementAddress(uint32_t layer, KvPart part, BlockId block,
                                     uint32_t token, uint32_t head) const {
  const KvTensor& t = tensor(layer, part);
  return {t.region, t.offset + uint64_t{block} * t.block_stride +
                        uint64_t{token} * t.token_stride +
                        uint64_t{head} * t.head_stride};
}

absl::Status KvLayout::AppendSliceRanges(const KvSlice& s,
                                         std::vector<ByteRange>* out) const {
  const KvGeometry& g = geometry();
  if (s.layer >= g.num_layers) {
    return absl::OutOfRangeError(absl::StrFormat(
        "KvSlice: layer %u >= num_layers %u", s.layer, g.num_layers));
  }
  if (static_cast<uint32_t>(s.part) >= g.num_parts) {
    return absl::OutOfRangeError(
        absl::StrFormat("KvSlice: part %u >= num_parts %u",
                        static_cast<uint32_t>(s.part), g.num_parts));
  }
  if (s.block >= g.num_blocks) {
    return absl::OutOfRangeError(absl::StrFormat(
        "KvSlice: block %u >= num_blocks %u", s.block, g.num_blocks));
  }
  if (s.token_begin >= s.token_end || s.token_end > g.block_tokens) {
    return absl::OutOfRangeError(
        absl::StrFormat("KvSlice: token range [%u, %u) not a non-empty part "
                        "of [0, %u)",
                        s.token_begin, s.token_end, g.block_tokens));
  }
  if (s.head_begin >= s.head_end || s.head_end > g.kv_heads) {
    return absl::OutOfRangeError(
        absl::StrFormat("KvSlice: head range [%u, %u) not a non-empty part "
                        "of [0, %u)",
                        s.head_begin, s.head_end, g.kv_heads));
  }
  const KvTensor& t = tensor(s.layer, s.part);
  Walk(ElementAddress(s.layer, s.part, s.block, s.token_begin, s.head_begin),
       {{s.token_end - s.token_begin, t.token_stride, 0},
        {s.head_end - s.head_begin, t.head_stride, 0}},
       head_bytes(), [&](const ByteRange& r) { AppendMerged(r, out); });
  return absl::OkStatus();
}

absl::Status KvLayout::CheckBlocks(const BlockList& list) const {
  for (const BlockRun& run : list.runs()) {
    if (run.end() > geometry().num_blocks) {
      return absl::OutOfRangeError(
          absl::StrFormat("block run %u+%u ends past num_blocks %u", run.first,
                          run.count, geometry().num_blocks));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<ByteRange>> KvLayout::BlockListRanges(
    const BlockList& list) const {
  if (absl::Status s = CheckBlocks(list); !s.ok()) return s;
  const KvLayoutData& d = *data_;
  const KvGeometry& g = d.geometry;
  std::vector<ByteRange> ranges;
  std::vector<ByteRange> run_ranges;
  for (const BlockRun& run : list.runs()) {
    run_ranges.clear();
    auto collect = [&](const ByteRange& r) { AppendMerged(r, &run_ranges); };
    if (d.affine) {
      const KvTensor& t = d.tensor(0, 0);
      Walk({t.region, t.offset + uint64_t{run.first} * t.block_stride},
           {{g.num_layers, d.layer_offset_step, d.layer_region_step},
            {g.num_parts, d.part_offset_step, d.part_region_step},
            {run.count, t.block_stride, 0},
            {g.block_tokens, t.token_stride, 0},
            {g.kv_heads, t.head_stride, 0}},
           d.head_bytes, collect);
    } else {
      for (const KvTensor& t : d.tensors) {
        Walk({t.region, t.offset + uint64_t{run.first} * t.block_stride},
             {{run.count, t.block_stride, 0},
              {g.block_tokens, t.token_stride, 0},
              {g.kv_heads, t.head_stride, 0}},
             d.head_bytes, collect);
      }
    }
    if (!std::is_sorted(run_ranges.begin(), run_ranges.end(), RangeBefore)) {
      std::sort(run_ranges.begin(), run_ranges.end(), RangeBefore);
      std::vector<ByteRange> merged;
      for (const ByteRange& r : run_ranges) AppendMerged(r, &merged);
      run_ranges.swap(merged);
    }
    for (const ByteRange& r : run_ranges) AppendMerged(r, &ranges);
  }
  return ranges;
}

std::string KvLayout::ToString() const {
  const KvGeometry& g = geometry();
  return absl::StrFormat(
      "%s L=%u P=%u blocks=%u T=%u H=%u D=%u dtype=%u regions=%u", name(),
      g.num_layers, g.num_parts, g.num_blocks, g.block_tokens, g.kv_heads,
      g.head_dim, g.dtype_bytes, num_regions());
}

bool operator==(const KvLayout& a, const KvLayout& b) {
  const KvLayoutData& x = internal::LayoutData(a);
  const KvLayoutData& y = internal::LayoutData(b);
  return &x == &y || (x.geometry == y.geometry && x.tensors == y.tensors);
}

}  // namespace flowkv
