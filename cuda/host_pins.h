// SPDX-License-Identifier: Apache-2.0
// HostPins: the host pages a CudaPoolMemory page-locked (cudaHostRegister)
// so that its copies to and from caller-allocated host memory (KvTransfer's
// staging ring) run asynchronously. Private to flowkv_cuda.
//
// Pin() makes sure every page of a range is page-locked: ranges this object
// registered earlier are skipped, memory page-locked by someone else
// (cudaHostAlloc, the caller's cudaHostRegister) is used as it is, and the
// rest is registered (portable: usable from every device) in gaps between
// earlier registrations. The destructor unregisters what Pin registered.
//
// Thread safety: thread-safe.

#ifndef FLOWKV_CUDA_HOST_PINS_H_
#define FLOWKV_CUDA_HOST_PINS_H_

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace flowkv::cuda::internal {

class HostPins {
 public:
  HostPins() = default;
  // REQUIRES: no copy touching the pinned pages is in flight, and the
  // device the pages were registered from is current or the registrations
  // were portable (they are).
  ~HostPins();
  HostPins(const HostPins&) = delete;
  HostPins& operator=(const HostPins&) = delete;

  // Page-locks [data, data + length). InvalidArgument when the range is
  // device memory; CUDA's errors from cudaHostRegister (a range that is not
  // mapped: InvalidArgument).
  // REQUIRES: the pool's device is current; the range stays mapped until
  // this object is destroyed.
  absl::Status Pin(const void* data, uint64_t length);

 private:
  absl::Mutex mu_;
  // Registrations made by Pin: start address -> end address (page aligned,
  // disjoint).
  absl::btree_map<uintptr_t, uintptr_t> registered_ ABSL_GUARDED_BY(mu_);
};

}  // namespace flowkv::cuda::internal

#endif  // FLOWKV_CUDA_HOST_PINS_H_
