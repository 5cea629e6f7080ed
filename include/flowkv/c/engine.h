/* SPDX-License-Identifier: Apache-2.0 */
/* flowkv/c/engine.h: flowkv_engine_t, the transfer engine
 * (flowkv/transfer_engine.h): its options, memory regions, listening and
 * peers, one-sided writes and reads, sends, notifications and stats. Part of
 * flowkv/flowkv_c.h. */

#ifndef FLOWKV_C_ENGINE_H_
#define FLOWKV_C_ENGINE_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "flowkv/c/handle.h"
#include "flowkv/c/status.h"
#include "flowkv/export.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Thread-safe. */
typedef struct flowkv_engine flowkv_engine_t;

typedef enum flowkv_memory_kind {
  FLOWKV_MEMORY_HOST = 0,
  FLOWKV_MEMORY_CUDA_DEVICE = 1
} flowkv_memory_kind_t;

typedef enum flowkv_log_severity {
  FLOWKV_LOG_INFO = 0,
  FLOWKV_LOG_WARNING = 1,
  FLOWKV_LOG_ERROR = 2
} flowkv_log_severity_t;

/* A log sink: called from any library thread (often the engine's progress
 * thread); it must not block or call back into the library. `message` is
 * valid for the call only and is not NUL-terminated. */
typedef void (*flowkv_log_fn)(void* user_data, flowkv_log_severity_t severity,
                              const char* message, size_t message_len);

/* One UCX setting (name without "UCX_", e.g. "TLS" = "tcp"). */
typedef struct flowkv_config_entry {
  const char* name;
  size_t name_len;
  const char* value;
  size_t value_len;
} flowkv_config_entry_t;

/* TransferEngineOptions; flowkv_engine_options_init sets the defaults. */
typedef struct flowkv_engine_options {
  /* Sent to peers in the handshake. Default: empty = "flowkv". */
  const char* name;
  size_t name_len;
  /* Secret shared by the cluster's engines. Default: empty. */
  const void* cluster_token;
  size_t cluster_token_len;
  /* When listen_ip is not empty, flowkv_engine_create also listens on
   * listen_ip:listen_port (IPv4 or IPv6; port 0 picks a free port; see
   * flowkv_engine_listen_address). Default: empty (no listener). */
  const char* listen_ip;
  size_t listen_ip_len;
  uint16_t listen_port;
  /* Deadline of a transfer without its own. Default: 30 s. */
  int64_t default_timeout_us;
  /* true: UCX peer error handling; false: engine heartbeats, required with
   * shared-memory transports. Default: true. */
  bool ucx_peer_error_handling;
  /* Bound on detecting a dead peer. Default: 2 s. */
  int64_t peer_failure_timeout_us;
  /* Bound on connecting and on a handshake. Default: 10 s. */
  int64_t connect_timeout_us;
  /* Progress thread always spins. Default: false. */
  bool busy_poll;
  /* Spin this long after activity before sleeping. Default: 200 us. */
  int64_t idle_spin_us;
  /* Queued messages beyond this are dropped. Default: 1 << 20. */
  uint64_t max_queued_notifications;
  /* Ops are posted in pieces of at most this. Default: 4 MiB. */
  uint64_t max_window_bytes;
  /* Cap on registered + allocated bytes; 0: none. Default: 0. */
  uint64_t max_registered_bytes;
  /* UCX settings on top of the environment. Default: none. */
  const flowkv_config_entry_t* ucx_config;
  size_t ucx_config_count;
  /* Default: NULL (warnings and errors go to stderr). */
  flowkv_log_fn log;
  void* log_user_data;
} flowkv_engine_options_t;

/* Sets every field of *options to its default. NULL is ignored. */
FLOWKV_EXPORT void flowkv_engine_options_init(flowkv_engine_options_t* options);

/* Creates an engine (and its listener, see listen_ip). Errors as
 * TransferEngine::Create and Listen. The option strings are copied. */
FLOWKV_EXPORT flowkv_status_t flowkv_engine_create(
    const flowkv_engine_options_t* options, flowkv_engine_t** engine);

/* Closes every connection, fails unfinished transfers with
 * FLOWKV_CANCELLED, frees the engine's memory. Blocks until done. Destroy
 * every KV transfer over the engine first. Handles stay usable. */
FLOWKV_EXPORT void flowkv_engine_destroy(flowkv_engine_t* engine);

/* Registers caller memory [base, base + length) as region *region_id
 * (engine regions are numbered 0, 1, ... in the order they succeed). */
FLOWKV_EXPORT flowkv_status_t flowkv_engine_register_memory(
    flowkv_engine_t* engine, void* base, uint64_t length,
    flowkv_memory_kind_t kind, uint32_t* region_id);

/* Allocates and registers `length` bytes owned by the engine; *data is
 * their address (a device pointer for FLOWKV_MEMORY_CUDA_DEVICE). */
FLOWKV_EXPORT flowkv_status_t flowkv_engine_allocate_memory(
    flowkv_engine_t* engine, uint64_t length, flowkv_memory_kind_t kind,
    uint32_t* region_id, void** data);

/* NOT_FOUND for an unknown region; FAILED_PRECONDITION while in use. */
FLOWKV_EXPORT flowkv_status_t
flowkv_engine_deregister_memory(flowkv_engine_t* engine, uint32_t region_id);

/* Starts listening on "ip:port" ("[ipv6]:port"; port 0: any free port;
 * flowkv_engine_listen_address gives the bound address). FAILED_PRECONDITION
 * when already listening; INVALID_ARGUMENT for a malformed address;
 * UNAVAILABLE when the address is in use. */
FLOWKV_EXPORT flowkv_status_t flowkv_engine_listen(flowkv_engine_t* engine,
                                                   const char* address,
                                                   size_t address_len);

/* The address the engine listens on. FAILED_PRECONDITION when it does not
 * listen. */
FLOWKV_EXPORT flowkv_status_t
flowkv_engine_listen_address(const flowkv_engine_t* engine, char* address,
                             size_t capacity, size_t* length);

/* This engine's metadata blob for flowkv_engine_add_peer on another engine
 * (a blob: no NUL is written). */
FLOWKV_EXPORT flowkv_status_t
flowkv_engine_local_metadata(const flowkv_engine_t* engine, void* metadata,
                             size_t capacity, size_t* length);

/* Connects to a listening engine ("ip:port") and runs the handshake. Errors
 * as TransferEngine::Connect (PERMISSION_DENIED: token refused). */
FLOWKV_EXPORT flowkv_status_t flowkv_engine_connect(flowkv_engine_t* engine,
                                                    const char* address,
                                                    size_t address_len,
                                                    uint64_t* peer);

/* Connects to the engine whose local metadata is `metadata`. */
FLOWKV_EXPORT flowkv_status_t flowkv_engine_add_peer(flowkv_engine_t* engine,
                                                     const void* metadata,
                                                     size_t metadata_len,
                                                     uint64_t* peer);

/* Disconnects a peer (see TransferEngine::Disconnect for what OK and
 * DEADLINE_EXCEEDED promise). */
FLOWKV_EXPORT flowkv_status_t flowkv_engine_disconnect(flowkv_engine_t* engine,
                                                       uint64_t peer);

/* Whether `peer` is connected (false once it failed or disconnected).
 * NOT_FOUND for an id this engine never had. */
FLOWKV_EXPORT flowkv_status_t flowkv_engine_peer_connected(
    const flowkv_engine_t* engine, uint64_t peer, bool* connected);

/* One copy (see "Op convention" in flowkv/transfer_engine.h: for a write
 * src is local and dst the peer's; for a read src is the peer's). */
typedef struct flowkv_transfer_op {
  uint32_t src_region;
  uint64_t src_offset;
  uint32_t dst_region;
  uint64_t dst_offset;
  uint64_t length;
} flowkv_transfer_op_t;

/* TransferOptions. Pass NULL for all defaults. */
typedef struct flowkv_transfer_options {
  /* Sent to the peer as a FLOWKV_NOTIFICATION_TRANSFER after the data; NULL:
   * none (a non-NULL pointer with length 0 sends an empty one). At most
   * 1 MiB. */
  const void* notification;
  size_t notification_len;
  /* Deadline from the call; 0: the engine's default_timeout. */
  int64_t timeout_us;
  /* Done only once the peer acknowledged the notification (requires one). */
  bool acknowledged;
} flowkv_transfer_options_t;

/* Writes local memory to the peer's (ops as above), then the notification.
 * FLOWKV_OK with *handle: accepted. Otherwise the transfer was refused
 * (INVALID_ARGUMENT, OUT_OF_RANGE, NOT_FOUND, UNAVAILABLE as
 * TransferEngine::Write) or already failed, and nothing of it can land.
 * `ops` may be NULL when num_ops is 0 (only the notification moves). */
FLOWKV_EXPORT flowkv_status_t flowkv_engine_write(
    flowkv_engine_t* engine, uint64_t peer, const flowkv_transfer_op_t* ops,
    size_t num_ops, const flowkv_transfer_options_t* options,
    flowkv_handle_t** handle);

/* Reads the peer's memory into local memory. As flowkv_engine_write. */
FLOWKV_EXPORT flowkv_status_t flowkv_engine_read(
    flowkv_engine_t* engine, uint64_t peer, const flowkv_transfer_op_t* ops,
    size_t num_ops, const flowkv_transfer_options_t* options,
    flowkv_handle_t** handle);

/* Sends `bytes` (at most 1 MiB) as a FLOWKV_NOTIFICATION_MESSAGE. */
FLOWKV_EXPORT flowkv_status_t flowkv_engine_send(
    flowkv_engine_t* engine, uint64_t peer, const void* bytes, size_t len,
    const flowkv_transfer_options_t* options, flowkv_handle_t** handle);

typedef enum flowkv_notification_kind {
  FLOWKV_NOTIFICATION_TRANSFER = 0, /* a write's / read's notification */
  FLOWKV_NOTIFICATION_MESSAGE = 1,  /* the bytes of a send */
  FLOWKV_NOTIFICATION_PEER_DISCONNECTED = 2, /* bytes: the reason */
} flowkv_notification_kind_t;

/* A notification; `bytes` points into memory owned by whoever filled it
 * (the caller's buffer, or a flowkv_kv_results_t). */
typedef struct flowkv_notification {
  uint64_t peer;
  flowkv_notification_kind_t kind;
  const uint8_t* bytes;
  size_t bytes_len;
} flowkv_notification_t;

/* Takes queued notifications in arrival order into out[0 .. *count), their
 * bytes packed into `buffer`. With wait_us > 0 blocks up to wait_us until
 * one is queued. Notifications that do not fit (capacity or buffer) stay
 * queued for the next call. RESOURCE_EXHAUSTED (nothing taken) when the
 * first queued one's bytes exceed buffer_capacity (1 MiB always suffices).
 * KV transfers over the engine take their notifications themselves: do not
 * mix with flowkv_kv_poll, which returns the others as well. Concurrent
 * calls are served one at a time. */
FLOWKV_EXPORT flowkv_status_t flowkv_engine_take_notifications(
    flowkv_engine_t* engine, int64_t wait_us, flowkv_notification_t* out,
    size_t capacity, void* buffer, size_t buffer_capacity, size_t* count);

/* TransferEngineStats. */
typedef struct flowkv_engine_stats {
  uint64_t peers_tracked;
  uint64_t peers_connected;
  uint64_t peers_listed;
  uint64_t transfers_active;
  uint64_t messages_dropped;
  uint64_t registered_bytes;
} flowkv_engine_stats_t;

FLOWKV_EXPORT flowkv_status_t flowkv_engine_stats(const flowkv_engine_t* engine,
                                                  flowkv_engine_stats_t* stats);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FLOWKV_C_ENGINE_H_ */
