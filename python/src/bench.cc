// SPDX-License-Identifier: Apache-2.0
// flowkv._flowkv._bench: the loops of benchmarks/python/bench_overhead.py
// run in C++, so the cost Python adds per call is measured against the C++
// call in the same process and run. Not part of the public API.

#include <chrono>
#include <string>

#include "absl/strings/str_cat.h"
#include "bindings.h"
#include "flowkv/kv_transfer.h"

namespace flowkv::python {

KvTransfer& GetKvTransfer(py::handle object);  // kv_transfer.cc

namespace {

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

}  // namespace

void InitBench(py::module_& parent) {
  py::module_ m = parent.def_submodule(
      "_bench", "C++ loops for benchmarks/python/bench_overhead.py.");
  m.def(
      "kv_round_loop",
      [](py::handle sender, py::handle receiver, PeerId peer,
         py::handle src_blocks, py::handle dst_blocks, uint64_t num_tokens,
         uint64_t iterations, const std::string& tag) {
        KvTransfer& s = GetKvTransfer(sender);
        KvTransfer& r = GetKvTransfer(receiver);
        KvPiece request;
        request.src_blocks = ToBlockList(src_blocks);
        request.dst_blocks = ToBlockList(dst_blocks);
        request.num_tokens = num_tokens;
        absl::Status status;
        std::chrono::steady_clock::duration elapsed{};
        {
          py::gil_scoped_release release;
          const auto start = std::chrono::steady_clock::now();
          for (uint64_t i = 0; i < iterations && status.ok(); ++i) {
            const std::string id = absl::StrCat(tag, "-", i);
            TransferHandle h = s.Send(id, peer, request);
            status = h.Wait();
            KvPollResult polled = r.Poll();
            const absl::Time deadline = absl::Now() + absl::Seconds(10);
            while (status.ok() && polled.finished.empty() &&
                   polled.failed.empty()) {
              if (absl::Now() > deadline) {
                status = absl::DeadlineExceededError(
                    absl::StrCat("request ", id, " did not finish"));
              }
              polled = r.Poll(absl::Milliseconds(1));
            }
            if (status.ok() && !polled.failed.empty()) {
              status = polled.failed.front().status;
            }
          }
          elapsed = std::chrono::steady_clock::now() - start;
        }
        ThrowIfError(status);
        return Seconds(elapsed);
      },
      py::arg("sender"), py::arg("receiver"), py::arg("peer"),
      py::arg("src_blocks"), py::arg("dst_blocks"), py::arg("num_tokens"),
      py::arg("iterations"), py::arg("tag"),
      "Seconds for `iterations` rounds of send + wait + receiver poll, in "
      "C++; request ids are TAG-0, TAG-1, ... (ids must not repeat).");
  m.def(
      "send_call_loop",
      [](py::handle kv_object, PeerId peer, py::handle src_blocks,
         py::handle dst_blocks, uint64_t num_tokens, uint64_t iterations) {
        KvTransfer& kv = GetKvTransfer(kv_object);
        KvPiece request;
        request.src_blocks = ToBlockList(src_blocks);
        request.dst_blocks = ToBlockList(dst_blocks);
        request.num_tokens = num_tokens;
        py::gil_scoped_release release;
        const auto start = std::chrono::steady_clock::now();
        for (uint64_t i = 0; i < iterations; ++i) {
          TransferHandle h = kv.Send("call", peer, request);
          (void)h.Wait(absl::ZeroDuration());
        }
        return Seconds(std::chrono::steady_clock::now() - start);
      },
      py::arg("kv"), py::arg("peer"), py::arg("src_blocks"),
      py::arg("dst_blocks"), py::arg("num_tokens"), py::arg("iterations"),
      "Seconds for `iterations` Send calls (and a zero wait on the handle) "
      "to `peer`; with a peer the engine does not know, every call is "
      "refused before the network: the cost of the call itself.");
  m.def(
      "poll_loop",
      [](py::handle kv_object, uint64_t iterations) {
        KvTransfer& kv = GetKvTransfer(kv_object);
        py::gil_scoped_release release;
        const auto start = std::chrono::steady_clock::now();
        for (uint64_t i = 0; i < iterations; ++i) (void)kv.Poll();
        return Seconds(std::chrono::steady_clock::now() - start);
      },
      py::arg("kv"), py::arg("iterations"),
      "Seconds for `iterations` calls of Poll() with nothing to report.");
  m.def(
      "send_as_cxx",
      [](py::handle kv_object, const py::bytes& request_id, PeerId peer,
         py::handle src_blocks, py::handle dst_blocks, uint64_t num_tokens) {
        KvTransfer& kv = GetKvTransfer(kv_object);
        KvPiece request;
        request.src_blocks = ToBlockList(src_blocks);
        request.dst_blocks = ToBlockList(dst_blocks);
        request.num_tokens = num_tokens;
        const std::string id = request_id;
        absl::Status status;
        {
          py::gil_scoped_release release;
          status = kv.Send(id, peer, request).Wait();
        }
        ThrowIfError(status);
      },
      py::arg("kv"), py::arg("request_id"), py::arg("peer"),
      py::arg("src_blocks"), py::arg("dst_blocks"), py::arg("num_tokens"),
      "One KvTransfer::Send from C++ with a request id of any bytes (as a C "
      "or C++ sender may give, which Python's send refuses unless UTF-8), "
      "waited for; raises its error. For the tests.");
}

}  // namespace flowkv::python
