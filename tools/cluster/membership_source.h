// SPDX-License-Identifier: Apache-2.0
// MembershipSource: the router's choice of membership store — in its own
// memory (InRouterMembership, the default) or in etcd (--etcd, when the
// build has libcurl) — and, with etcd, the rate-limited check for nodes
// whose entries disappeared (lease expired). It keeps the #if of the
// optional etcd build out of the router.
//
//   auto source = MembershipSource::Create(endpoint, "c1", ttl_ms);
//   source->membership().Join(id, address);
//   for (uint32_t gone : source->PollLost(now_ms)) ...
//
// Thread safety: externally synchronized (the router's loop thread).

#ifndef FLOWKV_TOOLS_CLUSTER_MEMBERSHIP_SOURCE_H_
#define FLOWKV_TOOLS_CLUSTER_MEMBERSHIP_SOURCE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tools/cluster/membership.h"

namespace flowkv::cluster {

class EtcdMembership;

class MembershipSource {
 public:
  // endpoint "": InRouterMembership. Otherwise EtcdMembership for the
  // cluster, checked empty (FailedPrecondition when it has live members);
  // Unimplemented ("--etcd needs a build with libcurl") without libcurl.
  static absl::StatusOr<std::unique_ptr<MembershipSource>> Create(
      const std::string& etcd_endpoint, const std::string& cluster_name,
      double etcd_ttl_ms);
  ~MembershipSource();

  Membership& membership() { return *membership_; }
  bool etcd() const { return etcd_ != nullptr; }
  // etcd: the joined nodes whose entries are gone, read at most four times
  // per lease ttl (else empty). An etcd error reads as nothing gone (the
  // nodes' sockets still tell of deaths); it goes to *error when given.
  std::vector<uint32_t> PollLost(double now_ms, std::string* error = nullptr);

 private:
  MembershipSource() = default;
  std::unique_ptr<Membership> membership_;
  EtcdMembership* etcd_ = nullptr;  // membership_, with --etcd
  double ttl_ms_ = 0;
  double next_check_ms_ = 0;
};

}  // namespace flowkv::cluster

#endif  // FLOWKV_TOOLS_CLUSTER_MEMBERSHIP_SOURCE_H_
