// SPDX-License-Identifier: Apache-2.0
// Bindings of the layout concepts: KvGeometry, KvLayout (every preset,
// CreateStrided, the address math, Serialize / Parse / Fingerprint),
// BlockList, TransferOp and PlanTransfer (flowkv/kv_layout.h,
// flowkv/block_list.h, flowkv/transfer_plan.h).

#include <pybind11/operators.h>
#include <pybind11/stl.h>
#include <string>
#include <vector>

#include "bindings.h"
#include "flowkv/block_list.h"
#include "flowkv/kv_layout.h"
#include "flowkv/transfer_plan.h"

namespace flowkv::python {

namespace {

// The largest block id: a run may not pass UINT32_MAX (as in the C API).
constexpr uint64_t kLastBlockId = uint64_t{UINT32_MAX} - 1;

// `count` blocks from `first`; InvalidArgumentError naming `name` for
// values outside [0, 2**32) or a run past the last block id.
BlockRun CheckedRun(py::handle first, py::handle count,
                    const std::string& name) {
  const uint32_t f = ToInt<uint32_t>(first, (name + ": first").c_str());
  const uint32_t c = ToInt<uint32_t>(count, (name + ": count").c_str());
  if (uint64_t{f} + c > kLastBlockId + 1) {
    ThrowStatus(absl::InvalidArgumentError(
        name + ": {first " + std::to_string(f) + ", count " +
        std::to_string(c) + "} passes the last block id " +
        std::to_string(kLastBlockId)));
  }
  return {f, c};
}

}  // namespace

BlockList ToBlockList(py::handle blocks) {
  if (py::isinstance<BlockList>(blocks)) return blocks.cast<BlockList>();
  if (!PySequence_Check(blocks.ptr()) || py::isinstance<py::str>(blocks) ||
      py::isinstance<py::bytes>(blocks)) {
    ThrowStatus(absl::InvalidArgumentError(
        "blocks: expected a flowkv.BlockList or a sequence of block ids "
        "(ints in [0, 2**32 - 2]), got " +
        py::str(py::type::handle_of(blocks).attr("__name__"))
            .cast<std::string>()));
  }
  std::vector<BlockId> ids = ToIntVector<BlockId>(blocks, "blocks");
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] > kLastBlockId) {
      ThrowStatus(absl::InvalidArgumentError(
          "blocks[" + std::to_string(i) + "]: " + std::to_string(ids[i]) +
          " is out of range [0, " + std::to_string(kLastBlockId) + "]"));
    }
  }
  return BlockList::FromIds(ids);
}

std::vector<TransferOp> ToOps(py::handle ops) {
  const auto refuse = [](const std::string& where) {
    ThrowStatus(absl::InvalidArgumentError(
        where +
        ": expected flowkv.TransferOp or (src_region, src_offset, "
        "dst_region, dst_offset, length) tuples of non-negative ints"));
  };
  if (!PySequence_Check(ops.ptr()) || py::isinstance<py::str>(ops) ||
      py::isinstance<py::bytes>(ops)) {
    refuse("ops");
  }
  std::vector<TransferOp> out;
  const py::sequence seq = py::reinterpret_borrow<py::sequence>(ops);
  out.reserve(seq.size());
  for (size_t i = 0; i < seq.size(); ++i) {
    const py::object op = seq[i];
    const std::string name = "ops[" + std::to_string(i) + "]";
    if (py::isinstance<TransferOp>(op)) {
      out.push_back(op.cast<TransferOp>());
      continue;
    }
    if (!PySequence_Check(op.ptr()) || py::len(op) != 5) refuse(name);
    const py::sequence t = py::reinterpret_borrow<py::sequence>(op);
    out.push_back({ToInt<RegionId>(t[0], (name + ": src_region").c_str()),
                   ToInt<uint64_t>(t[1], (name + ": src_offset").c_str()),
                   ToInt<RegionId>(t[2], (name + ": dst_region").c_str()),
                   ToInt<uint64_t>(t[3], (name + ": dst_offset").c_str()),
                   ToInt<uint64_t>(t[4], (name + ": length").c_str())});
  }
  return out;
}

namespace {

using Factory = absl::StatusOr<KvLayout> (*)(const KvGeometry&, BlockOrder);

void InitGeometry(py::module_& m) {
  py::enum_<PoolOrder>(m, "PoolOrder")
      .value("LAYER_MAJOR", PoolOrder::kLayerMajor)
      .value("BLOCK_MAJOR", PoolOrder::kBlockMajor);
  py::enum_<BlockOrder>(m, "BlockOrder",
                        "Order inside one block of one (layer, part).")
      .value("NHD", BlockOrder::kNHD)
      .value("HND", BlockOrder::kHND);
  py::enum_<RegionSplit>(m, "RegionSplit")
      .value("ONE_PER_POOL", RegionSplit::kOnePerPool)
      .value("ONE_PER_LAYER", RegionSplit::kOnePerLayer);
  py::enum_<KvPart>(m, "KvPart")
      .value("KEY", KvPart::kKey)
      .value("VALUE", KvPart::kValue);
  py::enum_<VllmKvLayout>(m, "VllmKvLayout",
                          "vLLM's standardized KV cache layouts.")
      .value("LBNHC", VllmKvLayout::kLBNHC)
      .value("LBHNC", VllmKvLayout::kLBHNC)
      .value("LHBNC", VllmKvLayout::kLHBNC)
      .value("BLNHC", VllmKvLayout::kBLNHC)
      .value("BLHNC", VllmKvLayout::kBLHNC)
      .value("BHLNC", VllmKvLayout::kBHLNC);

  py::class_<KvGeometry>(m, "KvGeometry",
                         "The sizes of a pool. Every field must be non-zero; "
                         "num_parts is 1 (MLA latent) or 2 (K and V).")
      .def(py::init(
               [](U32<"num_layers"> num_layers, U32<"num_blocks"> num_blocks,
                  U32<"block_tokens"> block_tokens, U32<"kv_heads"> kv_heads,
                  U32<"head_dim"> head_dim, U32<"dtype_bytes"> dtype_bytes,
                  U32<"num_parts"> num_parts) {
                 return KvGeometry{num_layers, num_blocks, block_tokens,
                                   kv_heads,   head_dim,   dtype_bytes,
                                   num_parts};
               }),
           py::kw_only(), py::arg("num_layers") = 0, py::arg("num_blocks") = 0,
           py::arg("block_tokens") = 0, py::arg("kv_heads") = 0,
           py::arg("head_dim") = 0, py::arg("dtype_bytes") = 0,
           py::arg("num_parts") = 2)
      .def_property("num_layers", FLOWKV_INT_FIELD(KvGeometry, num_layers))
      .def_property("num_blocks", FLOWKV_INT_FIELD(KvGeometry, num_blocks))
      .def_property("block_tokens", FLOWKV_INT_FIELD(KvGeometry, block_tokens))
      .def_property("kv_heads", FLOWKV_INT_FIELD(KvGeometry, kv_heads))
      .def_property("head_dim", FLOWKV_INT_FIELD(KvGeometry, head_dim))
      .def_property("dtype_bytes", FLOWKV_INT_FIELD(KvGeometry, dtype_bytes))
      .def_property("num_parts", FLOWKV_INT_FIELD(KvGeometry, num_parts))
      .def(py::self == py::self)
      .def("__repr__", [](const KvGeometry& g) {
        return "KvGeometry(num_layers=" + std::to_string(g.num_layers) +
               ", num_blocks=" + std::to_string(g.num_blocks) +
               ", block_tokens=" + std::to_string(g.block_tokens) +
               ", kv_heads=" + std::to_string(g.kv_heads) +
               ", head_dim=" + std::to_string(g.head_dim) +
               ", dtype_bytes=" + std::to_string(g.dtype_bytes) +
               ", num_parts=" + std::to_string(g.num_parts) + ")";
      });

  py::class_<KvTensor>(m, "KvTensor",
                       "Where one (layer, part) tensor lives: element (block, "
                       "token, head) starts at offset + block*block_stride + "
                       "token*token_stride + head*head_stride in `region`.")
      .def(py::init([](U32<"region"> region, U64<"offset"> offset,
                       U64<"block_stride"> block_stride,
                       U64<"token_stride"> token_stride,
                       U64<"head_stride"> head_stride) {
             return KvTensor{region, offset, block_stride, token_stride,
                             head_stride};
           }),
           py::kw_only(), py::arg("region") = 0, py::arg("offset") = 0,
           py::arg("block_stride") = 0, py::arg("token_stride") = 0,
           py::arg("head_stride") = 0)
      .def_property("region", FLOWKV_INT_FIELD(KvTensor, region))
      .def_property("offset", FLOWKV_INT_FIELD(KvTensor, offset))
      .def_property("block_stride", FLOWKV_INT_FIELD(KvTensor, block_stride))
      .def_property("token_stride", FLOWKV_INT_FIELD(KvTensor, token_stride))
      .def_property("head_stride", FLOWKV_INT_FIELD(KvTensor, head_stride))
      .def(py::self == py::self);

  py::class_<ByteRange>(m, "ByteRange")
      .def_readonly("region", &ByteRange::region)
      .def_readonly("offset", &ByteRange::offset)
      .def_readonly("length", &ByteRange::length)
      .def("__repr__",
           [](const ByteRange& r) {
             return "ByteRange(region=" + std::to_string(r.region) +
                    ", offset=" + std::to_string(r.offset) +
                    ", length=" + std::to_string(r.length) + ")";
           })
      .def(py::self == py::self);
}

void InitBlockList(py::module_& m) {
  py::class_<BlockList>(m, "BlockList",
                        "The KV blocks of one request as contiguous runs "
                        "(first, count), in token order.")
      .def(py::init<>())
      .def(py::init([](py::handle ids) { return ToBlockList(ids); }),
           py::arg("ids"), "A list from block ids in token order.")
      .def_static(
          "from_runs",
          [](py::handle runs) {
            std::vector<BlockRun> r;
            if (!PySequence_Check(runs.ptr())) {
              ThrowStatus(absl::InvalidArgumentError(
                  "runs: expected a sequence of (first, count) pairs"));
            }
            const py::sequence seq = py::reinterpret_borrow<py::sequence>(runs);
            r.reserve(seq.size());
            for (size_t i = 0; i < seq.size(); ++i) {
              const std::string name = "runs[" + std::to_string(i) + "]";
              const py::handle run = seq[i];
              if (!PySequence_Check(run.ptr()) || py::len(run) != 2) {
                ThrowStatus(absl::InvalidArgumentError(
                    name + ": expected a (first, count) pair"));
              }
              r.push_back(CheckedRun(run[py::int_(0)], run[py::int_(1)], name));
            }
            return BlockList::FromRuns(r);
          },
          py::arg("runs"), "A list from (first, count) runs; merges adjacent.")
      .def(
          "append",
          [](BlockList& l, py::handle first, py::handle count) {
            const BlockRun run = CheckedRun(first, count, "append");
            l.Append(run.first, run.count);
          },
          py::arg("first"), py::arg("count"),
          "Appends `count` blocks from `first` (extends the last run when "
          "adjacent).")
      .def("append_list", &BlockList::AppendList, py::arg("other"))
      .def_property_readonly("runs",
                             [](const BlockList& l) {
                               std::vector<std::pair<BlockId, uint32_t>> r;
                               for (const BlockRun& run : l.runs()) {
                                 r.emplace_back(run.first, run.count);
                               }
                               return r;
                             })
      .def_property_readonly("num_runs", &BlockList::num_runs)
      .def_property_readonly("num_blocks", &BlockList::num_blocks)
      .def("to_ids", &BlockList::ToIds)
      .def("clear", &BlockList::Clear)
      .def("__len__", &BlockList::num_blocks)
      .def("__bool__", [](const BlockList& l) { return !l.empty(); })
      .def("__getitem__",
           [](const BlockList& l, Int<int64_t, "index"> index_arg) {
             // Python's rules: negative indices count from the end.
             const int64_t n = static_cast<int64_t>(l.num_blocks());
             const int64_t index = index_arg < 0 ? index_arg + n : index_arg;
             if (index < 0 || index >= n) {
               throw py::index_error("BlockList index " +
                                     std::to_string(index_arg) +
                                     " out of range");
             }
             return l.BlockAt(static_cast<uint64_t>(index));
           })
      .def("__repr__",
           [](const BlockList& l) { return "BlockList(" + l.ToString() + ")"; })
      .def(py::self == py::self);
  py::implicitly_convertible<py::list, BlockList>();
}

void InitLayoutClass(py::module_& m) {
  py::class_<KvLayout> layout(
      m, "KvLayout",
      "Where every byte of a KV cache pool lives (an immutable value). Make "
      "one with a preset (flowkv_block_major, vllm_flash_attn, ...), create "
      "or create_strided; every factory raises InvalidArgumentError naming "
      "the bad field.");
  const auto preset = [&](const char* name, Factory f, const char* doc) {
    layout.def_static(
        name,
        [f](const KvGeometry& g, BlockOrder order) {
          return Unwrap(f(g, order));
        },
        py::arg("geometry"), py::arg("order") = BlockOrder::kNHD, doc);
  };
  preset("flowkv_block_major", &KvLayout::FlowKvBlockMajor,
         "FlowKV's block-major pool, one region: NHD [N, L, P, T, H, D]; HND "
         "[N, L, P, H, T, D].");
  preset("vllm_flash_attn", &KvLayout::VllmFlashAttn,
         "vLLM FlashAttention (before the layout refactor), per layer NHD [2, "
         "N, T, H, D]: L regions, region l = layer l. Requires num_parts 2.");
  preset("vllm_flash_infer", &KvLayout::VllmFlashInfer,
         "vLLM FlashInfer, per layer NHD [N, 2, T, H, D]: L regions. Requires "
         "num_parts 2.");
  preset("vllm_cross_layer", &KvLayout::VllmCrossLayer,
         "vLLM cross-layer KV blocks, one region: NHD [N, L, P, T, H, D]; HND "
         "[N, H, L, P, T, D].");
  layout
      .def_static(
          "vllm",
          [](const KvGeometry& g, VllmKvLayout l, RegionSplit split) {
            return Unwrap(KvLayout::Vllm(g, l, split));
          },
          py::arg("geometry"), py::arg("layout"),
          py::arg("split") = RegionSplit::kOnePerPool,
          "vLLM's standardized layouts (K then V in the content dimension); "
          "ONE_PER_LAYER only for layer-outermost layouts.")
      .def_static(
          "sglang_mha",
          [](const KvGeometry& g) { return Unwrap(KvLayout::SglangMha(g)); },
          py::arg("geometry"),
          "SGLang MHATokenToKVPool: 2L regions, K of every layer then V.")
      .def_static(
          "mla", [](const KvGeometry& g) { return Unwrap(KvLayout::Mla(g)); },
          py::arg("geometry"),
          "MLA latent cache, per layer [N, T, D]: L regions. Requires "
          "num_parts 1, kv_heads 1.")
      .def_static(
          "trtllm_block_pool",
          [](const KvGeometry& g) {
            return Unwrap(KvLayout::TrtllmBlockPool(g));
          },
          py::arg("geometry"),
          "TensorRT-LLM's block pool, one region: [N, L, P, H, T, D].")
      .def_static(
          "create",
          [](const KvGeometry& g, PoolOrder pool_order, BlockOrder block_order,
             RegionSplit split) {
            return Unwrap(
                KvLayout::Create({g, pool_order, block_order, split}));
          },
          py::arg("geometry"), py::arg("pool_order") = PoolOrder::kBlockMajor,
          py::arg("block_order") = BlockOrder::kNHD,
          py::arg("region_split") = RegionSplit::kOnePerPool,
          "The original orders (block-major or layer-major).")
      .def_static(
          "create_strided",
          [](const KvGeometry& g, std::vector<KvTensor> tensors) {
            return Unwrap(KvLayout::CreateStrided({g, std::move(tensors)}));
          },
          py::arg("geometry"), py::arg("tensors"),
          "Any strided pool: tensors[layer * num_parts + part].")
      .def_static(
          "parse",
          [](py::bytes bytes) {
            return Unwrap(KvLayout::Parse(std::string_view(bytes)));
          },
          py::arg("data"),
          "Reads serialize()'s output (bytes may come from the network); "
          "InvalidArgumentError for malformed input.")
      .def("serialize",
           [](const KvLayout& l) { return py::bytes(l.Serialize()); })
      .def("fingerprint", &KvLayout::Fingerprint,
           "64 bits identifying the exact byte layout (not the name).")
      .def_property_readonly("geometry", &KvLayout::geometry)
      .def_property_readonly("name", &KvLayout::name)
      .def_property_readonly("num_parts", &KvLayout::num_parts)
      .def_property_readonly("num_regions", &KvLayout::num_regions)
      .def_property_readonly("tensors",
                             [](const KvLayout& l) {
                               return std::vector<KvTensor>(l.tensors().begin(),
                                                            l.tensors().end());
                             })
      .def_property_readonly("tile_order", &KvLayout::tile_order)
      .def(
          "region_bytes",
          [](const KvLayout& l, std::optional<uint32_t> region) {
            if (!region) return l.region_bytes();
            if (*region >= l.num_regions()) {
              ThrowStatus(absl::OutOfRangeError(
                  "region " + std::to_string(*region) + " >= num_regions " +
                  std::to_string(l.num_regions())));
            }
            return l.region_bytes(*region);
          },
          py::arg("region") = py::none(),
          "Bytes of region `region`, or of the largest region.")
      .def_property_readonly("total_bytes", &KvLayout::total_bytes)
      .def_property_readonly("head_bytes", &KvLayout::head_bytes)
      .def_property_readonly("token_bytes", &KvLayout::token_bytes)
      .def_property_readonly("tile_bytes", &KvLayout::tile_bytes)
      .def_property_readonly("block_bytes", &KvLayout::block_bytes)
      .def_property_readonly("bytes_per_token", &KvLayout::bytes_per_token)
      .def(
          "element_address",
          [](const KvLayout& l, U32<"layer"> layer_arg, U32<"part"> part_arg,
             Int<BlockId, "block"> block_arg, U32<"token"> token_arg,
             U32<"head"> head_arg) {
            const uint32_t layer = layer_arg, part = part_arg,
                           block = block_arg, token = token_arg,
                           head = head_arg;
            const KvGeometry& g = l.geometry();
            if (layer >= g.num_layers || part >= g.num_parts ||
                block >= g.num_blocks || token >= g.block_tokens ||
                head >= g.kv_heads) {
              ThrowStatus(absl::OutOfRangeError(
                  "element_address: an index is outside the geometry " +
                  l.ToString()));
            }
            ByteAddress a = l.ElementAddress(layer, static_cast<KvPart>(part),
                                             block, token, head);
            return std::make_pair(a.region, a.offset);
          },
          py::arg("layer"), py::arg("part"), py::arg("block"),
          py::arg("token") = 0, py::arg("head") = 0,
          "(region, offset) of the head vector of (layer, part, block, token, "
          "head).")
      .def(
          "block_list_ranges",
          [](const KvLayout& l, py::handle blocks) {
            return Unwrap(l.BlockListRanges(ToBlockList(blocks)));
          },
          py::arg("blocks"),
          "The byte ranges holding every block of the list (all layers and "
          "parts). OutOfRangeError for a block outside the pool.")
      .def("__str__", &KvLayout::ToString)
      .def("__repr__",
           [](const KvLayout& l) { return "<KvLayout " + l.ToString() + ">"; })
      .def(py::self == py::self)
      .def("__hash__", &KvLayout::Fingerprint);

  m.def(
      "check_kv_exchange",
      [](const KvLayout& a, const KvLayout& b) {
        ThrowIfError(CheckKvExchange(a, b));
      },
      py::arg("a"), py::arg("b"),
      "Raises InvalidArgumentError unless pools with layouts a and b can "
      "exchange KV (same layers, parts, head_dim, dtype; kv_heads dividing).");
}

void InitPlan(py::module_& m) {
  py::class_<TransferOp>(
      m, "TransferOp",
      "One contiguous copy: `length` bytes from (src_region, "
      "src_offset) to (dst_region, dst_offset).")
      .def(py::init([](U32<"src_region"> src_region,
                       U64<"src_offset"> src_offset,
                       U32<"dst_region"> dst_region,
                       U64<"dst_offset"> dst_offset, U64<"length"> length) {
             return TransferOp{src_region, src_offset, dst_region, dst_offset,
                               length};
           }),
           py::arg("src_region"), py::arg("src_offset"), py::arg("dst_region"),
           py::arg("dst_offset"), py::arg("length"))
      .def_property("src_region", FLOWKV_INT_FIELD(TransferOp, src_region))
      .def_property("src_offset", FLOWKV_INT_FIELD(TransferOp, src_offset))
      .def_property("dst_region", FLOWKV_INT_FIELD(TransferOp, dst_region))
      .def_property("dst_offset", FLOWKV_INT_FIELD(TransferOp, dst_offset))
      .def_property("length", FLOWKV_INT_FIELD(TransferOp, length))
      .def(py::self == py::self)
      .def("__repr__", [](const TransferOp& op) {
        return "TransferOp(" + std::to_string(op.src_region) + ", " +
               std::to_string(op.src_offset) + ", " +
               std::to_string(op.dst_region) + ", " +
               std::to_string(op.dst_offset) + ", " +
               std::to_string(op.length) + ")";
      });

  m.def(
      "plan_transfer",
      [](const KvLayout& src_layout, py::handle src_blocks,
         const KvLayout& dst_layout, py::handle dst_blocks,
         U64<"num_tokens"> num_tokens, U32<"layer_begin"> layer_begin,
         U32<"layer_end"> layer_end, U32<"src_head_begin"> src_head_begin,
         U32<"dst_head_begin"> dst_head_begin, U32<"num_heads"> num_heads) {
        TransferPlanRequest request{.src_layout = &src_layout,
                                    .src_blocks = ToBlockList(src_blocks),
                                    .dst_layout = &dst_layout,
                                    .dst_blocks = ToBlockList(dst_blocks),
                                    .num_tokens = num_tokens,
                                    .layer_begin = layer_begin,
                                    .layer_end = layer_end,
                                    .src_head_begin = src_head_begin,
                                    .dst_head_begin = dst_head_begin,
                                    .num_heads = num_heads};
        return Unwrap(PlanTransfer(request));
      },
      py::arg("src_layout"), py::arg("src_blocks"), py::arg("dst_layout"),
      py::arg("dst_blocks"), py::arg("num_tokens"), py::kw_only(),
      py::arg("layer_begin") = 0, py::arg("layer_end") = 0,
      py::arg("src_head_begin") = 0, py::arg("dst_head_begin") = 0,
      py::arg("num_heads") = 0,
      "The minimal list of TransferOp moving a request's KV from one pool "
      "layout to another (flowkv/transfer_plan.h).");
}

}  // namespace

void InitLayout(py::module_& m) {
  InitGeometry(m);
  InitBlockList(m);
  InitLayoutClass(m);
  InitPlan(m);
}

}  // namespace flowkv::python
