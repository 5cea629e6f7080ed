// SPDX-License-Identifier: Apache-2.0
// Bindings of KvPoolMemory (flowkv/kv_pool_memory.h and, in builds with
// CUDA, flowkv/cuda/cuda_pool_memory.h): the flowkv.PoolMemory class and
// its factories host_pool (buffers or CPU tensors of this process),
// shared_host_pool (shared memory other processes of this host can map,
// exposed as numpy arrays) and cuda_pool (torch CUDA tensors; in builds
// without CUDA it checks its arguments, then raises UnimplementedError).
//
// Lifetime rules: pool_memory.h.

#include "pool_memory.h"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine.h"
#include "flowkv/kv_layout.h"

#ifdef FLOWKV_PYTHON_WITH_CUDA
#include "flowkv/cuda/cuda_pool_memory.h"
#endif

namespace flowkv::python {
namespace {

using Holds = std::vector<std::unique_ptr<EngineCore::Hold>>;

// `pool` as a shared pointer whose deleter destroys the pool first and then
// drops `keep` (the Python objects holding its bytes; PyRef takes the GIL).
std::shared_ptr<KvPoolMemory> Keeping(std::unique_ptr<KvPoolMemory> pool,
                                      py::object keep) {
  return std::shared_ptr<KvPoolMemory>(
      pool.release(), [keep = PyRef(std::move(keep))](KvPoolMemory* p) mutable {
        delete p;
        keep = PyRef();
      });
}

// The holds as one Python object (its destructor runs with the GIL).
py::object HoldsObject(Holds holds) {
  auto* owned = new Holds(std::move(holds));
  return py::capsule(owned, [](void* p) { delete static_cast<Holds*>(p); });
}

// The buffers (or tensors) of a pool: their extents, each of `kind`.
struct Buffers {
  Holds holds;
  std::vector<void*> bases;
  std::vector<uint64_t> sizes;
  py::list objects;
};

Buffers BuffersOf(const py::iterable& buffers, const char* factory,
                  const char* arg, MemoryKind kind) {
  Buffers b;
  size_t i = 0;
  for (py::handle buffer : buffers) {
    const std::string what = absl::StrCat(factory, ": ", arg, "[", i, "]");
    auto hold = std::make_unique<EngineCore::Hold>();
    hold->object = py::reinterpret_borrow<py::object>(buffer);
    const BufferExtent e = ExtentOf(hold->object, hold.get(), what);
    if (e.kind != kind) {
      ThrowStatus(absl::InvalidArgumentError(
          kind == MemoryKind::kHost
              ? what + " is CUDA device memory; use flowkv.cuda_pool"
              : what + " is host memory; cuda_pool takes CUDA tensors (host "
                       "memory: flowkv.host_pool)"));
    }
    b.bases.push_back(e.base);
    b.sizes.push_back(e.length);
    b.objects.append(hold->object);
    b.holds.push_back(std::move(hold));
    ++i;
  }
  if (i == 0) {
    ThrowStatus(absl::InvalidArgumentError(absl::StrCat(
        factory, ": ", arg, ": none given (one per layout region)")));
  }
  return b;
}

py::object Wrap(std::shared_ptr<KvPoolMemory> pool, py::list regions,
                std::string factory) {
  return py::cast(
      PyPoolMemory{std::move(pool), std::move(regions), std::move(factory)});
}

py::object HostPool(const py::iterable& buffers) {
  Buffers b = BuffersOf(buffers, "host_pool", "buffers", MemoryKind::kHost);
  std::unique_ptr<KvPoolMemory> pool =
      Unwrap(MakeHostPool(std::move(b.bases), std::move(b.sizes)));
  return Wrap(Keeping(std::move(pool), HoldsObject(std::move(b.holds))),
              std::move(b.objects), "host_pool");
}

py::object SharedHostPool(const py::object& sizes_or_layout) {
  std::vector<uint64_t> sizes;
  if (py::isinstance<KvLayout>(sizes_or_layout)) {
    const KvLayout& layout = sizes_or_layout.cast<const KvLayout&>();
    for (uint32_t r = 0; r < layout.num_regions(); ++r) {
      sizes.push_back(layout.region_bytes(r));
    }
  } else {
    try {
      sizes = ToIntVector<uint64_t>(sizes_or_layout, "sizes");
    } catch (const py::cast_error&) {
      ThrowStatus(absl::InvalidArgumentError(
          "shared_host_pool: sizes: expected a KvLayout or a sequence of "
          "region sizes in bytes (non-negative ints)"));
    }
  }
  absl::StatusOr<std::unique_ptr<KvPoolMemory>> made;
  {
    py::gil_scoped_release release;
    made = MakeSharedHostPool(std::move(sizes));
  }
  std::shared_ptr<KvPoolMemory> pool = Unwrap(std::move(made));
  py::list regions;
  for (uint32_t r = 0; r < pool->num_regions(); ++r) {
    // Each array holds the pool: its memory stays mapped while it lives.
    auto* holder = new std::shared_ptr<KvPoolMemory>(pool);
    py::capsule base(holder, [](void* p) {
      delete static_cast<std::shared_ptr<KvPoolMemory>*>(p);
    });
    regions.append(py::array(py::dtype::of<uint8_t>(),
                             {static_cast<py::ssize_t>(pool->region_bytes(r))},
                             {1}, static_cast<uint8_t*>(pool->region_base(r)),
                             base));
  }
  return Wrap(std::move(pool), std::move(regions), "shared_host_pool");
}

py::object CudaPool(const py::iterable& tensors, const py::object& device,
                    bool share) {
  Buffers b =
      BuffersOf(tensors, "cuda_pool", "tensors", MemoryKind::kCudaDevice);
  int index = 0;
  if (device.is_none()) {
    const py::object first = b.objects[0].attr("device").attr("index");
    index = first.is_none() ? 0 : first.cast<int>();
  } else {
    // An int, or a torch.device("cuda", i).
    const py::object value = py::hasattr(device, "index") &&
                                     !py::isinstance<py::int_>(device) &&
                                     !py::isinstance<py::str>(device)
                                 ? device.attr("index")
                                 : device;
    try {
      index = value.cast<int>();
    } catch (const py::cast_error&) {
      ThrowStatus(absl::InvalidArgumentError(
          "cuda_pool: device: expected None, a CUDA device index (int) or a "
          "torch.device with an index"));
    }
  }
  for (size_t i = 0; i < b.objects.size(); ++i) {
    const py::object at = b.objects[i].attr("device").attr("index");
    if (!at.is_none() && at.cast<int>() != index) {
      ThrowStatus(absl::InvalidArgumentError(absl::StrCat(
          "cuda_pool: tensors[", i, "] is on cuda:", at.cast<int>(),
          ", the pool's device is cuda:", index)));
    }
  }
#ifdef FLOWKV_PYTHON_WITH_CUDA
  absl::StatusOr<std::unique_ptr<cuda::CudaPoolMemory>> made;
  {
    py::gil_scoped_release release;
    made = cuda::CudaPoolMemory::Create(index, std::move(b.bases),
                                        std::move(b.sizes), {.share = share});
  }
  std::unique_ptr<KvPoolMemory> pool = Unwrap(std::move(made));
  return Wrap(Keeping(std::move(pool), HoldsObject(std::move(b.holds))),
              std::move(b.objects), "cuda_pool");
#else
  (void)share;
  ThrowStatus(absl::UnimplementedError(
      "cuda_pool: this flowkv was built without CUDA (flowkv_cuda); "
      "rebuild with FLOWKV_WITH_CUDA=ON"));
#endif
}

}  // namespace

void InitPoolMemory(py::module_& m) {
#ifdef FLOWKV_PYTHON_WITH_CUDA
  m.attr("HAS_CUDA_POOL") = true;
#else
  m.attr("HAS_CUDA_POOL") = false;
#endif

  py::class_<PyPoolMemory>(
      m, "PoolMemory",
      "The memory of a KvTransfer pool that KvTransfer reaches through "
      "copies (IPC or the staging ring) rather than engine regions: "
      "KvTransfer(engine, layout, pool=...). Made by host_pool, "
      "shared_host_pool or cuda_pool. Thread-safe.")
      .def_property_readonly(
          "kind", [](const PyPoolMemory& p) { return p.pool->kind(); })
      .def_property_readonly(
          "num_regions",
          [](const PyPoolMemory& p) { return p.pool->num_regions(); })
      .def(
          "region_bytes",
          [](const PyPoolMemory& p, U32<"region"> region_arg) {
            const uint32_t region = region_arg;
            if (region >= p.pool->num_regions()) {
              ThrowStatus(absl::InvalidArgumentError(absl::StrCat(
                  "region_bytes: region ", region, " of a pool of ",
                  p.pool->num_regions(), " regions")));
            }
            return p.pool->region_bytes(region);
          },
          py::arg("region"))
      .def(
          "region_address",
          [](const PyPoolMemory& p, U32<"region"> region_arg) {
            const uint32_t region = region_arg;
            if (region >= p.pool->num_regions()) {
              ThrowStatus(absl::InvalidArgumentError(absl::StrCat(
                  "region_address: region ", region, " of a pool of ",
                  p.pool->num_regions(), " regions")));
            }
            return reinterpret_cast<uintptr_t>(p.pool->region_base(region));
          },
          py::arg("region"),
          "The region's address in this process (a device pointer for a "
          "CUDA pool).")
      .def_property_readonly(
          "shareable",
          [](const PyPoolMemory& p) {
            return !p.pool->ShareDescriptor().empty();
          },
          "Whether other processes of this host can open the pool (the IPC "
          "path).")
      .def_readonly("regions", &PyPoolMemory::regions,
                    "host_pool / cuda_pool: the buffers given; "
                    "shared_host_pool: one writable uint8 numpy array per "
                    "region (valid while the array lives, also after the "
                    "pool object is gone).")
      .def("__repr__", [](const PyPoolMemory& p) {
        uint64_t bytes = 0;
        for (uint32_t r = 0; r < p.pool->num_regions(); ++r) {
          bytes += p.pool->region_bytes(r);
        }
        return absl::StrCat("PoolMemory(", p.factory, ", ",
                            p.pool->num_regions(), " regions, ", bytes,
                            " bytes)");
      });

  m.def("host_pool", &HostPool, py::arg("buffers"),
        "A pool over buffers of this process, one per layout region: "
        "contiguous writable buffers (numpy arrays, bytearray, memoryview) "
        "or CPU torch tensors, used in place and held by the pool. Copies "
        "are memcpy; the pool cannot be shared (peers stage). "
        "InvalidArgumentError naming the buffer for anything else.");
  m.def("shared_host_pool", &SharedHostPool, py::arg("sizes"),
        "A pool in shared memory that other processes of this host map "
        "(the IPC path between two such pools), one region per size in "
        "bytes (or per region of a KvLayout). `regions` are writable uint8 "
        "numpy arrays over it (torch.from_numpy(...).view(dtype) for "
        "tensors). InvalidArgumentError for no sizes or a size of 0.");
  m.def("cuda_pool", &CudaPool, py::arg("tensors"), py::kw_only(),
        py::arg("device") = py::none(), py::arg("share") = true,
        "A pool over contiguous torch CUDA tensors (data_ptr, nbytes), one "
        "per layout region, held by the pool. device: the CUDA device index "
        "(None: the first tensor's), an int or a torch.device. share=True: "
        "other processes of this host may open the pool (CUDA IPC of each "
        "tensor's cudaMalloc allocation; tensors of PyTorch's caching "
        "allocator and views do); memory IPC cannot share (expandable "
        "segments, cudaMallocAsync, cuMemCreate) needs share=False, and "
        "peers then stage. InvalidArgumentError for host memory, mixed "
        "devices, or what CudaPoolMemory::Create refuses; "
        "FailedPreconditionError without a usable GPU; UnimplementedError in "
        "a build without CUDA (HAS_CUDA_POOL).");
}

}  // namespace flowkv::python
