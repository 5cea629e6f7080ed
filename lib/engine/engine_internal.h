// SPDX-License-Identifier: Apache-2.0
// The engine's one door for the layers above it (lib/kv/), in the manner of
// leveldb's WriteBatchInternal: a few functions over the public types, no
// UCX type and no engine internal behind them. What a layer above needs of
// an engine beyond its public API is here, and only this:
//
//   * a notification tap: KvTransfer's staging sees its notices on the
//     progress thread, before they are queued for the user;
//   * a notification check: KvTransfer refuses an acknowledged notice
//     (a data notice for a request it no longer accepts), and the
//     acknowledgement carries the refusal to the sender's handle;
//   * caller-driven transfers (LocalTransfer): a TransferHandle no engine
//     posts (a staged or IPC Send, a refusal) and the completer that ends it;
//   * a region lookup in a peer's or the engine's region list;
//   * the posting loop's largest burst, for the test of its bound.
//
// scripts/check-layers.sh (make lint) keeps lib/kv/ to this header.
//
// Thread safety: thread-safe (as the engine's public API).

#ifndef FLOWKV_LIB_ENGINE_ENGINE_INTERNAL_H_
#define FLOWKV_LIB_ENGINE_ENGINE_INTERNAL_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "flowkv/transfer_engine.h"
#include "flowkv/transfer_handle.h"
#include "flowkv/transfer_types.h"

namespace flowkv::internal {

class TransferRecord;

// The completing side of a transfer that the caller drives instead of an
// engine. Copies share one transfer.
class LocalTransfer {
 public:
  // A transfer of `ops` ops and `bytes` bytes, accepted at `submit_time`,
  // and the handle the caller returns to its user. `on_cancel` (optional)
  // runs on the thread that calls TransferHandle::Cancel(), outside any
  // lock, once per call while the transfer is not done; it must not block.
  static std::pair<LocalTransfer, TransferHandle> Start(
      uint64_t ops, uint64_t bytes, absl::Time submit_time,
      std::function<void()> on_cancel = nullptr);
  // A handle that is already done with `status`.
  static TransferHandle Failed(absl::Status status);

  LocalTransfer() = default;

  // The first op was handed on (TransferState::kInFlight).
  void MarkInFlight() const;
  // Ends the transfer with `status` (the first call wins: later calls
  // return false). The handle's callback and waiters see it at once.
  bool Complete(absl::Status status, absl::Time now = absl::Now()) const;
  bool valid() const { return record_ != nullptr; }

 private:
  explicit LocalTransfer(std::shared_ptr<TransferRecord> record)
      : record_(std::move(record)) {}
  std::shared_ptr<TransferRecord> record_;
};

class EngineInternal {
 public:
  // Sees every notification on the progress thread before it is queued or
  // passed to on_notification; returning true consumes it
  // (kPeerDisconnected is shown to every tap and always passed on). A tap
  // must not block or call the tap functions. RemoveNotificationTap returns
  // once the tap is not running and will not run again.
  using NotificationTap = std::function<bool(const Notification&)>;
  static uint64_t AddNotificationTap(TransferEngine& engine,
                                     NotificationTap tap);
  static void RemoveNotificationTap(TransferEngine& engine, uint64_t id);

  // Decides, on the progress thread, whether an acknowledged transfer's
  // notification (kind kTransfer, TransferOptions::acknowledged) is
  // refused: a non-OK status keeps it from taps and the queue, and the
  // acknowledgement carries the status back, so that the sender's handle
  // ends with it (code and message). The first non-OK check wins. A check
  // must not block or call the check or tap functions.
  // RemoveNotificationCheck returns once the check is not running and will
  // not run again.
  using NotificationCheck = std::function<absl::Status(const Notification&)>;
  static uint64_t AddNotificationCheck(TransferEngine& engine,
                                       NotificationCheck check);
  static void RemoveNotificationCheck(TransferEngine& engine, uint64_t id);

  // The region `id` of `regions` (a PeerInfo's or Regions()), or null.
  static const RegionInfo* FindRegion(const std::vector<RegionInfo>& regions,
                                      RegionId id);

  // The most bytes the progress thread posted in one turn of its loop:
  // at most kWindowsPerProgressTurn x max_window_bytes.
  static uint64_t MaxBytesPostedPerTurn(const TransferEngine& engine);
  static constexpr uint64_t kWindowsPerProgressTurn = 4;
};

}  // namespace flowkv::internal

#endif  // FLOWKV_LIB_ENGINE_ENGINE_INTERNAL_H_
