// SPDX-License-Identifier: Apache-2.0
// CudaPeerProcess: a running tests/cuda/cuda_pool_peer
// (build/bin/cuda_pool_peer) that exports a CUDA pool, for the two-process CUDA
// pool tests and benchmarks. No Catch2 here: failures come back as
// absl::Status.
#ifndef FLOWKV_TESTS_SUPPORT_CUDA_PEER_PROCESS_H_
#define FLOWKV_TESTS_SUPPORT_CUDA_PEER_PROCESS_H_

#include <climits>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <signal.h>
#include <spawn.h>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

extern char** environ;

namespace flowkv::testing {

class CudaPeerProcess {
 public:
  // Starts cuda_pool_peer (next to this executable) with `args` and waits
  // for its descriptor line.
  static absl::StatusOr<std::unique_ptr<CudaPeerProcess>> Start(
      const std::vector<std::string>& args) {
    signal(SIGPIPE, SIG_IGN);  // a dead peer's stdin: Ask reports it
    char self[PATH_MAX] = {0};
    const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) return absl::InternalError("readlink /proc/self/exe");
    std::string path(self, n);
    path = path.substr(0, path.rfind('/')) + "/cuda_pool_peer";
    if (access(path.c_str(), X_OK) != 0) {
      return absl::NotFoundError(absl::StrCat(path, " is missing"));
    }
    int to_child[2], from_child[2];
    if (pipe(to_child) != 0 || pipe(from_child) != 0) {
      return absl::InternalError("pipe");
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, to_child[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&actions, from_child[1], STDOUT_FILENO);
    for (int fd : {to_child[0], to_child[1], from_child[0], from_child[1]}) {
      posix_spawn_file_actions_addclose(&actions, fd);
    }
    std::vector<std::string> argv_strings = {path};
    argv_strings.insert(argv_strings.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_strings) argv.push_back(a.data());
    argv.push_back(nullptr);
    auto process = std::unique_ptr<CudaPeerProcess>(new CudaPeerProcess);
    const int rc = posix_spawn(&process->pid_, path.c_str(), &actions, nullptr,
                               argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    close(to_child[0]);
    close(from_child[1]);
    process->in_ = fdopen(to_child[1], "w");
    process->out_ = fdopen(from_child[0], "r");
    if (rc != 0) {
      process->pid_ = -1;
      return absl::InternalError("posix_spawn cuda_pool_peer");
    }
    absl::StatusOr<std::string> line = process->ReadLine();
    if (!line.ok()) return line.status();
    if (line->rfind("DESCRIPTOR ", 0) != 0) {
      return absl::InternalError(absl::StrCat("cuda_pool_peer: ", *line));
    }
    const std::string hex = line->substr(11);
    for (size_t i = 0; i + 1 < hex.size(); i += 2) {
      process->descriptor_.push_back(
          static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
    }
    return process;
  }

  ~CudaPeerProcess() {
    if (in_ != nullptr) std::fclose(in_);
    if (out_ != nullptr) std::fclose(out_);
    Kill();
  }

  const std::string& descriptor() const { return descriptor_; }
  pid_t pid() const { return pid_; }

  // Sends one command line and returns the reply line.
  absl::StatusOr<std::string> Ask(const std::string& command) {
    if (std::fprintf(in_, "%s\n", command.c_str()) < 0 ||
        std::fflush(in_) != 0) {
      return absl::UnavailableError("cuda_pool_peer's stdin is closed");
    }
    return ReadLine();
  }

  // Kills (SIGKILL) and reaps the process.
  void Kill() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  CudaPeerProcess() = default;
  absl::StatusOr<std::string> ReadLine() {
    char line[1 << 16];
    if (std::fgets(line, sizeof(line), out_) == nullptr) {
      return absl::UnavailableError("cuda_pool_peer exited");
    }
    std::string text(line);
    while (!text.empty() && text.back() == '\n') text.pop_back();
    return text;
  }

  pid_t pid_ = -1;
  FILE* in_ = nullptr;
  FILE* out_ = nullptr;
  std::string descriptor_;
};

}  // namespace flowkv::testing

#endif  // FLOWKV_TESTS_SUPPORT_CUDA_PEER_PROCESS_H_
