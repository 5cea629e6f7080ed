// SPDX-License-Identifier: Apache-2.0
// The active-message headers' codec (lib/engine/wireup/am_header.h), through
// lib/common/byte_io.h like every wire format of the library.

#include "lib/engine/wireup/am_header.h"

#include "absl/strings/str_format.h"
#include "lib/common/byte_io.h"

namespace flowkv::internal {

AmHeaderBytes EncodeAmHeader(const AmHeader& header) {
  FixedByteWriter<kAmHeaderBytes> w;
  w.U64(header.conn_id);
  w.U64(header.transfer_id);
  return std::move(w).Take();
}

DataHeaderBytes EncodeDataHeader(const DataHeader& header) {
  FixedByteWriter<kDataHeaderBytes> w;
  w.U64(header.conn_id);
  w.U64(header.transfer_id);
  w.U32(header.region);
  w.U32(header.code);
  w.U64(header.offset);
  w.U64(header.length);
  w.U32(header.reply_region);
  w.U64(header.reply_offset);
  return std::move(w).Take();
}

absl::StatusOr<AmHeader> ParseAmHeader(absl::Span<const uint8_t> bytes) {
  ByteReader r(bytes, "AmHeader");
  AmHeader header;
  r.U64("conn_id", &header.conn_id);
  r.U64("transfer_id", &header.transfer_id);
  if (absl::Status s = r.End(); !s.ok()) return s;
  return header;
}

absl::StatusOr<DataHeader> ParseDataHeader(absl::Span<const uint8_t> bytes) {
  ByteReader r(bytes, "DataHeader");
  DataHeader header;
  r.U64("conn_id", &header.conn_id);
  r.U64("transfer_id", &header.transfer_id);
  r.U32("region", &header.region);
  r.U32("code", &header.code);
  r.U64("offset", &header.offset);
  r.U64("length", &header.length);
  r.U32("reply_region", &header.reply_region);
  r.U64("reply_offset", &header.reply_offset);
  if (absl::Status s = r.End(); !s.ok()) return s;
  return header;
}

std::string EncodeAckRefusal(const absl::Status& refusal) {
  const absl::string_view message = refusal.message();
  ByteWriter w;
  w.U32(static_cast<uint32_t>(refusal.code()));
  const absl::string_view head = message.substr(0, kMaxAckRefusalMessageBytes);
  w.Bytes(std::string_view(head.data(), head.size()));
  return std::move(w).Take();
}

absl::Status ParseAckRefusal(absl::Span<const uint8_t> bytes,
                             absl::Status* refusal) {
  ByteReader r(bytes, "AckRefusal");
  uint32_t code = 0;
  std::string message;
  r.U32("code", &code);
  r.Bytes("message", kMaxAckRefusalMessageBytes, &message);
  if (absl::Status s = r.End(); !s.ok()) return s;
  if (code < 1 || code > 16) {
    return absl::InvalidArgumentError(
        absl::StrFormat("AckRefusal: code %d is not in [1, 16]", code));
  }
  *refusal = absl::Status(static_cast<absl::StatusCode>(code), message);
  return absl::OkStatus();
}

}  // namespace flowkv::internal
