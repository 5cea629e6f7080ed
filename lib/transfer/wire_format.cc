// Encoding and parsing of the wire format described in wire_format.h. Calls
// lib/transfer/hmac.h for the EngineInfo mac, and nothing outside Abseil.

#include "lib/transfer/wire_format.h"

#include <cstring>
#include <optional>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_format.h"
#include "lib/transfer/hmac.h"

namespace flowkv::internal {
namespace {

constexpr char kEngineInfoMagic[] = "FKVM";
constexpr char kHelloMagic[] = "FKVH";
constexpr char kHelloAckMagic[] = "FKVA";
constexpr char kRejectMagic[] = "FKVR";

class Writer {
 public:
  void Magic(const char* magic) { out_.append(magic, 4); }
  void U8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void U16(uint16_t v) { Le(v, 2); }
  void U32(uint32_t v) { Le(v, 4); }
  void U64(uint64_t v) { Le(v, 8); }
  void Bytes(std::string_view s) {
    U32(static_cast<uint32_t>(s.size()));
    out_.append(s);
  }
  // Appends the HMAC-SHA256 of everything written, keyed by `key`.
  void Mac(std::string_view key) {
    const Sha256Digest mac = HmacSha256(key, AsBytes(out_));
    out_.append(reinterpret_cast<const char*>(mac.data()), mac.size());
  }
  // Appends the checksum of everything written and returns the blob.
  std::string Finish() {
    U64(Fnv1a64(AsBytes(out_)));
    return std::move(out_);
  }

 private:
  void Le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) out_.push_back(static_cast<char>(v >> (8 * i)));
  }
  std::string out_;
};

// Bounds-checked little-endian reader. After the first failure every read
// fails and status() names the first field that did not fit.
class Reader {
 public:
  Reader(absl::Span<const uint8_t> bytes, const char* what)
      : bytes_(bytes), what_(what) {}

  // Checks the magic, the checksum and the version, and strips the checksum
  // and the `trailer_bytes` before it, which trailer() then holds.
  absl::Status Begin(const char* magic, size_t trailer_bytes = 0) {
    if (bytes_.size() < 4 + 2 + 8) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: %d bytes, shorter than the %d-byte minimum",
                          what_, bytes_.size(), 4 + 2 + 8));
    }
    if (std::memcmp(bytes_.data(), magic, 4) != 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: bad magic (expected \"%s\")", what_, magic));
    }
    const size_t body = bytes_.size() - 8;
    uint64_t stored = 0;
    for (int i = 0; i < 8; ++i) {
      stored |= uint64_t{bytes_[body + i]} << (8 * i);
    }
    if (stored != Fnv1a64(bytes_.subspan(0, body))) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: checksum mismatch (corrupt or truncated "
                          "%d-byte blob)",
                          what_, bytes_.size()));
    }
    bytes_ = bytes_.subspan(0, body);
    pos_ = 4;
    uint16_t version = 0;
    U16("version", &version);
    if (version != kProtocolVersion) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "%s: protocol version %d is not supported (this engine speaks %d)",
          what_, version, kProtocolVersion));
    }
    if (bytes_.size() < pos_ + trailer_bytes) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: %d bytes, shorter than the %d-byte minimum",
                          what_, bytes_.size() + 8, pos_ + trailer_bytes + 8));
    }
    trailer_ = bytes_.subspan(bytes_.size() - trailer_bytes);
    bytes_ = bytes_.subspan(0, bytes_.size() - trailer_bytes);
    return absl::OkStatus();
  }

  // After Begin: the bytes before the trailer, and the trailer.
  absl::Span<const uint8_t> body() const { return bytes_; }
  absl::Span<const uint8_t> trailer() const { return trailer_; }

  bool U8(const char* field, uint8_t* v) {
    uint64_t x;
    if (!Le(field, 1, &x)) return false;
    *v = static_cast<uint8_t>(x);
    return true;
  }
  bool U16(const char* field, uint16_t* v) {
    uint64_t x;
    if (!Le(field, 2, &x)) return false;
    *v = static_cast<uint16_t>(x);
    return true;
  }
  bool U32(const char* field, uint32_t* v) {
    uint64_t x;
    if (!Le(field, 4, &x)) return false;
    *v = static_cast<uint32_t>(x);
    return true;
  }
  bool U64(const char* field, uint64_t* v) { return Le(field, 8, v); }

  bool Bytes(const char* field, size_t max, std::string* v) {
    uint32_t n = 0;
    if (!U32(field, &n)) return false;
    if (n > max) {
      return Fail(
          absl::StrFormat("%s length %d exceeds the limit %d", field, n, max));
    }
    if (n > bytes_.size() - pos_) return Truncated(field, n);
    v->assign(reinterpret_cast<const char*>(bytes_.data() + pos_), n);
    pos_ += n;
    return true;
  }

  bool Fail(const std::string& message) {
    if (status_.ok()) {
      status_ =
          absl::InvalidArgumentError(absl::StrFormat("%s: %s", what_, message));
    }
    return false;
  }

  // OK when every byte was consumed and no read failed.
  absl::Status End() {
    if (status_.ok() && pos_ != bytes_.size()) {
      Fail(absl::StrFormat("%d trailing bytes", bytes_.size() - pos_));
    }
    return status_;
  }

  size_t remaining() const { return bytes_.size() - pos_; }

 private:
  bool Truncated(const char* field, size_t need) {
    return Fail(absl::StrFormat("truncated at %s (needs %d bytes, %d left)",
                                field, need, bytes_.size() - pos_));
  }
  bool Le(const char* field, int n, uint64_t* v) {
    if (!status_.ok()) return false;
    if (static_cast<size_t>(n) > bytes_.size() - pos_) {
      return Truncated(field, n);
    }
    uint64_t x = 0;
    for (int i = 0; i < n; ++i) x |= uint64_t{bytes_[pos_ + i]} << (8 * i);
    pos_ += n;
    *v = x;
    return true;
  }

  absl::Span<const uint8_t> bytes_;
  absl::Span<const uint8_t> trailer_;
  const char* what_;
  size_t pos_ = 0;
  absl::Status status_;
};

std::string_view AsChars(absl::Span<const uint8_t> bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

void WriteEngineInfoBody(const EngineInfo& info, Writer* w) {
  w->U64(info.instance_id);
  w->Bytes(info.name);
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

uint64_t Fnv1a64(absl::Span<const uint8_t> bytes) {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (uint8_t b : bytes) {
    hash ^= b;
    hash *= 0x100000001b3ull;
  }
  return hash;
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
  Writer w;
  w.Magic(kEngineInfoMagic);
  w.U16(kProtocolVersion);
  WriteEngineInfoBody(info, &w);
  w.Mac(mac_key);
  return w.Finish();
}

std::string EncodeHello(const Hello& hello) {
  Writer w;
  w.Magic(kHelloMagic);
  w.U16(kProtocolVersion);
  w.U8(hello.via_sockaddr ? 1 : 0);
  w.U64(hello.sender_conn_id);
  w.Bytes(hello.token);
  w.Bytes(EncodeEngineInfo(hello.info, hello.token));
  return w.Finish();
}

std::string EncodeHelloAck(const HelloAck& ack) {
  Writer w;
  w.Magic(kHelloAckMagic);
  w.U16(kProtocolVersion);
  w.U64(ack.sender_conn_id);
  w.U64(ack.receiver_conn_id);
  w.Bytes(ack.token);
  w.Bytes(EncodeEngineInfo(ack.info, ack.token));
  return w.Finish();
}

std::string EncodeReject(const Reject& reject) {
  Writer w;
  w.Magic(kRejectMagic);
  w.U16(kProtocolVersion);
  w.U64(reject.receiver_conn_id);
  w.U32(reject.code);
  w.Bytes(reject.reason);
  return w.Finish();
}

namespace {

// ParseEngineInfo, and with a `mac_key` ParseSignedEngineInfo.
absl::StatusOr<EngineInfo> ParseEngineInfoWithKey(
    absl::Span<const uint8_t> bytes, std::optional<std::string_view> mac_key) {
  Reader r(bytes, "engine metadata");
  if (absl::Status s = r.Begin(kEngineInfoMagic, kSha256DigestBytes); !s.ok()) {
    return s;
  }
  if (mac_key.has_value()) {
    const Sha256Digest expected = HmacSha256(*mac_key, r.body());
    if (!ConstantTimeEquals(AsChars(r.trailer()), AsChars(expected))) {
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

absl::StatusOr<Hello> ParseHello(absl::Span<const uint8_t> bytes) {
  Reader r(bytes, "handshake hello");
  if (absl::Status s = r.Begin(kHelloMagic); !s.ok()) return s;
  Hello hello;
  uint8_t via = 0;
  std::string info;
  r.U8("via_sockaddr", &via);
  r.U64("sender_conn_id", &hello.sender_conn_id);
  r.Bytes("token", kMaxTokenBytes, &hello.token);
  r.Bytes("engine_info", kMaxEngineInfoBytes, &info);
  if (absl::Status s = r.End(); !s.ok()) return s;
  if (via > 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("handshake hello: via_sockaddr %d is not 0 or 1", via));
  }
  hello.via_sockaddr = via == 1;
  auto parsed = ParseEngineInfo(AsBytes(info));
  if (!parsed.ok()) return parsed.status();
  hello.info = *std::move(parsed);
  return hello;
}

absl::StatusOr<HelloAck> ParseHelloAck(absl::Span<const uint8_t> bytes) {
  Reader r(bytes, "handshake ack");
  if (absl::Status s = r.Begin(kHelloAckMagic); !s.ok()) return s;
  HelloAck ack;
  std::string info;
  r.U64("sender_conn_id", &ack.sender_conn_id);
  r.U64("receiver_conn_id", &ack.receiver_conn_id);
  r.Bytes("token", kMaxTokenBytes, &ack.token);
  r.Bytes("engine_info", kMaxEngineInfoBytes, &info);
  if (absl::Status s = r.End(); !s.ok()) return s;
  auto parsed = ParseEngineInfo(AsBytes(info));
  if (!parsed.ok()) return parsed.status();
  ack.info = *std::move(parsed);
  return ack;
}

absl::StatusOr<Reject> ParseReject(absl::Span<const uint8_t> bytes) {
  Reader r(bytes, "handshake reject");
  if (absl::Status s = r.Begin(kRejectMagic); !s.ok()) return s;
  Reject reject;
  r.U64("receiver_conn_id", &reject.receiver_conn_id);
  r.U32("code", &reject.code);
  r.Bytes("reason", kMaxReasonBytes, &reject.reason);
  if (absl::Status s = r.End(); !s.ok()) return s;
  return reject;
}

}  // namespace flowkv::internal
