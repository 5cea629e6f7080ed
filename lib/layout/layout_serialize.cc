// SPDX-License-Identifier: Apache-2.0
// KvLayout's wire form and the agreement between peers: Serialize, Parse
// (bounds-checked through lib/common/byte_io.h; the bytes may come from
// the network), Fingerprint (SHA-256 of the canonical form, through
// lib/common/hmac.h) and CheckKvExchange.
//
// Format, version 1, little-endian:
//   "FKVL" u16 version
//   u32 num_layers num_blocks block_tokens kv_heads head_dim dtype_bytes
//       num_parts
//   u32 name length (<= 64) + name (printable ASCII)
//   u8 encoding:
//     0 (affine): u32 region0 layer_region_step part_region_step,
//                 u64 offset0 layer_offset_step part_offset_step
//                 block_stride token_stride head_stride
//     1 (table):  u32 count (= num_layers * num_parts), then per tensor
//                 u32 region, u64 offset block_stride token_stride
//                 head_stride
// The canonical form (fingerprinted) is the same without the name.

#include <string>
#include <utility>

#include "absl/strings/str_format.h"
#include "lib/common/byte_io.h"
#include "lib/common/hmac.h"
#include "lib/layout/kv_layout_internal.h"

namespace flowkv {
namespace {

constexpr std::string_view kMagic = "FKVL";
constexpr uint16_t kVersion = 1;
constexpr size_t kMaxNameBytes = 64;
constexpr uint8_t kAffine = 0;
constexpr uint8_t kTable = 1;
constexpr size_t kTensorBytes = 4 + 8 * 4;

void WriteGeometry(const KvGeometry& g, internal::ByteWriter* w) {
  for (uint32_t v : {g.num_layers, g.num_blocks, g.block_tokens, g.kv_heads,
                     g.head_dim, g.dtype_bytes, g.num_parts}) {
    w->U32(v);
  }
}

void WriteTensors(const internal::KvLayoutData& d, internal::ByteWriter* w) {
  if (d.affine) {
    const KvTensor& t = d.tensors[0];
    w->U8(kAffine);
    w->U32(t.region);
    w->U32(d.layer_region_step);
    w->U32(d.part_region_step);
    for (uint64_t v : {t.offset, d.layer_offset_step, d.part_offset_step,
                       t.block_stride, t.token_stride, t.head_stride}) {
      w->U64(v);
    }
    return;
  }
  w->U8(kTable);
  w->U32(static_cast<uint32_t>(d.tensors.size()));
  w->Reserve(d.tensors.size() * kTensorBytes);
  for (const KvTensor& t : d.tensors) {
    w->U32(t.region);
    for (uint64_t v :
         {t.offset, t.block_stride, t.token_stride, t.head_stride}) {
      w->U64(v);
    }
  }
}

bool Printable(std::string_view s) {
  for (char c : s) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

}  // namespace

std::string KvLayout::Serialize() const {
  const internal::KvLayoutData& d = *data_;
  internal::ByteWriter w;
  w.Magic(kMagic);
  w.U16(kVersion);
  WriteGeometry(d.geometry, &w);
  w.Bytes(std::string_view(d.name).substr(0, kMaxNameBytes));
  WriteTensors(d, &w);
  return std::move(w).Take();
}

absl::StatusOr<KvLayout> KvLayout::Parse(std::string_view bytes) {
  internal::ByteReader r(bytes, "KvLayout descriptor");
  uint16_t version = 0;
  r.Magic("magic", kMagic);
  r.U16("version", &version);
  if (r.ok() && version != kVersion) {
    r.Fail(absl::StrFormat("version %u, this library reads %u", version,
                           kVersion));
  }
  KvGeometry g;
  r.U32("num_layers", &g.num_layers);
  r.U32("num_blocks", &g.num_blocks);
  r.U32("block_tokens", &g.block_tokens);
  r.U32("kv_heads", &g.kv_heads);
  r.U32("head_dim", &g.head_dim);
  r.U32("dtype_bytes", &g.dtype_bytes);
  r.U32("num_parts", &g.num_parts);
  if (!r.ok()) return r.status();
  if (absl::Status s = internal::CheckGeometry(g, "KvLayout descriptor");
      !s.ok()) {
    return s;
  }
  // CheckGeometry bounds the table at kMaxSerializedTensors.
  const uint64_t count = uint64_t{g.num_layers} * g.num_parts;
  std::string name;
  uint8_t encoding = 0;
  r.Bytes("name", kMaxNameBytes, &name);
  r.U8("encoding", &encoding);
  if (r.ok() && !Printable(name)) r.Fail("name is not printable ASCII");
  std::vector<KvTensor> tensors;
  if (r.ok() && encoding == kAffine) {
    uint32_t region0 = 0, layer_region = 0, part_region = 0;
    uint64_t offset0 = 0, layer_offset = 0, part_offset = 0;
    KvTensor strides;
    r.U32("region0", &region0);
    r.U32("layer_region_step", &layer_region);
    r.U32("part_region_step", &part_region);
    r.U64("offset0", &offset0);
    r.U64("layer_offset_step", &layer_offset);
    r.U64("part_offset_step", &part_offset);
    r.U64("block_stride", &strides.block_stride);
    r.U64("token_stride", &strides.token_stride);
    r.U64("head_stride", &strides.head_stride);
    if (r.ok()) {
      tensors.reserve(count);
      for (uint64_t l = 0; l < g.num_layers && r.ok(); ++l) {
        for (uint64_t p = 0; p < g.num_parts; ++p) {
          const uint64_t region = region0 + l * layer_region + p * part_region;
          if (region > UINT32_MAX) {
            r.Fail(absl::StrFormat(
                "region of layer %u part %u (%u + %u * %u + %u * %u) exceeds "
                "32 bits",
                l, p, region0, l, layer_region, p, part_region));
            break;
          }
          KvTensor t = strides;
          t.region = static_cast<uint32_t>(region);
          t.offset = offset0 + l * layer_offset + p * part_offset;
          tensors.push_back(t);
        }
      }
    }
  } else if (r.ok() && encoding == kTable) {
    uint32_t n = 0;
    r.U32("tensor count", &n);
    if (r.ok() && n != count) {
      r.Fail(absl::StrFormat("tensor count %u, num_layers * num_parts = %u", n,
                             count));
    }
    if (r.ok() && r.remaining() < count * kTensorBytes) {
      r.Fail(
          absl::StrFormat("truncated tensor table (needs %u bytes, %u "
                          "left)",
                          count * kTensorBytes, r.remaining()));
    }
    tensors.resize(r.ok() ? count : 0);
    for (KvTensor& t : tensors) {
      r.U32("region", &t.region);
      r.U64("offset", &t.offset);
      r.U64("block_stride", &t.block_stride);
      r.U64("token_stride", &t.token_stride);
      r.U64("head_stride", &t.head_stride);
    }
  } else if (r.ok()) {
    r.Fail(absl::StrFormat("encoding %u is not 0 (affine) or 1 (table)",
                           encoding));
  }
  if (absl::Status s = r.End(); !s.ok()) return s;
  absl::StatusOr<KvLayout> layout =
      internal::MakeLayout(g, std::move(name), std::move(tensors));
  if (!layout.ok()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("KvLayout descriptor: %s", layout.status().message()));
  }
  return layout;
}

uint64_t KvLayout::Fingerprint() const {
  internal::ByteWriter w;
  w.Magic(kMagic);
  w.U16(kVersion);
  WriteGeometry(data_->geometry, &w);
  WriteTensors(*data_, &w);
  const std::string& canonical = w.bytes();
  const internal::Sha256Digest digest = internal::HmacSha256(
      "flowkv.KvLayout.Fingerprint",
      absl::Span<const uint8_t>(
          reinterpret_cast<const uint8_t*>(canonical.data()),
          canonical.size()));
  uint64_t fingerprint = 0;
  for (int i = 0; i < 8; ++i) {
    fingerprint |= uint64_t{digest[i]} << (8 * i);
  }
  return fingerprint;
}

absl::Status CheckKvExchange(const KvLayout& a, const KvLayout& b) {
  const KvGeometry& x = a.geometry();
  const KvGeometry& y = b.geometry();
  const std::pair<const char*, std::pair<uint32_t, uint32_t>> fields[] = {
      {"num_layers", {x.num_layers, y.num_layers}},
      {"num_parts", {x.num_parts, y.num_parts}},
      {"head_dim", {x.head_dim, y.head_dim}},
      {"dtype_bytes", {x.dtype_bytes, y.dtype_bytes}}};
  for (const auto& [name, values] : fields) {
    if (values.first != values.second) {
      return absl::InvalidArgumentError(
          absl::StrFormat("CheckKvExchange: %s differs: %u and %u", name,
                          values.first, values.second));
    }
  }
  const uint32_t small = std::min(x.kv_heads, y.kv_heads);
  const uint32_t large = std::max(x.kv_heads, y.kv_heads);
  if (large % small != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "CheckKvExchange: kv_heads %u and %u: neither divides the other, no "
        "head split maps one onto the other",
        x.kv_heads, y.kv_heads));
  }
  return absl::OkStatus();
}

}  // namespace flowkv
