/* SPDX-License-Identifier: Apache-2.0 */
/* The C API of the allocator's prefix cache (flowkv/c/allocator.h), built as
 * C11: free with hashes, lookup (pinned prefix), allocate after it, cache a
 * running request's blocks, the stats, events and snapshots as wire bytes
 * (sized with capacity 0 first), clear, and the errors of each call: null
 * arguments, too many hashes, an allocator without the cache. */

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flowkv/flowkv_c.h"

static int g_failures = 0;

#define EXPECT(cond)                                                    \
  do {                                                                  \
    if (!(cond)) {                                                      \
      fprintf(stderr, "%s:%d: failed: %s (last error: %s)\n", __FILE__, \
              __LINE__, #cond, flowkv_last_error_message());            \
      ++g_failures;                                                     \
    }                                                                   \
  } while (0)
#define EXPECT_CODE(call, code) EXPECT((call) == (code))

static flowkv_allocator_t* Make(uint32_t blocks, bool cache, uint32_t events) {
  flowkv_allocator_options_t options;
  flowkv_allocator_options_init(&options);
  EXPECT(!options.enable_prefix_cache);
  EXPECT(options.event_buffer_capacity == 4096);
  options.num_blocks = blocks;
  options.growth_slack_blocks = 0;
  options.enable_prefix_cache = cache;
  options.event_buffer_capacity = events;
  flowkv_allocator_t* allocator = NULL;
  EXPECT_CODE(flowkv_allocator_create(&options, &allocator), FLOWKV_OK);
  return allocator;
}

static void CacheRoundTrip(void) {
  flowkv_allocator_t* a = Make(16, true, 64);
  const uint64_t hashes[] = {101, 102, 103};
  flowkv_block_list_t* list = NULL;
  EXPECT_CODE(flowkv_allocator_allocate(a, 4, &list), FLOWKV_OK);
  EXPECT_CODE(flowkv_allocator_cache_blocks(a, list, hashes, 2), FLOWKV_OK);
  EXPECT_CODE(flowkv_allocator_free_with_hashes(a, list, hashes, 3), FLOWKV_OK);
  flowkv_block_list_destroy(list);

  flowkv_allocator_stats_t stats;
  EXPECT_CODE(flowkv_allocator_stats(a, &stats), FLOWKV_OK);
  EXPECT(stats.cached_blocks == 3);
  EXPECT(stats.free_blocks == 13);
  EXPECT(stats.indexed_blocks == 3);
  EXPECT(stats.latest_event_seq == 2);

  flowkv_block_list_t* prefix = NULL;
  EXPECT_CODE(flowkv_allocator_lookup(a, hashes, 3, &prefix), FLOWKV_OK);
  EXPECT(flowkv_block_list_num_blocks(prefix) == 3);
  flowkv_block_run_t runs[4];
  size_t num_runs = 0;
  EXPECT_CODE(flowkv_block_list_runs(prefix, runs, 4, &num_runs), FLOWKV_OK);
  EXPECT(num_runs == 1 && runs[0].first == 0 && runs[0].count == 3);
  uint32_t refs = 0;
  EXPECT_CODE(flowkv_allocator_ref_count(a, 0, &refs), FLOWKV_OK);
  EXPECT(refs == 1);
  flowkv_block_list_t* rest = NULL;
  EXPECT_CODE(flowkv_allocator_allocate_after(a, 2, runs[0], &rest), FLOWKV_OK);
  size_t n = 0;
  EXPECT_CODE(flowkv_block_list_runs(rest, runs, 4, &n), FLOWKV_OK);
  EXPECT(n == 1 && runs[0].first == 3 && runs[0].count == 2);
  EXPECT_CODE(flowkv_allocator_stats(a, &stats), FLOWKV_OK);
  EXPECT(stats.lookups == 1 && stats.lookup_hit_blocks == 3);

  /* A miss is an empty list: destroyed, not freed. */
  const uint64_t other[] = {999};
  flowkv_block_list_t* miss = NULL;
  EXPECT_CODE(flowkv_allocator_lookup(a, other, 1, &miss), FLOWKV_OK);
  EXPECT(flowkv_block_list_num_blocks(miss) == 0);
  flowkv_block_list_destroy(miss);

  /* Events: size first, then read; decode-free checks of the header. */
  size_t size = 0;
  EXPECT_CODE(flowkv_allocator_read_events(a, 0, 100, NULL, 0, &size),
              FLOWKV_RESOURCE_EXHAUSTED);
  EXPECT(size > 10);
  uint8_t* bytes = malloc(size);
  size_t got = 0;
  EXPECT_CODE(flowkv_allocator_read_events(a, 0, 100, bytes, size, &got),
              FLOWKV_OK);
  EXPECT(got == size && memcmp(bytes, "FKVE", 4) == 0);
  free(bytes);
  EXPECT_CODE(flowkv_allocator_snapshot(a, NULL, 0, &size),
              FLOWKV_RESOURCE_EXHAUSTED);
  bytes = malloc(size);
  EXPECT_CODE(flowkv_allocator_snapshot(a, bytes, size, &got), FLOWKV_OK);
  EXPECT(got == size && memcmp(bytes, "FKVS", 4) == 0);
  /* 3 entries of 21 bytes after an 18-byte header. */
  EXPECT(size == 18 + 3 * 21);
  free(bytes);

  /* Double free of the pinned prefix. */
  EXPECT_CODE(flowkv_allocator_free_blocks(a, prefix), FLOWKV_OK);
  EXPECT_CODE(flowkv_allocator_free_blocks(a, prefix), FLOWKV_INVALID_ARGUMENT);
  EXPECT_CODE(flowkv_allocator_free_blocks(a, rest), FLOWKV_OK);
  EXPECT_CODE(flowkv_allocator_clear_cache(a), FLOWKV_OK);
  EXPECT_CODE(flowkv_allocator_stats(a, &stats), FLOWKV_OK);
  EXPECT(stats.free_blocks == 16 && stats.cached_blocks == 0);
  flowkv_block_list_destroy(prefix);
  flowkv_block_list_destroy(rest);
  flowkv_allocator_destroy(a);
}

static void Errors(void) {
  flowkv_allocator_t* a = Make(8, true, 4);
  flowkv_block_list_t* list = NULL;
  EXPECT_CODE(flowkv_allocator_allocate(a, 2, &list), FLOWKV_OK);
  const uint64_t hashes[] = {1, 2, 3};
  flowkv_block_list_t* prefix = NULL;
  size_t size = 0;
  EXPECT_CODE(flowkv_allocator_free_with_hashes(a, list, hashes, 3),
              FLOWKV_INVALID_ARGUMENT); /* more hashes than blocks */
  EXPECT_CODE(flowkv_allocator_free_with_hashes(a, list, NULL, 2),
              FLOWKV_INVALID_ARGUMENT);
  EXPECT_CODE(flowkv_allocator_free_with_hashes(NULL, list, hashes, 1),
              FLOWKV_INVALID_ARGUMENT);
  EXPECT_CODE(flowkv_allocator_cache_blocks(a, NULL, hashes, 1),
              FLOWKV_INVALID_ARGUMENT);
  EXPECT_CODE(flowkv_allocator_lookup(a, hashes, 1, NULL),
              FLOWKV_INVALID_ARGUMENT);
  EXPECT_CODE(flowkv_allocator_lookup(a, NULL, 1, &prefix),
              FLOWKV_INVALID_ARGUMENT);
  EXPECT_CODE(flowkv_allocator_lookup(NULL, hashes, 1, &prefix),
              FLOWKV_INVALID_ARGUMENT);
  EXPECT_CODE(flowkv_allocator_read_events(a, 0, 1, NULL, 5, &size),
              FLOWKV_INVALID_ARGUMENT);
  EXPECT_CODE(flowkv_allocator_read_events(a, 0, 1, NULL, 0, NULL),
              FLOWKV_INVALID_ARGUMENT);
  EXPECT_CODE(flowkv_allocator_snapshot(NULL, NULL, 0, &size),
              FLOWKV_INVALID_ARGUMENT);
  EXPECT_CODE(flowkv_allocator_clear_cache(NULL), FLOWKV_INVALID_ARGUMENT);
  EXPECT(prefix == NULL);
  flowkv_allocator_stats_t stats;
  EXPECT_CODE(flowkv_allocator_stats(a, &stats), FLOWKV_OK);
  EXPECT(stats.free_blocks == 6 && stats.indexed_blocks == 0);
  EXPECT_CODE(flowkv_allocator_free_blocks(a, list), FLOWKV_OK);
  flowkv_block_list_destroy(list);
  flowkv_allocator_destroy(a);

  /* Without the cache. */
  a = Make(8, false, 4);
  EXPECT_CODE(flowkv_allocator_allocate(a, 2, &list), FLOWKV_OK);
  EXPECT_CODE(flowkv_allocator_lookup(a, hashes, 1, &prefix),
              FLOWKV_FAILED_PRECONDITION);
  EXPECT_CODE(flowkv_allocator_cache_blocks(a, list, hashes, 1),
              FLOWKV_FAILED_PRECONDITION);
  EXPECT_CODE(flowkv_allocator_free_with_hashes(a, list, hashes, 1),
              FLOWKV_FAILED_PRECONDITION);
  EXPECT_CODE(flowkv_allocator_clear_cache(a), FLOWKV_FAILED_PRECONDITION);
  EXPECT_CODE(flowkv_allocator_read_events(a, 0, 1, NULL, 0, &size),
              FLOWKV_FAILED_PRECONDITION);
  EXPECT_CODE(flowkv_allocator_snapshot(a, NULL, 0, &size),
              FLOWKV_FAILED_PRECONDITION);
  EXPECT_CODE(flowkv_allocator_free_with_hashes(a, list, NULL, 0), FLOWKV_OK);
  EXPECT_CODE(flowkv_allocator_stats(a, &stats), FLOWKV_OK);
  EXPECT(stats.free_blocks == 8 && stats.latest_event_seq == 0);
  flowkv_block_list_destroy(list);
  flowkv_allocator_destroy(a);
}

int main(void) {
  CacheRoundTrip();
  Errors();
  if (g_failures != 0) {
    fprintf(stderr, "%d failures\n", g_failures);
    return 1;
  }
  printf("c_api_prefix_cache_test: ok\n");
  return 0;
}
