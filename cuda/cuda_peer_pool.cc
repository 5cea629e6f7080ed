// SPDX-License-Identifier: Apache-2.0
// CudaPoolMemory::OpenPeer (include/flowkv/cuda/cuda_pool_memory.h): opening
// a peer process's pool from its share descriptor (CUDA IPC) and the
// KvPeerPool that copies runs between the two pools on this pool's stream.

#include <cstring>
#include <cuda_runtime_api.h>
#include <errno.h>
#include <signal.h>
#include <unistd.h>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cuda/copy_queue.h"
#include "cuda/cuda_status.h"
#include "cuda/ipc_descriptor.h"
#include "flowkv/cuda/cuda_pool_memory.h"
#include "lib/common/host_identity.h"

namespace flowkv::cuda {
namespace {

using ::flowkv::internal::CudaStatus;
using internal::Copy;
using internal::CopyQueue;
using internal::ScopedDevice;

// The regions of one side of a peer copy.
struct Regions {
  std::vector<std::byte*> bases;
  std::vector<uint64_t> sizes;
};

// A peer's pool mapped into this process: through CUDA IPC (each of the
// peer's allocations opened once, `mappings`, closed in the destructor) or,
// for a descriptor of this same process, by address (no mappings).
class CudaPeerPool final : public KvPeerPool {
 public:
  CudaPeerPool(std::shared_ptr<CopyQueue> queue, Regions local, Regions peer,
               std::vector<void*> mappings)
      : queue_(std::move(queue)),
        local_(std::move(local)),
        peer_(std::move(peer)),
        mappings_(std::move(mappings)) {}

  // Waits for the copies in flight on the pool's stream, then closes the IPC
  // mappings.
  ~CudaPeerPool() override {
    queue_->Drain();
    if (mappings_.empty()) return;
    ScopedDevice scoped(queue_->device());
    for (void* mapping : mappings_) cudaIpcCloseMemHandle(mapping);
  }

  void CopyTo(std::vector<TransferOp> copies, void* after,
              PoolCopyDone done) override {
    Submit(std::move(copies), /*push=*/true, after, std::move(done));
  }

  void CopyFrom(std::vector<TransferOp> copies, PoolCopyDone done) override {
    Submit(std::move(copies), /*push=*/false, nullptr, std::move(done));
  }

 private:
  static absl::Status CheckRun(const Regions& regions, const char* side,
                               size_t index, uint32_t region, uint64_t offset,
                               uint64_t length) {
    if (region >= regions.sizes.size()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("copies[%d]: %s region %d of a pool with %d regions",
                          index, side, region, regions.sizes.size()));
    }
    const uint64_t size = regions.sizes[region];
    if (offset > size || length > size - offset) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "copies[%d]: %s range [%d, +%d) is outside region %d of %d bytes",
          index, side, offset, length, region, size));
    }
    return absl::OkStatus();
  }

  // push: src = this process's pool, dst = the peer's; pull: the reverse.
  void Submit(std::vector<TransferOp> copies, bool push, void* after,
              PoolCopyDone done) {
    const Regions& src = push ? local_ : peer_;
    const Regions& dst = push ? peer_ : local_;
    const char* src_side = push ? "source (this pool)" : "source (peer pool)";
    const char* dst_side =
        push ? "destination (peer pool)" : "destination (this pool)";
    std::vector<Copy> runs;
    runs.reserve(copies.size());
    for (size_t i = 0; i < copies.size(); ++i) {
      const TransferOp& c = copies[i];
      absl::Status s =
          CheckRun(src, src_side, i, c.src_region, c.src_offset, c.length);
      if (s.ok()) {
        s = CheckRun(dst, dst_side, i, c.dst_region, c.dst_offset, c.length);
      }
      if (!s.ok()) {
        done(absl::Status(
            s.code(),
            absl::StrCat(push ? "CopyTo: " : "CopyFrom: ", s.message())));
        return;
      }
      if (c.length == 0) continue;
      runs.push_back({dst.bases[c.dst_region] + c.dst_offset,
                      src.bases[c.src_region] + c.src_offset, c.length});
    }
    queue_->Submit(std::move(runs), after, std::move(done));
  }

  const std::shared_ptr<CopyQueue> queue_;
  const Regions local_;
  const Regions peer_;
  const std::vector<void*> mappings_;
};

// The device of this process whose UUID is `uuid`, or Unavailable.
absl::StatusOr<int> DeviceWithUuid(const std::array<uint8_t, 16>& uuid) {
  int count = 0;
  if (absl::Status s =
          CudaStatus(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
      !s.ok()) {
    return s;
  }
  for (int device = 0; device < count; ++device) {
    cudaDeviceProp properties{};
    if (cudaGetDeviceProperties(&properties, device) != cudaSuccess) continue;
    if (std::memcmp(properties.uuid.bytes, uuid.data(), uuid.size()) == 0) {
      return device;
    }
  }
  return absl::UnavailableError(
      "OpenPeer: the peer pool's GPU is not visible in this process "
      "(CUDA_VISIBLE_DEVICES, another container or host)");
}

}  // namespace

absl::StatusOr<std::unique_ptr<KvPeerPool>> CudaPoolMemory::OpenPeer(
    std::string_view descriptor) {
  absl::StatusOr<internal::IpcDescriptor> parsed =
      internal::ParseIpcDescriptor(descriptor);
  if (!parsed.ok()) return parsed.status();
  const std::string boot_id = ::flowkv::internal::HostBootId();
  if (parsed->boot_id.empty() || parsed->boot_id != boot_id) {
    return absl::UnavailableError(absl::StrFormat(
        "OpenPeer: the peer pool is on another host (boot id \"%s\", this "
        "host's \"%s\")",
        parsed->boot_id, boot_id));
  }
  Regions local;
  for (size_t i = 0; i < bases_.size(); ++i) {
    local.bases.push_back(static_cast<std::byte*>(bases_[i]));
    local.sizes.push_back(sizes_[i]);
  }
  Regions peer;
  for (const internal::IpcRegion& region : parsed->regions) {
    peer.sizes.push_back(region.size);
  }

  // A pool of this same process: CUDA cannot open its own IPC handles, and
  // its addresses are valid here.
  if (parsed->pid == static_cast<uint32_t>(getpid())) {
    for (const internal::IpcRegion& region : parsed->regions) {
      peer.bases.push_back(reinterpret_cast<std::byte*>(region.address));
    }
    return std::make_unique<CudaPeerPool>(
        queue_, std::move(local), std::move(peer), std::vector<void*>());
  }
  if (kill(static_cast<pid_t>(parsed->pid), 0) != 0 && errno == ESRCH) {
    return absl::UnavailableError(absl::StrFormat(
        "OpenPeer: the process that exported the peer pool (pid %d) is gone",
        parsed->pid));
  }
  absl::StatusOr<int> peer_device = DeviceWithUuid(parsed->device_uuid);
  if (!peer_device.ok()) return peer_device.status();
  if (*peer_device != device_) {
    int can_access = 0;
    if (cudaDeviceCanAccessPeer(&can_access, device_, *peer_device) !=
            cudaSuccess ||
        can_access == 0) {
      cudaGetLastError();
      return absl::UnavailableError(absl::StrFormat(
          "OpenPeer: device %d cannot access the peer pool's device %d (no "
          "peer access)",
          device_, *peer_device));
    }
  }

  // Regions of one allocation share its handle: each handle is opened once
  // and a region is its mapping plus the region's offset.
  ScopedDevice scoped(device_);
  if (!scoped.status().ok()) return scoped.status();
  std::vector<void*> mappings;
  std::vector<const internal::IpcRegion*> mapped;  // mapping i's first region
  for (size_t i = 0; i < parsed->regions.size(); ++i) {
    const internal::IpcRegion& region = parsed->regions[i];
    size_t m = 0;
    while (m < mapped.size() && mapped[m]->handle != region.handle) ++m;
    if (m == mapped.size()) {
      cudaIpcMemHandle_t handle{};
      std::memcpy(&handle, region.handle.data(), sizeof(handle));
      void* base = nullptr;
      const cudaError_t error =
          cudaIpcOpenMemHandle(&base, handle, cudaIpcMemLazyEnablePeerAccess);
      if (error != cudaSuccess) {
        cudaGetLastError();
        for (void* opened : mappings) cudaIpcCloseMemHandle(opened);
        const absl::Status cause = CudaStatus(
            error,
            absl::StrFormat("cudaIpcOpenMemHandle of peer region %d", i));
        return absl::UnavailableError(absl::StrFormat(
            "OpenPeer: %s (the exporter (pid %d) freed its pool or exited, or "
            "CUDA IPC is not available between these processes)",
            cause.message(), parsed->pid));
      }
      mappings.push_back(base);
      mapped.push_back(&region);
    } else if (mapped[m]->allocation_bytes != region.allocation_bytes ||
               mapped[m]->address - mapped[m]->offset !=
                   region.address - region.offset) {
      for (void* opened : mappings) cudaIpcCloseMemHandle(opened);
      return absl::InvalidArgumentError(absl::StrFormat(
          "OpenPeer: peer regions %d and %d carry one IPC handle but name "
          "different allocations",
          mapped[m] - parsed->regions.data(), i));
    }
    peer.bases.push_back(static_cast<std::byte*>(mappings[m]) + region.offset);
  }
  return std::make_unique<CudaPeerPool>(queue_, std::move(local),
                                        std::move(peer), std::move(mappings));
}

}  // namespace flowkv::cuda
