// SPDX-License-Identifier: Apache-2.0
// The receiver process declared in write_latency_receiver.h.
#include "benchmarks/write_latency_receiver.h"

#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <ucp/api/ucp.h>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "benchmarks/write_latency_common.h"
#include "benchmarks/write_latency_raw_ucx.h"
#include "flowkv/transfer_engine.h"

namespace flowkv::write_latency {
namespace {

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

}  // namespace

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

}  // namespace flowkv::write_latency
