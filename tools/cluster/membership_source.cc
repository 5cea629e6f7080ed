// SPDX-License-Identifier: Apache-2.0
// MembershipSource (see membership_source.h): in the router or in etcd.
#include "tools/cluster/membership_source.h"

#if FLOWKV_CLUSTER_ETCD
#include "tools/cluster/etcd/etcd_membership.h"
#endif

namespace flowkv::cluster {

MembershipSource::~MembershipSource() = default;

absl::StatusOr<std::unique_ptr<MembershipSource>> MembershipSource::Create(
    const std::string& etcd_endpoint, const std::string& cluster_name,
    double etcd_ttl_ms) {
  std::unique_ptr<MembershipSource> source(new MembershipSource());
  if (etcd_endpoint.empty()) {
    source->membership_ = std::make_unique<InRouterMembership>();
    return source;
  }
#if FLOWKV_CLUSTER_ETCD
  auto etcd = EtcdMembership::Create(etcd_endpoint, cluster_name);
  if (!etcd.ok()) return etcd.status();
  if (absl::Status s = (*etcd)->CheckEmpty(); !s.ok()) return s;
  source->etcd_ = etcd->get();
  source->membership_ = *std::move(etcd);
  source->ttl_ms_ = etcd_ttl_ms;
  return source;
#else
  (void)cluster_name;
  (void)etcd_ttl_ms;
  return absl::UnimplementedError("--etcd needs a build with libcurl");
#endif
}

std::vector<uint32_t> MembershipSource::PollLost(double now_ms,
                                                 std::string* error) {
#if FLOWKV_CLUSTER_ETCD
  static constexpr double kChecksPerTtl = 4;
  if (etcd_ == nullptr || now_ms < next_check_ms_) return {};
  next_check_ms_ = now_ms + ttl_ms_ / kChecksPerTtl;
  absl::StatusOr<std::vector<uint32_t>> lost = etcd_->Lost();
  if (!lost.ok()) {
    if (error != nullptr) *error = lost.status().ToString();
    return {};
  }
  return *std::move(lost);
#else
  (void)now_ms;
  (void)error;
  return {};
#endif
}

}  // namespace flowkv::cluster
