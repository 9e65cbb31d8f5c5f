// CUDA kernels for compiler/ops/shape.py (kernels/cpu/shape.cc on the device): reshape, permute,
// expand, sum_to, concat, slice, slice_backward, cast. Data movement is dtype-generic (elements
// move as unsigned integers of their size), one thread per output element; sum_to is the
// deterministic reduction of reduction.h; cast converts like the CPU (floats to integers truncate
// and saturate, NaN gives 0, anything nonzero is true). Checks are the CPU kernels'.
#include <limits>
#include <type_traits>

#include "kernels/cpu/broadcast.h"
#include "kernels/cuda/reduction.h"

namespace edgetune {
namespace cuda {
namespace {

Status run_reshape(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  return copy_async(ctx, a.out(0).data, a.in(0).data, a.in(0).nbytes());
}

// ---- permute / expand: a gather by per-output-dim input strides ------------------------------------
template <typename T>
__global__ void gather_kernel(const T* in, T* out, int64_t n, BcastIndex<1> idx) {
  ET_GRID_LOOP(i, n) out[i] = in[idx.offset(0, i)];
}

Status launch_gather(CudaContext* ctx, const TensorView& x, const TensorView& out, const BcastIndex<1>& idx, const char* what) {
  const int64_t n = out.numel();
  if (n == 0) return Status::Ok();
  bool ok = cpu::visit_bits(x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    gather_kernel<<<grid_for(n), kBlock, 0, ctx->stream>>>(x.as<T>(), out.as<T>(), n, idx);
  });
  if (!ok) return internal_error(std::string(what) + ": dtype not dispatched");
  ET_CUDA_LAUNCHED(what);
  return Status::Ok();
}

Status run_permute(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  const TensorView &x = a.in(0), &out = a.out(0);
  const auto& dims = a.attr().get_ints("dims");
  int64_t in_stride[kMaxRank];
  int64_t s = 1;
  for (int d = x.rank - 1; d >= 0; --d) {
    in_stride[d] = s;
    s *= x.shape[d];
  }
  BcastIndex<1> idx;
  idx.rank = 0;
  for (int i = 0; i < x.rank; ++i) {  // output dims, size-1 dropped, mergeable neighbours merged
    const int64_t size = x.shape[dims[i]], st = in_stride[dims[i]];
    if (size == 1) continue;
    if (idx.rank > 0 && idx.stride[0][idx.rank - 1] == st * size) {
      idx.shape[idx.rank - 1] *= size;
      idx.stride[0][idx.rank - 1] = st;
      continue;
    }
    idx.shape[idx.rank] = size;
    idx.stride[0][idx.rank] = st;
    ++idx.rank;
  }
  if (idx.rank == 0) {
    idx.rank = 1;
    idx.shape[0] = 1;
    idx.stride[0][0] = 0;
  }
  return launch_gather(ctx, x, out, idx, "permute");
}

Status run_expand(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  const TensorView &x = a.in(0), &out = a.out(0);
  cpu::Broadcast<1> bc;
  const TensorView* ins[1] = {&x};
  if (!bc.init(out, ins)) return internal_error("expand: shapes changed after check");
  return launch_gather(ctx, x, out, bcast_index(bc), "expand");
}

// ---- sum_to ---------------------------------------------------------------------------------------
size_t workspace_sum_to(const KernelArgs& a) {
  bool reduced[kMaxRank];
  if (!cpu::sum_to_dims(a.in(0), a.out(0), reduced)) return 0;
  return reduction_workspace(a.in(0), reduced);
}

Status run_sum_to(const KernelArgs& a) {
  bool reduced[kMaxRank];
  if (!cpu::sum_to_dims(a.in(0), a.out(0), reduced)) return internal_error("sum_to: shapes changed after check");
  return reduction_run(a, a.in(0), reduced, a.out(0), false);
}

// ---- concat: one copy kernel per input into its columns of every output row ---------------------------
template <typename T>
__global__ void block_copy(const T* src, T* dst, int64_t rows, int64_t src_row, int64_t dst_row, int64_t dst_off) {
  const int64_t n = rows * src_row;
  ET_GRID_LOOP(i, n) {
    const int64_t r = i / src_row, c = i % src_row;
    dst[r * dst_row + dst_off + c] = src[i];
  }
}

Status run_concat(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  const TensorView& out = a.out(0);
  const int dim = static_cast<int>(a.attr().get_int("dim"));
  int64_t outer, mid, inner;
  cpu::split_at(out, dim, &outer, &mid, &inner);
  int64_t at = 0;
  for (int i = 0; i < a.num_inputs; ++i) {
    const TensorView& x = a.in(i);
    const int64_t len = x.shape[dim] * inner, n = outer * len;
    if (n > 0) {
      bool ok = cpu::visit_bits(out.dtype, [&](auto tag) {
        using T = typename decltype(tag)::type;
        block_copy<<<grid_for(n), kBlock, 0, ctx->stream>>>(x.as<T>(), out.as<T>(), outer, len, mid * inner, at);
      });
      if (!ok) return internal_error("concat: dtype not dispatched");
      ET_CUDA_LAUNCHED("concat");
    }
    at += len;
  }
  return Status::Ok();
}

// ---- slice / slice_backward ---------------------------------------------------------------------------
struct SliceAttrs {
  int64_t dim, start, end, step;
  void read(const Attrs& at) {
    dim = at.get_int("dim");
    start = at.get_int("start");
    end = at.get_int("end");
    step = at.get_int("step");
  }
};

template <typename T>
__global__ void slice_kernel(const T* x, T* y, int64_t n, int64_t len, int64_t size, int64_t inner, int64_t start,
                             int64_t step) {
  ET_GRID_LOOP(i, n) {
    const int64_t c = i % inner, j = (i / inner) % len, o = i / (inner * len);
    y[i] = x[(o * size + start + j * step) * inner + c];
  }
}

template <typename T>
__global__ void slice_backward_kernel(const T* dy, T* dx, int64_t n, int64_t len, int64_t size, int64_t inner,
                                      int64_t start, int64_t step) {
  ET_GRID_LOOP(i, n) {
    const int64_t c = i % inner, k = (i / inner) % size, o = i / (inner * size);
    const int64_t rel = k - start;
    dx[i] = (rel >= 0 && rel % step == 0 && rel / step < len) ? dy[(o * len + rel / step) * inner + c] : T(0);
  }
}

Status run_slice(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  const TensorView &x = a.in(0), &out = a.out(0);
  SliceAttrs s;
  s.read(a.attr());
  int64_t outer, size, inner;
  cpu::split_at(x, static_cast<int>(s.dim), &outer, &size, &inner);
  const int64_t len = out.shape[s.dim], n = out.numel();
  if (n == 0) return Status::Ok();
  bool ok = cpu::visit_bits(x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    slice_kernel<<<grid_for(n), kBlock, 0, ctx->stream>>>(x.as<T>(), out.as<T>(), n, len, size, inner, s.start, s.step);
  });
  if (!ok) return internal_error("slice: dtype not dispatched");
  ET_CUDA_LAUNCHED("slice");
  return Status::Ok();
}

Status run_slice_backward(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  const TensorView &dy = a.in(0), &out = a.out(0);
  SliceAttrs s;
  s.read(a.attr());
  int64_t outer, size, inner;
  cpu::split_at(out, static_cast<int>(s.dim), &outer, &size, &inner);
  const int64_t len = dy.shape[s.dim], n = out.numel();
  if (n == 0) return Status::Ok();
  bool ok = cpu::visit_bits(out.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    slice_backward_kernel<<<grid_for(n), kBlock, 0, ctx->stream>>>(dy.as<T>(), out.as<T>(), n, len, size, inner,
                                                                    s.start, s.step);
  });
  if (!ok) return internal_error("slice_backward: dtype not dispatched");
  ET_CUDA_LAUNCHED("slice_backward");
  return Status::Ok();
}

// ---- cast ------------------------------------------------------------------------------------------------
template <typename To, typename From>
__device__ To convert(From v) {
  if constexpr (std::is_same_v<To, bool>) {
    return v != From(0);
  } else if constexpr (std::is_floating_point_v<From> && std::is_integral_v<To>) {
    if (!(v == v)) return To(0);
    if (v <= static_cast<From>(std::numeric_limits<To>::min())) return std::numeric_limits<To>::min();
    if (v >= static_cast<From>(std::numeric_limits<To>::max())) return std::numeric_limits<To>::max();
    return static_cast<To>(v);
  } else {
    return static_cast<To>(v);
  }
}

template <typename To, typename From>
__global__ void cast_kernel(const From* x, To* y, int64_t n) {
  ET_GRID_LOOP(i, n) y[i] = convert<To>(x[i]);
}

Status run_cast(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  const TensorView &x = a.in(0), &out = a.out(0);
  if (x.dtype == out.dtype) return copy_async(ctx, out.data, x.data, x.nbytes());
  const int64_t n = x.numel();
  if (n == 0) return Status::Ok();
  bool ok = false;
  cpu::visit_value(x.dtype, [&](auto from_tag) {
    using From = typename decltype(from_tag)::type;
    ok = cpu::visit_value(out.dtype, [&](auto to_tag) {
      using To = typename decltype(to_tag)::type;
      cast_kernel<<<grid_for(n), kBlock, 0, ctx->stream>>>(x.as<From>(), out.as<To>(), n);
    });
  });
  if (!ok) return internal_error("cast: dtype not dispatched");
  ET_CUDA_LAUNCHED("cast");
  return Status::Ok();
}

}  // namespace

void register_shape_kernels(KernelRegistry& r) {
  add_like_cpu(r, "reshape", "reshape", nullptr, &run_reshape);
  add_like_cpu(r, "permute", "permute", nullptr, &run_permute);
  add_like_cpu(r, "expand", "expand", nullptr, &run_expand);
  add_like_cpu(r, "sum_to", "sum_to", &workspace_sum_to, &run_sum_to);
  add_like_cpu(r, "concat", "concat", nullptr, &run_concat);
  add_like_cpu(r, "slice", "slice", nullptr, &run_slice);
  add_like_cpu(r, "slice_backward", "slice_backward", nullptr, &run_slice_backward);
  add_like_cpu(r, "cast", "cast", nullptr, &run_cast);
}

}  // namespace cuda
}  // namespace edgetune
