// SPDX-License-Identifier: Apache-2.0
// KvNotice: the bytes KvTransfer sends as a TransferEngine notification
// (TransferOptions::notification, kind kTransfer). They arrive from the
// network, so the parser checks everything before use.
//
// All integers little-endian; bytes = u32 length + the bytes.
//
//   every kind:
//     "FKVN"  u16 version (1)  u8 kind
//   kinds 1-3, about a request:
//     bytes request_id (1..256)  u32 sender_rank  u32 num_senders (1..4096)
//   kind 1, data (a piece of a request arrived: the data is in place):
//     u32 layer_begin  u32 layer_end          (layer_begin < layer_end)
//     u64 token_begin  u64 token_end          (token_begin < token_end)
//     u8 flags (bit 0: final chunk of this sender; other bits 0)
//     bytes payload (0..64 KiB)
//   kind 2, failed (the sender's piece will not come):
//     u32 status code (1..16, absl::StatusCode)  bytes message (0..1024)
//   kind 3, released (the fetching side is done with the sender's blocks):
//     u32 status code (0..16; 0 = fetched)     bytes message (0..1024)
//   kind 4, pool (the sender's pool descriptor; no request fields):
//     bytes layout (1..64 KiB: KvLayout::Serialize(), which the receiver
//                   reads with KvLayout::Parse)
//     u32 num_regions (0..1024)  then num_regions x u32 engine region id
//                   (the sender's engine region holding layout region i)
//     u8 flags (bit 0: direct, the regions above hold the pool; then
//                   num_regions >= 1, else 0; other bits 0)
//     u32 ring_region  u64 slot_bytes  u32 slot_count (0..1M; 0: no
//                   staging ring, and then ring_region and slot_bytes 0)
//     bytes share (0..16 KiB: KvPoolMemory::ShareDescriptor, empty when the
//                   pool cannot be shared)
//   kind 5, slot (staging: a slot of a piece is in the sender's ring):
//     u32 slot_seq  u32 sender_slot
//     u32 num_runs (1..kMaxKvSlotRuns)  then per run, in slot order:
//       u32 dst_region  u64 dst_offset  u64 length (> 0)
//                   (the runs' bytes lie packed from the slot's start; the
//                   total is at most 2^40)
//   kind 6, credit (staging: the receiver is done with a slot):
//     u32 sender_slot  u32 status code (0..16; 0 = scattered)
//     bytes message (0..1024)
//
// sender_rank < num_senders. No trailing bytes. No checksum: notifications
// travel over UCX's reliable transports, and every field is validated.
// Limits that depend on the receiver (layer_end <= its num_layers) are
// checked by KvRequestTracker; the layout bytes of a pool descriptor and
// whether its region count matches the layout, by KvTransfer.
//
// Thread safety: thread-safe (pure functions and value types).

#ifndef FLOWKV_LIB_KV_KV_NOTICE_H_
#define FLOWKV_LIB_KV_KV_NOTICE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "flowkv/kv_layout.h"
#include "flowkv/kv_transfer.h"
#include "flowkv/transfer_engine.h"

namespace flowkv::internal {

inline constexpr std::string_view kKvNoticeMagic = "FKVN";
inline constexpr uint16_t kKvNoticeVersion = 1;
// kMaxKvRequestIdBytes, kMaxKvPayloadBytes, kMaxKvSenders: kv_transfer.h.
inline constexpr size_t kMaxKvNoticeMessageBytes = 1024;
// A serialized layout is at most about 37 KiB (KvLayout's tensor limit).
inline constexpr size_t kMaxKvNoticeLayoutBytes = 64 * 1024;
inline constexpr size_t kMaxKvNoticeRegions = KvLayout::kMaxSerializedTensors;

enum class KvNoticeKind : uint8_t {
  kData = 1,
  kFailed = 2,
  kReleased = 3,
  kPool = 4,
  kSlot = 5,
  kCredit = 6,
};

inline constexpr uint32_t kMaxKvSlotRuns = 16384;
inline constexpr uint32_t kMaxKvRingSlots = 1u << 20;
inline constexpr size_t kMaxKvShareBytes = 16 * 1024;

// One destination run of a staged slot.
struct KvSlotRun {
  uint32_t region = 0;  // layout region index of the receiver's pool
  uint64_t offset = 0;
  uint64_t length = 0;
  friend bool operator==(const KvSlotRun&, const KvSlotRun&) = default;
};

struct KvNotice {
  KvNoticeKind kind = KvNoticeKind::kData;
  std::string request_id;
  uint32_t sender_rank = 0;
  uint32_t num_senders = 1;
  // kData.
  uint32_t layer_begin = 0;
  uint32_t layer_end = 0;
  uint64_t token_begin = 0;
  uint64_t token_end = 0;
  bool final_chunk = true;
  std::string payload;
  // kFailed / kReleased: the sender's (fetcher's) status; message truncated
  // to kMaxKvNoticeMessageBytes when encoded.
  absl::StatusCode code = absl::StatusCode::kOk;
  std::string message;
  // kPool: the sender's KvLayout::Serialize() bytes and, per layout region,
  // the sender's engine region id. (The request fields above are unused.)
  std::string layout;
  std::vector<RegionId> regions;
  bool direct = true;
  RegionId ring_region = 0;
  uint64_t slot_bytes = 0;
  uint32_t slot_count = 0;
  std::string share;
  // kSlot: slot_seq, slot (the sender's), runs; kCredit: slot, and the
  // receiver's outcome in code / message.
  uint32_t slot_seq = 0;
  uint32_t slot = 0;
  std::vector<KvSlotRun> runs;
};

// REQUIRES: the fields are within the limits above (KvTransfer validates
// its callers' arguments first); a longer message is truncated.
std::string EncodeKvNotice(const KvNotice& notice);

// Whether `bytes` start with the notice magic (a notification KvTransfer
// sent, or one that claims to be).
bool IsKvNotice(std::string_view bytes);

// InvalidArgument naming the first bad field: bad magic, another version,
// an unknown kind, truncation, a length over its limit, an empty request
// id, sender_rank >= num_senders, an empty layer or token range, unknown
// flags, a status code out of range, an empty layout, a region count over
// kMaxKvNoticeRegions (or 0 in a direct pool's descriptor), trailing bytes. The
// layout bytes themselves are not parsed here.
absl::StatusOr<KvNotice> ParseKvNotice(std::string_view bytes);

}  // namespace flowkv::internal

#endif  // FLOWKV_LIB_KV_KV_NOTICE_H_
