// The message data path: a transfer's bytes as active messages, for peers
// whose endpoint has no one-sided put or get (tcp in UCX 1.13). UCX would
// emulate those with its own messages, and its emulation aborts the
// receiving process when the sender dies in the middle of a put (the put
// handler cannot send its completion and UCX treats that as fatal). Here
// the receiving engine's own handler copies the bytes into its region
// after checking the region and the bounds, so a dead sender only fails
// its peer. May call UCX active-message sends, the region table, the peer
// state machine and the transfer path (AfterFlush, FinishTransfer).
//
//   Write: kAmData {region, offset, length} + bytes, one per piece; the
//          window's flush and the notification follow on the same
//          endpoint, whose messages arrive in order.
//   Read:  kAmReadRequest {the peer's region, offset, length, where the
//          bytes go here}; the peer answers kAmReadData {region, offset,
//          code} + bytes. A window ends when every byte arrived.
//   Abort of a Write: after the window's flush, a kAmFence that the peer
//          acknowledges (kAmAck) once it handled everything before it, so
//          no byte of the transfer can still land when it is reported.

#include <cstring>

#include "absl/strings/str_format.h"
#include "lib/transfer/region_table.h"
#include "lib/transfer/transfer_engine_impl.h"
#include "lib/transfer/ucx_status.h"

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

bool TransferEngineImpl::SendDataMessage(Peer* peer, unsigned am_id,
                                         const DataHeader& header,
                                         const void* data, uint64_t length) {
  auto* ctx = new RequestContext{this, header.transfer_id, peer->id, {}, {}};
  EncodeDataHeader(header, ctx->data_header);
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK |
                       UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS;
  param.cb.send = &TransferEngineImpl::OnDataSent;
  param.user_data = ctx;
  // Eager: the receiver's handler gets the whole message at once and copies
  // it; never rendezvous, which would read the sender's memory later.
  param.flags = UCP_AM_SEND_FLAG_EAGER;
  ucs_status_ptr_t request =
      ucp_am_send_nbx(peer->ep, am_id, ctx->data_header, kDataHeaderBytes, data,
                      length, &param);
  if (UCS_PTR_IS_PTR(request)) return true;
  delete ctx;
  if (UCS_PTR_STATUS(request) == UCS_OK) return true;
  const absl::Status status =
      UcxStatus(UCS_PTR_STATUS(request),
                absl::StrFormat("peer %d: sending transfer bytes", peer->id));
  FailPeer(peer, status, header.transfer_id,
           absl::UnavailableError(status.message()));
  return false;
}

void TransferEngineImpl::OnDataSent(void* request, ucs_status_t /*status*/,
                                    void* user_data) {
  // Failures reach the endpoint's error handler (and the window's flush).
  ReleaseRequest(request, user_data);
}

bool TransferEngineImpl::PostDataMessage(Peer* peer, const TransferOp& op,
                                         uint64_t op_offset, uint64_t length,
                                         const char* local) {
  DataHeader header;
  header.conn_id = peer->remote_conn_id;
  header.region = op.dst_region;
  header.offset = op.dst_offset + op_offset;
  header.length = length;
  return SendDataMessage(peer, kAmData, header, local, length);
}

bool TransferEngineImpl::PostReadRequest(Active* active, Peer* peer,
                                         const TransferOp& op,
                                         uint64_t op_offset, uint64_t length) {
  DataHeader header;
  header.conn_id = peer->remote_conn_id;
  header.transfer_id = active->record->id();
  header.region = op.src_region;
  header.offset = op.src_offset + op_offset;
  header.length = length;
  header.reply_region = op.dst_region;
  header.reply_offset = op.dst_offset + op_offset;
  active->read_bytes_pending += length;
  return SendDataMessage(peer, kAmReadRequest, header, nullptr, 0);
}

void TransferEngineImpl::HandleData(Peer* peer, const DataHeader& header,
                                    const void* data, size_t length) {
  const RegionTable::Mapping region = regions_.Lookup(header.region);
  absl::Status status =
      region.base == nullptr
          ? absl::NotFoundError(
                absl::StrFormat("no region %d here", header.region))
          : CheckRange("incoming Write", 0,
                       absl::StrFormat("region %d", header.region),
                       header.offset, length, region.length);
  if (status.ok() && header.length != length) {
    status = absl::InvalidArgumentError(
        absl::StrFormat("incoming Write: header says %d bytes, %d arrived",
                        header.length, length));
  }
  if (!status.ok()) {
    // The peer wrote outside what it was told: fail it, so that its
    // transfer fails too.
    FailPeer(peer, absl::InvalidArgumentError(absl::StrFormat(
                       "peer %d (%s) sent bytes this engine refuses: %s",
                       peer->id, peer->name, status.message())));
    return;
  }
  std::memcpy(region.base + header.offset, data, length);
}

void TransferEngineImpl::HandleReadRequest(Peer* peer,
                                           const DataHeader& request) {
  const RegionTable::Mapping region = regions_.Lookup(request.region);
  absl::Status status =
      region.base == nullptr
          ? absl::NotFoundError(
                absl::StrFormat("no region %d here", request.region))
          : CheckRange("incoming Read", 0,
                       absl::StrFormat("region %d", request.region),
                       request.offset, request.length, region.length);
  DataHeader reply;
  reply.conn_id = peer->remote_conn_id;
  reply.transfer_id = request.transfer_id;
  reply.region = request.reply_region;
  reply.offset = request.reply_offset;
  reply.length = request.length;
  reply.code = static_cast<uint32_t>(status.code());
  if (!status.ok()) {
    Log(LogSeverity::kWarning,
        absl::StrFormat("refused a Read of peer %d (%s): %s", peer->id,
                        peer->name, status.message()));
    SendDataMessage(peer, kAmReadData, reply, nullptr, 0);
    return;
  }
  SendDataMessage(peer, kAmReadData, reply, region.base + request.offset,
                  request.length);
}

void TransferEngineImpl::HandleReadData(Peer* peer, const DataHeader& header,
                                        const void* data, size_t length) {
  auto it = active_.find(header.transfer_id);
  if (it == active_.end()) return;
  Active* active = it->second.get();
  const uint64_t id = header.transfer_id;
  if (active->peer != peer->id || active->kind != TransferKind::kRead ||
      active->failing || header.length > active->read_bytes_pending) {
    return;  // not a reply this transfer waits for
  }
  absl::Status status;
  if (header.code != 0) {
    status = absl::Status(
        static_cast<absl::StatusCode>(
            header.code >
                    static_cast<uint32_t>(absl::StatusCode::kUnauthenticated)
                ? static_cast<uint32_t>(absl::StatusCode::kUnknown)
                : header.code),
        absl::StrFormat("transfer %d: peer %d (%s) refused to read region "
                        "bytes",
                        id, peer->id, peer->name));
  } else if (std::find(active->local_regions.begin(),
                       active->local_regions.end(),
                       header.region) == active->local_regions.end()) {
    status = absl::InvalidArgumentError(absl::StrFormat(
        "transfer %d: a reply names region %d, which it does not read into", id,
        header.region));
  } else if (length != header.length) {
    status = absl::InvalidArgumentError(
        absl::StrFormat("transfer %d: a reply of %d bytes announced %d", id,
                        length, header.length));
  } else {
    const RegionTable::Mapping region = regions_.Lookup(header.region);
    status = CheckRange("Read reply", 0,
                        absl::StrFormat("local region %d", header.region),
                        header.offset, length, region.length);
    if (status.ok()) std::memcpy(region.base + header.offset, data, length);
  }
  if (!status.ok() && active->read_error.ok()) active->read_error = status;
  active->read_bytes_pending -= header.length;
  if (active->read_bytes_pending != 0) return;
  if (!active->read_error.ok() && active->abort_status.ok()) {
    active->flush_in_flight = false;
    FinishTransfer(id, active->read_error);
    return;
  }
  AfterFlush(id, peer->id, UCS_OK);  // the window is complete
}

}  // namespace flowkv::internal
