// SPDX-License-Identifier: Apache-2.0
// The raw-UCX baseline of write_latency_benchmark: one process's plain UCX
// objects (context, worker, endpoint, a mapped buffer) and the few ucp calls
// both sides make, with ucs_status_t converted to absl::Status here.
#ifndef FLOWKV_BENCHMARKS_WRITE_LATENCY_RAW_UCX_H_
#define FLOWKV_BENCHMARKS_WRITE_LATENCY_RAW_UCX_H_

#include <cstdint>
#include <string>
#include <ucp/api/ucp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace flowkv::write_latency {

absl::Status UcsError(absl::string_view what, ucs_status_t status);

// Progresses `worker` until `request` (a ucp *_nbx result) completes, then
// frees it.
absl::Status WaitRequest(ucp_worker_h worker, void* request,
                         absl::string_view what);

struct RawSide {
  ucp_context_h context = nullptr;
  ucp_worker_h worker = nullptr;
  ucp_ep_h ep = nullptr;
  ucp_mem_h memh = nullptr;
  void* buffer = nullptr;
  ucp_rkey_h rkey = nullptr;  // Sender: the receiver's buffer.
  uint64_t remote_buffer = 0;
  // The last active message received: (seq, receive time or reply time).
  bool arrived = false;
  uint64_t seq = 0;
  int64_t time_ns = 0;

  ~RawSide() { Close().IgnoreError(); }

  // Closes the endpoint (flushing, not forcing: there is no peer error
  // handling; the peer must keep progressing) and drops the remote key.
  absl::Status CloseEndpoint() {
    if (rkey != nullptr) ucp_rkey_destroy(rkey);
    rkey = nullptr;
    if (ep == nullptr) return absl::OkStatus();
    ucp_request_param_t param{};
    param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    param.flags = 0;
    const absl::Status status =
        WaitRequest(worker, ucp_ep_close_nbx(ep, &param), "ep close");
    ep = nullptr;
    return status;
  }

  // CloseEndpoint, then releases everything.
  absl::Status Close() {
    const absl::Status status = CloseEndpoint();
    if (memh != nullptr) ucp_mem_unmap(context, memh);
    memh = nullptr;
    buffer = nullptr;
    if (worker != nullptr) ucp_worker_destroy(worker);
    worker = nullptr;
    if (context != nullptr) ucp_cleanup(context);
    context = nullptr;
    return status;
  }
};

// Creates context, worker (AM handler `am_id`, recording each eager message's
// (seq, time) in the side) and a mapped buffer of kMaxBytes.
absl::Status OpenRawSide(RawSide* side, unsigned am_id);

absl::StatusOr<std::string> WorkerAddress(ucp_worker_h worker);

absl::Status ConnectRaw(RawSide* side, absl::string_view worker_address);

// 8 or 16 bytes as an active message; waits until sent locally.
absl::Status SendAm(RawSide* side, unsigned am_id, const std::string& bytes);

}  // namespace flowkv::write_latency

#endif  // FLOWKV_BENCHMARKS_WRITE_LATENCY_RAW_UCX_H_
