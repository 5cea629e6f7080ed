#include "flowkv/kv_transfer.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "flowkv/transfer_plan.h"
#include "lib/common/tsan_lock.h"
#include "lib/transfer/transfer_record.h"

namespace flowkv {
namespace {

// A KvTransfer notification: magic, request id, layer range (little endian,
// as every peer of one cluster runs on the same byte order).
constexpr char kMagic[4] = {'F', 'K', 'V', '1'};
struct LayerNotice {
  uint64_t request_id;
  uint32_t layer_begin;
  uint32_t layer_end;
};
constexpr size_t kNoticeBytes = sizeof(kMagic) + sizeof(LayerNotice);

std::string EncodeNotice(const LayerNotice& notice) {
  std::string bytes(kNoticeBytes, '\0');
  std::memcpy(bytes.data(), kMagic, sizeof(kMagic));
  std::memcpy(bytes.data() + sizeof(kMagic), &notice, sizeof(notice));
  return bytes;
}

bool DecodeNotice(const std::string& bytes, LayerNotice* notice) {
  if (bytes.size() != kNoticeBytes ||
      std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) {
    return false;
  }
  std::memcpy(notice, bytes.data() + sizeof(kMagic), sizeof(*notice));
  return true;
}

// A handle that is already done with `status`.
TransferHandle FailedHandle(absl::Status status) {
  const absl::Time now = absl::Now();
  auto record = std::make_shared<internal::TransferRecord>(
      0, 0, 0, now, nullptr, std::weak_ptr<internal::Inbox>());
  record->Complete(std::move(status), now);
  return TransferHandle(std::move(record));
}

// OK when `regions` names one region of `known` per region of `layout`,
// each large enough for it. `owner` names whose regions they are in errors.
absl::Status CheckRegions(const KvLayout& layout,
                          const std::vector<RegionId>& regions,
                          const std::vector<RegionInfo>& known,
                          const std::string& owner) {
  if (regions.size() != layout.num_regions()) {
    return absl::InvalidArgumentError(
        absl::StrCat("KvTransfer: ", regions.size(), " regions given, the ",
                     "layout has ", layout.num_regions()));
  }
  for (RegionId id : regions) {
    auto it = std::find_if(known.begin(), known.end(),
                           [id](const RegionInfo& r) { return r.id == id; });
    if (it == known.end()) {
      return absl::NotFoundError(
          absl::StrCat("KvTransfer: ", owner, " has no region ", id));
    }
    if (it->length < layout.region_bytes()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "KvTransfer: region ", id, " of ", owner, " holds ", it->length,
          " bytes, the layout needs ", layout.region_bytes()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

class KvTransfer::Impl {
 public:
  Impl(TransferEngine* engine, const KvLayout& layout,
       std::vector<RegionId> regions)
      : engine_(engine), layout_(layout), regions_(std::move(regions)) {}

  absl::Status AddPeerPool(PeerId peer, const KvLayout& layout,
                           std::vector<RegionId> peer_regions) {
    absl::StatusOr<PeerInfo> info = engine_->GetPeer(peer);
    if (!info.ok()) return info.status();
    if (absl::Status s = CheckRegions(layout, peer_regions, info->regions,
                                      absl::StrCat("peer ", peer));
        !s.ok()) {
      return s;
    }
    internal::TsanMutexLock lock(&mu_);
    peers_.insert_or_assign(peer, PeerPool{layout, std::move(peer_regions)});
    return absl::OkStatus();
  }

  TransferHandle Send(uint64_t request_id, PeerId peer,
                      const KvSendRequest& request) {
    TransferPlanRequest plan{.src_layout = &layout_,
                             .src_blocks = request.src_blocks,
                             .dst_blocks = request.dst_blocks,
                             .num_tokens = request.num_tokens,
                             .layer_begin = request.layer_begin,
                             .layer_end = request.layer_end,
                             .src_head_begin = request.src_head_begin,
                             .dst_head_begin = request.dst_head_begin,
                             .num_heads = request.num_heads};
    {
      internal::TsanMutexLock lock(&mu_);
      auto it = peers_.find(peer);
      if (it == peers_.end()) {
        return FailedHandle(absl::FailedPreconditionError(
            absl::StrCat("KvTransfer::Send: no pool declared for peer ", peer,
                         " (call AddPeerPool)")));
      }
      plan.dst_layout = &it->second.layout;
      const std::vector<RegionId>& peer_regions = it->second.regions;
      // Plan under the lock: AddPeerPool may replace the layout.
      ops_.clear();
      if (absl::Status s = AppendTransferPlan(plan, &ops_); !s.ok()) {
        return FailedHandle(std::move(s));
      }
      for (TransferOp& op : ops_) {
        op.src_region = regions_[op.src_region];
        op.dst_region = peer_regions[op.dst_region];
      }
      const uint32_t layer_end = request.layer_end == 0
                                     ? layout_.geometry().num_layers
                                     : request.layer_end;
      TransferOptions options;
      options.notification =
          EncodeNotice({request_id, request.layer_begin, layer_end});
      options.timeout = request.timeout;
      return engine_->Write(peer, ops_, std::move(options));
    }
  }

  bool HandleNotification(const Notification& n) {
    LayerNotice notice;
    if (n.kind != Notification::Kind::kTransfer ||
        !DecodeNotice(n.bytes, &notice)) {
      return false;
    }
    const uint32_t layers = layout_.geometry().num_layers;
    internal::TsanMutexLock lock(&mu_);
    if (notice.layer_begin >= notice.layer_end || notice.layer_end > layers) {
      return true;  // Not ours to act on: a peer with another layer count.
    }
    std::vector<bool>& arrived = arriving_[notice.request_id];
    if (arrived.empty()) arrived.assign(layers, false);
    for (uint32_t l = notice.layer_begin; l < notice.layer_end; ++l) {
      arrived[l] = true;
    }
    if (std::find(arrived.begin(), arrived.end(), false) == arrived.end()) {
      arriving_.erase(notice.request_id);
      finished_.push_back(notice.request_id);
    }
    return true;
  }

  std::vector<uint64_t> TakeFinished() {
    internal::TsanMutexLock lock(&mu_);
    return std::exchange(finished_, {});
  }

  KvPollResult Poll(absl::Duration wait) {
    KvPollResult result;
    for (Notification& n : engine_->TakeNotifications(wait)) {
      if (!HandleNotification(n)) result.other.push_back(std::move(n));
    }
    result.finished = TakeFinished();
    return result;
  }

  uint32_t LayersArrived(uint64_t request_id) const {
    internal::TsanMutexLock lock(&mu_);
    if (std::find(finished_.begin(), finished_.end(), request_id) !=
        finished_.end()) {
      return layout_.geometry().num_layers;
    }
    auto it = arriving_.find(request_id);
    if (it == arriving_.end()) return 0;
    return static_cast<uint32_t>(
        std::count(it->second.begin(), it->second.end(), true));
  }

  const KvLayout& layout() const { return layout_; }

 private:
  struct PeerPool {
    KvLayout layout;
    std::vector<RegionId> regions;
  };

  TransferEngine* const engine_;
  const KvLayout layout_;
  const std::vector<RegionId> regions_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<PeerId, PeerPool> peers_ ABSL_GUARDED_BY(mu_);
  // Reused plan buffer (Send plans under mu_).
  std::vector<TransferOp> ops_ ABSL_GUARDED_BY(mu_);
  // Per request still arriving: which layers have arrived.
  absl::flat_hash_map<uint64_t, std::vector<bool>> arriving_
      ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> finished_ ABSL_GUARDED_BY(mu_);
};

absl::StatusOr<std::unique_ptr<KvTransfer>> KvTransfer::Create(
    TransferEngine* engine, const KvLayout& layout,
    std::vector<RegionId> regions) {
  if (engine == nullptr) {
    return absl::InvalidArgumentError("KvTransfer: engine is null");
  }
  if (absl::Status s =
          CheckRegions(layout, regions, engine->Regions(), "the engine");
      !s.ok()) {
    return s;
  }
  return std::unique_ptr<KvTransfer>(new KvTransfer(
      std::make_unique<Impl>(engine, layout, std::move(regions))));
}

KvTransfer::KvTransfer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
KvTransfer::~KvTransfer() = default;

absl::Status KvTransfer::AddPeerPool(PeerId peer, const KvLayout& layout,
                                     std::vector<RegionId> peer_regions) {
  return impl_->AddPeerPool(peer, layout, std::move(peer_regions));
}
TransferHandle KvTransfer::Send(uint64_t request_id, PeerId peer,
                                const KvSendRequest& request) {
  return impl_->Send(request_id, peer, request);
}
KvPollResult KvTransfer::Poll(absl::Duration wait) { return impl_->Poll(wait); }
bool KvTransfer::HandleNotification(const Notification& notification) {
  return impl_->HandleNotification(notification);
}
std::vector<uint64_t> KvTransfer::TakeFinished() {
  return impl_->TakeFinished();
}
uint32_t KvTransfer::LayersArrived(uint64_t request_id) const {
  return impl_->LayersArrived(request_id);
}
const KvLayout& KvTransfer::layout() const { return impl_->layout(); }

}  // namespace flowkv
