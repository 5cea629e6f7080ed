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
 * externally synchronized.
 *
 * The declarations live in one header per concept, all included here:
 * flowkv/c/status.h, flowkv/c/engine.h, flowkv/c/handle.h,
 * flowkv/c/allocator.h (block lists, allocator), flowkv/c/layout.h (layouts,
 * transfer planning) and flowkv/c/kv_transfer.h. */

#ifndef FLOWKV_FLOWKV_C_H_
#define FLOWKV_FLOWKV_C_H_

#include "flowkv/c/allocator.h"
#include "flowkv/c/engine.h"
#include "flowkv/c/handle.h"
#include "flowkv/c/kv_transfer.h"
#include "flowkv/c/layout.h"
#include "flowkv/c/status.h"

#endif /* FLOWKV_FLOWKV_C_H_ */
