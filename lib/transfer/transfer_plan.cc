#include "flowkv/transfer_plan.h"

#include <algorithm>
#include <cstring>

#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace flowkv {
namespace {

// How the planner addresses one pool. Positions `x` along the token axis are
// "pool positions": block * units_per_block + unit inside the block, where a
// unit is a token (general mode) or a whole block (tile mode).
struct Side {
  bool block_major = true;
  bool per_layer_regions = false;
  bool nhd = true;  // Normalized: HND with one head or one token is NHD.
  // True when the side's addresses are affine in x only inside one block, so
  // pieces must not cross its block boundaries.
  bool needs_cut = false;
  uint32_t num_layers = 0;
  uint64_t num_blocks = 0;
  uint64_t block_tokens = 0;
  uint64_t kv_heads = 0;
  uint64_t head_bytes = 0;
  uint64_t tile_bytes = 0;
  uint64_t head_begin = 0;
  uint64_t units_per_block = 1;
  // Byte strides of the logical dims, and region steps (per-layer regions).
  uint64_t layer_stride = 0;
  uint32_t layer_region_step = 0;
  uint64_t part_stride = 0;
  uint64_t x_stride = 0;
  uint64_t head_stride = 0;

  // The address of (layer, part, pool position x, head_begin).
  ByteAddress Base(uint32_t layer, uint32_t part, uint64_t x,
                   bool tile_mode) const {
    uint64_t block = x;
    uint64_t in_tile = 0;
    if (!tile_mode) {
      block = x / block_tokens;
      const uint64_t token = x % block_tokens;
      in_tile = nhd ? (token * kv_heads + head_begin) * head_bytes
                    : (head_begin * block_tokens + token) * head_bytes;
    }
    if (block_major) {
      return {0,
              ((block * num_layers + layer) * 2 + part) * tile_bytes + in_tile};
    }
    const uint64_t in_layer = (part * num_blocks + block) * tile_bytes;
    if (per_layer_regions) return {layer, in_layer + in_tile};
    return {0,
            uint64_t{layer} * 2 * num_blocks * tile_bytes + in_layer + in_tile};
  }
};

struct Plan {
  Side src;
  Side dst;
  bool tile_mode = false;
  uint32_t layer_begin = 0;
  uint32_t num_layers = 0;
  uint64_t num_heads = 0;
  uint64_t units = 0;  // Tokens (general mode) or blocks (tile mode).
  uint64_t element_bytes = 0;
};

bool SrcBefore(const TransferOp& a, const TransferOp& b) {
  return a.src_region != b.src_region ? a.src_region < b.src_region
                                      : a.src_offset < b.src_offset;
}

// True when `next` continues `last` on both sides.
bool Continues(const TransferOp& last, const TransferOp& next) {
  return last.src_region == next.src_region &&
         last.dst_region == next.dst_region &&
         last.src_offset + last.length == next.src_offset &&
         last.dst_offset + last.length == next.dst_offset;
}

// Collects ops into a vector, merging each with the previous one when they
// are adjacent on both sides; notes whether they came in source order.
class VectorSink {
 public:
  explicit VectorSink(std::vector<TransferOp>* out)
      : out_(out), begin_(out->size()) {}

  void Emit(const TransferOp& op) {
    if (out_->size() > begin_) {
      TransferOp& last = out_->back();
      if (Continues(last, op)) {
        last.length += op.length;
        return;
      }
      if (op.src_region < last.src_region ||
          (op.src_region == last.src_region &&
           op.src_offset < last.src_offset + last.length)) {
        in_order_ = false;
      }
    }
    out_->push_back(op);
  }

  // Sorts the new ops by source address and merges them, when the walk did
  // not emit them in that order.
  void Finish() {
    if (in_order_) return;
    auto first = out_->begin() + static_cast<ptrdiff_t>(begin_);
    std::sort(first, out_->end(), SrcBefore);
    auto kept = first;
    for (auto it = first + 1; it != out_->end(); ++it) {
      if (Continues(*kept, *it)) {
        kept->length += it->length;
      } else {
        *++kept = *it;
      }
    }
    out_->erase(kept + 1, out_->end());
  }

 private:
  std::vector<TransferOp>* out_;
  size_t begin_;
  bool in_order_ = true;
};

// Counts ops as VectorSink would keep them, remembering only the last one.
class CountSink {
 public:
  void Emit(const TransferOp& op) {
    if (count_ > 0) {
      if (Continues(last_, op)) {
        last_.length += op.length;
        return;
      }
      if (op.src_region < last_.src_region ||
          (op.src_region == last_.src_region &&
           op.src_offset < last_.src_offset + last_.length)) {
        in_order_ = false;
      }
    }
    last_ = op;
    ++count_;
  }
  uint64_t count() const { return count_; }
  bool in_order() const { return in_order_; }

 private:
  TransferOp last_;
  uint64_t count_ = 0;
  bool in_order_ = true;
};

struct Segment {
  uint64_t src_x;
  uint64_t dst_x;
  uint64_t units;
};

// Up to this many aligned runs are kept on the stack.
using Segments = absl::InlinedVector<Segment, 32>;

// The aligned runs: the request's units cut at every run boundary of either
// list, sorted by source position (source memory order on both pool orders).
void AlignedRuns(const Plan& plan, const BlockList& src_list,
                 const BlockList& dst_list, Segments* out) {
  const absl::Span<const BlockRun> src = src_list.runs();
  const absl::Span<const BlockRun> dst = dst_list.runs();
  const uint64_t su = plan.src.units_per_block;
  const uint64_t du = plan.dst.units_per_block;
  size_t i = 0, j = 0;
  uint64_t i_off = 0, j_off = 0;
  uint64_t left = plan.units;
  while (left > 0) {
    const uint64_t s_len = uint64_t{src[i].count} * su - i_off;
    const uint64_t d_len = uint64_t{dst[j].count} * du - j_off;
    const uint64_t n = std::min({left, s_len, d_len});
    out->push_back({uint64_t{src[i].first} * su + i_off,
                    uint64_t{dst[j].first} * du + j_off, n});
    left -= n;
    i_off += n;
    j_off += n;
    if (i_off == uint64_t{src[i].count} * su) ++i, i_off = 0;
    if (j_off == uint64_t{dst[j].count} * du) ++j, j_off = 0;
  }
  auto by_src = [](const Segment& a, const Segment& b) {
    return a.src_x < b.src_x;
  };
  if (!std::is_sorted(out->begin(), out->end(), by_src)) {
    std::sort(out->begin(), out->end(), by_src);
  }
}

// Calls f(src_x, dst_x, units) for every piece: the aligned runs cut further
// at the block boundaries of each side that needs it. Inside a piece both
// sides are affine in x.
template <typename F>
void ForEachPiece(const Plan& plan, const Segments& segments, F&& f) {
  const bool cut_src = plan.src.needs_cut;
  const bool cut_dst = plan.dst.needs_cut;
  const uint64_t st = plan.src.block_tokens;
  const uint64_t dt = plan.dst.block_tokens;
  for (Segment seg : segments) {
    if (!cut_src && !cut_dst) {
      f(seg.src_x, seg.dst_x, seg.units);
      continue;
    }
    while (seg.units > 0) {
      uint64_t step = seg.units;
      if (cut_src) step = std::min(step, st - seg.src_x % st);
      if (cut_dst) step = std::min(step, dt - seg.dst_x % dt);
      f(seg.src_x, seg.dst_x, step);
      seg.src_x += step;
      seg.dst_x += step;
      seg.units -= step;
    }
  }
}

struct Dim {
  uint64_t extent;
  uint64_t src_stride;
  uint64_t dst_stride;
  uint32_t src_region_step;
  uint32_t dst_region_step;
};

// Emits the ops of one piece, layers [layer, +num_layers), parts
// [part, +num_parts): the dims are walked in source memory order, and the
// innermost dims contiguous on both sides fold into the op length.
template <typename Sink>
void EmitPiece(const Plan& plan, uint64_t xs, uint64_t xd, uint64_t n,
               uint32_t layer, uint32_t num_layers, uint32_t part,
               uint32_t num_parts, Sink& sink) {
  const Side& s = plan.src;
  const Side& d = plan.dst;
  const Dim all[4] = {{num_layers, s.layer_stride, d.layer_stride,
                       s.layer_region_step, d.layer_region_step},
                      {num_parts, s.part_stride, d.part_stride, 0, 0},
                      {n, s.x_stride, d.x_stride, 0, 0},
                      {plan.tile_mode ? 1 : plan.num_heads, s.head_stride,
                       d.head_stride, 0, 0}};
  Dim dims[4];
  int num_dims = 0;
  for (const Dim& dim : all) {
    if (dim.extent <= 1) continue;
    // Insertion sort, outermost first: region steps, then larger strides.
    int k = num_dims++;
    while (k > 0 && (dims[k - 1].src_region_step < dim.src_region_step ||
                     (dims[k - 1].src_region_step == dim.src_region_step &&
                      dims[k - 1].src_stride < dim.src_stride))) {
      dims[k] = dims[k - 1];
      --k;
    }
    dims[k] = dim;
  }
  uint64_t chunk = plan.element_bytes;
  while (num_dims > 0) {
    const Dim& inner = dims[num_dims - 1];
    if (inner.src_region_step != 0 || inner.dst_region_step != 0 ||
        inner.src_stride != chunk || inner.dst_stride != chunk) {
      break;
    }
    chunk *= inner.extent;
    --num_dims;
  }
  const ByteAddress sa = s.Base(layer, part, xs, plan.tile_mode);
  const ByteAddress da = d.Base(layer, part, xd, plan.tile_mode);
  TransferOp op{sa.region, sa.offset, da.region, da.offset, chunk};
  uint64_t index[4] = {0, 0, 0, 0};
  while (true) {
    sink.Emit(op);
    int k = num_dims - 1;
    for (; k >= 0; --k) {
      const Dim& dim = dims[k];
      if (++index[k] < dim.extent) {
        op.src_offset += dim.src_stride;
        op.dst_offset += dim.dst_stride;
        op.src_region += dim.src_region_step;
        op.dst_region += dim.dst_region_step;
        break;
      }
      const uint64_t back = dim.extent - 1;
      index[k] = 0;
      op.src_offset -= dim.src_stride * back;
      op.dst_offset -= dim.dst_stride * back;
      op.src_region -= static_cast<uint32_t>(dim.src_region_step * back);
      op.dst_region -= static_cast<uint32_t>(dim.dst_region_step * back);
    }
    if (k < 0) break;
  }
}

// Walks the plan in source memory order where it can (see Finish for the
// rest).
template <typename Sink>
void Generate(const Plan& plan, const TransferPlanRequest& request,
              Sink& sink) {
  if (plan.units == 0) return;
  Segments segments;
  AlignedRuns(plan, request.src_blocks, request.dst_blocks, &segments);
  if (plan.src.block_major) {
    // A source block holds all its layers: pieces outermost.
    ForEachPiece(plan, segments, [&](uint64_t xs, uint64_t xd, uint64_t n) {
      EmitPiece(plan, xs, xd, n, plan.layer_begin, plan.num_layers, 0, 2, sink);
    });
    return;
  }
  // Layer-major source: layers and parts outermost.
  for (uint32_t l = 0; l < plan.num_layers; ++l) {
    for (uint32_t part = 0; part < 2; ++part) {
      ForEachPiece(plan, segments, [&](uint64_t xs, uint64_t xd, uint64_t n) {
        EmitPiece(plan, xs, xd, n, plan.layer_begin + l, 1, part, 1, sink);
      });
    }
  }
}

Side MakeSide(const KvLayout& layout, uint64_t head_begin, bool tile_mode) {
  const KvGeometry& g = layout.geometry();
  Side side;
  side.block_major = layout.pool_order() == PoolOrder::kBlockMajor;
  side.per_layer_regions = layout.region_split() == RegionSplit::kOnePerLayer;
  side.nhd = layout.block_order() == BlockOrder::kNHD || g.kv_heads == 1 ||
             g.block_tokens == 1;
  side.num_layers = g.num_layers;
  side.num_blocks = g.num_blocks;
  side.block_tokens = g.block_tokens;
  side.kv_heads = g.kv_heads;
  side.head_bytes = layout.head_bytes();
  side.tile_bytes = layout.tile_bytes();
  side.head_begin = head_begin;
  const uint64_t tile = side.tile_bytes;
  side.layer_stride = side.block_major         ? 2 * tile
                      : side.per_layer_regions ? 0
                                               : 2 * side.num_blocks * tile;
  side.layer_region_step = side.per_layer_regions ? 1 : 0;
  side.part_stride = side.block_major ? tile : side.num_blocks * tile;
  if (tile_mode) {
    side.units_per_block = 1;
    side.x_stride = side.block_major ? layout.block_bytes() : tile;
    side.head_stride = 0;
    side.needs_cut = false;
  } else {
    side.units_per_block = g.block_tokens;
    side.x_stride =
        side.nhd ? side.kv_heads * side.head_bytes : side.head_bytes;
    side.head_stride =
        side.nhd ? side.head_bytes : side.block_tokens * side.head_bytes;
    side.needs_cut = side.block_major || !side.nhd;
  }
  return side;
}

absl::Status CheckCoverage(const char* side, const BlockList& list,
                           uint32_t block_tokens, uint64_t num_tokens) {
  uint64_t covered = 0;
  if (__builtin_mul_overflow(list.num_blocks(), uint64_t{block_tokens},
                             &covered)) {
    covered = UINT64_MAX;
  }
  if (covered < num_tokens) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "TransferPlan: %s BlockList covers %u tokens (%u blocks of %u), fewer "
        "than num_tokens %u",
        side, covered, list.num_blocks(), block_tokens, num_tokens));
  }
  return absl::OkStatus();
}

absl::StatusOr<Plan> MakePlan(const TransferPlanRequest& r) {
  if (r.src_layout == nullptr || r.dst_layout == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrFormat("TransferPlan: %s is null",
                        r.src_layout == nullptr ? "src_layout" : "dst_layout"));
  }
  const KvGeometry& sg = r.src_layout->geometry();
  const KvGeometry& dg = r.dst_layout->geometry();
  if (sg.head_dim != dg.head_dim) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "TransferPlan: head_dim differs: source %u, destination %u",
        sg.head_dim, dg.head_dim));
  }
  if (sg.dtype_bytes != dg.dtype_bytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "TransferPlan: dtype_bytes differs: source %u, destination %u",
        sg.dtype_bytes, dg.dtype_bytes));
  }
  Plan plan;
  if (r.layer_begin == 0 && r.layer_end == 0) {
    if (sg.num_layers != dg.num_layers) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "TransferPlan: num_layers differs: source %u, destination %u (give "
          "a layer range to move a common part)",
          sg.num_layers, dg.num_layers));
    }
    plan.layer_begin = 0;
    plan.num_layers = sg.num_layers;
  } else {
    const uint32_t limit = std::min(sg.num_layers, dg.num_layers);
    if (r.layer_begin >= r.layer_end || r.layer_end > limit) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "TransferPlan: layer range [layer_begin %u, layer_end %u) is not a "
          "non-empty part of [0, %u) (num_layers: source %u, destination %u)",
          r.layer_begin, r.layer_end, limit, sg.num_layers, dg.num_layers));
    }
    plan.layer_begin = r.layer_begin;
    plan.num_layers = r.layer_end - r.layer_begin;
  }
  if (r.src_head_begin >= sg.kv_heads) {
    return absl::InvalidArgumentError(
        absl::StrFormat("TransferPlan: src_head_begin %u >= source kv_heads %u",
                        r.src_head_begin, sg.kv_heads));
  }
  const uint64_t heads =
      r.num_heads != 0 ? r.num_heads : sg.kv_heads - r.src_head_begin;
  if (uint64_t{r.src_head_begin} + heads > sg.kv_heads) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "TransferPlan: src_head_begin %u + num_heads %u exceeds source "
        "kv_heads %u",
        r.src_head_begin, heads, sg.kv_heads));
  }
  if (uint64_t{r.dst_head_begin} + heads > dg.kv_heads) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "TransferPlan: dst_head_begin %u + num_heads %u exceeds destination "
        "kv_heads %u",
        r.dst_head_begin, heads, dg.kv_heads));
  }
  plan.num_heads = heads;
  if (absl::Status s = r.src_layout->CheckBlocks(r.src_blocks); !s.ok()) {
    return absl::OutOfRangeError(
        absl::StrCat("TransferPlan: source ", s.message()));
  }
  if (absl::Status s = r.dst_layout->CheckBlocks(r.dst_blocks); !s.ok()) {
    return absl::OutOfRangeError(
        absl::StrCat("TransferPlan: destination ", s.message()));
  }
  if (absl::Status s =
          CheckCoverage("source", r.src_blocks, sg.block_tokens, r.num_tokens);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckCoverage("destination", r.dst_blocks,
                                     dg.block_tokens, r.num_tokens);
      !s.ok()) {
    return s;
  }
  // Whole tiles map onto whole tiles byte for byte: copy whole blocks.
  const bool src_nhd = r.src_layout->block_order() == BlockOrder::kNHD ||
                       sg.kv_heads == 1 || sg.block_tokens == 1;
  const bool dst_nhd = r.dst_layout->block_order() == BlockOrder::kNHD ||
                       dg.kv_heads == 1 || dg.block_tokens == 1;
  plan.tile_mode = sg.block_tokens == dg.block_tokens &&
                   sg.kv_heads == dg.kv_heads && heads == sg.kv_heads &&
                   src_nhd == dst_nhd;
  plan.src = MakeSide(*r.src_layout, r.src_head_begin, plan.tile_mode);
  plan.dst = MakeSide(*r.dst_layout, r.dst_head_begin, plan.tile_mode);
  if (plan.tile_mode) {
    plan.units = (r.num_tokens + sg.block_tokens - 1) / sg.block_tokens;
    plan.element_bytes = r.src_layout->tile_bytes();
  } else {
    plan.units = r.num_tokens;
    plan.element_bytes = r.src_layout->head_bytes();
  }
  return plan;
}

}  // namespace

absl::Status AppendTransferPlan(const TransferPlanRequest& request,
                                std::vector<TransferOp>* out) {
  absl::StatusOr<Plan> plan = MakePlan(request);
  if (!plan.ok()) return plan.status();
  VectorSink sink(out);
  Generate(*plan, request, sink);
  sink.Finish();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<TransferOp>> PlanTransfer(
    const TransferPlanRequest& request) {
  std::vector<TransferOp> ops;
  if (absl::Status s = AppendTransferPlan(request, &ops); !s.ok()) return s;
  return ops;
}

absl::StatusOr<uint64_t> CountTransferOps(const TransferPlanRequest& request) {
  absl::StatusOr<Plan> plan = MakePlan(request);
  if (!plan.ok()) return plan.status();
  CountSink counter;
  Generate(*plan, request, counter);
  if (counter.in_order()) return counter.count();
  // Out of source order: merges may join ops that were not emitted one after
  // the other, so plan for real.
  thread_local std::vector<TransferOp> scratch;
  scratch.clear();
  VectorSink sink(&scratch);
  Generate(*plan, request, sink);
  sink.Finish();
  return scratch.size();
}

absl::Status ApplyPlanLocally(
    absl::Span<const TransferOp> ops,
    absl::Span<const absl::Span<const uint8_t>> src_regions,
    absl::Span<const absl::Span<uint8_t>> dst_regions) {
  for (size_t i = 0; i < ops.size(); ++i) {
    const TransferOp& op = ops[i];
    if (op.src_region >= src_regions.size() ||
        op.dst_region >= dst_regions.size()) {
      return absl::OutOfRangeError(absl::StrFormat(
          "ApplyPlanLocally: op %u names region src %u / dst %u, have %u / %u",
          i, op.src_region, op.dst_region, src_regions.size(),
          dst_regions.size()));
    }
    const uint64_t src_size = src_regions[op.src_region].size();
    const uint64_t dst_size = dst_regions[op.dst_region].size();
    if (op.src_offset > src_size || op.length > src_size - op.src_offset ||
        op.dst_offset > dst_size || op.length > dst_size - op.dst_offset) {
      return absl::OutOfRangeError(absl::StrFormat(
          "ApplyPlanLocally: op %u (src %u:%u, dst %u:%u, length %u) leaves "
          "its regions (%u and %u bytes)",
          i, op.src_region, op.src_offset, op.dst_region, op.dst_offset,
          op.length, src_size, dst_size));
    }
  }
  for (const TransferOp& op : ops) {
    std::memcpy(dst_regions[op.dst_region].data() + op.dst_offset,
                src_regions[op.src_region].data() + op.src_offset, op.length);
  }
  return absl::OkStatus();
}

}  // namespace flowkv
