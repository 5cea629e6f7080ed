// SPDX-License-Identifier: Apache-2.0
// Peers agree on pools before any byte moves: KvTransfer::AnnouncePool,
// the descriptors it sends and answers, PeerPool and WaitForPeerPool, over
// real UCX on loopback. Two processes (this binary started again as "kv
// pool child") with different layouts, a refused geometry mismatch between
// processes, mutated descriptors checked against a model, AddPeerPool's
// precedence and a disconnect. Every wait is a loop around Poll (or
// WaitForPeerPool) with a deadline derived from the options the test set.
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "flowkv/kv_layout.h"
#include "flowkv/kv_transfer.h"
#include "lib/kv/kv_notice.h"
#include "tests/support/kv_test_util.h"
#include "tests/support/transfer_test_util.h"

namespace flowkv {
namespace {

using testing::ChildProcess;
using testing::FillRandom;
using testing::PollUntil;
using testing::Seen;

constexpr absl::Duration kSoon = testing::kKvSoon;
constexpr absl::Duration kPeerFailureTimeout = testing::kKvPeerFailureTimeout;
constexpr KvGeometry kGeometry = {.num_layers = 4,
                                  .num_blocks = 64,
                                  .block_tokens = 16,
                                  .kv_heads = 4,
                                  .head_dim = 32,
                                  .dtype_bytes = 2};
// The prefill pool's contents: region r filled from seed kSeed + r.
constexpr uint64_t kSeed = 1234;
// The request the child sends (6 whole blocks and a partial one).
const BlockList kSrc({{3, 5}, {20, 2}});
const BlockList kDst({{40, 3}, {10, 4}});
constexpr uint64_t kTokens = 6 * 16 + 5;

// Decode: vLLM's FlashInfer cache, one region per layer. Prefill: FlowKV's
// block-major pool, one region.
KvLayout DecodeLayout() { return *KvLayout::VllmFlashInfer(kGeometry); }
KvLayout PrefillLayout(const KvGeometry& geometry = kGeometry) {
  return *KvLayout::FlowKvBlockMajor(geometry);
}

// A pool's bytes as its layout places them.
struct PoolView {
  KvLayout layout;
  std::vector<uint8_t*> data;  // per layout region

  const uint8_t* At(ByteAddress a) const { return data[a.region] + a.offset; }
  void Fill(uint64_t seed) {
    for (uint32_t r = 0; r < layout.num_regions(); ++r) {
      FillRandom(data[r], layout.region_bytes(r), seed + r);
    }
  }
  void Set(uint8_t byte) {
    for (uint32_t r = 0; r < layout.num_regions(); ++r) {
      std::memset(data[r], byte, layout.region_bytes(r));
    }
  }
  bool All(uint8_t byte) const {
    for (uint32_t r = 0; r < layout.num_regions(); ++r) {
      for (uint64_t i = 0; i < layout.region_bytes(r); ++i) {
        if (data[r][i] != byte) return false;
      }
    }
    return true;
  }
};

// Whether every head vector of tokens [0, tokens) is the same in both pools.
bool SameKv(const PoolView& a, const BlockList& a_blocks, const PoolView& b,
            const BlockList& b_blocks, uint64_t tokens) {
  const KvGeometry& g = a.layout.geometry();
  for (uint32_t l = 0; l < g.num_layers; ++l)
    for (KvPart part : {KvPart::kKey, KvPart::kValue})
      for (uint64_t t = 0; t < tokens; ++t)
        for (uint32_t h = 0; h < g.kv_heads; ++h) {
          const uint32_t in_block = t % g.block_tokens;
          const uint64_t index = t / g.block_tokens;
          const ByteAddress x = a.layout.ElementAddress(
              l, part, a_blocks.BlockAt(index), in_block, h);
          const ByteAddress y = b.layout.ElementAddress(
              l, part, b_blocks.BlockAt(index), in_block, h);
          if (std::memcmp(a.At(x), b.At(y), a.layout.head_bytes()) != 0) {
            return false;
          }
        }
  return true;
}

// KvTransfer's log, kept for the main thread to look at.
class LogCapture {
 public:
  std::function<void(LogSeverity, std::string_view)> Hook() {
    return [this](LogSeverity, std::string_view line) {
      std::lock_guard<std::mutex> lock(mu_);
      lines_.emplace_back(line);
    };
  }
  int Count(const std::string& part) const {
    std::lock_guard<std::mutex> lock(mu_);
    int n = 0;
    for (const std::string& line : lines_) {
      n += line.find(part) != std::string::npos ? 1 : 0;
    }
    return n;
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::string> lines_;
};

// One side: an engine, one engine region per layout region (ids in layout
// order) and the KvTransfer over them.
struct Pool {
  std::unique_ptr<TransferEngine> engine;
  PoolView view;
  std::vector<RegionId> regions;
  std::unique_ptr<KvTransfer> kv;

  static absl::StatusOr<std::unique_ptr<Pool>> Create(
      const std::string& name, const KvLayout& layout,
      KvTransferOptions options = {}) {
    setenv("UCX_NET_DEVICES", "lo", 1);
    auto engine = TransferEngine::Create(testing::KvEngineOptions(name));
    if (!engine.ok()) return engine.status();
    auto pool = std::unique_ptr<Pool>(
        new Pool{*std::move(engine), PoolView{layout, {}}, {}, nullptr});
    for (uint32_t r = 0; r < layout.num_regions(); ++r) {
      auto region = pool->engine->AllocateMemory(layout.region_bytes(r));
      if (!region.ok()) return region.status();
      pool->regions.push_back(region->id);
      pool->view.data.push_back(static_cast<uint8_t*>(region->data));
    }
    auto kv = KvTransfer::Create(pool->engine.get(), layout, pool->regions,
                                 std::move(options));
    if (!kv.ok()) return kv.status();
    pool->kv = *std::move(kv);
    return pool;
  }
};

std::unique_ptr<Pool> MakePool(const std::string& name, const KvLayout& layout,
                               KvTransferOptions options = {}) {
  auto pool = Pool::Create(name, layout, std::move(options));
  REQUIRE(pool.ok());
  return *std::move(pool);
}

// The prefill pool's contents as the child fills them, built here.
PoolView ExpectedPrefill(std::vector<std::vector<uint8_t>>* storage) {
  PoolView view{PrefillLayout(), {}};
  for (uint32_t r = 0; r < view.layout.num_regions(); ++r) {
    storage->emplace_back(view.layout.region_bytes(r));
    view.data.push_back(storage->back().data());
  }
  view.Fill(kSeed);
  return view;
}

// The peer id under which `kv` knows the sender of the message "hello".
PeerId HelloPeer(KvTransfer& kv, Seen& seen) {
  REQUIRE(PollUntil(kv, seen, kSoon, [](const Seen& s) {
    return s.Other(Notification::Kind::kMessage, "hello");
  }));
  for (const Notification& n : seen.other) {
    if (n.bytes == "hello") return n.peer;
  }
  return 0;
}

// --- Two processes ----------------------------------------------------------

// The child side of the process tests: a prefill pool (block-major; with
// FLOWKV_KV_POOL_MODE "head_dim" or "num_layers" a geometry the parent
// cannot exchange KV with) connects to FLOWKV_KV_POOL_ADDRESS, says
// "hello", waits for the parent's descriptor, sends kSrc -> kDst and
// reports "waited=<code> sent=<code> <message>" on fd 3. No AddPeerPool.
// Hidden: runs only when started by name.
TEST_CASE("kv pool child", "[.kv_pool_child]") {
  const char* address = std::getenv("FLOWKV_KV_POOL_ADDRESS");
  const char* mode = std::getenv("FLOWKV_KV_POOL_MODE");
  if (address == nullptr || mode == nullptr) return;
  auto fail = [](const absl::Status& status) {
    testing::WriteParentLine(absl::StrCat("error ", status.ToString()));
    _exit(1);
  };
  KvGeometry geometry = kGeometry;
  if (std::string(mode) == "head_dim") geometry.head_dim = 64;
  if (std::string(mode) == "num_layers") geometry.num_layers = 3;
  auto pool = Pool::Create("pool-child", PrefillLayout(geometry));
  if (!pool.ok()) fail(pool.status());
  (*pool)->view.Fill(kSeed);
  TransferEngine& engine = *(*pool)->engine;
  auto peer = engine.Connect(address);
  if (!peer.ok()) fail(peer.status());
  if (absl::Status s = engine.Send(*peer, "hello").Wait(); !s.ok()) fail(s);
  const absl::Status waited = (*pool)->kv->WaitForPeerPool(*peer, kSoon);
  const absl::Status sent =
      (*pool)
          ->kv
          ->Send(
              "pool-req", *peer,
              {.src_blocks = kSrc, .dst_blocks = kDst, .num_tokens = kTokens})
          .Wait();
  std::string message(sent.message());
  std::replace(message.begin(), message.end(), '\n', ' ');
  testing::WriteParentLine(absl::StrCat(
      "waited=", absl::StatusCodeToString(waited.code()),
      " sent=", absl::StatusCodeToString(sent.code()), " ", message));
  testing::WaitForParentThenExit();
}

TEST_CASE(
    "One AnnouncePool sets up both directions between processes with "
    "different layouts",
    "[kv_transfer]") {
  auto decode = MakePool("decode", DecodeLayout());
  decode->view.Set(0);
  auto address = decode->engine->Listen("127.0.0.1:0");
  REQUIRE(address.ok());
  ChildProcess child("kv pool child", {"FLOWKV_KV_POOL_ADDRESS=" + *address,
                                       "FLOWKV_KV_POOL_MODE=match"});
  Seen seen;
  const PeerId prefill = HelloPeer(*decode->kv, seen);
  CHECK(decode->kv->PeerPool(prefill).status().code() ==
        absl::StatusCode::kNotFound);

  // The decode side announces; nobody calls AddPeerPool.
  REQUIRE(decode->kv->AnnouncePool(prefill).ok());
  REQUIRE(PollUntil(*decode->kv, seen, kSoon, [](const Seen& s) {
    return s.Finished("pool-req") > 0 || s.Failed("pool-req");
  }));
  CHECK(child.ReadLine(kSoon) == "waited=OK sent=OK ");
  REQUIRE(seen.Finished("pool-req") == 1);
  std::vector<std::vector<uint8_t>> storage;
  const PoolView expected = ExpectedPrefill(&storage);
  CHECK(SameKv(expected, kSrc, decode->view, kDst, kTokens));

  // The child answered with its own descriptor: this side knows the
  // prefill pool too, and pulls from it.
  REQUIRE(PollUntil(*decode->kv, seen, kSoon, [&](const Seen&) {
    return decode->kv->PeerPool(prefill).ok();
  }));
  CHECK(*decode->kv->PeerPool(prefill) == PrefillLayout());
  const BlockList fetched({{50, 7}});
  TransferHandle h = decode->kv->Fetch(
      "pulled", prefill,
      {.src_blocks = kSrc, .dst_blocks = fetched, .num_tokens = kTokens});
  REQUIRE(h.Wait().ok());
  CHECK(SameKv(expected, kSrc, decode->view, fetched, kTokens));
  CHECK(decode->kv->Stats().pools_refused == 0);
}

TEST_CASE(
    "A geometry mismatch between processes is refused on both sides and "
    "moves no byte",
    "[kv_transfer]") {
  const std::string mode = GENERATE("head_dim", "num_layers");
  LogCapture log;
  auto decode = MakePool("decode", DecodeLayout(), {.log = log.Hook()});
  decode->view.Set(0xab);  // the sentinel
  auto address = decode->engine->Listen("127.0.0.1:0");
  REQUIRE(address.ok());
  ChildProcess child("kv pool child", {"FLOWKV_KV_POOL_ADDRESS=" + *address,
                                       "FLOWKV_KV_POOL_MODE=" + mode});
  Seen seen;
  const PeerId prefill = HelloPeer(*decode->kv, seen);
  REQUIRE(decode->kv->AnnouncePool(prefill).ok());

  // The prefill side refused the decode pool: its wait and its Send fail
  // with InvalidArgument naming the field.
  const std::vector<std::string> report =
      absl::StrSplit(child.ReadLine(kSoon + kSoon), absl::MaxSplits(' ', 2));
  REQUIRE(report.size() == 3);
  CHECK(report[0] == "waited=INVALID_ARGUMENT");
  CHECK(report[1] == "sent=INVALID_ARGUMENT");
  CHECK_THAT(report[2], Catch::Contains(mode + " differs"));
  CHECK_THAT(report[2], Catch::Contains("KvTransfer::Send"));

  // Its answer tells this side of the mismatch for the other direction,
  // and its refused Send reached this side as a failed request.
  REQUIRE(PollUntil(*decode->kv, seen, kSoon, [&](const Seen& s) {
    return decode->kv->PeerPool(prefill).status().code() !=
               absl::StatusCode::kNotFound &&
           s.Failed("pool-req") != nullptr;
  }));
  const absl::Status known = decode->kv->PeerPool(prefill).status();
  CHECK(known.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(known.message()), Catch::Contains(mode + " differs"));
  CHECK(seen.Failed("pool-req")->status.code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(seen.finished.empty());
  CHECK(decode->view.All(0xab));  // nothing was written

  // This side's Send and Fetch fail at once with the same error.
  const KvPiece request = {
      .src_blocks = kDst, .dst_blocks = kSrc, .num_tokens = kTokens};
  TransferHandle sent = decode->kv->Send("back", prefill, request);
  CHECK(sent.Wait().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(sent.Wait().message()),
             Catch::Contains(mode + " differs"));
  CHECK(sent.stats().ops == 0);
  CHECK(decode->kv->Fetch("pull", prefill, request).Wait().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(decode->view.All(0xab));
  CHECK(decode->kv->Stats().pools_refused == 1);
  CHECK(log.Count("Send and Fetch to it fail") == 1);
}

// --- One process, two engines -----------------------------------------------

// A pool descriptor as KvTransfer sends it.
std::string Descriptor(const KvLayout& layout,
                       const std::vector<RegionId>& regions) {
  internal::KvNotice notice;
  notice.kind = internal::KvNoticeKind::kPool;
  notice.layout = layout.Serialize();
  notice.regions = regions;
  return internal::EncodeKvNotice(notice);
}

// `bytes` with a random defect: flipped bytes, a truncation, an inserted
// byte, or a u32 overwritten with an edge value.
std::string Mutate(std::string bytes, std::mt19937_64& rng) {
  switch (rng() % 4) {
    case 0:
      for (uint64_t k = 0, n = 1 + rng() % 3; k < n; ++k) {
        bytes[rng() % bytes.size()] = static_cast<char>(rng());
      }
      break;
    case 1:
      bytes.resize(rng() % bytes.size());
      break;
    case 2:
      bytes.insert(bytes.begin() + rng() % (bytes.size() + 1),
                   static_cast<char>(rng()));
      break;
    default: {
      const uint32_t edges[] = {0,    1,    2,          3,         64,
                                1024, 1025, 0x7fffffff, 0xffffffff};
      const uint32_t v = edges[rng() % std::size(edges)];
      const size_t at = rng() % (bytes.size() - 3);
      for (int i = 0; i < 4; ++i) bytes[at + i] = static_cast<char>(v >> 8 * i);
    }
  }
  return bytes;
}

// What a receiver with `local` layout must make of `bytes` from a peer with
// engine regions `known`: nullopt when it is not a pool descriptor (state
// unchanged), else the usable layout or an error.
std::optional<absl::StatusOr<KvLayout>> Model(
    const std::string& bytes, const KvLayout& local,
    const std::vector<RegionInfo>& known) {
  absl::StatusOr<internal::KvNotice> notice = internal::ParseKvNotice(bytes);
  if (!notice.ok() || notice->kind != internal::KvNoticeKind::kPool) {
    return std::nullopt;
  }
  absl::StatusOr<KvLayout> layout = KvLayout::Parse(notice->layout);
  if (!layout.ok()) return layout.status();
  if (!CheckKvExchange(local, *layout).ok() ||
      notice->regions.size() != layout->num_regions()) {
    return absl::InvalidArgumentError("refused");
  }
  for (RegionId id : notice->regions) {
    auto it = std::find_if(known.begin(), known.end(),
                           [id](const RegionInfo& r) { return r.id == id; });
    if (it == known.end() || it->length < layout->region_bytes()) {
      return absl::InvalidArgumentError("refused");
    }
  }
  return layout;
}

TEST_CASE("Mutated pool descriptors never become usable pools",
          "[kv_transfer]") {
  LogCapture log;
  auto prefill = MakePool("prefill", PrefillLayout(), {.log = log.Hook()});
  auto decode = MakePool("decode", DecodeLayout());
  auto address = decode->engine->Listen("127.0.0.1:0");
  REQUIRE(address.ok());
  auto to_decode = prefill->engine->Connect(*address);
  REQUIRE(to_decode.ok());
  const std::vector<RegionInfo> known =
      prefill->engine->GetPeer(*to_decode)->regions;
  const std::string real = Descriptor(decode->view.layout, decode->regions);

  // Delivered through HandleNotification, each checked against the model.
  std::mt19937_64 rng(5);
  uint64_t malformed = 0, refused = 0, usable = 0;
  absl::StatusOr<KvLayout> state = absl::NotFoundError("none yet");
  for (int i = 0; i < 3000; ++i) {
    const std::string bytes = Mutate(real, rng);
    const auto expected = Model(bytes, prefill->view.layout, known);
    const bool consumed =
        prefill->kv->HandleNotification({.peer = *to_decode,
                                         .kind = Notification::Kind::kTransfer,
                                         .bytes = bytes});
    REQUIRE(consumed == internal::IsKvNotice(bytes));
    if (consumed && !internal::ParseKvNotice(bytes).ok()) ++malformed;
    if (expected.has_value()) {
      state = *expected;
      (state.ok() ? usable : refused) += 1;
    }
    const absl::StatusOr<KvLayout> seen = prefill->kv->PeerPool(*to_decode);
    INFO("mutation " << i);
    REQUIRE(seen.status().code() == state.status().code());
    if (state.ok()) REQUIRE(*seen == *state);
  }
  CHECK(malformed > 100);
  CHECK(refused > 100);
  CHECK(usable > 0);  // e.g. another name, fewer blocks
  CHECK(prefill->kv->Stats().malformed_notices == malformed);
  CHECK(prefill->kv->Stats().pools_refused == refused);

  // A refusal is logged once, however often the same descriptor comes.
  const KvGeometry other = {.num_layers = 4,
                            .num_blocks = 64,
                            .block_tokens = 16,
                            .kv_heads = 4,
                            .head_dim = 128,
                            .dtype_bytes = 2};
  const std::string mismatch = Descriptor(PrefillLayout(other), {0});
  REQUIRE(prefill->kv->HandleNotification({.peer = *to_decode, .bytes = real}));
  REQUIRE(prefill->kv->PeerPool(*to_decode).ok());
  const int logged = log.Count("Send and Fetch to it fail");
  for (int i = 0; i < 3; ++i) {
    prefill->kv->HandleNotification({.peer = *to_decode, .bytes = mismatch});
  }
  CHECK(log.Count("Send and Fetch to it fail") == logged + 1);
  const absl::Status refusal = prefill->kv->PeerPool(*to_decode).status();
  CHECK(refusal.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(refusal.message()),
             Catch::Contains("head_dim differs: 32 and 128"));

  // Through the engine: mutations, then the real descriptor, which wins.
  Seen seen;
  REQUIRE(prefill->engine->Send(*to_decode, "hello").Wait().ok());
  const PeerId to_prefill = HelloPeer(*decode->kv, seen);
  KvTransferStats stats = prefill->kv->Stats();
  for (int i = 0; i < 40; ++i) {
    std::string bytes = Mutate(real, rng);
    while (bytes.size() < 8) bytes = Mutate(real, rng);
    if (internal::IsKvNotice(bytes) && !internal::ParseKvNotice(bytes).ok()) {
      ++stats.malformed_notices;
    }
    const auto expected = Model(bytes, prefill->view.layout, known);
    if (expected.has_value() && !expected->ok()) ++stats.pools_refused;
    REQUIRE(testing::WriteNotice(*decode->engine, to_prefill, bytes).ok());
  }
  REQUIRE(testing::WriteNotice(*decode->engine, to_prefill, real).ok());
  Seen prefill_seen;
  REQUIRE(PollUntil(*prefill->kv, prefill_seen, kSoon, [&](const Seen&) {
    const KvTransferStats now = prefill->kv->Stats();
    return now.malformed_notices == stats.malformed_notices &&
           now.pools_refused == stats.pools_refused &&
           prefill->kv->PeerPool(*to_decode).ok();
  }));
  CHECK(*prefill->kv->PeerPool(*to_decode) == decode->view.layout);

  // And the pool it recorded is the right one: bytes arrive byte-exact.
  prefill->view.Fill(kSeed);
  decode->view.Set(0);
  REQUIRE(
      prefill->kv
          ->Send(
              "after", *to_decode,
              {.src_blocks = kSrc, .dst_blocks = kDst, .num_tokens = kTokens})
          .Wait()
          .ok());
  REQUIRE(PollUntil(*decode->kv, seen, kSoon,
                    [](const Seen& s) { return s.Finished("after") > 0; }));
  CHECK(SameKv(prefill->view, kSrc, decode->view, kDst, kTokens));
}

TEST_CASE(
    "AddPeerPool overrides an announced pool, and a disconnect forgets it",
    "[kv_transfer]") {
  auto prefill = MakePool("prefill", PrefillLayout());
  auto decode = MakePool("decode", DecodeLayout());
  prefill->view.Fill(kSeed);
  decode->view.Set(0);
  auto address = decode->engine->Listen("127.0.0.1:0");
  REQUIRE(address.ok());
  auto to_decode = prefill->engine->Connect(*address);
  REQUIRE(to_decode.ok());
  Seen decode_seen, prefill_seen;
  REQUIRE(prefill->engine->Send(*to_decode, "hello").Wait().ok());
  const PeerId to_prefill = HelloPeer(*decode->kv, decode_seen);
  const KvPiece request = {
      .src_blocks = kSrc, .dst_blocks = kDst, .num_tokens = kTokens};

  // Nothing known yet.
  const absl::Status early =
      prefill->kv->Send("early", *to_decode, request).Wait();
  CHECK(early.code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(
      std::string(early.message()),
      Catch::Contains("call AnnouncePool on either side, or AddPeerPool"));
  CHECK(
      prefill->kv->WaitForPeerPool(*to_decode, absl::Milliseconds(30)).code() ==
      absl::StatusCode::kDeadlineExceeded);

  // A message the decode side sends before it announces: WaitForPeerPool
  // takes it from the engine and keeps it for the next Poll.
  REQUIRE(decode->engine->Send(to_prefill, "before").Wait().ok());
  REQUIRE(decode->kv->AnnouncePool(to_prefill).ok());
  REQUIRE(prefill->kv->WaitForPeerPool(*to_decode, kSoon).ok());
  CHECK(*prefill->kv->PeerPool(*to_decode) == decode->view.layout);
  REQUIRE(PollUntil(*prefill->kv, prefill_seen, kSoon, [](const Seen& s) {
    return s.Other(Notification::Kind::kMessage, "before");
  }));
  // The answer: the decode side learns the prefill pool.
  REQUIRE(decode->kv->WaitForPeerPool(to_prefill, kSoon).ok());
  CHECK(*decode->kv->PeerPool(to_prefill) == prefill->view.layout);

  // AddPeerPool overrides it (here: the decode regions declared as
  // FlashAttention's per-layer order), and a later announcement does not
  // replace the declared pool.
  const KvLayout declared = *KvLayout::VllmFlashAttn(kGeometry);
  REQUIRE(prefill->kv->AddPeerPool(*to_decode, declared, decode->regions).ok());
  CHECK(*prefill->kv->PeerPool(*to_decode) == declared);
  REQUIRE(decode->kv->AnnouncePool(to_prefill).ok());  // queued at prefill
  prefill_seen.Add(prefill->kv->Poll());
  CHECK(*prefill->kv->PeerPool(*to_decode) == declared);
  REQUIRE(prefill->kv->Send("declared", *to_decode, request).Wait().ok());
  REQUIRE(PollUntil(*decode->kv, decode_seen, kSoon,
                    [](const Seen& s) { return s.Finished("declared") > 0; }));
  const PoolView as_declared{declared, decode->view.data};
  CHECK(SameKv(prefill->view, kSrc, as_declared, kDst, kTokens));
  // A declaration the layouts cannot exchange KV with is refused.
  KvGeometry layers = kGeometry;
  layers.num_layers = 2;
  const absl::Status bad =
      prefill->kv->AddPeerPool(*to_decode, *KvLayout::VllmFlashAttn(layers),
                               {decode->regions[0], decode->regions[1]});
  CHECK(bad.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(bad.message()),
             Catch::Contains("num_layers differs: 4 and 2"));

  // A disconnect forgets the pool on both sides.
  prefill->engine->Disconnect(*to_decode).IgnoreError();
  REQUIRE(PollUntil(*prefill->kv, prefill_seen, kSoon, [](const Seen& s) {
    return s.Other(Notification::Kind::kPeerDisconnected);
  }));
  CHECK(prefill->kv->PeerPool(*to_decode).status().code() ==
        absl::StatusCode::kNotFound);
  CHECK(prefill->kv->Send("gone", *to_decode, request).Wait().code() ==
        absl::StatusCode::kFailedPrecondition);
  REQUIRE(PollUntil(*decode->kv, decode_seen, kSoon + 3 * kPeerFailureTimeout,
                    [](const Seen& s) {
                      return s.Other(Notification::Kind::kPeerDisconnected);
                    }));
  CHECK(decode->kv->PeerPool(to_prefill).status().code() ==
        absl::StatusCode::kNotFound);
  CHECK_FALSE(decode->kv->WaitForPeerPool(to_prefill, kSoon).ok());

  // A new connection starts afresh: announced from the prefill side this
  // time, answered by the decode side.
  auto again = prefill->engine->Connect(*address);
  REQUIRE(again.ok());
  REQUIRE(prefill->kv->AnnouncePool(*again).ok());
  decode_seen.Add(decode->kv->Poll());  // acknowledged: queued there
  REQUIRE(prefill->kv->WaitForPeerPool(*again, kSoon).ok());
  CHECK(*prefill->kv->PeerPool(*again) == decode->view.layout);
}

}  // namespace
}  // namespace flowkv
