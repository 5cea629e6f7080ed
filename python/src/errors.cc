// SPDX-License-Identifier: Apache-2.0
// flowkv's exceptions: flowkv.Error (with .code, a flowkv.StatusCode) and
// one subclass per absl::StatusCode, the conversions between absl::Status
// and them, float seconds <-> absl durations, PyRef and the finalizing flag.
//
// Class tree: Error(Exception); InvalidArgumentError also derives from
// ValueError and DeadlineExceededError from TimeoutError, so code that
// catches the builtin classes keeps working.

#include <atomic>
#include <cmath>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "bindings.h"

namespace flowkv::python {
namespace {

std::atomic<bool> g_finalizing{false};

// Exception classes by code; filled once at import, never freed (the module
// holds references too).
std::map<absl::StatusCode, PyObject*>& Classes() {
  static auto* classes = new std::map<absl::StatusCode, PyObject*>();
  return *classes;
}
PyObject* g_error_class = nullptr;
py::object* g_status_code_enum = nullptr;

PyObject* ClassFor(absl::StatusCode code) {
  auto it = Classes().find(code);
  return it != Classes().end() ? it->second : g_error_class;
}

}  // namespace

bool PythonFinalizing() {
  return g_finalizing.load(std::memory_order_acquire) || _Py_IsFinalizing();
}
void SetPythonFinalizing() {
  g_finalizing.store(true, std::memory_order_release);
}

namespace {
thread_local int t_callback_depth = 0;
}  // namespace

CallbackScope::CallbackScope() { ++t_callback_depth; }
CallbackScope::~CallbackScope() { --t_callback_depth; }
bool CallbackScope::Active() { return t_callback_depth > 0; }

PyRef::PyRef(py::object object) : holder_(std::make_shared<Holder>()) {
  holder_->object = object.release().ptr();
}

PyRef::Holder::~Holder() {
  if (object == nullptr || PythonFinalizing()) return;  // leak at exit
  py::gil_scoped_acquire gil;
  Py_DECREF(object);
}

py::object StatusToException(const absl::Status& status) {
  if (status.ok()) return py::none();
  py::object cls = py::reinterpret_borrow<py::object>(ClassFor(status.code()));
  py::object error = cls(std::string(status.message()));
  error.attr("code") = (*g_status_code_enum)(static_cast<int>(status.code()));
  return error;
}

void ThrowStatus(const absl::Status& status) {
  py::object error = StatusToException(status);
  PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(error.ptr())),
                  error.ptr());
  throw py::error_already_set();
}

absl::Status StatusFromPythonError(const py::error_already_set& error) {
  py::gil_scoped_acquire gil;
  if (g_error_class != nullptr &&
      PyObject_IsInstance(error.value().ptr(), g_error_class) == 1) {
    int code = static_cast<int>(absl::StatusCode::kUnknown);
    try {
      code = error.value().attr("code").cast<int>();
    } catch (const py::error_already_set&) {
    } catch (const py::cast_error&) {
    }
    if (code == 0) code = static_cast<int>(absl::StatusCode::kUnknown);
    return absl::Status(static_cast<absl::StatusCode>(code),
                        py::str(error.value()).cast<std::string>());
  }
  return absl::InternalError(
      absl::StrCat(py::str(error.type().attr("__name__")).cast<std::string>(),
                   ": ", py::str(error.value()).cast<std::string>()));
}

void ReportCallbackError(py::error_already_set& error, py::handle where) {
  error.restore();
  PyErr_WriteUnraisable(where.ptr());
}

namespace {

// `value` as a Python int (its __index__); InvalidArgumentError naming
// `name` for anything without one (float, str, None, ...).
py::object IndexOf(py::handle value, const char* name) {
  if (value.ptr() == nullptr || !PyIndex_Check(value.ptr())) {
    ThrowStatus(absl::InvalidArgumentError(absl::StrCat(
        name, ": expected an int, got ",
        value.ptr() == nullptr
            ? std::string("nothing")
            : std::string(
                  py::str(py::type::handle_of(value).attr("__name__"))))));
  }
  PyObject* index = PyNumber_Index(value.ptr());
  if (index == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(index);
}

[[noreturn]] void ThrowOutOfRange(const py::object& index, const char* name,
                                  const std::string& min,
                                  const std::string& max) {
  PyErr_Clear();
  std::string shown = py::repr(index);
  if (shown.size() > 40) shown = shown.substr(0, 37) + "...";
  ThrowStatus(absl::InvalidArgumentError(absl::StrCat(
      name, ": ", shown, " is out of range [", min, ", ", max, "]")));
}

}  // namespace

int64_t ToSignedArg(py::handle value, const char* name, int64_t min,
                    int64_t max) {
  const py::object index = IndexOf(value, name);
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
  if (overflow != 0 || (v == -1 && PyErr_Occurred()) || v < min || v > max) {
    ThrowOutOfRange(index, name, absl::StrCat(min), absl::StrCat(max));
  }
  return v;
}

uint64_t ToUnsignedArg(py::handle value, const char* name, uint64_t max) {
  const py::object index = IndexOf(value, name);
  int overflow = 0;
  const long long small = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
  if (overflow < 0 || (overflow == 0 && small < 0)) {
    ThrowOutOfRange(index, name, "0", absl::StrCat(max));
  }
  const unsigned long long v = PyLong_AsUnsignedLongLong(index.ptr());
  if ((v == static_cast<unsigned long long>(-1) && PyErr_Occurred()) ||
      v > max) {
    ThrowOutOfRange(index, name, "0", absl::StrCat(max));
  }
  return v;
}

absl::Duration SecondsToDuration(double seconds, const char* field) {
  if (std::isnan(seconds)) {
    ThrowStatus(absl::InvalidArgumentError(
        absl::StrCat(field, ": NaN is not a duration")));
  }
  if (std::isinf(seconds)) {
    return seconds > 0 ? absl::InfiniteDuration() : -absl::InfiniteDuration();
  }
  return absl::Seconds(seconds);
}

double ToDouble(py::handle value, const char* name) {
  const double v = PyFloat_AsDouble(value.ptr());
  if (v == -1.0 && PyErr_Occurred()) {
    PyErr_Clear();
    ThrowStatus(absl::InvalidArgumentError(absl::StrCat(
        name, ": expected a number, got ",
        std::string(py::str(py::type::handle_of(value).attr("__name__"))))));
  }
  return v;
}

std::optional<absl::Duration> OptionalSeconds(const py::object& seconds,
                                              const char* field) {
  if (seconds.is_none()) return std::nullopt;
  return SecondsToDuration(ToDouble(seconds, field), field);
}

double DurationToSeconds(absl::Duration duration) {
  if (duration == absl::InfiniteDuration()) return INFINITY;
  if (duration == -absl::InfiniteDuration()) return -INFINITY;
  return absl::ToDoubleSeconds(duration);
}

double TimeToSeconds(absl::Time time) {
  return DurationToSeconds(time - absl::UnixEpoch());
}

absl::Time SecondsToTime(double seconds) {
  return absl::UnixEpoch() + SecondsToDuration(seconds, "time");
}

void InitErrors(py::module_& m) {
  py::enum_<absl::StatusCode> code(m, "StatusCode",
                                   "absl::StatusCode: the code of an Error.");
  const std::pair<const char*, absl::StatusCode> codes[] = {
      {"OK", absl::StatusCode::kOk},
      {"CANCELLED", absl::StatusCode::kCancelled},
      {"UNKNOWN", absl::StatusCode::kUnknown},
      {"INVALID_ARGUMENT", absl::StatusCode::kInvalidArgument},
      {"DEADLINE_EXCEEDED", absl::StatusCode::kDeadlineExceeded},
      {"NOT_FOUND", absl::StatusCode::kNotFound},
      {"ALREADY_EXISTS", absl::StatusCode::kAlreadyExists},
      {"PERMISSION_DENIED", absl::StatusCode::kPermissionDenied},
      {"RESOURCE_EXHAUSTED", absl::StatusCode::kResourceExhausted},
      {"FAILED_PRECONDITION", absl::StatusCode::kFailedPrecondition},
      {"ABORTED", absl::StatusCode::kAborted},
      {"OUT_OF_RANGE", absl::StatusCode::kOutOfRange},
      {"UNIMPLEMENTED", absl::StatusCode::kUnimplemented},
      {"INTERNAL", absl::StatusCode::kInternal},
      {"UNAVAILABLE", absl::StatusCode::kUnavailable},
      {"DATA_LOSS", absl::StatusCode::kDataLoss},
      {"UNAUTHENTICATED", absl::StatusCode::kUnauthenticated},
  };
  for (const auto& [name, value] : codes) code.value(name, value);
  g_status_code_enum = new py::object(code);

  g_error_class = PyErr_NewExceptionWithDoc(
      "flowkv._flowkv.Error",
      "Base of flowkv's exceptions. `code` is the flowkv.StatusCode of the\n"
      "library's absl::Status; str(error) is its message.",
      PyExc_Exception, nullptr);
  if (g_error_class == nullptr) throw py::error_already_set();
  m.add_object("Error", py::handle(g_error_class));

  struct Sub {
    const char* name;
    absl::StatusCode code;
    PyObject* builtin;  // an extra builtin base, or null
  };
  const Sub subs[] = {
      {"CancelledError", absl::StatusCode::kCancelled, nullptr},
      {"UnknownError", absl::StatusCode::kUnknown, nullptr},
      {"InvalidArgumentError", absl::StatusCode::kInvalidArgument,
       PyExc_ValueError},
      {"DeadlineExceededError", absl::StatusCode::kDeadlineExceeded,
       PyExc_TimeoutError},
      {"NotFoundError", absl::StatusCode::kNotFound, nullptr},
      {"AlreadyExistsError", absl::StatusCode::kAlreadyExists, nullptr},
      {"PermissionDeniedError", absl::StatusCode::kPermissionDenied, nullptr},
      {"ResourceExhaustedError", absl::StatusCode::kResourceExhausted, nullptr},
      {"FailedPreconditionError", absl::StatusCode::kFailedPrecondition,
       nullptr},
      {"AbortedError", absl::StatusCode::kAborted, nullptr},
      {"OutOfRangeError", absl::StatusCode::kOutOfRange, nullptr},
      {"UnimplementedError", absl::StatusCode::kUnimplemented, nullptr},
      {"InternalError", absl::StatusCode::kInternal, nullptr},
      {"UnavailableError", absl::StatusCode::kUnavailable, nullptr},
      {"DataLossError", absl::StatusCode::kDataLoss, nullptr},
      {"UnauthenticatedError", absl::StatusCode::kUnauthenticated, nullptr},
  };
  for (const Sub& sub : subs) {
    py::tuple bases =
        sub.builtin != nullptr
            ? py::make_tuple(py::handle(g_error_class), py::handle(sub.builtin))
            : py::make_tuple(py::handle(g_error_class));
    const std::string qualified = absl::StrCat("flowkv._flowkv.", sub.name);
    PyObject* cls = PyErr_NewException(qualified.c_str(), bases.ptr(), nullptr);
    if (cls == nullptr) throw py::error_already_set();
    Classes()[sub.code] = cls;
    m.add_object(sub.name, py::handle(cls));
  }
  // Default class attribute, so every Error has a code even when raised by
  // Python code without one.
  py::handle(g_error_class).attr("code") =
      code(static_cast<int>(absl::StatusCode::kUnknown));
  for (const Sub& sub : subs) {
    py::handle(Classes()[sub.code]).attr("code") =
        code(static_cast<int>(sub.code));
  }

  m.def("_set_finalizing", &SetPythonFinalizing,
        "Called by flowkv's atexit hook: library threads stop calling into "
        "Python.");
}

}  // namespace flowkv::python
