// CUDA kernels for compiler/ops/loss.py (kernels/cpu/loss.cc on the device): cross_entropy (label
// smoothing, ignore_index), nll_loss, their backward ops, mse_loss; mean / sum / none. Per-row work
// is one block per row (max and sums as fixed-order trees, in double); the batch sum and the count
// of non-ignored targets (mean's divisor) are single-block fixed-order reductions on the device,
// through the workspace. A target outside [0, C) that is not ignore_index makes its row's loss
// (and the mean) NaN: the CPU kernel reports it as an error, the device cannot without a sync.
#include <cmath>

#include "kernels/cpu/elementwise_math.h"
#include "kernels/cuda/cuda_util.h"

namespace edgetune {
namespace cuda {
namespace {

enum Red : int { kMean = 0, kSum = 1, kNone = 2 };

Red reduction_of(const KernelArgs& a) {
  if (!a.attr().has("reduction")) return kMean;
  const std::string& s = a.attr().get_string("reduction");
  return s == "sum" ? kSum : s == "none" ? kNone : kMean;
}

__device__ inline int64_t target_at(const void* t, bool i64, int64_t i) {
  return i64 ? static_cast<const int64_t*>(t)[i] : static_cast<int64_t>(static_cast<const int32_t*>(t)[i]);
}

// denominator of the mean (max(valid, 1)) or 1, into *denom; one block
__global__ void denom_kernel(const void* t, bool i64, int64_t n, int64_t ignore, Red r, double* denom) {
  __shared__ int64_t sm[kBlock];
  int64_t v = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) v += target_at(t, i64, i) != ignore;
  v = block_sum(v, sm);
  if (threadIdx.x == 0) *denom = r == kMean ? static_cast<double>(v > 1 ? v : 1) : 1.0;
}

// sum of rows[0..n) / denom into out[0]; one block
template <typename T>
__global__ void finish_kernel(const double* rows, int64_t n, const double* denom, T* out) {
  __shared__ double sm[kBlock];
  double s = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += rows[i];
  s = block_sum(s, sm);
  if (threadIdx.x == 0) out[0] = static_cast<T>(s / *denom);
}

template <typename T>
__global__ void ce_rows(const T* x, const void* t, bool i64, int64_t n, int64_t c, int64_t ignore, double ls, T* out_none,
                        double* rows) {
  __shared__ double sd[kBlock];
  __shared__ T sm[kBlock];
  for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
    const int64_t tg = target_at(t, i64, i);
    const T* row = x + i * c;
    double loss = 0;
    if (tg != ignore && c > 0) {
      T m = row[0];
      for (int64_t j = threadIdx.x; j < c; j += blockDim.x) m = row[j] > m ? row[j] : m;
      m = block_max(m, sm);
      double s = 0, sx = 0;
      for (int64_t j = threadIdx.x; j < c; j += blockDim.x) {
        s += static_cast<double>(cpu::exp_any(row[j] - m));
        sx += static_cast<double>(row[j]);
      }
      s = block_sum(s, sd);
      sx = block_sum(sx, sd);
      const double lse = static_cast<double>(m) + log(s);
      if (tg < 0 || tg >= c) {
        loss = nan("");
      } else {
        loss = lse - static_cast<double>(row[tg]);
        if (ls != 0.0) loss = (1 - ls) * loss - ls / static_cast<double>(c) * (sx - static_cast<double>(c) * lse);
      }
    }
    if (threadIdx.x == 0) {
      if (out_none) out_none[i] = static_cast<T>(loss);
      else rows[i] = loss;
    }
  }
}

template <typename T>
__global__ void ce_backward_rows(const T* dl, const T* x, const void* t, bool i64, int64_t n, int64_t c, int64_t ignore,
                                 double ls, bool none, const double* denom, T* g) {
  __shared__ double sd[kBlock];
  __shared__ T sm[kBlock];
  for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
    const int64_t tg = target_at(t, i64, i);
    T* gr = g + i * c;
    if (tg == ignore) {
      for (int64_t j = threadIdx.x; j < c; j += blockDim.x) gr[j] = T(0);
      continue;
    }
    const T* row = x + i * c;
    T m = row[0];
    for (int64_t j = threadIdx.x; j < c; j += blockDim.x) m = row[j] > m ? row[j] : m;
    m = block_max(m, sm);
    double s = 0;
    for (int64_t j = threadIdx.x; j < c; j += blockDim.x) s += static_cast<double>(cpu::exp_any(row[j] - m));
    s = block_sum(s, sd);
    const bool bad = tg < 0 || tg >= c;
    const double scale = static_cast<double>(dl[none ? i : 0] / static_cast<T>(*denom));
    const double inv_s = 1.0 / s, smooth = ls / static_cast<double>(c);
    for (int64_t j = threadIdx.x; j < c; j += blockDim.x) {
      const double p = static_cast<double>(cpu::exp_any(row[j] - m)) * inv_s;
      const double v = j == tg ? (p - (1.0 - ls) - smooth) * scale : (p - smooth) * scale;
      gr[j] = bad ? static_cast<T>(nan("")) : static_cast<T>(v);
    }
  }
}

template <typename T>
__global__ void nll_rows(const T* x, const void* t, bool i64, int64_t n, int64_t c, int64_t ignore, T* out_none, double* rows) {
  ET_GRID_LOOP(i, n) {
    const int64_t tg = target_at(t, i64, i);
    const double loss = tg == ignore ? 0.0 : (tg < 0 || tg >= c) ? nan("") : -static_cast<double>(x[i * c + tg]);
    if (out_none) out_none[i] = static_cast<T>(loss);
    else rows[i] = loss;
  }
}

template <typename T>
__global__ void nll_backward_kernel(const T* dl, const void* t, bool i64, int64_t n, int64_t c, int64_t ignore, bool none,
                                    const double* denom, T* g) {
  const int64_t total = n * c;
  ET_GRID_LOOP(e, total) {
    const int64_t i = e / c, j = e % c;
    const int64_t tg = target_at(t, i64, i);
    T v = T(0);
    if (tg != ignore && (tg < 0 || tg >= c)) v = static_cast<T>(nan(""));
    else if (tg != ignore && j == tg) v = static_cast<T>(-(static_cast<double>(dl[none ? i : 0]) / *denom));
    g[e] = v;
  }
}

constexpr int64_t kMseChunk = 1 << 14;

template <typename T>
__global__ void mse_none(const T* x, const T* y, T* o, int64_t n) {
  ET_GRID_LOOP(i, n) {
    const double d = static_cast<double>(x[i]) - static_cast<double>(y[i]);
    o[i] = static_cast<T>(d * d);
  }
}

template <typename T>
__global__ void mse_chunks(const T* x, const T* y, int64_t n, double* part) {
  __shared__ double sm[kBlock];
  const int64_t chunks = (n + kMseChunk - 1) / kMseChunk;
  for (int64_t k = blockIdx.x; k < chunks; k += gridDim.x) {
    const int64_t i1 = min(n, (k + 1) * kMseChunk);
    double s = 0;
    for (int64_t i = k * kMseChunk + threadIdx.x; i < i1; i += blockDim.x) {
      const double d = static_cast<double>(x[i]) - static_cast<double>(y[i]);
      s += d * d;
    }
    s = block_sum(s, sm);
    if (threadIdx.x == 0) part[k] = s;
  }
}

// ---- kernels ----------------------------------------------------------------------------------------
// workspace: [8 bytes: the divisor][rows or chunks: doubles]
size_t workspace_ce(const KernelArgs& a) { return 8 + (reduction_of(a) == kNone ? 0 : static_cast<size_t>(a.in(0).shape[0]) * 8); }
size_t workspace_8(const KernelArgs&) { return 8; }
size_t workspace_nll(const KernelArgs& a) { return 8 + (reduction_of(a) == kNone ? 0 : static_cast<size_t>(a.in(1).shape[0]) * 8); }
size_t workspace_mse(const KernelArgs& a) {
  return reduction_of(a) == kNone ? 0 : 8 + static_cast<size_t>((a.in(0).numel() + kMseChunk - 1) / kMseChunk) * 8;
}

Status need_ws(const KernelArgs& a, size_t bytes) {
  if (bytes == 0 || (a.workspace && a.workspace_bytes >= bytes)) return Status::Ok();
  return internal_error("loss: workspace too small");
}

unsigned rows_grid(int64_t n) { return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(n, 65535 * 16))); }

Status run_cross_entropy(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  ET_RETURN_IF_ERROR(need_ws(a, workspace_ce(a)));
  const TensorView &x = a.in(0), &t = a.in(1), &out = a.out(0);
  const int64_t n = x.shape[0], c = x.shape[1], ignore = a.attr().get_int("ignore_index", -100);
  const double ls = a.attr().get_float("label_smoothing", 0.0);
  const Red r = reduction_of(a);
  const bool i64 = t.dtype == DType::i64;
  double* denom = static_cast<double*>(a.workspace);
  double* rows = denom + 1;
  bool ok = cpu::visit_float(x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (n > 0) ce_rows<<<rows_grid(n), kBlock, 0, ctx->stream>>>(x.as<T>(), t.data, i64, n, c, ignore, ls,
                                                                 r == kNone ? out.as<T>() : nullptr, rows);
    if (r != kNone) {
      denom_kernel<<<1, kBlock, 0, ctx->stream>>>(t.data, i64, n, ignore, r, denom);
      finish_kernel<<<1, kBlock, 0, ctx->stream>>>(rows, n, denom, out.as<T>());
    }
  });
  if (!ok) return internal_error("cross_entropy: dtype not dispatched");
  ET_CUDA_LAUNCHED("cross_entropy");
  return Status::Ok();
}

Status run_cross_entropy_backward(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  ET_RETURN_IF_ERROR(need_ws(a, 8));
  const TensorView &dl = a.in(0), &x = a.in(1), &t = a.in(2), &out = a.out(0);
  const int64_t n = x.shape[0], c = x.shape[1], ignore = a.attr().get_int("ignore_index", -100);
  const double ls = a.attr().get_float("label_smoothing", 0.0);
  const Red r = reduction_of(a);
  const bool i64 = t.dtype == DType::i64;
  double* denom = static_cast<double*>(a.workspace);
  if (n == 0) return Status::Ok();
  bool ok = cpu::visit_float(x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    denom_kernel<<<1, kBlock, 0, ctx->stream>>>(t.data, i64, n, ignore, r, denom);
    ce_backward_rows<<<rows_grid(n), kBlock, 0, ctx->stream>>>(dl.as<T>(), x.as<T>(), t.data, i64, n, c, ignore, ls,
                                                               r == kNone, denom, out.as<T>());
  });
  if (!ok) return internal_error("cross_entropy_backward: dtype not dispatched");
  ET_CUDA_LAUNCHED("cross_entropy_backward");
  return Status::Ok();
}

Status run_nll_loss(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  ET_RETURN_IF_ERROR(need_ws(a, workspace_nll(a)));
  const TensorView &x = a.in(0), &t = a.in(1), &out = a.out(0);
  const int64_t n = x.shape[0], c = x.shape[1], ignore = a.attr().get_int("ignore_index", -100);
  const Red r = reduction_of(a);
  const bool i64 = t.dtype == DType::i64;
  double* denom = static_cast<double*>(a.workspace);
  double* rows = denom + 1;
  bool ok = cpu::visit_float(x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (n > 0) nll_rows<<<grid_for(n), kBlock, 0, ctx->stream>>>(x.as<T>(), t.data, i64, n, c, ignore,
                                                                 r == kNone ? out.as<T>() : nullptr, rows);
    if (r != kNone) {
      denom_kernel<<<1, kBlock, 0, ctx->stream>>>(t.data, i64, n, ignore, r, denom);
      finish_kernel<<<1, kBlock, 0, ctx->stream>>>(rows, n, denom, out.as<T>());
    }
  });
  if (!ok) return internal_error("nll_loss: dtype not dispatched");
  ET_CUDA_LAUNCHED("nll_loss");
  return Status::Ok();
}

Status run_nll_loss_backward(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  ET_RETURN_IF_ERROR(need_ws(a, 8));
  const TensorView &dl = a.in(0), &t = a.in(1), &out = a.out(0);
  const int64_t n = out.shape[0], c = out.shape[1], ignore = a.attr().get_int("ignore_index", -100);
  const Red r = reduction_of(a);
  const bool i64 = t.dtype == DType::i64;
  double* denom = static_cast<double*>(a.workspace);
  if (n * c == 0) return Status::Ok();
  bool ok = cpu::visit_float(dl.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    denom_kernel<<<1, kBlock, 0, ctx->stream>>>(t.data, i64, n, ignore, r, denom);
    nll_backward_kernel<<<grid_for(n * c), kBlock, 0, ctx->stream>>>(dl.as<T>(), t.data, i64, n, c, ignore, r == kNone,
                                                                     denom, out.as<T>());
  });
  if (!ok) return internal_error("nll_loss_backward: dtype not dispatched");
  ET_CUDA_LAUNCHED("nll_loss_backward");
  return Status::Ok();
}

__global__ void set_denom(double* d, double v) { *d = v; }

Status run_mse_loss(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  ET_RETURN_IF_ERROR(need_ws(a, workspace_mse(a)));
  const TensorView &x = a.in(0), &y = a.in(1), &out = a.out(0);
  const Red r = reduction_of(a);
  const int64_t n = x.numel(), chunks = (n + kMseChunk - 1) / kMseChunk;
  bool ok = cpu::visit_float(x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (r == kNone) {
      if (n > 0) mse_none<<<grid_for(n), kBlock, 0, ctx->stream>>>(x.as<T>(), y.as<T>(), out.as<T>(), n);
      return;
    }
    double* denom = static_cast<double*>(a.workspace);
    double* part = denom + 1;
    set_denom<<<1, 1, 0, ctx->stream>>>(denom, r == kMean ? static_cast<double>(n) : 1.0);
    if (chunks > 0) mse_chunks<<<rows_grid(chunks), kBlock, 0, ctx->stream>>>(x.as<T>(), y.as<T>(), n, part);
    finish_kernel<<<1, kBlock, 0, ctx->stream>>>(part, chunks, denom, out.as<T>());
  });
  if (!ok) return internal_error("mse_loss: dtype not dispatched");
  ET_CUDA_LAUNCHED("mse_loss");
  return Status::Ok();
}

}  // namespace

void register_loss_kernels(KernelRegistry& r) {
  add_like_cpu(r, "cross_entropy", "cross_entropy", &workspace_ce, &run_cross_entropy);
  add_like_cpu(r, "cross_entropy_backward", "cross_entropy_backward", &workspace_8, &run_cross_entropy_backward);
  add_like_cpu(r, "nll_loss", "nll_loss", &workspace_nll, &run_nll_loss);
  add_like_cpu(r, "nll_loss_backward", "nll_loss_backward", &workspace_8, &run_nll_loss_backward);
  add_like_cpu(r, "mse_loss", "mse_loss", &workspace_mse, &run_mse_loss);
}

}  // namespace cuda
}  // namespace edgetune
