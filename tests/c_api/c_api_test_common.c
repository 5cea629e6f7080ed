/* SPDX-License-Identifier: Apache-2.0 */
/* The helpers of c_api_test declared in c_api_test_common.h. */

#define _POSIX_C_SOURCE 200809L

#include "c_api_test_common.h"

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

const flowkv_geometry_t kGeometry = {.num_layers = 4,
                                     .num_blocks = 64,
                                     .block_tokens = 16,
                                     .kv_heads = 4,
                                     .head_dim = 32,
                                     .dtype_bytes = 2,
                                     .num_parts = 2};
const uint32_t kTokens[NUM_REQUESTS] = {40, 80, 100, 56};
static const char* const kRole[2] = {"receiver", "sender"};
int g_role = 0;
pid_t g_child = -1;

_Noreturn void Fail(const char* format, ...) {
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
void Check(flowkv_status_t status, const char* call) {
  if (status != FLOWKV_OK) {
    Fail("%s: %s: %s", call, flowkv_status_name(status),
         flowkv_last_error_message());
  }
}

int64_t NowUs(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

bool SharedMemoryMode(void) {
  const char* tls = getenv("UCX_TLS");
  return tls != NULL && (strstr(tls, "posix") != NULL || strstr(tls, "sm"));
}

/* The byte i of head vector (request, token, layer, part, head). */
uint8_t Pattern(uint32_t request, uint32_t token, uint32_t layer, uint32_t part,
                uint32_t head, uint32_t i) {
  uint32_t x = request * 1000003u ^ token * 7919u ^ layer * 104729u ^
               part * 13u ^ head * 977u ^ i * 31u;
  x ^= x >> 13;
  x *= 0x5bd1e995u;
  return (uint8_t)(x ^ (x >> 15));
}

uint8_t ScratchPattern(uint32_t i) { return (uint8_t)(i * 7 + 3); }

void MakePool(flowkv_engine_t* engine, flowkv_layout_preset_t preset,
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
uint32_t BlockAt(const flowkv_block_run_t* runs, size_t num_runs,
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
uint64_t VisitRequest(const Pool* pool, uint32_t request,
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

flowkv_engine_t* MakeEngine(const char* name, bool listen) {
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
void WaitOk(flowkv_handle_t* handle, const char* what) {
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

void MakeKvAndAllocator(flowkv_engine_t* engine, const Pool* pool,
                        flowkv_kv_transfer_t** kv,
                        flowkv_allocator_t** allocator) {
  CHECK(flowkv_kv_create(engine, pool->layout, pool->regions,
                         pool->num_regions, NULL, kv));
  flowkv_allocator_options_t allocator_options;
  flowkv_allocator_options_init(&allocator_options);
  allocator_options.num_blocks = kGeometry.num_blocks;
  CHECK(flowkv_allocator_create(&allocator_options, allocator));
}

void FailOnFailedRequest(const flowkv_kv_results_t* results) {
  if (flowkv_kv_results_num_failed(results) == 0) return;
  flowkv_kv_failed_t failed;
  CHECK(flowkv_kv_results_failed(results, 0, &failed));
  Fail("request %.*s failed: %s: %.*s", (int)failed.request_id_len,
       failed.request_id, flowkv_status_name(failed.status),
       (int)failed.message_len, failed.message);
}

/* Polls `kv` until a notification of `kind` (with `bytes`, when not NULL)
 * from any peer arrives; returns its peer and copies its bytes to *out. */
uint64_t PollForOther(flowkv_kv_transfer_t* kv, flowkv_notification_kind_t kind,
                      const char* bytes, void* out, size_t out_len) {
  const int64_t deadline = NowUs() + SOON_US;
  while (NowUs() < deadline) {
    flowkv_kv_results_t* results = NULL;
    CHECK(flowkv_kv_poll(kv, POLL_WAIT_US, &results));
    FailOnFailedRequest(results);
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

void SendBytes(flowkv_engine_t* engine, uint64_t peer, const void* bytes,
               size_t len, const char* what) {
  flowkv_handle_t* handle = NULL;
  CHECK(flowkv_engine_send(engine, peer, bytes, len, NULL, &handle));
  WaitOk(handle, what);
}

void CopyRuns(const flowkv_block_list_t* list, flowkv_block_run_t* runs,
              uint32_t* num_runs) {
  size_t count = 0;
  CHECK(flowkv_block_list_runs(list, runs, MAX_RUNS, &count));
  *num_runs = (uint32_t)count;
}

void RequestId(uint32_t request, char* buffer) {
  snprintf(buffer, 16, "req-%u", request);
}
