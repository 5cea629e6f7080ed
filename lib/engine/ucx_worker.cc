// SPDX-License-Identifier: Apache-2.0
// UcxWorker: creates, queries and destroys one UCX context and worker. It
// owns the UCX configuration and the reading of what the context supports;
// it calls only UCX and lib/engine/ucx_status.

#include "lib/engine/ucx_worker.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "lib/engine/ucx_status.h"

namespace flowkv::internal {
namespace {

// The transport names of the "resource N : md M dev D flags F tl/dev" lines
// of ucp_context_print_info, in order, without duplicates.
std::vector<std::string> ParseTransports(const std::string& info) {
  std::vector<std::string> out;
  for (absl::string_view line : absl::StrSplit(info, '\n')) {
    if (line.find("resource") == absl::string_view::npos) continue;
    const size_t flags = line.find("flags");
    if (flags == absl::string_view::npos) continue;
    std::vector<absl::string_view> words =
        absl::StrSplit(line.substr(flags), ' ', absl::SkipWhitespace());
    if (words.empty()) continue;
    const absl::string_view resource = words.back();
    const size_t slash = resource.find('/');
    if (slash == absl::string_view::npos) continue;
    std::string transport(resource.substr(0, slash));
    if (std::find(out.begin(), out.end(), transport) == out.end()) {
      out.push_back(std::move(transport));
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<UcxWorker>> UcxWorker::Create(
    const UcxWorkerOptions& options) {
  std::unique_ptr<UcxWorker> worker(new UcxWorker());
  if (absl::Status s = worker->Init(options); !s.ok()) return s;
  return worker;
}

absl::Status UcxWorker::Init(const UcxWorkerOptions& options) {
  ucp_config_t* config = nullptr;
  if (absl::Status s = UcxStatus(ucp_config_read(nullptr, nullptr, &config),
                                 "ucp_config_read");
      !s.ok()) {
    return s;
  }
  bool keepalive_set = std::getenv("UCX_KEEPALIVE_INTERVAL") != nullptr ||
                       options.keepalive_interval == absl::ZeroDuration();
  std::string tls = std::getenv("UCX_TLS") ? std::getenv("UCX_TLS") : "";
  for (const auto& [name, value] : options.config) {
    if (name == "KEEPALIVE_INTERVAL") keepalive_set = true;
    if (name == "TLS") tls = value;
  }
  absl::Status config_status;
  if (!keepalive_set) {
    const std::string interval = absl::StrFormat(
        "%dms", std::max<int64_t>(
                    1, absl::ToInt64Milliseconds(options.keepalive_interval)));
    config_status = UcxStatus(
        ucp_config_modify(config, "KEEPALIVE_INTERVAL", interval.c_str()),
        "ucp_config_modify(KEEPALIVE_INTERVAL)");
  }
  for (const auto& [name, value] : options.config) {
    if (!config_status.ok()) break;
    ucs_status_t st = ucp_config_modify(config, name.c_str(), value.c_str());
    if (st != UCS_OK) {
      config_status = absl::InvalidArgumentError(
          absl::StrFormat("TransferEngine: UCX rejects configuration %s=%s: %s",
                          name, value, ucs_status_string(st)));
    }
  }
  if (!config_status.ok()) {
    ucp_config_release(config);
    return config_status;
  }

  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_NAME |
                      UCP_PARAM_FIELD_MT_WORKERS_SHARED;
  params.features = UCP_FEATURE_RMA | UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
  params.name = options.name.c_str();
  params.mt_workers_shared = 0;
  ucs_status_t st = ucp_init(&params, config, &context_);
  ucp_config_release(config);
  if (st != UCS_OK) {
    context_ = nullptr;
    if ((st == UCS_ERR_NO_DEVICE || st == UCS_ERR_NO_ELEM) && !tls.empty()) {
      // The caller's transport list names nothing UCX can use.
      return absl::InvalidArgumentError(absl::StrFormat(
          "TransferEngine: UCX finds no usable transport in TLS=\"%s\" (%s); "
          "`ucx_info -d` lists the available ones",
          tls, ucs_status_string(st)));
    }
    return UcxStatus(st, "ucp_init");
  }

  ucp_context_attr_t attr{};
  attr.field_mask = UCP_ATTR_FIELD_MEMORY_TYPES;
  if (ucp_context_query(context_, &attr) == UCS_OK) {
    cuda_supported_ = (attr.memory_types & UCS_BIT(UCS_MEMORY_TYPE_CUDA)) != 0;
  }
  {
    char* buffer = nullptr;
    size_t size = 0;
    if (FILE* stream = open_memstream(&buffer, &size)) {
      ucp_context_print_info(context_, stream);
      std::fclose(stream);
      const std::vector<std::string> transports =
          ParseTransports(std::string(buffer, size));
      std::free(buffer);
      transports_ = absl::StrJoin(transports, ",");
      for (const std::string& t : transports) {
        shared_memory_ |= t == "posix" || t == "sysv";
      }
    }
  }

  ucp_worker_params_t wparams{};
  wparams.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wparams.thread_mode = UCS_THREAD_MODE_SINGLE;
  if (absl::Status s = UcxStatus(
          ucp_worker_create(context_, &wparams, &worker_), "ucp_worker_create");
      !s.ok()) {
    worker_ = nullptr;
    return s;
  }
  if (absl::Status s =
          UcxStatus(ucp_worker_get_efd(worker_, &efd_), "ucp_worker_get_efd");
      !s.ok()) {
    return s;
  }
  ucp_address_t* address = nullptr;
  size_t address_length = 0;
  if (absl::Status s =
          UcxStatus(ucp_worker_get_address(worker_, &address, &address_length),
                    "ucp_worker_get_address");
      !s.ok()) {
    return s;
  }
  address_.assign(reinterpret_cast<const char*>(address), address_length);
  ucp_worker_release_address(worker_, address);
  unsigned major = 0;
  unsigned minor = 0;
  unsigned release = 0;
  ucp_get_version(&major, &minor, &release);
  ucx_version_ = (major & 0xff) << 16 | (minor & 0xff) << 8 | (release & 0xff);
  return absl::OkStatus();
}

EndpointRma QueryEndpointRma(ucp_ep_h ep) {
  EndpointRma rma;
  char* buffer = nullptr;
  size_t size = 0;
  FILE* stream = open_memstream(&buffer, &size);
  if (stream == nullptr) return rma;
  ucp_ep_print_info(ep, stream);
  std::fclose(stream);
  const std::string info(buffer, size);
  std::free(buffer);
  // "#                  put[0]: 0..<short>..4294967296..<bcopy>..(inf)"
  rma.put = info.find(" put[") != std::string::npos;
  rma.get = info.find(" get[") != std::string::npos;
  return rma;
}

UcxWorker::~UcxWorker() {
  if (worker_ != nullptr) ucp_worker_destroy(worker_);
  if (context_ != nullptr) ucp_cleanup(context_);
}

}  // namespace flowkv::internal
