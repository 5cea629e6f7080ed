// SPDX-License-Identifier: Apache-2.0
// EtcdClient: the few etcd v3 calls flowkv-cluster's membership needs, made
// through etcd's JSON gateway (HTTP POST to /v3/...) with libcurl: leases
// (grant, keep-alive, revoke) and keys (put with a lease, get, get by prefix,
// delete). Keys and values are bytes; the client base64-encodes them as the
// gateway expects.
//
//   auto etcd = EtcdClient::Create({.endpoint = "http://127.0.0.1:2379"});
//   absl::StatusOr<int64_t> lease = (*etcd)->GrantLease(absl::Seconds(5));
//   absl::Status s = (*etcd)->Put("/flowkv/c1/nodes/3", metadata, *lease);
//
// Errors: Unavailable when etcd cannot be reached or answers with a server
// error, DeadlineExceeded when a call takes longer than request_timeout,
// InvalidArgument for a reply that is not what the gateway sends, NotFound
// for a lease that expired.
//
// Thread safety: thread-safe (each call uses its own connection).
#ifndef FLOWKV_TOOLS_CLUSTER_ETCD_ETCD_CLIENT_H_
#define FLOWKV_TOOLS_CLUSTER_ETCD_ETCD_CLIENT_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace flowkv::cluster {

struct EtcdOptions {
  // "http://host:port" of one etcd member. Default: none (must be set).
  std::string endpoint;
  // Bound on one call, connection included. Default: 2 s.
  absl::Duration request_timeout = absl::Seconds(2);
  // Largest reply read; a bigger one is refused. Default: 16 MiB.
  size_t max_reply_bytes = size_t{16} << 20;
};

struct EtcdKeyValue {
  std::string key;
  std::string value;
  int64_t mod_revision = 0;
  int64_t lease = 0;  // 0: the key has no lease
};

class EtcdClient {
 public:
  // InvalidArgument unless endpoint starts with "http://".
  static absl::StatusOr<std::unique_ptr<EtcdClient>> Create(
      const EtcdOptions& options);

  // A new lease that expires `ttl` (rounded up to whole seconds, at least 1;
  // etcd may grant more: its minimum is 1.5 election timeouts, 2 s by
  // default) after its last keep-alive. Returns its id.
  absl::StatusOr<int64_t> GrantLease(absl::Duration ttl);
  // Renews `lease`; returns the time it now has. NotFound when it expired.
  absl::StatusOr<absl::Duration> KeepAlive(int64_t lease);
  // Ends `lease` and deletes the keys attached to it.
  absl::Status RevokeLease(int64_t lease);

  // Writes `key` = `value`, attached to `lease` (0: none).
  absl::Status Put(std::string_view key, std::string_view value,
                   int64_t lease = 0);
  // The key, or nullopt when absent.
  absl::StatusOr<std::optional<EtcdKeyValue>> Get(std::string_view key);
  // Every key that starts with `prefix` (non-empty), in key order.
  absl::StatusOr<std::vector<EtcdKeyValue>> GetPrefix(std::string_view prefix);
  // Deletes `key`; returns how many keys were deleted (0 or 1).
  absl::StatusOr<int64_t> Delete(std::string_view key);

 private:
  explicit EtcdClient(const EtcdOptions& options) : options_(options) {}
  // POSTs `body` to endpoint + `path`; returns the reply's JSON text.
  absl::StatusOr<std::string> Call(std::string_view path,
                                   const std::string& body);
  absl::StatusOr<std::vector<EtcdKeyValue>> Range(std::string_view key,
                                                  std::string_view range_end);

  EtcdOptions options_;
};

// The smallest key greater than every key starting with `prefix` (etcd's
// range_end for a prefix); empty when `prefix` is all 0xff bytes.
std::string PrefixRangeEnd(std::string_view prefix);

}  // namespace flowkv::cluster

#endif  // FLOWKV_TOOLS_CLUSTER_ETCD_ETCD_CLIENT_H_
