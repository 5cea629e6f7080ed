// SPDX-License-Identifier: Apache-2.0
// ByteWriter / ByteReader: the little-endian encoding every wire format of
// the library is built from (KvTransfer notices, engine metadata and
// handshake messages, active-message headers, the pools' share
// descriptors), and Fnv1a64, the checksum of those that carry one.
//
//   ByteWriter w;
//   w.Magic("FKVN");
//   w.U16(kVersion);
//   w.Bytes(request_id);                  // u32 length + bytes
//   std::string blob = std::move(w).Take();
//
//   ByteReader r(blob, "KvNotice");
//   uint16_t version;
//   std::string id;
//   r.Magic("magic", "FKVN");
//   r.U16("version", &version);
//   r.Bytes("request_id", kMaxIdBytes, &id);
//   if (absl::Status s = r.End(); !s.ok()) return s;
//
// Integers are little-endian whatever the host's byte order. A reader checks
// every read against the bytes left and every length prefix against the
// caller's limit before it allocates. After the first failed read every
// later read fails too and changes nothing, so a parser may read a whole
// message and check status() once; the status is InvalidArgument and names
// the message and the first field that did not fit ("KvNotice: truncated at
// token_end (needs 8 bytes, 3 left)"). Readers never read past the span
// they were given, so any input gives a Status, never a crash.
//
// Thread safety: externally synchronized (value types). A reader borrows its
// bytes: they must outlive it.

#ifndef FLOWKV_LIB_COMMON_BYTE_IO_H_
#define FLOWKV_LIB_COMMON_BYTE_IO_H_

#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"

namespace flowkv::internal {

// Appends fields to a growing byte string.
class ByteWriter {
 public:
  ByteWriter() = default;

  // Reserves room for `bytes` more bytes.
  void Reserve(size_t bytes) { out_.reserve(out_.size() + bytes); }

  // The magic's bytes as they are (no length prefix).
  void Magic(std::string_view magic) { out_.append(magic); }
  void U8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void U16(uint16_t v) { Le(v, 2); }
  void U32(uint32_t v) { Le(v, 4); }
  void U64(uint64_t v) { Le(v, 8); }
  // A u32 length followed by the bytes.
  // REQUIRES: bytes.size() < 2^32 (callers enforce far smaller limits).
  void Bytes(std::string_view bytes) {
    U32(static_cast<uint32_t>(bytes.size()));
    out_.append(bytes);
  }
  // The bytes as they are (no length prefix).
  void Raw(std::string_view bytes) { out_.append(bytes); }

  size_t size() const { return out_.size(); }
  const std::string& bytes() const { return out_; }
  std::string Take() && { return std::move(out_); }

 private:
  void Le(uint64_t v, int n) {
    char le[8];
    for (int i = 0; i < n; ++i) le[i] = static_cast<char>(v >> (8 * i));
    out_.append(le, n);
  }

  std::string out_;
};

// ByteWriter's encoding into a fixed-size array, for the fixed-length
// headers sent with every message (no allocation on that path).
// REQUIRES: exactly N bytes are written before Take().
template <size_t N>
class FixedByteWriter {
 public:
  void U32(uint32_t v) { Le(v, 4); }
  void U64(uint64_t v) { Le(v, 8); }
  std::array<uint8_t, N> Take() && { return out_; }

 private:
  void Le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i)
      out_[at_++] = static_cast<uint8_t>(v >> (8 * i));
  }

  std::array<uint8_t, N> out_{};
  size_t at_ = 0;
};

// Reads fields from a borrowed span, front to back.
class ByteReader {
 public:
  // `what` names the message in errors (e.g. "KvNotice"); it is borrowed.
  ByteReader(absl::Span<const uint8_t> bytes, std::string_view what)
      : bytes_(bytes), what_(what) {}
  ByteReader(std::string_view bytes, std::string_view what)
      : ByteReader(
            absl::Span<const uint8_t>(
                reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()),
            what) {}

  // Reads magic.size() bytes and fails unless they equal `magic`.
  bool Magic(const char* field, std::string_view magic) {
    if (!Need(field, magic.size())) return false;
    if (std::memcmp(bytes_.data() + pos_, magic.data(), magic.size()) != 0) {
      return Fail(absl::StrFormat(
          "bad %s (expected \"%s\")", field,
          absl::CHexEscape(absl::string_view(magic.data(), magic.size()))));
    }
    pos_ += magic.size();
    return true;
  }

  bool U8(const char* field, uint8_t* v) { return Int(field, v); }
  bool U16(const char* field, uint16_t* v) { return Int(field, v); }
  bool U32(const char* field, uint32_t* v) { return Int(field, v); }
  bool U64(const char* field, uint64_t* v) { return Int(field, v); }

  // A u32 length (at most `max`) and that many bytes, copied into `*v`.
  bool Bytes(const char* field, size_t max, std::string* v) {
    std::string_view view;
    if (!BytesView(field, max, &view)) return false;
    v->assign(view);
    return true;
  }
  // As Bytes, without a copy: `*v` points into the reader's span.
  bool BytesView(const char* field, size_t max, std::string_view* v) {
    uint32_t n = 0;
    if (!U32(field, &n)) return false;
    if (n > max) {
      return Fail(
          absl::StrFormat("%s length %d exceeds the limit %d", field, n, max));
    }
    return Raw(field, n, v);
  }
  // The next `n` bytes (no length prefix), without a copy.
  bool Raw(const char* field, size_t n, std::string_view* v) {
    if (!Need(field, n)) return false;
    *v = std::string_view(reinterpret_cast<const char*>(bytes_.data() + pos_),
                          n);
    pos_ += n;
    return true;
  }

  // Removes the last `n` bytes from what is left to read and returns them
  // in `*trailer` (e.g. a checksum that covers the bytes before it).
  bool SplitTrailer(const char* field, size_t n,
                    absl::Span<const uint8_t>* trailer) {
    if (!Need(field, n)) return false;
    *trailer = bytes_.subspan(bytes_.size() - n, n);
    bytes_ = bytes_.subspan(0, bytes_.size() - n);
    return true;
  }

  // Records a failure found by the caller (an enum value out of range, a
  // field that contradicts another) unless one was recorded before; always
  // returns false. The status reads "<what>: <message>".
  bool Fail(std::string_view message) {
    if (status_.ok()) {
      status_ =
          absl::InvalidArgumentError(absl::StrFormat("%s: %s", what_, message));
    }
    return false;
  }

  // OK when no read failed and every byte was read (else names the number
  // of trailing bytes).
  absl::Status End() {
    if (status_.ok() && pos_ != bytes_.size()) {
      Fail(absl::StrFormat("%d trailing bytes", bytes_.size() - pos_));
    }
    return status_;
  }

  bool ok() const { return status_.ok(); }
  const absl::Status& status() const { return status_; }
  // Bytes read so far / left to read.
  size_t position() const { return pos_; }
  size_t remaining() const { return bytes_.size() - pos_; }
  // Everything the reader reads from (without a split-off trailer).
  absl::Span<const uint8_t> data() const { return bytes_; }

 private:
  bool Need(const char* field, size_t n) {
    if (!status_.ok()) return false;
    if (n > bytes_.size() - pos_) {
      return Fail(absl::StrFormat("truncated at %s (needs %d bytes, %d left)",
                                  field, n, bytes_.size() - pos_));
    }
    return true;
  }
  template <typename T>
  bool Int(const char* field, T* v) {
    if (!Need(field, sizeof(T))) return false;
    uint64_t x = 0;
    for (size_t i = 0; i < sizeof(T); ++i) {
      x |= uint64_t{bytes_[pos_ + i]} << (8 * i);
    }
    pos_ += sizeof(T);
    *v = static_cast<T>(x);
    return true;
  }

  absl::Span<const uint8_t> bytes_;
  std::string_view what_;
  size_t pos_ = 0;
  absl::Status status_;
};

// FNV-1a, 64 bits: the checksum of the formats that carry one (engine
// metadata and handshake messages, the CUDA pool's share descriptor). It
// catches corruption only: anyone can recompute it.
inline uint64_t Fnv1a64(absl::Span<const uint8_t> bytes) {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (uint8_t b : bytes) {
    hash ^= b;
    hash *= 0x100000001b3ull;
  }
  return hash;
}

}  // namespace flowkv::internal

#endif  // FLOWKV_LIB_COMMON_BYTE_IO_H_
