// CPU kernel for compiler/ops/dropout.py: dropout(x, counter) -> (y, mask).
//
// The mask is a pure function of (seed, stream, counter, element index) through splitmix64,
// exactly as uniform_stream() in the reference, so this kernel, the numpy reference and every
// other backend drop the same elements bit for bit, and any chunking over threads gives the
// same mask. The reference's test u >= p, with u = (bits >> 40) / 2^24 in float64, is done here
// on the integer: (bits >> 40) >= ceil(p * 2^24), which is the same comparison exactly
// (scaling by 2^24 is exact in float64).
#include <cmath>
#include <cstdint>

#include "core/kernel.h"
#include "kernels/cpu/cpu_util.h"

namespace edgetune {
namespace {

inline uint64_t splitmix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

Status check_dropout(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, "dropout", 2, 2, 2));
  const TensorView &x = a.in(0), &counter = a.in(1);
  ET_RETURN_IF_ERROR(cpu::want_float("input", x));
  ET_RETURN_IF_ERROR(expect_dtype(a, "counter", counter, DType::i64));
  ET_RETURN_IF_ERROR(cpu::want_scalar("counter", counter));
  for (int i = 0; i < 2; ++i) {
    ET_RETURN_IF_ERROR(cpu::want_same_dtype(i ? "mask" : "output", a.out(i), x));
    ET_RETURN_IF_ERROR(cpu::want_same_shape(i ? "mask" : "output", a.out(i), x));
  }
  const double p = a.attr().get_float("p", -1.0);
  if (!a.attr().has("p") || !(p >= 0.0 && p < 1.0))
    return invalid_argument("dropout p must be in [0, 1), got " + std::to_string(p));
  return Status::Ok();
}

Status run_dropout(const KernelArgs& a) {
  const TensorView &x = a.in(0), &y = a.out(0), &mask = a.out(1);
  const double p = a.attr().get_float("p");
  const uint64_t seed = static_cast<uint64_t>(a.attr().get_int("seed", 0));
  const uint64_t stream = static_cast<uint64_t>(a.attr().get_int("stream", 0));
  const uint64_t counter = static_cast<uint64_t>(*a.in(1).as<int64_t>());
  const uint64_t key = splitmix64(seed ^ splitmix64(stream ^ splitmix64(counter)));
  const uint64_t threshold = static_cast<uint64_t>(std::ceil(p * 16777216.0));
  const double scale = 1.0 / (1.0 - p);
  bool ok = cpu::visit_float(x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T keep_value = static_cast<T>(scale);
    const T* xp = x.as<T>();
    T* yp = y.as<T>();
    T* mp = mask.as<T>();
    cpu::parallel_for(a, x.numel(), cpu::kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const uint64_t bits = splitmix64(key + static_cast<uint64_t>(i)) >> 40;
        const T m = bits >= threshold ? keep_value : T(0);
        mp[i] = m;
        yp[i] = xp[i] * m;
      }
    });
  });
  return ok ? Status::Ok() : internal_error("dropout: dtype not dispatched");
}

}  // namespace

void register_dropout_kernels(KernelRegistry& r) {
  r.add(KernelDef{"dropout", "dropout", &check_dropout, nullptr, &run_dropout});
}

}  // namespace edgetune
