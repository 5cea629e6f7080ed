// SPDX-License-Identifier: Apache-2.0
// Membership: which nodes are in the cluster and where their engines listen.
// The router asks it when it places a request (the decode node's address
// goes to the prefill node). InRouterMembership keeps it in the router's
// memory; an external store (etcd, issue item 6) implements the same
// interface.
//
// Thread safety: externally synchronized (the router's loop thread).

#ifndef FLOWKV_TOOLS_CLUSTER_MEMBERSHIP_H_
#define FLOWKV_TOOLS_CLUSTER_MEMBERSHIP_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace flowkv::cluster {

class Membership {
 public:
  virtual ~Membership() = default;
  // AlreadyExists when the node is a member.
  virtual absl::Status Join(uint32_t node, const std::string& address) = 0;
  // The node left or died; unknown nodes are ignored.
  virtual void Leave(uint32_t node) = 0;
  // The engine address of a member; nullopt otherwise.
  virtual std::optional<std::string> Address(uint32_t node) const = 0;
  virtual size_t size() const = 0;
};

class InRouterMembership final : public Membership {
 public:
  absl::Status Join(uint32_t node, const std::string& address) override {
    if (!members_.emplace(node, address).second) {
      return absl::AlreadyExistsError(
          absl::StrCat("node ", node, " joined twice"));
    }
    return absl::OkStatus();
  }
  void Leave(uint32_t node) override { members_.erase(node); }
  std::optional<std::string> Address(uint32_t node) const override {
    auto it = members_.find(node);
    if (it == members_.end()) return std::nullopt;
    return it->second;
  }
  size_t size() const override { return members_.size(); }

 private:
  std::map<uint32_t, std::string> members_;
};

}  // namespace flowkv::cluster

#endif  // FLOWKV_TOOLS_CLUSTER_MEMBERSHIP_H_
