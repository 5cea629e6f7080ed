// SPDX-License-Identifier: Apache-2.0
// Encoding and parsing of KvTransfer's notices (see kv_notice.h), on top of
// byte_io.h. Calls nothing else.
#include "lib/kv/kv_notice.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "lib/common/byte_io.h"

namespace flowkv::internal {
namespace {

constexpr uint8_t kFinalChunkFlag = 1;
constexpr uint8_t kDirectFlag = 1;
constexpr uint32_t kMaxStatusCode = 16;  // absl::StatusCode::kUnauthenticated

// The body of a kind 4 notice (pool descriptor), after the kind.
absl::StatusOr<KvNotice> ParsePool(ByteReader& r, KvNotice n) {
  uint32_t num_regions = 0;
  if (r.Bytes("layout", kMaxKvNoticeLayoutBytes, &n.layout) &&
      n.layout.empty()) {
    r.Fail("empty layout");
  }
  if (r.U32("num_regions", &num_regions) && num_regions > kMaxKvNoticeRegions) {
    r.Fail(absl::StrFormat("num_regions %d is not in [0, %d]", num_regions,
                           kMaxKvNoticeRegions));
  }
  if (!r.ok()) return r.status();
  if (r.remaining() / 4 < num_regions) {
    r.Fail(
        absl::StrFormat("truncated at regions (%d regions need %d bytes, "
                        "%d left)",
                        num_regions, 4ull * num_regions, r.remaining()));
    return r.status();
  }
  n.regions.resize(num_regions);
  for (RegionId& region : n.regions) r.U32("region", &region);
  uint8_t flags = 0;
  if (r.U8("flags", &flags) && (flags & ~kDirectFlag) != 0) {
    r.Fail(absl::StrFormat("unknown pool flags 0x%x", flags));
  }
  n.direct = (flags & kDirectFlag) != 0;
  if (r.ok() && n.direct != (num_regions > 0)) {
    r.Fail(
        absl::StrFormat("num_regions %d with direct %d (a direct pool "
                        "names its regions, another names none)",
                        num_regions, n.direct));
  }
  r.U32("ring_region", &n.ring_region);
  r.U64("slot_bytes", &n.slot_bytes);
  if (r.U32("slot_count", &n.slot_count) && r.ok()) {
    if (n.slot_count > kMaxKvRingSlots) {
      r.Fail(absl::StrFormat("slot_count %d is not in [0, %d]", n.slot_count,
                             kMaxKvRingSlots));
    } else if (n.slot_count > 0 &&
               (n.slot_bytes == 0 || n.slot_bytes > (1ull << 40))) {
      r.Fail(
          absl::StrFormat("slot_bytes %d is not in [1, 2^40]", n.slot_bytes));
    } else if (n.slot_count == 0 && (n.slot_bytes != 0 || n.ring_region != 0)) {
      r.Fail("a ring region or slot size without slots");
    }
  }
  r.Bytes("share", kMaxKvShareBytes, &n.share);
  if (absl::Status s = r.End(); !s.ok()) return s;
  return n;
}

// The body of a kind 5 notice (staged slot), after the request fields.
void ParseSlot(ByteReader& r, KvNotice& n) {
  uint32_t num_runs = 0;
  r.U32("slot_seq", &n.slot_seq);
  r.U32("sender_slot", &n.slot);
  if (r.U32("num_runs", &num_runs) &&
      (num_runs == 0 || num_runs > kMaxKvSlotRuns)) {
    r.Fail(absl::StrFormat("num_runs %d is not in [1, %d]", num_runs,
                           kMaxKvSlotRuns));
  }
  if (!r.ok()) return;
  if (r.remaining() / 20 < num_runs) {
    r.Fail(absl::StrFormat("truncated at runs (%d runs need %d bytes, %d left)",
                           num_runs, 20ull * num_runs, r.remaining()));
    return;
  }
  n.runs.resize(num_runs);
  uint64_t total = 0;
  for (KvSlotRun& run : n.runs) {
    r.U32("run region", &run.region);
    r.U64("run offset", &run.offset);
    if (r.U64("run length", &run.length) &&
        (run.length == 0 || run.length > (1ull << 40) - total)) {
      r.Fail(
          absl::StrFormat("run length %d is 0 or takes the slot past "
                          "2^40 bytes",
                          run.length));
      return;
    }
    total += run.length;
  }
}

}  // namespace

std::string EncodeKvNotice(const KvNotice& notice) {
  ByteWriter w;
  w.Reserve(96 + notice.request_id.size() + notice.payload.size() +
            notice.message.size() + notice.layout.size() +
            4 * notice.regions.size() + notice.share.size() +
            20 * notice.runs.size());
  w.Magic(kKvNoticeMagic);
  w.U16(kKvNoticeVersion);
  w.U8(static_cast<uint8_t>(notice.kind));
  if (notice.kind == KvNoticeKind::kPool) {
    w.Bytes(notice.layout);
    w.U32(static_cast<uint32_t>(notice.regions.size()));
    for (RegionId region : notice.regions) w.U32(region);
    w.U8(notice.direct ? kDirectFlag : 0);
    w.U32(notice.ring_region);
    w.U64(notice.slot_bytes);
    w.U32(notice.slot_count);
    w.Bytes(notice.share);
    return std::move(w).Take();
  }
  w.Bytes(notice.request_id);
  w.U32(notice.sender_rank);
  w.U32(notice.num_senders);
  switch (notice.kind) {
    case KvNoticeKind::kData:
      w.U32(notice.layer_begin);
      w.U32(notice.layer_end);
      w.U64(notice.token_begin);
      w.U64(notice.token_end);
      w.U8(notice.final_chunk ? kFinalChunkFlag : 0);
      w.Bytes(notice.payload);
      break;
    case KvNoticeKind::kFailed:
    case KvNoticeKind::kReleased:
      w.U32(static_cast<uint32_t>(notice.code));
      w.Bytes(
          std::string_view(notice.message).substr(0, kMaxKvNoticeMessageBytes));
      break;
    case KvNoticeKind::kSlot:
      w.U32(notice.slot_seq);
      w.U32(notice.slot);
      w.U32(static_cast<uint32_t>(notice.runs.size()));
      for (const KvSlotRun& run : notice.runs) {
        w.U32(run.region);
        w.U64(run.offset);
        w.U64(run.length);
      }
      break;
    case KvNoticeKind::kCredit:
      w.U32(notice.slot);
      w.U32(static_cast<uint32_t>(notice.code));
      w.Bytes(
          std::string_view(notice.message).substr(0, kMaxKvNoticeMessageBytes));
      break;
    case KvNoticeKind::kPool:
      break;  // written above
  }
  return std::move(w).Take();
}

bool IsKvNotice(std::string_view bytes) {
  return bytes.substr(0, kKvNoticeMagic.size()) == kKvNoticeMagic;
}

absl::StatusOr<KvNotice> ParseKvNotice(std::string_view bytes) {
  ByteReader r(bytes, "KvNotice");
  KvNotice n;
  uint16_t version = 0;
  uint8_t kind = 0;
  r.Magic("magic", kKvNoticeMagic);
  if (r.U16("version", &version) && version != kKvNoticeVersion) {
    r.Fail(absl::StrFormat("version %d is not supported (this side speaks %d)",
                           version, kKvNoticeVersion));
  }
  if (r.U8("kind", &kind) &&
      (kind < static_cast<uint8_t>(KvNoticeKind::kData) ||
       kind > static_cast<uint8_t>(KvNoticeKind::kCredit))) {
    r.Fail(absl::StrFormat("unknown kind %d", kind));
  }
  if (!r.ok()) return r.status();
  n.kind = static_cast<KvNoticeKind>(kind);
  if (n.kind == KvNoticeKind::kPool) return ParsePool(r, std::move(n));
  if (r.Bytes("request_id", kMaxKvRequestIdBytes, &n.request_id) &&
      n.request_id.empty()) {
    r.Fail("empty request_id");
  }
  r.U32("sender_rank", &n.sender_rank);
  if (r.U32("num_senders", &n.num_senders) &&
      (n.num_senders == 0 || n.num_senders > kMaxKvSenders)) {
    r.Fail(absl::StrFormat("num_senders %d is not in [1, %d]", n.num_senders,
                           kMaxKvSenders));
  }
  if (r.ok() && n.sender_rank >= n.num_senders) {
    r.Fail(absl::StrFormat("sender_rank %d >= num_senders %d", n.sender_rank,
                           n.num_senders));
  }
  if (!r.ok()) return r.status();
  if (n.kind == KvNoticeKind::kData) {
    uint8_t flags = 0;
    r.U32("layer_begin", &n.layer_begin);
    if (r.U32("layer_end", &n.layer_end) && n.layer_begin >= n.layer_end) {
      r.Fail(absl::StrFormat("empty layer range [%d, %d)", n.layer_begin,
                             n.layer_end));
    }
    r.U64("token_begin", &n.token_begin);
    if (r.U64("token_end", &n.token_end) && n.token_begin >= n.token_end) {
      r.Fail(absl::StrFormat("empty token range [%d, %d)", n.token_begin,
                             n.token_end));
    }
    if (r.U8("flags", &flags) && (flags & ~kFinalChunkFlag) != 0) {
      r.Fail(absl::StrFormat("unknown flags 0x%x", flags));
    }
    n.final_chunk = (flags & kFinalChunkFlag) != 0;
    r.Bytes("payload", kMaxKvPayloadBytes, &n.payload);
  } else if (n.kind == KvNoticeKind::kSlot) {
    ParseSlot(r, n);
  } else {
    if (n.kind == KvNoticeKind::kCredit) r.U32("sender_slot", &n.slot);
    uint32_t code = 0;
    const uint32_t min_code = n.kind == KvNoticeKind::kFailed ? 1 : 0;
    if (r.U32("code", &code) && (code < min_code || code > kMaxStatusCode)) {
      r.Fail(absl::StrFormat("status code %d is not in [%d, %d]", code,
                             min_code, kMaxStatusCode));
    }
    n.code = static_cast<absl::StatusCode>(code);
    r.Bytes("message", kMaxKvNoticeMessageBytes, &n.message);
  }
  if (absl::Status s = r.End(); !s.ok()) return s;
  return n;
}

}  // namespace flowkv::internal
