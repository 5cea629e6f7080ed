// SPDX-License-Identifier: Apache-2.0
// The log lines a TransferEngine writes through its log hook, collected for
// a test to count (wait for a line with WaitUntil, tests/support/wait_until.h).
#ifndef FLOWKV_TESTS_SUPPORT_LOG_SINK_H_
#define FLOWKV_TESTS_SUPPORT_LOG_SINK_H_

#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "flowkv/transfer_engine.h"

namespace flowkv::testing {

// Log lines collected from an engine's log hook (any thread).
// std::mutex, not absl::Mutex: TSan cannot see Debian's uninstrumented
// Abseil locks.
struct LogSink {
  std::mutex mu;
  std::vector<std::string> lines;
  std::function<void(LogSeverity, std::string_view)> Hook() {
    return [this](LogSeverity, std::string_view line) {
      std::lock_guard<std::mutex> lock(mu);
      lines.emplace_back(line);
    };
  }
  // How many collected lines contain `needle`.
  int Count(std::string_view needle) {
    std::lock_guard<std::mutex> lock(mu);
    int n = 0;
    for (const std::string& line : lines) {
      n += line.find(needle) != std::string::npos;
    }
    return n;
  }
};

}  // namespace flowkv::testing

#endif  // FLOWKV_TESTS_SUPPORT_LOG_SINK_H_
