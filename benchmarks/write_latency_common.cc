// SPDX-License-Identifier: Apache-2.0
// The shared pieces of write_latency_benchmark declared in
// write_latency_common.h.
#include "benchmarks/write_latency_common.h"

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <poll.h>
#include <string>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "flowkv/transfer_engine.h"
#include "tests/support/transfer_test_util.h"

namespace flowkv::write_latency {
namespace {

absl::Status WriteAll(int fd, const char* data, size_t size) {
  while (size > 0) {
    const ssize_t n = send(fd, data, size, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return absl::UnavailableError(
          absl::StrCat("control socket send: ", std::strerror(errno)));
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status ReadAll(int fd, char* data, size_t size) {
  while (size > 0) {
    const ssize_t n = read(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) return absl::UnavailableError("control socket closed");
    if (n < 0) {
      return absl::UnavailableError(
          absl::StrCat("control socket read: ", std::strerror(errno)));
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

TransferEngineOptions EngineOptions(const char* name) {
  TransferEngineOptions options;
  options.name = name;
  options.cluster_token = "bench";
  options.ucx_peer_error_handling = !flowkv::testing::SharedMemoryMode();
  // Failure detection is not what is measured here.
  options.peer_failure_timeout = absl::Seconds(60);
  const char* busy = std::getenv("FLOWKV_BENCH_BUSY_POLL");
  options.busy_poll = busy != nullptr && std::string(busy) == "1";
  return options;
}

// --- Encoding ----------------------------------------------------------------

void PutU64(std::string* out, uint64_t value) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>(value >> 8 * i));
}

uint64_t GetU64(absl::string_view in) {
  uint64_t value = 0;
  for (int i = 0; i < 8; ++i) {
    value |= uint64_t{static_cast<uint8_t>(in[i])} << 8 * i;
  }
  return value;
}

// A length-prefixed field, read back by NextField.
void PutField(std::string* out, absl::string_view field) {
  PutU64(out, field.size());
  out->append(field.data(), field.size());
}

bool NextField(absl::string_view* in, absl::string_view* field) {
  if (in->size() < 8) return false;
  const uint64_t length = GetU64(*in);
  if (length > in->size() - 8) return false;
  *field = in->substr(8, length);
  in->remove_prefix(8 + length);
  return true;
}

// A sequence number and a time, as the receiver replies.
std::string EncodeReply(uint64_t seq, int64_t time_ns) {
  std::string reply;
  PutU64(&reply, seq);
  PutU64(&reply, static_cast<uint64_t>(time_ns));
  return reply;
}

// --- Control channel ---------------------------------------------------------

// Frame: 1-byte command, 4-byte little-endian length, payload.
absl::Status SendFrame(int fd, Command command, absl::string_view payload) {
  if (payload.size() > kMaxFrame) {
    return absl::InvalidArgumentError(absl::StrCat(
        "frame of ", payload.size(), " bytes, at most ", kMaxFrame));
  }
  std::string frame;
  frame.push_back(static_cast<char>(command));
  for (int i = 0; i < 4; ++i) {
    frame.push_back(static_cast<char>(payload.size() >> 8 * i));
  }
  frame.append(payload.data(), payload.size());
  return WriteAll(fd, frame.data(), frame.size());
}

absl::StatusOr<Frame> ReceiveFrame(int fd) {
  char header[5];
  if (absl::Status s = ReadAll(fd, header, sizeof(header)); !s.ok()) return s;
  uint32_t length = 0;
  for (int i = 0; i < 4; ++i) {
    length |= uint32_t{static_cast<uint8_t>(header[1 + i])} << 8 * i;
  }
  if (length > kMaxFrame) {
    return absl::InvalidArgumentError(
        absl::StrCat("frame of ", length, " bytes, at most ", kMaxFrame));
  }
  Frame frame;
  frame.command = static_cast<Command>(header[0]);
  frame.payload.resize(length);
  if (absl::Status s = ReadAll(fd, frame.payload.data(), length); !s.ok()) {
    return s;
  }
  return frame;
}

// Sends a request and returns the payload of the kOk answer.
absl::StatusOr<std::string> Call(int fd, Command command,
                                 absl::string_view payload) {
  if (absl::Status s = SendFrame(fd, command, payload); !s.ok()) return s;
  absl::StatusOr<Frame> answer = ReceiveFrame(fd);
  if (!answer.ok()) return answer.status();
  if (answer->command == Command::kError) {
    return absl::InternalError(
        absl::StrCat("receiver: ", std::move(answer->payload)));
  }
  if (answer->command != Command::kOk) {
    return absl::InternalError("receiver: unexpected answer");
  }
  return std::move(answer->payload);
}

// True when `fd` has data (or was closed).
bool Readable(int fd) {
  pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
  return poll(&p, 1, 0) > 0;
}

}  // namespace flowkv::write_latency
