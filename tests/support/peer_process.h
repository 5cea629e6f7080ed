// SPDX-License-Identifier: Apache-2.0
// Helpers for tests that run a TransferEngine against a peer process
// (build/bin/transfer_peer, tests/engine/transfer_peer.cc): starting and
// killing it, waiting for its replies, writing its pool byte-exact, and random
// block lists. Catch2 assertions: use from a test's main thread only.
#ifndef FLOWKV_TESTS_SUPPORT_PEER_PROCESS_H_
#define FLOWKV_TESTS_SUPPORT_PEER_PROCESS_H_

#include <algorithm>
#include <climits>
#include <cstdio>
#include <memory>
#include <random>
#include <signal.h>
#include <spawn.h>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "flowkv/block_list.h"
#include "flowkv/transfer_engine.h"
#include "tests/support/engine_pair.h"
#include "tests/support/transfer_test_util.h"

extern char** environ;

namespace flowkv::testing {

// How to start a transfer_peer (tests/engine/transfer_peer.cc has the flags).
struct PeerProcessOptions {
  std::string token = "secret";
  uint64_t pool_bytes = 4096;
  std::string listen = "127.0.0.1:0";
  std::string net_devices = "lo";
  // Runs the peer through this command, e.g. {"ip", "netns", "exec", ns}.
  std::vector<std::string> prefix;
};

// A running transfer_peer; killed (SIGKILL) and reaped on destruction.
class PeerProcess {
 public:
  PeerProcess(const std::string& token, uint64_t pool_bytes)
      : PeerProcess(WithPool(token, pool_bytes)) {}
  explicit PeerProcess(const PeerProcessOptions& options) {
    char self[PATH_MAX] = {0};
    const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    REQUIRE(n > 0);
    std::string path(self, n);
    path = path.substr(0, path.rfind('/')) + "/transfer_peer";
    REQUIRE(access(path.c_str(), X_OK) == 0);
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, fds[0]);
    posix_spawn_file_actions_addclose(&actions, fds[1]);
    const std::string bytes = std::to_string(options.pool_bytes);
    std::vector<std::string> args = options.prefix;
    args.push_back(path);
    // As hex: a token may hold NUL bytes, which argv cannot carry.
    std::string token_hex;
    for (unsigned char c : options.token) {
      static constexpr char kDigits[] = "0123456789abcdef";
      token_hex += kDigits[c >> 4];
      token_hex += kDigits[c & 0xf];
    }
    args.insert(args.end(),
                {"--token_hex", token_hex, "--pool_bytes", bytes, "--listen",
                 options.listen, "--net_devices", options.net_devices});
    if (SharedMemoryMode()) args.push_back("--heartbeat");
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int rc =
        posix_spawnp(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    close(fds[1]);
    REQUIRE(rc == 0);
    out_ = fdopen(fds[0], "r");
    REQUIRE(out_ != nullptr);
    char line[1 << 16];
    while ((address_.empty() || metadata_.empty()) &&
           std::fgets(line, sizeof(line), out_) != nullptr) {
      std::string text(line);
      while (!text.empty() && text.back() == '\n') text.pop_back();
      if (text.rfind("LISTEN ", 0) == 0) address_ = text.substr(7);
      if (text.rfind("METADATA ", 0) == 0) {
        const std::string hex = text.substr(9);
        for (size_t i = 0; i + 1 < hex.size(); i += 2) {
          metadata_.push_back(
              static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
        }
      }
    }
    REQUIRE(!address_.empty());
    REQUIRE(!metadata_.empty());
  }
  ~PeerProcess() {
    Kill(SIGKILL);
    if (out_ != nullptr) std::fclose(out_);
  }
  // Sends `signal` and returns once it took effect: SIGKILL reaps the
  // process, SIGSTOP waits until it stopped, SIGCONT until it runs again
  // (kill() alone returns before).
  void Kill(int signal) {
    if (pid_ <= 0) return;
    kill(pid_, signal);
    if (signal == SIGKILL) {
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
    } else if (signal == SIGSTOP) {
      waitpid(pid_, nullptr, WUNTRACED);
    } else if (signal == SIGCONT) {
      waitpid(pid_, nullptr, WCONTINUED);
    }
  }
  const std::string& address() const { return address_; }
  const std::string& metadata() const { return metadata_; }

 private:
  static PeerProcessOptions WithPool(const std::string& token,
                                     uint64_t pool_bytes) {
    PeerProcessOptions options;
    options.token = token;
    options.pool_bytes = pool_bytes;
    return options;
  }

  pid_t pid_ = -1;
  FILE* out_ = nullptr;
  std::string address_;
  std::string metadata_;
};

// Waits for a message from `peer` starting with `prefix`; other messages
// are kept for later calls.
class Replies {
 public:
  explicit Replies(TransferEngine* engine) : engine_(engine) {}
  std::string Expect(const std::string& prefix) {
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (absl::Now() < deadline) {
      for (auto it = pending_.begin(); it != pending_.end(); ++it) {
        if (it->rfind(prefix, 0) == 0) {
          std::string found = *it;
          pending_.erase(it);
          return found;
        }
      }
      for (Notification& n : engine_->TakeNotifications(absl::Seconds(1))) {
        pending_.push_back(std::move(n.bytes));
      }
    }
    FAIL("no reply starting with \"" << prefix << "\"");
    return {};
  }

 private:
  TransferEngine* engine_;
  std::vector<std::string> pending_;
};

// Writes the whole pool (filled from `seed`) to `peer` with a notification
// and checks the peer's answer: the hash of its pool when the notification
// arrived equals the local one.
inline void WriteByteExact(TransferEngine& engine, Replies& replies,
                           PeerId peer, const AllocatedRegion& local,
                           uint64_t seed) {
  auto* bytes = static_cast<uint8_t*>(local.data);
  FillRandom(bytes, local.length, seed);
  const TransferOp op{local.id, 0, engine.GetPeer(peer)->regions.at(0).id, 0,
                      local.length};
  TransferOptions options;
  options.notification = absl::StrCat("seed-", seed);
  options.acknowledged = true;
  const absl::Status written = engine.Write(peer, {&op, 1}, options).Wait();
  INFO(written.ToString());
  REQUIRE(written.ok());
  CHECK(replies.Expect(absl::StrCat("got seed-", seed, " ")) ==
        absl::StrCat("got seed-", seed, " ", Fnv1a(bytes, local.length)));
}

inline BlockList RandomBlocks(uint32_t n, uint32_t num_blocks,
                              std::mt19937_64* rng) {
  std::vector<BlockId> ids(num_blocks);
  for (uint32_t i = 0; i < num_blocks; ++i) ids[i] = i;
  std::shuffle(ids.begin(), ids.end(), *rng);
  ids.resize(n);
  for (uint32_t i = 0; i < n; i += 4) {
    std::sort(ids.begin() + i, ids.begin() + std::min(n, i + 4));
  }
  return BlockList::FromIds(ids);
}

// An engine with a pool connected to a fresh peer process whose pool has
// the same size.
struct ProcessLink {
  std::unique_ptr<PeerProcess> process;
  std::unique_ptr<TransferEngine> engine;
  AllocatedRegion local;
  PeerId peer = 0;
  RegionId remote = 0;  // the peer process's pool
  // One op from the whole local pool to the whole remote pool.
  TransferOp Whole() const { return {local.id, 0, remote, 0, local.length}; }
};

// Starts a peer process with token "secret" and a pool of `bytes`, gives
// `engine` a pool of `bytes` and connects it (Connect, or AddPeer with the
// process's metadata).
inline void LinkToProcess(uint64_t bytes,
                          std::unique_ptr<TransferEngine> engine,
                          bool via_metadata, ProcessLink* link) {
  link->process = std::make_unique<PeerProcess>("secret", bytes);
  link->engine = std::move(engine);
  auto local = link->engine->AllocateMemory(bytes);
  REQUIRE(local.ok());
  link->local = *local;
  auto peer = via_metadata ? link->engine->AddPeer(link->process->metadata())
                           : link->engine->Connect(link->process->address());
  INFO(peer.status().ToString());
  REQUIRE(peer.ok());
  link->peer = *peer;
  link->remote = link->engine->GetPeer(*peer)->regions[0].id;
}

}  // namespace flowkv::testing

#endif  // FLOWKV_TESTS_SUPPORT_PEER_PROCESS_H_
