// SPDX-License-Identifier: Apache-2.0
// TransferEngine: Create (options checks, UCX start-up), shutdown, Stats and
// the public wrappers over TransferEngineImpl. The rest of the engine lives
// in the files listed in transfer_engine_impl.h.

#include "flowkv/transfer_engine.h"

#include <random>

#include "absl/strings/str_format.h"
#include "lib/common/tsan_lock.h"
#include "lib/engine/transfer_engine_impl.h"
#include "lib/engine/ucx_status.h"

namespace flowkv {
namespace internal {
namespace {

absl::Status CheckName(const std::string& what, const std::string& value,
                       size_t limit) {
  if (value.size() > limit) {
    return absl::InvalidArgumentError(
        absl::StrFormat("TransferEngine: %s is %d bytes, the limit is %d", what,
                        value.size(), limit));
  }
  return absl::OkStatus();
}

}  // namespace

TransferEngineImpl::TransferEngineImpl(const TransferEngineOptions& options)
    : options_(options), serial_(NextEngineSerial()) {}

absl::Status TransferEngineImpl::Init() {
  if (absl::Status s = CheckName("name", options_.name, kMaxNameBytes);
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          CheckName("cluster_token", options_.cluster_token, kMaxTokenBytes);
      !s.ok()) {
    return s;
  }
  if (options_.secondary_cluster_token.has_value()) {
    if (absl::Status s =
            CheckName("secondary_cluster_token",
                      *options_.secondary_cluster_token, kMaxTokenBytes);
        !s.ok()) {
      return s;
    }
  }
  for (auto [what, value] :
       {std::pair{"default_timeout", options_.default_timeout},
        std::pair{"peer_failure_timeout", options_.peer_failure_timeout},
        std::pair{"connect_timeout", options_.connect_timeout}}) {
    if (value <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("TransferEngine: %s must be > 0, got %s", what,
                          absl::FormatDuration(value)));
    }
  }
  if (options_.idle_spin < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("TransferEngine: idle_spin must be >= 0, got %s",
                        absl::FormatDuration(options_.idle_spin)));
  }
  if (options_.max_window_bytes == 0) {
    return absl::InvalidArgumentError(
        "TransferEngine: max_window_bytes must be > 0");
  }
  if (options_.max_pending_handshakes == 0) {
    return absl::InvalidArgumentError(
        "TransferEngine: max_pending_handshakes must be > 0");
  }

  UcxWorkerOptions ucx;
  ucx.name = options_.name;
  ucx.config = options_.ucx_config;
  // UCX keepalive detects dead peers in peer error-handling mode; without
  // it the engine's heartbeats do.
  if (options_.ucx_peer_error_handling) {
    ucx.keepalive_interval = options_.peer_failure_timeout / 2;
  }
  absl::StatusOr<std::unique_ptr<UcxWorker>> worker = UcxWorker::Create(ucx);
  if (!worker.ok()) return worker.status();
  worker_ = *std::move(worker);

  am_args_.clear();
  for (unsigned id : kAllAmIds) am_args_.push_back(AmHandlerArg{this, id});
  for (AmHandlerArg& handler : am_args_) {
    ucp_am_handler_param_t am{};
    am.field_mask =
        UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
        UCP_AM_HANDLER_PARAM_FIELD_ARG | UCP_AM_HANDLER_PARAM_FIELD_FLAGS;
    am.id = handler.id;
    am.cb = &TransferEngineImpl::OnAm;
    am.arg = &handler;
    am.flags = UCP_AM_FLAG_WHOLE_MSG;
    if (absl::Status s =
            UcxStatus(ucp_worker_set_am_recv_handler(worker_->worker(), &am),
                      "ucp_worker_set_am_recv_handler");
        !s.ok()) {
      return s;
    }
  }

  std::random_device random;
  instance_id_ = (uint64_t{random()} << 32) ^ random();
  ucp_worker_h ucp_worker = worker_->worker();
  inbox_ =
      std::make_shared<Inbox>([ucp_worker] { ucp_worker_signal(ucp_worker); });
  thread_ = std::thread([this] { ProgressLoop(); });
  return absl::OkStatus();
}

void TransferEngineImpl::Shutdown() {
  if (thread_.joinable()) {
    inbox_->Post([this] {
      stopping_ = true;
      std::vector<Peer*> open;
      peers_.ForEach([&](Peer* peer) {
        if (peer->state != PeerState::kClosing &&
            peer->state != PeerState::kClosed) {
          open.push_back(peer);
        }
      });
      for (Peer* peer : open) {
        FailPeer(peer,
                 absl::CancelledError("TransferEngine: the engine shut down"));
      }
    });
    thread_.join();
  }
  if (inbox_) inbox_->Close();
  // Whatever is still unfinished (e.g. an endpoint that never closed).
  const absl::Time now = absl::Now();
  for (auto& [id, active] : active_) {
    regions_.Release(active->local_regions);
    active->record->Complete(
        absl::CancelledError("TransferEngine: the engine shut down"), now);
  }
  active_.clear();
  std::vector<std::function<void(absl::Status)>> waiters;
  peers_.ForEach([&](Peer* peer) {
    for (auto& [rid, region] : peer->regions) {
      if (region.rkey) ucp_rkey_destroy(region.rkey);
    }
    peer->regions.clear();
    if (peer->on_connected) {
      peer->on_connected(absl::CancelledError("TransferEngine: shut down"));
      peer->on_connected = nullptr;
    }
    for (auto& waiter : peer->on_closed) waiters.push_back(std::move(waiter));
    peer->on_closed.clear();
  });
  for (auto& waiter : waiters) {
    waiter(absl::CancelledError("TransferEngine: the engine shut down"));
  }
  if (listener_) {
    ucp_listener_destroy(listener_);
    listener_ = nullptr;
  }
  if (worker_) {
    for (LocalRegion& region : regions_.Clear()) {
      if (region.memh) ucp_mem_unmap(worker_->context(), region.memh);
    }
  }
  worker_.reset();
}

TransferEngineStats TransferEngineImpl::Stats() const {
  TransferEngineStats stats;
  absl::StatusOr<uint64_t> tracked =
      RunSync<absl::StatusOr<uint64_t>>([&]() -> absl::StatusOr<uint64_t> {
        return static_cast<uint64_t>(peers_.size());
      });
  stats.peers_tracked = tracked.value_or(0);
  peers_.CountViews(&stats.peers_listed, &stats.peers_connected);
  stats.transfers_active = active_count_.load(std::memory_order_relaxed);
  {
    TsanMutexLock lock(&mu_);
    stats.messages_dropped = messages_dropped_;
  }
  stats.registered_bytes = regions_.total_bytes();
  return stats;
}

}  // namespace internal

// --- TransferEngine
// -------------------------------------------------------------

absl::StatusOr<std::unique_ptr<TransferEngine>> TransferEngine::Create(
    const TransferEngineOptions& options) {
  auto impl = std::make_unique<internal::TransferEngineImpl>(options);
  if (absl::Status s = impl->Init(); !s.ok()) return s;
  return std::unique_ptr<TransferEngine>(new TransferEngine(std::move(impl)));
}

TransferEngine::TransferEngine(
    std::unique_ptr<internal::TransferEngineImpl> impl)
    : impl_(std::move(impl)) {}
TransferEngine::~TransferEngine() = default;

absl::StatusOr<RegionId> TransferEngine::RegisterMemory(void* base,
                                                        uint64_t length,
                                                        MemoryKind kind) {
  return impl_->RegisterMemory(base, length, kind, false, nullptr);
}

absl::StatusOr<AllocatedRegion> TransferEngine::AllocateMemory(
    uint64_t length, MemoryKind kind) {
  void* data = nullptr;
  absl::StatusOr<RegionId> id =
      impl_->RegisterMemory(nullptr, length, kind, true, &data);
  if (!id.ok()) return id.status();
  return AllocatedRegion{*id, data, length};
}

absl::Status TransferEngine::DeregisterMemory(RegionId region) {
  return impl_->DeregisterMemory(region);
}

std::vector<RegionInfo> TransferEngine::Regions() const {
  return impl_->Regions();
}

absl::StatusOr<std::string> TransferEngine::Listen(const std::string& address) {
  return impl_->Listen(address);
}

absl::StatusOr<PeerId> TransferEngine::Connect(const std::string& address) {
  return impl_->Connect(address);
}

absl::StatusOr<std::string> TransferEngine::LocalMetadata() const {
  return impl_->LocalMetadata();
}

absl::StatusOr<PeerId> TransferEngine::AddPeer(
    absl::Span<const uint8_t> metadata) {
  return impl_->AddPeer(metadata);
}

absl::StatusOr<PeerId> TransferEngine::AddPeer(const std::string& metadata) {
  return impl_->AddPeer(internal::AsBytes(metadata));
}

absl::Status TransferEngine::ValidateMetadata(
    absl::Span<const uint8_t> metadata) {
  return internal::ParseEngineInfo(metadata).status();
}

absl::Status TransferEngine::Disconnect(PeerId peer) {
  return impl_->Disconnect(peer);
}

std::vector<PeerInfo> TransferEngine::Peers() const { return impl_->Peers(); }

absl::StatusOr<PeerInfo> TransferEngine::GetPeer(PeerId peer) const {
  return impl_->GetPeer(peer);
}

TransferHandle TransferEngine::Write(PeerId peer,
                                     absl::Span<const TransferOp> ops,
                                     TransferOptions options) {
  return impl_->Submit(internal::TransferKind::kWrite, peer, ops, {},
                       std::move(options));
}

TransferHandle TransferEngine::Read(PeerId peer,
                                    absl::Span<const TransferOp> ops,
                                    TransferOptions options) {
  return impl_->Submit(internal::TransferKind::kRead, peer, ops, {},
                       std::move(options));
}

TransferHandle TransferEngine::Send(PeerId peer, std::string bytes,
                                    TransferOptions options) {
  options.notification.reset();
  return impl_->Submit(internal::TransferKind::kSend, peer, {},
                       std::move(bytes), std::move(options));
}

std::vector<Notification> TransferEngine::TakeNotifications(
    absl::Duration wait) {
  return impl_->TakeNotifications(wait);
}

const std::string& TransferEngine::name() const { return impl_->name(); }
bool TransferEngine::SupportsCudaMemory() const {
  return impl_->SupportsCudaMemory();
}
std::string TransferEngine::UcxInfo() const { return impl_->UcxInfo(); }
TransferEngineStats TransferEngine::Stats() const { return impl_->Stats(); }
TransferEngineMetrics TransferEngine::Metrics() const {
  return impl_->Metrics();
}

}  // namespace flowkv
