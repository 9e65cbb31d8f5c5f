// CUDA kernels for compiler/ops/softmax.py (kernels/cpu/softmax.cc on the device): softmax,
// log_softmax and their backward ops along any dim, f32/f64. One block per (outer, inner) row of
// the softmax dim; max and sums (in double) are fixed-order block trees; exp is elementwise_math's.
// Every read of a row happens before its writes (barriers between), so dx may share dy's memory.
#include "kernels/cpu/elementwise_math.h"
#include "kernels/cuda/cuda_util.h"

namespace edgetune {
namespace cuda {
namespace {

template <bool kLog, typename T>
__global__ void forward_kernel(const T* x, T* y, int64_t outer, int64_t n, int64_t inner) {
  __shared__ double ds[kBlock];
  __shared__ T ms[kBlock];
  for (int64_t row = blockIdx.x; row < outer * inner; row += gridDim.x) {
    const int64_t base = (row / inner) * n * inner + row % inner;
    T m = x[base];
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) m = x[base + j * inner] > m ? x[base + j * inner] : m;
    m = block_max(m, ms);
    double s = 0;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) s += static_cast<double>(cpu::exp_any(x[base + j * inner] - m));
    s = block_sum(s, ds);
    if constexpr (kLog) {
      const T lse = static_cast<T>(log(s));
      for (int64_t j = threadIdx.x; j < n; j += blockDim.x) y[base + j * inner] = (x[base + j * inner] - m) - lse;
    } else {
      const T inv = static_cast<T>(1.0 / s);
      for (int64_t j = threadIdx.x; j < n; j += blockDim.x) y[base + j * inner] = cpu::exp_any(x[base + j * inner] - m) * inv;
    }
    __syncthreads();
  }
}

template <bool kLog, typename T>
__global__ void backward_kernel(const T* dy, const T* y, T* dx, int64_t outer, int64_t n, int64_t inner) {
  __shared__ double ds[kBlock];
  for (int64_t row = blockIdx.x; row < outer * inner; row += gridDim.x) {
    const int64_t base = (row / inner) * n * inner + row % inner;
    double acc = 0;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      const int64_t i = base + j * inner;
      acc += kLog ? static_cast<double>(dy[i]) : static_cast<double>(dy[i]) * static_cast<double>(y[i]);
    }
    const T s = static_cast<T>(block_sum(acc, ds));
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      const int64_t i = base + j * inner;
      if constexpr (kLog) dx[i] = dy[i] - cpu::exp_any(y[i]) * s;
      else dx[i] = y[i] * (dy[i] - s);
    }
    __syncthreads();
  }
}

unsigned rows_grid(int64_t rows) { return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(rows, 65535 * 16))); }

template <bool kLog>
Status run_forward(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  const TensorView &x = a.in(0), &out = a.out(0);
  int64_t outer, n, inner;
  cpu::split_at(x, static_cast<int>(a.attr().get_int("dim")), &outer, &n, &inner);
  if (n == 0 || outer * inner == 0) return Status::Ok();
  bool ok = cpu::visit_float(x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    forward_kernel<kLog, T><<<rows_grid(outer * inner), kBlock, 0, ctx->stream>>>(x.as<T>(), out.as<T>(), outer, n, inner);
  });
  if (!ok) return internal_error("softmax: dtype not dispatched");
  ET_CUDA_LAUNCHED("softmax");
  return Status::Ok();
}

template <bool kLog>
Status run_backward(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  const TensorView &dy = a.in(0), &y = a.in(1), &out = a.out(0);
  int64_t outer, n, inner;
  cpu::split_at(dy, static_cast<int>(a.attr().get_int("dim")), &outer, &n, &inner);
  if (n == 0 || outer * inner == 0) return Status::Ok();
  bool ok = cpu::visit_float(dy.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    backward_kernel<kLog, T><<<rows_grid(outer * inner), kBlock, 0, ctx->stream>>>(dy.as<T>(), y.as<T>(), out.as<T>(), outer,
                                                                                   n, inner);
  });
  if (!ok) return internal_error("softmax backward: dtype not dispatched");
  ET_CUDA_LAUNCHED("softmax backward");
  return Status::Ok();
}

}  // namespace

void register_softmax_kernels(KernelRegistry& r) {
  add_like_cpu(r, "softmax", "softmax", nullptr, &run_forward<false>);
  add_like_cpu(r, "log_softmax", "log_softmax", nullptr, &run_forward<true>);
  add_like_cpu(r, "softmax_backward", "softmax_backward", nullptr, &run_backward<false>);
  add_like_cpu(r, "log_softmax_backward", "log_softmax_backward", nullptr, &run_backward<true>);
}

}  // namespace cuda
}  // namespace edgetune
