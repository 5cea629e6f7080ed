// SPDX-License-Identifier: Apache-2.0
// KvRingSlots (see kv_ring_slots.h): the free stacks of the two halves,
// the holder of each send slot, and the slots each sender has out here.
// Calls nothing.
#include "lib/kv/kv_ring_slots.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace flowkv::internal {

KvRingSlots::KvRingSlots(uint32_t slot_count, uint32_t send_slots)
    : slot_count_(slot_count),
      send_slots_(std::min(send_slots, slot_count)),
      holders_(send_slots_),
      free_(slot_count) {
  for (uint32_t s = send_slots_; s > 0; --s) free_send_.push_back(s - 1);
  for (uint32_t s = slot_count_; s > send_slots_; --s) {
    free_receive_.push_back(s - 1);
  }
}

void KvRingSlots::Took() {
  --free_;
  max_in_use_ = std::max(max_in_use_, slot_count_ - free_);
}

std::optional<uint32_t> KvRingSlots::AcquireSend(uint64_t send, PeerId peer,
                                                 std::string_view request_id) {
  if (free_send_.empty()) return std::nullopt;
  const uint32_t slot = free_send_.back();
  free_send_.pop_back();
  Took();
  holders_[slot] = {.held = true,
                    .gathering = true,
                    .send = send,
                    .peer = peer,
                    .request_id = std::string(request_id)};
  return slot;
}

void KvRingSlots::GatherEnded(uint32_t slot, uint64_t send) {
  if (slot < holders_.size() && holders_[slot].held &&
      holders_[slot].send == send) {
    holders_[slot].gathering = false;
  }
}

bool KvRingSlots::Gathering(uint32_t slot) const {
  return slot < holders_.size() && holders_[slot].held &&
         holders_[slot].gathering;
}

void KvRingSlots::FreeSend(uint32_t slot) {
  holders_[slot] = Holder{};
  free_send_.push_back(slot);
  ++free_;
}

bool KvRingSlots::ReleaseSend(uint32_t slot, uint64_t send) {
  if (slot >= holders_.size() || !holders_[slot].held ||
      holders_[slot].send != send) {
    return false;
  }
  FreeSend(slot);
  return true;
}

absl::StatusOr<uint64_t> KvRingSlots::Credit(PeerId peer, uint32_t slot,
                                             std::string_view request_id) {
  if (slot >= holders_.size() || !holders_[slot].held ||
      holders_[slot].peer != peer || holders_[slot].request_id != request_id) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "a credit from peer %d for slot %d of request '%s': no send of that "
        "request to that peer holds the slot (%d send slots)",
        peer, slot, request_id, holders_.size()));
  }
  const uint64_t send = holders_[slot].send;
  FreeSend(slot);
  return send;
}

std::vector<KvRingSlots::Freed> KvRingSlots::PeerFailed(PeerId peer) {
  std::vector<Freed> freed;
  for (uint32_t slot = 0; slot < holders_.size(); ++slot) {
    const Holder& holder = holders_[slot];
    if (!holder.held || holder.peer != peer || holder.gathering) continue;
    freed.push_back({.slot = slot, .send = holder.send});
    FreeSend(slot);
  }
  return freed;
}

std::optional<uint32_t> KvRingSlots::AcquireReceive() {
  if (free_receive_.empty()) return std::nullopt;
  const uint32_t slot = free_receive_.back();
  free_receive_.pop_back();
  Took();
  return slot;
}

void KvRingSlots::ReleaseReceive(uint32_t slot) {
  free_receive_.push_back(slot);
  ++free_;
}

bool KvRingSlots::HoldSlot(PeerId sender, uint32_t sender_slots) {
  uint32_t& held = slots_held_[sender];
  if (held >= sender_slots) {
    if (held == 0) slots_held_.erase(sender);
    return false;
  }
  ++held;
  return true;
}

void KvRingSlots::SlotDone(PeerId sender) {
  auto it = slots_held_.find(sender);
  if (it != slots_held_.end() && --it->second == 0) slots_held_.erase(it);
}

uint32_t KvRingSlots::slots_held(PeerId sender) const {
  auto it = slots_held_.find(sender);
  return it == slots_held_.end() ? 0 : it->second;
}

}  // namespace flowkv::internal
