/* SPDX-License-Identifier: Apache-2.0 */
/* flowkv/c/allocator.h: block ids: flowkv_block_list_t (flowkv/block_list.h)
 * and flowkv_blocks_t, and the block allocator flowkv_allocator_t
 * (flowkv/block_allocator.h) that hands block lists out. Part of
 * flowkv/flowkv_c.h. */

#ifndef FLOWKV_C_ALLOCATOR_H_
#define FLOWKV_C_ALLOCATOR_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "flowkv/c/status.h"
#include "flowkv/export.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Externally synchronized. */
typedef struct flowkv_block_list flowkv_block_list_t;
/* Thread-safe. */
typedef struct flowkv_allocator flowkv_allocator_t;

/* ---- Block lists -------------------------------------------------------- */

/* `count` consecutive blocks from `first`. */
typedef struct flowkv_block_run {
  uint32_t first;
  uint32_t count;
} flowkv_block_run_t;

/* An empty list. */
FLOWKV_EXPORT flowkv_status_t
flowkv_block_list_create(flowkv_block_list_t** list);
FLOWKV_EXPORT flowkv_status_t
flowkv_block_list_from_runs(const flowkv_block_run_t* runs, size_t num_runs,
                            flowkv_block_list_t** list);
/* INVALID_ARGUMENT (naming the element) for an id of 2^32 - 1: block ids
 * are at most 2^32 - 2, in every call that takes them. */
FLOWKV_EXPORT flowkv_status_t flowkv_block_list_from_ids(
    const uint32_t* ids, size_t num_ids, flowkv_block_list_t** list);
/* Appends `count` blocks from `first` (merged with the last run when
 * adjacent). INVALID_ARGUMENT when the run passes block id 2^32 - 1. */
FLOWKV_EXPORT flowkv_status_t flowkv_block_list_append(
    flowkv_block_list_t* list, uint32_t first, uint32_t count);
/* 0 for NULL. */
FLOWKV_EXPORT size_t
flowkv_block_list_num_runs(const flowkv_block_list_t* list);
FLOWKV_EXPORT uint64_t
flowkv_block_list_num_blocks(const flowkv_block_list_t* list);
/* Copies the runs (ids) into out[0 .. *count). RESOURCE_EXHAUSTED with
 * *count set when capacity is too small. */
FLOWKV_EXPORT flowkv_status_t
flowkv_block_list_runs(const flowkv_block_list_t* list, flowkv_block_run_t* out,
                       size_t capacity, size_t* count);
FLOWKV_EXPORT flowkv_status_t
flowkv_block_list_ids(const flowkv_block_list_t* list, uint32_t* out,
                      size_t capacity, size_t* count);
FLOWKV_EXPORT void flowkv_block_list_destroy(flowkv_block_list_t* list);

/* A request's blocks, in token order: either `runs` or `ids` (not both). */
typedef struct flowkv_blocks {
  const flowkv_block_run_t* runs;
  size_t num_runs;
  const uint32_t* ids;
  size_t num_ids;
} flowkv_blocks_t;

/* ---- Block allocator ---------------------------------------------------- */

typedef struct flowkv_allocator_options {
  uint32_t num_blocks;            /* [1, 2^32 - 2]; must be set */
  uint32_t growth_slack_blocks;   /* Default: 32 */
  bool enable_prefix_cache;       /* Default: false */
  uint32_t event_buffer_capacity; /* Default: 4096 */
} flowkv_allocator_options_t;

FLOWKV_EXPORT void flowkv_allocator_options_init(
    flowkv_allocator_options_t* options);
FLOWKV_EXPORT flowkv_status_t flowkv_allocator_create(
    const flowkv_allocator_options_t* options, flowkv_allocator_t** allocator);
FLOWKV_EXPORT void flowkv_allocator_destroy(flowkv_allocator_t* allocator);

/* `n` blocks as a new list (one run when possible). RESOURCE_EXHAUSTED when
 * fewer are free. */
FLOWKV_EXPORT flowkv_status_t flowkv_allocator_allocate(
    flowkv_allocator_t* allocator, uint32_t n, flowkv_block_list_t** list);
/* As allocate, first taking the free blocks right after `after`. */
FLOWKV_EXPORT flowkv_status_t flowkv_allocator_allocate_after(
    flowkv_allocator_t* allocator, uint32_t n, flowkv_block_run_t after,
    flowkv_block_list_t** list);
/* Appends `n` blocks to *list (in place when the blocks after its last run
 * are free). On error the list is unchanged. */
FLOWKV_EXPORT flowkv_status_t flowkv_allocator_extend(
    flowkv_allocator_t* allocator, flowkv_block_list_t* list, uint32_t n);
/* Drops one reference to each block of `list` (the list object itself is
 * not destroyed). */
FLOWKV_EXPORT flowkv_status_t flowkv_allocator_free_blocks(
    flowkv_allocator_t* allocator, const flowkv_block_list_t* list);
/* Adds a reference to each block of `list` (each share needs a free). */
FLOWKV_EXPORT flowkv_status_t flowkv_allocator_share_blocks(
    flowkv_allocator_t* allocator, const flowkv_block_list_t* list);
FLOWKV_EXPORT flowkv_status_t flowkv_allocator_ref_count(
    const flowkv_allocator_t* allocator, uint32_t block, uint32_t* count);

typedef struct flowkv_allocator_stats {
  uint64_t num_blocks;
  uint64_t free_blocks;
  uint64_t free_runs;
  uint64_t largest_free_run;
  uint64_t live_lists;
  double mean_runs_per_list;
  /* Prefix cache (0 without one); see BlockAllocatorStats. */
  uint64_t cached_blocks;
  uint64_t indexed_blocks;
  uint64_t lookups;
  uint64_t lookup_blocks;
  uint64_t lookup_hit_blocks;
  uint64_t evictions;
  uint64_t evicted_blocks;
  uint64_t latest_event_seq;
} flowkv_allocator_stats_t;

FLOWKV_EXPORT flowkv_status_t flowkv_allocator_stats(
    const flowkv_allocator_t* allocator, flowkv_allocator_stats_t* stats);

/* ---- Prefix cache (flowkv/block_allocator.h, flowkv/kv_events.h) -------- */
/* Every call below is FAILED_PRECONDITION on an allocator created without
 * enable_prefix_cache (free_with_hashes with num_hashes 0 excepted). Block
 * hashes are the caller's chained 64-bit token-content hashes, one per full
 * block, in token order. */

/* Frees `list` after recording hashes[i] as the content of its i-th block:
 * blocks with a hash whose last reference goes are kept as cached.
 * num_hashes 0 is flowkv_allocator_free_blocks. INVALID_ARGUMENT (nothing
 * changed) when num_hashes exceeds the list's blocks, hashes is NULL with
 * num_hashes > 0, or as free_blocks. */
FLOWKV_EXPORT flowkv_status_t flowkv_allocator_free_with_hashes(
    flowkv_allocator_t* allocator, const flowkv_block_list_t* list,
    const uint64_t* hashes, size_t num_hashes);
/* Records hashes for a running request's full blocks (they stay
 * allocated) so that lookups find them now. */
FLOWKV_EXPORT flowkv_status_t flowkv_allocator_cache_blocks(
    flowkv_allocator_t* allocator, const flowkv_block_list_t* list,
    const uint64_t* hashes, size_t num_hashes);
/* The longest cached prefix of hashes[0 .. num_hashes), pinned, as a new
 * list in *prefix (possibly empty: then nothing is pinned; destroy it
 * without freeing). Free a non-empty prefix with free_blocks to unpin. */
FLOWKV_EXPORT flowkv_status_t
flowkv_allocator_lookup(flowkv_allocator_t* allocator, const uint64_t* hashes,
                        size_t num_hashes, flowkv_block_list_t** prefix);
/* Drops every cached hash (cached blocks become free). */
FLOWKV_EXPORT flowkv_status_t
flowkv_allocator_clear_cache(flowkv_allocator_t* allocator);
/* The events after `after_seq` (at most max_events), encoded in the wire
 * format of flowkv/kv_events.h (EncodeKvEventBatch: it carries fell_behind
 * and latest_seq), into out[0 .. *size). RESOURCE_EXHAUSTED with *size set
 * to the bytes needed when `capacity` is too small (call again with more).
 * `out` may be NULL when capacity is 0. */
FLOWKV_EXPORT flowkv_status_t flowkv_allocator_read_events(
    const flowkv_allocator_t* allocator, uint64_t after_seq, size_t max_events,
    uint8_t* out, size_t capacity, size_t* size);
/* As read_events, for the encoded snapshot (EncodeKvCacheSnapshot). */
FLOWKV_EXPORT flowkv_status_t
flowkv_allocator_snapshot(const flowkv_allocator_t* allocator, uint8_t* out,
                          size_t capacity, size_t* size);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FLOWKV_C_ALLOCATOR_H_ */
