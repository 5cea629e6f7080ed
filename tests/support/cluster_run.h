// SPDX-License-Identifier: Apache-2.0
// The tests' one way to run a whole flowkv-cluster (router + node processes)
// and read its --json summary: RunClusterProcess spawns the binary with the
// given arguments, waits for it, and returns its exit code and the JSON it
// wrote; JsonField reads one top-level field. Catch2 assertions: use from a
// test's main thread only.
#ifndef FLOWKV_TESTS_SUPPORT_CLUSTER_RUN_H_
#define FLOWKV_TESTS_SUPPORT_CLUSTER_RUN_H_

#include <cstdio>
#include <fstream>
#include <regex>
#include <spawn.h>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <vector>

#include <catch2/catch.hpp>

extern char** environ;

namespace flowkv::testing {

struct ClusterRun {
  int exit_code = -1;  // -1: killed by a signal
  std::string json;
};

// Runs args[0] with `args` (which must include --json=<json_path>), waits for
// it, returns its exit code and the file's text (then removes the file).
inline ClusterRun RunClusterProcess(std::vector<std::string> args,
                                    const std::string& json_path) {
  std::remove(json_path.c_str());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid;
  REQUIRE(posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) ==
          0);
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  ClusterRun run;
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream in(json_path);
  std::stringstream text;
  text << in.rdbuf();
  run.json = text.str();
  std::remove(json_path.c_str());
  return run;
}

// The value of a top-level "field" of the summary, as text: a number,
// true/false, or a list of integers; "<missing>" when absent.
inline std::string JsonField(const std::string& json,
                             const std::string& field) {
  std::smatch m;
  const std::regex re("\"" + field + "\": ([-0-9.a-z]+|\\[[0-9, ]*\\])");
  if (!std::regex_search(json, m, re)) return "<missing>";
  return m[1];
}

}  // namespace flowkv::testing

#endif  // FLOWKV_TESTS_SUPPORT_CLUSTER_RUN_H_
