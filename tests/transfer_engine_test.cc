// TransferEngine over real UCX on loopback: two engines in one process.
// The transports come from UCX_TLS (ctest runs this binary with tcp and with
// shared memory); UCX_NET_DEVICES is pinned to lo.

#include "flowkv/transfer_engine.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <random>
#include <set>
#include <stdlib.h>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "flowkv/kv_layout.h"
#include "flowkv/transfer_plan.h"
#include "lib/transfer/wire_format.h"
#include "tests/engine_pair.h"
#include "tests/transfer_test_util.h"

namespace flowkv {
namespace {

using flowkv::testing::ConnectPair;
using flowkv::testing::FillRandom;
using flowkv::testing::MakeEngine;
using flowkv::testing::MakePoolPair;
using flowkv::testing::Pair;
using flowkv::testing::PoolPair;

// A KV pool: its layout, its memory (one pointer per layout region) and the
// engine region id of each layout region.
struct Pool {
  KvLayout layout;
  std::vector<uint8_t*> bases;
  std::vector<RegionId> ids;
  std::vector<std::vector<uint8_t>> user_memory;
};

Pool MakePool(TransferEngine* engine, const KvLayoutSpec& spec,
              bool engine_allocated) {
  auto layout = KvLayout::Create(spec);
  REQUIRE(layout.ok());
  Pool pool{*layout, {}, {}, {}};
  for (uint32_t r = 0; r < layout->num_regions(); ++r) {
    if (engine_allocated) {
      auto region = engine->AllocateMemory(layout->region_bytes());
      REQUIRE(region.ok());
      std::memset(region->data, 0, region->length);
      pool.bases.push_back(static_cast<uint8_t*>(region->data));
      pool.ids.push_back(region->id);
    } else {
      pool.user_memory.emplace_back(layout->region_bytes(), 0);
      auto id = engine->RegisterMemory(pool.user_memory.back().data(),
                                       layout->region_bytes());
      REQUIRE(id.ok());
      pool.bases.push_back(pool.user_memory.back().data());
      pool.ids.push_back(*id);
    }
  }
  return pool;
}

// A fragmented list of `n` distinct blocks of a pool of `num_blocks`.
BlockList RandomBlocks(uint32_t n, uint32_t num_blocks, std::mt19937_64* rng) {
  std::vector<BlockId> ids(num_blocks);
  for (uint32_t i = 0; i < num_blocks; ++i) ids[i] = i;
  std::shuffle(ids.begin(), ids.end(), *rng);
  ids.resize(n);
  // Keep some runs: sort random stretches.
  for (uint32_t i = 0; i < n; i += 5) {
    std::sort(ids.begin() + i, ids.begin() + std::min(n, i + 5));
  }
  return BlockList::FromIds(ids);
}

// Ops from `src` to `dst` with engine region ids.
std::vector<TransferOp> Plan(const Pool& src, const BlockList& src_blocks,
                             const Pool& dst, const BlockList& dst_blocks) {
  TransferPlanRequest request;
  request.src_layout = &src.layout;
  request.src_blocks = src_blocks;
  request.dst_layout = &dst.layout;
  request.dst_blocks = dst_blocks;
  request.num_tokens =
      src_blocks.num_blocks() * src.layout.geometry().block_tokens;
  auto ops = PlanTransfer(request);
  REQUIRE(ops.ok());
  for (TransferOp& op : *ops) {
    op.src_region = src.ids[op.src_region];
    op.dst_region = dst.ids[op.dst_region];
  }
  return *ops;
}

// True when every tile of the i-th block of `src_blocks` equals the tile of
// the i-th block of `dst_blocks` (same geometry on both sides).
bool BlocksEqual(const Pool& src, const BlockList& src_blocks, const Pool& dst,
                 const BlockList& dst_blocks) {
  const KvGeometry& g = src.layout.geometry();
  for (uint64_t i = 0; i < src_blocks.num_blocks(); ++i) {
    for (uint32_t layer = 0; layer < g.num_layers; ++layer) {
      for (KvPart part : {KvPart::kKey, KvPart::kValue}) {
        const ByteAddress s =
            src.layout.TileAddress(layer, part, src_blocks.BlockAt(i));
        const ByteAddress d =
            dst.layout.TileAddress(layer, part, dst_blocks.BlockAt(i));
        if (std::memcmp(src.bases[s.region] + s.offset,
                        dst.bases[d.region] + d.offset,
                        src.layout.tile_bytes()) != 0) {
          return false;
        }
      }
    }
  }
  return true;
}

KvLayoutSpec SmallSpec(PoolOrder order, RegionSplit split) {
  KvLayoutSpec spec;
  spec.geometry = {.num_layers = 4,
                   .num_blocks = 64,
                   .block_tokens = 4,
                   .kv_heads = 2,
                   .head_dim = 16,
                   .dtype_bytes = 2};
  spec.pool_order = order;
  spec.region_split = split;
  return spec;
}

std::string MetadataOf(TransferEngine* engine) {
  auto metadata = engine->LocalMetadata();
  REQUIRE(metadata.ok());
  return *metadata;
}

TEST_CASE("Write and Read move random KV blocks byte-exact",
          "[transfer_engine]") {
  Pair pair;
  pair.a = MakeEngine("prefill");
  pair.b = MakeEngine("decode");

  struct Case {
    const char* name;
    KvLayoutSpec src;
    KvLayoutSpec dst;
    bool engine_allocated;
  };
  const Case cases[] = {
      {"block-major, engine pools",
       SmallSpec(PoolOrder::kBlockMajor, RegionSplit::kOnePerPool),
       SmallSpec(PoolOrder::kBlockMajor, RegionSplit::kOnePerPool), true},
      {"layer-major per layer, user memory",
       SmallSpec(PoolOrder::kLayerMajor, RegionSplit::kOnePerLayer),
       SmallSpec(PoolOrder::kLayerMajor, RegionSplit::kOnePerLayer), false},
      {"block-major to layer-major",
       SmallSpec(PoolOrder::kBlockMajor, RegionSplit::kOnePerPool),
       SmallSpec(PoolOrder::kLayerMajor, RegionSplit::kOnePerPool), true},
  };
  // Register every pool before connecting: the handshake carries them.
  std::vector<Pool> a_pools, b_pools;
  for (const Case& c : cases) {
    a_pools.push_back(MakePool(pair.a.get(), c.src, c.engine_allocated));
    b_pools.push_back(MakePool(pair.b.get(), c.dst, c.engine_allocated));
  }
  ConnectPair(&pair);

  std::mt19937_64 rng(42);
  uint64_t request_id = 0;
  for (size_t k = 0; k < std::size(cases); ++k) {
    const Case& c = cases[k];
    Pool& a_pool = a_pools[k];
    Pool& b_pool = b_pools[k];
    for (int round = 0; round < 3; ++round) {
      INFO(c.name << " round " << round);
      for (size_t r = 0; r < a_pool.bases.size(); ++r) {
        FillRandom(a_pool.bases[r], a_pool.layout.region_bytes(), rng());
      }
      const uint32_t n = 1 + rng() % 24;
      const BlockList src_blocks = RandomBlocks(n, 64, &rng);
      const BlockList dst_blocks = RandomBlocks(n, 64, &rng);

      // Write a -> b. First a round trip through b's progress thread (which
      // writes b's memory when UCX emulates puts), so ThreadSanitizer sees
      // this thread's earlier reads of it first.
      CHECK(pair.b->DeregisterMemory(~RegionId{0}).code() ==
            absl::StatusCode::kNotFound);
      const std::string note = "request-" + std::to_string(++request_id);
      std::vector<TransferOp> ops =
          Plan(a_pool, src_blocks, b_pool, dst_blocks);
      TransferOptions options;
      options.notification = note;
      TransferHandle write = pair.a->Write(pair.a_to_b, ops, options);
      absl::Status status = write.Wait();
      INFO(status.ToString());
      REQUIRE(status.ok());
      CHECK(write.state() == TransferState::kDone);
      CHECK(write.stats().ops == ops.size());
      // The notification first: over shared memory into user memory, b's
      // progress thread copies the bytes, and only the notification's path
      // shows ThreadSanitizer that the copy happened before this check.
      std::vector<Notification> notes =
          pair.b->TakeNotifications(absl::Seconds(10));
      REQUIRE(notes.size() == 1);
      CHECK(notes[0].bytes == note);
      CHECK(notes[0].peer == pair.b_to_a);
      CHECK(notes[0].kind == Notification::Kind::kTransfer);
      CHECK(BlocksEqual(a_pool, src_blocks, b_pool, dst_blocks));

      // Read back: b pulls a's blocks (a is the source of the ops).
      for (size_t r = 0; r < b_pool.bases.size(); ++r) {
        std::memset(b_pool.bases[r], 0, b_pool.layout.region_bytes());
      }
      for (size_t r = 0; r < a_pool.bases.size(); ++r) {
        FillRandom(a_pool.bases[r], a_pool.layout.region_bytes(), rng());
      }
      // A round trip through a's progress thread (which serves b's reads
      // when UCX emulates them), so ThreadSanitizer sees the fill first.
      CHECK(pair.a->DeregisterMemory(~RegionId{0}).code() ==
            absl::StatusCode::kNotFound);
      TransferOptions read_options;
      read_options.notification = "read-" + note;
      TransferHandle read = pair.b->Read(pair.b_to_a, ops, read_options);
      status = read.Wait();
      INFO(status.ToString());
      REQUIRE(status.ok());
      CHECK(BlocksEqual(a_pool, src_blocks, b_pool, dst_blocks));
      notes = pair.a->TakeNotifications(absl::Seconds(10));
      REQUIRE(notes.size() == 1);
      CHECK(notes[0].bytes == "read-" + note);
    }
  }
  // Each notification arrived exactly once.
  CHECK(pair.a->TakeNotifications(absl::Milliseconds(50)).empty());
  CHECK(pair.b->TakeNotifications().empty());
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

TEST_CASE("Ops outside a region are rejected before anything is posted",
          "[transfer_engine]") {
  PoolPair pair;
  MakePoolPair(64 * 1024, &pair);
  const AllocatedRegion* src = &pair.src;
  const AllocatedRegion* dst = &pair.dst;
  std::memset(src->data, 0xab, src->length);

  const TransferOp good{src->id, 0, dst->id, 0, 1024};
  struct Bad {
    TransferOp op;
    absl::StatusCode code;
  };
  const Bad bad[] = {
      {{src->id, 0, dst->id, 64 * 1024 - 10, 11},
       absl::StatusCode::kOutOfRange},
      {{src->id, 64 * 1024, dst->id, 0, 1}, absl::StatusCode::kOutOfRange},
      {{src->id, ~uint64_t{0} - 2, dst->id, 0, 8},
       absl::StatusCode::kOutOfRange},
      {{src->id, 0, dst->id, ~uint64_t{0}, 2}, absl::StatusCode::kOutOfRange},
      {{src->id + 7, 0, dst->id, 0, 8}, absl::StatusCode::kInvalidArgument},
      {{src->id, 0, dst->id + 7, 0, 8}, absl::StatusCode::kInvalidArgument},
      {{src->id, 0, dst->id, 0, 0}, absl::StatusCode::kInvalidArgument},
  };
  for (const Bad& b : bad) {
    // A good op first: it must not be sent either.
    const TransferOp ops[] = {good, b.op};
    TransferOptions options;
    options.notification = "must not arrive";
    TransferHandle handle = pair.a->Write(pair.a_to_b, ops, options);
    CHECK(handle.state() == TransferState::kDone);
    CHECK(handle.status().code() == b.code);
    TransferHandle read = pair.b->Read(pair.b_to_a, {&b.op, 1});
    CHECK(read.state() == TransferState::kDone);
    CHECK(!read.status().ok());
  }
  CHECK(pair.b->TakeNotifications(absl::Milliseconds(200)).empty());
  const std::vector<uint8_t> zeros(dst->length, 0);
  CHECK(std::memcmp(dst->data, zeros.data(), zeros.size()) == 0);
  // Unknown peer.
  CHECK(pair.a->Write(12345, {&good, 1}).status().code() ==
        absl::StatusCode::kNotFound);
  // The connection is still usable.
  REQUIRE(pair.a->Write(pair.a_to_b, {&good, 1}).Wait().ok());
  CHECK(static_cast<uint8_t*>(dst->data)[1023] == 0xab);
}

TEST_CASE("Notifications arrive once and only after the data",
          "[transfer_engine]") {
  constexpr int kTransfers = 20;
  constexpr size_t kChunk = 256 * 1024;
  struct Seen {
    std::mutex mu;
    const uint8_t* src = nullptr;
    const uint8_t* dst = nullptr;
    std::vector<std::pair<std::string, bool>> notes;  // (bytes, data there)
  } seen;
  Pair pair;
  pair.a = MakeEngine("a");
  pair.b = MakeEngine("b", "cluster-secret", [&seen](Notification n) {
    // Runs on b's progress thread when the notification arrives.
    std::lock_guard<std::mutex> lock(seen.mu);
    const int i = std::stoi(n.bytes);
    const bool there =
        std::memcmp(seen.src + i * kChunk, seen.dst + i * kChunk, kChunk) == 0;
    seen.notes.emplace_back(n.bytes, there);
  });
  auto src = pair.a->AllocateMemory(kTransfers * kChunk);
  auto dst = pair.b->AllocateMemory(kTransfers * kChunk);
  REQUIRE(src.ok());
  REQUIRE(dst.ok());
  FillRandom(static_cast<uint8_t*>(src->data), src->length, 99);
  std::memset(dst->data, 0, dst->length);
  {
    std::lock_guard<std::mutex> lock(seen.mu);
    seen.src = static_cast<const uint8_t*>(src->data);
    seen.dst = static_cast<const uint8_t*>(dst->data);
  }
  ConnectPair(&pair);
  std::vector<TransferHandle> handles;
  for (int i = 0; i < kTransfers; ++i) {
    // Many small ops per transfer.
    std::vector<TransferOp> ops;
    for (size_t off = 0; off < kChunk; off += 4096) {
      ops.push_back(
          {src->id, i * kChunk + off, dst->id, i * kChunk + off, 4096});
    }
    TransferOptions options;
    options.notification = std::to_string(i);
    options.acknowledged = true;
    handles.push_back(pair.a->Write(pair.a_to_b, ops, options));
  }
  // Acknowledged: a handle completes only after b delivered (here: ran the
  // callback for) its notification.
  for (auto& h : handles) REQUIRE(h.Wait().ok());
  std::lock_guard<std::mutex> lock(seen.mu);
  REQUIRE(seen.notes.size() == kTransfers);
  std::vector<bool> got(kTransfers, false);
  for (const auto& [bytes, there] : seen.notes) {
    const int i = std::stoi(bytes);
    CHECK(!got[i]);
    got[i] = true;
    CHECK(there);
  }
  // With a callback nothing is queued.
  CHECK(pair.b->TakeNotifications().empty());
}

TEST_CASE("Four threads write concurrently", "[transfer_engine]") {
  constexpr int kThreads = 4;
  constexpr int kIterations = 25;
  constexpr size_t kSlice = 1 << 20;
  PoolPair pair;
  MakePoolPair(kThreads * kSlice, &pair);
  const AllocatedRegion* src = &pair.src;
  const AllocatedRegion* dst = &pair.dst;
  FillRandom(static_cast<uint8_t*>(src->data), src->length, 5);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      for (int i = 0; i < kIterations; ++i) {
        std::vector<TransferOp> ops;
        const size_t piece = kSlice / 16;
        for (size_t k = 0; k < 16; ++k) {
          const uint64_t off = t * kSlice + k * piece;
          ops.push_back({src->id, off, dst->id, off, piece});
        }
        std::shuffle(ops.begin(), ops.end(), rng);
        TransferOptions options;
        options.notification = std::to_string(t) + ":" + std::to_string(i);
        if (!pair.a->Write(pair.a_to_b, ops, options).Wait().ok()) ++failures;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  CHECK(failures == 0);
  CHECK(std::memcmp(src->data, dst->data, src->length) == 0);
  std::vector<Notification> notes;
  while (notes.size() < kThreads * kIterations) {
    auto more = pair.b->TakeNotifications(absl::Seconds(10));
    if (more.empty()) break;
    notes.insert(notes.end(), more.begin(), more.end());
  }
  REQUIRE(notes.size() == kThreads * kIterations);
  std::set<std::string> unique;
  for (auto& n : notes) unique.insert(n.bytes);
  CHECK(unique.size() == notes.size());
}

TEST_CASE("Deadlines, Cancel and completion callbacks", "[transfer_engine]") {
  // In-flight deadlines and cancellation need a peer that stops making
  // progress: see transfer_engine_process_test (SIGSTOP).
  constexpr size_t kBytes = 4 << 20;
  PoolPair pair;
  MakePoolPair(kBytes, &pair);
  const AllocatedRegion* src = &pair.src;
  const AllocatedRegion* dst = &pair.dst;
  const TransferOp whole{src->id, 0, dst->id, 0, kBytes};

  // A deadline that passes before the transfer is posted.
  TransferOptions options;
  options.timeout = absl::Nanoseconds(1);
  TransferHandle late = pair.a->Write(pair.a_to_b, {&whole, 1}, options);
  CHECK(late.Wait().code() == absl::StatusCode::kDeadlineExceeded);
  // Nothing was posted: the peer stays connected.
  CHECK(pair.a->GetPeer(pair.a_to_b)->connected);

  // The callback runs once, before Wait() returns, with the final status.
  // (Recorded on the progress thread, asserted here after Wait.)
  std::atomic<int> callbacks{0};
  absl::Status seen;
  uint64_t seen_bytes = 0;
  TransferOptions with_callback;
  with_callback.on_complete = [&](const absl::Status& s,
                                  const TransferStats& stats) {
    seen = s;
    seen_bytes = stats.bytes;
    ++callbacks;
  };
  TransferHandle handle =
      pair.a->Write(pair.a_to_b, {&whole, 1}, with_callback);
  REQUIRE(handle.Wait().ok());
  CHECK(callbacks == 1);
  CHECK(seen.ok());
  CHECK(seen_bytes == kBytes);
  const TransferStats stats = handle.stats();
  CHECK(stats.ops == 1);
  CHECK(stats.bytes == kBytes);
  CHECK(stats.post_time <= stats.completion_time);
  // Cancel after completion changes nothing.
  handle.Cancel();
  CHECK(handle.status().ok());
  CHECK(pair.a->GetPeer(pair.a_to_b)->connected);

  // A handle dropped early does not stop the transfer.
  {
    TransferOptions note;
    note.notification = "dropped handle";
    pair.a->Write(pair.a_to_b, {&whole, 1}, note);
  }
  auto notes = pair.b->TakeNotifications(absl::Seconds(10));
  REQUIRE(notes.size() == 1);
  CHECK(notes[0].bytes == "dropped handle");

  // Empty handles.
  TransferHandle empty;
  CHECK(!empty.valid());
  CHECK(empty.state() == TransferState::kDone);
  CHECK(empty.status().code() == absl::StatusCode::kFailedPrecondition);
}

// Debian's UCX has no CUDA transport module (libuct_cuda*): then the engine
// must say it cannot register device memory and point to KvPoolMemory.
TEST_CASE("Without a CUDA-aware UCX, device memory is Unimplemented",
          "[transfer_engine]") {
  const char* env_dir = std::getenv("UCX_MODULE_DIR");
  const std::filesystem::path module_dir =
      env_dir != nullptr ? env_dir : "/usr/lib/x86_64-linux-gnu/ucx";
  bool ucx_has_cuda = false;
  std::error_code error;
  for (const auto& entry :
       std::filesystem::directory_iterator(module_dir, error)) {
    if (entry.path().filename().string().rfind("libuct_cuda", 0) == 0) {
      ucx_has_cuda = true;
    }
  }
  auto engine = MakeEngine("e");
  if (!error && !ucx_has_cuda) CHECK_FALSE(engine->SupportsCudaMemory());
  if (engine->SupportsCudaMemory()) {
    WARN("this UCX supports CUDA memory: nothing to check");
    return;
  }
  std::vector<uint8_t> buffer(4096);
  auto registered = engine->RegisterMemory(buffer.data(), buffer.size(),
                                           MemoryKind::kCudaDevice);
  CHECK(registered.status().code() == absl::StatusCode::kUnimplemented);
  const std::string message(registered.status().message());
  CHECK(message.find("RegisterMemory") != std::string::npos);
  CHECK(message.find("CudaPoolMemory") != std::string::npos);
  CHECK(message.find("flowkv/kv_pool_memory.h") != std::string::npos);
  CHECK(message.find("docs/gpu.md") != std::string::npos);
  auto allocated = engine->AllocateMemory(4096, MemoryKind::kCudaDevice);
  CHECK(allocated.status().code() == absl::StatusCode::kUnimplemented);
  CHECK(allocated.status().message().find("docs/gpu.md") != std::string::npos);
  CHECK(engine->Regions().empty());  // nothing was registered
}

TEST_CASE("Memory registration, regions and errors", "[transfer_engine]") {
  auto engine = MakeEngine("e");
  std::vector<uint8_t> buffer(1 << 16);
  auto user = engine->RegisterMemory(buffer.data(), buffer.size());
  REQUIRE(user.ok());
  CHECK(*user == 0);
  auto pool = engine->AllocateMemory(1 << 20);
  REQUIRE(pool.ok());
  CHECK(pool->id == 1);
  CHECK(pool->data != nullptr);
  std::memset(pool->data, 1, pool->length);  // writable
  std::vector<RegionInfo> regions = engine->Regions();
  REQUIRE(regions.size() == 2);
  CHECK(regions[0].base == reinterpret_cast<uint64_t>(buffer.data()));
  CHECK(regions[1].length == uint64_t{1} << 20);

  CHECK(engine->RegisterMemory(nullptr, 10).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(engine->RegisterMemory(buffer.data(), 0).status().code() ==
        absl::StatusCode::kInvalidArgument);
  if (!engine->SupportsCudaMemory()) {
    auto cuda =
        engine->RegisterMemory(buffer.data(), 4096, MemoryKind::kCudaDevice);
    CHECK(cuda.status().code() == absl::StatusCode::kUnimplemented);
    CHECK(
        engine->AllocateMemory(4096, MemoryKind::kCudaDevice).status().code() ==
        absl::StatusCode::kUnimplemented);
  }
  CHECK(engine->DeregisterMemory(1).ok());
  CHECK(engine->DeregisterMemory(1).code() == absl::StatusCode::kNotFound);
  auto next = engine->AllocateMemory(4096);
  REQUIRE(next.ok());
  CHECK(next->id == 2);  // ids are not reused

  // Addresses and connection errors.
  CHECK(engine->Listen("nonsense").status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(engine->Listen("127.0.0.1:99999").status().code() ==
        absl::StatusCode::kInvalidArgument);
  auto bound = engine->Listen("127.0.0.1:0");
  REQUIRE(bound.ok());
  CHECK(bound->rfind("127.0.0.1:", 0) == 0);
  CHECK(engine->Listen("127.0.0.1:0").status().code() ==
        absl::StatusCode::kFailedPrecondition);
  auto other = MakeEngine("other");
  auto unreachable = other->Connect("127.0.0.1:1");
  CHECK(!unreachable.ok());
  CHECK(other->Peers().empty());

  TransferEngineOptions bad;
  bad.name = std::string(300, 'x');
  CHECK(TransferEngine::Create(bad).status().code() ==
        absl::StatusCode::kInvalidArgument);
  TransferEngineOptions bad_ucx;
  bad_ucx.ucx_config = {{"KEEPALIVE_INTERVAL", "not-a-duration"}};
  CHECK(TransferEngine::Create(bad_ucx).status().code() ==
        absl::StatusCode::kInvalidArgument);
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
