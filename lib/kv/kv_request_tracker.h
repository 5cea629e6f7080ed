// SPDX-License-Identifier: Apache-2.0
// KvRequestTracker: the receiving side's state of incoming requests — which
// pieces arrived, when a request is complete, when it failed — and the
// bounded memory of requests that are done. Pure bookkeeping: no I/O, no
// clock (callers pass `now`). KvTransfer feeds it the parsed notices, the
// local Fetch completions, peer disconnections and Expect/Forget calls.
//
// A request is tracked per sender rank and per layer as sets of received
// token intervals (adjacent intervals merged, so a request sent in order
// keeps one interval per layer). A rank is complete once its final chunk
// fixed the token count and every layer covers [0, tokens); the request is
// finished when all num_senders ranks are complete. Overlaps are refused,
// so every byte range is counted once.
//
// Thread safety: externally synchronized.

#ifndef FLOWKV_LIB_KV_KV_REQUEST_TRACKER_H_
#define FLOWKV_LIB_KV_KV_REQUEST_TRACKER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "flowkv/kv_transfer.h"
#include "lib/kv/kv_notice.h"

namespace flowkv::internal {

class KvRequestTracker {
 public:
  struct Options {
    // Layers of the local pool: a piece must lie in [0, num_layers).
    uint32_t num_layers = 0;
    absl::Duration incomplete_request_timeout = absl::Seconds(60);
    size_t max_tombstones = 65536;
    // Told about each failed request, once (may be empty).
    std::function<void(LogSeverity, std::string_view)> log;
  };

  // What one data piece did.
  struct PieceOutcome {
    // Ignored: the request was finished, failed or forgotten before.
    bool late = false;
    // This piece completed its sender rank's part of the request.
    bool rank_complete = false;
    // Non-OK when this piece failed the request (it contradicts others).
    absl::Status failure;
  };

  explicit KvRequestTracker(Options options);

  // A data piece (kind kData) from `peer` (the engine's id of the sender;
  // for a local Fetch, the peer fetched from).
  PieceOutcome AddPiece(const KvNotice& piece, PeerId peer, absl::Time now);

  // Sender rank `rank`'s piece of the request will not come. Fails the
  // request with `status` (also one this side has not heard of, so a
  // caller waiting without Expect learns of it) unless it is done already
  // or that rank's part is complete. Returns false when ignored.
  bool AddFailure(std::string_view request_id, uint32_t rank,
                  absl::Status status);

  // Fails every unfinished request with an incomplete rank whose pieces
  // came from `peer`.
  void PeerDisconnected(PeerId peer, std::string_view reason);

  // See KvTransfer::Expect.
  void Expect(std::string_view request_id, absl::Time deadline);
  // See KvTransfer::Forget.
  void Forget(std::string_view request_id);

  // Fails the requests whose deadline passed by `now`.
  void ApplyDeadlines(absl::Time now);
  // The earliest deadline of an active request (InfiniteFuture if none).
  absl::Time NextDeadline() const;

  bool HasResults() const { return !finished_.empty() || !failed_.empty(); }
  // Moves the results out (appending).
  void TakeResults(std::vector<KvFinished>* finished,
                   std::vector<KvFailed>* failed);

  uint32_t LayersArrived(std::string_view request_id) const;

  // Whether bytes of the request may still be written into the pool: false
  // once it finished, failed or was forgotten (until Expect reuses the id).
  bool Accepts(std::string_view request_id) const {
    return FindTombstone(request_id) == nullptr;
  }

  size_t active() const { return active_.size(); }
  size_t results_pending() const { return finished_.size() + failed_.size(); }
  size_t tombstones() const { return tombstones_.size(); }
  uint64_t late_notices() const { return late_notices_; }

 private:
  struct Rank {
    PeerId peer = 0;  // where its first piece came from
    bool total_known = false;
    uint64_t total_tokens = 0;
    uint64_t max_token_end = 0;
    // Per layer: received token intervals, begin -> end, merged.
    std::vector<absl::btree_map<uint64_t, uint64_t>> intervals;
    // Per layer: tokens received.
    std::vector<uint64_t> covered;
    bool complete = false;
  };
  struct Request {
    uint32_t num_senders = 0;  // 0 until the first piece
    absl::flat_hash_map<uint32_t, Rank> ranks;
    uint32_t complete_ranks = 0;
    std::string payload;
    absl::Time expect_deadline = absl::InfiniteFuture();
    absl::Time last_piece = absl::InfinitePast();
    absl::Time deadline = absl::InfiniteFuture();  // key in deadlines_
  };
  enum class Outcome : uint8_t { kFinished, kFailed, kForgotten };
  struct Tombstone {
    Outcome outcome = Outcome::kForgotten;
    bool reported = false;  // taken by TakeResults (or forgotten)
    uint64_t seq = 0;       // matches its entry in tombstone_order_
  };

  // Checks and applies the piece; non-OK when it contradicts the request.
  absl::Status Apply(const KvNotice& piece, PeerId peer, Request& request,
                     bool* rank_complete);
  void SetDeadline(const std::string& id, Request& request,
                   absl::Time deadline);
  void Finish(const std::string& id);
  // Moves the active request `id` (or an unknown one) to the failed results.
  void Fail(const std::string& id, absl::Status status);
  void Remember(const std::string& id, Outcome outcome);
  const Tombstone* FindTombstone(std::string_view id) const;

  const Options options_;
  absl::flat_hash_map<std::string, Request> active_;
  absl::btree_set<std::pair<absl::Time, std::string>> deadlines_;
  std::vector<KvFinished> finished_;
  std::vector<KvFailed> failed_;
  absl::flat_hash_map<std::string, Tombstone> tombstones_;
  std::deque<std::pair<std::string, uint64_t>> tombstone_order_;
  uint64_t next_seq_ = 0;
  uint64_t late_notices_ = 0;
};

}  // namespace flowkv::internal

#endif  // FLOWKV_LIB_KV_KV_REQUEST_TRACKER_H_
