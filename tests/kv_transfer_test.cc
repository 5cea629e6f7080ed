// KvTransfer over real UCX on loopback: engines in one process (a
// block-major prefill pool, a vLLM-style layer-major decode pool), and a
// second process for a sender that dies. Every wait is a loop around Poll
// with a deadline derived from the options the test set.
#include "flowkv/kv_transfer.h"

#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/str_cat.h"
#include "lib/transfer/kv_notice.h"
#include "tests/kv_test_util.h"
#include "tests/transfer_test_util.h"

namespace flowkv {
namespace {

using testing::ChildProcess;
using testing::FillRandom;
using testing::PollUntil;
using testing::Seen;

constexpr KvGeometry kGeometry = {.num_layers = 4,
                                  .num_blocks = 64,
                                  .block_tokens = 16,
                                  .kv_heads = 4,
                                  .head_dim = 32,
                                  .dtype_bytes = 2};
const KvLayoutSpec kPrefillSpec = {.geometry = kGeometry};
const KvLayoutSpec kDecodeSpec = {.geometry = kGeometry,
                                  .pool_order = PoolOrder::kLayerMajor,
                                  .block_order = BlockOrder::kHND};
constexpr absl::Duration kPeerFailureTimeout = testing::kKvPeerFailureTimeout;
constexpr absl::Duration kSoon = testing::kKvSoon;

// One side: engine, pool memory and the KvTransfer over it.
struct Side {
  std::unique_ptr<TransferEngine> engine;
  KvLayout layout;
  uint8_t* data = nullptr;
  RegionId region = 0;
  std::unique_ptr<KvTransfer> kv;

  Side(const std::string& name, const KvLayoutSpec& spec,
       KvTransferOptions options = {})
      : engine(testing::MakeKvEngine(name)), layout(*KvLayout::Create(spec)) {
    auto region = engine->AllocateMemory(layout.total_bytes());
    REQUIRE(region.ok());
    data = static_cast<uint8_t*>(region->data);
    this->region = region->id;
    auto created =
        KvTransfer::Create(engine.get(), layout, {region->id}, options);
    REQUIRE(created.ok());
    kv = *std::move(created);
  }
};

// Writes a bare notification (no data) from `side` to `peer`.
absl::Status WriteNotice(Side& side, PeerId peer, std::string bytes) {
  return testing::WriteNotice(*side.engine, peer, std::move(bytes));
}

// Whether heads [head_begin, +heads) of every token of [0, tokens) in layers
// [lb, le) are the same in both pools.
bool SameKv(const Side& a, const BlockList& a_blocks, const Side& b,
            const BlockList& b_blocks, uint64_t tokens, uint32_t lb,
            uint32_t le, uint32_t head_begin = 0,
            uint32_t heads = kGeometry.kv_heads) {
  const uint64_t n = a.layout.head_bytes();
  for (uint32_t l = lb; l < le; ++l)
    for (KvPart part : {KvPart::kKey, KvPart::kValue})
      for (uint64_t t = 0; t < tokens; ++t)
        for (uint32_t h = head_begin; h < head_begin + heads; ++h) {
          const uint32_t in_block = t % kGeometry.block_tokens;
          const uint64_t index = t / kGeometry.block_tokens;
          const ByteAddress x = a.layout.ElementAddress(
              l, part, a_blocks.BlockAt(index), in_block, h);
          const ByteAddress y = b.layout.ElementAddress(
              l, part, b_blocks.BlockAt(index), in_block, h);
          if (std::memcmp(a.data + x.offset, b.data + y.offset, n) != 0) {
            return false;
          }
        }
  return true;
}

// The id under which `receiver` knows `sender` (which reaches it as
// `sender_peer`): the peer of a message the sender sends.
PeerId PeerIdOf(Side& receiver, Side& sender, PeerId sender_peer) {
  REQUIRE(sender.engine->Send(sender_peer, "whoami").Wait().ok());
  Seen seen;
  REQUIRE(PollUntil(*receiver.kv, seen, kSoon,
                    [](const Seen& s) { return !s.other.empty(); }));
  REQUIRE(seen.other.size() == 1);
  CHECK(seen.other[0].bytes == "whoami");
  return seen.other[0].peer;
}

// Connects `from` to `to` and declares `to`'s pool on `from`.
PeerId Connect(Side& from, Side& to, const std::string& to_address) {
  auto peer = from.engine->Connect(to_address);
  REQUIRE(peer.ok());
  REQUIRE(from.kv->AddPeerPool(*peer, to.layout, {to.region}).ok());
  return *peer;
}

// Prefill (block-major, NHD) connected to decode (layer-major, HND by
// default).
struct Fixture {
  Side prefill;
  Side decode;
  std::string decode_address;
  PeerId to_decode = 0;

  explicit Fixture(KvTransferOptions decode_options = {},
                   const KvLayoutSpec& decode_spec = kDecodeSpec,
                   const KvLayoutSpec& prefill_spec = kPrefillSpec)
      : prefill("prefill", prefill_spec),
        decode("decode", decode_spec, decode_options) {
    auto address = decode.engine->Listen("127.0.0.1:0");
    REQUIRE(address.ok());
    decode_address = *address;
    to_decode = Connect(prefill, decode, decode_address);
    FillRandom(prefill.data, prefill.layout.total_bytes(), 7);
    std::memset(decode.data, 0, decode.layout.total_bytes());
  }
};

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

TEST_CASE("Bad sends fail through the handle and write nothing",
          "[kv_transfer]") {
  Fixture f;
  const BlockList one({{0, 1}});
  struct Case {
    std::string id;
    KvSendRequest request;
    absl::StatusCode code;
  };
  std::vector<Case> cases = {
      // A block outside the destination pool.
      {"out-of-pool",
       {.src_blocks = BlockList({{0, 2}}),
        .dst_blocks = BlockList({{63, 2}}),
        .num_tokens = 32},
       absl::StatusCode::kOutOfRange},
      // Nothing to move (used to report the request finished).
      {"zero-tokens",
       {.src_blocks = one, .dst_blocks = one, .num_tokens = 0},
       absl::StatusCode::kInvalidArgument},
      {"no-blocks", {.num_tokens = 16}, absl::StatusCode::kInvalidArgument},
      // Lists shorter than the tokens.
      {"short-list",
       {.src_blocks = one, .dst_blocks = one, .num_tokens = 17},
       absl::StatusCode::kInvalidArgument},
      {"payload",
       {.src_blocks = one,
        .dst_blocks = one,
        .num_tokens = 16,
        .payload = std::string(kMaxKvPayloadBytes + 1, 'p')},
       absl::StatusCode::kInvalidArgument},
      {"layers",
       {.src_blocks = one,
        .dst_blocks = one,
        .num_tokens = 16,
        .layer_begin = 2,
        .layer_end = 9},
       absl::StatusCode::kInvalidArgument},
  };
  for (const Case& c : cases) {
    INFO(c.id);
    CHECK(f.prefill.kv->Send(c.id, f.to_decode, c.request).Wait().code() ==
          c.code);
  }
  // Arguments no notice can name.
  const KvSendRequest fine = {
      .src_blocks = one, .dst_blocks = one, .num_tokens = 16};
  CHECK(
      f.prefill.kv
          ->Send(std::string(kMaxKvRequestIdBytes + 1, 'i'), f.to_decode, fine)
          .Wait()
          .code() == absl::StatusCode::kInvalidArgument);
  CHECK(f.prefill.kv->Send("", f.to_decode, fine).Wait().code() ==
        absl::StatusCode::kInvalidArgument);
  KvSendRequest bad_rank = fine;
  bad_rank.sender_rank = 2;
  bad_rank.num_senders = 2;
  CHECK(f.prefill.kv->Send("rank", f.to_decode, bad_rank).Wait().code() ==
        absl::StatusCode::kInvalidArgument);
  // No pool declared for this peer.
  CHECK(f.prefill.kv->Send("no-pool", f.to_decode + 1000, fine).Wait().code() ==
        absl::StatusCode::kFailedPrecondition);

  // Each refused piece with a nameable request reached the receiver as a
  // failure with the sender's code; nothing finished, nothing was written.
  Seen seen;
  CHECK(PollUntil(*f.decode.kv, seen, kSoon, [&](const Seen& s) {
    return s.failed.size() >= cases.size();
  }));
  CHECK(seen.finished.empty());
  for (const Case& c : cases) {
    INFO(c.id);
    const KvFailed* failed = seen.Failed(c.id);
    REQUIRE(failed != nullptr);
    CHECK(failed->status.code() == c.code);
    CHECK_THAT(std::string(failed->status.message()),
               Catch::Contains("sender rank 0"));
  }
  for (uint64_t i = 0; i < f.decode.layout.total_bytes(); ++i) {
    REQUIRE(f.decode.data[i] == 0);
  }
  // Region lists and options that do not fit.
  CHECK(KvTransfer::Create(f.prefill.engine.get(), f.prefill.layout, {})
            .status()
            .code() == absl::StatusCode::kInvalidArgument);
  CHECK(KvTransfer::Create(f.prefill.engine.get(), f.prefill.layout, {99})
            .status()
            .code() == absl::StatusCode::kNotFound);
  CHECK(KvTransfer::Create(f.prefill.engine.get(), f.prefill.layout,
                           {f.prefill.region},
                           {.incomplete_request_timeout = absl::ZeroDuration()})
            .status()
            .code() == absl::StatusCode::kInvalidArgument);
  CHECK(f.prefill.kv->AddPeerPool(f.to_decode, f.decode.layout, {5}).code() ==
        absl::StatusCode::kNotFound);
  CHECK(f.decode.kv->Expect("", absl::InfiniteFuture()).code() ==
        absl::StatusCode::kInvalidArgument);
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
    return KvSendRequest{.src_blocks = src,
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
  // A repeated piece after the finish is ignored: no second finish, no
  // failure.
  REQUIRE(senders[0]->kv->Send("fan", peers[0], piece(0)).Wait().ok());
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

TEST_CASE("A Send past its deadline reaches the receiver as a failure",
          "[kv_transfer]") {
  Fixture f;
  const BlockList blocks({{0, 2}});
  const KvSendRequest layer0 = {.src_blocks = blocks,
                                .dst_blocks = blocks,
                                .num_tokens = 32,
                                .layer_begin = 0,
                                .layer_end = 1};
  REQUIRE(f.prefill.kv->Send("late", f.to_decode, layer0).Wait().ok());
  KvSendRequest layer1 = layer0;
  layer1.layer_begin = 1;
  layer1.layer_end = 2;
  layer1.timeout = absl::Nanoseconds(1);
  CHECK(f.prefill.kv->Send("late", f.to_decode, layer1).Wait().code() ==
        absl::StatusCode::kDeadlineExceeded);
  Seen seen;
  REQUIRE(PollUntil(*f.decode.kv, seen, kSoon + 3 * kPeerFailureTimeout,
                    [](const Seen& s) { return s.Failed("late"); }));
  // The failure notice, or, when the deadline closed the endpoint first,
  // the sender's disconnection.
  const absl::StatusCode code = seen.Failed("late")->status.code();
  CHECK((code == absl::StatusCode::kDeadlineExceeded ||
         code == absl::StatusCode::kUnavailable));
  CHECK(seen.finished.empty());
}

TEST_CASE("A cancelled Send reaches the receiver as a failure",
          "[kv_transfer]") {
  // Pools of 64 MiB, so that the transfer is still running when Cancel()
  // reaches the engine.
  KvGeometry big = kGeometry;
  big.kv_heads = 8;
  big.head_dim = 256;
  Fixture f({}, {.geometry = big}, {.geometry = big});
  const BlockList blocks({{0, 32}});
  KvSendRequest piece = {.src_blocks = blocks,
                         .dst_blocks = BlockList({{32, 32}}),
                         .num_tokens = 32 * 16,
                         .layer_begin = 0,
                         .layer_end = 1};
  REQUIRE(f.prefill.kv->Send("cancel", f.to_decode, piece).Wait().ok());
  piece.layer_begin = 1;
  piece.layer_end = kGeometry.num_layers;
  TransferHandle h = f.prefill.kv->Send("cancel", f.to_decode, piece);
  h.Cancel();
  const absl::Status status = h.Wait();
  Seen seen;
  if (status.ok()) {
    // The transfer won the race with Cancel(): it finished normally.
    REQUIRE(PollUntil(*f.decode.kv, seen, kSoon,
                      [](const Seen& s) { return s.Finished("cancel") > 0; }));
    WARN("the transfer finished before Cancel() took effect");
    return;
  }
  CHECK(status.code() == absl::StatusCode::kCancelled);
  REQUIRE(PollUntil(*f.decode.kv, seen, kSoon + 3 * kPeerFailureTimeout,
                    [](const Seen& s) {
                      return s.Failed("cancel") || s.Finished("cancel");
                    }));
  if (seen.Finished("cancel") > 0) {
    // Cancel() struck after the notice was delivered, while its
    // acknowledgement was on the way back: the receiver has every piece, and
    // the late failure notice is ignored.
    REQUIRE(PollUntil(*f.decode.kv, seen, kSoon, [&](const Seen&) {
      return f.decode.kv->Stats().late_notices >= 1;
    }));
    CHECK(seen.failed.empty());
    WARN("Cancel() took effect after the notice was delivered");
    return;
  }
  const absl::StatusCode code = seen.Failed("cancel")->status.code();
  CHECK((code == absl::StatusCode::kCancelled ||
         code == absl::StatusCode::kUnavailable));
  CHECK(seen.finished.empty());
}

// --- A sender in another process that dies --------------------------------

// The child side of the test below: connects to FLOWKV_KV_TEST_DECODE,
// sends layer 0 of request "dying", reports "sent" on fd 3 and waits to be
// killed. Hidden: runs only when started by name.
TEST_CASE("kv peer child", "[.kv_peer_child]") {
  const char* address = std::getenv("FLOWKV_KV_TEST_DECODE");
  if (address == nullptr) return;
  auto fail = [](const std::string& what) {
    std::fprintf(stderr, "kv peer child: %s\n", what.c_str());
    _exit(1);
  };
  auto engine =
      TransferEngine::Create(testing::KvEngineOptions("dying-prefill"));
  if (!engine.ok()) fail(engine.status().ToString());
  const KvLayout layout = *KvLayout::Create(kPrefillSpec);
  const KvLayout decode_layout = *KvLayout::Create(kDecodeSpec);
  auto region = (*engine)->AllocateMemory(layout.total_bytes());
  if (!region.ok()) fail(region.status().ToString());
  auto kv = KvTransfer::Create(engine->get(), layout, {region->id});
  auto peer = (*engine)->Connect(address);
  if (!kv.ok() || !peer.ok()) fail(peer.status().ToString());
  const RegionId decode_region = (*engine)->GetPeer(*peer)->regions.at(0).id;
  if (!(*kv)->AddPeerPool(*peer, decode_layout, {decode_region}).ok()) {
    fail("AddPeerPool");
  }
  const absl::Status sent = (*kv)
                                ->Send("dying", *peer,
                                       {.src_blocks = BlockList({{0, 2}}),
                                        .dst_blocks = BlockList({{0, 2}}),
                                        .num_tokens = 32,
                                        .layer_begin = 0,
                                        .layer_end = 1})
                                .Wait();
  if (!sent.ok()) fail(sent.ToString());
  if (!testing::WriteParentLine("sent")) fail("write");
  testing::WaitForParentThenExit();
}

TEST_CASE("A sender that dies fails its unfinished incoming requests",
          "[kv_transfer]") {
  Side decode("decode", kDecodeSpec);
  auto address = decode.engine->Listen("127.0.0.1:0");
  REQUIRE(address.ok());
  ChildProcess child("kv peer child", {"FLOWKV_KV_TEST_DECODE=" + *address});
  REQUIRE(child.ReadLine(kSoon + kSoon) == "sent");
  // Its first piece arrived (acknowledged before "sent").
  Seen seen;
  REQUIRE(PollUntil(*decode.kv, seen, kSoon, [&](const Seen&) {
    return decode.kv->Stats().requests_active == 1;
  }));
  CHECK(seen.failed.empty());
  child.Kill();
  const absl::Time killed = absl::Now();
  REQUIRE(PollUntil(*decode.kv, seen, 3 * kPeerFailureTimeout + kSoon,
                    [](const Seen& s) { return s.Failed("dying"); }));
  CHECK(seen.Failed("dying")->status.code() == absl::StatusCode::kUnavailable);
  CHECK(absl::Now() - killed < 3 * kPeerFailureTimeout + kSoon);
  CHECK(seen.finished.empty());
  // The disconnection itself is passed on too.
  CHECK(std::any_of(seen.other.begin(), seen.other.end(),
                    [](const Notification& n) {
                      return n.kind == Notification::Kind::kPeerDisconnected;
                    }));
  CHECK(decode.kv->Stats().requests_active == 0);
}

// --- Receiver-side deadlines, Forget, malformed notices -------------------

TEST_CASE("Expect fails a request that is not finished by its deadline",
          "[kv_transfer]") {
  Fixture f;
  const absl::Time deadline = absl::Now() + absl::Milliseconds(300);
  REQUIRE(f.decode.kv->Expect("expected", deadline).ok());
  REQUIRE(f.decode.kv->Expect("in-time", deadline + absl::Seconds(60)).ok());
  REQUIRE(f.prefill.kv
              ->Send("in-time", f.to_decode,
                     {.src_blocks = BlockList({{0, 1}}),
                      .dst_blocks = BlockList({{0, 1}}),
                      .num_tokens = 16})
              .Wait()
              .ok());
  Seen seen;
  REQUIRE(PollUntil(*f.decode.kv, seen, absl::Milliseconds(300) + kSoon,
                    [](const Seen& s) { return s.Failed("expected"); }));
  CHECK(absl::Now() >= deadline);
  CHECK(seen.Failed("expected")->status.code() ==
        absl::StatusCode::kDeadlineExceeded);
  CHECK(seen.Finished("in-time") == 1);
  CHECK(seen.Failed("in-time") == nullptr);
}

TEST_CASE("A request whose last piece never comes fails after the timeout",
          "[kv_transfer]") {
  const absl::Duration timeout = absl::Milliseconds(300);
  Fixture f({.incomplete_request_timeout = timeout});
  REQUIRE(f.prefill.kv
              ->Send("stalled", f.to_decode,
                     {.src_blocks = BlockList({{0, 1}}),
                      .dst_blocks = BlockList({{0, 1}}),
                      .num_tokens = 16,
                      .layer_begin = 0,
                      .layer_end = 1})
              .Wait()
              .ok());
  const absl::Time sent = absl::Now();
  Seen seen;
  REQUIRE(PollUntil(*f.decode.kv, seen, timeout + kSoon,
                    [](const Seen& s) { return s.Failed("stalled"); }));
  CHECK(absl::Now() - sent >= timeout);
  CHECK(seen.Failed("stalled")->status.code() ==
        absl::StatusCode::kDeadlineExceeded);
  CHECK(f.decode.kv->Stats().requests_active == 0);
}

TEST_CASE("Forget drops a request and its late notices", "[kv_transfer]") {
  Fixture f;
  const BlockList blocks({{4, 2}});
  auto layer = [&](uint32_t l) {
    return KvSendRequest{.src_blocks = blocks,
                         .dst_blocks = blocks,
                         .num_tokens = 32,
                         .layer_begin = l,
                         .layer_end = l + 1};
  };
  REQUIRE(f.prefill.kv->Send("gone", f.to_decode, layer(0)).Wait().ok());
  Seen seen;
  REQUIRE(PollUntil(*f.decode.kv, seen, kSoon, [&](const Seen&) {
    return f.decode.kv->Stats().requests_active == 1;
  }));
  f.decode.kv->Forget("gone");
  CHECK(f.decode.kv->Stats().requests_active == 0);
  for (uint32_t l = 1; l < kGeometry.num_layers; ++l) {
    REQUIRE(f.prefill.kv->Send("gone", f.to_decode, layer(l)).Wait().ok());
  }
  REQUIRE(PollUntil(*f.decode.kv, seen, kSoon, [&](const Seen&) {
    return f.decode.kv->Stats().late_notices >= kGeometry.num_layers - 1;
  }));
  CHECK(seen.finished.empty());
  CHECK(seen.failed.empty());
  CHECK(f.decode.kv->Stats().requests_active == 0);

  // A finished request not yet polled: Forget drops its result.
  REQUIRE(
      f.prefill.kv
          ->Send("unwanted", f.to_decode,
                 {.src_blocks = blocks, .dst_blocks = blocks, .num_tokens = 32})
          .Wait()
          .ok());
  const absl::Time deadline = absl::Now() + kSoon;
  while (f.decode.kv->Stats().results_pending == 0 && absl::Now() < deadline) {
    for (const Notification& n :
         f.decode.engine->TakeNotifications(absl::Milliseconds(10))) {
      f.decode.kv->HandleNotification(n);
    }
  }
  REQUIRE(f.decode.kv->Stats().results_pending == 1);
  f.decode.kv->Forget("unwanted");
  KvPollResult r = f.decode.kv->TakeResults();
  CHECK(r.finished.empty());
  CHECK(r.failed.empty());

  // Expect makes a forgotten id usable again.
  REQUIRE(f.decode.kv->Expect("gone", absl::Now() + kSoon).ok());
  REQUIRE(
      f.prefill.kv
          ->Send("gone", f.to_decode,
                 {.src_blocks = blocks, .dst_blocks = blocks, .num_tokens = 32})
          .Wait()
          .ok());
  REQUIRE(PollUntil(*f.decode.kv, seen, kSoon,
                    [](const Seen& s) { return s.Finished("gone") > 0; }));
}

TEST_CASE("Malformed notices are counted and ignored", "[kv_transfer]") {
  Fixture f;
  internal::KvNotice valid;
  valid.kind = internal::KvNoticeKind::kData;
  valid.request_id = "m";
  valid.layer_begin = 0;
  valid.layer_end = 1;
  valid.token_begin = 0;
  valid.token_end = 16;
  const std::string good = internal::EncodeKvNotice(valid);
  std::string bad_version = good;
  bad_version[4] = 9;
  std::string bad_kind = good;
  bad_kind[6] = 0;
  std::string huge_id = good;
  huge_id[10] = 0x7f;  // id length 0x7f000001
  std::mt19937_64 rng(3);
  std::string noise = "FKVN";
  for (int i = 0; i < 40; ++i) noise.push_back(static_cast<char>(rng()));
  const std::vector<std::string> malformed = {
      "FKVN",        good.substr(0, good.size() - 1),
      good + "tail", bad_version,
      bad_kind,      huge_id,
      noise};
  for (const std::string& bytes : malformed) {
    REQUIRE(WriteNotice(f.prefill, f.to_decode, bytes).ok());
  }
  // Still working afterwards, and foreign notifications still pass.
  REQUIRE(WriteNotice(f.prefill, f.to_decode, "FKV").ok());
  REQUIRE(f.prefill.kv
              ->Send("after", f.to_decode,
                     {.src_blocks = BlockList({{0, 1}}),
                      .dst_blocks = BlockList({{0, 1}}),
                      .num_tokens = 16})
              .Wait()
              .ok());
  Seen seen;
  REQUIRE(PollUntil(*f.decode.kv, seen, kSoon, [&](const Seen& s) {
    return s.Finished("after") > 0 && !s.other.empty() &&
           f.decode.kv->Stats().malformed_notices >= malformed.size();
  }));
  CHECK(f.decode.kv->Stats().malformed_notices == malformed.size());
  CHECK(seen.other.size() == 1);
  CHECK(seen.other[0].bytes == "FKV");
  CHECK(seen.failed.empty());
  CHECK(seen.Finished("m") == 0);
}

// --- Pull
// ---------------------------------------------------------------------

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
