/* SPDX-License-Identifier: Apache-2.0 */
/* flowkv/c/handle.h: flowkv_handle_t, one transfer in flight
 * (flowkv/transfer_handle.h): its state, wait, result, stats, cancel and
 * free. Part of flowkv/flowkv_c.h. */

#ifndef FLOWKV_C_HANDLE_H_
#define FLOWKV_C_HANDLE_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "flowkv/c/status.h"
#include "flowkv/export.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A transfer in flight; thread-safe. */
typedef struct flowkv_handle flowkv_handle_t;

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

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FLOWKV_C_HANDLE_H_ */
