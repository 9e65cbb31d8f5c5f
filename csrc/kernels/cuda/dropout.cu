// CUDA kernel for compiler/ops/dropout.py: dropout(x, counter) -> (y, mask), the CPU's splitmix64
// counter stream (kernels/cpu/dropout.cc): element i is kept where (splitmix64(key + i) >> 40) >=
// ceil(p * 2^24), key = splitmix64(seed ^ splitmix64(stream ^ splitmix64(counter))). The counter is
// read on the device (it changes every step), so masks are bit-identical to the CPU's and a captured
// graph replays with the current counter.
#include <cmath>

#include "kernels/cuda/cuda_util.h"

namespace edgetune {
namespace cuda {
namespace {

__host__ __device__ inline uint64_t splitmix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

template <typename T>
__global__ void dropout_kernel(const T* x, const int64_t* counter, T* y, T* mask, int64_t n, uint64_t seed, uint64_t stream,
                               uint64_t threshold, T keep) {
  const uint64_t key = splitmix64(seed ^ splitmix64(stream ^ splitmix64(static_cast<uint64_t>(*counter))));
  ET_GRID_LOOP(i, n) {
    const uint64_t bits = splitmix64(key + static_cast<uint64_t>(i)) >> 40;
    const T m = bits >= threshold ? keep : T(0);
    mask[i] = m;
    y[i] = x[i] * m;
  }
}

Status run_dropout(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  const TensorView& x = a.in(0);
  const int64_t n = x.numel();
  if (n == 0) return Status::Ok();
  const double p = a.attr().get_float("p");
  const uint64_t seed = static_cast<uint64_t>(a.attr().get_int("seed", 0));
  const uint64_t stream = static_cast<uint64_t>(a.attr().get_int("stream", 0));
  const uint64_t threshold = static_cast<uint64_t>(std::ceil(p * 16777216.0));
  const double scale = 1.0 / (1.0 - p);
  bool ok = cpu::visit_float(x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dropout_kernel<<<grid_for(n), kBlock, 0, ctx->stream>>>(x.as<T>(), a.in(1).as<int64_t>(), a.out(0).as<T>(),
                                                            a.out(1).as<T>(), n, seed, stream, threshold, static_cast<T>(scale));
  });
  if (!ok) return internal_error("dropout: dtype not dispatched");
  ET_CUDA_LAUNCHED("dropout");
  return Status::Ok();
}

}  // namespace

void register_dropout_kernels(KernelRegistry& r) { add_like_cpu(r, "dropout", "dropout", nullptr, &run_dropout); }

}  // namespace cuda
}  // namespace edgetune
