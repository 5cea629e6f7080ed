// SPDX-License-Identifier: Apache-2.0
// KvTransfer::Impl: the state behind KvTransfer (include/flowkv/kv_transfer.h),
// declared once and implemented by concept:
//   kv_transfer.cc       Create, the sending side (Send, Fetch: validation,
//                        planning, posting, failure and release notices);
//   kv_receive.cc        notifications in, results out (Poll, Expect, ...);
//   kv_pool_exchange.cc  peers' pools (AddPeerPool, AnnouncePool, pool
//                        descriptors received, PeerPool, WaitForPeerPool)
//                        and the path chosen per peer;
//   kv_staging_send.cc   the staging worker, the ring's slots, staged
//                        sends (chunks, credits);
//   kv_staging_receive.cc staged chunks in (reads, checks, scatters,
//                        credits back);
//   kv_ipc.cc            Send and Fetch over an opened peer pool.
// The notice bytes are kv_notice.cc's; the request state machine is
// kv_request_tracker.cc's.
//
// Thread safety: thread-safe. Four locks, never nested: engine_mu_ (the
// engine as completion callbacks may use it), pools_mu_ (peers' pools),
// mu_ (the receiving side) and work_mu_ (the staging worker's queue). The
// staging state (ring slots, staged sends, queued chunks) belongs to the
// staging worker thread alone: every other thread posts jobs to it.

#ifndef FLOWKV_LIB_KV_KV_TRANSFER_IMPL_H_
#define FLOWKV_LIB_KV_KV_TRANSFER_IMPL_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "flowkv/export.h"
#include "flowkv/kv_layout.h"
#include "flowkv/kv_pool_memory.h"
#include "flowkv/kv_transfer.h"
#include "flowkv/transfer_engine.h"
#include "lib/engine/engine_internal.h"
#include "lib/kv/kv_notice.h"
#include "lib/kv/kv_request_tracker.h"

namespace flowkv {
namespace internal {

enum class KvDirection : uint8_t { kPush, kPull };

// OK when `regions` names one region of `known` per region of `layout`,
// each large enough for it; else InvalidArgument (count, size) or NotFound
// (an unknown id). `owner` names whose regions they are in errors.
absl::Status CheckKvRegions(const KvLayout& layout,
                            const std::vector<RegionId>& regions,
                            const std::vector<RegionInfo>& known,
                            const std::string& owner);

// This side's staging ring: engine region `region` at `base`, slots of
// slot_bytes; slots [0, send_slots) carry sends, the rest receives (so two
// peers staging to each other never wait on each other's credits).
struct KvRing {
  RegionId region = 0;
  uint8_t* base = nullptr;
  uint64_t slot_bytes = 0;
  uint32_t slot_count = 0;
  uint32_t send_slots = 0;
};

// A handle that is already done with `status`.
TransferHandle FailedKvHandle(absl::Status status);

// InvalidArgument unless `id` is a valid request id.
absl::Status CheckKvRequestId(const char* caller, std::string_view id);

}  // namespace internal

class FLOWKV_NO_EXPORT KvTransfer::Impl : public std::enable_shared_from_this<Impl> {
 public:
  // `regions`: the engine regions holding the pool (empty when `direct` is
  // false). `pool`: the pool's memory for staging and IPC (null when
  // neither can happen). `ring`: slot_count 0 when there is none.
  Impl(TransferEngine* engine, const KvLayout& layout,
       std::vector<RegionId> regions, bool direct,
       std::shared_ptr<KvPoolMemory> pool, internal::KvRing ring,
       KvTransferOptions options);
  ~Impl();

  // Starts the staging worker and the engine tap (after construction: they
  // hold `this`).
  void Start();
  // Stops completion callbacks from using the engine, the tap and the
  // staging worker (KvTransfer is going); staged sends in flight fail with
  // Cancelled.
  void Detach();

  absl::StatusOr<KvPath> PeerPath(PeerId peer) const;

  // --- kv_transfer.cc: the sending side ---
  TransferHandle Move(internal::KvDirection direction,
                      std::string_view request_id, PeerId peer,
                      const KvSendRequest& request);

  // --- kv_receive.cc ---
  absl::Status Expect(std::string_view request_id, absl::Time deadline);
  void Forget(std::string_view request_id);
  bool HandleNotification(const Notification& notification);
  KvPollResult TakeResults();
  KvPollResult Poll(absl::Duration wait);
  uint32_t LayersArrived(std::string_view request_id) const;
  KvTransferStats Stats() const;
  const KvLayout& layout() const { return layout_; }

  // --- kv_pool_exchange.cc ---
  absl::Status AddPeerPool(PeerId peer, const KvLayout& layout,
                           std::vector<RegionId> peer_regions);
  absl::Status AnnouncePool(PeerId peer);
  absl::StatusOr<KvLayout> PeerPool(PeerId peer) const;
  absl::Status WaitForPeerPool(PeerId peer, absl::Duration timeout);

 private:
  // A peer's pool as Send and Fetch plan against it.
  struct PeerPoolInfo {
    KvLayout layout;
    std::vector<RegionId> regions;  // empty unless the peer's pool is direct
    // The peer's staging ring (slot_count 0: none).
    RegionId ring_region = 0;
    uint64_t slot_bytes = 0;
    uint32_t slot_count = 0;
    // The path to the peer, or why there is none (path_error not OK).
    KvPath path = KvPath::kDirect;
    absl::Status path_error;
    // The peer's pool opened here (kIpc).
    std::shared_ptr<KvPeerPool> ipc;
  };
  struct StagedSend;
  // A staged chunk received, waiting for a slot or in flight.
  struct IncomingChunk {
    PeerId peer = 0;
    internal::KvNotice notice;
    uint64_t bytes = 0;
    RegionId peer_ring = 0;
    uint64_t peer_offset = 0;
  };
  // What this side knows of a peer's pool: a pool, or why the peer's
  // descriptor was refused.
  struct PeerPoolEntry {
    std::shared_ptr<const PeerPoolInfo> pool;  // null when refused
    absl::Status refused;
    // Declared with AddPeerPool: descriptors do not replace it.
    bool declared = false;
  };

  // --- kv_transfer.cc ---
  // `engine_regions`: ops name engine regions (direct); else layout region
  // indices of the two pools.
  absl::Status Plan(internal::KvDirection direction, const PeerPoolInfo& pool,
                    const KvSendRequest& r, bool engine_regions,
                    std::vector<TransferOp>* ops) const;
  void PieceFailed(internal::KvDirection direction, PeerId peer,
                   std::string_view request_id, uint32_t rank,
                   uint32_t num_senders, const absl::Status& status);
  void FetchDone(PeerId peer, const internal::KvNotice& piece,
                 const absl::Status& status);
  // Best effort, never blocks: a notice with no data, as a Write.
  void SendNotice(PeerId peer, const internal::KvNotice& notice);
  void SendNoticeBytes(PeerId peer, std::string bytes);

  // --- kv_pool_exchange.cc ---
  // The pool Send and Fetch use for `peer`: FailedPrecondition (`caller`
  // named) when none is known, the remembered error when refused.
  absl::StatusOr<std::shared_ptr<const PeerPoolInfo>> FindPool(
      const char* caller, PeerId peer) const;
  // A pool descriptor (kind kPool) arrived from `peer`.
  void HandlePoolNotice(PeerId peer, const internal::KvNotice& notice);
  // Checks a received descriptor: the pool, or why it cannot be used.
  absl::StatusOr<std::shared_ptr<const PeerPoolInfo>> AcceptPool(
      PeerId peer, const internal::KvNotice& notice) const;
  // `peer` disconnected: forget its pool, its error, and that it was told.
  void ForgetPeerPool(PeerId peer);
  // Fills `info`'s path (and opens the peer's pool for IPC) from the
  // peer's descriptor (`share`, `direct`).
  void ChoosePath(const std::string& share, bool direct,
                  PeerPoolInfo* info) const;

  // --- kv_staging_send.cc ---
  // Runs on the progress thread before notifications are queued.
  bool Tap(const Notification& n);
  // Queues `job` for the staging worker (dropped once it stopped).
  void Post(std::function<void()> job);
  void WorkerLoop();
  TransferHandle StartStagedSend(PeerId peer,
                                 std::shared_ptr<const PeerPoolInfo> pool,
                                 std::vector<TransferOp> ops,
                                 const internal::KvNotice& data_notice,
                                 const KvSendRequest& r);
  // Staging worker only, below.
  void Pump(const std::shared_ptr<StagedSend>& send);
  void PumpWaiting();
  void GatherDone(const std::shared_ptr<StagedSend>& send, uint32_t slot,
                  std::string chunk_notice, uint64_t bytes, absl::Status s);
  void SendSlotReturned(const std::shared_ptr<StagedSend>& send, uint32_t slot);
  void StopSend(const std::shared_ptr<StagedSend>& send, absl::Status status);
  void MaybeFinish(const std::shared_ptr<StagedSend>& send);
  void ReportStopped(const std::shared_ptr<StagedSend>& send);
  void HandleCredit(PeerId peer, const internal::KvNotice& credit);
  void StagingPeerGone(PeerId peer);
  void ApplySendDeadlines(absl::Time now);
  absl::Time NextSendDeadline() const;
  void TakeSlot(std::vector<uint32_t>* free_slots);

  // --- kv_ipc.cc ---
  TransferHandle IpcMove(internal::KvDirection direction, PeerId peer,
                         const PeerPoolInfo& pool,
                         const std::vector<TransferOp>& ops,
                         internal::KvNotice notice, const KvSendRequest& r);

  // --- kv_staging_receive.cc (staging worker) ---
  void HandleStagingNotice(PeerId peer, const std::string& bytes);
  void ReceiveChunk(PeerId peer, internal::KvNotice notice);
  // Refuses a chunk: counts it, fails its request, returns the credit.
  void RefuseChunk(PeerId peer, const internal::KvNotice& chunk,
                   absl::Status why);
  void PumpReceive();
  // A chunk of `peer` was answered or dropped.
  void ChunkDone(PeerId peer);
  void ReadDone(std::shared_ptr<IncomingChunk> chunk, uint32_t slot,
                absl::Status s);
  void SendCredit(PeerId peer, const internal::KvNotice& chunk,
                  const absl::Status& status);
  TransferEngine* const engine_;
  const KvLayout layout_;
  const std::vector<RegionId> regions_;
  const bool direct_;
  const std::shared_ptr<KvPoolMemory> pool_;
  const internal::KvRing ring_;
  const KvPathPolicy policy_;
  const std::function<void(LogSeverity, std::string_view)> log_;
  // This side's pool descriptor (a kind kPool notice), encoded once.
  const std::string descriptor_;

  // The engine as completion callbacks may use it: null once the
  // KvTransfer is destroyed.
  mutable absl::Mutex engine_mu_;
  TransferEngine* notice_engine_ ABSL_GUARDED_BY(engine_mu_);

  // Peers' pools: Send and Fetch copy the pointer under the lock and plan
  // outside it.
  mutable absl::Mutex pools_mu_;
  absl::flat_hash_map<PeerId, PeerPoolEntry> pools_ ABSL_GUARDED_BY(pools_mu_);
  // Peers this side sent its descriptor to (announced or answered).
  absl::flat_hash_set<PeerId> announced_ ABSL_GUARDED_BY(pools_mu_);
  uint64_t pools_refused_ ABSL_GUARDED_BY(pools_mu_) = 0;

  // The receiving side.
  mutable absl::Mutex mu_;
  internal::KvRequestTracker tracker_ ABSL_GUARDED_BY(mu_);
  std::vector<KvReleased> released_ ABSL_GUARDED_BY(mu_);
  // Notifications WaitForPeerPool took that were not KvTransfer's: the
  // next Poll / TakeResults returns them in `other`.
  std::vector<Notification> other_ ABSL_GUARDED_BY(mu_);
  uint64_t malformed_notices_ ABSL_GUARDED_BY(mu_) = 0;
  // Staged chunks being scattered, by request and by peer: a failure of
  // the request (TakeResults) or the peer's disconnection
  // (HandleNotification) is passed on only once they are done.
  absl::flat_hash_map<std::string, uint32_t> scattering_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<PeerId, uint32_t> scattering_peers_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<PeerId> dead_peers_ ABSL_GUARDED_BY(mu_);
  absl::CondVar scatter_cv_;

  // The staging worker's queue.
  absl::Mutex work_mu_;
  absl::CondVar work_cv_;
  std::deque<std::function<void()>> work_ ABSL_GUARDED_BY(work_mu_);
  bool work_stopped_ ABSL_GUARDED_BY(work_mu_) = false;
  std::thread worker_;
  uint64_t tap_id_ = 0;

  // Staging worker state.
  std::vector<uint32_t> free_send_slots_;
  std::vector<uint32_t> free_recv_slots_;
  std::vector<std::shared_ptr<StagedSend>> slot_owner_;  // send slots
  std::vector<bool> slot_gathering_;                     // send slots
  std::deque<std::shared_ptr<StagedSend>> waiting_sends_;
  absl::flat_hash_map<uint64_t, std::shared_ptr<StagedSend>> sends_;
  std::deque<std::shared_ptr<IncomingChunk>> incoming_;
  // Chunks per sender queued or in flight here.
  absl::flat_hash_map<PeerId, uint32_t> chunks_held_;
  uint64_t next_send_id_ = 1;

  // Stats (any thread).
  std::atomic<uint64_t> chunks_sent_{0}, bytes_sent_{0}, chunks_received_{0},
      bytes_received_{0}, chunks_refused_{0}, ipc_copies_{0};
  std::atomic<uint64_t> slots_free_{0}, slots_max_in_use_{0};
};

}  // namespace flowkv

#endif  // FLOWKV_LIB_KV_KV_TRANSFER_IMPL_H_
