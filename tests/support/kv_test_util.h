// SPDX-License-Identifier: Apache-2.0
// Helpers shared by the KvTransfer tests (kv_transfer_test.cc,
// kv_pool_exchange_test.cc): engines on loopback, the results Poll reported,
// condition waits with deadlines, and a second process that runs a hidden
// test case of the same binary.
#ifndef FLOWKV_TESTS_SUPPORT_KV_TEST_UTIL_H_
#define FLOWKV_TESTS_SUPPORT_KV_TEST_UTIL_H_

#include <algorithm>
#include <climits>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/time/time.h"
#include "flowkv/kv_transfer.h"
#include "flowkv/transfer_engine.h"
#include "tests/support/transfer_test_util.h"

extern char** environ;

namespace flowkv::testing {

// Peer failure detection of every engine of the KvTransfer tests; the waits
// for a dead peer derive from it.
inline constexpr absl::Duration kKvPeerFailureTimeout = absl::Seconds(2);
// Bound on anything that should happen "soon" (a notice crossing loopback).
inline constexpr absl::Duration kKvSoon = absl::Seconds(20);

inline TransferEngineOptions KvEngineOptions(const std::string& name) {
  TransferEngineOptions options;
  options.name = name;
  options.cluster_token = "kv-test";
  // Shared-memory transports need the engine's heartbeats instead of UCX's
  // peer error handling (see TransferEngineOptions).
  options.ucx_peer_error_handling = !SharedMemoryMode();
  options.peer_failure_timeout = kKvPeerFailureTimeout;
  return options;
}

inline std::unique_ptr<TransferEngine> MakeKvEngine(const std::string& name) {
  setenv("UCX_NET_DEVICES", "lo", 1);
  auto engine = TransferEngine::Create(KvEngineOptions(name));
  REQUIRE(engine.ok());
  return *std::move(engine);
}

// Everything Poll reported, accumulated.
struct Seen {
  std::vector<KvFinished> finished;
  std::vector<KvFailed> failed;
  std::vector<KvReleased> released;
  std::vector<Notification> other;

  void Add(KvPollResult r) {
    for (auto& f : r.finished) finished.push_back(std::move(f));
    for (auto& f : r.failed) failed.push_back(std::move(f));
    for (auto& f : r.released) released.push_back(std::move(f));
    for (auto& n : r.other) other.push_back(std::move(n));
  }
  int Finished(const std::string& id) const {
    return static_cast<int>(
        std::count_if(finished.begin(), finished.end(),
                      [&](const KvFinished& f) { return f.request_id == id; }));
  }
  const KvFailed* Failed(const std::string& id) const {
    for (const KvFailed& f : failed) {
      if (f.request_id == id) return &f;
    }
    return nullptr;
  }
  const KvReleased* Released(const std::string& id) const {
    for (const KvReleased& r : released) {
      if (r.request_id == id) return &r;
    }
    return nullptr;
  }
  bool Other(Notification::Kind kind, const std::string& bytes = "") const {
    return std::any_of(other.begin(), other.end(), [&](const Notification& n) {
      return n.kind == kind && (bytes.empty() || n.bytes == bytes);
    });
  }
};

// Polls `kv` into `seen` until `done(seen)` or `timeout`; returns done.
template <typename Done>
bool PollUntil(KvTransfer& kv, Seen& seen, absl::Duration timeout, Done done) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!done(seen)) {
    if (absl::Now() > deadline) return false;
    seen.Add(kv.Poll(absl::Milliseconds(10)));
  }
  return true;
}

// Writes a bare notification (no data) from `engine` to `peer`.
inline absl::Status WriteNotice(TransferEngine& engine, PeerId peer,
                                std::string bytes) {
  TransferOptions options;
  options.notification = std::move(bytes);
  return engine.Write(peer, {}, std::move(options)).Wait();
}

// This test binary started again as a second process that runs the hidden
// test case `test_case` with `env` added to the environment (through the
// command `prefix` when given, e.g. {"ip", "netns", "exec", ns}). The child
// writes lines to fd 3 (ReadLine) and holds its stdin: EOF there (the parent
// going away) is its cue to exit. The destructor kills it (SIGKILL) and
// reaps it.
class ChildProcess {
 public:
  ChildProcess(const std::string& test_case, std::vector<std::string> env,
               std::vector<std::string> prefix = {}) {
    char self[PATH_MAX] = {0};
    const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    REQUIRE(n > 0);
    int lines[2];
    int hold[2];
    REQUIRE(pipe2(lines, O_CLOEXEC) == 0);
    REQUIRE(pipe2(hold, O_CLOEXEC) == 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, lines[1], 3);
    posix_spawn_file_actions_adddup2(&actions, hold[0], STDIN_FILENO);
    std::string path(self, n);
    std::string name = test_case;
    std::vector<char*> argv;
    for (std::string& word : prefix) argv.push_back(word.data());
    argv.push_back(path.data());
    argv.push_back(name.data());
    argv.push_back(nullptr);
    for (char** e = environ; *e != nullptr; ++e) env.push_back(*e);
    std::vector<char*> envp;
    for (std::string& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    const int rc = posix_spawnp(&pid_, argv[0], &actions, nullptr, argv.data(),
                                envp.data());
    posix_spawn_file_actions_destroy(&actions);
    close(lines[1]);
    close(hold[0]);
    lines_fd_ = lines[0];
    hold_fd_ = hold[1];
    REQUIRE(rc == 0);
  }
  ~ChildProcess() {
    Kill();
    close(lines_fd_);
    close(hold_fd_);
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // The child's next line (without '\n'); empty when none came within
  // `timeout` or the child closed fd 3.
  std::string ReadLine(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (true) {
      const size_t end = buffer_.find('\n');
      if (end != std::string::npos) {
        std::string line = buffer_.substr(0, end);
        buffer_.erase(0, end + 1);
        return line;
      }
      const int64_t left = absl::ToInt64Milliseconds(deadline - absl::Now());
      pollfd p = {.fd = lines_fd_, .events = POLLIN, .revents = 0};
      if (left <= 0 || poll(&p, 1, static_cast<int>(left)) != 1) return "";
      char chunk[256];
      const ssize_t got = read(lines_fd_, chunk, sizeof(chunk));
      if (got <= 0) return "";
      buffer_.append(chunk, got);
    }
  }

  // Wakes a child blocked in WaitForParentByte (one byte on its stdin).
  bool Continue() { return write(hold_fd_, "c", 1) == 1; }

  // Whether the child has ended (reaped without blocking); `*signal` is the
  // signal that ended it (0 when it exited), `*exit_code` its exit status.
  bool Ended(int* signal = nullptr, int* exit_code = nullptr) {
    if (pid_ <= 0) return true;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) != pid_) return false;
    pid_ = -1;
    if (signal != nullptr) *signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    if (exit_code != nullptr) {
      *exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    return true;
  }

  // Blocks until the child exits; its exit status (-1 when a signal ended
  // it or it was reaped before).
  int WaitForExit() {
    if (pid_ <= 0) return -1;
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  void Kill() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
  int lines_fd_ = -1;
  int hold_fd_ = -1;
  std::string buffer_;
};

// The child side of ChildProcess: writes `line` and '\n' to fd 3.
inline bool WriteParentLine(std::string line) {
  line.push_back('\n');
  return write(3, line.data(), line.size()) ==
         static_cast<ssize_t>(line.size());
}

// The child side of ChildProcess: blocks until the parent calls Continue()
// (true) or goes away (false).
inline bool WaitForParentByte() {
  char byte;
  return read(STDIN_FILENO, &byte, 1) == 1;
}

// The child side of ChildProcess: blocks until the parent goes away (or
// kills it), then exits.
[[noreturn]] inline void WaitForParentThenExit() {
  char byte;
  while (read(STDIN_FILENO, &byte, 1) > 0) {
  }
  _exit(0);
}

}  // namespace flowkv::testing

#endif  // FLOWKV_TESTS_SUPPORT_KV_TEST_UTIL_H_
