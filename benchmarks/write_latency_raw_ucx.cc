// SPDX-License-Identifier: Apache-2.0
// The raw-UCX baseline declared in write_latency_raw_ucx.h.
#include "benchmarks/write_latency_raw_ucx.h"

#include <cstdint>
#include <cstring>
#include <string>
#include <ucp/api/ucp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "benchmarks/write_latency_common.h"

namespace flowkv::write_latency {
namespace {

// AM handler of both sides: records (seq, time) of an eager message.
ucs_status_t OnAm(void* arg, const void* /*header*/, size_t /*header_length*/,
                  void* data, size_t length, const ucp_am_recv_param_t* param) {
  const int64_t now = NowNs();
  auto* side = static_cast<RawSide*>(arg);
  if ((param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0 || length < 8) {
    return UCS_OK;  // Not ours (every message here is 8 or 16 bytes, eager).
  }
  const absl::string_view bytes(static_cast<const char*>(data), length);
  side->seq = GetU64(bytes);
  side->time_ns =
      length >= 16 ? static_cast<int64_t>(GetU64(bytes.substr(8))) : now;
  side->arrived = true;
  return UCS_OK;
}

}  // namespace

absl::Status UcsError(absl::string_view what, ucs_status_t status) {
  return absl::InternalError(
      absl::StrCat(what, ": ", ucs_status_string(status)));
}

// Progresses `worker` until `request` (a ucp *_nbx result) completes, then
// frees it.
absl::Status WaitRequest(ucp_worker_h worker, void* request,
                         absl::string_view what) {
  if (request == nullptr) return absl::OkStatus();
  if (UCS_PTR_IS_ERR(request)) return UcsError(what, UCS_PTR_STATUS(request));
  const int64_t deadline = NowNs() + kReplyTimeoutNs;
  ucs_status_t status;
  uint32_t spins = 0;
  while ((status = ucp_request_check_status(request)) == UCS_INPROGRESS) {
    ucp_worker_progress(worker);
    if (++spins % 1024 == 0 && NowNs() > deadline) {
      ucp_request_free(request);  // Released when it completes.
      return absl::DeadlineExceededError(absl::StrCat(what, ": timed out"));
    }
  }
  ucp_request_free(request);
  return status == UCS_OK ? absl::OkStatus() : UcsError(what, status);
}

// One side's UCX objects: context, worker, endpoint to the other side, and

absl::Status OpenRawSide(RawSide* side, unsigned am_id) {
  ucp_config_t* config = nullptr;
  ucs_status_t status = ucp_config_read(nullptr, nullptr, &config);
  if (status != UCS_OK) return UcsError("ucp_config_read", status);
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_RMA | UCP_FEATURE_AM;
  status = ucp_init(&params, config, &side->context);
  ucp_config_release(config);
  if (status != UCS_OK) return UcsError("ucp_init", status);

  ucp_worker_params_t worker_params{};
  worker_params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  worker_params.thread_mode = UCS_THREAD_MODE_SINGLE;
  status = ucp_worker_create(side->context, &worker_params, &side->worker);
  if (status != UCS_OK) return UcsError("ucp_worker_create", status);

  ucp_am_handler_param_t handler{};
  handler.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID |
                       UCP_AM_HANDLER_PARAM_FIELD_CB |
                       UCP_AM_HANDLER_PARAM_FIELD_ARG;
  handler.id = am_id;
  handler.cb = OnAm;
  handler.arg = side;
  status = ucp_worker_set_am_recv_handler(side->worker, &handler);
  if (status != UCS_OK) {
    return UcsError("ucp_worker_set_am_recv_handler", status);
  }

  ucp_mem_map_params_t map{};
  map.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS |
                   UCP_MEM_MAP_PARAM_FIELD_LENGTH |
                   UCP_MEM_MAP_PARAM_FIELD_FLAGS;
  map.address = nullptr;
  map.length = kMaxBytes;
  map.flags = UCP_MEM_MAP_ALLOCATE;
  status = ucp_mem_map(side->context, &map, &side->memh);
  if (status != UCS_OK) return UcsError("ucp_mem_map", status);
  ucp_mem_attr_t attr{};
  attr.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS;
  status = ucp_mem_query(side->memh, &attr);
  if (status != UCS_OK) return UcsError("ucp_mem_query", status);
  side->buffer = attr.address;
  std::memset(side->buffer, 1, kMaxBytes);
  return absl::OkStatus();
}

absl::StatusOr<std::string> WorkerAddress(ucp_worker_h worker) {
  ucp_address_t* address = nullptr;
  size_t length = 0;
  const ucs_status_t status = ucp_worker_get_address(worker, &address, &length);
  if (status != UCS_OK) return UcsError("ucp_worker_get_address", status);
  std::string bytes(reinterpret_cast<const char*>(address), length);
  ucp_worker_release_address(worker, address);
  return bytes;
}

absl::Status ConnectRaw(RawSide* side, absl::string_view worker_address) {
  ucp_ep_params_t params{};
  params.field_mask =
      UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
  params.address =
      reinterpret_cast<const ucp_address_t*>(worker_address.data());
  params.err_mode = UCP_ERR_HANDLING_MODE_NONE;
  const ucs_status_t status = ucp_ep_create(side->worker, &params, &side->ep);
  return status == UCS_OK ? absl::OkStatus()
                          : UcsError("ucp_ep_create", status);
}

// 8 or 16 bytes as an active message; waits until sent locally.
absl::Status SendAm(RawSide* side, unsigned am_id, const std::string& bytes) {
  ucp_request_param_t param{};
  return WaitRequest(side->worker,
                     ucp_am_send_nbx(side->ep, am_id, nullptr, 0, bytes.data(),
                                     bytes.size(), &param),
                     "ucp_am_send_nbx");
}

}  // namespace flowkv::write_latency
