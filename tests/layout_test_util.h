// Helpers shared by the layout tests: every layout KvLayout allows, and
// random block lists.
#ifndef FLOWKV_TESTS_LAYOUT_TEST_UTIL_H_
#define FLOWKV_TESTS_LAYOUT_TEST_UTIL_H_

#include <algorithm>
#include <numeric>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

#include "flowkv/block_list.h"
#include "flowkv/kv_layout.h"

namespace flowkv::testing {

inline KvLayout MakeLayout(const KvGeometry& geometry, PoolOrder pool_order,
                           BlockOrder block_order, RegionSplit split) {
  absl::StatusOr<KvLayout> layout =
      KvLayout::Create({.geometry = geometry,
                        .pool_order = pool_order,
                        .block_order = block_order,
                        .region_split = split});
  REQUIRE(layout.ok());
  return *layout;
}

// Every pool order / region split / block order KvLayout allows (6 layouts).
inline std::vector<KvLayout> AllLayouts(const KvGeometry& geometry) {
  std::vector<KvLayout> layouts;
  for (BlockOrder block_order : {BlockOrder::kNHD, BlockOrder::kHND}) {
    layouts.push_back(MakeLayout(geometry, PoolOrder::kBlockMajor, block_order,
                                 RegionSplit::kOnePerPool));
    layouts.push_back(MakeLayout(geometry, PoolOrder::kLayerMajor, block_order,
                                 RegionSplit::kOnePerPool));
    layouts.push_back(MakeLayout(geometry, PoolOrder::kLayerMajor, block_order,
                                 RegionSplit::kOnePerLayer));
  }
  return layouts;
}

// `count` distinct random blocks of [0, num_blocks), in random order, with
// some consecutive ids so the list has runs of several blocks.
inline BlockList RandomBlocks(uint32_t num_blocks, uint32_t count,
                              std::mt19937& rng) {
  std::vector<BlockId> ids(num_blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  ids.resize(count);
  // Sort a random prefix so it forms runs.
  std::sort(ids.begin(), ids.begin() + count / 2);
  return BlockList::FromIds(ids);
}

}  // namespace flowkv::testing

#endif  // FLOWKV_TESTS_LAYOUT_TEST_UTIL_H_
