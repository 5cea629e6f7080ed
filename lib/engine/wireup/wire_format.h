// SPDX-License-Identifier: Apache-2.0
// The bytes engines exchange: LocalMetadata() blobs and handshake messages.
//
// Every blob starts with a 4-byte magic, a 16-bit protocol version and ends
// with a 64-bit FNV-1a checksum of everything before it. All integers are
// little-endian. Parsers check every length against the bytes left and
// against a fixed limit before anything is allocated, so any input gives a
// Status, never a crash or an allocation larger than its limit. The codec
// (ByteWriter, ByteReader, Fnv1a64) is lib/common/byte_io.h. The headers of
// the active messages that carry these blobs: am_header.h.
//
//   EngineInfo  (LocalMetadata):
//     "FKVM" u16 version  u64 instance_id  str name  u32 ucx_version
//     u8 address_format  bytes worker_address
//     u32 n  n x { u32 id  u8 kind  u64 base  u64 length  bytes rkey }
//     u8[32] mac  u64 checksum
//
// The handshake (client C, server S; docs/security.md) is a challenge and
// response in which each side proves it holds the cluster token without
// sending it, over both sides' fresh nonces so that nothing recorded from
// one handshake is accepted in another:
//
//   Hello     C->S  "FKVH" u16 version  u8 via_sockaddr  u64 sender_conn_id
//                   u8[32] client_nonce  str name  u32 ucx_version
//                   u8 address_format  bytes worker_address
//                   u8[32] mac  u64 checksum
//   Challenge S->C  "FKVC" u16 version  u64 sender_conn_id
//                   u64 receiver_conn_id  u8[32] server_nonce  u64 checksum
//   Proof     C->S  "FKVP" u16 version  u64 sender_conn_id
//                   u64 receiver_conn_id  bytes engine_info  u8[32] proof
//                   u64 checksum
//   Welcome   S->C  "FKVW", laid out as Proof
//   Reject    S->C  "FKVR" u16 version  u64 receiver_conn_id  u32 code
//                   str reason  u64 checksum
//
// ucx_version: the sender's UCX library (ucp_get_version, major << 16 |
// minor << 8 | release); address_format: its worker address's format (the
// low 4 bits of the address's first byte; ucx_address.h). A worker address
// reaches ucp_ep_create only when both say the local UCX reads it
// (CheckUcxCompatible) and its structure checked (CheckUcxWorkerAddress).
// str / bytes = u32 length + the bytes. Connection ids are each engine's
// random wire ids (Peer::wire_id), which the active-message headers of the
// connection then carry.
//
// MACs, all HMAC-SHA256 (lib/common/hmac.h) keyed by ClusterMacKey(token)
// = SHA-256("flowkv.cluster-token" u64 length token), never by the token's
// bytes: HMAC pads a short key with zeros, so "K" and "K\0" (and "" and
// "\0") would be one key; the length in the derivation tells them apart.
//   EngineInfo mac: over every byte before it (magic to the last region).
//   Hello mac:      "flowkv/3 hello" NUL, then every byte before the mac.
//                   It only gates the AddPeer connect-back (a worker address
//                   reaches ucp_ep_create only from a hello that someone
//                   holding the token made); a replayed hello gets a
//                   challenge it cannot answer.
//   Proof:          "flowkv/3 client proof" NUL, client_nonce, server_nonce,
//                   then every byte of the Proof before the proof field.
//   Welcome proof:  the same with "flowkv/3 server proof".
// The token itself is never sent. The checksum only catches corruption:
// anyone can recompute it. What reaches ucp_ep_create / ucp_ep_rkey_unpack
// is a ParseSignedEngineInfo result, a Hello worker address whose mac
// checked, or the info of a Proof / Welcome whose proof checked.
//
// Version history: 1 had no mac; 2 added it and sent the token in the
// hello; 3 is the challenge and response; 4 keys every MAC with
// ClusterMacKey instead of the token's bytes and carries the UCX version
// and address format. Another version gives
// FailedPrecondition.
//
// Thread safety: thread-safe (pure functions and value types).

#ifndef FLOWKV_LIB_ENGINE_WIREUP_WIRE_FORMAT_H_
#define FLOWKV_LIB_ENGINE_WIREUP_WIRE_FORMAT_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "lib/common/hmac.h"

namespace flowkv::internal {

inline constexpr uint16_t kProtocolVersion = 4;
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
  friend bool operator==(const WireRegion&, const WireRegion&) = default;
};

struct EngineInfo {
  uint64_t instance_id = 0;
  std::string name;
  uint32_t ucx_version = 0;
  uint8_t address_format = 0;
  std::string worker_address;
  std::vector<WireRegion> regions;
  // Field by field: what the wire carries round-trips to an equal info.
  friend bool operator==(const EngineInfo&, const EngineInfo&) = default;
};

struct Hello {
  bool via_sockaddr = false;
  uint64_t sender_conn_id = 0;
  Nonce client_nonce{};
  std::string name;            // for logs; not trusted
  uint32_t ucx_version = 0;    // the sender's UCX (ucp_get_version)
  uint8_t address_format = 0;  // of worker_address (ucx_address.h)
  std::string worker_address;  // AddPeer only: where to connect back
  Sha256Digest mac{};          // set by ParseHello
};

struct Challenge {
  uint64_t sender_conn_id = 0;    // the server's id for this connection
  uint64_t receiver_conn_id = 0;  // the client's id, echoed
  Nonce server_nonce{};
};

// Proof (client) and Welcome (server): the sender's engine info and its
// proof that it holds the token.
enum class ProofRole { kClient, kServer };
struct HandshakeProof {
  uint64_t sender_conn_id = 0;
  uint64_t receiver_conn_id = 0;
  EngineInfo info;
  std::string info_blob;  // info as sent (set by ParseProof)
  Sha256Digest proof{};   // set by ParseProof
};

// Both nonces of one handshake.
struct HandshakeNonces {
  Nonce client{};
  Nonce server{};
};

struct Reject {
  uint64_t receiver_conn_id = 0;
  uint32_t code = 0;  // absl::StatusCode
  std::string reason;
};

// The EngineInfo blob, signed with HMAC-SHA256 keyed by `mac_key` (the
// cluster token; the empty token is a valid key).
std::string EncodeEngineInfo(const EngineInfo& info, std::string_view mac_key);
// The handshake messages. `token` keys the Hello's mac and the proof; it
// is never written into the bytes.
std::string EncodeHello(const Hello& hello, std::string_view token);
std::string EncodeChallenge(const Challenge& challenge);
std::string EncodeProof(ProofRole role, const HandshakeProof& proof,
                        std::string_view token, const HandshakeNonces& nonces);
std::string EncodeReject(const Reject& reject);

// InvalidArgument naming the field for malformed input (bad magic,
// truncation, a length over its limit, trailing bytes, checksum mismatch,
// a region with zero length or one that wraps the address space, duplicate
// region ids, an empty worker address); FailedPrecondition for another
// protocol version. These check structure only: ParseEngineInfo requires
// the 32 mac bytes but does not check them, so its result must not reach
// UCX; a Hello only after HelloSignedWith, a HandshakeProof only after
// ProofValid.
absl::StatusOr<EngineInfo> ParseEngineInfo(absl::Span<const uint8_t> bytes);
absl::StatusOr<Hello> ParseHello(absl::Span<const uint8_t> bytes);
absl::StatusOr<Challenge> ParseChallenge(absl::Span<const uint8_t> bytes);
absl::StatusOr<HandshakeProof> ParseProof(ProofRole role,
                                          absl::Span<const uint8_t> bytes);
absl::StatusOr<Reject> ParseReject(absl::Span<const uint8_t> bytes);

// Whether the parsed hello's mac is keyed by `token` (constant time).
bool HelloSignedWith(const Hello& hello, std::string_view token);
// Whether the parsed proof was made with `token` over these `nonces`
// (constant time): false for another token and for a proof recorded in
// another handshake.
bool ProofValid(ProofRole role, const HandshakeProof& proof,
                std::string_view token, const HandshakeNonces& nonces);

// ParseEngineInfo for bytes from outside (AddPeer): before reading any field
// past the version, checks in constant time that the mac is HMAC-SHA256
// keyed by `mac_key`, and gives PermissionDenied when it is not (another
// cluster's token, or bytes forged or altered with a recomputed checksum).
// Checks, in order: length, magic, checksum (InvalidArgument), version
// (FailedPrecondition), mac (PermissionDenied), structure and limits
// (InvalidArgument).
absl::StatusOr<EngineInfo> ParseSignedEngineInfo(
    absl::Span<const uint8_t> bytes, std::string_view mac_key);

// The key every MAC of the wire format uses for `token`:
// SHA-256("flowkv.cluster-token" || u64 little-endian length || token).
// Distinct tokens give distinct keys, tokens that differ only by trailing
// NULs included.
Sha256Digest ClusterMacKey(std::string_view token);

// Compares without an early exit (for tokens).
bool ConstantTimeEquals(std::string_view a, std::string_view b);

inline absl::Span<const uint8_t> AsBytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace flowkv::internal

#endif  // FLOWKV_LIB_ENGINE_WIREUP_WIRE_FORMAT_H_
