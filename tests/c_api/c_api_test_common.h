/* SPDX-License-Identifier: Apache-2.0 */
/* Helpers of c_api_test (C11), shared by its receiver (c_api_test.c) and
 * sender (c_api_test_sender.c): the test's bounds and geometry, failing with
 * the role's name, pools and their KV pattern, engines, waits on handles and
 * notifications, and the messages the two processes exchange. */

#ifndef FLOWKV_TESTS_C_API_C_API_TEST_COMMON_H_
#define FLOWKV_TESTS_C_API_C_API_TEST_COMMON_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

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

extern const flowkv_geometry_t kGeometry;
extern const uint32_t kTokens[NUM_REQUESTS];
/* 0: the receiver (this process), 1: the sender (the child). */
extern int g_role;
/* The sender's pid in the receiver once started; -1 otherwise. */
extern pid_t g_child;

/* A pool: its layout, and the address of each region. */
typedef struct Pool {
  flowkv_layout_t* layout;
  uint32_t num_regions;
  uint32_t regions[8];
  uint8_t* bases[8];
} Pool;

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

#define CHECK(call) Check((call), #call)

/* Prints what failed (with the role), kills the child process when there is
 * one, and exits 1. */
_Noreturn void Fail(const char* format, ...);

/* Fails with the call's name, code and message unless it returned OK. */
void Check(flowkv_status_t status, const char* call);

/* CLOCK_MONOTONIC in microseconds. */
int64_t NowUs(void);

/* Whether UCX_TLS selects shared memory (posix or sm). */
bool SharedMemoryMode(void);

/* The byte i of head vector (request, token, layer, part, head). */
uint8_t Pattern(uint32_t request, uint32_t token, uint32_t layer, uint32_t part,
                uint32_t head, uint32_t i);

/* The byte i of the scratch buffer. */
uint8_t ScratchPattern(uint32_t i);

/* Makes `pool`: a layout of kGeometry and one host region per layout region,
 * allocated through `engine`. */
void MakePool(flowkv_engine_t* engine, flowkv_layout_preset_t preset,
              flowkv_block_order_t order, Pool* pool);

/* The block holding the request's block position `index`. */
uint32_t BlockAt(const flowkv_block_run_t* runs, size_t num_runs,
                 uint32_t index);

/* Fills (fill) or checks (!fill) the request's KV in `pool` against the
 * pattern, and returns the FNV-1a of its bytes in logical order. */
uint64_t VisitRequest(const Pool* pool, uint32_t request,
                      const flowkv_block_run_t* runs, size_t num_runs,
                      uint32_t num_tokens, bool fill);

/* An engine named `name` of the test's cluster, listening on 127.0.0.1:0
 * when `listen`. */
flowkv_engine_t* MakeEngine(const char* name, bool listen);

/* Waits for a handle and fails unless its transfer succeeded. */
void WaitOk(flowkv_handle_t* handle, const char* what);

/* The KvTransfer over `pool` and a block allocator for its blocks. */
void MakeKvAndAllocator(flowkv_engine_t* engine, const Pool* pool,
                        flowkv_kv_transfer_t** kv,
                        flowkv_allocator_t** allocator);

/* Fails naming the first failed request of `results`, if any. */
void FailOnFailedRequest(const flowkv_kv_results_t* results);

/* Polls `kv` until a notification of `kind` (with `bytes`, when not NULL)
 * from any peer arrives; returns its peer and copies its bytes to *out. */
uint64_t PollForOther(flowkv_kv_transfer_t* kv, flowkv_notification_kind_t kind,
                      const char* bytes, void* out, size_t out_len);

/* Sends `bytes` as a message to `peer` and waits until it is sent. */
void SendBytes(flowkv_engine_t* engine, uint64_t peer, const void* bytes,
               size_t len, const char* what);

/* Copies the runs of `list` (at most MAX_RUNS) to runs[0 .. *num_runs). */
void CopyRuns(const flowkv_block_list_t* list, flowkv_block_run_t* runs,
              uint32_t* num_runs);

/* Writes "req-<request>" to buffer (16 bytes). */
void RequestId(uint32_t request, char* buffer);

#endif /* FLOWKV_TESTS_C_API_C_API_TEST_COMMON_H_ */
