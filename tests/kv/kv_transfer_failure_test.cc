// SPDX-License-Identifier: Apache-2.0
// KvTransfer's failures over real UCX on loopback (the fixture is
// tests/support/kv_fixture.h): refused arguments, deadlines, Cancel, a sender
// in a second process that dies, Expect deadlines, incomplete requests, Forget,
// malformed notices. Every wait is a loop around Poll with a deadline
// derived from the options the test set.
#include <cstring>
#include <random>
#include <string>
#include <unistd.h>
#include <vector>

#include <catch2/catch.hpp>

#include "flowkv/kv_transfer.h"
#include "lib/kv/kv_notice.h"
#include "tests/support/kv_fixture.h"
#include "tests/support/kv_test_util.h"
#include "tests/support/transfer_test_util.h"
#include "tests/support/wait_until.h"

namespace flowkv {
namespace {

using kv_fixture::Connect;
using kv_fixture::Fixture;
using kv_fixture::kDecodeSpec;
using kv_fixture::kGeometry;
using kv_fixture::kPeerFailureTimeout;
using kv_fixture::kPrefillSpec;
using kv_fixture::kSoon;
using kv_fixture::PeerIdOf;
using kv_fixture::SameKv;
using kv_fixture::Side;
using kv_fixture::WriteNotice;
using testing::ChildProcess;
using testing::FillRandom;
using testing::PollUntil;
using testing::Seen;

TEST_CASE("Bad sends fail through the handle and write nothing",
          "[kv_transfer]") {
  Fixture f;
  const BlockList one({{0, 1}});
  struct Case {
    std::string id;
    KvPiece request;
    absl::StatusCode code;
  };
  std::vector<Case> cases = {
      // A block outside the destination pool.
      {"out-of-pool",
       {.src_blocks = BlockList({{0, 2}}),
        .dst_blocks = BlockList({{63, 2}}),
        .num_tokens = 32},
       absl::StatusCode::kOutOfRange},
      // Nothing to move (used to report the request finished).
      {"zero-tokens",
       {.src_blocks = one, .dst_blocks = one, .num_tokens = 0},
       absl::StatusCode::kInvalidArgument},
      {"no-blocks", {.num_tokens = 16}, absl::StatusCode::kInvalidArgument},
      // Lists shorter than the tokens.
      {"short-list",
       {.src_blocks = one, .dst_blocks = one, .num_tokens = 17},
       absl::StatusCode::kInvalidArgument},
      {"payload",
       {.src_blocks = one,
        .dst_blocks = one,
        .num_tokens = 16,
        .payload = std::string(kMaxKvPayloadBytes + 1, 'p')},
       absl::StatusCode::kInvalidArgument},
      {"layers",
       {.src_blocks = one,
        .dst_blocks = one,
        .num_tokens = 16,
        .layer_begin = 2,
        .layer_end = 9},
       absl::StatusCode::kInvalidArgument},
      // A destination block named twice (issue 16 B2: one copy used to
      // overwrite the other), as [3, 3], overlapping runs, unordered runs.
      {"repeated-block",
       {.src_blocks = BlockList({{0, 2}}),
        .dst_blocks = BlockList({{3, 1}, {3, 1}}),
        .num_tokens = 32},
       absl::StatusCode::kInvalidArgument},
      {"overlapping-runs",
       {.src_blocks = BlockList({{0, 4}}),
        .dst_blocks = BlockList({{2, 3}, {4, 1}}),
        .num_tokens = 64},
       absl::StatusCode::kInvalidArgument},
      {"unordered-runs",
       {.src_blocks = BlockList({{0, 7}}),
        .dst_blocks = BlockList({{7, 1}, {2, 6}}),
        .num_tokens = 112},
       absl::StatusCode::kInvalidArgument},
  };
  for (const Case& c : cases) {
    INFO(c.id);
    CHECK(f.prefill.kv->Send(c.id, f.to_decode, c.request).Wait().code() ==
          c.code);
  }
  // Arguments no notice can name.
  const KvPiece fine = {.src_blocks = one, .dst_blocks = one, .num_tokens = 16};
  CHECK(
      f.prefill.kv
          ->Send(std::string(kMaxKvRequestIdBytes + 1, 'i'), f.to_decode, fine)
          .Wait()
          .code() == absl::StatusCode::kInvalidArgument);
  CHECK(f.prefill.kv->Send("", f.to_decode, fine).Wait().code() ==
        absl::StatusCode::kInvalidArgument);
  KvPiece bad_rank = fine;
  bad_rank.sender_rank = 2;
  bad_rank.num_senders = 2;
  CHECK(f.prefill.kv->Send("rank", f.to_decode, bad_rank).Wait().code() ==
        absl::StatusCode::kInvalidArgument);
  // No pool declared for this peer.
  CHECK(f.prefill.kv->Send("no-pool", f.to_decode + 1000, fine).Wait().code() ==
        absl::StatusCode::kFailedPrecondition);

  // Each refused piece with a nameable request reached the receiver as a
  // failure with the sender's code; nothing finished, nothing was written.
  Seen seen;
  CHECK(PollUntil(*f.decode.kv, seen, kSoon, [&](const Seen& s) {
    return s.failed.size() >= cases.size();
  }));
  CHECK(seen.finished.empty());
  for (const Case& c : cases) {
    INFO(c.id);
    const KvFailed* failed = seen.Failed(c.id);
    REQUIRE(failed != nullptr);
    CHECK(failed->status.code() == c.code);
    CHECK_THAT(std::string(failed->status.message()),
               Catch::Contains("sender rank 0"));
  }
  for (uint64_t i = 0; i < f.decode.layout.total_bytes(); ++i) {
    REQUIRE(f.decode.data[i] == 0);
  }
  // Region lists and options that do not fit.
  CHECK(KvTransfer::Create(f.prefill.engine.get(), f.prefill.layout, {})
            .status()
            .code() == absl::StatusCode::kInvalidArgument);
  CHECK(KvTransfer::Create(f.prefill.engine.get(), f.prefill.layout, {99})
            .status()
            .code() == absl::StatusCode::kNotFound);
  CHECK(KvTransfer::Create(f.prefill.engine.get(), f.prefill.layout,
                           {f.prefill.region},
                           {.incomplete_request_timeout = absl::ZeroDuration()})
            .status()
            .code() == absl::StatusCode::kInvalidArgument);
  CHECK(f.prefill.kv->AddPeerPool(f.to_decode, f.decode.layout, {5}).code() ==
        absl::StatusCode::kNotFound);
  CHECK(f.decode.kv->Expect("", absl::InfiniteFuture()).code() ==
        absl::StatusCode::kInvalidArgument);
}

TEST_CASE("A Send past its deadline reaches the receiver as a failure",
          "[kv_transfer]") {
  Fixture f;
  const BlockList blocks({{0, 2}});
  const KvPiece layer0 = {.src_blocks = blocks,
                          .dst_blocks = blocks,
                          .num_tokens = 32,
                          .layer_begin = 0,
                          .layer_end = 1};
  REQUIRE(f.prefill.kv->Send("late", f.to_decode, layer0).Wait().ok());
  KvPiece layer1 = layer0;
  layer1.layer_begin = 1;
  layer1.layer_end = 2;
  layer1.timeout = absl::Nanoseconds(1);
  CHECK(f.prefill.kv->Send("late", f.to_decode, layer1).Wait().code() ==
        absl::StatusCode::kDeadlineExceeded);
  Seen seen;
  REQUIRE(PollUntil(*f.decode.kv, seen, kSoon + 3 * kPeerFailureTimeout,
                    [](const Seen& s) { return s.Failed("late"); }));
  // The failure notice, or, when the deadline closed the endpoint first,
  // the sender's disconnection.
  const absl::StatusCode code = seen.Failed("late")->status.code();
  CHECK((code == absl::StatusCode::kDeadlineExceeded ||
         code == absl::StatusCode::kUnavailable));
  CHECK(seen.finished.empty());
}

TEST_CASE("A cancelled Send reaches the receiver as a failure",
          "[kv_transfer]") {
  // Pools of 64 MiB, so that the transfer is still running when Cancel()
  // reaches the engine.
  KvGeometry big = kGeometry;
  big.kv_heads = 8;
  big.head_dim = 256;
  Fixture f({}, {.geometry = big}, {.geometry = big});
  const BlockList blocks({{0, 32}});
  KvPiece piece = {.src_blocks = blocks,
                   .dst_blocks = BlockList({{32, 32}}),
                   .num_tokens = 32 * 16,
                   .layer_begin = 0,
                   .layer_end = 1};
  REQUIRE(f.prefill.kv->Send("cancel", f.to_decode, piece).Wait().ok());
  piece.layer_begin = 1;
  piece.layer_end = kGeometry.num_layers;
  TransferHandle h = f.prefill.kv->Send("cancel", f.to_decode, piece);
  h.Cancel();
  const absl::Status status = h.Wait();
  Seen seen;
  if (status.ok()) {
    // The transfer won the race with Cancel(): it finished normally.
    REQUIRE(PollUntil(*f.decode.kv, seen, kSoon,
                      [](const Seen& s) { return s.Finished("cancel") > 0; }));
    WARN("the transfer finished before Cancel() took effect");
    return;
  }
  CHECK(status.code() == absl::StatusCode::kCancelled);
  REQUIRE(PollUntil(*f.decode.kv, seen, kSoon + 3 * kPeerFailureTimeout,
                    [](const Seen& s) {
                      return s.Failed("cancel") || s.Finished("cancel");
                    }));
  if (seen.Finished("cancel") > 0) {
    // Cancel() struck after the notice was delivered, while its
    // acknowledgement was on the way back: the receiver has every piece, and
    // the late failure notice is ignored.
    REQUIRE(PollUntil(*f.decode.kv, seen, kSoon, [&](const Seen&) {
      return f.decode.kv->Stats().late_notices >= 1;
    }));
    CHECK(seen.failed.empty());
    WARN("Cancel() took effect after the notice was delivered");
    return;
  }
  const absl::StatusCode code = seen.Failed("cancel")->status.code();
  CHECK((code == absl::StatusCode::kCancelled ||
         code == absl::StatusCode::kUnavailable));
  CHECK(seen.finished.empty());
}

// Ends a child process: the reason on stderr, exit status 1.
[[noreturn]] void ChildFail(const char* child, const std::string& what) {
  std::fprintf(stderr, "%s: %s\n", child, what.c_str());
  _exit(1);
}

// The prefill side of a child process, connected to FLOWKV_KV_TEST_DECODE
// with the decode side's pool known.
struct ChildSender {
  std::unique_ptr<TransferEngine> engine;
  std::unique_ptr<KvTransfer> kv;
  PeerId peer = 0;
};

// Sets up a ChildSender (its engine named `engine_name`), or ends the child
// (ChildFail) when it cannot; nullopt when FLOWKV_KV_TEST_DECODE is unset
// (the case was not started by its parent).
std::optional<ChildSender> ConnectChildSender(const char* child,
                                              const char* engine_name) {
  const char* address = std::getenv("FLOWKV_KV_TEST_DECODE");
  if (address == nullptr) return std::nullopt;
  auto engine = TransferEngine::Create(testing::KvEngineOptions(engine_name));
  if (!engine.ok()) ChildFail(child, engine.status().ToString());
  const KvLayout layout = *KvLayout::Create(kPrefillSpec);
  const KvLayout decode_layout = *KvLayout::Create(kDecodeSpec);
  auto region = (*engine)->AllocateMemory(layout.total_bytes());
  if (!region.ok()) ChildFail(child, region.status().ToString());
  auto kv = KvTransfer::Create(engine->get(), layout, {region->id});
  auto peer = (*engine)->Connect(address);
  if (!kv.ok() || !peer.ok()) ChildFail(child, peer.status().ToString());
  const RegionId decode_region = (*engine)->GetPeer(*peer)->regions.at(0).id;
  if (!(*kv)->AddPeerPool(*peer, decode_layout, {decode_region}).ok()) {
    ChildFail(child, "AddPeerPool");
  }
  return ChildSender{*std::move(engine), *std::move(kv), *peer};
}

// --- A sender in another process that dies --------------------------------

// The child side of the test below: connects to FLOWKV_KV_TEST_DECODE,
// sends layer 0 of request "dying", reports "sent" on fd 3 and waits to be
// killed. Hidden: runs only when started by name.
TEST_CASE("kv peer child", "[.kv_peer_child]") {
  std::optional<ChildSender> sender =
      ConnectChildSender("kv peer child", "dying-prefill");
  if (!sender) return;
  auto fail = [](const std::string& what) { ChildFail("kv peer child", what); };
  KvTransfer* const kv = sender->kv.get();
  const PeerId peer = sender->peer;
  const absl::Status sent = kv->Send("dying", peer,
                                     {.src_blocks = BlockList({{0, 2}}),
                                      .dst_blocks = BlockList({{0, 2}}),
                                      .num_tokens = 32,
                                      .layer_begin = 0,
                                      .layer_end = 1})
                                .Wait();
  if (!sent.ok()) fail(sent.ToString());
  if (!testing::WriteParentLine("sent")) fail("write");
  testing::WaitForParentThenExit();
}

TEST_CASE("A sender that dies fails its unfinished incoming requests",
          "[kv_transfer]") {
  Side decode("decode", kDecodeSpec);
  auto address = decode.engine->Listen("127.0.0.1:0");
  REQUIRE(address.ok());
  ChildProcess child("kv peer child", {"FLOWKV_KV_TEST_DECODE=" + *address});
  REQUIRE(child.ReadLine(kSoon + kSoon) == "sent");
  // Its first piece arrived (acknowledged before "sent").
  Seen seen;
  REQUIRE(PollUntil(*decode.kv, seen, kSoon, [&](const Seen&) {
    return decode.kv->Stats().requests_active == 1;
  }));
  CHECK(seen.failed.empty());
  child.Kill();
  const absl::Time killed = absl::Now();
  REQUIRE(PollUntil(*decode.kv, seen, 3 * kPeerFailureTimeout + kSoon,
                    [](const Seen& s) { return s.Failed("dying"); }));
  CHECK(seen.Failed("dying")->status.code() == absl::StatusCode::kUnavailable);
  CHECK(absl::Now() - killed < 3 * kPeerFailureTimeout + kSoon);
  CHECK(seen.finished.empty());
  // The disconnection itself is passed on too.
  CHECK(std::any_of(seen.other.begin(), seen.other.end(),
                    [](const Notification& n) {
                      return n.kind == Notification::Kind::kPeerDisconnected;
                    }));
  CHECK(decode.kv->Stats().requests_active == 0);
}

// --- A request that arrived in time, polled late --------------------------

// The child side of the test below: connects to FLOWKV_KV_TEST_DECODE,
// sends layer 0 of request "late-poll", reports "first", waits for the
// parent's Continue(), sends layers [1, num_layers), reports "sent" (both
// acknowledged) and waits to be killed. Hidden: runs only when started by
// name.
TEST_CASE("kv late poll child", "[.kv_late_poll_child]") {
  std::optional<ChildSender> sender =
      ConnectChildSender("kv late poll child", "late-poll");
  if (!sender) return;
  auto fail = [](const std::string& what) {
    ChildFail("kv late poll child", what);
  };
  KvTransfer* const kv = sender->kv.get();
  const PeerId peer = sender->peer;
  KvPiece piece = {.src_blocks = BlockList({{0, 2}}),
                   .dst_blocks = BlockList({{0, 2}}),
                   .num_tokens = 32,
                   .layer_begin = 0,
                   .layer_end = 1};
  absl::Status sent = kv->Send("late-poll", peer, piece).Wait();
  if (!sent.ok()) fail(sent.ToString());
  if (!testing::WriteParentLine("first")) fail("write");
  if (!testing::WaitForParentByte()) _exit(0);
  piece.layer_begin = 1;
  piece.layer_end = kGeometry.num_layers;
  sent = kv->Send("late-poll", peer, piece).Wait();
  if (!sent.ok()) fail(sent.ToString());
  if (!testing::WriteParentLine("sent")) fail("write");
  testing::WaitForParentThenExit();
}

// Issue 16 B1: Poll used to apply deadlines before the notifications
// already queued, so a request whose every piece arrived (and was
// acknowledged) before its deadline was reported failed by a later Poll.
TEST_CASE("A request that arrived in time finishes when polled late",
          "[kv_transfer]") {
  const absl::Duration bound = absl::Seconds(1);
  const bool by_expect = GENERATE(true, false);
  INFO((by_expect ? "Expect deadline" : "incomplete_request_timeout"));
  KvTransferOptions options;
  if (!by_expect) options.incomplete_request_timeout = bound;
  Side decode("decode", kDecodeSpec, options);
  auto address = decode.engine->Listen("127.0.0.1:0");
  REQUIRE(address.ok());
  ChildProcess child("kv late poll child",
                     {"FLOWKV_KV_TEST_DECODE=" + *address});
  REQUIRE(child.ReadLine(kSoon + kSoon) == "first");
  Seen seen;
  // The piece must arrive before `deadline`; the request's deadline has
  // passed by `late`.
  absl::Time deadline;
  absl::Time late;
  if (by_expect) {
    // Layer 0 waits in the engine's queue, not yet polled.
    deadline = absl::Now() + bound;
    late = deadline;
    REQUIRE(decode.kv->Expect("late-poll", deadline).ok());
  } else {
    // Layer 0 handled: the request's inactivity clock runs from here.
    const absl::Time before = absl::Now();
    REQUIRE(PollUntil(*decode.kv, seen, kSoon, [&](const Seen&) {
      return decode.kv->Stats().requests_active == 1;
    }));
    deadline = before + bound;
    late = absl::Now() + bound;
  }
  REQUIRE(child.Continue());
  REQUIRE(child.ReadLine(kSoon) == "sent");
  // The rest arrived and was acknowledged before the deadline (a loaded
  // machine that took longer proves nothing).
  if (absl::Now() >= deadline) {
    WARN("the second piece took longer than " << bound);
    return;
  }
  REQUIRE(
      testing::WaitUntil([&] { return absl::Now() > late; }, bound + kSoon));
  seen.Add(decode.kv->Poll());
  std::string failures;
  for (const KvFailed& failed : seen.failed) {
    failures += failed.status.ToString() + "\n";
  }
  CHECK(failures.empty());
  CHECK(seen.Finished("late-poll") == 1);
}

// --- A finished or forgotten request sent again ---------------------------

// The child side of the test below: connects to FLOWKV_KV_TEST_DECODE and,
// at each Continue() of the parent (the first time at once), sends the
// whole request "again" and, from the second round on, "forgotten" too,
// reporting each handle's status code ("OK", "FAILED_PRECONDITION", ...)
// on one line. Hidden: runs only when started by name.
TEST_CASE("kv resend child", "[.kv_resend_child]") {
  std::optional<ChildSender> sender =
      ConnectChildSender("kv resend child", "resend");
  if (!sender) return;
  auto fail = [](const std::string& what) {
    ChildFail("kv resend child", what);
  };
  KvTransfer* const kv = sender->kv.get();
  const PeerId peer = sender->peer;
  const KvPiece piece = {.src_blocks = BlockList({{0, 2}}),
                         .dst_blocks = BlockList({{0, 2}}),
                         .num_tokens = 32};
  auto code = [&](const char* id) {
    return absl::StatusCodeToString(kv->Send(id, peer, piece).Wait().code());
  };
  std::string line = code("again");
  if (!testing::WriteParentLine(line)) fail("write");
  while (testing::WaitForParentByte()) {
    line = code("again");
    line += " " + code("forgotten");
    if (!testing::WriteParentLine(line)) fail("write");
  }
  _exit(0);
}

// Issue 16 B3: a request id sent again after the receiver finished (or
// forgot) it, without a new Expect, used to end OK on the sender while the
// receiver ignored the notice. The receiver's engine now refuses the
// notice, and its acknowledgement carries the refusal to the sender.
TEST_CASE("A finished or forgotten request sent again fails on the sender",
          "[kv_transfer]") {
  Side decode("decode", kDecodeSpec);
  auto address = decode.engine->Listen("127.0.0.1:0");
  REQUIRE(address.ok());
  ChildProcess child("kv resend child", {"FLOWKV_KV_TEST_DECODE=" + *address});
  REQUIRE(child.ReadLine(kSoon + kSoon) == "OK");
  Seen seen;
  REQUIRE(PollUntil(*decode.kv, seen, kSoon,
                    [](const Seen& s) { return s.Finished("again") == 1; }));
  decode.kv->Forget("forgotten");
  REQUIRE(child.Continue());
  CHECK(child.ReadLine(kSoon) == "FAILED_PRECONDITION FAILED_PRECONDITION");
  // Neither is reported again; the sender's failure notices that follow are
  // late ones.
  REQUIRE(PollUntil(*decode.kv, seen, kSoon, [&](const Seen&) {
    return decode.kv->Stats().late_notices >= 2;
  }));
  CHECK(seen.Finished("again") == 1);
  CHECK(seen.Finished("forgotten") == 0);
  CHECK(seen.failed.empty());
  // Expect makes the ids usable again.
  REQUIRE(decode.kv->Expect("again", absl::InfiniteFuture()).ok());
  REQUIRE(decode.kv->Expect("forgotten", absl::InfiniteFuture()).ok());
  REQUIRE(child.Continue());
  CHECK(child.ReadLine(kSoon) == "OK OK");
  REQUIRE(PollUntil(*decode.kv, seen, kSoon, [](const Seen& s) {
    return s.Finished("again") == 2 && s.Finished("forgotten") == 1;
  }));
  CHECK(seen.failed.empty());
}

// --- Receiver-side deadlines, Forget, malformed notices -------------------

TEST_CASE("Expect fails a request that is not finished by its deadline",
          "[kv_transfer]") {
  Fixture f;
  const absl::Time deadline = absl::Now() + absl::Milliseconds(300);
  REQUIRE(f.decode.kv->Expect("expected", deadline).ok());
  REQUIRE(f.decode.kv->Expect("in-time", deadline + absl::Seconds(60)).ok());
  REQUIRE(f.prefill.kv
              ->Send("in-time", f.to_decode,
                     {.src_blocks = BlockList({{0, 1}}),
                      .dst_blocks = BlockList({{0, 1}}),
                      .num_tokens = 16})
              .Wait()
              .ok());
  Seen seen;
  REQUIRE(PollUntil(*f.decode.kv, seen, absl::Milliseconds(300) + kSoon,
                    [](const Seen& s) { return s.Failed("expected"); }));
  CHECK(absl::Now() >= deadline);
  CHECK(seen.Failed("expected")->status.code() ==
        absl::StatusCode::kDeadlineExceeded);
  CHECK(seen.Finished("in-time") == 1);
  CHECK(seen.Failed("in-time") == nullptr);
}

TEST_CASE("A request whose last piece never comes fails after the timeout",
          "[kv_transfer]") {
  const absl::Duration timeout = absl::Milliseconds(300);
  Fixture f({.incomplete_request_timeout = timeout});
  REQUIRE(f.prefill.kv
              ->Send("stalled", f.to_decode,
                     {.src_blocks = BlockList({{0, 1}}),
                      .dst_blocks = BlockList({{0, 1}}),
                      .num_tokens = 16,
                      .layer_begin = 0,
                      .layer_end = 1})
              .Wait()
              .ok());
  const absl::Time sent = absl::Now();
  Seen seen;
  REQUIRE(PollUntil(*f.decode.kv, seen, timeout + kSoon,
                    [](const Seen& s) { return s.Failed("stalled"); }));
  CHECK(absl::Now() - sent >= timeout);
  CHECK(seen.Failed("stalled")->status.code() ==
        absl::StatusCode::kDeadlineExceeded);
  CHECK(f.decode.kv->Stats().requests_active == 0);
}

TEST_CASE("Forget drops a request and its late notices", "[kv_transfer]") {
  Fixture f;
  const BlockList blocks({{4, 2}});
  auto layer = [&](uint32_t l) {
    return KvPiece{.src_blocks = blocks,
                   .dst_blocks = blocks,
                   .num_tokens = 32,
                   .layer_begin = l,
                   .layer_end = l + 1};
  };
  REQUIRE(f.prefill.kv->Send("gone", f.to_decode, layer(0)).Wait().ok());
  Seen seen;
  REQUIRE(PollUntil(*f.decode.kv, seen, kSoon, [&](const Seen&) {
    return f.decode.kv->Stats().requests_active == 1;
  }));
  f.decode.kv->Forget("gone");
  CHECK(f.decode.kv->Stats().requests_active == 0);
  // The later pieces are refused (the receiver's acknowledgement says so);
  // their failure notices are late ones.
  for (uint32_t l = 1; l < kGeometry.num_layers; ++l) {
    REQUIRE(f.prefill.kv->Send("gone", f.to_decode, layer(l)).Wait().code() ==
            absl::StatusCode::kFailedPrecondition);
  }
  REQUIRE(PollUntil(*f.decode.kv, seen, kSoon, [&](const Seen&) {
    return f.decode.kv->Stats().late_notices >= kGeometry.num_layers - 1;
  }));
  CHECK(seen.finished.empty());
  CHECK(seen.failed.empty());
  CHECK(f.decode.kv->Stats().requests_active == 0);

  // A finished request not yet polled: Forget drops its result.
  REQUIRE(
      f.prefill.kv
          ->Send("unwanted", f.to_decode,
                 {.src_blocks = blocks, .dst_blocks = blocks, .num_tokens = 32})
          .Wait()
          .ok());
  const absl::Time deadline = absl::Now() + kSoon;
  while (f.decode.kv->Stats().results_pending == 0 && absl::Now() < deadline) {
    for (const Notification& n :
         f.decode.engine->TakeNotifications(absl::Milliseconds(10))) {
      f.decode.kv->HandleNotification(n);
    }
  }
  REQUIRE(f.decode.kv->Stats().results_pending == 1);
  f.decode.kv->Forget("unwanted");
  KvPollResult r = f.decode.kv->TakeResults();
  CHECK(r.finished.empty());
  CHECK(r.failed.empty());

  // Expect makes a forgotten id usable again.
  REQUIRE(f.decode.kv->Expect("gone", absl::Now() + kSoon).ok());
  REQUIRE(
      f.prefill.kv
          ->Send("gone", f.to_decode,
                 {.src_blocks = blocks, .dst_blocks = blocks, .num_tokens = 32})
          .Wait()
          .ok());
  REQUIRE(PollUntil(*f.decode.kv, seen, kSoon,
                    [](const Seen& s) { return s.Finished("gone") > 0; }));
}

TEST_CASE("Malformed notices are counted and ignored", "[kv_transfer]") {
  Fixture f;
  internal::KvNotice valid;
  valid.kind = internal::KvNoticeKind::kData;
  valid.request_id = "m";
  valid.layer_begin = 0;
  valid.layer_end = 1;
  valid.token_begin = 0;
  valid.token_end = 16;
  const std::string good = internal::EncodeKvNotice(valid);
  std::string bad_version = good;
  bad_version[4] = 9;
  std::string bad_kind = good;
  bad_kind[6] = 0;
  std::string huge_id = good;
  huge_id[10] = 0x7f;  // id length 0x7f000001
  std::mt19937_64 rng(3);
  std::string noise = "FKVN";
  for (int i = 0; i < 40; ++i) noise.push_back(static_cast<char>(rng()));
  const std::vector<std::string> malformed = {
      "FKVN",        good.substr(0, good.size() - 1),
      good + "tail", bad_version,
      bad_kind,      huge_id,
      noise};
  for (const std::string& bytes : malformed) {
    REQUIRE(WriteNotice(f.prefill, f.to_decode, bytes).ok());
  }
  // Still working afterwards, and foreign notifications still pass.
  REQUIRE(WriteNotice(f.prefill, f.to_decode, "FKV").ok());
  REQUIRE(f.prefill.kv
              ->Send("after", f.to_decode,
                     {.src_blocks = BlockList({{0, 1}}),
                      .dst_blocks = BlockList({{0, 1}}),
                      .num_tokens = 16})
              .Wait()
              .ok());
  Seen seen;
  REQUIRE(PollUntil(*f.decode.kv, seen, kSoon, [&](const Seen& s) {
    return s.Finished("after") > 0 && !s.other.empty() &&
           f.decode.kv->Stats().malformed_notices >= malformed.size();
  }));
  CHECK(f.decode.kv->Stats().malformed_notices == malformed.size());
  CHECK(seen.other.size() == 1);
  CHECK(seen.other[0].bytes == "FKV");
  CHECK(seen.failed.empty());
  CHECK(seen.Finished("m") == 0);
}

}  // namespace
}  // namespace flowkv
