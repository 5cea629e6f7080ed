// SPDX-License-Identifier: Apache-2.0
// Posting: Submit (checks on the caller's thread), then on the
// progress thread posting each transfer's ops in windows of at most
// max_window_bytes, each window closed by a flush; then the notification and,
// when asked for, the peer's acknowledgement; cancel and deadlines that stop
// one transfer and fence it without touching the peer's other transfers.
// It may call UCX put/get/flush/active-message sends, the region table and
// the peer state machine (FailPeer) when a fence does not complete.
//
// Why windows: UCX copies a put inline on shared memory and queues it on
// tcp, so one huge op would hold the progress thread (no heartbeats, no
// cancels) or queue gigabytes that a cancel can no longer stop. A window's
// flush is also the fence: when it completes no byte of the window can
// still land, so an aborted transfer is reported once its outstanding flush
// completed.

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "lib/engine/fault_injection.h"
#include "lib/engine/mapped_copy.h"
#include "lib/engine/transfer_engine_impl.h"
#include "lib/engine/ucx_status.h"

namespace flowkv::internal {
namespace {

MetricsKind MetricsKindOf(TransferKind kind) {
  return kind == TransferKind::kWrite  ? MetricsKind::kWrite
         : kind == TransferKind::kRead ? MetricsKind::kRead
                                       : MetricsKind::kSend;
}

const char* KindName(TransferKind kind) {
  switch (kind) {
    case TransferKind::kWrite:
      return "Write";
    case TransferKind::kRead:
      return "Read";
    case TransferKind::kSend:
      return "Send";
  }
  return "?";
}

}  // namespace

TransferHandle TransferEngineImpl::Submit(
    TransferKind kind, PeerId peer_id, absl::Span<const TransferOp> ops,
    std::string message, TransferOptions options,
    std::shared_ptr<const PreparedOps> prepared) {
  if (prepared != nullptr) ops = prepared->ops;
  const absl::Time now = absl::Now();
  const uint64_t id = next_transfer_id_.fetch_add(1);
  const char* what = KindName(kind);
  metrics_.OnStarted();
  auto active = std::make_unique<Active>();
  uint64_t bytes = kind == TransferKind::kSend ? message.size() : 0;
  absl::Status status = [&]() -> absl::Status {
    if (kind == TransferKind::kSend && message.size() > kMaxNotificationBytes) {
      return absl::InvalidArgumentError(
          absl::StrFormat("Send: message of %d bytes exceeds the limit %d",
                          message.size(), kMaxNotificationBytes));
    }
    if (options.notification.has_value() &&
        options.notification->size() > kMaxNotificationBytes) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: notification of %d bytes exceeds the limit %d", what,
          options.notification->size(), kMaxNotificationBytes));
    }
    if (options.acknowledged && !options.notification.has_value()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: acknowledged requires a notification to acknowledge", what));
    }
    if (options.timeout.has_value() &&
        *options.timeout <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: timeout must be > 0, got %s", what,
                          absl::FormatDuration(*options.timeout)));
    }
    std::shared_ptr<const PeerView> view = peers_.FindView(peer_id);
    if (view == nullptr) {
      return absl::NotFoundError(
          absl::StrFormat("%s: no peer %d", what, peer_id));
    }
    if (!view->connected) {
      return absl::UnavailableError(absl::StrFormat(
          "%s: peer %d (%s) is disconnected (%s); connect again", what, peer_id,
          view->name, view->failure.message()));
    }
    if (kind == TransferKind::kSend) return absl::OkStatus();
    if (prepared != nullptr) {
      // Checked by Prepare against this peer's regions, which are fixed
      // per connection: only the local regions may have gone since.
      if (absl::Status s = regions_.AcquireRegions(
              what, prepared->local_regions, &active->local_regions);
          !s.ok()) {
        return s;
      }
      bytes = prepared->bytes;
      return absl::OkStatus();
    }
    absl::StatusOr<uint64_t> op_bytes =
        regions_.Acquire(what, kind == TransferKind::kWrite, ops, peer_id,
                         view->regions, &active->local_regions);
    if (!op_bytes.ok()) return op_bytes.status();
    bytes = *op_bytes;
    return absl::OkStatus();
  }();

  auto record = std::make_shared<TransferRecord>(
      id, kind == TransferKind::kSend ? 0 : ops.size(), bytes, now,
      std::move(options.on_complete), inbox_);
  if (!status.ok()) {
    metrics_.OnFinished(MetricsKindOf(kind), peer_id, false, status.code(),
                        bytes, absl::ZeroDuration());
    record->Complete(status, absl::Now());
    return TransferHandle(std::move(record));
  }
  active->record = record;
  active->kind = kind;
  active->peer = peer_id;
  if (prepared != nullptr) {
    active->prepared = std::move(prepared);
    active->ops = active->prepared->ops;
  } else {
    active->owned_ops.assign(ops.begin(), ops.end());
    active->ops = active->owned_ops;
  }
  active->notification = std::move(options.notification);
  active->acknowledged = options.acknowledged;
  active->message = std::move(message);
  active->deadline = now + options.timeout.value_or(options_.default_timeout);
  std::vector<RegionId> regions = active->local_regions;
  Active* raw = active.release();
  active_count_.fetch_add(1, std::memory_order_relaxed);
  if (!inbox_->Post(
          [this, raw] { StartTransfer(std::unique_ptr<Active>(raw)); })) {
    delete raw;
    active_count_.fetch_sub(1, std::memory_order_relaxed);
    regions_.Release(regions);
    metrics_.OnFinished(MetricsKindOf(kind), peer_id, false,
                        absl::StatusCode::kCancelled, bytes,
                        absl::ZeroDuration());
    record->Complete(absl::CancelledError("TransferEngine: shutting down"),
                     absl::Now());
  }
  return TransferHandle(std::move(record));
}

void TransferEngineImpl::FinishTransfer(uint64_t transfer_id,
                                        absl::Status status) {
  auto it = active_.find(transfer_id);
  if (it == active_.end()) return;
  std::unique_ptr<Active> active = std::move(it->second);
  active_.erase(it);
  active_count_.fetch_sub(1, std::memory_order_relaxed);
  regions_.Release(active->local_regions);
  const absl::Time now = absl::Now();
  const TransferStats stats = active->record->stats();
  metrics_.OnFinished(MetricsKindOf(active->kind), active->peer, true,
                      status.code(), stats.bytes, now - stats.submit_time);
  if (options_.on_transfer_timing) {
    const TransferTimes& t = active->times;
    options_.on_transfer_timing(TransferTiming{
        transfer_id, active->peer, stats.ops, stats.bytes, status.code(),
        stats.submit_time, t.first_op_posted, t.last_op_completed,
        t.notification_sent, t.acknowledged, now});
  }
  active->record->Complete(std::move(status), now);
}

void TransferEngineImpl::StartTransfer(std::unique_ptr<Active> owned) {
  Active* active = owned.get();
  const uint64_t id = active->record->id();
  active_[id] = std::move(owned);
  Peer* peer = peers_.Find(active->peer);
  if (stopping_) {
    FinishTransfer(id, absl::CancelledError("TransferEngine: shutting down"));
    return;
  }
  if (peer == nullptr || peer->state != PeerState::kReady || peer->stopping ||
      peer->stop_requested) {
    FinishTransfer(id, absl::UnavailableError(absl::StrFormat(
                           "peer %d is not connected%s", active->peer,
                           peer && !peer->failure.ok()
                               ? absl::StrCat(": ", peer->failure.message())
                               : "")));
    return;
  }
  if (absl::Now() >= active->deadline) {
    // Nothing was posted: the endpoint stays open.
    FinishTransfer(id, absl::DeadlineExceededError(absl::StrFormat(
                           "transfer %d to peer %d: deadline passed before "
                           "it was posted",
                           id, active->peer)));
    return;
  }
  if (active->kind == TransferKind::kSend) {
    active->record->MarkPosted(absl::Now());
    SendNotification(active, peer);
    return;
  }
  // Posted window by window from the progress loop (in this iteration,
  // after the inbox), which bounds the bytes posted per iteration.
  ready_.push_back(id);
}

void TransferEngineImpl::PostReady() {
  for (uint64_t windows = 0;
       windows < EngineInternal::kWindowsPerProgressTurn && !ready_.empty();
       ++windows) {
    const uint64_t id = ready_.front();
    ready_.pop_front();
    auto it = active_.find(id);
    if (it == active_.end()) continue;
    Active* active = it->second.get();
    // (An aborted transfer is finished by Abort / AfterFlush.)
    if (active->failing || active->flush_in_flight ||
        active->phase != TransferPhase::kPosting ||
        !active->abort_status.ok()) {
      continue;
    }
    Peer* peer = peers_.Find(active->peer);
    if (peer == nullptr || peer->state != PeerState::kReady) continue;
    PostWindow(active, peer);
  }
  ready_size_.store(ready_.size(), std::memory_order_relaxed);
}

void TransferEngineImpl::PostWindow(Active* active, Peer* peer) {
  const uint64_t id = active->record->id();
  const bool write = active->kind == TransferKind::kWrite;
  // One-sided where the endpoint has it; else the active-message data method.
  const bool rma = write ? peer->rma_put : peer->rma_get;
  const uint64_t budget = options_.max_window_bytes;
  uint64_t posted = 0;
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_MEMH;
  RegionId last_local = ~RegionId{0};
  RegionId last_remote = ~RegionId{0};
  char* local_base = nullptr;
  bool local_host = false;
  RemoteRegion* remote = nullptr;
  active->record->MarkInFlight();
  TransferTimes::Stamp(&active->times.first_op_posted);
  while (active->next_op < active->ops.size() && posted < budget) {
    const TransferOp& op = active->ops[active->next_op];
    const RegionId local_id = write ? op.src_region : op.dst_region;
    const RegionId remote_id = write ? op.dst_region : op.src_region;
    if (local_id != last_local) {
      // Cannot go away: the transfer holds a user of the region.
      const RegionTable::Mapping mapping = regions_.Lookup(local_id);
      local_base = mapping.base;
      param.memh = mapping.memh;
      local_host = mapping.kind == MemoryKind::kHost;
      last_local = local_id;
    }
    if (remote_id != last_remote) {
      auto it = peer->regions.find(remote_id);
      remote = it == peer->regions.end() ? nullptr : &it->second;
      if (remote != nullptr && rma && !remote->mapped_known) {
        remote->mapped =
            remote->info.kind == MemoryKind::kHost
                ? MappedPeerAddress(remote->rkey, remote->info.base)
                : nullptr;
        remote->mapped_known = true;
      }
      last_remote = remote_id;
    }
    if (remote == nullptr || local_base == nullptr) {
      // Validated by Submit against the same handshake; cannot happen.
      FinishTransfer(id, absl::InternalError("a region vanished"));
      return;
    }
    const uint64_t part =
        std::min(op.length - active->op_posted, budget - posted);
    const uint64_t local_offset =
        (write ? op.src_offset : op.dst_offset) + active->op_posted;
    const uint64_t remote_offset =
        (write ? op.dst_offset : op.src_offset) + active->op_posted;
    if (!rma) {
      const bool posted_ok =
          write ? PostDataMessage(peer, op, active->op_posted, part,
                                  local_base + local_offset)
                : PostReadRequest(active, peer, op, active->op_posted, part);
      if (!posted_ok) return;  // the peer is failing
    } else {
      const ucs_status_t injected =
          FaultInjector::Inject(write ? FaultPoint::kPut : FaultPoint::kGet);
      // A mapped peer region: copied here (mapped_copy.h). The window's
      // flush below still fences it like a put.
      char* const mapped = local_host && remote->mapped != nullptr
                               ? remote->mapped + remote_offset
                               : nullptr;
      if (injected == UCS_OK && mapped != nullptr) {
        if (write) {
          CopyToMapped(mapped, local_base + local_offset, part);
        } else {
          CopyToMapped(local_base + local_offset, mapped, part);
        }
      }
      ucs_status_ptr_t request =
          injected != UCS_OK  ? UCS_STATUS_PTR(injected)
          : mapped != nullptr ? nullptr
          : write ? ucp_put_nbx(peer->ep, local_base + local_offset, part,
                                remote->info.base + remote_offset, remote->rkey,
                                &param)
                  : ucp_get_nbx(peer->ep, local_base + local_offset, part,
                                remote->info.base + remote_offset, remote->rkey,
                                &param);
      if (UCS_PTR_IS_ERR(request)) {
        const absl::Status status = UcxStatus(
            UCS_PTR_STATUS(request),
            absl::StrFormat("transfer %d: posting %s to peer %d", id,
                            write ? "ucp_put_nbx" : "ucp_get_nbx", peer->id));
        FailPeer(peer, status, id, absl::UnavailableError(status.message()));
        return;
      }
      if (request != nullptr) ucp_request_free(request);
    }
    posted += part;
    iteration_posted_ += part;
    active->op_posted += part;
    if (active->op_posted == op.length) {
      ++active->next_op;
      active->op_posted = 0;
    }
  }
  metrics_.OnWindowPosted();
  if (!rma && !write && posted > 0) {
    // The window ends when every reply arrived (HandleReadData).
    active->flush_in_flight = true;
    if (active->next_op == active->ops.size()) {
      active->record->MarkPosted(absl::Now());
    }
    return;
  }
  PostFlush(active, peer);
}

void TransferEngineImpl::PostFlush(Active* active, Peer* peer) {
  const uint64_t id = active->record->id();
  auto* ctx = new RequestContext{this, id, peer->id, {}, {}};
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  param.cb.send = &TransferEngineImpl::OnFlushDone;
  param.user_data = ctx;
  active->flush_in_flight = true;
  const ucs_status_t injected = FaultInjector::Inject(FaultPoint::kFlush);
  ucs_status_ptr_t request = injected != UCS_OK
                                 ? UCS_STATUS_PTR(injected)
                                 : ucp_ep_flush_nbx(peer->ep, &param);
  if (active->next_op == active->ops.size()) {
    active->record->MarkPosted(absl::Now());
  }
  if (UCS_PTR_IS_PTR(request)) return;
  delete ctx;
  AfterFlush(id, peer->id, UCS_PTR_STATUS(request));
}

void TransferEngineImpl::OnFlushDone(void* request, ucs_status_t status,
                                     void* user_data) {
  const CompletedRequest done = ReleaseRequest(request, user_data);
  done.engine->AfterFlush(done.transfer_id, done.peer, status);
}

void TransferEngineImpl::AfterFlush(uint64_t id, PeerId peer_id,
                                    ucs_status_t status) {
  auto it = active_.find(id);
  if (it == active_.end()) return;
  Active* active = it->second.get();
  active->flush_in_flight = false;
  if (active->failing) return;  // reported once the endpoint closed
  Peer* peer = peers_.Find(peer_id);
  if (status != UCS_OK || peer == nullptr) {
    // UCX cancels (UCS_ERR_CANCELED) the flush of an endpoint it found
    // broken: the peer failed, which is Unavailable for this and every other
    // transfer to it (a local Cancel() or Disconnect() marks them failing
    // first and never gets here).
    const absl::Status failure = absl::UnavailableError(
        UcxStatus(status == UCS_OK ? UCS_ERR_CONNECTION_RESET : status,
                  absl::StrFormat("transfer %d: flush to peer %d", id, peer_id))
            .message());
    const absl::Status transfer_status =
        active->abort_status.ok() ? failure : active->abort_status;
    FailPeer(peer, failure, id, transfer_status);
    return;
  }
  if (!active->abort_status.ok()) {
    FinishAborted(active);
    return;
  }
  if (active->next_op < active->ops.size()) {
    ready_.push_back(id);
    return;
  }
  TransferTimes::Stamp(&active->times.last_op_completed);
  if (active->notification.has_value()) {
    SendNotification(active, peer);
  } else {
    FinishTransfer(id, absl::OkStatus());
  }
}

void TransferEngineImpl::SendNotification(Active* active, Peer* peer) {
  const uint64_t id = active->record->id();
  const bool message = active->kind == TransferKind::kSend;
  active->phase = TransferPhase::kNotifying;
  auto* ctx = new RequestContext{
      this,
      id,
      peer->id,
      message ? std::move(active->message) : *std::move(active->notification),
      EncodeAmHeader({peer->remote_conn_id, active->acknowledged ? id : 0}),
      {}};
  const ucs_status_t status =
      SendAm(peer, message ? kAmMessage : kAmNotify, ctx, ctx->header.data(),
             ctx->header.size(), ctx->payload.data(), ctx->payload.size(),
             &TransferEngineImpl::OnSendDone, UCP_AM_SEND_FLAG_EAGER);
  if (status != UCS_INPROGRESS) AfterNotification(id, peer->id, status);
}

void TransferEngineImpl::OnSendDone(void* request, ucs_status_t status,
                                    void* user_data) {
  const CompletedRequest done = ReleaseRequest(request, user_data);
  // Control messages (id 0): failures reach the peer's error handler.
  if (done.transfer_id != 0) {
    done.engine->AfterNotification(done.transfer_id, done.peer, status);
  }
}

void TransferEngineImpl::AfterNotification(uint64_t id, PeerId peer_id,
                                           ucs_status_t status) {
  auto it = active_.find(id);
  if (it == active_.end() || it->second->failing) return;
  Active* active = it->second.get();
  if (status != UCS_OK) {
    const absl::Status failure = UcxStatus(
        status,
        absl::StrFormat("transfer %d: notification to peer %d", id, peer_id));
    FailPeer(peers_.Find(peer_id), failure, id,
             absl::UnavailableError(failure.message()));
    return;
  }
  TransferTimes::Stamp(&active->times.notification_sent);
  if (active->acknowledged) {
    active->phase = TransferPhase::kAwaitingAck;
    return;
  }
  FinishTransfer(id, absl::OkStatus());
}

void TransferEngineImpl::HandleAck(Peer* peer, uint64_t transfer_id,
                                   absl::Status status) {
  auto it = active_.find(transfer_id);
  if (it == active_.end()) return;
  Active* active = it->second.get();
  // Only the peer the transfer went to can acknowledge it.
  if (active->peer != peer->id || active->failing) return;
  if (active->phase == TransferPhase::kFencing) {
    FinishTransfer(transfer_id, active->abort_status);  // the fence held
    return;
  }
  // An ack may overtake the local send completion of its notification.
  if (!active->acknowledged || active->phase == TransferPhase::kPosting) {
    return;
  }
  TransferTimes::Stamp(&active->times.notification_sent);
  TransferTimes::Stamp(&active->times.acknowledged);
  if (!status.ok()) {
    status = absl::Status(
        status.code(),
        absl::StrFormat("transfer %d: peer %d (%s) refused the notification: "
                        "%s",
                        transfer_id, peer->id, peer->name, status.message()));
  }
  FinishTransfer(transfer_id, std::move(status));
}

void TransferEngineImpl::Abort(Active* active, absl::Status status,
                               absl::Time now) {
  if (active->failing || !active->abort_status.ok()) return;
  const uint64_t id = active->record->id();
  if (active->phase == TransferPhase::kAwaitingAck ||
      active->phase == TransferPhase::kNotifying) {
    // Every byte was written and flushed; the notification is on its way:
    // nothing to fence.
    FinishTransfer(id, std::move(status));
    return;
  }
  active->abort_status = std::move(status);
  // A fence (the outstanding window, then over active messages the fence
  // message) that does not complete in time fails the peer.
  active->fence_deadline = now + options_.peer_failure_timeout;
  if (!active->flush_in_flight) FinishAborted(active);
  // Else AfterFlush (or the last Read reply) continues.
}

void TransferEngineImpl::FinishAborted(Active* active) {
  const uint64_t id = active->record->id();
  Peer* peer = peers_.Find(active->peer);
  const bool posted_any = active->next_op > 0 || active->op_posted > 0;
  if (active->kind == TransferKind::kWrite && peer != nullptr &&
      !peer->rma_put && posted_any &&
      active->phase != TransferPhase::kFencing) {
    // A flushed message may still wait in the peer's queue: the peer
    // acknowledges the fence after it handled everything sent before it.
    active->phase = TransferPhase::kFencing;
    SendControl(peer, kAmFence, {peer->remote_conn_id, id}, {}, false);
    return;
  }
  FinishTransfer(id, active->abort_status);
}

void TransferEngineImpl::HandleCancel(
    const std::shared_ptr<TransferRecord>& record) {
  auto it = active_.find(record->id());
  if (it == active_.end()) return;
  Active* active = it->second.get();
  Abort(active,
        absl::CancelledError(absl::StrFormat("transfer %d to peer %d cancelled",
                                             record->id(), active->peer)),
        absl::Now());
}

}  // namespace flowkv::internal
