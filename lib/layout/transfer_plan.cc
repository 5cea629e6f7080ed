// SPDX-License-Identifier: Apache-2.0
// TransferPlan: PlanTransfer / AppendTransferPlan / CountTransferOps, the
// aligned walk of two strided KvLayouts (ApplyPlanLocally is in
// plan_apply.cc). Reads the layouts' tables through
// lib/layout/kv_layout_internal.h; calls nothing else but Abseil.
#include "flowkv/transfer_plan.h"

#include <algorithm>

#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "lib/layout/kv_layout_internal.h"

namespace flowkv {
namespace {

using internal::KvLayoutData;

// How the planner addresses one pool. Positions `x` along the token axis are
// "pool positions": block * units_per_block + unit inside the block, where a
// unit is a token (token mode) or a whole block (tile mode).
struct Side {
  const KvLayoutData* d = nullptr;
  uint64_t block_tokens = 0;
  uint64_t head_begin = 0;
  uint64_t units_per_block = 1;
  // True when the side's addresses are affine in x only inside one block, so
  // pieces must not cross its block boundaries.
  bool needs_cut = false;
};

struct Plan {
  Side src;
  Side dst;
  bool tile_mode = false;
  // Both layouts place their (layer, part) tensors by one affine rule, so
  // layers and parts can be strided dimensions of an op walk.
  bool affine = false;
  uint32_t layer_begin = 0;
  uint32_t num_layers = 0;
  uint32_t num_parts = 0;
  uint64_t num_heads = 0;
  uint64_t units = 0;  // Tokens (token mode) or blocks (tile mode).
  uint64_t element_bytes = 0;
};

// The byte offset of pool position x inside tensor t (before the head).
uint64_t XOffset(const Plan& plan, const Side& side, const KvTensor& t,
                 uint64_t x) {
  if (plan.tile_mode) return x * t.block_stride;
  return x / side.block_tokens * t.block_stride +
         x % side.block_tokens * t.token_stride;
}

// The byte step between consecutive pool positions inside a block.
uint64_t XStride(const Plan& plan, const Side& side, const KvTensor& t) {
  return plan.tile_mode || side.block_tokens == 1 ? t.block_stride
                                                  : t.token_stride;
}

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

// Calls f(src_x, dst_x, units, repeats, period) for every piece: the
// aligned runs cut further at the block boundaries of each side that needs
// it. A piece is `repeats` spans of `units` positions, `period` positions
// apart: whole blocks of the cutting side(s) come as one piece (units =
// period = block_tokens), so a run of blocks is walked as a strided
// dimension. Inside a span both sides are affine in x.
template <typename F>
void ForEachPiece(const Plan& plan, const Segments& segments, F&& f) {
  const bool cut_src = plan.src.needs_cut;
  const bool cut_dst = plan.dst.needs_cut;
  const uint64_t st = plan.src.block_tokens;
  const uint64_t dt = plan.dst.block_tokens;
  // The whole-block period, when both cutting sides share one.
  const uint64_t period = cut_src && cut_dst ? (st == dt ? st : 0)
                          : cut_src          ? st
                                             : dt;
  for (Segment seg : segments) {
    if (!cut_src && !cut_dst) {
      f(seg.src_x, seg.dst_x, seg.units, 1, 0);
      continue;
    }
    while (seg.units > 0) {
      uint64_t step = seg.units;
      uint64_t repeats = 1;
      if (period != 0 && seg.units >= period &&
          (!cut_src || seg.src_x % st == 0) &&
          (!cut_dst || seg.dst_x % dt == 0)) {
        step = period;
        repeats = seg.units / period;
      } else {
        if (cut_src) step = std::min(step, st - seg.src_x % st);
        if (cut_dst) step = std::min(step, dt - seg.dst_x % dt);
      }
      f(seg.src_x, seg.dst_x, step, repeats, period);
      seg.src_x += step * repeats;
      seg.dst_x += step * repeats;
      seg.units -= step * repeats;
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

// An index range of one of the walked dimensions (layers, parts, heads).
struct Span1 {
  uint64_t begin;
  uint64_t count;
};

// Emits the ops of one piece (pool positions [xs, +n) -> [xd, +n), repeated
// `repeats` times `period` positions apart) for layers, parts and heads in
// the given ranges: the dims are walked in source memory order, and the
// innermost dims contiguous on both sides fold into the op length. Layer
// and part ranges longer than 1 need plan.affine.
template <typename Sink>
void EmitPiece(const Plan& plan, uint64_t xs, uint64_t xd, uint64_t n,
               uint64_t repeats, uint64_t period, Span1 layers, Span1 parts,
               Span1 heads, Sink& sink) {
  const KvLayoutData& s = *plan.src.d;
  const KvLayoutData& d = *plan.dst.d;
  const auto layer = static_cast<uint32_t>(layers.begin);
  const auto part = static_cast<uint32_t>(parts.begin);
  const KvTensor& st = s.tensor(layer, part);
  const KvTensor& dt = d.tensor(layer, part);
  const uint64_t src_base = XOffset(plan, plan.src, st, xs);
  const uint64_t dst_base = XOffset(plan, plan.dst, dt, xd);
  const Dim all[5] = {
      {repeats,
       repeats > 1 ? XOffset(plan, plan.src, st, xs + period) - src_base : 0,
       repeats > 1 ? XOffset(plan, plan.dst, dt, xd + period) - dst_base : 0, 0,
       0},
      {layers.count, s.layer_offset_step, d.layer_offset_step,
       s.layer_region_step, d.layer_region_step},
      {parts.count, s.part_offset_step, d.part_offset_step, s.part_region_step,
       d.part_region_step},
      {n, XStride(plan, plan.src, st), XStride(plan, plan.dst, dt), 0, 0},
      {plan.tile_mode ? 1 : heads.count, st.head_stride, dt.head_stride, 0, 0}};
  Dim dims[5];
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
  uint64_t src_offset = st.offset + src_base;
  uint64_t dst_offset = dt.offset + dst_base;
  if (!plan.tile_mode) {
    src_offset += (plan.src.head_begin + heads.begin) * st.head_stride;
    dst_offset += (plan.dst.head_begin + heads.begin) * dt.head_stride;
  }
  TransferOp op{st.region, src_offset, dt.region, dst_offset, chunk};
  uint64_t index[5] = {0, 0, 0, 0, 0};
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
// rest): the layer, part and head dimensions that the source stores outside
// its blocks (other regions, or strides past all blocks) become loops around
// the walk over the aligned runs; the others are walked inside each piece.
template <typename Sink>
void Generate(const Plan& plan, const TransferPlanRequest& request,
              Sink& sink) {
  if (plan.units == 0) return;
  Segments segments;
  AlignedRuns(plan, request.src_blocks, request.dst_blocks, &segments);

  enum Kind : uint8_t { kLayers, kParts, kHeads };
  struct Outer {
    Kind kind;
    uint64_t extent;
    uint32_t region_step;
    uint64_t stride;
  };
  const KvLayoutData& s = *plan.src.d;
  const KvTensor& first = s.tensor(plan.layer_begin, 0);
  const uint64_t beyond = uint64_t{s.geometry.num_blocks} * first.block_stride;
  auto outside = [&](uint32_t region_step, uint64_t stride) {
    return region_step != 0 || stride >= beyond;
  };
  Outer outer[3];
  int num_outer = 0;
  const bool layers_outer =
      plan.num_layers > 1 &&
      (!plan.affine || outside(s.layer_region_step, s.layer_offset_step));
  const bool parts_outer =
      plan.num_parts > 1 &&
      (!plan.affine || outside(s.part_region_step, s.part_offset_step));
  const bool heads_outer = !plan.tile_mode && plan.num_heads > 1 &&
                           s.uniform_strides && outside(0, first.head_stride);
  if (layers_outer) {
    outer[num_outer++] = {kLayers, plan.num_layers, s.layer_region_step,
                          s.layer_offset_step};
  }
  if (parts_outer) {
    outer[num_outer++] = {kParts, plan.num_parts, s.part_region_step,
                          s.part_offset_step};
  }
  if (heads_outer) {
    outer[num_outer++] = {kHeads, plan.num_heads, 0, first.head_stride};
  }
  if (plan.affine) {  // Source memory order; else layers, parts, heads.
    for (int i = 1; i < num_outer; ++i) {  // Insertion sort of <= 3.
      for (int k = i; k > 0; --k) {
        const Outer& a = outer[k - 1];
        const Outer& b = outer[k];
        if (a.region_step > b.region_step ||
            (a.region_step == b.region_step && a.stride >= b.stride)) {
          break;
        }
        std::swap(outer[k - 1], outer[k]);
      }
    }
  }
  uint64_t index[3] = {0, 0, 0};
  while (true) {
    Span1 layers{plan.layer_begin, plan.num_layers};
    Span1 parts{0, plan.num_parts};
    Span1 heads{0, plan.num_heads};
    for (int i = 0; i < num_outer; ++i) {
      Span1& span = outer[i].kind == kLayers  ? layers
                    : outer[i].kind == kParts ? parts
                                              : heads;
      span = {span.begin + index[i], 1};
    }
    ForEachPiece(plan, segments,
                 [&](uint64_t xs, uint64_t xd, uint64_t n, uint64_t repeats,
                     uint64_t period) {
                   EmitPiece(plan, xs, xd, n, repeats, period, layers, parts,
                             heads, sink);
                 });
    int k = num_outer - 1;
    for (; k >= 0; --k) {
      if (++index[k] < outer[k].extent) break;
      index[k] = 0;
    }
    if (k < 0) return;
  }
}

// True when some tensor of `d` in layers [begin, +count) is affine in the
// token position only inside one block.
bool NeedsCut(const KvLayoutData& d, uint32_t begin, uint32_t count) {
  const uint64_t tokens = d.geometry.block_tokens;
  if (tokens == 1) return false;
  if (d.uniform_strides) return d.block_stride != tokens * d.token_stride;
  for (uint32_t l = begin; l < begin + count; ++l) {
    for (uint32_t p = 0; p < d.geometry.num_parts; ++p) {
      const KvTensor& t = d.tensor(l, p);
      if (t.block_stride != tokens * t.token_stride) return true;
    }
  }
  return false;
}

Side MakeSide(const KvLayout& layout, uint64_t head_begin, const Plan& plan) {
  Side side;
  side.d = &internal::LayoutData(layout);
  side.block_tokens = side.d->geometry.block_tokens;
  side.head_begin = head_begin;
  side.units_per_block = plan.tile_mode ? 1 : side.block_tokens;
  side.needs_cut =
      !plan.tile_mode && NeedsCut(*side.d, plan.layer_begin, plan.num_layers);
  return side;
}

absl::Status CheckCoverage(const char* side, const BlockList& list,
                           uint32_t block_tokens, uint64_t num_tokens) {
  uint64_t covered = 0;
  if (__builtin_mul_overflow(list.num_blocks(), uint64_t{block_tokens},
                             &covered)) {
    return absl::OkStatus();  // Covers more than any uint64 num_tokens.
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
  const std::pair<const char*, std::pair<uint32_t, uint32_t>> same[] = {
      {"head_dim", {sg.head_dim, dg.head_dim}},
      {"dtype_bytes", {sg.dtype_bytes, dg.dtype_bytes}},
      {"num_parts", {sg.num_parts, dg.num_parts}}};
  for (const auto& [name, values] : same) {
    if (values.first != values.second) {
      return absl::InvalidArgumentError(
          absl::StrFormat("TransferPlan: %s differs: source %u, destination %u",
                          name, values.first, values.second));
    }
  }
  Plan plan;
  plan.num_parts = sg.num_parts;
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
  const std::optional<BlockOrder> src_tile = r.src_layout->tile_order();
  plan.tile_mode = sg.block_tokens == dg.block_tokens &&
                   sg.kv_heads == dg.kv_heads && heads == sg.kv_heads &&
                   src_tile.has_value() &&
                   src_tile == r.dst_layout->tile_order();
  // Ceiling division without the wrap of (n + T - 1) / T.
  const uint64_t blocks = r.num_tokens / sg.block_tokens +
                          (r.num_tokens % sg.block_tokens != 0 ? 1 : 0);
  plan.units = plan.tile_mode ? blocks : r.num_tokens;
  plan.element_bytes =
      plan.tile_mode ? r.src_layout->tile_bytes() : r.src_layout->head_bytes();
  // Every byte count of the plan fits in 64 bits (op lengths, offsets).
  uint64_t bytes = plan.units;
  for (uint64_t factor :
       {plan.element_bytes, plan.tile_mode ? uint64_t{1} : heads,
        uint64_t{plan.num_layers}, uint64_t{sg.num_parts}}) {
    if (__builtin_mul_overflow(bytes, factor, &bytes)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "TransferPlan: num_tokens %u moves more than 2^64 bytes (%u %s of "
          "%u bytes, %u heads, %u layers, %u parts)",
          r.num_tokens, plan.units, plan.tile_mode ? "blocks" : "tokens",
          plan.element_bytes, plan.tile_mode ? sg.kv_heads : heads,
          plan.num_layers, sg.num_parts));
    }
  }
  const internal::KvLayoutData& sd = internal::LayoutData(*r.src_layout);
  const internal::KvLayoutData& dd = internal::LayoutData(*r.dst_layout);
  plan.affine = sd.affine && dd.affine;
  plan.src = MakeSide(*r.src_layout, r.src_head_begin, plan);
  plan.dst = MakeSide(*r.dst_layout, r.dst_head_begin, plan);
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

}  // namespace flowkv
