#include "flowkv/transfer_engine.h"

#include <arpa/inet.h>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <netinet/in.h>
#include <poll.h>
#include <random>
#include <sys/socket.h>
#include <thread>
#include <ucp/api/ucp.h>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "lib/common/tsan_lock.h"
#include "lib/transfer/transfer_record.h"
#include "lib/transfer/ucx_status.h"
#include "lib/transfer/wire_format.h"

namespace flowkv {
namespace internal {
namespace {

// Active message ids.
enum AmId : unsigned {
  kAmHello = 0x4b01,
  kAmHelloAck = 0x4b02,
  kAmReject = 0x4b03,
  kAmNotify = 0x4b04,
  kAmMessage = 0x4b05,
  kAmPing = 0x4b06,
};

constexpr uint64_t kMaxNotificationBytes = 1 << 20;
// How long a refused connection stays open for the reject to reach the
// client before the server closes it.
constexpr absl::Duration kRejectLinger = absl::Seconds(2);
// Longest sleep of an idle progress thread: bounds how stale timers and UCX
// keepalive rounds can get.
constexpr int kIdlePollMs = 5;

absl::Status CheckName(const std::string& what, const std::string& value,
                       size_t limit) {
  if (value.size() > limit) {
    return absl::InvalidArgumentError(
        absl::StrFormat("TransferEngine: %s is %d bytes, the limit is %d", what,
                        value.size(), limit));
  }
  return absl::OkStatus();
}

// "ip:port" or "[ipv6]:port" -> sockaddr.
absl::Status ParseSockAddr(const std::string& address, sockaddr_storage* out,
                           socklen_t* len) {
  std::string host;
  std::string port_text;
  if (!address.empty() && address[0] == '[') {
    const size_t close = address.find(']');
    if (close == std::string::npos || close + 1 >= address.size() ||
        address[close + 1] != ':') {
      return absl::InvalidArgumentError(
          absl::StrFormat("address \"%s\": expected \"[ipv6]:port\"", address));
    }
    host = address.substr(1, close - 1);
    port_text = address.substr(close + 2);
  } else {
    const size_t colon = address.rfind(':');
    if (colon == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrFormat("address \"%s\": expected \"ip:port\"", address));
    }
    host = address.substr(0, colon);
    port_text = address.substr(colon + 1);
  }
  uint32_t port = 0;
  if (!absl::SimpleAtoi(port_text, &port) || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrFormat("address \"%s\": port \"%s\" is not in [0, 65535]",
                        address, port_text));
  }
  std::memset(out, 0, sizeof(*out));
  auto* v4 = reinterpret_cast<sockaddr_in*>(out);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(out);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    *len = sizeof(sockaddr_in);
    return absl::OkStatus();
  }
  if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    *len = sizeof(sockaddr_in6);
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrFormat(
      "address \"%s\": host \"%s\" is not a numeric IPv4 or IPv6 address",
      address, host));
}

std::string FormatSockAddr(const sockaddr_storage& addr) {
  char text[INET6_ADDRSTRLEN] = {0};
  if (addr.ss_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(&addr);
    inet_ntop(AF_INET, &v4->sin_addr, text, sizeof(text));
    return absl::StrCat(text, ":", ntohs(v4->sin_port));
  }
  const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&addr);
  inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof(text));
  return absl::StrCat("[", text, "]:", ntohs(v6->sin6_port));
}

absl::StatusCode CodeFromWire(uint32_t code) {
  if (code == 0 ||
      code > static_cast<uint32_t>(absl::StatusCode::kUnauthenticated)) {
    return absl::StatusCode::kPermissionDenied;
  }
  return static_cast<absl::StatusCode>(code);
}

}  // namespace

// A region of this engine as callers see it (guarded by the engine mutex).
struct LocalRegion {
  RegionInfo info;
  ucp_mem_h memh = nullptr;
  bool allocated = false;
  std::string rkey;      // packed remote key
  int active_users = 0;  // unfinished transfers using the region
};

struct RemoteRegion {
  RegionInfo info;
  ucp_rkey_h rkey = nullptr;
};

// What callers may read of a peer (guarded by the engine mutex).
struct PeerView {
  std::string name;
  bool connected = false;
  absl::Status failure;
  absl::flat_hash_map<RegionId, RegionInfo> regions;
};

enum class PeerState {
  kConnecting,
  kAccepting,
  kRejecting,
  kReady,
  kClosing,
  kClosed
};

class TransferEngineImpl;

// arg of an active-message handler.
struct AmHandlerArg {
  TransferEngineImpl* engine = nullptr;
  unsigned id = 0;
};

// A connection; owned by the progress thread, alive until engine shutdown.
struct Peer {
  TransferEngineImpl* engine = nullptr;
  PeerId id = 0;
  ucp_ep_h ep = nullptr;
  PeerState state = PeerState::kConnecting;
  bool was_ready = false;
  uint64_t remote_conn_id = 0;
  std::string name;
  absl::flat_hash_map<RegionId, RemoteRegion> regions;
  absl::Time handshake_deadline = absl::InfiniteFuture();
  // Watched with heartbeats (ucx_peer_error_handling == false).
  bool heartbeat = false;
  // Heartbeat state.
  absl::Time last_heard = absl::InfinitePast();
  absl::Time last_ping = absl::InfinitePast();
  absl::Status failure;
  // Connect / AddPeer waiting for the handshake.
  std::function<void(absl::StatusOr<PeerId>)> on_connected;
};

enum class TransferKind { kWrite, kRead, kSend };

// An unfinished transfer on the progress thread.
struct Active {
  std::shared_ptr<TransferRecord> record;
  TransferKind kind = TransferKind::kWrite;
  PeerId peer = 0;
  std::vector<TransferOp> ops;
  std::optional<std::string> notification;
  std::string message;
  absl::Time deadline = absl::InfiniteFuture();
  std::vector<RegionId> local_regions;
  bool failing = false;         // waiting for the endpoint to close
  absl::Status failure_status;  // reported once the endpoint closed
};

// user_data of a UCX request.
struct RequestContext {
  TransferEngineImpl* engine = nullptr;
  uint64_t transfer_id = 0;  // 0: a control message
  PeerId peer = 0;
  std::string payload;  // AM bytes kept alive until completion
  uint64_t header = 0;  // AM header (receiver connection id)
};

class TransferEngineImpl {
 public:
  explicit TransferEngineImpl(const TransferEngineOptions& options)
      : options_(options) {}
  ~TransferEngineImpl() { Shutdown(); }

  absl::Status Init();
  void Shutdown();

  absl::StatusOr<RegionId> RegisterMemory(void* base, uint64_t length,
                                          MemoryKind kind, bool allocate,
                                          void** allocated_base);
  absl::Status DeregisterMemory(RegionId region);
  std::vector<RegionInfo> Regions() const;
  absl::StatusOr<std::string> Listen(const std::string& address);
  absl::StatusOr<PeerId> Connect(const std::string& address);
  absl::StatusOr<std::string> LocalMetadata() const;
  absl::StatusOr<PeerId> AddPeer(absl::Span<const uint8_t> metadata);
  absl::Status Disconnect(PeerId peer);
  std::vector<PeerInfo> Peers() const;
  absl::StatusOr<PeerInfo> GetPeer(PeerId peer) const;
  TransferHandle Submit(TransferKind kind, PeerId peer,
                        absl::Span<const TransferOp> ops, std::string message,
                        TransferOptions options);
  std::vector<Notification> TakeNotifications(absl::Duration wait);
  const std::string& name() const { return options_.name; }
  bool SupportsCudaMemory() const { return cuda_supported_; }
  std::string UcxInfo() const { return ucx_info_; }

  // UCX callbacks (progress thread).
  static void OnConnRequest(ucp_conn_request_h request, void* arg);
  static void OnPeerError(void* arg, ucp_ep_h ep, ucs_status_t status);
  static ucs_status_t OnAm(void* arg, const void* header, size_t header_length,
                           void* data, size_t length,
                           const ucp_am_recv_param_t* param);
  static void OnFlushDone(void* request, ucs_status_t status, void* user_data);
  static void OnSendDone(void* request, ucs_status_t status, void* user_data);
  static void OnCloseDone(void* request, ucs_status_t status, void* user_data);

 private:
  // Runs `fn` on the progress thread and returns its result.
  template <typename T>
  T RunSync(std::function<T()> fn) const;

  void ProgressLoop();
  ucp_err_handling_mode_t ErrMode() const {
    return options_.ucx_peer_error_handling ? UCP_ERR_HANDLING_MODE_PEER
                                            : UCP_ERR_HANDLING_MODE_NONE;
  }
  bool HasWork() const;
  void CheckTimers(absl::Time now);

  // Progress-thread helpers.
  absl::StatusOr<PeerId> StartConnect(
      const ucp_ep_params_t& base_params, bool via_sockaddr,
      std::function<void(absl::StatusOr<PeerId>)> done);
  Peer* NewPeer();
  Peer* FindPeer(PeerId id);
  void SendControl(Peer* peer, unsigned am_id, uint64_t header,
                   std::string payload, bool reply);
  void HandleHello(const Hello& hello, ucp_ep_h reply_ep);
  void HandleHelloAck(const HelloAck& ack);
  void HandleReject(const Reject& reject);
  void HandleNotification(uint64_t conn_id, Notification::Kind kind,
                          const void* data, size_t length);
  absl::Status UnpackRegions(Peer* peer, const EngineInfo& info);
  void MakeReady(Peer* peer, const EngineInfo& info, uint64_t remote_conn_id);
  void PublishPeer(const Peer& peer);
  EngineInfo BuildEngineInfo() const;
  // Force-closes the peer's endpoint; once closed, fails its unfinished
  // transfers (`transfer_id` with `transfer_status`, the others with
  // Unavailable) and a pending Connect with `cause`.
  void FailPeer(Peer* peer, absl::Status cause, uint64_t transfer_id = 0,
                absl::Status transfer_status = absl::OkStatus());
  void OnPeerClosed(PeerId peer);
  void ClosePendingPeers();
  void StartTransfer(std::unique_ptr<Active> active);
  void PostFlush(Active* active, Peer* peer);
  void SendNotification(Active* active, Peer* peer);
  void FinishTransfer(uint64_t transfer_id, absl::Status status);
  void HandleCancel(const std::shared_ptr<TransferRecord>& record);

  const TransferEngineOptions options_;
  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  int efd_ = -1;
  std::string worker_address_;
  uint64_t instance_id_ = 0;
  bool cuda_supported_ = false;
  std::string ucx_info_;
  std::shared_ptr<Inbox> inbox_;
  std::thread thread_;
  std::vector<AmHandlerArg> am_args_;
  std::atomic<uint64_t> next_transfer_id_{1};

  // Progress-thread state.
  absl::Time last_heartbeat_check_ = absl::InfinitePast();
  bool stopping_ = false;
  bool stopped_ = false;
  ucp_listener_h listener_ = nullptr;
  PeerId next_peer_id_ = 1;
  absl::flat_hash_map<PeerId, std::unique_ptr<Peer>> peers_;
  absl::flat_hash_map<ucp_ep_h, PeerId> accepting_;
  absl::flat_hash_map<uint64_t, std::unique_ptr<Active>> active_;
  std::vector<PeerId> pending_close_;

  // Shared state.
  mutable absl::Mutex mu_;
  RegionId next_region_id_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<RegionId, LocalRegion> regions_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<PeerId, std::shared_ptr<const PeerView>> views_
      ABSL_GUARDED_BY(mu_);
  std::deque<Notification> notifications_ ABSL_GUARDED_BY(mu_);
  absl::CondVar notifications_cv_;
  uint64_t dropped_notifications_ ABSL_GUARDED_BY(mu_) = 0;
  std::string listen_address_ ABSL_GUARDED_BY(mu_);
};

template <typename T>
T TransferEngineImpl::RunSync(std::function<T()> fn) const {
  TsanNotification done;
  std::optional<T> result;
  if (!inbox_->Post([&] {
        result.emplace(fn());
        done.Notify();
      })) {
    return T(absl::FailedPreconditionError(
        "TransferEngine: the engine is shutting down"));
  }
  done.WaitForNotification();
  return *std::move(result);
}

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

  ucp_config_t* config = nullptr;
  if (absl::Status s = UcxStatus(ucp_config_read(nullptr, nullptr, &config),
                                 "ucp_config_read");
      !s.ok()) {
    return s;
  }
  bool keepalive_set = std::getenv("UCX_KEEPALIVE_INTERVAL") != nullptr ||
                       !options_.ucx_peer_error_handling;
  for (const auto& [name, value] : options_.ucx_config) {
    if (name == "KEEPALIVE_INTERVAL") keepalive_set = true;
  }
  absl::Status config_status;
  if (!keepalive_set) {
    const std::string interval = absl::StrFormat(
        "%dms",
        std::max<int64_t>(
            1, absl::ToInt64Milliseconds(options_.peer_failure_timeout) / 2));
    config_status = UcxStatus(
        ucp_config_modify(config, "KEEPALIVE_INTERVAL", interval.c_str()),
        "ucp_config_modify(KEEPALIVE_INTERVAL)");
  }
  for (const auto& [name, value] : options_.ucx_config) {
    if (!config_status.ok()) break;
    ucs_status_t st = ucp_config_modify(config, name.c_str(), value.c_str());
    if (st != UCS_OK) {
      config_status = absl::InvalidArgumentError(
          absl::StrFormat("TransferEngine: UCX rejects configuration %s=%s: %s",
                          name, value, ucs_status_string(st)));
    }
  }
  if (!config_status.ok()) {
    ucp_config_release(config);
    return config_status;
  }

  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_NAME |
                      UCP_PARAM_FIELD_MT_WORKERS_SHARED;
  params.features = UCP_FEATURE_RMA | UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
  params.name = options_.name.c_str();
  params.mt_workers_shared = 0;
  ucs_status_t st = ucp_init(&params, config, &context_);
  ucp_config_release(config);
  if (absl::Status s = UcxStatus(st, "ucp_init"); !s.ok()) return s;

  ucp_context_attr_t attr{};
  attr.field_mask = UCP_ATTR_FIELD_MEMORY_TYPES;
  if (ucp_context_query(context_, &attr) == UCS_OK) {
    cuda_supported_ = (attr.memory_types & UCS_BIT(UCS_MEMORY_TYPE_CUDA)) != 0;
  }
  {
    char* buffer = nullptr;
    size_t size = 0;
    if (FILE* stream = open_memstream(&buffer, &size)) {
      ucp_context_print_info(context_, stream);
      std::fclose(stream);
      ucx_info_.assign(buffer, size);
      std::free(buffer);
    }
  }

  ucp_worker_params_t wparams{};
  wparams.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wparams.thread_mode = UCS_THREAD_MODE_SINGLE;
  if (absl::Status s = UcxStatus(
          ucp_worker_create(context_, &wparams, &worker_), "ucp_worker_create");
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          UcxStatus(ucp_worker_get_efd(worker_, &efd_), "ucp_worker_get_efd");
      !s.ok()) {
    return s;
  }
  ucp_address_t* address = nullptr;
  size_t address_length = 0;
  if (absl::Status s =
          UcxStatus(ucp_worker_get_address(worker_, &address, &address_length),
                    "ucp_worker_get_address");
      !s.ok()) {
    return s;
  }
  worker_address_.assign(reinterpret_cast<const char*>(address),
                         address_length);
  ucp_worker_release_address(worker_, address);

  am_args_.clear();
  for (unsigned id :
       {kAmHello, kAmHelloAck, kAmReject, kAmNotify, kAmMessage, kAmPing}) {
    am_args_.push_back(AmHandlerArg{this, id});
  }
  for (AmHandlerArg& handler : am_args_) {
    const unsigned id = handler.id;
    ucp_am_handler_param_t am{};
    am.field_mask =
        UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
        UCP_AM_HANDLER_PARAM_FIELD_ARG | UCP_AM_HANDLER_PARAM_FIELD_FLAGS;
    am.id = id;
    am.cb = &TransferEngineImpl::OnAm;
    am.arg = &handler;
    am.flags = UCP_AM_FLAG_WHOLE_MSG;
    if (absl::Status s = UcxStatus(ucp_worker_set_am_recv_handler(worker_, &am),
                                   "ucp_worker_set_am_recv_handler");
        !s.ok()) {
      return s;
    }
  }

  std::random_device random;
  instance_id_ = (uint64_t{random()} << 32) ^ random();
  ucp_worker_h worker = worker_;
  inbox_ = std::make_shared<Inbox>([worker] { ucp_worker_signal(worker); });
  thread_ = std::thread([this] { ProgressLoop(); });
  return absl::OkStatus();
}

void TransferEngineImpl::Shutdown() {
  if (thread_.joinable()) {
    inbox_->Post([this] {
      stopping_ = true;
      for (auto& [id, peer] : peers_) {
        if (peer->state != PeerState::kClosing &&
            peer->state != PeerState::kClosed) {
          FailPeer(peer.get(), absl::CancelledError(
                                   "TransferEngine: the engine shut down"));
        }
      }
    });
    thread_.join();
  }
  if (inbox_) inbox_->Close();
  // Whatever is still unfinished (e.g. an endpoint that never closed).
  const absl::Time now = absl::Now();
  for (auto& [id, active] : active_) {
    active->record->Complete(
        absl::CancelledError("TransferEngine: the engine shut down"), now);
  }
  active_.clear();
  for (auto& [id, peer] : peers_) {
    for (auto& [rid, region] : peer->regions) {
      if (region.rkey) ucp_rkey_destroy(region.rkey);
    }
    peer->regions.clear();
    if (peer->on_connected) {
      peer->on_connected(absl::CancelledError("TransferEngine: shut down"));
      peer->on_connected = nullptr;
    }
  }
  if (listener_) {
    ucp_listener_destroy(listener_);
    listener_ = nullptr;
  }
  {
    TsanMutexLock lock(&mu_);
    for (auto& [id, region] : regions_) {
      if (region.memh) ucp_mem_unmap(context_, region.memh);
    }
    regions_.clear();
  }
  if (worker_) {
    ucp_worker_destroy(worker_);
    worker_ = nullptr;
  }
  if (context_) {
    ucp_cleanup(context_);
    context_ = nullptr;
  }
}

// --- Progress thread
// ----------------------------------------------------------

bool TransferEngineImpl::HasWork() const {
  if (!active_.empty()) return true;
  for (const auto& [id, peer] : peers_) {
    if (peer->state == PeerState::kConnecting ||
        peer->state == PeerState::kAccepting ||
        peer->state == PeerState::kClosing) {
      return true;
    }
  }
  return false;
}

void TransferEngineImpl::ProgressLoop() {
  std::vector<Inbox::Command> commands;
  std::vector<std::shared_ptr<TransferRecord>> cancels;
  absl::Time last_timer_check = absl::InfinitePast();
  const absl::Time stop_deadline_unset = absl::InfiniteFuture();
  absl::Time stop_deadline = stop_deadline_unset;
  for (;;) {
    inbox_->Drain(&commands, &cancels);
    for (auto& command : commands) command();
    commands.clear();
    for (auto& record : cancels) HandleCancel(record);
    cancels.clear();

    while (ucp_worker_progress(worker_) != 0) {
    }
    if (!pending_close_.empty()) ClosePendingPeers();

    const absl::Time now = absl::Now();
    if (now - last_timer_check >= absl::Milliseconds(1)) {
      CheckTimers(now);
      last_timer_check = now;
    }
    if (stopping_) {
      if (stop_deadline == stop_deadline_unset) {
        stop_deadline = now + absl::Seconds(5);
      }
      bool closing = false;
      for (const auto& [id, peer] : peers_) {
        closing |= peer->state == PeerState::kClosing;
      }
      if (!closing || now > stop_deadline) break;
      continue;
    }
    if (options_.busy_poll || HasWork()) continue;
    ucs_status_t st = ucp_worker_arm(worker_);
    if (st == UCS_ERR_BUSY) continue;
    if (!inbox_->Empty()) continue;
    pollfd fd{};
    fd.fd = efd_;
    fd.events = POLLIN;
    poll(&fd, 1, kIdlePollMs);
  }
  stopped_ = true;
}

void TransferEngineImpl::CheckTimers(absl::Time now) {
  for (auto& [id, active] : active_) {
    if (!active->failing && now >= active->deadline) {
      Peer* peer = FindPeer(active->peer);
      const absl::Status status = absl::DeadlineExceededError(absl::StrFormat(
          "transfer %d to peer %d: deadline passed after %s (%d ops, %d "
          "bytes); the peer's endpoint was closed",
          id, active->peer,
          absl::FormatDuration(now - active->record->stats().submit_time),
          active->ops.size(), active->record->stats().bytes));
      if (peer != nullptr) {
        FailPeer(peer,
                 absl::UnavailableError(absl::StrFormat(
                     "peer %d: closed because transfer %d passed its "
                     "deadline",
                     peer->id, id)),
                 id, status);
      } else {
        FinishTransfer(id, status);
      }
      return;  // active_ may have changed; the rest waits for the next check
    }
  }
  {
    const absl::Duration interval = options_.peer_failure_timeout / 4;
    // When this thread itself was stalled (e.g. copying one huge op inline)
    // it could not hear anyone: restart the silence clocks.
    const bool stalled = now - last_heartbeat_check_ > interval;
    last_heartbeat_check_ = now;
    for (auto& [id, peer] : peers_) {
      if (!peer->heartbeat || peer->state != PeerState::kReady) continue;
      if (stalled) peer->last_heard = now;
      if (now - peer->last_heard > options_.peer_failure_timeout) {
        FailPeer(peer.get(),
                 absl::UnavailableError(absl::StrFormat(
                     "peer %d (%s): no heartbeat for %s", id, peer->name,
                     absl::FormatDuration(now - peer->last_heard))));
        continue;
      }
      if (now - peer->last_ping >= interval) {
        peer->last_ping = now;
        SendControl(peer.get(), kAmPing, peer->remote_conn_id, {}, false);
      }
    }
  }
  for (auto& [id, peer] : peers_) {
    if (now < peer->handshake_deadline) continue;
    if (peer->state == PeerState::kConnecting ||
        peer->state == PeerState::kAccepting) {
      FailPeer(peer.get(),
               absl::DeadlineExceededError(absl::StrFormat(
                   "peer %d: handshake not complete after %s", id,
                   absl::FormatDuration(options_.connect_timeout))));
    } else if (peer->state == PeerState::kRejecting) {
      FailPeer(peer.get(), absl::PermissionDeniedError(absl::StrFormat(
                               "peer %d: refused in the handshake", id)));
    }
  }
}

Peer* TransferEngineImpl::NewPeer() {
  auto peer = std::make_unique<Peer>();
  peer->engine = this;
  peer->id = next_peer_id_++;
  peer->heartbeat = !options_.ucx_peer_error_handling;
  Peer* raw = peer.get();
  peers_[raw->id] = std::move(peer);
  return raw;
}

Peer* TransferEngineImpl::FindPeer(PeerId id) {
  auto it = peers_.find(id);
  return it == peers_.end() ? nullptr : it->second.get();
}

void TransferEngineImpl::PublishPeer(const Peer& peer) {
  if (!peer.was_ready) return;
  auto view = std::make_shared<PeerView>();
  view->name = peer.name;
  view->connected = peer.state == PeerState::kReady;
  view->failure = peer.failure;
  for (const auto& [id, region] : peer.regions) {
    view->regions[id] = region.info;
  }
  TsanMutexLock lock(&mu_);
  views_[peer.id] = std::move(view);
}

EngineInfo TransferEngineImpl::BuildEngineInfo() const {
  EngineInfo info;
  info.instance_id = instance_id_;
  info.name = options_.name;
  info.worker_address = worker_address_;
  TsanMutexLock lock(&mu_);
  for (const auto& [id, region] : regions_) {
    WireRegion wire;
    wire.id = id;
    wire.kind = static_cast<uint8_t>(region.info.kind);
    wire.base = region.info.base;
    wire.length = region.info.length;
    wire.rkey = region.rkey;
    info.regions.push_back(std::move(wire));
  }
  return info;
}

void TransferEngineImpl::SendControl(Peer* peer, unsigned am_id,
                                     uint64_t header, std::string payload,
                                     bool reply) {
  auto* ctx = new RequestContext{this, 0, peer->id, std::move(payload), header};
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK |
                       UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS;
  param.cb.send = &TransferEngineImpl::OnSendDone;
  param.user_data = ctx;
  param.flags = UCP_AM_SEND_FLAG_EAGER | (reply ? UCP_AM_SEND_FLAG_REPLY : 0);
  ucs_status_ptr_t request =
      ucp_am_send_nbx(peer->ep, am_id, &ctx->header, sizeof(ctx->header),
                      ctx->payload.data(), ctx->payload.size(), &param);
  if (!UCS_PTR_IS_PTR(request)) {
    // Completed (or failed) at once: the peer's error handler reports
    // failures.
    delete ctx;
  }
}

absl::StatusOr<PeerId> TransferEngineImpl::StartConnect(
    const ucp_ep_params_t& base_params, bool via_sockaddr,
    std::function<void(absl::StatusOr<PeerId>)> done) {
  if (stopping_) {
    return absl::FailedPreconditionError("TransferEngine: shutting down");
  }
  Peer* peer = NewPeer();
  ucp_ep_params_t params = base_params;
  params.field_mask |=
      UCP_EP_PARAM_FIELD_ERR_HANDLER | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
  params.err_mode = ErrMode();
  params.err_handler.cb = &TransferEngineImpl::OnPeerError;
  params.err_handler.arg = peer;
  ucs_status_t st = ucp_ep_create(worker_, &params, &peer->ep);
  if (st != UCS_OK) {
    peer->ep = nullptr;
    peer->state = PeerState::kClosed;
    peer->failure = UcxStatus(st, "ucp_ep_create");
    return peer->failure;
  }
  peer->state = PeerState::kConnecting;
  peer->handshake_deadline = absl::Now() + options_.connect_timeout;
  peer->on_connected = std::move(done);
  Hello hello;
  hello.via_sockaddr = via_sockaddr;
  hello.sender_conn_id = peer->id;
  hello.token = options_.cluster_token;
  hello.info = BuildEngineInfo();
  SendControl(peer, kAmHello, 0, EncodeHello(hello), /*reply=*/via_sockaddr);
  return peer->id;
}

void TransferEngineImpl::OnConnRequest(ucp_conn_request_h request, void* arg) {
  auto* self = static_cast<TransferEngineImpl*>(arg);
  if (self->stopping_) {
    ucp_listener_reject(self->listener_, request);
    return;
  }
  Peer* peer = self->NewPeer();
  ucp_ep_params_t params{};
  params.field_mask = UCP_EP_PARAM_FIELD_CONN_REQUEST |
                      UCP_EP_PARAM_FIELD_ERR_HANDLER |
                      UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
  params.conn_request = request;
  params.err_mode = self->ErrMode();
  params.err_handler.cb = &TransferEngineImpl::OnPeerError;
  params.err_handler.arg = peer;
  ucs_status_t st = ucp_ep_create(self->worker_, &params, &peer->ep);
  if (st != UCS_OK) {
    peer->ep = nullptr;
    peer->state = PeerState::kClosed;
    peer->failure = UcxStatus(st, "ucp_ep_create(conn_request)");
    return;
  }
  peer->state = PeerState::kAccepting;
  peer->handshake_deadline = absl::Now() + self->options_.connect_timeout;
  self->accepting_[peer->ep] = peer->id;
}

void TransferEngineImpl::OnPeerError(void* arg, ucp_ep_h /*ep*/,
                                     ucs_status_t status) {
  auto* peer = static_cast<Peer*>(arg);
  peer->engine->FailPeer(
      peer, UcxStatus(status, absl::StrFormat("peer %d (%s) failed", peer->id,
                                              peer->name)));
}

ucs_status_t TransferEngineImpl::OnAm(void* arg, const void* header,
                                      size_t header_length, void* data,
                                      size_t length,
                                      const ucp_am_recv_param_t* param) {
  const auto* handler = static_cast<const AmHandlerArg*>(arg);
  TransferEngineImpl* self = handler->engine;
  if ((param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0 ||
      header_length != sizeof(uint64_t) || self->stopping_) {
    return UCS_OK;  // Not ours: we always send eager with an 8-byte header.
  }
  uint64_t conn_id = 0;
  std::memcpy(&conn_id, header, sizeof(conn_id));
  const auto bytes =
      absl::Span<const uint8_t>(static_cast<const uint8_t*>(data), length);
  if (handler->id != kAmHello) {
    // Any message from a connected peer proves it alive.
    if (Peer* peer = self->FindPeer(conn_id);
        peer != nullptr && peer->state == PeerState::kReady) {
      peer->last_heard = absl::Now();
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
      } else if (reply_ep != nullptr) {
        // A malformed hello on an accepted connection: drop the connection.
        auto it = self->accepting_.find(reply_ep);
        if (it != self->accepting_.end()) {
          self->FailPeer(self->FindPeer(it->second), hello.status());
        }
      }
      break;
    }
    case kAmHelloAck: {
      auto ack = ParseHelloAck(bytes);
      if (ack.ok()) {
        self->HandleHelloAck(*ack);
      } else if (Peer* peer = self->FindPeer(conn_id);
                 peer != nullptr && peer->state == PeerState::kConnecting) {
        self->FailPeer(peer, ack.status());
      }
      break;
    }
    case kAmReject: {
      auto reject = ParseReject(bytes);
      if (reject.ok()) self->HandleReject(*reject);
      break;
    }
    case kAmNotify:
      self->HandleNotification(conn_id, Notification::Kind::kTransfer, data,
                               length);
      break;
    case kAmMessage:
      self->HandleNotification(conn_id, Notification::Kind::kMessage, data,
                               length);
      break;
    default:
      break;
  }
  return UCS_OK;
}

absl::Status TransferEngineImpl::UnpackRegions(Peer* peer,
                                               const EngineInfo& info) {
  for (const WireRegion& wire : info.regions) {
    RemoteRegion region;
    region.info.id = wire.id;
    region.info.kind = static_cast<MemoryKind>(wire.kind);
    region.info.base = wire.base;
    region.info.length = wire.length;
    ucs_status_t st =
        ucp_ep_rkey_unpack(peer->ep, wire.rkey.data(), &region.rkey);
    if (st != UCS_OK) {
      return UcxStatus(st, absl::StrFormat("peer %d: remote key of region %d",
                                           peer->id, wire.id));
    }
    peer->regions[wire.id] = region;
  }
  return absl::OkStatus();
}

void TransferEngineImpl::MakeReady(Peer* peer, const EngineInfo& info,
                                   uint64_t remote_conn_id) {
  peer->state = PeerState::kReady;
  peer->was_ready = true;
  peer->name = info.name;
  peer->remote_conn_id = remote_conn_id;
  peer->handshake_deadline = absl::InfiniteFuture();
  peer->last_heard = absl::Now();
  accepting_.erase(peer->ep);
  PublishPeer(*peer);
}

void TransferEngineImpl::HandleHello(const Hello& hello, ucp_ep_h reply_ep) {
  Peer* peer = nullptr;
  if (hello.via_sockaddr) {
    if (reply_ep == nullptr) return;
    auto it = accepting_.find(reply_ep);
    if (it == accepting_.end()) return;
    peer = FindPeer(it->second);
    if (peer == nullptr || peer->state != PeerState::kAccepting) return;
  } else {
    // AddPeer: connect back to the sender's worker.
    peer = NewPeer();
    ucp_ep_params_t params{};
    params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS |
                        UCP_EP_PARAM_FIELD_ERR_HANDLER |
                        UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
    params.address = reinterpret_cast<const ucp_address_t*>(
        hello.info.worker_address.data());
    params.err_mode = ErrMode();
    params.err_handler.cb = &TransferEngineImpl::OnPeerError;
    params.err_handler.arg = peer;
    if (ucp_ep_create(worker_, &params, &peer->ep) != UCS_OK) {
      peer->ep = nullptr;
      peer->state = PeerState::kClosed;
      return;
    }
    peer->state = PeerState::kAccepting;
    peer->handshake_deadline = absl::Now() + options_.connect_timeout;
  }
  if (!ConstantTimeEquals(hello.token, options_.cluster_token)) {
    Reject reject;
    reject.receiver_conn_id = hello.sender_conn_id;
    reject.code = static_cast<uint32_t>(absl::StatusCode::kPermissionDenied);
    reject.reason =
        absl::StrFormat("engine \"%s\" refused \"%s\": wrong cluster token",
                        options_.name, hello.info.name);
    SendControl(peer, kAmReject, hello.sender_conn_id, EncodeReject(reject),
                false);
    peer->state = PeerState::kRejecting;
    peer->handshake_deadline = absl::Now() + kRejectLinger;
    accepting_.erase(peer->ep);
    return;
  }
  if (absl::Status s = UnpackRegions(peer, hello.info); !s.ok()) {
    FailPeer(peer, s);
    return;
  }
  HelloAck ack;
  ack.sender_conn_id = peer->id;
  ack.receiver_conn_id = hello.sender_conn_id;
  ack.token = options_.cluster_token;
  ack.info = BuildEngineInfo();
  // Ready (and visible in Peers()) before the client can see the ack.
  MakeReady(peer, hello.info, hello.sender_conn_id);
  SendControl(peer, kAmHelloAck, hello.sender_conn_id, EncodeHelloAck(ack),
              false);
}

void TransferEngineImpl::HandleHelloAck(const HelloAck& ack) {
  Peer* peer = FindPeer(ack.receiver_conn_id);
  if (peer == nullptr || peer->state != PeerState::kConnecting) return;
  if (!ConstantTimeEquals(ack.token, options_.cluster_token)) {
    FailPeer(peer, absl::PermissionDeniedError(absl::StrFormat(
                       "engine \"%s\" refused \"%s\": wrong cluster token",
                       options_.name, ack.info.name)));
    return;
  }
  if (absl::Status s = UnpackRegions(peer, ack.info); !s.ok()) {
    FailPeer(peer, s);
    return;
  }
  MakeReady(peer, ack.info, ack.sender_conn_id);
  if (peer->on_connected) {
    auto done = std::move(peer->on_connected);
    peer->on_connected = nullptr;
    done(peer->id);
  }
}

void TransferEngineImpl::HandleReject(const Reject& reject) {
  Peer* peer = FindPeer(reject.receiver_conn_id);
  if (peer == nullptr || peer->state != PeerState::kConnecting) return;
  FailPeer(peer,
           absl::Status(CodeFromWire(reject.code),
                        absl::StrCat("connection refused: ", reject.reason)));
}

void TransferEngineImpl::FailPeer(Peer* peer, absl::Status cause,
                                  uint64_t transfer_id,
                                  absl::Status transfer_status) {
  if (peer == nullptr) return;
  const PeerId id = peer->id;
  // Mark this peer's transfers; they are reported once the endpoint closed.
  for (auto& [tid, active] : active_) {
    if (active->peer != id || active->failing) continue;
    active->failing = true;
    if (tid == transfer_id) {
      active->failure_status = transfer_status;
    } else {
      active->failure_status = absl::UnavailableError(
          absl::StrFormat("transfer %d: peer %d (%s) disconnected: %s", tid, id,
                          peer->name, cause.message()));
      if (cause.code() == absl::StatusCode::kCancelled) {
        active->failure_status = cause;
      }
    }
  }
  if (peer->state == PeerState::kClosing) return;
  if (peer->state == PeerState::kClosed) {
    OnPeerClosed(id);
    return;
  }
  peer->state = PeerState::kClosing;
  peer->failure = cause;
  accepting_.erase(peer->ep);
  PublishPeer(*peer);
  // Closed from the top of the progress loop, never from inside a UCX
  // callback (UCX 1.13 crashes when an endpoint is closed while it is being
  // failed).
  pending_close_.push_back(id);
}

void TransferEngineImpl::ClosePendingPeers() {
  std::vector<PeerId> ids;
  ids.swap(pending_close_);
  for (PeerId id : ids) {
    Peer* peer = FindPeer(id);
    if (peer == nullptr || peer->state != PeerState::kClosing ||
        peer->ep == nullptr) {
      continue;
    }
    ucp_request_param_t param{};
    param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK |
                         UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS;
    param.flags = UCP_EP_CLOSE_FLAG_FORCE;
    param.cb.send = &TransferEngineImpl::OnCloseDone;
    auto* ctx = new RequestContext{this, 0, id, {}, 0};
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
  auto* ctx = static_cast<RequestContext*>(user_data);
  ctx->engine->OnPeerClosed(ctx->peer);
  ucp_request_free(request);
  delete ctx;
}

void TransferEngineImpl::OnPeerClosed(PeerId id) {
  Peer* peer = FindPeer(id);
  if (peer == nullptr) return;
  peer->state = PeerState::kClosed;
  peer->ep = nullptr;
  for (auto& [rid, region] : peer->regions) {
    if (region.rkey) ucp_rkey_destroy(region.rkey);
    region.rkey = nullptr;
  }
  PublishPeer(*peer);
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
}

// --- Transfers
// ----------------------------------------------------------------

void TransferEngineImpl::FinishTransfer(uint64_t transfer_id,
                                        absl::Status status) {
  auto it = active_.find(transfer_id);
  if (it == active_.end()) return;
  std::unique_ptr<Active> active = std::move(it->second);
  active_.erase(it);
  {
    TsanMutexLock lock(&mu_);
    for (RegionId region : active->local_regions) {
      auto r = regions_.find(region);
      if (r != regions_.end()) --r->second.active_users;
    }
  }
  active->record->Complete(std::move(status), absl::Now());
}

void TransferEngineImpl::StartTransfer(std::unique_ptr<Active> owned) {
  Active* active = owned.get();
  const uint64_t id = active->record->id();
  active_[id] = std::move(owned);
  Peer* peer = FindPeer(active->peer);
  if (stopping_) {
    FinishTransfer(id, absl::CancelledError("TransferEngine: shutting down"));
    return;
  }
  if (peer == nullptr || peer->state != PeerState::kReady) {
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
  // Local memory handles and bases (regions cannot go away: active_users).
  absl::flat_hash_map<RegionId, std::pair<char*, ucp_mem_h>> local;
  {
    TsanMutexLock lock(&mu_);
    for (RegionId region : active->local_regions) {
      const LocalRegion& r = regions_.at(region);
      local[region] = {reinterpret_cast<char*>(r.info.base), r.memh};
    }
  }
  const bool write = active->kind == TransferKind::kWrite;
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_MEMH;
  RegionId last_local = ~RegionId{0};
  RegionId last_remote = ~RegionId{0};
  char* local_base = nullptr;
  const RemoteRegion* remote = nullptr;
  for (const TransferOp& op : active->ops) {
    const RegionId local_id = write ? op.src_region : op.dst_region;
    const RegionId remote_id = write ? op.dst_region : op.src_region;
    if (local_id != last_local) {
      const auto& entry = local.at(local_id);
      local_base = entry.first;
      param.memh = entry.second;
      last_local = local_id;
    }
    if (remote_id != last_remote) {
      auto it = peer->regions.find(remote_id);
      remote = it == peer->regions.end() ? nullptr : &it->second;
      last_remote = remote_id;
    }
    if (remote == nullptr) {  // validated by the caller; cannot happen
      FinishTransfer(id, absl::InternalError("remote region vanished"));
      return;
    }
    const uint64_t local_offset = write ? op.src_offset : op.dst_offset;
    const uint64_t remote_offset = write ? op.dst_offset : op.src_offset;
    ucs_status_ptr_t request =
        write ? ucp_put_nbx(peer->ep, local_base + local_offset, op.length,
                            remote->info.base + remote_offset, remote->rkey,
                            &param)
              : ucp_get_nbx(peer->ep, local_base + local_offset, op.length,
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
  PostFlush(active, peer);
}

void TransferEngineImpl::PostFlush(Active* active, Peer* peer) {
  const uint64_t id = active->record->id();
  auto* ctx = new RequestContext{this, id, peer->id, {}, 0};
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  param.cb.send = &TransferEngineImpl::OnFlushDone;
  param.user_data = ctx;
  ucs_status_ptr_t request = ucp_ep_flush_nbx(peer->ep, &param);
  active->record->MarkPosted(absl::Now());
  if (UCS_PTR_IS_PTR(request)) return;
  OnFlushDone(nullptr, UCS_PTR_STATUS(request), ctx);
}

void TransferEngineImpl::OnFlushDone(void* request, ucs_status_t status,
                                     void* user_data) {
  auto* ctx = static_cast<RequestContext*>(user_data);
  TransferEngineImpl* self = ctx->engine;
  const uint64_t id = ctx->transfer_id;
  const PeerId peer_id = ctx->peer;
  if (request != nullptr) ucp_request_free(request);
  delete ctx;
  auto it = self->active_.find(id);
  if (it == self->active_.end() || it->second->failing) return;
  Active* active = it->second.get();
  Peer* peer = self->FindPeer(peer_id);
  if (status != UCS_OK) {
    const absl::Status failure = UcxStatus(
        status, absl::StrFormat("transfer %d: flush to peer %d", id, peer_id));
    self->FailPeer(peer, failure, id,
                   absl::UnavailableError(failure.message()));
    return;
  }
  if (active->notification.has_value()) {
    self->SendNotification(active, peer);
  } else {
    self->FinishTransfer(id, absl::OkStatus());
  }
}

void TransferEngineImpl::SendNotification(Active* active, Peer* peer) {
  const uint64_t id = active->record->id();
  const bool message = active->kind == TransferKind::kSend;
  auto* ctx = new RequestContext{
      this, id, peer->id,
      message ? std::move(active->message) : *std::move(active->notification),
      peer->remote_conn_id};
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK |
                       UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS;
  param.cb.send = &TransferEngineImpl::OnSendDone;
  param.user_data = ctx;
  param.flags = UCP_AM_SEND_FLAG_EAGER;
  ucs_status_ptr_t request = ucp_am_send_nbx(
      peer->ep, message ? kAmMessage : kAmNotify, &ctx->header,
      sizeof(ctx->header), ctx->payload.data(), ctx->payload.size(), &param);
  if (UCS_PTR_IS_PTR(request)) return;
  OnSendDone(nullptr, UCS_PTR_STATUS(request), ctx);
}

void TransferEngineImpl::OnSendDone(void* request, ucs_status_t status,
                                    void* user_data) {
  auto* ctx = static_cast<RequestContext*>(user_data);
  TransferEngineImpl* self = ctx->engine;
  const uint64_t id = ctx->transfer_id;
  const PeerId peer_id = ctx->peer;
  if (request != nullptr) ucp_request_free(request);
  delete ctx;
  if (id == 0) return;  // control message: failures reach the error handler
  auto it = self->active_.find(id);
  if (it == self->active_.end() || it->second->failing) return;
  if (status != UCS_OK) {
    const absl::Status failure = UcxStatus(
        status,
        absl::StrFormat("transfer %d: notification to peer %d", id, peer_id));
    self->FailPeer(self->FindPeer(peer_id), failure, id,
                   absl::UnavailableError(failure.message()));
    return;
  }
  self->FinishTransfer(id, absl::OkStatus());
}

void TransferEngineImpl::HandleCancel(
    const std::shared_ptr<TransferRecord>& record) {
  auto it = active_.find(record->id());
  if (it == active_.end() || it->second->failing) return;
  Active* active = it->second.get();
  const absl::Status status = absl::CancelledError(absl::StrFormat(
      "transfer %d to peer %d cancelled; the peer's endpoint was closed",
      record->id(), active->peer));
  Peer* peer = FindPeer(active->peer);
  if (peer == nullptr) {
    FinishTransfer(record->id(), status);
    return;
  }
  FailPeer(peer,
           absl::UnavailableError(absl::StrFormat(
               "peer %d: closed because transfer %d was cancelled", peer->id,
               record->id())),
           record->id(), status);
}

void TransferEngineImpl::HandleNotification(uint64_t conn_id,
                                            Notification::Kind kind,
                                            const void* data, size_t length) {
  Peer* peer = FindPeer(conn_id);
  if (peer == nullptr || peer->state != PeerState::kReady) return;
  Notification notification;
  notification.peer = peer->id;
  notification.kind = kind;
  notification.bytes.assign(static_cast<const char*>(data), length);
  if (options_.on_notification) {
    options_.on_notification(std::move(notification));
    return;
  }
  TsanMutexLock lock(&mu_);
  if (notifications_.size() >= options_.max_queued_notifications) {
    if (dropped_notifications_++ == 0) {
      std::fprintf(stderr,
                   "flowkv TransferEngine \"%s\": notification queue full "
                   "(%zu); dropping notifications\n",
                   options_.name.c_str(), options_.max_queued_notifications);
    }
    return;
  }
  notifications_.push_back(std::move(notification));
  notifications_cv_.SignalAll();
}

// --- Public entry points (any thread)
// -----------------------------------------

absl::StatusOr<RegionId> TransferEngineImpl::RegisterMemory(
    void* base, uint64_t length, MemoryKind kind, bool allocate,
    void** allocated_base) {
  if (length == 0) {
    return absl::InvalidArgumentError("RegisterMemory: length must be > 0");
  }
  if (!allocate && base == nullptr) {
    return absl::InvalidArgumentError("RegisterMemory: base is null");
  }
  if (kind != MemoryKind::kHost && kind != MemoryKind::kCudaDevice) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "RegisterMemory: unknown memory kind %d", static_cast<int>(kind)));
  }
  if (kind == MemoryKind::kCudaDevice && !cuda_supported_) {
    return absl::UnimplementedError(
        "RegisterMemory: CUDA device memory needs a UCX built with CUDA "
        "support (this UCX context reports no CUDA memory type; check "
        "`ucx_info -d` for cuda_copy / cuda_ipc transports)");
  }
  return RunSync<absl::StatusOr<RegionId>>([&]() -> absl::StatusOr<RegionId> {
    ucp_mem_map_params_t params{};
    params.field_mask =
        UCP_MEM_MAP_PARAM_FIELD_LENGTH | UCP_MEM_MAP_PARAM_FIELD_MEMORY_TYPE;
    params.length = length;
    params.memory_type = kind == MemoryKind::kCudaDevice ? UCS_MEMORY_TYPE_CUDA
                                                         : UCS_MEMORY_TYPE_HOST;
    if (allocate) {
      params.field_mask |= UCP_MEM_MAP_PARAM_FIELD_FLAGS;
      params.flags = UCP_MEM_MAP_ALLOCATE;
    } else {
      params.field_mask |= UCP_MEM_MAP_PARAM_FIELD_ADDRESS;
      params.address = base;
    }
    ucp_mem_h memh = nullptr;
    if (absl::Status s = UcxStatus(ucp_mem_map(context_, &params, &memh),
                                   allocate ? "AllocateMemory: ucp_mem_map"
                                            : "RegisterMemory: ucp_mem_map");
        !s.ok()) {
      return s;
    }
    void* address = base;
    if (allocate) {
      ucp_mem_attr_t attr{};
      attr.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS | UCP_MEM_ATTR_FIELD_LENGTH;
      if (absl::Status s = UcxStatus(ucp_mem_query(memh, &attr),
                                     "AllocateMemory: ucp_mem_query");
          !s.ok()) {
        ucp_mem_unmap(context_, memh);
        return s;
      }
      address = attr.address;
    }
    void* rkey_buffer = nullptr;
    size_t rkey_size = 0;
    if (absl::Status s =
            UcxStatus(ucp_rkey_pack(context_, memh, &rkey_buffer, &rkey_size),
                      "ucp_rkey_pack");
        !s.ok()) {
      ucp_mem_unmap(context_, memh);
      return s;
    }
    LocalRegion region;
    region.info.kind = kind;
    region.info.base = reinterpret_cast<uint64_t>(address);
    region.info.length = length;
    region.memh = memh;
    region.allocated = allocate;
    region.rkey.assign(static_cast<const char*>(rkey_buffer), rkey_size);
    ucp_rkey_buffer_release(rkey_buffer);
    TsanMutexLock lock(&mu_);
    region.info.id = next_region_id_++;
    const RegionId id = region.info.id;
    regions_[id] = std::move(region);
    if (allocated_base != nullptr) *allocated_base = address;
    return id;
  });
}

absl::Status TransferEngineImpl::DeregisterMemory(RegionId region) {
  return RunSync<absl::Status>([&]() -> absl::Status {
    ucp_mem_h memh = nullptr;
    {
      TsanMutexLock lock(&mu_);
      auto it = regions_.find(region);
      if (it == regions_.end()) {
        return absl::NotFoundError(
            absl::StrFormat("DeregisterMemory: no region %d", region));
      }
      if (it->second.active_users > 0) {
        return absl::FailedPreconditionError(absl::StrFormat(
            "DeregisterMemory: region %d is used by %d unfinished transfers",
            region, it->second.active_users));
      }
      memh = it->second.memh;
      regions_.erase(it);
    }
    return UcxStatus(ucp_mem_unmap(context_, memh), "ucp_mem_unmap");
  });
}

std::vector<RegionInfo> TransferEngineImpl::Regions() const {
  TsanMutexLock lock(&mu_);
  std::vector<RegionInfo> out;
  for (const auto& [id, region] : regions_) out.push_back(region.info);
  std::sort(
      out.begin(), out.end(),
      [](const RegionInfo& a, const RegionInfo& b) { return a.id < b.id; });
  return out;
}

absl::StatusOr<std::string> TransferEngineImpl::Listen(
    const std::string& address) {
  sockaddr_storage addr;
  socklen_t addr_len = 0;
  if (absl::Status s = ParseSockAddr(address, &addr, &addr_len); !s.ok()) {
    return s;
  }
  return RunSync<absl::StatusOr<std::string>>(
      [&]() -> absl::StatusOr<std::string> {
        if (listener_ != nullptr) {
          return absl::FailedPreconditionError(
              "Listen: the engine is already listening");
        }
        ucp_listener_params_t params{};
        params.field_mask = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR |
                            UCP_LISTENER_PARAM_FIELD_CONN_HANDLER;
        params.sockaddr.addr = reinterpret_cast<const sockaddr*>(&addr);
        params.sockaddr.addrlen = addr_len;
        params.conn_handler.cb = &TransferEngineImpl::OnConnRequest;
        params.conn_handler.arg = this;
        if (absl::Status s =
                UcxStatus(ucp_listener_create(worker_, &params, &listener_),
                          absl::StrCat("Listen(", address, ")"));
            !s.ok()) {
          listener_ = nullptr;
          return s;
        }
        ucp_listener_attr_t attr{};
        attr.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR;
        if (absl::Status s = UcxStatus(ucp_listener_query(listener_, &attr),
                                       "ucp_listener_query");
            !s.ok()) {
          return s;
        }
        std::string bound = FormatSockAddr(attr.sockaddr);
        TsanMutexLock lock(&mu_);
        listen_address_ = bound;
        return bound;
      });
}

absl::StatusOr<PeerId> TransferEngineImpl::Connect(const std::string& address) {
  sockaddr_storage addr;
  socklen_t addr_len = 0;
  if (absl::Status s = ParseSockAddr(address, &addr, &addr_len); !s.ok()) {
    return s;
  }
  struct Waiter {
    TsanNotification done;
    absl::StatusOr<PeerId> result = absl::UnknownError("pending");
  };
  auto waiter = std::make_shared<Waiter>();
  auto on_done = [waiter](absl::StatusOr<PeerId> result) {
    waiter->result = std::move(result);
    waiter->done.Notify();
  };
  absl::StatusOr<PeerId> started =
      RunSync<absl::StatusOr<PeerId>>([&]() -> absl::StatusOr<PeerId> {
        ucp_ep_params_t params{};
        params.field_mask =
            UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR;
        params.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
        params.sockaddr.addr = reinterpret_cast<const sockaddr*>(&addr);
        params.sockaddr.addrlen = addr_len;
        return StartConnect(params, /*via_sockaddr=*/true, on_done);
      });
  if (!started.ok()) return started.status();
  waiter->done.WaitForNotification();
  if (!waiter->result.ok()) {
    return absl::Status(waiter->result.status().code(),
                        absl::StrCat("Connect(", address,
                                     "): ", waiter->result.status().message()));
  }
  return waiter->result;
}

absl::StatusOr<std::string> TransferEngineImpl::LocalMetadata() const {
  return EncodeEngineInfo(BuildEngineInfo());
}

absl::StatusOr<PeerId> TransferEngineImpl::AddPeer(
    absl::Span<const uint8_t> metadata) {
  absl::StatusOr<EngineInfo> info = ParseEngineInfo(metadata);
  if (!info.ok()) {
    return absl::Status(info.status().code(),
                        absl::StrCat("AddPeer: ", info.status().message()));
  }
  struct Waiter {
    TsanNotification done;
    absl::StatusOr<PeerId> result = absl::UnknownError("pending");
  };
  auto waiter = std::make_shared<Waiter>();
  auto on_done = [waiter](absl::StatusOr<PeerId> result) {
    waiter->result = std::move(result);
    waiter->done.Notify();
  };
  absl::StatusOr<PeerId> started =
      RunSync<absl::StatusOr<PeerId>>([&]() -> absl::StatusOr<PeerId> {
        ucp_ep_params_t params{};
        params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS;
        params.address =
            reinterpret_cast<const ucp_address_t*>(info->worker_address.data());
        return StartConnect(params, /*via_sockaddr=*/false, on_done);
      });
  if (!started.ok()) return started.status();
  waiter->done.WaitForNotification();
  if (!waiter->result.ok()) {
    return absl::Status(waiter->result.status().code(),
                        absl::StrCat("AddPeer(\"", info->name, "\"): ",
                                     waiter->result.status().message()));
  }
  return waiter->result;
}

absl::Status TransferEngineImpl::Disconnect(PeerId id) {
  absl::Status status = RunSync<absl::Status>([&]() -> absl::Status {
    Peer* peer = FindPeer(id);
    if (peer == nullptr || !peer->was_ready) {
      return absl::NotFoundError(absl::StrFormat("Disconnect: no peer %d", id));
    }
    if (peer->state == PeerState::kReady) {
      FailPeer(peer, absl::UnavailableError(
                         absl::StrFormat("peer %d: disconnected locally", id)));
    }
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  // Wait until the endpoint closed.
  for (;;) {
    bool is_closed =
        RunSync<absl::StatusOr<bool>>([&]() -> absl::StatusOr<bool> {
          Peer* peer = FindPeer(id);
          return peer == nullptr || peer->state == PeerState::kClosed;
        }).value_or(true);
    if (is_closed) return absl::OkStatus();
    absl::SleepFor(absl::Milliseconds(1));
  }
}

std::vector<PeerInfo> TransferEngineImpl::Peers() const {
  TsanMutexLock lock(&mu_);
  std::vector<PeerInfo> out;
  for (const auto& [id, view] : views_) {
    PeerInfo info;
    info.id = id;
    info.name = view->name;
    info.connected = view->connected;
    info.failure = view->failure;
    for (const auto& [rid, region] : view->regions)
      info.regions.push_back(region);
    std::sort(
        info.regions.begin(), info.regions.end(),
        [](const RegionInfo& a, const RegionInfo& b) { return a.id < b.id; });
    out.push_back(std::move(info));
  }
  std::sort(out.begin(), out.end(),
            [](const PeerInfo& a, const PeerInfo& b) { return a.id < b.id; });
  return out;
}

absl::StatusOr<PeerInfo> TransferEngineImpl::GetPeer(PeerId id) const {
  for (PeerInfo& info : Peers()) {
    if (info.id == id) return std::move(info);
  }
  return absl::NotFoundError(absl::StrFormat("no peer %d", id));
}

TransferHandle TransferEngineImpl::Submit(TransferKind kind, PeerId peer_id,
                                          absl::Span<const TransferOp> ops,
                                          std::string message,
                                          TransferOptions options) {
  const absl::Time now = absl::Now();
  const uint64_t id = next_transfer_id_.fetch_add(1);
  uint64_t bytes = kind == TransferKind::kSend ? message.size() : 0;
  const char* what = kind == TransferKind::kWrite  ? "Write"
                     : kind == TransferKind::kRead ? "Read"
                                                   : "Send";
  auto active = std::make_unique<Active>();
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
    if (options.timeout.has_value() &&
        *options.timeout <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: timeout must be > 0, got %s", what,
                          absl::FormatDuration(*options.timeout)));
    }
    TsanMutexLock lock(&mu_);
    auto view_it = views_.find(peer_id);
    if (view_it == views_.end()) {
      return absl::NotFoundError(
          absl::StrFormat("%s: no peer %d", what, peer_id));
    }
    const PeerView& view = *view_it->second;
    if (!view.connected) {
      return absl::UnavailableError(absl::StrFormat(
          "%s: peer %d (%s) is disconnected (%s); connect again", what, peer_id,
          view.name, view.failure.message()));
    }
    const bool write = kind == TransferKind::kWrite;
    const LocalRegion* local = nullptr;
    const RegionInfo* remote = nullptr;
    for (size_t i = 0; i < ops.size(); ++i) {
      const TransferOp& op = ops[i];
      const RegionId local_id = write ? op.src_region : op.dst_region;
      const RegionId remote_id = write ? op.dst_region : op.src_region;
      const uint64_t local_offset = write ? op.src_offset : op.dst_offset;
      const uint64_t remote_offset = write ? op.dst_offset : op.src_offset;
      if (op.length == 0) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: op %d has length 0", what, i));
      }
      if (local == nullptr || local->info.id != local_id) {
        auto it = regions_.find(local_id);
        if (it == regions_.end()) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "%s: op %d names local region %d, which is not registered", what,
              i, local_id));
        }
        local = &it->second;
        if (active->local_regions.empty() ||
            std::find(active->local_regions.begin(),
                      active->local_regions.end(),
                      local_id) == active->local_regions.end()) {
          active->local_regions.push_back(local_id);
        }
      }
      if (remote == nullptr || remote->id != remote_id) {
        auto it = view.regions.find(remote_id);
        if (it == view.regions.end()) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "%s: op %d names region %d of peer %d, which the peer did not "
              "register (before the handshake)",
              what, i, remote_id, peer_id));
        }
        remote = &it->second;
      }
      uint64_t end = 0;
      if (__builtin_add_overflow(local_offset, op.length, &end) ||
          end > local->info.length) {
        return absl::OutOfRangeError(absl::StrFormat(
            "%s: op %d: local region %d range [%d, +%d) exceeds its %d bytes",
            what, i, local_id, local_offset, op.length, local->info.length));
      }
      if (__builtin_add_overflow(remote_offset, op.length, &end) ||
          end > remote->length) {
        return absl::OutOfRangeError(absl::StrFormat(
            "%s: op %d: region %d of peer %d range [%d, +%d) exceeds its %d "
            "bytes",
            what, i, remote_id, peer_id, remote_offset, op.length,
            remote->length));
      }
      bytes += op.length;
    }
    for (RegionId region : active->local_regions) {
      ++regions_[region].active_users;
    }
    return absl::OkStatus();
  }();

  auto record = std::make_shared<TransferRecord>(
      id, kind == TransferKind::kSend ? 0 : ops.size(), bytes, now,
      std::move(options.on_complete), inbox_);
  if (!status.ok()) {
    record->Complete(status, absl::Now());
    return TransferHandle(std::move(record));
  }
  active->record = record;
  active->kind = kind;
  active->peer = peer_id;
  active->ops.assign(ops.begin(), ops.end());
  active->notification = std::move(options.notification);
  active->message = std::move(message);
  active->deadline = now + options.timeout.value_or(options_.default_timeout);
  std::vector<RegionId> regions = active->local_regions;
  Active* raw = active.release();
  if (!inbox_->Post(
          [this, raw] { StartTransfer(std::unique_ptr<Active>(raw)); })) {
    delete raw;
    {
      TsanMutexLock lock(&mu_);
      for (RegionId region : regions) --regions_[region].active_users;
    }
    record->Complete(absl::CancelledError("TransferEngine: shutting down"),
                     absl::Now());
  }
  return TransferHandle(std::move(record));
}

std::vector<Notification> TransferEngineImpl::TakeNotifications(
    absl::Duration wait) {
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

}  // namespace flowkv
