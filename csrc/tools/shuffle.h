// The sample order of each training epoch: a portable, documented shuffle.
//
// A run must pick the same batches on every machine and every compiler (x86-64, aarch64, a
// Python re-implementation), so this avoids std::shuffle / std::uniform_int_distribution, whose
// results are implementation-defined. The definition, in full:
//
//   mix64(z):  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
//              z = (z ^ (z >> 27)) * 0x94D049BB133111EB
//              return z ^ (z >> 31)                        (all arithmetic mod 2^64)
//   SplitMix64(state).next():  state += 0x9E3779B97F4A7C15; return mix64(state)
//   bounded(rng, n):  t = (2^64 - n) mod n; draw r = rng.next() until r >= t; return r mod n
//                     (rejection makes every value exactly equally likely)
//   epoch_order(n, seed, epoch):
//     rng = SplitMix64(mix64(mix64(seed) + epoch))         (each epoch its own stream, so any
//     order = [0, 1, ..., n-1]                               epoch can be recomputed alone)
//     for i = n-1 down to 1: j = bounded(rng, i + 1); swap(order[i], order[j])   (Fisher-Yates)
#pragma once

#include <cstdint>
#include <vector>

namespace edgetune {
namespace tools {

inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t state) : state_(state) {}
  uint64_t next() {
    state_ += 0x9E3779B97F4A7C15ULL;
    return mix64(state_);
  }

 private:
  uint64_t state_;
};

// Uniform in [0, n); n must be > 0.
uint64_t bounded(SplitMix64& rng, uint64_t n);

// The permutation of [0, n) that epoch `epoch` (0-based) visits samples in.
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch);

}  // namespace tools
}  // namespace edgetune
