// SPDX-License-Identifier: Apache-2.0
// TransferEngine over real UCX on loopback, two engines in one process:
// moving data (Write, Read and their notifications, KV blocks between two
// layouts, ops checked against regions, concurrent writers, deadlines and
// Cancel). Peers and metadata are in transfer_engine_peers_test.cc, memory
// registration in transfer_engine_memory_test.cc.
// The transports come from UCX_TLS (ctest runs this binary with tcp and with
// shared memory); UCX_NET_DEVICES is pinned to lo.

#include "flowkv/transfer_engine.h"

#include <atomic>
#include <cstring>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "flowkv/kv_layout.h"
#include "flowkv/transfer_plan.h"
#include "tests/support/engine_pair.h"
#include "tests/support/transfer_test_util.h"

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

}  // namespace
}  // namespace flowkv
