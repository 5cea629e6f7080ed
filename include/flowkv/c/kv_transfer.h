/* SPDX-License-Identifier: Apache-2.0 */
/* flowkv/c/kv_transfer.h: flowkv_kv_transfer_t, moving a request's KV
 * blocks between pools over an engine (flowkv/kv_transfer.h): peer pools,
 * send, expect, forget, poll, stats, and the poll results
 * flowkv_kv_results_t. Part of flowkv/flowkv_c.h. */

#ifndef FLOWKV_C_KV_TRANSFER_H_
#define FLOWKV_C_KV_TRANSFER_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "flowkv/c/allocator.h"
#include "flowkv/c/engine.h"
#include "flowkv/c/handle.h"
#include "flowkv/c/layout.h"
#include "flowkv/c/status.h"
#include "flowkv/export.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Thread-safe. */
typedef struct flowkv_kv_transfer flowkv_kv_transfer_t;
/* Poll results; externally synchronized. */
typedef struct flowkv_kv_results flowkv_kv_results_t;

/* ---- KV transfer -------------------------------------------------------- */
/* KvPiece; flowkv_kv_request_init sets the defaults (one sender,
 * final chunk, every layer and head). */
typedef struct flowkv_kv_request {
  flowkv_blocks_t src_blocks;
  flowkv_blocks_t dst_blocks;
  uint64_t token_begin;
  uint64_t num_tokens;
  uint32_t layer_begin; /* [layer_begin, layer_end); (0, 0): every layer */
  uint32_t layer_end;
  uint32_t src_head_begin;
  uint32_t dst_head_begin;
  uint32_t num_heads; /* 0: every head */
  uint32_t sender_rank;
  uint32_t num_senders; /* Default: 1 */
  bool final_chunk;     /* Default: true */
  const void* payload;  /* delivered with the finished request */
  size_t payload_len;   /* at most 64 KiB */
  int64_t timeout_us;   /* 0: the engine's default_timeout */
} flowkv_kv_request_t;

FLOWKV_EXPORT void flowkv_kv_request_init(flowkv_kv_request_t* request);

typedef struct flowkv_kv_options {
  /* A request whose next piece does not come within this fails. Default:
   * 60 s. */
  int64_t incomplete_request_timeout_us;
  /* Finished / failed / forgotten ids remembered. Default: 65536. */
  uint64_t max_tombstones;
  /* Default: NULL (nothing logged). */
  flowkv_log_fn log;
  void* log_user_data;
} flowkv_kv_options_t;

FLOWKV_EXPORT void flowkv_kv_options_init(flowkv_kv_options_t* options);

/* A KV transfer over `engine` (borrowed: destroy the KV transfer first) for
 * the pool `layout` (copied), whose region i is engine region regions[i].
 * `options` may be NULL (defaults). Errors as KvTransfer::Create. */
FLOWKV_EXPORT flowkv_status_t
flowkv_kv_create(flowkv_engine_t* engine, const flowkv_layout_t* layout,
                 const uint32_t* regions, size_t num_regions,
                 const flowkv_kv_options_t* options, flowkv_kv_transfer_t** kv);
FLOWKV_EXPORT void flowkv_kv_destroy(flowkv_kv_transfer_t* kv);

/* Declares `peer`'s pool (KvTransfer::AddPeerPool). */
FLOWKV_EXPORT flowkv_status_t flowkv_kv_add_peer_pool(
    flowkv_kv_transfer_t* kv, uint64_t peer, const flowkv_layout_t* layout,
    const uint32_t* peer_regions, size_t num_regions);
/* Sends this pool's descriptor to `peer`; the peer answers with its own. */
FLOWKV_EXPORT flowkv_status_t flowkv_kv_announce_pool(flowkv_kv_transfer_t* kv,
                                                      uint64_t peer);
/* Waits until `peer`'s pool is known (OK) or refused (its error), up to
 * timeout_us (DEADLINE_EXCEEDED); what it handles meanwhile comes with the
 * next poll. */
FLOWKV_EXPORT flowkv_status_t flowkv_kv_wait_for_peer_pool(
    flowkv_kv_transfer_t* kv, uint64_t peer, int64_t timeout_us);

/* Push one piece of request `request_id` into the peer's pool; pull one
 * from it. Accepted: FLOWKV_OK and *handle (done OK once the peer has the
 * data). Otherwise refused or failed as KvTransfer::Send / Fetch, no
 * handle. */
FLOWKV_EXPORT flowkv_status_t flowkv_kv_send(flowkv_kv_transfer_t* kv,
                                             const char* request_id,
                                             size_t request_id_len,
                                             uint64_t peer,
                                             const flowkv_kv_request_t* request,
                                             flowkv_handle_t** handle);
FLOWKV_EXPORT flowkv_status_t
flowkv_kv_fetch(flowkv_kv_transfer_t* kv, const char* request_id,
                size_t request_id_len, uint64_t peer,
                const flowkv_kv_request_t* request, flowkv_handle_t** handle);

/* The request must finish within timeout_us (> 0) from now. */
FLOWKV_EXPORT flowkv_status_t flowkv_kv_expect(flowkv_kv_transfer_t* kv,
                                               const char* request_id,
                                               size_t request_id_len,
                                               int64_t timeout_us);
/* Drops every state of the request (KvTransfer::Forget). */
FLOWKV_EXPORT flowkv_status_t flowkv_kv_forget(flowkv_kv_transfer_t* kv,
                                               const char* request_id,
                                               size_t request_id_len);
/* Leading layers of which every piece arrived (KvTransfer::LayersArrived). */
FLOWKV_EXPORT flowkv_status_t
flowkv_kv_layers_arrived(const flowkv_kv_transfer_t* kv, const char* request_id,
                         size_t request_id_len, uint32_t* layers);

/* Handles the engine's notifications (waiting up to wait_us for the first)
 * and returns what happened since the last poll as a new results object
 * (free it with flowkv_kv_results_free). */
FLOWKV_EXPORT flowkv_status_t flowkv_kv_poll(flowkv_kv_transfer_t* kv,
                                             int64_t wait_us,
                                             flowkv_kv_results_t** results);

typedef struct flowkv_kv_stats {
  uint64_t requests_active;
  uint64_t results_pending;
  uint64_t tombstones;
  uint64_t malformed_notices;
  uint64_t late_notices;
  uint64_t pools_refused;
} flowkv_kv_stats_t;

FLOWKV_EXPORT flowkv_status_t flowkv_kv_stats(const flowkv_kv_transfer_t* kv,
                                              flowkv_kv_stats_t* stats);

/* Poll results. Pointers in the entries below point into `results` and stay
 * valid until flowkv_kv_results_free. Counts are 0 for NULL. */
typedef struct flowkv_kv_finished {
  const char* request_id;
  size_t request_id_len;
  const uint8_t* payload;
  size_t payload_len;
} flowkv_kv_finished_t;

typedef struct flowkv_kv_failed {
  const char* request_id;
  size_t request_id_len;
  flowkv_status_t status;
  const char* message;
  size_t message_len;
} flowkv_kv_failed_t;

/* A request a peer fetched from this side: its blocks may be freed. */
typedef struct flowkv_kv_released {
  const char* request_id;
  size_t request_id_len;
  uint64_t peer;
  flowkv_status_t status; /* OK: fetched; else the fetch's failure */
  const char* message;
  size_t message_len;
} flowkv_kv_released_t;

FLOWKV_EXPORT size_t
flowkv_kv_results_num_finished(const flowkv_kv_results_t* results);
FLOWKV_EXPORT size_t
flowkv_kv_results_num_failed(const flowkv_kv_results_t* results);
FLOWKV_EXPORT size_t
flowkv_kv_results_num_released(const flowkv_kv_results_t* results);
/* Notifications that were not KV transfer's (messages, transfers, every
 * peer disconnection). */
FLOWKV_EXPORT size_t
flowkv_kv_results_num_other(const flowkv_kv_results_t* results);
/* Entry `index`; OUT_OF_RANGE past the count. */
FLOWKV_EXPORT flowkv_status_t
flowkv_kv_results_finished(const flowkv_kv_results_t* results, size_t index,
                           flowkv_kv_finished_t* entry);
FLOWKV_EXPORT flowkv_status_t
flowkv_kv_results_failed(const flowkv_kv_results_t* results, size_t index,
                         flowkv_kv_failed_t* entry);
FLOWKV_EXPORT flowkv_status_t
flowkv_kv_results_released(const flowkv_kv_results_t* results, size_t index,
                           flowkv_kv_released_t* entry);
FLOWKV_EXPORT flowkv_status_t
flowkv_kv_results_other(const flowkv_kv_results_t* results, size_t index,
                        flowkv_notification_t* entry);
FLOWKV_EXPORT void flowkv_kv_results_free(flowkv_kv_results_t* results);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FLOWKV_C_KV_TRANSFER_H_ */
