// KvTransfer::Impl: the state behind KvTransfer (include/flowkv/kv_transfer.h),
// declared once and implemented by concept:
//   kv_transfer.cc       Create, the sending side (Send, Fetch: validation,
//                        planning, posting, failure and release notices);
//   kv_receive.cc        notifications in, results out (Poll, Expect, ...);
//   kv_pool_exchange.cc  peers' pools (AddPeerPool, AnnouncePool, pool
//                        descriptors received, PeerPool, WaitForPeerPool).
// The notice bytes are kv_notice.cc's; the request state machine is
// kv_request_tracker.cc's.
//
// Thread safety: thread-safe. Three locks, never nested: engine_mu_ (the
// engine as completion callbacks may use it), pools_mu_ (peers' pools) and
// mu_ (the receiving side).

#ifndef FLOWKV_LIB_TRANSFER_KV_TRANSFER_IMPL_H_
#define FLOWKV_LIB_TRANSFER_KV_TRANSFER_IMPL_H_

#include <cstdint>
#include <functional>
#include <memory>
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
#include "flowkv/kv_layout.h"
#include "flowkv/kv_transfer.h"
#include "flowkv/transfer_engine.h"
#include "lib/transfer/kv_notice.h"
#include "lib/transfer/kv_request_tracker.h"

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

// InvalidArgument unless `id` is a valid request id.
absl::Status CheckKvRequestId(const char* caller, std::string_view id);

}  // namespace internal

class KvTransfer::Impl : public std::enable_shared_from_this<Impl> {
 public:
  Impl(TransferEngine* engine, const KvLayout& layout,
       std::vector<RegionId> regions, KvTransferOptions options);

  // Stops completion callbacks from using the engine (KvTransfer is going).
  void Detach();

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
    std::vector<RegionId> regions;
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
  absl::Status Plan(internal::KvDirection direction, const PeerPoolInfo& pool,
                    const KvSendRequest& r, std::vector<TransferOp>* ops) const;
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

  TransferEngine* const engine_;
  const KvLayout layout_;
  const std::vector<RegionId> regions_;
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
};

}  // namespace flowkv

#endif  // FLOWKV_LIB_TRANSFER_KV_TRANSFER_IMPL_H_
