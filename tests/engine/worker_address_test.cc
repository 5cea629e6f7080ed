// SPDX-License-Identifier: Apache-2.0
// Worker addresses from peers (lib/engine/wireup/ucx_address.h): the
// structural check against real addresses of this UCX, the UCX version and
// address format carried in metadata, and AddPeer with every tested
// single-byte mutation of a real peer's worker address, re-signed with the
// token, each batch in a child process: none may take the process down.

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <string>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/str_cat.h"
#include "flowkv/transfer_engine.h"
#include "lib/engine/wireup/ucx_address.h"
#include "lib/engine/wireup/wire_format.h"
#include "tests/support/engine_pair.h"
#include "tests/support/peer_process.h"

namespace flowkv {
namespace {

using internal::AsBytes;
using internal::CheckUcxCompatible;
using internal::CheckUcxWorkerAddress;
using internal::EncodeEngineInfo;
using internal::EngineInfo;
using internal::PackUcxVersion;
using internal::ParseSignedEngineInfo;
using testing::MakeEngine;
using testing::PeerProcess;

constexpr char kToken[] = "secret";

EngineInfo InfoOf(const std::string& metadata) {
  auto info = ParseSignedEngineInfo(AsBytes(metadata), kToken);
  INFO(info.status().ToString());
  REQUIRE(info.ok());
  return *info;
}

// Every byte of `address` replaced by each of its 8 single-bit flips and by
// the values that matter to the format (0, the length escapes 0x1f, 0x3f,
// 0x7f, and 0xff): (offset, value) pairs that change the byte. Bytes in
// `skip` are left alone.
std::vector<std::pair<size_t, uint8_t>> Mutations(
    const std::string& address,
    const std::vector<internal::UcxAddressRange>& skip) {
  std::vector<std::pair<size_t, uint8_t>> out;
  for (size_t i = 0; i < address.size(); ++i) {
    bool skipped = false;
    for (const auto& range : skip) {
      skipped |= i >= range.offset && i - range.offset < range.length;
    }
    if (skipped) continue;
    const auto b = static_cast<uint8_t>(address[i]);
    std::vector<uint8_t> values = {0x00, 0x1f, 0x3f, 0x7f, 0xff};
    for (int bit = 0; bit < 8; ++bit) values.push_back(b ^ (1u << bit));
    std::sort(values.begin(), values.end());
    values.erase(std::unique(values.begin(), values.end()), values.end());
    for (uint8_t v : values) {
      if (v != b) out.emplace_back(i, v);
    }
  }
  return out;
}

TEST_CASE("This UCX's worker addresses pass the structural check",
          "[worker_address]") {
  auto engine = MakeEngine("a", kToken);
  const EngineInfo info = InfoOf(*engine->LocalMetadata());
  CHECK(CheckUcxWorkerAddress(AsBytes(info.worker_address)).ok());
  // UCX 1.13's default format (UCX_ADDRESS_VERSION=v1).
  CHECK(info.address_format == internal::kUcxAddressFormatV1);
  CHECK(info.ucx_version >> 8 == PackUcxVersion(1, 13, 0) >> 8);
}

TEST_CASE(
    "Every truncation and tested mutation of a worker address is "
    "checked without a crash",
    "[worker_address]") {
  auto engine = MakeEngine("a", kToken);
  const std::string address = InfoOf(*engine->LocalMetadata()).worker_address;
  for (size_t n = 0; n < address.size(); ++n) {
    INFO("truncated to " << n << " bytes");
    const absl::Status s = CheckUcxWorkerAddress(AsBytes(address.substr(0, n)));
    CHECK((s.code() == absl::StatusCode::kInvalidArgument ||
           s.code() == absl::StatusCode::kFailedPrecondition));
  }
  CHECK(CheckUcxWorkerAddress(AsBytes(address + '\0')).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(CheckUcxWorkerAddress({}).code() == absl::StatusCode::kInvalidArgument);
  // Every value of every byte: a status, never a read past the end (ASan).
  size_t refused = 0;
  for (size_t i = 0; i < address.size(); ++i) {
    for (int v = 0; v < 256; ++v) {
      std::string mutated = address;
      mutated[i] = static_cast<char>(v);
      refused += !CheckUcxWorkerAddress(AsBytes(mutated)).ok();
    }
  }
  CHECK(refused > 0);
  // The version bits UCX 1.13 aborts on.
  for (uint8_t version : {2, 3, 15}) {
    std::string mutated = address;
    mutated[0] = static_cast<char>((mutated[0] & 0xf0) | version);
    CHECK(CheckUcxWorkerAddress(AsBytes(mutated)).code() ==
          absl::StatusCode::kFailedPrecondition);
  }
}

TEST_CASE("Another UCX minor version or address format is FailedPrecondition",
          "[worker_address]") {
  const uint32_t local = PackUcxVersion(1, 13, 1);
  CHECK(CheckUcxCompatible(local, PackUcxVersion(1, 13, 0), 0).ok());
  CHECK(CheckUcxCompatible(local, PackUcxVersion(1, 13, 0), 1).ok());
  CHECK(CheckUcxCompatible(local, PackUcxVersion(1, 14, 1), 1).code() ==
        absl::StatusCode::kFailedPrecondition);
  CHECK(CheckUcxCompatible(local, PackUcxVersion(2, 13, 1), 1).code() ==
        absl::StatusCode::kFailedPrecondition);
  CHECK(CheckUcxCompatible(local, local, 2).code() ==
        absl::StatusCode::kFailedPrecondition);

  auto a = MakeEngine("a", kToken);
  auto b = MakeEngine("b", kToken);
  EngineInfo info = InfoOf(*b->LocalMetadata());
  EngineInfo newer = info;
  newer.ucx_version += 1 << 8;  // next minor version
  CHECK(a->AddPeer(EncodeEngineInfo(newer, kToken)).status().code() ==
        absl::StatusCode::kFailedPrecondition);
  EngineInfo unknown_format = info;
  unknown_format.address_format = 2;
  CHECK(a->AddPeer(EncodeEngineInfo(unknown_format, kToken)).status().code() ==
        absl::StatusCode::kFailedPrecondition);
  // A worker address whose own version bits are neither v1 nor v2 (UCX
  // 1.13 aborts on it: ucp_address_unpack's assertion).
  EngineInfo bad = info;
  bad.worker_address[0] =
      static_cast<char>((bad.worker_address[0] & 0xf0) | 0x2);
  CHECK(a->AddPeer(EncodeEngineInfo(bad, kToken)).status().code() ==
        absl::StatusCode::kFailedPrecondition);
  CHECK(a->Peers().empty());
  // The unchanged info still connects.
  CHECK(a->AddPeer(EncodeEngineInfo(info, kToken)).ok());
}

// Brings up the loopback device of the child's own network namespace.
bool LoopbackUp() {
  const int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) return false;
  ifreq request{};
  std::strncpy(request.ifr_name, "lo", IFNAMSIZ - 1);
  bool ok = ioctl(fd, SIOCGIFFLAGS, &request) == 0;
  request.ifr_flags |= IFF_UP;
  ok = ok && ioctl(fd, SIOCSIFFLAGS, &request) == 0;
  close(fd);
  return ok;
}

// In a child: AddPeer of blobs[first, end), one line per blob on `out`
// ("start <i>" before, "done <i> <code>" after). In a network namespace of
// its own, so that a mutated IP address reaches nothing outside.
[[noreturn]] void AddPeerChild(const std::vector<std::string>& blobs,
                               size_t first, size_t end, int out) {
  if (unshare(CLONE_NEWNET) != 0 || !LoopbackUp()) {
    dprintf(out, "setup-failed %d\n", errno);
    _exit(3);
  }
  TransferEngineOptions options = testing::TestEngineOptions("mutant", kToken);
  options.connect_timeout = absl::Milliseconds(200);
  options.log = [](LogSeverity, std::string_view) {};
  auto engine = TransferEngine::Create(options);
  if (!engine.ok()) {
    dprintf(out, "setup-failed %s\n", engine.status().ToString().c_str());
    _exit(3);
  }
  for (size_t i = first; i < end; ++i) {
    dprintf(out, "start %zu\n", i);
    auto peer = (*engine)->AddPeer(blobs[i]);
    dprintf(out, "done %zu %d\n", i, static_cast<int>(peer.status().code()));
    if (peer.ok()) (void)(*engine)->Disconnect(*peer);
  }
  _exit(0);
}

// A chain of children working through blobs [next, end): one child at a
// time; a child that dies mid-AddPeer is recorded and the next one starts
// after the blob it died on.
struct Chain {
  size_t next = 0;
  size_t end = 0;
  pid_t pid = -1;
  int fd = -1;
  std::string pending;  // a partial line
  size_t started = 0;
  bool in_flight = false;
};

TEST_CASE(
    "AddPeer survives every tested mutation of a real peer's worker "
    "address",
    "[worker_address][process]") {
  PeerProcess process(kToken, 4096);
  const EngineInfo info = InfoOf(process.metadata());
  // Over tcp every byte; with shared memory the transports' own address
  // bodies are left alone: UCX 1.13's posix transport asserts on a segment
  // id whose flags it does not expect (mm_posix.c:369), content that no
  // check of the format can judge (docs/security.md).
  std::vector<internal::UcxAddressRange> opaque;
  REQUIRE(
      CheckUcxWorkerAddress(AsBytes(info.worker_address), {}, &opaque).ok());
  if (!testing::SharedMemoryMode()) opaque.clear();
  std::vector<std::string> blobs;
  const auto mutations = Mutations(info.worker_address, opaque);
  for (const auto& [offset, value] : mutations) {
    EngineInfo mutated = info;
    mutated.worker_address[offset] = static_cast<char>(value);
    blobs.push_back(EncodeEngineInfo(mutated, kToken));  // re-signed
  }
  // Children work in parallel: a mutated address that UCX accepts may not
  // answer, and each such AddPeer waits out connect_timeout.
  constexpr size_t kChains = 16;
  std::vector<Chain> chains(kChains);
  for (size_t c = 0; c < kChains; ++c) {
    chains[c].next = blobs.size() * c / kChains;
    chains[c].end = blobs.size() * (c + 1) / kChains;
  }
  std::map<int, size_t> codes;
  std::vector<std::string> crashes;
  const absl::Time deadline = absl::Now() + absl::Minutes(5);
  for (;;) {
    std::vector<pollfd> fds;
    std::vector<Chain*> polled;
    for (Chain& chain : chains) {
      if (chain.pid < 0 && chain.next < chain.end) {
        int pipe_fds[2];
        REQUIRE(pipe(pipe_fds) == 0);
        const pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
          close(pipe_fds[0]);
          AddPeerChild(blobs, chain.next, chain.end, pipe_fds[1]);
        }
        close(pipe_fds[1]);
        chain.pid = pid;
        chain.fd = pipe_fds[0];
        chain.in_flight = false;
      }
      if (chain.pid >= 0) {
        fds.push_back({chain.fd, POLLIN, 0});
        polled.push_back(&chain);
      }
    }
    if (fds.empty()) break;
    REQUIRE(absl::Now() < deadline);
    REQUIRE(poll(fds.data(), fds.size(), 1000) >= 0);
    for (size_t k = 0; k < fds.size(); ++k) {
      if (fds[k].revents == 0) continue;
      Chain& chain = *polled[k];
      char buffer[4096];
      const ssize_t n = read(chain.fd, buffer, sizeof(buffer));
      if (n > 0) {
        chain.pending.append(buffer, n);
        size_t eol = 0;
        while ((eol = chain.pending.find('\n')) != std::string::npos) {
          const std::string line = chain.pending.substr(0, eol);
          chain.pending.erase(0, eol + 1);
          size_t i = 0;
          int code = 0;
          if (std::sscanf(line.c_str(), "start %zu", &i) == 1) {
            chain.started = i;
            chain.in_flight = true;
          } else if (std::sscanf(line.c_str(), "done %zu %d", &i, &code) == 2) {
            ++codes[code];
            chain.next = i + 1;
            chain.in_flight = false;
          } else {
            FAIL("child: " << line);
          }
        }
        continue;
      }
      // The child exited (or died): reap it.
      close(chain.fd);
      int status = 0;
      REQUIRE(waitpid(chain.pid, &status, 0) == chain.pid);
      chain.pid = -1;
      if (chain.in_flight) {
        const auto& [offset, value] = mutations[chain.started];
        crashes.push_back(absl::StrCat(
            "byte ", offset, " := ", value, ": ",
            WIFSIGNALED(status) ? absl::StrCat("signal ", WTERMSIG(status))
                                : absl::StrCat("exit ", WEXITSTATUS(status))));
        chain.next = chain.started + 1;
      } else {
        REQUIRE(WIFEXITED(status));
        REQUIRE(WEXITSTATUS(status) == 0);
        REQUIRE(chain.next == chain.end);
      }
    }
  }
  std::string summary;
  size_t total = 0;
  for (const auto& [code, n] : codes) {
    summary += absl::StrCat(" code ", code, ": ", n, ";");
    total += n;
  }
  INFO(blobs.size() << " mutations of a " << info.worker_address.size()
                    << "-byte address;" << summary);
  std::string crashed;
  for (const std::string& crash : crashes) crashed += crash + "\n";
  INFO("crashed:\n" << crashed);
  CHECK(crashes.empty());
  CHECK(total + crashes.size() == blobs.size());
  // Some mutations break the structure: refused before UCX.
  CHECK(codes[static_cast<int>(absl::StatusCode::kInvalidArgument)] > 0);
}

}  // namespace
}  // namespace flowkv
