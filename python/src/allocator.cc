// SPDX-License-Identifier: Apache-2.0
// Bindings of BlockAllocator (flowkv/block_allocator.h): allocate, extend,
// free, share, ref counts, stats and compaction plans, the prefix cache
// (lookup, free with hashes, cache_blocks, clear_cache) and its KV events
// (flowkv/kv_events.h: read_events, snapshot, the wire codec). Every failed
// call raises and changes nothing, as in C++.

#include <memory>
#include <pybind11/stl.h>

#include "bindings.h"
#include "flowkv/block_allocator.h"
#include "flowkv/kv_events.h"

namespace flowkv::python {
namespace {

std::vector<BlockHash> ToHashes(const py::object& hashes) {
  if (hashes.is_none()) return {};
  return ToIntVector<BlockHash>(hashes, "hashes");
}

py::list RunsToPython(const std::vector<BlockRun>& runs) {
  py::list out;
  for (const BlockRun& run : runs)
    out.append(py::make_tuple(run.first, run.count));
  return out;
}

std::string_view BytesView(const py::bytes& bytes) {
  char* data = nullptr;
  Py_ssize_t size = 0;
  PyBytes_AsStringAndSize(bytes.ptr(), &data, &size);
  return std::string_view(data, static_cast<size_t>(size));
}

void InitKvEvents(py::module_& m) {
  py::enum_<KvEvent::Kind>(m, "KvEventKind")
      .value("BLOCK_STORED", KvEvent::Kind::kBlockStored)
      .value("BLOCK_REMOVED", KvEvent::Kind::kBlockRemoved)
      .value("ALL_CLEARED", KvEvent::Kind::kAllCleared);

  py::class_<KvEvent>(m, "KvEvent",
                      "One change of an allocator's prefix cache: hashes "
                      "stored or removed (held by `runs`, in order), or "
                      "everything cleared.")
      .def(py::init<>())
      .def_readwrite("seq", &KvEvent::seq)
      .def_readwrite("kind", &KvEvent::kind)
      .def_readwrite("hashes", &KvEvent::hashes)
      .def_readwrite("has_parent", &KvEvent::has_parent)
      .def_readwrite("parent", &KvEvent::parent)
      .def_property_readonly(
          "runs", [](const KvEvent& e) { return RunsToPython(e.runs); },
          "The blocks holding `hashes`, as (first, count) runs in order.")
      .def("__eq__", [](const KvEvent& a, const KvEvent& b) { return a == b; })
      .def("__repr__", [](const KvEvent& e) {
        return "KvEvent(seq=" + std::to_string(e.seq) +
               ", kind=" + std::to_string(static_cast<int>(e.kind)) +
               ", hashes=" + std::to_string(e.hashes.size()) + ")";
      });

  py::class_<KvEventBatch>(m, "KvEventBatch")
      .def(py::init<>())
      .def_readwrite("events", &KvEventBatch::events)
      .def_readwrite("fell_behind", &KvEventBatch::fell_behind)
      .def_readwrite("latest_seq", &KvEventBatch::latest_seq)
      .def("__eq__",
           [](const KvEventBatch& a, const KvEventBatch& b) { return a == b; });

  py::class_<KvCachedBlock>(m, "KvCachedBlock")
      .def(py::init<>())
      .def_readwrite("hash", &KvCachedBlock::hash)
      .def_readwrite("has_parent", &KvCachedBlock::has_parent)
      .def_readwrite("parent", &KvCachedBlock::parent)
      .def_readwrite("block", &KvCachedBlock::block)
      .def_readwrite("in_use", &KvCachedBlock::in_use)
      .def("__eq__", [](const KvCachedBlock& a, const KvCachedBlock& b) {
        return a == b;
      });

  py::class_<KvCacheSnapshot>(m, "KvCacheSnapshot")
      .def(py::init<>())
      .def_readwrite("seq", &KvCacheSnapshot::seq)
      .def_readwrite("blocks", &KvCacheSnapshot::blocks)
      .def("__eq__", [](const KvCacheSnapshot& a, const KvCacheSnapshot& b) {
        return a == b;
      });

  m.def(
      "encode_kv_event_batch",
      [](const KvEventBatch& batch) {
        return py::bytes(EncodeKvEventBatch(batch));
      },
      py::arg("batch"), "The wire bytes of a batch (flowkv/kv_events.h).");
  m.def(
      "decode_kv_event_batch",
      [](const py::bytes& bytes) {
        return Unwrap(DecodeKvEventBatch(BytesView(bytes)));
      },
      py::arg("data"), "InvalidArgumentError for bytes that are not a batch.");
  m.def(
      "encode_kv_cache_snapshot",
      [](const KvCacheSnapshot& snap) {
        return py::bytes(EncodeKvCacheSnapshot(snap));
      },
      py::arg("snapshot"));
  m.def(
      "decode_kv_cache_snapshot",
      [](const py::bytes& bytes) {
        return Unwrap(DecodeKvCacheSnapshot(BytesView(bytes)));
      },
      py::arg("data"));
}

}  // namespace

void InitAllocator(py::module_& m) {
  InitKvEvents(m);
  py::class_<BlockAllocatorStats>(m, "BlockAllocatorStats")
      .def_readonly("num_blocks", &BlockAllocatorStats::num_blocks)
      .def_readonly("free_blocks", &BlockAllocatorStats::free_blocks)
      .def_readonly("free_runs", &BlockAllocatorStats::free_runs)
      .def_readonly("largest_free_run", &BlockAllocatorStats::largest_free_run)
      .def_readonly("live_lists", &BlockAllocatorStats::live_lists)
      .def_readonly("runs_histogram", &BlockAllocatorStats::runs_histogram)
      .def_readonly("cached_blocks", &BlockAllocatorStats::cached_blocks)
      .def_readonly("indexed_blocks", &BlockAllocatorStats::indexed_blocks)
      .def_readonly("lookups", &BlockAllocatorStats::lookups)
      .def_readonly("lookup_blocks", &BlockAllocatorStats::lookup_blocks)
      .def_readonly("lookup_hit_blocks",
                    &BlockAllocatorStats::lookup_hit_blocks)
      .def_readonly("evictions", &BlockAllocatorStats::evictions)
      .def_readonly("evicted_blocks", &BlockAllocatorStats::evicted_blocks)
      .def_readonly("latest_event_seq", &BlockAllocatorStats::latest_event_seq)
      .def_property_readonly("mean_runs_per_list",
                             &BlockAllocatorStats::MeanRunsPerList);

  py::class_<BlockMove>(m, "BlockMove")
      .def_readonly("src", &BlockMove::from)
      .def_readonly("dst", &BlockMove::to)
      .def_readonly("count", &BlockMove::count)
      .def("__repr__", [](const BlockMove& mv) {
        return "BlockMove(src=" + std::to_string(mv.from) +
               ", dst=" + std::to_string(mv.to) +
               ", count=" + std::to_string(mv.count) + ")";
      });

  py::class_<BlockAllocator, std::unique_ptr<BlockAllocator>>(
      m, "BlockAllocator",
      "Hands out KV blocks of a pool [0, num_blocks) as few contiguous runs "
      "as possible. Thread-safe. Failed calls raise (ResourceExhaustedError, "
      "InvalidArgumentError) and change nothing.")
      .def(py::init([](U32<"num_blocks"> num_blocks,
                       U32<"growth_slack_blocks"> growth_slack_blocks,
                       bool enable_prefix_cache,
                       U32<"event_buffer_capacity"> event_buffer_capacity) {
             return Unwrap(BlockAllocator::Create(
                 {.num_blocks = num_blocks,
                  .growth_slack_blocks = growth_slack_blocks,
                  .enable_prefix_cache = enable_prefix_cache,
                  .event_buffer_capacity = event_buffer_capacity}));
           }),
           py::arg("num_blocks"), py::kw_only(),
           py::arg("growth_slack_blocks") =
               BlockAllocatorOptions{}.growth_slack_blocks,
           py::arg("enable_prefix_cache") = false,
           py::arg("event_buffer_capacity") =
               BlockAllocatorOptions{}.event_buffer_capacity)
      .def(
          "allocate",
          [](BlockAllocator& a, U32<"n"> n, const py::object& after) {
            if (!after.is_none()) {
              if (!PySequence_Check(after.ptr()) || py::len(after) != 2) {
                ThrowStatus(absl::InvalidArgumentError(
                    "allocate: after: expected None or a (first, count) "
                    "pair"));
              }
              return Unwrap(a.Allocate(
                  n, BlockRun{
                         ToInt<BlockId>(after[py::int_(0)], "after.first"),
                         ToInt<uint32_t>(after[py::int_(1)], "after.count")}));
            }
            return Unwrap(a.Allocate(n));
          },
          py::arg("n"), py::kw_only(), py::arg("after") = py::none(),
          "`n` blocks as one run when possible, else the fewest runs. With "
          "after=(first, count): first takes the free blocks right after that "
          "run (prefix continuation).")
      .def(
          "extend",
          [](BlockAllocator& a, BlockList& list, U32<"n"> n) {
            ThrowIfError(a.Extend(&list, n));
          },
          py::arg("blocks"), py::arg("n"),
          "Appends `n` blocks to `blocks` in place (grows its last run when "
          "the blocks after it are free). On error `blocks` is unchanged.")
      .def(
          "free",
          [](BlockAllocator& a, py::handle blocks, const py::object& hashes) {
            const BlockList list = ToBlockList(blocks);
            const std::vector<BlockHash> h = ToHashes(hashes);
            ThrowIfError(a.Free(list, h));
          },
          py::arg("blocks"), py::kw_only(), py::arg("hashes") = py::none(),
          "Drops one reference to each block; InvalidArgumentError (nothing "
          "freed) for a block not allocated or named twice. With hashes (the "
          "chained hashes of the list's full blocks, ints in [0, 2**64)): "
          "records them first, and blocks with a hash whose last reference "
          "goes stay cached for lookup.")
      .def(
          "cache_blocks",
          [](BlockAllocator& a, py::handle blocks, const py::object& hashes) {
            const BlockList list = ToBlockList(blocks);
            const std::vector<BlockHash> h = ToHashes(hashes);
            ThrowIfError(a.CacheBlocks(list, h));
          },
          py::arg("blocks"), py::arg("hashes"),
          "Records the hashes of a running request's full blocks so that "
          "lookups find them now (the blocks stay allocated).")
      .def(
          "lookup",
          [](BlockAllocator& a, const py::object& hashes) {
            const std::vector<BlockHash> h = ToHashes(hashes);
            return Unwrap(a.Lookup(h));
          },
          py::arg("hashes"),
          "The longest cached prefix of `hashes` as a BlockList, pinned (one "
          "reference per block: free it when done); empty on a miss.")
      .def("clear_cache",
           [](BlockAllocator& a) { ThrowIfError(a.ClearCache()); })
      .def(
          "read_events",
          [](const BlockAllocator& a, U64<"after_seq"> after_seq,
             U64<"max_events"> max_events) {
            return a.ReadEvents(after_seq, max_events);
          },
          py::arg("after_seq") = 0, py::arg("max_events") = 1 << 20,
          "Events with seq > after_seq (KvEventBatch; fell_behind: "
          "resynchronise from snapshot()).")
      .def("snapshot", &BlockAllocator::Snapshot,
           "Every hash lookup can find now, and the seq it reflects.")
      .def(
          "share",
          [](BlockAllocator& a, py::handle blocks) {
            ThrowIfError(a.Share(ToBlockList(blocks)));
          },
          py::arg("blocks"),
          "Adds a reference to each (allocated) block; each share needs its "
          "own free.")
      .def(
          "ref_count",
          [](const BlockAllocator& a, Int<BlockId, "block"> block) {
            return a.RefCount(block);
          },
          py::arg("block"))
      .def("stats", &BlockAllocator::Stats)
      .def_property_readonly("num_blocks", &BlockAllocator::num_blocks)
      .def_property_readonly("free_blocks", &BlockAllocator::free_blocks)
      .def_property_readonly("available_blocks",
                             &BlockAllocator::available_blocks)
      .def_property_readonly("prefix_cache_enabled",
                             &BlockAllocator::prefix_cache_enabled)
      .def("plan_compaction", &BlockAllocator::PlanCompaction,
           "Moves that would gather the allocated blocks at the pool's "
           "start (not applied).");
}

}  // namespace flowkv::python
