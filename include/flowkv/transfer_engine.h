// SPDX-License-Identifier: Apache-2.0
// TransferEngine: moves bytes between registered memory regions of two
// processes over UCX (RDMA, TCP or shared memory, whatever UCX selects), with
// one network call per TransferOp.
//
//   flowkv::TransferEngineOptions options;
//   options.name = "prefill-0";
//   options.cluster_token = "secret shared by the cluster";
//   auto engine = flowkv::TransferEngine::Create(options);
//   if (!engine.ok()) return engine.status();
//   auto pool = (*engine)->AllocateMemory(layout.total_bytes());  // region 0
//   auto peer = (*engine)->Connect("10.0.0.7:13337");
//   std::vector<flowkv::TransferOp> ops = ...;  // e.g. from PlanTransfer
//   flowkv::TransferHandle handle =
//       (*engine)->Write(*peer, ops, {.notification = "request-42"});
//   if (absl::Status s = handle.Wait(); !s.ok()) ...
//
// Regions. Each engine numbers its registered regions 0, 1, 2, ... in the
// order RegisterMemory / AllocateMemory succeed (ids are never reused), so an
// engine that registers a pool's regions first, in order, gets region ids
// equal to the KvLayout region indices. Register every region at start-up,
// before peers connect: the handshake sends the regions registered at that
// moment, and a region registered later is known only to peers that connect
// (or AddPeer) afterwards; connected peers do not learn of it.
//
// Op convention. For Write(peer, ops) the local engine is the source:
// src_region/src_offset name local memory, dst_region/dst_offset name the
// peer's memory. For Read(peer, ops) the peer is the source: src_region /
// src_offset name the PEER's memory and dst_region/dst_offset name local
// memory. In both cases the ops are TransferOp exactly as a plan from the
// sender's layout to the receiver's layout produces them.
//
// Connections. Listen() / Connect() use UCX's own socket-address connection
// establishment; LocalMetadata() / AddPeer() serve engines that exchange
// metadata through their own side channel. Either way a handshake over the
// new endpoint checks the protocol version and proves on both sides that
// the peer holds the same cluster token, by a challenge and response over
// both sides' fresh random nonces: the token itself never crosses the
// network and a recorded handshake replayed later is refused (a peer with a
// different token is refused and never appears in Peers()). The handshake
// then exchanges the region tables with packed remote keys. Traffic after
// the handshake is neither encrypted nor authenticated: see
// docs/security.md for what the token protects and what it does not.
//
// Failures and aborts. Ops are posted in windows of at most
// options.max_window_bytes, each closed by a flush. Cancel() and a missed
// deadline stop that transfer only: nothing more of it is posted, and it is
// reported (Cancelled / DeadlineExceeded) once the flush of its last posted
// window completed (the fence; over PeerDataMethod::kActiveMessages also a
// fence message the peer acknowledges after applying everything before
// it), so none of its bytes can still land. The peer's other transfers
// continue. When a fence does not complete within
// peer_failure_timeout, or UCX reports the endpoint broken, the peer is
// failing: the engine force-closes its endpoint and only then reports the
// failure of every unfinished transfer to it (Unavailable), so no late write
// lands in memory the caller reuses. A failed peer is disconnected for good
// (connect again for a new PeerId); Notification::Kind::kPeerDisconnected
// tells the caller. A dead peer is detected by UCX's error handling (peer
// error mode with keepalive every peer_failure_timeout / 2) or, with
// ucx_peer_error_handling = false, by the engine's heartbeats.
//
// What "done" guarantees, per transport:
//   * OK without `acknowledged`: every byte was handed to the transport and
//     flushed (one-sided paths: it is in the peer's memory, even if the peer
//     just died; kActiveMessages: it is on its way, ahead of the
//     notification, and the peer applies it before it delivers the
//     notification); the notification was handed to the network.
//   * OK with TransferOptions::acknowledged: additionally the peer's engine
//     received the notification and queued it: the receiving process was
//     alive after the data landed.
//   * Failure: no byte of the transfer can land afterwards in this engine's
//     or the peer's memory, except that after a peer failure (not a
//     cancel or deadline) bytes of kActiveMessages already in the socket
//     may still be applied by the receiving engine before it sees the
//     connection break; a receiver reuses blocks only once told to (a
//     notification, a KvTransfer failure) or once Peers() shows the sender
//     disconnected.
//   * Receiver side: Disconnect() asks the sender to stop and fence before
//     it closes, and returns OK only when nothing more can land (see
//     there). Over tcp bytes move as messages that this engine applies
//     itself (PeerDataMethod::kActiveMessages), so nothing lands after the
//     close.

// Transports (UCX 1.13). Listen/Connect set the connection up through UCX's
// tcp socket connection manager, so UCX_TLS must include tcp for them (with
// shared memory e.g. UCX_TLS=posix,cma,self,tcp: the data then moves over
// shared memory); without tcp use LocalMetadata/AddPeer. Shared-memory
// transports also require ucx_peer_error_handling = false (see there).
//
// Thread safety: thread-safe. Every public method may be called from any
// thread. One internal progress thread owns the UCX context and worker; the
// methods hand it work and, for the blocking ones (RegisterMemory,
// AllocateMemory, DeregisterMemory, Listen, Connect, AddPeer, Disconnect,
// Stats), wait for its answer. Completion, notification and log callbacks
// run on the progress thread: they must not block. The blocking methods and
// TransferHandle::Wait() called there return FailedPrecondition (Wait(d):
// false) instead of deadlocking; Write, Read, Send, Cancel and
// TakeNotifications without a wait are fine.

#ifndef FLOWKV_TRANSFER_ENGINE_H_
#define FLOWKV_TRANSFER_ENGINE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "flowkv/export.h"
#include "flowkv/prepared_transfer.h"
#include "flowkv/transfer_handle.h"
#include "flowkv/transfer_metrics.h"
#include "flowkv/transfer_types.h"

namespace flowkv {

// A region the engine allocated (AllocateMemory).
struct AllocatedRegion {
  RegionId id = 0;
  void* data = nullptr;
  uint64_t length = 0;
};

// How the bytes of a Write (or a Read) to a peer move.
enum class PeerDataMethod : uint8_t {
  // One-sided puts / gets into the peer's registered memory (RDMA, shared
  // memory, cross-memory attach).
  kRma = 0,
  // Active messages whose handler on the receiving engine copies the bytes
  // into its region. Chosen where UCX has no one-sided operation for the
  // connection (tcp) and would emulate it: UCX 1.13's emulation aborts the
  // receiving process when the sender dies mid-write.
  kActiveMessages = 1,
};

struct PeerInfo {
  PeerId id = 0;
  std::string name;        // The peer engine's options.name.
  bool connected = false;  // False once the endpoint failed or closed.
  absl::Status failure;    // Why it disconnected (OK while connected).
  std::vector<RegionInfo> regions;
  // How this engine's Writes to / Reads from the peer move their bytes.
  PeerDataMethod write_method = PeerDataMethod::kRma;
  PeerDataMethod read_method = PeerDataMethod::kRma;
};

// A notification or message received from a peer, or news of a peer.
struct Notification {
  enum class Kind : uint8_t {
    kTransfer = 0,  // TransferOptions::notification of a finished Write/Read.
    kMessage = 1,   // The bytes of a Send().
    // A peer that had completed its handshake disconnected or failed; bytes
    // holds the reason. Delivered once per peer, after its endpoint closed
    // (so after every transfer to or from it ended).
    kPeerDisconnected = 2,
  };
  PeerId peer = 0;
  Kind kind = Kind::kTransfer;
  std::string bytes;
};

// Severity of a TransferEngineOptions::log message.
enum class LogSeverity : uint8_t { kInfo = 0, kWarning = 1, kError = 2 };

// What the engine holds right now (TransferEngine::Stats).
struct TransferEngineStats {
  // Peers in the progress thread's peer table: connecting, connected, or
  // closing with transfers still to finish. Closed peers leave the table,
  // so this does not grow with the connections an engine has ever had.
  uint64_t peers_tracked = 0;
  // Peers whose handshake completed and whose endpoint is open.
  uint64_t peers_connected = 0;
  // Peers that ever completed a handshake and are still listed by Peers().
  uint64_t peers_listed = 0;
  // Transfers accepted and not yet done.
  uint64_t transfers_active = 0;
  // Notifications of kind kMessage dropped because the queue was full.
  uint64_t messages_dropped = 0;
  // Bytes registered or allocated (all regions).
  uint64_t registered_bytes = 0;
};

struct TransferEngineOptions {
  // Name sent to peers in the handshake (PeerInfo::name on their side).
  // Default: "flowkv". At most 255 bytes.
  std::string name = "flowkv";
  // Secret shared by the engines of one cluster; peers must prove they hold
  // the same bytes (it is never sent). Use at least 16 random bytes: a
  // recorded handshake lets its recorder test guesses offline. Default:
  // empty (only engines with an empty token connect). At most 4096 bytes.
  std::string cluster_token;
  // A second token this engine accepts from peers, for rotating the token
  // without a flag day (docs/security.md): a peer that proves it holds
  // either connects, and AddPeer accepts metadata signed with either. The
  // engine's own hellos, metadata and proofs to peers that used
  // cluster_token use cluster_token. Default: none. At most 4096 bytes.
  std::optional<std::string> secondary_cluster_token;
  // Deadline of a transfer whose TransferOptions::timeout is unset.
  // Default: 30 s.
  absl::Duration default_timeout = absl::Seconds(30);
  // How dead peers are detected.
  //   true:  UCX peer error handling (UCP_ERR_HANDLING_MODE_PEER): UCX
  //          reports broken connections and runs keepalive every
  //          peer_failure_timeout / 2 (unless UCX_KEEPALIVE_INTERVAL is set
  //          in the environment or ucx_config). UCX 1.13's shared-memory
  //          transports (posix, sysv, cma) do not support it, so a peer on
  //          the same host is reached over tcp.
  //   false: no UCX error handling, which lets UCX use shared memory; the
  //          engine sends heartbeats every peer_failure_timeout / 4 and
  //          declares a peer dead after peer_failure_timeout of silence.
  //          Use it only with shared-memory transports (UCX_TLS without tcp
  //          or rdma): a network failure without UCX error handling is
  //          undefined behaviour in UCX.
  // Default: true.
  bool ucx_peer_error_handling = true;
  // Bound on detecting a dead peer (see ucx_peer_error_handling).
  // Default: 2 s.
  absl::Duration peer_failure_timeout = absl::Seconds(2);
  // Bound on Connect() / AddPeer() (connection + handshake), and on an
  // accepted connection that does not complete its handshake. Default: 10 s.
  absl::Duration connect_timeout = absl::Seconds(10);
  // Accepted connections still in their handshake (plus refused ones whose
  // refusal is still being delivered) beyond this are refused at once:
  // the memory and work that clients which connect and never finish the
  // handshake can cost is bounded by it, each for at most connect_timeout.
  // Must be > 0. Default: 128.
  size_t max_pending_handshakes = 128;
  // UCX configuration applied on top of the UCX_* environment, as (name
  // without the "UCX_" prefix, value), e.g. {"TLS", "tcp"},
  // {"NET_DEVICES", "lo"}. A value UCX cannot parse is InvalidArgument; an
  // unknown name only makes UCX print a warning. Default: none.
  std::vector<std::pair<std::string, std::string>> ucx_config;
  // Progress thread: false spins while a transfer or connection is in
  // flight and for idle_spin after the last activity, then sleeps on the
  // worker's event fd; true always spins (one busy core). Default: false.
  bool busy_poll = false;
  // How long an idle progress thread keeps spinning after its last activity
  // (a transfer finished, a message arrived, a call was made) before it
  // sleeps. Back-to-back small transfers and their notifications then see
  // spinning latency without a core spinning forever. Must be >= 0.
  // Default: 200 us.
  absl::Duration idle_spin = absl::Microseconds(200);
  // Called on the progress thread for every notification and message
  // received; when set, TakeNotifications() returns nothing. Default: none
  // (notifications are queued for TakeNotifications()).
  std::function<void(Notification)> on_notification;
  // Queued notifications of kind kMessage beyond this are dropped (logged
  // once per burst and counted in Stats().messages_dropped). Notifications
  // of kind kTransfer and kPeerDisconnected are never dropped: each stands
  // for a transfer that finished, which the receiver must not lose.
  // Default: 1 << 20.
  size_t max_queued_notifications = size_t{1} << 20;
  // Receives the engine's log: every peer failure, refused handshake and
  // dropped notification, once, naming the peer. Called from any engine
  // thread (usually the progress thread): it must not block or call back
  // into the engine. Default: none, which writes warnings and errors to
  // stderr.
  std::function<void(LogSeverity, std::string_view)> log;
  // Ops longer than this are posted in windows of at most this many bytes,
  // and the progress thread serves timers, heartbeats, cancels and other
  // transfers between windows. Default: 4 MiB. Must be > 0.
  uint64_t max_window_bytes = uint64_t{4} << 20;
  // Upper bound on the bytes all regions of this engine may register or
  // allocate together; AllocateMemory and RegisterMemory beyond it fail
  // with ResourceExhausted before UCX is asked. 0: no cap of the engine's
  // own (AllocateMemory is still checked against the free space of the
  // shared-memory file system when it backs the allocation). Default: 0.
  uint64_t max_registered_bytes = 0;
  // Called on the progress thread with the timing of every transfer the
  // engine accepted (not of those Write/Read/Send refused at once), when it
  // is done, just before its on_complete and before Wait() returns. Same
  // rules as on_notification: it must not block or call back into the
  // engine. Default: none (no timestamps are taken beyond TransferStats').
  std::function<void(const TransferTiming&)> on_transfer_timing;
};

struct TransferOptions {
  // Sent to the peer as a Notification of kind kTransfer after all ops of
  // this transfer completed. Default: none. At most 1 MiB.
  std::optional<std::string> notification;
  // Deadline, counted from the call. Default: the engine's default_timeout.
  std::optional<absl::Duration> timeout;
  // Called once when the transfer is done, with its status and stats,
  // before Wait() returns: on the progress thread, or on the calling thread
  // when Write/Read/Send refuses the transfer before posting. Default: none.
  std::function<void(const absl::Status&, const TransferStats&)> on_complete;
  // Requires `notification`. When true the transfer is done (OK) only after
  // the peer's engine received the notification and acknowledged it, so a
  // receiver that died or vanished mid-transfer fails the transfer with
  // Unavailable (within peer_failure_timeout) instead of completing it.
  // Default: false (done once the notification was handed to the network).
  bool acknowledged = false;
};

namespace internal {
class TransferEngineImpl;
class EngineInternal;
}  // namespace internal

class FLOWKV_EXPORT TransferEngine {
 public:
  // Creates the UCX context and worker and starts the progress thread.
  // InvalidArgument for bad options (name, token, non-positive durations, a
  // UCX configuration name or value UCX rejects); Unavailable / Internal
  // when UCX cannot start.
  static absl::StatusOr<std::unique_ptr<TransferEngine>> Create(
      const TransferEngineOptions& options);

  // Force-closes every endpoint and listener, fails every unfinished
  // transfer with Cancelled, stops the progress thread, and deregisters
  // (and frees, for AllocateMemory) all regions. Blocks until done.
  ~TransferEngine();

  TransferEngine(const TransferEngine&) = delete;
  TransferEngine& operator=(const TransferEngine&) = delete;

  // --- Memory ---------------------------------------------------------------

  // Registers caller-owned memory [base, base + length). The memory must stay
  // valid until DeregisterMemory or the engine's destruction.
  // kCudaDevice memory is registered with UCX as CUDA memory
  // (UCS_MEMORY_TYPE_CUDA) when SupportsCudaMemory().
  // InvalidArgument for a null base or zero length; Unimplemented for
  // kCudaDevice when UCX was built without CUDA support (Debian's: give
  // KvTransfer a flowkv::cuda::CudaPoolMemory instead, docs/gpu.md); a UCX
  // error otherwise.
  absl::StatusOr<RegionId> RegisterMemory(void* base, uint64_t length,
                                          MemoryKind kind = MemoryKind::kHost);

  // Allocates and registers `length` bytes owned by the engine (freed by
  // DeregisterMemory or the engine's destruction). Host memory comes from
  // UCX's allocator, shared-memory backed where a shared-memory transport is
  // enabled, so a peer on the same host copies into it directly: prefer it
  // to RegisterMemory for KV pools. Errors as RegisterMemory.
  absl::StatusOr<AllocatedRegion> AllocateMemory(
      uint64_t length, MemoryKind kind = MemoryKind::kHost);

  // Deregisters a region (and frees it if the engine allocated it).
  // NotFound for an unknown id; FailedPrecondition while an unfinished
  // transfer uses it. Peers that know the region keep its id; their later
  // transfers to it fail at the network level (the region's remote key no
  // longer matches), so deregister only after telling them.
  absl::Status DeregisterMemory(RegionId region);

  std::vector<RegionInfo> Regions() const;

  // --- Peers ----------------------------------------------------------------

  // Starts accepting connections on "ip:port" (IPv4, or IPv6 as
  // "[addr]:port"); port 0 picks a free port. Returns the bound address.
  // FailedPrecondition when already listening; InvalidArgument for a
  // malformed address; a UCX error (e.g. Unavailable: address in use).
  absl::StatusOr<std::string> Listen(const std::string& address);

  // Connects to a listening engine and runs the handshake.
  // InvalidArgument for a malformed address; PermissionDenied when either
  // side refuses the cluster token; FailedPrecondition for an incompatible
  // protocol version; Unavailable when the peer cannot be reached or drops
  // the connection; DeadlineExceeded after options.connect_timeout.
  absl::StatusOr<PeerId> Connect(const std::string& address);

  // This engine's worker address and region table (no token), for
  // AddPeer() on another engine.
  absl::StatusOr<std::string> LocalMetadata() const;

  // Connects to the engine whose LocalMetadata() is `metadata` and runs the
  // same handshake as Connect (so the token is checked on both sides).
  // InvalidArgument when `metadata` is malformed (it is fully validated
  // before use); other errors as Connect.
  absl::StatusOr<PeerId> AddPeer(absl::Span<const uint8_t> metadata);
  absl::StatusOr<PeerId> AddPeer(const std::string& metadata);

  // Checks a LocalMetadata() blob as AddPeer does (structure, limits,
  // checksum, protocol version) without connecting. InvalidArgument or
  // FailedPrecondition as AddPeer.
  static absl::Status ValidateMetadata(absl::Span<const uint8_t> metadata);

  // Disconnects `peer`. First asks the peer to stop writing here: it aborts
  // and fences every transfer to this engine and confirms; then the
  // endpoint is closed (force), this engine's own unfinished transfers to
  // the peer fail with Unavailable, and the peer leaves Peers()'s connected
  // set. Blocks until closed, at most about peer_failure_timeout.
  //   OK: no byte from the peer can land in this engine's memory any more
  //       (the peer confirmed, or UCX's error handling closed the
  //       connection: ucx_peer_error_handling = true).
  //   DeadlineExceeded: the endpoint is closed, but a peer that did not
  //       confirm (stopped, hung) over shared memory may still write into
  //       this engine's memory until it notices: keep the blocks it
  //       targeted out of reuse until its process is gone.
  //   NotFound for an unknown peer; OK for one already disconnected;
  //   FailedPrecondition on the progress thread (from a callback).
  absl::Status Disconnect(PeerId peer);

  // The connected peers and the disconnected ones (with their failure).
  std::vector<PeerInfo> Peers() const;
  absl::StatusOr<PeerInfo> GetPeer(PeerId peer) const;

  // --- Transfers ------------------------------------------------------------

  // Copies every op from local memory to the peer's memory (see "Op
  // convention"), then flushes, then sends options.notification.
  // Every op is checked before anything is posted; on a refusal the
  // returned handle is already done with: InvalidArgument (an unknown local
  // or remote region, a zero-length op, a notification over 1 MiB, a
  // non-positive timeout), OutOfRange (an op leaves its region), NotFound
  // (unknown peer), Unavailable (disconnected peer). An empty `ops` only
  // flushes and sends the notification.
  TransferHandle Write(PeerId peer, absl::Span<const TransferOp> ops,
                       TransferOptions options = {});

  // Copies every op from the peer's memory to local memory (see "Op
  // convention"), then sends options.notification. Errors as Write.
  TransferHandle Read(PeerId peer, absl::Span<const TransferOp> ops,
                      TransferOptions options = {});

  // Checks `ops` for a Write (PrepareWrite) or Read (PrepareRead) to
  // `peer` once, with Write's checks and errors, and returns them as a
  // PreparedTransfer (flowkv/prepared_transfer.h) to Post any number of
  // times. Nothing is posted.
  absl::StatusOr<PreparedTransfer> PrepareWrite(
      PeerId peer, absl::Span<const TransferOp> ops);
  absl::StatusOr<PreparedTransfer> PrepareRead(
      PeerId peer, absl::Span<const TransferOp> ops);

  // Posts `prepared` as Write or Read would post its ops, with `options`.
  // Refused (the handle already done, nothing posted): InvalidArgument (an
  // empty PreparedTransfer, one prepared by another engine, bad options as
  // in Write), FailedPrecondition (one of its local regions was
  // deregistered), NotFound / Unavailable (its peer is unknown or
  // disconnected).
  TransferHandle Post(const PreparedTransfer& prepared,
                      TransferOptions options = {});

  // Sends `bytes` (at most 1 MiB) to the peer, which receives them as a
  // Notification of kind kMessage. Done when sent locally. Errors as Write.
  TransferHandle Send(PeerId peer, std::string bytes,
                      TransferOptions options = {});

  // Returns (and removes) the queued notifications, in arrival order. With
  // a positive `wait`, blocks up to `wait` until at least one is queued.
  std::vector<Notification> TakeNotifications(
      absl::Duration wait = absl::ZeroDuration());

  // --- Introspection --------------------------------------------------------

  // Engine name from the options.
  const std::string& name() const;
  // Whether UCX here can register CUDA device memory: the UCX context
  // reports the CUDA memory type (ucp_context_query's memory_types).
  bool SupportsCudaMemory() const;
  // The UCX transports the context has enabled, e.g. "tcp,posix,cma,self"
  // (informational).
  std::string UcxInfo() const;
  // What the engine holds right now (see TransferEngineStats).
  TransferEngineStats Stats() const;
  // Counters since creation: transfers by status, bytes, latency
  // histograms, windows, peer failures (see transfer_metrics.h). Cheap
  // (atomics; no call to the progress thread); callable from any thread,
  // also from the progress thread.
  TransferEngineMetrics Metrics() const;

 private:
  // The library's one door to the engine for its KV layer.
  friend class internal::EngineInternal;
  explicit TransferEngine(std::unique_ptr<internal::TransferEngineImpl> impl);
  std::unique_ptr<internal::TransferEngineImpl> impl_;
};

}  // namespace flowkv

#endif  // FLOWKV_TRANSFER_ENGINE_H_
