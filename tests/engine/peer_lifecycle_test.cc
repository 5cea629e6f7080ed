// SPDX-License-Identifier: Apache-2.0
// A peer process's life as the engine sees it, between real processes
// (this test and build/bin/transfer_peer): a peer stalled (SIGSTOP) until it
// is declared dead and then resumed (SIGCONT) leaves both sides' peer tables
// clean and reconnects byte-exact; a peer that restarts under the same name
// is a new peer, and the old one's ids, handles and metadata fail cleanly
// without ever reaching the new process.

#include <csignal>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/str_cat.h"
#include "flowkv/transfer_engine.h"
#include "tests/support/engine_pair.h"
#include "tests/support/peer_process.h"
#include "tests/support/transfer_test_util.h"
#include "tests/support/wait_until.h"

namespace flowkv {
namespace {

using testing::Fnv1a;
using testing::kPeerFailureTimeout;
using testing::PeerProcess;
using testing::Replies;
using testing::WaitUntil;
using testing::WriteByteExact;

// More than loopback's socket buffers hold: a stalled receiver cannot
// take a whole-pool write over tcp.
constexpr uint64_t kBytes = 64 << 20;
// A dead or stalled peer is detected within peer_failure_timeout; the
// margin covers a keepalive or heartbeat round that started just before.
const absl::Duration kDetection = 2 * kPeerFailureTimeout;

std::unique_ptr<TransferEngine> MakeLifecycleEngine() {
  TransferEngineOptions options =
      testing::TestEngineOptions("lifecycle_test", "secret");
  // A connection to an address nobody answers any more fails within this.
  options.connect_timeout = kPeerFailureTimeout;
  return testing::MakeEngine(options);
}

// The peer's "stats" answer: peers tracked and connected by its engine.
std::string PeerStats(TransferEngine& engine, Replies& replies, PeerId peer) {
  REQUIRE(engine.Send(peer, "stats").Wait().ok());
  return replies.Expect("stats ");
}

TEST_CASE("A stalled peer declared dead comes back clean and reconnects",
          "[peer_lifecycle][process]") {
  PeerProcess process("secret", kBytes);
  auto engine = MakeLifecycleEngine();
  auto local = engine->AllocateMemory(kBytes);
  REQUIRE(local.ok());
  Replies replies(engine.get());
  auto first = engine->Connect(process.address());
  REQUIRE(first.ok());
  WriteByteExact(*engine, replies, *first, *local, 1);

  process.Kill(SIGSTOP);
  // A write the stalled peer cannot take: over tcp its socket buffers fill,
  // the write misses its deadline and the fence that must follow cannot
  // complete, so the peer is failed; over shared memory the heartbeats go
  // unanswered. Either way the peer is declared dead within the bound.
  // (UCX's keepalive over tcp is answered by the stopped process's kernel:
  // an idle stalled peer is detected only through a transfer's fence.)
  const TransferOp op{local->id, 0, engine->GetPeer(*first)->regions[0].id, 0,
                      kBytes};
  TransferOptions options;
  options.timeout = kPeerFailureTimeout / 2;
  TransferHandle stalled = engine->Write(*first, {&op, 1}, options);
  REQUIRE(stalled.Wait(options.timeout.value() + kDetection));
  INFO(stalled.status().ToString());
  REQUIRE(WaitUntil([&] { return !engine->GetPeer(*first)->connected; },
                    kDetection));
  // This side's table is clean: the peer is listed as failed, not tracked.
  REQUIRE(WaitUntil([&] { return engine->Stats().peers_tracked == 0; },
                    kDetection));
  CHECK(engine->Stats().peers_connected == 0);
  CHECK(!engine->GetPeer(*first)->failure.ok());

  process.Kill(SIGCONT);
  // The old id stays dead.
  CHECK(engine->Write(*first, {&op, 1}).Wait().code() ==
        absl::StatusCode::kUnavailable);
  // A new connection to the resumed process works.
  auto second = engine->Connect(process.address());
  INFO(second.status().ToString());
  REQUIRE(second.ok());
  CHECK(*second != *first);
  CHECK(engine->Stats().peers_tracked == 1);
  CHECK(engine->Stats().peers_connected == 1);
  // The resumed side drops the connection it lost once it notices (its own
  // detection bound): its table then holds the new connection only.
  std::string stats;
  CHECK(WaitUntil(
      [&] {
        stats = PeerStats(*engine, replies, *second);
        return stats == "stats 1 1";
      },
      kDetection + kPeerFailureTimeout));
  INFO(stats);
  // Transfers after the reconnection are byte-exact.
  WriteByteExact(*engine, replies, *second, *local, 2);
  WriteByteExact(*engine, replies, *second, *local, 3);
}

TEST_CASE("A peer restarted under the same name is a new peer",
          "[peer_lifecycle][process]") {
  auto engine = MakeLifecycleEngine();
  auto local = engine->AllocateMemory(kBytes);
  REQUIRE(local.ok());
  Replies replies(engine.get());
  auto process = std::make_unique<PeerProcess>("secret", kBytes);
  const std::string old_metadata = process->metadata();
  auto old_peer = engine->Connect(process->address());
  REQUIRE(old_peer.ok());
  const std::string old_name = engine->GetPeer(*old_peer)->name;
  WriteByteExact(*engine, replies, *old_peer, *local, 1);

  // A transfer in flight when the process dies: it cannot be acknowledged.
  process->Kill(SIGSTOP);
  const TransferOp old_op{local->id, 0,
                          engine->GetPeer(*old_peer)->regions[0].id, 0, kBytes};
  TransferOptions options;
  options.notification = "to the old process";
  options.acknowledged = true;
  TransferHandle in_flight = engine->Write(*old_peer, {&old_op, 1}, options);
  process->Kill(SIGKILL);
  REQUIRE(in_flight.Wait(kDetection + kPeerFailureTimeout));
  CHECK(in_flight.status().code() == absl::StatusCode::kUnavailable);
  REQUIRE(WaitUntil([&] { return !engine->GetPeer(*old_peer)->connected; },
                    kDetection));

  // The same program, the same name, a fresh pool of zeros.
  process = std::make_unique<PeerProcess>("secret", kBytes);
  auto new_peer = engine->Connect(process->address());
  REQUIRE(new_peer.ok());
  CHECK(*new_peer != *old_peer);
  CHECK(engine->GetPeer(*new_peer)->name == old_name);

  // Every use of the old peer fails cleanly.
  CHECK(engine->Write(*old_peer, {&old_op, 1}).Wait().code() ==
        absl::StatusCode::kUnavailable);
  CHECK(engine->Read(*old_peer, {&old_op, 1}).Wait().code() ==
        absl::StatusCode::kUnavailable);
  CHECK(engine->Send(*old_peer, "fill 9").Wait().code() ==
        absl::StatusCode::kUnavailable);
  CHECK(engine->Disconnect(*old_peer).ok());  // already disconnected
  CHECK(!engine->GetPeer(*old_peer)->connected);
  const PeerId never = *new_peer + 1000;
  CHECK(engine->Write(never, {&old_op, 1}).Wait().code() ==
        absl::StatusCode::kNotFound);
  CHECK(engine->GetPeer(never).status().code() == absl::StatusCode::kNotFound);
  // The old process's metadata names an endpoint that is gone.
  auto stale = engine->AddPeer(old_metadata);
  INFO(stale.status().ToString());
  CHECK(!stale.ok());

  // None of it reached the new process: its pool is still all zeros.
  const std::vector<uint8_t> zeros(kBytes, 0);
  REQUIRE(engine->Send(*new_peer, absl::StrCat("hash 0 ", kBytes)).Wait().ok());
  CHECK(replies.Expect("hash ") ==
        absl::StrCat("hash ", Fnv1a(zeros.data(), kBytes)));
  CHECK(engine->Stats().peers_tracked == 1);
  CHECK(engine->Stats().peers_connected == 1);
  WriteByteExact(*engine, replies, *new_peer, *local, 2);
}

}  // namespace
}  // namespace flowkv
