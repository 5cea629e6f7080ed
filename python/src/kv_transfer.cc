// SPDX-License-Identifier: Apache-2.0
// Bindings of KvTransfer (flowkv/kv_transfer.h): creation over engine
// regions or a PoolMemory (pool_memory.h) with staging and path options,
// send / fetch of request pieces (send's ready_event), poll (finished,
// failed, released, other), expect / forget, pool announcement and
// declaration, peer_path, layers_arrived, stats.
//
// A Python KvTransfer holds the engine's core (engine.h), so the engine
// outlives it, and the ready events of its sends until they complete. Its
// calls run with the GIL released.

#include "flowkv/kv_transfer.h"

#include <functional>
#include <memory>
#include <optional>
#include <pybind11/stl.h>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bindings.h"
#include "engine.h"
#include "pool_memory.h"

namespace flowkv::python {

// One call's hold on a KvTransfer and its engine (PyKvTransfer::Call): a
// close() on another thread during the call destroys neither under it; the
// last holder destroys the KvTransfer with the GIL released (its threads
// may be waiting for the GIL in a callback). Every change of the
// KvTransfer's reference count but that last one happens with the GIL.
class KvCall {
 public:
  KvCall(CoreRef core, std::shared_ptr<KvTransfer> kv)
      : core_(std::move(core)), kv_(std::move(kv)) {}
  KvCall(const KvCall&) = delete;
  KvCall& operator=(const KvCall&) = delete;
  ~KvCall() {
    if (kv_.use_count() == 1) {
      py::gil_scoped_release release;
      kv_.reset();
    }
  }
  KvTransfer* operator->() const { return kv_.get(); }
  KvTransfer& operator*() const { return *kv_; }

 private:
  CoreRef core_;  // destroyed after kv_, with the GIL
  std::shared_ptr<KvTransfer> kv_;
};

// The Python KvTransfer object.
struct PyKvTransfer {
  CoreRef core;
  // (handle, event) of each send given a ready_event object, kept until the
  // handle is done: the library may wait on the event until then. GIL.
  std::vector<std::pair<PyRef, PyRef>> events;
  std::shared_ptr<KvTransfer> kv;
  PyRef log;
  // The engine regions of the pool (regions form; empty for a PoolMemory):
  // checked before each send and fetch (CheckTensorsInPlace).
  std::vector<RegionId> regions;

  // The one check of every method: FailedPreconditionError once closed.
  // REQUIRES: the GIL.
  KvCall Call() const {
    if (kv == nullptr) {
      ThrowStatus(absl::FailedPreconditionError("KvTransfer: closed"));
    }
    return KvCall(core, kv);
  }
  KvTransfer& get() const { return *Call(); }
  void Close() {
    std::shared_ptr<KvTransfer> closing = std::move(kv);
    if (closing != nullptr && closing.use_count() == 1) {
      py::gil_scoped_release release;
      closing.reset();
    }
    // Else calls in flight hold it; the last of them destroys it.
    closing.reset();
    events.clear();
    core.reset();
  }
  // Drops the events of sends that are done. REQUIRES: the GIL.
  void PruneEvents() {
    std::erase_if(events, [](const std::pair<PyRef, PyRef>& e) {
      return e.first.get().cast<const TransferHandle&>().state() ==
             TransferState::kDone;
    });
  }
  ~PyKvTransfer() {
    if (kv == nullptr) return;
    if (CallbackScope::Active()) {
      // Inside a library callback: destroy it (and maybe the engine after
      // it) on a thread of its own.
      std::thread([kv = std::move(kv), core = std::move(core),
                   events = std::move(events)]() mutable {
        kv.reset();
        events.clear();  // PyRef takes the GIL (or leaks at exit)
        if (PythonFinalizing()) {
          new CoreRef(std::move(core));  // leaked at exit
          return;
        }
        py::gil_scoped_acquire gil;
        core.reset();
      }).detach();
      return;
    }
    if (PyGILState_Check()) {
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

// A request id is UTF-8 text: a str, or bytes that hold UTF-8. `what`
// names the call in the InvalidArgumentError for anything else (bytes that
// are not UTF-8, a str with lone surrogates, another type), so a receiver
// never sees an id from Python that it cannot decode.
std::string RequestId(py::handle id, const char* what) {
  const auto refuse = [&](const std::string& why) {
    PyErr_Clear();
    std::string shown = py::repr(id);
    if (shown.size() > 80) shown = shown.substr(0, 77) + "...";
    ThrowStatus(absl::InvalidArgumentError(
        absl::StrCat(what, ": request_id ", shown, " ", why)));
  };
  if (py::isinstance<py::str>(id)) {
    Py_ssize_t size = 0;
    const char* data = PyUnicode_AsUTF8AndSize(id.ptr(), &size);
    if (data == nullptr) refuse("cannot be encoded as UTF-8");
    return std::string(data, static_cast<size_t>(size));
  }
  if (py::isinstance<py::bytes>(id)) {
    std::string bytes = id.cast<py::bytes>();
    PyObject* text = PyUnicode_DecodeUTF8(
        bytes.data(), static_cast<Py_ssize_t>(bytes.size()), "strict");
    if (text == nullptr) {
      refuse("is not UTF-8 (a request id is UTF-8 text)");
    }
    Py_DECREF(text);
    return bytes;
  }
  refuse(absl::StrCat(
      "has type ",
      std::string(py::str(py::type::handle_of(id).attr("__name__"))),
      "; expected str (or bytes holding UTF-8)"));
  return {};  // not reached
}

// A request id as poll() reports it: a str; bytes for an id that is not
// UTF-8 (only a C or C++ sender can send one), so that no id can make a
// poll raise and lose the other results it took.
py::object RequestIdToPython(const std::string& id) {
  PyObject* text = PyUnicode_DecodeUTF8(
      id.data(), static_cast<Py_ssize_t>(id.size()), "strict");
  if (text == nullptr) {
    PyErr_Clear();
    return py::bytes(id);
  }
  return py::reinterpret_steal<py::object>(text);
}

KvPiece MakeRequest(py::handle src_blocks, py::handle dst_blocks,
                    uint64_t num_tokens, uint64_t token_begin,
                    uint32_t layer_begin, uint32_t layer_end,
                    uint32_t src_head_begin, uint32_t dst_head_begin,
                    uint32_t num_heads, uint32_t sender_rank,
                    uint32_t num_senders, bool final_chunk,
                    const py::bytes& payload, const py::object& timeout) {
  KvPiece r;
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
        py::make_tuple(RequestIdToPython(f.request_id), py::bytes(f.payload)));
  }
  for (KvFailed& f : r.failed) {
    out.failed.append(py::make_tuple(RequestIdToPython(f.request_id),
                                     StatusToException(f.status)));
  }
  for (KvReleased& f : r.released) {
    out.released.append(py::make_tuple(RequestIdToPython(f.request_id), f.peer,
                                       StatusToException(f.status)));
  }
  for (Notification& n : r.other) out.other.append(py::cast(std::move(n)));
  return out;
}

using Piece = TransferHandle (KvTransfer::*)(std::string_view, PeerId,
                                             const KvPiece&);

// send's ready_event: None, an object with `cuda_event` (torch.cuda.Event:
// its cudaEvent_t, created by its first record()), or a cudaEvent_t as an
// int. InvalidArgumentError for anything else and for a null event.
void* ReadyEvent(const py::object& event) {
  if (event.is_none()) return nullptr;
  const bool has_attr = py::hasattr(event, "cuda_event");
  const py::object handle = has_attr ? event.attr("cuda_event") : event;
  if (!py::isinstance<py::int_>(handle) || py::isinstance<py::bool_>(handle)) {
    ThrowStatus(absl::InvalidArgumentError(absl::StrCat(
        "send: ready_event: expected None, a torch.cuda.Event or a "
        "cudaEvent_t handle (int), got ",
        std::string(py::str(py::type::handle_of(event).attr("__name__"))))));
  }
  uintptr_t value = 0;
  try {
    value = handle.cast<uintptr_t>();
  } catch (const py::cast_error&) {
    ThrowStatus(absl::InvalidArgumentError(
        "send: ready_event: the handle is not a valid address"));
  }
  if (value == 0) {
    ThrowStatus(absl::InvalidArgumentError(
        has_attr ? "send: ready_event: the event has no CUDA event yet "
                   "(record() it on the stream that writes the source "
                   "blocks first)"
                 : "send: ready_event: 0 is not an event (None: no event)"));
  }
  return reinterpret_cast<void*>(value);
}

template <Piece piece>
py::object SendOrFetch(PyKvTransfer& self, py::handle request_id, PeerId peer,
                       py::handle src_blocks, py::handle dst_blocks,
                       uint64_t num_tokens, uint64_t token_begin,
                       uint32_t layer_begin, uint32_t layer_end,
                       uint32_t src_head_begin, uint32_t dst_head_begin,
                       uint32_t num_heads, uint32_t sender_rank,
                       uint32_t num_senders, bool final_chunk,
                       const py::bytes& payload, const py::object& timeout,
                       const py::object& ready_event) {
  const KvCall kv = self.Call();
  const std::string id =
      RequestId(request_id, piece == &KvTransfer::Send ? "send" : "fetch");
  KvPiece r =
      MakeRequest(src_blocks, dst_blocks, num_tokens, token_begin, layer_begin,
                  layer_end, src_head_begin, dst_head_begin, num_heads,
                  sender_rank, num_senders, final_chunk, payload, timeout);
  r.ready_event = ReadyEvent(ready_event);
  CheckTensorsInPlace(*self.core, self.regions,
                      piece == &KvTransfer::Send ? "send" : "fetch");
  self.PruneEvents();
  TransferHandle h;
  {
    py::gil_scoped_release release;
    h = ((*kv).*piece)(id, peer, r);
  }
  py::object handle = WrapHandle(std::move(h));
  if (r.ready_event != nullptr && !py::isinstance<py::int_>(ready_event)) {
    self.events.emplace_back(PyRef(handle), PyRef(ready_event));
  }
  return handle;
}

py::object Send(PyKvTransfer& self, py::handle request_id,
                Int<PeerId, "peer"> peer, py::handle src_blocks,
                py::handle dst_blocks, U64<"num_tokens"> num_tokens,
                U64<"token_begin"> token_begin, U32<"layer_begin"> layer_begin,
                U32<"layer_end"> layer_end,
                U32<"src_head_begin"> src_head_begin,
                U32<"dst_head_begin"> dst_head_begin,
                U32<"num_heads"> num_heads, U32<"sender_rank"> sender_rank,
                U32<"num_senders"> num_senders, bool final_chunk,
                const py::bytes& payload, const py::object& timeout,
                const py::object& ready_event) {
  return SendOrFetch<&KvTransfer::Send>(
      self, request_id, peer, src_blocks, dst_blocks, num_tokens, token_begin,
      layer_begin, layer_end, src_head_begin, dst_head_begin, num_heads,
      sender_rank, num_senders, final_chunk, payload, timeout, ready_event);
}

py::object Fetch(PyKvTransfer& self, py::handle request_id,
                 Int<PeerId, "peer"> peer, py::handle src_blocks,
                 py::handle dst_blocks, U64<"num_tokens"> num_tokens,
                 U64<"token_begin"> token_begin, U32<"layer_begin"> layer_begin,
                 U32<"layer_end"> layer_end,
                 U32<"src_head_begin"> src_head_begin,
                 U32<"dst_head_begin"> dst_head_begin,
                 U32<"num_heads"> num_heads, U32<"sender_rank"> sender_rank,
                 U32<"num_senders"> num_senders, bool final_chunk,
                 const py::bytes& payload, const py::object& timeout) {
  return SendOrFetch<&KvTransfer::Fetch>(
      self, request_id, peer, src_blocks, dst_blocks, num_tokens, token_begin,
      layer_begin, layer_end, src_head_begin, dst_head_begin, num_heads,
      sender_rank, num_senders, final_chunk, payload, timeout, py::none());
}

// path_policy: a KvPathPolicy or its name in lower case.
KvPathPolicy PathPolicy(const py::object& policy) {
  if (py::isinstance<KvPathPolicy>(policy)) return policy.cast<KvPathPolicy>();
  if (py::isinstance<py::str>(policy)) {
    const std::string name = policy.cast<std::string>();
    if (name == "auto") return KvPathPolicy::kAuto;
    if (name == "force_staging") return KvPathPolicy::kForceStaging;
    if (name == "force_ipc") return KvPathPolicy::kForceIpc;
  }
  ThrowStatus(absl::InvalidArgumentError(
      absl::StrCat("path_policy: expected a KvPathPolicy or one of 'auto', "
                   "'force_staging', 'force_ipc', got ",
                   std::string(py::repr(policy)))));
}

// What a log callback of KvTransferOptions calls: `callback` with the GIL.
std::function<void(LogSeverity, std::string_view)> LogTo(PyRef callback) {
  return [callback](LogSeverity s, std::string_view message) {
    if (PythonFinalizing()) return;
    CallbackScope scope;
    py::gil_scoped_acquire gil;
    try {
      callback.get()(static_cast<int>(s),
                     py::str(message.data(), message.size()));
    } catch (py::error_already_set& e) {
      ReportCallbackError(e, callback.get());
    }
  };
}

std::unique_ptr<PyKvTransfer> MakeKvTransfer(
    const py::object& engine, const KvLayout& layout,
    const py::object& region_ids, const py::object& pool,
    U64<"staging_ring_bytes"> staging_ring_bytes,
    U64<"staging_slot_bytes"> staging_slot_bytes, const py::object& path_policy,
    Real<"incomplete_request_timeout"> timeout_s,
    Int<size_t, "max_tombstones"> max_tombstones, const py::object& log) {
  std::optional<std::vector<RegionId>> regions;
  if (!region_ids.is_none()) {
    regions = ToIntVector<RegionId>(region_ids, "regions");
  }
  if (!py::isinstance<PyEngine>(engine)) {
    ThrowStatus(absl::InvalidArgumentError(absl::StrCat(
        "KvTransfer: engine: expected a flowkv.TransferEngine, got ",
        std::string(py::str(py::type::handle_of(engine).attr("__name__"))))));
  }
  auto self = std::make_unique<PyKvTransfer>();
  self->core = engine.cast<PyEngine&>().core();
  if (regions.has_value()) self->regions = *regions;
  KvTransferOptions o;
  o.incomplete_request_timeout =
      SecondsToDuration(timeout_s, "incomplete_request_timeout");
  o.max_tombstones = max_tombstones;
  o.staging = {.ring_bytes = staging_ring_bytes,
               .slot_bytes = staging_slot_bytes};
  o.path_policy = PathPolicy(path_policy);
  if (regions.has_value() == !pool.is_none()) {
    ThrowStatus(absl::InvalidArgumentError(
        "KvTransfer: give the pool either as regions or as pool=, not " +
        std::string(regions.has_value() ? "both" : "neither")));
  }
  std::shared_ptr<KvPoolMemory> memory;
  if (!pool.is_none()) {
    if (!py::isinstance<PyPoolMemory>(pool)) {
      ThrowStatus(absl::InvalidArgumentError(absl::StrCat(
          "KvTransfer: pool: expected a flowkv.PoolMemory (host_pool, "
          "shared_host_pool, cuda_pool), got ",
          std::string(py::str(py::type::handle_of(pool).attr("__name__"))))));
    }
    memory = pool.cast<const PyPoolMemory&>().pool;
  }
  if (!log.is_none()) {
    self->log = PyRef(log);
    o.log = LogTo(self->log);
  }
  TransferEngine* e = self->core->engine.get();
  absl::StatusOr<std::unique_ptr<KvTransfer>> made;
  {
    py::gil_scoped_release release;
    made =
        memory != nullptr
            ? KvTransfer::Create(e, layout, std::move(memory), std::move(o))
            : KvTransfer::Create(e, layout, *std::move(regions), std::move(o));
  }
  self->kv = Unwrap(std::move(made));
  return self;
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

  py::enum_<KvPath>(m, "KvPath",
                    "How a peer's bytes move (KvTransfer.peer_path).")
      .value("DIRECT", KvPath::kDirect)
      .value("IPC", KvPath::kIpc)
      .value("STAGING", KvPath::kStaging);
  py::enum_<KvPathPolicy>(m, "KvPathPolicy",
                          "Which paths KvTransfer may choose (path_policy; "
                          "also given as 'auto', 'force_staging', "
                          "'force_ipc').")
      .value("AUTO", KvPathPolicy::kAuto)
      .value("FORCE_STAGING", KvPathPolicy::kForceStaging)
      .value("FORCE_IPC", KvPathPolicy::kForceIpc);

  py::class_<KvTransferStats>(m, "KvTransferStats")
      .def_readonly("requests_active", &KvTransferStats::requests_active)
      .def_readonly("results_pending", &KvTransferStats::results_pending)
      .def_readonly("requests_finished", &KvTransferStats::requests_finished)
      .def_readonly("requests_failed", &KvTransferStats::requests_failed)
      .def_readonly("requests_timed_out", &KvTransferStats::requests_timed_out)
      .def_readonly("tombstones", &KvTransferStats::tombstones)
      .def_readonly("malformed_notices", &KvTransferStats::malformed_notices)
      .def_readonly("late_notices", &KvTransferStats::late_notices)
      .def_readonly("pools_refused", &KvTransferStats::pools_refused)
      .def_readonly("staged_slots_sent", &KvTransferStats::staged_slots_sent)
      .def_readonly("staged_bytes_sent", &KvTransferStats::staged_bytes_sent)
      .def_readonly("staged_slots_received",
                    &KvTransferStats::staged_slots_received)
      .def_readonly("staged_bytes_received",
                    &KvTransferStats::staged_bytes_received)
      .def_readonly("slots_refused", &KvTransferStats::slots_refused)
      .def_readonly("ipc_copies", &KvTransferStats::ipc_copies)
      .def_readonly("ring_slots", &KvTransferStats::ring_slots)
      .def_readonly("ring_slots_free", &KvTransferStats::ring_slots_free)
      .def_readonly("ring_slots_max_in_use",
                    &KvTransferStats::ring_slots_max_in_use);

  const char* piece_doc =
      "One piece of request `request_id`: blocks (BlockList or block ids) in "
      "the source and destination pools from the request's token 0, tokens "
      "[token_begin, token_begin + num_tokens), layers [layer_begin, "
      "layer_end) (0, 0: all), rank sender_rank of num_senders. Returns a "
      "TransferHandle; every error (InvalidArgumentError for a bad id, "
      "payload over MAX_KV_PAYLOAD_BYTES, ...; FailedPreconditionError when "
      "the peer's pool is unknown; the engine's) comes through it.";
  static const std::string send_doc =
      std::string(piece_doc) +
      " ready_event (None, a torch.cuda.Event or a cudaEvent_t int; CUDA "
      "pools only, else the handle fails with InvalidArgumentError): the "
      "first copy out of the pool waits for it; the KvTransfer holds the "
      "event object until the handle is done. InvalidArgumentError (raised) "
      "for an event that was never recorded.";

  const char* path_doc =
      "How bytes to `peer` move once its pool is known: a KvPath (DIRECT, "
      "IPC or STAGING). FailedPreconditionError while no pool is known or "
      "when no path reaches the peer (force_ipc and IPC cannot, staging "
      "needed and a side has no ring; the message says which), "
      "InvalidArgumentError when its pool descriptor was refused.";

  py::class_<PyKvTransfer>(
      m, "_KvTransfer",
      "Moves requests' KV between pools of two engines (see "
      "flowkv.KvTransfer, which wraps this).")
      .def(py::init(&MakeKvTransfer), py::arg("engine"), py::arg("layout"),
           py::arg("regions") = py::none(), py::kw_only(),
           py::arg("pool") = py::none(),
           py::arg("staging_ring_bytes") = KvStagingOptions{}.ring_bytes,
           py::arg("staging_slot_bytes") = KvStagingOptions{}.slot_bytes,
           py::arg("path_policy") = "auto",
           py::arg("incomplete_request_timeout") = absl::ToDoubleSeconds(
               KvTransferOptions{}.incomplete_request_timeout),
           py::arg("max_tombstones") = KvTransferOptions{}.max_tombstones,
           py::arg("log") = py::none())
      .def("send", &Send, py::arg("request_id"), py::arg("peer"),
           py::arg("src_blocks"), py::arg("dst_blocks"), py::arg("num_tokens"),
           py::kw_only(), py::arg("token_begin") = 0,
           py::arg("layer_begin") = 0, py::arg("layer_end") = 0,
           py::arg("src_head_begin") = 0, py::arg("dst_head_begin") = 0,
           py::arg("num_heads") = 0, py::arg("sender_rank") = 0,
           py::arg("num_senders") = 1, py::arg("final_chunk") = true,
           py::arg("payload") = py::bytes(), py::arg("timeout") = py::none(),
           py::arg("ready_event") = py::none(), send_doc.c_str())
      .def("fetch", &Fetch, py::arg("request_id"), py::arg("peer"),
           py::arg("src_blocks"), py::arg("dst_blocks"), py::arg("num_tokens"),
           py::kw_only(), py::arg("token_begin") = 0,
           py::arg("layer_begin") = 0, py::arg("layer_end") = 0,
           py::arg("src_head_begin") = 0, py::arg("dst_head_begin") = 0,
           py::arg("num_heads") = 0, py::arg("sender_rank") = 0,
           py::arg("num_senders") = 1, py::arg("final_chunk") = true,
           py::arg("payload") = py::bytes(), py::arg("timeout") = py::none(),
           piece_doc)
      .def(
          "poll",
          [](PyKvTransfer& self, Real<"wait"> wait) {
            const KvCall kv = self.Call();
            const absl::Duration d = SecondsToDuration(wait, "wait");
            KvPollResult r;
            {
              py::gil_scoped_release release;
              r = kv->Poll(d);
            }
            self.PruneEvents();
            return ToPython(std::move(r));
          },
          py::arg("wait") = 0.0,
          "Handles the engine's notifications (waiting up to `wait` seconds "
          "for the first), applies deadlines, returns a KvPollResult.")
      .def("take_results",
           [](PyKvTransfer& self) {
             const KvCall kv = self.Call();
             KvPollResult r;
             {
               py::gil_scoped_release release;
               r = kv->TakeResults();
             }
             self.PruneEvents();
             return ToPython(std::move(r));
           })
      .def(
          "expect",
          [](PyKvTransfer& self, py::handle request_id,
             Real<"timeout"> timeout) {
            const KvCall kv = self.Call();
            const absl::Time deadline =
                absl::Now() + SecondsToDuration(timeout, "timeout");
            const std::string id = RequestId(request_id, "expect");
            ThrowIfError(Released([&] { return kv->Expect(id, deadline); }));
          },
          py::arg("request_id"), py::arg("timeout"),
          "Declares the request expected within `timeout` seconds (else it "
          "fails with DeadlineExceededError).")
      .def(
          "forget",
          [](PyKvTransfer& self, py::handle request_id) {
            const KvCall kv = self.Call();
            const std::string id = RequestId(request_id, "forget");
            Released([&] {
              kv->Forget(id);
              return 0;
            });
          },
          py::arg("request_id"))
      .def(
          "announce_pool",
          [](PyKvTransfer& self, Int<PeerId, "peer"> peer) {
            const KvCall kv = self.Call();
            absl::Status s;
            {
              py::gil_scoped_release release;
              s = kv->AnnouncePool(peer);
            }
            ThrowIfError(s);
          },
          py::arg("peer"),
          "Sends this side's pool descriptor to `peer` and waits for its "
          "engine's acknowledgement.")
      .def(
          "wait_for_peer_pool",
          [](PyKvTransfer& self, Int<PeerId, "peer"> peer,
             Real<"timeout"> timeout) {
            const KvCall kv = self.Call();
            const absl::Duration d = SecondsToDuration(timeout, "timeout");
            absl::Status s;
            {
              py::gil_scoped_release release;
              s = kv->WaitForPeerPool(peer, d);
            }
            ThrowIfError(s);
          },
          py::arg("peer"), py::arg("timeout") = 10.0)
      .def(
          "peer_pool",
          [](PyKvTransfer& self, Int<PeerId, "peer"> peer) {
            const KvCall kv = self.Call();
            return Unwrap(Released([&] { return kv->PeerPool(peer); }));
          },
          py::arg("peer"),
          "The peer's pool layout; NotFoundError while unknown, "
          "InvalidArgumentError when its descriptor was refused.")
      .def(
          "peer_path",
          [](PyKvTransfer& self, Int<PeerId, "peer"> peer) {
            const KvCall kv = self.Call();
            return Unwrap(Released([&] { return kv->PeerPath(peer); }));
          },
          py::arg("peer"), path_doc)
      .def(
          "add_peer_pool",
          [](PyKvTransfer& self, Int<PeerId, "peer"> peer,
             const KvLayout& layout, const py::object& peer_region_ids) {
            std::vector<RegionId> peer_regions =
                ToIntVector<RegionId>(peer_region_ids, "peer_regions");
            const KvCall kv = self.Call();
            absl::Status s;
            {
              py::gil_scoped_release release;
              s = kv->AddPeerPool(peer, layout, std::move(peer_regions));
            }
            ThrowIfError(s);
          },
          py::arg("peer"), py::arg("layout"), py::arg("peer_regions"))
      .def(
          "layers_arrived",
          [](PyKvTransfer& self, py::handle request_id) {
            const KvCall kv = self.Call();
            const std::string id = RequestId(request_id, "layers_arrived");
            return Released([&] { return kv->LayersArrived(id); });
          },
          py::arg("request_id"))
      .def("stats",
           [](PyKvTransfer& self) {
             const KvCall kv = self.Call();
             return Released([&] { return kv->Stats(); });
           })
      .def_property_readonly(
          "layout", [](PyKvTransfer& self) { return self.Call()->layout(); })
      .def("close", &PyKvTransfer::Close,
           "Destroys the KvTransfer (pending transfers run on) and drops its "
           "hold on the engine. Idempotent.");
}

}  // namespace flowkv::python
