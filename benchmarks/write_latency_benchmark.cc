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

#include <algorithm>
#include <atomic>
#include <benchmark/benchmark.h>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <ucp/api/ucp.h>
#include <unistd.h>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "flowkv/transfer_engine.h"
#include "tests/transfer_test_util.h"

namespace flowkv {
namespace {

constexpr uint64_t kMaxBytes = 2 << 20;
constexpr int kWarmup = 100;
constexpr int kSamples = 2000;
// Bound on one reply and on each control step; a stuck peer fails the case.
constexpr int64_t kReplyTimeoutNs = 10'000'000'000;
// Frames over the control socket are at most this long.
constexpr uint32_t kMaxFrame = 1 << 20;
// Active message ids of the raw mode.
constexpr unsigned kSeqAm = 1;
constexpr unsigned kReplyAm = 2;

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

using flowkv::testing::SharedMemoryMode;

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

// --- Plain UCX (raw mode) ----------------------------------------------------

absl::Status UcsError(absl::string_view what, ucs_status_t status) {
  return absl::InternalError(
      absl::StrCat(what, ": ", ucs_status_string(status)));
}

// Progresses `worker` until `request` (a ucp *_nbx result) completes, then
// frees it.
absl::Status WaitRequest(ucp_worker_h worker, void* request,
                         absl::string_view what) {
  if (request == nullptr) return absl::OkStatus();
  if (UCS_PTR_IS_ERR(request)) return UcsError(what, UCS_PTR_STATUS(request));
  const int64_t deadline = NowNs() + kReplyTimeoutNs;
  ucs_status_t status;
  uint32_t spins = 0;
  while ((status = ucp_request_check_status(request)) == UCS_INPROGRESS) {
    ucp_worker_progress(worker);
    if (++spins % 1024 == 0 && NowNs() > deadline) {
      ucp_request_free(request);  // Released when it completes.
      return absl::DeadlineExceededError(absl::StrCat(what, ": timed out"));
    }
  }
  ucp_request_free(request);
  return status == UCS_OK ? absl::OkStatus() : UcsError(what, status);
}

// One side's UCX objects: context, worker, endpoint to the other side, and
// a UCX-allocated buffer of kMaxBytes. Externally synchronized.
struct RawSide {
  ucp_context_h context = nullptr;
  ucp_worker_h worker = nullptr;
  ucp_ep_h ep = nullptr;
  ucp_mem_h memh = nullptr;
  void* buffer = nullptr;
  ucp_rkey_h rkey = nullptr;  // Sender: the receiver's buffer.
  uint64_t remote_buffer = 0;
  // The last active message received: (seq, receive time or reply time).
  bool arrived = false;
  uint64_t seq = 0;
  int64_t time_ns = 0;

  ~RawSide() { Close().IgnoreError(); }

  // Closes the endpoint (flushing, not forcing: there is no peer error
  // handling; the peer must keep progressing) and drops the remote key.
  absl::Status CloseEndpoint() {
    if (rkey != nullptr) ucp_rkey_destroy(rkey);
    rkey = nullptr;
    if (ep == nullptr) return absl::OkStatus();
    ucp_request_param_t param{};
    param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    param.flags = 0;
    const absl::Status status =
        WaitRequest(worker, ucp_ep_close_nbx(ep, &param), "ep close");
    ep = nullptr;
    return status;
  }

  // CloseEndpoint, then releases everything.
  absl::Status Close() {
    const absl::Status status = CloseEndpoint();
    if (memh != nullptr) ucp_mem_unmap(context, memh);
    memh = nullptr;
    buffer = nullptr;
    if (worker != nullptr) ucp_worker_destroy(worker);
    worker = nullptr;
    if (context != nullptr) ucp_cleanup(context);
    context = nullptr;
    return status;
  }
};

// AM handler of both sides: records (seq, time) of an eager message.
ucs_status_t OnAm(void* arg, const void* /*header*/, size_t /*header_length*/,
                  void* data, size_t length, const ucp_am_recv_param_t* param) {
  const int64_t now = NowNs();
  auto* side = static_cast<RawSide*>(arg);
  if ((param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0 || length < 8) {
    return UCS_OK;  // Not ours (every message here is 8 or 16 bytes, eager).
  }
  const absl::string_view bytes(static_cast<const char*>(data), length);
  side->seq = GetU64(bytes);
  side->time_ns =
      length >= 16 ? static_cast<int64_t>(GetU64(bytes.substr(8))) : now;
  side->arrived = true;
  return UCS_OK;
}

// Creates context, worker (AM handler `am_id`) and a mapped buffer.
absl::Status OpenRawSide(RawSide* side, unsigned am_id) {
  ucp_config_t* config = nullptr;
  ucs_status_t status = ucp_config_read(nullptr, nullptr, &config);
  if (status != UCS_OK) return UcsError("ucp_config_read", status);
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_RMA | UCP_FEATURE_AM;
  status = ucp_init(&params, config, &side->context);
  ucp_config_release(config);
  if (status != UCS_OK) return UcsError("ucp_init", status);

  ucp_worker_params_t worker_params{};
  worker_params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  worker_params.thread_mode = UCS_THREAD_MODE_SINGLE;
  status = ucp_worker_create(side->context, &worker_params, &side->worker);
  if (status != UCS_OK) return UcsError("ucp_worker_create", status);

  ucp_am_handler_param_t handler{};
  handler.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID |
                       UCP_AM_HANDLER_PARAM_FIELD_CB |
                       UCP_AM_HANDLER_PARAM_FIELD_ARG;
  handler.id = am_id;
  handler.cb = OnAm;
  handler.arg = side;
  status = ucp_worker_set_am_recv_handler(side->worker, &handler);
  if (status != UCS_OK) {
    return UcsError("ucp_worker_set_am_recv_handler", status);
  }

  ucp_mem_map_params_t map{};
  map.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS |
                   UCP_MEM_MAP_PARAM_FIELD_LENGTH |
                   UCP_MEM_MAP_PARAM_FIELD_FLAGS;
  map.address = nullptr;
  map.length = kMaxBytes;
  map.flags = UCP_MEM_MAP_ALLOCATE;
  status = ucp_mem_map(side->context, &map, &side->memh);
  if (status != UCS_OK) return UcsError("ucp_mem_map", status);
  ucp_mem_attr_t attr{};
  attr.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS;
  status = ucp_mem_query(side->memh, &attr);
  if (status != UCS_OK) return UcsError("ucp_mem_query", status);
  side->buffer = attr.address;
  std::memset(side->buffer, 1, kMaxBytes);
  return absl::OkStatus();
}

absl::StatusOr<std::string> WorkerAddress(ucp_worker_h worker) {
  ucp_address_t* address = nullptr;
  size_t length = 0;
  const ucs_status_t status = ucp_worker_get_address(worker, &address, &length);
  if (status != UCS_OK) return UcsError("ucp_worker_get_address", status);
  std::string bytes(reinterpret_cast<const char*>(address), length);
  ucp_worker_release_address(worker, address);
  return bytes;
}

absl::Status ConnectRaw(RawSide* side, absl::string_view worker_address) {
  ucp_ep_params_t params{};
  params.field_mask =
      UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
  params.address =
      reinterpret_cast<const ucp_address_t*>(worker_address.data());
  params.err_mode = UCP_ERR_HANDLING_MODE_NONE;
  const ucs_status_t status = ucp_ep_create(side->worker, &params, &side->ep);
  return status == UCS_OK ? absl::OkStatus()
                          : UcsError("ucp_ep_create", status);
}

// 8 or 16 bytes as an active message; waits until sent locally.
absl::Status SendAm(RawSide* side, unsigned am_id, const std::string& bytes) {
  ucp_request_param_t param{};
  return WaitRequest(side->worker,
                     ucp_am_send_nbx(side->ep, am_id, nullptr, 0, bytes.data(),
                                     bytes.size(), &param),
                     "ucp_am_send_nbx");
}

// --- Receiver process --------------------------------------------------------

// The receiver's engine (flowkv mode) and the first failure of its replies.
struct ReceiverEngine {
  absl::Mutex mu;
  std::string first_error ABSL_GUARDED_BY(mu);
  std::atomic<TransferEngine*> engine{nullptr};
  std::unique_ptr<TransferEngine> owner;

  void Fail(const absl::Status& status) {
    absl::MutexLock lock(&mu);
    if (first_error.empty()) first_error = status.ToString();
  }
};

TransferEngineOptions EngineOptions(const char* name) {
  TransferEngineOptions options;
  options.name = name;
  options.cluster_token = "bench";
  options.ucx_peer_error_handling = !SharedMemoryMode();
  // Failure detection is not what is measured here.
  options.peer_failure_timeout = absl::Seconds(60);
  const char* busy = std::getenv("FLOWKV_BENCH_BUSY_POLL");
  options.busy_poll = busy != nullptr && std::string(busy) == "1";
  return options;
}

// kFlowkvStart: an engine with one pool, listening; answers its address.
absl::StatusOr<std::string> StartReceiverEngine(ReceiverEngine* receiver) {
  TransferEngineOptions options = EngineOptions("receiver");
  options.on_notification = [receiver](Notification note) {
    const int64_t now = NowNs();
    TransferEngine* engine = receiver->engine.load(std::memory_order_acquire);
    if (engine == nullptr || note.kind != Notification::Kind::kTransfer ||
        note.bytes.size() != 8) {
      return;
    }
    TransferOptions reply_options;
    reply_options.on_complete = [receiver](const absl::Status& status,
                                           const TransferStats&) {
      if (!status.ok()) receiver->Fail(status);
    };
    engine->Send(note.peer, EncodeReply(GetU64(note.bytes), now),
                 std::move(reply_options));
  };
  absl::StatusOr<std::unique_ptr<TransferEngine>> engine =
      TransferEngine::Create(options);
  if (!engine.ok()) return engine.status();
  absl::StatusOr<AllocatedRegion> pool = (*engine)->AllocateMemory(kMaxBytes);
  if (!pool.ok()) return pool.status();
  std::memset(pool->data, 2, kMaxBytes);
  absl::StatusOr<std::string> address = (*engine)->Listen("127.0.0.1:0");
  if (!address.ok()) return address.status();
  receiver->owner = *std::move(engine);
  receiver->engine.store(receiver->owner.get(), std::memory_order_release);
  return address;
}

// kRawStart: opens UCX, connects to the sender's worker, answers the fields.
absl::StatusOr<std::string> StartReceiverRaw(RawSide* side,
                                             absl::string_view sender_address) {
  if (absl::Status s = OpenRawSide(side, kSeqAm); !s.ok()) return s;
  if (absl::Status s = ConnectRaw(side, sender_address); !s.ok()) return s;
  absl::StatusOr<std::string> address = WorkerAddress(side->worker);
  if (!address.ok()) return address.status();
  void* rkey = nullptr;
  size_t rkey_length = 0;
  const ucs_status_t status =
      ucp_rkey_pack(side->context, side->memh, &rkey, &rkey_length);
  if (status != UCS_OK) return UcsError("ucp_rkey_pack", status);
  std::string answer;
  PutField(&answer, *address);
  PutField(&answer,
           absl::string_view(static_cast<const char*>(rkey), rkey_length));
  ucp_rkey_buffer_release(rkey);
  std::string buffer_address;
  PutU64(&buffer_address, reinterpret_cast<uintptr_t>(side->buffer));
  PutField(&answer, buffer_address);
  return answer;
}

// Raw mode: spins the worker, answering every 8-byte seq with its arrival
// time, until the control socket has a frame (returned) or fails.
absl::StatusOr<Frame> ServeRaw(RawSide* side, int fd) {
  for (uint32_t spins = 1;; ++spins) {
    ucp_worker_progress(side->worker);
    if (side->arrived) {
      side->arrived = false;
      absl::Status s =
          SendAm(side, kReplyAm, EncodeReply(side->seq, side->time_ns));
      if (!s.ok()) return s;
    }
    if (spins % 1024 == 0 && Readable(fd)) return ReceiveFrame(fd);
  }
}

absl::Status Answer(int fd, const absl::StatusOr<std::string>& result) {
  return result.ok()
             ? SendFrame(fd, Command::kOk, *result)
             : SendFrame(fd, Command::kError, result.status().ToString());
}

// The receiver's main loop: serves requests until kExit or a closed socket.
int RunReceiver(int fd) {
  ReceiverEngine receiver;
  std::unique_ptr<RawSide> raw;
  absl::StatusOr<Frame> frame = ReceiveFrame(fd);
  while (frame.ok()) {
    absl::Status sent;
    switch (frame->command) {
      case Command::kFlowkvStart:
        sent = Answer(fd, StartReceiverEngine(&receiver));
        break;
      case Command::kFlowkvStop: {
        receiver.engine.store(nullptr, std::memory_order_release);
        receiver.owner.reset();
        std::string error;
        {
          absl::MutexLock lock(&receiver.mu);
          error.swap(receiver.first_error);
        }
        sent = error.empty() ? SendFrame(fd, Command::kOk, "")
                             : SendFrame(fd, Command::kError, error);
        break;
      }
      case Command::kRawStart: {
        raw = std::make_unique<RawSide>();
        absl::StatusOr<std::string> answer =
            StartReceiverRaw(raw.get(), frame->payload);
        sent = Answer(fd, answer);
        if (!answer.ok()) {
          raw.reset();
        } else if (sent.ok()) {
          frame = ServeRaw(raw.get(), fd);
          continue;
        }
        break;
      }
      case Command::kRawStop: {
        absl::Status closed = raw != nullptr ? raw->Close() : absl::OkStatus();
        raw.reset();
        sent = closed.ok() ? SendFrame(fd, Command::kOk, "")
                           : SendFrame(fd, Command::kError, closed.ToString());
        break;
      }
      case Command::kExit:
        return 0;
      default:
        sent = SendFrame(fd, Command::kError, "unknown command");
    }
    if (!sent.ok()) return 1;
    frame = ReceiveFrame(fd);
  }
  return 1;
}

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
}  // namespace flowkv

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
    _exit(flowkv::RunReceiver(fds[1]));
  }
  close(fds[1]);
  flowkv::Sender& sender = flowkv::GetSender();
  sender.fd = fds[0];

  flowkv::RegisterAll();
  benchmark::Initialize(&argc, argv);
  int rc = 0;
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
    rc = 1;
  } else {
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    if (absl::Status s = flowkv::StopMode(sender); !s.ok()) {
      std::fprintf(stderr, "teardown: %s\n", s.ToString().c_str());
      rc = 1;
    }
  }
  flowkv::SendFrame(sender.fd, flowkv::Command::kExit, "").IgnoreError();
  close(sender.fd);
  int status = 0;
  waitpid(child, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) rc = 1;
  return rc;
}
