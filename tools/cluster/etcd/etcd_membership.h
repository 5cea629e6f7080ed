// SPDX-License-Identifier: Apache-2.0
// flowkv-cluster's membership in etcd (--etcd): each node registers itself
// under "/flowkv/<cluster>/nodes/node-<id>" with a lease it keeps alive
// (EtcdNodeEntry), its metadata being its role and engine address; the router
// reads the members from etcd (EtcdMembership, the Membership interface).
// A node that dies stops renewing its lease and its entry disappears after
// the lease's ttl; a node that exits cleanly revokes it at once.
//
//   // node process, once its engine listens:
//   auto entry = EtcdNodeEntry::Create(endpoint, "c1", 3, "decode", address,
//                                      absl::Seconds(3));
//   // router:
//   auto members = EtcdMembership::Create(endpoint, "c1");
//   (*members)->Join(3, address);   // checks node 3's entry in etcd
//   (*members)->Lost();             // members whose entries expired
//
// Thread safety: EtcdNodeEntry is thread-safe; EtcdMembership is externally
// synchronized (the router's loop thread).
#ifndef FLOWKV_TOOLS_CLUSTER_ETCD_ETCD_MEMBERSHIP_H_
#define FLOWKV_TOOLS_CLUSTER_ETCD_ETCD_MEMBERSHIP_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tools/cluster/etcd/etcd_client.h"
#include "tools/cluster/etcd/etcd_registration.h"
#include "tools/cluster/membership.h"

namespace flowkv::cluster {

// A node's metadata in etcd: its role name and its engine address.
struct NodeMetadata {
  std::string role;
  std::string address;
};
// "<role>\n<address>".
std::string EncodeNodeMetadata(const NodeMetadata& m);
// InvalidArgument for anything EncodeNodeMetadata does not write.
absl::StatusOr<NodeMetadata> DecodeNodeMetadata(std::string_view text);

// "/flowkv/<cluster_name>"; InvalidArgument for an empty name or one with
// '/' or control characters.
absl::StatusOr<std::string> ClusterPrefix(std::string_view cluster_name);
// The member id a node registers as: "node-<id>".
std::string NodeMemberName(uint32_t node);

// One node's lease-kept entry; destroying it revokes the lease.
class EtcdNodeEntry {
 public:
  static absl::StatusOr<std::unique_ptr<EtcdNodeEntry>> Create(
      const std::string& endpoint, std::string_view cluster_name, uint32_t node,
      const NodeMetadata& metadata, absl::Duration ttl);
  // OK while the lease is renewed (EtcdRegistration::lost).
  absl::Status lost() const { return registration_->lost(); }

 private:
  EtcdNodeEntry() = default;
  // Declared first: the registration (which uses the client) goes first.
  std::unique_ptr<EtcdClient> client_;
  std::unique_ptr<EtcdRegistration> registration_;
};

class EtcdMembership final : public Membership {
 public:
  static absl::StatusOr<std::unique_ptr<EtcdMembership>> Create(
      const std::string& endpoint, std::string_view cluster_name);

  // FailedPrecondition when the cluster already has registered members
  // (another router's nodes, or a dead cluster's whose leases have not
  // expired yet); etcd's errors otherwise.
  absl::Status CheckEmpty();
  // The members registered in etcd now: node id -> metadata. Entries that
  // are not a node's are ignored.
  absl::StatusOr<std::map<uint32_t, NodeMetadata>> Registered();

  // FailedPrecondition unless etcd holds the node's entry with `address`;
  // AlreadyExists when it joined already.
  absl::Status Join(uint32_t node, const std::string& address) override;
  // The node is no member; Lost() still watches its entry until it goes.
  void Leave(uint32_t node) override { members_.erase(node); }
  std::optional<std::string> Address(uint32_t node) const override;
  size_t size() const override { return members_.size(); }

  // The nodes that joined and whose entries are gone from etcd since the
  // last call (their leases expired or were revoked), members or not: the
  // caller takes down those still members. etcd's errors otherwise.
  absl::StatusOr<std::vector<uint32_t>> Lost();

 private:
  EtcdMembership() = default;
  std::unique_ptr<EtcdClient> client_;
  std::string prefix_;
  std::map<uint32_t, std::string> members_;
  // Joined nodes whose entries have not yet been seen gone: id -> address.
  std::map<uint32_t, std::string> watched_;
};

}  // namespace flowkv::cluster

#endif  // FLOWKV_TOOLS_CLUSTER_ETCD_ETCD_MEMBERSHIP_H_
