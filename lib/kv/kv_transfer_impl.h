// SPDX-License-Identifier: Apache-2.0
// KvTransfer::Impl: the state behind KvTransfer (include/flowkv/kv_transfer.h),
// declared once and implemented by concept:
//   kv_transfer_lifecycle.cc  Create, the constructor, destructor, Start
//                        and Detach (what exists when: the staging path
//                        only with a ring);
//   kv_transfer.cc       the sending side (Send, Fetch: validation,
//                        planning, posting, failure and release notices)
//                        and KvTransfer's forwarding methods;
//   kv_receive.cc        notifications in (each decoded once), results out
//                        (Poll, Expect, ...), and the receiving side's part
//                        of KvStagingHost (refusals, dead peers, scatters);
//   kv_pool_exchange.cc  peers' pools (AddPeerPool, AnnouncePool, pool
//                        descriptors received, PeerPool, WaitForPeerPool)
//                        and the path chosen per peer;
//   kv_ipc.cc            Send and Fetch over an opened peer pool.
// The staging path is a KvStaging of its own (kv_staging.h), created only
// when this side has a staging ring; it reaches this object only through
// KvStagingHost. The notice bytes are kv_notice.cc's; the request state
// machine is kv_request_tracker.cc's.
//
// Thread safety: thread-safe. Three locks, never nested: engine_mu_ (the
// engine as completion callbacks may use it), pools_mu_ (peers' pools) and
// mu_ (the receiving side). No thread of its own (KvStaging has one).

#ifndef FLOWKV_LIB_KV_KV_TRANSFER_IMPL_H_
#define FLOWKV_LIB_KV_KV_TRANSFER_IMPL_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
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
#include "lib/kv/kv_staging.h"

namespace flowkv {
namespace internal {

enum class KvDirection : uint8_t { kSend, kFetch };

// OK when `regions` names one region of `known` per region of `layout`,
// each large enough for it; else InvalidArgument (count, size) or NotFound
// (an unknown id). `owner` names whose regions they are in errors.
absl::Status CheckKvRegions(const KvLayout& layout,
                            const std::vector<RegionId>& regions,
                            const std::vector<RegionInfo>& known,
                            const std::string& owner);

// A handle that is already done with `status`.
TransferHandle FailedKvHandle(absl::Status status);

// InvalidArgument unless `id` is a valid request id.
absl::Status CheckKvRequestId(const char* caller, std::string_view id);

}  // namespace internal

class FLOWKV_NO_EXPORT KvTransfer::Impl
    : public std::enable_shared_from_this<Impl>,
      public internal::KvStagingHost {
 public:
  // `regions`: the engine regions holding the pool (empty when `direct` is
  // false). `pool`: the pool's memory for staging and IPC (null when
  // neither can happen). `ring`: slot_count 0 when there is none.
  Impl(TransferEngine* engine, const KvLayout& layout,
       std::vector<RegionId> regions, bool direct,
       std::shared_ptr<KvPoolMemory> pool, internal::KvRing ring,
       KvTransferOptions options);
  // Detaches (if KvTransfer did not).
  ~Impl() override;

  // Starts the staging path when there is a ring (after construction: it
  // refers back to this object).
  void Start();
  // Stops completion callbacks from using the engine, and stops the staging
  // path (KvTransfer is going); staged sends in flight fail with Cancelled.
  // Idempotent.
  void Detach();

  absl::StatusOr<KvPath> PeerPath(PeerId peer) const;

  // --- kv_transfer.cc: the sending side ---
  TransferHandle SendOrFetch(internal::KvDirection direction,
                             std::string_view request_id, PeerId peer,
                             const KvPiece& request);

  // --- kv_receive.cc ---
  absl::Status Expect(std::string_view request_id, absl::Time deadline);
  void Forget(std::string_view request_id);
  bool HandleNotification(const Notification& notification);
  // The engine's notification check (on its progress thread): refuses a
  // data notice for a request this side no longer accepts (finished,
  // failed or forgotten, and not expected again), so that the sender's
  // acknowledged Send fails with FailedPrecondition instead of reporting
  // OK for bytes nobody counts.
  absl::Status CheckNotice(const Notification& notification) const;
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
                    const KvPiece& r, bool engine_regions,
                    std::vector<TransferOp>* ops) const;
  void PieceFailed(internal::KvDirection direction, PeerId peer,
                   std::string_view request_id, uint32_t rank,
                   uint32_t num_senders, const absl::Status& status);
  void FetchDone(PeerId peer, const internal::KvNotice& piece,
                 const absl::Status& status);
  // Best effort, never blocks: a notice with no data, as a Write (also
  // KvStagingHost's).
  void SendNotice(PeerId peer, const internal::KvNotice& notice) override;
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

  // --- kv_ipc.cc ---
  TransferHandle IpcSendOrFetch(internal::KvDirection direction, PeerId peer,
                                const PeerPoolInfo& pool,
                                const std::vector<TransferOp>& ops,
                                internal::KvNotice notice, const KvPiece& r);

  // --- kv_receive.cc ---
  // A staging notice (kind kSlot or kCredit) with no staging path here:
  // a slot is refused, a credit counted as malformed.
  void NoStagingNotice(PeerId peer, const internal::KvNotice& notice);

  // --- KvStagingHost (kv_pool_exchange.cc: PeerRing; kv_transfer.cc:
  // SendNotice, SendFailed; kv_receive.cc: the rest) ---
  std::optional<internal::KvPeerRing> PeerRing(PeerId peer) const override;
  void SendFailed(PeerId peer, std::string_view request_id, uint32_t rank,
                  uint32_t num_senders, const absl::Status& status) override;
  void RefuseSlot(PeerId peer, const internal::KvNotice& incoming,
                  absl::Status why) override;
  void CountMalformedNotice() override;
  void MarkPeerDead(PeerId peer) override;
  bool PeerDead(PeerId peer) const override;
  bool BeginScatter(PeerId peer, std::string_view request_id) override;
  void EndScatter(PeerId peer, std::string_view request_id) override;

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
  // Results Poll returned (Stats): finished, failed, and failed with
  // DeadlineExceeded.
  uint64_t requests_finished_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t requests_failed_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t requests_timed_out_ ABSL_GUARDED_BY(mu_) = 0;
  // Staged slots being scattered, by request and by peer: a failure of
  // the request (TakeResults) or the peer's disconnection
  // (HandleNotification) is passed on only once they are done.
  absl::flat_hash_map<std::string, uint32_t> scattering_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<PeerId, uint32_t> scattering_peers_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<PeerId> dead_peers_ ABSL_GUARDED_BY(mu_);
  absl::CondVar scatter_cv_;

  // The engine's notification check (CheckNotice); 0 once removed. Set by
  // Start, removed by Detach.
  uint64_t check_id_ = 0;

  // The staging path: null unless this side has a ring. Set by Start,
  // before any other thread sees this object; stopped by Detach.
  std::shared_ptr<internal::KvStaging> staging_;

  // Stats (any thread).
  std::atomic<uint64_t> slots_refused_{0}, ipc_copies_{0};
};

}  // namespace flowkv

#endif  // FLOWKV_LIB_KV_KV_TRANSFER_IMPL_H_
