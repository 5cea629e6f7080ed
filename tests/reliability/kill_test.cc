// SPDX-License-Identifier: Apache-2.0
// Peer processes SIGKILLed at seeded points of a KV transfer. A sender
// killed before a piece is posted, with a piece in flight, after a piece's
// data landed without its notice, after a piece was acknowledged, or from
// outside once an earlier request finished: the receiving process reports
// the failure within its bound, never reports a request finished whose
// bytes did not all arrive, sees no late write into the blocks it was told
// it may reuse, and keeps serving a second sender process that streams
// byte-exact requests all along. A receiver killed between two pieces of a
// request: the sending process fails every piece posted after the death
// within its bound (none reports success) and keeps streaming byte-exact to
// a second receiver process. Streams and their checks:
// tests/support/kv_stream.h.
//
// FLOWKV_KILL_SEEDS (default 30) sets how many seeds run; a failure names
// its seed (rerun one with FLOWKV_KILL_FIRST_SEED=<seed> FLOWKV_KILL_SEEDS=1).

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "flowkv/kv_transfer.h"
#include "flowkv/transfer_engine.h"
#include "flowkv/transfer_plan.h"
#include "tests/support/kv_fixture.h"
#include "tests/support/kv_stream.h"
#include "tests/support/kv_test_util.h"

namespace flowkv {
namespace {

using testing::ChildProcess;
using testing::kKvPeerFailureTimeout;
using testing::kKvSoon;
using testing::kStreamLayers;
using testing::ParseStreamMessage;
using testing::StreamReceiver;
using testing::StreamSender;
using testing::StreamSenderSide;

// Where the victim dies, on request `index`, piece (layer) `layer`.
enum class KillPoint : int {
  kBeforePosting = 0,      // before the piece's Send
  kInFlight = 1,           // right after posting it
  kDataWithoutNotice = 2,  // its data written and flushed, no notice sent
  kAfterAcknowledged = 3,  // its Send completed (the notice acknowledged)
  kFromOutside = 4,        // killed by the test once request index finished
};
constexpr int kKillPoints = 5;

struct KillPlan {
  uint64_t index = 0;
  uint32_t layer = 0;
  KillPoint point = KillPoint::kBeforePosting;
};

KillPlan PlanFor(uint64_t seed) {
  std::mt19937_64 rng(seed);
  KillPlan plan;
  plan.index = rng() % 4;
  plan.layer = static_cast<uint32_t>(rng() % kStreamLayers);
  plan.point = static_cast<KillPoint>(rng() % kKillPoints);
  return plan;
}

uint64_t EnvOr(const char* name, uint64_t fallback) {
  uint64_t value = 0;
  const char* text = std::getenv(name);
  return text != nullptr && absl::SimpleAtoi(text, &value) ? value : fallback;
}

// Writes the data of one piece without its notice (what a Send does before
// the notice), through the engine.
void WriteDataOnly(StreamSenderSide& side, uint32_t stream, uint64_t index,
                   uint32_t layer) {
  const KvLayout decode = *KvLayout::Create(kv_fixture::kDecodeSpec);
  const KvPiece piece = testing::StreamPiece(stream, index, layer);
  auto ops = PlanTransfer({.src_layout = &side.layout,
                           .src_blocks = piece.src_blocks,
                           .dst_layout = &decode,
                           .dst_blocks = piece.dst_blocks,
                           .num_tokens = piece.num_tokens,
                           .layer_begin = piece.layer_begin,
                           .layer_end = piece.layer_end});
  if (!ops.ok()) StreamSenderSide::Exit(ops.status().ToString());
  for (TransferOp& op : *ops) {
    op.src_region = side.pool.id;
    op.dst_region = side.peer_region;
  }
  const absl::Status written = side.engine->Write(side.peer, *ops).Wait();
  if (!written.ok()) StreamSenderSide::Exit(written.ToString());
}

TEST_CASE("stream sender child", "[.stream_child]") {
  testing::RunStreamSenderChild();
}

TEST_CASE("stream receiver child", "[.stream_child]") {
  testing::RunStreamReceiverChild();
}

// The victim: streams like RunStreamSenderChild and dies at
// FLOWKV_KILL_AT="<index> <layer> <point>" (kFromOutside: never by itself).
TEST_CASE("victim child", "[.victim_child]") {
  const char* address = std::getenv("FLOWKV_STREAM_ADDRESS");
  const char* at = std::getenv("FLOWKV_KILL_AT");
  const uint32_t stream = static_cast<uint32_t>(EnvOr("FLOWKV_STREAM_ID", 0));
  if (address == nullptr || at == nullptr) return;
  std::vector<std::string> words = absl::StrSplit(at, ' ');
  KillPlan plan;
  int point = 0;
  if (words.size() != 3 || !absl::SimpleAtoi(words[0], &plan.index) ||
      !absl::SimpleAtoi(words[1], &plan.layer) ||
      !absl::SimpleAtoi(words[2], &point)) {
    StreamSenderSide::Exit("bad FLOWKV_KILL_AT");
  }
  plan.point = static_cast<KillPoint>(point);
  setenv("UCX_NET_DEVICES", "lo", 1);
  StreamSenderSide side(
      testing::KvEngineOptions(absl::StrCat("victim-", stream)), address,
      testing::StreamSeed(stream));
  StreamSender sender(side.engine.get(), side.kv.get(), side.peer, stream,
                      testing::StreamSeed(stream));
  if (!sender.Hello().ok()) StreamSenderSide::Exit("hello");
  for (;;) {
    for (Notification& n : side.kv->Poll(absl::Milliseconds(100)).other) {
      uint64_t index = 0;
      if (!ParseStreamMessage(n.bytes, "go", &index)) continue;
      if (index != plan.index || plan.point == KillPoint::kFromOutside) {
        sender.Go(index);
        continue;
      }
      sender.Settle();
      for (uint32_t layer = 0; layer < kStreamLayers; ++layer) {
        const std::string id = testing::StreamRequestId(stream, index);
        const KvPiece piece = testing::StreamPiece(stream, index, layer);
        if (layer != plan.layer) {
          if (!side.kv->Send(id, side.peer, piece).Wait().ok()) {
            StreamSenderSide::Exit("piece failed");
          }
          continue;
        }
        switch (plan.point) {
          case KillPoint::kBeforePosting:
            raise(SIGKILL);
            break;
          case KillPoint::kInFlight: {
            TransferHandle h = side.kv->Send(id, side.peer, piece);
            raise(SIGKILL);
            break;
          }
          case KillPoint::kDataWithoutNotice:
            WriteDataOnly(side, stream, index, layer);
            raise(SIGKILL);
            break;
          case KillPoint::kAfterAcknowledged:
            if (!side.kv->Send(id, side.peer, piece).Wait().ok()) {
              StreamSenderSide::Exit("piece failed");
            }
            raise(SIGKILL);
            break;
          case KillPoint::kFromOutside:
            break;
        }
      }
    }
  }
}

constexpr uint32_t kBystander = 0;
// The victim of seed number k is stream 32 * (k + 1) + 1: its own request
// ids and seed, always destination slot 1.
uint32_t VictimStream(uint64_t k) {
  return static_cast<uint32_t>(testing::kMaxStreams * (k + 1) + 1);
}

TEST_CASE("A sender killed at a seeded point fails cleanly at the receiver",
          "[kill][process]") {
  const uint64_t seeds = EnvOr("FLOWKV_KILL_SEEDS", 30);
  const uint64_t first_seed = EnvOr("FLOWKV_KILL_FIRST_SEED", 1);
  // Failure detection: UCX's error handling or the heartbeats, each within
  // peer_failure_timeout; the margin covers a keepalive round started just
  // before the death.
  const absl::Duration detection = kKvPeerFailureTimeout * 3 / 2;
  // A late write would come from bytes already on their way when the
  // failure was reported: watch the reused blocks for a heartbeat period.
  const absl::Duration watch = kKvPeerFailureTimeout / 2;
  kv_fixture::Side decode("decode", kv_fixture::kDecodeSpec);
  auto address = decode.engine->Listen("127.0.0.1:0");
  REQUIRE(address.ok());
  std::memset(decode.data, 0, decode.layout.total_bytes());
  StreamReceiver receiver(&decode, absl::Milliseconds(5));
  auto poll_until = [&](absl::Duration timeout, auto done) {
    const absl::Time deadline = absl::Now() + timeout;
    while (!done()) {
      if (absl::Now() > deadline) return false;
      receiver.Poll(absl::Milliseconds(10));
    }
    return true;
  };
  ChildProcess bystander("stream sender child",
                         {"FLOWKV_STREAM_ADDRESS=" + *address,
                          absl::StrCat("FLOWKV_STREAM_ID=", kBystander)});
  REQUIRE(poll_until(
      kKvSoon, [&] { return receiver.streams[kBystander].finished > 0; }));

  uint64_t survived = 0;
  for (uint64_t k = 0; k < seeds; ++k) {
    const uint64_t seed = first_seed + k;
    const KillPlan plan = PlanFor(seed);
    const uint32_t v = VictimStream(k);
    INFO("seed " << seed << ": request " << plan.index << ", layer "
                 << plan.layer << ", point " << static_cast<int>(plan.point)
                 << " (rerun: FLOWKV_KILL_FIRST_SEED=" << seed
                 << " FLOWKV_KILL_SEEDS=1)");
    const uint64_t bystander_before = receiver.streams[kBystander].finished;
    ChildProcess victim(
        "victim child",
        {"FLOWKV_STREAM_ADDRESS=" + *address,
         absl::StrCat("FLOWKV_STREAM_ID=", v),
         absl::StrCat("FLOWKV_KILL_AT=", plan.index, " ", plan.layer, " ",
                      static_cast<int>(plan.point))});
    // Until it died (or was killed once request `index` finished).
    absl::Time died = absl::InfiniteFuture();
    int signal = 0;
    REQUIRE(poll_until(kKvSoon + kKvSoon, [&] {
      if (plan.point == KillPoint::kFromOutside &&
          receiver.streams[v].finished > plan.index) {
        victim.Kill();
        signal = SIGKILL;
        died = absl::Now();
        return true;
      }
      if (victim.Ended(&signal)) died = absl::Now();
      return died != absl::InfiniteFuture();
    }));
    REQUIRE(signal == SIGKILL);
    // The receiver reports the disconnection and fails the request in
    // flight, within the bound.
    REQUIRE(poll_until(detection + kKvSoon, [&] {
      const StreamReceiver::Stream& s = receiver.streams[v];
      return s.disconnected;
    }));
    const StreamReceiver::Stream& s = receiver.streams[v];
    const absl::Time reported = std::min(s.disconnected_at, s.first_failure);
    INFO("reported " << reported - died << " after the death");
    CHECK(reported - died <= detection);
    CHECK(s.mismatched == 0);
    // Only requests whose every byte arrived finished: those before the
    // kill point, and request `index` only when its last piece was
    // acknowledged (or, in flight, may have been).
    const uint64_t last = kStreamLayers - 1;
    switch (plan.point) {
      case KillPoint::kBeforePosting:
      case KillPoint::kDataWithoutNotice:
        CHECK(s.finished == plan.index);
        break;
      case KillPoint::kInFlight:
        CHECK(s.finished >= plan.index);
        CHECK(s.finished <= plan.index + (plan.layer == last ? 1 : 0));
        break;
      case KillPoint::kAfterAcknowledged:
        CHECK(s.finished == plan.index + (plan.layer == last ? 1 : 0));
        break;
      case KillPoint::kFromOutside:
        CHECK(s.finished >= plan.index + 1);
        break;
    }
    for (const KvFailed& f : s.failed) {
      INFO(f.request_id << ": " << f.status.ToString());
      CHECK(f.status.code() == absl::StatusCode::kUnavailable);
    }
    // The victim's blocks may be reused now: nothing lands in them later.
    receiver.FillBlocks(v, 0xa5);
    const absl::Time watch_end = absl::Now() + watch;
    poll_until(watch, [&] { return absl::Now() >= watch_end; });
    CHECK(receiver.BlocksAre(v, 0xa5));
    receiver.FillBlocks(v, 0);
    // The bystander kept streaming, byte-exact.
    const StreamReceiver::Stream& b = receiver.streams[kBystander];
    CHECK(b.finished > bystander_before);
    CHECK(b.mismatched == 0);
    CHECK(b.failed.empty());
    CHECK(!b.disconnected);
    ++survived;
  }
  receiver.StopGoing();
  REQUIRE(poll_until(kKvSoon, [&] { return receiver.Quiet(); }));
  receiver.SendStop();
  const std::string sent = bystander.ReadLine(kKvSoon);
  INFO(sent);
  CHECK(sent.rfind("sent ", 0) == 0);
  CHECK(sent.substr(sent.rfind(' ')) == " 0");  // no piece failed
  CHECK(receiver.unknown_requests == 0);
  std::printf(
      "kill_test: %llu kills survived; bystander %llu requests byte-exact "
      "(%llu bytes)\n",
      static_cast<unsigned long long>(survived),
      static_cast<unsigned long long>(receiver.streams[kBystander].finished),
      static_cast<unsigned long long>(
          receiver.streams[kBystander].bytes_verified));
}

TEST_CASE("A receiver killed between pieces fails them at the sender",
          "[kill][process]") {
  const uint64_t seeds = EnvOr("FLOWKV_KILL_SEEDS", 30);
  const uint64_t first_seed = EnvOr("FLOWKV_KILL_FIRST_SEED", 1);
  // As above: detection within peer_failure_timeout plus a keepalive round.
  const absl::Duration detection = kKvPeerFailureTimeout * 3 / 2;
  constexpr uint64_t kSeed = 5;
  setenv("UCX_NET_DEVICES", "lo", 1);
  StreamSenderSide sending(testing::KvEngineOptions("sender"), "", kSeed);
  auto start_receiver = [&](uint32_t stream) {
    auto child = std::make_unique<ChildProcess>(
        "stream receiver child",
        std::vector<std::string>{"FLOWKV_STREAM_RECEIVER=1"});
    const std::string line = child->ReadLine(kKvSoon + kKvSoon);
    REQUIRE(line.rfind("listen ", 0) == 0);
    const PeerId peer = sending.ConnectTo(line.substr(7));
    auto sender = std::make_unique<StreamSender>(
        sending.engine.get(), sending.kv.get(), peer, stream, kSeed);
    REQUIRE(sender->Hello().ok());
    return std::make_pair(std::move(child), std::move(sender));
  };
  auto [bystander, to_bystander] = start_receiver(kBystander);
  // Serves "go"s; returns the index a "go" from `peer` asked for, if any.
  auto serve = [&](PeerId peer, uint64_t* asked) {
    bool found = false;
    for (Notification& n : sending.kv->Poll(absl::Milliseconds(10)).other) {
      uint64_t index = 0;
      if (!ParseStreamMessage(n.bytes, "go", &index)) continue;
      if (n.peer == to_bystander->peer()) to_bystander->Go(index);
      if (n.peer == peer) {
        *asked = index;
        found = true;
      }
    }
    return found;
  };

  uint64_t survived = 0;
  for (uint64_t k = 0; k < seeds; ++k) {
    const uint64_t seed = first_seed + k;
    const KillPlan plan = PlanFor(seed);
    INFO("seed " << seed << ": request " << plan.index << ", layer "
                 << plan.layer << " (rerun: FLOWKV_KILL_FIRST_SEED=" << seed
                 << " FLOWKV_KILL_SEEDS=1)");
    const uint64_t bystander_before = to_bystander->pieces_ok;
    auto [victim, to_victim] = start_receiver(VictimStream(k));
    // Serve the victim until it asks for request `index`.
    uint64_t asked = 0;
    const absl::Time deadline = absl::Now() + kKvSoon + kKvSoon;
    while (absl::Now() < deadline) {
      if (!serve(to_victim->peer(), &asked)) continue;
      if (asked == plan.index) break;
      to_victim->Go(asked);
    }
    REQUIRE(asked == plan.index);
    to_victim->Settle();
    REQUIRE(to_victim->pieces_failed == 0);
    // Pieces [0, layer) before the death, [layer, layers) after it.
    std::vector<TransferHandle> before;
    std::vector<TransferHandle> after;
    const std::string id = testing::StreamRequestId(VictimStream(k), asked);
    for (uint32_t layer = 0; layer < kStreamLayers; ++layer) {
      if (layer == plan.layer) victim->Kill();
      const KvPiece piece = testing::StreamPiece(VictimStream(k), asked, layer);
      (layer < plan.layer ? before : after)
          .push_back(sending.kv->Send(id, to_victim->peer(), piece));
    }
    const absl::Time died = absl::Now();
    for (TransferHandle& h : after) {
      REQUIRE(h.Wait(detection + kKvSoon));
      INFO(h.status().ToString());
      CHECK(h.status().code() == absl::StatusCode::kUnavailable);
    }
    for (TransferHandle& h : before) {
      REQUIRE(h.Wait(detection + kKvSoon));
      INFO(h.status().ToString());
      CHECK((h.status().ok() ||
             h.status().code() == absl::StatusCode::kUnavailable));
    }
    // Failed within the bound, from the death on.
    CHECK(absl::Now() - died <= detection);
    CHECK(!sending.engine->GetPeer(to_victim->peer())->connected);
    // The bystander kept going.
    const absl::Time until = absl::Now() + kKvPeerFailureTimeout / 4;
    uint64_t ignored = 0;
    while (absl::Now() < until) serve(0, &ignored);
    to_bystander->Settle();
    CHECK(to_bystander->pieces_ok > bystander_before);
    CHECK(to_bystander->pieces_failed == 0);
    ++survived;
  }
  // The bystander verified every request it received byte for byte.
  REQUIRE(sending.engine->Send(to_bystander->peer(), "stop").Wait().ok());
  std::string report;
  const absl::Time deadline = absl::Now() + kKvSoon;
  uint64_t ignored = 0;
  while (report.empty() && absl::Now() < deadline) {
    serve(0, &ignored);
    report = bystander->ReadLine(absl::Milliseconds(10));
  }
  std::vector<std::string> words = absl::StrSplit(report, ' ');
  INFO(report);
  REQUIRE(words.size() == 6);
  CHECK(words[0] == "received");
  CHECK(words[1] != "0");
  CHECK(words[3] == "0");  // mismatched
  CHECK(words[4] == "0");  // failed
  CHECK(words[5] == "0");  // disconnected
  std::printf(
      "kill_test: %llu receiver kills survived; bystander receiver verified "
      "%s requests (%s bytes)\n",
      static_cast<unsigned long long>(survived), words[1].c_str(),
      words[2].c_str());
}

}  // namespace
}  // namespace flowkv
