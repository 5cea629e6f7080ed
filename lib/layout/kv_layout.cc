#include "flowkv/kv_layout.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace flowkv {
namespace {

// a * b, or false when it overflows 64 bits.
bool MulOk(uint64_t a, uint64_t b, uint64_t* out) {
  return !__builtin_mul_overflow(a, b, out);
}

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

}  // namespace

KvLayout::KvLayout(const KvLayoutSpec& spec) : spec_(spec) {
  const KvGeometry& g = spec_.geometry;
  head_bytes_ = uint64_t{g.head_dim} * g.dtype_bytes;
  tile_bytes_ = head_bytes_ * g.kv_heads * g.block_tokens;
  const uint64_t pool_bytes = tile_bytes_ * 2 * g.num_layers * g.num_blocks;
  num_regions_ =
      spec_.region_split == RegionSplit::kOnePerLayer ? g.num_layers : 1;
  region_bytes_ = pool_bytes / num_regions_;
}

absl::StatusOr<KvLayout> KvLayout::Create(const KvLayoutSpec& spec) {
  const KvGeometry& g = spec.geometry;
  const std::pair<const char*, uint32_t> fields[] = {
      {"num_layers", g.num_layers},     {"num_blocks", g.num_blocks},
      {"block_tokens", g.block_tokens}, {"kv_heads", g.kv_heads},
      {"head_dim", g.head_dim},         {"dtype_bytes", g.dtype_bytes}};
  for (const auto& [name, value] : fields) {
    if (value == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("KvLayout: ", name, " must be > 0"));
    }
  }
  uint64_t bytes = 1;
  for (uint64_t factor :
       {uint64_t{g.head_dim}, uint64_t{g.dtype_bytes}, uint64_t{g.kv_heads},
        uint64_t{g.block_tokens}, uint64_t{2}, uint64_t{g.num_layers},
        uint64_t{g.num_blocks}}) {
    if (!MulOk(bytes, factor, &bytes)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "KvLayout: pool size overflows 64 bits (num_layers=%u num_blocks=%u "
          "block_tokens=%u kv_heads=%u head_dim=%u dtype_bytes=%u)",
          g.num_layers, g.num_blocks, g.block_tokens, g.kv_heads, g.head_dim,
          g.dtype_bytes));
    }
  }
  if (spec.region_split == RegionSplit::kOnePerLayer &&
      spec.pool_order != PoolOrder::kLayerMajor) {
    return absl::InvalidArgumentError(
        "KvLayout: region_split=kOnePerLayer requires pool_order=kLayerMajor");
  }
  return KvLayout(spec);
}

ByteAddress KvLayout::TileAddress(uint32_t layer, KvPart part,
                                  BlockId block) const {
  const KvGeometry& g = spec_.geometry;
  const uint64_t kv = static_cast<uint64_t>(part);
  if (spec_.pool_order == PoolOrder::kBlockMajor) {
    return {0,
            ((uint64_t{block} * g.num_layers + layer) * 2 + kv) * tile_bytes_};
  }
  const uint64_t in_layer = (kv * g.num_blocks + block) * tile_bytes_;
  if (spec_.region_split == RegionSplit::kOnePerLayer) return {layer, in_layer};
  return {0, uint64_t{layer} * 2 * g.num_blocks * tile_bytes_ + in_layer};
}

ByteAddress KvLayout::ElementAddress(uint32_t layer, KvPart part, BlockId block,
                                     uint32_t token, uint32_t head) const {
  const KvGeometry& g = spec_.geometry;
  ByteAddress address = TileAddress(layer, part, block);
  const uint64_t index = spec_.block_order == BlockOrder::kNHD
                             ? uint64_t{token} * g.kv_heads + head
                             : uint64_t{head} * g.block_tokens + token;
  address.offset += index * head_bytes_;
  return address;
}

absl::Status KvLayout::AppendSliceRanges(const KvSlice& s,
                                         std::vector<ByteRange>* out) const {
  const KvGeometry& g = spec_.geometry;
  if (s.layer >= g.num_layers) {
    return absl::OutOfRangeError(absl::StrFormat(
        "KvSlice: layer %u >= num_layers %u", s.layer, g.num_layers));
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
  const uint32_t heads = s.head_end - s.head_begin;
  const uint32_t tokens = s.token_end - s.token_begin;
  if (spec_.block_order == BlockOrder::kNHD) {
    // Rows are tokens; a row is contiguous over the head range.
    for (uint32_t t = s.token_begin; t < s.token_end; ++t) {
      const ByteAddress a =
          ElementAddress(s.layer, s.part, s.block, t, s.head_begin);
      AppendMerged({a.region, a.offset, heads * head_bytes_}, out);
    }
  } else {
    // Rows are heads; a row is contiguous over the token range.
    for (uint32_t h = s.head_begin; h < s.head_end; ++h) {
      const ByteAddress a =
          ElementAddress(s.layer, s.part, s.block, s.token_begin, h);
      AppendMerged({a.region, a.offset, tokens * head_bytes_}, out);
    }
  }
  return absl::OkStatus();
}

absl::Status KvLayout::CheckBlocks(const BlockList& list) const {
  for (const BlockRun& run : list.runs()) {
    if (run.end() > spec_.geometry.num_blocks) {
      return absl::OutOfRangeError(
          absl::StrFormat("block run %u+%u ends past num_blocks %u", run.first,
                          run.count, spec_.geometry.num_blocks));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<ByteRange>> KvLayout::BlockListRanges(
    const BlockList& list) const {
  if (absl::Status s = CheckBlocks(list); !s.ok()) return s;
  std::vector<ByteRange> ranges;
  const uint32_t layers = spec_.geometry.num_layers;
  if (spec_.pool_order == PoolOrder::kBlockMajor) {
    ranges.reserve(list.num_runs());
    for (const BlockRun& run : list.runs()) {
      AppendMerged({0, uint64_t{run.first} * block_bytes(),
                    uint64_t{run.count} * block_bytes()},
                   &ranges);
    }
    return ranges;
  }
  ranges.reserve(list.num_runs() * 2 * layers);
  for (const BlockRun& run : list.runs()) {
    for (uint32_t layer = 0; layer < layers; ++layer) {
      for (KvPart part : {KvPart::kKey, KvPart::kValue}) {
        const ByteAddress a = TileAddress(layer, part, run.first);
        AppendMerged({a.region, a.offset, uint64_t{run.count} * tile_bytes_},
                     &ranges);
      }
    }
  }
  return ranges;
}

std::string KvLayout::ToString() const {
  const KvGeometry& g = spec_.geometry;
  return absl::StrFormat(
      "%s%s %s L=%u blocks=%u T=%u H=%u D=%u dtype=%u",
      spec_.pool_order == PoolOrder::kBlockMajor ? "block_major"
                                                 : "layer_major",
      spec_.region_split == RegionSplit::kOnePerLayer ? "(per-layer regions)"
                                                      : "",
      spec_.block_order == BlockOrder::kNHD ? "NHD" : "HND", g.num_layers,
      g.num_blocks, g.block_tokens, g.kv_heads, g.head_dim, g.dtype_bytes);
}

}  // namespace flowkv
