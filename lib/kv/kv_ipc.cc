// SPDX-License-Identifier: Apache-2.0
// KvTransfer's IPC path (see kv_transfer_impl.h and docs/gpu.md "Paths"):
// a Send or Fetch to a peer whose pool this process opened (KvPeerPool)
// copies the planned runs straight between the pools, then sends the data
// notice (push) or counts the piece and releases the peer's blocks (pull).
// Calls the opened peer pool and the engine's public API.
#include <utility>

#include "absl/strings/str_format.h"
#include "lib/common/tsan_lock.h"
#include "lib/kv/kv_notice.h"
#include "lib/kv/kv_transfer_impl.h"

namespace flowkv {

using internal::KvNotice;
using internal::TsanMutexLock;

TransferHandle KvTransfer::Impl::IpcSendOrFetch(
    internal::KvDirection direction, PeerId peer, const PeerPoolInfo& pool,
    const std::vector<TransferOp>& ops, KvNotice notice, const KvPiece& r) {
  std::vector<TransferOp> copies;
  copies.reserve(ops.size());
  uint64_t bytes = 0;
  for (const TransferOp& op : ops) {
    copies.push_back({.src_region = op.src_region,
                      .src_offset = op.src_offset,
                      .dst_region = op.dst_region,
                      .dst_offset = op.dst_offset,
                      .length = op.length});
    bytes += op.length;
  }
  // The notice's Write, once posted: Cancel reaches it.
  struct IpcState {
    absl::Mutex mu;
    bool cancelled ABSL_GUARDED_BY(mu) = false;
    TransferHandle write ABSL_GUARDED_BY(mu);
  };
  auto state = std::make_shared<IpcState>();
  auto started =
      internal::LocalTransfer::Start(ops.size(), bytes, absl::Now(), [state] {
        TsanMutexLock lock(&state->mu);
        state->cancelled = true;
        state->write.Cancel();
      });
  const internal::LocalTransfer record = started.first;
  TransferHandle handle = std::move(started.second);
  ipc_copies_.fetch_add(copies.size());
  std::shared_ptr<Impl> self = shared_from_this();
  const bool push = direction == internal::KvDirection::kSend;
  auto done = [self, push, peer, record, state, notice = std::move(notice),
               timeout = r.timeout](absl::Status s) {
    bool cancelled = false;
    {
      TsanMutexLock lock(&state->mu);
      cancelled = state->cancelled;
    }
    if (s.ok() && cancelled) {
      s = absl::CancelledError(absl::StrFormat(
          "KvTransfer: request '%s' cancelled", notice.request_id));
    }
    if (!push) {
      self->FetchDone(peer, notice, s);
      record.Complete(s, absl::Now());
      return;
    }
    if (!s.ok()) {
      self->PieceFailed(internal::KvDirection::kSend, peer, notice.request_id,
                        notice.sender_rank, notice.num_senders, s);
      record.Complete(s, absl::Now());
      return;
    }
    TransferOptions options;
    options.notification = internal::EncodeKvNotice(notice);
    options.acknowledged = true;
    options.timeout = timeout;
    options.on_complete = [self, peer, record, notice](
                              const absl::Status& status,
                              const TransferStats&) {
      if (!status.ok()) {
        self->PieceFailed(internal::KvDirection::kSend, peer, notice.request_id,
                          notice.sender_rank, notice.num_senders, status);
      }
      record.Complete(status, absl::Now());
    };
    TransferHandle write = self->engine_->Write(peer, {}, std::move(options));
    TsanMutexLock lock(&state->mu);
    if (state->cancelled) write.Cancel();
    state->write = std::move(write);
  };
  if (push) {
    pool.ipc->CopyTo(std::move(copies), r.ready_event, std::move(done));
  } else {
    pool.ipc->CopyFrom(std::move(copies), std::move(done));
  }
  return handle;
}

}  // namespace flowkv
