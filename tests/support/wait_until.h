// SPDX-License-Identifier: Apache-2.0
// The tests' one bounded wait for a condition that the test's main thread
// polls (a peer's state, an engine's stats, a log line): no sleep, the
// bound comes from the options the test set.
#ifndef FLOWKV_TESTS_SUPPORT_WAIT_UNTIL_H_
#define FLOWKV_TESTS_SUPPORT_WAIT_UNTIL_H_

#include <thread>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace flowkv::testing {

// Waits (up to `bound`) until `condition` holds; returns whether it did.
template <typename Fn>
bool WaitUntil(Fn condition, absl::Duration bound) {
  const absl::Time deadline = absl::Now() + bound;
  while (!condition()) {
    if (absl::Now() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

}  // namespace flowkv::testing

#endif  // FLOWKV_TESTS_SUPPORT_WAIT_UNTIL_H_
