// SPDX-License-Identifier: Apache-2.0
// EtcdProcess: a real etcd server (Debian etcd-server) for a test, on free
// loopback ports with a temporary data directory; stopped (SIGTERM, then
// SIGKILL) and its directory removed on destruction. EtcdInstalled() says
// whether the binary exists, so tests can skip where it does not.
// Catch2 assertions: use from a test's main thread only.
#ifndef FLOWKV_TESTS_SUPPORT_ETCD_PROCESS_H_
#define FLOWKV_TESTS_SUPPORT_ETCD_PROCESS_H_

#include <arpa/inet.h>
#include <cstdlib>
#include <fcntl.h>
#include <filesystem>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <string>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "tests/support/wait_until.h"
#include "tools/cluster/etcd/etcd_client.h"

extern char** environ;

namespace flowkv::testing {

inline const char* kEtcdBinary = "/usr/bin/etcd";

inline bool EtcdInstalled() { return access(kEtcdBinary, X_OK) == 0; }

// A loopback TCP port nobody listens on right now.
inline int FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  socklen_t len = sizeof(addr);
  REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  close(fd);
  return ntohs(addr.sin_port);
}

class EtcdProcess {
 public:
  // Bound on etcd's start-up (it writes its first snapshot).
  static constexpr absl::Duration kStartBound = absl::Seconds(30);

  EtcdProcess() {
    char dir_template[] = "/tmp/flowkv-etcd-XXXXXX";
    REQUIRE(mkdtemp(dir_template) != nullptr);
    dir_ = dir_template;
    const int client_port = FreeLoopbackPort();
    const int peer_port = FreeLoopbackPort();
    endpoint_ = absl::StrCat("http://127.0.0.1:", client_port);
    const std::string peer = absl::StrCat("http://127.0.0.1:", peer_port);
    std::vector<std::string> args = {kEtcdBinary,
                                     "--name=flowkv-test",
                                     "--data-dir=" + dir_ + "/data",
                                     "--listen-client-urls=" + endpoint_,
                                     "--advertise-client-urls=" + endpoint_,
                                     "--listen-peer-urls=" + peer,
                                     "--initial-advertise-peer-urls=" + peer,
                                     "--initial-cluster=flowkv-test=" + peer,
                                     "--logger=zap",
                                     "--log-outputs=" + dir_ + "/etcd.log"};
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null",
                                     O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null",
                                     O_WRONLY, 0);
    REQUIRE(posix_spawn(&pid_, kEtcdBinary, &actions, nullptr, argv.data(),
                        environ) == 0);
    posix_spawn_file_actions_destroy(&actions);
    auto client = cluster::EtcdClient::Create({.endpoint = endpoint_});
    REQUIRE(client.ok());
    const bool up = WaitUntil(
        [&] { return exited() || (*client)->Get("/flowkv-test/probe").ok(); },
        kStartBound);
    REQUIRE(up);
    REQUIRE_FALSE(exited());
  }

  ~EtcdProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int status = 0;
      if (!WaitUntil([&] { return waitpid(pid_, &status, WNOHANG) == pid_; },
                     kStartBound)) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
      }
    }
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  EtcdProcess(const EtcdProcess&) = delete;
  EtcdProcess& operator=(const EtcdProcess&) = delete;

  const std::string& endpoint() const { return endpoint_; }

 private:
  bool exited() {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) != pid_) return false;
    pid_ = -1;
    return true;
  }

  pid_t pid_ = -1;
  std::string dir_;
  std::string endpoint_;
};

}  // namespace flowkv::testing

#endif  // FLOWKV_TESTS_SUPPORT_ETCD_PROCESS_H_
