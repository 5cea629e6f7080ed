// SPDX-License-Identifier: Apache-2.0
// KvTransfer's lifecycle (see kv_transfer_impl.h): Create (options and
// regions checked, the staging ring allocated when there can be staging),
// KvTransfer::Impl's constructor, destructor, Start and Detach, and
// KvTransfer's own constructor and destructor. What exists when: the
// staging path (KvStaging: its worker thread and its notification tap)
// only when this side has a staging ring. Calls the engine's public API
// (AllocateMemory, Regions), FindRegion and the notification check through
// lib/engine/engine_internal.h, and KvStaging's Start and Stop.
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "flowkv/kv_transfer.h"
#include "lib/common/tsan_lock.h"
#include "lib/kv/kv_notice.h"
#include "lib/kv/kv_staging.h"
#include "lib/kv/kv_transfer_impl.h"

namespace flowkv {

namespace {

using internal::KvNotice;
using internal::KvNoticeKind;
using internal::TsanMutexLock;

// This side's pool descriptor: a kind kPool notice.
std::string PoolDescriptor(const KvLayout& layout,
                           const std::vector<RegionId>& regions, bool direct,
                           const KvPoolMemory* pool,
                           const internal::KvRing& ring, KvPathPolicy policy) {
  KvNotice notice;
  notice.kind = KvNoticeKind::kPool;
  notice.layout = layout.Serialize();
  notice.direct = direct;
  if (direct) notice.regions = regions;
  if (ring.slot_count > 0) {
    notice.ring_region = ring.region;
    notice.slot_bytes = ring.slot_bytes;
    notice.slot_count = ring.slot_count;
  }
  if (pool != nullptr && policy != KvPathPolicy::kForceStaging) {
    notice.share = pool->ShareDescriptor();
  }
  return internal::EncodeKvNotice(notice);
}

absl::Status CheckOptions(const KvTransferOptions& options) {
  if (options.incomplete_request_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("KvTransfer: incomplete_request_timeout ",
                     absl::FormatDuration(options.incomplete_request_timeout),
                     " is not positive"));
  }
  const KvStagingOptions& st = options.staging;
  if (st.slot_bytes == 0 || st.slot_bytes > (1ull << 40)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("KvTransfer: staging.slot_bytes %d is not in [1, 2^40]",
                        st.slot_bytes));
  }
  if (st.ring_bytes / st.slot_bytes < 2) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "KvTransfer: staging.ring_bytes %d holds fewer than 2 slots of "
        "staging.slot_bytes %d (one to send, one to receive)",
        st.ring_bytes, st.slot_bytes));
  }
  if (st.ring_bytes / st.slot_bytes > internal::kMaxKvRingSlots) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "KvTransfer: staging.ring_bytes %d / slot_bytes %d is over %d slots",
        st.ring_bytes, st.slot_bytes, internal::kMaxKvRingSlots));
  }
  return absl::OkStatus();
}

// Allocates the staging ring from `engine`.
absl::StatusOr<internal::KvRing> AllocateRing(TransferEngine* engine,
                                              const KvStagingOptions& st) {
  internal::KvRing ring;
  ring.slot_bytes = st.slot_bytes;
  ring.slot_count = static_cast<uint32_t>(st.ring_bytes / st.slot_bytes);
  ring.send_slots = ring.slot_count / 2;
  absl::StatusOr<AllocatedRegion> region =
      engine->AllocateMemory(ring.slot_bytes * ring.slot_count);
  if (!region.ok()) {
    return absl::Status(
        region.status().code(),
        absl::StrCat("KvTransfer: allocating the staging ring: ",
                     region.status().message()));
  }
  ring.region = region->id;
  ring.base = static_cast<uint8_t*>(region->data);
  return ring;
}

}  // namespace

KvTransfer::Impl::Impl(TransferEngine* engine, const KvLayout& layout,
                       std::vector<RegionId> regions, bool direct,
                       std::shared_ptr<KvPoolMemory> pool,
                       internal::KvRing ring, KvTransferOptions options)
    : engine_(engine),
      layout_(layout),
      regions_(std::move(regions)),
      direct_(direct),
      pool_(std::move(pool)),
      ring_(ring),
      policy_(options.path_policy),
      log_(std::move(options.log)),
      descriptor_(PoolDescriptor(layout, regions_, direct_, pool_.get(), ring_,
                                 policy_)),
      notice_engine_(engine),
      tracker_(
          {.num_layers = layout.geometry().num_layers,
           .incomplete_request_timeout = options.incomplete_request_timeout,
           .max_tombstones = options.max_tombstones,
           .log = log_}) {}

KvTransfer::Impl::~Impl() { Detach(); }

void KvTransfer::Impl::Start() {
  // Detach removes it before this object goes.
  check_id_ = internal::EngineInternal::AddNotificationCheck(
      *engine_, [this](const Notification& n) { return CheckNotice(n); });
  if (ring_.slot_count == 0) return;
  staging_ = internal::KvStaging::Start(
      engine_, layout_, ring_, pool_, log_,
      std::weak_ptr<internal::KvStagingHost>(shared_from_this()));
}

void KvTransfer::Impl::Detach() {
  {
    TsanMutexLock lock(&engine_mu_);
    notice_engine_ = nullptr;
  }
  if (check_id_ != 0) {
    internal::EngineInternal::RemoveNotificationCheck(*engine_, check_id_);
    check_id_ = 0;
  }
  if (staging_ != nullptr) staging_->Stop();
}

absl::StatusOr<std::unique_ptr<KvTransfer>> KvTransfer::Create(
    TransferEngine* engine, const KvLayout& layout,
    std::vector<RegionId> regions, KvTransferOptions options) {
  if (engine == nullptr) {
    return absl::InvalidArgumentError("KvTransfer: engine is null");
  }
  if (absl::Status s = CheckOptions(options); !s.ok()) return s;
  const std::vector<RegionInfo> known = engine->Regions();
  if (absl::Status s =
          internal::CheckKvRegions(layout, regions, known, "the engine");
      !s.ok()) {
    return s;
  }
  std::shared_ptr<KvPoolMemory> pool;
  internal::KvRing ring;
  const bool staged = options.path_policy == KvPathPolicy::kForceStaging;
  if (staged) {
    // The regions, reached through memcpy for gathers and scatters.
    std::vector<void*> bases;
    std::vector<uint64_t> sizes;
    for (RegionId id : regions) {
      const RegionInfo* info = internal::EngineInternal::FindRegion(known, id);
      if (info->kind != MemoryKind::kHost) {
        return absl::InvalidArgumentError(absl::StrCat(
            "KvTransfer: path_policy kForceStaging over engine regions needs "
            "host memory; region ",
            id, " is device memory (give the pool as a KvPoolMemory instead)"));
      }
      bases.push_back(reinterpret_cast<void*>(info->base));
      sizes.push_back(info->length);
    }
    absl::StatusOr<std::unique_ptr<KvPoolMemory>> host =
        MakeHostPool(std::move(bases), std::move(sizes));
    if (!host.ok()) return host.status();
    pool = *std::move(host);
    absl::StatusOr<internal::KvRing> allocated =
        AllocateRing(engine, options.staging);
    if (!allocated.ok()) return allocated.status();
    ring = *allocated;
  }
  auto impl = std::make_shared<Impl>(engine, layout, std::move(regions),
                                     /*direct=*/!staged, std::move(pool), ring,
                                     std::move(options));
  impl->Start();
  return std::unique_ptr<KvTransfer>(new KvTransfer(std::move(impl)));
}

absl::StatusOr<std::unique_ptr<KvTransfer>> KvTransfer::Create(
    TransferEngine* engine, const KvLayout& layout,
    std::shared_ptr<KvPoolMemory> pool, KvTransferOptions options) {
  if (engine == nullptr) {
    return absl::InvalidArgumentError("KvTransfer: engine is null");
  }
  if (pool == nullptr) {
    return absl::InvalidArgumentError("KvTransfer: pool is null");
  }
  if (absl::Status s = CheckOptions(options); !s.ok()) return s;
  if (pool->num_regions() != layout.num_regions()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("KvTransfer: the pool has %d regions, the layout %d",
                        pool->num_regions(), layout.num_regions()));
  }
  for (uint32_t r = 0; r < layout.num_regions(); ++r) {
    if (pool->region_bytes(r) < layout.region_bytes(r)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "KvTransfer: pool region %d holds %d bytes, the layout needs %d", r,
          pool->region_bytes(r), layout.region_bytes(r)));
    }
  }
  absl::StatusOr<internal::KvRing> ring = AllocateRing(engine, options.staging);
  if (!ring.ok()) return ring.status();
  auto impl = std::make_shared<Impl>(engine, layout, std::vector<RegionId>{},
                                     /*direct=*/false, std::move(pool), *ring,
                                     std::move(options));
  impl->Start();
  return std::unique_ptr<KvTransfer>(new KvTransfer(std::move(impl)));
}

KvTransfer::KvTransfer(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
KvTransfer::~KvTransfer() { impl_->Detach(); }

}  // namespace flowkv
