// SPDX-License-Identifier: Apache-2.0
// Bindings of TransferEngine (flowkv/transfer_engine.h): options from
// keyword arguments, memory registered in place (buffer protocol, numpy,
// torch) or allocated by the engine (a numpy view), peers, write / read /
// send with completion callbacks, notifications, stats, close.
//
// Lifetime: see engine.h. Every call that reaches the engine runs with the
// GIL released: the engine's threads may be waiting for the GIL in a
// callback, and many calls wait for the progress thread.

#include "engine.h"

#include <algorithm>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bindings.h"

namespace flowkv::python {

EngineCore::~EngineCore() {
  if (CallbackScope::Active()) {
    // On a library thread (maybe the progress thread itself): destroy the
    // engine on a thread of its own, then drop the holds with the GIL.
    auto* e = engine.release();
    auto* h = new std::map<RegionId, std::unique_ptr<Hold>>(std::move(holds));
    std::thread([e, h] {
      delete e;
      if (PythonFinalizing()) return;  // leaks the holds at exit
      py::gil_scoped_acquire gil;
      delete h;
    }).detach();
    return;
  }
  if (PyGILState_Check()) {
    py::gil_scoped_release release;
    engine.reset();
  } else {
    engine.reset();
    if (!holds.empty()) {
      if (PythonFinalizing()) {
        new std::map<RegionId, std::unique_ptr<Hold>>(std::move(holds));
      } else {
        py::gil_scoped_acquire gil;
        holds.clear();
      }
    }
  }
}

const CoreRef& PyEngine::core() const {
  if (core_ == nullptr) {
    ThrowStatus(
        absl::FailedPreconditionError("TransferEngine: the engine was closed"));
  }
  return core_;
}

namespace {

// Runs `f(engine)` with the GIL released. The one check of every method
// that reaches the engine: FailedPreconditionError once closed, raised
// while the GIL is still held (raising without it crashes). The core is
// held for the call, so a close() on another thread cannot destroy the
// engine under it.
template <typename F>
auto OnEngine(const PyEngine& self, F&& f) {
  const CoreRef core = self.core();
  py::gil_scoped_release release;
  return f(*core->engine);
}

TransferEngineOptions ParseOptions(const py::kwargs& kwargs, PyRef* log) {
  TransferEngineOptions o;
  for (const auto& [key, value] : kwargs) {
    const std::string name = py::str(key);
    const py::object v = py::reinterpret_borrow<py::object>(value);
    try {
      if (name == "name") {
        o.name = v.cast<std::string>();
      } else if (name == "cluster_token") {
        o.cluster_token = py::isinstance<py::bytes>(v)
                              ? std::string(v.cast<py::bytes>())
                              : v.cast<std::string>();
      } else if (name == "default_timeout") {
        o.default_timeout = SecondsToDuration(v.cast<double>(), name.c_str());
      } else if (name == "ucx_peer_error_handling") {
        o.ucx_peer_error_handling = v.cast<bool>();
      } else if (name == "peer_failure_timeout") {
        o.peer_failure_timeout =
            SecondsToDuration(v.cast<double>(), name.c_str());
      } else if (name == "connect_timeout") {
        o.connect_timeout = SecondsToDuration(v.cast<double>(), name.c_str());
      } else if (name == "ucx_config") {
        py::object items = py::isinstance<py::dict>(v) ? v.attr("items")() : v;
        for (py::handle item : items) {
          auto pair = item.cast<std::pair<std::string, std::string>>();
          o.ucx_config.push_back(std::move(pair));
        }
      } else if (name == "busy_poll") {
        o.busy_poll = v.cast<bool>();
      } else if (name == "idle_spin") {
        o.idle_spin = SecondsToDuration(v.cast<double>(), name.c_str());
      } else if (name == "max_queued_notifications") {
        o.max_queued_notifications = ToInt<size_t>(v, name.c_str());
      } else if (name == "max_window_bytes") {
        o.max_window_bytes = ToInt<uint64_t>(v, name.c_str());
      } else if (name == "max_registered_bytes") {
        o.max_registered_bytes = ToInt<uint64_t>(v, name.c_str());
      } else if (name == "log") {
        if (v.is_none()) continue;
        if (!PyCallable_Check(v.ptr())) {
          ThrowStatus(absl::InvalidArgumentError(
              "TransferEngine: log must be callable(severity, message)"));
        }
        *log = PyRef(v);
        PyRef callback = *log;
        o.log = [callback](LogSeverity severity, std::string_view message) {
          if (PythonFinalizing()) return;
          CallbackScope scope;
          py::gil_scoped_acquire gil;
          try {
            callback.get()(static_cast<int>(severity),
                           py::str(message.data(), message.size()));
          } catch (py::error_already_set& e) {
            ReportCallbackError(e, callback.get());
          }
        };
      } else {
        ThrowStatus(absl::InvalidArgumentError(
            "TransferEngine: unknown option '" + name +
            "'; known: name, cluster_token, default_timeout, "
            "ucx_peer_error_handling, peer_failure_timeout, connect_timeout, "
            "ucx_config, busy_poll, idle_spin, max_queued_notifications, "
            "max_window_bytes, max_registered_bytes, log"));
      }
    } catch (const py::cast_error&) {
      ThrowStatus(absl::InvalidArgumentError(
          "TransferEngine: option '" + name + "' has the wrong type (" +
          py::str(py::type::handle_of(v).attr("__name__")).cast<std::string>() +
          ")"));
    }
  }
  return o;
}

// True when elements of these (size, stride) dimensions, strides in
// elements, cover one dense range exactly once: sorted by stride, each
// stride is the product of the sizes below it (a permutation of a
// contiguous array's dimensions). Dimensions of size 1 do not matter;
// an empty array is dense.
bool CoversDenseRange(std::vector<std::pair<int64_t, int64_t>> dims) {
  for (const auto& [size, stride] : dims) {
    if (size == 0) return true;
  }
  std::erase_if(dims, [](const auto& d) { return d.first == 1; });
  std::sort(dims.begin(), dims.end(),
            [](const auto& a, const auto& b) { return a.second < b.second; });
  int64_t expected = 1;
  for (const auto& [size, stride] : dims) {
    if (stride != expected) return false;
    expected *= size;
  }
  return true;
}

// Where a tensor's bytes are now: (data_ptr, numel * element_size).
std::pair<uintptr_t, uint64_t> TensorBytes(const py::handle& tensor) {
  return {tensor.attr("data_ptr")().cast<uintptr_t>(),
          tensor.attr("numel")().cast<uint64_t>() *
              tensor.attr("element_size")().cast<uint64_t>()};
}

}  // namespace

void CheckTensorsInPlace(const EngineCore& core,
                         const std::vector<RegionId>& regions,
                         const char* what) {
  for (const RegionId region : regions) {
    const auto it = core.holds.find(region);
    if (it == core.holds.end() || !it->second->is_tensor) continue;
    const EngineCore::Hold& hold = *it->second;
    const auto [base, bytes] = TensorBytes(hold.object);
    if (base == hold.tensor_base && bytes == hold.tensor_bytes) continue;
    ThrowStatus(absl::FailedPreconditionError(absl::StrFormat(
        "%s: region %u is a torch.Tensor whose memory changed since "
        "register_memory (%#x, %u bytes then; %#x, %u bytes now: resize_ "
        "or set_); nothing was posted. Deregister the region and register "
        "the tensor again",
        what, region, hold.tensor_base, hold.tensor_bytes, base, bytes)));
  }
}

BufferExtent ExtentOf(const py::object& object, EngineCore::Hold* hold,
                      const std::string& what) {
  BufferExtent e;
  const std::string type =
      py::str(py::type::handle_of(object).attr("__name__"));
  if (PyObject_CheckBuffer(object.ptr())) {
    if (PyObject_GetBuffer(object.ptr(), &hold->view, PyBUF_FULL_RO) != 0) {
      PyErr_Clear();
      ThrowStatus(absl::InvalidArgumentError(
          what + ": cannot export the buffer of a " + type));
    }
    hold->has_view = true;
    if (hold->view.readonly) {
      ThrowStatus(absl::InvalidArgumentError(
          what + ": the " + type +
          " is read-only; the engine writes into registered memory"));
    }
    bool dense = PyBuffer_IsContiguous(&hold->view, 'A') != 0;
    if (!dense && hold->view.strides != nullptr && hold->view.itemsize > 0) {
      std::vector<std::pair<int64_t, int64_t>> dims;
      dense = true;
      for (int d = 0; d < hold->view.ndim; ++d) {
        const Py_ssize_t stride = hold->view.strides[d];
        if (stride <= 0 || stride % hold->view.itemsize != 0) dense = false;
        dims.emplace_back(hold->view.shape[d], stride / hold->view.itemsize);
      }
      dense = dense && hold->view.suboffsets == nullptr &&
              CoversDenseRange(std::move(dims));
    }
    if (!dense) {
      ThrowStatus(absl::InvalidArgumentError(
          what + ": the " + type +
          " does not cover one contiguous range of memory (gaps, overlaps "
          "or negative strides); register a contiguous array (e.g. "
          "numpy.ascontiguousarray) and view it"));
    }
    e.base = hold->view.buf;
    e.length = static_cast<uint64_t>(hold->view.len);
    return e;
  }
  if (py::hasattr(object, "data_ptr") && py::hasattr(object, "is_contiguous")) {
    // A torch.Tensor (no buffer protocol): its storage stays alive while we
    // hold the tensor.
    if (!object.attr("is_contiguous")().cast<bool>()) {
      std::vector<std::pair<int64_t, int64_t>> dims;
      const py::tuple shape = py::tuple(object.attr("shape"));
      const py::tuple strides = py::tuple(object.attr("stride")());
      for (size_t d = 0; d < shape.size(); ++d) {
        dims.emplace_back(shape[d].cast<int64_t>(), strides[d].cast<int64_t>());
      }
      if (!CoversDenseRange(std::move(dims))) {
        ThrowStatus(absl::InvalidArgumentError(
            what +
            ": the tensor does not cover one contiguous range of memory "
            "(a permutation of a contiguous tensor's dimensions does); call "
            ".contiguous() and register that tensor"));
      }
    }
    const std::string device = py::str(object.attr("device").attr("type"));
    if (device == "cuda") {
      e.kind = MemoryKind::kCudaDevice;
    } else if (device != "cpu") {
      ThrowStatus(
          absl::InvalidArgumentError(what + ": tensors on device '" + device +
                                     "' cannot be registered (cpu or cuda)"));
    }
    // With every stride positive, data_ptr() is the lowest address.
    const auto [base, bytes] = TensorBytes(object);
    e.base = reinterpret_cast<void*>(base);
    e.length = bytes;
    hold->object = object;
    hold->is_tensor = true;
    hold->tensor_base = base;
    hold->tensor_bytes = bytes;
    return e;
  }
  ThrowStatus(absl::InvalidArgumentError(
      what +
      ": expected an object with the buffer protocol (numpy "
      "array, bytearray, memoryview) or a torch.Tensor, got " +
      type));
}

namespace {

RegionId RegisterMemory(PyEngine& self, const py::object& object) {
  const CoreRef core = self.core();
  auto hold = std::make_unique<EngineCore::Hold>();
  hold->object = object;
  const BufferExtent e = ExtentOf(object, hold.get(), "register_memory");
  const RegionId id = Unwrap(OnEngine(self, [&](TransferEngine& engine) {
    return engine.RegisterMemory(e.base, e.length, e.kind);
  }));
  core->holds[id] = std::move(hold);
  return id;
}

// What allocate_memory returns.
struct AllocatedMemory {
  RegionId id = 0;
  uint64_t address = 0;
  uint64_t length = 0;
  py::object array;
};

// The base object of an allocate_memory array: keeps the core alive and
// marks the region's array alive.
struct ArrayOwner {
  CoreRef core;
  RegionId region;
};

AllocatedMemory AllocateMemory(PyEngine& self, U64<"length"> length_arg) {
  const uint64_t length = length_arg;
  const CoreRef core = self.core();
  const AllocatedRegion region =
      Unwrap(OnEngine(self, [&](TransferEngine& engine) {
        return engine.AllocateMemory(length);
      }));
  auto* owner = new ArrayOwner{core, region.id};
  ++core->live_arrays[region.id];
  py::capsule base(owner, [](void* p) {
    auto* o = static_cast<ArrayOwner*>(p);
    if (--o->core->live_arrays[o->region] == 0) {
      o->core->live_arrays.erase(o->region);
    }
    delete o;
  });
  py::array array(py::dtype::of<uint8_t>(),
                  {static_cast<py::ssize_t>(region.length)}, {1},
                  static_cast<uint8_t*>(region.data), base);
  return {region.id, reinterpret_cast<uint64_t>(region.data), region.length,
          std::move(array)};
}

void DeregisterMemory(PyEngine& self, Int<RegionId, "region"> region_arg) {
  const RegionId region = region_arg;
  const CoreRef core = self.core();
  if (core->live_arrays.count(region) != 0) {
    ThrowStatus(absl::FailedPreconditionError(absl::StrCat(
        "deregister_memory: region ", region,
        " is engine memory still viewed by an array from allocate_memory; "
        "drop the array first")));
  }
  ThrowIfError(OnEngine(self, [&](TransferEngine& engine) {
    return engine.DeregisterMemory(region);
  }));
  core->holds.erase(region);  // the object may be freed now
}

TransferOptions MakeTransferOptions(const py::object& notification,
                                    const py::object& timeout,
                                    bool acknowledged,
                                    const py::object& on_complete) {
  TransferOptions o;
  if (py::isinstance<py::bytes>(notification)) {
    o.notification = std::string(notification.cast<py::bytes>());
  } else if (py::isinstance<py::str>(notification)) {
    o.notification = notification.cast<std::string>();
  } else if (!notification.is_none()) {
    ThrowStatus(absl::InvalidArgumentError(absl::StrCat(
        "notification: expected bytes, str or None, got ",
        std::string(
            py::str(py::type::handle_of(notification).attr("__name__"))))));
  }
  o.timeout = OptionalSeconds(timeout, "timeout");
  o.acknowledged = acknowledged;
  if (!on_complete.is_none()) {
    if (!PyCallable_Check(on_complete.ptr())) {
      ThrowStatus(absl::InvalidArgumentError(
          "on_complete must be callable(error_or_None, stats)"));
    }
    PyRef callback(on_complete);
    o.on_complete = [callback](const absl::Status& status,
                               const TransferStats& stats) {
      if (PythonFinalizing()) return;
      CallbackScope scope;
      py::gil_scoped_acquire gil;
      try {
        callback.get()(StatusToException(status), stats);
      } catch (py::error_already_set& e) {
        ReportCallbackError(e, callback.get());
      }
    };
  }
  return o;
}

// TransferEngine::Write or TransferEngine::Read.
using OpsTransfer = TransferHandle (TransferEngine::*)(
    PeerId, absl::Span<const TransferOp>, TransferOptions);

// write() and read(): the ops and options from Python, then `start` with
// the GIL released; the handle wrapped for Python.
template <OpsTransfer start>
py::object StartOps(PyEngine& self, Int<PeerId, "peer"> peer, py::handle ops,
                    const py::object& notification, const py::object& timeout,
                    bool acknowledged, const py::object& on_complete) {
  std::vector<TransferOp> v = ToOps(ops);
  TransferOptions o =
      MakeTransferOptions(notification, timeout, acknowledged, on_complete);
  constexpr bool kWrite = start == &TransferEngine::Write;
  std::vector<RegionId> local;  // the regions of this side the ops touch
  local.reserve(v.size());
  for (const TransferOp& op : v) {
    local.push_back(kWrite ? op.src_region : op.dst_region);
  }
  CheckTensorsInPlace(*self.core(), local, kWrite ? "write" : "read");
  return WrapHandle(OnEngine(self, [&](TransferEngine& engine) {
    return (engine.*start)(peer, v, std::move(o));
  }));
}

void InitTypes(py::module_& m) {
  py::enum_<MemoryKind>(m, "MemoryKind")
      .value("HOST", MemoryKind::kHost)
      .value("CUDA_DEVICE", MemoryKind::kCudaDevice);
  py::enum_<PeerDataMethod>(m, "PeerDataMethod")
      .value("RMA", PeerDataMethod::kRma)
      .value("ACTIVE_MESSAGES", PeerDataMethod::kActiveMessages);
  py::enum_<Notification::Kind>(m, "NotificationKind")
      .value("TRANSFER", Notification::Kind::kTransfer)
      .value("MESSAGE", Notification::Kind::kMessage)
      .value("PEER_DISCONNECTED", Notification::Kind::kPeerDisconnected);

  py::class_<RegionInfo>(m, "RegionInfo")
      .def_readonly("id", &RegionInfo::id)
      .def_readonly("kind", &RegionInfo::kind)
      .def_readonly("base", &RegionInfo::base)
      .def_readonly("length", &RegionInfo::length);
  py::class_<PeerInfo>(m, "PeerInfo")
      .def_readonly("id", &PeerInfo::id)
      .def_readonly("name", &PeerInfo::name)
      .def_readonly("connected", &PeerInfo::connected)
      .def_property_readonly(
          "failure",
          [](const PeerInfo& p) { return StatusToException(p.failure); },
          "Why the peer disconnected (exception instance), None while "
          "connected.")
      .def_readonly("regions", &PeerInfo::regions)
      .def_readonly("write_method", &PeerInfo::write_method)
      .def_readonly("read_method", &PeerInfo::read_method);
  py::class_<Notification>(m, "Notification")
      .def_readonly("peer", &Notification::peer)
      .def_readonly("kind", &Notification::kind)
      .def_property_readonly(
          "data", [](const Notification& n) { return py::bytes(n.bytes); })
      .def("__repr__", [](const Notification& n) {
        return absl::StrCat("Notification(peer=", n.peer,
                            ", kind=", static_cast<int>(n.kind),
                            ", bytes=", n.bytes.size(), ")");
      });
  py::class_<TransferEngineStats>(m, "TransferEngineStats")
      .def_readonly("peers_tracked", &TransferEngineStats::peers_tracked)
      .def_readonly("peers_connected", &TransferEngineStats::peers_connected)
      .def_readonly("peers_listed", &TransferEngineStats::peers_listed)
      .def_readonly("transfers_active", &TransferEngineStats::transfers_active)
      .def_readonly("messages_dropped", &TransferEngineStats::messages_dropped)
      .def_readonly("registered_bytes", &TransferEngineStats::registered_bytes);
  py::class_<AllocatedMemory>(m, "AllocatedMemory",
                              "Engine-owned memory: region `id` and `array`, "
                              "a writable uint8 numpy view of it that keeps "
                              "the engine (and the memory) alive.")
      .def_readonly("id", &AllocatedMemory::id)
      .def_readonly("address", &AllocatedMemory::address)
      .def_readonly("length", &AllocatedMemory::length)
      .def_readonly("array", &AllocatedMemory::array);
}

}  // namespace

void InitEngine(py::module_& m) {
  InitTypes(m);
  py::class_<PyEngine>(
      m, "TransferEngine",
      "Moves bytes between registered memory of two processes over UCX. "
      "TransferEngine(**options): the fields of TransferEngineOptions, "
      "durations in seconds, log=callable(severity, message). Thread-safe.")
      .def(py::init([](const py::kwargs& kwargs) {
        auto core = std::make_shared<EngineCore>();
        const TransferEngineOptions options = ParseOptions(kwargs, &core->log);
        absl::StatusOr<std::unique_ptr<TransferEngine>> made;
        {
          py::gil_scoped_release release;
          made = TransferEngine::Create(options);
        }
        core->engine = Unwrap(std::move(made));
        return std::make_unique<PyEngine>(std::move(core));
      }))
      .def("register_memory", &RegisterMemory, py::arg("buffer"),
           "Registers the memory of `buffer` in place (no copy): a writable, "
           "contiguous buffer-protocol object or a contiguous torch.Tensor. "
           "The engine holds a reference to it until deregister_memory or "
           "the engine's end. Returns the region id. InvalidArgumentError "
           "for read-only or non-contiguous memory.")
      .def("allocate_memory", &AllocateMemory, py::arg("length"),
           "Allocates and registers `length` bytes owned by the engine "
           "(shared-memory backed where possible); returns AllocatedMemory.")
      .def("deregister_memory", &DeregisterMemory, py::arg("region"),
           "Deregisters a region and drops the reference to its object. "
           "NotFoundError for an unknown id; FailedPreconditionError while a "
           "transfer uses it or an allocate_memory array views it.")
      .def("regions",
           [](PyEngine& self) {
             return OnEngine(self,
                             [&](TransferEngine& e) { return e.Regions(); });
           })
      .def(
          "listen",
          [](PyEngine& self, const std::string& address) {
            return Unwrap(OnEngine(
                self, [&](TransferEngine& e) { return e.Listen(address); }));
          },
          py::arg("address") = "127.0.0.1:0",
          "Accepts connections on 'ip:port' (port 0: any); returns the bound "
          "address.")
      .def(
          "connect",
          [](PyEngine& self, const std::string& address) {
            return Unwrap(OnEngine(
                self, [&](TransferEngine& e) { return e.Connect(address); }));
          },
          py::arg("address"),
          "Connects to a listening engine and runs the handshake; returns "
          "the peer id.")
      .def("local_metadata",
           [](PyEngine& self) {
             return py::bytes(Unwrap(OnEngine(
                 self, [&](TransferEngine& e) { return e.LocalMetadata(); })));
           })
      .def(
          "add_peer",
          [](PyEngine& self, py::bytes metadata) {
            std::string bytes = metadata;
            return Unwrap(OnEngine(
                self, [&](TransferEngine& e) { return e.AddPeer(bytes); }));
          },
          py::arg("metadata"),
          "Connects to the engine whose local_metadata() this is.")
      .def(
          "disconnect",
          [](PyEngine& self, Int<PeerId, "peer"> peer) {
            ThrowIfError(OnEngine(
                self, [&](TransferEngine& e) { return e.Disconnect(peer); }));
          },
          py::arg("peer"))
      .def("peers",
           [](PyEngine& self) {
             return OnEngine(self,
                             [&](TransferEngine& e) { return e.Peers(); });
           })
      .def(
          "get_peer",
          [](PyEngine& self, Int<PeerId, "peer"> peer) {
            return Unwrap(OnEngine(
                self, [&](TransferEngine& e) { return e.GetPeer(peer); }));
          },
          py::arg("peer"))
      .def("write", &StartOps<&TransferEngine::Write>, py::arg("peer"),
           py::arg("ops"), py::kw_only(), py::arg("notification") = py::none(),
           py::arg("timeout") = py::none(), py::arg("acknowledged") = false,
           py::arg("on_complete") = py::none(),
           "Copies every op from local regions to the peer's, then sends "
           "`notification`. Errors come through the returned TransferHandle. "
           "on_complete(error_or_None, stats) runs once, with the GIL, on the "
           "engine's thread; an exception it raises goes to "
           "sys.unraisablehook.")
      .def("read", &StartOps<&TransferEngine::Read>, py::arg("peer"),
           py::arg("ops"), py::kw_only(), py::arg("notification") = py::none(),
           py::arg("timeout") = py::none(), py::arg("acknowledged") = false,
           py::arg("on_complete") = py::none(),
           "Copies every op from the peer's regions (src) to local ones "
           "(dst). As write().")
      .def(
          "send",
          [](PyEngine& self, Int<PeerId, "peer"> peer, py::bytes data,
             const py::object& timeout, const py::object& on_complete) {
            std::string bytes = data;
            TransferOptions o =
                MakeTransferOptions(py::none(), timeout, false, on_complete);
            return WrapHandle(OnEngine(self, [&](TransferEngine& e) {
              return e.Send(peer, std::move(bytes), std::move(o));
            }));
          },
          py::arg("peer"), py::arg("data"), py::kw_only(),
          py::arg("timeout") = py::none(), py::arg("on_complete") = py::none(),
          "Sends `data` (at most 1 MiB); the peer receives a Notification "
          "of kind MESSAGE.")
      .def(
          "take_notifications",
          [](PyEngine& self, Real<"wait"> wait) {
            const absl::Duration d = SecondsToDuration(wait, "wait");
            return OnEngine(self, [&](TransferEngine& e) {
              return e.TakeNotifications(d);
            });
          },
          py::arg("wait") = 0.0,
          "Returns and removes the queued notifications; with wait > 0 blocks "
          "up to `wait` seconds for the first.")
      .def_static(
          "validate_metadata",
          [](py::bytes metadata) {
            std::string_view v = metadata;
            ThrowIfError(
                TransferEngine::ValidateMetadata(absl::Span<const uint8_t>(
                    reinterpret_cast<const uint8_t*>(v.data()), v.size())));
          },
          py::arg("metadata"))
      .def_property_readonly(
          "name", [](PyEngine& self) { return self.engine().name(); })
      .def_property_readonly(
          "supports_cuda_memory",
          [](PyEngine& self) { return self.engine().SupportsCudaMemory(); })
      .def_property_readonly(
          "ucx_info", [](PyEngine& self) { return self.engine().UcxInfo(); })
      .def("stats",
           [](PyEngine& self) {
             return OnEngine(self,
                             [&](TransferEngine& e) { return e.Stats(); });
           })
      .def_property_readonly("closed", &PyEngine::closed)
      .def("close", &PyEngine::Close,
           "Drops this object's hold on the engine. The engine shuts down "
           "(failing unfinished transfers with CancelledError and freeing "
           "its memory) once nothing else holds it: KvTransfer objects and "
           "allocate_memory arrays hold it too. Idempotent.")
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](PyEngine& self, py::args) { self.Close(); });
}

}  // namespace flowkv::python
