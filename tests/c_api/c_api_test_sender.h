/* SPDX-License-Identifier: Apache-2.0 */
/* The sender role of c_api_test (c_api_test_sender.c). */

#ifndef FLOWKV_TESTS_C_API_C_API_TEST_SENDER_H_
#define FLOWKV_TESTS_C_API_C_API_TEST_SENDER_H_

/* Runs the sender against the receiver listening at `address`; returns the
 * process's exit status (0), or exits 1 through Fail. */
int RunSender(const char* address);

#endif /* FLOWKV_TESTS_C_API_C_API_TEST_SENDER_H_ */
