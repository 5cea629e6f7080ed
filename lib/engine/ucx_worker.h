// SPDX-License-Identifier: Apache-2.0
// UcxWorker: one UCX context and its worker, created together and destroyed
// together (RAII), with what the engine asks of them: the configuration
// (environment + the engine's overrides), the memory types and transports
// the context supports, the worker's event fd and address.
//
// It calls only UCX; the engine's progress thread is the only thread that
// uses the worker after Create.
//
// Thread safety: externally synchronized (const accessors thread-safe).

#ifndef FLOWKV_LIB_ENGINE_UCX_WORKER_H_
#define FLOWKV_LIB_ENGINE_UCX_WORKER_H_

#include <memory>
#include <string>
#include <ucp/api/ucp.h>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace flowkv::internal {

struct UcxWorkerOptions {
  std::string name;
  // (name without "UCX_", value) applied over the environment.
  std::vector<std::pair<std::string, std::string>> config;
  // Set as KEEPALIVE_INTERVAL unless the environment or `config` sets it;
  // zero: leave UCX's default.
  absl::Duration keepalive_interval = absl::ZeroDuration();
};

class UcxWorker {
 public:
  // InvalidArgument for a configuration UCX rejects (a bad value, or a
  // transport list of which UCX finds none); a UCX error otherwise.
  static absl::StatusOr<std::unique_ptr<UcxWorker>> Create(
      const UcxWorkerOptions& options);
  ~UcxWorker();
  UcxWorker(const UcxWorker&) = delete;
  UcxWorker& operator=(const UcxWorker&) = delete;

  ucp_context_h context() const { return context_; }
  ucp_worker_h worker() const { return worker_; }
  int event_fd() const { return efd_; }
  // The worker's address (ucp_worker_get_address bytes).
  const std::string& address() const { return address_; }
  // The UCX library's version (ucp_get_version), packed as
  // PackUcxVersion (wireup/ucx_address.h).
  uint32_t ucx_version() const { return ucx_version_; }
  bool cuda_supported() const { return cuda_supported_; }
  // The transports the context enabled, comma-separated in UCX's order
  // without duplicates, e.g. "self,tcp,posix,cma".
  const std::string& transports() const { return transports_; }
  // Whether a shared-memory transport (posix, sysv) is enabled: then UCX
  // backs allocated host memory with shared-memory files.
  bool shared_memory() const { return shared_memory_; }

 private:
  UcxWorker() = default;
  absl::Status Init(const UcxWorkerOptions& options);

  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  int efd_ = -1;
  std::string address_;
  uint32_t ucx_version_ = 0;
  bool cuda_supported_ = false;
  bool shared_memory_ = false;
  std::string transports_;
};

// Which one-sided operations an endpoint's transports do themselves: false
// where UCX would emulate them with messages (tcp in UCX 1.13), read off
// ucp_ep_print_info's protocol table once the endpoint is wired up.
struct EndpointRma {
  bool put = false;
  bool get = false;
};
EndpointRma QueryEndpointRma(ucp_ep_h ep);

}  // namespace flowkv::internal

#endif  // FLOWKV_LIB_ENGINE_UCX_WORKER_H_
