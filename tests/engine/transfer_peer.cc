// SPDX-License-Identifier: Apache-2.0
// transfer_peer: the remote side of transfer_engine_process_test.
//
//   transfer_peer --token T | --token_hex HEX  --pool_bytes N [--heartbeat]
//                 [--listen IP:PORT] [--net_devices DEVICES]
//
// --token_hex gives the token as hex, for tokens with NUL bytes.
// Creates a TransferEngine (UCX transports from the environment, network
// devices from --net_devices, default lo), allocates one pool of N bytes
// (region 0), listens on --listen (default 127.0.0.1:0, a free port) and
// prints, one per line on stdout:
//   LISTEN <ip:port>
//   METADATA <LocalMetadata() in hex>
// Then it serves messages (TransferEngine::Send) from its peers:
//   "fill <seed>"          fill the pool with mt19937_64(seed) bytes ->
//   "filled" "hash <off> <len>"     -> "hash <FNV-1a 64 of those bytes>" "exit"
//   -> exits 0
//   "stats"                -> "stats <peers_tracked> <peers_connected>"
//                          (its engine's Stats())
//   "flood <n>"            write the pool into the asker's region 0 over and
//                          over (notifications "flood <i>"); with n > 0 exit
//                          with the (n+1)th write in flight
// and answers every transfer notification <x> with "got <x> <hash of the
// whole pool when the notification arrived>".

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fmt/format.h>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "flowkv/transfer_engine.h"
#include "tests/support/transfer_test_util.h"

namespace {

using flowkv::testing::FillRandom;
using flowkv::testing::Fnv1a;

int Fail(const std::string& what) {
  fmt::print(stderr, "transfer_peer: {}\n", what);
  return 1;
}

// Writes the pool into the first region of `peer`, over and over, each
// write with the notification "flood <i>". After `exit_after` writes (0:
// never) it posts one more and returns at once: the engine is destroyed
// with that write in flight.
int Flood(flowkv::TransferEngine* engine, flowkv::PeerId peer,
          flowkv::RegionId region, uint64_t pool_bytes, uint64_t exit_after) {
  absl::StatusOr<flowkv::PeerInfo> info = engine->GetPeer(peer);
  if (!info.ok() || info->regions.empty()) return Fail("flood: no region");
  const flowkv::TransferOp op{region, 0, info->regions[0].id, 0,
                              std::min(pool_bytes, info->regions[0].length)};
  for (uint64_t i = 1;; ++i) {
    flowkv::TransferOptions options;
    options.notification = fmt::format("flood {}", i);
    flowkv::TransferHandle write = engine->Write(peer, {&op, 1}, options);
    if (exit_after != 0 && i > exit_after) return 0;
    if (absl::Status s = write.Wait(); !s.ok()) return Fail(s.ToString());
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string token;
  uint64_t pool_bytes = 1 << 20;
  bool heartbeat = false;
  std::string listen = "127.0.0.1:0";
  std::string net_devices = "lo";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--token" && i + 1 < argc) {
      token = argv[++i];
    } else if (arg == "--token_hex" && i + 1 < argc) {
      const std::string hex = argv[++i];
      if (hex.size() % 2 != 0) return Fail("bad --token_hex");
      token.clear();
      for (size_t k = 0; k < hex.size(); k += 2) {
        char* end = nullptr;
        const std::string digits = hex.substr(k, 2);
        const long byte = std::strtol(digits.c_str(), &end, 16);
        if (end != digits.c_str() + 2) return Fail("bad --token_hex");
        token.push_back(static_cast<char>(byte));
      }
    } else if (arg == "--pool_bytes" && i + 1 < argc) {
      if (!absl::SimpleAtoi(argv[++i], &pool_bytes) || pool_bytes == 0) {
        return Fail("bad --pool_bytes");
      }
    } else if (arg == "--listen" && i + 1 < argc) {
      listen = argv[++i];
    } else if (arg == "--net_devices" && i + 1 < argc) {
      net_devices = argv[++i];
    } else if (arg == "--heartbeat") {
      heartbeat = true;
    } else {
      return Fail("unknown argument " + arg);
    }
  }
  setenv("UCX_NET_DEVICES", net_devices.c_str(), 1);
  flowkv::TransferEngineOptions options;
  options.name = "transfer_peer";
  options.cluster_token = token;
  options.ucx_peer_error_handling = !heartbeat;
  options.peer_failure_timeout = flowkv::testing::kPeerFailureTimeout;
  auto engine = flowkv::TransferEngine::Create(options);
  if (!engine.ok()) return Fail(engine.status().ToString());
  auto pool = (*engine)->AllocateMemory(pool_bytes);
  if (!pool.ok()) return Fail(pool.status().ToString());
  auto* base = static_cast<uint8_t*>(pool->data);
  std::memset(base, 0, pool_bytes);
  auto address = (*engine)->Listen(listen);
  if (!address.ok()) return Fail(address.status().ToString());
  auto metadata = (*engine)->LocalMetadata();
  if (!metadata.ok()) return Fail(metadata.status().ToString());
  std::string hex;
  for (unsigned char c : *metadata) hex += fmt::format("{:02x}", c);
  fmt::print("LISTEN {}\nMETADATA {}\n", *address, hex);
  std::fflush(stdout);

  for (;;) {
    for (flowkv::Notification& n :
         (*engine)->TakeNotifications(absl::Seconds(1))) {
      std::string reply;
      if (n.kind == flowkv::Notification::Kind::kPeerDisconnected) continue;
      if (n.kind == flowkv::Notification::Kind::kTransfer) {
        reply = fmt::format("got {} {}", n.bytes, Fnv1a(base, pool_bytes));
      } else {
        std::vector<std::string> words = absl::StrSplit(n.bytes, ' ');
        uint64_t a = 0;
        uint64_t b = 0;
        if (words[0] == "exit") return 0;
        if (words[0] == "stats") {
          const flowkv::TransferEngineStats stats = (*engine)->Stats();
          reply = fmt::format("stats {} {}", stats.peers_tracked,
                              stats.peers_connected);
        } else if (words[0] == "fill" && words.size() == 2 &&
                   absl::SimpleAtoi(words[1], &a)) {
          FillRandom(base, pool_bytes, a);
          reply = "filled";
        } else if (words[0] == "hash" && words.size() == 3 &&
                   absl::SimpleAtoi(words[1], &a) &&
                   absl::SimpleAtoi(words[2], &b) && a <= pool_bytes &&
                   b <= pool_bytes - a) {
          reply = fmt::format("hash {}", Fnv1a(base + a, b));
        } else if (words[0] == "flood" && words.size() == 2 &&
                   absl::SimpleAtoi(words[1], &a)) {
          return Flood(engine->get(), n.peer, pool->id, pool_bytes, a);
        } else {
          reply = "error: " + n.bytes;
        }
      }
      // Fire and forget: a failed reply shows up on the test's side.
      (*engine)->Send(n.peer, reply);
    }
  }
}
