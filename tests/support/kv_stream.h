// SPDX-License-Identifier: Apache-2.0
// A stream of KV requests between processes, for the reliability tests
// (kill_test.cc, soak_test.cc): numbered senders ("streams") push requests
// through KvTransfer into a receiving pool, one request in flight per
// stream, and the receiver checks every finished request byte for byte
// against a replica of the sender's pool.
//
// Protocol (engine messages): the sender connects and sends
// "hello <s> <seed>" (its pool holds FillRandom(seed)); the receiver
// answers "go 0", and once request i of stream s finished and was verified
// (and its blocks zeroed) "go <i+1>", paced by its interval, until it stops
// going; "stop" ends the stream. Request i of stream s is "s<s>-<i>":
// tokens [0, kStreamTokens) of kStreamBlocks source blocks that move with
// i, one Send per layer, into the stream's own destination blocks. The
// geometry is the KV fixture's (tests/support/kv_fixture.h): block-major
// sender, layer-major receiver. Hidden child test cases run the two sides in
// other processes (RunStreamSenderChild, RunStreamReceiverChild).
#ifndef FLOWKV_TESTS_SUPPORT_KV_STREAM_H_
#define FLOWKV_TESTS_SUPPORT_KV_STREAM_H_

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <unistd.h>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "flowkv/block_list.h"
#include "flowkv/kv_layout.h"
#include "flowkv/kv_transfer.h"
#include "flowkv/transfer_engine.h"
#include "tests/support/kv_fixture.h"
#include "tests/support/kv_test_util.h"
#include "tests/support/transfer_test_util.h"

namespace flowkv::testing {

inline constexpr uint32_t kStreamBlocks = 2;
inline constexpr uint64_t kStreamTokens =
    kStreamBlocks * kv_fixture::kGeometry.block_tokens;
inline constexpr uint32_t kStreamLayers = kv_fixture::kGeometry.num_layers;
// Streams one receiving pool holds (each owns kStreamBlocks blocks).
inline constexpr uint32_t kMaxStreams =
    kv_fixture::kGeometry.num_blocks / kStreamBlocks;

inline uint64_t StreamSeed(uint32_t stream) { return 1000 + stream; }

inline std::string StreamRequestId(uint32_t stream, uint64_t index) {
  return absl::StrCat("s", stream, "-", index);
}

inline bool ParseStreamRequestId(const std::string& id, uint32_t* stream,
                                 uint64_t* index) {
  const size_t dash = id.find('-');
  return id.size() > 1 && id[0] == 's' && dash != std::string::npos &&
         absl::SimpleAtoi(id.substr(1, dash - 1), stream) &&
         absl::SimpleAtoi(id.substr(dash + 1), index);
}

// Source blocks of request `index`: they move through the sender's pool.
inline BlockList StreamSrcBlocks(uint64_t index) {
  const uint64_t span = kv_fixture::kGeometry.num_blocks - kStreamBlocks + 1;
  return BlockList({{static_cast<BlockId>((index * 7) % span), kStreamBlocks}});
}

// Destination blocks of `stream`: streams that run at the same time must
// differ modulo kMaxStreams.
inline BlockList StreamDstBlocks(uint32_t stream) {
  return BlockList({{(stream % kMaxStreams) * kStreamBlocks, kStreamBlocks}});
}

// The piece of request `index` of `stream` that moves layer `layer`.
inline KvPiece StreamPiece(uint32_t stream, uint64_t index, uint32_t layer) {
  return {.src_blocks = StreamSrcBlocks(index),
          .dst_blocks = StreamDstBlocks(stream),
          .num_tokens = kStreamTokens,
          .layer_begin = layer,
          .layer_end = layer + 1};
}

// Parses "<word> <n>".
inline bool ParseStreamMessage(const std::string& bytes,
                               const std::string& word, uint64_t* n) {
  return bytes.rfind(word + " ", 0) == 0 &&
         absl::SimpleAtoi(bytes.substr(word.size() + 1), n);
}

// The sending side of one stream to one peer. Externally synchronized.
class StreamSender {
 public:
  StreamSender(TransferEngine* engine, KvTransfer* kv, PeerId peer,
               uint32_t stream, uint64_t seed)
      : engine_(engine), kv_(kv), peer_(peer), stream_(stream), seed_(seed) {}

  absl::Status Hello() {
    return engine_->Send(peer_, absl::StrCat("hello ", stream_, " ", seed_))
        .Wait();
  }

  // On "go <index>": settles the previous request's pieces, then posts
  // request `index`, one Send per layer.
  void Go(uint64_t index) {
    Settle();
    for (uint32_t layer = 0; layer < kStreamLayers; ++layer) {
      pending_.push_back(kv_->Send(StreamRequestId(stream_, index), peer_,
                                   StreamPiece(stream_, index, layer)));
    }
    ++requests_posted;
  }

  // Waits for every posted piece and counts its outcome.
  void Settle() {
    for (TransferHandle& h : pending_) {
      if (h.Wait().ok()) {
        ++pieces_ok;
      } else {
        ++pieces_failed;
        last_failure = h.status();
      }
    }
    pending_.clear();
  }

  uint32_t stream() const { return stream_; }
  PeerId peer() const { return peer_; }

  uint64_t requests_posted = 0;
  uint64_t pieces_ok = 0;
  uint64_t pieces_failed = 0;
  absl::Status last_failure;

 private:
  TransferEngine* engine_;
  KvTransfer* kv_;
  PeerId peer_;
  uint32_t stream_;
  uint64_t seed_;
  std::vector<TransferHandle> pending_;
};

// The receiving side of any number of streams into one pool (a Side with
// the receiver's layout). Externally synchronized; use from one thread.
class StreamReceiver {
 public:
  struct Stream {
    PeerId peer = 0;
    uint64_t seed = 0;       // the sender's pool holds FillRandom(seed)
    uint64_t next = 0;       // the request the last "go" asked for
    bool in_flight = false;  // a "go" is not answered yet
    absl::Time due = absl::InfiniteFuture();  // when to send the next "go"
    uint64_t finished = 0;                    // finished and byte-exact
    uint64_t mismatched = 0;  // finished with other bytes, or unasked
    uint64_t bytes_verified = 0;
    std::vector<KvFailed> failed;
    absl::Time first_failure = absl::InfiniteFuture();
    bool disconnected = false;
    absl::Time disconnected_at = absl::InfiniteFuture();
  };

  // `interval`: the least time between two "go"s of one stream.
  StreamReceiver(kv_fixture::Side* side, absl::Duration interval)
      : side_(side),
        interval_(interval),
        sender_layout_(*KvLayout::Create(kv_fixture::kPrefillSpec)) {}

  // One round: waits up to `wait` (less when a "go" is due) for news, acts
  // on it, sends the "go"s that are due.
  void Poll(absl::Duration wait) {
    absl::Time earliest = absl::InfiniteFuture();
    for (auto& [s, stream] : streams) earliest = std::min(earliest, stream.due);
    wait =
        std::max(absl::ZeroDuration(), std::min(wait, earliest - absl::Now()));
    KvPollResult r = side_->kv->Poll(wait);
    for (KvFinished& f : r.finished) OnFinished(f.request_id);
    for (KvFailed& f : r.failed) OnFailed(std::move(f));
    for (Notification& n : r.other) OnOther(n);
    const absl::Time now = absl::Now();
    for (auto& [s, stream] : streams) {
      if (stream.due > now) continue;
      stream.due = absl::InfiniteFuture();
      if (!going_ || stream.disconnected) continue;
      stream.in_flight = true;
      // Fire and forget: a sender that is gone shows up as disconnected.
      side_->engine->Send(stream.peer, absl::StrCat("go ", stream.next));
    }
  }

  // No more "go"s after the requests in flight.
  void StopGoing() {
    going_ = false;
    for (auto& [s, stream] : streams) stream.due = absl::InfiniteFuture();
  }
  // Whether no stream has a request in flight (every "go" answered by a
  // finished or failed request, or its sender disconnected).
  bool Quiet() const {
    for (const auto& [s, stream] : streams) {
      if (stream.in_flight && !stream.disconnected) return false;
    }
    return true;
  }
  // Sends "stop" to every connected sender and waits until each was handed
  // to the network.
  void SendStop() {
    for (auto& [s, stream] : streams) {
      if (!stream.disconnected) {
        side_->engine->Send(stream.peer, "stop").Wait().IgnoreError();
      }
    }
  }

  // Fills / checks every byte of the destination blocks of `stream`.
  void FillBlocks(uint32_t stream, uint8_t byte) {
    ForEachTile(stream, [&](uint8_t* tile, uint64_t n) {
      std::memset(tile, byte, n);
      return true;
    });
  }
  bool BlocksAre(uint32_t stream, uint8_t byte) {
    return ForEachTile(stream, [&](uint8_t* tile, uint64_t n) {
      for (uint64_t i = 0; i < n; ++i) {
        if (tile[i] != byte) return false;
      }
      return true;
    });
  }

  uint64_t TotalFinished() const {
    uint64_t n = 0;
    for (const auto& [s, stream] : streams) n += stream.finished;
    return n;
  }

  std::map<uint32_t, Stream> streams;
  uint64_t unknown_requests = 0;  // finished or failed ids of no stream
  // Notifications that are not the protocol's, for the caller.
  std::vector<Notification> messages;

 private:
  template <typename Visit>
  bool ForEachTile(uint32_t stream, Visit visit) {
    const KvLayout& layout = side_->layout;
    const BlockList blocks = StreamDstBlocks(stream);
    for (uint32_t l = 0; l < layout.geometry().num_layers; ++l)
      for (KvPart part : {KvPart::kKey, KvPart::kValue})
        for (uint64_t b = 0; b < blocks.num_blocks(); ++b) {
          const ByteAddress at = layout.TileAddress(l, part, blocks.BlockAt(b));
          if (!visit(side_->data + at.offset, layout.tile_bytes())) {
            return false;
          }
        }
    return true;
  }

  const std::vector<uint8_t>& Replica(uint64_t seed) {
    std::vector<uint8_t>& r = replicas_[seed];
    if (r.empty()) {
      r.resize(sender_layout_.total_bytes());
      FillRandom(r.data(), r.size(), seed);
    }
    return r;
  }

  void OnFinished(const std::string& id) {
    uint32_t s = 0;
    uint64_t index = 0;
    if (!ParseStreamRequestId(id, &s, &index) || !streams.contains(s)) {
      ++unknown_requests;
      return;
    }
    Stream& stream = streams[s];
    const bool exact =
        stream.in_flight && index == stream.next &&
        kv_fixture::SameKv(sender_layout_, Replica(stream.seed).data(),
                           StreamSrcBlocks(index), side_->layout, side_->data,
                           StreamDstBlocks(s), kStreamTokens, 0, kStreamLayers,
                           0, side_->layout.geometry().kv_heads);
    stream.in_flight = false;
    if (!exact) {
      ++stream.mismatched;
      return;
    }
    ++stream.finished;
    stream.bytes_verified += kStreamTokens * side_->layout.bytes_per_token();
    // Zeroed, so that the next request must bring its own bytes.
    FillBlocks(s, 0);
    stream.next = index + 1;
    if (going_) stream.due = std::max(absl::Now(), last_go_[s] + interval_);
    last_go_[s] = std::max(absl::Now(), last_go_[s] + interval_);
  }

  void OnFailed(KvFailed failed) {
    uint32_t s = 0;
    uint64_t index = 0;
    if (!ParseStreamRequestId(failed.request_id, &s, &index) ||
        !streams.contains(s)) {
      ++unknown_requests;
      return;
    }
    Stream& stream = streams[s];
    stream.in_flight = false;
    stream.first_failure = std::min(stream.first_failure, absl::Now());
    stream.failed.push_back(std::move(failed));
  }

  void OnOther(const Notification& n) {
    std::vector<std::string> words = absl::StrSplit(n.bytes, ' ');
    uint32_t s = 0;
    uint64_t seed = 0;
    if (n.kind == Notification::Kind::kMessage && words.size() == 3 &&
        words[0] == "hello" && absl::SimpleAtoi(words[1], &s) &&
        absl::SimpleAtoi(words[2], &seed)) {
      Stream& stream = streams[s];
      stream.peer = n.peer;
      stream.seed = seed;
      stream.due = absl::Now();
      return;
    }
    if (n.kind == Notification::Kind::kPeerDisconnected) {
      for (auto& [id, stream] : streams) {
        if (stream.peer == n.peer && !stream.disconnected) {
          // Its unfinished requests failed in the same Poll (KvTransfer
          // acts on the disconnection before returning it).
          stream.disconnected = true;
          stream.disconnected_at = absl::Now();
          stream.in_flight = false;
        }
      }
      return;
    }
    messages.push_back(n);
  }

  kv_fixture::Side* side_;
  absl::Duration interval_;
  KvLayout sender_layout_;
  bool going_ = true;
  std::map<uint64_t, std::vector<uint8_t>> replicas_;
  std::map<uint32_t, absl::Time> last_go_;
};

// A sender's KvTransfer on its own engine, with a pool of the sender
// layout holding FillRandom(seed), connected to the receiver at `address`
// (when given; ConnectTo adds more) whose pool it declares. Exits the
// process (1) on an error: for hidden child test cases, which must not
// assert.
struct StreamSenderSide {
  std::unique_ptr<TransferEngine> engine;
  std::unique_ptr<KvTransfer> kv;
  KvLayout layout = *KvLayout::Create(kv_fixture::kPrefillSpec);
  AllocatedRegion pool;
  PeerId peer = 0;
  RegionId peer_region = 0;

  StreamSenderSide(const TransferEngineOptions& options,
                   const std::string& address, uint64_t seed) {
    auto created = TransferEngine::Create(options);
    if (!created.ok()) Exit(created.status().ToString());
    engine = *std::move(created);
    auto region = engine->AllocateMemory(layout.total_bytes());
    if (!region.ok()) Exit(region.status().ToString());
    pool = *region;
    FillRandom(static_cast<uint8_t*>(pool.data), pool.length, seed);
    auto made = KvTransfer::Create(engine.get(), layout, {pool.id});
    if (!made.ok()) Exit(made.status().ToString());
    kv = *std::move(made);
    if (address.empty()) return;
    peer = ConnectTo(address);
    peer_region = engine->GetPeer(peer)->regions.at(0).id;
  }

  // Connects to the receiver at `address` and declares its pool.
  PeerId ConnectTo(const std::string& address) {
    auto connected = engine->Connect(address);
    if (!connected.ok()) Exit(connected.status().ToString());
    const absl::Status declared =
        kv->AddPeerPool(*connected, *KvLayout::Create(kv_fixture::kDecodeSpec),
                        {engine->GetPeer(*connected)->regions.at(0).id});
    if (!declared.ok()) Exit(declared.ToString());
    return *connected;
  }

  [[noreturn]] static void Exit(const std::string& why) {
    std::fprintf(stderr, "stream child: %s\n", why.c_str());
    _exit(1);
  }
};

// The body of a hidden child test case: stream FLOWKV_STREAM_ID to the
// receiver at FLOWKV_STREAM_ADDRESS until "stop", then write
// "sent <requests> <pieces ok> <pieces failed>" to the parent and wait for
// it to go away.
inline void RunStreamSenderChild() {
  const char* address = std::getenv("FLOWKV_STREAM_ADDRESS");
  const char* id = std::getenv("FLOWKV_STREAM_ID");
  uint32_t stream = 0;
  if (address == nullptr || id == nullptr || !absl::SimpleAtoi(id, &stream)) {
    return;
  }
  setenv("UCX_NET_DEVICES", "lo", 1);
  StreamSenderSide side(KvEngineOptions(absl::StrCat("sender-", stream)),
                        address, StreamSeed(stream));
  StreamSender sender(side.engine.get(), side.kv.get(), side.peer, stream,
                      StreamSeed(stream));
  if (!sender.Hello().ok()) StreamSenderSide::Exit("hello");
  for (;;) {
    KvPollResult r = side.kv->Poll(absl::Milliseconds(100));
    for (Notification& n : r.other) {
      uint64_t index = 0;
      if (n.kind == Notification::Kind::kPeerDisconnected) {
        StreamSenderSide::Exit("receiver disconnected: " + n.bytes);
      }
      if (ParseStreamMessage(n.bytes, "go", &index)) sender.Go(index);
      if (n.bytes == "stop") {
        sender.Settle();
        WriteParentLine(absl::StrCat("sent ", sender.requests_posted, " ",
                                     sender.pieces_ok, " ",
                                     sender.pieces_failed));
        WaitForParentThenExit();
      }
    }
  }
}

// The body of a hidden child test case: a receiver (the receiver layout's
// pool) listening on 127.0.0.1 that writes "listen <address>" to the
// parent, serves streams until a "stop" message, then writes
// "received <finished> <bytes verified> <mismatched> <failed> <disconnected>"
// and waits for the parent to go away. Runs when FLOWKV_STREAM_RECEIVER is
// set; FLOWKV_STREAM_INTERVAL_MS paces its "go"s (default 0).
inline void RunStreamReceiverChild() {
  if (std::getenv("FLOWKV_STREAM_RECEIVER") == nullptr) return;
  uint64_t interval_ms = 0;
  if (const char* text = std::getenv("FLOWKV_STREAM_INTERVAL_MS")) {
    if (!absl::SimpleAtoi(text, &interval_ms)) return;
  }
  kv_fixture::Side side("receiver", kv_fixture::kDecodeSpec);
  std::memset(side.data, 0, side.layout.total_bytes());
  auto address = side.engine->Listen("127.0.0.1:0");
  if (!address.ok()) StreamSenderSide::Exit(address.status().ToString());
  if (!WriteParentLine("listen " + *address)) StreamSenderSide::Exit("write");
  StreamReceiver receiver(&side, absl::Milliseconds(interval_ms));
  for (;;) {
    receiver.Poll(absl::Milliseconds(100));
    for (const Notification& n : receiver.messages) {
      if (n.bytes != "stop") continue;
      uint64_t finished = 0, bytes = 0, mismatched = 0, failed = 0, gone = 0;
      for (const auto& [s, stream] : receiver.streams) {
        finished += stream.finished;
        bytes += stream.bytes_verified;
        mismatched += stream.mismatched;
        failed += stream.failed.size();
        gone += stream.disconnected ? 1 : 0;
      }
      WriteParentLine(absl::StrCat("received ", finished, " ", bytes, " ",
                                   mismatched, " ", failed, " ", gone));
      WaitForParentThenExit();
    }
    receiver.messages.clear();
  }
}

}  // namespace flowkv::testing

#endif  // FLOWKV_TESTS_SUPPORT_KV_STREAM_H_
