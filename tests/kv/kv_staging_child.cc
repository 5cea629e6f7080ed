// SPDX-License-Identifier: Apache-2.0
// The peer process of the staging tests (kv_staging_test,
// kv_staging_failure_test): each test binary starts itself with
// FLOWKV_STAGING_CHILD set and this hidden case selected (see
// staging_test::StartChild and staging_test::RunStagingChild). Linked into
// both binaries.
#include <cstdlib>

#include <catch2/catch.hpp>

#include "tests/support/kv_staging_util.h"

namespace flowkv {
namespace {

TEST_CASE("staging child", "[.staging_child]") {
  if (const char* config = std::getenv("FLOWKV_STAGING_CHILD")) {
    staging_test::RunStagingChild(config);
  }
}

}  // namespace
}  // namespace flowkv
