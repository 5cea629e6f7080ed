// SPDX-License-Identifier: Apache-2.0
// Spawning and stopping node processes (see process.h).

#include "tools/cluster/process.h"

#include <algorithm>
#include <csignal>
#include <cstring>
#include <poll.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"

namespace flowkv::cluster {

absl::StatusOr<pid_t> SpawnSelf(const std::vector<std::string>& args) {
  char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) return absl::InternalError("cannot read /proc/self/exe");
  self[n] = '\0';
  std::vector<std::string> storage = {self};
  storage.insert(storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& s : storage) argv.push_back(s.data());
  argv.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);  // the parent died before prctl
    execv(self, argv.data());
    _exit(127);
  }
  return pid;
}

int PinCore(uint32_t i) {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return -1;
  std::vector<int> cores;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &set)) cores.push_back(c);
  }
  return cores.empty() ? -1 : cores[i % cores.size()];
}

void StopChildren(const std::vector<pid_t>& pids, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  for (pid_t pid : pids) {
    // Wait for the exit on a pidfd (readable once the child exits), up to
    // the deadline; then SIGKILL. Either way, reap it.
    const int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
    if (fd >= 0) {
      pollfd p{fd, POLLIN, 0};
      const int64_t ms = std::max<int64_t>(
          0, absl::ToInt64Milliseconds(deadline - absl::Now()));
      if (poll(&p, 1, static_cast<int>(ms)) <= 0) kill(pid, SIGKILL);
      close(fd);
    } else if (waitpid(pid, nullptr, WNOHANG) == 0) {
      kill(pid, SIGKILL);  // no pidfd (old kernel): do not wait
    }
    int status;
    waitpid(pid, &status, 0);
  }
}

}  // namespace flowkv::cluster
