// SPDX-License-Identifier: Apache-2.0
// FaultInjector: makes chosen UCX calls of the transfer engine fail, for
// tests. Each wrapped call site asks Inject(point) first and, when it gets
// an error, behaves as if UCX had returned it (without calling UCX).
//
// Test-only: armed only through Arm() in this internal header (not
// installed, read from no option or environment variable), so production
// configuration cannot reach it. Unarmed, Inject() costs one relaxed atomic
// load and a predicted branch.
//
//   FaultInjector::Arm(FaultPoint::kFlush, /*nth=*/1, UCS_ERR_IO_ERROR);
//   ... the next ucp_ep_flush_nbx of any engine in the process fails ...
//   FaultInjector::Reset();
//
// Thread safety: thread-safe. The rule is process-wide (every engine of the
// process counts its calls into it).

#ifndef FLOWKV_LIB_ENGINE_FAULT_INJECTION_H_
#define FLOWKV_LIB_ENGINE_FAULT_INJECTION_H_

#include <atomic>
#include <cstdint>
#include <ucs/type/status.h>

namespace flowkv::internal {

// The wrapped UCX calls.
enum class FaultPoint {
  kEpCreate,  // ucp_ep_create (Connect, AddPeer, accepting, connect-back)
  kPut,       // ucp_put_nbx
  kGet,       // ucp_get_nbx
  kFlush,     // ucp_ep_flush_nbx
  kAmSend,    // ucp_am_send_nbx (control messages, notifications, data)
  kMemMap,    // ucp_mem_map (RegisterMemory, AllocateMemory)
};
inline constexpr int kNumFaultPoints = 6;

class FaultInjector {
 public:
  // Fails calls number nth .. nth + times - 1 at `point` (counted from this
  // call, from 1) with `status`. Replaces the point's previous rule.
  // REQUIRES: nth >= 1, times >= 1, status < 0 (a UCS_ERR_*).
  static void Arm(FaultPoint point, uint64_t nth, ucs_status_t status,
                  uint64_t times = 1);
  // Removes every rule and zeroes the counts.
  static void Reset();
  // Faults injected at `point` since the last Reset.
  static uint64_t Injected(FaultPoint point);

  // At a call site: UCS_OK to make the UCX call, or the error to act on
  // instead.
  static ucs_status_t Inject(FaultPoint point) {
    if (!armed_.load(std::memory_order_relaxed)) [[likely]] {
      return UCS_OK;
    }
    return InjectArmed(point);
  }

 private:
  static ucs_status_t InjectArmed(FaultPoint point);
  inline static std::atomic<bool> armed_{false};
};

}  // namespace flowkv::internal

#endif  // FLOWKV_LIB_ENGINE_FAULT_INJECTION_H_
