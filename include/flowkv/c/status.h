/* SPDX-License-Identifier: Apache-2.0 */
/* flowkv/c/status.h: the C API's error model: flowkv_status_t and its codes
 * (the numbers of absl::StatusCode), this thread's last error message, and
 * the library version. Part of flowkv/flowkv_c.h, which states the rules
 * every C API function follows. */

#ifndef FLOWKV_C_STATUS_H_
#define FLOWKV_C_STATUS_H_

#include "flowkv/export.h"

#ifdef __cplusplus
extern "C" {
#endif

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

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FLOWKV_C_STATUS_H_ */
