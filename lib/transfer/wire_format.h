// The bytes engines exchange: LocalMetadata() blobs and handshake messages.
//
// Every blob starts with a 4-byte magic, a 16-bit protocol version and ends
// with a 64-bit FNV-1a checksum of everything before it. All integers are
// little-endian. Parsers check every length against the bytes left and
// against a fixed limit, so any input gives a Status, never a crash.
//
//   EngineInfo  (LocalMetadata):
//     "FKVM" u16 version  u64 instance_id  str name  bytes worker_address
//     u32 n  n x { u32 id  u8 kind  u64 base  u64 length  bytes rkey }
//     u8[32] mac  u64 checksum
//   Hello (client -> server, also for AddPeer):
//     "FKVH" u16 version  u8 via_sockaddr  u64 sender_conn_id  str token
//     bytes engine_info  u64 checksum
//   HelloAck (server -> client):
//     "FKVA" u16 version  u64 sender_conn_id  u64 receiver_conn_id
//     str token  bytes engine_info  u64 checksum
//   Reject (server -> client):
//     "FKVR" u16 version  u64 receiver_conn_id  u32 code  str reason
//     u64 checksum
//
// str / bytes = u32 length + the bytes.
//
// The EngineInfo mac is HMAC-SHA256 (lib/transfer/hmac.h), keyed by the
// cluster token, over every byte before it (magic to the last region). The
// checksum only catches corruption: anyone can recompute it. The mac is what
// keeps bytes from outside the cluster away from UCX: ParseSignedEngineInfo
// checks it before any field past the version is read. ParseEngineInfo
// checks the structure alone (for TransferEngine::ValidateMetadata, which
// has no token). Hello and HelloAck embed an EngineInfo signed with the token
// they carry; the handshake compares that token with its own. So what
// reaches ucp_ep_create / ucp_ep_rkey_unpack is a ParseSignedEngineInfo
// result, or a Hello / HelloAck info after its token compared equal.
//
// Version history: 1 had no mac; 2 added it. Another version gives
// FailedPrecondition.
//
// Thread safety: thread-safe (pure functions and value types).

#ifndef FLOWKV_LIB_TRANSFER_WIRE_FORMAT_H_
#define FLOWKV_LIB_TRANSFER_WIRE_FORMAT_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "flowkv/export.h"

namespace flowkv::internal {

inline constexpr uint16_t kProtocolVersion = 2;
inline constexpr size_t kMaxNameBytes = 255;
inline constexpr size_t kMaxTokenBytes = 4096;
inline constexpr size_t kMaxWorkerAddressBytes = 64 * 1024;
inline constexpr size_t kMaxRkeyBytes = 64 * 1024;
inline constexpr size_t kMaxRegions = 64 * 1024;
inline constexpr size_t kMaxReasonBytes = 4096;
inline constexpr size_t kMaxEngineInfoBytes = 16 * 1024 * 1024;

struct WireRegion {
  uint32_t id = 0;
  uint8_t kind = 0;  // MemoryKind
  uint64_t base = 0;
  uint64_t length = 0;
  std::string rkey;  // ucp_rkey_pack() bytes
};

struct EngineInfo {
  uint64_t instance_id = 0;
  std::string name;
  std::string worker_address;
  std::vector<WireRegion> regions;
};

struct Hello {
  bool via_sockaddr = false;
  uint64_t sender_conn_id = 0;
  std::string token;
  EngineInfo info;
};

struct HelloAck {
  uint64_t sender_conn_id = 0;    // the server's id for this connection
  uint64_t receiver_conn_id = 0;  // the client's id, echoed
  std::string token;
  EngineInfo info;
};

struct Reject {
  uint64_t receiver_conn_id = 0;
  uint32_t code = 0;  // absl::StatusCode
  std::string reason;
};

// The EngineInfo blob, signed with HMAC-SHA256 keyed by `mac_key` (the
// cluster token; the empty token is a valid key).
// (Exported from the shared library only so that its unit test can call it.)
FLOWKV_EXPORT std::string EncodeEngineInfo(const EngineInfo& info,
                                           std::string_view mac_key);
// The embedded EngineInfo is signed with hello.token / ack.token.
// (Exported from the shared library only so that their unit test and fuzz
// target can call them.)
FLOWKV_EXPORT std::string EncodeHello(const Hello& hello);
FLOWKV_EXPORT std::string EncodeHelloAck(const HelloAck& ack);
FLOWKV_EXPORT std::string EncodeReject(const Reject& reject);

// InvalidArgument naming the field for malformed input (bad magic,
// truncation, a length over its limit, trailing bytes, checksum mismatch,
// a region with zero length or one that wraps the address space, duplicate
// region ids, an empty worker address); FailedPrecondition for another
// protocol version. These check structure only: ParseEngineInfo requires
// the 32 mac bytes but does not check them, so its result must not reach
// UCX; the info in a Hello / HelloAck may, only once its token has been
// compared with the cluster's (ConstantTimeEquals).
// (The exported ones are exported from the shared library only so that their
// unit test can call them.)
FLOWKV_EXPORT absl::StatusOr<EngineInfo> ParseEngineInfo(
    absl::Span<const uint8_t> bytes);
FLOWKV_EXPORT absl::StatusOr<Hello> ParseHello(absl::Span<const uint8_t> bytes);
FLOWKV_EXPORT absl::StatusOr<HelloAck> ParseHelloAck(
    absl::Span<const uint8_t> bytes);
FLOWKV_EXPORT absl::StatusOr<Reject> ParseReject(
    absl::Span<const uint8_t> bytes);

// ParseEngineInfo for bytes from outside (AddPeer): before reading any field
// past the version, checks in constant time that the mac is HMAC-SHA256
// keyed by `mac_key`, and gives PermissionDenied when it is not (another
// cluster's token, or bytes forged or altered with a recomputed checksum).
// Checks, in order: length, magic, checksum (InvalidArgument), version
// (FailedPrecondition), mac (PermissionDenied), structure and limits
// (InvalidArgument).
// (Exported from the shared library only so that its unit test can call it.)
FLOWKV_EXPORT absl::StatusOr<EngineInfo> ParseSignedEngineInfo(
    absl::Span<const uint8_t> bytes, std::string_view mac_key);

// FNV-1a, 64 bits.
uint64_t Fnv1a64(absl::Span<const uint8_t> bytes);

// Compares without an early exit (for tokens).
bool ConstantTimeEquals(std::string_view a, std::string_view b);

inline absl::Span<const uint8_t> AsBytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace flowkv::internal

#endif  // FLOWKV_LIB_TRANSFER_WIRE_FORMAT_H_
