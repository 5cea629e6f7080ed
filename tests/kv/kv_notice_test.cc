// SPDX-License-Identifier: Apache-2.0
// The bytes of KvTransfer's notices (lib/kv/kv_notice.h) and the
// reader/writer they are built on (lib/common/byte_io.h): round trips,
// and every malformed input gives InvalidArgument naming the field.
#include "lib/kv/kv_notice.h"

#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "flowkv/kv_layout.h"
#include "lib/common/byte_io.h"

namespace flowkv::internal {
namespace {

KvNotice DataNotice() {
  KvNotice n;
  n.kind = KvNoticeKind::kData;
  n.request_id = "req-7";
  n.sender_rank = 1;
  n.num_senders = 2;
  n.layer_begin = 3;
  n.layer_end = 5;
  n.token_begin = 16;
  n.token_end = 1000;
  n.final_chunk = true;
  n.payload = std::string("aux\0data", 8);
  return n;
}

// A pool descriptor of a vLLM per-layer pool: 4 regions.
KvNotice PoolNotice() {
  KvNotice n;
  n.kind = KvNoticeKind::kPool;
  n.layout = KvLayout::VllmFlashAttn({.num_layers = 4,
                                      .num_blocks = 64,
                                      .block_tokens = 16,
                                      .kv_heads = 4,
                                      .head_dim = 32,
                                      .dtype_bytes = 2})
                 ->Serialize();
  n.regions = {3, 4, 5, 9};
  return n;
}

bool Same(const KvNotice& a, const KvNotice& b) {
  return a.kind == b.kind && a.request_id == b.request_id &&
         a.sender_rank == b.sender_rank && a.num_senders == b.num_senders &&
         a.layer_begin == b.layer_begin && a.layer_end == b.layer_end &&
         a.token_begin == b.token_begin && a.token_end == b.token_end &&
         a.final_chunk == b.final_chunk && a.payload == b.payload &&
         a.code == b.code && a.message == b.message && a.layout == b.layout &&
         a.regions == b.regions && a.direct == b.direct &&
         a.ring_region == b.ring_region && a.slot_bytes == b.slot_bytes &&
         a.slot_count == b.slot_count && a.share == b.share &&
         a.slot_seq == b.slot_seq && a.slot == b.slot && a.runs == b.runs;
}

// The message of parsing `bytes` (which must fail with InvalidArgument).
std::string ParseError(const std::string& bytes) {
  absl::StatusOr<KvNotice> parsed = ParseKvNotice(bytes);
  REQUIRE_FALSE(parsed.ok());
  CHECK(parsed.status().code() == absl::StatusCode::kInvalidArgument);
  return std::string(parsed.status().message());
}

void PutU32(std::string* bytes, size_t offset, uint32_t v) {
  for (int i = 0; i < 4; ++i)
    (*bytes)[offset + i] = static_cast<char>(v >> 8 * i);
}

TEST_CASE("ByteWriter and ByteReader round-trip little-endian fields",
          "[kv_transfer]") {
  ByteWriter w;
  w.Magic("ABCD");
  w.U8(0xab);
  w.U16(0x1234);
  w.U32(0xdeadbeef);
  w.U64(0x0102030405060708ull);
  w.Bytes("hello");
  w.Raw("xy");
  const std::string bytes = std::move(w).Take();
  // Little-endian whatever the host.
  CHECK(bytes.substr(4, 3) == std::string("\xab\x34\x12", 3));

  ByteReader r(bytes, "Test");
  uint8_t a = 0;
  uint16_t b = 0;
  uint32_t c = 0;
  uint64_t d = 0;
  std::string e;
  std::string_view f;
  CHECK(r.Magic("magic", "ABCD"));
  CHECK(r.U8("a", &a));
  CHECK(r.U16("b", &b));
  CHECK(r.U32("c", &c));
  CHECK(r.U64("d", &d));
  CHECK(r.Bytes("e", 16, &e));
  CHECK(r.Raw("f", 2, &f));
  CHECK(r.End().ok());
  CHECK(a == 0xab);
  CHECK(b == 0x1234);
  CHECK(c == 0xdeadbeef);
  CHECK(d == 0x0102030405060708ull);
  CHECK(e == "hello");
  CHECK(f == "xy");
}

TEST_CASE("ByteReader names the first field that did not fit",
          "[kv_transfer]") {
  ByteWriter w;
  w.U32(7);
  w.Bytes("0123456789");
  const std::string bytes = std::move(w).Take();
  {
    ByteReader r(std::string_view(bytes).substr(0, 6), "Msg");
    uint32_t x = 0;
    uint64_t y = 0;
    CHECK(r.U32("x", &x));
    CHECK_FALSE(r.U64("y", &y));
    CHECK(y == 0);                // outputs are set only on success
    CHECK_FALSE(r.U32("z", &x));  // later reads fail too
    CHECK(r.status().message() ==
          "Msg: truncated at y (needs 8 bytes, 2 left)");
  }
  {
    ByteReader r(bytes, "Msg");
    uint32_t x = 0;
    std::string s;
    CHECK(r.U32("x", &x));
    CHECK_FALSE(r.Bytes("name", 4, &s));
    CHECK(r.status().message() == "Msg: name length 10 exceeds the limit 4");
  }
  {
    ByteReader r(bytes, "Msg");
    uint32_t x = 0;
    CHECK(r.U32("x", &x));
    CHECK(r.End().message() == "Msg: 14 trailing bytes");
  }
  {
    ByteReader r(bytes, "Msg");
    absl::Span<const uint8_t> trailer;
    CHECK(r.SplitTrailer("checksum", 4, &trailer));
    CHECK(trailer.size() == 4);
    CHECK(r.remaining() == bytes.size() - 4);
    CHECK_FALSE(r.Magic("magic", "XXXX"));
    CHECK(r.status().message() == "Msg: bad magic (expected \"XXXX\")");
  }
}

TEST_CASE("Notices of every kind round-trip", "[kv_transfer]") {
  const KvNotice data = DataNotice();
  absl::StatusOr<KvNotice> parsed = ParseKvNotice(EncodeKvNotice(data));
  REQUIRE(parsed.ok());
  CHECK(Same(*parsed, data));
  CHECK(IsKvNotice(EncodeKvNotice(data)));
  CHECK_FALSE(IsKvNotice("FKV"));

  KvNotice failed;
  failed.kind = KvNoticeKind::kFailed;
  failed.request_id = std::string(256, 'x');
  failed.code = absl::StatusCode::kDeadlineExceeded;
  failed.message = "deadline passed";
  parsed = ParseKvNotice(EncodeKvNotice(failed));
  REQUIRE(parsed.ok());
  CHECK(Same(*parsed, failed));

  KvNotice released;
  released.kind = KvNoticeKind::kReleased;
  released.request_id = "r";
  released.code = absl::StatusCode::kOk;
  parsed = ParseKvNotice(EncodeKvNotice(released));
  REQUIRE(parsed.ok());
  CHECK(Same(*parsed, released));

  // A long message is cut to the limit, not refused.
  failed.message = std::string(5000, 'm');
  parsed = ParseKvNotice(EncodeKvNotice(failed));
  REQUIRE(parsed.ok());
  CHECK(parsed->message.size() == kMaxKvNoticeMessageBytes);

  // A pool descriptor carries the layout bytes and the region ids as they
  // are; the layout parses back to the same layout.
  const KvNotice pool = PoolNotice();
  parsed = ParseKvNotice(EncodeKvNotice(pool));
  REQUIRE(parsed.ok());
  CHECK(Same(*parsed, pool));
  absl::StatusOr<KvLayout> layout = KvLayout::Parse(parsed->layout);
  REQUIRE(layout.ok());
  CHECK(layout->num_regions() == 4);
  CHECK(layout->name() == "vllm_flash_attn(NHD)");
  // The largest region table fits.
  KvNotice wide = pool;
  wide.regions.assign(kMaxKvNoticeRegions, 7);
  parsed = ParseKvNotice(EncodeKvNotice(wide));
  REQUIRE(parsed.ok());
  CHECK(parsed->regions.size() == kMaxKvNoticeRegions);
}

TEST_CASE("Malformed pool descriptors are refused, naming the field",
          "[kv_transfer]") {
  const KvNotice pool = PoolNotice();
  const std::string good = EncodeKvNotice(pool);
  for (size_t n = 0; n < good.size(); ++n) {
    absl::StatusOr<KvNotice> parsed = ParseKvNotice(good.substr(0, n));
    REQUIRE_FALSE(parsed.ok());
    CHECK(parsed.status().code() == absl::StatusCode::kInvalidArgument);
  }
  CHECK(ParseError(good + "x") == "KvNotice: 1 trailing bytes");
  // Offsets: magic 0, version 4, kind 6, layout length 7, layout 11.
  const size_t count_at = 11 + pool.layout.size();
  std::string bad = good;
  PutU32(&bad, 7, 70000);
  CHECK(ParseError(bad) ==
        "KvNotice: layout length 70000 exceeds the limit 65536");
  bad = good;
  PutU32(&bad, count_at, 1025);
  CHECK(ParseError(bad) == "KvNotice: num_regions 1025 is not in [0, 1024]");
  // A count the bytes cannot hold is refused before anything is allocated.
  bad = good;
  PutU32(&bad, count_at, 1000);
  CHECK(ParseError(bad).find("truncated at regions (1000 regions need 4000 "
                             "bytes, 37 left)") != std::string::npos);
  KvNotice empty = pool;
  empty.layout.clear();
  CHECK(ParseError(EncodeKvNotice(empty)) == "KvNotice: empty layout");
  KvNotice none = pool;
  none.regions.clear();
  CHECK(ParseError(EncodeKvNotice(none)) ==
        "KvNotice: num_regions 0 with direct 1 (a direct pool names its "
        "regions, another names none)");
  KvNotice staged = pool;
  staged.direct = false;
  CHECK(
      ParseError(EncodeKvNotice(staged)).find("num_regions 4 with direct 0") !=
      std::string::npos);
  // The staging fields.
  KvNotice ring = pool;
  ring.ring_region = 7;
  ring.slot_bytes = 4096;
  ring.slot_count = kMaxKvRingSlots + 1;
  CHECK(ParseError(EncodeKvNotice(ring)) ==
        "KvNotice: slot_count 1048577 is not in [0, 1048576]");
  ring.slot_count = 16;
  ring.slot_bytes = 0;
  CHECK(ParseError(EncodeKvNotice(ring)) ==
        "KvNotice: slot_bytes 0 is not in [1, 2^40]");
  ring.slot_count = 0;
  ring.slot_bytes = 4096;
  CHECK(ParseError(EncodeKvNotice(ring)) ==
        "KvNotice: a ring region or slot size without slots");
  KvNotice share = pool;
  share.share = std::string(kMaxKvShareBytes + 1, 's');
  CHECK(ParseError(EncodeKvNotice(share)) ==
        "KvNotice: share length 16385 exceeds the limit 16384");
  // Unknown flags.
  std::string flags = good;
  flags[count_at + 4 + 16] = 2;
  CHECK(ParseError(flags) == "KvNotice: unknown pool flags 0x2");
}

KvNotice SlotNotice() {
  KvNotice n;
  n.kind = KvNoticeKind::kSlot;
  n.request_id = "req-9";
  n.sender_rank = 0;
  n.num_senders = 1;
  n.slot_seq = 41;
  n.slot = 3;
  n.runs = {{.region = 0, .offset = 4096, .length = 64},
            {.region = 2, .offset = 0, .length = 1000}};
  return n;
}

TEST_CASE("Staging notices (pool rings, slots, credits) round-trip",
          "[kv_transfer]") {
  KvNotice pool = PoolNotice();
  pool.direct = false;
  pool.regions.clear();
  pool.ring_region = 12;
  pool.slot_bytes = 4 << 20;
  pool.slot_count = 16;
  pool.share = "flowkv-shm 1\nboot\n1\n/x 10\n";
  absl::StatusOr<KvNotice> parsed = ParseKvNotice(EncodeKvNotice(pool));
  REQUIRE(parsed.ok());
  CHECK(Same(*parsed, pool));

  const KvNotice incoming = SlotNotice();
  parsed = ParseKvNotice(EncodeKvNotice(incoming));
  REQUIRE(parsed.ok());
  CHECK(Same(*parsed, incoming));
  // The most runs a slot may carry.
  KvNotice wide = incoming;
  wide.runs.assign(kMaxKvSlotRuns, {.region = 1, .offset = 0, .length = 1});
  parsed = ParseKvNotice(EncodeKvNotice(wide));
  REQUIRE(parsed.ok());
  CHECK(parsed->runs.size() == kMaxKvSlotRuns);

  KvNotice credit;
  credit.kind = KvNoticeKind::kCredit;
  credit.request_id = "req-9";
  credit.slot = 3;
  credit.code = absl::StatusCode::kInvalidArgument;
  credit.message = "run outside the pool";
  parsed = ParseKvNotice(EncodeKvNotice(credit));
  REQUIRE(parsed.ok());
  CHECK(Same(*parsed, credit));
}

TEST_CASE("Malformed slot notices are refused, naming the field",
          "[kv_transfer]") {
  const std::string good = EncodeKvNotice(SlotNotice());
  for (size_t n = 0; n < good.size(); ++n) {
    REQUIRE_FALSE(ParseKvNotice(good.substr(0, n)).ok());
  }
  CHECK(ParseError(good + "x") == "KvNotice: 1 trailing bytes");
  KvNotice none = SlotNotice();
  none.runs.clear();
  CHECK(ParseError(EncodeKvNotice(none)) ==
        "KvNotice: num_runs 0 is not in [1, 16384]");
  KvNotice empty = SlotNotice();
  empty.runs[1].length = 0;
  CHECK(ParseError(EncodeKvNotice(empty)).find("run length 0") !=
        std::string::npos);
  KvNotice huge = SlotNotice();
  huge.runs[0].length = 1ull << 40;
  CHECK(ParseError(EncodeKvNotice(huge)).find("past 2^40 bytes") !=
        std::string::npos);
  // Offsets: magic 0, version 4, kind 6, id length 7, id 11 (5 bytes),
  // rank 16, senders 20, slot 24, slot 28, num_runs 32.
  std::string bad = good;
  PutU32(&bad, 32, 1000);
  CHECK(ParseError(bad).find("truncated at runs (1000 runs need 20000") !=
        std::string::npos);
  bad = good;
  bad[6] = 7;
  CHECK(ParseError(bad) == "KvNotice: unknown kind 7");
}

TEST_CASE("Every truncation of a notice is refused", "[kv_transfer]") {
  const std::string bytes = EncodeKvNotice(DataNotice());
  for (size_t n = 0; n < bytes.size(); ++n) {
    absl::StatusOr<KvNotice> parsed = ParseKvNotice(bytes.substr(0, n));
    REQUIRE_FALSE(parsed.ok());
    CHECK(parsed.status().code() == absl::StatusCode::kInvalidArgument);
  }
  CHECK(ParseError(bytes.substr(0, 20)).find("truncated at") !=
        std::string::npos);
  CHECK(ParseError(bytes + "x") == "KvNotice: 1 trailing bytes");
}

TEST_CASE("Malformed notice fields are named", "[kv_transfer]") {
  const std::string good = EncodeKvNotice(DataNotice());
  // Offsets: magic 0, version 4, kind 6, id length 7, id 11 (5 bytes),
  // rank 16, senders 20, layers 24/28, tokens 32/40, flags 48, payload 49.
  std::string bad = good;
  bad[0] = 'X';
  CHECK(ParseError(bad) == "KvNotice: bad magic (expected \"FKVN\")");
  bad = good;
  bad[4] = 2;
  CHECK(ParseError(bad).find("version 2 is not supported") !=
        std::string::npos);
  bad = good;
  bad[6] = 9;
  CHECK(ParseError(bad) == "KvNotice: unknown kind 9");
  bad = good;
  PutU32(&bad, 7, 100000);
  CHECK(ParseError(bad) ==
        "KvNotice: request_id length 100000 exceeds the limit 256");
  bad = good;
  PutU32(&bad, 16, 2);
  CHECK(ParseError(bad) == "KvNotice: sender_rank 2 >= num_senders 2");
  bad = good;
  PutU32(&bad, 20, 0);
  CHECK(ParseError(bad).find("num_senders 0") != std::string::npos);
  bad = good;
  PutU32(&bad, 28, 3);
  CHECK(ParseError(bad) == "KvNotice: empty layer range [3, 3)");
  bad = good;
  bad[48] = 2;
  CHECK(ParseError(bad) == "KvNotice: unknown flags 0x2");
  bad = good;
  PutU32(&bad, 49, 70000);
  CHECK(ParseError(bad) ==
        "KvNotice: payload length 70000 exceeds the limit 65536");

  KvNotice empty_id = DataNotice();
  empty_id.request_id.clear();
  CHECK(ParseError(EncodeKvNotice(empty_id)) == "KvNotice: empty request_id");
  KvNotice tokens = DataNotice();
  tokens.token_end = tokens.token_begin;
  CHECK(ParseError(EncodeKvNotice(tokens)) ==
        "KvNotice: empty token range [16, 16)");

  KvNotice failed;
  failed.kind = KvNoticeKind::kFailed;
  failed.request_id = "r";
  failed.code = absl::StatusCode::kOk;  // a failure needs a failure code
  CHECK(ParseError(EncodeKvNotice(failed)) ==
        "KvNotice: status code 0 is not in [1, 16]");
  std::string code = EncodeKvNotice(failed);
  PutU32(&code, 20, 17);  // id "r": the code is at 4+2+1+4+1+4+4 = 20
  CHECK(ParseError(code) == "KvNotice: status code 17 is not in [1, 16]");
}

TEST_CASE("Random bytes after the magic never crash the parser",
          "[kv_transfer]") {
  std::mt19937_64 rng(11);
  int parsed_ok = 0;
  for (int i = 0; i < 20000; ++i) {
    // Data notices and pool descriptors, each in half of the rounds.
    const std::string good =
        EncodeKvNotice(i % 4 < 2 ? DataNotice() : PoolNotice());
    std::string bytes;
    if (i % 2 == 0) {
      // Random bytes behind the magic and version.
      bytes = good.substr(0, 7);
      const size_t n = rng() % 80;
      for (size_t k = 0; k < n; ++k) bytes.push_back(static_cast<char>(rng()));
    } else {
      // A valid notice with a few bytes flipped.
      bytes = good;
      for (int k = 0; k < 3; ++k) {
        bytes[rng() % bytes.size()] = static_cast<char>(rng());
      }
    }
    absl::StatusOr<KvNotice> parsed = ParseKvNotice(bytes);
    if (parsed.ok() && parsed->kind == KvNoticeKind::kPool) {
      ++parsed_ok;
      REQUIRE(!parsed->layout.empty());
      REQUIRE(parsed->layout.size() <= kMaxKvNoticeLayoutBytes);
      REQUIRE(!parsed->regions.empty());
      REQUIRE(parsed->regions.size() <= kMaxKvNoticeRegions);
    } else if (parsed.ok()) {
      ++parsed_ok;
      // Whatever parses satisfies the documented invariants.
      REQUIRE(!parsed->request_id.empty());
      REQUIRE(parsed->request_id.size() <= kMaxKvRequestIdBytes);
      REQUIRE(parsed->sender_rank < parsed->num_senders);
      if (parsed->kind == KvNoticeKind::kData) {
        REQUIRE(parsed->layer_begin < parsed->layer_end);
        REQUIRE(parsed->token_begin < parsed->token_end);
      }
    } else {
      REQUIRE(parsed.status().code() == absl::StatusCode::kInvalidArgument);
    }
  }
  CHECK(parsed_ok > 0);  // flips inside the payload or ranges still parse
}

}  // namespace
}  // namespace flowkv::internal
