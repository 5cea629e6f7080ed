// SPDX-License-Identifier: Apache-2.0
// Tests of KvLayout's wire form and peer agreement: Serialize / Parse round
// trips for every preset and random strided layouts, the fingerprint, the
// parser against truncated, crafted and randomly mutated bytes, and
// CheckKvExchange.

#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "flowkv/kv_layout.h"
#include "tests/support/layout_test_util.h"

namespace flowkv {
namespace {

using testing::AllLayouts;
using testing::Must;

const KvGeometry kLlama = {.num_layers = 32,
                           .num_blocks = 4096,
                           .block_tokens = 16,
                           .kv_heads = 8,
                           .head_dim = 128,
                           .dtype_bytes = 2};

void PutU32(std::string* bytes, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i)
    (*bytes)[at + i] = static_cast<char>(v >> (8 * i));
}

// Offsets into the serialized form (see lib/layout/layout_serialize.cc).
constexpr size_t kGeometryAt = 6;  // after "FKVL" and the version
constexpr size_t kNameAt = kGeometryAt + 7 * 4;

TEST_CASE("Every preset and random layout survives Serialize and Parse",
          "[kv_layout][serialize]") {
  std::vector<KvLayout> layouts = AllLayouts(kLlama);
  KvGeometry mla = kLlama;
  mla.num_parts = 1;
  mla.kv_heads = 1;
  mla.head_dim = 576;
  for (const KvLayout& l : AllLayouts(mla)) layouts.push_back(l);
  std::mt19937_64 rng(5);
  for (int i = 0; i < 200; ++i) {
    KvGeometry g = kLlama;
    g.num_layers = 1 + rng() % 5;
    g.kv_heads = 1 + rng() % 4;
    g.num_parts = 1 + rng() % 2;
    layouts.push_back(testing::RandomStridedLayout(g, rng));
  }
  for (const KvLayout& layout : layouts) {
    INFO(layout.ToString());
    const std::string bytes = layout.Serialize();
    const absl::StatusOr<KvLayout> parsed = KvLayout::Parse(bytes);
    INFO(parsed.status().ToString());
    REQUIRE(parsed.ok());
    CHECK(*parsed == layout);
    CHECK(parsed->name() == layout.name());
    CHECK(parsed->Fingerprint() == layout.Fingerprint());
    CHECK(parsed->Serialize() == bytes);
    if (layout.name() != "strided") {
      CHECK(bytes.size() < 150);  // Presets travel as an affine rule.
    }
  }
}

TEST_CASE("The fingerprint follows the bytes, not the name",
          "[kv_layout][serialize]") {
  const KvLayout flowkv = Must(KvLayout::FlowKvBlockMajor(kLlama));
  const KvLayout cross = Must(KvLayout::VllmCrossLayer(kLlama));
  const KvLayout trtllm = Must(KvLayout::TrtllmBlockPool(kLlama));
  const KvLayout flowkv_hnd =
      Must(KvLayout::FlowKvBlockMajor(kLlama, BlockOrder::kHND));
  CHECK(flowkv.name() != cross.name());
  CHECK(flowkv.Fingerprint() == cross.Fingerprint());  // Same bytes.
  CHECK(trtllm.Fingerprint() == flowkv_hnd.Fingerprint());
  CHECK(flowkv.Fingerprint() != flowkv_hnd.Fingerprint());
  // Every geometry field changes it.
  std::vector<uint64_t> seen = {flowkv.Fingerprint()};
  for (uint32_t KvGeometry::*field :
       {&KvGeometry::num_layers, &KvGeometry::num_blocks,
        &KvGeometry::block_tokens, &KvGeometry::kv_heads, &KvGeometry::head_dim,
        &KvGeometry::dtype_bytes, &KvGeometry::num_parts}) {
    KvGeometry g = kLlama;
    g.*field = field == &KvGeometry::num_parts ? 1 : g.*field + 1;
    const uint64_t fingerprint =
        Must(KvLayout::FlowKvBlockMajor(g)).Fingerprint();
    CHECK(std::find(seen.begin(), seen.end(), fingerprint) == seen.end());
    seen.push_back(fingerprint);
  }
  // A strided copy of a preset is the same layout.
  KvStridedSpec spec{.geometry = kLlama, .tensors = {}};
  spec.tensors.assign(flowkv.tensors().begin(), flowkv.tensors().end());
  const KvLayout copy = Must(KvLayout::CreateStrided(spec));
  CHECK(copy == flowkv);
  CHECK(copy.Fingerprint() == flowkv.Fingerprint());
  spec.tensors.back() = {.region = 1,  // The last tensor in a region alone.
                         .offset = 0,
                         .block_stride = 1,
                         .token_stride = 0,
                         .head_stride = 0};
  spec.tensors.back().block_stride = flowkv.tensors().back().block_stride;
  spec.tensors.back().token_stride = flowkv.tensors().back().token_stride;
  spec.tensors.back().head_stride = flowkv.tensors().back().head_stride;
  CHECK(Must(KvLayout::CreateStrided(spec)).Fingerprint() !=
        flowkv.Fingerprint());
}

TEST_CASE("Parse rejects every truncation and names the field",
          "[kv_layout][serialize]") {
  std::mt19937_64 rng(3);
  for (const KvLayout& layout : {Must(KvLayout::SglangMha(kLlama)),
                                 testing::RandomStridedLayout({.num_layers = 3,
                                 .num_blocks = 5,
                                 .block_tokens = 2,
                                 .kv_heads = 2,
                                 .head_dim = 4,
                                 .dtype_bytes = 2},
                                                              rng)}) {
    const std::string bytes = layout.Serialize();
    for (size_t n = 0; n < bytes.size(); ++n) {
      const absl::Status st = KvLayout::Parse(bytes.substr(0, n)).status();
      INFO(n << ": " << st.ToString());
      CHECK(st.code() == absl::StatusCode::kInvalidArgument);
      CHECK_THAT(std::string(st.message()),
                 Catch::Contains("KvLayout descriptor"));
    }
    const absl::Status trailing = KvLayout::Parse(bytes + "x").status();
    CHECK_THAT(std::string(trailing.message()), Catch::Contains("trailing"));
  }
}

TEST_CASE("Parse rejects crafted descriptors naming the field",
          "[kv_layout][serialize]") {
  const std::string good = Must(KvLayout::VllmFlashInfer(kLlama)).Serialize();
  auto expect = [](const std::string& bytes, const std::string& text) {
    const absl::Status st = KvLayout::Parse(bytes).status();
    INFO(st.ToString());
    CHECK(st.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(st.message()), Catch::Contains(text));
  };
  std::string bad = good;
  bad[0] = 'X';
  expect(bad, "magic");
  bad = good;
  bad[4] = 2;
  expect(bad, "version 2");
  bad = good;
  PutU32(&bad, kGeometryAt + 4 * 4, 0);  // head_dim
  expect(bad, "head_dim must be > 0");
  bad = good;
  PutU32(&bad, kGeometryAt + 6 * 4, 3);  // num_parts
  expect(bad, "num_parts 3");
  bad = good;
  PutU32(&bad, kGeometryAt, 100000);  // num_layers: too many tensors
  expect(bad, "tensors, at most");
  bad = good;
  PutU32(&bad, kGeometryAt + 1 * 4, 0xFFFFFFFF);  // num_blocks: overflow
  PutU32(&bad, kGeometryAt + 4 * 4, 0xFFFFFFFF);
  expect(bad, "overflows");
  bad = good;
  PutU32(&bad, kNameAt, 1000);  // name length past its limit
  expect(bad, "name length");
  bad = good;
  bad[kNameAt + 4] = '\x01';
  expect(bad, "printable");
  const size_t encoding_at =
      kNameAt + 4 + Must(KvLayout::VllmFlashInfer(kLlama)).name().size();
  bad = good;
  bad[encoding_at] = 7;
  expect(bad, "encoding 7");
  // The affine rule's strides alias: token_stride (at +1+12+24+8) = 0.
  bad = good;
  for (int i = 0; i < 8; ++i) bad[encoding_at + 1 + 12 + 24 + 8 + i] = 0;
  expect(bad, "token_stride 0");
  // A table (tensors in no affine order) whose count disagrees with the
  // geometry, and one with two tensors at one offset.
  const KvGeometry small = {.num_layers = 2,
                            .num_blocks = 3,
                            .block_tokens = 2,
                            .kv_heads = 2,
                            .head_dim = 2,
                            .dtype_bytes = 1};
  KvStridedSpec spec{.geometry = small, .tensors = {}};
  for (uint64_t slot : {3, 1, 0, 2}) {  // 24-byte tensors, shuffled.
    spec.tensors.push_back({.region = 0,
                            .offset = 24 * slot,
                            .block_stride = 8,
                            .token_stride = 4,
                            .head_stride = 2});
  }
  const KvLayout table = Must(KvLayout::CreateStrided(spec));
  const std::string table_bytes = table.Serialize();
  const size_t count_at = kNameAt + 4 + table.name().size() + 1;
  REQUIRE(table_bytes[count_at - 1] == 1);  // The table encoding.
  bad = table_bytes;
  PutU32(&bad, count_at, 5);
  expect(bad, "tensor count 5");
  bad = table_bytes;  // Tensor 1's offset := tensor 0's.
  for (int i = 0; i < 8; ++i) {
    bad[count_at + 4 + 36 + 4 + i] = bad[count_at + 4 + 4 + i];
  }
  expect(bad, "overlap");
}

TEST_CASE("Parse survives random mutations: a layout or an error, never more",
          "[kv_layout][serialize][fuzz]") {
  std::mt19937_64 rng(20260903);
  std::vector<std::string> seeds;
  for (const KvLayout& l : AllLayouts(kLlama)) seeds.push_back(l.Serialize());
  for (int i = 0; i < 20; ++i) {
    KvGeometry g = kLlama;
    g.num_layers = 1 + rng() % 4;
    seeds.push_back(testing::RandomStridedLayout(g, rng).Serialize());
  }
  int parsed = 0;
  for (int iter = 0; iter < 100000; ++iter) {
    std::string bytes = seeds[rng() % seeds.size()];
    const int edits = 1 + rng() % 4;
    for (int e = 0; e < edits; ++e) {
      switch (rng() % 5) {
        case 0:  // Flip a bit.
          bytes[rng() % bytes.size()] ^= static_cast<char>(1 << (rng() % 8));
          break;
        case 1:  // A random byte.
          bytes[rng() % bytes.size()] = static_cast<char>(rng());
          break;
        case 2:  // Truncate.
          bytes.resize(rng() % (bytes.size() + 1));
          break;
        case 3:  // Insert random bytes.
          bytes.insert(rng() % (bytes.size() + 1),
                       std::string(1 + rng() % 8, static_cast<char>(rng())));
          break;
        default:  // A large little-endian value over 4 bytes.
          if (bytes.size() >= 4) {
            PutU32(&bytes, rng() % (bytes.size() - 3),
                   static_cast<uint32_t>(rng() >> (rng() % 32)));
          }
      }
      if (bytes.empty()) break;
    }
    const absl::StatusOr<KvLayout> layout = KvLayout::Parse(bytes);
    if (!layout.ok()) {
      REQUIRE(layout.status().code() == absl::StatusCode::kInvalidArgument);
      continue;
    }
    ++parsed;
    // What parses is a valid layout that reads back the same.
    const absl::StatusOr<KvLayout> again = KvLayout::Parse(layout->Serialize());
    REQUIRE(again.ok());
    REQUIRE(*again == *layout);
    REQUIRE(layout->total_bytes() >= layout->block_bytes());
  }
  CHECK(parsed > 100);  // Some mutations keep a valid layout.
}

TEST_CASE("CheckKvExchange accepts head splits and names a mismatch",
          "[kv_layout][serialize]") {
  const KvLayout prefill = Must(KvLayout::FlowKvBlockMajor(kLlama));
  KvGeometry g = kLlama;
  g.kv_heads = 2;  // TP 4 on the decode side.
  g.block_tokens = 32;
  g.num_blocks = 100;
  const KvLayout decode = Must(KvLayout::Vllm(g, VllmKvLayout::kLBHNC));
  CHECK(CheckKvExchange(prefill, decode).ok());
  CHECK(CheckKvExchange(decode, prefill).ok());
  auto expect = [&](const KvGeometry& other, const std::string& text) {
    const absl::Status st =
        CheckKvExchange(prefill, Must(KvLayout::TrtllmBlockPool(other)));
    INFO(st.ToString());
    CHECK(st.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(st.message()), Catch::Contains(text));
  };
  g = kLlama;
  g.num_layers = 28;
  expect(g, "num_layers differs: 32 and 28");
  g = kLlama;
  g.head_dim = 64;
  expect(g, "head_dim differs: 128 and 64");
  g = kLlama;
  g.dtype_bytes = 1;
  expect(g, "dtype_bytes differs: 2 and 1");
  g = kLlama;
  g.num_parts = 1;
  expect(g, "num_parts differs: 2 and 1");
  g = kLlama;
  g.kv_heads = 3;
  expect(g, "kv_heads 8 and 3");
}

}  // namespace
}  // namespace flowkv
