// SPDX-License-Identifier: Apache-2.0
// The C API of the allocator's prefix cache and KV events
// (flowkv_allocator_free_with_hashes, _cache_blocks, _lookup, _clear_cache,
// _read_events, _snapshot in include/flowkv/c/allocator.h): checks the
// arguments, calls BlockAllocator, and hands events out in the wire format
// of include/flowkv/kv_events.h.
#include "absl/types/span.h"
#include "flowkv/kv_events.h"
#include "lib/c_api/c_api_internal.h"

namespace flowkv::c_api {
namespace {

// The caller's (hashes, num_hashes) after checking them.
absl::StatusOr<absl::Span<const BlockHash>> Hashes(const char* fn,
                                                   const uint64_t* hashes,
                                                   size_t num_hashes) {
  if (absl::Status s = Buffer(fn, hashes, num_hashes, "hashes"); !s.ok()) {
    return s;
  }
  if (num_hashes == 0) return absl::Span<const BlockHash>();
  return absl::Span<const BlockHash>(hashes, num_hashes);
}

// Allocator and list not null, hashes valid.
absl::StatusOr<absl::Span<const BlockHash>> ListArgs(
    const char* fn, const flowkv_allocator_t* allocator,
    const flowkv_block_list_t* list, const uint64_t* hashes,
    size_t num_hashes) {
  if (absl::Status s = NotNull(fn, allocator, "allocator"); !s.ok()) return s;
  if (absl::Status s = NotNull(fn, list, "list"); !s.ok()) return s;
  return Hashes(fn, hashes, num_hashes);
}

}  // namespace
}  // namespace flowkv::c_api

using flowkv::c_api::Guard;
using flowkv::c_api::NotNull;

extern "C" {

flowkv_status_t flowkv_allocator_free_with_hashes(
    flowkv_allocator_t* allocator, const flowkv_block_list_t* list,
    const uint64_t* hashes, size_t num_hashes) {
  static constexpr char kFn[] = "flowkv_allocator_free_with_hashes";
  return Guard(kFn, [&]() -> absl::Status {
    auto span =
        flowkv::c_api::ListArgs(kFn, allocator, list, hashes, num_hashes);
    if (!span.ok()) return span.status();
    return allocator->allocator->Free(list->list, *span);
  });
}

flowkv_status_t flowkv_allocator_cache_blocks(flowkv_allocator_t* allocator,
                                              const flowkv_block_list_t* list,
                                              const uint64_t* hashes,
                                              size_t num_hashes) {
  static constexpr char kFn[] = "flowkv_allocator_cache_blocks";
  return Guard(kFn, [&]() -> absl::Status {
    auto span =
        flowkv::c_api::ListArgs(kFn, allocator, list, hashes, num_hashes);
    if (!span.ok()) return span.status();
    return allocator->allocator->CacheBlocks(list->list, *span);
  });
}

flowkv_status_t flowkv_allocator_lookup(flowkv_allocator_t* allocator,
                                        const uint64_t* hashes,
                                        size_t num_hashes,
                                        flowkv_block_list_t** prefix) {
  static constexpr char kFn[] = "flowkv_allocator_lookup";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, allocator, "allocator"); !s.ok()) {
      return s;
    }
    if (absl::Status s = NotNull(kFn, prefix, "prefix"); !s.ok()) return s;
    auto span = flowkv::c_api::Hashes(kFn, hashes, num_hashes);
    if (!span.ok()) return span.status();
    absl::StatusOr<flowkv::BlockList> hit = allocator->allocator->Lookup(*span);
    if (!hit.ok()) return hit.status();
    *prefix = new flowkv_block_list{*std::move(hit)};
    return absl::OkStatus();
  });
}

flowkv_status_t flowkv_allocator_clear_cache(flowkv_allocator_t* allocator) {
  static constexpr char kFn[] = "flowkv_allocator_clear_cache";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, allocator, "allocator"); !s.ok()) {
      return s;
    }
    return allocator->allocator->ClearCache();
  });
}

flowkv_status_t flowkv_allocator_read_events(
    const flowkv_allocator_t* allocator, uint64_t after_seq, size_t max_events,
    uint8_t* out, size_t capacity, size_t* size) {
  static constexpr char kFn[] = "flowkv_allocator_read_events";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = flowkv::c_api::SourceAndOutBuffer(
            kFn, allocator, "allocator", out, capacity, size, "out");
        !s.ok()) {
      return s;
    }
    if (!allocator->allocator->prefix_cache_enabled()) {
      return absl::FailedPreconditionError(
          "flowkv_allocator_read_events: the allocator has no prefix cache "
          "(enable_prefix_cache)");
    }
    const std::string wire = flowkv::EncodeKvEventBatch(
        allocator->allocator->ReadEvents(after_seq, max_events));
    return flowkv::c_api::CopyOut(kFn, wire, out, capacity, size,
                                  /*terminate=*/false);
  });
}

flowkv_status_t flowkv_allocator_snapshot(const flowkv_allocator_t* allocator,
                                          uint8_t* out, size_t capacity,
                                          size_t* size) {
  static constexpr char kFn[] = "flowkv_allocator_snapshot";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = flowkv::c_api::SourceAndOutBuffer(
            kFn, allocator, "allocator", out, capacity, size, "out");
        !s.ok()) {
      return s;
    }
    if (!allocator->allocator->prefix_cache_enabled()) {
      return absl::FailedPreconditionError(
          "flowkv_allocator_snapshot: the allocator has no prefix cache "
          "(enable_prefix_cache)");
    }
    const std::string wire =
        flowkv::EncodeKvCacheSnapshot(allocator->allocator->Snapshot());
    return flowkv::c_api::CopyOut(kFn, wire, out, capacity, size,
                                  /*terminate=*/false);
  });
}

}  // extern "C"
