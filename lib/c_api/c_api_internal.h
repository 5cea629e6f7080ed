// SPDX-License-Identifier: Apache-2.0
// What the files of the C API (include/flowkv/flowkv_c.h) share: the
// definitions of the opaque C objects (each wraps one C++ object), the
// reporting of a Status into the calling thread's last error, the guard that
// keeps C++ exceptions from crossing into C, and the argument checks and
// copies every C function uses. status.cc implements the non-inline parts.
#ifndef FLOWKV_LIB_C_API_C_API_INTERNAL_H_
#define FLOWKV_LIB_C_API_C_API_INTERNAL_H_

#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <type_traits>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "flowkv/block_allocator.h"
#include "flowkv/block_list.h"
#include "flowkv/flowkv_c.h"
#include "flowkv/kv_layout.h"
#include "flowkv/kv_transfer.h"
#include "flowkv/transfer_engine.h"
#include "flowkv/transfer_handle.h"

// The C objects. Each is the C++ object it stands for, plus what the C
// surface keeps beside it.
struct flowkv_engine {
  std::unique_ptr<flowkv::TransferEngine> engine;
  // Serializes flowkv_engine_take_notifications calls, so notifications
  // keep their arrival order.
  absl::Mutex take_mu;
  // Notifications taken from the engine that did not fit the caller's
  // buffers yet, in arrival order.
  std::deque<flowkv::Notification> leftover ABSL_GUARDED_BY(take_mu);
  mutable absl::Mutex listen_mu;
  std::string listen_address ABSL_GUARDED_BY(listen_mu);
};

struct flowkv_handle {
  flowkv::TransferHandle handle;
};

struct flowkv_kv_transfer {
  std::unique_ptr<flowkv::KvTransfer> kv;
};

struct flowkv_kv_results {
  flowkv::KvPollResult result;
};

struct flowkv_layout {
  flowkv::KvLayout layout;
};

struct flowkv_block_list {
  flowkv::BlockList list;
};

struct flowkv_allocator {
  std::unique_ptr<flowkv::BlockAllocator> allocator;
};

namespace flowkv::c_api {

// Stores `status`'s message as this thread's last error ("" for OK) and
// returns its code.
flowkv_status_t Report(const absl::Status& status);

// Stores "" as this thread's last error and returns `code` (allocates
// nothing: for when reporting a message failed).
flowkv_status_t ReportCode(flowkv_status_code_t code) noexcept;

// Runs `body` (returning absl::Status) and reports its outcome; an escaping
// exception becomes Internal (ResourceExhausted for std::bad_alloc).
template <typename Body>
flowkv_status_t Guard(const char* function, Body&& body) noexcept {
  try {
    return Report(body());
  } catch (const std::bad_alloc&) {
    try {
      return Report(absl::ResourceExhaustedError(
          absl::StrCat(function, ": out of memory")));
    } catch (...) {
      return ReportCode(FLOWKV_RESOURCE_EXHAUSTED);
    }
  } catch (const std::exception& e) {
    try {
      return Report(absl::InternalError(
          absl::StrCat(function, ": unexpected exception: ", e.what())));
    } catch (...) {
      return ReportCode(FLOWKV_INTERNAL);
    }
  } catch (...) {
    try {
      return Report(absl::InternalError(
          absl::StrCat(function, ": unexpected exception")));
    } catch (...) {
      return ReportCode(FLOWKV_INTERNAL);
    }
  }
}

// Runs `body` (returning void) for functions that cannot report (destroy,
// free): an exception is swallowed, never thrown into C.
template <typename Body>
void GuardVoid(Body&& body) noexcept {
  try {
    body();
  } catch (...) {
  }
}

// InvalidArgument "<function>: <name> is null" when `pointer` is null.
absl::Status NotNull(const char* function, const void* pointer,
                     const char* name);

// InvalidArgument when `data` is null but `len` is not 0.
absl::Status Buffer(const char* function, const void* data, size_t len,
                    const char* name);

// The bytes (data, len), after Buffer() accepted them.
inline std::string_view View(const void* data, size_t len) {
  return len == 0 ? std::string_view()
                  : std::string_view(static_cast<const char*>(data), len);
}

// Copies `bytes` into (out, capacity) as "Output buffers" in flowkv_c.h
// says: stores the length in *length, and copies (with a NUL when
// `terminate`) when they fit; ResourceExhausted otherwise.
absl::Status CopyOut(const char* function, absl::string_view bytes, void* out,
                     size_t capacity, size_t* length, bool terminate);

// Checks (out, capacity, length) of an output buffer.
absl::Status OutBuffer(const char* function, const void* out, size_t capacity,
                       const size_t* length, const char* name);

// NotNull(object), then OutBuffer(out, capacity, length): the arguments of a
// function that copies from `object` into the caller's buffer.
absl::Status SourceAndOutBuffer(const char* function, const void* object,
                                const char* object_name, const void* out,
                                size_t capacity, const size_t* length,
                                const char* out_name);

// A C getter: InvalidArgument when `object` or `out` is null (named
// `object_name`, `out_name`), else stores get(*object) in *out.
template <typename Object, typename Out, typename Get>
flowkv_status_t Getter(const char* function, const Object* object,
                       const char* object_name, Out* out, const char* out_name,
                       Get&& get) noexcept {
  return Guard(function, [&]() -> absl::Status {
    if (absl::Status s = NotNull(function, object, object_name); !s.ok()) {
      return s;
    }
    if (absl::Status s = NotNull(function, out, out_name); !s.ok()) return s;
    *out = get(*object);
    return absl::OkStatus();
  });
}

// The value of a C enum argument, read without loading it as the enum type:
// a C caller may pass any int, and in C++ loading a value outside the
// enumerators' range is undefined. Check the value, then cast it.
template <typename Enum>
int64_t EnumValue(const Enum& value) {
  std::underlying_type_t<Enum> raw;
  std::memcpy(&raw, &value, sizeof(raw));
  return static_cast<int64_t>(raw);
}

// A duration of `us` microseconds.
inline absl::Duration Micros(int64_t us) { return absl::Microseconds(us); }

// -1 for an infinite duration, else whole microseconds.
int64_t ToMicros(absl::Duration d);

// The C log hook as a C++ one (empty when `fn` is null).
std::function<void(LogSeverity, std::string_view)> LogHook(flowkv_log_fn fn,
                                                           void* user_data);

// A BlockList from the C form: runs or ids, not both.
absl::StatusOr<BlockList> BlocksFromC(const char* function,
                                      const flowkv_blocks_t& blocks,
                                      const char* name);

// InvalidArgument when a run passes the last block id.
absl::Status CheckRun(const char* function, uint64_t first, uint64_t count,
                      const char* name);

// Hands out `started`, whose handle holds a transfer just started (made
// before the transfer, so that no allocation can fail after it): OK and
// *out when the transfer was accepted; the transfer's status, and no
// handle, when it was refused or failed already.
absl::Status Accept(std::unique_ptr<flowkv_handle> started,
                    flowkv_handle_t** out);

}  // namespace flowkv::c_api

#endif  // FLOWKV_LIB_C_API_C_API_INTERNAL_H_
