// CUDA kernels for compiler/ops/indexing.py (kernels/cpu/indexing.cc on the device): cumsum, gather
// and gather_backward. Checks are the CPU kernels'.
//
// cumsum: one thread per line along dim (neighbouring threads take neighbouring inner columns, so
// loads coalesce when inner > 1), walking it in order (reverse: from the end) with the CPU's
// accumulators (double for floats, wrapping 64-bit integers): the same bits as the CPU.
// gather: one thread per output element, moved as bits. gather_backward: one thread per dx
// element, summing the dy entries of its index line whose index is its own coordinate, in index
// order (the CPU's order, so the same bits; no atomics). Index lines are short in practice (a
// position per token); each dx element scans its line, O(line length) per element.
// An index outside [0, x.shape[dim]) cannot be reported without a sync: gather writes zero for it
// and gather_backward adds nothing for it; the CPU kernels report it (cuda_util.h).
#include <type_traits>

#include "kernels/cuda/cuda_util.h"

namespace edgetune {
namespace cuda {
namespace {

// ---- cumsum --------------------------------------------------------------------------------------
template <typename T>
using CumAcc = std::conditional_t<std::is_floating_point_v<T>, double, unsigned long long>;

template <typename T>
__device__ CumAcc<T> to_acc(T v) {
  if constexpr (std::is_floating_point_v<T>) return static_cast<double>(v);
  else return static_cast<unsigned long long>(static_cast<long long>(v));
}

template <typename T>
__device__ T from_acc(CumAcc<T> v) {
  if constexpr (std::is_floating_point_v<T>) return static_cast<T>(v);
  else return static_cast<T>(static_cast<long long>(v));
}

template <typename T>
__global__ void cumsum_kernel(const T* x, T* y, int64_t outer, int64_t n, int64_t inner, bool reverse) {
  const int64_t lines = outer * inner;
  ET_GRID_LOOP(l, lines) {
    const int64_t o = l / inner, i = l % inner;
    CumAcc<T> acc = 0;
    for (int64_t s = 0; s < n; ++s) {
      const int64_t k = reverse ? n - 1 - s : s;
      const int64_t off = (o * n + k) * inner + i;
      acc += to_acc(x[off]);
      y[off] = from_acc<T>(acc);
    }
  }
}

Status run_cumsum(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  const TensorView &x = a.in(0), &out = a.out(0);
  const int dim = static_cast<int>(a.attr().get_int("dim", 0));
  const bool reverse = a.attr().get_int("reverse", 0) != 0;
  int64_t outer, n, inner;
  cpu::split_at(x, dim, &outer, &n, &inner);
  if (outer * n * inner == 0) return Status::Ok();
  const int64_t lines = outer * inner;
  bool ok = cpu::visit_arith(x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    cumsum_kernel<<<grid_for(lines), kBlock, 0, ctx->stream>>>(x.as<T>(), out.as<T>(), outer, n, inner, reverse);
  });
  if (!ok) return internal_error("cumsum: dtype not dispatched");
  ET_CUDA_LAUNCHED("cumsum");
  return Status::Ok();
}

// ---- gather / gather_backward ---------------------------------------------------------------------
// Shapes and row-major strides of the index (= output of gather, = dy of gather_backward) and of the
// data (x of gather, dx of gather_backward), by value into the kernels.
struct Geometry {
  int rank = 1, dim = 0;
  int64_t ishape[kMaxRank] = {1}, istride[kMaxRank] = {1};
  int64_t xshape[kMaxRank] = {1}, xstride[kMaxRank] = {1};
};

Geometry geometry(const TensorView& idx, const TensorView& data, int dim) {
  Geometry g;
  g.rank = data.rank;
  g.dim = dim;
  int64_t si = 1, sx = 1;
  for (int d = data.rank - 1; d >= 0; --d) {
    g.ishape[d] = idx.shape[d];
    g.istride[d] = si;
    si *= idx.shape[d];
    g.xshape[d] = data.shape[d];
    g.xstride[d] = sx;
    sx *= data.shape[d];
  }
  return g;
}

template <typename T, typename I>
__global__ void gather_kernel(const T* x, const I* idx, T* out, int64_t n, Geometry g) {
  ET_GRID_LOOP(p, n) {
    int64_t rem = p, off = 0;
    for (int d = g.rank - 1; d >= 0; --d) {
      if (d != g.dim) off += (rem % g.ishape[d]) * g.xstride[d];
      rem /= g.ishape[d];
    }
    const int64_t j = static_cast<int64_t>(idx[p]);
    out[p] = (j >= 0 && j < g.xshape[g.dim]) ? x[off + j * g.xstride[g.dim]] : T(0);
  }
}

Status run_gather(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  const TensorView &x = a.in(0), &idx = a.in(1), &out = a.out(0);
  const int dim = static_cast<int>(a.attr().get_int("dim", 0));
  const int64_t n = idx.numel();
  if (n == 0) return Status::Ok();
  const Geometry g = geometry(idx, x, dim);
  bool ok = cpu::visit_bits(x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (idx.dtype == DType::i64)
      gather_kernel<<<grid_for(n), kBlock, 0, ctx->stream>>>(x.as<T>(), idx.as<int64_t>(), out.as<T>(), n, g);
    else
      gather_kernel<<<grid_for(n), kBlock, 0, ctx->stream>>>(x.as<T>(), idx.as<int32_t>(), out.as<T>(), n, g);
  });
  if (!ok) return internal_error("gather: dtype not dispatched");
  ET_CUDA_LAUNCHED("gather");
  return Status::Ok();
}

template <typename T, typename I>
__global__ void gather_backward_kernel(const T* dy, const I* idx, T* dx, int64_t total, Geometry g) {
  ET_GRID_LOOP(e, total) {
    // e's coordinates in dx; the index line with the same coordinates off dim
    int64_t rem = e, off = 0, j = 0;
    bool inside = true;
    for (int d = g.rank - 1; d >= 0; --d) {
      const int64_t c = rem % g.xshape[d];
      rem /= g.xshape[d];
      if (d == g.dim) {
        j = c;
      } else {
        inside = inside && c < g.ishape[d];
        off += c * g.istride[d];
      }
    }
    T s = T(0);
    if (inside) {
      const int64_t len = g.ishape[g.dim], step = g.istride[g.dim];
      for (int64_t k = 0; k < len; ++k) {
        const int64_t q = off + k * step;
        if (static_cast<int64_t>(idx[q]) == j) s += dy[q];
      }
    }
    dx[e] = s;
  }
}

Status run_gather_backward(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  const TensorView &dy = a.in(0), &idx = a.in(1), &out = a.out(0);
  const int dim = static_cast<int>(a.attr().get_int("dim", 0));
  const int64_t total = out.numel();
  if (total == 0) return Status::Ok();
  const Geometry g = geometry(idx, out, dim);
  bool ok = cpu::visit_float(dy.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (idx.dtype == DType::i64)
      gather_backward_kernel<<<grid_for(total), kBlock, 0, ctx->stream>>>(dy.as<T>(), idx.as<int64_t>(), out.as<T>(),
                                                                        total, g);
    else
      gather_backward_kernel<<<grid_for(total), kBlock, 0, ctx->stream>>>(dy.as<T>(), idx.as<int32_t>(), out.as<T>(),
                                                                        total, g);
  });
  if (!ok) return internal_error("gather_backward: dtype not dispatched");
  ET_CUDA_LAUNCHED("gather_backward");
  return Status::Ok();
}

}  // namespace

void register_indexing_kernels(KernelRegistry& r) {
  add_like_cpu(r, "cumsum", "cumsum", nullptr, &run_cumsum);
  add_like_cpu(r, "gather", "gather", nullptr, &run_gather);
  add_like_cpu(r, "gather_backward", "gather_backward", nullptr, &run_gather_backward);
}

}  // namespace cuda
}  // namespace edgetune
