// SPDX-License-Identifier: Apache-2.0
// The byte codec and framing of flowkv-cluster's control channel (router <->
// node, loopback TCP). It owns only bytes: little-endian integers, doubles,
// strings and u32 vectors (ByteWriter / ByteReader), and frames on a socket
// (WriteFrame / FrameReader). The messages are in control.h.
//
// Frame: u32 payload length (little-endian, at most kMaxFrameBytes), then
// the payload. A reader never trusts a length: a frame over the limit, or a
// read past the end of a payload, is an InvalidArgument error, never a
// crash. EOF on the socket is Unavailable ("peer closed"): the node is gone.
//
// Thread safety: ByteWriter / ByteReader / FrameReader are externally
// synchronized; WriteFrame may be called by one thread per socket at a time.

#ifndef FLOWKV_TOOLS_CLUSTER_WIRE_H_
#define FLOWKV_TOOLS_CLUSTER_WIRE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace flowkv::cluster {

inline constexpr uint32_t kMaxFrameBytes = 16u << 20;

class ByteWriter {
 public:
  void U8(uint8_t v) { bytes_.push_back(static_cast<char>(v)); }
  void U32(uint32_t v);
  void U64(uint64_t v);
  void F64(double v);
  void Str(std::string_view s);
  void U32s(const std::vector<uint32_t>& v);
  std::string Take() { return std::move(bytes_); }

 private:
  std::string bytes_;
};

// Reads fields in order; the first read past the end sets an error and every
// later read returns 0 / empty. Check status() (and AtEnd()) at the end.
class ByteReader {
 public:
  explicit ByteReader(std::string_view bytes) : bytes_(bytes) {}
  uint8_t U8();
  uint32_t U32();
  uint64_t U64();
  double F64();
  std::string Str();
  std::vector<uint32_t> U32s();
  bool AtEnd() const { return pos_ == bytes_.size(); }
  // OK, or InvalidArgument naming the offset of the first short read;
  // trailing bytes are an error too.
  absl::Status Finish() const;

 private:
  bool Take(size_t n, const char** out);
  std::string_view bytes_;
  size_t pos_ = 0;
  bool failed_ = false;
};

// Writes one frame (blocking until all bytes are written). Unavailable when
// the socket is closed or broken; InvalidArgument for a payload over
// kMaxFrameBytes.
absl::Status WriteFrame(int fd, std::string_view payload);

// Reassembles frames from a socket read without blocking.
class FrameReader {
 public:
  explicit FrameReader(int fd) : fd_(fd) {}
  // Reads what the socket has (REQUIRES: fd is non-blocking) and appends the
  // whole frames to `out`. Unavailable at EOF or a socket error (frames
  // complete before it are still appended); InvalidArgument for a length
  // over kMaxFrameBytes.
  absl::Status ReadAvailable(std::vector<std::string>* out);

 private:
  int fd_;
  std::string buffer_;
};

}  // namespace flowkv::cluster

#endif  // FLOWKV_TOOLS_CLUSTER_WIRE_H_
