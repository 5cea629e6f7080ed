// SPDX-License-Identifier: Apache-2.0
// Each wrapped UCX call (lib/engine/fault_injection.h) made to fail in
// turn, through real engines over UCX on loopback: the API call returns a
// clear status or the affected transfer finishes with an error, within a
// bound derived from the options, and the engine keeps serving: another
// peer's transfers still land, and the failed peer reconnects. Each case
// prints how many faults it injected and survived.

#include "lib/engine/fault_injection.h"

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "flowkv/transfer_engine.h"
#include "tests/support/engine_pair.h"
#include "tests/support/transfer_test_util.h"

namespace flowkv {
namespace {

using flowkv::testing::MakeEngine;
using flowkv::testing::MakePoolPair;
using flowkv::testing::PoolPair;
using flowkv::testing::TestEngineOptions;
using internal::FaultInjector;
using internal::FaultPoint;

constexpr uint64_t kBytes = 64 * 1024;

// Bound on any one transfer or connection of these tests.
absl::Duration Bound() {
  return TestEngineOptions("bound", "").connect_timeout +
         2 * flowkv::testing::kPeerFailureTimeout;
}

// Disarms the injector however the test case ends.
struct ArmedScope {
  ~ArmedScope() { FaultInjector::Reset(); }
};

void Report(const char* point, uint64_t injected) {
  std::printf("fault_injection: %s injected %llu survived %llu\n", point,
              static_cast<unsigned long long>(injected),
              static_cast<unsigned long long>(injected));
}

// A Write of `bytes` from `src` to `dst` on `peer`, checked to have landed.
void ExpectWriteLands(TransferEngine* engine, PeerId peer,
                      const AllocatedRegion& src, const AllocatedRegion& dst,
                      uint64_t seed) {
  flowkv::testing::FillRandom(static_cast<uint8_t*>(src.data), kBytes, seed);
  const TransferOp op{src.id, 0, dst.id, 0, kBytes};
  TransferHandle handle = engine->Write(peer, {&op, 1});
  REQUIRE(handle.Wait(Bound()));
  INFO(handle.status().ToString());
  REQUIRE(handle.status().ok());
  CHECK(std::memcmp(src.data, dst.data, kBytes) == 0);
}

// After a fault between pair.a and pair.b: a third engine's (made with
// `c_options`) writes to b land, and a reconnects to b and its writes land.
void ExpectStillServes(PoolPair* pair,
                       const TransferEngineOptions& c_options =
                           TestEngineOptions("c", "cluster-secret")) {
  auto c = MakeEngine(c_options);
  auto c_src = c->AllocateMemory(kBytes);
  REQUIRE(c_src.ok());
  auto c_to_b = c->Connect(pair->address);
  REQUIRE(c_to_b.ok());
  ExpectWriteLands(c.get(), *c_to_b, *c_src, pair->dst, 11);
  auto again = pair->a->Connect(pair->address);
  INFO(again.status().ToString());
  REQUIRE(again.ok());
  ExpectWriteLands(pair->a.get(), *again, pair->src, pair->dst, 12);
}

// A transfer that the fault fails: done within the bound, with an error.
absl::Status FailedTransfer(const TransferHandle& handle) {
  REQUIRE(handle.Wait(Bound()));
  CHECK(!handle.status().ok());
  return handle.status();
}

// The whole pool written from pair.a to pair.b with `point` armed to fail
// once: the transfer fails within the bound; its status.
absl::Status FailedWrite(PoolPair* pair, FaultPoint point) {
  const TransferOp op{pair->src.id, 0, pair->dst.id, 0, kBytes};
  FaultInjector::Arm(point, 1, UCS_ERR_IO_ERROR);
  return FailedTransfer(pair->a->Write(pair->a_to_b, {&op, 1}));
}

TEST_CASE("A failed ucp_mem_map fails the registration and nothing else",
          "[fault_injection]") {
  ArmedScope scope;
  auto engine = MakeEngine("a");
  const size_t regions = engine->Regions().size();
  FaultInjector::Arm(FaultPoint::kMemMap, 1, UCS_ERR_NO_MEMORY);
  auto allocated = engine->AllocateMemory(kBytes);
  REQUIRE(!allocated.ok());
  CHECK(allocated.status().code() == absl::StatusCode::kResourceExhausted);
  CHECK(absl::StrContains(allocated.status().message(), "ucp_mem_map"));
  std::vector<char> buffer(kBytes);
  FaultInjector::Arm(FaultPoint::kMemMap, 1, UCS_ERR_INVALID_PARAM);
  auto registered = engine->RegisterMemory(buffer.data(), buffer.size());
  REQUIRE(!registered.ok());
  CHECK(absl::StrContains(registered.status().message(), "ucp_mem_map"));
  CHECK(engine->Regions().size() == regions);
  CHECK(engine->Stats().registered_bytes == 0);
  // The next ones succeed.
  REQUIRE(engine->AllocateMemory(kBytes).ok());
  REQUIRE(engine->RegisterMemory(buffer.data(), buffer.size()).ok());
  CHECK(FaultInjector::Injected(FaultPoint::kMemMap) == 2);
  Report("ucp_mem_map", FaultInjector::Injected(FaultPoint::kMemMap));
}

TEST_CASE("A failed ucp_ep_create fails Connect on either side",
          "[fault_injection]") {
  ArmedScope scope;
  PoolPair pair;
  MakePoolPair(kBytes, &pair);
  // The client's endpoint.
  FaultInjector::Arm(FaultPoint::kEpCreate, 1, UCS_ERR_NO_RESOURCE);
  auto refused = pair.a->Connect(pair.address);
  REQUIRE(!refused.ok());
  CHECK(absl::StrContains(refused.status().message(), "ucp_ep_create"));
  // The server's endpoint for the accepted connection (the client's is the
  // first call): the client is refused within connect_timeout.
  FaultInjector::Arm(FaultPoint::kEpCreate, 2, UCS_ERR_NO_RESOURCE);
  auto dropped = pair.a->Connect(pair.address);
  CHECK(!dropped.ok());
  CHECK(FaultInjector::Injected(FaultPoint::kEpCreate) == 2);
  CHECK(pair.b->Peers().size() == 1);  // the pair's own connection
  ExpectStillServes(&pair);
  Report("ucp_ep_create", FaultInjector::Injected(FaultPoint::kEpCreate));
}

// Puts and gets are posted only where the endpoint has one-sided
// operations (shared memory here; tcp moves bytes as messages).
TEST_CASE("A failed put or get fails its transfer and its peer only",
          "[fault_injection]") {
  ArmedScope scope;
  PoolPair pair;
  MakePoolPair(kBytes, &pair);
  auto view = pair.a->GetPeer(pair.a_to_b);
  REQUIRE(view.ok());
  if (view->write_method != PeerDataMethod::kRma ||
      view->read_method != PeerDataMethod::kRma) {
    WARN("no one-sided put/get on this transport: nothing to inject");
    return;
  }
  absl::Status put = FailedWrite(&pair, FaultPoint::kPut);
  CHECK(absl::StrContains(put.message(), "ucp_put_nbx"));
  ExpectStillServes(&pair);
  auto peer = pair.a->Connect(pair.address);
  REQUIRE(peer.ok());
  const TransferOp read{pair.dst.id, 0, pair.src.id, 0, kBytes};
  FaultInjector::Arm(FaultPoint::kGet, 1, UCS_ERR_IO_ERROR);
  absl::Status get = FailedTransfer(pair.a->Read(*peer, {&read, 1}));
  CHECK(absl::StrContains(get.message(), "ucp_get_nbx"));
  ExpectStillServes(&pair);
  CHECK(FaultInjector::Injected(FaultPoint::kPut) == 1);
  CHECK(FaultInjector::Injected(FaultPoint::kGet) == 1);
  Report("ucp_put_nbx", FaultInjector::Injected(FaultPoint::kPut));
  Report("ucp_get_nbx", FaultInjector::Injected(FaultPoint::kGet));
}

TEST_CASE("A failed flush fails its transfer and its peer only",
          "[fault_injection]") {
  ArmedScope scope;
  PoolPair pair;
  MakePoolPair(kBytes, &pair);
  FailedWrite(&pair, FaultPoint::kFlush);
  CHECK(FaultInjector::Injected(FaultPoint::kFlush) == 1);
  ExpectStillServes(&pair);
  Report("ucp_ep_flush_nbx", FaultInjector::Injected(FaultPoint::kFlush));
}

TEST_CASE("A failed active-message send fails its message and its peer only",
          "[fault_injection]") {
  ArmedScope scope;
  // UCX peer error handling in both modes: no heartbeats, so the armed
  // send is the message's.
  TransferEngineOptions a_options = TestEngineOptions("a", "cluster-secret");
  TransferEngineOptions b_options = TestEngineOptions("b", "cluster-secret");
  a_options.ucx_peer_error_handling = true;
  b_options.ucx_peer_error_handling = true;
  PoolPair pair;
  MakePoolPair(kBytes, a_options, b_options, &pair);
  FaultInjector::Arm(FaultPoint::kAmSend, 1, UCS_ERR_NO_RESOURCE);
  FailedTransfer(pair.a->Send(pair.a_to_b, "lost"));
  CHECK(FaultInjector::Injected(FaultPoint::kAmSend) == 1);
  TransferEngineOptions c_options = TestEngineOptions("c", "cluster-secret");
  c_options.ucx_peer_error_handling = true;
  ExpectStillServes(&pair, c_options);
  Report("ucp_am_send_nbx", FaultInjector::Injected(FaultPoint::kAmSend));
}

}  // namespace
}  // namespace flowkv
