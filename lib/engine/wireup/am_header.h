// SPDX-License-Identifier: Apache-2.0
// The engine's active messages: their UCX ids and the two headers they
// carry (every UCX active message has a header, separate from its data).
// Headers arrive from the network; the parsers check the length and never
// read past the span.
//
// All integers little-endian, no padding, no version (the handshake's
// protocol version, wire_format.h, covers these too).
//
//   AmHeader (16 bytes; every id but the data method's three):
//     u64 conn_id       the receiver's id for the connection (its
//                       Peer::wire_id; kAmHello: 0)
//     u64 transfer_id   kAmNotify with an acknowledgement requested, kAmAck,
//                       kAmFence: the sender's transfer id; else 0
//
//   DataHeader (52 bytes; kAmData, kAmReadRequest, kAmReadData):
//     u64 conn_id       as above
//     u64 transfer_id   the reading transfer's id (reads), else the sender's
//     u32 region        where the bytes go (kAmData, kAmReadData) or come
//     u32 code          from (kAmReadRequest); code: absl::StatusCode,
//     u64 offset        kAmReadData's reason why no bytes follow
//     u64 length        the bytes' length
//     u32 reply_region  kAmReadRequest: where the reader wants the bytes
//     u64 reply_offset
//
// The message's data (UCX's, after the header) is the handshake message
// (wire_format.h), the notification or message bytes, the data method's
// bytes, or kAmAck's: none (the notification was delivered, or the fence
// held) or an AckRefusal (the receiver refused the notification, which it
// did not deliver):
//
//   AckRefusal:
//     u32 code          absl::StatusCode, 1..16
//     bytes message     u32 length (0..kMaxAckRefusalMessageBytes) + bytes
// The receiver drops a message whose header has the wrong length for
// its id (UCX may hand a handler messages that are not ours).
//
// Thread safety: thread-safe (pure functions and value types).

#ifndef FLOWKV_LIB_ENGINE_WIREUP_AM_HEADER_H_
#define FLOWKV_LIB_ENGINE_WIREUP_AM_HEADER_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "flowkv/transfer_types.h"

namespace flowkv::internal {

// Active message ids (ucp_am_send_nbx's id). Every message carries an
// AmHeader, except the data method's, which carry a DataHeader.
enum AmId : unsigned {
  kAmHello = 0x4b01,
  kAmWelcome = 0x4b02,
  kAmReject = 0x4b03,
  kAmNotify = 0x4b04,
  kAmMessage = 0x4b05,
  kAmPing = 0x4b06,
  kAmAck = 0x4b07,  // acknowledges a notification (transfer_id)
  // The active-message data method (am_data.cc); these carry a DataHeader.
  kAmData = 0x4b08,         // a Write's bytes
  kAmReadRequest = 0x4b09,  // asks for a Read's bytes
  kAmReadData = 0x4b0a,     // a Read's bytes (or why not)
  kAmFence = 0x4b0b,        // acknowledge (kAmAck) once all before it landed
  kAmStop = 0x4b0c,         // Disconnect: stop writing to me, then confirm
  kAmStopAck = 0x4b0d,      // every transfer to you is fenced; closing
  kAmChallenge = 0x4b0e,    // the handshake's server nonce
  kAmProof = 0x4b0f,        // the client's proof and engine info
};
inline constexpr unsigned kAllAmIds[] = {
    kAmHello, kAmWelcome, kAmReject,  kAmNotify,      kAmMessage,
    kAmPing,  kAmAck,     kAmData,    kAmReadRequest, kAmReadData,
    kAmFence, kAmStop,    kAmStopAck, kAmChallenge,   kAmProof};

// Whether messages with this id carry a DataHeader (else an AmHeader).
inline bool CarriesDataHeader(unsigned am_id) {
  return am_id == kAmData || am_id == kAmReadRequest || am_id == kAmReadData;
}

struct AmHeader {
  uint64_t conn_id = 0;
  uint64_t transfer_id = 0;
  friend bool operator==(const AmHeader&, const AmHeader&) = default;
};
inline constexpr size_t kAmHeaderBytes = 8 + 8;

struct DataHeader {
  uint64_t conn_id = 0;
  uint64_t transfer_id = 0;
  RegionId region = 0;
  uint32_t code = 0;  // absl::StatusCode
  uint64_t offset = 0;
  uint64_t length = 0;
  RegionId reply_region = 0;
  uint64_t reply_offset = 0;
  friend bool operator==(const DataHeader&, const DataHeader&) = default;
};
inline constexpr size_t kDataHeaderBytes = 8 + 8 + 4 + 4 + 8 + 8 + 4 + 8;

// The header's kAmHeaderBytes / kDataHeaderBytes bytes (fixed arrays: they
// go with every message, so encoding them allocates nothing).
using AmHeaderBytes = std::array<uint8_t, kAmHeaderBytes>;
using DataHeaderBytes = std::array<uint8_t, kDataHeaderBytes>;
AmHeaderBytes EncodeAmHeader(const AmHeader& header);
DataHeaderBytes EncodeDataHeader(const DataHeader& header);

// An AckRefusal's bytes. REQUIRES: !refusal.ok(); a longer message is
// truncated to kMaxAckRefusalMessageBytes.
inline constexpr size_t kMaxAckRefusalMessageBytes = 1024;
std::string EncodeAckRefusal(const absl::Status& refusal);
// OK and the refusal (never OK) in `*refusal`, or InvalidArgument naming
// the bad field (a code out of range, a message over the limit,
// truncation, trailing bytes) and `*refusal` untouched. (Not a
// StatusOr<Status>, whose error and value would look alike.)
absl::Status ParseAckRefusal(absl::Span<const uint8_t> bytes,
                             absl::Status* refusal);

// InvalidArgument, naming the field, unless `bytes` is exactly one header
// (any values are valid: the receiver checks them against its state).
absl::StatusOr<AmHeader> ParseAmHeader(absl::Span<const uint8_t> bytes);
absl::StatusOr<DataHeader> ParseDataHeader(absl::Span<const uint8_t> bytes);

}  // namespace flowkv::internal

#endif  // FLOWKV_LIB_ENGINE_WIREUP_AM_HEADER_H_
