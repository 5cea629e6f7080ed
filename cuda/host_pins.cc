// SPDX-License-Identifier: Apache-2.0
// HostPins (cuda/host_pins.h): lazy page-locking of host ranges.

#include "cuda/host_pins.h"

#include <cuda_runtime_api.h>
#include <unistd.h>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "cuda/cuda_status.h"
#include "lib/common/tsan_lock.h"

namespace flowkv::cuda::internal {
namespace {

using ::flowkv::internal::CudaStatus;
using ::flowkv::internal::TsanMutexLock;

// What CUDA knows of `address`: page-locked or registered host memory
// (true), ordinary host memory (false), or an error for device and managed
// memory.
absl::StatusOr<bool> IsPageLocked(uintptr_t address) {
  cudaPointerAttributes attributes{};
  const cudaError_t error = cudaPointerGetAttributes(
      &attributes, reinterpret_cast<const void*>(address));
  if (error != cudaSuccess) {
    return CudaStatus(error, "cudaPointerGetAttributes(host copy)");
  }
  switch (attributes.type) {
    case cudaMemoryTypeHost:
      return true;
    case cudaMemoryTypeUnregistered:
      return false;
    default:
      return absl::InvalidArgumentError(absl::StrFormat(
          "host pointer %p of a copy is device or managed memory (CUDA memory "
          "type %d); Gather and Scatter copy between the pool and host memory",
          reinterpret_cast<const void*>(address),
          static_cast<int>(attributes.type)));
  }
}

}  // namespace

HostPins::~HostPins() {
  TsanMutexLock lock(&mu_);
  for (const auto& [start, end] : registered_) {
    cudaHostUnregister(reinterpret_cast<void*>(start));
  }
}

absl::Status HostPins::Pin(const void* data, uint64_t length) {
  if (length == 0) return absl::OkStatus();
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(data) & ~(page - 1);
  const uintptr_t end =
      (reinterpret_cast<uintptr_t>(data) + length + page - 1) & ~(page - 1);

  TsanMutexLock lock(&mu_);
  // The gaps of [begin, end) between earlier registrations.
  std::vector<std::pair<uintptr_t, uintptr_t>> gaps;
  uintptr_t cursor = begin;
  auto it = registered_.upper_bound(begin);
  if (it != registered_.begin()) {
    auto previous = std::prev(it);
    if (previous->second > cursor) cursor = previous->second;
  }
  for (; it != registered_.end() && it->first < end && cursor < end; ++it) {
    if (it->first > cursor) gaps.emplace_back(cursor, it->first);
    cursor = std::max(cursor, it->second);
  }
  if (cursor < end) gaps.emplace_back(cursor, end);

  for (const auto& [gap_begin, gap_end] : gaps) {
    absl::StatusOr<bool> locked = IsPageLocked(gap_begin);
    if (!locked.ok()) return locked.status();
    if (*locked) continue;  // someone else's page-locked memory
    const cudaError_t error =
        cudaHostRegister(reinterpret_cast<void*>(gap_begin),
                         gap_end - gap_begin, cudaHostRegisterPortable);
    if (error == cudaErrorHostMemoryAlreadyRegistered) {
      // Part of the gap is someone else's registration: copies still work
      // (partly synchronously).
      cudaGetLastError();
      continue;
    }
    if (error != cudaSuccess) {
      return CudaStatus(
          error, absl::StrFormat("cudaHostRegister of host range [%p, +%d) "
                                 "(the staging memory of a copy)",
                                 reinterpret_cast<const void*>(gap_begin),
                                 gap_end - gap_begin));
    }
    registered_.emplace(gap_begin, gap_end);
  }
  return absl::OkStatus();
}

}  // namespace flowkv::cuda::internal
