// SPDX-License-Identifier: Apache-2.0
// Per-transfer abort and trusted completion between two real processes
// (this test and build/bin/transfer_peer): Cancel and a deadline stop one
// transfer and leave the peer's other transfers and the connection intact;
// a fence that cannot complete fails the peer within its bound; an
// acknowledged write to a receiver that died never reports success.

#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "flowkv/transfer_engine.h"
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
using flowkv::testing::ProcessLink;
using flowkv::testing::Replies;

// An engine that posts in windows of `piece_bytes`, so that a transfer of
// a few MiB takes many progress-loop turns.
std::unique_ptr<TransferEngine> MakeWindowedEngine(uint64_t piece_bytes) {
  TransferEngineOptions options =
      flowkv::testing::TestEngineOptions("abort_test", "secret");
  options.max_window_bytes = piece_bytes;
  return MakeEngine(options);
}

TEST_CASE("Cancel or a deadline stops one of 20 transfers, not the peer",
          "[transfer_abort][process]") {
  const bool cancel = GENERATE(true, false);
  INFO((cancel ? "cancel" : "deadline"));
  constexpr int kTransfers = 20;
  constexpr int kVictim = 9;
  constexpr uint64_t kSlice = 4 << 20;  // per transfer
  constexpr uint64_t kPool = kTransfers * kSlice;
  PeerProcess process("secret", kPool);
  auto engine = MakeWindowedEngine(/*piece_bytes=*/128 << 10);
  auto local = engine->AllocateMemory(kPool);
  REQUIRE(local.ok());
  auto* mine = static_cast<uint8_t*>(local->data);
  FillRandom(mine, kPool, 7);
  auto peer = engine->Connect(process.address());
  REQUIRE(peer.ok());
  const RegionId remote = engine->GetPeer(*peer)->regions[0].id;

  std::vector<TransferHandle> handles;
  for (int i = 0; i < kTransfers; ++i) {
    const TransferOp op{local->id, i * kSlice, remote, i * kSlice, kSlice};
    // No notifications: transfer_peer hashes its whole pool on each one,
    // which would read slices other transfers are still writing.
    TransferOptions options;
    // 32 windows of its own behind 19 other transfers' windows: the victim
    // cannot finish within a millisecond.
    if (!cancel && i == kVictim) options.timeout = absl::Milliseconds(1);
    handles.push_back(engine->Write(*peer, {&op, 1}, options));
    if (cancel && i == kVictim) handles.back().Cancel();
  }
  for (int i = 0; i < kTransfers; ++i) {
    INFO("transfer " << i);
    const absl::Status status = handles[i].Wait();
    if (i == kVictim) {
      CHECK(status.code() == (cancel ? absl::StatusCode::kCancelled
                                     : absl::StatusCode::kDeadlineExceeded));
    } else {
      CHECK(status.ok());
    }
  }
  // The peer stays connected, and the other 19 slices arrived byte-exact.
  REQUIRE(engine->GetPeer(*peer)->connected);
  Replies replies(engine.get());
  for (int i = 0; i < kTransfers; ++i) {
    if (i == kVictim) continue;
    const std::string ask =
        "hash " + std::to_string(i * kSlice) + " " + std::to_string(kSlice);
    REQUIRE(engine->Send(*peer, ask).Wait().ok());
    CHECK(replies.Expect("hash ") ==
          "hash " + std::to_string(Fnv1a(mine + i * kSlice, kSlice)));
  }
  // And a new transfer to the same peer succeeds.
  const TransferOp again{local->id, kVictim * kSlice, remote, kVictim * kSlice,
                         kSlice};
  CHECK(engine->Write(*peer, {&again, 1}).Wait().ok());
  CHECK(engine->GetPeer(*peer)->connected);
}

TEST_CASE("A fence that cannot complete fails the peer within its bound",
          "[transfer_abort][process]") {
  constexpr uint64_t kBytes = 64 << 20;
  const bool cancel = GENERATE(true, false);
  INFO((cancel ? "cancel" : "deadline"));
  ProcessLink link;
  LinkToProcess(kBytes, MakeWindowedEngine(/*piece_bytes=*/1 << 20),
                /*via_metadata=*/false, &link);
  const TransferOp whole = link.Whole();
  REQUIRE(link.engine->Write(link.peer, {&whole, 1}).Wait().ok());

  link.process->Kill(SIGSTOP);
  // Fill the stopped peer's receive queue so that a flush cannot complete
  // on either transport (over shared memory the puts themselves do not need
  // the peer, but messages queue up behind its FIFO).
  std::vector<TransferHandle> messages;
  for (int i = 0; i < 2000; ++i) {
    messages.push_back(link.engine->Send(link.peer, std::string(4096, 'm')));
  }
  TransferOptions options;
  options.notification = "after the data";
  // A deadline well inside the failure timeout, so that it, not the
  // detection of the stopped peer, ends the transfer.
  if (!cancel) options.timeout = kPeerFailureTimeout / 10;
  TransferHandle handle = link.engine->Write(link.peer, {&whole, 1}, options);
  const absl::Time started = absl::Now();
  // Cancel once bytes are on their way (a transfer cancelled before its
  // first window is done at once: nothing of it needs fencing).
  while (handle.state() == TransferState::kPending) std::this_thread::yield();
  if (cancel) handle.Cancel();
  // Reported only after the fence completed or the peer was failed (closed)
  // for not completing it: within the deadline plus peer_failure_timeout,
  // plus the keepalive or heartbeat round that may detect the stop first.
  REQUIRE(handle.Wait(2 * kPeerFailureTimeout + absl::Seconds(1)));
  const absl::Status status = handle.status();
  INFO(status.ToString() << " after " << absl::Now() - started);
  CHECK(status.code() == (cancel ? absl::StatusCode::kCancelled
                                 : absl::StatusCode::kDeadlineExceeded));
  // The peer could not complete the fence: its endpoint was closed before
  // the failure was reported.
  auto info = link.engine->GetPeer(link.peer);
  REQUIRE(info.ok());
  CHECK(!info->connected);
  for (auto& m : messages) {
    REQUIRE(m.Wait(2 * kPeerFailureTimeout + absl::Seconds(1)));
  }
  CHECK(link.engine->Write(link.peer, {&whole, 1}).status().code() ==
        absl::StatusCode::kUnavailable);
  link.process->Kill(SIGKILL);
}

TEST_CASE("An acknowledged write to a receiver that died never succeeds",
          "[transfer_abort][process]") {
  constexpr uint64_t kBytes = 16 << 20;
  ProcessLink link;
  LinkToProcess(kBytes, MakeEngine("process_test", "secret"),
                /*via_metadata=*/true, &link);
  const TransferOp whole = link.Whole();
  TransferOptions options;
  options.notification = "acked";
  options.acknowledged = true;
  // Healthy: the ack arrives.
  REQUIRE(link.engine->Write(link.peer, {&whole, 1}, options).Wait().ok());
  // The receiver dies; over shared memory the bytes would still "land" in
  // its segment, but no acknowledgement can come back.
  link.process->Kill(SIGKILL);
  TransferHandle handle = link.engine->Write(link.peer, {&whole, 1}, options);
  REQUIRE(handle.Wait(2 * kPeerFailureTimeout + absl::Seconds(1)));
  INFO(handle.status().ToString());
  CHECK(handle.status().code() == absl::StatusCode::kUnavailable);
}

TEST_CASE("After the receiver's Disconnect nothing more lands in its pool",
          "[transfer_abort][process]") {
  // The peer process floods this engine's pool with writes. Disconnect asks
  // it to stop, waits until it fenced its writes, and only then closes: over
  // shared memory the peer could otherwise keep copying into the pool.
  constexpr uint64_t kBytes = 16 << 20;
  auto engine = MakeEngine("process_test", "secret");
  auto local = engine->AllocateMemory(kBytes);
  REQUIRE(local.ok());
  auto* pool = static_cast<uint8_t*>(local->data);
  PeerProcess process("secret", kBytes);
  auto peer = engine->Connect(process.address());
  REQUIRE(peer.ok());
  REQUIRE(engine->Send(*peer, "flood 0").Wait().ok());
  // Writes are landing.
  std::vector<Notification> first =
      engine->TakeNotifications(kPeerFailureTimeout);
  REQUIRE(!first.empty());
  const absl::Status disconnected = engine->Disconnect(*peer);
  INFO(disconnected.ToString());
  REQUIRE(disconnected.ok());
  CHECK(!engine->GetPeer(*peer)->connected);
  // Watch the pool for a while: a peer that had not stopped would keep
  // writing (it notices a one-sided close only by its heartbeats, after
  // kPeerFailureTimeout).
  std::memset(pool, 0, kBytes);
  const absl::Time until = absl::Now() + kPeerFailureTimeout / 3;
  bool late_write = false;
  while (!late_write && absl::Now() < until) {
    late_write = std::any_of(pool, pool + kBytes, [](uint8_t b) { return b; });
  }
  CHECK(!late_write);
}

TEST_CASE("Disconnect from a stopped peer says what it could not confirm",
          "[transfer_abort][process]") {
  PeerProcess process("secret", 4096);
  auto engine = MakeEngine("process_test", "secret");
  auto peer = engine->Connect(process.address());
  REQUIRE(peer.ok());
  process.Kill(SIGSTOP);
  const absl::Time started = absl::Now();
  const absl::Status status = engine->Disconnect(*peer);
  INFO(status.ToString() << " after " << absl::Now() - started);
  // Over tcp UCX's error handling closes the connection: nothing can land.
  // Over shared memory a stopped peer that resumes could still write until
  // it notices: Disconnect says so instead of claiming safety.
  CHECK(status.code() == (flowkv::testing::SharedMemoryMode()
                              ? absl::StatusCode::kDeadlineExceeded
                              : absl::StatusCode::kOk));
  CHECK(absl::Now() - started < kPeerFailureTimeout + absl::Seconds(1));
  CHECK(!engine->GetPeer(*peer)->connected);
  process.Kill(SIGKILL);
}

TEST_CASE("A sender's Disconnect does not wait behind what it queued",
          "[transfer_abort][process]") {
  // 256 MiB queued in 1 MiB windows: Disconnect stops posting, fails the
  // transfer once the endpoint closed, and returns within its bound instead
  // of after the whole transfer.
  constexpr uint64_t kBytes = 256 << 20;
  ProcessLink link;
  LinkToProcess(kBytes, MakeWindowedEngine(/*piece_bytes=*/1 << 20),
                /*via_metadata=*/false, &link);
  const TransferOp whole = link.Whole();
  TransferHandle handle = link.engine->Write(link.peer, {&whole, 1});
  while (handle.state() == TransferState::kPending) std::this_thread::yield();
  const absl::Time started = absl::Now();
  CHECK(link.engine->Disconnect(link.peer).ok());
  CHECK(absl::Now() - started < kPeerFailureTimeout + absl::Seconds(1));
  REQUIRE(handle.Wait(kPeerFailureTimeout));
  INFO(handle.status().ToString());
  // Unless it won the race and finished first, the write failed.
  CHECK((handle.status().ok() ||
         handle.status().code() == absl::StatusCode::kUnavailable));
  CHECK(handle.stats().completion_time <
        kPeerFailureTimeout + absl::Seconds(1));
}

TEST_CASE("Tampered metadata of a live peer is refused before UCX sees it",
          "[transfer_abort][process]") {
  // The worker-address bytes replaced by random ones and the checksum
  // recomputed: UCX 1.13 aborts the process when asked to connect to such
  // an address, so the engine must refuse it (the MAC does not match).
  PeerProcess process("secret", 4096);
  auto engine = MakeEngine("process_test", "secret");
  const std::string& good = process.metadata();
  std::mt19937_64 rng(7);
  // Where the worker address lies: magic (4), version (2), instance id (8),
  // name (u32 length + bytes), UCX version (4), address format (1), then
  // the address (u32 length + bytes).
  auto u32_at = [&](size_t at) {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= uint32_t{uint8_t(good[at + i])} << (8 * i);
    return v;
  };
  const size_t name_at = 4 + 2 + 8;
  const size_t address_at = name_at + 4 + u32_at(name_at) + 4 + 1;
  const size_t address_bytes = u32_at(address_at);
  REQUIRE(address_at + 4 + address_bytes < good.size());
  for (int round = 0; round < 50; ++round) {
    std::string bad = good;
    for (size_t i = 0; i < address_bytes; ++i) {
      bad[address_at + 4 + i] = static_cast<char>(rng());
    }
    uint64_t sum = 0xcbf29ce484222325ull;
    for (size_t i = 0; i + 8 < bad.size(); ++i) {
      sum ^= static_cast<uint8_t>(bad[i]);
      sum *= 0x100000001b3ull;
    }
    for (int i = 0; i < 8; ++i) {
      bad[bad.size() - 8 + i] = static_cast<char>(sum >> (8 * i));
    }
    INFO("round " << round);
    CHECK(engine->AddPeer(bad).status().code() ==
          absl::StatusCode::kPermissionDenied);
  }
  // The genuine blob still connects.
  CHECK(engine->AddPeer(good).ok());
}

}  // namespace
}  // namespace flowkv
