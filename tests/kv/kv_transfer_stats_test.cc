// SPDX-License-Identifier: Apache-2.0
// KvTransferStats' request counters (requests_finished, requests_failed,
// requests_timed_out): each request Poll returns is counted once, under
// its outcome, and only when Poll returns it. The counters the Prometheus
// component exports, tested here without it.

#include <catch2/catch.hpp>

#include "flowkv/kv_transfer.h"
#include "tests/support/kv_fixture.h"

namespace flowkv {
namespace {

using kv_fixture::Fixture;
using kv_fixture::kSoon;
using testing::PollUntil;
using testing::Seen;

TEST_CASE("KvTransfer counts requests finished, failed and timed out",
          "[kv_transfer_stats]") {
  Fixture f;
  KvTransferStats fresh = f.decode.kv->Stats();
  CHECK(fresh.requests_finished == 0);
  CHECK(fresh.requests_failed == 0);
  CHECK(fresh.requests_timed_out == 0);

  const BlockList src({{0, 2}});
  const BlockList dst({{8, 2}});
  for (const char* id : {"done-1", "done-2", "done-3"}) {
    REQUIRE(f.prefill.kv
                ->Send(id, f.to_decode,
                       {.src_blocks = src, .dst_blocks = dst, .num_tokens = 32})
                .Wait()
                .ok());
  }
  // Finished, but not yet returned by Poll: not counted.
  CHECK(f.decode.kv->Stats().requests_finished == 0);

  // Timed out: expected with a deadline that has passed by the next Poll.
  REQUIRE(f.decode.kv->Expect("late", absl::Now()).ok());
  // Failed with another code: a piece the sender cannot plan (its
  // destination blocks leave the pool), which it reports with a failure
  // notice.
  const BlockList outside({{kv_fixture::kGeometry.num_blocks - 1, 2}});
  CHECK_FALSE(
      f.prefill.kv
          ->Send("broken", f.to_decode,
                 {.src_blocks = src, .dst_blocks = outside, .num_tokens = 32})
          .Wait()
          .ok());

  Seen seen;
  REQUIRE(PollUntil(*f.decode.kv, seen, kSoon, [](const Seen& s) {
    return s.finished.size() == 3 && s.failed.size() == 2;
  }));
  const KvTransferStats stats = f.decode.kv->Stats();
  CHECK(stats.requests_finished == 3);
  uint64_t timed_out = 0;
  uint64_t failed = 0;
  for (const KvFailed& failure : seen.failed) {
    ++(failure.status.code() == absl::StatusCode::kDeadlineExceeded ? timed_out
                                                                    : failed);
  }
  CHECK(timed_out == 1);
  CHECK(stats.requests_timed_out == timed_out);
  CHECK(stats.requests_failed == failed);
  // Reported once: later Polls change nothing.
  f.decode.kv->Poll(absl::Milliseconds(20));
  CHECK(f.decode.kv->Stats().requests_finished == 3);
  CHECK(f.decode.kv->Stats().requests_timed_out == 1);
  CHECK(f.decode.kv->Stats().requests_failed == 1);
  // The sending side returned no request.
  CHECK(f.prefill.kv->Stats().requests_finished == 0);
}

}  // namespace
}  // namespace flowkv
