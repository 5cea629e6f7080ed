// SPDX-License-Identifier: Apache-2.0
// RegionTable: the memory regions an engine registered, their UCX handles
// and packed remote keys, how many unfinished transfers use each, and the
// one bounds check that every op (and KvTransfer's pools) goes through.
//
// It calls no UCX function: registering and unmapping are memory.cc's.
//
// Thread safety: thread-safe.

#ifndef FLOWKV_LIB_ENGINE_REGION_TABLE_H_
#define FLOWKV_LIB_ENGINE_REGION_TABLE_H_

#include <cstdint>
#include <string>
#include <ucp/api/ucp.h>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "flowkv/transfer_engine.h"
#include "lib/engine/wireup/wire_format.h"

namespace flowkv::internal {

// A region of this engine.
struct LocalRegion {
  RegionInfo info;
  ucp_mem_h memh = nullptr;
  std::string rkey;      // packed remote key
  int active_users = 0;  // unfinished transfers using the region
};

// OK when [offset, offset + length) lies inside a region of `region_bytes`
// (without wrapping); OutOfRange naming `what`, the op, the region and the
// sizes otherwise.
absl::Status CheckRange(std::string_view what, size_t op_index,
                        std::string_view region_name, uint64_t offset,
                        uint64_t length, uint64_t region_bytes);

// The region with `id` in `regions`, or nullptr.
const RegionInfo* FindRegion(absl::Span<const RegionInfo> regions, RegionId id);

class RegionTable {
 public:
  // Adds `region` under the next id (ids are never reused); returns it.
  RegionId Add(LocalRegion region);
  // Removes an unused region and returns it: NotFound for an unknown id,
  // FailedPrecondition while a transfer uses it.
  absl::StatusOr<LocalRegion> Remove(RegionId id);
  // Removes every region (engine shutdown) and returns them.
  std::vector<LocalRegion> Clear();

  std::vector<RegionInfo> List() const;  // by id
  std::vector<WireRegion> Wire() const;  // for the handshake
  uint64_t total_bytes() const;

  // Checks the local side of every op of a Write (write = true: src) or
  // Read (dst) and the remote side against `remote` (the peer's regions);
  // on success adds one user to each local region touched, appends them to
  // `used` and returns the ops' total bytes. InvalidArgument (unknown
  // region, zero length) or OutOfRange (see CheckRange) naming the op.
  absl::StatusOr<uint64_t> Acquire(
      std::string_view what, bool write, absl::Span<const TransferOp> ops,
      PeerId peer, const absl::flat_hash_map<RegionId, RegionInfo>& remote,
      std::vector<RegionId>* used);
  // Adds one user to each of `regions` (distinct) and appends them to
  // `used`: FailedPrecondition naming the first that is no longer
  // registered (then nothing is added).
  absl::Status AcquireRegions(std::string_view what,
                              absl::Span<const RegionId> regions,
                              std::vector<RegionId>* used);
  // Drops the users Acquire added.
  void Release(absl::Span<const RegionId> used);

  // Base address and memory handle of a region in use (Acquire'd).
  struct Mapping {
    char* base = nullptr;  // null for an unknown region
    ucp_mem_h memh = nullptr;
    uint64_t length = 0;
    MemoryKind kind = MemoryKind::kHost;
  };
  Mapping Lookup(RegionId id) const;

  // Where [offset, offset + length) of region `id` starts, for bytes a peer
  // sends or asks for: NotFound for an unknown region, OutOfRange (see
  // CheckRange) outside it.
  absl::StatusOr<char*> Resolve(std::string_view what, RegionId id,
                                uint64_t offset, uint64_t length) const;

 private:
  mutable absl::Mutex mu_;
  RegionId next_id_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<RegionId, LocalRegion> regions_ ABSL_GUARDED_BY(mu_);
};

}  // namespace flowkv::internal

#endif  // FLOWKV_LIB_ENGINE_REGION_TABLE_H_
