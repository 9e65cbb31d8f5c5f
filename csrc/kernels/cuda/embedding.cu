// CUDA kernels for compiler/ops/embedding.py: embedding (a row gather; any weight dtype, moved as
// bits) and embedding_backward (rows of dy summed into a [num_weights, dim] gradient, padding_idx
// row left at zero), deterministic without float atomics: a stable counting sort of the positions
// by index (counts with integer atomics, whose result does not depend on order; an exclusive scan;
// each position's rank among equal indices counted exactly), then each gradient element sums its
// row's dy entries in position order, as the CPU does, so the result is bit-identical to it.
// Indices outside [0, num_weights) give zero rows (forward) and are skipped (backward): the CPU
// kernel reports them, the device cannot without a sync.
#include "kernels/cuda/cuda_util.h"

namespace edgetune {
namespace cuda {
namespace {

template <typename T, typename I>
__global__ void gather_rows(const T* w, const I* idx, T* out, int64_t n, int64_t rows, int64_t dim) {
  const int64_t total = n * dim;
  ET_GRID_LOOP(e, total) {
    const int64_t r = static_cast<int64_t>(idx[e / dim]);
    out[e] = (r >= 0 && r < rows) ? w[r * dim + e % dim] : T(0);
  }
}

Status run_embedding(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  const TensorView &w = a.in(0), &idx = a.in(1), &out = a.out(0);
  const int64_t rows = w.shape[0], dim = w.shape[1], n = idx.numel();
  if (n * dim == 0) return Status::Ok();
  bool ok = cpu::visit_bits(w.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (idx.dtype == DType::i64)
      gather_rows<<<grid_for(n * dim), kBlock, 0, ctx->stream>>>(w.as<T>(), idx.as<int64_t>(), out.as<T>(), n, rows, dim);
    else
      gather_rows<<<grid_for(n * dim), kBlock, 0, ctx->stream>>>(w.as<T>(), idx.as<int32_t>(), out.as<T>(), n, rows, dim);
  });
  if (!ok) return internal_error("embedding: dtype not dispatched");
  ET_CUDA_LAUNCHED("embedding");
  return Status::Ok();
}

// workspace: count[rows + 1] (then offsets), order[n]  (int32 each, rows/n < 2^31)
size_t workspace_embedding_backward(const KernelArgs& a) {
  const int64_t rows = a.out(0).shape[0], n = a.in(1).numel();
  return static_cast<size_t>(rows + 1 + n) * sizeof(int32_t);
}

template <typename I>
__device__ bool counted(I v, int64_t rows, int64_t pad) {
  const int64_t r = static_cast<int64_t>(v);
  return r >= 0 && r < rows && r != pad;
}

template <typename I>
__global__ void count_rows(const I* idx, int64_t n, int64_t rows, int64_t pad, int32_t* count) {
  ET_GRID_LOOP(i, n) if (counted(idx[i], rows, pad)) atomicAdd(&count[idx[i]], 1);
}

// exclusive scan of count[0..rows) in place (count[rows] = total), one block, fixed order
__global__ void scan_counts(int32_t* count, int64_t rows) {
  __shared__ int64_t part[kBlock];
  const int64_t per = (rows + blockDim.x - 1) / blockDim.x, b = threadIdx.x * per, e = min(rows, b + per);
  int64_t s = 0;
  for (int64_t i = b; i < e; ++i) s += count[i];
  part[threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    int64_t run = 0;
    for (int t = 0; t < static_cast<int>(blockDim.x); ++t) {
      const int64_t v = part[t];
      part[t] = run;
      run += v;
    }
    count[rows] = static_cast<int32_t>(run);
  }
  __syncthreads();
  int64_t run = part[threadIdx.x];
  for (int64_t i = b; i < e; ++i) {
    const int64_t v = count[i];
    count[i] = static_cast<int32_t>(run);
    run += v;
  }
}

// order[offset[r] + rank] = i, rank = positions before i with the same index
template <typename I>
__global__ void place_positions(const I* idx, int64_t n, int64_t rows, int64_t pad, const int32_t* offset, int32_t* order) {
  ET_GRID_LOOP(i, n) {
    const I v = idx[i];
    if (!counted(v, rows, pad)) continue;
    int64_t rank = 0;
    for (int64_t j = 0; j < i; ++j) rank += idx[j] == v;
    order[offset[static_cast<int64_t>(v)] + rank] = static_cast<int32_t>(i);
  }
}

template <typename T>
__global__ void sum_rows(const T* dy, const int32_t* offset, const int32_t* order, T* dw, int64_t rows, int64_t dim) {
  const int64_t total = rows * dim;
  ET_GRID_LOOP(e, total) {
    const int64_t r = e / dim, j = e % dim;
    T s = T(0);
    for (int32_t k = offset[r]; k < offset[r + 1]; ++k) s += dy[static_cast<int64_t>(order[k]) * dim + j];
    dw[e] = s;
  }
}

template <typename T, typename I>
Status embedding_backward(const KernelArgs& a, CudaContext* ctx) {
  const TensorView &dy = a.in(0), &idx = a.in(1), &out = a.out(0);
  const int64_t rows = out.shape[0], dim = out.shape[1], n = idx.numel();
  const int64_t pad = a.attr().has("padding_idx") ? a.attr().get_int("padding_idx") : -1;
  if (a.workspace_bytes < workspace_embedding_backward(a) || !a.workspace)
    return internal_error("embedding_backward: workspace too small");
  int32_t* count = static_cast<int32_t*>(a.workspace);
  int32_t* order = count + rows + 1;
  ET_RETURN_IF_ERROR(zero_async(ctx, count, static_cast<size_t>(rows + 1) * sizeof(int32_t)));
  if (n > 0) {
    count_rows<<<grid_for(n), kBlock, 0, ctx->stream>>>(idx.as<I>(), n, rows, pad, count);
    scan_counts<<<1, kBlock, 0, ctx->stream>>>(count, rows);
    place_positions<<<grid_for(n), kBlock, 0, ctx->stream>>>(idx.as<I>(), n, rows, pad, count, order);
  }
  if (rows * dim > 0) sum_rows<<<grid_for(rows * dim), kBlock, 0, ctx->stream>>>(dy.as<T>(), count, order, out.as<T>(), rows, dim);
  ET_CUDA_LAUNCHED("embedding_backward");
  return Status::Ok();
}

Status run_embedding_backward(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  const bool i64 = a.in(1).dtype == DType::i64;
  if (a.in(0).dtype == DType::f64) return i64 ? embedding_backward<double, int64_t>(a, ctx) : embedding_backward<double, int32_t>(a, ctx);
  return i64 ? embedding_backward<float, int64_t>(a, ctx) : embedding_backward<float, int32_t>(a, ctx);
}

}  // namespace

void register_embedding_kernels(KernelRegistry& r) {
  add_like_cpu(r, "embedding", "embedding", nullptr, &run_embedding);
  add_like_cpu(r, "embedding_backward", "embedding_backward", &workspace_embedding_backward, &run_embedding_backward);
}

}  // namespace cuda
}  // namespace edgetune
