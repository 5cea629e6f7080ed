// SPDX-License-Identifier: Apache-2.0
// KvTransfer over the staging ring and over IPC (include/flowkv/kv_transfer.h,
// kv_pool_memory.h; docs/gpu.md "Paths"): the pools, the options, byte-exact
// staged transfers between two processes for several layout pairs with a
// ring small enough for hundreds of slots, credits never exceeded, IPC
// between two processes sharing host pools, and refused input (ready events
// on host pools, slot notices naming runs outside the pool).
#include <cstring>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "flowkv/kv_pool_memory.h"
#include "flowkv/kv_transfer.h"
#include "lib/kv/kv_notice.h"
#include "lib/pool/host_share_descriptor.h"
#include "tests/support/kv_staging_util.h"

namespace flowkv {
namespace {

using staging_test::Arrived;
using staging_test::ForcedStaging;
using staging_test::InProcessPair;
using staging_test::kSmallRing;
using staging_test::Pair;
using staging_test::RingFree;
using staging_test::StagingSide;
using staging_test::WholeRequest;
using testing::PollUntil;
using testing::Seen;
constexpr absl::Duration kSoon = kv_fixture::kSoon;

TEST_CASE("Host pools copy runs and refuse runs outside them", "[kv_staging]") {
  std::vector<uint8_t> a(100, 1), b(50, 2);
  auto pool = MakeHostPool({a.data(), b.data()}, {100, 50});
  REQUIRE(pool.ok());
  CHECK((*pool)->num_regions() == 2);
  CHECK((*pool)->region_bytes(1) == 50);
  std::vector<uint8_t> host(20, 9);
  absl::Status got = absl::UnknownError("not called");
  (*pool)->Scatter(
      {{.region = 1, .offset = 40, .host = host.data(), .length = 10}},
      [&](absl::Status s) { got = s; });
  CHECK(got.ok());
  CHECK(b[40] == 9);
  CHECK(b[39] == 2);
  // One run out of bounds: nothing of the batch is copied.
  (*pool)->Scatter(
      {{.region = 0, .offset = 0, .host = host.data(), .length = 5},
       {.region = 1, .offset = 45, .host = host.data(), .length = 10}},
      [&](absl::Status s) { got = s; });
  CHECK(got.code() == absl::StatusCode::kInvalidArgument);
  CHECK(a[0] == 1);
  (*pool)->Gather(
      {{.region = 2, .offset = 0, .host = host.data(), .length = 1}}, nullptr,
      [&](absl::Status s) { got = s; });
  CHECK(got.code() == absl::StatusCode::kInvalidArgument);
  CHECK((*pool)->ShareDescriptor().empty());
  CHECK((*pool)->OpenPeer("x").status().code() ==
        absl::StatusCode::kUnavailable);

  CHECK(MakeHostPool({}, {}).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(MakeHostPool({a.data()}, {100, 5}).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(MakeHostPool({nullptr}, {100}).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(MakeHostPool({a.data()}, {0}).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

TEST_CASE("Shared host pools open each other and refuse bad descriptors",
          "[kv_staging]") {
  auto a = MakeSharedHostPool({4096, 100});
  auto b = MakeSharedHostPool({4096, 100});
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  auto* b1 = static_cast<uint8_t*>((*b)->region_base(1));
  std::memset((*a)->region_base(0), 5, 4096);
  auto peer = (*a)->OpenPeer((*b)->ShareDescriptor());
  REQUIRE(peer.ok());
  absl::Status got = absl::UnknownError("not called");
  (*peer)->CopyTo({{.src_region = 0,
                    .src_offset = 10,
                    .dst_region = 1,
                    .dst_offset = 90,
                    .length = 10}},
                  nullptr, [&](absl::Status s) { got = s; });
  CHECK(got.ok());
  CHECK(b1[90] == 5);
  CHECK(b1[89] == 0);
  // Past the peer's region: refused, nothing copied.
  std::memset(b1, 0, 100);
  (*peer)->CopyTo({{.src_region = 0,
                    .src_offset = 0,
                    .dst_region = 1,
                    .dst_offset = 95,
                    .length = 10}},
                  nullptr, [&](absl::Status s) { got = s; });
  CHECK(got.code() == absl::StatusCode::kInvalidArgument);
  CHECK(b1[95] == 0);
  // Pull.
  b1[0] = 42;
  (*peer)->CopyFrom({{.src_region = 1,
                      .src_offset = 0,
                      .dst_region = 0,
                      .dst_offset = 0,
                      .length = 1}},
                    [&](absl::Status s) { got = s; });
  CHECK(got.ok());
  CHECK(static_cast<uint8_t*>((*a)->region_base(0))[0] == 42);

  auto shared_b = internal::ParseHostShareDescriptor((*b)->ShareDescriptor());
  REQUIRE(shared_b.ok());
  shared_b->boot_id = "not-this-host";
  const std::string other_host = internal::EncodeHostShareDescriptor(*shared_b);
  CHECK((*a)->OpenPeer(other_host).status().code() ==
        absl::StatusCode::kUnavailable);
  CHECK((*a)->OpenPeer("garbage").status().code() ==
        absl::StatusCode::kInvalidArgument);
  std::string missing = (*b)->ShareDescriptor();
  missing.replace(missing.find("/flowkv-"), 8, "/nothing");
  CHECK((*a)->OpenPeer(missing).status().code() ==
        absl::StatusCode::kUnavailable);
  CHECK(MakeSharedHostPool({}).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(MakeSharedHostPool({10, 0}).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

TEST_CASE("Bad staging options and pools are refused", "[kv_staging]") {
  auto engine = testing::MakeKvEngine("options");
  const KvLayout layout =
      *KvLayout::Create({.geometry = kv_fixture::kGeometry});
  auto region = engine->AllocateMemory(layout.total_bytes());
  REQUIRE(region.ok());
  auto create = [&](KvStagingOptions st) {
    return KvTransfer::Create(
               engine.get(), layout, {region->id},
               {.staging = st, .path_policy = KvPathPolicy::kForceStaging})
        .status();
  };
  CHECK(create({.ring_bytes = 1 << 20, .slot_bytes = 0}).code() ==
        absl::StatusCode::kInvalidArgument);
  absl::Status small = create({.ring_bytes = 4096, .slot_bytes = 4096});
  CHECK(small.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(small.message()), Catch::Contains("ring_bytes"));
  CHECK(create({.ring_bytes = 8192, .slot_bytes = 4096}).ok());

  auto pool = MakeSharedHostPool({layout.total_bytes()});
  REQUIRE(pool.ok());
  std::shared_ptr<KvPoolMemory> shared = *std::move(pool);
  CHECK(KvTransfer::Create(engine.get(), layout, shared, {}).ok());
  CHECK(KvTransfer::Create(engine.get(), layout,
                           std::shared_ptr<KvPoolMemory>(), {})
            .status()
            .code() == absl::StatusCode::kInvalidArgument);
  auto tiny = MakeSharedHostPool({layout.total_bytes() - 1});
  REQUIRE(tiny.ok());
  CHECK(KvTransfer::Create(engine.get(), layout,
                           std::shared_ptr<KvPoolMemory>(*std::move(tiny)), {})
            .status()
            .code() == absl::StatusCode::kInvalidArgument);
  auto two = MakeSharedHostPool({layout.total_bytes(), 10});
  REQUIRE(two.ok());
  CHECK(KvTransfer::Create(engine.get(), layout,
                           std::shared_ptr<KvPoolMemory>(*std::move(two)), {})
            .status()
            .code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("A forced staging path moves a request byte-exact in slots",
          "[kv_staging]") {
  InProcessPair p;
  CHECK(*p.prefill.kv->PeerPath(p.to_decode) == KvPath::kStaging);
  CHECK(*p.decode.kv->PeerPath(p.to_prefill) == KvPath::kStaging);
  REQUIRE(p.prefill.kv->Send("one", p.to_decode, WholeRequest(Pair(0)))
              .Wait()
              .ok());
  Seen seen;
  REQUIRE(PollUntil(*p.decode.kv, seen, kSoon,
                    [](const Seen& s) { return s.Finished("one"); }));
  CHECK(Arrived(Pair(0), p.decode.data));
  const KvTransferStats sent = p.prefill.kv->Stats();
  const KvTransferStats got = p.decode.kv->Stats();
  const uint64_t bytes = p.prefill.layout.total_bytes();
  CHECK(sent.staged_bytes_sent == bytes);
  CHECK(got.staged_bytes_received == bytes);
  CHECK(sent.staged_slots_sent == bytes / kSmallRing.slot_bytes);
  CHECK(got.staged_slots_received == sent.staged_slots_sent);
  // Credits: never more slots in use than the ring has; pipelined.
  CHECK(sent.ring_slots == kSmallRing.ring_bytes / kSmallRing.slot_bytes);
  CHECK(sent.ring_slots_max_in_use <= sent.ring_slots / 2);
  CHECK(sent.ring_slots_max_in_use > 1);
  CHECK(got.ring_slots_max_in_use <= got.ring_slots / 2);
  CHECK(RingFree(*p.prefill.kv, kSoon));
  CHECK(RingFree(*p.decode.kv, kSoon));
  // A Fetch over staging is not implemented.
  CHECK(p.decode.kv->Fetch("pull", p.to_prefill, WholeRequest(Pair(0)))
            .Wait()
            .code() == absl::StatusCode::kUnimplemented);
}

TEST_CASE("Each side names the path it takes, or why there is none",
          "[kv_staging]") {
  const KvLayoutSpec spec = Pair(0).src;
  {
    // Engine regions on both sides: direct.
    StagingSide a("a", spec, false, {});
    StagingSide b("b", spec, false, {});
    PeerId ab = 0, ba = 0;
    staging_test::ExchangePools(a, b, &ab, &ba);
    CHECK(*a.kv->PeerPath(ab) == KvPath::kDirect);
    CHECK(*b.kv->PeerPath(ba) == KvPath::kDirect);
    CHECK(a.kv->Stats().ring_slots == 0);
  }
  {
    // Shared pools: IPC both ways (this process opens both).
    StagingSide a("a", spec, true, {.staging = kSmallRing});
    StagingSide b("b", spec, true, {.staging = kSmallRing});
    PeerId ab = 0, ba = 0;
    staging_test::ExchangePools(a, b, &ab, &ba);
    CHECK(*a.kv->PeerPath(ab) == KvPath::kIpc);
    CHECK(*b.kv->PeerPath(ba) == KvPath::kIpc);
    // Push and pull over IPC.
    testing::FillRandom(a.data, a.layout.total_bytes(), staging_test::kSeed);
    REQUIRE(a.kv->Send("ipc-push", ab, WholeRequest(Pair(0))).Wait().ok());
    Seen seen;
    REQUIRE(PollUntil(*b.kv, seen, kSoon,
                      [](const Seen& s) { return s.Finished("ipc-push"); }));
    CHECK(Arrived(Pair(0), b.data));
    std::memset(b.data, 0, b.layout.total_bytes());
    REQUIRE(b.kv->Fetch("ipc-pull", ba, WholeRequest(Pair(0))).Wait().ok());
    REQUIRE(PollUntil(*b.kv, seen, kSoon,
                      [](const Seen& s) { return s.Finished("ipc-pull"); }));
    CHECK(Arrived(Pair(0), b.data));
    Seen released;
    REQUIRE(PollUntil(*a.kv, released, kSoon, [](const Seen& s) {
      return s.Released("ipc-pull") != nullptr;
    }));
    CHECK(released.Released("ipc-pull")->status.ok());
    CHECK(a.kv->Stats().ipc_copies > 0);
    CHECK(b.kv->Stats().ipc_copies > 0);
    CHECK(a.kv->Stats().staged_slots_sent == 0);
  }
  {
    // A shared pool and engine regions without a ring: no path; the error
    // names the missing ring, and Send returns it.
    StagingSide a("a", spec, false, {});
    StagingSide b("b", spec, true, {.staging = kSmallRing});
    PeerId ab = 0, ba = 0;
    staging_test::ExchangePools(a, b, &ab, &ba);
    absl::StatusOr<KvPath> path = a.kv->PeerPath(ab);
    CHECK(path.status().code() == absl::StatusCode::kFailedPrecondition);
    CHECK_THAT(std::string(path.status().message()),
               Catch::Contains("this side has no staging ring"));
    CHECK(b.kv->PeerPath(ba).status().code() ==
          absl::StatusCode::kFailedPrecondition);
    CHECK(a.kv->Send("none", ab, WholeRequest(Pair(0))).Wait().code() ==
          absl::StatusCode::kFailedPrecondition);
  }
  {
    // kForceIpc with a peer that cannot share: no path.
    StagingSide a(
        "a", spec, true,
        {.staging = kSmallRing, .path_policy = KvPathPolicy::kForceIpc});
    StagingSide b("b", spec, false, ForcedStaging());
    PeerId ab = 0, ba = 0;
    staging_test::ExchangePools(a, b, &ab, &ba);
    absl::StatusOr<KvPath> path = a.kv->PeerPath(ab);
    CHECK(path.status().code() == absl::StatusCode::kFailedPrecondition);
    CHECK_THAT(std::string(path.status().message()),
               Catch::Contains("kForceIpc"));
    // The other side stages (a's pool has a ring).
    CHECK(*b.kv->PeerPath(ba) == KvPath::kStaging);
  }
  {
    // Unknown peer.
    StagingSide a("a", spec, false, {});
    CHECK(a.kv->PeerPath(99).status().code() ==
          absl::StatusCode::kFailedPrecondition);
  }
}

TEST_CASE("A ready event with a host pool is refused", "[kv_staging]") {
  InProcessPair p;
  int event = 0;
  KvPiece r = WholeRequest(Pair(0));
  r.ready_event = &event;
  CHECK(p.prefill.kv->Send("event", p.to_decode, r).Wait().code() ==
        absl::StatusCode::kInvalidArgument);
  Seen seen;
  REQUIRE(PollUntil(*p.decode.kv, seen, kSoon,
                    [](const Seen& s) { return s.Failed("event"); }));
  CHECK(p.decode.kv->Stats().staged_slots_received == 0);
}

TEST_CASE("A slot naming runs outside the pool is refused, nothing written",
          "[kv_staging]") {
  InProcessPair p;
  const uint64_t pool_bytes = p.decode.layout.total_bytes();
  for (uint64_t offset : {pool_bytes - 10, pool_bytes, uint64_t{1} << 62}) {
    INFO(offset);
    internal::KvNotice incoming;
    incoming.kind = internal::KvNoticeKind::kSlot;
    incoming.request_id = "evil-" + std::to_string(offset);
    incoming.slot = 0;
    incoming.runs = {{.region = 0, .offset = 0, .length = 64},
                     {.region = 0, .offset = offset, .length = 64}};
    REQUIRE(testing::WriteNotice(*p.prefill.engine, p.to_decode,
                                 internal::EncodeKvNotice(incoming))
                .ok());
    Seen seen;
    REQUIRE(PollUntil(*p.decode.kv, seen, kSoon, [&](const Seen& s) {
      return s.Failed(incoming.request_id);
    }));
    CHECK(seen.Failed(incoming.request_id)->status.code() ==
          absl::StatusCode::kInvalidArgument);
  }
  // A region the pool does not have.
  internal::KvNotice incoming;
  incoming.kind = internal::KvNoticeKind::kSlot;
  incoming.request_id = "evil-region";
  incoming.runs = {{.region = 1, .offset = 0, .length = 64}};
  REQUIRE(testing::WriteNotice(*p.prefill.engine, p.to_decode,
                               internal::EncodeKvNotice(incoming))
              .ok());
  Seen seen;
  REQUIRE(PollUntil(*p.decode.kv, seen, kSoon,
                    [](const Seen& s) { return s.Failed("evil-region"); }));
  CHECK(p.decode.kv->Stats().slots_refused == 4);
  CHECK(p.decode.kv->Stats().staged_slots_received == 0);
  for (uint64_t i = 0; i < pool_bytes; ++i) REQUIRE(p.decode.data[i] == 0);
  CHECK(RingFree(*p.decode.kv, kSoon));
}

TEST_CASE("Staged transfers between two processes are byte-exact",
          "[kv_staging]") {
  for (int pair : {0, 1, 2}) {
    INFO("layout pair " << pair);
    StagingSide decode("decode", Pair(pair).dst, false, ForcedStaging());
    auto address = decode.engine->Listen("127.0.0.1:0");
    REQUIRE(address.ok());
    auto child =
        staging_test::StartChild("staging child", "send", pair, *address, 2);
    Seen seen;
    REQUIRE(PollUntil(*decode.kv, seen, kSoon + kSoon, [](const Seen& s) {
      return s.Finished("req-0") && s.Finished("req-1");
    }));
    CHECK(seen.failed.empty());
    CHECK(Arrived(Pair(pair), decode.data));
    REQUIRE(child->ReadLine(kSoon) == "sent 0 0");
    REQUIRE(child->ReadLine(kSoon) == "sent 1 0");
    const KvTransferStats stats = decode.kv->Stats();
    CHECK(stats.staged_slots_received >= 2 * 100);
    CHECK(stats.ring_slots_max_in_use <= stats.ring_slots / 2);
    CHECK(RingFree(*decode.kv, kSoon));
  }
}

TEST_CASE("IPC between two processes sharing host pools is byte-exact",
          "[kv_staging]") {
  StagingSide decode("decode", Pair(1).dst, true, {.staging = kSmallRing});
  auto address = decode.engine->Listen("127.0.0.1:0");
  REQUIRE(address.ok());
  auto child = staging_test::StartChild("staging child", "ipc", 1, *address, 1);
  Seen seen;
  REQUIRE(PollUntil(*decode.kv, seen, kSoon + kSoon,
                    [](const Seen& s) { return s.Finished("req-0"); }));
  CHECK(Arrived(Pair(1), decode.data));
  CHECK(child->ReadLine(kSoon) ==
        "path " + std::to_string(static_cast<int>(KvPath::kIpc)));
  CHECK(child->ReadLine(kSoon) == "sent 0 0");
  const std::string copies = child->ReadLine(kSoon);
  CHECK(copies.rfind("ipc_copies ", 0) == 0);
  CHECK(copies != "ipc_copies 0");
  // Nothing went through the ring.
  CHECK(decode.kv->Stats().staged_slots_received == 0);
}

}  // namespace
}  // namespace flowkv
