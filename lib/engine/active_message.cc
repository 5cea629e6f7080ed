// SPDX-License-Identifier: Apache-2.0
// Active messages: the little-endian headers (AmHeader, DataHeader) and the
// one place that hands a message to UCX, with the RequestContext that keeps
// its header and payload alive until UCX completes it. Control messages,
// notifications and the message data path all send through SendAm. Calls
// only UCX, ucx_status and the peer state machine (a refused data message
// fails its peer).

#include "absl/strings/str_format.h"
#include "lib/engine/fault_injection.h"
#include "lib/engine/transfer_engine_impl.h"
#include "lib/engine/ucx_status.h"

namespace flowkv::internal {
namespace {

template <typename T>
void PutLe(T v, uint8_t** out) {
  for (size_t i = 0; i < sizeof(T); ++i) {
    *(*out)++ = static_cast<uint8_t>(static_cast<uint64_t>(v) >> (8 * i));
  }
}

template <typename T>
T GetLe(const uint8_t** in) {
  uint64_t v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= uint64_t{*(*in)++} << (8 * i);
  return static_cast<T>(v);
}

}  // namespace

void EncodeAmHeader(const AmHeader& header, uint8_t out[kAmHeaderBytes]) {
  uint8_t* at = out;
  PutLe(header.conn_id, &at);
  PutLe(header.transfer_id, &at);
}

AmHeader DecodeAmHeader(const uint8_t in[kAmHeaderBytes]) {
  const uint8_t* at = in;
  AmHeader header;
  header.conn_id = GetLe<uint64_t>(&at);
  header.transfer_id = GetLe<uint64_t>(&at);
  return header;
}

void EncodeDataHeader(const DataHeader& header, uint8_t out[kDataHeaderBytes]) {
  uint8_t* at = out;
  PutLe(header.conn_id, &at);
  PutLe(header.transfer_id, &at);
  PutLe(header.region, &at);
  PutLe(header.code, &at);
  PutLe(header.offset, &at);
  PutLe(header.length, &at);
  PutLe(header.reply_region, &at);
  PutLe(header.reply_offset, &at);
}

DataHeader DecodeDataHeader(const uint8_t in[kDataHeaderBytes]) {
  const uint8_t* at = in;
  DataHeader header;
  header.conn_id = GetLe<uint64_t>(&at);
  header.transfer_id = GetLe<uint64_t>(&at);
  header.region = GetLe<uint32_t>(&at);
  header.code = GetLe<uint32_t>(&at);
  header.offset = GetLe<uint64_t>(&at);
  header.length = GetLe<uint64_t>(&at);
  header.reply_region = GetLe<uint32_t>(&at);
  header.reply_offset = GetLe<uint64_t>(&at);
  return header;
}

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
  auto* ctx = new RequestContext{this, 0, peer->id, std::move(payload), {}};
  EncodeAmHeader(header, ctx->header);
  // A failure reaches the peer's error handler (or its heartbeats).
  SendAm(peer, am_id, ctx, ctx->header, kAmHeaderBytes, ctx->payload.data(),
         ctx->payload.size(), &TransferEngineImpl::OnSendDone,
         UCP_AM_SEND_FLAG_EAGER | (reply ? UCP_AM_SEND_FLAG_REPLY : 0));
}

bool TransferEngineImpl::SendDataMessage(Peer* peer, unsigned am_id,
                                         const DataHeader& header,
                                         const void* data, uint64_t length) {
  auto* ctx = new RequestContext{this, header.transfer_id, peer->id, {}, {}};
  EncodeDataHeader(header, ctx->data_header);
  // Eager: the receiver's handler gets the whole message at once and copies
  // it; never rendezvous, which would read the sender's memory later.
  const ucs_status_t status =
      SendAm(peer, am_id, ctx, ctx->data_header, kDataHeaderBytes, data, length,
             &TransferEngineImpl::OnDataSent, UCP_AM_SEND_FLAG_EAGER);
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
