/* SPDX-License-Identifier: Apache-2.0 */
/* The C API end to end, compiled as C11: this program starts itself again as
 * a second process (the sender, "--sender <address>"), and the two move KV
 * between a block-major pool (sender) and a vLLM FlashInfer HND pool
 * (receiver, this process) over UCX on 127.0.0.1, using only flowkv_c.h:
 *
 *   receiver: engine listening on 127.0.0.1:0, pool, KV transfer, allocator;
 *             takes the sender's "hello" with flowkv_engine_take_notifications,
 *             announces its pool, picks the destination blocks with the
 *             allocator (allocate + extend) and sends them as a message;
 *   sender:   connects, waits for the receiver's pool, writes and reads back
 *             a scratch buffer with flowkv_engine_write / _read, and sends
 *             three requests with flowkv_kv_send (one in two layer pieces),
 *             each with the FNV-1a checksum of its KV as payload, and offers
 *             a fourth (its blocks and checksum) for the receiver to fetch;
 *   receiver: fetches the fourth with flowkv_kv_fetch, polls until every
 *             request finished, checks every byte against the pattern and
 *             the checksum against the sender's, frees the blocks, says
 *             "done", and sees the sender disconnect;
 *   sender:   sees the fetched request released, then exits.
 *
 * Exits 0 when everything matched; otherwise prints what failed and exits 1
 * (killing the other process). No sleeps: every wait polls a condition with a
 * deadline of SOON_US.
 *
 * This file is the receiver and main; the sender is c_api_test_sender.c and
 * the helpers both use are c_api_test_common.h. */

#define _POSIX_C_SOURCE 200809L

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
#include "c_api_test_sender.h"
#include "flowkv/flowkv_c.h"

/* ---- Receiver (this process) --------------------------------------------- */

/* Takes engine notifications into caller buffers until the message "hello";
 * returns its peer. */
static uint64_t TakeHello(flowkv_engine_t* engine) {
  flowkv_notification_t notifications[4];
  uint8_t buffer[256];
  const int64_t deadline = NowUs() + SOON_US;
  while (NowUs() < deadline) {
    size_t count = 0;
    CHECK(flowkv_engine_take_notifications(engine, POLL_WAIT_US, notifications,
                                           4, buffer, sizeof(buffer), &count));
    for (size_t i = 0; i < count; ++i) {
      const flowkv_notification_t* n = &notifications[i];
      if (n->kind == FLOWKV_NOTIFICATION_MESSAGE && n->bytes_len == 5 &&
          memcmp(n->bytes, "hello", 5) == 0) {
        return n->peer;
      }
    }
  }
  Fail("no hello within %d us", SOON_US);
  return 0;
}

static int RunReceiver(const char* self) {
  flowkv_engine_t* engine = MakeEngine("c-receiver", true);
  char address[64];
  size_t address_len = 0;
  CHECK(flowkv_engine_listen_address(engine, address, sizeof(address),
                                     &address_len));
  Pool pool;
  MakePool(engine, FLOWKV_LAYOUT_VLLM_FLASH_INFER, FLOWKV_BLOCK_ORDER_HND,
           &pool);
  Plan plan;
  memset(&plan, 0, sizeof(plan));
  void* scratch_data = NULL;
  CHECK(flowkv_engine_allocate_memory(engine, SCRATCH_BYTES, FLOWKV_MEMORY_HOST,
                                      &plan.scratch_region, &scratch_data));
  flowkv_kv_transfer_t* kv = NULL;
  flowkv_allocator_t* allocator = NULL;
  MakeKvAndAllocator(engine, &pool, &kv, &allocator);

  g_child = fork();
  if (g_child < 0) Fail("fork failed");
  if (g_child == 0) {
    execl(self, self, "--sender", address, (char*)NULL);
    _exit(127);
  }

  const uint64_t peer = TakeHello(engine);
  CHECK(flowkv_kv_announce_pool(kv, peer));
  CHECK(flowkv_kv_wait_for_peer_pool(kv, peer, SOON_US));

  /* Destination blocks: request 0 grows by extend, the others allocate. */
  flowkv_block_list_t* lists[NUM_REQUESTS] = {NULL};
  for (uint32_t r = 0; r < NUM_SENT; ++r) {
    const uint32_t blocks =
        (kTokens[r] + kGeometry.block_tokens - 1) / kGeometry.block_tokens;
    if (r == 0) {
      CHECK(flowkv_allocator_allocate(allocator, blocks - 1, &lists[r]));
      CHECK(flowkv_allocator_extend(allocator, lists[r], 1));
    } else {
      CHECK(flowkv_allocator_allocate(allocator, blocks, &lists[r]));
    }
    if (flowkv_block_list_num_blocks(lists[r]) != blocks) {
      Fail("list %u holds %" PRIu64 " blocks", r,
           flowkv_block_list_num_blocks(lists[r]));
    }
    CopyRuns(lists[r], plan.runs[r], &plan.num_runs[r]);
    char id[16];
    RequestId(r, id);
    CHECK(flowkv_kv_expect(kv, id, strlen(id), SOON_US));
  }
  SendBytes(engine, peer, &plan, sizeof(plan), "plan");

  /* Every request finishes (none fails), and the raw write arrives. */
  uint64_t payloads[NUM_REQUESTS] = {0};
  bool finished[NUM_REQUESTS] = {false};
  bool raw_write = false;
  flowkv_handle_t* fetch = NULL;
  FetchOffer offer;
  uint32_t finished_count = 0;
  const int64_t deadline = NowUs() + SOON_US;
  while (finished_count < NUM_REQUESTS || !raw_write) {
    if (NowUs() > deadline) {
      Fail("%u of %d requests finished within %d us (raw write: %d)",
           finished_count, NUM_REQUESTS, SOON_US, raw_write);
    }
    flowkv_kv_results_t* results = NULL;
    CHECK(flowkv_kv_poll(kv, POLL_WAIT_US, &results));
    FailOnFailedRequest(results);
    for (size_t i = 0; i < flowkv_kv_results_num_finished(results); ++i) {
      flowkv_kv_finished_t f;
      CHECK(flowkv_kv_results_finished(results, i, &f));
      char id[16] = {0};
      unsigned r = 0;
      if (f.request_id_len >= sizeof(id)) Fail("a long request id");
      memcpy(id, f.request_id, f.request_id_len);
      if (sscanf(id, "req-%u", &r) != 1 || r >= NUM_REQUESTS || finished[r] ||
          f.payload_len != sizeof(uint64_t)) {
        Fail("unexpected finished entry %.*s", (int)f.request_id_len,
             f.request_id);
      }
      memcpy(&payloads[r], f.payload, sizeof(uint64_t));
      finished[r] = true;
      ++finished_count;
    }
    for (size_t i = 0; i < flowkv_kv_results_num_other(results); ++i) {
      flowkv_notification_t n;
      CHECK(flowkv_kv_results_other(results, i, &n));
      raw_write |= n.kind == FLOWKV_NOTIFICATION_TRANSFER && n.peer == peer &&
                   n.bytes_len == 9 && memcmp(n.bytes, "raw-write", 9) == 0;
      if (n.kind == FLOWKV_NOTIFICATION_MESSAGE && n.peer == peer &&
          n.bytes_len == sizeof(offer) && fetch == NULL) {
        /* Pull request FETCHED from the sender's blocks into ours. */
        memcpy(&offer, n.bytes, sizeof(offer));
        CHECK(flowkv_allocator_allocate(
            allocator,
            (kTokens[FETCHED] + kGeometry.block_tokens - 1) /
                kGeometry.block_tokens,
            &lists[FETCHED]));
        CopyRuns(lists[FETCHED], plan.runs[FETCHED], &plan.num_runs[FETCHED]);
        flowkv_kv_request_t request;
        flowkv_kv_request_init(&request);
        request.src_blocks.runs = offer.runs;
        request.src_blocks.num_runs = offer.num_runs;
        request.dst_blocks.runs = plan.runs[FETCHED];
        request.dst_blocks.num_runs = plan.num_runs[FETCHED];
        request.num_tokens = kTokens[FETCHED];
        request.payload = &offer.checksum;
        request.payload_len = sizeof(offer.checksum);
        request.timeout_us = SOON_US;
        char id[16];
        RequestId(FETCHED, id);
        CHECK(flowkv_kv_fetch(kv, id, strlen(id), peer, &request, &fetch));
      }
    }
    flowkv_kv_results_free(results);
  }

  if (fetch == NULL) Fail("no fetch offer");
  WaitOk(fetch, "fetch");
  const uint8_t* scratch = scratch_data;
  for (uint32_t i = 0; i < SCRATCH_BYTES; ++i) {
    if (scratch[i] != ScratchPattern(i)) Fail("scratch byte %u differs", i);
  }
  for (uint32_t r = 0; r < NUM_REQUESTS; ++r) {
    char id[16];
    uint32_t layers = 0;
    RequestId(r, id);
    CHECK(flowkv_kv_layers_arrived(kv, id, strlen(id), &layers));
    if (layers != kGeometry.num_layers) {
      Fail("%s: %u layers arrived", id, layers);
    }
    const uint64_t checksum =
        VisitRequest(&pool, r, plan.runs[r], plan.num_runs[r], kTokens[r],
                     /*fill=*/false);
    if (checksum != payloads[r]) {
      Fail("%s: checksum %016" PRIx64 ", the sender's %016" PRIx64, id,
           checksum, payloads[r]);
    }
    CHECK(flowkv_allocator_free_blocks(allocator, lists[r]));
    flowkv_block_list_destroy(lists[r]);
  }
  flowkv_allocator_stats_t stats;
  CHECK(flowkv_allocator_stats(allocator, &stats));
  if (stats.free_blocks != kGeometry.num_blocks || stats.live_lists != 0) {
    Fail("allocator: %" PRIu64 " free blocks, %" PRIu64 " live lists",
         stats.free_blocks, stats.live_lists);
  }

  /* "done" lets the sender exit; its engine closing reaches us as a peer
   * disconnection. */
  SendBytes(engine, peer, "done", 4, "done");
  if (PollForOther(kv, FLOWKV_NOTIFICATION_PEER_DISCONNECTED, NULL, NULL, 0) !=
      peer) {
    Fail("another peer disconnected");
  }
  bool connected = true;
  CHECK(flowkv_engine_peer_connected(engine, peer, &connected));
  if (connected) Fail("the sender still shows as connected");
  int child_status = 0;
  if (waitpid(g_child, &child_status, 0) != g_child) Fail("waitpid failed");
  g_child = -1;
  if (!WIFEXITED(child_status) || WEXITSTATUS(child_status) != 0) {
    Fail("the sender exited with status %d", child_status);
  }

  flowkv_kv_destroy(kv);
  flowkv_allocator_destroy(allocator);
  flowkv_layout_free(pool.layout);
  flowkv_engine_destroy(engine);
  printf("c_api_test: ok (flowkv %s, %d requests byte-exact)\n",
         flowkv_version(), NUM_REQUESTS);
  return 0;
}

int main(int argc, char** argv) {
  setenv("UCX_NET_DEVICES", "lo", 1);
  if (argc == 3 && strcmp(argv[1], "--sender") == 0) {
    g_role = 1;
    return RunSender(argv[2]);
  }
  return RunReceiver("/proc/self/exe");
}
