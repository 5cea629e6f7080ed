// Bindings of KvTransfer (flowkv/kv_transfer.h): send / fetch of request
// pieces, poll (finished, failed, released, other), expect / forget, pool
// announcement and declaration, layers_arrived, stats.
//
// A Python KvTransfer holds the engine's core (engine.h), so the engine
// outlives it. Its calls run with the GIL released.

#include "flowkv/kv_transfer.h"

#include <memory>
#include <pybind11/stl.h>
#include <string>
#include <utility>
#include <vector>

#include "bindings.h"
#include "engine.h"

namespace flowkv::python {

// The Python KvTransfer object.
struct PyKvTransfer {
  CoreRef core;
  std::unique_ptr<KvTransfer> kv;
  PyRef log;

  KvTransfer& get() const {
    if (kv == nullptr) {
      ThrowStatus(absl::FailedPreconditionError("KvTransfer: closed"));
    }
    return *kv;
  }
  void Close() {
    if (kv != nullptr) {
      py::gil_scoped_release release;
      kv.reset();
    }
    core.reset();
  }
  ~PyKvTransfer() {
    if (kv != nullptr && PyGILState_Check()) {
      py::gil_scoped_release release;
      kv.reset();
    }
  }
};

KvTransfer& GetKvTransfer(py::handle object) {
  return object.cast<PyKvTransfer&>().get();
}

namespace {

// Runs `f` with the GIL released: KvTransfer may call its log callback
// (which takes the GIL) while holding its own lock.
template <typename F>
auto Released(F&& f) {
  py::gil_scoped_release release;
  return f();
}

std::string RequestId(py::handle id) {
  if (py::isinstance<py::bytes>(id)) return std::string(id.cast<py::bytes>());
  return id.cast<std::string>();
}

KvSendRequest MakeRequest(py::handle src_blocks, py::handle dst_blocks,
                          uint64_t num_tokens, uint64_t token_begin,
                          uint32_t layer_begin, uint32_t layer_end,
                          uint32_t src_head_begin, uint32_t dst_head_begin,
                          uint32_t num_heads, uint32_t sender_rank,
                          uint32_t num_senders, bool final_chunk,
                          const py::bytes& payload, const py::object& timeout) {
  KvSendRequest r;
  r.src_blocks = ToBlockList(src_blocks);
  r.dst_blocks = ToBlockList(dst_blocks);
  r.num_tokens = num_tokens;
  r.token_begin = token_begin;
  r.layer_begin = layer_begin;
  r.layer_end = layer_end;
  r.src_head_begin = src_head_begin;
  r.dst_head_begin = dst_head_begin;
  r.num_heads = num_heads;
  r.sender_rank = sender_rank;
  r.num_senders = num_senders;
  r.final_chunk = final_chunk;
  r.payload = payload;
  r.timeout = OptionalSeconds(timeout, "timeout");
  return r;
}

// What poll() returns.
struct PyPollResult {
  py::list finished;  // (request_id, payload)
  py::list failed;    // (request_id, exception)
  py::list released;  // (request_id, peer, exception or None)
  py::list other;     // Notification
};

PyPollResult ToPython(KvPollResult r) {
  PyPollResult out;
  for (KvFinished& f : r.finished) {
    out.finished.append(
        py::make_tuple(py::str(f.request_id), py::bytes(f.payload)));
  }
  for (KvFailed& f : r.failed) {
    out.failed.append(
        py::make_tuple(py::str(f.request_id), StatusToException(f.status)));
  }
  for (KvReleased& f : r.released) {
    out.released.append(py::make_tuple(py::str(f.request_id), f.peer,
                                       StatusToException(f.status)));
  }
  for (Notification& n : r.other) out.other.append(py::cast(std::move(n)));
  return out;
}

using Piece = TransferHandle (KvTransfer::*)(std::string_view, PeerId,
                                             const KvSendRequest&);

template <Piece piece>
py::object SendOrFetch(PyKvTransfer& self, py::handle request_id, PeerId peer,
                       py::handle src_blocks, py::handle dst_blocks,
                       uint64_t num_tokens, uint64_t token_begin,
                       uint32_t layer_begin, uint32_t layer_end,
                       uint32_t src_head_begin, uint32_t dst_head_begin,
                       uint32_t num_heads, uint32_t sender_rank,
                       uint32_t num_senders, bool final_chunk,
                       const py::bytes& payload, const py::object& timeout) {
  KvTransfer& kv = self.get();
  const std::string id = RequestId(request_id);
  const KvSendRequest r =
      MakeRequest(src_blocks, dst_blocks, num_tokens, token_begin, layer_begin,
                  layer_end, src_head_begin, dst_head_begin, num_heads,
                  sender_rank, num_senders, final_chunk, payload, timeout);
  TransferHandle h;
  {
    py::gil_scoped_release release;
    h = (kv.*piece)(id, peer, r);
  }
  return WrapHandle(std::move(h));
}

}  // namespace

void InitKvTransfer(py::module_& m) {
  m.attr("MAX_KV_REQUEST_ID_BYTES") = kMaxKvRequestIdBytes;
  m.attr("MAX_KV_PAYLOAD_BYTES") = kMaxKvPayloadBytes;
  m.attr("MAX_KV_SENDERS") = kMaxKvSenders;

  py::class_<PyPollResult>(m, "KvPollResult",
                           "What happened since the last poll.")
      .def_readonly("finished", &PyPollResult::finished,
                    "[(request_id, payload)]: requests whose every piece "
                    "arrived, each once, in completion order.")
      .def_readonly("failed", &PyPollResult::failed,
                    "[(request_id, flowkv.Error)]: requests that will not "
                    "finish, each once.")
      .def_readonly("released", &PyPollResult::released,
                    "[(request_id, peer, flowkv.Error or None)]: requests a "
                    "peer fetched from this side and released.")
      .def_readonly("other", &PyPollResult::other,
                    "[Notification]: notifications that were not "
                    "KvTransfer's.")
      .def("__bool__", [](const PyPollResult& r) {
        return !r.finished.empty() || !r.failed.empty() ||
               !r.released.empty() || !r.other.empty();
      });

  py::class_<KvTransferStats>(m, "KvTransferStats")
      .def_readonly("requests_active", &KvTransferStats::requests_active)
      .def_readonly("results_pending", &KvTransferStats::results_pending)
      .def_readonly("tombstones", &KvTransferStats::tombstones)
      .def_readonly("malformed_notices", &KvTransferStats::malformed_notices)
      .def_readonly("late_notices", &KvTransferStats::late_notices)
      .def_readonly("pools_refused", &KvTransferStats::pools_refused);

  const char* piece_doc =
      "One piece of request `request_id`: blocks (BlockList or block ids) in "
      "the source and destination pools from the request's token 0, tokens "
      "[token_begin, token_begin + num_tokens), layers [layer_begin, "
      "layer_end) (0, 0: all), rank sender_rank of num_senders. Returns a "
      "TransferHandle; every error (InvalidArgumentError for a bad id, "
      "payload over MAX_KV_PAYLOAD_BYTES, ...; FailedPreconditionError when "
      "the peer's pool is unknown; the engine's) comes through it.";

  py::class_<PyKvTransfer>(
      m, "_KvTransfer",
      "Moves requests' KV between pools of two engines (see "
      "flowkv.KvTransfer, which wraps this).")
      .def(py::init([](py::object engine, const KvLayout& layout,
                       std::vector<RegionId> regions, double timeout_s,
                       size_t max_tombstones, py::object log) {
             auto self = std::make_unique<PyKvTransfer>();
             self->core = engine.cast<PyEngine&>().core();
             KvTransferOptions o;
             o.incomplete_request_timeout =
                 SecondsToDuration(timeout_s, "incomplete_request_timeout");
             o.max_tombstones = max_tombstones;
             if (!log.is_none()) {
               self->log = PyRef(log);
               PyRef callback = self->log;
               o.log = [callback](LogSeverity s, std::string_view message) {
                 if (PythonFinalizing()) return;
                 py::gil_scoped_acquire gil;
                 try {
                   callback.get()(static_cast<int>(s),
                                  py::str(message.data(), message.size()));
                 } catch (py::error_already_set& e) {
                   ReportCallbackError(e, callback.get());
                 }
               };
             }
             TransferEngine* e = self->core->engine.get();
             self->kv = Unwrap([&] {
               py::gil_scoped_release release;
               return KvTransfer::Create(e, layout, std::move(regions),
                                         std::move(o));
             }());
             return self;
           }),
           py::arg("engine"), py::arg("layout"), py::arg("regions"),
           py::kw_only(), py::arg("incomplete_request_timeout") = 60.0,
           py::arg("max_tombstones") = 65536, py::arg("log") = py::none())
      .def("send", &SendOrFetch<&KvTransfer::Send>, py::arg("request_id"),
           py::arg("peer"), py::arg("src_blocks"), py::arg("dst_blocks"),
           py::arg("num_tokens"), py::kw_only(), py::arg("token_begin") = 0,
           py::arg("layer_begin") = 0, py::arg("layer_end") = 0,
           py::arg("src_head_begin") = 0, py::arg("dst_head_begin") = 0,
           py::arg("num_heads") = 0, py::arg("sender_rank") = 0,
           py::arg("num_senders") = 1, py::arg("final_chunk") = true,
           py::arg("payload") = py::bytes(), py::arg("timeout") = py::none(),
           piece_doc)
      .def("fetch", &SendOrFetch<&KvTransfer::Fetch>, py::arg("request_id"),
           py::arg("peer"), py::arg("src_blocks"), py::arg("dst_blocks"),
           py::arg("num_tokens"), py::kw_only(), py::arg("token_begin") = 0,
           py::arg("layer_begin") = 0, py::arg("layer_end") = 0,
           py::arg("src_head_begin") = 0, py::arg("dst_head_begin") = 0,
           py::arg("num_heads") = 0, py::arg("sender_rank") = 0,
           py::arg("num_senders") = 1, py::arg("final_chunk") = true,
           py::arg("payload") = py::bytes(), py::arg("timeout") = py::none(),
           piece_doc)
      .def(
          "poll",
          [](PyKvTransfer& self, double wait) {
            KvTransfer& kv = self.get();
            const absl::Duration d = SecondsToDuration(wait, "wait");
            KvPollResult r;
            {
              py::gil_scoped_release release;
              r = kv.Poll(d);
            }
            return ToPython(std::move(r));
          },
          py::arg("wait") = 0.0,
          "Handles the engine's notifications (waiting up to `wait` seconds "
          "for the first), applies deadlines, returns a KvPollResult.")
      .def("take_results",
           [](PyKvTransfer& self) {
             KvTransfer& kv = self.get();
             KvPollResult r;
             {
               py::gil_scoped_release release;
               r = kv.TakeResults();
             }
             return ToPython(std::move(r));
           })
      .def(
          "expect",
          [](PyKvTransfer& self, py::handle request_id, double timeout) {
            KvTransfer& kv = self.get();
            const absl::Time deadline =
                absl::Now() + SecondsToDuration(timeout, "timeout");
            const std::string id = RequestId(request_id);
            ThrowIfError(Released([&] { return kv.Expect(id, deadline); }));
          },
          py::arg("request_id"), py::arg("timeout"),
          "Declares the request expected within `timeout` seconds (else it "
          "fails with DeadlineExceededError).")
      .def(
          "forget",
          [](PyKvTransfer& self, py::handle request_id) {
            KvTransfer& kv = self.get();
            const std::string id = RequestId(request_id);
            Released([&] {
              kv.Forget(id);
              return 0;
            });
          },
          py::arg("request_id"))
      .def(
          "announce_pool",
          [](PyKvTransfer& self, PeerId peer) {
            KvTransfer& kv = self.get();
            absl::Status s;
            {
              py::gil_scoped_release release;
              s = kv.AnnouncePool(peer);
            }
            ThrowIfError(s);
          },
          py::arg("peer"),
          "Sends this side's pool descriptor to `peer` and waits for its "
          "engine's acknowledgement.")
      .def(
          "wait_for_peer_pool",
          [](PyKvTransfer& self, PeerId peer, double timeout) {
            KvTransfer& kv = self.get();
            const absl::Duration d = SecondsToDuration(timeout, "timeout");
            absl::Status s;
            {
              py::gil_scoped_release release;
              s = kv.WaitForPeerPool(peer, d);
            }
            ThrowIfError(s);
          },
          py::arg("peer"), py::arg("timeout") = 10.0)
      .def(
          "peer_pool",
          [](PyKvTransfer& self, PeerId peer) {
            KvTransfer& kv = self.get();
            return Unwrap(Released([&] { return kv.PeerPool(peer); }));
          },
          py::arg("peer"),
          "The peer's pool layout; NotFoundError while unknown, "
          "InvalidArgumentError when its descriptor was refused.")
      .def(
          "add_peer_pool",
          [](PyKvTransfer& self, PeerId peer, const KvLayout& layout,
             std::vector<RegionId> peer_regions) {
            KvTransfer& kv = self.get();
            absl::Status s;
            {
              py::gil_scoped_release release;
              s = kv.AddPeerPool(peer, layout, std::move(peer_regions));
            }
            ThrowIfError(s);
          },
          py::arg("peer"), py::arg("layout"), py::arg("peer_regions"))
      .def(
          "layers_arrived",
          [](PyKvTransfer& self, py::handle request_id) {
            KvTransfer& kv = self.get();
            const std::string id = RequestId(request_id);
            return Released([&] { return kv.LayersArrived(id); });
          },
          py::arg("request_id"))
      .def("stats",
           [](PyKvTransfer& self) {
             KvTransfer& kv = self.get();
             return Released([&] { return kv.Stats(); });
           })
      .def_property_readonly(
          "layout", [](PyKvTransfer& self) { return self.get().layout(); })
      .def("close", &PyKvTransfer::Close,
           "Destroys the KvTransfer (pending transfers run on) and drops its "
           "hold on the engine. Idempotent.");
}

}  // namespace flowkv::python
