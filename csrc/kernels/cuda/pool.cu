// CUDA kernels for compiler/ops/pool.py (kernels/cpu/pool.cc on the device): max_pool2d (with
// indices, NaN propagates, the first maximum in (i, j) order wins, -1 where the winner is padding),
// its backward, avg_pool2d and its backward, f32. Forward: one thread per output. Backward: the
// avg gradient is gathered per input element (fixed window order); max's scatter runs one thread
// per (image, channel) plane in output order, as the CPU does, so sums are bit-identical.
#include <algorithm>
#include <cmath>

#include "kernels/cuda/cuda_util.h"

namespace edgetune {
namespace cuda {
namespace {

struct Pool {
  int64_t N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, HO, WO;
  bool ceil_mode;
  bool include_pad;
  int64_t div_override;
};

int64_t pool_out(int64_t size, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil_mode) {
  const int64_t span = size + 2 * p - d * (k - 1) - 1;
  if (span < 0) return 0;
  int64_t out = (ceil_mode ? (span + s - 1) / s : span / s) + 1;
  if (ceil_mode && (out - 1) * s >= size + p) --out;
  return out;
}

void make_pool(const Attrs& at, const int64_t* xs, Pool* p) {
  p->N = xs[0], p->C = xs[1], p->H = xs[2], p->W = xs[3];
  at.get_pair("kernel", 0, &p->KH, &p->KW);
  at.get_pair("stride", 0, &p->SH, &p->SW);
  at.get_pair("padding", 0, &p->PH, &p->PW);
  at.get_pair("dilation", 1, &p->DH, &p->DW);
  if (p->SH == 0 && p->SW == 0) p->SH = p->KH, p->SW = p->KW;
  p->ceil_mode = at.get_int("ceil_mode", 0) != 0;
  p->HO = pool_out(p->H, p->KH, p->SH, p->PH, p->DH, p->ceil_mode);
  p->WO = pool_out(p->W, p->KW, p->SW, p->PW, p->DW, p->ceil_mode);
  p->include_pad = at.get_int("count_include_pad", 1) != 0;
  p->div_override = at.get_int("divisor_override", 0);
}

__global__ void max_kernel(const float* x, float* y, int64_t* idx, Pool p) {
  const int64_t oplane = p.HO * p.WO, total = p.N * p.C * oplane;
  ET_GRID_LOOP(e, total) {
    const int64_t ow = e % p.WO, oh = (e / p.WO) % p.HO, q = e / oplane;
    const float* xp = x + q * p.H * p.W;
    float b = -INFINITY;
    int64_t k_best = 0;
    for (int64_t i = 0; i < p.KH; ++i) {
      const int64_t ih = oh * p.SH - p.PH + i * p.DH;
      if (ih < 0 || ih >= p.H) continue;
      for (int64_t j = 0; j < p.KW; ++j) {
        const int64_t iw = ow * p.SW - p.PW + j * p.DW;
        if (iw < 0 || iw >= p.W) continue;
        const float v = xp[ih * p.W + iw];
        if (v > b || (v != v && b == b)) b = v, k_best = i * p.KW + j;
      }
    }
    const int64_t ih = oh * p.SH - p.PH + (k_best / p.KW) * p.DH, iw = ow * p.SW - p.PW + (k_best % p.KW) * p.DW;
    y[e] = b;
    idx[e] = ih >= 0 && ih < p.H && iw >= 0 && iw < p.W ? ih * p.W + iw : -1;
  }
}

__global__ void max_backward_kernel(const float* dy, const int64_t* idx, float* dx, int64_t planes, int64_t plane,
                                    int64_t oplane) {
  ET_GRID_LOOP(q, planes) {
    float* dxp = dx + q * plane;
    const float* dyp = dy + q * oplane;
    const int64_t* ip = idx + q * oplane;
    for (int64_t k = 0; k < oplane; ++k) {
      const int64_t i = ip[k];
      if (i >= 0 && i < plane) dxp[i] += dyp[k];
    }
  }
}

__device__ void extent(int64_t o, int64_t k, int64_t s, int64_t p, int64_t size, int64_t* start, int64_t* end, int64_t* pool) {
  const int64_t st = o * s - p;
  const int64_t en = min(st + k, size + p);
  *pool = en - st;
  *start = max(st, int64_t{0});
  *end = min(en, size);
}

__device__ int64_t avg_div(const Pool& p, int64_t ph, int64_t pw, int64_t h0, int64_t h1, int64_t w0, int64_t w1) {
  return p.div_override ? p.div_override : p.include_pad ? ph * pw : (h1 - h0) * (w1 - w0);
}

__global__ void avg_kernel(const float* x, float* y, Pool p) {
  const int64_t oplane = p.HO * p.WO, total = p.N * p.C * oplane;
  ET_GRID_LOOP(e, total) {
    const int64_t ow = e % p.WO, oh = (e / p.WO) % p.HO, q = e / oplane;
    const float* xp = x + q * p.H * p.W;
    int64_t h0, h1, ph, w0, w1, pw;
    extent(oh, p.KH, p.SH, p.PH, p.H, &h0, &h1, &ph);
    extent(ow, p.KW, p.SW, p.PW, p.W, &w0, &w1, &pw);
    double s = 0;
    for (int64_t ih = h0; ih < h1; ++ih)
      for (int64_t iw = w0; iw < w1; ++iw) s += xp[ih * p.W + iw];
    y[e] = static_cast<float>(s / static_cast<double>(avg_div(p, ph, pw, h0, h1, w0, w1)));
  }
}

// gather form: input element (ih, iw) collects every window that covers it, windows in output order
__global__ void avg_backward_kernel(const float* dy, float* dx, Pool p) {
  const int64_t plane = p.H * p.W, total = p.N * p.C * plane;
  ET_GRID_LOOP(e, total) {
    const int64_t iw = e % p.W, ih = (e / p.W) % p.H, q = e / plane;
    const float* dyp = dy + q * p.HO * p.WO;
    float s = 0.0f;
    // windows start at o*S - P and span K: o in [ceil((i + P - K + 1) / S), floor((i + P) / S)]
    const int64_t oh0 = max(int64_t{0}, (ih + p.PH - p.KH + p.SH) / p.SH), oh1 = min(p.HO - 1, (ih + p.PH) / p.SH);
    const int64_t ow0 = max(int64_t{0}, (iw + p.PW - p.KW + p.SW) / p.SW), ow1 = min(p.WO - 1, (iw + p.PW) / p.SW);
    for (int64_t oh = oh0; oh <= oh1; ++oh) {
      int64_t h0, h1, ph;
      extent(oh, p.KH, p.SH, p.PH, p.H, &h0, &h1, &ph);
      if (ih < h0 || ih >= h1) continue;
      for (int64_t ow = ow0; ow <= ow1; ++ow) {
        int64_t w0, w1, pw;
        extent(ow, p.KW, p.SW, p.PW, p.W, &w0, &w1, &pw);
        if (iw < w0 || iw >= w1) continue;
        s += static_cast<float>(dyp[oh * p.WO + ow] / static_cast<double>(avg_div(p, ph, pw, h0, h1, w0, w1)));
      }
    }
    dx[e] = s;
  }
}

Status max_run(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  Pool p;
  make_pool(a.attr(), a.in(0).shape, &p);
  const int64_t n = a.out(0).numel();
  if (n == 0) return Status::Ok();
  max_kernel<<<grid_for(n), kBlock, 0, ctx->stream>>>(a.in(0).as<float>(), a.out(0).as<float>(), a.out(1).as<int64_t>(), p);
  ET_CUDA_LAUNCHED("max_pool2d");
  return Status::Ok();
}

Status max_backward_run(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  const TensorView &dy = a.in(0), &dx = a.out(0);
  const int64_t planes = dx.shape[0] * dx.shape[1], plane = dx.shape[2] * dx.shape[3], oplane = dy.shape[2] * dy.shape[3];
  ET_RETURN_IF_ERROR(zero_async(ctx, dx.data, dx.nbytes()));
  if (planes == 0) return Status::Ok();
  max_backward_kernel<<<grid_for(planes, 64), 64, 0, ctx->stream>>>(dy.as<float>(), a.in(1).as<int64_t>(), dx.as<float>(),
                                                                     planes, plane, oplane);
  ET_CUDA_LAUNCHED("max_pool2d_backward");
  return Status::Ok();
}

Status avg_run(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  Pool p;
  make_pool(a.attr(), a.in(0).shape, &p);
  const int64_t n = a.out(0).numel();
  if (n == 0) return Status::Ok();
  avg_kernel<<<grid_for(n), kBlock, 0, ctx->stream>>>(a.in(0).as<float>(), a.out(0).as<float>(), p);
  ET_CUDA_LAUNCHED("avg_pool2d");
  return Status::Ok();
}

Status avg_backward_run(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  int64_t xs[4];
  cpu::read_shape4(a.attr(), "input_shape", xs);
  Pool p;
  make_pool(a.attr(), xs, &p);
  const int64_t n = a.out(0).numel();
  if (n == 0) return Status::Ok();
  avg_backward_kernel<<<grid_for(n), kBlock, 0, ctx->stream>>>(a.in(0).as<float>(), a.out(0).as<float>(), p);
  ET_CUDA_LAUNCHED("avg_pool2d_backward");
  return Status::Ok();
}

}  // namespace

void register_pool_kernels(KernelRegistry& r) {
  add_like_cpu(r, "max_pool2d", "max_pool2d", nullptr, &max_run);
  add_like_cpu(r, "max_pool2d_backward", "max_pool2d_backward", nullptr, &max_backward_run);
  add_like_cpu(r, "avg_pool2d", "avg_pool2d", nullptr, &avg_run);
  add_like_cpu(r, "avg_pool2d_backward", "avg_pool2d_backward", nullptr, &avg_backward_run);
}

}  // namespace cuda
}  // namespace edgetune
