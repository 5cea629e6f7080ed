// SPDX-License-Identifier: Apache-2.0
// Prepared transfers (include/flowkv/prepared_transfer.h): Prepare checks a
// Write's or Read's ops once, as Submit would, and keeps them with the
// local regions they touch; Post hands them to Submit, which then checks
// only those regions and the peer. Calls the region table and Submit
// (posting.cc).
#include <atomic>
#include <utility>

#include "absl/strings/str_format.h"
#include "flowkv/prepared_transfer.h"
#include "flowkv/transfer_engine.h"
#include "lib/engine/transfer_engine_impl.h"

namespace flowkv {
namespace internal {

uint64_t NextEngineSerial() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

absl::StatusOr<PreparedTransfer> TransferEngineImpl::Prepare(
    TransferKind kind, PeerId peer, absl::Span<const TransferOp> ops) {
  const char* what =
      kind == TransferKind::kWrite ? "PrepareWrite" : "PrepareRead";
  std::shared_ptr<const PeerView> view = peers_.FindView(peer);
  if (view == nullptr) {
    return absl::NotFoundError(absl::StrFormat("%s: no peer %d", what, peer));
  }
  if (!view->connected) {
    return absl::UnavailableError(
        absl::StrFormat("%s: peer %d (%s) is disconnected (%s); connect again",
                        what, peer, view->name, view->failure.message()));
  }
  auto prepared = std::make_shared<PreparedOps>();
  absl::StatusOr<uint64_t> bytes =
      regions_.Acquire(what, kind == TransferKind::kWrite, ops, peer,
                       view->regions, &prepared->local_regions);
  if (!bytes.ok()) return bytes.status();
  regions_.Release(prepared->local_regions);
  prepared->engine_serial = serial_;
  prepared->kind = kind;
  prepared->peer = peer;
  prepared->ops.assign(ops.begin(), ops.end());
  prepared->bytes = *bytes;
  return PreparedTransfer(std::move(prepared));
}

TransferHandle TransferEngineImpl::Post(const PreparedTransfer& prepared,
                                        TransferOptions options) {
  const PreparedOps* ops = prepared.ops_.get();
  if (ops == nullptr || ops->engine_serial != serial_) {
    auto record = std::make_shared<TransferRecord>(
        next_transfer_id_.fetch_add(1), 0, 0, absl::Now(),
        std::move(options.on_complete), inbox_);
    record->Complete(
        absl::InvalidArgumentError(
            ops == nullptr ? "Post: the PreparedTransfer is empty (default-"
                             "constructed or moved from)"
                           : "Post: the PreparedTransfer was prepared by "
                             "another TransferEngine"),
        absl::Now());
    return TransferHandle(std::move(record));
  }
  return Submit(ops->kind, ops->peer, {}, {}, std::move(options),
                prepared.ops_);
}

}  // namespace internal

PeerId PreparedTransfer::peer() const { return ops_ ? ops_->peer : 0; }
size_t PreparedTransfer::num_ops() const { return ops_ ? ops_->ops.size() : 0; }
uint64_t PreparedTransfer::bytes() const { return ops_ ? ops_->bytes : 0; }

absl::StatusOr<PreparedTransfer> TransferEngine::PrepareWrite(
    PeerId peer, absl::Span<const TransferOp> ops) {
  return impl_->Prepare(internal::TransferKind::kWrite, peer, ops);
}
absl::StatusOr<PreparedTransfer> TransferEngine::PrepareRead(
    PeerId peer, absl::Span<const TransferOp> ops) {
  return impl_->Prepare(internal::TransferKind::kRead, peer, ops);
}
TransferHandle TransferEngine::Post(const PreparedTransfer& prepared,
                                    TransferOptions options) {
  return impl_->Post(prepared, std::move(options));
}

}  // namespace flowkv
