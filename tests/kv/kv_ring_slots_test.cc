// SPDX-License-Identifier: Apache-2.0
// The staging ring's slot and credit accounting (lib/kv/kv_ring_slots.h)
// without a network: the send/receive split, acquire and release, credits
// (and credits refused), a peer's failure, the bound on slots in use, and
// the slots a sender may have out.
#include "lib/kv/kv_ring_slots.h"

#include <optional>
#include <set>
#include <vector>

#include <catch2/catch.hpp>

namespace flowkv::internal {
namespace {

constexpr PeerId kPeerA = 7;
constexpr PeerId kPeerB = 9;

TEST_CASE("KvRingSlots: the ring splits into a sending and a receiving half",
          "[kv_ring_slots]") {
  KvRingSlots slots(/*slot_count=*/6, /*send_slots=*/3);
  CHECK(slots.slot_count() == 6);
  CHECK(slots.send_slots() == 3);
  CHECK(slots.free() == 6);
  std::set<uint32_t> send, receive;
  while (auto s = slots.AcquireSend(1, kPeerA, "r")) send.insert(*s);
  while (auto s = slots.AcquireReceive()) receive.insert(*s);
  CHECK(send == std::set<uint32_t>{0, 1, 2});
  CHECK(receive == std::set<uint32_t>{3, 4, 5});
  CHECK(slots.free() == 0);
  CHECK(slots.max_in_use() == 6);
}

TEST_CASE("KvRingSlots: send slots are lent lowest first and come back",
          "[kv_ring_slots]") {
  KvRingSlots slots(4, 2);
  CHECK(slots.AcquireSend(1, kPeerA, "r") == 0u);
  CHECK(slots.AcquireSend(1, kPeerA, "r") == 1u);
  CHECK(slots.Gathering(0));
  slots.GatherEnded(0, 1);
  CHECK_FALSE(slots.Gathering(0));
  CHECK(slots.Gathering(1));
  CHECK_FALSE(slots.HasFreeSend());
  CHECK(slots.AcquireSend(2, kPeerA, "r") == std::nullopt);
  // Only the send holding a slot gives it back.
  CHECK_FALSE(slots.ReleaseSend(0, /*send=*/2));
  CHECK(slots.ReleaseSend(0, 1));
  CHECK_FALSE(slots.ReleaseSend(0, 1));
  CHECK(slots.HasFreeSend());
  CHECK(slots.AcquireSend(2, kPeerA, "r") == 0u);
  CHECK(slots.free() == 2);
  CHECK(slots.max_in_use() == 2);
}

TEST_CASE("KvRingSlots: never more slots in use than the sending half",
          "[kv_ring_slots]") {
  KvRingSlots slots(8, 4);
  std::vector<uint32_t> held;
  for (int round = 0; round < 3; ++round) {
    while (auto s = slots.AcquireSend(round + 1, kPeerA, "r")) {
      held.push_back(*s);
      REQUIRE(held.size() <= 4);
    }
    CHECK(held.size() == 4);
    for (uint32_t s : held) CHECK(slots.ReleaseSend(s, round + 1));
    held.clear();
  }
  CHECK(slots.max_in_use() == 4);
  CHECK(slots.free() == 8);
}

TEST_CASE("KvRingSlots: a credit frees the slot and names its send",
          "[kv_ring_slots]") {
  KvRingSlots slots(4, 2);
  const uint32_t a = *slots.AcquireSend(11, kPeerA, "req-a");
  const uint32_t b = *slots.AcquireSend(12, kPeerB, "req-b");
  slots.GatherEnded(a, 11);
  slots.GatherEnded(b, 12);
  absl::StatusOr<uint64_t> send = slots.Credit(kPeerA, a, "req-a");
  REQUIRE(send.ok());
  CHECK(*send == 11);
  CHECK(slots.free() == 3);
  // The same credit again: the slot is no longer held.
  CHECK(slots.Credit(kPeerA, a, "req-a").status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(slots.free() == 3);
}

TEST_CASE("KvRingSlots: a credit for a slot not held is refused",
          "[kv_ring_slots]") {
  KvRingSlots slots(4, 2);
  const uint32_t a = *slots.AcquireSend(11, kPeerA, "req-a");
  slots.GatherEnded(a, 11);
  // Another peer, another request, a free slot, a receive slot, out of range.
  CHECK_FALSE(slots.Credit(kPeerB, a, "req-a").ok());
  CHECK_FALSE(slots.Credit(kPeerA, a, "req-b").ok());
  CHECK_FALSE(slots.Credit(kPeerA, 1, "req-a").ok());
  CHECK_FALSE(slots.Credit(kPeerA, 2, "req-a").ok());
  CHECK_FALSE(slots.Credit(kPeerA, 1000, "req-a").ok());
  CHECK(slots.free() == 3);
  CHECK(slots.Credit(kPeerA, a, "req-a").ok());
  CHECK(slots.free() == 4);
}

TEST_CASE("KvRingSlots: a peer's failure frees all its slots not gathering",
          "[kv_ring_slots]") {
  KvRingSlots slots(8, 4);
  const uint32_t a1 = *slots.AcquireSend(1, kPeerA, "r1");
  const uint32_t b1 = *slots.AcquireSend(2, kPeerB, "r2");
  const uint32_t a2 = *slots.AcquireSend(3, kPeerA, "r3");
  const uint32_t a3 = *slots.AcquireSend(1, kPeerA, "r1");
  for (uint32_t s : {a1, b1, a2})
    slots.GatherEnded(s, s == b1 ? 2 : s == a1 ? 1 : 3);
  // a3 is still being gathered into: freed when its gather ends.
  std::vector<KvRingSlots::Freed> freed = slots.PeerFailed(kPeerA);
  REQUIRE(freed.size() == 2);
  CHECK(freed[0].slot == a1);
  CHECK(freed[0].send == 1);
  CHECK(freed[1].slot == a2);
  CHECK(freed[1].send == 3);
  CHECK(slots.free() == 6);
  CHECK(slots.Gathering(a3));
  CHECK(slots.ReleaseSend(a3, 1));
  CHECK(slots.free() == 7);
  // The other peer's slot is untouched; a second failure frees nothing.
  CHECK(slots.PeerFailed(kPeerA).empty());
  CHECK(slots.Credit(kPeerB, b1, "r2").ok());
  CHECK(slots.free() == 8);
}

TEST_CASE("KvRingSlots: receive slots and the slots a sender has out",
          "[kv_ring_slots]") {
  KvRingSlots slots(4, 2);
  const uint32_t r1 = *slots.AcquireReceive();
  const uint32_t r2 = *slots.AcquireReceive();
  CHECK(slots.AcquireReceive() == std::nullopt);
  CHECK(slots.HasFreeSend());
  slots.ReleaseReceive(r2);
  CHECK(slots.AcquireReceive() == r2);
  slots.ReleaseReceive(r1);
  slots.ReleaseReceive(r2);
  CHECK(slots.free() == 4);

  // A sender whose ring has 2 slots has at most 2 slots out here.
  CHECK(slots.HoldSlot(kPeerA, 2));
  CHECK(slots.HoldSlot(kPeerA, 2));
  CHECK_FALSE(slots.HoldSlot(kPeerA, 2));
  CHECK(slots.HoldSlot(kPeerB, 2));
  CHECK(slots.slots_held(kPeerA) == 2);
  slots.SlotDone(kPeerA);
  CHECK(slots.HoldSlot(kPeerA, 2));
  slots.SlotDone(kPeerA);
  slots.SlotDone(kPeerA);
  slots.SlotDone(kPeerA);  // more than held: stays at zero
  CHECK(slots.slots_held(kPeerA) == 0);
  CHECK_FALSE(slots.HoldSlot(kPeerA, 0));
  CHECK(slots.slots_held(kPeerA) == 0);
}

}  // namespace
}  // namespace flowkv::internal
