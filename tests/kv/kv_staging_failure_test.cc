// SPDX-License-Identifier: Apache-2.0
// KvTransfer's staging path under failure (docs/gpu.md "Staging protocol"):
// Cancel mid-pipeline, and the sender or the receiver, in a second process,
// killed mid-pipeline. In each case: the survivor reports within the
// options' bounds, nothing is written into the receiver's pool after the
// failure was reported (a snapshot taken then stays unchanged), the rings
// are wholly free again, and a new transfer works.
#include <cstring>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "flowkv/kv_transfer.h"
#include "tests/support/kv_staging_util.h"

namespace flowkv {
namespace {

using staging_test::Arrived;
using staging_test::ForcedStaging;
using staging_test::InProcessPair;
using staging_test::Pair;
using staging_test::RingFree;
using staging_test::StagingSide;
using staging_test::WholeRequest;
using testing::PollUntil;
using testing::Seen;
constexpr absl::Duration kSoon = kv_fixture::kSoon;
// How long a survivor may take to notice a killed peer.
const absl::Duration kNoticeDeath = 3 * kv_fixture::kPeerFailureTimeout + kSoon;

TEST_CASE("Cancel mid-pipeline stops, drains the credits, then fails",
          "[kv_staging]") {
  InProcessPair p;
  const uint64_t bytes = p.decode.layout.total_bytes();
  std::memset(p.decode.data, 0xab, bytes);  // sentinel
  TransferHandle h =
      p.prefill.kv->Send("cancel", p.to_decode, WholeRequest(Pair(0)));
  h.Cancel();
  CHECK(h.Wait().code() == absl::StatusCode::kCancelled);
  Seen seen;
  REQUIRE(PollUntil(*p.decode.kv, seen, kSoon,
                    [](const Seen& s) { return s.Failed("cancel"); }));
  CHECK(seen.Failed("cancel")->status.code() == absl::StatusCode::kCancelled);
  // Mid-pipeline: some slots, not all, reached the receiver.
  const uint64_t slot_loads = bytes / staging_test::kSmallRing.slot_bytes;
  CHECK(p.prefill.kv->Stats().staged_slots_sent < slot_loads);
  // No late write: the pool as the failure was reported stays so.
  const std::vector<uint8_t> snapshot(p.decode.data, p.decode.data + bytes);
  CHECK(RingFree(*p.prefill.kv, kSoon));
  CHECK(RingFree(*p.decode.kv, kSoon));
  CHECK(std::memcmp(snapshot.data(), p.decode.data, bytes) == 0);
  // The slots are reusable.
  REQUIRE(p.prefill.kv->Send("after", p.to_decode, WholeRequest(Pair(0)))
              .Wait()
              .ok());
  REQUIRE(PollUntil(*p.decode.kv, seen, kSoon,
                    [](const Seen& s) { return s.Finished("after"); }));
  CHECK(Arrived(Pair(0), p.decode.data));
}

TEST_CASE("A staged send whose receiver stops answering ends at its deadline",
          "[kv_staging]") {
  InProcessPair p;
  // The receiver's KvTransfer goes, its engine stays connected: no credit
  // will ever come for the slots already announced.
  p.decode.kv.reset();
  KvPiece r = WholeRequest(Pair(0));
  r.timeout = kSoon / 4;
  TransferHandle h = p.prefill.kv->Send("unanswered", p.to_decode, r);
  // Reported at its deadline (the bound: the deadline and a margin), not
  // when the credits return.
  REQUIRE(h.Wait(kSoon));
  CHECK(h.Wait().code() == absl::StatusCode::kDeadlineExceeded);
  // Cancel() of another such send returns as promptly.
  r.timeout = std::nullopt;
  TransferHandle c = p.prefill.kv->Send("cancelled", p.to_decode, r);
  c.Cancel();
  REQUIRE(c.Wait(kSoon));
  CHECK(c.Wait().code() == absl::StatusCode::kCancelled);
}

TEST_CASE("A staged deadline that passes mid-pipeline fails the send",
          "[kv_staging]") {
  InProcessPair p;
  KvPiece r = WholeRequest(Pair(0));
  r.timeout = absl::Nanoseconds(1);
  CHECK(p.prefill.kv->Send("late", p.to_decode, r).Wait().code() ==
        absl::StatusCode::kDeadlineExceeded);
  Seen seen;
  REQUIRE(PollUntil(*p.decode.kv, seen, kSoon,
                    [](const Seen& s) { return s.Failed("late"); }));
  CHECK(RingFree(*p.prefill.kv, kSoon));
  CHECK(RingFree(*p.decode.kv, kSoon));
}

TEST_CASE("A sender killed mid-pipeline fails its request, the ring frees",
          "[kv_staging]") {
  StagingSide decode("decode", Pair(0).dst, false, ForcedStaging());
  auto address = decode.engine->Listen("127.0.0.1:0");
  REQUIRE(address.ok());
  const uint64_t bytes = decode.layout.total_bytes();
  {
    // Sends forever.
    auto child =
        staging_test::StartChild("staging child", "send", 0, *address, 0);
    Seen seen;
    REQUIRE(PollUntil(*decode.kv, seen, kSoon + kSoon,
                      [](const Seen& s) { return s.Finished("req-1"); }));
    // Mid-pipeline: slots of a later request are arriving.
    const uint64_t before = decode.kv->Stats().staged_slots_received;
    REQUIRE(PollUntil(*decode.kv, seen, kSoon, [&](const Seen&) {
      return decode.kv->Stats().staged_slots_received > before + 8;
    }));
    child->Kill();
    const absl::Time killed = absl::Now();
    REQUIRE(PollUntil(*decode.kv, seen, kNoticeDeath, [](const Seen& s) {
      return s.Other(Notification::Kind::kPeerDisconnected);
    }));
    CHECK(absl::Now() - killed < kNoticeDeath);
    const std::vector<uint8_t> snapshot(decode.data, decode.data + bytes);
    // Whatever was in flight failed with Unavailable.
    REQUIRE(PollUntil(*decode.kv, seen, kSoon, [&](const Seen&) {
      return decode.kv->Stats().requests_active == 0;
    }));
    for (const KvFailed& f : seen.failed) {
      INFO(f.request_id << ": " << f.status.ToString());
      CHECK(f.status.code() == absl::StatusCode::kUnavailable);
    }
    CHECK(RingFree(*decode.kv, kSoon));
    CHECK(std::memcmp(snapshot.data(), decode.data, bytes) == 0);
  }
  // A new sender, a new connection.
  std::memset(decode.data, 0, bytes);
  REQUIRE(decode.kv->Expect("req-0", absl::Now() + kSoon + kSoon).ok());
  auto child =
      staging_test::StartChild("staging child", "send", 0, *address, 1);
  Seen seen;
  REQUIRE(PollUntil(*decode.kv, seen, kSoon + kSoon,
                    [](const Seen& s) { return s.Finished("req-0"); }));
  CHECK(Arrived(Pair(0), decode.data));
  CHECK(child->ReadLine(kSoon) == "sent 0 0");
}

TEST_CASE("A receiver killed mid-pipeline fails the sends, the ring frees",
          "[kv_staging]") {
  StagingSide prefill("prefill", Pair(0).src, false, ForcedStaging());
  testing::FillRandom(prefill.data, prefill.layout.total_bytes(),
                      staging_test::kSeed);
  auto connect = [&](testing::ChildProcess& child) {
    const std::string line = child.ReadLine(kSoon);
    REQUIRE(line.rfind("listen ", 0) == 0);
    auto peer = prefill.engine->Connect(line.substr(7));
    REQUIRE(peer.ok());
    REQUIRE(prefill.kv->AnnouncePool(*peer).ok());
    REQUIRE(prefill.kv->WaitForPeerPool(*peer, kSoon).ok());
    return *peer;
  };
  {
    auto child =
        staging_test::StartChild("staging child", "receive", 0, "-", 0);
    const PeerId peer = connect(*child);
    REQUIRE(prefill.kv->Send("req-0", peer, WholeRequest(Pair(0))).Wait().ok());
    CHECK(child->ReadLine(kSoon) == "finished req-0");
    const uint64_t before = prefill.kv->Stats().staged_slots_sent;
    std::vector<TransferHandle> sends;
    sends.push_back(prefill.kv->Send("req-1", peer, WholeRequest(Pair(0))));
    sends.push_back(prefill.kv->Send("req-2", peer, WholeRequest(Pair(0))));
    // Mid-pipeline.
    Seen seen;
    REQUIRE(PollUntil(*prefill.kv, seen, kSoon, [&](const Seen&) {
      return prefill.kv->Stats().staged_slots_sent > before + 8;
    }));
    child->Kill();
    for (TransferHandle& h : sends) {
      REQUIRE(h.Wait(kNoticeDeath));
      // A send that completed before the kill is fine too.
      if (!h.status().ok()) {
        INFO(h.status().ToString());
        CHECK(h.status().code() == absl::StatusCode::kUnavailable);
      }
    }
    CHECK_FALSE(sends.back().status().ok());
    CHECK(RingFree(*prefill.kv, kSoon));
  }
  // A new receiver, a new connection.
  auto child = staging_test::StartChild("staging child", "receive", 0, "-", 0);
  const PeerId peer = connect(*child);
  REQUIRE(prefill.kv->Send("req-0", peer, WholeRequest(Pair(0))).Wait().ok());
  CHECK(child->ReadLine(kSoon) == "finished req-0");
  CHECK(RingFree(*prefill.kv, kSoon));
}

}  // namespace
}  // namespace flowkv
