// SPDX-License-Identifier: Apache-2.0
// _policy_test_module: registers "prefer_same_rack_cxx", the C++ policy of
// examples/custom_scheduler.cc (examples/prefer_same_rack.h: the prefill node
// with the fewest queued prompt tokens; the least busy decode node with room
// in its rack, else in any rack), for test_scheduler.py to compare with the
// same policy written in Python.

#include <memory>
#include <pybind11/pybind11.h>
#include <string>

#include "flowkv/scheduler.h"
#include "prefer_same_rack.h"

PYBIND11_MODULE(_policy_test_module, m) {
  m.def("register", [] {
    absl::Status s = flowkv::RegisterScheduler(
        "prefer_same_rack_cxx",
        [](const flowkv::SchedulerOptions& options)
            -> absl::StatusOr<std::unique_ptr<flowkv::Scheduler>> {
          return flowkv_examples::MakePreferSameRack("prefer_same_rack_cxx",
                                                     options);
        });
    if (!s.ok() && s.code() != absl::StatusCode::kAlreadyExists) {
      throw std::runtime_error(std::string(s.message()));
    }
  });
}
