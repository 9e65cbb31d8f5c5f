// The portable epoch shuffle (definition in shuffle.h).
#include "tools/shuffle.h"

#include <cstddef>
#include <utility>

namespace edgetune {
namespace tools {

uint64_t bounded(SplitMix64& rng, uint64_t n) {
  // (2^64 - n) mod n, computed in 64 bits: unsigned negation is 2^64 - n.
  const uint64_t threshold = (0 - n) % n;
  for (;;) {
    uint64_t r = rng.next();
    if (r >= threshold) return r % n;
  }
}

std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(static_cast<size_t>(n > 0 ? n : 0));
  for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
  SplitMix64 rng(mix64(mix64(seed) + static_cast<uint64_t>(epoch)));
  for (int64_t i = n - 1; i >= 1; --i) {
    auto j = static_cast<int64_t>(bounded(rng, static_cast<uint64_t>(i + 1)));
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
  }
  return order;
}

}  // namespace tools
}  // namespace edgetune
