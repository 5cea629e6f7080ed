// SPDX-License-Identifier: Apache-2.0
// The progress thread: its loop (inbox, UCX progress, posting windows,
// closing endpoints, timers, sleeping), the timers (deadlines, fences,
// heartbeats, handshakes), and the dispatch of active messages to the
// handshake, posting (posting.cc) and the notification queue. It may call
// every other part of the engine; nothing calls it but UCX and the loop.
//
// Sleeping. When nothing is in flight the thread spins on the worker for
// options.idle_spin after the last activity, then arms the worker's event
// fd and sleeps (at most kIdlePollMs, which bounds how stale timers get).
// Spinning a short while keeps the latency of back-to-back small transfers
// and of their notifications at the spinning figure without a core spinning
// forever; callers wake a sleeping thread through the worker's signal only
// when it sleeps (Inbox).

#include <cstring>
#include <poll.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "lib/common/tsan_lock.h"
#include "lib/engine/transfer_engine_impl.h"

namespace flowkv::internal {
namespace {

// Longest sleep of an idle progress thread.
constexpr int kIdlePollMs = 5;
// Bound on waiting for endpoints to close at shutdown.
constexpr absl::Duration kShutdownCloseWait = absl::Seconds(5);

}  // namespace

absl::Status TransferEngineImpl::CheckNotProgressThread(
    const char* what) const {
  if (inbox_ != nullptr && inbox_->OnOwnerThread()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "TransferEngine: %s on the progress thread (from a callback) would "
        "wait for itself; call it from another thread",
        what));
  }
  return absl::OkStatus();
}

void TransferEngineImpl::Log(LogSeverity severity,
                             const std::string& message) const {
  const std::string line =
      absl::StrCat("flowkv TransferEngine \"", options_.name, "\": ", message);
  if (options_.log) {
    options_.log(severity, line);
  } else if (severity != LogSeverity::kInfo) {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
}

bool TransferEngineImpl::HasWork() const {
  if (!active_.empty() || !ready_.empty() || !pending_close_.empty()) {
    return true;
  }
  bool work = false;
  peers_.ForEach([&](const Peer* peer) {
    work |= peer->state == PeerState::kConnecting ||
            peer->state == PeerState::kAccepting ||
            peer->state == PeerState::kClosing;
  });
  return work;
}

void TransferEngineImpl::ProgressLoop() {
  inbox_->SetOwnerThread();
  std::vector<Inbox::Command> commands;
  std::vector<std::shared_ptr<TransferRecord>> cancels;
  absl::Time last_timer_check = absl::InfinitePast();
  absl::Time stop_deadline = absl::InfiniteFuture();
  ucp_worker_h worker = worker_->worker();
  for (;;) {
    bool activity = false;
    inbox_->Drain(&commands, &cancels);
    activity |= !commands.empty() || !cancels.empty();
    for (auto& command : commands) command();
    commands.clear();
    for (auto& record : cancels) HandleCancel(record);
    cancels.clear();

    while (ucp_worker_progress(worker) != 0) activity = true;
    if (!ready_.empty()) PostReady();
    if (!pending_close_.empty()) ClosePendingPeers();
    if (iteration_posted_ >
        max_iteration_posted_.load(std::memory_order_relaxed)) {
      max_iteration_posted_.store(iteration_posted_, std::memory_order_relaxed);
    }
    iteration_posted_ = 0;

    const absl::Time now = absl::Now();
    if (activity) last_activity_ = now;
    if (now - last_timer_check >= absl::Milliseconds(1)) {
      CheckTimers(now);
      last_timer_check = now;
    }
    if (stopping_) {
      if (stop_deadline == absl::InfiniteFuture()) {
        stop_deadline = now + kShutdownCloseWait;
      }
      bool closing = false;
      peers_.ForEach(
          [&](Peer* peer) { closing |= peer->state == PeerState::kClosing; });
      if (!closing || now > stop_deadline) break;
      continue;
    }
    if (options_.busy_poll || HasWork() ||
        now - last_activity_ < options_.idle_spin) {
      continue;
    }
    ucs_status_t st = ucp_worker_arm(worker);
    if (st == UCS_ERR_BUSY) continue;
    if (!inbox_->BeginSleep()) continue;  // work arrived meanwhile
    pollfd fd{};
    fd.fd = worker_->event_fd();
    fd.events = POLLIN;
    poll(&fd, 1, kIdlePollMs);
    inbox_->EndSleep();
  }
}

void TransferEngineImpl::CheckTimers(absl::Time now) {
  // Deadlines and fences of this engine's transfers.
  std::vector<uint64_t> past_deadline;
  std::vector<uint64_t> stuck_fences;
  for (auto& [id, active] : active_) {
    if (active->failing) continue;
    if (!active->abort_status.ok()) {
      if (now >= active->fence_deadline) stuck_fences.push_back(id);
    } else if (now >= active->deadline) {
      past_deadline.push_back(id);
    }
  }
  for (uint64_t id : past_deadline) {
    auto it = active_.find(id);
    if (it == active_.end()) continue;
    Active* active = it->second.get();
    Abort(active,
          absl::DeadlineExceededError(absl::StrFormat(
              "transfer %d to peer %d: deadline passed after %s (%d ops, %d "
              "bytes)",
              id, active->peer,
              absl::FormatDuration(now - active->record->stats().submit_time),
              active->ops.size(), active->record->stats().bytes)),
          now);
  }
  for (uint64_t id : stuck_fences) {
    auto it = active_.find(id);
    if (it == active_.end() || it->second->failing) continue;
    Active* active = it->second.get();
    // The peer does not complete the fence: it is failing. Close the
    // endpoint, then report (no late write can land after the close).
    FailPeer(peers_.Find(active->peer),
             absl::UnavailableError(absl::StrFormat(
                 "peer %d: transfer %d's fence did not complete within %s",
                 active->peer, id,
                 absl::FormatDuration(options_.peer_failure_timeout))),
             id, active->abort_status);
    if (peers_.Find(active->peer) == nullptr) {
      FinishTransfer(id, active->abort_status);
    }
  }
  CheckHeartbeats(now);
  ConfirmStops();
  std::vector<std::pair<PeerId, absl::Status>> handshake_failures;
  peers_.ForEach([&](Peer* peer) {
    if (peer->state == PeerState::kReady && now >= peer->stop_deadline) {
      // A Disconnect's stop handshake that did not end in a close.
      handshake_failures.emplace_back(
          peer->id,
          absl::UnavailableError(
              peer->stopping
                  ? absl::StrFormat(
                        "peer %d: disconnected locally (it did not confirm "
                        "within %s that it stopped writing)",
                        peer->id,
                        absl::FormatDuration(options_.peer_failure_timeout))
                  : absl::StrFormat("peer %d (%s) disconnected", peer->id,
                                    peer->name)));
      return;
    }
    if (now < peer->handshake_deadline) return;
    if (peer->state == PeerState::kConnecting ||
        peer->state == PeerState::kAccepting) {
      handshake_failures.emplace_back(
          peer->id, absl::DeadlineExceededError(absl::StrFormat(
                        "peer %d: handshake not complete after %s", peer->id,
                        absl::FormatDuration(options_.connect_timeout))));
    } else if (peer->state == PeerState::kRejecting) {
      handshake_failures.emplace_back(
          peer->id, absl::PermissionDeniedError(absl::StrFormat(
                        "peer %d: refused in the handshake", peer->id)));
    }
  });
  for (auto& [id, status] : handshake_failures) {
    FailPeer(peers_.Find(id), status);
  }
}

void TransferEngineImpl::CheckHeartbeats(absl::Time now) {
  const absl::Duration interval = options_.peer_failure_timeout / 4;
  // When this thread itself was stalled it could not hear anyone: restart
  // the silence clocks.
  const bool stalled = now - last_heartbeat_check_ > interval;
  last_heartbeat_check_ = now;
  std::vector<std::pair<PeerId, absl::Status>> silent;
  peers_.ForEach([&](Peer* peer) {
    if (!peer->heartbeat || peer->state != PeerState::kReady) return;
    if (stalled) peer->last_heard = now;
    if (now - peer->last_heard > options_.peer_failure_timeout) {
      silent.emplace_back(
          peer->id,
          absl::UnavailableError(absl::StrFormat(
              "peer %d (%s): no heartbeat for %s", peer->id, peer->name,
              absl::FormatDuration(now - peer->last_heard))));
      return;
    }
    if (now - peer->last_ping >= interval) {
      peer->last_ping = now;
      SendControl(peer, kAmPing, {peer->remote_conn_id, 0}, {}, false);
    }
  });
  for (auto& [id, status] : silent) {
    metrics_.OnHeartbeatMissed();
    FailPeer(peers_.Find(id), status);
  }
}

ucs_status_t TransferEngineImpl::OnAm(void* arg, const void* header_bytes,
                                      size_t header_length, void* data,
                                      size_t length,
                                      const ucp_am_recv_param_t* param) {
  const auto* handler = static_cast<const AmHandlerArg*>(arg);
  TransferEngineImpl* self = handler->engine;
  if ((param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0 || self->stopping_) {
    return UCS_OK;  // Not ours: we always send eager.
  }
  const auto header_span = absl::Span<const uint8_t>(
      static_cast<const uint8_t*>(header_bytes), header_length);
  if (CarriesDataHeader(handler->id)) {
    absl::StatusOr<DataHeader> header = ParseDataHeader(header_span);
    if (!header.ok()) return UCS_OK;  // Not ours: not our header.
    self->HandleDataPath(handler->id, *header, data, length);
    return UCS_OK;
  }
  absl::StatusOr<AmHeader> parsed_header = ParseAmHeader(header_span);
  if (!parsed_header.ok()) return UCS_OK;  // Not ours: not our header.
  const AmHeader header = *parsed_header;
  self->last_activity_ = absl::Now();
  const auto bytes =
      absl::Span<const uint8_t>(static_cast<const uint8_t*>(data), length);
  Peer* peer = nullptr;
  if (handler->id != kAmHello) {
    peer = self->peers_.FindByWireId(header.conn_id);
    // Any message from a connected peer proves it alive.
    if (peer != nullptr && peer->state == PeerState::kReady) {
      peer->last_heard = self->last_activity_;
    }
  }
  switch (handler->id) {
    case kAmHello: {
      auto hello = ParseHello(bytes);
      ucp_ep_h reply_ep =
          (param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) != 0
              ? param->reply_ep
              : nullptr;
      if (hello.ok()) {
        self->HandleHello(*hello, reply_ep);
        break;
      }
      self->Log(LogSeverity::kWarning,
                absl::StrCat("refused a malformed hello: ",
                             hello.status().ToString()));
      if (reply_ep != nullptr) {
        // On an accepted connection: drop the connection.
        auto it = self->peers_.accepting().find(reply_ep);
        if (it != self->peers_.accepting().end()) {
          self->FailPeer(self->peers_.Find(it->second), hello.status());
        }
      }
      break;
    }
    case kAmChallenge: {
      auto challenge = ParseChallenge(bytes);
      if (challenge.ok()) {
        self->HandleChallenge(*challenge);
      } else if (peer != nullptr && peer->state == PeerState::kConnecting) {
        self->FailPeer(peer, challenge.status());
      }
      break;
    }
    case kAmProof:
    case kAmWelcome: {
      const bool welcome = handler->id == kAmWelcome;
      auto proof =
          ParseProof(welcome ? ProofRole::kServer : ProofRole::kClient, bytes);
      if (proof.ok()) {
        if (welcome) {
          self->HandleWelcome(*proof);
        } else {
          self->HandleProof(*proof, header.conn_id);
        }
      } else if (peer != nullptr &&
                 peer->state == (welcome ? PeerState::kConnecting
                                         : PeerState::kAccepting)) {
        self->FailPeer(peer, proof.status());
      }
      break;
    }
    case kAmReject: {
      auto reject = ParseReject(bytes);
      if (reject.ok()) self->HandleReject(*reject);
      break;
    }
    case kAmNotify:
    case kAmMessage:
      if (peer == nullptr || peer->state != PeerState::kReady) {
        self->Log(LogSeverity::kWarning,
                  absl::StrFormat("dropped a notification for connection %d, "
                                  "which is not connected",
                                  header.conn_id));
        break;
      }
      if (length > kMaxNotificationBytes) {
        // No engine sends one (Submit refuses them): not copied, not acked.
        self->Log(LogSeverity::kWarning,
                  absl::StrFormat("dropped a %d-byte notification from peer "
                                  "%d (%s): over the %d-byte limit",
                                  length, peer->id, peer->name,
                                  kMaxNotificationBytes));
        break;
      }
      self->HandleNotification(peer, header,
                               handler->id == kAmNotify
                                   ? Notification::Kind::kTransfer
                                   : Notification::Kind::kMessage,
                               data, length);
      break;
    case kAmAck:
      if (peer != nullptr && peer->state == PeerState::kReady) {
        // No data: the notification was delivered; else the refusal.
        absl::Status refusal;
        if (!bytes.empty()) {
          if (absl::Status s = ParseAckRefusal(bytes, &refusal); !s.ok()) {
            refusal = absl::InternalError(absl::StrFormat(
                "peer %d (%s) sent a malformed acknowledgement: %s", peer->id,
                peer->name, s.message()));
          }
        }
        self->HandleAck(peer, header.transfer_id, std::move(refusal));
      }
      break;
    case kAmStop:
      if (peer != nullptr && peer->state == PeerState::kReady) {
        self->HandleStop(peer);
      }
      break;
    case kAmStopAck:
      if (peer != nullptr && peer->state == PeerState::kReady) {
        self->HandleStopAck(peer);
      }
      break;
    case kAmFence:
      // Everything this peer sent before the fence was handled.
      if (peer != nullptr && peer->state == PeerState::kReady) {
        self->SendControl(peer, kAmAck,
                          {peer->remote_conn_id, header.transfer_id}, {},
                          false);
      }
      break;
    default:
      break;
  }
  return UCS_OK;
}

void TransferEngineImpl::HandleDataPath(unsigned am_id,
                                        const DataHeader& header,
                                        const void* data, size_t length) {
  last_activity_ = absl::Now();
  Peer* peer = peers_.FindByWireId(header.conn_id);
  if (peer == nullptr || peer->state != PeerState::kReady) return;
  peer->last_heard = last_activity_;
  switch (am_id) {
    case kAmData:
      HandleData(peer, header, data, length);
      break;
    case kAmReadRequest:
      HandleReadRequest(peer, header);
      break;
    case kAmReadData:
      HandleReadData(peer, header, data, length);
      break;
    default:
      break;
  }
}

void TransferEngineImpl::HandleNotification(Peer* peer, const AmHeader& header,
                                            Notification::Kind kind,
                                            const void* data, size_t length) {
  Notification notification{
      peer->id, kind, std::string(static_cast<const char*>(data), length)};
  const bool acknowledged =
      kind == Notification::Kind::kTransfer && header.transfer_id != 0;
  if (acknowledged) {
    absl::Status refusal;
    {
      TsanMutexLock lock(&taps_mu_);
      for (const auto& [id, check] : checks_) {
        refusal = check(notification);
        if (!refusal.ok()) break;
      }
    }
    if (!refusal.ok()) {
      // Not delivered: the acknowledgement carries the refusal.
      SendControl(peer, kAmAck, {peer->remote_conn_id, header.transfer_id},
                  EncodeAckRefusal(refusal), false);
      return;
    }
  }
  Deliver(std::move(notification));
  if (acknowledged) {
    // Queued (or handed to the callback): acknowledge it.
    SendControl(peer, kAmAck, {peer->remote_conn_id, header.transfer_id}, {},
                false);
  }
}

uint64_t TransferEngineImpl::AddNotificationTap(NotificationTap tap) {
  TsanMutexLock lock(&taps_mu_);
  const uint64_t id = next_tap_id_++;
  taps_.emplace_back(id, std::move(tap));
  return id;
}

void TransferEngineImpl::RemoveNotificationTap(uint64_t id) {
  TsanMutexLock lock(&taps_mu_);
  std::erase_if(taps_, [id](const auto& tap) { return tap.first == id; });
}

uint64_t TransferEngineImpl::AddNotificationCheck(NotificationCheck check) {
  TsanMutexLock lock(&taps_mu_);
  const uint64_t id = next_tap_id_++;
  checks_.emplace_back(id, std::move(check));
  return id;
}

void TransferEngineImpl::RemoveNotificationCheck(uint64_t id) {
  TsanMutexLock lock(&taps_mu_);
  std::erase_if(checks_, [id](const auto& check) { return check.first == id; });
}

void TransferEngineImpl::Deliver(Notification notification) {
  {
    TsanMutexLock lock(&taps_mu_);
    for (const auto& [id, tap] : taps_) {
      if (tap(notification) &&
          notification.kind != Notification::Kind::kPeerDisconnected) {
        return;
      }
    }
  }
  if (options_.on_notification) {
    options_.on_notification(std::move(notification));
    return;
  }
  bool log_drop = false;
  {
    TsanMutexLock lock(&mu_);
    if (notification.kind == Notification::Kind::kMessage &&
        notifications_.size() >= options_.max_queued_notifications) {
      ++messages_dropped_;
      log_drop = !queue_full_logged_;
      queue_full_logged_ = true;
    } else {
      queue_full_logged_ = false;
      notifications_.push_back(std::move(notification));
      notifications_cv_.SignalAll();
    }
  }
  if (log_drop) {
    Log(LogSeverity::kWarning,
        absl::StrFormat("notification queue full (%d): dropping messages "
                        "until TakeNotifications() makes room",
                        options_.max_queued_notifications));
  }
}

std::vector<Notification> TransferEngineImpl::TakeNotifications(
    absl::Duration wait) {
  if (!CheckNotProgressThread("TakeNotifications").ok()) {
    wait = absl::ZeroDuration();
  }
  TsanMutexLock lock(&mu_);
  if (wait > absl::ZeroDuration()) {
    const absl::Time deadline = absl::Now() + wait;
    while (notifications_.empty()) {
      if (lock.WaitWithDeadline(&notifications_cv_, deadline)) break;
    }
  }
  std::vector<Notification> out(std::make_move_iterator(notifications_.begin()),
                                std::make_move_iterator(notifications_.end()));
  notifications_.clear();
  return out;
}

}  // namespace flowkv::internal
