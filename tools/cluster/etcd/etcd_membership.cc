// SPDX-License-Identifier: Apache-2.0
// flowkv-cluster's membership in etcd (see etcd_membership.h): the node's
// metadata codec, its lease-kept entry, and the router's view of the members.
#include "tools/cluster/etcd/etcd_membership.h"

#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace flowkv::cluster {

namespace {
constexpr std::string_view kNodePrefix = "node-";

bool IsPrintable(std::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return false;
  }
  return true;
}

// "node-<id>" -> id; nullopt for any other member name.
std::optional<uint32_t> ParseMemberName(std::string_view name) {
  if (name.substr(0, kNodePrefix.size()) != kNodePrefix) return std::nullopt;
  uint32_t id;
  if (!absl::SimpleAtoi(std::string(name.substr(kNodePrefix.size())), &id)) {
    return std::nullopt;
  }
  if (NodeMemberName(id) != name) return std::nullopt;  // "+3", "03"
  return id;
}

absl::StatusOr<std::unique_ptr<EtcdClient>> Connect(
    const std::string& endpoint) {
  return EtcdClient::Create({.endpoint = endpoint});
}
}  // namespace

std::string EncodeNodeMetadata(const NodeMetadata& m) {
  return absl::StrCat(m.role, "\n", m.address);
}

absl::StatusOr<NodeMetadata> DecodeNodeMetadata(std::string_view text) {
  const size_t nl = text.find('\n');
  if (nl == std::string_view::npos || nl == 0 || nl + 1 == text.size() ||
      !IsPrintable(text.substr(0, nl)) || !IsPrintable(text.substr(nl + 1))) {
    return absl::InvalidArgumentError(
        "etcd: a node's metadata is not \"<role>\\n<address>\"");
  }
  return NodeMetadata{.role = std::string(text.substr(0, nl)),
                      .address = std::string(text.substr(nl + 1))};
}

absl::StatusOr<std::string> ClusterPrefix(std::string_view cluster_name) {
  if (cluster_name.empty() || cluster_name.size() > 128 ||
      cluster_name.find('/') != std::string_view::npos ||
      !IsPrintable(cluster_name)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--cluster_name must be 1-128 printable characters without '/', got \"",
        std::string(cluster_name), "\""));
  }
  return absl::StrCat("/flowkv/", std::string(cluster_name));
}

std::string NodeMemberName(uint32_t node) {
  return absl::StrCat(std::string(kNodePrefix), node);
}

absl::StatusOr<std::unique_ptr<EtcdNodeEntry>> EtcdNodeEntry::Create(
    const std::string& endpoint, std::string_view cluster_name, uint32_t node,
    const NodeMetadata& metadata, absl::Duration ttl) {
  absl::StatusOr<std::string> prefix = ClusterPrefix(cluster_name);
  if (!prefix.ok()) return prefix.status();
  auto client = Connect(endpoint);
  if (!client.ok()) return client.status();
  std::unique_ptr<EtcdNodeEntry> entry(new EtcdNodeEntry());
  entry->client_ = *std::move(client);
  auto registration = EtcdRegistration::Create(
      entry->client_.get(), *prefix, NodeMemberName(node),
      EncodeNodeMetadata(metadata), ttl);
  if (!registration.ok()) return registration.status();
  entry->registration_ = *std::move(registration);
  return entry;
}

absl::StatusOr<std::unique_ptr<EtcdMembership>> EtcdMembership::Create(
    const std::string& endpoint, std::string_view cluster_name) {
  absl::StatusOr<std::string> prefix = ClusterPrefix(cluster_name);
  if (!prefix.ok()) return prefix.status();
  auto client = Connect(endpoint);
  if (!client.ok()) return client.status();
  std::unique_ptr<EtcdMembership> m(new EtcdMembership());
  m->client_ = *std::move(client);
  m->prefix_ = *std::move(prefix);
  return m;
}

absl::StatusOr<std::map<uint32_t, NodeMetadata>> EtcdMembership::Registered() {
  auto listed = ListMembers(*client_, prefix_);
  if (!listed.ok()) return listed.status();
  std::map<uint32_t, NodeMetadata> out;
  for (const auto& [name, metadata] : *listed) {
    std::optional<uint32_t> id = ParseMemberName(name);
    absl::StatusOr<NodeMetadata> m = DecodeNodeMetadata(metadata);
    if (!id || !m.ok()) continue;
    out.emplace(*id, *std::move(m));
  }
  return out;
}

absl::Status EtcdMembership::CheckEmpty() {
  auto listed = ListMembers(*client_, prefix_);
  if (!listed.ok()) return listed.status();
  if (!listed->empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "etcd already has ", listed->size(), " member(s) under ", prefix_,
        " (another router's nodes, or a dead cluster's until their leases "
        "expire): choose another --cluster_name or wait"));
  }
  return absl::OkStatus();
}

absl::Status EtcdMembership::Join(uint32_t node, const std::string& address) {
  if (members_.count(node) != 0) {
    return absl::AlreadyExistsError(
        absl::StrCat("node ", node, " joined twice"));
  }
  auto kv = client_->Get(MemberKey(prefix_, NodeMemberName(node)));
  if (!kv.ok()) return kv.status();
  if (!kv->has_value()) {
    return absl::FailedPreconditionError(
        absl::StrCat("node ", node, " is not registered in etcd"));
  }
  absl::StatusOr<NodeMetadata> m = DecodeNodeMetadata((*kv)->value);
  if (!m.ok()) return m.status();
  if (m->address != address) {
    return absl::FailedPreconditionError(
        absl::StrCat("node ", node, " is registered in etcd with address ",
                     m->address, ", not ", address));
  }
  members_.emplace(node, address);
  watched_[node] = address;
  return absl::OkStatus();
}

std::optional<std::string> EtcdMembership::Address(uint32_t node) const {
  auto it = members_.find(node);
  if (it == members_.end()) return std::nullopt;
  return it->second;
}

absl::StatusOr<std::vector<uint32_t>> EtcdMembership::Lost() {
  auto registered = Registered();
  if (!registered.ok()) return registered.status();
  std::vector<uint32_t> lost;
  for (auto w = watched_.begin(); w != watched_.end();) {
    auto it = registered->find(w->first);
    if (it == registered->end() || it->second.address != w->second) {
      lost.push_back(w->first);
      w = watched_.erase(w);
    } else {
      ++w;
    }
  }
  return lost;
}

}  // namespace flowkv::cluster
