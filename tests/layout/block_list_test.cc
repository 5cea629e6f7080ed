// SPDX-License-Identifier: Apache-2.0
#include "flowkv/block_list.h"

#include <catch2/catch.hpp>

namespace flowkv {
namespace {

TEST_CASE("Append merges adjacent runs and drops empty ones", "[block_list]") {
  BlockList list;
  list.Append(10, 4);
  list.Append(14, 2);
  list.Append(20, 0);
  list.Append(3, 1);
  REQUIRE(list.num_runs() == 2);
  CHECK(list.runs()[0] == BlockRun{10, 6});
  CHECK(list.runs()[1] == BlockRun{3, 1});
  CHECK(list.num_blocks() == 7);
  CHECK(list.ToString() == "[10+6, 3+1]");
}

TEST_CASE("FromIds and ToIds round-trip in token order", "[block_list]") {
  const std::vector<BlockId> ids = {5, 6, 7, 2, 3, 9};
  BlockList list = BlockList::FromIds(ids);
  CHECK(list.num_runs() == 3);
  CHECK(list.ToIds() == ids);
  for (size_t i = 0; i < ids.size(); ++i) CHECK(list.BlockAt(i) == ids[i]);
}

TEST_CASE("AppendList merges at the seam", "[block_list]") {
  BlockList a({{0, 4}});
  BlockList b({{4, 2}, {8, 1}});
  a.AppendList(b);
  CHECK(a == BlockList({{0, 6}, {8, 1}}));
  CHECK(a.num_blocks() == 7);
  a.Clear();
  CHECK(a.empty());
  CHECK(a.num_blocks() == 0);
}

}  // namespace
}  // namespace flowkv
