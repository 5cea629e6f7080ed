// SPDX-License-Identifier: Apache-2.0
// EngineCore: one TransferEngine and the Python objects it must keep alive
// (the buffers registered in place, the log callback), shared by the Python
// TransferEngine object, the KvTransfer objects built on it and the arrays
// allocate_memory returned. The engine is destroyed when the last of them
// lets go, so no array and no KvTransfer ever points into a destroyed
// engine.
//
// Thread safety: the maps are guarded by the GIL; `engine` is thread-safe.

#ifndef FLOWKV_PYTHON_SRC_ENGINE_H_
#define FLOWKV_PYTHON_SRC_ENGINE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bindings.h"
#include "flowkv/transfer_engine.h"

namespace flowkv::python {

struct EngineCore {
  // A registered Python object: a reference to it, and its buffer export
  // (which also keeps e.g. a bytearray from resizing) when it has one.
  struct Hold {
    py::object object;
    Py_buffer view{};
    bool has_view = false;
    // A torch.Tensor (no buffer export keeps it in place): where its bytes
    // were when it was registered (CheckTensorsInPlace).
    bool is_tensor = false;
    uintptr_t tensor_base = 0;
    uint64_t tensor_bytes = 0;
    ~Hold() {
      if (has_view) PyBuffer_Release(&view);
    }
  };

  std::unique_ptr<TransferEngine> engine;
  // Region -> what RegisterMemory was given. GIL.
  std::map<RegionId, std::unique_ptr<Hold>> holds;
  // Regions from allocate_memory whose array is alive (the array's base
  // removes itself). GIL.
  std::map<RegionId, int> live_arrays;
  // Callbacks the engine's options call.
  PyRef log;

  // Destroys the engine with the GIL released (its threads may be waiting
  // for the GIL in a callback), then drops the holds. REQUIRES: the GIL.
  ~EngineCore();
};

using CoreRef = std::shared_ptr<EngineCore>;

// The Python TransferEngine object.
class PyEngine {
 public:
  explicit PyEngine(CoreRef core) : core_(std::move(core)) {}
  // The core; FailedPreconditionError once closed.
  const CoreRef& core() const;
  TransferEngine& engine() const { return *core()->engine; }
  bool closed() const { return core_ == nullptr; }
  // Drops this object's reference (see EngineCore). REQUIRES: the GIL.
  void Close() { core_.reset(); }

 private:
  CoreRef core_;
};

// Where a Python object's bytes are, for using them in place: a writable
// buffer (numpy array, bytearray, memoryview) or a torch.Tensor (cpu:
// kHost, cuda: kCudaDevice) whose elements densely cover one range of
// memory: contiguous, or any permutation of a contiguous one's dimensions
// (e.g. vLLM's HND caches, handed out as permuted views); the range is
// registered in memory order. Fills `hold`, which keeps the object
// referenced and its buffer exported while it lives. InvalidArgumentError,
// its message starting with `what`, for anything else (gaps, overlaps,
// negative strides, read-only memory).
struct BufferExtent {
  void* base = nullptr;
  uint64_t length = 0;
  MemoryKind kind = MemoryKind::kHost;
};
BufferExtent ExtentOf(const py::object& object, EngineCore::Hold* hold,
                      const std::string& what);

// FailedPreconditionError, naming `what` and the region, when a
// torch.Tensor registered as one of `regions` no longer has the bytes it
// was registered with (resize_, set_ gave it new storage): the engine would
// move bytes of freed memory. Regions of other objects pass (their buffer
// export keeps them in place). REQUIRES: the GIL.
void CheckTensorsInPlace(const EngineCore& core,
                         const std::vector<RegionId>& regions,
                         const char* what);

// Wraps a TransferHandle for Python (engine.cc).
py::object WrapHandle(TransferHandle handle);

}  // namespace flowkv::python

#endif  // FLOWKV_PYTHON_SRC_ENGINE_H_
