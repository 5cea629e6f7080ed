// SPDX-License-Identifier: Apache-2.0
// KvTransfer: moves requests' KV caches between the pools of prefill and
// decode processes and tells the receiving side when a request is complete
// (or why it never will be) — the calls model runner code and an engine's KV
// connector make.
//
//   // Both sides, at start-up: the pool, region by region.
//   auto kv = flowkv::KvTransfer::Create(engine.get(), layout, {region}, {});
//   // Once connected, either side (e.g. decode, when prefill connected):
//   kv->AnnouncePool(peer);
//   // The side that sends or fetches first waits for the peer's pool:
//   if (absl::Status s = kv->WaitForPeerPool(peer, absl::Seconds(10));
//       !s.ok()) ...  // e.g. InvalidArgument "... head_dim differs ..."
//
//   // Push (prefill writes into the decode pool). Per request, after its
//   // prefill — or per layer, per chunk, per tensor-parallel rank:
//   flowkv::TransferHandle h = kv->Send("req-42", decode_peer, {
//       .src_blocks = prefill_blocks, .dst_blocks = decode_blocks,
//       .num_tokens = prompt_tokens, .payload = aux});
//   // h completes OK once the decode side has the data and acknowledged
//   // the notice: the prefill blocks may then be freed.
//
//   // Decode side: which requests are complete, which failed.
//   kv->Expect("req-42", absl::Now() + absl::Seconds(30));  // optional
//   flowkv::KvPollResult r = kv->Poll(absl::Milliseconds(1));
//   for (auto& f : r.finished) StartDecoding(f.request_id, f.payload);
//   for (auto& f : r.failed) Recompute(f.request_id, f.status);
//
//   // Pull (decode reads from the prefill pool) instead of push:
//   h = kv->Fetch("req-42", prefill_peer, {.src_blocks = prefill_blocks,
//                                          .dst_blocks = decode_blocks,
//                                          .num_tokens = prompt_tokens});
//   // ... and the prefill side's Poll() reports "req-42" in `released`.
//
// Pools. Before bytes move, each side must know the other's pool: its
// layout and the engine region ids holding it. AnnouncePool(peer) sends this
// side's pool descriptor (a notice of kind "pool": the layout's
// KvLayout::Serialize() form and the region ids) as a notice; the peer's
// KvTransfer checks it when it handles its notifications (Poll,
// HandleNotification, WaitForPeerPool) and answers once with its own, so
// one AnnouncePool on either side sets up both directions. A descriptor that
// cannot be used — malformed, naming regions the engine does not know for
// that peer, or a geometry that cannot exchange KV with this pool (another
// num_layers, num_parts, head_dim or dtype_bytes, kv_heads that do not
// divide; see CheckKvExchange) — is refused: logged once, remembered for
// that peer, and every later Send and Fetch to it fails at once with
// InvalidArgument naming the field, moving no byte. Engines that exchange
// layouts themselves call AddPeerPool instead; a pool declared that way
// takes precedence over descriptors. A peer that disconnects is forgotten
// (pool, refusal, whether it was told ours).
//
// Paths. The descriptor also says whether the pool is engine regions, names
// this side's staging ring and carries the pool's share descriptor; from
// these each side picks how bytes move to a peer (PeerPath: direct, IPC
// or staging; docs/gpu.md "Paths", "Staging protocol"). Pools that UCX cannot
// reach come as a KvPoolMemory (flowkv/kv_pool_memory.h) through the second
// Create. Staged transfers run on a staging worker thread of this
// KvTransfer: they progress without Poll.
//
// Pieces. A request's KV may arrive in pieces: each Send (or Fetch) covers
// a layer range [layer_begin, layer_end) and a token range [token_begin,
// token_begin + num_tokens) of one sender rank out of num_senders (the
// prefill's tensor-parallel ranks). A rank's last chunk is marked
// final_chunk, which fixes the request's token count. The receiver reports
// a request finished exactly once, when every rank's every layer of every
// token has arrived, and never before. Defaults make one Send the whole
// request (every layer, tokens [0, num_tokens), one sender, final).
//
// Receiver states of a request (docs/integration.md has the diagram):
//   unknown -> expected (Expect) -> arriving (first piece) -> finished (the
//   last piece; reported once by Poll) or failed (a sender's failure notice,
//   a piece that contradicts earlier ones, the sender's peer disconnecting,
//   the Expect deadline, no piece for incomplete_request_timeout; reported
//   once by Poll). Forget drops a request in any state. Finished, failed and
//   forgotten ids are remembered (a bounded set, see max_tombstones) so that
//   late notices for them are ignored rather than starting the request anew.
//
// Notices. Each piece's data is followed by a notice (a TransferEngine
// notification, which reaches the receiver only after the data); a sender
// whose piece fails sends a failure notice instead (best effort: when the
// failure closed the endpoint, the receiver learns of it as a disconnected
// peer). Notices have an explicit, validated wire format (specified in
// docs/architecture.md, "Wire formats"); malformed ones are counted and
// dropped.
//
// Thread safety: thread-safe. Send and Fetch from many threads do not
// serialize on a lock around planning and posting.

#ifndef FLOWKV_KV_TRANSFER_H_
#define FLOWKV_KV_TRANSFER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "flowkv/block_list.h"
#include "flowkv/export.h"
#include "flowkv/kv_layout.h"
#include "flowkv/kv_pool_memory.h"
#include "flowkv/transfer_engine.h"

namespace flowkv {

// Limits of KvTransfer's arguments.
inline constexpr size_t kMaxKvRequestIdBytes = 256;
inline constexpr size_t kMaxKvPayloadBytes = 64 * 1024;
inline constexpr uint32_t kMaxKvSenders = 4096;

// How a peer's bytes move (KvTransfer::PeerPath; kv_pool_memory.h has the
// three paths, docs/gpu.md "Paths" when each is chosen).
enum class KvPath : uint8_t { kDirect, kIpc, kStaging };

// Which paths KvTransfer may choose.
enum class KvPathPolicy : uint8_t {
  // IPC when both pools can be shared and this side opened the peer's;
  // direct when both pools are engine regions; staging otherwise.
  kAuto,
  // Always staging (tests, CI, measuring): this side's descriptor offers
  // neither engine regions nor sharing, so the peer stages too.
  kForceStaging,
  // IPC or nothing: Send and Fetch to a peer IPC cannot reach fail with
  // FailedPrecondition.
  kForceIpc,
};

// The staging ring: registered host memory (TransferEngine::AllocateMemory)
// split into slots of slot_bytes; each slot carries one part of a piece at a
// time.
struct KvStagingOptions {
  // Ring size; rounded down to a multiple of slot_bytes. Must be >=
  // slot_bytes. Default: 64 MiB.
  uint64_t ring_bytes = 64ull << 20;
  // Slot size: at most this many bytes move per slot. Must be > 0.
  // Default: 4 MiB.
  uint64_t slot_bytes = 4ull << 20;
};

struct KvTransferOptions {
  // A request that received a piece but no further piece for this long
  // fails with DeadlineExceeded (so no state is kept forever for a request
  // whose last piece never comes). Must be positive. Default: 60 s.
  absl::Duration incomplete_request_timeout = absl::Seconds(60);
  // How many finished, failed or forgotten request ids are remembered to
  // ignore late notices (oldest dropped first). Default: 65536.
  size_t max_tombstones = 65536;
  // Receives KvTransfer's log: each malformed notice and each failed
  // request, once. Called from any thread (often the engine's progress
  // thread): it must not block or call into KvTransfer or the engine.
  // Default: none (nothing is logged; Stats() counts).
  std::function<void(LogSeverity, std::string_view)> log = nullptr;
  // The staging ring, allocated when the pool is a KvPoolMemory or the
  // policy is kForceStaging (see "Paths" in docs/gpu.md).
  KvStagingOptions staging = {};
  // Default: kAuto.
  KvPathPolicy path_policy = KvPathPolicy::kAuto;
};

// One piece of a request to move: which blocks, tokens, layers and heads,
// and which sender rank it comes from.
struct KvPiece {
  // The request's blocks in the source pool and in the destination pool, in
  // token order, from the request's token 0 (the whole block table, also
  // for a later chunk). Both must hold token_begin + num_tokens tokens;
  // the destination blocks must be distinct (InvalidArgument otherwise).
  // Send: source = local pool, destination = the peer's. Fetch: source =
  // the peer's pool, destination = local.
  BlockList src_blocks = {};
  BlockList dst_blocks = {};
  // Tokens [token_begin, token_begin + num_tokens) of the request (the
  // chunk). num_tokens > 0. A non-final chunk moves only whole blocks
  // common to both pools: the bytes of its last, partial block move with
  // the next chunk, which re-reads that block from its start. So keep the
  // source blocks of earlier chunks unchanged until the final chunk is sent.
  uint64_t token_begin = 0;
  uint64_t num_tokens = 0;
  // Layers [layer_begin, layer_end). Default (0, 0): every layer.
  uint32_t layer_begin = 0;
  uint32_t layer_end = 0;
  // Heterogeneous tensor parallelism: source heads [src_head_begin, +n) go
  // to destination heads [dst_head_begin, +n). Default: every head.
  uint32_t src_head_begin = 0;
  uint32_t dst_head_begin = 0;
  uint32_t num_heads = 0;
  // Fan-in: this piece comes from rank sender_rank of num_senders ranks that
  // each send their part of the request (e.g. prefill TP ranks, each with
  // its heads). Every piece of a request must name the same num_senders.
  uint32_t sender_rank = 0;
  uint32_t num_senders = 1;
  // Whether this is the last chunk of this rank: it fixes the request's
  // token count to token_begin + num_tokens. Every layer piece of the last
  // chunk says true, earlier chunks false. Default: true (one chunk).
  bool final_chunk = true;
  // Delivered with the request's KvFinished entry (e.g. SGLang's aux data).
  // Send it with any one piece, or identical copies with several; pieces
  // with different non-empty payloads fail the request. At most
  // kMaxKvPayloadBytes.
  std::string payload = {};
  // Deadline of the transfer. Default: the engine's default_timeout.
  std::optional<absl::Duration> timeout = std::nullopt;
  // Send only: an event of the pool's kind (a cudaEvent_t for a CUDA pool)
  // that completes when the source bytes are written; the first copy out
  // of the pool waits for it. Must be null for host pools (InvalidArgument).
  void* ready_event = nullptr;
};

// A request whose every piece arrived.
struct KvFinished {
  std::string request_id;
  std::string payload;
};

// A request that will not finish, and why:
//   the sender's status  a sender's piece failed (its failure notice; the
//                        message names the rank), or a Fetch failed;
//   InvalidArgument      pieces contradict each other (another num_senders,
//                        an overlapping or repeated piece, a layer outside
//                        the pool, chunks past the final chunk's end,
//                        different payloads);
//   Unavailable          the peer an unfinished rank sent from disconnected;
//   DeadlineExceeded     the Expect deadline passed, or no piece came for
//                        incomplete_request_timeout.
// The blocks the request was written into may hold partial data: reuse
// them only for another request's transfer or after the sender is gone.
struct KvFailed {
  std::string request_id;
  absl::Status status;
};

// A request this side served to a Fetch: the fetching peer is done with its
// blocks here (status OK: fetched; otherwise the fetch failed, with its
// status). Either way the blocks may be freed.
struct KvReleased {
  std::string request_id;
  PeerId peer = 0;
  absl::Status status;
};

// What happened since the last Poll.
struct KvPollResult {
  // Requests that completed, each reported once, in completion order.
  std::vector<KvFinished> finished;
  // Requests that failed, each reported once.
  std::vector<KvFailed> failed;
  // Requests peers fetched from this side and released.
  std::vector<KvReleased> released;
  // Notifications that were not KvTransfer's: the caller's own messages and
  // notifications, and every kPeerDisconnected (which KvTransfer also acts
  // on).
  std::vector<Notification> other;
};

struct KvTransferStats {
  // Requests expected or arriving (not finished, failed or forgotten).
  uint64_t requests_active = 0;
  // Finished / failed requests not yet taken by Poll.
  uint64_t results_pending = 0;
  // Requests Poll has returned since creation: in `finished`, and in
  // `failed` with DeadlineExceeded (timed out) or another code (failed).
  uint64_t requests_finished = 0;
  uint64_t requests_failed = 0;
  uint64_t requests_timed_out = 0;
  // Request ids remembered to ignore late notices.
  uint64_t tombstones = 0;
  // Notices that started with KvTransfer's magic but did not parse (a
  // well-formed notice that contradicts its request fails the request).
  uint64_t malformed_notices = 0;
  // Notices for finished, failed or forgotten requests (ignored).
  uint64_t late_notices = 0;
  // Peers' pool descriptors that were refused (see "Pools" above).
  uint64_t pools_refused = 0;
  // Staging, both directions: slots and their bytes this side gathered and
  // sent or received and scattered; slot notices refused (out-of-pool
  // runs, unknown slots).
  uint64_t staged_slots_sent = 0;
  uint64_t staged_bytes_sent = 0;
  uint64_t staged_slots_received = 0;
  uint64_t staged_bytes_received = 0;
  uint64_t slots_refused = 0;
  // Runs copied straight into (or out of) peers' pools over IPC.
  uint64_t ipc_copies = 0;
  // This side's staging ring: slots in all (0: no ring), free now, and the
  // most ever in use at once by sends plus receives (never above
  // ring_slots).
  uint64_t ring_slots = 0;
  uint64_t ring_slots_free = 0;
  uint64_t ring_slots_max_in_use = 0;
};

class FLOWKV_EXPORT KvTransfer {
 public:
  // `engine` is borrowed and must outlive the KvTransfer. `regions[i]` is
  // the engine region holding region i of `layout`. InvalidArgument when
  // the count differs from layout.num_regions(), a region is smaller than
  // the layout's region_bytes() or an option is invalid; NotFound for an
  // unknown region.
  static absl::StatusOr<std::unique_ptr<KvTransfer>> Create(
      TransferEngine* engine, const KvLayout& layout,
      std::vector<RegionId> regions, KvTransferOptions options = {});

  // A pool that KvTransfer reaches through `pool` (e.g. GPU memory that
  // this UCX cannot register, or a pool from MakeSharedHostPool): bytes move
  // over IPC or the staging ring, never straight between engine regions.
  // Allocates the ring from `engine`: create the KvTransfer before peers
  // connect (they learn the engine's regions when connecting).
  // InvalidArgument when the pool is null, its region count differs from
  // layout.num_regions(), a region is smaller than the layout's, or an
  // option is invalid (staging: slot_bytes 0 or over ring_bytes); the
  // engine's errors when allocating the ring fails. (`options` has no
  // default so that Create(engine, layout, {}) stays the region overload.)
  static absl::StatusOr<std::unique_ptr<KvTransfer>> Create(
      TransferEngine* engine, const KvLayout& layout,
      std::shared_ptr<KvPoolMemory> pool, KvTransferOptions options);

  // How bytes to `peer` move (see KvPathPolicy), once its pool is known:
  // FailedPrecondition while none is known (or when no path reaches the
  // peer: kForceIpc and IPC cannot, or staging is needed and a side has no
  // ring; the message says which), InvalidArgument when its descriptor was
  // refused.
  absl::StatusOr<KvPath> PeerPath(PeerId peer) const;

  // Declares the pool of `peer`: its layout and, per layout region, the
  // peer's region id (as in PeerInfo::regions), for engines that exchange
  // layouts by their own means. Replaces an earlier declaration and
  // whatever a descriptor from the peer said (also a refusal), and later
  // descriptors do not replace it (Sends already planned keep the old
  // pool). NotFound for an unknown peer; InvalidArgument as in Create, or
  // when the layouts cannot exchange KV (CheckKvExchange's message).
  // Forgotten when the peer disconnects.
  absl::Status AddPeerPool(PeerId peer, const KvLayout& layout,
                           std::vector<RegionId> peer_regions);

  // Sends this side's pool descriptor to `peer` (see "Pools" above), as a
  // notification behind a Write with no ops, and returns once the peer's
  // engine acknowledged it (at most the engine's default_timeout). The peer
  // learns this pool when it next handles its notifications, and answers
  // with its own descriptor unless it announced to this side before; call
  // WaitForPeerPool (or Poll until PeerPool(peer) is not NotFound) to wait
  // for that answer. Calling it again resends (a peer that knows the pool
  // keeps it). Errors: the engine's (NotFound: unknown peer; Unavailable:
  // disconnected; DeadlineExceeded). REQUIRES: not called from an engine
  // callback (the wait would return FailedPrecondition).
  absl::Status AnnouncePool(PeerId peer);

  // What this side knows of `peer`'s pool: its layout once a descriptor was
  // accepted or AddPeerPool declared it; NotFound while nothing is known
  // (also after the peer disconnected); InvalidArgument naming the field
  // when the peer's descriptor was refused (the error Send and Fetch to it
  // return).
  absl::StatusOr<KvLayout> PeerPool(PeerId peer) const;

  // Waits until `peer`'s pool is known or refused, handling the engine's
  // notifications as Poll does meanwhile; nothing is lost: what they
  // produce (finished, failed, released requests, and the notifications
  // that belong in `other`) is returned by the next Poll or TakeResults.
  // Returns OK once the pool is known, PeerPool's error once refused,
  // DeadlineExceeded after `timeout`, Unavailable when the peer disconnects,
  // NotFound for an unknown peer. Another thread's Poll, or an engine
  // on_notification callback, may handle the descriptor instead: this call
  // then notices within 10 ms. REQUIRES: not called from an engine callback.
  absl::Status WaitForPeerPool(PeerId peer, absl::Duration timeout);

  // Push: writes one piece of the request into the peer's pool, then sends
  // the data notice. The handle completes OK only after the peer's engine
  // acknowledged the notice. Errors come through the handle:
  // InvalidArgument (a request id that is empty or over
  // kMaxKvRequestIdBytes, no blocks, num_tokens 0, a payload over
  // kMaxKvPayloadBytes, sender_rank >= num_senders, num_senders 0 or over
  // kMaxKvSenders, token range overflow, a destination block named
  // twice; the refusal of the peer's pool
  // descriptor; and the planner's), OutOfRange (the planner's),
  // FailedPrecondition (no pool known for the peer: call AnnouncePool on
  // either side, or AddPeerPool; or the peer refused the piece because it
  // had already finished, failed or forgotten the request and did not
  // Expect the id again — the refusal comes back in the acknowledgement of
  // the notice, whose bytes may have landed in the peer's blocks), and
  // the engine's (Unavailable, DeadlineExceeded, Cancelled through
  // handle.Cancel()). On any failure with a valid request id and rank, a
  // failure notice goes to the peer (best effort). A failed handle does not
  // prove that the piece is missing at the peer: a Cancel() or deadline that
  // strikes after the notice was delivered, before its acknowledgement came
  // back, leaves the piece counted there (the failure notice then arrives
  // for a finished request and is ignored).
  TransferHandle Send(std::string_view request_id, PeerId peer,
                      const KvPiece& request);

  // Pull: reads one piece of the request from the peer's pool (announced
  // or declared with AddPeerPool) into the local pool. The piece counts towards
  // the request here as a received one would (so the request shows up in this
  // side's Poll().finished or failed), and when it completes this rank's
  // part of the request (or fails) a release notice goes to the peer, whose
  // Poll() then reports the request in `released`. The handle completes
  // after the local bookkeeping and after the release notice was posted.
  // Errors as Send; a failed Fetch fails the request here.
  TransferHandle Fetch(std::string_view request_id, PeerId peer,
                       const KvPiece& request);

  // Declares that `request_id` is expected and must finish by `deadline`
  // (else it fails with DeadlineExceeded). Applies to a request already
  // arriving too; a finished or failed request not yet polled is left
  // alone. Expect also clears the id's tombstone, so an id may be reused
  // after its earlier request was reported or forgotten. InvalidArgument
  // for a bad request id.
  absl::Status Expect(std::string_view request_id, absl::Time deadline);

  // Drops every state of the request (arriving pieces, a result not yet
  // polled) and remembers the id so its late notices are ignored. Sends
  // and Fetches in flight are not cancelled (cancel their handles).
  void Forget(std::string_view request_id);

  // Takes the engine's notifications, waiting up to `wait` for the first
  // (not at all when results are already pending), acts on them, then
  // applies deadlines (so a piece queued before its request's deadline
  // counts) and returns everything that happened since the last call.
  // Requires that the engine was created without on_notification (else
  // use HandleNotification and TakeResults).
  KvPollResult Poll(absl::Duration wait = absl::ZeroDuration());

  // Feeds one notification received by other means (an on_notification
  // callback; it may be called on the progress thread). A peer's pool
  // descriptor is checked and recorded (or refused) here, and answered
  // without blocking. Returns true when it was consumed (a KvTransfer
  // notice, even a malformed one); false for
  // notifications that belong in KvPollResult::other (kPeerDisconnected is
  // acted on and still returns false).
  bool HandleNotification(const Notification& notification);

  // As Poll, without touching the engine's queue: applies deadlines and
  // returns what HandleNotification, Fetch and deadlines produced (and the
  // notifications WaitForPeerPool kept, in `other`).
  KvPollResult TakeResults();

  // For layer-wise loading: the number of leading layers [0, n) of which
  // every piece (all ranks, all chunks) has arrived; 0 while some rank's
  // final chunk is unknown; num_layers for a finished request until it is
  // polled and for a while after (until its tombstone is dropped).
  uint32_t LayersArrived(std::string_view request_id) const;

  KvTransferStats Stats() const;
  const KvLayout& layout() const;

  // Pending direct transfers run on (their handles stay valid); their
  // completions no longer reach this object or send notices. Staged sends
  // in flight fail with Cancelled (the staging worker stops; the peer
  // learns of it as a request that never completes). The staging ring stays
  // registered with the engine until the engine goes.
  ~KvTransfer();
  KvTransfer(const KvTransfer&) = delete;
  KvTransfer& operator=(const KvTransfer&) = delete;

 private:
  class Impl;
  explicit KvTransfer(std::shared_ptr<Impl> impl);
  // Shared with the completion callbacks of transfers in flight.
  std::shared_ptr<Impl> impl_;
};

}  // namespace flowkv

#endif  // FLOWKV_KV_TRANSFER_H_
