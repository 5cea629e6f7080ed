// SPDX-License-Identifier: Apache-2.0
// Helpers for tests with two TransferEngines in one process: an engine
// pinned to loopback with the transport's error-handling mode, and a pair
// connected through a listener on 127.0.0.1. Catch2 assertions: use from a
// test's main thread only.
#ifndef FLOWKV_TESTS_SUPPORT_ENGINE_PAIR_H_
#define FLOWKV_TESTS_SUPPORT_ENGINE_PAIR_H_

#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "flowkv/transfer_engine.h"
#include "tests/support/transfer_test_util.h"

namespace flowkv::testing {

// Options for a test engine: loopback only, heartbeats where UCX 1.13's
// shared-memory transports need them, peer_failure_timeout 3 s.
inline TransferEngineOptions TestEngineOptions(const std::string& name,
                                               const std::string& token) {
  setenv("UCX_NET_DEVICES", "lo", 1);
  TransferEngineOptions options;
  options.name = name;
  options.cluster_token = token;
  options.ucx_peer_error_handling = !SharedMemoryMode();
  options.peer_failure_timeout = kPeerFailureTimeout;
  return options;
}

inline std::unique_ptr<TransferEngine> MakeEngine(
    const TransferEngineOptions& options) {
  auto engine = TransferEngine::Create(options);
  INFO(engine.status().ToString());
  REQUIRE(engine.ok());
  // The "shm" variants must move data over shared memory.
  if (SharedMemoryMode())
    REQUIRE((*engine)->UcxInfo().find("posix") != std::string::npos);
  return *std::move(engine);
}

inline std::unique_ptr<TransferEngine> MakeEngine(
    const std::string& name, const std::string& token = "cluster-secret",
    std::function<void(Notification)> on_notification = nullptr) {
  TransferEngineOptions options = TestEngineOptions(name, token);
  options.on_notification = std::move(on_notification);
  return MakeEngine(options);
}

// `a` connected to `b` through b's listener.
struct Pair {
  std::unique_ptr<TransferEngine> a;
  std::unique_ptr<TransferEngine> b;
  PeerId a_to_b = 0;
  PeerId b_to_a = 0;
  std::string address;  // b's listener
};

inline void ConnectPair(Pair* pair) {
  auto address = pair->b->Listen("127.0.0.1:0");
  REQUIRE(address.ok());
  pair->address = *address;
  auto peer = pair->a->Connect(*address);
  INFO(peer.status().ToString());
  REQUIRE(peer.ok());
  pair->a_to_b = *peer;
  std::vector<PeerInfo> peers = pair->b->Peers();
  REQUIRE(peers.size() == 1);
  REQUIRE(peers[0].connected);
  CHECK(peers[0].name == pair->a->name());
  pair->b_to_a = peers[0].id;
}

// A Pair whose engines hold one pool each: `src` on a, `dst` on b.
struct PoolPair : Pair {
  AllocatedRegion src;
  AllocatedRegion dst;
};

// Engines made with `a_options` and `b_options`, a `bytes` pool on each
// (dst zeroed), connected a -> b.
inline void MakePoolPair(uint64_t bytes, const TransferEngineOptions& a_options,
                         const TransferEngineOptions& b_options,
                         PoolPair* pair) {
  pair->a = MakeEngine(a_options);
  pair->b = MakeEngine(b_options);
  auto src = pair->a->AllocateMemory(bytes);
  auto dst = pair->b->AllocateMemory(bytes);
  REQUIRE(src.ok());
  REQUIRE(dst.ok());
  pair->src = *src;
  pair->dst = *dst;
  std::memset(pair->dst.data, 0, bytes);
  ConnectPair(pair);
}

// Engines "a" and "b" (MakeEngine defaults), a `bytes` pool on each (dst
// zeroed), connected a -> b.
inline void MakePoolPair(uint64_t bytes, PoolPair* pair) {
  MakePoolPair(bytes, TestEngineOptions("a", "cluster-secret"),
               TestEngineOptions("b", "cluster-secret"), pair);
}

}  // namespace flowkv::testing

#endif  // FLOWKV_TESTS_SUPPORT_ENGINE_PAIR_H_
