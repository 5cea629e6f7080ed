// SPDX-License-Identifier: Apache-2.0
// TransferEngine peers over real UCX on loopback, two engines in one
// process: connecting through metadata (AddPeer), the cluster token, malformed
// metadata, messages (Send) and Disconnect.
// The transports come from UCX_TLS (ctest runs this binary with tcp and with
// shared memory); UCX_NET_DEVICES is pinned to lo.

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "flowkv/transfer_engine.h"
#include "lib/engine/wireup/wire_format.h"
#include "tests/support/engine_pair.h"
#include "tests/support/transfer_test_util.h"

namespace flowkv {
namespace {

using flowkv::testing::FillRandom;
using flowkv::testing::MakeEngine;
using flowkv::testing::MakePoolPair;
using flowkv::testing::PoolPair;

std::string MetadataOf(TransferEngine* engine) {
  auto metadata = engine->LocalMetadata();
  REQUIRE(metadata.ok());
  return *metadata;
}

TEST_CASE("AddPeer connects through metadata and Send delivers messages",
          "[transfer_engine]") {
  auto a = MakeEngine("a");
  auto b = MakeEngine("b");
  auto a_region = a->AllocateMemory(1 << 20);
  auto b_region = b->AllocateMemory(1 << 20);
  REQUIRE(a_region.ok());
  REQUIRE(b_region.ok());
  auto peer = a->AddPeer(MetadataOf(b.get()));
  INFO(peer.status().ToString());
  REQUIRE(peer.ok());
  REQUIRE(b->Peers().size() == 1);
  const PeerId b_to_a = b->Peers()[0].id;
  auto info = a->GetPeer(*peer);
  REQUIRE(info.ok());
  CHECK(info->name == "b");
  REQUIRE(info->regions.size() == 1);
  CHECK(info->regions[0].length == uint64_t{1} << 20);

  FillRandom(static_cast<uint8_t*>(a_region->data), 1 << 20, 7);
  const TransferOp op{a_region->id, 4096, b_region->id, 8192, 100000};
  REQUIRE(a->Write(*peer, {&op, 1}).Wait().ok());
  CHECK(std::memcmp(static_cast<uint8_t*>(a_region->data) + 4096,
                    static_cast<uint8_t*>(b_region->data) + 8192, 100000) == 0);

  REQUIRE(a->Send(*peer, "hello b").Wait().ok());
  REQUIRE(b->Send(b_to_a, "hello a").Wait().ok());
  auto at_b = b->TakeNotifications(absl::Seconds(10));
  auto at_a = a->TakeNotifications(absl::Seconds(10));
  REQUIRE(at_b.size() == 1);
  REQUIRE(at_a.size() == 1);
  CHECK(at_b[0].kind == Notification::Kind::kMessage);
  CHECK(at_b[0].bytes == "hello b");
  CHECK(at_b[0].peer == b_to_a);
  CHECK(at_a[0].bytes == "hello a");
  CHECK(at_a[0].peer == *peer);
}

TEST_CASE("A wrong or missing cluster token is refused on both sides",
          "[transfer_engine]") {
  auto server = MakeEngine("server", "right");
  auto address = server->Listen("127.0.0.1:0");
  REQUIRE(address.ok());
  for (const char* token : {"wrong", ""}) {
    INFO("client token \"" << token << "\"");
    auto client = MakeEngine("client", token);
    auto peer = client->Connect(*address);
    CHECK(peer.status().code() == absl::StatusCode::kPermissionDenied);
    CHECK(client->Peers().empty());
    auto added = client->AddPeer(MetadataOf(server.get()));
    CHECK(added.status().code() == absl::StatusCode::kPermissionDenied);
    CHECK(client->Peers().empty());
    CHECK(server->Peers().empty());
  }
  // The right token still connects.
  auto good = MakeEngine("good", "right");
  REQUIRE(good->Connect(*address).ok());
  REQUIRE(server->Peers().size() == 1);
  CHECK(server->Peers()[0].name == "good");
}

TEST_CASE("Malformed metadata is an error, never a crash",
          "[transfer_engine]") {
  auto a = MakeEngine("a");
  auto b = MakeEngine("b");
  absl::StatusOr<AllocatedRegion> first = b->AllocateMemory(4096);
  REQUIRE(first.ok());
  const AllocatedRegion b_region = *first;
  for (int i = 0; i < 2; ++i) REQUIRE(b->AllocateMemory(4096).ok());
  const std::string valid = MetadataOf(b.get());
  REQUIRE(TransferEngine::ValidateMetadata(
              {reinterpret_cast<const uint8_t*>(valid.data()), valid.size()})
              .ok());
  std::mt19937_64 rng(1234);
  auto expect_error = [&](const std::string& blob) {
    auto peer = a->AddPeer(blob);
    REQUIRE(!peer.ok());
    const absl::StatusCode code = peer.status().code();
    REQUIRE((code == absl::StatusCode::kInvalidArgument ||
             code == absl::StatusCode::kFailedPrecondition));
  };
  // Random blobs, half of them with a plausible header.
  for (int i = 0; i < 3000; ++i) {
    std::string blob(rng() % 400, '\0');
    for (char& c : blob) c = static_cast<char>(rng());
    if (i % 2 == 0 && blob.size() >= 6) blob.replace(0, 6, "FKVM\x01\x00", 6);
    expect_error(blob);
  }
  // Every truncation.
  for (size_t n = 0; n < valid.size(); ++n) expect_error(valid.substr(0, n));
  // Random bit flips (the checksum catches them).
  for (int i = 0; i < 3000; ++i) {
    std::string blob = valid;
    blob[rng() % blob.size()] ^= static_cast<char>(1 << (rng() % 8));
    expect_error(blob);
  }
  // Byte mutations with a recomputed checksum (anyone can compute it) reach
  // the field checks. ValidateMetadata (structure only) refuses each with
  // InvalidArgument / FailedPrecondition or accepts it; a mutated header is
  // always refused. AddPeer always refuses: the mac, keyed by the cluster
  // token, no longer matches (PermissionDenied), or the header or checksum
  // is bad (InvalidArgument / FailedPrecondition). Nothing is added.
  auto fnv = [](const std::string& s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (unsigned char c : s) {
      h ^= c;
      h *= 0x100000001b3ull;
    }
    return h;
  };
  int accepted = 0;
  for (int i = 0; i < 5000; ++i) {
    std::string body = valid.substr(0, valid.size() - 8);
    const size_t at = rng() % body.size();
    const char old = body[at];
    body[at] = static_cast<char>(rng());
    if (body[at] == old) body[at] ^= 1;
    const uint64_t h = fnv(body);
    for (int k = 0; k < 8; ++k) body.push_back(static_cast<char>(h >> (8 * k)));
    INFO("mutation " << i << " at byte " << at);
    const absl::Status status = TransferEngine::ValidateMetadata(
        {reinterpret_cast<const uint8_t*>(body.data()), body.size()});
    const absl::StatusOr<PeerId> peer = a->AddPeer(body);
    INFO(status.ToString() << " / " << peer.status().ToString());
    REQUIRE(!peer.ok());
    REQUIRE(!peer.status().message().empty());
    if (status.ok()) {
      REQUIRE(at >= 6);
      REQUIRE(peer.status().code() == absl::StatusCode::kPermissionDenied);
      ++accepted;
    } else {
      REQUIRE((status.code() == absl::StatusCode::kInvalidArgument ||
               status.code() == absl::StatusCode::kFailedPrecondition));
      REQUIRE(!status.message().empty());
      REQUIRE((peer.status().code() == absl::StatusCode::kInvalidArgument ||
               peer.status().code() == absl::StatusCode::kFailedPrecondition ||
               peer.status().code() == absl::StatusCode::kPermissionDenied));
    }
  }
  // Both outcomes occur (mutations of names, ids and mac bytes keep the
  // structure valid; mutations of lengths do not).
  CHECK(accepted > 0);
  CHECK(accepted < 5000);
  REQUIRE(a->Peers().empty());

  // Signed, structurally mutated metadata (as a peer holding the token could
  // send): other instance ids, names, region ids, kinds, bases and lengths.
  // Each is refused with a status or accepted; then it is a peer like any
  // other, and Disconnect removes it cleanly.
  absl::StatusOr<internal::EngineInfo> info = internal::ParseSignedEngineInfo(
      internal::AsBytes(valid), "cluster-secret");
  REQUIRE(info.ok());
  for (int i = 0; i < 60; ++i) {
    internal::EngineInfo mutated = *info;
    switch (rng() % 5) {
      case 0:
        mutated.instance_id = rng();
        break;
      case 1:
        mutated.name = std::string(rng() % 300, static_cast<char>(rng()));
        break;
      case 2:
        mutated.regions[rng() % mutated.regions.size()].id =
            static_cast<uint32_t>(rng() % 4);
        break;
      case 3:
        mutated.regions[rng() % mutated.regions.size()].kind =
            static_cast<uint8_t>(rng() % 3);
        break;
      default: {
        internal::WireRegion& r =
            mutated.regions[rng() % mutated.regions.size()];
        (rng() % 2 == 0 ? r.base : r.length) = rng() >> (rng() % 64);
        break;
      }
    }
    INFO("signed mutation " << i);
    const absl::StatusOr<PeerId> peer =
        a->AddPeer(internal::EncodeEngineInfo(mutated, "cluster-secret"));
    if (!peer.ok()) {
      INFO(peer.status().ToString());
      REQUIRE(!peer.status().message().empty());
      REQUIRE(peer.status().code() != absl::StatusCode::kUnknown);
      continue;
    }
    REQUIRE(a->Disconnect(*peer).ok());
  }

  // The engine keeps serving: the real metadata still connects, and a
  // write through it lands.
  const absl::StatusOr<PeerId> peer = a->AddPeer(valid);
  INFO(peer.status().ToString());
  REQUIRE(peer.ok());
  auto src = a->AllocateMemory(4096);
  REQUIRE(src.ok());
  std::memset(src->data, 0x5c, 4096);
  std::memset(b_region.data, 0, 4096);
  const TransferOp op{src->id, 0, b_region.id, 0, 4096};
  REQUIRE(a->Write(*peer, {&op, 1}).Wait().ok());
  CHECK(static_cast<uint8_t*>(b_region.data)[0] == 0x5c);
  CHECK(static_cast<uint8_t*>(b_region.data)[4095] == 0x5c);
}

TEST_CASE("Disconnect closes the peer on both sides", "[transfer_engine]") {
  PoolPair pair;
  MakePoolPair(4096, &pair);
  const AllocatedRegion* src = &pair.src;
  const AllocatedRegion* dst = &pair.dst;
  REQUIRE(pair.a->Disconnect(pair.a_to_b).ok());
  const TransferOp op{src->id, 0, dst->id, 0, 16};
  CHECK(pair.a->Write(pair.a_to_b, {&op, 1}).status().code() ==
        absl::StatusCode::kUnavailable);
  // b is told once its endpoint closed (UCX reports the remote close, or
  // the heartbeats stop): within the failure timeout and one keepalive.
  std::vector<Notification> notes =
      pair.b->TakeNotifications(2 * flowkv::testing::kPeerFailureTimeout);
  REQUIRE(notes.size() == 1);
  CHECK(notes[0].kind == Notification::Kind::kPeerDisconnected);
  CHECK(!pair.b->Peers()[0].connected);
  // A new connection works.
  auto peer = pair.a->Connect(pair.address);
  REQUIRE(peer.ok());
  CHECK(*peer != pair.a_to_b);
  CHECK(pair.a->Write(*peer, {&op, 1}).Wait().ok());
}

}  // namespace
}  // namespace flowkv
