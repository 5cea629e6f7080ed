// KvLayout: the geometry and address math of one KV cache pool.
//
// A pool holds `num_blocks` blocks; a block holds `block_tokens` tokens of
// every layer's K and V. How those bytes are laid out in memory:
//
//   PoolOrder::kLayerMajor (vLLM): per layer a tensor
//       [2 (K|V), num_blocks, <block>]            -- one block lives in 2*L
//       places
//   PoolOrder::kBlockMajor (FlowKV):
//       [num_blocks, num_layers, 2 (K|V), <block>] -- a block is one range
//
//   <block> = [block_tokens, kv_heads, head_dim] for BlockOrder::kNHD
//             [kv_heads, block_tokens, head_dim] for BlockOrder::kHND
//
// A layer-major pool is one region (all layers back to back) or one region
// per layer (RegionSplit::kOnePerLayer, as vLLM allocates it). A block-major
// pool is always one region. "Region" is the unit an engine registers with
// the transfer engine; offsets are relative to the start of a region.
//
//   auto layout = flowkv::KvLayout::Create({
//       .geometry = {.num_layers = 32, .num_blocks = 4096, .block_tokens = 16,
//                    .kv_heads = 8, .head_dim = 128, .dtype_bytes = 2},
//       .pool_order = flowkv::PoolOrder::kBlockMajor});
//   if (!layout.ok()) return layout.status();
//   auto ranges = layout->BlockListRanges(blocks);  // one range per run
//
// KvLayout is a small value type: no allocation beyond its results, no I/O.
// Thread safety: const methods thread-safe.

#ifndef FLOWKV_KV_LAYOUT_H_
#define FLOWKV_KV_LAYOUT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "flowkv/block_list.h"
#include "flowkv/export.h"

namespace flowkv {

enum class PoolOrder : uint8_t { kLayerMajor, kBlockMajor };
enum class BlockOrder : uint8_t { kNHD, kHND };
enum class RegionSplit : uint8_t { kOnePerPool, kOnePerLayer };
enum class KvPart : uint8_t { kKey = 0, kValue = 1 };

// The sizes of a pool. Every field must be non-zero.
struct KvGeometry {
  uint32_t num_layers = 0;
  uint32_t num_blocks = 0;
  uint32_t block_tokens = 0;
  uint32_t kv_heads = 0;
  uint32_t head_dim = 0;
  uint32_t dtype_bytes = 0;

  friend bool operator==(const KvGeometry&, const KvGeometry&) = default;
};

struct KvLayoutSpec {
  KvGeometry geometry;
  // Default: block-major, the layout that makes a run of blocks one range.
  PoolOrder pool_order = PoolOrder::kBlockMajor;
  // Default: NHD (token, head, dim), as vLLM and SGLang store it.
  BlockOrder block_order = BlockOrder::kNHD;
  // Default: one region. kOnePerLayer requires kLayerMajor.
  RegionSplit region_split = RegionSplit::kOnePerPool;
};

// A contiguous byte range inside one region of a pool.
struct ByteRange {
  uint32_t region = 0;
  uint64_t offset = 0;
  uint64_t length = 0;

  uint64_t end() const { return offset + length; }
  friend bool operator==(const ByteRange&, const ByteRange&) = default;
};

// A byte position inside one region of a pool.
struct ByteAddress {
  uint32_t region = 0;
  uint64_t offset = 0;
  friend bool operator==(const ByteAddress&, const ByteAddress&) = default;
};

// Part of one block of one layer's K or V: tokens [token_begin, token_end)
// and heads [head_begin, head_end) of that block.
struct KvSlice {
  uint32_t layer = 0;
  KvPart part = KvPart::kKey;
  BlockId block = 0;
  uint32_t token_begin = 0;
  uint32_t token_end = 0;
  uint32_t head_begin = 0;
  uint32_t head_end = 0;
};

class FLOWKV_EXPORT KvLayout {
 public:
  // Validates `spec`: InvalidArgument naming the field when a size is zero,
  // when the pool's byte size overflows 64 bits, or when kOnePerLayer is
  // asked of a block-major pool.
  static absl::StatusOr<KvLayout> Create(const KvLayoutSpec& spec);

  const KvGeometry& geometry() const { return spec_.geometry; }
  const KvLayoutSpec& spec() const { return spec_; }
  PoolOrder pool_order() const { return spec_.pool_order; }
  BlockOrder block_order() const { return spec_.block_order; }
  RegionSplit region_split() const { return spec_.region_split; }

  uint32_t num_regions() const { return num_regions_; }
  // Bytes of each region (all regions have the same size).
  uint64_t region_bytes() const { return region_bytes_; }
  // Bytes of the whole pool (all regions).
  uint64_t total_bytes() const { return region_bytes_ * num_regions_; }

  // Bytes of one head vector: head_dim * dtype_bytes.
  uint64_t head_bytes() const { return head_bytes_; }
  // Bytes of one token of one layer's K (or V): kv_heads * head_bytes.
  uint64_t token_bytes() const { return head_bytes_ * spec_.geometry.kv_heads; }
  // Bytes of one block of one layer's K (or V): block_tokens * token_bytes.
  uint64_t tile_bytes() const { return tile_bytes_; }
  // Bytes one block occupies over all layers, K and V: 2 * L * tile_bytes.
  uint64_t block_bytes() const {
    return tile_bytes_ * 2 * spec_.geometry.num_layers;
  }
  // KV bytes of one token over all layers: 2 * L * token_bytes.
  uint64_t bytes_per_token() const {
    return token_bytes() * 2 * spec_.geometry.num_layers;
  }

  // Where the tile (layer, part, block) starts.
  // REQUIRES: layer < num_layers, block < num_blocks.
  ByteAddress TileAddress(uint32_t layer, KvPart part, BlockId block) const;

  // Where the head vector of (layer, part, block, token, head) starts.
  // REQUIRES: every index below its geometry limit.
  ByteAddress ElementAddress(uint32_t layer, KvPart part, BlockId block,
                             uint32_t token, uint32_t head) const;

  // Appends to `*out` the byte ranges that hold `slice`, in increasing
  // address order, merged where adjacent (also with the last range already in
  // `*out`). OutOfRange naming the index when the slice leaves the geometry
  // or is empty; then `*out` is unchanged.
  absl::Status AppendSliceRanges(const KvSlice& slice,
                                 std::vector<ByteRange>* out) const;

  // The byte ranges holding every block of `list` (all layers, K and V), in
  // the order of the list and merged where adjacent: one range per run for
  // a block-major pool, 2 * L per run for a layer-major one (fewer where
  // runs meet). OutOfRange when a block id is not in the pool.
  absl::StatusOr<std::vector<ByteRange>> BlockListRanges(
      const BlockList& list) const;

  // OutOfRange naming the first block of `list` outside [0, num_blocks).
  absl::Status CheckBlocks(const BlockList& list) const;

  // "block_major NHD L=32 blocks=4096 T=16 H=8 D=128 dtype=2".
  std::string ToString() const;

  friend bool operator==(const KvLayout& a, const KvLayout& b) {
    return a.spec_.geometry == b.spec_.geometry &&
           a.spec_.pool_order == b.spec_.pool_order &&
           a.spec_.block_order == b.spec_.block_order &&
           a.spec_.region_split == b.spec_.region_split;
  }

 private:
  explicit KvLayout(const KvLayoutSpec& spec);

  KvLayoutSpec spec_;
  uint32_t num_regions_ = 1;
  uint64_t head_bytes_ = 0;
  uint64_t tile_bytes_ = 0;
  uint64_t region_bytes_ = 0;
};

}  // namespace flowkv

#endif  // FLOWKV_KV_LAYOUT_H_
