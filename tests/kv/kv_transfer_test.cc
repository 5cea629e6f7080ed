// SPDX-License-Identifier: Apache-2.0
// KvTransfer over real UCX on loopback, engines in one process (a
// block-major prefill pool, a vLLM-style layer-major decode pool; see
// tests/support/kv_fixture.h): requests that arrive, by push and by pull,
// whole, per layer, chunked, from several ranks and threads. Failures are
// kv_transfer_failure_test.cc's; pool exchange is kv_pool_exchange_test.cc's.
// Every wait is a loop around Poll with a deadline derived from the options
// the test set.
#include "flowkv/kv_transfer.h"

#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/str_cat.h"
#include "tests/support/kv_fixture.h"
#include "tests/support/kv_test_util.h"
#include "tests/support/transfer_test_util.h"

namespace flowkv {
namespace {

using kv_fixture::Connect;
using kv_fixture::Fixture;
using kv_fixture::kDecodeSpec;
using kv_fixture::kGeometry;
using kv_fixture::kPeerFailureTimeout;
using kv_fixture::kPrefillSpec;
using kv_fixture::kSoon;
using kv_fixture::PeerIdOf;
using kv_fixture::SameKv;
using kv_fixture::Side;
using kv_fixture::WriteNotice;
using testing::FillRandom;
using testing::PollUntil;
using testing::Seen;

TEST_CASE("Send moves a request between different layouts, with its payload",
          "[kv_transfer]") {
  Fixture f;
  const BlockList src({{3, 5}, {20, 2}});
  const BlockList dst({{40, 3}, {10, 4}});
  const uint64_t tokens = 6 * 16 + 5;  // the last block is partial
  TransferHandle h = f.prefill.kv->Send("req-42", f.to_decode,
                                        {.src_blocks = src,
                                         .dst_blocks = dst,
                                         .num_tokens = tokens,
                                         .payload = "aux: first token 17"});
  REQUIRE(h.Wait().ok());
  CHECK(h.stats().ops > 0);
  // The handle completed after the receiver acknowledged the notice: it is
  // in the receiving engine's queue, so one Poll without waiting sees it.
  KvPollResult r = f.decode.kv->Poll();
  REQUIRE(r.finished.size() == 1);
  CHECK(r.finished[0].request_id == "req-42");
  CHECK(r.finished[0].payload == "aux: first token 17");
  CHECK(SameKv(f.prefill, src, f.decode, dst, tokens, 0, kGeometry.num_layers));
  // Reported once.
  CHECK(f.decode.kv->Poll(absl::Milliseconds(20)).finished.empty());
  CHECK(f.decode.kv->Stats().requests_active == 0);
}

TEST_CASE("Layer-wise sends finish the request with the last layer",
          "[kv_transfer]") {
  Fixture f;
  const BlockList src({{0, 4}});
  const BlockList dst({{8, 4}});
  const uint64_t tokens = 4 * 16;
  Seen seen;
  for (uint32_t l = 0; l < kGeometry.num_layers; ++l) {
    TransferHandle h = f.prefill.kv->Send("lw", f.to_decode,
                                          {.src_blocks = src,
                                           .dst_blocks = dst,
                                           .num_tokens = tokens,
                                           .layer_begin = l,
                                           .layer_end = l + 1});
    REQUIRE(h.Wait().ok());
    REQUIRE(PollUntil(*f.decode.kv, seen, kSoon, [&](const Seen& s) {
      return f.decode.kv->LayersArrived("lw") > l || s.Finished("lw") > 0;
    }));
    CHECK(SameKv(f.prefill, src, f.decode, dst, tokens, l, l + 1));
    if (l + 1 < kGeometry.num_layers) {
      CHECK(seen.finished.empty());
      CHECK(f.decode.kv->LayersArrived("lw") == l + 1);
      // Later layers have not been written.
      CHECK_FALSE(SameKv(f.prefill, src, f.decode, dst, tokens, l + 1, l + 2));
    } else {
      CHECK(seen.Finished("lw") == 1);
    }
  }
}

TEST_CASE("Other notifications pass through Poll", "[kv_transfer]") {
  Fixture f;
  REQUIRE(f.prefill.engine->Send(f.to_decode, "hello").Wait().ok());
  REQUIRE(WriteNotice(f.prefill, f.to_decode, "mine").ok());
  Seen seen;
  REQUIRE(PollUntil(*f.decode.kv, seen, kSoon,
                    [](const Seen& s) { return s.other.size() >= 2; }));
  CHECK(seen.other[0].bytes == "hello");
  CHECK(seen.other[1].bytes == "mine");
  CHECK(seen.finished.empty());
  CHECK(seen.failed.empty());
}

TEST_CASE("Fan-in from several ranks finishes exactly once", "[kv_transfer]") {
  const uint32_t ranks = GENERATE(2u, 4u);
  // Each rank is its own prefill process (engine) holding every head; it
  // sends its share of the heads into the one decode pool.
  Side decode("decode", kDecodeSpec);
  auto address = decode.engine->Listen("127.0.0.1:0");
  REQUIRE(address.ok());
  std::memset(decode.data, 0, decode.layout.total_bytes());
  std::vector<std::unique_ptr<Side>> senders;
  std::vector<PeerId> peers;
  for (uint32_t r = 0; r < ranks; ++r) {
    senders.push_back(
        std::make_unique<Side>(absl::StrCat("prefill-", r), kPrefillSpec));
    FillRandom(senders[r]->data, senders[r]->layout.total_bytes(), 100 + r);
    peers.push_back(Connect(*senders[r], decode, *address));
  }
  const BlockList src({{5, 3}});
  const BlockList dst({{30, 2}, {1, 1}});
  const uint64_t tokens = 40;
  const uint32_t heads = kGeometry.kv_heads / ranks;
  auto piece = [&](uint32_t r) {
    return KvPiece{.src_blocks = src,
                   .dst_blocks = dst,
                   .num_tokens = tokens,
                   .src_head_begin = r * heads,
                   .dst_head_begin = r * heads,
                   .num_heads = heads,
                   .sender_rank = r,
                   .num_senders = ranks,
                   .payload = "aux"};
  };
  Seen seen;
  for (uint32_t r = 0; r < ranks; ++r) {
    REQUIRE(senders[r]->kv->Send("fan", peers[r], piece(r)).Wait().ok());
    // Acknowledged: the notice is queued at the decode side.
    seen.Add(decode.kv->Poll());
    if (r + 1 < ranks) {
      CHECK(seen.finished.empty());
      CHECK(decode.kv->LayersArrived("fan") == 0);
    }
  }
  REQUIRE(PollUntil(*decode.kv, seen, kSoon,
                    [](const Seen& s) { return !s.finished.empty(); }));
  CHECK(seen.Finished("fan") == 1);
  CHECK(seen.finished[0].payload == "aux");
  for (uint32_t r = 0; r < ranks; ++r) {
    CHECK(SameKv(*senders[r], src, decode, dst, tokens, 0, kGeometry.num_layers,
                 r * heads, heads));
  }
  // A repeated piece after the finish is refused (the sender's handle says
  // so) and its failure notice ignored: no second finish, no failure.
  REQUIRE(senders[0]->kv->Send("fan", peers[0], piece(0)).Wait().code() ==
          absl::StatusCode::kFailedPrecondition);
  REQUIRE(PollUntil(*decode.kv, seen, kSoon, [&](const Seen&) {
    return decode.kv->Stats().late_notices >= 1;
  }));
  CHECK(seen.Finished("fan") == 1);
  CHECK(seen.failed.empty());
}

TEST_CASE("Chunked prefill sent layer by layer finishes once after the last",
          "[kv_transfer]") {
  // Decode layer-major HND (token-exact plans) or block-major like prefill
  // (whole-block plans: a non-final chunk must not move its partial block).
  const bool same_layout = GENERATE(false, true);
  Fixture f({}, same_layout ? kPrefillSpec : kDecodeSpec);
  const BlockList src({{10, 3}, {2, 4}});
  const BlockList dst({{50, 1}, {20, 6}});
  const uint64_t bounds[] = {0, 40, 83, 101};  // chunks end mid-block
  // The prefill computes each chunk just before sending it: before that its
  // tokens hold other bytes.
  std::vector<uint8_t> computed(
      f.prefill.data, f.prefill.data + f.prefill.layout.total_bytes());
  std::memset(f.prefill.data, 0xee, f.prefill.layout.total_bytes());
  Seen seen;
  for (int c = 0; c < 3; ++c) {
    for (uint64_t t = bounds[c]; t < bounds[c + 1]; ++t)
      for (uint32_t l = 0; l < kGeometry.num_layers; ++l)
        for (KvPart part : {KvPart::kKey, KvPart::kValue})
          for (uint32_t h = 0; h < kGeometry.kv_heads; ++h) {
            const ByteAddress a = f.prefill.layout.ElementAddress(
                l, part, src.BlockAt(t / 16), t % 16, h);
            std::memcpy(f.prefill.data + a.offset, computed.data() + a.offset,
                        f.prefill.layout.head_bytes());
          }
    for (uint32_t l = 0; l < kGeometry.num_layers; ++l) {
      TransferHandle h =
          f.prefill.kv->Send("chunked", f.to_decode,
                             {.src_blocks = src,
                              .dst_blocks = dst,
                              .token_begin = bounds[c],
                              .num_tokens = bounds[c + 1] - bounds[c],
                              .layer_begin = l,
                              .layer_end = l + 1,
                              .final_chunk = c == 2});
      REQUIRE(h.Wait().ok());
      seen.Add(f.decode.kv->Poll());
      const bool last = c == 2 && l + 1 == kGeometry.num_layers;
      if (!last) {
        CHECK(seen.finished.empty());
        CHECK(f.decode.kv->LayersArrived("chunked") == (c == 2 ? l + 1 : 0));
      }
    }
  }
  REQUIRE(PollUntil(*f.decode.kv, seen, kSoon,
                    [](const Seen& s) { return !s.finished.empty(); }));
  CHECK(seen.Finished("chunked") == 1);
  CHECK(seen.failed.empty());
  CHECK(SameKv(f.prefill, src, f.decode, dst, bounds[3], 0,
               kGeometry.num_layers));
  CHECK(f.decode.kv->Poll(absl::Milliseconds(20)).finished.empty());
}

// --- Pull --------------------------------------------------------------------

TEST_CASE("Fetch moves bytes byte-exact and the sender sees the release",
          "[kv_transfer]") {
  Fixture f;
  const PeerId to_prefill = PeerIdOf(f.decode, f.prefill, f.to_decode);
  REQUIRE(
      f.decode.kv->AddPeerPool(to_prefill, f.prefill.layout, {f.prefill.region})
          .ok());
  const BlockList prefill_blocks({{7, 2}, {30, 3}});
  const BlockList decode_blocks({{0, 5}});
  const uint64_t tokens = 4 * 16 + 9;
  // Layer-wise, two pieces: the release comes once, with the last.
  for (auto [lb, le] : {std::pair<uint32_t, uint32_t>{0, 1}, {1, 4}}) {
    TransferHandle h = f.decode.kv->Fetch("pulled", to_prefill,
                                          {.src_blocks = prefill_blocks,
                                           .dst_blocks = decode_blocks,
                                           .num_tokens = tokens,
                                           .layer_begin = lb,
                                           .layer_end = le,
                                           .payload = "meta"});
    REQUIRE(h.Wait().ok());
    CHECK(SameKv(f.prefill, prefill_blocks, f.decode, decode_blocks, tokens, lb,
                 le));
  }
  // The fetching side sees the request finished (its bookkeeping is done
  // before the handle completes) ...
  KvPollResult r = f.decode.kv->TakeResults();
  REQUIRE(r.finished.size() == 1);
  CHECK(r.finished[0].request_id == "pulled");
  CHECK(r.finished[0].payload == "meta");
  // ... and the prefill side its release, once.
  Seen seen;
  REQUIRE(PollUntil(*f.prefill.kv, seen, kSoon,
                    [](const Seen& s) { return s.Released("pulled"); }));
  CHECK(seen.Released("pulled")->status.ok());
  CHECK(seen.Released("pulled")->peer == f.to_decode);
  CHECK(PollUntil(*f.prefill.kv, seen, absl::Milliseconds(50),
                  [](const Seen& s) { return s.released.size() > 1; }) ==
        false);

  // A failed Fetch fails the request on the fetching side and tells the
  // prefill side it may free the blocks.
  TransferHandle bad = f.decode.kv->Fetch(
      "bad-pull", to_prefill,
      {.src_blocks = BlockList({{63, 2}}),  // outside the prefill pool
       .dst_blocks = decode_blocks,
       .num_tokens = 32});
  CHECK(bad.Wait().code() == absl::StatusCode::kOutOfRange);
  r = f.decode.kv->TakeResults();
  REQUIRE(r.failed.size() == 1);
  CHECK(r.failed[0].request_id == "bad-pull");
  CHECK(r.failed[0].status.code() == absl::StatusCode::kOutOfRange);
  REQUIRE(PollUntil(*f.prefill.kv, seen, kSoon,
                    [](const Seen& s) { return s.Released("bad-pull"); }));
  CHECK(seen.Released("bad-pull")->status.code() ==
        absl::StatusCode::kOutOfRange);
}

// --- Threads -----------------------------------------------------------------

TEST_CASE("Concurrent Sends from 8 threads all complete byte-exact",
          "[kv_transfer]") {
  Fixture f;
  constexpr int kThreads = 8;
  constexpr int kPerThread = 4;  // 2 blocks each: 64 blocks on each side
  auto src_of = [](int t, int i) {
    return BlockList({{static_cast<BlockId>((t * kPerThread + i) * 2), 2}});
  };
  auto dst_of = [](int t, int i) {
    // Reversed order on the decode side.
    return BlockList(
        {{static_cast<BlockId>(62 - (t * kPerThread + i) * 2), 2}});
  };
  std::vector<absl::Status> statuses(kThreads * kPerThread);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<TransferHandle> handles;
      for (int i = 0; i < kPerThread; ++i) {
        handles.push_back(f.prefill.kv->Send(
            absl::StrCat("t", t, "-", i), f.to_decode,
            {.src_blocks = src_of(t, i),
             .dst_blocks = dst_of(t, i),
             .num_tokens = static_cast<uint64_t>(2 * 16 - i)}));
      }
      for (int i = 0; i < kPerThread; ++i) {
        statuses[t * kPerThread + i] = handles[i].Wait();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (const absl::Status& s : statuses) CHECK(s.ok());
  Seen seen;
  REQUIRE(PollUntil(*f.decode.kv, seen, kSoon, [](const Seen& s) {
    return s.finished.size() >= kThreads * kPerThread;
  }));
  CHECK(seen.finished.size() == kThreads * kPerThread);
  CHECK(seen.failed.empty());
  for (int t = 0; t < kThreads; ++t)
    for (int i = 0; i < kPerThread; ++i) {
      INFO("thread " << t << " request " << i);
      CHECK(seen.Finished(absl::StrCat("t", t, "-", i)) == 1);
      CHECK(SameKv(f.prefill, src_of(t, i), f.decode, dst_of(t, i), 2 * 16 - i,
                   0, kGeometry.num_layers));
    }
}

}  // namespace
}  // namespace flowkv
