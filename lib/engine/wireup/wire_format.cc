// SPDX-License-Identifier: Apache-2.0
// Encoding and parsing of the wire format described in wire_format.h. Calls
// lib/common/hmac.h for the EngineInfo mac, and nothing outside Abseil.

#include "lib/engine/wireup/wire_format.h"

#include <cstring>
#include <optional>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_format.h"
#include "lib/common/byte_io.h"
#include "lib/common/hmac.h"

namespace flowkv::internal {
namespace {

constexpr char kEngineInfoMagic[] = "FKVM";
constexpr char kHelloMagic[] = "FKVH";
constexpr char kChallengeMagic[] = "FKVC";
constexpr char kProofMagic[] = "FKVP";
constexpr char kWelcomeMagic[] = "FKVW";
constexpr char kRejectMagic[] = "FKVR";

constexpr size_t kMagicBytes = 4;

// Domain separation: a MAC made for one purpose is never valid for another.
// Each label ends with its NUL.
constexpr char kHelloLabel[] = "flowkv/3 hello";
constexpr char kClientProofLabel[] = "flowkv/3 client proof";
constexpr char kServerProofLabel[] = "flowkv/3 server proof";
constexpr size_t kChecksumBytes = 8;

// A writer with the blob's magic and the protocol version written.
ByteWriter StartBlob(const char* magic) {
  ByteWriter w;
  w.Magic(std::string_view(magic, kMagicBytes));
  w.U16(kProtocolVersion);
  return w;
}

std::string_view AsChars(absl::Span<const uint8_t> bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

// HMAC-SHA256 of `message` under ClusterMacKey(token).
Sha256Digest TokenMac(std::string_view token,
                      absl::Span<const uint8_t> message) {
  const Sha256Digest key = ClusterMacKey(token);
  return HmacSha256(AsChars(key), message);
}

// Appends the MAC of everything written, keyed by the token.
void AppendMac(std::string_view token, ByteWriter* w) {
  const Sha256Digest mac = TokenMac(token, AsBytes(w->bytes()));
  w->Raw(
      std::string_view(reinterpret_cast<const char*>(mac.data()), mac.size()));
}

// Appends the checksum of everything written and returns the blob.
std::string FinishBlob(ByteWriter w) {
  w.U64(Fnv1a64(AsBytes(w.bytes())));
  return std::move(w).Take();
}

// Checks a blob's frame (size, magic, checksum, protocol version) and
// returns a reader positioned after the version, over the bytes before the
// `trailer_bytes` that precede the checksum; `*trailer` gets those.
absl::StatusOr<ByteReader> OpenBlob(absl::Span<const uint8_t> bytes,
                                    const char* what, const char* magic,
                                    size_t trailer_bytes,
                                    absl::Span<const uint8_t>* trailer) {
  const size_t minimum = kMagicBytes + 2 + trailer_bytes + kChecksumBytes;
  if (bytes.size() < kMagicBytes + 2 + kChecksumBytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: %d bytes, shorter than the %d-byte minimum", what,
                        bytes.size(), minimum));
  }
  ByteReader r(bytes, what);
  r.Magic("magic", std::string_view(magic, kMagicBytes));
  absl::Span<const uint8_t> checksum;
  r.SplitTrailer("checksum", kChecksumBytes, &checksum);
  if (!r.ok()) return r.status();
  ByteReader stored(checksum, what);
  uint64_t sum = 0;
  stored.U64("checksum", &sum);
  if (sum != Fnv1a64(r.data())) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: checksum mismatch (corrupt or truncated "
                        "%d-byte blob)",
                        what, bytes.size()));
  }
  uint16_t version = 0;
  r.U16("version", &version);
  if (version != kProtocolVersion) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s: protocol version %d is not supported (this engine speaks %d)",
        what, version, kProtocolVersion));
  }
  if (r.remaining() < trailer_bytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: %d bytes, shorter than the %d-byte minimum", what,
                        bytes.size(), minimum));
  }
  r.SplitTrailer("trailer", trailer_bytes, trailer);
  return r;
}

void WriteEngineInfoBody(const EngineInfo& info, ByteWriter* w) {
  w->U64(info.instance_id);
  w->Bytes(info.name);
  w->U32(info.ucx_version);
  w->U8(info.address_format);
  w->Bytes(info.worker_address);
  w->U32(static_cast<uint32_t>(info.regions.size()));
  for (const WireRegion& r : info.regions) {
    w->U32(r.id);
    w->U8(r.kind);
    w->U64(r.base);
    w->U64(r.length);
    w->Bytes(r.rkey);
  }
}

}  // namespace

Sha256Digest ClusterMacKey(std::string_view token) {
  ByteWriter w;
  w.Raw("flowkv.cluster-token");
  w.U64(token.size());
  w.Raw(token);
  return Sha256(AsBytes(w.bytes()));
}

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  unsigned diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? a[i] : 0;
    const unsigned char y = i < b.size() ? b[i] : 0;
    diff |= x ^ y;
  }
  return diff == 0;
}

std::string EncodeEngineInfo(const EngineInfo& info, std::string_view mac_key) {
  ByteWriter w = StartBlob(kEngineInfoMagic);
  WriteEngineInfoBody(info, &w);
  AppendMac(mac_key, &w);
  return FinishBlob(std::move(w));
}

namespace {

std::string_view Label(const char* label) {
  return std::string_view(label, std::strlen(label) + 1);
}

const char* ProofMagic(ProofRole role) {
  return role == ProofRole::kClient ? kProofMagic : kWelcomeMagic;
}

// The hello up to its mac.
ByteWriter HelloBody(const Hello& hello) {
  ByteWriter w = StartBlob(kHelloMagic);
  w.U8(hello.via_sockaddr ? 1 : 0);
  w.U64(hello.sender_conn_id);
  w.Raw(AsChars(hello.client_nonce));
  w.Bytes(hello.name);
  w.U32(hello.ucx_version);
  w.U8(hello.address_format);
  w.Bytes(hello.worker_address);
  return w;
}

Sha256Digest HelloMac(std::string_view token, const ByteWriter& body) {
  std::string input(Label(kHelloLabel));
  input += body.bytes();
  return TokenMac(token, AsBytes(input));
}

// A Proof or Welcome up to its proof field.
ByteWriter ProofBody(ProofRole role, const HandshakeProof& proof,
                     std::string_view info_blob) {
  ByteWriter w = StartBlob(ProofMagic(role));
  w.U64(proof.sender_conn_id);
  w.U64(proof.receiver_conn_id);
  w.Bytes(info_blob);
  return w;
}

Sha256Digest ProofMac(ProofRole role, std::string_view token,
                      const HandshakeNonces& nonces, const ByteWriter& body) {
  std::string input(Label(role == ProofRole::kClient ? kClientProofLabel
                                                     : kServerProofLabel));
  input += AsChars(nonces.client);
  input += AsChars(nonces.server);
  input += body.bytes();
  return TokenMac(token, AsBytes(input));
}

}  // namespace

std::string EncodeHello(const Hello& hello, std::string_view token) {
  ByteWriter w = HelloBody(hello);
  w.Raw(AsChars(HelloMac(token, w)));
  return FinishBlob(std::move(w));
}

std::string EncodeChallenge(const Challenge& challenge) {
  ByteWriter w = StartBlob(kChallengeMagic);
  w.U64(challenge.sender_conn_id);
  w.U64(challenge.receiver_conn_id);
  w.Raw(AsChars(challenge.server_nonce));
  return FinishBlob(std::move(w));
}

std::string EncodeProof(ProofRole role, const HandshakeProof& proof,
                        std::string_view token, const HandshakeNonces& nonces) {
  ByteWriter w = ProofBody(role, proof, EncodeEngineInfo(proof.info, token));
  w.Raw(AsChars(ProofMac(role, token, nonces, w)));
  return FinishBlob(std::move(w));
}

bool HelloSignedWith(const Hello& hello, std::string_view token) {
  return DigestsEqual(hello.mac, HelloMac(token, HelloBody(hello)));
}

bool ProofValid(ProofRole role, const HandshakeProof& proof,
                std::string_view token, const HandshakeNonces& nonces) {
  return DigestsEqual(
      proof.proof,
      ProofMac(role, token, nonces, ProofBody(role, proof, proof.info_blob)));
}

std::string EncodeReject(const Reject& reject) {
  ByteWriter w = StartBlob(kRejectMagic);
  w.U64(reject.receiver_conn_id);
  w.U32(reject.code);
  w.Bytes(reject.reason);
  return FinishBlob(std::move(w));
}

namespace {

// ParseEngineInfo, and with a `mac_key` ParseSignedEngineInfo.
absl::StatusOr<EngineInfo> ParseEngineInfoWithKey(
    absl::Span<const uint8_t> bytes, std::optional<std::string_view> mac_key) {
  absl::Span<const uint8_t> mac;
  absl::StatusOr<ByteReader> opened = OpenBlob(
      bytes, "engine metadata", kEngineInfoMagic, kSha256DigestBytes, &mac);
  if (!opened.ok()) return opened.status();
  ByteReader& r = *opened;
  if (mac_key.has_value()) {
    const Sha256Digest expected = TokenMac(*mac_key, r.data());
    if (!ConstantTimeEquals(AsChars(mac), AsChars(expected))) {
      return absl::PermissionDeniedError(absl::StrFormat(
          "engine metadata: the metadata of engine (%d bytes) is not signed "
          "with this cluster's token (HMAC-SHA256 mismatch)",
          bytes.size()));
    }
  }
  EngineInfo info;
  uint32_t num_regions = 0;
  r.U64("instance_id", &info.instance_id);
  r.Bytes("name", kMaxNameBytes, &info.name);
  r.U32("ucx_version", &info.ucx_version);
  r.U8("address_format", &info.address_format);
  r.Bytes("worker_address", kMaxWorkerAddressBytes, &info.worker_address);
  if (r.U32("region count", &num_regions)) {
    // Each region takes at least 25 bytes: bound the count by what is left
    // before reserving.
    if (num_regions > kMaxRegions) {
      r.Fail(absl::StrFormat("region count %d exceeds the limit %d",
                             num_regions, kMaxRegions));
    } else if (uint64_t{num_regions} * 25 > r.remaining()) {
      r.Fail(absl::StrFormat("region count %d does not fit in %d bytes",
                             num_regions, r.remaining()));
    } else {
      info.regions.reserve(num_regions);
    }
  }
  absl::flat_hash_set<uint32_t> ids;
  for (uint32_t i = 0; i < num_regions; ++i) {
    WireRegion region;
    if (!r.U32("region id", &region.id) || !r.U8("region kind", &region.kind) ||
        !r.U64("region base", &region.base) ||
        !r.U64("region length", &region.length) ||
        !r.Bytes("region rkey", kMaxRkeyBytes, &region.rkey)) {
      break;
    }
    if (region.kind > 1) {
      r.Fail(absl::StrFormat("region %d: memory kind %d is unknown (max 1)",
                             region.id, region.kind));
      break;
    }
    if (region.length == 0 || region.base + region.length < region.base) {
      r.Fail(absl::StrFormat(
          "region %d: [0x%x, +%d) is empty or wraps the address space",
          region.id, region.base, region.length));
      break;
    }
    if (region.rkey.empty()) {
      r.Fail(absl::StrFormat("region %d: empty remote key", region.id));
      break;
    }
    if (!ids.insert(region.id).second) {
      r.Fail(absl::StrFormat("region id %d appears twice", region.id));
      break;
    }
    info.regions.push_back(std::move(region));
  }
  if (absl::Status s = r.End(); !s.ok()) return s;
  if (info.worker_address.empty()) {
    return absl::InvalidArgumentError("engine metadata: empty worker address");
  }
  return info;
}

}  // namespace

absl::StatusOr<EngineInfo> ParseEngineInfo(absl::Span<const uint8_t> bytes) {
  return ParseEngineInfoWithKey(bytes, std::nullopt);
}

absl::StatusOr<EngineInfo> ParseSignedEngineInfo(
    absl::Span<const uint8_t> bytes, std::string_view mac_key) {
  return ParseEngineInfoWithKey(bytes, mac_key);
}

namespace {

// Copies the next fixed-size array (a nonce or a digest).
template <size_t N>
bool ReadArray(ByteReader& r, const char* field, std::array<uint8_t, N>* out) {
  std::string_view view;
  if (!r.Raw(field, N, &view)) return false;
  std::memcpy(out->data(), view.data(), N);
  return true;
}

}  // namespace

absl::StatusOr<Hello> ParseHello(absl::Span<const uint8_t> bytes) {
  absl::Span<const uint8_t> mac;
  absl::StatusOr<ByteReader> opened =
      OpenBlob(bytes, "handshake hello", kHelloMagic, kSha256DigestBytes, &mac);
  if (!opened.ok()) return opened.status();
  ByteReader& r = *opened;
  Hello hello;
  uint8_t via = 0;
  r.U8("via_sockaddr", &via);
  r.U64("sender_conn_id", &hello.sender_conn_id);
  ReadArray(r, "client_nonce", &hello.client_nonce);
  r.Bytes("name", kMaxNameBytes, &hello.name);
  r.U32("ucx_version", &hello.ucx_version);
  r.U8("address_format", &hello.address_format);
  r.Bytes("worker_address", kMaxWorkerAddressBytes, &hello.worker_address);
  if (absl::Status s = r.End(); !s.ok()) return s;
  if (via > 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("handshake hello: via_sockaddr %d is not 0 or 1", via));
  }
  hello.via_sockaddr = via == 1;
  if (hello.via_sockaddr != hello.worker_address.empty()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "handshake hello: worker_address of %d bytes with via_sockaddr %d "
        "(only an AddPeer hello carries one)",
        hello.worker_address.size(), via));
  }
  std::memcpy(hello.mac.data(), mac.data(), mac.size());
  return hello;
}

absl::StatusOr<Challenge> ParseChallenge(absl::Span<const uint8_t> bytes) {
  absl::Span<const uint8_t> no_trailer;
  absl::StatusOr<ByteReader> opened =
      OpenBlob(bytes, "handshake challenge", kChallengeMagic, 0, &no_trailer);
  if (!opened.ok()) return opened.status();
  ByteReader& r = *opened;
  Challenge challenge;
  r.U64("sender_conn_id", &challenge.sender_conn_id);
  r.U64("receiver_conn_id", &challenge.receiver_conn_id);
  ReadArray(r, "server_nonce", &challenge.server_nonce);
  if (absl::Status s = r.End(); !s.ok()) return s;
  return challenge;
}

absl::StatusOr<HandshakeProof> ParseProof(ProofRole role,
                                          absl::Span<const uint8_t> bytes) {
  const char* what =
      role == ProofRole::kClient ? "handshake proof" : "handshake welcome";
  absl::Span<const uint8_t> mac;
  absl::StatusOr<ByteReader> opened =
      OpenBlob(bytes, what, ProofMagic(role), kSha256DigestBytes, &mac);
  if (!opened.ok()) return opened.status();
  ByteReader& r = *opened;
  HandshakeProof proof;
  r.U64("sender_conn_id", &proof.sender_conn_id);
  r.U64("receiver_conn_id", &proof.receiver_conn_id);
  r.Bytes("engine_info", kMaxEngineInfoBytes, &proof.info_blob);
  if (absl::Status s = r.End(); !s.ok()) return s;
  auto parsed = ParseEngineInfo(AsBytes(proof.info_blob));
  if (!parsed.ok()) return parsed.status();
  proof.info = *std::move(parsed);
  std::memcpy(proof.proof.data(), mac.data(), mac.size());
  return proof;
}

absl::StatusOr<Reject> ParseReject(absl::Span<const uint8_t> bytes) {
  absl::Span<const uint8_t> no_trailer;
  absl::StatusOr<ByteReader> opened =
      OpenBlob(bytes, "handshake reject", kRejectMagic, 0, &no_trailer);
  if (!opened.ok()) return opened.status();
  ByteReader& r = *opened;
  Reject reject;
  r.U64("receiver_conn_id", &reject.receiver_conn_id);
  r.U32("code", &reject.code);
  r.Bytes("reason", kMaxReasonBytes, &reject.reason);
  if (absl::Status s = r.End(); !s.ok()) return s;
  return reject;
}

}  // namespace flowkv::internal
