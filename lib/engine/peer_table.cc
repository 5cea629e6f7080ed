// SPDX-License-Identifier: Apache-2.0
// The peer state machine: PeerTable's bookkeeping, and the engine's side of
// failing, closing and disconnecting peers. It may call UCX endpoint close,
// posting's FinishTransfer and the notification delivery.

#include "lib/engine/peer_table.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "lib/common/tsan_lock.h"
#include "lib/engine/transfer_engine_impl.h"
#include "lib/engine/ucx_status.h"

namespace flowkv::internal {

// --- PeerTable ---------------------------------------------------------------

Peer* PeerTable::Add(std::unique_ptr<Peer> peer) {
  Peer* raw = peer.get();
  wire_ids_[raw->wire_id] = raw->id;
  peers_[raw->id] = std::move(peer);
  return raw;
}

Peer* PeerTable::FindByWireId(uint64_t wire_id) const {
  auto it = wire_ids_.find(wire_id);
  return it == wire_ids_.end() ? nullptr : Find(it->second);
}

Peer* PeerTable::Find(PeerId id) const {
  auto it = peers_.find(id);
  return it == peers_.end() ? nullptr : it->second.get();
}

void PeerTable::Erase(PeerId id) {
  auto it = peers_.find(id);
  if (it == peers_.end()) return;
  accepting_.erase(it->second->ep);
  wire_ids_.erase(it->second->wire_id);
  peers_.erase(it);
}

void PeerTable::Publish(const Peer& peer) {
  if (!peer.was_ready) return;
  auto view = std::make_shared<PeerView>();
  view->name = peer.name;
  view->connected =
      peer.state == PeerState::kReady && !peer.stopping && !peer.stop_requested;
  view->write_method =
      peer.rma_put ? PeerDataMethod::kRma : PeerDataMethod::kActiveMessages;
  view->read_method =
      peer.rma_get ? PeerDataMethod::kRma : PeerDataMethod::kActiveMessages;
  view->failure = peer.failure;
  for (const auto& [id, region] : peer.regions) {
    view->regions[id] = region.info;
  }
  const bool connected = view->connected;
  TsanMutexLock lock(&mu_);
  views_.insert_or_assign(peer.id, std::move(view));
  if (!connected && std::find(disconnected_.begin(), disconnected_.end(),
                              peer.id) == disconnected_.end()) {
    disconnected_.push_back(peer.id);
    while (disconnected_.size() > kMaxListedDisconnected) {
      views_.erase(disconnected_.front());
      disconnected_.pop_front();
    }
  }
}

std::shared_ptr<const PeerView> PeerTable::FindView(PeerId id) const {
  TsanMutexLock lock(&mu_);
  auto it = views_.find(id);
  return it == views_.end() ? nullptr : it->second;
}

namespace {

PeerInfo ToPeerInfo(PeerId id, const PeerView& view) {
  PeerInfo info;
  info.id = id;
  info.name = view.name;
  info.connected = view.connected;
  info.failure = view.failure;
  info.write_method = view.write_method;
  info.read_method = view.read_method;
  for (const auto& [rid, region] : view.regions) info.regions.push_back(region);
  std::sort(
      info.regions.begin(), info.regions.end(),
      [](const RegionInfo& a, const RegionInfo& b) { return a.id < b.id; });
  return info;
}

}  // namespace

std::vector<PeerInfo> PeerTable::Views() const {
  std::vector<std::pair<PeerId, std::shared_ptr<const PeerView>>> views;
  {
    TsanMutexLock lock(&mu_);
    views.assign(views_.begin(), views_.end());
  }
  std::vector<PeerInfo> out;
  out.reserve(views.size());
  for (const auto& [id, view] : views) out.push_back(ToPeerInfo(id, *view));
  std::sort(out.begin(), out.end(),
            [](const PeerInfo& a, const PeerInfo& b) { return a.id < b.id; });
  return out;
}

absl::StatusOr<PeerInfo> PeerTable::View(PeerId id) const {
  std::shared_ptr<const PeerView> view = FindView(id);
  if (view == nullptr) {
    return absl::NotFoundError(absl::StrFormat("no peer %d", id));
  }
  return ToPeerInfo(id, *view);
}

void PeerTable::CountViews(uint64_t* listed, uint64_t* connected) const {
  TsanMutexLock lock(&mu_);
  *listed = views_.size();
  *connected = 0;
  for (const auto& [id, view] : views_) *connected += view->connected ? 1 : 0;
}

// --- The engine's peer state machine ----------------------------------------

Peer* TransferEngineImpl::NewPeer() {
  auto peer = std::make_unique<Peer>();
  peer->engine = this;
  peer->id = next_peer_id_++;
  do {
    peer->wire_id = RandomId();
  } while (peers_.FindByWireId(peer->wire_id) != nullptr);
  peer->heartbeat = !options_.ucx_peer_error_handling;
  return peers_.Add(std::move(peer));
}

PeerRef* TransferEngineImpl::PeerRefFor(const Peer* peer) {
  // A deque: references to its elements stay valid as it grows.
  peer_refs_.push_back(PeerRef{this, peer->id});
  return &peer_refs_.back();
}

void TransferEngineImpl::OnPeerError(void* arg, ucp_ep_h /*ep*/,
                                     ucs_status_t status) {
  const auto* ref = static_cast<const PeerRef*>(arg);
  Peer* peer = ref->engine->peers_.Find(ref->id);
  if (peer == nullptr) return;  // closed already
  ref->engine->FailPeer(
      peer, UcxStatus(status, absl::StrFormat("peer %d (%s) failed", peer->id,
                                              peer->name)));
}

void TransferEngineImpl::FailPeer(Peer* peer, absl::Status cause,
                                  uint64_t transfer_id,
                                  absl::Status transfer_status) {
  if (peer == nullptr) {
    // Already gone from the table (its transfers were reported when it
    // closed): only the transfer that found it missing is left to finish.
    if (transfer_id != 0) FinishTransfer(transfer_id, transfer_status);
    return;
  }
  const PeerId id = peer->id;
  // Mark this peer's transfers; they are reported once the endpoint closed.
  for (auto& [tid, active] : active_) {
    if (active->peer != id || active->failing) continue;
    active->failing = true;
    if (tid == transfer_id) {
      active->failure_status = transfer_status;
    } else if (!active->abort_status.ok()) {
      active->failure_status = active->abort_status;
    } else if (cause.code() == absl::StatusCode::kCancelled) {
      active->failure_status = cause;
    } else {
      active->failure_status = absl::UnavailableError(
          absl::StrFormat("transfer %d: peer %d (%s) disconnected: %s", tid, id,
                          peer->name, cause.message()));
    }
  }
  if (peer->state == PeerState::kClosing) return;
  if (peer->state == PeerState::kClosed) {
    OnPeerClosed(id);
    return;
  }
  const bool local = cause.code() == absl::StatusCode::kCancelled ||
                     absl::StrContains(cause.message(), "disconnected locally");
  if (!local) metrics_.OnPeerFailed();
  Log(local ? LogSeverity::kInfo : LogSeverity::kWarning,
      absl::StrFormat("peer %d (%s) %s: %s", id,
                      peer->name.empty() ? "unnamed" : peer->name,
                      peer->was_ready ? "disconnected" : "connection failed",
                      cause.ToString()));
  peer->state = PeerState::kClosing;
  peer->failure = cause;
  peers_.accepting().erase(peer->ep);
  peers_.Publish(*peer);
  // Closed from the top of the progress loop, never from inside a UCX
  // callback (UCX 1.13 crashes when an endpoint is closed while it is being
  // failed).
  pending_close_.push_back(id);
}

void TransferEngineImpl::ClosePendingPeers() {
  std::vector<PeerId> ids;
  ids.swap(pending_close_);
  for (PeerId id : ids) {
    Peer* peer = peers_.Find(id);
    if (peer == nullptr || peer->state != PeerState::kClosing) continue;
    if (peer->ep == nullptr) {
      OnPeerClosed(id);
      continue;
    }
    ucp_request_param_t param{};
    param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK |
                         UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS;
    param.flags = UCP_EP_CLOSE_FLAG_FORCE;
    param.cb.send = &TransferEngineImpl::OnCloseDone;
    auto* ctx = new RequestContext{this, 0, id, {}, {}};
    param.user_data = ctx;
    ucs_status_ptr_t request = ucp_ep_close_nbx(peer->ep, &param);
    if (!UCS_PTR_IS_PTR(request)) {
      delete ctx;
      OnPeerClosed(id);
    }
  }
}

void TransferEngineImpl::OnCloseDone(void* request, ucs_status_t /*status*/,
                                     void* user_data) {
  const CompletedRequest done = ReleaseRequest(request, user_data);
  done.engine->OnPeerClosed(done.peer);
}

void TransferEngineImpl::OnPeerClosed(PeerId id) {
  Peer* peer = peers_.Find(id);
  if (peer == nullptr) return;
  peer->state = PeerState::kClosed;
  peer->ep = nullptr;
  for (auto& [rid, region] : peer->regions) {
    if (region.rkey) ucp_rkey_destroy(region.rkey);
    region.rkey = nullptr;
  }
  peers_.Publish(*peer);
  std::vector<std::pair<uint64_t, absl::Status>> failed;
  for (auto& [tid, active] : active_) {
    if (active->peer == id && active->failing) {
      failed.emplace_back(tid, active->failure_status);
    }
  }
  for (auto& [tid, status] : failed) FinishTransfer(tid, status);
  if (peer->on_connected) {
    auto done = std::move(peer->on_connected);
    peer->on_connected = nullptr;
    done(peer->failure.ok() ? absl::UnavailableError("connection closed")
                            : peer->failure);
  }
  if (peer->was_ready && !stopping_) {
    Deliver(Notification{id, Notification::Kind::kPeerDisconnected,
                         std::string(peer->failure.message())});
  }
  // What Disconnect reports: OK when nothing of the peer can land here any
  // more: it confirmed it stopped, or UCX's error handling closed the
  // connection (no transport keeps writing into a closed endpoint's
  // memory). Over shared memory without a confirmation, a live peer may
  // still copy into our segments until it notices the close.
  const absl::Status result =
      peer->stop_confirmed || options_.ucx_peer_error_handling
          ? absl::OkStatus()
          : absl::DeadlineExceededError(absl::StrFormat(
                "Disconnect: peer %d (%s) did not confirm within %s that it "
                "stopped writing; over shared memory a live peer may still "
                "write into this engine's memory until it notices the close",
                id, peer->name,
                absl::FormatDuration(options_.peer_failure_timeout)));
  std::vector<std::function<void(absl::Status)>> waiters =
      std::move(peer->on_closed);
  peers_.Erase(id);
  for (auto& waiter : waiters) waiter(result);
}

void TransferEngineImpl::HandleStop(Peer* peer) {
  peer->stop_requested = true;
  peers_.Publish(*peer);
  const absl::Time now = absl::Now();
  const absl::Status status = absl::UnavailableError(absl::StrFormat(
      "peer %d (%s) disconnected (asked this engine to stop writing)", peer->id,
      peer->name));
  std::vector<Active*> mine;
  for (auto& [tid, active] : active_) {
    if (active->peer == peer->id) mine.push_back(active.get());
  }
  for (Active* active : mine) Abort(active, status, now);
  ConfirmStops();
}

void TransferEngineImpl::ConfirmStops() {
  std::vector<Peer*> asking;
  peers_.ForEach([&](Peer* peer) {
    if (peer->stop_requested && !peer->stop_ack_sent &&
        peer->state == PeerState::kReady) {
      asking.push_back(peer);
    }
  });
  for (Peer* peer : asking) {
    bool fenced = true;
    for (const auto& [tid, active] : active_)
      fenced &= active->peer != peer->id;
    if (!fenced) continue;  // an aborted transfer's fence is outstanding
    // The asking side closes on this; should its close not reach us, the
    // peer is closed here at stop_deadline (CheckTimers). Closing both
    // ends at once trips an assertion in UCX 1.13's async event handling.
    peer->stop_ack_sent = true;
    peer->stop_deadline = absl::Now() + options_.peer_failure_timeout;
    SendControl(peer, kAmStopAck, {peer->remote_conn_id, 0}, {}, false);
  }
}

void TransferEngineImpl::HandleStopAck(Peer* peer) {
  if (!peer->stopping) return;
  peer->stop_confirmed = true;
  FailPeer(peer, absl::UnavailableError(absl::StrFormat(
                     "peer %d: disconnected locally", peer->id)));
}

absl::Status TransferEngineImpl::Disconnect(PeerId id) {
  if (absl::Status s = CheckNotProgressThread("Disconnect"); !s.ok()) return s;
  auto closed = std::make_shared<TsanNotification>();
  auto result = std::make_shared<absl::Status>();
  // True when the endpoint is still closing (wait for it).
  absl::StatusOr<bool> closing =
      RunSync<absl::StatusOr<bool>>([&]() -> absl::StatusOr<bool> {
        Peer* peer = peers_.Find(id);
        if (peer == nullptr || !peer->was_ready) {
          if (peers_.FindView(id) != nullptr) return false;  // closed already
          return absl::NotFoundError(
              absl::StrFormat("Disconnect: no peer %d", id));
        }
        peer->on_closed.push_back([closed, result](absl::Status status) {
          *result = std::move(status);
          closed->Notify();
        });
        if (peer->state == PeerState::kReady && !peer->stopping) {
          // Ask the peer to stop writing here; close on its confirmation
          // (HandleStopAck) or at the deadline (CheckTimers).
          peer->stopping = true;
          peer->stop_deadline = absl::Now() + options_.peer_failure_timeout;
          peers_.Publish(*peer);
          SendControl(peer, kAmStop, {peer->remote_conn_id, 0}, {}, false);
        }
        return true;
      });
  if (!closing.ok()) return closing.status();
  // Notified once the endpoint closed (or the engine shut down).
  if (!*closing) return absl::OkStatus();
  closed->WaitForNotification();
  return *result;
}

}  // namespace flowkv::internal
