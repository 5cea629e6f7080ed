// SPDX-License-Identifier: Apache-2.0
// KvTransfer's knowledge of peers' pools (see kv_transfer_impl.h): pools
// declared with AddPeerPool, this side's descriptor sent by AnnouncePool and
// answered once per peer, descriptors received (checked with KvLayout::Parse,
// CheckKvExchange and the engine's view of the peer's regions, then recorded
// or remembered as refused), the pool Send and Fetch plan against, a
// peer's staging ring for KvStaging (PeerRing), PeerPool and
// WaitForPeerPool. Calls KvLayout and the engine's public API.
#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "lib/common/tsan_lock.h"
#include "lib/kv/kv_notice.h"
#include "lib/kv/kv_transfer_impl.h"

namespace flowkv {
namespace {

using internal::KvNotice;
using internal::TsanMutexLock;

// How long WaitForPeerPool waits for the engine's notifications at a time
// before it looks again whether another thread (a concurrent Poll, an
// on_notification callback) handled the descriptor.
constexpr absl::Duration kWaitSlice = absl::Milliseconds(10);

std::string PoolHint() {
  return "call AnnouncePool on either side, or AddPeerPool";
}

}  // namespace

absl::Status internal::CheckKvRegions(const KvLayout& layout,
                                      const std::vector<RegionId>& regions,
                                      const std::vector<RegionInfo>& known,
                                      const std::string& owner) {
  if (regions.size() != layout.num_regions()) {
    return absl::InvalidArgumentError(
        absl::StrCat("KvTransfer: ", regions.size(), " regions given, the ",
                     "layout has ", layout.num_regions()));
  }
  for (uint32_t r = 0; r < regions.size(); ++r) {
    const RegionInfo* region =
        internal::EngineInternal::FindRegion(known, regions[r]);
    if (region == nullptr) {
      return absl::NotFoundError(
          absl::StrCat("KvTransfer: ", owner, " has no region ", regions[r]));
    }
    if (region->length < layout.region_bytes(r)) {
      return absl::InvalidArgumentError(
          absl::StrCat("KvTransfer: region ", regions[r], " of ", owner,
                       " holds ", region->length, " bytes, layout region ", r,
                       " needs ", layout.region_bytes(r)));
    }
  }
  return absl::OkStatus();
}

absl::Status KvTransfer::Impl::AddPeerPool(PeerId peer, const KvLayout& layout,
                                           std::vector<RegionId> peer_regions) {
  absl::StatusOr<PeerInfo> info = engine_->GetPeer(peer);
  if (!info.ok()) return info.status();
  if (absl::Status s = CheckKvExchange(layout_, layout); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("KvTransfer::AddPeerPool: peer ", peer, "'s pool (",
                     layout.ToString(), ") cannot exchange KV with this one (",
                     layout_.ToString(), "): ", s.message()));
  }
  if (absl::Status s = internal::CheckKvRegions(
          layout, peer_regions, info->regions, absl::StrCat("peer ", peer));
      !s.ok()) {
    return s;
  }
  auto declared = std::make_shared<PeerPoolInfo>(
      PeerPoolInfo{.layout = layout,
                   .regions = std::move(peer_regions),
                   .path_error = absl::OkStatus(),
                   .ipc = nullptr});
  if (!direct_ || policy_ != KvPathPolicy::kAuto) {
    declared->path_error = absl::FailedPreconditionError(absl::StrCat(
        "peer ", peer,
        "'s pool was declared with AddPeerPool, which offers the direct path "
        "only; this side's pool needs IPC or staging: call AnnouncePool"));
  }
  std::shared_ptr<const PeerPoolInfo> pool = std::move(declared);
  TsanMutexLock lock(&pools_mu_);
  pools_.insert_or_assign(peer, PeerPoolEntry{.pool = std::move(pool),
                                              .refused = absl::OkStatus(),
                                              .declared = true});
  return absl::OkStatus();
}

absl::Status KvTransfer::Impl::AnnouncePool(PeerId peer) {
  {
    // Before the descriptor leaves: the peer's answer must not be answered.
    TsanMutexLock lock(&pools_mu_);
    announced_.insert(peer);
  }
  TransferOptions options;
  options.notification = descriptor_;
  options.acknowledged = true;
  const absl::Status sent = engine_->Write(peer, {}, std::move(options)).Wait();
  if (sent.ok()) return absl::OkStatus();
  {
    TsanMutexLock lock(&pools_mu_);
    announced_.erase(peer);
  }
  return absl::Status(sent.code(), absl::StrCat("KvTransfer::AnnouncePool: "
                                                "peer ",
                                                peer, ": ", sent.message()));
}

absl::StatusOr<std::shared_ptr<const KvTransfer::Impl::PeerPoolInfo>>
KvTransfer::Impl::AcceptPool(PeerId peer, const KvNotice& notice) const {
  absl::StatusOr<KvLayout> layout = KvLayout::Parse(notice.layout);
  if (!layout.ok()) return layout.status();
  if (absl::Status s = CheckKvExchange(layout_, *layout); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("its pool (", layout->ToString(),
                     ") cannot exchange KV with this one (", layout_.ToString(),
                     "): ", s.message()));
  }
  absl::StatusOr<PeerInfo> info = engine_->GetPeer(peer);
  if (!info.ok()) return info.status();
  if (notice.direct) {
    if (absl::Status s =
            internal::CheckKvRegions(*layout, notice.regions, info->regions,
                                     absl::StrCat("peer ", peer));
        !s.ok()) {
      return absl::InvalidArgumentError(s.message());
    }
  }
  if (notice.slot_count > 0) {
    const RegionInfo* ring =
        internal::EngineInternal::FindRegion(info->regions, notice.ring_region);
    if (ring == nullptr ||
        ring->length / notice.slot_bytes < notice.slot_count) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "its staging ring (region %d, %d slots of %d bytes) is not a region "
          "this engine learned from it at connection (create the KvTransfer "
          "before connecting)",
          notice.ring_region, notice.slot_count, notice.slot_bytes));
    }
  }
  auto pool = std::make_shared<PeerPoolInfo>(
      PeerPoolInfo{.layout = *std::move(layout),
                   .regions = notice.regions,
                   .path_error = absl::OkStatus(),
                   .ipc = nullptr});
  pool->ring_region = notice.ring_region;
  pool->slot_bytes = notice.slot_bytes;
  pool->slot_count = notice.slot_count;
  ChoosePath(notice.share, notice.direct, pool.get());
  return std::shared_ptr<const PeerPoolInfo>(std::move(pool));
}

void KvTransfer::Impl::ChoosePath(const std::string& share, bool direct,
                                  PeerPoolInfo* info) const {
  std::string ipc_error = "the peer's pool cannot be shared";
  if (policy_ != KvPathPolicy::kForceStaging && pool_ != nullptr &&
      !share.empty()) {
    absl::StatusOr<std::unique_ptr<KvPeerPool>> opened = pool_->OpenPeer(share);
    if (opened.ok()) {
      info->ipc = *std::move(opened);
      info->path = KvPath::kIpc;
      return;
    }
    ipc_error = std::string(opened.status().message());
  } else if (pool_ == nullptr || pool_->ShareDescriptor().empty()) {
    ipc_error = "this side's pool cannot be shared";
  }
  if (policy_ == KvPathPolicy::kForceIpc) {
    info->path_error = absl::FailedPreconditionError(absl::StrCat(
        "path_policy kForceIpc, and IPC cannot reach the peer: ", ipc_error));
    return;
  }
  if (policy_ == KvPathPolicy::kAuto && direct_ && direct) {
    info->path = KvPath::kDirect;
    return;
  }
  info->path = KvPath::kStaging;
  if (ring_.slot_count == 0 || info->slot_count == 0) {
    info->path_error = absl::FailedPreconditionError(absl::StrCat(
        "the pools need the staging path, and ",
        ring_.slot_count == 0 ? "this side" : "the peer",
        " has no staging ring (a KvTransfer over engine regions has one only "
        "with path_policy kForceStaging)"));
  }
}

absl::StatusOr<KvPath> KvTransfer::Impl::PeerPath(PeerId peer) const {
  absl::StatusOr<std::shared_ptr<const PeerPoolInfo>> pool =
      FindPool("KvTransfer::PeerPath", peer);
  if (!pool.ok()) return pool.status();
  if (!(*pool)->path_error.ok()) {
    return absl::Status(
        (*pool)->path_error.code(),
        absl::StrCat("KvTransfer::PeerPath: ", (*pool)->path_error.message()));
  }
  return (*pool)->path;
}

void KvTransfer::Impl::HandlePoolNotice(PeerId peer, const KvNotice& notice) {
  absl::StatusOr<std::shared_ptr<const PeerPoolInfo>> pool =
      AcceptPool(peer, notice);
  absl::Status refused;
  if (!pool.ok()) {
    refused = absl::InvalidArgumentError(absl::StrCat(
        "peer ", peer,
        "'s pool descriptor was refused: ", pool.status().message()));
  }
  bool answer = false;
  bool log = false;
  {
    TsanMutexLock lock(&pools_mu_);
    PeerPoolEntry& entry = pools_[peer];
    if (!refused.ok()) ++pools_refused_;
    if (!entry.declared) {
      // The first sight of this error is logged; a repeat of it is not.
      log = !refused.ok() && entry.refused != refused;
      entry.pool = pool.ok() ? *std::move(pool) : nullptr;
      entry.refused = refused;
    }
    answer = announced_.insert(peer).second;
  }
  if (log && log_) {
    log_(LogSeverity::kWarning,
         absl::StrCat("KvTransfer: ", refused.message(),
                      "; Send and Fetch to it fail with this error"));
  }
  // Answered also when refused, so that the peer learns of the mismatch.
  if (answer) SendNoticeBytes(peer, descriptor_);
}

void KvTransfer::Impl::ForgetPeerPool(PeerId peer) {
  TsanMutexLock lock(&pools_mu_);
  pools_.erase(peer);
  announced_.erase(peer);
}

absl::StatusOr<std::shared_ptr<const KvTransfer::Impl::PeerPoolInfo>>
KvTransfer::Impl::FindPool(const char* caller, PeerId peer) const {
  TsanMutexLock lock(&pools_mu_);
  auto it = pools_.find(peer);
  if (it == pools_.end()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s: no pool known for peer %d (%s)", caller, peer, PoolHint()));
  }
  if (it->second.pool == nullptr) {
    return absl::Status(
        it->second.refused.code(),
        absl::StrCat(caller, ": ", it->second.refused.message()));
  }
  return it->second.pool;
}

std::optional<internal::KvPeerRing> KvTransfer::Impl::PeerRing(
    PeerId peer) const {
  absl::StatusOr<std::shared_ptr<const PeerPoolInfo>> pool =
      FindPool("KvTransfer (staged slot)", peer);
  if (!pool.ok() || (*pool)->slot_count == 0) return std::nullopt;
  return internal::KvPeerRing{.region = (*pool)->ring_region,
                              .slot_bytes = (*pool)->slot_bytes,
                              .slot_count = (*pool)->slot_count};
}

absl::StatusOr<KvLayout> KvTransfer::Impl::PeerPool(PeerId peer) const {
  TsanMutexLock lock(&pools_mu_);
  auto it = pools_.find(peer);
  if (it == pools_.end()) {
    return absl::NotFoundError(absl::StrFormat(
        "KvTransfer: no pool known for peer %d (%s)", peer, PoolHint()));
  }
  if (it->second.pool == nullptr) {
    return absl::Status(
        it->second.refused.code(),
        absl::StrCat("KvTransfer: ", it->second.refused.message()));
  }
  return it->second.pool->layout;
}

absl::Status KvTransfer::Impl::WaitForPeerPool(PeerId peer,
                                               absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    absl::StatusOr<KvLayout> known = PeerPool(peer);
    if (known.ok()) return absl::OkStatus();
    if (!absl::IsNotFound(known.status())) return known.status();
    absl::StatusOr<PeerInfo> info = engine_->GetPeer(peer);
    if (!info.ok()) return info.status();
    if (!info->connected) {
      return absl::UnavailableError(absl::StrFormat(
          "KvTransfer::WaitForPeerPool: peer %d disconnected: %s", peer,
          info->failure.message()));
    }
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(absl::StrFormat(
          "KvTransfer::WaitForPeerPool: no pool descriptor from peer %d "
          "within %s (%s)",
          peer, absl::FormatDuration(timeout), PoolHint()));
    }
    for (Notification& n :
         engine_->TakeNotifications(std::min(left, kWaitSlice))) {
      if (HandleNotification(n)) continue;
      TsanMutexLock lock(&mu_);
      other_.push_back(std::move(n));
    }
  }
}

}  // namespace flowkv
