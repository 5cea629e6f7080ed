// SPDX-License-Identifier: Apache-2.0
// flowkv-cluster's etcd membership against a real etcd: the JSON reader, the
// client's calls and errors, leases that expire, a member process that is
// killed and disappears, and a restarted router that finds the members.
#include <atomic>
#include <iostream>
#include <netinet/in.h>
#include <signal.h>
#include <string>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "absl/strings/str_cat.h"
#include "tests/support/etcd_process.h"
#include "tests/support/wait_until.h"
#include "tools/cluster/etcd/etcd_client.h"
#include "tools/cluster/etcd/etcd_registration.h"
#include "tools/cluster/etcd/json_reader.h"

namespace flowkv::cluster {
namespace {

using flowkv::testing::EtcdInstalled;
using flowkv::testing::EtcdProcess;
using flowkv::testing::WaitUntil;

// Catch2 v2 has no SKIP: the case prints the marker CTest's
// SKIP_REGULAR_EXPRESSION looks for, and passes.
bool SkipWithoutEtcd() {
  if (EtcdInstalled()) return false;
  std::cout << "SKIP_NO_ETCD: " << flowkv::testing::kEtcdBinary
            << " not installed\n";
  return true;
}

std::unique_ptr<EtcdClient> Connect(const std::string& endpoint,
                                    absl::Duration timeout = absl::Seconds(2)) {
  auto client =
      EtcdClient::Create({.endpoint = endpoint, .request_timeout = timeout});
  REQUIRE(client.ok());
  return std::move(*client);
}

TEST_CASE("JSON reader: values, escapes and int64 strings", "[cluster][etcd]") {
  auto v = ParseJson(
      R"( {"a": [1, "2", true, null], "s": "x\"\u00e9\ud83d\ude00\n", "n": -12} )");
  REQUIRE(v.ok());
  REQUIRE(v->Get("a").Items().size() == 4);
  CHECK(*v->Get("a").Items()[0].AsInt() == 1);
  CHECK(*v->Get("a").Items()[1].AsInt() == 2);
  CHECK(v->Get("a").Items()[2].AsBool());
  CHECK(v->Get("a").Items()[3].is_null());
  CHECK(*v->Get("s").AsString() == "x\"\xc3\xa9\xf0\x9f\x98\x80\n");
  CHECK(*v->Get("n").AsInt() == -12);
  CHECK(*v->Get("missing").AsInt() == 0);  // the gateway omits zero fields
  CHECK(v->Get("a").Get("x").is_null());
  CHECK(ParseJson(JsonQuote(std::string("q\"\\\x01", 4)))->AsString().value() ==
        std::string("q\"\\\x01", 4));
}

TEST_CASE("JSON reader: malformed documents are InvalidArgument",
          "[cluster][etcd]") {
  for (const char* bad : {"", "{", "[1,", R"({"a" 1})", R"({"a":1,})", "\"abc",
                          R"("\x")", R"("\ud800")", R"("\udc00")", "tru", "1 2",
                          "-", R"({"a":"\u12")", "\"a\x01\""}) {
    INFO(bad);
    auto v = ParseJson(bad);
    REQUIRE_FALSE(v.ok());
    CHECK(v.status().code() == absl::StatusCode::kInvalidArgument);
  }
  std::string deep(kMaxJsonDepth + 2, '[');
  deep += std::string(kMaxJsonDepth + 2, ']');
  CHECK(ParseJson(deep).status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(ParseJson(R"({"n":"12x"})")->Get("n").AsInt().status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(ParseJson(R"({"n":"99999999999999999999"})")
            ->Get("n")
            .AsInt()
            .status()
            .code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("etcd client: bad endpoints are clear errors", "[cluster][etcd]") {
  CHECK(EtcdClient::Create({.endpoint = "127.0.0.1:2379"}).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(
      EtcdClient::Create({.endpoint = "https://127.0.0.1:1"}).status().code() ==
      absl::StatusCode::kInvalidArgument);
  // Nobody listens on a port just freed.
  auto etcd = Connect(
      absl::StrCat("http://127.0.0.1:", flowkv::testing::FreeLoopbackPort()));
  CHECK(etcd->Put("/k", "v").code() == absl::StatusCode::kUnavailable);
  CHECK(etcd->GetPrefix("/k").status().code() ==
        absl::StatusCode::kUnavailable);
  CHECK(etcd->Put("", "v").code() == absl::StatusCode::kInvalidArgument);
  CHECK(etcd->GetPrefix("").status().code() ==
        absl::StatusCode::kInvalidArgument);
}

// A loopback server that answers every connection with `reply` (or, when
// `reply` is empty, reads and never answers) until stopped.
class FakeHttpServer {
 public:
  explicit FakeHttpServer(std::string reply) : reply_(std::move(reply)) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    socklen_t len = sizeof(addr);
    REQUIRE(getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    REQUIRE(listen(fd_, 8) == 0);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~FakeHttpServer() {
    shutdown(fd_, SHUT_RDWR);
    close(fd_);
    thread_.join();
    for (int c : held_) close(c);
  }
  std::string endpoint() const {
    return absl::StrCat("http://127.0.0.1:", port_);
  }

 private:
  void Serve() {
    while (true) {
      const int c = accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      char buf[4096];
      (void)!read(c, buf, sizeof(buf));
      if (reply_.empty()) {
        held_.push_back(c);  // never answers
        continue;
      }
      (void)!write(c, reply_.data(), reply_.size());
      close(c);
    }
  }
  std::string reply_;
  int fd_ = -1;
  int port_ = 0;
  std::vector<int> held_;
  std::thread thread_;
};

std::string HttpReply(const std::string& status, const std::string& body) {
  return absl::StrCat("HTTP/1.1 ", status, "\r\nContent-Length: ", body.size(),
                      "\r\nConnection: close\r\n\r\n", body);
}

TEST_CASE(
    "etcd client: a server that lies or stalls gives an error, not a crash",
    "[cluster][etcd]") {
  struct Case {
    std::string reply;
    absl::StatusCode code;
  };
  for (const Case& c :
       {Case{HttpReply("200 OK", R"({"ID")"),
             absl::StatusCode::kInvalidArgument},
        Case{HttpReply("200 OK", R"({"ID":"x"})"),
             absl::StatusCode::kInvalidArgument},
        Case{HttpReply("200 OK", "{}"), absl::StatusCode::kInvalidArgument},
        Case{HttpReply("500 Oops", R"({"message":"boom"})"),
             absl::StatusCode::kUnavailable},
        Case{"garbage\r\n\r\n", absl::StatusCode::kUnavailable}}) {
    FakeHttpServer server(c.reply);
    auto etcd = Connect(server.endpoint());
    INFO(c.reply);
    CHECK(etcd->GrantLease(absl::Seconds(3)).status().code() == c.code);
  }
  FakeHttpServer bad_kvs(HttpReply("200 OK", R"({"kvs":[{"key":"%%%"}]})"));
  CHECK(Connect(bad_kvs.endpoint())->GetPrefix("/a").status().code() ==
        absl::StatusCode::kInvalidArgument);
  const absl::Duration timeout = absl::Milliseconds(300);
  FakeHttpServer silent("");
  CHECK(Connect(silent.endpoint(), timeout)->Put("/k", "v").code() ==
        absl::StatusCode::kDeadlineExceeded);
  // A reply larger than the client's limit is refused.
  FakeHttpServer huge(HttpReply("200 OK", std::string(1 << 16, ' ') + "{}"));
  auto small = EtcdClient::Create(
      {.endpoint = huge.endpoint(), .max_reply_bytes = 1024});
  REQUIRE(small.ok());
  CHECK((*small)->GetPrefix("/a").status().code() ==
        absl::StatusCode::kResourceExhausted);
}

TEST_CASE("etcd client: keys, prefixes and binary values round-trip",
          "[cluster][etcd]") {
  if (SkipWithoutEtcd()) return;
  EtcdProcess server;
  auto etcd = Connect(server.endpoint());
  const std::string binary("\x00\xff\x01meta\n\"", 10);
  REQUIRE(etcd->Put("/c/nodes/a", binary).ok());
  REQUIRE(etcd->Put("/c/nodes/b", "B").ok());
  REQUIRE(etcd->Put("/c/other", "X").ok());
  REQUIRE(etcd->Put("/d", "D").ok());
  auto a = etcd->Get("/c/nodes/a");
  REQUIRE(a.ok());
  REQUIRE(a->has_value());
  CHECK((*a)->value == binary);
  CHECK((*a)->mod_revision > 0);
  auto all = etcd->GetPrefix("/c/");
  REQUIRE(all.ok());
  REQUIRE(all->size() == 3);
  CHECK((*all)[0].key == "/c/nodes/a");
  CHECK((*all)[2].key == "/c/other");
  CHECK(*etcd->Delete("/c/nodes/a") == 1);
  CHECK(*etcd->Delete("/c/nodes/a") == 0);
  CHECK_FALSE(etcd->Get("/c/nodes/a")->has_value());
  CHECK(PrefixRangeEnd("a\xff") == "b");
  CHECK(PrefixRangeEnd("\xff\xff").empty());
}

TEST_CASE("etcd client: a lease that is not renewed expires with its keys",
          "[cluster][etcd]") {
  if (SkipWithoutEtcd()) return;
  EtcdProcess server;
  auto etcd = Connect(server.endpoint());
  const absl::Duration ttl = absl::Seconds(1);
  auto lease = etcd->GrantLease(ttl);
  REQUIRE(lease.ok());
  REQUIRE(etcd->Put("/c/nodes/short", "m", *lease).ok());
  auto left = etcd->KeepAlive(*lease);
  REQUIRE(left.ok());
  CHECK(*left >= ttl);  // etcd may grant more than asked (its minimum TTL)
  CHECK((*etcd->Get("/c/nodes/short"))->lease == *lease);
  // etcd checks expiry about twice a second: allow a few periods past the
  // TTL it granted.
  CHECK(WaitUntil([&] { return !etcd->Get("/c/nodes/short")->has_value(); },
                  *left * 3));
  CHECK(etcd->KeepAlive(*lease).status().code() == absl::StatusCode::kNotFound);
  CHECK(etcd->Put("/c/nodes/x", "m", *lease).code() != absl::StatusCode::kOk);
}

TEST_CASE(
    "etcd membership: members appear, leave at once, and a killed one expires",
    "[cluster][etcd]") {
  if (SkipWithoutEtcd()) return;
  EtcdProcess server;
  const absl::Duration ttl = absl::Seconds(2);
  const std::string prefix = "/flowkv/test-cluster";

  // A member in another process, killed without leaving.
  int ready[2];
  REQUIRE(pipe(ready) == 0);
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    close(ready[0]);
    auto etcd = EtcdClient::Create({.endpoint = server.endpoint()});
    if (!etcd.ok()) _exit(2);
    auto reg = EtcdRegistration::Create(etcd->get(), prefix, "decode-1",
                                        "meta-1", ttl);
    if (!reg.ok()) _exit(3);
    (void)!write(ready[1], "r", 1);
    pause();
    _exit(0);
  }
  close(ready[1]);
  char byte = 0;
  REQUIRE(read(ready[0], &byte, 1) == 1);
  close(ready[0]);

  auto etcd = Connect(server.endpoint());
  auto prefill =
      EtcdRegistration::Create(etcd.get(), prefix, "prefill-0", "meta-0", ttl);
  REQUIRE(prefill.ok());
  auto members = ListMembers(*etcd, prefix);
  REQUIRE(members.ok());
  CHECK(*members == std::map<std::string, std::string>{
                        {"decode-1", "meta-1"}, {"prefill-0", "meta-0"}});
  REQUIRE((*prefill)->Update("meta-0b").ok());

  // A router that restarts finds the same members with a new client.
  auto restarted = Connect(server.endpoint());
  CHECK(ListMembers(*restarted, prefix)->at("prefill-0") == "meta-0b");

  // Kill the child: its entry goes once its lease expires; the renewed one
  // stays.
  kill(child, SIGKILL);
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  CHECK(WaitUntil(
      [&] { return ListMembers(*etcd, prefix)->count("decode-1") == 0; },
      ttl * 5));
  CHECK(ListMembers(*etcd, prefix)->count("prefill-0") == 1);
  CHECK((*prefill)->lost().ok());

  // A graceful leave removes the entry at once.
  prefill->reset();
  CHECK(ListMembers(*etcd, prefix)->empty());

  // Bad arguments change nothing.
  CHECK(EtcdRegistration::Create(etcd.get(), prefix, "a/b", "m", ttl)
            .status()
            .code() == absl::StatusCode::kInvalidArgument);
  CHECK(
      EtcdRegistration::Create(etcd.get(), "", "a", "m", ttl).status().code() ==
      absl::StatusCode::kInvalidArgument);
  CHECK(EtcdRegistration::Create(etcd.get(), prefix, "a", "m",
                                 absl::Milliseconds(10))
            .status()
            .code() == absl::StatusCode::kInvalidArgument);
  CHECK(ListMembers(*etcd, prefix)->empty());
}

TEST_CASE("etcd membership: a registration whose lease expired reports it lost",
          "[cluster][etcd]") {
  if (SkipWithoutEtcd()) return;
  EtcdProcess server;
  auto etcd = Connect(server.endpoint());
  const absl::Duration ttl = absl::Seconds(3);
  auto reg = EtcdRegistration::Create(etcd.get(), "/flowkv/c", "n", "m", ttl);
  REQUIRE(reg.ok());
  // Someone (an operator, a compaction) revokes the lease behind its back.
  REQUIRE(etcd->RevokeLease((*reg)->lease()).ok());
  CHECK(WaitUntil([&] { return !(*reg)->lost().ok(); }, ttl * 2));
  CHECK((*reg)->lost().code() == absl::StatusCode::kNotFound);
  CHECK((*reg)->Update("m2").code() == absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace flowkv::cluster
