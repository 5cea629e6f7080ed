// SPDX-License-Identifier: Apache-2.0
// CudaPoolMemory (include/flowkv/cuda/cuda_pool_memory.h): creating a pool
// over device memory, its share descriptor, and Gather / Scatter between the
// pool and host memory. Opening peers is cuda/cuda_peer_pool.cc; the stream
// and completion thread are cuda/copy_queue.cc.

#include "flowkv/cuda/cuda_pool_memory.h"

#include <cstring>
#include <cuda.h>
#include <cuda_runtime_api.h>
#include <unistd.h>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cuda/copy_queue.h"
#include "cuda/cuda_status.h"
#include "cuda/host_pins.h"
#include "cuda/ipc_descriptor.h"
#include "lib/common/host_identity.h"

namespace flowkv::cuda {
namespace {

using ::flowkv::internal::CudaStatus;
using internal::CopyQueue;
using internal::ScopedDevice;

// cuMemGetAddressRange through the runtime's driver entry point (flowkv_cuda
// links only the runtime, so it loads without libcuda and reports "no GPU").
using AddressRangeFn = CUresult (*)(CUdeviceptr*, size_t*, CUdeviceptr);

absl::StatusOr<AddressRangeFn> GetAddressRangeFn() {
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult found{};
  if (absl::Status s = CudaStatus(
          cudaGetDriverEntryPointByVersion("cuMemGetAddressRange", &fn, 12000,
                                           cudaEnableDefault, &found),
          "cudaGetDriverEntryPointByVersion(cuMemGetAddressRange)");
      !s.ok()) {
    return s;
  }
  if (found != cudaDriverEntryPointSuccess || fn == nullptr) {
    return absl::InternalError(
        "the CUDA driver has no cuMemGetAddressRange entry point");
  }
  return reinterpret_cast<AddressRangeFn>(fn);
}

// Where a region lies in the allocation that holds it.
struct RegionAllocation {
  void* start = nullptr;  // the allocation's base
  uint64_t bytes = 0;     // the allocation's size
  uint64_t offset = 0;    // the region base's offset in it
};

// Checks region `index`: device memory of `device` holding `size` bytes
// inside one allocation; sets `*allocation` on success.
absl::Status CheckRegion(int device, size_t index, void* base, uint64_t size,
                         AddressRangeFn address_range,
                         RegionAllocation* allocation) {
  if (base == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrFormat("CudaPoolMemory: bases[%d] is null", index));
  }
  if (size == 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("CudaPoolMemory: sizes[%d] is 0", index));
  }
  cudaPointerAttributes attributes{};
  if (absl::Status s = CudaStatus(
          cudaPointerGetAttributes(&attributes, base),
          absl::StrFormat("cudaPointerGetAttributes(bases[%d])", index));
      !s.ok()) {
    return s;
  }
  if (attributes.type != cudaMemoryTypeDevice) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "CudaPoolMemory: bases[%d] (%p) is not device memory (CUDA memory "
        "type %d: %s); allocate pool regions with cudaMalloc",
        index, base, static_cast<int>(attributes.type),
        attributes.type == cudaMemoryTypeManaged ? "managed" : "host"));
  }
  if (attributes.device != device) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "CudaPoolMemory: bases[%d] (%p) is memory of device %d, not of "
        "device %d",
        index, base, attributes.device, device));
  }
  CUdeviceptr start = 0;
  size_t length = 0;
  const CUresult result =
      address_range(&start, &length, reinterpret_cast<CUdeviceptr>(base));
  if (result != CUDA_SUCCESS) {
    return absl::InternalError(absl::StrFormat(
        "CudaPoolMemory: cuMemGetAddressRange(bases[%d]) failed with CUresult "
        "%d",
        index, static_cast<int>(result)));
  }
  const uint64_t into = reinterpret_cast<CUdeviceptr>(base) - start;
  if (size > length - into) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "CudaPoolMemory: region %d ([%p, +%d)) leaves its allocation, which "
        "ends %d bytes after the base",
        index, base, size, length - into));
  }
  allocation->start = reinterpret_cast<void*>(start);
  allocation->bytes = length;
  allocation->offset = into;
  return absl::OkStatus();
}

// InvalidArgument "<who>: device ..." unless `device` is one of this
// process's devices (the CUDA error when they cannot be counted).
absl::Status CheckDevice(const char* who, int device) {
  int count = 0;
  if (absl::Status s =
          CudaStatus(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
      !s.ok()) {
    return s;
  }
  if (device < 0 || device >= count) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: device %d is not one of this process's %d devices",
                        who, device, count));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<CudaPoolMemory>> CudaPoolMemory::Create(
    int device, std::vector<void*> bases, std::vector<uint64_t> sizes,
    const CudaPoolOptions& options) {
  if (bases.empty() || bases.size() != sizes.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "CudaPoolMemory: %d bases and %d sizes (one of each per region, at "
        "least one region)",
        bases.size(), sizes.size()));
  }
  if (absl::Status s = CheckDevice("CudaPoolMemory", device); !s.ok()) {
    return s;
  }
  ScopedDevice scoped(device);
  if (!scoped.status().ok()) return scoped.status();
  absl::StatusOr<AddressRangeFn> address_range = GetAddressRangeFn();
  if (!address_range.ok()) return address_range.status();
  std::vector<RegionAllocation> allocations(bases.size());
  for (size_t i = 0; i < bases.size(); ++i) {
    if (absl::Status s = CheckRegion(device, i, bases[i], sizes[i],
                                     *address_range, &allocations[i]);
        !s.ok()) {
      return s;
    }
  }

  std::string descriptor;
  if (options.share) {
    internal::IpcDescriptor ipc;
    ipc.boot_id = ::flowkv::internal::HostBootId();
    ipc.pid = static_cast<uint32_t>(getpid());
    cudaDeviceProp properties{};
    if (absl::Status s =
            CudaStatus(cudaGetDeviceProperties(&properties, device),
                       "cudaGetDeviceProperties");
        !s.ok()) {
      return s;
    }
    std::memcpy(ipc.device_uuid.data(), properties.uuid.bytes,
                ipc.device_uuid.size());
    for (size_t i = 0; i < bases.size(); ++i) {
      cudaIpcMemHandle_t handle{};
      // CUDA IPC shares whole allocations: the handle is the allocation's,
      // the importer adds the region's offset.
      if (absl::Status s = CudaStatus(
              cudaIpcGetMemHandle(&handle, allocations[i].start),
              absl::StrFormat("cudaIpcGetMemHandle of the allocation holding "
                              "bases[%d] (memory from cuMemCreate or a "
                              "memory pool cannot be shared this way; see "
                              "docs/gpu.md \"Allocating pools so IPC "
                              "works\", or set CudaPoolOptions::share = "
                              "false)",
                              i));
          !s.ok()) {
        return s;
      }
      internal::IpcRegion region;
      region.size = sizes[i];
      region.address = reinterpret_cast<uint64_t>(bases[i]);
      region.offset = allocations[i].offset;
      region.allocation_bytes = allocations[i].bytes;
      static_assert(sizeof(handle) == internal::kIpcHandleBytes);
      std::memcpy(region.handle.data(), &handle, sizeof(handle));
      ipc.regions.push_back(region);
    }
    descriptor = internal::EncodeIpcDescriptor(ipc);
  }

  absl::StatusOr<std::shared_ptr<CopyQueue>> queue =
      CopyQueue::Create(device, options.batch_min_runs);
  if (!queue.ok()) return queue.status();
  return std::unique_ptr<CudaPoolMemory>(new CudaPoolMemory(
      device, std::move(bases), std::move(sizes),
      /*owned=*/false, *std::move(queue), std::move(descriptor)));
}

absl::StatusOr<std::unique_ptr<CudaPoolMemory>> CudaPoolMemory::Allocate(
    int device, std::vector<uint64_t> sizes, const CudaPoolOptions& options) {
  if (sizes.empty()) {
    return absl::InvalidArgumentError(
        "CudaPoolMemory::Allocate: no region sizes");
  }
  for (size_t i = 0; i < sizes.size(); ++i) {
    if (sizes[i] == 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("CudaPoolMemory::Allocate: sizes[%d] is 0", i));
    }
  }
  if (absl::Status s = CheckDevice("CudaPoolMemory::Allocate", device);
      !s.ok()) {
    return s;
  }
  std::vector<void*> bases;
  auto free_all = [&] {
    ScopedDevice scoped(device);
    for (void* base : bases) cudaFree(base);
  };
  {
    ScopedDevice scoped(device);
    if (!scoped.status().ok()) return scoped.status();
    for (size_t i = 0; i < sizes.size(); ++i) {
      void* base = nullptr;
      if (absl::Status s =
              CudaStatus(cudaMalloc(&base, sizes[i]),
                         absl::StrFormat("cudaMalloc of region %d (%d bytes)",
                                         i, sizes[i]));
          !s.ok()) {
        free_all();
        return s;
      }
      bases.push_back(base);
    }
  }
  absl::StatusOr<std::unique_ptr<CudaPoolMemory>> pool =
      Create(device, bases, std::move(sizes), options);
  if (!pool.ok()) {
    free_all();
    return pool.status();
  }
  (*pool)->owned_ = true;
  return pool;
}

CudaPoolMemory::CudaPoolMemory(int device, std::vector<void*> bases,
                               std::vector<uint64_t> sizes, bool owned,
                               std::shared_ptr<internal::CopyQueue> queue,
                               std::string descriptor)
    : device_(device),
      bases_(std::move(bases)),
      sizes_(std::move(sizes)),
      owned_(owned),
      queue_(std::move(queue)),
      pins_(std::make_unique<internal::HostPins>()),
      descriptor_(std::move(descriptor)) {}

CudaPoolMemory::~CudaPoolMemory() {
  queue_->Drain();
  ScopedDevice scoped(device_);
  pins_.reset();
  if (owned_) {
    for (void* base : bases_) cudaFree(base);
  }
}

std::string CudaPoolMemory::ShareDescriptor() const { return descriptor_; }

absl::Status CudaPoolMemory::PrepareHostCopies(
    const std::vector<PoolHostCopy>& copies) {
  for (size_t i = 0; i < copies.size(); ++i) {
    const PoolHostCopy& copy = copies[i];
    if (copy.region >= bases_.size()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("copies[%d].region %d: the pool has %d regions", i,
                          copy.region, bases_.size()));
    }
    if (copy.host == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrFormat("copies[%d].host is null", i));
    }
    const uint64_t size = sizes_[copy.region];
    if (copy.offset > size || copy.length > size - copy.offset) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "copies[%d]: [%d, +%d) is outside region %d of %d bytes", i,
          copy.offset, copy.length, copy.region, size));
    }
    if (reinterpret_cast<uintptr_t>(copy.host) > UINTPTR_MAX - copy.length) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "copies[%d]: host range [%p, +%d) wraps the address space", i,
          copy.host, copy.length));
    }
  }
  ScopedDevice scoped(device_);
  if (!scoped.status().ok()) return scoped.status();
  for (const PoolHostCopy& copy : copies) {
    if (absl::Status s = pins_->Pin(copy.host, copy.length); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

void CudaPoolMemory::HostCopies(std::vector<PoolHostCopy> copies, bool to_host,
                                void* after, PoolCopyDone done) {
  if (absl::Status s = PrepareHostCopies(copies); !s.ok()) {
    done(absl::Status(s.code(), absl::StrCat(to_host ? "Gather: " : "Scatter: ",
                                             s.message())));
    return;
  }
  std::vector<internal::Copy> runs;
  runs.reserve(copies.size());
  for (const PoolHostCopy& copy : copies) {
    if (copy.length == 0) continue;
    std::byte* pool =
        static_cast<std::byte*>(bases_[copy.region]) + copy.offset;
    if (to_host) {
      runs.push_back({copy.host, pool, copy.length});
    } else {
      runs.push_back({pool, copy.host, copy.length});
    }
  }
  queue_->Submit(std::move(runs), after, std::move(done));
}

void CudaPoolMemory::Gather(std::vector<PoolHostCopy> copies, void* after,
                            PoolCopyDone done) {
  HostCopies(std::move(copies), /*to_host=*/true, after, std::move(done));
}

void CudaPoolMemory::Scatter(std::vector<PoolHostCopy> copies,
                             PoolCopyDone done) {
  HostCopies(std::move(copies), /*to_host=*/false, nullptr, std::move(done));
}

}  // namespace flowkv::cuda
