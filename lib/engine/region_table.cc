// SPDX-License-Identifier: Apache-2.0
// RegionTable: registered regions, their users and the bounds checks.

#include "lib/engine/region_table.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "lib/common/tsan_lock.h"

namespace flowkv::internal {

absl::Status CheckRange(std::string_view what, size_t op_index,
                        std::string_view region_name, uint64_t offset,
                        uint64_t length, uint64_t region_bytes) {
  uint64_t end = 0;
  if (__builtin_add_overflow(offset, length, &end) || end > region_bytes) {
    return absl::OutOfRangeError(absl::StrFormat(
        "%s: op %d: %s range [%d, +%d) exceeds its %d bytes", what, op_index,
        region_name, offset, length, region_bytes));
  }
  return absl::OkStatus();
}

namespace {

// [offset, offset + length) lies within `region_bytes`.
bool InRange(uint64_t offset, uint64_t length, uint64_t region_bytes) {
  uint64_t end = 0;
  return !__builtin_add_overflow(offset, length, &end) && end <= region_bytes;
}

}  // namespace

const RegionInfo* FindRegion(absl::Span<const RegionInfo> regions,
                             RegionId id) {
  for (const RegionInfo& region : regions) {
    if (region.id == id) return &region;
  }
  return nullptr;
}

RegionId RegionTable::Add(LocalRegion region) {
  TsanMutexLock lock(&mu_);
  region.info.id = next_id_++;
  const RegionId id = region.info.id;
  regions_[id] = std::move(region);
  return id;
}

absl::StatusOr<LocalRegion> RegionTable::Remove(RegionId id) {
  TsanMutexLock lock(&mu_);
  auto it = regions_.find(id);
  if (it == regions_.end()) {
    return absl::NotFoundError(
        absl::StrFormat("DeregisterMemory: no region %d", id));
  }
  if (it->second.active_users > 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "DeregisterMemory: region %d is used by %d unfinished transfers", id,
        it->second.active_users));
  }
  LocalRegion region = std::move(it->second);
  regions_.erase(it);
  return region;
}

std::vector<LocalRegion> RegionTable::Clear() {
  TsanMutexLock lock(&mu_);
  std::vector<LocalRegion> out;
  for (auto& [id, region] : regions_) out.push_back(std::move(region));
  regions_.clear();
  return out;
}

std::vector<RegionInfo> RegionTable::List() const {
  TsanMutexLock lock(&mu_);
  std::vector<RegionInfo> out;
  for (const auto& [id, region] : regions_) out.push_back(region.info);
  std::sort(
      out.begin(), out.end(),
      [](const RegionInfo& a, const RegionInfo& b) { return a.id < b.id; });
  return out;
}

std::vector<WireRegion> RegionTable::Wire() const {
  TsanMutexLock lock(&mu_);
  std::vector<WireRegion> out;
  for (const auto& [id, region] : regions_) {
    WireRegion wire;
    wire.id = id;
    wire.kind = static_cast<uint8_t>(region.info.kind);
    wire.base = region.info.base;
    wire.length = region.info.length;
    wire.rkey = region.rkey;
    out.push_back(std::move(wire));
  }
  std::sort(
      out.begin(), out.end(),
      [](const WireRegion& a, const WireRegion& b) { return a.id < b.id; });
  return out;
}

uint64_t RegionTable::total_bytes() const {
  TsanMutexLock lock(&mu_);
  uint64_t total = 0;
  for (const auto& [id, region] : regions_) total += region.info.length;
  return total;
}

absl::StatusOr<uint64_t> RegionTable::Acquire(
    std::string_view what, bool write, absl::Span<const TransferOp> ops,
    PeerId peer, const absl::flat_hash_map<RegionId, RegionInfo>& remote,
    std::vector<RegionId>* used) {
  TsanMutexLock lock(&mu_);
  const size_t used_before = used->size();
  const LocalRegion* local = nullptr;
  const RegionInfo* remote_region = nullptr;
  uint64_t bytes = 0;
  for (size_t i = 0; i < ops.size(); ++i) {
    const TransferOp& op = ops[i];
    const RegionId local_id = write ? op.src_region : op.dst_region;
    const RegionId remote_id = write ? op.dst_region : op.src_region;
    const uint64_t local_offset = write ? op.src_offset : op.dst_offset;
    const uint64_t remote_offset = write ? op.dst_offset : op.src_offset;
    if (op.length == 0) {
      used->resize(used_before);
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: op %d has length 0", what, i));
    }
    if (local == nullptr || local->info.id != local_id) {
      auto it = regions_.find(local_id);
      if (it == regions_.end()) {
        used->resize(used_before);
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: op %d names local region %d, which is not registered", what, i,
            local_id));
      }
      local = &it->second;
      if (std::find(used->begin() + used_before, used->end(), local_id) ==
          used->end()) {
        used->push_back(local_id);
      }
    }
    if (remote_region == nullptr || remote_region->id != remote_id) {
      auto it = remote.find(remote_id);
      if (it == remote.end()) {
        used->resize(used_before);
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: op %d names region %d of peer %d, which the peer did not "
            "register (before the handshake)",
            what, i, remote_id, peer));
      }
      remote_region = &it->second;
    }
    // The message (a formatted string) is built only for an op out of
    // range: formatting it for every op cost more than the checks.
    if (!InRange(local_offset, op.length, local->info.length) ||
        !InRange(remote_offset, op.length, remote_region->length)) {
      absl::Status s =
          CheckRange(what, i, absl::StrFormat("local region %d", local_id),
                     local_offset, op.length, local->info.length);
      if (s.ok()) {
        s = CheckRange(what, i,
                       absl::StrFormat("region %d of peer %d", remote_id, peer),
                       remote_offset, op.length, remote_region->length);
      }
      used->resize(used_before);
      return s;
    }
    bytes += op.length;
  }
  for (size_t i = used_before; i < used->size(); ++i) {
    ++regions_[(*used)[i]].active_users;
  }
  return bytes;
}

absl::Status RegionTable::AcquireRegions(std::string_view what,
                                         absl::Span<const RegionId> regions,
                                         std::vector<RegionId>* used) {
  TsanMutexLock lock(&mu_);
  for (RegionId id : regions) {
    if (!regions_.contains(id)) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "%s: local region %d of the prepared transfer was deregistered; "
          "prepare it again",
          what, id));
    }
  }
  for (RegionId id : regions) {
    ++regions_[id].active_users;
    used->push_back(id);
  }
  return absl::OkStatus();
}

void RegionTable::Release(absl::Span<const RegionId> used) {
  TsanMutexLock lock(&mu_);
  for (RegionId id : used) {
    auto it = regions_.find(id);
    if (it != regions_.end()) --it->second.active_users;
  }
}

RegionTable::Mapping RegionTable::Lookup(RegionId id) const {
  TsanMutexLock lock(&mu_);
  auto it = regions_.find(id);
  if (it == regions_.end()) return {};
  return {reinterpret_cast<char*>(it->second.info.base), it->second.memh,
          it->second.info.length, it->second.info.kind};
}

absl::StatusOr<char*> RegionTable::Resolve(std::string_view what, RegionId id,
                                           uint64_t offset,
                                           uint64_t length) const {
  const Mapping region = Lookup(id);
  if (region.base == nullptr) {
    return absl::NotFoundError(
        absl::StrFormat("%s: no region %d here", what, id));
  }
  if (absl::Status s = CheckRange(what, 0, absl::StrFormat("region %d", id),
                                  offset, length, region.length);
      !s.ok()) {
    return s;
  }
  return region.base + offset;
}

}  // namespace flowkv::internal
