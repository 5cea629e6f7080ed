// SPDX-License-Identifier: Apache-2.0
// flowkv-cluster end to end: the real executable, a router and four node
// processes on loopback, KV moved through UCX. A small cluster serves every
// request with exactly the tokens of a colocated run; a decode process, and
// then a prefill process, SIGKILLed while a request is in flight on it has
// its requests retried on the nodes left and every request still finishes
// exactly; the colocated baseline runs too. The tool's JSON is the evidence.
//
// The tool bounds its own waits (node start-up 60 s, a stalled cluster
// 30 s); the test waits for the process to exit (no sleeps).

#include "tests/support/cluster_run.h"

#include <csignal>
#include <cstdio>
#include <fstream>
#include <poll.h>
#include <regex>
#include <spawn.h>
#include <sstream>
#include <string>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include <catch2/catch.hpp>

extern char** environ;

namespace {

using Run = flowkv::testing::ClusterRun;
using flowkv::testing::JsonField;

// A small model and a short synthetic workload: seconds on two cores.
Run RunCluster(const std::string& name, std::vector<std::string> extra) {
  const std::string json_path = "/tmp/flowkv_cluster_test_" +
                                std::to_string(getpid()) + "_" + name + ".json";
  std::vector<std::string> args = {
      FLOWKV_CLUSTER_BIN,   "--prefill=2",       "--decode=2",
      "--requests=30",      "--rate=15",         "--workload=synthetic:120:12",
      "--layers=2",         "--d_model=64",      "--heads=4",
      "--kv_heads=2",       "--max_context=256", "--blocks_per_node=256",
      "--json=" + json_path};
  args.insert(args.end(), extra.begin(), extra.end());
  return flowkv::testing::RunClusterProcess(std::move(args), json_path);
}

TEST_CASE("a small cluster serves every request exactly", "[cluster]") {
  const Run run = RunCluster("exact", {"--policy=least_loaded"});
  REQUIRE(run.exit_code == 0);
  CHECK(JsonField(run.json, "requests_finished") == "30");
  CHECK(JsonField(run.json, "requests_failed") == "0");
  CHECK(JsonField(run.json, "requests_retried") == "0");
  CHECK(JsonField(run.json, "exact") == "true");
  // Disaggregated: KV crossed processes.
  CHECK(std::stoull(JsonField(run.json, "bytes_moved")) > 0);
}

TEST_CASE("prefill and decode pools of different layouts give the same tokens",
          "[cluster]") {
  // SGLang's pool on the prefill side, vLLM's on the decode side: KvTransfer
  // converts between them.
  const Run run = RunCluster(
      "layouts", {"--policy=round_robin", "--prefill_kv_layout=sglang_mha",
                  "--decode_kv_layout=vllm_flash_attn"});
  REQUIRE(run.exit_code == 0);
  CHECK(JsonField(run.json, "requests_finished") == "30");
  CHECK(JsonField(run.json, "exact") == "true");
  CHECK(std::stoull(JsonField(run.json, "bytes_moved")) > 0);
}

TEST_CASE("a killed decode process's requests are retried elsewhere",
          "[cluster]") {
  // Nodes 0, 1 prefill; 2, 3 decode.
  const Run run =
      RunCluster("kill_decode",
                 {"--policy=round_robin", "--kill_node=2", "--kill_after=6"});
  REQUIRE(run.exit_code == 0);
  CHECK(run.json.find("\"killed_nodes\": [2]") != std::string::npos);
  CHECK(JsonField(run.json, "requests_finished") == "30");
  CHECK(JsonField(run.json, "requests_failed") == "0");
  CHECK(std::stoi(JsonField(run.json, "requests_retried")) >= 1);
  CHECK(JsonField(run.json, "exact") == "true");
}

TEST_CASE("a killed prefill process's requests are retried elsewhere",
          "[cluster]") {
  const Run run =
      RunCluster("kill_prefill",
                 {"--policy=round_robin", "--kill_node=0", "--kill_after=6"});
  REQUIRE(run.exit_code == 0);
  CHECK(run.json.find("\"killed_nodes\": [0]") != std::string::npos);
  CHECK(JsonField(run.json, "requests_finished") == "30");
  CHECK(JsonField(run.json, "requests_failed") == "0");
  CHECK(std::stoi(JsonField(run.json, "requests_retried")) >= 1);
  CHECK(JsonField(run.json, "exact") == "true");
}

TEST_CASE("a node's death is found from its control socket", "[cluster]") {
  // The router does not take the node down itself: EOF on the socket (the
  // kernel closes it when the process dies) is how it learns. Whether a
  // request was still in flight by then is a race, so only the outcome is
  // checked: the node is gone and every request finished exactly.
  const Run run =
      RunCluster("kill_eof", {"--policy=round_robin", "--kill_node=3",
                              "--kill_after=6", "--kill_found_by_eof"});
  REQUIRE(run.exit_code == 0);
  CHECK(run.json.find("\"killed_nodes\": [3]") != std::string::npos);
  CHECK(JsonField(run.json, "requests_finished") == "30");
  CHECK(JsonField(run.json, "exact") == "true");
}

TEST_CASE("the colocated baseline serves every request exactly", "[cluster]") {
  const Run run = RunCluster("colocated", {"--colocated"});
  REQUIRE(run.exit_code == 0);
  CHECK(JsonField(run.json, "requests_finished") == "30");
  CHECK(JsonField(run.json, "exact") == "true");
  CHECK(JsonField(run.json, "bytes_moved") == "0");
}

TEST_CASE("the node processes die with the router", "[cluster]") {
  // A long run (arrivals over a minute); the router is SIGKILLed once its
  // nodes are up. Every node must go with it: PR_SET_PDEATHSIG kills it,
  // and a node also exits when its control socket reaches EOF.
  int err[2];
  REQUIRE(pipe(err) == 0);
  std::vector<std::string> args = {
      FLOWKV_CLUSTER_BIN,  "--prefill=1",       "--decode=1",
      "--requests=60",     "--rate=1",          "--layers=2",
      "--d_model=64",      "--heads=4",         "--kv_heads=2",
      "--max_context=256", "--calibrate=false", "--verbose"};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, err[1], STDERR_FILENO);
  posix_spawn_file_actions_addclose(&actions, err[0]);
  pid_t router;
  REQUIRE(posix_spawn(&router, argv[0], &actions, nullptr, argv.data(),
                      environ) == 0);
  posix_spawn_file_actions_destroy(&actions);
  close(err[1]);
  // Read stderr until the router names its nodes (or exits: EOF).
  std::string text;
  std::vector<pid_t> nodes;
  char buffer[4096];
  while (nodes.empty()) {
    const ssize_t n = read(err[0], buffer, sizeof(buffer));
    if (n <= 0) break;
    text.append(buffer, static_cast<size_t>(n));
    std::smatch m;
    if (std::regex_search(text, m, std::regex("nodes up: ([0-9 ]+)\n"))) {
      std::stringstream list(m[1].str());
      for (pid_t pid; list >> pid;) nodes.push_back(pid);
    }
  }
  REQUIRE(nodes.size() == 2);
  // Open the nodes' pidfds before the kill, so a reused pid cannot fool us.
  std::vector<int> fds;
  for (pid_t pid : nodes) {
    const int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
    REQUIRE(fd >= 0);
    fds.push_back(fd);
  }
  REQUIRE(kill(router, SIGKILL) == 0);
  int status;
  REQUIRE(waitpid(router, &status, 0) == router);
  close(err[0]);
  // Each pidfd becomes readable when its process exits; 10 s is far more
  // than a SIGKILL needs.
  for (int fd : fds) {
    pollfd p{fd, POLLIN, 0};
    CHECK(poll(&p, 1, 10000) == 1);
    close(fd);
  }
}

TEST_CASE("bad flags are refused before any process starts", "[cluster]") {
  CHECK(RunCluster("bad_policy", {"--policy=nope"}).exit_code != 0);
  CHECK(RunCluster("bad_kill", {"--kill_node=9"}).exit_code != 0);
  CHECK(RunCluster("bad_workload", {"--workload=nope"}).exit_code != 0);
  CHECK(RunCluster("bad_layout", {"--decode_kv_layout=nope"}).exit_code != 0);
  CHECK(RunCluster("bad_model", {"--heads=3"}).exit_code != 0);
}

}  // namespace
