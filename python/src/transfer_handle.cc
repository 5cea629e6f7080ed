// SPDX-License-Identifier: Apache-2.0
// Bindings of TransferHandle and TransferStats (flowkv/transfer_handle.h):
// wait (GIL released, interruptible by signals), done, state, status (the
// exception instance or None), result() (raises it), stats, cancel.

#include "flowkv/transfer_handle.h"

#include <algorithm>

#include "bindings.h"
#include "engine.h"

namespace flowkv::python {
namespace {

// Waits up to `timeout` (infinite for None) in slices, so that Ctrl-C
// (a pending signal) interrupts a long wait. True when done.
bool WaitInterruptibly(const TransferHandle& handle,
                       const py::object& timeout) {
  const absl::Duration total =
      OptionalSeconds(timeout, "timeout").value_or(absl::InfiniteDuration());
  const absl::Time deadline = absl::Now() + total;
  constexpr absl::Duration kSlice = absl::Milliseconds(100);
  while (true) {
    const absl::Duration left = deadline - absl::Now();
    bool done;
    {
      py::gil_scoped_release release;
      done =
          handle.Wait(std::max(absl::ZeroDuration(), std::min(left, kSlice)));
    }
    if (done) return true;
    if (left <= kSlice) return handle.state() == TransferState::kDone;
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
  }
}

}  // namespace

py::object WrapHandle(TransferHandle handle) {
  return py::cast(std::move(handle), py::return_value_policy::move);
}

void InitTransferHandle(py::module_& m) {
  py::enum_<TransferState>(m, "TransferState")
      .value("PENDING", TransferState::kPending)
      .value("IN_FLIGHT", TransferState::kInFlight)
      .value("DONE", TransferState::kDone);

  py::class_<TransferStats>(m, "TransferStats",
                            "Figures of one transfer; times in seconds.")
      .def_readonly("ops", &TransferStats::ops)
      .def_readonly("bytes", &TransferStats::bytes)
      .def_property_readonly(
          "submit_time",
          [](const TransferStats& s) { return TimeToSeconds(s.submit_time); },
          "When the call accepted the transfer (seconds since the epoch).")
      .def_property_readonly(
          "post_time",
          [](const TransferStats& s) { return DurationToSeconds(s.post_time); },
          "Seconds from submit until every op was posted (inf while not).")
      .def_property_readonly(
          "completion_time",
          [](const TransferStats& s) {
            return DurationToSeconds(s.completion_time);
          },
          "Seconds from submit until done (inf while not done).")
      .def("__repr__", [](const TransferStats& s) {
        return "TransferStats(ops=" + std::to_string(s.ops) +
               ", bytes=" + std::to_string(s.bytes) + ")";
      });

  py::class_<TransferHandle>(
      m, "TransferHandle",
      "One asynchronous transfer or message. Dropping the handle neither "
      "waits nor cancels; it stays usable after its engine is gone (the "
      "engine fails unfinished transfers with CancelledError).")
      .def("wait", &WaitInterruptibly, py::arg("timeout") = py::none(),
           "Blocks (GIL released) until done or `timeout` seconds passed "
           "(None: no limit); True when done. Does not raise the transfer's "
           "error: see status / result().")
      .def(
          "result",
          [](const TransferHandle& h, const py::object& timeout) {
            if (!WaitInterruptibly(h, timeout)) {
              PyErr_SetString(PyExc_TimeoutError,
                              "TransferHandle.result: not done within the "
                              "timeout");
              throw py::error_already_set();
            }
            ThrowIfError(h.status());
          },
          py::arg("timeout") = py::none(),
          "Waits as wait() and raises the transfer's error (a flowkv.Error); "
          "TimeoutError (builtin) when not done within `timeout`.")
      .def_property_readonly("done",
                             [](const TransferHandle& h) {
                               return h.state() == TransferState::kDone;
                             })
      .def_property_readonly("state", &TransferHandle::state)
      .def_property_readonly(
          "status",
          [](const TransferHandle& h) -> py::object {
            // kDone is final and its status set before it: state first.
            if (h.state() != TransferState::kDone) return py::none();
            return StatusToException(h.status());
          },
          "None while the transfer is not done and when it succeeded, else "
          "the exception instance of its failure.")
      .def_property_readonly("stats", &TransferHandle::stats)
      .def_property_readonly("valid", &TransferHandle::valid)
      .def("cancel", &TransferHandle::Cancel,
           "Requests cancellation and returns at once; the transfer fails "
           "with CancelledError once nothing more of it can land.");
}

}  // namespace flowkv::python
