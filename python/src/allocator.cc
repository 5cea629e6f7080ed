// SPDX-License-Identifier: Apache-2.0
// Bindings of BlockAllocator (flowkv/block_allocator.h): allocate, extend,
// free, share, ref counts, stats and compaction plans. Every failed call
// raises and changes nothing, as in C++.

#include <memory>
#include <pybind11/stl.h>

#include "bindings.h"
#include "flowkv/block_allocator.h"

namespace flowkv::python {

void InitAllocator(py::module_& m) {
  py::class_<BlockAllocatorStats>(m, "BlockAllocatorStats")
      .def_readonly("num_blocks", &BlockAllocatorStats::num_blocks)
      .def_readonly("free_blocks", &BlockAllocatorStats::free_blocks)
      .def_readonly("free_runs", &BlockAllocatorStats::free_runs)
      .def_readonly("largest_free_run", &BlockAllocatorStats::largest_free_run)
      .def_readonly("live_lists", &BlockAllocatorStats::live_lists)
      .def_readonly("runs_histogram", &BlockAllocatorStats::runs_histogram)
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
                       U32<"growth_slack_blocks"> growth_slack_blocks) {
             return Unwrap(BlockAllocator::Create(
                 {.num_blocks = num_blocks,
                  .growth_slack_blocks = growth_slack_blocks}));
           }),
           py::arg("num_blocks"), py::kw_only(),
           py::arg("growth_slack_blocks") =
               BlockAllocatorOptions{}.growth_slack_blocks)
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
          [](BlockAllocator& a, py::handle blocks) {
            ThrowIfError(a.Free(ToBlockList(blocks)));
          },
          py::arg("blocks"),
          "Drops one reference to each block; InvalidArgumentError (nothing "
          "freed) for a block not allocated or named twice.")
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
      .def("plan_compaction", &BlockAllocator::PlanCompaction,
           "Moves that would gather the allocated blocks at the pool's "
           "start (not applied).");
}

}  // namespace flowkv::python
