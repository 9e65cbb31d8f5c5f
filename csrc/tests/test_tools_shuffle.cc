// GoogleTest tests of tools/shuffle.h: SplitMix64 matches the published reference stream, and
// epoch_order gives fixed, documented permutations — the golden orders below were computed
// with an independent Python implementation of the definition in shuffle.h, so a change here
// means runs stop being reproducible across versions and machines. Suite: ToolsShuffle.
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "tools/shuffle.h"

namespace edgetune {
namespace tools {
namespace {

TEST(ToolsShuffle, SplitMix64ReferenceStream) {
  // Vigna's splitmix64.c seeded with 0.
  SplitMix64 rng(0);
  EXPECT_EQ(rng.next(), 0xE220A8397B1DCDAFULL);
  EXPECT_EQ(rng.next(), 0x6E789E6AA1B965F4ULL);
  EXPECT_EQ(rng.next(), 0x06C45D188009454FULL);
}

TEST(ToolsShuffle, GoldenOrders) {
  EXPECT_EQ(epoch_order(10, 42, 0), (std::vector<int64_t>{2, 8, 9, 7, 1, 4, 6, 0, 5, 3}));
  EXPECT_EQ(epoch_order(10, 42, 1), (std::vector<int64_t>{3, 1, 6, 8, 4, 5, 9, 7, 2, 0}));
  EXPECT_EQ(epoch_order(10, 0, 0), (std::vector<int64_t>{6, 3, 2, 9, 8, 1, 4, 7, 0, 5}));
  EXPECT_EQ(epoch_order(10, ~0ULL, 3), (std::vector<int64_t>{8, 4, 7, 9, 5, 3, 2, 1, 0, 6}));
}

TEST(ToolsShuffle, SameSeedSameOrderOtherSeedOtherOrder) {
  auto a = epoch_order(1000, 7, 5);
  EXPECT_EQ(a, epoch_order(1000, 7, 5));
  EXPECT_NE(a, epoch_order(1000, 8, 5));
  EXPECT_NE(a, epoch_order(1000, 7, 6));
}

TEST(ToolsShuffle, IsAPermutation) {
  for (int64_t n : {0, 1, 2, 3, 17, 1000}) {
    auto order = epoch_order(n, 123, 0);
    ASSERT_EQ(static_cast<int64_t>(order.size()), n);
    std::sort(order.begin(), order.end());
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(order[static_cast<size_t>(i)], i);
  }
}

TEST(ToolsShuffle, BoundedStaysInRangeAndCoversIt) {
  SplitMix64 rng(1);
  std::vector<int> hits(7, 0);
  for (int i = 0; i < 7000; ++i) {
    uint64_t v = bounded(rng, 7);
    ASSERT_LT(v, 7u);
    ++hits[v];
  }
  for (int h : hits) EXPECT_GT(h, 800);  // ~1000 each
  EXPECT_EQ(bounded(rng, 1), 0u);
}

}  // namespace
}  // namespace tools
}  // namespace edgetune
