// SPDX-License-Identifier: Apache-2.0
// PreparedTransfer: a Write or Read whose ops a TransferEngine checked once
// (TransferEngine::PrepareWrite / PrepareRead) and that it may post many
// times (TransferEngine::Post): an engine's repeated copies of the same
// runs — a layer's K and V blocks every step, a fixed staging layout —
// pay for planning and checking once.
//
//   absl::StatusOr<flowkv::PreparedTransfer> layer =
//       engine->PrepareWrite(peer, ops);   // checked here, once
//   if (!layer.ok()) ...                   // the errors Write would give
//   for (...) {
//     flowkv::TransferHandle h = engine->Post(*layer, {.notification = n});
//     ...
//   }
//
// A PreparedTransfer holds the ops (copied), their peer, the local regions
// they touch and their byte count; Post checks only that those regions are
// still registered and the peer still connected, so it costs O(regions),
// not O(ops). It stays valid as long as that holds: after
// DeregisterMemory of one of its local regions, or once its peer
// disconnected, Post refuses it (FailedPrecondition, Unavailable) and
// changes nothing; it never crashes. (Peers' regions are fixed per
// connection, and peer ids are never reused.)
//
// Thread safety: const methods thread-safe; the object is immutable, so
// copies may be posted from several threads at once.

#ifndef FLOWKV_PREPARED_TRANSFER_H_
#define FLOWKV_PREPARED_TRANSFER_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include "flowkv/export.h"
#include "flowkv/transfer_types.h"

namespace flowkv {

namespace internal {
struct PreparedOps;
class TransferEngineImpl;
}  // namespace internal

class FLOWKV_EXPORT PreparedTransfer {
 public:
  // Empty: Post refuses it with InvalidArgument.
  PreparedTransfer() = default;

  // False for an empty (default-constructed or moved-from) object.
  bool valid() const { return ops_ != nullptr; }
  // The peer the ops go to (0 when empty).
  PeerId peer() const;
  size_t num_ops() const;
  uint64_t bytes() const;

 private:
  friend class internal::TransferEngineImpl;
  explicit PreparedTransfer(std::shared_ptr<const internal::PreparedOps> ops)
      : ops_(std::move(ops)) {}
  std::shared_ptr<const internal::PreparedOps> ops_;
};

}  // namespace flowkv

#endif  // FLOWKV_PREPARED_TRANSFER_H_
