// SPDX-License-Identifier: Apache-2.0
// TransferEngineImpl: the class behind TransferEngine, shared by the files
// that implement it. Each file owns one concept:
//
//   transfer_engine.cc     Create, Init (options), Shutdown, public wrappers
//   ucx_worker.{h,cc}      the UCX context and worker (RAII)
//   ucx_status.{h,cc}      ucs_status_t -> absl::Status, the one place
//   region_table.{h,cc}    registered regions, their users and bounds checks
//   memory.cc              RegisterMemory / AllocateMemory / DeregisterMemory
//   peer_table.{h,cc}      peers: state machine, failure, close, views
//   posting.cc             Submit, posting in windows, fences, notify, acks
//   am_data.cc             the active-message data method (PeerDataMethod::
//                          kActiveMessages): writes and reads as messages
//   progress.cc            the progress thread, timers, active-message dispatch
//   active_message.cc      SendAm: the one place a message is handed to UCX
//   transfer_record.h,     TransferRecord (behind TransferHandle) and the
//   transfer_handle.cc     Inbox through which callers reach the thread
//   engine_metrics.{h,cc}  the counters of Metrics() and the per-transfer
//                          timestamps of on_transfer_timing
//   fault_injection.{h,cc} the test-only UCX fault seam
//   engine_internal.{h,cc} the door for lib/kv (notification taps, local
//                          transfers, region lookup)
//   wireup/handshake.cc    Listen / Connect / AddPeer and the hello exchange
//   wireup/wire_format.h   the handshake and metadata wire format
//   wireup/am_header.h     the active-message ids and headers (wire format)
//   wireup/sock_addr.h     socket address parsing
//
// Threads. One progress thread owns the UCX worker and every member marked
// "progress thread" below; other threads reach it only through inbox_
// (RunSync for answers). Members guarded by a mutex are readable from any
// thread.
//
// Thread safety: the public entry points are thread-safe; the rest runs on
// the progress thread.

#ifndef FLOWKV_LIB_ENGINE_TRANSFER_ENGINE_IMPL_H_
#define FLOWKV_LIB_ENGINE_TRANSFER_ENGINE_IMPL_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <ucp/api/ucp.h>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "flowkv/transfer_engine.h"
#include "lib/common/tsan_lock.h"
#include "lib/engine/engine_internal.h"
#include "lib/engine/engine_metrics.h"
#include "lib/engine/peer_table.h"
#include "lib/engine/region_table.h"
#include "lib/engine/transfer_record.h"
#include "lib/engine/ucx_worker.h"
#include "lib/engine/wireup/am_header.h"
#include "lib/engine/wireup/wire_format.h"

namespace flowkv::internal {

inline constexpr uint64_t kMaxNotificationBytes = 1 << 20;

enum class TransferKind { kWrite, kRead, kSend };

// Where an unfinished transfer is.
enum class TransferPhase {
  kPosting,      // windows of ops are being posted (each ends with a flush)
  kNotifying,    // the notification (or message) is being sent
  kAwaitingAck,  // the notification was sent; waiting for the peer's ack
  kFencing,      // aborted over active messages: waiting for the fence ack
};

// A number no other engine of this process has (prepared.cc).
uint64_t NextEngineSerial();

// What a PreparedTransfer (flowkv/prepared_transfer.h) holds: ops checked
// once by the engine numbered `engine_serial`. Immutable.
struct PreparedOps {
  uint64_t engine_serial = 0;
  TransferKind kind = TransferKind::kWrite;
  PeerId peer = 0;
  std::vector<TransferOp> ops;
  uint64_t bytes = 0;
  std::vector<RegionId> local_regions;  // distinct
};

// An unfinished transfer (progress thread).
struct Active {
  std::shared_ptr<TransferRecord> record;
  TransferKind kind = TransferKind::kWrite;
  PeerId peer = 0;
  // The ops posted: owned_ops, or a PreparedTransfer's (kept alive here).
  absl::Span<const TransferOp> ops;
  std::vector<TransferOp> owned_ops;
  std::shared_ptr<const PreparedOps> prepared;
  std::optional<std::string> notification;
  std::string message;
  bool acknowledged = false;
  absl::Time deadline = absl::InfiniteFuture();
  std::vector<RegionId> local_regions;

  TransferPhase phase = TransferPhase::kPosting;
  // Posting cursor: ops[next_op] is posted up to op_posted bytes.
  size_t next_op = 0;
  uint64_t op_posted = 0;
  // A window is outstanding (its flush, or over active messages a Read's
  // replies): some posted bytes may still land.
  bool flush_in_flight = false;
  // Message-path Read: bytes of the outstanding window not yet arrived, and
  // the first error a reply reported.
  uint64_t read_bytes_pending = 0;
  absl::Status read_error;
  // Set by Cancel or the deadline: post nothing more, fence, then finish.
  absl::Status abort_status;
  // When the fence (the outstanding flush) must have completed, or the
  // peer is failed.
  absl::Time fence_deadline = absl::InfiniteFuture();
  // The peer is failing: reported with failure_status once it closed.
  bool failing = false;
  absl::Status failure_status;
  // For TransferEngineOptions::on_transfer_timing (engine_metrics.h).
  TransferTimes times;
};

// user_data of a UCX request.
struct RequestContext {
  TransferEngineImpl* engine = nullptr;
  uint64_t transfer_id = 0;  // 0: a control message
  PeerId peer = 0;
  std::string payload;  // AM bytes kept alive until completion
  // The encoded header, likewise: an AmHeader, or a DataHeader for the
  // data method's messages.
  AmHeaderBytes header{};
  DataHeaderBytes data_header{};
};

// What a completed request's context named.
struct CompletedRequest {
  TransferEngineImpl* engine = nullptr;
  uint64_t transfer_id = 0;
  PeerId peer = 0;
};

// In a UCX completion callback: frees the request and its RequestContext
// and returns what the context named.
inline CompletedRequest ReleaseRequest(void* request, void* user_data) {
  auto* ctx = static_cast<RequestContext*>(user_data);
  const CompletedRequest done{ctx->engine, ctx->transfer_id, ctx->peer};
  ucp_request_free(request);
  delete ctx;
  return done;
}

// arg of an endpoint's error handler. UCX may call the handler after the
// endpoint closed and its Peer left the table, so the handler gets the id,
// looks the peer up, and ignores a peer that is gone. Kept until shutdown.
struct PeerRef {
  TransferEngineImpl* engine = nullptr;
  PeerId id = 0;
};

// arg of an active-message handler.
struct AmHandlerArg {
  TransferEngineImpl* engine = nullptr;
  unsigned id = 0;
};

class TransferEngineImpl {
 public:
  explicit TransferEngineImpl(const TransferEngineOptions& options);
  ~TransferEngineImpl() { Shutdown(); }

  absl::Status Init();
  void Shutdown();

  // --- Public entry points (any thread) -----------------------------------
  absl::StatusOr<RegionId> RegisterMemory(void* base, uint64_t length,
                                          MemoryKind kind, bool allocate,
                                          void** allocated_base);
  absl::Status DeregisterMemory(RegionId region);
  std::vector<RegionInfo> Regions() const { return regions_.List(); }
  absl::StatusOr<std::string> Listen(const std::string& address);
  absl::StatusOr<PeerId> Connect(const std::string& address);
  absl::StatusOr<std::string> LocalMetadata() const;
  absl::StatusOr<PeerId> AddPeer(absl::Span<const uint8_t> metadata);
  absl::Status Disconnect(PeerId peer);
  std::vector<PeerInfo> Peers() const { return peers_.Views(); }
  absl::StatusOr<PeerInfo> GetPeer(PeerId peer) const {
    return peers_.View(peer);
  }
  // `prepared` (non-null): post its ops instead of `ops` (prepared.cc).
  TransferHandle Submit(TransferKind kind, PeerId peer,
                        absl::Span<const TransferOp> ops, std::string message,
                        TransferOptions options,
                        std::shared_ptr<const PreparedOps> prepared = nullptr);
  absl::StatusOr<PreparedTransfer> Prepare(TransferKind kind, PeerId peer,
                                           absl::Span<const TransferOp> ops);
  TransferHandle Post(const PreparedTransfer& prepared,
                      TransferOptions options);
  std::vector<Notification> TakeNotifications(absl::Duration wait);
  // Internal notification taps (KvTransfer's staging path): each tap sees
  // every notification on the progress thread before it is queued or handed
  // to on_notification; a tap returning true consumes it (kPeerDisconnected
  // is shown to every tap and always passed on). A tap must not block and
  // must not call back into the engine's tap methods. RemoveNotificationTap
  // returns once the tap is not running and will not run again.
  using NotificationTap = std::function<bool(const Notification&)>;
  uint64_t AddNotificationTap(NotificationTap tap);
  void RemoveNotificationTap(uint64_t id);
  // Internal notification checks (EngineInternal::NotificationCheck).
  using NotificationCheck = std::function<absl::Status(const Notification&)>;
  uint64_t AddNotificationCheck(NotificationCheck check);
  void RemoveNotificationCheck(uint64_t id);
  const std::string& name() const { return options_.name; }
  bool SupportsCudaMemory() const { return worker_->cuda_supported(); }
  std::string UcxInfo() const { return worker_->transports(); }
  TransferEngineStats Stats() const;
  TransferEngineMetrics Metrics() const {
    return metrics_.Snapshot(peers_.Views(),
                             ready_size_.load(std::memory_order_relaxed));
  }
  // The most bytes posted in one turn of the progress loop (see
  // EngineInternal::MaxBytesPostedPerTurn).
  uint64_t max_iteration_posted() const {
    return max_iteration_posted_.load(std::memory_order_relaxed);
  }

  // --- UCX callbacks (progress thread) ------------------------------------
  static void OnConnRequest(ucp_conn_request_h request, void* arg);
  static void OnPeerError(void* arg, ucp_ep_h ep, ucs_status_t status);
  static ucs_status_t OnAm(void* arg, const void* header, size_t header_length,
                           void* data, size_t length,
                           const ucp_am_recv_param_t* param);
  static void OnFlushDone(void* request, ucs_status_t status, void* user_data);
  static void OnSendDone(void* request, ucs_status_t status, void* user_data);
  static void OnCloseDone(void* request, ucs_status_t status, void* user_data);

 private:
  // Runs `fn` on the progress thread and returns its result;
  // FailedPrecondition when called on the progress thread itself (from a
  // callback, where waiting would deadlock) or while shutting down.
  template <typename T>
  T RunSync(std::function<T()> fn) const;
  // FailedPrecondition naming `what` when called on the progress thread.
  absl::Status CheckNotProgressThread(const char* what) const;

  // The engine's log (options_.log or stderr for warnings and errors).
  void Log(LogSeverity severity, const std::string& message) const;

  // progress.cc
  void ProgressLoop();
  bool HasWork() const;
  void CheckTimers(absl::Time now);
  void CheckHeartbeats(absl::Time now);
  void HandleNotification(Peer* peer, const AmHeader& header,
                          Notification::Kind kind, const void* data,
                          size_t length);
  void Deliver(Notification notification);

  // handshake.cc
  absl::StatusOr<PeerId> StartConnect(
      const ucp_ep_params_t& base_params, bool via_sockaddr,
      std::function<void(absl::StatusOr<PeerId>)> done);
  absl::StatusOr<PeerId> AwaitConnect(
      const std::string& what, std::function<absl::StatusOr<PeerId>(
                                   std::function<void(absl::StatusOr<PeerId>)>)>
                                   start);
  // Whether a peer's worker address may reach ucp_ep_create: its UCX
  // version and address format are readable here (FailedPrecondition) and
  // its structure checks (InvalidArgument); wireup/ucx_address.h.
  absl::Status CheckPeerWorkerAddress(uint32_t ucx_version,
                                      uint8_t address_format,
                                      const std::string& address) const;
  void HandleHello(const Hello& hello, ucp_ep_h reply_ep);
  void HandleChallenge(const Challenge& challenge);
  // `conn_id`: the AmHeader's (this engine's wire id for the connection).
  void HandleProof(const HandshakeProof& proof, uint64_t conn_id);
  void HandleWelcome(const HandshakeProof& welcome);
  // Accepted connections still in their handshake (or lingering refused).
  size_t PendingHandshakes() const;
  // Whether one more handshake may start (max_pending_handshakes); logs
  // refusals, `what` naming what was refused.
  bool AdmitHandshake(const char* what);
  // The token an accepted connection's handshake runs under.
  const std::string& TokenFor(const Peer& peer) const {
    return peer.secondary_token ? *options_.secondary_cluster_token
                                : options_.cluster_token;
  }
  // Refuses an accepted connection (PermissionDenied to the client, logged).
  void RejectPeer(Peer* peer, uint64_t client_conn_id, std::string reason);
  void HandleReject(const Reject& reject);
  absl::Status UnpackRegions(Peer* peer, const EngineInfo& info);
  void MakeReady(Peer* peer, const EngineInfo& info, uint64_t remote_conn_id);
  EngineInfo BuildEngineInfo() const;
  void SendControl(Peer* peer, unsigned am_id, AmHeader header,
                   std::string payload, bool reply);

  // peer_table.cc (the engine's side of the peer state machine)
  Peer* NewPeer();
  // The error-handler arg for `peer`'s endpoint.
  PeerRef* PeerRefFor(const Peer* peer);
  ucp_err_handling_mode_t ErrMode() const {
    return options_.ucx_peer_error_handling ? UCP_ERR_HANDLING_MODE_PEER
                                            : UCP_ERR_HANDLING_MODE_NONE;
  }
  // Force-closes the peer's endpoint; once closed, fails its unfinished
  // transfers (`transfer_id` with `transfer_status`, the others with
  // Unavailable) and a pending Connect with `cause`, then drops the peer
  // from the table. Logged once. A peer already gone (null) only finishes
  // `transfer_id` with `transfer_status`.
  void FailPeer(Peer* peer, absl::Status cause, uint64_t transfer_id = 0,
                absl::Status transfer_status = absl::OkStatus());
  void OnPeerClosed(PeerId peer);
  void ClosePendingPeers();
  // The stop handshake of Disconnect: the peer asks this engine to stop
  // writing to it (abort and fence every transfer to it, then confirm and
  // close); the peer confirms this engine's request.
  void HandleStop(Peer* peer);
  void ConfirmStops();
  void HandleStopAck(Peer* peer);

  // posting.cc
  void StartTransfer(std::unique_ptr<Active> active);
  void PostReady();
  void PostWindow(Active* active, Peer* peer);
  void PostFlush(Active* active, Peer* peer);
  void AfterFlush(uint64_t transfer_id, PeerId peer_id, ucs_status_t status);
  void SendNotification(Active* active, Peer* peer);
  void AfterNotification(uint64_t transfer_id, PeerId peer_id,
                         ucs_status_t status);
  // `status`: OK, or the receiver's refusal of the notification.
  void HandleAck(Peer* peer, uint64_t transfer_id, absl::Status status);

  // am_data.cc: bytes as active messages, for peers whose endpoint
  // has no one-sided put or get (UCX would emulate them; see there).
  // Post the part [op_offset, +length) of `op` that fits this window; false
  // when posting failed (the peer is then failing).
  bool PostDataMessage(Peer* peer, const TransferOp& op, uint64_t op_offset,
                       uint64_t length, const char* local);
  bool PostReadRequest(Active* active, Peer* peer, const TransferOp& op,
                       uint64_t op_offset, uint64_t length);
  void HandleDataPath(unsigned am_id, const DataHeader& header,
                      const void* data, size_t length);
  void HandleData(Peer* peer, const DataHeader& header, const void* data,
                  size_t length);
  void HandleReadRequest(Peer* peer, const DataHeader& header);
  void HandleReadData(Peer* peer, const DataHeader& header, const void* data,
                      size_t length);
  // Sends a data-path message; `data` must stay valid until it completed.
  // active_message.cc: hands one message to UCX. `ctx` (which keeps the
  // header and data alive) is freed by `callback` when UCX completes it
  // later (returns UCS_INPROGRESS), or here when it completed or failed at
  // once (returns that status).
  ucs_status_t SendAm(Peer* peer, unsigned am_id, RequestContext* ctx,
                      const void* header, size_t header_bytes, const void* data,
                      size_t length, ucp_send_nbx_callback_t callback,
                      uint32_t flags);
  // false (and the peer failing) when UCX refused it.
  bool SendDataMessage(Peer* peer, unsigned am_id, const DataHeader& header,
                       const void* data, uint64_t length);
  static void OnDataSent(void* request, ucs_status_t status, void* user_data);
  void FinishTransfer(uint64_t transfer_id, absl::Status status);
  void HandleCancel(const std::shared_ptr<TransferRecord>& record);
  // Stops `active` (Cancel, deadline, Disconnect): nothing more is posted;
  // it finishes with `status` once no byte of it can still land.
  void Abort(Active* active, absl::Status status, absl::Time now);
  // Finishes an aborted transfer with no window outstanding, once none of
  // its bytes can still land: at once, or over active messages after the
  // peer acknowledged a fence.
  void FinishAborted(Active* active);

  const TransferEngineOptions options_;
  std::unique_ptr<UcxWorker> worker_;
  uint64_t instance_id_ = 0;
  std::shared_ptr<Inbox> inbox_;
  std::thread thread_;
  std::vector<AmHandlerArg> am_args_;
  std::atomic<uint64_t> next_transfer_id_{1};
  // Tells this engine's PreparedTransfers from other engines' (prepared.cc).
  const uint64_t serial_;
  std::atomic<uint64_t> active_count_{0};
  // Counters of Metrics() (engine_metrics.h); ready_'s length for it.
  EngineMetrics metrics_;
  std::atomic<uint64_t> ready_size_{0};

  // Progress-thread state.
  absl::Time last_heartbeat_check_ = absl::InfinitePast();
  absl::Time last_activity_ = absl::InfinitePast();
  // Bytes posted in this loop iteration, and the most in any (Stats).
  uint64_t iteration_posted_ = 0;
  std::atomic<uint64_t> max_iteration_posted_{0};
  bool stopping_ = false;
  ucp_listener_h listener_ = nullptr;
  PeerId next_peer_id_ = 1;
  uint64_t handshakes_refused_for_load_ = 0;
  PeerTable peers_;
  std::deque<PeerRef> peer_refs_;
  absl::flat_hash_map<uint64_t, std::unique_ptr<Active>> active_;
  // Transfers ready to post their next window, in order.
  std::deque<uint64_t> ready_;
  std::vector<PeerId> pending_close_;

  // Shared state.
  RegionTable regions_;
  mutable absl::Mutex mu_;
  std::deque<Notification> notifications_ ABSL_GUARDED_BY(mu_);
  absl::CondVar notifications_cv_;
  uint64_t messages_dropped_ ABSL_GUARDED_BY(mu_) = 0;
  // Held while taps run (never together with mu_).
  mutable absl::Mutex taps_mu_;
  std::vector<std::pair<uint64_t, NotificationTap>> taps_
      ABSL_GUARDED_BY(taps_mu_);
  uint64_t next_tap_id_ ABSL_GUARDED_BY(taps_mu_) = 1;
  std::vector<std::pair<uint64_t, NotificationCheck>> checks_
      ABSL_GUARDED_BY(taps_mu_);
  bool queue_full_logged_ ABSL_GUARDED_BY(mu_) = false;
  std::string listen_address_ ABSL_GUARDED_BY(mu_);
};

template <typename T>
T TransferEngineImpl::RunSync(std::function<T()> fn) const {
  if (absl::Status s = CheckNotProgressThread("a blocking call"); !s.ok()) {
    return T(s);
  }
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

}  // namespace flowkv::internal

#endif  // FLOWKV_LIB_ENGINE_TRANSFER_ENGINE_IMPL_H_
