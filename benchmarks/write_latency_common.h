// SPDX-License-Identifier: Apache-2.0
// What both processes of write_latency_benchmark share: the bounds of a
// case, the clock, the byte encoding of seqs, times and fields, the control
// channel (framed commands over the socketpair between sender and
// receiver), and the options of both engines.
#ifndef FLOWKV_BENCHMARKS_WRITE_LATENCY_COMMON_H_
#define FLOWKV_BENCHMARKS_WRITE_LATENCY_COMMON_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "flowkv/transfer_engine.h"

namespace flowkv::write_latency {

constexpr uint64_t kMaxBytes = 2 << 20;
// Bound on one reply and on each control step; a stuck peer fails the case.
constexpr int64_t kReplyTimeoutNs = 10'000'000'000;
// Frames over the control socket are at most this long.
constexpr uint32_t kMaxFrame = 1 << 20;
// Active message ids of the raw mode.
constexpr unsigned kSeqAm = 1;
constexpr unsigned kReplyAm = 2;

// CLOCK_MONOTONIC in ns (system-wide: both processes agree).
int64_t NowNs();

// Options of both engines (flowkv mode): peer error handling unless UCX_TLS
// selects shared memory, FLOWKV_BENCH_BUSY_POLL=1 for busy polling.
TransferEngineOptions EngineOptions(const char* name);

// --- Encoding ----------------------------------------------------------------
void PutU64(std::string* out, uint64_t value);

uint64_t GetU64(absl::string_view in);

// A length-prefixed field, read back by NextField.
void PutField(std::string* out, absl::string_view field);

bool NextField(absl::string_view* in, absl::string_view* field);

// A sequence number and a time, as the receiver replies.
std::string EncodeReply(uint64_t seq, int64_t time_ns);

// --- Control channel ---------------------------------------------------------

// What the sender asks of the receiver, and the receiver's answers.
enum class Command : uint8_t {
  kFlowkvStart = 1,  // -> kOk(listen address)
  kFlowkvStop = 2,   // -> kOk, or kError(first failure of the receiver)
  kRawStart = 3,     // (sender's worker address) -> kOk(fields: worker
                     // address, packed rkey, 8-byte remote buffer address)
  kRawStop = 4,      // -> kOk
  kExit = 5,         // no answer; the receiver exits
  kOk = 100,
  kError = 101,
};

struct Frame {
  Command command = Command::kOk;
  std::string payload;
};

// Frame: 1-byte command, 4-byte little-endian length, payload.
absl::Status SendFrame(int fd, Command command, absl::string_view payload);

absl::StatusOr<Frame> ReceiveFrame(int fd);

// Sends a request and returns the payload of the kOk answer.
absl::StatusOr<std::string> Call(int fd, Command command,
                                 absl::string_view payload);

// True when `fd` has data (or was closed).
bool Readable(int fd);

}  // namespace flowkv::write_latency

#endif  // FLOWKV_BENCHMARKS_WRITE_LATENCY_COMMON_H_
