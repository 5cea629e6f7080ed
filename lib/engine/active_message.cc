// SPDX-License-Identifier: Apache-2.0
// Active messages: the one place that hands a message to UCX, with the
// RequestContext that keeps its header and payload alive until UCX completes
// it. Control messages, notifications and the active-message data method all
// send through SendAm. Calls only UCX, ucx_status, the header codec
// (wireup/am_header.h) and the peer state machine (a refused data message
// fails its peer).

#include "absl/strings/str_format.h"
#include "lib/engine/fault_injection.h"
#include "lib/engine/transfer_engine_impl.h"
#include "lib/engine/ucx_status.h"

namespace flowkv::internal {
ucs_status_t TransferEngineImpl::SendAm(Peer* peer, unsigned am_id,
                                        RequestContext* ctx, const void* header,
                                        size_t header_bytes, const void* data,
                                        size_t length,
                                        ucp_send_nbx_callback_t callback,
                                        uint32_t flags) {
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK |
                       UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS;
  param.cb.send = callback;
  param.user_data = ctx;
  param.flags = flags;
  const ucs_status_t injected = FaultInjector::Inject(FaultPoint::kAmSend);
  ucs_status_ptr_t request =
      injected != UCS_OK ? UCS_STATUS_PTR(injected)
                         : ucp_am_send_nbx(peer->ep, am_id, header,
                                           header_bytes, data, length, &param);
  if (UCS_PTR_IS_PTR(request)) return UCS_INPROGRESS;
  delete ctx;  // completed (or failed) at once: no callback follows
  return UCS_PTR_STATUS(request);
}

void TransferEngineImpl::SendControl(Peer* peer, unsigned am_id,
                                     AmHeader header, std::string payload,
                                     bool reply) {
  auto* ctx = new RequestContext{
      this, 0, peer->id, std::move(payload), EncodeAmHeader(header), {}};
  // A failure reaches the peer's error handler (or its heartbeats).
  SendAm(peer, am_id, ctx, ctx->header.data(), ctx->header.size(),
         ctx->payload.data(), ctx->payload.size(),
         &TransferEngineImpl::OnSendDone,
         UCP_AM_SEND_FLAG_EAGER | (reply ? UCP_AM_SEND_FLAG_REPLY : 0));
}

bool TransferEngineImpl::SendDataMessage(Peer* peer, unsigned am_id,
                                         const DataHeader& header,
                                         const void* data, uint64_t length) {
  auto* ctx = new RequestContext{this, header.transfer_id,      peer->id, {},
                                 {},   EncodeDataHeader(header)};
  // Eager: the receiver's handler gets the whole message at once and copies
  // it; never rendezvous, which would read the sender's memory later.
  const ucs_status_t status = SendAm(
      peer, am_id, ctx, ctx->data_header.data(), ctx->data_header.size(), data,
      length, &TransferEngineImpl::OnDataSent, UCP_AM_SEND_FLAG_EAGER);
  if (status == UCS_OK || status == UCS_INPROGRESS) return true;
  const absl::Status failure = UcxStatus(
      status, absl::StrFormat("peer %d: sending transfer bytes", peer->id));
  FailPeer(peer, failure, header.transfer_id,
           absl::UnavailableError(failure.message()));
  return false;
}

void TransferEngineImpl::OnDataSent(void* request, ucs_status_t /*status*/,
                                    void* user_data) {
  // Failures reach the endpoint's error handler (and the window's flush).
  ReleaseRequest(request, user_data);
}

}  // namespace flowkv::internal
