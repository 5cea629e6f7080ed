// SPDX-License-Identifier: Apache-2.0
// The control channel's codec and framing (see wire.h).

#include "tools/cluster/wire.h"

#include <cerrno>
#include <cstring>
#include <sys/socket.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"

namespace flowkv::cluster {

void ByteWriter::U32(uint32_t v) {
  for (int i = 0; i < 4; ++i) U8(static_cast<uint8_t>(v >> (8 * i)));
}
void ByteWriter::U64(uint64_t v) {
  for (int i = 0; i < 8; ++i) U8(static_cast<uint8_t>(v >> (8 * i)));
}
void ByteWriter::F64(double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, 8);
  U64(bits);
}
void ByteWriter::Str(std::string_view s) {
  U32(static_cast<uint32_t>(s.size()));
  bytes_.append(s);
}
void ByteWriter::U32s(const std::vector<uint32_t>& v) {
  U32(static_cast<uint32_t>(v.size()));
  for (uint32_t x : v) U32(x);
}

bool ByteReader::Take(size_t n, const char** out) {
  if (failed_ || bytes_.size() - pos_ < n) {
    failed_ = true;
    return false;
  }
  *out = bytes_.data() + pos_;
  pos_ += n;
  return true;
}
uint8_t ByteReader::U8() {
  const char* p;
  return Take(1, &p) ? static_cast<uint8_t>(*p) : 0;
}
uint32_t ByteReader::U32() {
  const char* p;
  if (!Take(4, &p)) return 0;
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i)
    v |= uint32_t{static_cast<uint8_t>(p[i])} << (8 * i);
  return v;
}
uint64_t ByteReader::U64() {
  const char* p;
  if (!Take(8, &p)) return 0;
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i)
    v |= uint64_t{static_cast<uint8_t>(p[i])} << (8 * i);
  return v;
}
double ByteReader::F64() {
  const uint64_t bits = U64();
  double v;
  std::memcpy(&v, &bits, 8);
  return v;
}
std::string ByteReader::Str() {
  const uint32_t n = U32();
  const char* p;
  if (!Take(n, &p)) return {};
  return std::string(p, n);
}
std::vector<uint32_t> ByteReader::U32s() {
  const uint32_t n = U32();
  // Each element takes 4 bytes: refuse a count the payload cannot hold
  // before reserving anything.
  if (failed_ || n > (bytes_.size() - pos_) / 4) {
    failed_ = true;
    return {};
  }
  std::vector<uint32_t> v(n);
  for (uint32_t& x : v) x = U32();
  return v;
}
absl::Status ByteReader::Finish() const {
  if (failed_) {
    return absl::InvalidArgumentError(
        absl::StrCat("control message truncated: ", bytes_.size(), " bytes"));
  }
  if (!AtEnd()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "control message has ", bytes_.size() - pos_, " trailing bytes"));
  }
  return absl::OkStatus();
}

absl::Status WriteFrame(int fd, std::string_view payload) {
  if (payload.size() > kMaxFrameBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("control frame of ", payload.size(),
                     " bytes is over the limit of ", kMaxFrameBytes));
  }
  ByteWriter header;
  header.U32(static_cast<uint32_t>(payload.size()));
  std::string frame = header.Take();
  frame.append(payload);
  size_t done = 0;
  while (done < frame.size()) {
    const ssize_t n =
        send(fd, frame.data() + done, frame.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      // A non-blocking socket whose buffer is full: wait for room.
      fd_set set;
      FD_ZERO(&set);
      FD_SET(fd, &set);
      select(fd + 1, nullptr, &set, nullptr, nullptr);
      continue;
    }
    if (n <= 0) {
      return absl::UnavailableError(
          absl::StrCat("control socket write: ", std::strerror(errno)));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status FrameReader::ReadAvailable(std::vector<std::string>* out) {
  absl::Status result = absl::OkStatus();
  char chunk[65536];
  while (true) {
    const ssize_t n = recv(fd_, chunk, sizeof(chunk), 0);
    if (n > 0) {
      buffer_.append(chunk, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    result = absl::UnavailableError(
        n == 0 ? std::string("peer closed the control socket")
               : absl::StrCat("control socket read: ", std::strerror(errno)));
    break;
  }
  size_t pos = 0;
  while (buffer_.size() - pos >= 4) {
    ByteReader header(std::string_view(buffer_).substr(pos, 4));
    const uint32_t length = header.U32();
    if (length > kMaxFrameBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("control frame length ", length,
                       " is over the limit of ", kMaxFrameBytes));
    }
    if (buffer_.size() - pos - 4 < length) break;
    out->push_back(buffer_.substr(pos + 4, length));
    pos += 4 + length;
  }
  buffer_.erase(0, pos);
  return result;
}

}  // namespace flowkv::cluster
