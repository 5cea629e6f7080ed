// SPDX-License-Identifier: Apache-2.0
// PyPoolMemory: the Python flowkv.PoolMemory object, a KvPoolMemory
// (flowkv/kv_pool_memory.h) that KvTransfer's pool form takes, made by
// flowkv.host_pool, flowkv.shared_host_pool or flowkv.cuda_pool
// (pool_memory.cc).
//
// Lifetime: the Python objects that hold the pool's bytes (the buffers of
// host_pool, the tensors of cuda_pool) are released only after the C++ pool
// itself is destroyed, on whichever thread drops its last reference (a
// KvTransfer holds one), so no copy ever reaches freed memory. The arrays of
// a shared_host_pool hold the C++ pool too.
//
// Thread safety: the pool is thread-safe; the Python object's fields are
// guarded by the GIL.

#ifndef FLOWKV_PYTHON_SRC_POOL_MEMORY_H_
#define FLOWKV_PYTHON_SRC_POOL_MEMORY_H_

#include <memory>
#include <string>

#include "bindings.h"
#include "flowkv/kv_pool_memory.h"

namespace flowkv::python {

struct PyPoolMemory {
  std::shared_ptr<KvPoolMemory> pool;
  // What `regions` returns: the buffers or tensors given, or the arrays
  // over a shared_host_pool's regions.
  py::list regions;
  // The factory that made it ("host_pool", ...), for repr.
  std::string factory;
};

}  // namespace flowkv::python

#endif  // FLOWKV_PYTHON_SRC_POOL_MEMORY_H_
