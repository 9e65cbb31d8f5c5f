// CUDA kernels for compiler/ops/reduce.py: sum and mean over a sorted list of dims (the CPU's
// reduce.cc semantics and checks), on the reduction engine of reduction.h, defined here.
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "kernels/cuda/reduction.h"

namespace edgetune {
namespace cuda {
namespace {

using cpu::AccOf;  // sums of floats in double, of integers in int64: as the cpu kernels

struct RedDesc {
  int nk = 0, nr = 0;  // kept / reduced dims (merged, size-1 dropped), outermost first
  int64_t kshape[kMaxRank] = {0}, kstride[kMaxRank] = {0};
  int64_t rshape[kMaxRank] = {0}, rstride[kMaxRank] = {0};
  int64_t out_numel = 1, red_numel = 1;
  bool inner_kept = false;  // the input's innermost (non-1) dim is kept: thread per output coalesces
  int64_t splits = 1;

  __host__ __device__ static int64_t offset(int64_t i, int n, const int64_t* shape, const int64_t* stride) {
    int64_t off = 0;
    for (int d = n - 1; d >= 0; --d) {
      off += (i % shape[d]) * stride[d];
      i /= shape[d];
    }
    return off;
  }
  __device__ int64_t kept(int64_t o) const { return offset(o, nk, kshape, kstride); }
  __device__ int64_t red(int64_t r) const { return offset(r, nr, rshape, rstride); }
};

constexpr int64_t kChunk = 1 << 16;  // reduced elements per split
constexpr int64_t kMaxSplits = 64;
constexpr int64_t kColumnOutputs = 2048;

RedDesc describe(const TensorView& in, const bool* reduced) {
  RedDesc r;
  int64_t stride[kMaxRank];
  int64_t s = 1;
  for (int d = in.rank - 1; d >= 0; --d) {
    stride[d] = s;
    s *= in.shape[d];
  }
  int last = -1;  // innermost non-1 dim
  for (int d = 0; d < in.rank; ++d) {
    if (reduced[d]) r.red_numel *= in.shape[d];
    else r.out_numel *= in.shape[d];
    if (in.shape[d] == 1) continue;
    last = d;
    int& n = reduced[d] ? r.nr : r.nk;
    int64_t* shp = reduced[d] ? r.rshape : r.kshape;
    int64_t* str = reduced[d] ? r.rstride : r.kstride;
    if (n > 0 && str[n - 1] == stride[d] * in.shape[d]) {  // contiguous with the previous dim of its kind
      shp[n - 1] *= in.shape[d];
      str[n - 1] = stride[d];
      continue;
    }
    shp[n] = in.shape[d];
    str[n] = stride[d];
    ++n;
  }
  r.inner_kept = last >= 0 && !reduced[last];
  if (r.out_numel > 0 && r.red_numel > 0 && !(r.inner_kept && r.out_numel >= kColumnOutputs) && r.out_numel < 1024)
    r.splits = std::max<int64_t>(1, std::min<int64_t>(kMaxSplits, r.red_numel / kChunk));
  return r;
}

template <typename T, typename Acc>
__device__ T finish(Acc acc, bool mean, int64_t count) {
  if (mean) return static_cast<T>(static_cast<double>(acc) / static_cast<double>(count));
  return static_cast<T>(acc);
}

template <typename T>
__global__ void fill_empty(T* out, int64_t n, bool mean) {
  ET_GRID_LOOP(i, n) {
    if constexpr (std::is_floating_point_v<T>) out[i] = mean ? static_cast<T>(nan("")) : T(0);
    else out[i] = T(0);
  }
}

// one thread per output element, the reduced positions in order
template <typename T>
__global__ void reduce_columns(const T* in, T* out, RedDesc d, bool mean) {
  using Acc = typename AccOf<T>::type;
  ET_GRID_LOOP(o, d.out_numel) {
    const T* base = in + d.kept(o);
    Acc acc = 0;
    for (int64_t r = 0; r < d.red_numel; ++r) acc += static_cast<Acc>(base[d.red(r)]);
    out[o] = finish<T>(acc, mean, d.red_numel);
  }
}

// one block per (output, split): threads stride over the split's range, then a fixed tree
template <typename T>
__global__ void reduce_blocks(const T* in, T* out, typename AccOf<T>::type* part, RedDesc d, bool mean) {
  using Acc = typename AccOf<T>::type;
  __shared__ Acc smem[kBlock];
  const int64_t s = blockIdx.y;
  const int64_t r0 = d.red_numel * s / d.splits, r1 = d.red_numel * (s + 1) / d.splits;
  for (int64_t o = blockIdx.x; o < d.out_numel; o += gridDim.x) {
    const T* base = in + d.kept(o);
    Acc acc = 0;
    for (int64_t r = r0 + threadIdx.x; r < r1; r += blockDim.x) acc += static_cast<Acc>(base[d.red(r)]);
    acc = block_sum(acc, smem);
    if (threadIdx.x == 0) {
      if (d.splits == 1) out[o] = finish<T>(acc, mean, d.red_numel);
      else part[s * d.out_numel + o] = acc;
    }
  }
}

template <typename T>
__global__ void reduce_splits(const typename AccOf<T>::type* part, T* out, RedDesc d, bool mean) {
  using Acc = typename AccOf<T>::type;
  ET_GRID_LOOP(o, d.out_numel) {
    Acc acc = 0;
    for (int64_t s = 0; s < d.splits; ++s) acc += part[s * d.out_numel + o];
    out[o] = finish<T>(acc, mean, d.red_numel);
  }
}

size_t workspace_reduce(const KernelArgs& a) {
  bool reduced[kMaxRank];
  if (!cpu::reduced_dims(a, reduced)) return 0;
  return reduction_workspace(a.in(0), reduced);
}

template <bool kMean>
Status run_reduce(const KernelArgs& a) {
  bool reduced[kMaxRank];
  if (!cpu::reduced_dims(a, reduced)) return internal_error("reduce: shapes changed after check");
  return reduction_run(a, a.in(0), reduced, a.out(0), kMean);
}

}  // namespace

size_t reduction_workspace(const TensorView& in, const bool* reduced) {
  const RedDesc d = describe(in, reduced);
  return d.splits > 1 ? static_cast<size_t>(d.splits * d.out_numel) * 8 : 0;
}

Status reduction_run(const KernelArgs& a, const TensorView& in, const bool* reduced, const TensorView& out, bool mean) {
  ET_CUDA_CONTEXT(ctx, a);
  const RedDesc d = describe(in, reduced);
  if (d.out_numel == 0) return Status::Ok();
  if (d.splits > 1 && (!a.workspace || a.workspace_bytes < reduction_workspace(in, reduced)))
    return internal_error("reduction: workspace of " + std::to_string(a.workspace_bytes) + " bytes is too small");
  bool ok = cpu::visit_arith(in.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using Acc = typename AccOf<T>::type;
    const T* x = in.as<T>();
    T* y = out.as<T>();
    if (d.red_numel == 0) {
      fill_empty<<<grid_for(d.out_numel), kBlock, 0, ctx->stream>>>(y, d.out_numel, mean);
    } else if (d.inner_kept && d.out_numel >= kColumnOutputs) {
      reduce_columns<<<grid_for(d.out_numel), kBlock, 0, ctx->stream>>>(x, y, d, mean);
    } else {
      Acc* part = static_cast<Acc*>(a.workspace);
      dim3 grid(static_cast<unsigned>(std::min<int64_t>(d.out_numel, 65535)), static_cast<unsigned>(d.splits));
      reduce_blocks<<<grid, kBlock, 0, ctx->stream>>>(x, y, part, d, mean);
      if (d.splits > 1) reduce_splits<<<grid_for(d.out_numel), kBlock, 0, ctx->stream>>>(part, y, d, mean);
    }
  });
  if (!ok) return internal_error("reduction: dtype not dispatched");
  ET_CUDA_LAUNCHED("reduction");
  return Status::Ok();
}

void register_reduce_kernels(KernelRegistry& r) {
  add_like_cpu(r, "sum", "sum", &workspace_reduce, &run_reduce<false>);
  add_like_cpu(r, "mean", "mean", &workspace_reduce, &run_reduce<true>);
}

}  // namespace cuda
}  // namespace edgetune
