// SPDX-License-Identifier: Apache-2.0
// The receiving side's request state machine
// (lib/kv/kv_request_tracker.h) without a network: fan-in, chunks, layer
// pieces in any order, every kind of inconsistency, deadlines, Forget and the
// tombstone bound.
#include "lib/kv/kv_request_tracker.h"

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

namespace flowkv::internal {
namespace {

constexpr uint32_t kLayers = 4;
const absl::Time kT0 = absl::FromUnixSeconds(1000);

KvRequestTracker MakeTracker(size_t max_tombstones = 64) {
  return KvRequestTracker({.num_layers = kLayers,
                           .incomplete_request_timeout = absl::Seconds(10),
                           .max_tombstones = max_tombstones,
                           .log = nullptr});
}

KvNotice Piece(const std::string& id, uint32_t rank, uint32_t senders,
               uint64_t token_begin, uint64_t token_end, bool final_chunk,
               uint32_t layer_begin = 0, uint32_t layer_end = kLayers) {
  KvNotice n;
  n.kind = KvNoticeKind::kData;
  n.request_id = id;
  n.sender_rank = rank;
  n.num_senders = senders;
  n.layer_begin = layer_begin;
  n.layer_end = layer_end;
  n.token_begin = token_begin;
  n.token_end = token_end;
  n.final_chunk = final_chunk;
  return n;
}

struct Results {
  std::vector<KvFinished> finished;
  std::vector<KvFailed> failed;
};

Results Take(KvRequestTracker& t) {
  Results r;
  t.TakeResults(&r.finished, &r.failed);
  return r;
}

TEST_CASE("Tracker: fan-in finishes once, after the last rank",
          "[kv_transfer]") {
  const uint32_t senders = GENERATE(1u, 2u, 4u);
  KvRequestTracker t = MakeTracker();
  std::vector<uint32_t> order(senders);
  for (uint32_t r = 0; r < senders; ++r) order[r] = r;
  std::shuffle(order.begin(), order.end(), std::mt19937(senders));
  for (size_t i = 0; i < order.size(); ++i) {
    KvRequestTracker::PieceOutcome o =
        t.AddPiece(Piece("a", order[i], senders, 0, 100, true), 7, kT0);
    CHECK(o.rank_complete);
    CHECK(o.failure.ok());
    Results r = Take(t);
    CHECK(r.failed.empty());
    if (i + 1 < order.size()) {
      CHECK(r.finished.empty());
      CHECK(t.LayersArrived("a") == 0);  // some rank's final chunk unknown
    } else {
      REQUIRE(r.finished.size() == 1);
      CHECK(r.finished[0].request_id == "a");
    }
  }
  CHECK(t.LayersArrived("a") == kLayers);
  // A duplicate after the end is ignored, not a second finish.
  CHECK(t.AddPiece(Piece("a", 0, senders, 0, 100, true), 7, kT0).late);
  Results r = Take(t);
  CHECK(r.finished.empty());
  CHECK(r.failed.empty());
  CHECK(t.late_notices() == 1);
  CHECK(t.active() == 0);
}

TEST_CASE("Tracker: chunks and layer pieces in any order finish once",
          "[kv_transfer]") {
  // 2 ranks x 3 chunks (tokens [0,40) [40,80) [80,101)) x 4 layers, shuffled.
  std::vector<KvNotice> pieces;
  const uint64_t bounds[] = {0, 40, 80, 101};
  for (uint32_t rank = 0; rank < 2; ++rank)
    for (int c = 0; c < 3; ++c)
      for (uint32_t l = 0; l < kLayers; ++l)
        pieces.push_back(
            Piece("c", rank, 2, bounds[c], bounds[c + 1], c == 2, l, l + 1));
  for (int seed = 0; seed < 20; ++seed) {
    std::shuffle(pieces.begin(), pieces.end(), std::mt19937(seed));
    KvRequestTracker t = MakeTracker();
    int rank_completions = 0;
    for (size_t i = 0; i < pieces.size(); ++i) {
      KvRequestTracker::PieceOutcome o = t.AddPiece(pieces[i], 1, kT0);
      REQUIRE(o.failure.ok());
      rank_completions += o.rank_complete ? 1 : 0;
      Results r = Take(t);
      REQUIRE(r.failed.empty());
      REQUIRE(r.finished.size() == (i + 1 == pieces.size() ? 1u : 0u));
    }
    CHECK(rank_completions == 2);
  }
}

TEST_CASE("Tracker: LayersArrived counts complete leading layers",
          "[kv_transfer]") {
  KvRequestTracker t = MakeTracker();
  t.AddPiece(Piece("l", 0, 1, 0, 50, false, 0, 2), 1, kT0);
  CHECK(t.LayersArrived("l") == 0);  // the final chunk is not known yet
  t.AddPiece(Piece("l", 0, 1, 50, 64, true, 0, 1), 1, kT0);
  CHECK(t.LayersArrived("l") == 1);
  t.AddPiece(Piece("l", 0, 1, 50, 64, true, 1, 2), 1, kT0);
  CHECK(t.LayersArrived("l") == 2);
  t.AddPiece(Piece("l", 0, 1, 0, 64, true, 3, 4), 1, kT0);
  CHECK(t.LayersArrived("l") == 2);  // layer 2 is missing
  t.AddPiece(Piece("l", 0, 1, 0, 64, true, 2, 3), 1, kT0);
  CHECK(t.LayersArrived("l") == kLayers);
  CHECK(Take(t).finished.size() == 1);
  CHECK(t.LayersArrived("unknown") == 0);
}

TEST_CASE("Tracker: inconsistent pieces fail the request with a reason",
          "[kv_transfer]") {
  struct Case {
    const char* name;
    std::vector<KvNotice> pieces;
    const char* reason;
  };
  KvNotice payload_a = Piece("x", 0, 2, 0, 10, true);
  payload_a.payload = "A";
  KvNotice payload_b = Piece("x", 1, 2, 0, 10, true);
  payload_b.payload = "B";
  const std::vector<Case> cases = {
      {"senders",
       {Piece("x", 0, 2, 0, 10, true), Piece("x", 1, 3, 0, 10, true)},
       "names 3 senders, earlier pieces 2"},
      {"duplicate",
       {Piece("x", 0, 2, 0, 10, true, 0, 1),
        Piece("x", 0, 2, 0, 10, true, 0, 1)},
       "sent layer 0 tokens [0, 10) again"},
      {"overlap",
       {Piece("x", 0, 1, 0, 16, false), Piece("x", 0, 1, 8, 32, true)},
       "overlaps tokens [0, 16)"},
      {"past final",
       {Piece("x", 0, 1, 0, 16, true, 0, 1), Piece("x", 0, 1, 16, 32, false)},
       "past its final chunk's end 16"},
      {"two finals",
       {Piece("x", 0, 1, 0, 16, true, 0, 1),
        Piece("x", 0, 1, 0, 32, true, 1, 2)},
       "final chunks ending at token 16 and at token 32"},
      {"final before end",
       {Piece("x", 0, 1, 16, 32, false), Piece("x", 0, 1, 0, 16, true)},
       "final chunk ends at token 16, an earlier chunk at token 32"},
      {"layer", {Piece("x", 0, 1, 0, 16, true, 2, 9)}, "the pool has 4"},
      {"payload", {payload_a, payload_b}, "differs from an earlier one"},
  };
  for (const Case& c : cases) {
    INFO(c.name);
    KvRequestTracker t = MakeTracker();
    for (size_t i = 0; i < c.pieces.size(); ++i) {
      KvRequestTracker::PieceOutcome o = t.AddPiece(c.pieces[i], 1, kT0);
      CHECK(o.failure.ok() == (i + 1 < c.pieces.size()));
    }
    Results r = Take(t);
    CHECK(r.finished.empty());
    REQUIRE(r.failed.size() == 1);
    CHECK(r.failed[0].request_id == "x");
    CHECK(r.failed[0].status.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(r.failed[0].status.message()),
               Catch::Contains(c.reason));
    // Later pieces of the failed request are ignored.
    CHECK(t.AddPiece(Piece("x", 0, 1, 0, 16, true), 1, kT0).late);
    CHECK(Take(t).failed.empty());
  }
}

TEST_CASE("Tracker: identical payloads are fine and delivered once",
          "[kv_transfer]") {
  KvRequestTracker t = MakeTracker();
  for (uint32_t l = 0; l < kLayers; ++l) {
    KvNotice p = Piece("p", 0, 1, 0, 8, true, l, l + 1);
    p.payload = l % 2 == 0 ? "aux" : "";
    CHECK(t.AddPiece(p, 1, kT0).failure.ok());
  }
  Results r = Take(t);
  REQUIRE(r.finished.size() == 1);
  CHECK(r.finished[0].payload == "aux");
}

TEST_CASE("Tracker: failure notices and disconnected peers", "[kv_transfer]") {
  KvRequestTracker t = MakeTracker();
  // A failure for a request never heard of still reaches the caller.
  CHECK(t.AddFailure("unknown", 0, absl::CancelledError("gone")));
  // Rank 0 (peer 1) complete, rank 1 (peer 2) incomplete.
  t.AddPiece(Piece("f", 0, 2, 0, 10, true), 1, kT0);
  t.AddPiece(Piece("f", 1, 2, 0, 10, true, 0, 1), 2, kT0);
  // A failure of a rank that is complete is ignored.
  CHECK_FALSE(t.AddFailure("f", 0, absl::InternalError("late ack")));
  // Peer 1's rank is complete: its disconnection changes nothing.
  t.PeerDisconnected(1, "bye");
  Results r = Take(t);
  REQUIRE(r.failed.size() == 1);
  CHECK(r.failed[0].request_id == "unknown");
  CHECK(r.failed[0].status.code() == absl::StatusCode::kCancelled);
  t.PeerDisconnected(2, "connection reset");
  r = Take(t);
  REQUIRE(r.failed.size() == 1);
  CHECK(r.failed[0].request_id == "f");
  CHECK(r.failed[0].status.code() == absl::StatusCode::kUnavailable);
  CHECK_THAT(std::string(r.failed[0].status.message()),
             Catch::Contains("connection reset"));
  CHECK(t.active() == 0);
}

TEST_CASE("Tracker: Expect deadlines and the incomplete-request timeout",
          "[kv_transfer]") {
  KvRequestTracker t = MakeTracker();
  t.Expect("e", kT0 + absl::Seconds(5));
  t.AddPiece(Piece("i", 0, 1, 0, 10, true, 0, 1), 1, kT0);
  t.ApplyDeadlines(kT0 + absl::Seconds(4));
  CHECK_FALSE(t.HasResults());
  CHECK(t.NextDeadline() == kT0 + absl::Seconds(5));
  t.ApplyDeadlines(kT0 + absl::Seconds(5));
  Results r = Take(t);
  REQUIRE(r.failed.size() == 1);
  CHECK(r.failed[0].request_id == "e");
  CHECK(r.failed[0].status.code() == absl::StatusCode::kDeadlineExceeded);
  CHECK_THAT(std::string(r.failed[0].status.message()),
             Catch::Contains("Expect deadline"));
  // A new piece restarts the inactivity clock.
  t.AddPiece(Piece("i", 0, 1, 0, 10, true, 1, 2), 1, kT0 + absl::Seconds(8));
  t.ApplyDeadlines(kT0 + absl::Seconds(17));
  CHECK_FALSE(t.HasResults());
  t.ApplyDeadlines(kT0 + absl::Seconds(18));
  r = Take(t);
  REQUIRE(r.failed.size() == 1);
  CHECK(r.failed[0].request_id == "i");
  CHECK(r.failed[0].status.code() == absl::StatusCode::kDeadlineExceeded);
  CHECK_THAT(std::string(r.failed[0].status.message()),
             Catch::Contains("no piece for 10s"));
  // A request that finishes in time is not failed later.
  t.Expect("ok", kT0 + absl::Seconds(30));
  t.AddPiece(Piece("ok", 0, 1, 0, 10, true), 1, kT0 + absl::Seconds(20));
  t.ApplyDeadlines(kT0 + absl::Seconds(100));
  r = Take(t);
  CHECK(r.failed.empty());
  CHECK(r.finished.size() == 1);
  CHECK(t.NextDeadline() == absl::InfiniteFuture());
}

// KvTransfer::Poll hands the tracker the notices it found queued before it
// applies deadlines: a piece handled after its deadline passed, but before
// ApplyDeadlines, counts.
TEST_CASE("Tracker: pieces handled before ApplyDeadlines count when late",
          "[kv_transfer]") {
  KvRequestTracker t = MakeTracker();
  t.Expect("e", kT0 + absl::Seconds(5));
  t.AddPiece(Piece("e", 0, 1, 0, 10, true), 1, kT0 + absl::Seconds(6));
  // The inactivity clock: the last piece came 1 s in, the Poll 30 s in.
  t.AddPiece(Piece("i", 0, 1, 0, 10, true, 0, 1), 1, kT0 + absl::Seconds(1));
  t.AddPiece(Piece("i", 0, 1, 0, 10, true, 1, kLayers), 1,
             kT0 + absl::Seconds(30));
  t.ApplyDeadlines(kT0 + absl::Seconds(30));
  Results r = Take(t);
  CHECK(r.failed.empty());
  REQUIRE(r.finished.size() == 2);
  CHECK(r.finished[0].request_id == "e");
  CHECK(r.finished[1].request_id == "i");
  // The other order fails them.
  t.Expect("e2", kT0 + absl::Seconds(5));
  t.ApplyDeadlines(kT0 + absl::Seconds(6));
  CHECK(t.AddPiece(Piece("e2", 0, 1, 0, 10, true), 1, kT0 + absl::Seconds(6))
            .late);
  r = Take(t);
  REQUIRE(r.failed.size() == 1);
  CHECK(r.finished.empty());
}

TEST_CASE("Tracker: Forget drops state and ignores late notices",
          "[kv_transfer]") {
  KvRequestTracker t = MakeTracker();
  t.AddPiece(Piece("g", 0, 1, 0, 10, true, 0, 1), 1, kT0);
  t.Forget("g");
  CHECK(t.active() == 0);
  CHECK(t.AddPiece(Piece("g", 0, 1, 0, 10, true, 1, 4), 1, kT0).late);
  CHECK_FALSE(t.AddFailure("g", 0, absl::CancelledError("x")));
  CHECK_FALSE(t.HasResults());
  // Forget also drops a result not yet taken.
  t.AddPiece(Piece("h", 0, 1, 0, 10, true), 1, kT0);
  CHECK(t.results_pending() == 1);
  t.Forget("h");
  CHECK_FALSE(t.HasResults());
  // Expect revives a forgotten id for a new request.
  t.Expect("g", kT0 + absl::Seconds(60));
  t.AddPiece(Piece("g", 0, 1, 0, 10, true), 1, kT0);
  Results r = Take(t);
  REQUIRE(r.finished.size() == 1);
  CHECK(r.finished[0].request_id == "g");
  // Expect leaves a result that was not taken yet alone.
  t.AddPiece(Piece("j", 0, 1, 0, 10, true), 1, kT0);
  t.Expect("j", kT0);
  t.ApplyDeadlines(kT0 + absl::Seconds(1));
  r = Take(t);
  CHECK(r.failed.empty());
  CHECK(r.finished.size() == 1);
}

TEST_CASE("Tracker: the tombstone set is bounded", "[kv_transfer]") {
  KvRequestTracker t = MakeTracker(/*max_tombstones=*/2);
  for (const char* id : {"a", "b", "c"}) {
    t.AddPiece(Piece(id, 0, 1, 0, 10, true), 1, kT0);
  }
  CHECK(Take(t).finished.size() == 3);
  CHECK(t.tombstones() == 2);
  CHECK(t.AddPiece(Piece("c", 0, 1, 0, 10, true), 1, kT0).late);
  // "a" was forgotten the longest ago: a late notice for it starts anew.
  CHECK_FALSE(t.AddPiece(Piece("a", 0, 1, 0, 10, true, 0, 1), 1, kT0).late);
  CHECK(t.active() == 1);
  for (int i = 0; i < 100; ++i) t.Forget("id" + std::to_string(i));
  CHECK(t.tombstones() == 2);
}

}  // namespace
}  // namespace flowkv::internal
