// SPDX-License-Identifier: Apache-2.0
// KvStaging: a KvTransfer's staging path (docs/gpu.md "Staging protocol"),
// created only when the KvTransfer has a staging ring. It owns the ring's
// use: the slots and credits (KvRingSlots), the staged sends (cut into
// slots, gathered into send slots, announced by slot notices, freed by
// credits, finished by the data notice), the slots received (read from
// the sender's slot into a receive slot, scattered into the pool, answered
// by a credit), the engine notification tap that feeds it, its worker
// thread, and the deadlines of staged sends. Implemented by side:
//   kv_staging.cc          lifecycle, the tap, the worker and its queue,
//                          the one entry point for notices (OnNotice);
//   kv_staging_send.cc     staged sends and the credits that come back;
//   kv_staging_receive.cc  slots in, credits out.
// The receiving side's request state (the request tracker, which peers are
// gone, scatters in progress) stays KvTransfer's: KvStaging reaches it only
// through KvStagingHost.
//
// Thread safety: thread-safe. OnNotice, Send, Stats and the tap may be
// called from any thread; all staging state belongs to the worker thread,
// to which every other thread posts jobs. One lock (work_mu_, the queue),
// never held while calling out.

#ifndef FLOWKV_LIB_KV_KV_STAGING_H_
#define FLOWKV_LIB_KV_KV_STAGING_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "flowkv/kv_layout.h"
#include "flowkv/kv_pool_memory.h"
#include "flowkv/kv_transfer.h"
#include "flowkv/transfer_engine.h"
#include "lib/kv/kv_notice.h"
#include "lib/kv/kv_ring_slots.h"

namespace flowkv::internal {

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

// A peer's staging ring, as its pool descriptor named it.
struct KvPeerRing {
  RegionId region = 0;
  uint64_t slot_bytes = 0;
  uint32_t slot_count = 0;
};

// The credit that answers `slot` with `status` (OK: scattered).
KvNotice KvCreditFor(const KvNotice& incoming, const absl::Status& status);

// What KvStaging needs of the KvTransfer it serves (KvTransfer::Impl):
// peers' rings, notices out, and the receiving side's request state.
//
// Thread safety: implementations are thread-safe.
class KvStagingHost {
 public:
  virtual ~KvStagingHost() = default;
  // `peer`'s staging ring; nullopt when its pool is not known here or has
  // no ring.
  virtual std::optional<KvPeerRing> PeerRing(PeerId peer) const = 0;
  // Best effort, never blocks; dropped once the KvTransfer is going.
  virtual void SendNotice(PeerId peer, const KvNotice& notice) = 0;
  // A staged send of `request_id` failed with `status`: tells the receiver.
  virtual void SendFailed(PeerId peer, std::string_view request_id,
                          uint32_t rank, uint32_t num_senders,
                          const absl::Status& status) = 0;
  // Refuses a slot: counts it, fails its request here, returns the credit.
  virtual void RefuseSlot(PeerId peer, const KvNotice& incoming,
                          absl::Status why) = 0;
  // A staging notice that was malformed or named nothing held.
  virtual void CountMalformedNotice() = 0;
  // `peer` disconnected: called before the notification is queued, so no
  // scatter from it starts once anyone can see that.
  virtual void MarkPeerDead(PeerId peer) = 0;
  virtual bool PeerDead(PeerId peer) const = 0;
  // A slot of `request_id` from `peer` may be scattered: false when the
  // peer is gone or the request no longer accepts data; true counts the
  // scatter until EndScatter (a failure of the request, or the peer's
  // disconnection, is reported only after it).
  virtual bool BeginScatter(PeerId peer, std::string_view request_id) = 0;
  virtual void EndScatter(PeerId peer, std::string_view request_id) = 0;
};

class KvStaging : public std::enable_shared_from_this<KvStaging> {
 public:
  // `pool`: this side's pool memory (gathers and scatters). `host` outlives
  // every call KvStaging makes on it, or is expired (calls are dropped).
  static std::shared_ptr<KvStaging> Start(
      TransferEngine* engine, const KvLayout& layout, KvRing ring,
      std::shared_ptr<KvPoolMemory> pool,
      std::function<void(LogSeverity, std::string_view)> log,
      std::weak_ptr<KvStagingHost> host);
  // Stops first if Stop was not called.
  ~KvStaging();
  KvStaging(const KvStaging&) = delete;
  KvStaging& operator=(const KvStaging&) = delete;

  // Removes the tap and stops the worker (joined); staged sends in flight
  // fail with Cancelled. Completions still pending afterwards only drop
  // their work.
  void Stop();

  // The one entry point for decoded staging notices (kinds kSlot and
  // kCredit) from `peer` (KvTransfer::HandleNotification's; the tap's own
  // are decoded once on the worker and go the same way).
  void OnNotice(PeerId peer, KvNotice notice);

  // Starts a staged Send of `ops` (this pool's regions and offsets -> the
  // peer's layout regions) to `peer`, whose ring is `peer_ring`; the data
  // notice goes once every slot was credited.
  TransferHandle Send(PeerId peer, const KvPeerRing& peer_ring,
                      std::vector<TransferOp> ops, const KvNotice& data_notice,
                      const KvPiece& r);

  // Fills the staged_* and ring_* fields of `stats`.
  void Stats(KvTransferStats* stats) const;

 private:
  struct StagedSend;
  struct IncomingSlot;

  KvStaging(TransferEngine* engine, const KvLayout& layout, KvRing ring,
            std::shared_ptr<KvPoolMemory> pool,
            std::function<void(LogSeverity, std::string_view)> log,
            std::weak_ptr<KvStagingHost> host);

  // --- kv_staging.cc ---
  // Runs on the progress thread before notifications are queued.
  bool Tap(const Notification& n);
  // Queues `job` for the worker (dropped once it stopped).
  void Post(std::function<void()> job);
  void WorkerLoop();
  // Worker only, below.
  void Dispatch(PeerId peer, KvNotice notice);
  void PublishSlots();
  void PeerGone(PeerId peer);

  // --- kv_staging_send.cc (worker) ---
  void Pump(const std::shared_ptr<StagedSend>& send);
  void PumpWaiting();
  void GatherDone(const std::shared_ptr<StagedSend>& send, uint32_t slot,
                  std::string slot_notice, uint64_t bytes, absl::Status s);
  void SendSlotsReturned(const std::shared_ptr<StagedSend>& send,
                         uint32_t count);
  void StopSend(const std::shared_ptr<StagedSend>& send, absl::Status status);
  void MaybeFinish(const std::shared_ptr<StagedSend>& send);
  void ReportStopped(const std::shared_ptr<StagedSend>& send);
  void HandleCredit(PeerId peer, const KvNotice& credit);
  void SendsPeerGone(PeerId peer);
  void ApplySendDeadlines(absl::Time now);
  absl::Time NextSendDeadline() const;
  // Called by Stop once the worker is gone.
  void CancelSends();

  // --- kv_staging_receive.cc (worker) ---
  void ReceiveSlot(PeerId peer, KvNotice notice);
  void PumpReceive();
  void ReadDone(std::shared_ptr<IncomingSlot> incoming, uint32_t slot,
                absl::Status s);
  void ScatterDone(const std::shared_ptr<IncomingSlot>& incoming, uint32_t slot,
                   const absl::Status& done);
  void ReceivePeerGone(PeerId peer);

  TransferEngine* const engine_;
  const KvLayout layout_;
  const KvRing ring_;
  const std::shared_ptr<KvPoolMemory> pool_;
  const std::function<void(LogSeverity, std::string_view)> log_;
  const std::weak_ptr<KvStagingHost> host_;

  // The worker's queue.
  absl::Mutex work_mu_;
  absl::CondVar work_cv_;
  std::deque<std::function<void()>> work_ ABSL_GUARDED_BY(work_mu_);
  bool work_stopped_ ABSL_GUARDED_BY(work_mu_) = false;
  std::thread worker_;
  uint64_t tap_id_ = 0;

  // Worker state.
  KvRingSlots slots_;
  // Staged sends, by id (the ids KvRingSlots lends send slots to).
  absl::flat_hash_map<uint64_t, std::shared_ptr<StagedSend>> sends_;
  std::deque<std::shared_ptr<StagedSend>> waiting_sends_;
  uint64_t next_send_id_ = 1;
  std::deque<std::shared_ptr<IncomingSlot>> incoming_;

  // Stats (any thread).
  std::atomic<uint64_t> slots_sent_{0}, bytes_sent_{0}, slots_received_{0},
      bytes_received_{0};
  std::atomic<uint64_t> slots_free_{0}, slots_max_in_use_{0};
};

}  // namespace flowkv::internal

#endif  // FLOWKV_LIB_KV_KV_STAGING_H_
