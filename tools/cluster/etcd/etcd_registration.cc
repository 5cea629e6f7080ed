// SPDX-License-Identifier: Apache-2.0
// EtcdRegistration: the member's entry, its lease and the renewing thread;
// ListMembers.
#include "tools/cluster/etcd/etcd_registration.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace flowkv::cluster {

namespace {
constexpr std::string_view kNodesDir = "/nodes/";
}  // namespace

std::string MemberKey(std::string_view cluster_prefix,
                      std::string_view member) {
  return std::string(cluster_prefix) + std::string(kNodesDir) +
         std::string(member);
}

absl::StatusOr<std::unique_ptr<EtcdRegistration>> EtcdRegistration::Create(
    EtcdClient* etcd, std::string_view cluster_prefix, std::string_view member,
    std::string_view metadata, absl::Duration ttl) {
  if (etcd == nullptr)
    return absl::InvalidArgumentError("etcd registration: no client");
  if (cluster_prefix.empty() || member.empty() ||
      member.find('/') != std::string_view::npos) {
    return absl::InvalidArgumentError(
        "etcd registration: bad cluster prefix '" +
        std::string(cluster_prefix) + "' or member '" + std::string(member) +
        "'");
  }
  if (ttl < absl::Seconds(1)) {
    return absl::InvalidArgumentError(
        "etcd registration: ttl below 1 s (etcd's granularity)");
  }
  absl::StatusOr<int64_t> lease = etcd->GrantLease(ttl);
  if (!lease.ok()) return lease.status();
  std::string key = MemberKey(cluster_prefix, member);
  if (absl::Status s = etcd->Put(key, metadata, *lease); !s.ok()) {
    (void)etcd->RevokeLease(*lease);
    return s;
  }
  return std::unique_ptr<EtcdRegistration>(
      new EtcdRegistration(etcd, std::move(key), *lease, ttl));
}

EtcdRegistration::EtcdRegistration(EtcdClient* etcd, std::string key,
                                   int64_t lease, absl::Duration ttl)
    : etcd_(etcd), key_(std::move(key)), lease_(lease), ttl_(ttl) {
  renewer_ = std::thread([this] { RenewLoop(); });
}

EtcdRegistration::~EtcdRegistration() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  renewer_.join();
  (void)etcd_->RevokeLease(lease_);
}

void EtcdRegistration::RenewLoop() {
  const auto period = absl::ToChronoMilliseconds(ttl_ / 3);
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    // A timed wait for the stop flag: the renewal period, not a sync point.
    if (stop_cv_.wait_for(lock, period, [this] { return stopping_; })) return;
    lock.unlock();
    absl::StatusOr<absl::Duration> left = etcd_->KeepAlive(lease_);
    lock.lock();
    // A transient failure (etcd restarting) is retried next period; only an
    // expired lease is final.
    if (!left.ok() && absl::IsNotFound(left.status())) {
      lost_ = left.status();
      return;
    }
  }
}

absl::Status EtcdRegistration::Update(std::string_view metadata) {
  if (absl::Status s = lost(); !s.ok()) return s;
  return etcd_->Put(key_, metadata, lease_);
}

absl::Status EtcdRegistration::lost() const {
  std::lock_guard<std::mutex> lock(mu_);
  return lost_;
}

absl::StatusOr<std::map<std::string, std::string>> ListMembers(
    EtcdClient& etcd, std::string_view cluster_prefix) {
  const std::string dir = std::string(cluster_prefix) + std::string(kNodesDir);
  absl::StatusOr<std::vector<EtcdKeyValue>> kvs = etcd.GetPrefix(dir);
  if (!kvs.ok()) return kvs.status();
  std::map<std::string, std::string> members;
  for (EtcdKeyValue& kv : *kvs) {
    std::string member = kv.key.substr(dir.size());
    if (member.empty() || member.find('/') != std::string::npos)
      continue;  // not ours
    members.emplace(std::move(member), std::move(kv.value));
  }
  return members;
}

}  // namespace flowkv::cluster
