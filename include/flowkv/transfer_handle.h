// SPDX-License-Identifier: Apache-2.0
// TransferHandle: the caller's view of one asynchronous transfer (or message)
// issued by a TransferEngine.
//
//   flowkv::TransferHandle handle = engine->Write(peer, ops, {});
//   absl::Status status = handle.Wait();  // blocks until kDone
//   if (!status.ok()) { ... the blocks were not (fully) written ... }
//
// The state of a transfer (pending, in flight, done) is separate from its
// result: status() is meaningful once state() is kDone.
//
// Destructor contract: destroying (or moving from) a handle never blocks and
// never cancels; the transfer runs on to completion, failure or its deadline,
// and its completion callback (if any) still runs. Call Cancel() first to stop
// it. A handle stays usable after its engine is destroyed (the engine fails
// every unfinished transfer with Cancelled when it shuts down).
//
// Thread safety: thread-safe (every method may be called from any thread on
// the same handle; moving or assigning a handle is externally synchronized).

#ifndef FLOWKV_TRANSFER_HANDLE_H_
#define FLOWKV_TRANSFER_HANDLE_H_

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "flowkv/export.h"

namespace flowkv {

namespace internal {
class TransferRecord;
class TransferEngineImpl;
class LocalTransfer;
}  // namespace internal

// Where a transfer is. Not an error code: see TransferHandle::status().
enum class TransferState : uint8_t {
  kPending,   // Accepted, not yet posted to the network.
  kInFlight,  // Posting started (some ops may be on the network).
  kDone,      // Finished; status() holds the result.
};

// Figures of one transfer, filled as it progresses.
struct TransferStats {
  // Network operations posted (one per op; 0 for a message).
  uint64_t ops = 0;
  // Payload bytes (sum of op lengths, or the message size).
  uint64_t bytes = 0;
  // When Write/Read/Send accepted the transfer.
  absl::Time submit_time = absl::InfinitePast();
  // From submit_time until every op and the flush were posted
  // (absl::InfiniteDuration() while not posted).
  absl::Duration post_time = absl::InfiniteDuration();
  // From submit_time until the transfer reached kDone
  // (absl::InfiniteDuration() while not done).
  absl::Duration completion_time = absl::InfiniteDuration();
};

class FLOWKV_EXPORT TransferHandle {
 public:
  // An empty handle: valid() is false, state() is kDone and status() is
  // FailedPrecondition.
  TransferHandle();
  ~TransferHandle();
  TransferHandle(TransferHandle&& other) noexcept;
  TransferHandle& operator=(TransferHandle&& other) noexcept;
  TransferHandle(const TransferHandle&) = delete;
  TransferHandle& operator=(const TransferHandle&) = delete;

  // False for a default-constructed or moved-from handle.
  bool valid() const { return record_ != nullptr; }

  TransferState state() const;

  // Blocks until the transfer is done or `timeout` passes; true when done.
  // Waiting does not change the transfer (use Cancel() to stop it).
  [[nodiscard]] bool Wait(absl::Duration timeout) const;

  // Blocks until the transfer is done and returns its status().
  // FailedPrecondition on the engine's progress thread (from a callback),
  // where waiting would deadlock.
  absl::Status Wait() const;

  // The result, once state() is kDone:
  //   OK                all ops completed at the peer (Write) / locally (Read)
  //                     and the notification, if any, was sent;
  //   InvalidArgument / OutOfRange / FailedPrecondition / Unavailable when
  //                     the engine refused the transfer before posting;
  //   DeadlineExceeded  the transfer's deadline passed;
  //   Cancelled         Cancel() was called, or the engine shut down;
  //   Unavailable       the peer failed or its endpoint was closed.
  // Every failure after posting is reported only after no byte of the
  // transfer can still land (its fence completed, or the peer's endpoint was
  // closed). FailedPrecondition while the transfer is not done yet.
  absl::Status status() const;

  TransferStats stats() const;

  // Requests cancellation and returns at once. A transfer that is not done
  // yet stops posting and fails with Cancelled once its outstanding flush
  // completed; the peer and its other transfers are not affected (unless the
  // flush does not complete within peer_failure_timeout: then the peer is
  // failed). A transfer whose notification is already on its way is
  // reported Cancelled at once; the peer may still receive the notification.
  // No effect on a finished transfer.
  void Cancel();

 private:
  // Handles are made by the engine and by internal::LocalTransfer.
  friend class internal::TransferEngineImpl;
  friend class internal::LocalTransfer;
  explicit TransferHandle(std::shared_ptr<internal::TransferRecord> record);
  std::shared_ptr<internal::TransferRecord> record_;
};

}  // namespace flowkv

#endif  // FLOWKV_TRANSFER_HANDLE_H_
