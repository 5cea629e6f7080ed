/* SPDX-License-Identifier: Apache-2.0 */
/* flowkv_c.h: the plain C API of libflowkv, for engines written in other
 * languages (Rust, Go, ...) and for C++ engines that must not take Abseil or
 * standard-library types across their ABI. It wraps the C++ API one to one:
 * TransferEngine (flowkv/transfer_engine.h), TransferHandle
 * (flowkv/transfer_handle.h), KvTransfer (flowkv/kv_transfer.h), KvLayout
 * (flowkv/kv_layout.h), BlockList and BlockAllocator; read those headers for
 * the full contracts. docs/c_api.md has a walk-through.
 *
 *   flowkv_engine_options_t options;
 *   flowkv_engine_options_init(&options);
 *   options.name = "prefill-0";
 *   options.name_len = 9;
 *   flowkv_engine_t* engine = NULL;
 *   if (flowkv_engine_create(&options, &engine) != FLOWKV_OK) {
 *     fprintf(stderr, "%s\n", flowkv_last_error_message());
 *   }
 *
 * Errors. Every function that can fail returns a flowkv_status_t: FLOWKV_OK
 * or one of the codes below (the numbers of absl::StatusCode). It also sets
 * this thread's last error message, read with flowkv_last_error_message():
 * the failure's message, or "" when the call returned FLOWKV_OK. A failed call
 * changes nothing, and sets its output arguments only on success (except the
 * length of a string or blob that did not fit, see "Output buffers"). Null
 * pointers (where not documented as optional), null buffers with a non-zero
 * length and out-of-range enum values give FLOWKV_INVALID_ARGUMENT naming the
 * argument. No C++ exception crosses this API: an unexpected one becomes
 * FLOWKV_INTERNAL (FLOWKV_RESOURCE_EXHAUSTED for an allocation failure).
 *
 * A transfer's own outcome is separate from the calls' status: a call that
 * starts a transfer returns FLOWKV_OK and a handle once it is accepted; the
 * handle then reports the transfer's result (flowkv_handle_result). A
 * transfer refused or failed before the call returned is reported as the
 * call's status instead, and no handle is made.
 *
 * Strings and byte buffers. Inputs are a pointer and a length (nothing needs
 * a terminating NUL); a null pointer with length 0 is the empty string.
 *
 * Output buffers. Functions that return a string or blob take the caller's
 * buffer and its capacity, and store the full length in *length. When the
 * bytes fit (strings: length + 1 bytes, with a terminating NUL written) they
 * are copied and the call returns FLOWKV_OK; otherwise nothing is copied and
 * the call returns FLOWKV_RESOURCE_EXHAUSTED with *length set, so a caller
 * may ask with capacity 0 first and call again with a large enough buffer.
 *
 * Durations are int64_t microseconds (names end in _us).
 *
 * Objects. Every object is opaque, made by a *_create (or another function
 * that says so) and released by its *_destroy / *_free, which accept NULL.
 * Engines, KV transfers, allocators and transfer handles are thread-safe;
 * layouts are immutable (thread-safe); block lists and KV poll results are
 * externally synchronized. */

#ifndef FLOWKV_FLOWKV_C_H_
#define FLOWKV_FLOWKV_C_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "flowkv/export.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Status ------------------------------------------------------------- */

/* The codes of absl::StatusCode. */
typedef enum flowkv_status_code {
  FLOWKV_OK = 0,
  FLOWKV_CANCELLED = 1,
  FLOWKV_UNKNOWN = 2,
  FLOWKV_INVALID_ARGUMENT = 3,
  FLOWKV_DEADLINE_EXCEEDED = 4,
  FLOWKV_NOT_FOUND = 5,
  FLOWKV_ALREADY_EXISTS = 6,
  FLOWKV_PERMISSION_DENIED = 7,
  FLOWKV_RESOURCE_EXHAUSTED = 8,
  FLOWKV_FAILED_PRECONDITION = 9,
  FLOWKV_ABORTED = 10,
  FLOWKV_OUT_OF_RANGE = 11,
  FLOWKV_UNIMPLEMENTED = 12,
  FLOWKV_INTERNAL = 13,
  FLOWKV_UNAVAILABLE = 14,
  FLOWKV_DATA_LOSS = 15,
  FLOWKV_UNAUTHENTICATED = 16
} flowkv_status_code_t;

/* A flowkv_status_code_t value. */
typedef int flowkv_status_t;

/* The message of this thread's last failed call ("" after a call that
 * returned FLOWKV_OK). Never NULL; valid until this thread's next flowkv
 * call. */
FLOWKV_EXPORT const char* flowkv_last_error_message(void);

/* "OK", "INVALID_ARGUMENT", ...; "UNKNOWN_CODE" for other values. Static. */
FLOWKV_EXPORT const char* flowkv_status_name(flowkv_status_t status);

/* "MAJOR.MINOR.PATCH" of the linked library. Static. */
FLOWKV_EXPORT const char* flowkv_version(void);

/* ---- Opaque objects ----------------------------------------------------- */

typedef struct flowkv_engine flowkv_engine_t;
typedef struct flowkv_handle flowkv_handle_t; /* a transfer in flight */
typedef struct flowkv_kv_transfer flowkv_kv_transfer_t;
typedef struct flowkv_kv_results flowkv_kv_results_t;
typedef struct flowkv_layout flowkv_layout_t;
typedef struct flowkv_allocator flowkv_allocator_t;
typedef struct flowkv_block_list flowkv_block_list_t;

/* ---- Engine ------------------------------------------------------------- */

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
  uint64_t max_piece_bytes;
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
  uint64_t max_bytes_posted_per_iteration;
} flowkv_engine_stats_t;

FLOWKV_EXPORT flowkv_status_t flowkv_engine_stats(const flowkv_engine_t* engine,
                                                  flowkv_engine_stats_t* stats);

/* ---- Transfer handles --------------------------------------------------- */

typedef enum flowkv_transfer_state {
  FLOWKV_TRANSFER_PENDING = 0,
  FLOWKV_TRANSFER_IN_FLIGHT = 1,
  FLOWKV_TRANSFER_DONE = 2
} flowkv_transfer_state_t;

/* Where the transfer is (DONE: flowkv_handle_result holds the outcome). */
FLOWKV_EXPORT flowkv_status_t flowkv_handle_state(
    const flowkv_handle_t* handle, flowkv_transfer_state_t* state);

/* Blocks until the transfer is done or timeout_us passes (negative: no
 * limit); *done says which. Waiting does not change the transfer. */
FLOWKV_EXPORT flowkv_status_t flowkv_handle_wait(const flowkv_handle_t* handle,
                                                 int64_t timeout_us,
                                                 bool* done);

/* The transfer's outcome: *result is its code (FLOWKV_OK, or as
 * TransferHandle::status(): FAILED_PRECONDITION while not done) and its
 * message goes to `message` (see "Output buffers"; optional: NULL with
 * capacity 0 and NULL message_len skip it). */
FLOWKV_EXPORT flowkv_status_t flowkv_handle_result(
    const flowkv_handle_t* handle, flowkv_status_t* result, char* message,
    size_t message_capacity, size_t* message_len);

typedef struct flowkv_transfer_stats {
  uint64_t ops;
  uint64_t bytes;
  /* From submission until posted / done; -1 until then. */
  int64_t post_time_us;
  int64_t completion_time_us;
} flowkv_transfer_stats_t;

FLOWKV_EXPORT flowkv_status_t flowkv_handle_stats(
    const flowkv_handle_t* handle, flowkv_transfer_stats_t* stats);

/* Requests cancellation and returns at once (TransferHandle::Cancel). */
FLOWKV_EXPORT flowkv_status_t flowkv_handle_cancel(flowkv_handle_t* handle);

/* Releases the handle; never blocks, never cancels (the transfer runs on). */
FLOWKV_EXPORT void flowkv_handle_free(flowkv_handle_t* handle);

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

/* ---- Block allocator ---------------------------------------------------- */

typedef struct flowkv_allocator_options {
  uint32_t num_blocks;          /* [1, 2^32 - 2]; must be set */
  uint32_t growth_slack_blocks; /* Default: 32 */
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
} flowkv_allocator_stats_t;

FLOWKV_EXPORT flowkv_status_t flowkv_allocator_stats(
    const flowkv_allocator_t* allocator, flowkv_allocator_stats_t* stats);

/* ---- Layouts ------------------------------------------------------------ */

/* KvGeometry: every field non-zero; num_parts 2 (K, V) or 1 (MLA). */
typedef struct flowkv_geometry {
  uint32_t num_layers;
  uint32_t num_blocks;
  uint32_t block_tokens;
  uint32_t kv_heads;
  uint32_t head_dim;
  uint32_t dtype_bytes;
  uint32_t num_parts;
} flowkv_geometry_t;

/* The named layouts of KvLayout (flowkv/kv_layout.h, docs/layouts.md). */
typedef enum flowkv_layout_preset {
  FLOWKV_LAYOUT_FLOWKV_BLOCK_MAJOR = 0,
  FLOWKV_LAYOUT_VLLM_FLASH_ATTN = 1,
  FLOWKV_LAYOUT_VLLM_FLASH_INFER = 2,
  FLOWKV_LAYOUT_VLLM_CROSS_LAYER = 3,
  FLOWKV_LAYOUT_SGLANG_MHA = 4,
  FLOWKV_LAYOUT_MLA = 5,
  FLOWKV_LAYOUT_TRTLLM_BLOCK_POOL = 6
} flowkv_layout_preset_t;

/* The element order inside a block (presets that take one; the others
 * require NHD). */
typedef enum flowkv_block_order {
  FLOWKV_BLOCK_ORDER_NHD = 0,
  FLOWKV_BLOCK_ORDER_HND = 1
} flowkv_block_order_t;

/* vLLM's standardized layouts (VllmKvLayout). */
typedef enum flowkv_vllm_layout {
  FLOWKV_VLLM_LBNHC = 0,
  FLOWKV_VLLM_LBHNC = 1,
  FLOWKV_VLLM_LHBNC = 2,
  FLOWKV_VLLM_BLNHC = 3,
  FLOWKV_VLLM_BLHNC = 4,
  FLOWKV_VLLM_BHLNC = 5
} flowkv_vllm_layout_t;

/* A preset layout. INVALID_ARGUMENT naming the field for a bad geometry or
 * an order the preset does not take. */
FLOWKV_EXPORT flowkv_status_t flowkv_layout_create_preset(
    flowkv_layout_preset_t preset, const flowkv_geometry_t* geometry,
    flowkv_block_order_t order, flowkv_layout_t** layout);

/* KvLayout::Vllm; one_region_per_layer = RegionSplit::kOnePerLayer. */
FLOWKV_EXPORT flowkv_status_t flowkv_layout_create_vllm(
    const flowkv_geometry_t* geometry, flowkv_vllm_layout_t vllm_layout,
    bool one_region_per_layer, flowkv_layout_t** layout);

/* KvTensor: where one (layer, part) tensor lives. */
typedef struct flowkv_tensor {
  uint32_t region;
  uint64_t offset;
  uint64_t block_stride;
  uint64_t token_stride;
  uint64_t head_stride;
} flowkv_tensor_t;

/* KvLayout::CreateStrided: tensors[layer * num_parts + part]. */
FLOWKV_EXPORT flowkv_status_t flowkv_layout_create_strided(
    const flowkv_geometry_t* geometry, const flowkv_tensor_t* tensors,
    size_t num_tensors, flowkv_layout_t** layout);

/* Reads flowkv_layout_serialize's bytes (may come from the network). */
FLOWKV_EXPORT flowkv_status_t flowkv_layout_parse(const void* bytes, size_t len,
                                                  flowkv_layout_t** layout);
/* The wire form (a blob; see "Output buffers"). */
FLOWKV_EXPORT flowkv_status_t flowkv_layout_serialize(
    const flowkv_layout_t* layout, void* out, size_t capacity, size_t* length);
FLOWKV_EXPORT void flowkv_layout_free(flowkv_layout_t* layout);

FLOWKV_EXPORT flowkv_status_t flowkv_layout_geometry(
    const flowkv_layout_t* layout, flowkv_geometry_t* geometry);
/* e.g. "vllm_flash_infer(HND)" (a string; see "Output buffers"). */
FLOWKV_EXPORT flowkv_status_t flowkv_layout_name(const flowkv_layout_t* layout,
                                                 char* name, size_t capacity,
                                                 size_t* length);
FLOWKV_EXPORT flowkv_status_t
flowkv_layout_num_regions(const flowkv_layout_t* layout, uint32_t* num_regions);
/* OUT_OF_RANGE for region >= num_regions. */
FLOWKV_EXPORT flowkv_status_t flowkv_layout_region_bytes(
    const flowkv_layout_t* layout, uint32_t region, uint64_t* bytes);
FLOWKV_EXPORT flowkv_status_t
flowkv_layout_fingerprint(const flowkv_layout_t* layout, uint64_t* fingerprint);
/* Where the head vector (layer, part, block, token, head) starts; part 0 is
 * K (or the latent), 1 is V. OUT_OF_RANGE naming the index past its limit. */
FLOWKV_EXPORT flowkv_status_t flowkv_layout_element_address(
    const flowkv_layout_t* layout, uint32_t layer, uint32_t part,
    uint32_t block, uint32_t token, uint32_t head, uint32_t* region,
    uint64_t* offset);
/* OK when pools of the two layouts can exchange KV; else INVALID_ARGUMENT
 * naming the field (CheckKvExchange). */
FLOWKV_EXPORT flowkv_status_t flowkv_layout_check_exchange(
    const flowkv_layout_t* a, const flowkv_layout_t* b);

/* ---- KV transfer -------------------------------------------------------- */

/* A request's blocks, in token order: either `runs` or `ids` (not both). */
typedef struct flowkv_blocks {
  const flowkv_block_run_t* runs;
  size_t num_runs;
  const uint32_t* ids;
  size_t num_ids;
} flowkv_blocks_t;

/* KvSendRequest; flowkv_kv_request_init sets the defaults (one sender,
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

/* ---- Transfer planning -------------------------------------------------- */

/* TransferPlanRequest: which tokens, layers and heads of a request move from
 * blocks of one pool to blocks of another (flowkv/transfer_plan.h). */
typedef struct flowkv_plan_request {
  const flowkv_layout_t* src_layout;
  flowkv_blocks_t src_blocks;
  const flowkv_layout_t* dst_layout;
  flowkv_blocks_t dst_blocks;
  uint64_t num_tokens;  /* 0: an empty plan */
  uint32_t layer_begin; /* [layer_begin, layer_end); (0, 0): every layer */
  uint32_t layer_end;
  uint32_t src_head_begin;
  uint32_t dst_head_begin;
  uint32_t num_heads; /* 0: every source head from src_head_begin */
} flowkv_plan_request_t;

/* The ops that copy the request (PlanTransfer), with layout region indices
 * as regions: map them to engine region ids before flowkv_engine_write.
 * Written to ops[0 .. *count); RESOURCE_EXHAUSTED with *count set when
 * capacity is too small. INVALID_ARGUMENT / OUT_OF_RANGE as PlanTransfer. */
FLOWKV_EXPORT flowkv_status_t
flowkv_plan_transfer(const flowkv_plan_request_t* request,
                     flowkv_transfer_op_t* ops, size_t capacity, size_t* count);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FLOWKV_FLOWKV_C_H_ */
