// SPDX-License-Identifier: Apache-2.0
// KvRingSlots: the slot and credit accounting of one staging ring (see
// docs/gpu.md "Staging protocol") — which slot is lent to which staged
// send, which are free, and how many slots each sender has out here. Pure
// bookkeeping: no I/O, no clock, no threads. KvStaging (kv_staging.h) feeds
// it and does the I/O.
//
// The ring's slots are split in two halves: slots [0, send_slots) carry
// this side's sends, [send_slots, slot_count) the slots it receives, so
// two peers staging to each other never wait on each other's credits.
//
// The sending half. A send slot is acquired for a slot of one send (to one
// peer, of one request) and is "gathering" until the slot is in it; then
// the slot is announced, and the slot stays held until the peer's credit
// for it comes back (Credit), the send gives it up (ReleaseSend), or the
// peer fails (PeerFailed). A credit that does not name a slot held by a
// send of that request to that peer is refused and frees nothing.
//
// The receiving half. A receive slot holds one incoming slot while it is
// read and scattered. A sender may have at most one chunk per slot of its
// own ring out here (HoldChunk): an honest sender never has more.
//
// Thread safety: externally synchronized.

#ifndef FLOWKV_LIB_KV_KV_RING_SLOTS_H_
#define FLOWKV_LIB_KV_KV_RING_SLOTS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "flowkv/transfer_types.h"

namespace flowkv::internal {

class KvRingSlots {
 public:
  // A send slot freed, and the send that held it.
  struct Freed {
    uint32_t slot = 0;
    uint64_t send = 0;
  };

  // REQUIRES: send_slots <= slot_count.
  KvRingSlots(uint32_t slot_count, uint32_t send_slots);

  // --- The sending half: slots [0, send_slots) ---

  bool HasFreeSend() const { return !free_send_.empty(); }
  // Lends a free send slot to slot of `send` (to `peer`, of `request_id`),
  // gathering; nullopt when every send slot is held. Lowest slots first.
  std::optional<uint32_t> AcquireSend(uint64_t send, PeerId peer,
                                      std::string_view request_id);
  // The gather into `slot` for `send` ended (no-op unless `send` holds it).
  void GatherEnded(uint32_t slot, uint64_t send);
  // True when `slot` is held and still being gathered into.
  bool Gathering(uint32_t slot) const;
  // Frees `slot` if `send` holds it; false (nothing freed) otherwise.
  bool ReleaseSend(uint32_t slot, uint64_t send);
  // `peer`'s credit for `slot` of `request_id`: frees the slot and returns
  // the send that held it. InvalidArgument (nothing freed) when `slot` is
  // not a send slot held by a send of `request_id` to `peer`.
  absl::StatusOr<uint64_t> Credit(PeerId peer, uint32_t slot,
                                  std::string_view request_id);
  // `peer` failed: its credits will never come. Frees every send slot lent
  // to a send to `peer` that is not being gathered into (those are freed by
  // ReleaseSend once their gather ends) and returns them, by slot.
  std::vector<Freed> PeerFailed(PeerId peer);

  // --- The receiving half: slots [send_slots, slot_count) ---

  // A free receive slot, or nullopt when all hold slots.
  std::optional<uint32_t> AcquireReceive();
  // REQUIRES: `slot` was acquired with AcquireReceive and not released.
  void ReleaseReceive(uint32_t slot);
  // Counts a slot of `sender` (whose ring has `sender_slots` slots) held
  // here; false (nothing counted) when it already has that many.
  bool HoldSlot(PeerId sender, uint32_t sender_slots);
  // A slot of `sender` was answered or dropped.
  void SlotDone(PeerId sender);
  uint32_t slots_held(PeerId sender) const;

  // --- The whole ring ---
  uint32_t slot_count() const { return slot_count_; }
  uint32_t send_slots() const { return send_slots_; }
  uint32_t free() const { return free_; }
  // The most slots in use at once, both halves together.
  uint32_t max_in_use() const { return max_in_use_; }

 private:
  struct Holder {
    bool held = false;
    bool gathering = false;
    uint64_t send = 0;
    PeerId peer = 0;
    std::string request_id;
  };
  void Took();
  void FreeSend(uint32_t slot);

  const uint32_t slot_count_;
  const uint32_t send_slots_;
  // Stacks: the next slot lent is the back.
  std::vector<uint32_t> free_send_;
  std::vector<uint32_t> free_receive_;
  std::vector<Holder> holders_;  // per send slot
  absl::flat_hash_map<PeerId, uint32_t> slots_held_;
  uint32_t free_ = 0;
  uint32_t max_in_use_ = 0;
};

}  // namespace flowkv::internal

#endif  // FLOWKV_LIB_KV_KV_RING_SLOTS_H_
