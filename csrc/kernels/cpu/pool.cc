// CPU kernels for compiler/ops/pool.py: max_pool2d (+ flat i64 argmax indices, as ATen),
// max_pool2d_backward, avg_pool2d, avg_pool2d_backward (NCHW, f32).
//
// Direct loops, one (image, channel) plane per task. The backward kernels scatter into their own
// plane only, so no two threads write the same element and the order of the adds is fixed.
// Geometry follows the reference exactly: ATen's output size (ceil_mode included), padding taps
// read as -inf (max) or 0 (avg); the max picks the first maximum in window order (numpy argmax),
// with NaN winning; avg divisors use ATen's count_include_pad / divisor_override rule.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "core/kernel.h"
#include "kernels/cpu/cpu_util.h"

namespace edgetune {
namespace {

struct Pool {
  int64_t N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, HO, WO;
  bool ceil_mode;
};

int64_t pool_out(int64_t size, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil_mode) {
  const int64_t span = size + 2 * p - d * (k - 1) - 1;
  if (span < 0) return 0;
  int64_t out = (ceil_mode ? (span + s - 1) / s : span / s) + 1;
  if (ceil_mode && (out - 1) * s >= size + p) --out;  // the last window must start inside input or left pad
  return out;
}

// Geometry from the input shape [N,C,H,W] and the attrs; `dilation` only where the op has it.
Status make_pool(const char* op, const Attrs& attrs, const int64_t* xs, bool dilated, Pool* pl) {
  Pool& p = *pl;
  p.N = xs[0], p.C = xs[1], p.H = xs[2], p.W = xs[3];
  if (!attrs.get_pair("kernel", 0, &p.KH, &p.KW) || !attrs.get_pair("stride", 0, &p.SH, &p.SW) ||
      !attrs.get_pair("padding", 0, &p.PH, &p.PW) || !attrs.get_pair("dilation", 1, &p.DH, &p.DW))
    return invalid_argument(std::string(op) + ": kernel/stride/padding/dilation must be int pairs");
  if (p.SH == 0 && p.SW == 0) p.SH = p.KH, p.SW = p.KW;  // stride absent or []: PyTorch's default
  p.ceil_mode = attrs.get_int("ceil_mode", 0) != 0;
  if (p.KH < 1 || p.KW < 1 || p.SH < 1 || p.SW < 1 || p.DH < 1 || p.DW < 1 || p.PH < 0 || p.PW < 0)
    return invalid_argument(std::string(op) + ": kernel, stride, dilation must be >= 1 and padding >= 0");
  if (!dilated && (p.DH != 1 || p.DW != 1))
    return unimplemented(std::string(op) + ": dilation is not supported for average pooling");
  if (p.PH > p.KH / 2 || p.PW > p.KW / 2)
    return invalid_argument(std::string(op) + ": padding exceeds half the kernel");
  p.HO = pool_out(p.H, p.KH, p.SH, p.PH, p.DH, p.ceil_mode);
  p.WO = pool_out(p.W, p.KW, p.SW, p.PW, p.DW, p.ceil_mode);
  if (p.HO <= 0 || p.WO <= 0) return invalid_argument(std::string(op) + ": output would be empty");
  return Status::Ok();
}

Status read_input_shape(const KernelArgs& a, const char* op, int64_t* xs) {
  if (!cpu::read_shape4(a.attr(), "input_shape", xs))
    return invalid_argument(std::string(op) + ": attr input_shape must be 4 ints");
  return Status::Ok();
}

int64_t plane_grain(int64_t work) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(work, 1)); }

// ---- max pool --------------------------------------------------------------------------------

Status max_check(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, "max_pool2d", 1, 1, 2));
  ET_RETURN_IF_ERROR(expect_dtype(a, "max_pool2d input", a.in(0), DType::f32));
  ET_RETURN_IF_ERROR(expect_dtype(a, "max_pool2d output", a.out(0), DType::f32));
  ET_RETURN_IF_ERROR(expect_dtype(a, "max_pool2d indices", a.out(1), DType::i64));
  if (a.in(0).rank != 4) return invalid_argument("max_pool2d: wants [N,C,H,W], got " + a.in(0).shape_string());
  Pool p;
  ET_RETURN_IF_ERROR(make_pool("max_pool2d", a.attr(), a.in(0).shape, true, &p));
  for (int i = 0; i < 2; ++i)
    if (!cpu::is_shape(a.out(i), p.N, p.C, p.HO, p.WO))
      return invalid_argument("max_pool2d: output " + a.out(i).shape_string() + " does not fit the pooling geometry");
  return Status::Ok();
}

// The max-pool rows are staged like the depthwise conv's (cpu::stage_row, cpu_util.h): each input
// row a window row reads is copied into a stack buffer padded with -inf and split into SW phases,
// ph[r * np + q] = xpad[q * SW + r], so tap j of output column ow reads phase (j*DW) % SW at
// position ow + (j*DW) / SW — a contiguous, bounds-free loop whatever the stride or dilation.
constexpr int64_t kStageFloats = 8192;  // 32 KiB of stack per thread

// One tap over a row of outputs: take it where strictly greater, or the first NaN. Bitwise, not
// short-circuit, logic and a function of its own keep GCC vectorizing it in every caller.
__attribute__((noinline)) void max_tap(const float* __restrict src, int32_t k, int64_t n, float* __restrict best,
                                       int32_t* __restrict tap) {
  for (int64_t ow = 0; ow < n; ++ow) {
    const float v = src[ow], b = best[ow];
    const bool take = (v > b) | ((v != v) & (b == b));
    best[ow] = take ? v : b;
    tap[ow] = take ? k : tap[ow];
  }
}

Status max_run(const KernelArgs& a) {
  Pool p;
  (void)make_pool("max_pool2d", a.attr(), a.in(0).shape, true, &p);
  const float* x = a.in(0).as<float>();
  float* y = a.out(0).as<float>();
  int64_t* idx = a.out(1).as<int64_t>();
  const float ninf = -std::numeric_limits<float>::infinity();
  const int64_t plane = p.H * p.W, oplane = p.HO * p.WO;
  const int64_t np = p.WO + ((p.KW - 1) * p.DW) / p.SW;
  // tap offsets (i*DH*W + j*DW) are kept as int32
  const bool staged = p.SW * np <= kStageFloats && p.WO <= kStageFloats && p.KH * p.DH * p.W + p.KW * p.DW < (int64_t{1} << 31);
  // The reference pads with (-inf, index -1) and takes the first maximum in window order (numpy
  // argmax; NaN wins, the first NaN stays). So every output starts at (-inf, tap 0) and a tap
  // replaces it only when strictly greater (or the first NaN); a padding tap (-inf) never does,
  // and when nothing beats -inf the answer is tap 0, padding or not. Taps are tracked by their
  // flat offset from tap 0 (i*DH*W + j*DW, 0 only for tap 0), which becomes the flat index at the
  // end of the row: -1 when the winner is tap 0 and tap 0 lies in the padding.
  a.pool->parallel_for(p.N * p.C, plane_grain(oplane * p.KH * p.KW), [&](int64_t q0, int64_t q1) {
    alignas(64) float ph[kStageFloats];
    alignas(64) int32_t tap[kStageFloats];
    for (int64_t q = q0; q < q1; ++q) {
      const float* xp = x + q * plane;
      for (int64_t oh = 0; oh < p.HO; ++oh) {
        float* __restrict best = y + q * oplane + oh * p.WO;
        int64_t* arg = idx + q * oplane + oh * p.WO;
        const int64_t ih0 = oh * p.SH - p.PH;
        if (!staged) {  // rows wider than the stage buffer: the same rule, one output at a time
          for (int64_t ow = 0; ow < p.WO; ++ow) {
            float b = ninf;
            int64_t k_best = 0;
            for (int64_t i = 0; i < p.KH; ++i) {
              const int64_t ih = ih0 + i * p.DH;
              if (ih < 0 || ih >= p.H) continue;
              for (int64_t j = 0; j < p.KW; ++j) {
                const int64_t iw = ow * p.SW - p.PW + j * p.DW;
                if (iw < 0 || iw >= p.W) continue;
                const float v = xp[ih * p.W + iw];
                if (v > b || (v != v && b == b)) b = v, k_best = i * p.KW + j;
              }
            }
            const int64_t ih = ih0 + (k_best / p.KW) * p.DH, iw = ow * p.SW - p.PW + (k_best % p.KW) * p.DW;
            best[ow] = b;
            arg[ow] = ih >= 0 && ih < p.H && iw >= 0 && iw < p.W ? ih * p.W + iw : -1;
          }
          continue;
        }
        std::fill(best, best + p.WO, ninf);
        std::fill(tap, tap + p.WO, 0);
        for (int64_t i = 0; i < p.KH; ++i) {
          const int64_t ih = ih0 + i * p.DH;
          if (ih < 0 || ih >= p.H) continue;  // an all-padding row replaces nothing
          cpu::stage_row(xp + ih * p.W, p.W, p.PW, p.SW, np, ninf, ph);
          for (int64_t j = 0; j < p.KW; ++j) {
            const int64_t t = j * p.DW;
            const float* __restrict src = ph + (t % p.SW) * np + t / p.SW;
            max_tap(src, static_cast<int32_t>(i * p.DH * p.W + j * p.DW), p.WO, best, tap);
          }
        }
        const bool row0_in = ih0 >= 0 && ih0 < p.H;
        for (int64_t ow = 0; ow < p.WO; ++ow) {
          const int64_t iw0 = ow * p.SW - p.PW;
          const bool tap0_in = row0_in && iw0 >= 0 && iw0 < p.W;
          arg[ow] = tap[ow] == 0 && !tap0_in ? -1 : ih0 * p.W + iw0 + tap[ow];
        }
      }
    }
  });
  return Status::Ok();
}

Status max_backward_check(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, "max_pool2d_backward", 2, 2, 1));
  ET_RETURN_IF_ERROR(expect_dtype(a, "max_pool2d_backward dy", a.in(0), DType::f32));
  ET_RETURN_IF_ERROR(expect_dtype(a, "max_pool2d_backward indices", a.in(1), DType::i64));
  ET_RETURN_IF_ERROR(expect_dtype(a, "max_pool2d_backward output", a.out(0), DType::f32));
  int64_t xs[4];
  ET_RETURN_IF_ERROR(read_input_shape(a, "max_pool2d_backward", xs));
  const TensorView &dy = a.in(0), &ix = a.in(1);
  if (dy.rank != 4 || ix.rank != 4 || dy.shape[0] != xs[0] || dy.shape[1] != xs[1])
    return invalid_argument("max_pool2d_backward: dy " + dy.shape_string() + " does not fit input_shape");
  for (int i = 0; i < 4; ++i)
    if (ix.shape[i] != dy.shape[i])
      return invalid_argument("max_pool2d_backward: indices " + ix.shape_string() + " are not the shape of dy " +
                              dy.shape_string());
  if (!cpu::is_shape(a.out(0), xs[0], xs[1], xs[2], xs[3]))
    return invalid_argument("max_pool2d_backward: output " + a.out(0).shape_string() + " is not input_shape");
  return Status::Ok();
}

Status max_backward_run(const KernelArgs& a) {
  const TensorView& dyv = a.in(0);
  const TensorView& dxv = a.out(0);
  const int64_t planes = dxv.shape[0] * dxv.shape[1], plane = dxv.shape[2] * dxv.shape[3];
  const int64_t oplane = dyv.shape[2] * dyv.shape[3];
  const float* dy = dyv.as<float>();
  const int64_t* idx = a.in(1).as<int64_t>();
  float* dx = dxv.as<float>();
  a.pool->parallel_for(planes, plane_grain(plane + oplane), [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      float* dxp = dx + q * plane;
      std::fill(dxp, dxp + plane, 0.0f);
      const float* dyp = dy + q * oplane;
      const int64_t* ip = idx + q * oplane;
      for (int64_t k = 0; k < oplane; ++k) {
        const int64_t i = ip[k];
        if (i >= 0 && i < plane) dxp[i] += dyp[k];  // an index outside the plane (padding) adds nothing
      }
    }
  });
  return Status::Ok();
}

// ---- avg pool --------------------------------------------------------------------------------

// Divisor of the window starting at (o*s - p): ATen's rule. The pool extent stops at size + p (the
// right padding counts, the ceil-mode overhang does not); count_include_pad=false counts inputs only.
struct AvgDiv {
  bool include_pad;
  int64_t override_div;
  // The divisor of the window with padded extent ph x pw and in-bounds extent (h1-h0) x (w1-w0).
  int64_t of(int64_t ph, int64_t pw, int64_t h0, int64_t h1, int64_t w0, int64_t w1) const {
    return override_div ? override_div : include_pad ? ph * pw : (h1 - h0) * (w1 - w0);
  }
};

AvgDiv avg_div_of(const Attrs& attrs) { return {attrs.get_int("count_include_pad", 1) != 0, attrs.get_int("divisor_override", 0)}; }

void extent(int64_t o, int64_t k, int64_t s, int64_t p, int64_t size, int64_t* start, int64_t* end, int64_t* pool) {
  const int64_t st = o * s - p;
  const int64_t en = std::min(st + k, size + p);
  *pool = en - st;
  *start = std::max<int64_t>(st, 0);
  *end = std::min<int64_t>(en, size);
}

Status avg_check(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, "avg_pool2d", 1, 1, 1));
  ET_RETURN_IF_ERROR(expect_dtype(a, "avg_pool2d input", a.in(0), DType::f32));
  ET_RETURN_IF_ERROR(expect_dtype(a, "avg_pool2d output", a.out(0), DType::f32));
  if (a.in(0).rank != 4) return invalid_argument("avg_pool2d: wants [N,C,H,W], got " + a.in(0).shape_string());
  if (a.attr().get_int("divisor_override", 0) < 0) return invalid_argument("avg_pool2d: divisor_override < 0");
  Pool p;
  ET_RETURN_IF_ERROR(make_pool("avg_pool2d", a.attr(), a.in(0).shape, false, &p));
  if (!cpu::is_shape(a.out(0), p.N, p.C, p.HO, p.WO))
    return invalid_argument("avg_pool2d: output " + a.out(0).shape_string() + " does not fit the pooling geometry");
  return Status::Ok();
}

// Every averaging window of one [H, W] plane, in output order: fn(o, h0, h1, w0, w1, div) with
// o = oh * WO + ow, the window's in-bounds rows [h0, h1) and columns [w0, w1), and its divisor.
template <typename Fn>
void for_each_avg_window(const Pool& p, const AvgDiv& dv, const Fn& fn) {
  for (int64_t oh = 0; oh < p.HO; ++oh) {
    int64_t h0, h1, ph;
    extent(oh, p.KH, p.SH, p.PH, p.H, &h0, &h1, &ph);
    for (int64_t ow = 0; ow < p.WO; ++ow) {
      int64_t w0, w1, pw;
      extent(ow, p.KW, p.SW, p.PW, p.W, &w0, &w1, &pw);
      fn(oh * p.WO + ow, h0, h1, w0, w1, dv.of(ph, pw, h0, h1, w0, w1));
    }
  }
}

Status avg_run(const KernelArgs& a) {
  Pool p;
  (void)make_pool("avg_pool2d", a.attr(), a.in(0).shape, false, &p);
  const AvgDiv dv = avg_div_of(a.attr());
  const float* x = a.in(0).as<float>();
  float* y = a.out(0).as<float>();
  const int64_t plane = p.H * p.W, oplane = p.HO * p.WO;
  a.pool->parallel_for(p.N * p.C, plane_grain(oplane * p.KH * p.KW), [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const float* xp = x + q * plane;
      float* yp = y + q * oplane;
      for_each_avg_window(p, dv, [&](int64_t o, int64_t h0, int64_t h1, int64_t w0, int64_t w1, int64_t div) {
        double s = 0;
        for (int64_t ih = h0; ih < h1; ++ih)
          for (int64_t iw = w0; iw < w1; ++iw) s += xp[ih * p.W + iw];
        yp[o] = static_cast<float>(s / static_cast<double>(div));
      });
    }
  });
  return Status::Ok();
}

Status avg_backward_check(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, "avg_pool2d_backward", 1, 1, 1));
  ET_RETURN_IF_ERROR(expect_dtype(a, "avg_pool2d_backward dy", a.in(0), DType::f32));
  ET_RETURN_IF_ERROR(expect_dtype(a, "avg_pool2d_backward output", a.out(0), DType::f32));
  if (a.attr().get_int("divisor_override", 0) < 0) return invalid_argument("avg_pool2d_backward: divisor_override < 0");
  int64_t xs[4];
  ET_RETURN_IF_ERROR(read_input_shape(a, "avg_pool2d_backward", xs));
  Pool p;
  ET_RETURN_IF_ERROR(make_pool("avg_pool2d_backward", a.attr(), xs, false, &p));
  if (!cpu::is_shape(a.in(0), p.N, p.C, p.HO, p.WO))
    return invalid_argument("avg_pool2d_backward: dy " + a.in(0).shape_string() + " does not fit the pooling geometry");
  if (!cpu::is_shape(a.out(0), xs[0], xs[1], xs[2], xs[3]))
    return invalid_argument("avg_pool2d_backward: output " + a.out(0).shape_string() + " is not input_shape");
  return Status::Ok();
}

Status avg_backward_run(const KernelArgs& a) {
  int64_t xs[4];
  (void)read_input_shape(a, "avg_pool2d_backward", xs);
  Pool p;
  (void)make_pool("avg_pool2d_backward", a.attr(), xs, false, &p);
  const AvgDiv dv = avg_div_of(a.attr());
  const float* dy = a.in(0).as<float>();
  float* dx = a.out(0).as<float>();
  const int64_t plane = p.H * p.W, oplane = p.HO * p.WO;
  a.pool->parallel_for(p.N * p.C, plane_grain(plane + oplane * p.KH * p.KW), [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      float* dxp = dx + q * plane;
      std::fill(dxp, dxp + plane, 0.0f);
      const float* dyp = dy + q * oplane;
      for_each_avg_window(p, dv, [&](int64_t o, int64_t h0, int64_t h1, int64_t w0, int64_t w1, int64_t div) {
        const float g = static_cast<float>(dyp[o] / static_cast<double>(div));
        for (int64_t ih = h0; ih < h1; ++ih)
          for (int64_t iw = w0; iw < w1; ++iw) dxp[ih * p.W + iw] += g;
      });
    }
  });
  return Status::Ok();
}

}  // namespace

void register_pool_kernels(KernelRegistry& r) {
  r.add({"max_pool2d", "max_pool2d", max_check, nullptr, max_run});
  r.add({"max_pool2d_backward", "max_pool2d_backward", max_backward_check, nullptr, max_backward_run});
  r.add({"avg_pool2d", "avg_pool2d", avg_check, nullptr, avg_run});
  r.add({"avg_pool2d_backward", "avg_pool2d_backward", avg_backward_check, nullptr, avg_backward_run});
}

}  // namespace edgetune
