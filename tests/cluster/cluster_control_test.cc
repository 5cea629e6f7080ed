// SPDX-License-Identifier: Apache-2.0
// flowkv-cluster's control channel from outside: the message codec with
// every truncation, garbage and contradictory field; frames split at every
// byte, over-long lengths and EOF on a real socket pair; and workload replay
// (lengths fitted to the model's context, bad options refused).

#include <fcntl.h>
#include <random>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "tools/cluster/control.h"
#include "tools/cluster/replay.h"
#include "tools/cluster/wire.h"

namespace flowkv::cluster {
namespace {

ControlMessage Sample() {
  ControlMessage m;
  m.type = MessageType::kAssignPrefill;
  m.node = 3;
  m.request = 1ull << 40;
  m.attempt = 2;
  m.peer = 7;
  m.role = NodeRole::kDecode;
  m.ok = false;
  m.prompt_len = 100;
  m.max_new = 9;
  m.bytes = 123456789;
  m.ms = 1.25;
  m.text = "127.0.0.1:4242";
  m.tokens = {1, 2, 255};
  m.runs = {10, 4, 20, 1};
  m.load.queued_prefill_tokens = 5;
  m.load.kv_blocks_total = 64;
  m.prefill_ms_per_token = 0.5;
  m.decode_step_ms = 3;
  return m;
}

TEST_CASE("control messages round-trip field by field", "[cluster]") {
  const ControlMessage m = Sample();
  absl::StatusOr<ControlMessage> back = DecodeMessage(EncodeMessage(m));
  REQUIRE(back.ok());
  CHECK(back->type == m.type);
  CHECK(back->node == 3);
  CHECK(back->request == m.request);
  CHECK(back->attempt == 2);
  CHECK(back->peer == 7);
  CHECK(back->role == NodeRole::kDecode);
  CHECK_FALSE(back->ok);
  CHECK(back->prompt_len == 100);
  CHECK(back->max_new == 9);
  CHECK(back->bytes == 123456789);
  CHECK(back->ms == 1.25);
  CHECK(back->text == m.text);
  CHECK(back->tokens == m.tokens);
  CHECK(back->runs == m.runs);
  CHECK(back->load.queued_prefill_tokens == 5);
  CHECK(back->load.kv_blocks_total == 64);
  CHECK(back->prefill_ms_per_token == 0.5);
  CHECK(back->decode_step_ms == 3);
  CHECK(BlocksOf(back->runs).num_blocks() == 5);
  CHECK(RunsOf(BlocksOf(back->runs)) == m.runs);
}

TEST_CASE("control decoding refuses every truncation and trailing byte",
          "[cluster]") {
  const std::string bytes = EncodeMessage(Sample());
  for (size_t n = 0; n < bytes.size(); ++n) {
    absl::StatusOr<ControlMessage> m = DecodeMessage(bytes.substr(0, n));
    REQUIRE(m.status().code() == absl::StatusCode::kInvalidArgument);
  }
  CHECK(DecodeMessage(bytes + "x").status().code() ==
        absl::StatusCode::kInvalidArgument);
}

TEST_CASE("control decoding refuses contradictory fields", "[cluster]") {
  ControlMessage odd = Sample();
  odd.runs = {1, 2, 3};
  CHECK(DecodeMessage(EncodeMessage(odd)).status().code() ==
        absl::StatusCode::kInvalidArgument);
  ControlMessage zero = Sample();
  zero.runs = {1, 0};
  CHECK(DecodeMessage(EncodeMessage(zero)).status().code() ==
        absl::StatusCode::kInvalidArgument);
  std::string bytes = EncodeMessage(Sample());
  bytes[0] = 99;  // no such type
  CHECK(DecodeMessage(bytes).status().code() ==
        absl::StatusCode::kInvalidArgument);
  bytes = EncodeMessage(Sample());
  bytes[1 + 4 + 8 + 4 + 4] = 7;  // no such role
  CHECK(DecodeMessage(bytes).status().code() ==
        absl::StatusCode::kInvalidArgument);
  // A vector count far beyond the payload is refused before any allocation.
  ByteWriter w;
  w.U32(0xffffffffu);
  const std::string lying = w.Take();  // the reader views it: keep it alive
  ByteReader r(lying);
  CHECK(r.U32s().empty());
  CHECK_FALSE(r.Finish().ok());
}

TEST_CASE("control decoding survives random bytes", "[cluster]") {
  std::mt19937_64 rng(7);
  const std::string good = EncodeMessage(Sample());
  for (int i = 0; i < 2000; ++i) {
    std::string bytes = good;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) {
      bytes[rng() % bytes.size()] = static_cast<char>(rng());
    }
    if (rng() % 3 == 0) bytes.resize(rng() % bytes.size());
    // Any outcome but a crash: OK or InvalidArgument.
    absl::StatusOr<ControlMessage> m = DecodeMessage(bytes);
    REQUIRE(
        (m.ok() || m.status().code() == absl::StatusCode::kInvalidArgument));
  }
}

struct SocketPair {
  SocketPair() {
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
    fcntl(fds[1], F_SETFL, fcntl(fds[1], F_GETFL) | O_NONBLOCK);
  }
  ~SocketPair() {
    if (fds[0] >= 0) close(fds[0]);
    close(fds[1]);
  }
  int fds[2];
};

TEST_CASE("frames split at every byte reassemble in order", "[cluster]") {
  SocketPair pair;
  FrameReader reader(pair.fds[1]);
  ByteWriter header;
  const std::string a = EncodeMessage(Sample());
  const std::string b = "second";
  header.U32(static_cast<uint32_t>(a.size()));
  std::string stream = header.Take() + a;
  ByteWriter header_b;
  header_b.U32(static_cast<uint32_t>(b.size()));
  stream += header_b.Take() + b;
  std::vector<std::string> frames;
  for (char c : stream) {
    REQUIRE(write(pair.fds[0], &c, 1) == 1);
    REQUIRE(reader.ReadAvailable(&frames).ok());
  }
  REQUIRE(frames.size() == 2);
  CHECK(frames[0] == a);
  CHECK(frames[1] == b);
  // WriteFrame produces what FrameReader reads.
  REQUIRE(WriteFrame(pair.fds[0], "third").ok());
  frames.clear();
  REQUIRE(reader.ReadAvailable(&frames).ok());
  REQUIRE(frames.size() == 1);
  CHECK(frames[0] == "third");
}

TEST_CASE("a frame length over the limit is an error, EOF is Unavailable",
          "[cluster]") {
  {
    SocketPair pair;
    FrameReader reader(pair.fds[1]);
    ByteWriter w;
    w.U32(kMaxFrameBytes + 1);
    const std::string bytes = w.Take();
    REQUIRE(write(pair.fds[0], bytes.data(), bytes.size()) == 4);
    std::vector<std::string> frames;
    CHECK(reader.ReadAvailable(&frames).code() ==
          absl::StatusCode::kInvalidArgument);
    CHECK(frames.empty());
  }
  {
    SocketPair pair;
    FrameReader reader(pair.fds[1]);
    REQUIRE(WriteFrame(pair.fds[0], "last words").ok());
    close(pair.fds[0]);
    pair.fds[0] = -1;
    std::vector<std::string> frames;
    CHECK(reader.ReadAvailable(&frames).code() ==
          absl::StatusCode::kUnavailable);
    REQUIRE(frames.size() == 1);  // what came before EOF is kept
    CHECK(frames[0] == "last words");
    // Writing to a closed peer is Unavailable, not SIGPIPE.
    CHECK(WriteFrame(pair.fds[1], "x").code() ==
          absl::StatusCode::kUnavailable);
  }
}

TEST_CASE("replay fits lengths to the context and refuses bad options",
          "[cluster]") {
  ReplayOptions o;
  o.workload = "shift:2";
  o.rate = 4;
  o.requests = 40;
  o.max_context = 512;
  double scale = 0;
  absl::StatusOr<std::vector<ClusterRequest>> r = MakeRequests(o, &scale);
  REQUIRE(r.ok());
  REQUIRE(r->size() == 40);
  CHECK(scale > 0);
  CHECK(scale < 1);
  for (const ClusterRequest& c : *r) {
    CHECK(c.prompt.size() + c.max_new <= 512);
    CHECK(c.max_new >= 1);
    for (uint32_t t : c.prompt) REQUIRE(t < 256);
  }
  // Same options, same requests.
  absl::StatusOr<std::vector<ClusterRequest>> again = MakeRequests(o, nullptr);
  REQUIRE(again.ok());
  CHECK((*again)[5].prompt == (*r)[5].prompt);

  o.length_scale = 1;  // 10,000-token prompts do not fit 512
  CHECK(MakeRequests(o, nullptr).status().code() ==
        absl::StatusCode::kInvalidArgument);
  o.length_scale = -1;
  CHECK(MakeRequests(o, nullptr).status().code() ==
        absl::StatusCode::kInvalidArgument);
  o.length_scale = 0;
  o.rate = 0;
  CHECK(MakeRequests(o, nullptr).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace flowkv::cluster
