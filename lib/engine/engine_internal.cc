// SPDX-License-Identifier: Apache-2.0
// The engine's door for the layers above it (engine_internal.h): each
// function forwards to TransferEngineImpl or TransferRecord.

#include "lib/engine/engine_internal.h"

#include "lib/engine/region_table.h"
#include "lib/engine/transfer_engine_impl.h"
#include "lib/engine/transfer_record.h"

namespace flowkv::internal {

std::pair<LocalTransfer, TransferHandle> LocalTransfer::Start(
    uint64_t ops, uint64_t bytes, absl::Time submit_time,
    std::function<void()> on_cancel) {
  auto record = std::make_shared<TransferRecord>(
      0, ops, bytes, submit_time, nullptr, std::weak_ptr<Inbox>());
  if (on_cancel) record->SetCancelHook(std::move(on_cancel));
  return {LocalTransfer(record), TransferHandle(std::move(record))};
}

TransferHandle LocalTransfer::Failed(absl::Status status) {
  auto [transfer, handle] = Start(0, 0, absl::Now());
  transfer.Complete(std::move(status));
  return std::move(handle);
}

void LocalTransfer::MarkInFlight() const { record_->MarkInFlight(); }

bool LocalTransfer::Complete(absl::Status status, absl::Time now) const {
  return record_->Complete(std::move(status), now);
}

uint64_t EngineInternal::AddNotificationTap(TransferEngine& engine,
                                            NotificationTap tap) {
  return engine.impl_->AddNotificationTap(std::move(tap));
}

void EngineInternal::RemoveNotificationTap(TransferEngine& engine,
                                           uint64_t id) {
  engine.impl_->RemoveNotificationTap(id);
}

uint64_t EngineInternal::AddNotificationCheck(TransferEngine& engine,
                                              NotificationCheck check) {
  return engine.impl_->AddNotificationCheck(std::move(check));
}

void EngineInternal::RemoveNotificationCheck(TransferEngine& engine,
                                             uint64_t id) {
  engine.impl_->RemoveNotificationCheck(id);
}

const RegionInfo* EngineInternal::FindRegion(
    const std::vector<RegionInfo>& regions, RegionId id) {
  return internal::FindRegion(absl::MakeConstSpan(regions), id);
}

uint64_t EngineInternal::MaxBytesPostedPerTurn(const TransferEngine& engine) {
  return engine.impl_->max_iteration_posted();
}

}  // namespace flowkv::internal
