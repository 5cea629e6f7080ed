// SPDX-License-Identifier: Apache-2.0
// Fuzzes the KvTransfer notice decoder (lib/kv/kv_notice.h):
// ParseKvNotice on arbitrary bytes (the whole input is the notice).
//
// Checks: no crash, leak or undefined behaviour; IsKvNotice is true for
// every notice that parses; errors are InvalidArgument with a message;
// what parses obeys the documented field limits; and it round-trips:
// EncodeKvNotice of the value parses to the same value and re-encodes to
// the same bytes.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "lib/kv/kv_notice.h"
#include "tests/fuzz/fuzz_input.h"

namespace flowkv::internal {
namespace {

bool SameNotice(const KvNotice& a, const KvNotice& b) {
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case KvNoticeKind::kData:
      return a.request_id == b.request_id && a.sender_rank == b.sender_rank &&
             a.num_senders == b.num_senders && a.layer_begin == b.layer_begin &&
             a.layer_end == b.layer_end && a.token_begin == b.token_begin &&
             a.token_end == b.token_end && a.final_chunk == b.final_chunk &&
             a.payload == b.payload;
    case KvNoticeKind::kFailed:
    case KvNoticeKind::kReleased:
      return a.request_id == b.request_id && a.sender_rank == b.sender_rank &&
             a.num_senders == b.num_senders && a.code == b.code &&
             a.message == b.message;
    case KvNoticeKind::kPool:
      return a.layout == b.layout && a.regions == b.regions &&
             a.direct == b.direct && a.ring_region == b.ring_region &&
             a.slot_bytes == b.slot_bytes && a.slot_count == b.slot_count &&
             a.share == b.share;
    case KvNoticeKind::kSlot:
      return a.request_id == b.request_id && a.sender_rank == b.sender_rank &&
             a.num_senders == b.num_senders && a.slot_seq == b.slot_seq &&
             a.slot == b.slot && a.runs == b.runs;
    case KvNoticeKind::kCredit:
      return a.request_id == b.request_id && a.sender_rank == b.sender_rank &&
             a.num_senders == b.num_senders && a.slot == b.slot &&
             a.code == b.code && a.message == b.message;
  }
  return false;
}

void CheckLimits(const KvNotice& n) {
  if (n.kind == KvNoticeKind::kPool) {
    FUZZ_CHECK(!n.layout.empty() && n.layout.size() <= kMaxKvNoticeLayoutBytes);
    FUZZ_CHECK(n.regions.size() <= kMaxKvNoticeRegions);
    FUZZ_CHECK(n.direct == !n.regions.empty());
    FUZZ_CHECK(n.slot_count != 0 || (n.ring_region == 0 && n.slot_bytes == 0));
    return;
  }
  FUZZ_CHECK(!n.request_id.empty() &&
             n.request_id.size() <= kMaxKvRequestIdBytes);
  FUZZ_CHECK(n.num_senders >= 1 && n.num_senders <= kMaxKvSenders);
  FUZZ_CHECK(n.sender_rank < n.num_senders);
  if (n.kind == KvNoticeKind::kSlot) {
    FUZZ_CHECK(!n.runs.empty() && n.runs.size() <= kMaxKvSlotRuns);
    uint64_t total = 0;
    for (const KvSlotRun& run : n.runs) {
      FUZZ_CHECK(run.length > 0 && run.length <= (uint64_t{1} << 40));
      total += run.length;
    }
    FUZZ_CHECK(total <= (uint64_t{1} << 40));
    return;
  }
  if (n.kind == KvNoticeKind::kData) {
    FUZZ_CHECK(n.layer_begin < n.layer_end);
    FUZZ_CHECK(n.token_begin < n.token_end);
    FUZZ_CHECK(n.payload.size() <= kMaxKvPayloadBytes);
  } else {
    FUZZ_CHECK(n.message.size() <= kMaxKvNoticeMessageBytes);
    const int code = static_cast<int>(n.code);
    FUZZ_CHECK(code <= 16);
    FUZZ_CHECK(code >= (n.kind == KvNoticeKind::kFailed ? 1 : 0));
    // kReleased and kCredit may carry OK (fetched, scattered).
  }
}

}  // namespace
}  // namespace flowkv::internal

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace flowkv::internal;  // NOLINT
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<KvNotice> notice = ParseKvNotice(bytes);
  if (!notice.ok()) {
    FUZZ_CHECK(notice.status().code() == absl::StatusCode::kInvalidArgument,
               notice.status().ToString());
    FUZZ_CHECK(!notice.status().message().empty());
    return 0;
  }
  FUZZ_CHECK(IsKvNotice(bytes));
  CheckLimits(*notice);
  const std::string again = EncodeKvNotice(*notice);
  absl::StatusOr<KvNotice> back = ParseKvNotice(again);
  FUZZ_CHECK(back.ok(), back.status().ToString());
  FUZZ_CHECK(SameNotice(*notice, *back));
  FUZZ_CHECK(EncodeKvNotice(*back) == again);
  return 0;
}
