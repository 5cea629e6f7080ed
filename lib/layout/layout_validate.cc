// SPDX-License-Identifier: Apache-2.0
// KvLayout validation and derivation: CheckGeometry, MakeLayout (the one
// place a tensor table becomes a KvLayout: extents, aliasing strides,
// overlapping tensors, region sizes, and the derived facts the fast paths
// use), CreateStrided. Calls nothing but Abseil.

#include <algorithm>
#include <numeric>
#include <utility>

#include "absl/numeric/int128.h"
#include "absl/strings/str_format.h"
#include "lib/layout/kv_layout_internal.h"

namespace flowkv {
namespace internal {
namespace {

// a * b + c, or false when it overflows 64 bits.
bool MulAdd(uint64_t a, uint64_t b, uint64_t c, uint64_t* out) {
  uint64_t product = 0;
  return !__builtin_mul_overflow(a, b, &product) &&
         !__builtin_add_overflow(product, c, out);
}

std::string TensorName(const KvGeometry& g, size_t index) {
  return absl::StrFormat("tensors[%u] (layer %u, part %u)", index,
                         index / g.num_parts, index % g.num_parts);
}

// One strided dimension of a tensor.
struct StrideDim {
  uint64_t extent;
  uint64_t stride;
  const char* name;
};

// The dimensions of `t` that have more than one index, innermost (smallest
// stride) first.
int SortedDims(const KvGeometry& g, const KvTensor& t, StrideDim out[3]) {
  int n = 0;
  const StrideDim all[3] = {{g.num_blocks, t.block_stride, "block_stride"},
                            {g.block_tokens, t.token_stride, "token_stride"},
                            {g.kv_heads, t.head_stride, "head_stride"}};
  for (const StrideDim& d : all) {
    if (d.extent > 1) out[n++] = d;
  }
  std::sort(out, out + n, [](const StrideDim& a, const StrideDim& b) {
    return a.stride < b.stride;
  });
  return n;
}

// True when two tensors with the same strides, whose offsets differ by
// `delta`, share a byte: some k with |k_i| < extent_i has
// |delta - sum k_i * stride_i| < head_bytes. `dims` are nested (each stride
// covers the span of the smaller ones), outermost first, so at each level
// at most two k_i can leave a remainder the inner dimensions can cancel.
bool SharesAByte(absl::int128 delta, const StrideDim* dims,
                 const absl::int128* reach, int n, uint64_t head_bytes) {
  if (n == 0)
    return delta < static_cast<absl::int128>(head_bytes) &&
           delta > -static_cast<absl::int128>(head_bytes);
  const absl::int128 stride = dims[0].stride;
  const absl::int128 limit = static_cast<absl::int128>(dims[0].extent) - 1;
  absl::int128 k = delta / stride;  // Truncates toward zero.
  if (delta < 0 && k * stride != delta) --k;
  for (absl::int128 c : {k, k + 1}) {
    if (c < -limit || c > limit) continue;
    const absl::int128 rest = delta - c * stride;
    if (rest >= reach[0] || rest <= -reach[0]) continue;
    if (SharesAByte(rest, dims + 1, reach + 1, n - 1, head_bytes)) return true;
  }
  return false;
}

absl::Status CheckTensor(const KvGeometry& g, uint64_t head_bytes, size_t index,
                         const KvTensor& t, uint64_t* end) {
  uint64_t e = 0;
  if (!MulAdd(g.num_blocks - 1, t.block_stride, t.offset, &e) ||
      !MulAdd(g.block_tokens - 1, t.token_stride, e, &e) ||
      !MulAdd(g.kv_heads - 1, t.head_stride, e, &e) ||
      __builtin_add_overflow(e, head_bytes, &e)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "KvLayout: %s: extent overflows 64 bits (offset %u, block_stride %u, "
        "token_stride %u, head_stride %u)",
        TensorName(g, index), t.offset, t.block_stride, t.token_stride,
        t.head_stride));
  }
  StrideDim dims[3];
  const int n = SortedDims(g, t, dims);
  uint64_t span = head_bytes;  // Bytes spanned by the dims inside this one.
  const char* inner = "the head vector (head_dim * dtype_bytes)";
  for (int i = 0; i < n; ++i) {
    if (dims[i].stride < span) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "KvLayout: %s: %s %u is below the %u bytes spanned by %s: two "
          "elements alias",
          TensorName(g, index), dims[i].name, dims[i].stride, span, inner));
    }
    span += dims[i].stride * (dims[i].extent - 1);  // <= extent: no overflow
    inner = dims[i].name;
  }
  *end = e;
  return absl::OkStatus();
}

// InvalidArgument when two tensors of one region share a byte.
absl::Status CheckOverlaps(const KvGeometry& g, uint64_t head_bytes,
                           const std::vector<KvTensor>& tensors,
                           const std::vector<uint64_t>& ends) {
  std::vector<uint32_t> order(tensors.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
    const KvTensor& x = tensors[a];
    const KvTensor& y = tensors[b];
    return x.region != y.region ? x.region < y.region : x.offset < y.offset;
  });
  for (size_t i = 0; i < order.size(); ++i) {
    const KvTensor& a = tensors[order[i]];
    StrideDim dims[3];
    const int n = SortedDims(g, a, dims);
    std::reverse(dims, dims + n);  // Outermost first.
    absl::int128 reach[3];
    absl::int128 inner = head_bytes;
    for (int d = n - 1; d >= 0; --d) {
      reach[d] = inner;
      inner += static_cast<absl::int128>(dims[d].stride) * (dims[d].extent - 1);
    }
    for (size_t j = i + 1; j < order.size(); ++j) {
      const KvTensor& b = tensors[order[j]];
      if (b.region != a.region || b.offset >= ends[order[i]]) break;
      const bool same_strides = a.block_stride == b.block_stride &&
                                a.token_stride == b.token_stride &&
                                a.head_stride == b.head_stride;
      if (!same_strides) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "KvLayout: %s and %s interleave in region %u with different "
            "strides (tensors with different strides must not overlap in "
            "extent)",
            TensorName(g, order[i]), TensorName(g, order[j]), a.region));
      }
      if (SharesAByte(static_cast<absl::int128>(b.offset) - a.offset, dims,
                      reach, n, head_bytes)) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "KvLayout: %s and %s overlap in region %u (offsets %u and %u)",
            TensorName(g, order[i]), TensorName(g, order[j]), a.region,
            a.offset, b.offset));
      }
    }
  }
  return absl::OkStatus();
}

void DeriveStructure(KvLayoutData* d) {
  const KvGeometry& g = d->geometry;
  const KvTensor& first = d->tensors[0];
  d->uniform_strides =
      std::all_of(d->tensors.begin(), d->tensors.end(), [&](const KvTensor& t) {
        return t.block_stride == first.block_stride &&
               t.token_stride == first.token_stride &&
               t.head_stride == first.head_stride;
      });
  if (d->uniform_strides) {
    d->block_stride = first.block_stride;
    d->token_stride = first.token_stride;
    d->head_stride = first.head_stride;
  }
  std::optional<BlockOrder> order = DenseTileOrder(g, d->head_bytes, first);
  for (const KvTensor& t : d->tensors) {
    if (DenseTileOrder(g, d->head_bytes, t) != order) order.reset();
  }
  d->tile_order = order;

  d->affine = false;
  if (!d->uniform_strides) return;
  const KvTensor& layer1 = d->tensor(g.num_layers > 1 ? 1 : 0, 0);
  const KvTensor& part1 = d->tensor(0, g.num_parts > 1 ? 1 : 0);
  if (layer1.region < first.region || part1.region < first.region) return;
  d->layer_region_step = layer1.region - first.region;
  d->part_region_step = part1.region - first.region;
  d->layer_offset_step = layer1.offset - first.offset;
  d->part_offset_step = part1.offset - first.offset;
  for (uint32_t l = 0; l < g.num_layers; ++l) {
    for (uint32_t p = 0; p < g.num_parts; ++p) {
      const KvTensor& t = d->tensor(l, p);
      if (t.region != first.region + l * d->layer_region_step +
                          p * d->part_region_step ||
          t.offset != first.offset + l * d->layer_offset_step +
                          p * d->part_offset_step) {
        return;
      }
    }
  }
  d->affine = true;
}

}  // namespace

absl::Status CheckGeometry(const KvGeometry& g, const char* what) {
  const std::pair<const char*, uint32_t> fields[] = {
      {"num_layers", g.num_layers},     {"num_blocks", g.num_blocks},
      {"block_tokens", g.block_tokens}, {"kv_heads", g.kv_heads},
      {"head_dim", g.head_dim},         {"dtype_bytes", g.dtype_bytes},
      {"num_parts", g.num_parts}};
  for (const auto& [name, value] : fields) {
    if (value == 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: %s must be > 0", what, name));
    }
  }
  if (g.num_parts > 2) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: num_parts %u is not 1 (latent) or 2 (K and V)",
                        what, g.num_parts));
  }
  // One tensor per (layer, part): the table is bounded like the wire form's.
  const uint64_t tensors = uint64_t{g.num_layers} * g.num_parts;
  if (tensors > KvLayout::kMaxSerializedTensors) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: num_layers %u * num_parts %u = %u tensors, at most %u", what,
        g.num_layers, g.num_parts, tensors, KvLayout::kMaxSerializedTensors));
  }
  uint64_t bytes = 1;
  for (uint64_t factor : {g.head_dim, g.dtype_bytes, g.kv_heads, g.block_tokens,
                          g.num_parts, g.num_layers, g.num_blocks}) {
    if (__builtin_mul_overflow(bytes, factor, &bytes)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: pool size overflows 64 bits (num_layers=%u num_parts=%u "
          "num_blocks=%u block_tokens=%u kv_heads=%u head_dim=%u "
          "dtype_bytes=%u)",
          what, g.num_layers, g.num_parts, g.num_blocks, g.block_tokens,
          g.kv_heads, g.head_dim, g.dtype_bytes));
    }
  }
  return absl::OkStatus();
}

std::optional<BlockOrder> DenseTileOrder(const KvGeometry& g,
                                         uint64_t head_bytes,
                                         const KvTensor& t) {
  const uint64_t tokens = g.block_tokens;
  const uint64_t heads = g.kv_heads;
  if (tokens == 1 && heads == 1) return BlockOrder::kNHD;
  if (heads == 1) {
    return t.token_stride == head_bytes ? std::optional(BlockOrder::kNHD)
                                        : std::nullopt;
  }
  if (tokens == 1) {
    return t.head_stride == head_bytes ? std::optional(BlockOrder::kNHD)
                                       : std::nullopt;
  }
  if (t.head_stride == head_bytes && t.token_stride == heads * head_bytes) {
    return BlockOrder::kNHD;
  }
  if (t.token_stride == head_bytes && t.head_stride == tokens * head_bytes) {
    return BlockOrder::kHND;
  }
  return std::nullopt;
}

absl::StatusOr<KvLayout> MakeLayout(const KvGeometry& geometry,
                                    std::string name,
                                    std::vector<KvTensor> tensors) {
  if (absl::Status s = CheckGeometry(geometry, "KvLayout"); !s.ok()) return s;
  const uint64_t expected = uint64_t{geometry.num_layers} * geometry.num_parts;
  if (tensors.size() != expected) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "KvLayout: tensors has %u entries, num_layers * num_parts = %u",
        tensors.size(), expected));
  }
  auto data = std::make_shared<KvLayoutData>();
  data->geometry = geometry;
  data->name = std::move(name);
  data->head_bytes = uint64_t{geometry.head_dim} * geometry.dtype_bytes;
  data->tile_bytes =
      data->head_bytes * geometry.kv_heads * geometry.block_tokens;

  std::vector<uint64_t> ends(tensors.size());
  uint32_t num_regions = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (absl::Status s =
            CheckTensor(geometry, data->head_bytes, i, tensors[i], &ends[i]);
        !s.ok()) {
      return s;
    }
    if (tensors[i].region >= tensors.size()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "KvLayout: %s: region %u, but %u tensors use at most %u regions",
          TensorName(geometry, i), tensors[i].region, tensors.size(),
          tensors.size()));
    }
    num_regions = std::max(num_regions, tensors[i].region + 1);
  }
  data->region_bytes.assign(num_regions, 0);
  std::vector<bool> used(num_regions, false);
  for (size_t i = 0; i < tensors.size(); ++i) {
    used[tensors[i].region] = true;
    uint64_t& bytes = data->region_bytes[tensors[i].region];
    bytes = std::max(bytes, ends[i]);
  }
  for (uint32_t r = 0; r < num_regions; ++r) {
    if (!used[r]) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "KvLayout: region %u holds no tensor (regions are numbered 0 to "
          "%u without gaps)",
          r, num_regions - 1));
    }
    if (__builtin_add_overflow(data->total_bytes, data->region_bytes[r],
                               &data->total_bytes)) {
      return absl::InvalidArgumentError(
          "KvLayout: the regions' total size overflows 64 bits");
    }
    data->max_region_bytes =
        std::max(data->max_region_bytes, data->region_bytes[r]);
  }
  if (absl::Status s = CheckOverlaps(geometry, data->head_bytes, tensors, ends);
      !s.ok()) {
    return s;
  }
  data->tensors = std::move(tensors);
  DeriveStructure(data.get());
  return KvLayoutAccess::Make(std::move(data));
}

}  // namespace internal

absl::StatusOr<KvLayout> KvLayout::CreateStrided(const KvStridedSpec& spec) {
  return internal::MakeLayout(spec.geometry, "strided", spec.tensors);
}

}  // namespace flowkv
