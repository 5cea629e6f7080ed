// SPDX-License-Identifier: Apache-2.0
// The active-message data method: a transfer's bytes as active messages, for
// peers whose endpoint has no one-sided put or get (tcp in UCX 1.13). UCX would
// emulate those with its own messages, and its emulation aborts the
// receiving process when the sender dies in the middle of a put (the put
// handler cannot send its completion and UCX treats that as fatal). Here
// the receiving engine's own handler copies the bytes into its region
// after checking the region and the bounds, so a dead sender only fails
// its peer. May call UCX active-message sends, the region table, the peer
// state machine and posting (posting.cc) (AfterFlush, FinishTransfer).
//
//   Write: kAmData {region, offset, length} + bytes, one per window; the
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
#include "lib/engine/region_table.h"
#include "lib/engine/transfer_engine_impl.h"

namespace flowkv::internal {
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
  absl::StatusOr<char*> target =
      regions_.Resolve("incoming Write", header.region, header.offset, length);
  absl::Status status = target.status();
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
  std::memcpy(*target, data, length);
}

void TransferEngineImpl::HandleReadRequest(Peer* peer,
                                           const DataHeader& request) {
  absl::StatusOr<char*> source = regions_.Resolve(
      "incoming Read", request.region, request.offset, request.length);
  DataHeader reply;
  reply.conn_id = peer->remote_conn_id;
  reply.transfer_id = request.transfer_id;
  reply.region = request.reply_region;
  reply.offset = request.reply_offset;
  reply.length = request.length;
  reply.code = static_cast<uint32_t>(source.status().code());
  if (!source.ok()) {
    Log(LogSeverity::kWarning,
        absl::StrFormat("refused a Read of peer %d (%s): %s", peer->id,
                        peer->name, source.status().message()));
    SendDataMessage(peer, kAmReadData, reply, nullptr, 0);
    return;
  }
  SendDataMessage(peer, kAmReadData, reply, *source, request.length);
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
    absl::StatusOr<char*> target =
        regions_.Resolve("Read reply", header.region, header.offset, length);
    status = target.status();
    if (status.ok()) std::memcpy(*target, data, length);
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
