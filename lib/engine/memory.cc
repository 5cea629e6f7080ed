// SPDX-License-Identifier: Apache-2.0
// Memory registration: RegisterMemory, AllocateMemory and DeregisterMemory,
// with the checks that keep bad sizes and addresses from UCX (the range is
// mapped; an allocation fits the engine's cap and, when shared memory backs
// it, the shared-memory file system). It may call UCX memory mapping and
// the region table.

#include <cinttypes>
#include <cstdio>
#include <fstream>
#include <string>
#include <sys/statvfs.h>
#include <unistd.h>
#include <vector>

#include "absl/strings/str_format.h"
#include "lib/engine/fault_injection.h"
#include "lib/engine/transfer_engine_impl.h"
#include "lib/engine/ucx_status.h"

namespace flowkv::internal {
namespace {

// Where UCX's posix transport creates its shared-memory files.
constexpr char kShmDir[] = "/dev/shm";

// OK when every byte of [base, base + length) lies in a readable mapping
// of this process (/proc/self/maps; reserved PROT_NONE ranges do not
// count), so UCX never registers or reads memory that is not there.
absl::Status CheckMapped(const void* base, uint64_t length) {
  const uint64_t start = reinterpret_cast<uint64_t>(base);
  uint64_t end = 0;
  if (__builtin_add_overflow(start, length, &end)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "RegisterMemory: [%p, +%d) wraps the address space", base, length));
  }
  std::ifstream maps("/proc/self/maps");
  if (!maps) return absl::OkStatus();  // cannot tell: let UCX decide
  // The maps are sorted by address: walk them, extending the covered
  // prefix [start, covered).
  uint64_t covered = start;
  std::string line;
  while (covered < end && std::getline(maps, line)) {
    uint64_t low = 0;
    uint64_t high = 0;
    char perms[5] = {0};
    if (std::sscanf(line.c_str(), "%" SCNx64 "-%" SCNx64 " %4s", &low, &high,
                    perms) != 3) {
      continue;
    }
    if (high <= covered) continue;
    if (low > covered || perms[0] != 'r') break;  // a hole or unreadable
    covered = high;
  }
  if (covered < end) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "RegisterMemory: [%p, +%d) is not readable memory of this process "
        "(from %#x on it is unmapped or inaccessible)",
        base, length, covered));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<RegionId> TransferEngineImpl::RegisterMemory(
    void* base, uint64_t length, MemoryKind kind, bool allocate,
    void** allocated_base) {
  const char* what = allocate ? "AllocateMemory" : "RegisterMemory";
  if (length == 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: length must be > 0", what));
  }
  if (!allocate && base == nullptr) {
    return absl::InvalidArgumentError("RegisterMemory: base is null");
  }
  if (kind != MemoryKind::kHost && kind != MemoryKind::kCudaDevice) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: unknown memory kind %d", what, static_cast<int>(kind)));
  }
  if (kind == MemoryKind::kCudaDevice && !worker_->cuda_supported()) {
    return absl::UnimplementedError(absl::StrFormat(
        "%s: CUDA device memory needs a UCX built with CUDA support (this "
        "UCX context reports no CUDA memory type; `ucx_info -d` lists no "
        "cuda_copy / cuda_ipc transports). Without one, give KvTransfer a "
        "flowkv::cuda::CudaPoolMemory (flowkv/kv_pool_memory.h): GPU pools "
        "then move through CUDA IPC or host staging; see docs/gpu.md",
        what));
  }
  if (kind == MemoryKind::kHost && !allocate) {
    if (absl::Status s = CheckMapped(base, length); !s.ok()) return s;
  }
  if (options_.max_registered_bytes != 0 &&
      length >
          options_.max_registered_bytes -
              std::min(regions_.total_bytes(), options_.max_registered_bytes)) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "%s: %d bytes would pass the engine's max_registered_bytes %d (%d "
        "registered)",
        what, length, options_.max_registered_bytes, regions_.total_bytes()));
  }
  if (kind == MemoryKind::kHost && allocate) {
    const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
    const uint64_t physical =
        static_cast<uint64_t>(sysconf(_SC_PHYS_PAGES)) * page;
    if (length > physical) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "AllocateMemory: %d bytes exceed this machine's %d bytes of memory",
          length, physical));
    }
    struct statvfs fs {};
    if (worker_->shared_memory() && statvfs(kShmDir, &fs) == 0) {
      const uint64_t available = uint64_t{fs.f_bavail} * fs.f_frsize;
      if (length > available) {
        return absl::ResourceExhaustedError(absl::StrFormat(
            "AllocateMemory: %d bytes do not fit the %d bytes free in %s, "
            "which backs engine memory when a shared-memory transport is "
            "enabled",
            length, available, kShmDir));
      }
    }
  }
  return RunSync<absl::StatusOr<RegionId>>([&]() -> absl::StatusOr<RegionId> {
    ucp_context_h context = worker_->context();
    ucp_mem_map_params_t params{};
    params.field_mask =
        UCP_MEM_MAP_PARAM_FIELD_LENGTH | UCP_MEM_MAP_PARAM_FIELD_MEMORY_TYPE;
    params.length = length;
    params.memory_type = kind == MemoryKind::kCudaDevice ? UCS_MEMORY_TYPE_CUDA
                                                         : UCS_MEMORY_TYPE_HOST;
    if (allocate) {
      params.field_mask |= UCP_MEM_MAP_PARAM_FIELD_FLAGS;
      params.flags = UCP_MEM_MAP_ALLOCATE;
    } else {
      params.field_mask |= UCP_MEM_MAP_PARAM_FIELD_ADDRESS;
      params.address = base;
    }
    ucp_mem_h memh = nullptr;
    ucs_status_t mapped = FaultInjector::Inject(FaultPoint::kMemMap);
    if (mapped == UCS_OK) mapped = ucp_mem_map(context, &params, &memh);
    if (absl::Status s = UcxStatus(
            mapped,
            absl::StrFormat("%s: ucp_mem_map of %d bytes", what, length));
        !s.ok()) {
      return s;
    }
    void* address = base;
    if (allocate) {
      ucp_mem_attr_t attr{};
      attr.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS | UCP_MEM_ATTR_FIELD_LENGTH;
      if (absl::Status s = UcxStatus(ucp_mem_query(memh, &attr),
                                     "AllocateMemory: ucp_mem_query");
          !s.ok()) {
        ucp_mem_unmap(context, memh);
        return s;
      }
      address = attr.address;
    }
    void* rkey_buffer = nullptr;
    size_t rkey_size = 0;
    if (absl::Status s =
            UcxStatus(ucp_rkey_pack(context, memh, &rkey_buffer, &rkey_size),
                      "ucp_rkey_pack");
        !s.ok()) {
      ucp_mem_unmap(context, memh);
      return s;
    }
    LocalRegion region;
    region.info.kind = kind;
    region.info.base = reinterpret_cast<uint64_t>(address);
    region.info.length = length;
    region.memh = memh;
    region.rkey.assign(static_cast<const char*>(rkey_buffer), rkey_size);
    ucp_rkey_buffer_release(rkey_buffer);
    const RegionId id = regions_.Add(std::move(region));
    if (allocated_base != nullptr) *allocated_base = address;
    return id;
  });
}

absl::Status TransferEngineImpl::DeregisterMemory(RegionId region) {
  return RunSync<absl::Status>([&]() -> absl::Status {
    absl::StatusOr<LocalRegion> removed = regions_.Remove(region);
    if (!removed.ok()) return removed.status();
    return UcxStatus(ucp_mem_unmap(worker_->context(), removed->memh),
                     "ucp_mem_unmap");
  });
}

}  // namespace flowkv::internal
