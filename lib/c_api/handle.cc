// SPDX-License-Identifier: Apache-2.0
// The C API of TransferHandle (flowkv_handle_* in include/flowkv/flowkv_c.h):
// state, waiting, the outcome, stats, cancel and release of a transfer in
// flight.
#include "absl/strings/str_cat.h"
#include "lib/c_api/c_api_internal.h"

using flowkv::c_api::CopyOut;
using flowkv::c_api::Guard;
using flowkv::c_api::GuardVoid;
using flowkv::c_api::NotNull;

extern "C" {

flowkv_status_t flowkv_handle_state(const flowkv_handle_t* handle,
                                    flowkv_transfer_state_t* state) {
  static constexpr char kFn[] = "flowkv_handle_state";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, handle, "handle"); !s.ok()) return s;
    if (absl::Status s = NotNull(kFn, state, "state"); !s.ok()) return s;
    *state = static_cast<flowkv_transfer_state_t>(handle->handle.state());
    return absl::OkStatus();
  });
}

flowkv_status_t flowkv_handle_wait(const flowkv_handle_t* handle,
                                   int64_t timeout_us, bool* done) {
  static constexpr char kFn[] = "flowkv_handle_wait";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, handle, "handle"); !s.ok()) return s;
    if (absl::Status s = NotNull(kFn, done, "done"); !s.ok()) return s;
    *done =
        handle->handle.Wait(timeout_us < 0 ? absl::InfiniteDuration()
                                           : flowkv::c_api::Micros(timeout_us));
    return absl::OkStatus();
  });
}

flowkv_status_t flowkv_handle_result(const flowkv_handle_t* handle,
                                     flowkv_status_t* result, char* message,
                                     size_t message_capacity,
                                     size_t* message_len) {
  static constexpr char kFn[] = "flowkv_handle_result";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, handle, "handle"); !s.ok()) return s;
    if (absl::Status s = NotNull(kFn, result, "result"); !s.ok()) return s;
    if (message_len == nullptr && message_capacity != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(kFn, ": message_len is null but message_capacity is ",
                       message_capacity));
    }
    if (message == nullptr && message_capacity != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          kFn, ": message is null but message_capacity is ", message_capacity));
    }
    const absl::Status status = handle->handle.status();
    if (message_len != nullptr) {
      if (absl::Status s = CopyOut(kFn, status.message(), message,
                                   message_capacity, message_len,
                                   /*terminate=*/true);
          !s.ok()) {
        return s;
      }
    }
    *result = static_cast<flowkv_status_t>(status.code());
    return absl::OkStatus();
  });
}

flowkv_status_t flowkv_handle_stats(const flowkv_handle_t* handle,
                                    flowkv_transfer_stats_t* stats) {
  return flowkv::c_api::Getter(
      "flowkv_handle_stats", handle, "handle", stats, "stats",
      [](const flowkv_handle& h) {
        const flowkv::TransferStats cpp = h.handle.stats();
        return flowkv_transfer_stats_t{
            .ops = cpp.ops,
            .bytes = cpp.bytes,
            .post_time_us = flowkv::c_api::ToMicros(cpp.post_time),
            .completion_time_us = flowkv::c_api::ToMicros(cpp.completion_time)};
      });
}

flowkv_status_t flowkv_handle_cancel(flowkv_handle_t* handle) {
  static constexpr char kFn[] = "flowkv_handle_cancel";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, handle, "handle"); !s.ok()) return s;
    handle->handle.Cancel();
    return absl::OkStatus();
  });
}

void flowkv_handle_free(flowkv_handle_t* handle) {
  GuardVoid([&] { delete handle; });
}

}  // extern "C"
