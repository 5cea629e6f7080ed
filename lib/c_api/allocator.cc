// SPDX-License-Identifier: Apache-2.0
// The C API of BlockList and BlockAllocator (flowkv_block_list_* and
// flowkv_allocator_* in include/flowkv/flowkv_c.h).
#include <vector>

#include "absl/strings/str_cat.h"
#include "lib/c_api/c_api_internal.h"

namespace flowkv::c_api {
namespace {

absl::Status EmitList(absl::StatusOr<BlockList> list,
                      flowkv_block_list_t** out) {
  if (!list.ok()) return list.status();
  *out = new flowkv_block_list{*std::move(list)};
  return absl::OkStatus();
}

// The arguments of a function that copies a list's `what` (runs, blocks),
// count(list) of them, into (out, capacity): checked as
// SourceAndOutBuffer() does; stores the count in *length, ResourceExhausted
// when out holds fewer.
template <typename Count>
absl::Status ListOutArgs(const char* fn, const flowkv_block_list_t* list,
                         const void* out, size_t capacity, size_t* length,
                         const char* what, Count count) {
  if (absl::Status s =
          SourceAndOutBuffer(fn, list, "list", out, capacity, length, "out");
      !s.ok()) {
    return s;
  }
  const uint64_t n = count(list->list);
  *length = n;
  if (capacity < n) {
    return absl::ResourceExhaustedError(absl::StrCat(
        fn, ": the list has ", n, " ", what, ", out holds ", capacity));
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace flowkv::c_api

using flowkv::c_api::Guard;
using flowkv::c_api::GuardVoid;
using flowkv::c_api::NotNull;

extern "C" {

// ---- Block lists ----------------------------------------------------------

flowkv_status_t flowkv_block_list_create(flowkv_block_list_t** list) {
  static constexpr char kFn[] = "flowkv_block_list_create";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, list, "list"); !s.ok()) return s;
    *list = new flowkv_block_list{};
    return absl::OkStatus();
  });
}

flowkv_status_t flowkv_block_list_from_runs(const flowkv_block_run_t* runs,
                                            size_t num_runs,
                                            flowkv_block_list_t** list) {
  static constexpr char kFn[] = "flowkv_block_list_from_runs";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, list, "list"); !s.ok()) return s;
    return flowkv::c_api::EmitList(
        flowkv::c_api::BlocksFromC(
            kFn,
            {.runs = runs, .num_runs = num_runs, .ids = nullptr, .num_ids = 0},
            "runs"),
        list);
  });
}

flowkv_status_t flowkv_block_list_from_ids(const uint32_t* ids, size_t num_ids,
                                           flowkv_block_list_t** list) {
  static constexpr char kFn[] = "flowkv_block_list_from_ids";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, list, "list"); !s.ok()) return s;
    return flowkv::c_api::EmitList(
        flowkv::c_api::BlocksFromC(
            kFn,
            {.runs = nullptr, .num_runs = 0, .ids = ids, .num_ids = num_ids},
            "ids"),
        list);
  });
}

flowkv_status_t flowkv_block_list_append(flowkv_block_list_t* list,
                                         uint32_t first, uint32_t count) {
  static constexpr char kFn[] = "flowkv_block_list_append";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, list, "list"); !s.ok()) return s;
    if (absl::Status s = flowkv::c_api::CheckRun(kFn, first, count, "run");
        !s.ok()) {
      return s;
    }
    list->list.Append(first, count);
    return absl::OkStatus();
  });
}

size_t flowkv_block_list_num_runs(const flowkv_block_list_t* list) {
  return list == nullptr ? 0 : list->list.num_runs();
}

uint64_t flowkv_block_list_num_blocks(const flowkv_block_list_t* list) {
  return list == nullptr ? 0 : list->list.num_blocks();
}

flowkv_status_t flowkv_block_list_runs(const flowkv_block_list_t* list,
                                       flowkv_block_run_t* out, size_t capacity,
                                       size_t* count) {
  static constexpr char kFn[] = "flowkv_block_list_runs";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = flowkv::c_api::ListOutArgs(
            kFn, list, out, capacity, count, "runs",
            [](const flowkv::BlockList& l) { return l.num_runs(); });
        !s.ok()) {
      return s;
    }
    const auto runs = list->list.runs();
    for (size_t i = 0; i < runs.size(); ++i) {
      out[i] = {.first = runs[i].first, .count = runs[i].count};
    }
    return absl::OkStatus();
  });
}

flowkv_status_t flowkv_block_list_ids(const flowkv_block_list_t* list,
                                      uint32_t* out, size_t capacity,
                                      size_t* count) {
  static constexpr char kFn[] = "flowkv_block_list_ids";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = flowkv::c_api::ListOutArgs(
            kFn, list, out, capacity, count, "blocks",
            [](const flowkv::BlockList& l) { return l.num_blocks(); });
        !s.ok()) {
      return s;
    }
    size_t i = 0;
    for (const flowkv::BlockRun& run : list->list.runs()) {
      for (uint32_t b = 0; b < run.count; ++b) out[i++] = run.first + b;
    }
    return absl::OkStatus();
  });
}

void flowkv_block_list_destroy(flowkv_block_list_t* list) {
  GuardVoid([&] { delete list; });
}

// ---- Allocator ------------------------------------------------------------

void flowkv_allocator_options_init(flowkv_allocator_options_t* options) {
  if (options == nullptr) return;
  const flowkv::BlockAllocatorOptions defaults;
  options->num_blocks = defaults.num_blocks;
  options->growth_slack_blocks = defaults.growth_slack_blocks;
  options->enable_prefix_cache = defaults.enable_prefix_cache;
  options->event_buffer_capacity = defaults.event_buffer_capacity;
}

flowkv_status_t flowkv_allocator_create(
    const flowkv_allocator_options_t* options, flowkv_allocator_t** allocator) {
  static constexpr char kFn[] = "flowkv_allocator_create";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, options, "options"); !s.ok()) return s;
    if (absl::Status s = NotNull(kFn, allocator, "allocator"); !s.ok()) {
      return s;
    }
    auto created = flowkv::BlockAllocator::Create(
        {.num_blocks = options->num_blocks,
         .growth_slack_blocks = options->growth_slack_blocks,
         .enable_prefix_cache = options->enable_prefix_cache,
         .event_buffer_capacity = options->event_buffer_capacity});
    if (!created.ok()) return created.status();
    *allocator = new flowkv_allocator{*std::move(created)};
    return absl::OkStatus();
  });
}

void flowkv_allocator_destroy(flowkv_allocator_t* allocator) {
  GuardVoid([&] { delete allocator; });
}

flowkv_status_t flowkv_allocator_allocate(flowkv_allocator_t* allocator,
                                          uint32_t n,
                                          flowkv_block_list_t** list) {
  static constexpr char kFn[] = "flowkv_allocator_allocate";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, allocator, "allocator"); !s.ok()) {
      return s;
    }
    if (absl::Status s = NotNull(kFn, list, "list"); !s.ok()) return s;
    return flowkv::c_api::EmitList(allocator->allocator->Allocate(n), list);
  });
}

flowkv_status_t flowkv_allocator_allocate_after(flowkv_allocator_t* allocator,
                                                uint32_t n,
                                                flowkv_block_run_t after,
                                                flowkv_block_list_t** list) {
  static constexpr char kFn[] = "flowkv_allocator_allocate_after";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, allocator, "allocator"); !s.ok()) {
      return s;
    }
    if (absl::Status s = NotNull(kFn, list, "list"); !s.ok()) return s;
    if (absl::Status s =
            flowkv::c_api::CheckRun(kFn, after.first, after.count, "after");
        !s.ok()) {
      return s;
    }
    return flowkv::c_api::EmitList(
        allocator->allocator->Allocate(
            n, flowkv::BlockRun{.first = after.first, .count = after.count}),
        list);
  });
}

flowkv_status_t flowkv_allocator_extend(flowkv_allocator_t* allocator,
                                        flowkv_block_list_t* list, uint32_t n) {
  static constexpr char kFn[] = "flowkv_allocator_extend";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, allocator, "allocator"); !s.ok()) {
      return s;
    }
    if (absl::Status s = NotNull(kFn, list, "list"); !s.ok()) return s;
    return allocator->allocator->Extend(&list->list, n);
  });
}

flowkv_status_t flowkv_allocator_free_blocks(flowkv_allocator_t* allocator,
                                             const flowkv_block_list_t* list) {
  static constexpr char kFn[] = "flowkv_allocator_free_blocks";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, allocator, "allocator"); !s.ok()) {
      return s;
    }
    if (absl::Status s = NotNull(kFn, list, "list"); !s.ok()) return s;
    return allocator->allocator->Free(list->list);
  });
}

flowkv_status_t flowkv_allocator_share_blocks(flowkv_allocator_t* allocator,
                                              const flowkv_block_list_t* list) {
  static constexpr char kFn[] = "flowkv_allocator_share_blocks";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, allocator, "allocator"); !s.ok()) {
      return s;
    }
    if (absl::Status s = NotNull(kFn, list, "list"); !s.ok()) return s;
    return allocator->allocator->Share(list->list);
  });
}

flowkv_status_t flowkv_allocator_ref_count(const flowkv_allocator_t* allocator,
                                           uint32_t block, uint32_t* count) {
  static constexpr char kFn[] = "flowkv_allocator_ref_count";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, allocator, "allocator"); !s.ok()) {
      return s;
    }
    if (absl::Status s = NotNull(kFn, count, "count"); !s.ok()) return s;
    *count = allocator->allocator->RefCount(block);
    return absl::OkStatus();
  });
}

flowkv_status_t flowkv_allocator_stats(const flowkv_allocator_t* allocator,
                                       flowkv_allocator_stats_t* stats) {
  static constexpr char kFn[] = "flowkv_allocator_stats";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, allocator, "allocator"); !s.ok()) {
      return s;
    }
    if (absl::Status s = NotNull(kFn, stats, "stats"); !s.ok()) return s;
    const flowkv::BlockAllocatorStats cpp = allocator->allocator->Stats();
    *stats = {.num_blocks = cpp.num_blocks,
              .free_blocks = cpp.free_blocks,
              .free_runs = cpp.free_runs,
              .largest_free_run = cpp.largest_free_run,
              .live_lists = cpp.live_lists,
              .mean_runs_per_list = cpp.MeanRunsPerList(),
              .cached_blocks = cpp.cached_blocks,
              .indexed_blocks = cpp.indexed_blocks,
              .lookups = cpp.lookups,
              .lookup_blocks = cpp.lookup_blocks,
              .lookup_hit_blocks = cpp.lookup_hit_blocks,
              .evictions = cpp.evictions,
              .evicted_blocks = cpp.evicted_blocks,
              .latest_event_seq = cpp.latest_event_seq};
    return absl::OkStatus();
  });
}

}  // extern "C"
