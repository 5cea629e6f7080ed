// SPDX-License-Identifier: Apache-2.0
// KvLayout: where every byte of a KV cache pool lives, described in place
// (no copy, no allocation of the pool), and the address math on it.
//
// A pool holds `num_blocks` blocks of `block_tokens` tokens. Each layer has
// one or two parts: K and V, or a single latent vector (MLA: kv_heads 1,
// head_dim kv_lora_rank + rope_dim). Every (layer, part) is one strided
// tensor inside a region (the unit an engine registers with the transfer
// engine; offsets are relative to its start):
//
//   address(layer, part, block, token, head) =
//       region base + offset + block * block_stride + token * token_stride
//                   + head * head_stride
//
// and the head vector there, head_dim * dtype_bytes bytes, is contiguous.
// Any engine's pool is such a set of tensors; the named presets below build
// the common ones (docs/layouts.md lists them with the engine sources they
// were checked against). Shapes read outermost first; D = head_dim,
// H = kv_heads, T = block_tokens, N = num_blocks, L = num_layers,
// P = num_parts (2: K then V).
//
//   auto layout = flowkv::KvLayout::VllmFlashInfer(
//       {.num_layers = 32, .num_blocks = 4096, .block_tokens = 16,
//        .kv_heads = 8, .head_dim = 128, .dtype_bytes = 2});
//   if (!layout.ok()) return layout.status();
//   auto ranges = layout->BlockListRanges(blocks);
//
// Peers agree on layouts before bytes move: Serialize() is a compact,
// versioned form of the layout for the wire, Parse() reads it back (any
// input gives a layout or an error, never a crash), Fingerprint() identifies
// the exact byte layout and CheckKvExchange() says whether two pools can
// exchange KV at all.
//
// KvLayout is an immutable value type; copies share their tables (a copy is
// one reference-count increment). Thread safety: const methods thread-safe.

#ifndef FLOWKV_KV_LAYOUT_H_
#define FLOWKV_KV_LAYOUT_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "flowkv/block_list.h"
#include "flowkv/export.h"

namespace flowkv {

enum class PoolOrder : uint8_t { kLayerMajor = 0, kBlockMajor = 1 };
// The order inside one block of one (layer, part): NHD (token, head, dim)
// or HND (head, token, dim).
enum class BlockOrder : uint8_t { kNHD = 0, kHND = 1 };
enum class RegionSplit : uint8_t { kOnePerPool = 0, kOnePerLayer = 1 };
// The parts of a layer. A one-part (MLA) layout has only part 0, kLatent.
enum class KvPart : uint8_t { kKey = 0, kValue = 1, kLatent = 0 };

// vLLM's standardized KV cache layouts (RFC #42082): the logical tensor is
// [L, N, H, T, C] with C = P * D, K then V packed in the content dimension;
// the name lists the physical order, outermost first (B = blocks = N,
// N = tokens = T in vLLM's letters).
enum class VllmKvLayout : uint8_t {
  kLBNHC = 0,  // [L, N, T, H, P*D] (vLLM's default)
  kLBHNC = 1,  // [L, N, H, T, P*D]
  kLHBNC = 2,  // [L, H, N, T, P*D]
  kBLNHC = 3,  // [N, L, T, H, P*D]
  kBLHNC = 4,  // [N, L, H, T, P*D]
  kBHLNC = 5,  // [N, H, L, T, P*D]
};

// The sizes of a pool. Every field must be non-zero; num_parts is 1 or 2;
// num_layers * num_parts (the tensors) is at most
// KvLayout::kMaxSerializedTensors (1024).
struct KvGeometry {
  uint32_t num_layers = 0;
  uint32_t num_blocks = 0;
  uint32_t block_tokens = 0;
  uint32_t kv_heads = 0;
  uint32_t head_dim = 0;
  uint32_t dtype_bytes = 0;
  // Default: 2 (K and V). 1 for a single latent vector per token (MLA).
  uint32_t num_parts = 2;

  friend bool operator==(const KvGeometry&, const KvGeometry&) = default;
};

// The original two orders, kept as presets: block-major is
// FlowKvBlockMajor(); layer-major is per layer [P, N, <block>] (<block> =
// [T, H, D] for NHD, [H, T, D] for HND), one region per layer
// (kOnePerLayer, = VllmFlashAttn()) or all layers back to back in one region.
struct KvLayoutSpec {
  KvGeometry geometry;
  // Default: block-major, the layout that makes a run of blocks one range.
  PoolOrder pool_order = PoolOrder::kBlockMajor;
  // Default: NHD (token, head, dim).
  BlockOrder block_order = BlockOrder::kNHD;
  // Default: one region. kOnePerLayer requires kLayerMajor.
  RegionSplit region_split = RegionSplit::kOnePerPool;
};

// Where one (layer, part) tensor lives: element (block, token, head) starts
// at `offset + block * block_stride + token * token_stride + head *
// head_stride` bytes into region `region`.
struct KvTensor {
  uint32_t region = 0;
  uint64_t offset = 0;
  uint64_t block_stride = 0;
  uint64_t token_stride = 0;
  uint64_t head_stride = 0;

  friend bool operator==(const KvTensor&, const KvTensor&) = default;
};

// A pool given tensor by tensor (for layouts no preset covers).
struct KvStridedSpec {
  KvGeometry geometry;
  // num_layers * num_parts entries: tensors[layer * num_parts + part].
  // Regions are numbered from 0; every region up to the largest index must
  // hold a tensor. A region's size is the end of its last head vector.
  std::vector<KvTensor> tensors;
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

// Part of one block of one layer's K, V or latent: tokens [token_begin,
// token_end) and heads [head_begin, head_end) of that block.
struct KvSlice {
  uint32_t layer = 0;
  KvPart part = KvPart::kKey;
  BlockId block = 0;
  uint32_t token_begin = 0;
  uint32_t token_end = 0;
  uint32_t head_begin = 0;
  uint32_t head_end = 0;
};

namespace internal {
struct KvLayoutData;
struct KvLayoutAccess;
}  // namespace internal

class FLOWKV_EXPORT KvLayout {
 public:
  // ---- Construction: every factory validates and names the bad field ----

  // The original orders (see KvLayoutSpec). InvalidArgument naming the field
  // when a size is zero, num_parts is not 1 or 2, num_layers * num_parts is
  // over kMaxSerializedTensors, an enum is out of range, the pool's byte
  // size overflows 64 bits, or kOnePerLayer is asked of a block-major pool.
  // (Every factory checks the geometry alike.)
  static absl::StatusOr<KvLayout> Create(const KvLayoutSpec& spec);

  // Any strided pool. InvalidArgument naming the field ("tensors[5] (layer
  // 2, part 1) ...") when the geometry is invalid, the table has the wrong
  // size, a tensor's extent overflows 64 bits, a tensor's strides alias
  // (two elements at one address; a stride must cover the span of every
  // smaller one, as in any dense tensor with padding), two tensors overlap,
  // or a region holds no tensor.
  static absl::StatusOr<KvLayout> CreateStrided(const KvStridedSpec& spec);

  // FlowKV's block-major pool, one region:
  //   NHD [N, L, P, T, H, D]; HND [N, L, P, H, T, D].
  static absl::StatusOr<KvLayout> FlowKvBlockMajor(
      const KvGeometry& geometry, BlockOrder order = BlockOrder::kNHD);

  // vLLM FlashAttention backend before the 2026 layout refactor: per layer
  //   NHD [2, N, T, H, D]; HND [2, N, H, T, D] (stride order (0,1,3,2,4)).
  // L regions: region l = layer l's tensor (register kv_caches in layer
  // order). REQUIRES num_parts 2.
  static absl::StatusOr<KvLayout> VllmFlashAttn(
      const KvGeometry& geometry, BlockOrder order = BlockOrder::kNHD);

  // vLLM FlashInfer backend (and FlashAttention after it adopted the same
  // shape), per layer, K and V of a block adjacent:
  //   NHD [N, 2, T, H, D]; HND [N, 2, H, T, D].
  // L regions, region l = layer l. REQUIRES num_parts 2.
  static absl::StatusOr<KvLayout> VllmFlashInfer(
      const KvGeometry& geometry, BlockOrder order = BlockOrder::kNHD);

  // vLLM cross-layer KV blocks (KV connectors, include_num_layers_dimension),
  // one region:
  //   NHD [N, L, P, T, H, D]; HND [N, H, L, P, T, D].
  static absl::StatusOr<KvLayout> VllmCrossLayer(
      const KvGeometry& geometry, BlockOrder order = BlockOrder::kNHD);

  // vLLM's standardized layouts (see VllmKvLayout): the content dimension
  // holds K then V (P * D values) of one token and head. One region holding
  // all layers, or with kOnePerLayer (layer-outermost layouts only: LBNHC,
  // LBHNC, LHBNC) one region per layer.
  static absl::StatusOr<KvLayout> Vllm(
      const KvGeometry& geometry, VllmKvLayout layout,
      RegionSplit split = RegionSplit::kOnePerPool);

  // SGLang MHATokenToKVPool: per layer a K buffer and a V buffer, each
  // [N * T, H, D] (pages of T tokens; N counts SGLang's padding page 0).
  // 2L regions in get_contiguous_buf_infos order: K of layers 0..L-1, then
  // V of layers 0..L-1. REQUIRES num_parts 2.
  static absl::StatusOr<KvLayout> SglangMha(const KvGeometry& geometry);

  // MLA latent cache (vLLM's MLA backends before the refactor, SGLang
  // MLATokenToKVPool): per layer [N, T, D] with D = kv_lora_rank + rope_dim.
  // L regions, region l = layer l. REQUIRES num_parts 1, kv_heads 1.
  static absl::StatusOr<KvLayout> Mla(const KvGeometry& geometry);

  // TensorRT-LLM's block pool (one pool of one window size and head count),
  // one region: [N, L, P, H, T, D] (kvFactor P = 2, or 1 for K-only / MLA).
  static absl::StatusOr<KvLayout> TrtllmBlockPool(const KvGeometry& geometry);

  // ---- Properties ----

  const KvGeometry& geometry() const;
  uint32_t num_parts() const { return geometry().num_parts; }
  // How the layout was made, e.g. "vllm_flash_infer(HND)" or "strided".
  const std::string& name() const;
  // The tensor table, [layer * num_parts + part].
  absl::Span<const KvTensor> tensors() const;
  // REQUIRES: layer < num_layers, part < num_parts.
  const KvTensor& tensor(uint32_t layer, KvPart part) const;
  // The in-block element order when every tensor stores a block's tile
  // densely (its T * H head vectors fill tile_bytes() bytes) in the same
  // order; nullopt otherwise. A tile with one head or one token is NHD.
  std::optional<BlockOrder> tile_order() const;

  uint32_t num_regions() const;
  // Bytes of region `region` (the end of its last head vector).
  // REQUIRES: region < num_regions().
  uint64_t region_bytes(uint32_t region) const;
  // Bytes of the largest region: a region of this size holds any region.
  uint64_t region_bytes() const;
  // Bytes of all regions together.
  uint64_t total_bytes() const;

  // Bytes of one head vector: head_dim * dtype_bytes.
  uint64_t head_bytes() const;
  // KV bytes of one token of one (layer, part): kv_heads * head_bytes.
  uint64_t token_bytes() const;
  // KV bytes of one block of one (layer, part): block_tokens * token_bytes.
  uint64_t tile_bytes() const;
  // KV bytes of one block over all layers and parts: P * L * tile_bytes.
  uint64_t block_bytes() const;
  // KV bytes of one token over all layers and parts: P * L * token_bytes.
  uint64_t bytes_per_token() const;

  // ---- Address math ----

  // Where (layer, part, block, token 0, head 0) starts.
  // REQUIRES: layer < num_layers, part < num_parts, block < num_blocks.
  ByteAddress TileAddress(uint32_t layer, KvPart part, BlockId block) const;

  // Where the head vector of (layer, part, block, token, head) starts.
  // REQUIRES: every index below its geometry limit.
  ByteAddress ElementAddress(uint32_t layer, KvPart part, BlockId block,
                             uint32_t token, uint32_t head) const;

  // Appends to `*out` the byte ranges that hold `slice`, in increasing
  // address order, merged where adjacent (also with the last range already in
  // `*out`). OutOfRange naming the index when the slice leaves the geometry
  // (a part >= num_parts included) or is empty; then `*out` is unchanged.
  absl::Status AppendSliceRanges(const KvSlice& slice,
                                 std::vector<ByteRange>* out) const;

  // The byte ranges holding every block of `list` (all layers and parts):
  // run by run in the order of the list, inside a run in increasing address
  // order, merged where adjacent. One range per run for a block-major pool,
  // P * L per run for a layer-major one (fewer where runs meet).
  // OutOfRange when a block id is not in the pool.
  absl::StatusOr<std::vector<ByteRange>> BlockListRanges(
      const BlockList& list) const;

  // OutOfRange naming the first block of `list` outside [0, num_blocks).
  absl::Status CheckBlocks(const BlockList& list) const;

  // "vllm_flash_infer(NHD) L=32 P=2 blocks=4096 T=16 H=8 D=128 dtype=2
  // regions=32".
  std::string ToString() const;

  // ---- Agreement between peers ----

  // The compact wire form: magic, version, geometry, name, and the tensor
  // table (stored as an affine rule when the tensors follow one, as every
  // preset's do: about 120 bytes; else 36 bytes per tensor).
  std::string Serialize() const;

  // Reads Serialize()'s output; the bytes may come from the network.
  // InvalidArgument naming the field for truncated, oversized or
  // inconsistent input and for any layout CreateStrided rejects. At most
  // kMaxSerializedTensors tensors.
  static absl::StatusOr<KvLayout> Parse(std::string_view bytes);
  static constexpr uint32_t kMaxSerializedTensors = 1024;

  // 64 bits of SHA-256 over the canonical form of the geometry and tensor
  // table (not the name): equal for layouts that place every byte alike,
  // whichever factory made them; stable across processes and hosts.
  uint64_t Fingerprint() const;

 private:
  friend struct internal::KvLayoutAccess;
  explicit KvLayout(std::shared_ptr<const internal::KvLayoutData> data);

  std::shared_ptr<const internal::KvLayoutData> data_;
};

// Two layouts are equal when they place every byte alike (the name is not
// compared).
FLOWKV_EXPORT bool operator==(const KvLayout& a, const KvLayout& b);

// OK when pools with layouts `a` and `b` can exchange KV: the same
// num_layers, num_parts, head_dim and dtype_bytes, and kv_heads of one a
// multiple of the other's (heterogeneous tensor parallelism: the larger side
// is split into head ranges of the smaller side's size). Otherwise
// InvalidArgument naming the field and both values ("kv_heads: 8 and 3, neither
// divides the other"). Block sizes, orders and pool sizes may differ.
FLOWKV_EXPORT absl::Status CheckKvExchange(const KvLayout& a,
                                           const KvLayout& b);

}  // namespace flowkv

#endif  // FLOWKV_KV_LAYOUT_H_
