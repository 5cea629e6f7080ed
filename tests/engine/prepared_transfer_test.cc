// SPDX-License-Identifier: Apache-2.0
// Prepared transfers (flowkv/prepared_transfer.h): ops checked once by
// PrepareWrite / PrepareRead and posted many times by Post, between two
// engines over loopback (transport from UCX_TLS); and every misuse refused
// with a clear status, changing nothing: an empty or moved-from object, one
// from another engine, bad ops, an unknown or disconnected peer, a local
// region deregistered after Prepare, bad options.

#include "flowkv/prepared_transfer.h"

#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "flowkv/transfer_engine.h"
#include "tests/support/engine_pair.h"
#include "tests/support/transfer_test_util.h"

namespace flowkv {
namespace {

constexpr uint64_t kPoolBytes = uint64_t{1} << 20;

// Every other 4 KiB page of the first half of a's pool to the second half
// of b's, in reverse order: 64 ops.
std::vector<TransferOp> ScatteredOps(const testing::PoolPair& pair) {
  std::vector<TransferOp> ops;
  for (uint64_t i = 0; i < 64; ++i) {
    ops.push_back({pair.src.id, i * 8192, pair.dst.id,
                   kPoolBytes - (i + 1) * 4096, 4096});
  }
  return ops;
}

bool OpsArrived(const testing::PoolPair& pair,
                const std::vector<TransferOp>& ops) {
  const auto* src = static_cast<const uint8_t*>(pair.src.data);
  const auto* dst = static_cast<const uint8_t*>(pair.dst.data);
  for (const TransferOp& op : ops) {
    if (std::memcmp(src + op.src_offset, dst + op.dst_offset, op.length) != 0) {
      return false;
    }
  }
  return true;
}

TEST_CASE("A prepared Write posts its ops again and again",
          "[transfer_engine][prepared]") {
  testing::PoolPair pair;
  testing::MakePoolPair(kPoolBytes, &pair);
  const std::vector<TransferOp> ops = ScatteredOps(pair);
  absl::StatusOr<PreparedTransfer> prepared =
      pair.a->PrepareWrite(pair.a_to_b, ops);
  INFO(prepared.status().ToString());
  REQUIRE(prepared.ok());
  CHECK(prepared->valid());
  CHECK(prepared->peer() == pair.a_to_b);
  CHECK(prepared->num_ops() == 64);
  CHECK(prepared->bytes() == 64 * 4096);
  // Prepare posts nothing.
  CHECK(pair.b->TakeNotifications(absl::Milliseconds(20)).empty());

  for (int round = 0; round < 3; ++round) {
    testing::FillRandom(static_cast<uint8_t*>(pair.src.data), kPoolBytes,
                        round + 1);
    TransferOptions options;
    options.notification = "round " + std::to_string(round);
    TransferHandle handle = pair.a->Post(*prepared, options);
    const absl::Status status = handle.Wait();
    INFO(status.ToString());
    REQUIRE(status.ok());
    CHECK(handle.stats().ops == 64);
    CHECK(handle.stats().bytes == 64 * 4096);
    std::vector<Notification> notes =
        pair.b->TakeNotifications(absl::Seconds(10));
    REQUIRE(notes.size() == 1);
    CHECK(notes[0].bytes == *options.notification);
    CHECK(OpsArrived(pair, ops));
  }
  // Copies of the object post the same ops, from several threads at once.
  testing::FillRandom(static_cast<uint8_t*>(pair.src.data), kPoolBytes, 9);
  std::vector<absl::Status> results(4);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < results.size(); ++t) {
    threads.emplace_back(
        [&, t, copy = *prepared] { results[t] = pair.a->Post(copy).Wait(); });
  }
  for (std::thread& thread : threads) thread.join();
  for (const absl::Status& status : results) CHECK(status.ok());
  CHECK(OpsArrived(pair, ops));
}

TEST_CASE("A prepared Read pulls the peer's bytes",
          "[transfer_engine][prepared]") {
  testing::PoolPair pair;
  testing::MakePoolPair(kPoolBytes, &pair);
  testing::FillRandom(static_cast<uint8_t*>(pair.dst.data), kPoolBytes, 5);
  std::memset(pair.src.data, 0, kPoolBytes);
  // A Read names the peer's region as the source.
  const std::vector<TransferOp> ops = {
      {pair.dst.id, 0, pair.src.id, 4096, 100},
      {pair.dst.id, 8192, pair.src.id, 0, 4000}};
  absl::StatusOr<PreparedTransfer> prepared =
      pair.a->PrepareRead(pair.a_to_b, ops);
  REQUIRE(prepared.ok());
  REQUIRE(pair.a->Post(*prepared).Wait().ok());
  const auto* local = static_cast<const uint8_t*>(pair.src.data);
  const auto* remote = static_cast<const uint8_t*>(pair.dst.data);
  CHECK(std::memcmp(local + 4096, remote, 100) == 0);
  CHECK(std::memcmp(local, remote + 8192, 4000) == 0);
}

TEST_CASE("Prepare refuses what Write refuses, and changes nothing",
          "[transfer_engine][prepared]") {
  testing::PoolPair pair;
  testing::MakePoolPair(kPoolBytes, &pair);
  const auto code = [&](std::vector<TransferOp> ops, PeerId peer) {
    return pair.a->PrepareWrite(peer, ops).status().code();
  };
  const PeerId peer = pair.a_to_b;
  CHECK(code({{pair.src.id, 0, pair.dst.id, 0, 0}}, peer) ==
        absl::StatusCode::kInvalidArgument);  // zero length
  CHECK(code({{pair.src.id + 100, 0, pair.dst.id, 0, 8}}, peer) ==
        absl::StatusCode::kInvalidArgument);  // unknown local region
  CHECK(code({{pair.src.id, 0, pair.dst.id + 100, 0, 8}}, peer) ==
        absl::StatusCode::kInvalidArgument);  // unknown peer region
  CHECK(code({{pair.src.id, kPoolBytes - 4, pair.dst.id, 0, 8}}, peer) ==
        absl::StatusCode::kOutOfRange);
  CHECK(code({{pair.src.id, 0, pair.dst.id, UINT64_MAX - 2, 8}}, peer) ==
        absl::StatusCode::kOutOfRange);  // overflow
  CHECK(code({{pair.src.id, 0, pair.dst.id, 0, 8}}, peer + 100) ==
        absl::StatusCode::kNotFound);
  // Nothing holds the regions: both deregister.
  CHECK(pair.a->DeregisterMemory(pair.src.id).ok());
  CHECK(pair.b->DeregisterMemory(pair.dst.id).ok());
}

TEST_CASE("Post refuses an empty, foreign or stale PreparedTransfer",
          "[transfer_engine][prepared]") {
  testing::PoolPair pair;
  testing::MakePoolPair(kPoolBytes, &pair);
  const std::vector<TransferOp> ops = ScatteredOps(pair);
  absl::StatusOr<PreparedTransfer> prepared =
      pair.a->PrepareWrite(pair.a_to_b, ops);
  REQUIRE(prepared.ok());

  SECTION("empty and moved-from") {
    absl::Status seen = absl::OkStatus();
    TransferOptions options;
    options.on_complete = [&](const absl::Status& s, const TransferStats&) {
      seen = s;
    };
    TransferHandle handle = pair.a->Post(PreparedTransfer(), options);
    CHECK(handle.Wait().code() == absl::StatusCode::kInvalidArgument);
    CHECK(seen.code() == absl::StatusCode::kInvalidArgument);  // called here
    PreparedTransfer moved = std::move(*prepared);
    CHECK_FALSE(prepared->valid());
    CHECK(pair.a->Post(*prepared).Wait().code() ==
          absl::StatusCode::kInvalidArgument);
    CHECK(pair.a->Post(moved).Wait().ok());
  }
  SECTION("prepared by another engine") {
    const absl::Status status = pair.b->Post(*prepared).Wait();
    CHECK(status.code() == absl::StatusCode::kInvalidArgument);
    CHECK(status.message().find("another TransferEngine") != std::string::npos);
  }
  SECTION("bad options") {
    TransferOptions options;
    options.acknowledged = true;  // without a notification
    CHECK(pair.a->Post(*prepared, options).Wait().code() ==
          absl::StatusCode::kInvalidArgument);
    options = {};
    options.timeout = absl::ZeroDuration();
    CHECK(pair.a->Post(*prepared, options).Wait().code() ==
          absl::StatusCode::kInvalidArgument);
  }
  SECTION("its local region deregistered") {
    REQUIRE(pair.a->DeregisterMemory(pair.src.id).ok());
    const absl::Status status = pair.a->Post(*prepared).Wait();
    CHECK(status.code() == absl::StatusCode::kFailedPrecondition);
    CHECK(status.message().find("deregistered") != std::string::npos);
    // Nothing arrived at b.
    CHECK(pair.b->TakeNotifications(absl::Milliseconds(20)).empty());
  }
  SECTION("a region in use by a posted transfer cannot be deregistered") {
    // Many posts in flight; at least the first holds the region until done.
    std::vector<TransferHandle> handles;
    for (int i = 0; i < 8; ++i) handles.push_back(pair.a->Post(*prepared));
    const absl::Status deregistered = pair.a->DeregisterMemory(pair.src.id);
    for (TransferHandle& handle : handles) CHECK(handle.Wait().ok());
    if (deregistered.ok()) {
      // Every post had finished first: the next is refused.
      CHECK(pair.a->Post(*prepared).Wait().code() ==
            absl::StatusCode::kFailedPrecondition);
    } else {
      CHECK(deregistered.code() == absl::StatusCode::kFailedPrecondition);
      CHECK(pair.a->Post(*prepared).Wait().ok());
    }
  }
  SECTION("its peer disconnected") {
    REQUIRE(pair.a->Disconnect(pair.a_to_b).ok());
    CHECK(pair.a->Post(*prepared).Wait().code() ==
          absl::StatusCode::kUnavailable);
    CHECK(pair.a->PrepareWrite(pair.a_to_b, ops).status().code() ==
          absl::StatusCode::kUnavailable);
  }
}

}  // namespace
}  // namespace flowkv
