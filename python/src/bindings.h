// SPDX-License-Identifier: Apache-2.0
// What the binding files of flowkv._flowkv share: the per-concept Init
// functions module.cc calls, the conversion of absl::Status to Python
// exceptions and back (errors.cc), durations as float seconds, and
// PyRef, a Python object that C++ threads without the GIL may hold.
//
// GIL rules of the package: every call into the library that can block, or
// that waits on the engine's progress thread, runs with the GIL released;
// code that runs on library threads (completion, log and policy callbacks)
// takes the GIL itself (PyRef, GilCall) and never once Python is finalizing
// (PythonFinalizing()).

#ifndef FLOWKV_PYTHON_SRC_BINDINGS_H_
#define FLOWKV_PYTHON_SRC_BINDINGS_H_

#include <memory>
#include <optional>
#include <pybind11/pybind11.h>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "flowkv/block_list.h"
#include "flowkv/transfer_plan.h"

namespace flowkv::python {

namespace py = pybind11;

void InitErrors(py::module_& m);
void InitLayout(py::module_& m);
void InitAllocator(py::module_& m);
void InitTransferHandle(py::module_& m);
void InitEngine(py::module_& m);
void InitPoolMemory(py::module_& m);
void InitKvTransfer(py::module_& m);
void InitScheduler(py::module_& m);
void InitSim(py::module_& m);
void InitBench(py::module_& m);

// ---- Errors (errors.cc) ----

// Raises the flowkv.Error subclass for `status` (REQUIRES: not OK), with
// the status message and `.code`. Throws py::error_already_set.
[[noreturn]] void ThrowStatus(const absl::Status& status);

inline void ThrowIfError(const absl::Status& status) {
  if (!status.ok()) ThrowStatus(status);
}

template <typename T>
T Unwrap(absl::StatusOr<T> value) {
  if (!value.ok()) ThrowStatus(value.status());
  return *std::move(value);
}

// The exception instance for `status` (not raised), None for OK.
// REQUIRES: the GIL.
py::object StatusToException(const absl::Status& status);

// The status a Python exception stands for: a flowkv.Error keeps its code
// and message; any other exception is Internal with "Type: message".
absl::Status StatusFromPythonError(const py::error_already_set& error);

// ---- Arguments (layout.cc) ----

// A flowkv.BlockList, or a sequence of block ids; InvalidArgumentError
// otherwise.
BlockList ToBlockList(py::handle blocks);
// A sequence of flowkv.TransferOp or 5-tuples; InvalidArgumentError
// otherwise.
std::vector<TransferOp> ToOps(py::handle ops);

// ---- Time ----

// Seconds as a Duration; InvalidArgumentError naming `field` for NaN.
absl::Duration SecondsToDuration(double seconds, const char* field);
// None -> nullopt.
std::optional<absl::Duration> OptionalSeconds(const py::object& seconds,
                                              const char* field);
// Infinite durations become float("inf").
double DurationToSeconds(absl::Duration duration);
// absl::Time as seconds since the Unix epoch (and back).
double TimeToSeconds(absl::Time time);
absl::Time SecondsToTime(double seconds);

// ---- Python objects held by C++ ----

// True once the interpreter began shutting down (flowkv's atexit hook ran,
// or Py_IsFinalizing): library threads then no longer call into Python.
bool PythonFinalizing();
void SetPythonFinalizing();

// Marks the current thread as running a Python callback for the library
// (on_complete, log) for the scope's life. An engine or KvTransfer whose
// last reference goes inside a callback is then destroyed on a thread of
// its own: destroying it on its progress thread would deadlock.
class CallbackScope {
 public:
  CallbackScope();
  ~CallbackScope();
  CallbackScope(const CallbackScope&) = delete;
  CallbackScope& operator=(const CallbackScope&) = delete;
  static bool Active();
};

// A strong reference to a Python object that may be copied and dropped on
// any thread: the last copy drops the reference with the GIL taken (or
// leaks it once Python is finalizing, when taking the GIL is unsafe).
class PyRef {
 public:
  PyRef() = default;
  explicit PyRef(py::object object);
  // REQUIRES: the GIL.
  py::handle get() const { return holder_ ? holder_->object : py::handle(); }
  explicit operator bool() const { return holder_ != nullptr; }

 private:
  struct Holder {
    PyObject* object = nullptr;
    ~Holder();
  };
  std::shared_ptr<Holder> holder_;
};

// Reports the current Python exception of a callback without raising it
// (sys.unraisablehook, which prints it by default). REQUIRES: the GIL.
void ReportCallbackError(py::error_already_set& error, py::handle where);

}  // namespace flowkv::python

#endif  // FLOWKV_PYTHON_SRC_BINDINGS_H_
