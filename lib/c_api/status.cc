// SPDX-License-Identifier: Apache-2.0
// The C API's error model (include/flowkv/flowkv_c.h, "Errors"): the
// thread-local last error message, status names, the version, and the
// argument checks, output copies and conversions every C function shares
// (declared in c_api_internal.h).
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "flowkv/version.h"
#include "lib/c_api/c_api_internal.h"

namespace flowkv::c_api {
namespace {

// The calling thread's last error message.
std::string& LastError() {
  thread_local std::string message;
  return message;
}

}  // namespace

flowkv_status_t Report(const absl::Status& status) {
  std::string& last = LastError();
  if (status.ok()) {
    last.clear();
  } else {
    // assign() reuses the thread's buffer; an allocation failure leaves the
    // code to speak for itself.
    try {
      last.assign(status.message().data(), status.message().size());
    } catch (...) {
      last.clear();
    }
  }
  return static_cast<flowkv_status_t>(status.code());
}

flowkv_status_t ReportCode(flowkv_status_code_t code) noexcept {
  LastError().clear();
  return code;
}

absl::Status NotNull(const char* function, const void* pointer,
                     const char* name) {
  if (pointer != nullptr) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(function, ": ", name, " is null"));
}

absl::Status Buffer(const char* function, const void* data, size_t len,
                    const char* name) {
  if (data != nullptr || len == 0) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(function, ": ", name, " is null but its length is ", len));
}

absl::Status OutBuffer(const char* function, const void* out, size_t capacity,
                       const size_t* length, const char* name) {
  if (length == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(function, ": the length pointer of ", name, " is null"));
  }
  if (out == nullptr && capacity != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        function, ": ", name, " is null but its capacity is ", capacity));
  }
  return absl::OkStatus();
}

absl::Status SourceAndOutBuffer(const char* function, const void* object,
                                const char* object_name, const void* out,
                                size_t capacity, const size_t* length,
                                const char* out_name) {
  if (absl::Status s = NotNull(function, object, object_name); !s.ok()) {
    return s;
  }
  return OutBuffer(function, out, capacity, length, out_name);
}

absl::Status CopyOut(const char* function, absl::string_view bytes, void* out,
                     size_t capacity, size_t* length, bool terminate) {
  *length = bytes.size();
  const size_t needed = bytes.size() + (terminate ? 1 : 0);
  if (capacity < needed) {
    return absl::ResourceExhaustedError(
        absl::StrCat(function, ": the output needs ", needed,
                     " bytes, the buffer holds ", capacity));
  }
  if (!bytes.empty()) std::memcpy(out, bytes.data(), bytes.size());
  if (terminate) static_cast<char*>(out)[bytes.size()] = '\0';
  return absl::OkStatus();
}

int64_t ToMicros(absl::Duration d) {
  if (d == absl::InfiniteDuration()) return -1;
  return absl::ToInt64Microseconds(d);
}

std::function<void(LogSeverity, std::string_view)> LogHook(flowkv_log_fn fn,
                                                           void* user_data) {
  if (fn == nullptr) return nullptr;
  return [fn, user_data](LogSeverity severity, std::string_view message) {
    fn(user_data, static_cast<flowkv_log_severity_t>(severity), message.data(),
       message.size());
  };
}

absl::Status CheckRun(const char* function, uint64_t first, uint64_t count,
                      const char* name) {
  if (first + count <= uint64_t{UINT32_MAX}) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(function, ": ", name, " {first ", first, ", count ", count,
                   "} passes the last block id ", UINT32_MAX - 1));
}

absl::StatusOr<BlockList> BlocksFromC(const char* function,
                                      const flowkv_blocks_t& blocks,
                                      const char* name) {
  if (blocks.num_runs != 0 && blocks.num_ids != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        function, ": ", name, " gives both runs and ids; give one"));
  }
  const std::string runs_name = absl::StrCat(name, ".runs");
  const std::string ids_name = absl::StrCat(name, ".ids");
  if (absl::Status s =
          Buffer(function, blocks.runs, blocks.num_runs, runs_name.c_str());
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          Buffer(function, blocks.ids, blocks.num_ids, ids_name.c_str());
      !s.ok()) {
    return s;
  }
  BlockList list;
  for (size_t i = 0; i < blocks.num_runs; ++i) {
    const flowkv_block_run_t& run = blocks.runs[i];
    const std::string run_name = absl::StrCat(runs_name, "[", i, "]");
    if (absl::Status s =
            CheckRun(function, run.first, run.count, run_name.c_str());
        !s.ok()) {
      return s;
    }
    list.Append(run.first, run.count);
  }
  for (size_t i = 0; i < blocks.num_ids; ++i) {
    // The same rule as for runs: a block id is at most UINT32_MAX - 1.
    const std::string id_name = absl::StrCat(ids_name, "[", i, "]");
    if (absl::Status s = CheckRun(function, blocks.ids[i], 1, id_name.c_str());
        !s.ok()) {
      return s;
    }
  }
  if (blocks.num_ids != 0) {
    list = BlockList::FromIds(absl::MakeConstSpan(blocks.ids, blocks.num_ids));
  }
  return list;
}

absl::Status Accept(std::unique_ptr<flowkv_handle> started,
                    flowkv_handle_t** out) {
  if (started->handle.state() == TransferState::kDone) {
    absl::Status status = started->handle.status();
    if (!status.ok()) return status;
  }
  *out = started.release();
  return absl::OkStatus();
}

}  // namespace flowkv::c_api

extern "C" {

const char* flowkv_last_error_message(void) {
  return flowkv::c_api::LastError().c_str();
}

const char* flowkv_status_name(flowkv_status_t status) {
  switch (status) {
    case FLOWKV_OK:
      return "OK";
    case FLOWKV_CANCELLED:
      return "CANCELLED";
    case FLOWKV_UNKNOWN:
      return "UNKNOWN";
    case FLOWKV_INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case FLOWKV_DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case FLOWKV_NOT_FOUND:
      return "NOT_FOUND";
    case FLOWKV_ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case FLOWKV_PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case FLOWKV_RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case FLOWKV_FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case FLOWKV_ABORTED:
      return "ABORTED";
    case FLOWKV_OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case FLOWKV_UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case FLOWKV_INTERNAL:
      return "INTERNAL";
    case FLOWKV_UNAVAILABLE:
      return "UNAVAILABLE";
    case FLOWKV_DATA_LOSS:
      return "DATA_LOSS";
    case FLOWKV_UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "UNKNOWN_CODE";
  }
}

const char* flowkv_version(void) { return flowkv::Version(); }

}  // extern "C"
