// CUDA kernels for compiler/ops/conv.py: conv2d, conv2d_grad_input, conv2d_grad_weight (NCHW, f32;
// stride, padding, dilation, groups), and every variant name the CPU registers (".im2col",
// ".pointwise", ".depthwise", ".winograd"): a variant accepts what the CPU variant accepts (its
// check) and runs the path the geometry picks, so a plan compiled for cpu loads on cuda.
//
//   depthwise (one input channel per group)  own kernels: forward and grad_input one thread per
//       output element summing its taps in (i, j) order; grad_weight one block per (channel, tap),
//       a fixed-order tree over batch and positions in double.
//   pointwise (1x1, stride 1, no padding)  the image is the GEMM operand: cuBLASLt batched over
//       images (weights stride 0) or, with groups, over groups per image.
//   general  im2col of a chunk of images into the workspace + the same GEMMs; grad_input GEMMs into
//       columns and gathers them back (col2im as a gather: each dx element sums its taps in a fixed
//       order, no atomics); grad_weight accumulates image after image (beta = 1) in stream order.
// Bias, fused activation (relu / hardtanh) and grad_input's activation mask are one epilogue pass
// (cuda_gemm.h) where the GEMM cannot fuse them.
// Layout: NCHW only. The CPU's op-named kernels also run attr layout = "nhwc" (conv_nhwc.cc); here
// every check refuses it (and an unknown layout) before the CPU check runs, so an NHWC plan fails at
// load rather than computing on misread tensors.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include <utility>

#include "kernels/cpu/conv_nhwc.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cuda/cuda_gemm.h"

namespace edgetune {
namespace cuda {
namespace {

constexpr int64_t kColumnBudget = int64_t{64} << 20;  // bytes of im2col columns per chunk of images

struct Conv {
  int64_t N, C, H, W, O, Cg, KH, KW, HO, WO, SH, SW, PH, PW, DH, DW, G;
  int64_t Og() const { return O / G; }
  int64_t kdim() const { return Cg * KH * KW; }
  int64_t P() const { return HO * WO; }
  bool depthwise() const { return Cg == 1; }
  bool pointwise() const { return KH == 1 && KW == 1 && SH == 1 && SW == 1 && PH == 0 && PW == 0; }
  bool im2col() const { return !depthwise() && !pointwise(); }
  // images per im2col chunk and the columns' bytes
  int64_t chunk() const {
    const int64_t per = std::max<int64_t>(1, C * KH * KW * P() * 4);
    return std::max<int64_t>(1, std::min<int64_t>(N, kColumnBudget / per));
  }
  size_t column_bytes() const { return im2col() ? static_cast<size_t>(chunk() * C * KH * KW * P()) * 4 : 0; }
  size_t workspace() const { return depthwise() ? 0 : kGemmWorkspaceBytes + column_bytes(); }
};

// Geometry from x [N,C,H,W], w [O,Cg,KH,KW] and the attrs (validated by the check).
bool make_conv(const Attrs& at, const int64_t* xs, const int64_t* ws, Conv* c) {
  c->N = xs[0], c->C = xs[1], c->H = xs[2], c->W = xs[3];
  c->O = ws[0], c->Cg = ws[1], c->KH = ws[2], c->KW = ws[3];
  cpu::ConvParams p;
  if (!cpu::read_conv_params("conv2d", at, &p).ok()) return false;
  c->SH = p.SH, c->SW = p.SW, c->PH = p.PH, c->PW = p.PW, c->DH = p.DH, c->DW = p.DW, c->G = p.G;
  if (c->G < 1 || c->SH < 1 || c->SW < 1) return false;
  c->HO = cpu::conv_out_size(c->H, c->KH, c->SH, c->PH, c->DH);
  c->WO = cpu::conv_out_size(c->W, c->KW, c->SW, c->PW, c->DW);
  return c->HO > 0 && c->WO > 0;
}

bool forward_geometry(const KernelArgs& a, Conv* c) { return make_conv(a.attr(), a.in(0).shape, a.in(1).shape, c); }
bool grad_input_geometry(const KernelArgs& a, Conv* c) {
  int64_t xs[4];
  return cpu::read_shape4(a.attr(), "input_shape", xs) && make_conv(a.attr(), xs, a.in(1).shape, c);
}
bool grad_weight_geometry(const KernelArgs& a, Conv* c) {
  int64_t ws[4];
  return cpu::read_shape4(a.attr(), "weight_shape", ws) && make_conv(a.attr(), a.in(1).shape, ws, c);
}

Status need_workspace(const KernelArgs& a, const Conv& c, const char* k) {
  if (a.workspace_bytes >= c.workspace() && (a.workspace || c.workspace() == 0)) return Status::Ok();
  return internal_error(std::string(k) + ": workspace of " + std::to_string(a.workspace_bytes) + " bytes, needs " +
                        std::to_string(c.workspace()));
}

float* columns(const KernelArgs& a) { return reinterpret_cast<float*>(static_cast<char*>(a.workspace) + kGemmWorkspaceBytes); }

// ---- device kernels --------------------------------------------------------------------------------
// col [nb][C*KH*KW][P] for images n0 .. n0+nb
__global__ void im2col_kernel(const float* x, float* col, Conv c, int64_t n0, int64_t nb) {
  const int64_t P = c.HO * c.WO, rows = c.C * c.KH * c.KW, total = nb * rows * P;
  ET_GRID_LOOP(e, total) {
    const int64_t p = e % P, r = (e / P) % rows, n = e / (P * rows) + n0;
    const int64_t j = r % c.KW, i = (r / c.KW) % c.KH, ch = r / (c.KW * c.KH);
    const int64_t oh = p / c.WO, ow = p % c.WO;
    const int64_t ih = oh * c.SH - c.PH + i * c.DH, iw = ow * c.SW - c.PW + j * c.DW;
    col[e] = (ih >= 0 && ih < c.H && iw >= 0 && iw < c.W) ? x[((n * c.C + ch) * c.H + ih) * c.W + iw] : 0.0f;
  }
}

// dx for images n0 .. n0+nb from col [nb][C*KH*KW][P]: each element sums its taps in (i, j) order
__global__ void col2im_kernel(const float* col, float* dx, Conv c, int64_t n0, int64_t nb, DevMask mask) {
  const int64_t P = c.HO * c.WO, rows = c.C * c.KH * c.KW, plane = c.H * c.W, total = nb * c.C * plane;
  ET_GRID_LOOP(e, total) {
    const int64_t iw = e % c.W, ih = (e / c.W) % c.H, ch = (e / plane) % c.C, n = e / (plane * c.C);
    const float* cn = col + n * rows * P;
    float s = 0.0f;
    for (int64_t i = 0; i < c.KH; ++i) {
      const int64_t th = ih + c.PH - i * c.DH;
      if (th < 0 || th % c.SH) continue;
      const int64_t oh = th / c.SH;
      if (oh >= c.HO) continue;
      for (int64_t j = 0; j < c.KW; ++j) {
        const int64_t tw = iw + c.PW - j * c.DW;
        if (tw < 0 || tw % c.SW) continue;
        const int64_t ow = tw / c.SW;
        if (ow >= c.WO) continue;
        s += cn[((ch * c.KH + i) * c.KW + j) * P + oh * c.WO + ow];
      }
    }
    const int64_t g = (n0 + n) * c.C * plane + ch * plane + ih * c.W + iw;
    dx[g] = mask.keep(g) ? s : 0.0f;
  }
}

__global__ void depthwise_forward(const float* x, const float* w, const float* bias, float* y, Conv c, float lo,
                                  float hi) {
  const int64_t mult = c.O / c.C, P = c.HO * c.WO, total = c.N * c.O * P;
  ET_GRID_LOOP(e, total) {
    const int64_t ow = e % c.WO, oh = (e / c.WO) % c.HO, o = (e / P) % c.O, n = e / (P * c.O);
    const float* xc = x + (n * c.C + o / mult) * c.H * c.W;
    const float* wo = w + o * c.KH * c.KW;
    float acc = bias ? bias[o] : 0.0f;
    for (int64_t i = 0; i < c.KH; ++i) {
      const int64_t ih = oh * c.SH - c.PH + i * c.DH;
      if (ih < 0 || ih >= c.H) continue;
      for (int64_t j = 0; j < c.KW; ++j) {
        const int64_t iw = ow * c.SW - c.PW + j * c.DW;
        if (iw < 0 || iw >= c.W) continue;
        acc += wo[i * c.KW + j] * xc[ih * c.W + iw];
      }
    }
    acc = acc < lo ? lo : acc;
    y[e] = acc > hi ? hi : acc;
  }
}

__global__ void depthwise_grad_input(const float* dy, const float* w, float* dx, Conv c, DevMask mask) {
  const int64_t mult = c.O / c.C, plane = c.H * c.W, P = c.HO * c.WO, total = c.N * c.C * plane;
  ET_GRID_LOOP(e, total) {
    const int64_t iw = e % c.W, ih = (e / c.W) % c.H, ch = (e / plane) % c.C, n = e / (plane * c.C);
    float s = 0.0f;
    for (int64_t m = 0; m < mult; ++m) {
      const int64_t o = ch * mult + m;
      const float* dyo = dy + (n * c.O + o) * P;
      const float* wo = w + o * c.KH * c.KW;
      for (int64_t i = 0; i < c.KH; ++i) {
        const int64_t th = ih + c.PH - i * c.DH;
        if (th < 0 || th % c.SH || th / c.SH >= c.HO) continue;
        for (int64_t j = 0; j < c.KW; ++j) {
          const int64_t tw = iw + c.PW - j * c.DW;
          if (tw < 0 || tw % c.SW || tw / c.SW >= c.WO) continue;
          s += wo[i * c.KW + j] * dyo[(th / c.SH) * c.WO + tw / c.SW];
        }
      }
    }
    dx[e] = mask.keep(e) ? s : 0.0f;
  }
}

// one block per (output channel, tap)
__global__ void depthwise_grad_weight(const float* dy, const float* x, float* dw, Conv c) {
  __shared__ double smem[kBlock];
  const int64_t mult = c.O / c.C, taps = c.KH * c.KW, P = c.HO * c.WO, count = c.N * P;
  for (int64_t item = blockIdx.x; item < c.O * taps; item += gridDim.x) {
    const int64_t o = item / taps, t = item % taps, i = t / c.KW, j = t % c.KW;
    double s = 0.0;
    for (int64_t q = threadIdx.x; q < count; q += blockDim.x) {
      const int64_t p = q % P, n = q / P, oh = p / c.WO, ow = p % c.WO;
      const int64_t ih = oh * c.SH - c.PH + i * c.DH, iw = ow * c.SW - c.PW + j * c.DW;
      if (ih < 0 || ih >= c.H || iw < 0 || iw >= c.W) continue;
      s += static_cast<double>(dy[(n * c.O + o) * P + p]) * x[((n * c.C + o / mult) * c.H + ih) * c.W + iw];
    }
    s = block_sum(s, smem);
    if (threadIdx.x == 0) dw[item] = static_cast<float>(s);
  }
}

// ---- forward --------------------------------------------------------------------------------------
Status conv_forward(const KernelArgs& a, float lo, float hi) {
  ET_CUDA_CONTEXT(ctx, a);
  Conv c;
  if (!forward_geometry(a, &c)) return internal_error("conv2d: geometry changed after check");
  const float* x = a.in(0).as<float>();
  const float* w = a.in(1).as<float>();
  const float* bias = a.num_inputs == 3 ? a.in(2).as<float>() : nullptr;
  float* y = a.out(0).as<float>();
  if (c.N == 0) return Status::Ok();
  if (c.depthwise()) {
    depthwise_forward<<<grid_for(c.N * c.O * c.P()), kBlock, 0, ctx->stream>>>(x, w, bias, y, c, lo, hi);
    ET_CUDA_LAUNCHED("conv2d depthwise");
    return Status::Ok();
  }
  ET_RETURN_IF_ERROR(need_workspace(a, c, "conv2d"));
  const int64_t P = c.P(), kdim = c.kdim(), Og = c.Og(), plane = c.H * c.W;
  const int64_t nb = c.pointwise() ? c.N : c.chunk();
  for (int64_t n0 = 0; n0 < c.N; n0 += nb) {
    const int64_t cnt = std::min(nb, c.N - n0);
    const float* src = x + n0 * c.C * plane;  // pointwise: the image is the column matrix
    int64_t src_image = c.C * plane;
    if (!c.pointwise()) {
      float* col = columns(a);
      im2col_kernel<<<grid_for(cnt * c.C * c.KH * c.KW * P), kBlock, 0, ctx->stream>>>(x, col, c, n0, cnt);
      ET_CUDA_LAUNCHED("conv2d im2col");
      src = col;
      src_image = c.C * c.KH * c.KW * P;
    }
    Gemm g;  // y_g[Og, P] = w_g[Og, kdim] @ col_g[kdim, P]
    g.M = Og, g.N = P, g.K = kdim, g.lda = kdim, g.ldb = P, g.ldc = P;
    if (c.G == 1) {
      g.A = w, g.sA = 0;
      g.B = src, g.sB = src_image;
      g.C = y + n0 * c.O * P, g.sC = c.O * P;
      g.batch = cnt;
      ET_RETURN_IF_ERROR(gemm(a, ctx, g));
    } else {
      for (int64_t n = 0; n < cnt; ++n) {
        g.A = w, g.sA = Og * kdim;
        g.B = src + n * src_image, g.sB = c.pointwise() ? c.Cg * plane : kdim * P;
        g.C = y + (n0 + n) * c.O * P, g.sC = Og * P;
        g.batch = c.G;
        ET_RETURN_IF_ERROR(gemm(a, ctx, g));
      }
    }
  }
  return epilogue(ctx, y, c.N * c.O * P, P, c.O, bias, lo, hi, DevMask{});
}

// ---- grad_input -----------------------------------------------------------------------------------
Status conv_grad_input(const KernelArgs& a, const DevMask& mask) {
  ET_CUDA_CONTEXT(ctx, a);
  Conv c;
  if (!grad_input_geometry(a, &c)) return internal_error("conv2d_grad_input: geometry changed after check");
  const float* dy = a.in(0).as<float>();
  const float* w = a.in(1).as<float>();
  float* dx = a.out(0).as<float>();
  if (c.N == 0) return Status::Ok();
  if (c.depthwise()) {
    depthwise_grad_input<<<grid_for(c.N * c.C * c.H * c.W), kBlock, 0, ctx->stream>>>(dy, w, dx, c, mask);
    ET_CUDA_LAUNCHED("conv2d_grad_input depthwise");
    return Status::Ok();
  }
  ET_RETURN_IF_ERROR(need_workspace(a, c, "conv2d_grad_input"));
  const int64_t P = c.P(), kdim = c.kdim(), Og = c.Og(), plane = c.H * c.W;
  const int64_t nb = c.pointwise() ? c.N : c.chunk();
  for (int64_t n0 = 0; n0 < c.N; n0 += nb) {
    const int64_t cnt = std::min(nb, c.N - n0);
    float* dst = c.pointwise() ? dx + n0 * c.C * plane : columns(a);
    const int64_t dst_image = c.pointwise() ? c.C * plane : c.C * c.KH * c.KW * P;
    Gemm g;  // col_g[kdim, P] = w_g^T[kdim, Og] @ dy_g[Og, P]
    g.ta = true;
    g.M = kdim, g.N = P, g.K = Og, g.lda = kdim, g.ldb = P, g.ldc = P;
    if (c.G == 1) {
      g.A = w, g.sA = 0;
      g.B = dy + n0 * c.O * P, g.sB = c.O * P;
      g.C = dst, g.sC = dst_image;
      g.batch = cnt;
      ET_RETURN_IF_ERROR(gemm(a, ctx, g));
    } else {
      for (int64_t n = 0; n < cnt; ++n) {
        g.A = w, g.sA = Og * kdim;
        g.B = dy + (n0 + n) * c.O * P, g.sB = Og * P;
        g.C = dst + n * dst_image, g.sC = c.pointwise() ? c.Cg * plane : kdim * P;
        g.batch = c.G;
        ET_RETURN_IF_ERROR(gemm(a, ctx, g));
      }
    }
    if (!c.pointwise()) {
      col2im_kernel<<<grid_for(cnt * c.C * plane), kBlock, 0, ctx->stream>>>(columns(a), dx, c, n0, cnt, mask);
      ET_CUDA_LAUNCHED("conv2d_grad_input col2im");
    }
  }
  if (!c.pointwise()) return Status::Ok();
  const float inf = std::numeric_limits<float>::infinity();
  return epilogue(ctx, dx, c.N * c.C * plane, 1, 1, nullptr, -inf, inf, mask);
}

// ---- grad_weight ----------------------------------------------------------------------------------
Status conv_grad_weight(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  Conv c;
  if (!grad_weight_geometry(a, &c)) return internal_error("conv2d_grad_weight: geometry changed after check");
  const float* dy = a.in(0).as<float>();
  const float* x = a.in(1).as<float>();
  float* dw = a.out(0).as<float>();
  if (c.N == 0) return zero_async(ctx, dw, a.out(0).nbytes());
  if (c.depthwise()) {
    const int64_t items = c.O * c.KH * c.KW;
    depthwise_grad_weight<<<static_cast<unsigned>(std::min<int64_t>(items, kMaxGrid)), kBlock, 0, ctx->stream>>>(dy, x, dw, c);
    ET_CUDA_LAUNCHED("conv2d_grad_weight depthwise");
    return Status::Ok();
  }
  ET_RETURN_IF_ERROR(need_workspace(a, c, "conv2d_grad_weight"));
  const int64_t P = c.P(), kdim = c.kdim(), Og = c.Og(), plane = c.H * c.W;
  const int64_t nb = c.pointwise() ? c.N : c.chunk();
  for (int64_t n0 = 0; n0 < c.N; n0 += nb) {
    const int64_t cnt = std::min(nb, c.N - n0);
    const float* src = x + n0 * c.C * plane;
    int64_t src_image = c.C * plane;
    if (!c.pointwise()) {
      im2col_kernel<<<grid_for(cnt * c.C * c.KH * c.KW * P), kBlock, 0, ctx->stream>>>(x, columns(a), c, n0, cnt);
      ET_CUDA_LAUNCHED("conv2d_grad_weight im2col");
      src = columns(a);
      src_image = c.C * c.KH * c.KW * P;
    }
    for (int64_t n = 0; n < cnt; ++n) {  // image after image into dw, in stream order
      Gemm g;  // dw_g[Og, kdim] (+)= dy_g[Og, P] @ col_g[kdim, P]^T
      g.tb = true;
      g.M = Og, g.N = kdim, g.K = P, g.lda = P, g.ldb = P, g.ldc = kdim;
      g.A = dy + (n0 + n) * c.O * P, g.sA = Og * P;
      g.B = src + n * src_image, g.sB = c.pointwise() ? c.Cg * plane : kdim * P;
      g.C = dw, g.sC = Og * kdim;
      g.batch = c.G;
      g.beta = n0 + n == 0 ? 0.0f : 1.0f;
      ET_RETURN_IF_ERROR(gemm(a, ctx, g));
    }
  }
  return Status::Ok();
}

// ---- the registered kernels ---------------------------------------------------------------------------
Status conv_run(const KernelArgs& a) {
  float lo, hi;
  ET_RETURN_IF_ERROR(read_activation(a.attr(), "conv2d", &lo, &hi));
  return conv_forward(a, lo, hi);
}

// conv2d.winograd reads its activation as conv_winograd.cc does (hardtanh bounds default to -1, 1)
Status conv_run_winograd(const KernelArgs& a) {
  const std::string& act = a.attr().get_string("activation");
  const float inf = std::numeric_limits<float>::infinity();
  float lo = -inf, hi = inf;
  if (act == "relu") lo = 0.0f;
  if (act == "hardtanh") {
    lo = static_cast<float>(a.attr().get_float("act_min", -1.0));
    hi = static_cast<float>(a.attr().get_float("act_max", 1.0));
  }
  return conv_forward(a, lo, hi);
}

Status grad_input_run(const KernelArgs& a) {
  DevMask m;
  ET_RETURN_IF_ERROR(read_dev_mask(a, 2, a.out(0), "conv2d_grad_input", &m));
  return conv_grad_input(a, m);
}

// conv2d_grad_input.winograd: an f32 mask without mask_max has no upper bound at all
Status grad_input_run_winograd(const KernelArgs& a) {
  DevMask m;
  if (a.num_inputs == 3) {
    const TensorView& t = a.in(2);
    if (t.dtype == DType::u8) {
      m.bits = t.as<uint8_t>();
    } else {
      m.values = t.as<float>();
      m.lo = static_cast<float>(a.attr().get_float("mask_min"));
      m.bounded = a.attr().has("mask_max");
      m.hi = static_cast<float>(a.attr().get_float("mask_max"));
    }
  }
  return conv_grad_input(a, m);
}

size_t conv_workspace(const KernelArgs& a) {
  Conv c;
  return forward_geometry(a, &c) ? c.workspace() : 0;
}
size_t grad_input_workspace(const KernelArgs& a) {
  Conv c;
  return grad_input_geometry(a, &c) ? c.workspace() : 0;
}
size_t grad_weight_workspace(const KernelArgs& a) {
  Conv c;
  return grad_weight_geometry(a, &c) ? c.workspace() : 0;
}

// Every registered name; nchw_check<I> is the check of kCheckedNames[I].
constexpr const char* kCheckedNames[] = {
    "conv2d", "conv2d.im2col", "conv2d.pointwise", "conv2d.depthwise", "conv2d.pointwise_batched",
    "conv2d.im2col_batched", "conv2d_grad_input", "conv2d_grad_input.im2col", "conv2d_grad_input.pointwise",
    "conv2d_grad_input.depthwise", "conv2d_grad_input.pointwise_batched", "conv2d_grad_input.im2col_batched",
    "conv2d_grad_weight", "conv2d_grad_weight.im2col", "conv2d_grad_weight.pointwise", "conv2d_grad_weight.depthwise",
    "conv2d_grad_weight.pointwise_batched", "conv2d_grad_weight.im2col_batched", "conv2d.winograd",
    "conv2d_grad_input.winograd"};
constexpr int kNumChecked = sizeof(kCheckedNames) / sizeof(kCheckedNames[0]);

// The CPU kernel's check, after refusing layout nhwc (and unknown layouts): these kernels read NCHW.
template <int I>
Status nchw_check(const KernelArgs& a) {
  bool is_nhwc;
  ET_RETURN_IF_ERROR(nhwc::read_layout(a.attr(), kCheckedNames[I], &is_nhwc));
  if (is_nhwc)
    return invalid_argument(std::string(kCheckedNames[I]) + " on cuda runs NCHW only; layout nhwc runs on the cpu backend");
  static const KernelCheck cpu = cpu_check_of(kCheckedNames[I]);
  return cpu ? cpu(a) : Status::Ok();
}

template <int... I>
KernelCheck checked_by_name(const std::string& name, std::integer_sequence<int, I...>) {
  const KernelCheck checks[] = {&nchw_check<I>...};
  for (int i = 0; i < kNumChecked; ++i)
    if (name == kCheckedNames[i]) return checks[i];
  return nullptr;
}
KernelCheck nchw_check_of(const std::string& name) {
  return checked_by_name(name, std::make_integer_sequence<int, kNumChecked>{});
}

}  // namespace

void register_conv_kernels(KernelRegistry& r) {
  // .pointwise_batched / .im2col_batched are the cpu's packed-images GEMMs; here the pointwise and
  // im2col paths already run batched over images (strided-batched cuBLASLt over a chunk), so the
  // batched names run the same kernels
  for (const char* v : {"", ".im2col", ".pointwise", ".depthwise", ".pointwise_batched", ".im2col_batched"}) {
    const std::string s(v);
    // the registry keeps the names: these std::strings only feed KernelDef's own strings
    r.add(KernelDef{"conv2d", "conv2d" + s, nchw_check_of("conv2d" + s), &conv_workspace, &conv_run});
    r.add(KernelDef{"conv2d_grad_input", "conv2d_grad_input" + s, nchw_check_of("conv2d_grad_input" + s),
                    &grad_input_workspace, &grad_input_run});
    r.add(KernelDef{"conv2d_grad_weight", "conv2d_grad_weight" + s, nchw_check_of("conv2d_grad_weight" + s),
                    &grad_weight_workspace, &conv_grad_weight});
  }
  // the CPU Winograd checks refuse layout nhwc themselves; nchw_check keeps one message for cuda
  r.add(KernelDef{"conv2d", "conv2d.winograd", nchw_check_of("conv2d.winograd"), &conv_workspace, &conv_run_winograd});
  r.add(KernelDef{"conv2d_grad_input", "conv2d_grad_input.winograd", nchw_check_of("conv2d_grad_input.winograd"),
                  &grad_input_workspace, &grad_input_run_winograd});
}

}  // namespace cuda
}  // namespace edgetune
