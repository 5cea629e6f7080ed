/* SPDX-License-Identifier: Apache-2.0 */
/* The sender of c_api_test (the second process, started by the receiver
 * with "--sender <address>"): connects, writes and reads back a scratch
 * buffer, sends three requests with flowkv_kv_send and offers a fourth for
 * the receiver to fetch. c_api_test.c describes the whole exchange. */

#define _POSIX_C_SOURCE 200809L

#include "c_api_test_sender.h"

#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "c_api_test_common.h"

int RunSender(const char* address) {
  flowkv_engine_t* engine = MakeEngine("c-sender", false);
  Pool pool;
  MakePool(engine, FLOWKV_LAYOUT_FLOWKV_BLOCK_MAJOR, FLOWKV_BLOCK_ORDER_NHD,
           &pool);
  uint32_t scratch_region = 0;
  void* scratch_data = NULL;
  CHECK(flowkv_engine_allocate_memory(engine, 2 * SCRATCH_BYTES,
                                      FLOWKV_MEMORY_HOST, &scratch_region,
                                      &scratch_data));
  uint8_t* scratch = scratch_data;
  for (uint32_t i = 0; i < SCRATCH_BYTES; ++i) scratch[i] = ScratchPattern(i);

  flowkv_kv_transfer_t* kv = NULL;
  flowkv_allocator_t* allocator = NULL;
  MakeKvAndAllocator(engine, &pool, &kv, &allocator);

  uint64_t peer = 0;
  CHECK(flowkv_engine_connect(engine, address, strlen(address), &peer));
  SendBytes(engine, peer, "hello", 5, "hello");
  CHECK(flowkv_kv_wait_for_peer_pool(kv, peer, SOON_US));
  Plan plan;
  PollForOther(kv, FLOWKV_NOTIFICATION_MESSAGE, NULL, &plan, sizeof(plan));

  /* Raw engine transfers: write the scratch pattern into the receiver's
   * scratch region, then read it back into our second half. */
  const flowkv_transfer_op_t write_op = {.src_region = scratch_region,
                                         .src_offset = 0,
                                         .dst_region = plan.scratch_region,
                                         .dst_offset = 0,
                                         .length = SCRATCH_BYTES};
  const flowkv_transfer_options_t write_options = {
      .notification = "raw-write",
      .notification_len = strlen("raw-write"),
      .timeout_us = SOON_US,
      .acknowledged = true};
  flowkv_handle_t* handle = NULL;
  CHECK(
      flowkv_engine_write(engine, peer, &write_op, 1, &write_options, &handle));
  WaitOk(handle, "raw write");
  const flowkv_transfer_op_t read_op = {.src_region = plan.scratch_region,
                                        .src_offset = 0,
                                        .dst_region = scratch_region,
                                        .dst_offset = SCRATCH_BYTES,
                                        .length = SCRATCH_BYTES};
  CHECK(flowkv_engine_read(engine, peer, &read_op, 1, NULL, &handle));
  WaitOk(handle, "raw read");
  if (memcmp(scratch, scratch + SCRATCH_BYTES, SCRATCH_BYTES) != 0) {
    Fail("the scratch read back differs from what was written");
  }

  for (uint32_t r = 0; r < NUM_SENT; ++r) {
    const uint32_t blocks =
        (kTokens[r] + kGeometry.block_tokens - 1) / kGeometry.block_tokens;
    flowkv_block_list_t* list = NULL;
    CHECK(flowkv_allocator_allocate(allocator, blocks, &list));
    flowkv_block_run_t runs[MAX_RUNS];
    uint32_t num_runs = 0;
    CopyRuns(list, runs, &num_runs);
    uint64_t checksum =
        VisitRequest(&pool, r, runs, num_runs, kTokens[r], /*fill=*/true);

    flowkv_kv_request_t request;
    flowkv_kv_request_init(&request);
    request.src_blocks.runs = runs;
    request.src_blocks.num_runs = num_runs;
    request.dst_blocks.runs = plan.runs[r];
    request.dst_blocks.num_runs = plan.num_runs[r];
    request.num_tokens = kTokens[r];
    request.payload = &checksum;
    request.payload_len = sizeof(checksum);
    request.timeout_us = SOON_US;
    char id[16];
    RequestId(r, id);
    /* Request 1 goes in two layer pieces, each with the payload. */
    const uint32_t pieces = r == 1 ? 2 : 1;
    for (uint32_t piece = 0; piece < pieces; ++piece) {
      if (pieces == 2) {
        request.layer_begin = piece * kGeometry.num_layers / 2;
        request.layer_end = (piece + 1) * kGeometry.num_layers / 2;
      }
      CHECK(flowkv_kv_send(kv, id, strlen(id), peer, &request, &handle));
      WaitOk(handle, id);
    }
    CHECK(flowkv_allocator_free_blocks(allocator, list));
    flowkv_block_list_destroy(list);
  }

  /* Request FETCHED: filled here, fetched by the receiver; its blocks stay
   * until the receiver released them. */
  flowkv_block_list_t* offered = NULL;
  CHECK(flowkv_allocator_allocate(
      allocator,
      (kTokens[FETCHED] + kGeometry.block_tokens - 1) / kGeometry.block_tokens,
      &offered));
  FetchOffer offer;
  memset(&offer, 0, sizeof(offer));
  CopyRuns(offered, offer.runs, &offer.num_runs);
  offer.checksum = VisitRequest(&pool, FETCHED, offer.runs, offer.num_runs,
                                kTokens[FETCHED], /*fill=*/true);
  SendBytes(engine, peer, &offer, sizeof(offer), "fetch offer");
  bool released = false;
  bool done = false;
  const int64_t deadline = NowUs() + SOON_US;
  while (!released || !done) {
    if (NowUs() > deadline) {
      Fail("released: %d, done: %d within %d us", released, done, SOON_US);
    }
    flowkv_kv_results_t* results = NULL;
    CHECK(flowkv_kv_poll(kv, POLL_WAIT_US, &results));
    for (size_t i = 0; i < flowkv_kv_results_num_released(results); ++i) {
      flowkv_kv_released_t r;
      CHECK(flowkv_kv_results_released(results, i, &r));
      char id[16];
      RequestId(FETCHED, id);
      if (r.request_id_len != strlen(id) ||
          memcmp(r.request_id, id, r.request_id_len) != 0 || r.peer != peer ||
          r.status != FLOWKV_OK) {
        Fail("released %.*s from peer %" PRIu64 ": %s: %.*s",
             (int)r.request_id_len, r.request_id, r.peer,
             flowkv_status_name(r.status), (int)r.message_len, r.message);
      }
      released = true;
    }
    for (size_t i = 0; i < flowkv_kv_results_num_other(results); ++i) {
      flowkv_notification_t n;
      CHECK(flowkv_kv_results_other(results, i, &n));
      done |= n.kind == FLOWKV_NOTIFICATION_MESSAGE && n.bytes_len == 4 &&
              memcmp(n.bytes, "done", 4) == 0;
    }
    flowkv_kv_results_free(results);
  }
  CHECK(flowkv_allocator_free_blocks(allocator, offered));
  flowkv_block_list_destroy(offered);
  flowkv_allocator_stats_t stats;
  CHECK(flowkv_allocator_stats(allocator, &stats));
  if (stats.free_blocks != kGeometry.num_blocks || stats.live_lists != 0) {
    Fail("allocator: %" PRIu64 " free blocks, %" PRIu64 " live lists",
         stats.free_blocks, stats.live_lists);
  }
  flowkv_kv_destroy(kv);
  flowkv_allocator_destroy(allocator);
  flowkv_layout_free(pool.layout);
  flowkv_engine_destroy(engine);
  return 0;
}
