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
 * deadline of SOON_US. */

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

#include "flowkv/flowkv_c.h"

/* Bound on anything that should happen "soon" over loopback. */
#define SOON_US (20 * 1000 * 1000)
/* Dead-peer detection of both engines. */
#define PEER_FAILURE_TIMEOUT_US (2 * 1000 * 1000)
#define POLL_WAIT_US (10 * 1000)
#define SCRATCH_BYTES 4096
/* Requests 0 .. NUM_SENT - 1 are pushed (flowkv_kv_send); request
 * FETCHED is pulled by the receiver (flowkv_kv_fetch). */
#define NUM_REQUESTS 4
#define NUM_SENT 3
#define FETCHED 3
#define MAX_RUNS 16

static const flowkv_geometry_t kGeometry = {.num_layers = 4,
                                            .num_blocks = 64,
                                            .block_tokens = 16,
                                            .kv_heads = 4,
                                            .head_dim = 32,
                                            .dtype_bytes = 2,
                                            .num_parts = 2};
static const uint32_t kTokens[NUM_REQUESTS] = {40, 80, 100, 56};
static const char* const kRole[2] = {"receiver", "sender"};
static int g_role = 0;
static pid_t g_child = -1;

static void Fail(const char* format, ...) {
  va_list args;
  va_start(args, format);
  fprintf(stderr, "c_api_test %s: FAILED: ", kRole[g_role]);
  vfprintf(stderr, format, args);
  fprintf(stderr, "\n");
  va_end(args);
  if (g_child > 0) {
    kill(g_child, SIGKILL);
    waitpid(g_child, NULL, 0);
  }
  exit(1);
}

/* Fails with the call's name, code and message unless it returned OK. */
static void Check(flowkv_status_t status, const char* call) {
  if (status != FLOWKV_OK) {
    Fail("%s: %s: %s", call, flowkv_status_name(status),
         flowkv_last_error_message());
  }
}
#define CHECK(call) Check((call), #call)

static int64_t NowUs(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static bool SharedMemoryMode(void) {
  const char* tls = getenv("UCX_TLS");
  return tls != NULL && (strstr(tls, "posix") != NULL || strstr(tls, "sm"));
}

/* The byte i of head vector (request, token, layer, part, head). */
static uint8_t Pattern(uint32_t request, uint32_t token, uint32_t layer,
                       uint32_t part, uint32_t head, uint32_t i) {
  uint32_t x = request * 1000003u ^ token * 7919u ^ layer * 104729u ^
               part * 13u ^ head * 977u ^ i * 31u;
  x ^= x >> 13;
  x *= 0x5bd1e995u;
  return (uint8_t)(x ^ (x >> 15));
}

static uint8_t ScratchPattern(uint32_t i) { return (uint8_t)(i * 7 + 3); }

/* A pool: its layout, and the address of each region. */
typedef struct Pool {
  flowkv_layout_t* layout;
  uint32_t num_regions;
  uint32_t regions[8];
  uint8_t* bases[8];
} Pool;

static void MakePool(flowkv_engine_t* engine, flowkv_layout_preset_t preset,
                     flowkv_block_order_t order, Pool* pool) {
  CHECK(flowkv_layout_create_preset(preset, &kGeometry, order, &pool->layout));
  CHECK(flowkv_layout_num_regions(pool->layout, &pool->num_regions));
  if (pool->num_regions > 8) Fail("%u regions", pool->num_regions);
  for (uint32_t r = 0; r < pool->num_regions; ++r) {
    uint64_t bytes = 0;
    void* data = NULL;
    CHECK(flowkv_layout_region_bytes(pool->layout, r, &bytes));
    CHECK(flowkv_engine_allocate_memory(engine, bytes, FLOWKV_MEMORY_HOST,
                                        &pool->regions[r], &data));
    pool->bases[r] = data;
  }
}

/* The block holding the request's block position `index`. */
static uint32_t BlockAt(const flowkv_block_run_t* runs, size_t num_runs,
                        uint32_t index) {
  for (size_t r = 0; r < num_runs; ++r) {
    if (index < runs[r].count) return runs[r].first + index;
    index -= runs[r].count;
  }
  Fail("block position past the list");
  return 0;
}

/* Fills (fill) or checks (!fill) the request's KV in `pool` against the
 * pattern, and returns the FNV-1a of its bytes in logical order. */
static uint64_t VisitRequest(const Pool* pool, uint32_t request,
                             const flowkv_block_run_t* runs, size_t num_runs,
                             uint32_t num_tokens, bool fill) {
  const uint32_t head_bytes = kGeometry.head_dim * kGeometry.dtype_bytes;
  uint64_t hash = 0xcbf29ce484222325ull;
  for (uint32_t t = 0; t < num_tokens; ++t) {
    const uint32_t block = BlockAt(runs, num_runs, t / kGeometry.block_tokens);
    for (uint32_t l = 0; l < kGeometry.num_layers; ++l) {
      for (uint32_t p = 0; p < kGeometry.num_parts; ++p) {
        for (uint32_t h = 0; h < kGeometry.kv_heads; ++h) {
          uint32_t region = 0;
          uint64_t offset = 0;
          CHECK(flowkv_layout_element_address(pool->layout, l, p, block,
                                              t % kGeometry.block_tokens, h,
                                              &region, &offset));
          uint8_t* bytes = pool->bases[region] + offset;
          for (uint32_t i = 0; i < head_bytes; ++i) {
            const uint8_t want = Pattern(request, t, l, p, h, i);
            if (fill) bytes[i] = want;
            if (bytes[i] != want) {
              Fail(
                  "request %u token %u layer %u part %u head %u byte %u: "
                  "%u, want %u",
                  request, t, l, p, h, i, bytes[i], want);
            }
            hash = (hash ^ bytes[i]) * 0x100000001b3ull;
          }
        }
      }
    }
  }
  return hash;
}

static flowkv_engine_t* MakeEngine(const char* name, bool listen) {
  flowkv_engine_options_t options;
  flowkv_engine_options_init(&options);
  options.name = name;
  options.name_len = strlen(name);
  options.cluster_token = "c-api-test";
  options.cluster_token_len = strlen("c-api-test");
  options.ucx_peer_error_handling = !SharedMemoryMode();
  options.peer_failure_timeout_us = PEER_FAILURE_TIMEOUT_US;
  if (listen) {
    options.listen_ip = "127.0.0.1";
    options.listen_ip_len = strlen("127.0.0.1");
    options.listen_port = 0;
  }
  flowkv_engine_t* engine = NULL;
  CHECK(flowkv_engine_create(&options, &engine));
  return engine;
}

/* Waits for a handle and fails unless its transfer succeeded. */
static void WaitOk(flowkv_handle_t* handle, const char* what) {
  bool done = false;
  CHECK(flowkv_handle_wait(handle, SOON_US, &done));
  if (!done) Fail("%s: not done within %d us", what, SOON_US);
  flowkv_status_t result = FLOWKV_UNKNOWN;
  char message[512];
  size_t message_len = 0;
  CHECK(flowkv_handle_result(handle, &result, message, sizeof(message),
                             &message_len));
  if (result != FLOWKV_OK) {
    Fail("%s: %s: %s", what, flowkv_status_name(result), message);
  }
  flowkv_handle_free(handle);
}

/* The plan the receiver sends: its scratch region, then per request the
 * number of runs and the runs of its destination blocks. */
typedef struct Plan {
  uint32_t scratch_region;
  uint32_t num_runs[NUM_REQUESTS];
  flowkv_block_run_t runs[NUM_REQUESTS][MAX_RUNS];
} Plan;

/* What the sender offers for the receiver to fetch: the source blocks of
 * request FETCHED and the checksum of their KV. */
typedef struct FetchOffer {
  uint32_t num_runs;
  flowkv_block_run_t runs[MAX_RUNS];
  uint64_t checksum;
} FetchOffer;

/* Polls `kv` until a notification of `kind` (with `bytes`, when not NULL)
 * from any peer arrives; returns its peer and copies its bytes to *out. */
static uint64_t PollForOther(flowkv_kv_transfer_t* kv,
                             flowkv_notification_kind_t kind, const char* bytes,
                             void* out, size_t out_len) {
  const int64_t deadline = NowUs() + SOON_US;
  while (NowUs() < deadline) {
    flowkv_kv_results_t* results = NULL;
    CHECK(flowkv_kv_poll(kv, POLL_WAIT_US, &results));
    if (flowkv_kv_results_num_failed(results) != 0) {
      flowkv_kv_failed_t failed;
      CHECK(flowkv_kv_results_failed(results, 0, &failed));
      Fail("request %.*s failed: %s: %.*s", (int)failed.request_id_len,
           failed.request_id, flowkv_status_name(failed.status),
           (int)failed.message_len, failed.message);
    }
    for (size_t i = 0; i < flowkv_kv_results_num_other(results); ++i) {
      flowkv_notification_t n;
      CHECK(flowkv_kv_results_other(results, i, &n));
      if (n.kind != kind) continue;
      if (bytes != NULL && (n.bytes_len != strlen(bytes) ||
                            memcmp(n.bytes, bytes, n.bytes_len) != 0)) {
        continue;
      }
      if (out != NULL) {
        if (n.bytes_len != out_len) Fail("message of %zu bytes", n.bytes_len);
        memcpy(out, n.bytes, out_len);
      }
      const uint64_t peer = n.peer;
      flowkv_kv_results_free(results);
      return peer;
    }
    flowkv_kv_results_free(results);
  }
  Fail("no notification of kind %d within %d us", (int)kind, SOON_US);
  return 0;
}

static void SendBytes(flowkv_engine_t* engine, uint64_t peer, const void* bytes,
                      size_t len, const char* what) {
  flowkv_handle_t* handle = NULL;
  CHECK(flowkv_engine_send(engine, peer, bytes, len, NULL, &handle));
  WaitOk(handle, what);
}

static void CopyRuns(const flowkv_block_list_t* list, flowkv_block_run_t* runs,
                     uint32_t* num_runs) {
  size_t count = 0;
  CHECK(flowkv_block_list_runs(list, runs, MAX_RUNS, &count));
  *num_runs = (uint32_t)count;
}

static void RequestId(uint32_t request, char* buffer) {
  snprintf(buffer, 16, "req-%u", request);
}

/* ---- Sender (the second process) ----------------------------------------- */

static int RunSender(const char* address) {
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
  CHECK(flowkv_kv_create(engine, pool.layout, pool.regions, pool.num_regions,
                         NULL, &kv));
  flowkv_allocator_options_t allocator_options;
  flowkv_allocator_options_init(&allocator_options);
  allocator_options.num_blocks = kGeometry.num_blocks;
  flowkv_allocator_t* allocator = NULL;
  CHECK(flowkv_allocator_create(&allocator_options, &allocator));

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
  CHECK(flowkv_kv_create(engine, pool.layout, pool.regions, pool.num_regions,
                         NULL, &kv));
  flowkv_allocator_options_t allocator_options;
  flowkv_allocator_options_init(&allocator_options);
  allocator_options.num_blocks = kGeometry.num_blocks;
  flowkv_allocator_t* allocator = NULL;
  CHECK(flowkv_allocator_create(&allocator_options, &allocator));

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
    if (flowkv_kv_results_num_failed(results) != 0) {
      flowkv_kv_failed_t failed;
      CHECK(flowkv_kv_results_failed(results, 0, &failed));
      Fail("request %.*s failed: %s: %.*s", (int)failed.request_id_len,
           failed.request_id, flowkv_status_name(failed.status),
           (int)failed.message_len, failed.message);
    }
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
