// SPDX-License-Identifier: Apache-2.0
// EtcdRegistration: one cluster member's entry in etcd, kept alive by a
// lease. A node registers itself (its id and the metadata peers need to reach
// it) under "<cluster_prefix>/nodes/<member>"; the entry disappears by itself
// `ttl` after the node stops renewing it (it died, or etcd lost it), and at
// once when the registration is destroyed (a graceful leave revokes the
// lease). A router that restarts recovers the cluster with ListMembers.
//
//   auto reg = EtcdRegistration::Create(etcd, "/flowkv/c1", "node-3", metadata,
//                                       absl::Seconds(3));
//   ...
//   auto members = ListMembers(*etcd, "/flowkv/c1");   // {"node-3": metadata,
//   ...}
//
// Thread safety: thread-safe. A background thread renews the lease every
// ttl / 3 and reports a lost lease through lost().
#ifndef FLOWKV_TOOLS_CLUSTER_ETCD_ETCD_REGISTRATION_H_
#define FLOWKV_TOOLS_CLUSTER_ETCD_ETCD_REGISTRATION_H_

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tools/cluster/etcd/etcd_client.h"

namespace flowkv::cluster {

class EtcdRegistration {
 public:
  // Grants a lease of `ttl` and writes the member's entry under it.
  // InvalidArgument for an empty prefix or member, or a member containing
  // '/'; the client's errors otherwise. `etcd` must outlive the registration.
  static absl::StatusOr<std::unique_ptr<EtcdRegistration>> Create(
      EtcdClient* etcd, std::string_view cluster_prefix,
      std::string_view member, std::string_view metadata, absl::Duration ttl);

  // Stops renewing and revokes the lease (the entry goes at once). Waits
  // for the renewing thread; a revoke that fails leaves the entry to expire.
  ~EtcdRegistration();
  EtcdRegistration(const EtcdRegistration&) = delete;
  EtcdRegistration& operator=(const EtcdRegistration&) = delete;

  // Replaces the entry's metadata (same lease).
  absl::Status Update(std::string_view metadata);

  // OK while the lease is renewed; the error that ended it otherwise (NotFound
  // once etcd expired it). A lost registration does not come back.
  absl::Status lost() const;

  int64_t lease() const { return lease_; }
  const std::string& key() const { return key_; }

 private:
  EtcdRegistration(EtcdClient* etcd, std::string key, int64_t lease,
                   absl::Duration ttl);
  void RenewLoop();

  EtcdClient* const etcd_;
  const std::string key_;
  const int64_t lease_;
  const absl::Duration ttl_;
  // std::mutex rather than absl::Mutex: ThreadSanitizer sees it (Debian's
  // Abseil is not instrumented).
  mutable std::mutex mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;  // guarded by mu_
  absl::Status lost_;      // guarded by mu_
  std::thread renewer_;
};

// The key a member is registered under.
std::string MemberKey(std::string_view cluster_prefix, std::string_view member);

// Every registered member of the cluster: member id -> metadata.
absl::StatusOr<std::map<std::string, std::string>> ListMembers(
    EtcdClient& etcd, std::string_view cluster_prefix);

}  // namespace flowkv::cluster

#endif  // FLOWKV_TOOLS_CLUSTER_ETCD_ETCD_REGISTRATION_H_
