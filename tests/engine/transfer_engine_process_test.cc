// SPDX-License-Identifier: Apache-2.0
// TransferEngine between two processes: this test and build/bin/transfer_peer
// (tests/engine/transfer_peer.cc), over real UCX on loopback. The transports
// come from UCX_TLS (ctest runs this binary with tcp and with shared memory).

#include <climits>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <iostream>
#include <random>
#include <signal.h>
#include <spawn.h>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/str_split.h"
#include "flowkv/kv_layout.h"
#include "flowkv/transfer_engine.h"
#include "flowkv/transfer_plan.h"
#include "tests/support/peer_process.h"
#include "tests/support/transfer_test_util.h"

namespace flowkv {
namespace {

using flowkv::testing::FillRandom;
using flowkv::testing::Fnv1a;
using flowkv::testing::kPeerFailureTimeout;
using flowkv::testing::LinkToProcess;
using flowkv::testing::MakeEngine;
using flowkv::testing::PeerProcess;
using flowkv::testing::PeerProcessOptions;
using flowkv::testing::ProcessLink;
using flowkv::testing::RandomBlocks;
using flowkv::testing::Replies;
using flowkv::testing::SharedMemoryMode;

std::vector<TransferOp> Plan(const KvLayout& src, const BlockList& src_blocks,
                             RegionId src_region, const KvLayout& dst,
                             const BlockList& dst_blocks, RegionId dst_region) {
  TransferPlanRequest request;
  request.src_layout = &src;
  request.src_blocks = src_blocks;
  request.dst_layout = &dst;
  request.dst_blocks = dst_blocks;
  request.num_tokens = src_blocks.num_blocks() * src.geometry().block_tokens;
  auto ops = PlanTransfer(request);
  REQUIRE(ops.ok());
  for (TransferOp& op : *ops) {
    REQUIRE(op.src_region == 0);
    REQUIRE(op.dst_region == 0);
    op.src_region = src_region;
    op.dst_region = dst_region;
  }
  return *ops;
}

void Apply(const std::vector<TransferOp>& ops, const uint8_t* src,
           uint8_t* dst) {
  for (const TransferOp& op : ops) {
    std::memcpy(dst + op.dst_offset, src + op.src_offset, op.length);
  }
}

TEST_CASE("Write and Read with a peer process arrive byte-exact",
          "[transfer_engine][process]") {
  KvLayoutSpec spec;
  spec.geometry = {.num_layers = 4,
                   .num_blocks = 128,
                   .block_tokens = 4,
                   .kv_heads = 2,
                   .head_dim = 16,
                   .dtype_bytes = 2};
  const uint64_t pool_bytes = KvLayout::Create(spec)->total_bytes();
  PeerProcess process("secret", pool_bytes);
  auto engine = MakeEngine("process_test", "secret");
  auto local = engine->AllocateMemory(pool_bytes);
  REQUIRE(local.ok());
  auto* mine = static_cast<uint8_t*>(local->data);

  absl::StatusOr<PeerId> peer;
  SECTION("Connect") { peer = engine->Connect(process.address()); }
  SECTION("AddPeer") { peer = engine->AddPeer(process.metadata()); }
  INFO(peer.status().ToString());
  REQUIRE(peer.ok());
  auto info = engine->GetPeer(*peer);
  REQUIRE(info.ok());
  CHECK(info->name == "transfer_peer");
  REQUIRE(info->regions.size() == 1);
  REQUIRE(info->regions[0].length == pool_bytes);
  const RegionId remote = info->regions[0].id;

  Replies replies(engine.get());
  std::vector<uint8_t> mirror(pool_bytes);  // what the peer's pool holds
  std::mt19937_64 rng(2024);
  int request = 0;
  for (PoolOrder order : {PoolOrder::kBlockMajor, PoolOrder::kLayerMajor}) {
    spec.pool_order = order;
    const KvLayout layout = *KvLayout::Create(spec);
    for (int round = 0; round < 3; ++round) {
      INFO("order " << static_cast<int>(order) << " round " << round);
      const uint64_t seed = rng();
      REQUIRE(engine->Send(*peer, "fill " + std::to_string(seed)).Wait().ok());
      replies.Expect("filled");
      FillRandom(mirror.data(), pool_bytes, seed);
      FillRandom(mine, pool_bytes, rng());

      const uint32_t n = 1 + rng() % 40;
      const BlockList a = RandomBlocks(n, 128, &rng);
      const BlockList b = RandomBlocks(n, 128, &rng);
      // Write: local blocks a -> peer blocks b.
      const std::vector<TransferOp> write_ops =
          Plan(layout, a, local->id, layout, b, remote);
      const std::string wnote = "w" + std::to_string(++request);
      TransferOptions options;
      options.notification = wnote;
      const absl::Status written =
          engine->Write(*peer, write_ops, options).Wait();
      INFO(written.ToString());
      REQUIRE(written.ok());
      Apply(write_ops, mine, mirror.data());
      // The peer hashed its whole pool when the notification arrived.
      const std::string got = replies.Expect("got " + wnote + " ");
      CHECK(got == "got " + wnote + " " +
                       std::to_string(Fnv1a(mirror.data(), pool_bytes)));

      // Read: peer blocks b -> local blocks a.
      const std::vector<TransferOp> read_ops =
          Plan(layout, b, remote, layout, a, local->id);
      FillRandom(mine, pool_bytes, rng());
      // Bytes outside the read ranges keep their values.
      std::vector<uint8_t> expected(mine, mine + pool_bytes);
      Apply(read_ops, mirror.data(), expected.data());
      const std::string rnote = "r" + std::to_string(request);
      options.notification = rnote;
      const absl::Status read = engine->Read(*peer, read_ops, options).Wait();
      INFO(read.ToString());
      REQUIRE(read.ok());
      CHECK(std::memcmp(mine, expected.data(), pool_bytes) == 0);
      replies.Expect("got " + rnote + " ");
    }
  }
  REQUIRE(engine->Send(*peer, "exit").Wait().ok());
}

TEST_CASE("A peer process with another token is refused",
          "[transfer_engine][process]") {
  PeerProcess process("their-secret", 4096);
  auto engine = MakeEngine("process_test", "our-secret");
  CHECK(engine->Connect(process.address()).status().code() ==
        absl::StatusCode::kPermissionDenied);
  CHECK(engine->AddPeer(process.metadata()).status().code() ==
        absl::StatusCode::kPermissionDenied);
  CHECK(engine->Peers().empty());
}

TEST_CASE("A token differing only by a trailing NUL is another token",
          "[transfer_engine][process]") {
  // HMAC pads a short key with zeros: keyed by the token's bytes, "K" and
  // "K\0" (and "" and "\0") signed and proved alike.
  using namespace std::string_literals;
  const std::pair<std::string, std::string> pairs[] = {{"secret"s, "secret\0"s},
                                                       {"secret\0"s, "secret"s},
                                                       {""s, "\0"s},
                                                       {"\0"s, ""s},
                                                       {"\0"s, "\0\0"s}};
  for (const auto& [theirs, ours] : pairs) {
    INFO("peer token of " << theirs.size() << " bytes, ours of "
                          << ours.size());
    PeerProcessOptions options;
    options.token = theirs;
    PeerProcess process(options);
    auto engine = MakeEngine("process_test", ours);
    CHECK(engine->Connect(process.address()).status().code() ==
          absl::StatusCode::kPermissionDenied);
    CHECK(engine->AddPeer(process.metadata()).status().code() ==
          absl::StatusCode::kPermissionDenied);
    CHECK(engine->Peers().empty());
  }
  // A token with a NUL in it is a token like any other.
  PeerProcessOptions options;
  options.token = "secret\0"s;
  PeerProcess process(options);
  auto engine = MakeEngine("process_test", "secret\0"s);
  CHECK(engine->Connect(process.address()).ok());
  CHECK(engine->AddPeer(process.metadata()).ok());
}

TEST_CASE("A peer killed mid-transfer fails transfers with Unavailable",
          "[transfer_engine][process]") {
  constexpr uint64_t kBytes = 32 << 20;
  // Through Connect UCX also watches the connection-manager socket; through
  // AddPeer only the endpoint itself (or, for shared memory, the engine's
  // heartbeats) can tell.
  const bool via_metadata = GENERATE(false, true);
  INFO((via_metadata ? "AddPeer" : "Connect"));
  ProcessLink link;
  LinkToProcess(kBytes, MakeEngine("process_test", "secret"), via_metadata,
                &link);
  const TransferOp whole = link.Whole();
  for (int i = 0; i < 3; ++i) {
    REQUIRE(link.engine->Write(link.peer, {&whole, 1}).Wait().ok());
  }
  // Kill the peer with a transfer in flight, then keep writing until the
  // engine notices.
  TransferHandle in_flight = link.engine->Write(link.peer, {&whole, 1});
  const absl::Time killed = absl::Now();
  link.process->Kill(SIGKILL);
  absl::Status failure;
  bool hung = false;
  if (in_flight.Wait(absl::Seconds(10))) {
    failure = in_flight.status();
  } else {
    hung = true;
  }
  while (!hung && failure.ok() && absl::Now() - killed < absl::Seconds(10)) {
    TransferHandle next = link.engine->Write(link.peer, {&whole, 1});
    if (!next.Wait(absl::Seconds(10))) {
      hung = true;
      break;
    }
    failure = next.status();
  }
  const absl::Duration detected = absl::Now() - killed;
  std::cout << "transfer_engine_process_test: dead peer ("
            << (via_metadata ? "AddPeer" : "Connect") << ") detected after "
            << absl::FormatDuration(detected) << " (UCX_TLS="
            << (std::getenv("UCX_TLS") ? std::getenv("UCX_TLS") : "default")
            << "): " << failure.ToString() << std::endl;
  REQUIRE(!hung);
  INFO(failure.ToString());
  CHECK(failure.code() == absl::StatusCode::kUnavailable);
  CHECK(detected < absl::Seconds(5));
  auto info = link.engine->GetPeer(link.peer);
  REQUIRE(info.ok());
  CHECK(!info->connected);
  CHECK(link.engine->Write(link.peer, {&whole, 1}).status().code() ==
        absl::StatusCode::kUnavailable);
}

TEST_CASE("A sender that dies mid-write never takes the receiver down",
          "[transfer_engine][process]") {
  // The peer process floods this engine's pool with writes and dies at a
  // random point: SIGKILL, or its engine destroyed with a write in flight.
  // Over tcp UCX 1.13 applies emulated puts in the receiver's put handler;
  // a receiver must survive the sender vanishing in the middle of one.
  constexpr uint64_t kBytes = 16 << 20;
  auto engine = MakeEngine("process_test", "secret");
  auto local = engine->AllocateMemory(kBytes);
  REQUIRE(local.ok());
  std::mt19937_64 rng(GENERATE(range(1, 9)));
  const bool exits = rng() % 2 == 0;
  const uint64_t writes_before_death = 1 + rng() % 4;
  INFO((exits ? "engine destroyed" : "SIGKILL")
       << " after " << writes_before_death);
  PeerProcess process("secret", kBytes);
  auto peer = engine->Connect(process.address());
  REQUIRE(peer.ok());
  REQUIRE(engine
              ->Send(*peer,
                     "flood " + std::to_string(exits ? writes_before_death : 0))
              .Wait()
              .ok());
  // Wait for the flood's notifications, then kill the sender mid-write.
  uint64_t floods = 0;
  bool disconnected = false;
  const absl::Time deadline = absl::Now() + 10 * kPeerFailureTimeout;
  while (!disconnected && absl::Now() < deadline) {
    for (const Notification& n :
         engine->TakeNotifications(kPeerFailureTimeout)) {
      if (n.kind == Notification::Kind::kPeerDisconnected) disconnected = true;
      if (n.bytes.rfind("flood ", 0) == 0) ++floods;
    }
    if (!exits && floods >= writes_before_death) process.Kill(SIGKILL);
  }
  // (A sender that destroys its engine may take its last writes and their
  // notifications with it: a force-closed connection delivers nothing more.)
  if (!exits) CHECK(floods >= writes_before_death);
  // The receiver is alive, knows the sender is gone, and works.
  CHECK(disconnected);
  CHECK(!engine->GetPeer(*peer)->connected);
  PeerProcess next("secret", kBytes);
  auto again = engine->Connect(next.address());
  REQUIRE(again.ok());
  CHECK(engine->Send(*again, "fill 1").Wait().ok());
}

}  // namespace
}  // namespace flowkv
