// SPDX-License-Identifier: Apache-2.0
// Latency of one small Write between two processes on this host: from just
// before the sender posts it until the receiver learns that it arrived.
//
//   BM_WriteLatency/<mode>/<bytes>     bytes: 4096, 32768, 262144, 2097152
//
// The program forks a receiver process at start (before any UCX object
// exists) and drives it over a socketpair; both run the same UCX transports.
//
// Modes:
//   flowkv  TransferEngine to TransferEngine (Listen / Connect on 127.0.0.1):
//           Write(peer, {one op of <bytes>}, {.notification = 8-byte seq}).
//           The receiver's on_notification callback reads CLOCK_MONOTONIC and
//           Send()s that time back.
//   raw     plain UCX between the same two processes, the floor for flowkv in
//           the same run: ucp_put_nbx of <bytes> + ucp_ep_flush_nbx, then an
//           8-byte ucp_am_send_nbx; both sides spin in ucp_worker_progress and
//           the receiver's AM handler reads CLOCK_MONOTONIC and replies.
//
// One iteration's latency = receiver's arrival time - sender's time before
// posting (CLOCK_MONOTONIC is system-wide, so the two processes agree). The
// sender waits for the reply before the next iteration. Per case: 100
// warm-up iterations, then kSamples samples; Time is their mean.
// Counters: median_us, p99_us (latency); for flowkv also write_call_median_us,
// write_call_p99_us (time spent inside the Write() call).
//
// Shared memory:
//   UCX_TLS=posix,cma,self,tcp build/bin/write_latency_benchmark
// (the engines run without UCX peer error handling, which UCX 1.13's
// shared-memory transports lack; tcp only sets up flowkv's connection).
// TCP:
//   UCX_TLS=tcp build/bin/write_latency_benchmark
// UCX_NET_DEVICES is forced to lo. FLOWKV_BENCH_BUSY_POLL=1 makes both
// engines' progress threads spin.
//
// Files: write_latency_common.h (shared setup, control channel),
// write_latency_raw_ucx.h (the raw-UCX baseline), write_latency_receiver.h
// (the receiver process); this file is the sender and the benchmarks.

#include <algorithm>
#include <benchmark/benchmark.h>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <signal.h>
#include <stdlib.h>
#include <string>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <ucp/api/ucp.h>
#include <unistd.h>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "benchmarks/write_latency_common.h"
#include "benchmarks/write_latency_raw_ucx.h"
#include "benchmarks/write_latency_receiver.h"
#include "flowkv/transfer_engine.h"

namespace flowkv::write_latency {
namespace {

constexpr int kWarmup = 100;
constexpr int kSamples = 2000;

// --- Sender (this process) ---------------------------------------------------

enum class Mode { kNone, kFlowkv, kRaw };

// The sender's side of whichever mode is set up; externally synchronized
// (benchmarks run one at a time).
struct Sender {
  int fd = -1;
  Mode mode = Mode::kNone;
  uint64_t seq = 0;
  // flowkv
  std::unique_ptr<TransferEngine> engine;
  RegionId local_region = 0;
  RegionId remote_region = 0;
  PeerId peer = 0;
  // raw
  std::unique_ptr<RawSide> raw;
};

Sender& GetSender() {
  static Sender* sender = new Sender;
  return *sender;
}

absl::Status StopFlowkv(Sender& sender) {
  sender.engine.reset();
  return Call(sender.fd, Command::kFlowkvStop, "").status();
}

absl::Status StopRaw(Sender& sender) {
  // The receiver closes its side while this one closes (both progress).
  absl::Status status = SendFrame(sender.fd, Command::kRawStop, "");
  if (!status.ok()) return status;
  RawSide& raw = *sender.raw;
  const absl::Status closed = raw.CloseEndpoint();
  const int64_t deadline = NowNs() + kReplyTimeoutNs;
  for (uint32_t spins = 1; !Readable(sender.fd); ++spins) {
    ucp_worker_progress(raw.worker);
    if (spins % 1024 == 0 && NowNs() > deadline) break;
  }
  absl::StatusOr<Frame> answer = ReceiveFrame(sender.fd);
  sender.raw.reset();
  if (!answer.ok()) return answer.status();
  if (answer->command != Command::kOk) {
    return absl::InternalError(absl::StrCat("receiver: ", answer->payload));
  }
  return closed;
}

absl::Status StopMode(Sender& sender) {
  const Mode mode = sender.mode;
  sender.mode = Mode::kNone;
  if (mode == Mode::kFlowkv) return StopFlowkv(sender);
  if (mode == Mode::kRaw) return StopRaw(sender);
  return absl::OkStatus();
}

absl::Status StartFlowkv(Sender& sender) {
  absl::StatusOr<std::unique_ptr<TransferEngine>> engine =
      TransferEngine::Create(EngineOptions("sender"));
  if (!engine.ok()) return engine.status();
  absl::StatusOr<AllocatedRegion> pool = (*engine)->AllocateMemory(kMaxBytes);
  if (!pool.ok()) return pool.status();
  std::memset(pool->data, 1, kMaxBytes);
  sender.engine = *std::move(engine);
  sender.local_region = pool->id;
  sender.mode = Mode::kFlowkv;  // From here on StopFlowkv cleans up.
  absl::StatusOr<std::string> address =
      Call(sender.fd, Command::kFlowkvStart, "");
  if (!address.ok()) return address.status();
  absl::StatusOr<PeerId> peer = sender.engine->Connect(*address);
  if (!peer.ok()) return peer.status();
  absl::StatusOr<PeerInfo> info = sender.engine->GetPeer(*peer);
  if (!info.ok()) return info.status();
  if (info->regions.empty() || info->regions[0].length < kMaxBytes) {
    return absl::InternalError("receiver has no pool of kMaxBytes");
  }
  sender.peer = *peer;
  sender.remote_region = info->regions[0].id;
  return absl::OkStatus();
}

absl::Status StartRaw(Sender& sender) {
  sender.raw = std::make_unique<RawSide>();
  RawSide& raw = *sender.raw;
  if (absl::Status s = OpenRawSide(&raw, kReplyAm); !s.ok()) return s;
  absl::StatusOr<std::string> address = WorkerAddress(raw.worker);
  if (!address.ok()) return address.status();
  sender.mode = Mode::kRaw;  // From here on StopRaw cleans up.
  absl::StatusOr<std::string> answer =
      Call(sender.fd, Command::kRawStart, *address);
  if (!answer.ok()) {
    sender.mode = Mode::kNone;
    sender.raw.reset();
    return answer.status();
  }
  absl::string_view fields = *answer;
  absl::string_view worker_address, rkey, buffer_address;
  if (!NextField(&fields, &worker_address) || !NextField(&fields, &rkey) ||
      !NextField(&fields, &buffer_address) || buffer_address.size() != 8) {
    return absl::InternalError("receiver: malformed kRawStart answer");
  }
  if (absl::Status s = ConnectRaw(&raw, worker_address); !s.ok()) return s;
  const ucs_status_t status =
      ucp_ep_rkey_unpack(raw.ep, rkey.data(), &raw.rkey);
  if (status != UCS_OK) return UcsError("ucp_ep_rkey_unpack", status);
  raw.remote_buffer = GetU64(buffer_address);
  return absl::OkStatus();
}

absl::Status EnsureMode(Sender& sender, Mode mode) {
  if (sender.mode == mode) return absl::OkStatus();
  if (absl::Status s = StopMode(sender); !s.ok()) return s;
  absl::Status started =
      mode == Mode::kFlowkv ? StartFlowkv(sender) : StartRaw(sender);
  // A half-started mode is torn down, so the next case starts afresh.
  if (!started.ok()) StopMode(sender).IgnoreError();
  return started;
}

// One iteration: latency and (flowkv) time inside Write(), in ns.
struct Sample {
  int64_t latency_ns = 0;
  int64_t call_ns = 0;
};

absl::StatusOr<Sample> FlowkvIteration(Sender& sender, uint64_t bytes) {
  const uint64_t seq = ++sender.seq;
  const TransferOp op{sender.local_region, 0, sender.remote_region, 0, bytes};
  TransferOptions options;
  options.notification.emplace();
  PutU64(&*options.notification, seq);

  const int64_t start = NowNs();
  TransferHandle handle =
      sender.engine->Write(sender.peer, {&op, 1}, std::move(options));
  const int64_t posted = NowNs();

  const int64_t deadline = start + kReplyTimeoutNs;
  for (;;) {
    if (handle.state() == TransferState::kDone && !handle.status().ok()) {
      return handle.status();
    }
    if (NowNs() > deadline) {
      return absl::DeadlineExceededError("no reply from the receiver in 10 s");
    }
    // The wait only bounds how soon a failed Write is noticed.
    for (const Notification& note :
         sender.engine->TakeNotifications(absl::Milliseconds(100))) {
      if (note.kind != Notification::Kind::kMessage ||
          note.bytes.size() != 16 || GetU64(note.bytes) != seq) {
        continue;
      }
      if (absl::Status status = handle.Wait(); !status.ok()) return status;
      const int64_t arrived =
          static_cast<int64_t>(GetU64(absl::string_view(note.bytes).substr(8)));
      return Sample{arrived - start, posted - start};
    }
  }
}

absl::StatusOr<Sample> RawIteration(Sender& sender, uint64_t bytes) {
  RawSide& raw = *sender.raw;
  const uint64_t seq = ++sender.seq;
  std::string message;
  PutU64(&message, seq);
  raw.arrived = false;

  const int64_t start = NowNs();
  ucp_request_param_t put_param{};
  put_param.op_attr_mask = UCP_OP_ATTR_FIELD_MEMH;
  put_param.memh = raw.memh;
  void* put = ucp_put_nbx(raw.ep, raw.buffer, bytes, raw.remote_buffer,
                          raw.rkey, &put_param);
  if (UCS_PTR_IS_ERR(put)) return UcsError("ucp_put_nbx", UCS_PTR_STATUS(put));
  if (put != nullptr) ucp_request_free(put);  // The flush covers it.
  ucp_request_param_t flush_param{};
  if (absl::Status s = WaitRequest(
          raw.worker, ucp_ep_flush_nbx(raw.ep, &flush_param), "flush");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = SendAm(&raw, kSeqAm, message); !s.ok()) return s;

  const int64_t deadline = start + kReplyTimeoutNs;
  for (uint32_t spins = 1; !raw.arrived || raw.seq != seq; ++spins) {
    ucp_worker_progress(raw.worker);
    if (spins % 1024 == 0 && NowNs() > deadline) {
      return absl::DeadlineExceededError("no reply from the receiver in 10 s");
    }
  }
  return Sample{raw.time_ns - start, 0};
}

double PercentileUs(std::vector<int64_t> samples, double fraction) {
  if (samples.empty()) return 0;
  std::sort(samples.begin(), samples.end());
  size_t index = static_cast<size_t>(fraction * samples.size());
  if (index >= samples.size()) index = samples.size() - 1;
  return samples[index] / 1e3;
}

void BM_WriteLatency(benchmark::State& state, Mode mode) {
  const uint64_t bytes = static_cast<uint64_t>(state.range(0));
  Sender& sender = GetSender();
  if (absl::Status s = EnsureMode(sender, mode); !s.ok()) {
    state.SkipWithError(s.ToString().c_str());
    return;
  }
  auto iteration = [&]() {
    return mode == Mode::kFlowkv ? FlowkvIteration(sender, bytes)
                                 : RawIteration(sender, bytes);
  };
  for (int i = 0; i < kWarmup; ++i) {
    if (absl::StatusOr<Sample> sample = iteration(); !sample.ok()) {
      state.SkipWithError(sample.status().ToString().c_str());
      return;
    }
  }
  std::vector<int64_t> latencies;
  std::vector<int64_t> calls;
  latencies.reserve(kSamples);
  calls.reserve(kSamples);
  for (auto _ : state) {
    absl::StatusOr<Sample> sample = iteration();
    if (!sample.ok()) {
      state.SkipWithError(sample.status().ToString().c_str());
      return;
    }
    latencies.push_back(sample->latency_ns);
    calls.push_back(sample->call_ns);
    state.SetIterationTime(sample->latency_ns / 1e9);
  }
  state.counters["median_us"] = PercentileUs(latencies, 0.5);
  state.counters["p99_us"] = PercentileUs(latencies, 0.99);
  if (mode == Mode::kFlowkv) {
    state.counters["write_call_median_us"] = PercentileUs(calls, 0.5);
    state.counters["write_call_p99_us"] = PercentileUs(calls, 0.99);
  }
}

void RegisterAll() {
  for (Mode mode : {Mode::kFlowkv, Mode::kRaw}) {
    const std::string name = std::string("BM_WriteLatency/") +
                             (mode == Mode::kFlowkv ? "flowkv" : "raw");
    for (int64_t bytes : {4096, 32768, 262144, 2097152}) {
      benchmark::RegisterBenchmark(
          name.c_str(),
          [mode](benchmark::State& state) { BM_WriteLatency(state, mode); })
          ->Arg(bytes)
          ->Iterations(kSamples)
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
    }
  }
}

}  // namespace
}  // namespace flowkv::write_latency

int main(int argc, char** argv) {
  // Both processes inherit the transport settings.
  setenv("UCX_NET_DEVICES", "lo", 1);
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0) {
    std::perror("socketpair");
    return 1;
  }
  const pid_t parent = getpid();
  const pid_t child = fork();
  if (child < 0) {
    std::perror("fork");
    return 1;
  }
  if (child == 0) {
    close(fds[0]);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);  // The parent died before prctl.
    _exit(flowkv::write_latency::RunReceiver(fds[1]));
  }
  close(fds[1]);
  flowkv::write_latency::Sender& sender = flowkv::write_latency::GetSender();
  sender.fd = fds[0];

  flowkv::write_latency::RegisterAll();
  benchmark::Initialize(&argc, argv);
  int rc = 0;
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
    rc = 1;
  } else {
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    if (absl::Status s = flowkv::write_latency::StopMode(sender); !s.ok()) {
      std::fprintf(stderr, "teardown: %s\n", s.ToString().c_str());
      rc = 1;
    }
  }
  flowkv::write_latency::SendFrame(sender.fd,
                                   flowkv::write_latency::Command::kExit, "")
      .IgnoreError();
  close(sender.fd);
  int status = 0;
  waitpid(child, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) rc = 1;
  return rc;
}
