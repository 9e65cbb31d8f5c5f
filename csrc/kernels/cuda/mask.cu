// CUDA kernels for compiler/ops/mask.py: activation_mask (bit i = min < y_i (< max), LSB first,
// padding bits 0; one thread per byte, so no two threads write a byte) and mask_grad (dy where the
// bit is set, else 0). Checks are the CPU kernels'.
#include "kernels/cuda/cuda_util.h"

namespace edgetune {
namespace cuda {
namespace {

template <typename T>
__global__ void pack_kernel(const T* y, int64_t n, T lo, T hi, bool bounded, uint8_t* bits) {
  const int64_t bytes = (n + 7) / 8;
  ET_GRID_LOOP(j, bytes) {
    unsigned byte = 0;
    for (int k = 0; k < 8; ++k) {
      const int64_t i = j * 8 + k;
      if (i >= n) break;
      const bool inside = bounded ? (y[i] > lo && y[i] < hi) : y[i] > lo;
      byte |= static_cast<unsigned>(inside) << k;
    }
    bits[j] = static_cast<uint8_t>(byte);
  }
}

template <typename T>
__global__ void mask_grad_kernel(const T* dy, const uint8_t* m, T* out, int64_t n) {
  ET_GRID_LOOP(i, n) out[i] = ((m[i >> 3] >> (i & 7)) & 1) ? dy[i] : T(0);
}

Status run_activation_mask(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  const TensorView& y = a.in(0);
  const int64_t n = y.numel();
  if (n == 0) return Status::Ok();
  const bool bounded = a.attr().has("max");
  bool ok = cpu::visit_float(y.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T lo = T(a.attr().get_float("min")), hi = T(a.attr().get_float("max"));
    pack_kernel<<<grid_for((n + 7) / 8), kBlock, 0, ctx->stream>>>(y.as<T>(), n, lo, hi, bounded, a.out(0).as<uint8_t>());
  });
  if (!ok) return internal_error("activation_mask: dtype not dispatched");
  ET_CUDA_LAUNCHED("activation_mask");
  return Status::Ok();
}

Status run_mask_grad(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  const TensorView& dy = a.in(0);
  const int64_t n = dy.numel();
  if (n == 0) return Status::Ok();
  bool ok = cpu::visit_float(dy.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    mask_grad_kernel<<<grid_for(n), kBlock, 0, ctx->stream>>>(dy.as<T>(), a.in(1).as<uint8_t>(), a.out(0).as<T>(), n);
  });
  if (!ok) return internal_error("mask_grad: dtype not dispatched");
  ET_CUDA_LAUNCHED("mask_grad");
  return Status::Ok();
}

}  // namespace

void register_mask_kernels(KernelRegistry& r) {
  add_like_cpu(r, "activation_mask", "activation_mask", nullptr, &run_activation_mask);
  add_like_cpu(r, "mask_grad", "mask_grad", nullptr, &run_mask_grad);
}

}  // namespace cuda
}  // namespace edgetune
