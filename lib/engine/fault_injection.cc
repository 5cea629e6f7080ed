// SPDX-License-Identifier: Apache-2.0
// FaultInjector's rules and counts (fault_injection.h). Calls nothing but
// Abseil's mutex.

#include "lib/engine/fault_injection.h"

#include <array>

#include "absl/synchronization/mutex.h"
#include "lib/common/tsan_lock.h"

namespace flowkv::internal {
namespace {

struct Rule {
  bool armed = false;
  uint64_t calls = 0;  // since Arm
  uint64_t first = 0;  // calls first .. last fail
  uint64_t last = 0;
  ucs_status_t status = UCS_OK;
  uint64_t injected = 0;  // since Reset
};

struct Rules {
  absl::Mutex mu;
  std::array<Rule, kNumFaultPoints> rules ABSL_GUARDED_BY(mu);
};

Rules& GetRules() {
  static Rules* rules = new Rules;
  return *rules;
}

}  // namespace

void FaultInjector::Arm(FaultPoint point, uint64_t nth, ucs_status_t status,
                        uint64_t times) {
  Rules& r = GetRules();
  TsanMutexLock lock(&r.mu);
  Rule& rule = r.rules[static_cast<int>(point)];
  rule.armed = true;
  rule.calls = 0;
  rule.first = nth;
  rule.last = nth + times - 1;
  rule.status = status;
  armed_.store(true, std::memory_order_relaxed);
}

void FaultInjector::Reset() {
  Rules& r = GetRules();
  TsanMutexLock lock(&r.mu);
  for (Rule& rule : r.rules) rule = Rule{};
  armed_.store(false, std::memory_order_relaxed);
}

uint64_t FaultInjector::Injected(FaultPoint point) {
  Rules& r = GetRules();
  TsanMutexLock lock(&r.mu);
  return r.rules[static_cast<int>(point)].injected;
}

ucs_status_t FaultInjector::InjectArmed(FaultPoint point) {
  Rules& r = GetRules();
  TsanMutexLock lock(&r.mu);
  Rule& rule = r.rules[static_cast<int>(point)];
  if (!rule.armed) return UCS_OK;
  ++rule.calls;
  if (rule.calls < rule.first || rule.calls > rule.last) return UCS_OK;
  ++rule.injected;
  return rule.status;
}

}  // namespace flowkv::internal
