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

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <pybind11/pybind11.h>
#include <string>
#include <type_traits>
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

// ---- Integer arguments (errors.cc) ----
//
// An integer parameter is declared Int<T, "name"> (or U32<"name">, ...)
// instead of T: it takes any Python int (or object with __index__) and
// raises InvalidArgumentError naming the argument and T's range for one
// outside it, or for a non-integer, where pybind11 would raise TypeError
// ("incompatible function arguments"). Only for functions without
// overloads: the check raises instead of trying the next overload.

// The value of `value` as an integer in [min, max]; InvalidArgumentError
// naming `name` otherwise. REQUIRES: the GIL.
int64_t ToSignedArg(py::handle value, const char* name, int64_t min,
                    int64_t max);
uint64_t ToUnsignedArg(py::handle value, const char* name, uint64_t max);

template <typename T>
T ToInt(py::handle value, const char* name) {
  static_assert(std::is_integral_v<T> && sizeof(T) <= 8);
  if constexpr (std::is_signed_v<T>) {
    return static_cast<T>(ToSignedArg(value, name,
                                      std::numeric_limits<T>::min(),
                                      std::numeric_limits<T>::max()));
  } else {
    return static_cast<T>(
        ToUnsignedArg(value, name, std::numeric_limits<T>::max()));
  }
}

// A sequence of integers, each checked as ToInt (named "name[i]");
// InvalidArgumentError when `values` is not a sequence.
template <typename T>
std::vector<T> ToIntVector(py::handle values, const char* name);

// A string literal as a template argument.
template <size_t N>
struct ArgName {
  constexpr ArgName(const char (&name)[N]) { std::copy_n(name, N, text); }
  char text[N] = {};
};

template <typename T, ArgName name>
struct Int {
  T value{};
  operator T() const { return value; }
};
// A float parameter checked by ToDouble (seconds, mostly): a real number
// or InvalidArgumentError naming it, where pybind11 raises TypeError.
template <ArgName name>
struct Real {
  double value = 0;
  operator double() const { return value; }
};
template <ArgName name>
using U32 = Int<uint32_t, name>;
template <ArgName name>
using U64 = Int<uint64_t, name>;

// The getter and setter of an integer field, for def_property: the setter
// checks as ToInt, naming the field (def_readwrite raises TypeError).
#define FLOWKV_INT_FIELD(Type, field)                                        \
  [](const Type& o) { return o.field; }, [](Type& o, py::handle value) {     \
    o.field = ::flowkv::python::ToInt<decltype(Type::field)>(value, #field); \
  }

// ---- Arguments (layout.cc) ----

// A flowkv.BlockList, or a sequence of block ids; InvalidArgumentError
// otherwise.
BlockList ToBlockList(py::handle blocks);
// A sequence of flowkv.TransferOp or 5-tuples; InvalidArgumentError
// otherwise.
std::vector<TransferOp> ToOps(py::handle ops);

// ---- Time ----

// `value` as a float (any real number); InvalidArgumentError naming `name`
// for anything else. REQUIRES: the GIL.
double ToDouble(py::handle value, const char* name);

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

template <typename T>
std::vector<T> ToIntVector(py::handle values, const char* name) {
  if (!PySequence_Check(values.ptr()) || py::isinstance<py::str>(values) ||
      py::isinstance<py::bytes>(values)) {
    ThrowStatus(absl::InvalidArgumentError(
        std::string(name) + ": expected a sequence of ints, got " +
        std::string(py::str(py::type::handle_of(values).attr("__name__")))));
  }
  const py::sequence seq = py::reinterpret_borrow<py::sequence>(values);
  std::vector<T> out;
  out.reserve(seq.size());
  for (size_t i = 0; i < seq.size(); ++i) {
    const std::string element =
        std::string(name) + "[" + std::to_string(i) + "]";
    out.push_back(ToInt<T>(seq[i], element.c_str()));
  }
  return out;
}

}  // namespace flowkv::python

namespace pybind11::detail {

// Int<T, name>: see "Integer arguments" above.
template <typename T, flowkv::python::ArgName arg_name>
struct type_caster<flowkv::python::Int<T, arg_name>> {
  using Value = flowkv::python::Int<T, arg_name>;
  PYBIND11_TYPE_CASTER(Value, const_name("int"));

  bool load(handle src, bool /*convert*/) {
    value.value = flowkv::python::ToInt<T>(src, arg_name.text);
    return true;
  }
  static handle cast(const Value& v, return_value_policy, handle) {
    return pybind11::cast(v.value).release();
  }
};

template <flowkv::python::ArgName arg_name>
struct type_caster<flowkv::python::Real<arg_name>> {
  using Value = flowkv::python::Real<arg_name>;
  PYBIND11_TYPE_CASTER(Value, const_name("float"));

  bool load(handle src, bool /*convert*/) {
    value.value = flowkv::python::ToDouble(src, arg_name.text);
    return true;
  }
  static handle cast(const Value& v, return_value_policy, handle) {
    return PyFloat_FromDouble(v.value);
  }
};

}  // namespace pybind11::detail

#endif  // FLOWKV_PYTHON_SRC_BINDINGS_H_
