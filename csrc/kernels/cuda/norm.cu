// CUDA kernels for compiler/ops/norm.py (kernels/cpu/norm.cc on the device): batch_norm_train /
// _infer / _backward and layer_norm / _backward, f32. Statistics are sums in double over a
// fixed-order block tree (one block per channel or row); the column sums of layer_norm_backward
// (dweight, dbias) give each thread one column and walk the rows in order. The running-stat
// outputs may be the very buffers of the inputs: each channel's values are read before written,
// by the same thread. Checks are the CPU kernels'. batch_norm_train / _infer clamp to their fused
// activation (read_activation; -inf/+inf without one) where they write y.
// Layout: batch norm runs NCHW only here; its checks refuse attr layout = "nhwc" (which the CPU
// kernels run) and unknown layouts before the CPU check runs.
#include "kernels/cpu/conv_nhwc.h"
#include "kernels/cpu/elementwise_math.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cuda/cuda_util.h"

namespace edgetune {
namespace cuda {
namespace {

// batch_norm_train: block per channel, shifted sums (shift = first element) as the CPU
__global__ void bn_train_kernel(const float* x, const float* w, const float* b, const float* rm, const float* rv,
                                float* y, float* mean_out, float* invstd_out, float* rm_out, float* rv_out, int64_t N,
                                int64_t C, int64_t S, double eps, double mom, float lo, float hi) {
  __shared__ double s1s[kBlock];
  __shared__ double s2s[kBlock];
  const int64_t count = N * S;
  for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
    const double k0 = count ? x[c * S] : 0.0;
    double s1 = 0, s2 = 0;
    for (int64_t q = threadIdx.x; q < count; q += blockDim.x) {
      const double d = static_cast<double>(x[((q / S) * C + c) * S + q % S]) - k0;
      s1 += d;
      s2 += d * d;
    }
    s1 = block_sum(s1, s1s);
    s2 = block_sum(s2, s2s);
    const double dmean = count ? s1 / count : 0.0;
    const double mean = k0 + dmean;
    const double var = count ? fmax(0.0, s2 / count - dmean * dmean) : 0.0;
    const double invstd = 1.0 / sqrt(var + eps);
    const float mh = static_cast<float>(mean), ml = static_cast<float>(mean - mh);
    const float scale = static_cast<float>(invstd * w[c]), shift = b[c];
    if (threadIdx.x == 0) {
      const double unbiased = static_cast<double>(count) / (count - 1 > 1 ? count - 1 : 1);
      const float rmc = rm[c], rvc = rv[c];
      mean_out[c] = mh;
      invstd_out[c] = static_cast<float>(invstd);
      rm_out[c] = static_cast<float>((1 - mom) * rmc + mom * mean);
      rv_out[c] = static_cast<float>((1 - mom) * rvc + mom * var * unbiased);
    }
    for (int64_t q = threadIdx.x; q < count; q += blockDim.x) {
      const int64_t i = ((q / S) * C + c) * S + q % S;
      const float v = ((x[i] - mh) - ml) * scale + shift;
      y[i] = math::hardtanh(v, lo, hi);
    }
  }
}

__global__ void bn_infer_kernel(const float* x, const float* w, const float* b, const float* rm, const float* rv, float* y,
                                int64_t n, int64_t C, int64_t S, float eps, float lo, float hi) {
  ET_GRID_LOOP(i, n) {
    const int64_t c = (i / S) % C;
    const float scale = w[c] / sqrtf(rv[c] + eps);
    const float shift = b[c] - rm[c] * scale;
    const float v = x[i] * scale + shift;
    y[i] = math::hardtanh(v, lo, hi);
  }
}

__global__ void bn_backward_kernel(const float* dy, const float* x, const float* w, const float* mean, const float* invstd,
                                   float* dx, float* dw, float* db, int64_t N, int64_t C, int64_t S) {
  __shared__ double sa[kBlock];
  __shared__ double sb[kBlock];
  const int64_t count = N * S;
  for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
    const float m = mean[c], is = invstd[c];
    double s_dy = 0, s_dyx = 0;
    for (int64_t q = threadIdx.x; q < count; q += blockDim.x) {
      const int64_t i = ((q / S) * C + c) * S + q % S;
      s_dy += dy[i];
      s_dyx += static_cast<double>(dy[i]) * (x[i] - m);
    }
    s_dy = block_sum(s_dy, sa);
    s_dyx = block_sum(s_dyx, sb);
    const double s_dy_xhat = s_dyx * is;
    if (threadIdx.x == 0) {
      if (dw) dw[c] = static_cast<float>(s_dy_xhat);
      if (db) db[c] = static_cast<float>(s_dy);
    }
    if (!dx) continue;
    const float k = w[c] * is;
    const float c_dy = count ? static_cast<float>(s_dy / count) : 0.0f;
    const float c_xh = count ? static_cast<float>(s_dy_xhat / count) : 0.0f;
    for (int64_t q = threadIdx.x; q < count; q += blockDim.x) {
      const int64_t i = ((q / S) * C + c) * S + q % S;
      dx[i] = k * (dy[i] - c_dy - (x[i] - m) * is * c_xh);
    }
  }
}

__global__ void ln_kernel(const float* x, const float* w, const float* b, float* y, float* mean_out, float* rstd_out,
                          int64_t rows, int64_t D, double eps) {
  __shared__ double sm[kBlock];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * D;
    double s = 0;
    for (int64_t k = threadIdx.x; k < D; k += blockDim.x) s += xr[k];
    const double mean = block_sum(s, sm) / D;
    double q = 0;
    for (int64_t k = threadIdx.x; k < D; k += blockDim.x) {
      const double d = xr[k] - mean;
      q += d * d;
    }
    const double rstd = 1.0 / sqrt(block_sum(q, sm) / D + eps);
    if (threadIdx.x == 0) {
      mean_out[r] = static_cast<float>(mean);
      rstd_out[r] = static_cast<float>(rstd);
    }
    const float mh = static_cast<float>(mean), ml = static_cast<float>(mean - mh), rf = static_cast<float>(rstd);
    for (int64_t k = threadIdx.x; k < D; k += blockDim.x) y[r * D + k] = ((xr[k] - mh) - ml) * rf * w[k] + b[k];
  }
}

__global__ void ln_backward_dx(const float* dy, const float* x, const float* w, const float* mean, const float* rstd,
                               float* dx, int64_t rows, int64_t D) {
  __shared__ double sm[kBlock];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *dyr = dy + r * D, *xr = x + r * D;
    const float m = mean[r], rs = rstd[r];
    double ga = 0, gb = 0;
    for (int64_t k = threadIdx.x; k < D; k += blockDim.x) {
      const float g = dyr[k] * w[k];
      ga += g;
      gb += g * ((xr[k] - m) * rs);
    }
    const double sg = block_sum(ga, sm), sgx = block_sum(gb, sm);
    const float cg = static_cast<float>(sg / D), cx = static_cast<float>(sgx / D);
    for (int64_t k = threadIdx.x; k < D; k += blockDim.x) dx[r * D + k] = rs * (dyr[k] * w[k] - cg - (xr[k] - m) * rs * cx);
  }
}

__global__ void ln_backward_dwdb(const float* dy, const float* x, const float* mean, const float* rstd, float* dw, float* db,
                                 int64_t rows, int64_t D) {
  ET_GRID_LOOP(k, D) {
    double sw = 0, sb = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const float d = dy[r * D + k];
      sw += d * ((x[r * D + k] - mean[r]) * rstd[r]);
      sb += d;
    }
    if (dw) dw[k] = static_cast<float>(sw);
    if (db) db[k] = static_cast<float>(sb);
  }
}

void bn_dims(const TensorView& x, int64_t* N, int64_t* C, int64_t* S) {
  *N = x.shape[0], *C = x.shape[1], *S = 1;
  for (int i = 2; i < x.rank; ++i) *S *= x.shape[i];
}

unsigned blocks_for(int64_t items) { return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(items, 65535))); }

void read_slots(const KernelArgs& a, int slot[3]) {
  const std::vector<int64_t>& m = a.attr().get_ints("output_mask");
  int next = 0;
  for (int i = 0; i < 3; ++i) slot[i] = (i < static_cast<int>(m.size()) && m[i]) ? next++ : -1;
}

Status bn_train_run(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  int64_t N, C, S;
  bn_dims(a.in(0), &N, &C, &S);
  if (C == 0) return Status::Ok();
  float lo, hi;
  ET_RETURN_IF_ERROR(read_activation(a.attr(), "batch_norm_train", &lo, &hi));
  bn_train_kernel<<<blocks_for(C), kBlock, 0, ctx->stream>>>(
      a.in(0).as<float>(), a.in(1).as<float>(), a.in(2).as<float>(), a.in(3).as<float>(), a.in(4).as<float>(),
      a.out(0).as<float>(), a.out(1).as<float>(), a.out(2).as<float>(), a.out(3).as<float>(), a.out(4).as<float>(), N, C,
      S, a.attr().get_float("eps", 1e-5), a.attr().get_float("momentum", 0.1), lo, hi);
  ET_CUDA_LAUNCHED("batch_norm_train");
  return Status::Ok();
}

Status bn_infer_run(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  int64_t N, C, S;
  bn_dims(a.in(0), &N, &C, &S);
  const int64_t n = a.in(0).numel();
  if (n == 0) return Status::Ok();
  float lo, hi;
  ET_RETURN_IF_ERROR(read_activation(a.attr(), "batch_norm_infer", &lo, &hi));
  bn_infer_kernel<<<grid_for(n), kBlock, 0, ctx->stream>>>(a.in(0).as<float>(), a.in(1).as<float>(), a.in(2).as<float>(),
                                                           a.in(3).as<float>(), a.in(4).as<float>(), a.out(0).as<float>(),
                                                           n, C, S, static_cast<float>(a.attr().get_float("eps", 1e-5)),
                                                           lo, hi);
  ET_CUDA_LAUNCHED("batch_norm_infer");
  return Status::Ok();
}

Status bn_backward_run(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  int slot[3];
  read_slots(a, slot);
  int64_t N, C, S;
  bn_dims(a.in(1), &N, &C, &S);
  if (C == 0) return Status::Ok();
  float* dx = slot[0] >= 0 ? a.out(slot[0]).as<float>() : nullptr;
  float* dw = slot[1] >= 0 ? a.out(slot[1]).as<float>() : nullptr;
  float* db = slot[2] >= 0 ? a.out(slot[2]).as<float>() : nullptr;
  bn_backward_kernel<<<blocks_for(C), kBlock, 0, ctx->stream>>>(a.in(0).as<float>(), a.in(1).as<float>(), a.in(2).as<float>(),
                                                                a.in(3).as<float>(), a.in(4).as<float>(), dx, dw, db, N, C, S);
  ET_CUDA_LAUNCHED("batch_norm_backward");
  return Status::Ok();
}

void ln_dims(const KernelArgs& a, const TensorView& x, int64_t* rows, int64_t* D) {
  int64_t d = 1;
  for (int64_t v : a.attr().get_ints("normalized_shape")) d *= v;
  *D = d;
  *rows = d ? x.numel() / d : 0;
}

Status ln_run(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  int64_t rows, D;
  ln_dims(a, a.in(0), &rows, &D);
  if (rows == 0) return Status::Ok();
  ln_kernel<<<blocks_for(rows), kBlock, 0, ctx->stream>>>(a.in(0).as<float>(), a.in(1).as<float>(), a.in(2).as<float>(),
                                                          a.out(0).as<float>(), a.out(1).as<float>(), a.out(2).as<float>(),
                                                          rows, D, a.attr().get_float("eps", 1e-5));
  ET_CUDA_LAUNCHED("layer_norm");
  return Status::Ok();
}

Status ln_backward_run(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  int slot[3];
  read_slots(a, slot);
  int64_t rows, D;
  ln_dims(a, a.in(1), &rows, &D);
  float* dx = slot[0] >= 0 ? a.out(slot[0]).as<float>() : nullptr;
  float* dw = slot[1] >= 0 ? a.out(slot[1]).as<float>() : nullptr;
  float* db = slot[2] >= 0 ? a.out(slot[2]).as<float>() : nullptr;
  const float *dy = a.in(0).as<float>(), *x = a.in(1).as<float>(), *w = a.in(2).as<float>();
  const float *mean = a.in(3).as<float>(), *rstd = a.in(4).as<float>();
  if (dx && rows > 0) {
    ln_backward_dx<<<blocks_for(rows), kBlock, 0, ctx->stream>>>(dy, x, w, mean, rstd, dx, rows, D);
    ET_CUDA_LAUNCHED("layer_norm_backward dx");
  }
  if ((dw || db) && D > 0) {
    ln_backward_dwdb<<<grid_for(D), kBlock, 0, ctx->stream>>>(dy, x, mean, rstd, dw, db, rows, D);
    ET_CUDA_LAUNCHED("layer_norm_backward dweight/dbias");
  }
  return Status::Ok();
}

// The CPU kernel `Name`'s check, after refusing layout nhwc (and unknown layouts).
constexpr char kBnTrain[] = "batch_norm_train";
constexpr char kBnInfer[] = "batch_norm_infer";
constexpr char kBnBackward[] = "batch_norm_backward";
template <const char* Name>
Status nchw_check(const KernelArgs& a) {
  bool is_nhwc;
  ET_RETURN_IF_ERROR(nhwc::read_layout(a.attr(), Name, &is_nhwc));
  if (is_nhwc) return invalid_argument(std::string(Name) + " on cuda runs NCHW only; layout nhwc runs on the cpu backend");
  static const KernelCheck cpu = cpu_check_of(Name);
  return cpu ? cpu(a) : Status::Ok();
}

}  // namespace

void register_norm_kernels(KernelRegistry& r) {
  r.add(KernelDef{"batch_norm_train", kBnTrain, &nchw_check<kBnTrain>, nullptr, &bn_train_run});
  r.add(KernelDef{"batch_norm_infer", kBnInfer, &nchw_check<kBnInfer>, nullptr, &bn_infer_run});
  r.add(KernelDef{"batch_norm_backward", kBnBackward, &nchw_check<kBnBackward>, nullptr, &bn_backward_run});
  add_like_cpu(r, "layer_norm", "layer_norm", nullptr, &ln_run);
  add_like_cpu(r, "layer_norm_backward", "layer_norm_backward", nullptr, &ln_backward_run);
}

}  // namespace cuda
}  // namespace edgetune
