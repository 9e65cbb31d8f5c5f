// CPU kernels for compiler/ops/conv.py: conv2d, conv2d_grad_input, conv2d_grad_weight (NCHW, f32;
// stride, padding, dilation, groups; NHWC for some geometries, see "Layout" below). Each op's kernel
// picks one of three paths from the shape:
//
//   depthwise (one input channel per group, any channel multiplier)  direct loops — a GEMM with
//       K = kh*kw would be mostly packing. Input rows are staged zero-padded and split by stride
//       phase in a stack buffer, so every tap is a contiguous vector loop (see "staged rows");
//       the forward keeps all taps of a chunk of outputs in registers. Forward and grad_input
//       give each thread whole (image, channel) planes; grad_weight, which sums over the batch,
//       gives each thread whole channels so each sum runs on one thread in a fixed order.
//   pointwise (1x1, stride 1, no padding)  the NCHW image already is the [C, H*W] matrix a GEMM
//       wants: straight sgemm per image and group, no workspace.
//   pointwise_batched  the same product over N*H*W columns at once. On the small maps of a
//       network's late stages (H*W of 64, 16, 1) one GEMM per image degenerates to a
//       matrix-vector product that re-packs the whole weight for a handful of columns, so when
//       H*W < kPackColumns the images are packed side by side into the workspace,
//       [C, images * H*W] (chunks of about kPackColumns columns), and one GEMM per chunk runs
//       over them: forward, grad_input and grad_weight alike (grad_weight then sums over N*H*W
//       in one K loop). Only a variant, never the auto choice: its workspace may raise the
//       planned peak, and the kernel-selection pass (memory first) decides where it may.
//   im2col_batched  the general path's twin for small output maps (H*W < kPackColumns, e.g.
//       ResNet's 14x14 and 7x7 stages): the columns of several images side by side, one GEMM per
//       chunk, so a [O, C*KH*KW] weight is packed once per chunk instead of once per image. A
//       variant too, for the same reason; on wide maps or one image it is the im2col path.
//   general  im2col + sgemm per image and group. The column buffer is the node's workspace,
//       sized for a band of output rows so it stays under kColumnBudget (one image's columns
//       when they fit); grad_input runs the GEMM into the columns and scatters them back (col2im).
//
// Bias: a per-row GemmBias of the [O/G, H*W] product, added as the GEMM writes y.
// Threads: GEMMs thread themselves (gemm.h); im2col/col2im split by input channel, so no two
// threads write the same element. Batch sums (grad_weight) run image after image into the same
// output (GEMM beta = 1), so any thread count gives the same result.
//
// Kernels: the op-named kernel ("conv2d") picks the path from the shape as above; each path is
// also registered on its own ("conv2d.im2col", ".pointwise", ".depthwise", and the same for
// conv2d_grad_input / conv2d_grad_weight) so the compiler can time them against each other and
// pin one per node. A variant's check refuses geometries it cannot run; .im2col runs any.
//
// Layout: attr `layout` (conv_nhwc.h's read_layout). Absent or "nchw": everything above. "nhwc":
// x, y, dy, dx (and an f32 grad_input mask) are stored [N, H, W, C], the weight stays
// [O, Cg, KH, KW], input_shape / weight_shape stay in logical order ([N, C, H, W], [O, Cg, KH, KW]);
// a u8 mask indexes dx as stored. Only the op-named kernels run it, and only two geometries:
// pointwise with groups 1 (one GEMM over N*H*W rows) and depthwise with channel multiplier 1 (direct
// loops over the contiguous channels) — conv_nhwc.cc. The forced variants (and conv_winograd.cc)
// refuse nhwc in their checks, the op-named kernels refuse every other NHWC geometry, and an
// unknown layout is an error in every check.
//
// Epilogues (gemm.h), applied while the output is hot rather than by a separate op:
//   conv2d(x, w[, b], activation=relu|hardtanh, act_min, act_max)  the clamp after the bias: in
//       the GEMM's write-back (pointwise, im2col) or the depthwise register loop.
//   conv2d_grad_input(dy, w[, mask])  zeroes dx where the activation that produced x had zero
//       slope: u8 bits or the f32 activation output with mask_min / mask_max. Applied in the
//       GEMM's write-back (pointwise), per channel right after the last col2im band (im2col),
//       per finished dx row / plane (depthwise).
#include <algorithm>
#include <cstring>
#include <limits>
#include <string>

#include "core/kernel.h"
#include "kernels/cpu/conv_nhwc.h"
#include "kernels/cpu/cpu_util.h"
#include "kernels/cpu/gemm.h"

namespace edgetune {
namespace {

// Largest column buffer (bytes) before the general path works in bands of output rows. 1 MiB
// keeps a band in the L2 cache between im2col writing it and the GEMM packing it (2 MiB per core
// on the Intel Xeon measured): ResNet's 3x3 64->64 @56 went from 87 to 104 GFLOP/s on one thread
// (forward; grad_input 102 -> 112, grad_weight 87 -> 100) against the 4 MiB budget before, which
// also planned 3 MiB more workspace.
constexpr int64_t kColumnBudget = int64_t{1} << 20;
// Pointwise maps narrower than this many columns (H*W) pack several images per GEMM, up to about
// this many columns per chunk.
constexpr int64_t kPackColumns = 256;

struct Conv {
  int64_t N, C, H, W;      // input
  int64_t O, Cg, KH, KW;   // weight [O, Cg, KH, KW]
  int64_t HO, WO;          // output
  int64_t SH, SW, PH, PW, DH, DW, G;
  bool nhwc = false;       // attr layout = "nhwc": x, y, dy, dx stored [N, H, W, C] (conv_nhwc.cc runs it)
  int64_t Og() const { return O / G; }
  int64_t kdim() const { return Cg * KH * KW; }  // rows of one group's column matrix
  bool depthwise() const { return Cg == 1; }
  bool pointwise() const { return KH == 1 && KW == 1 && SH == 1 && SW == 1 && PH == 0 && PW == 0; }
  // images per GEMM of the pointwise_batched path: 1 = one GEMM per image straight on the
  // tensors (wide maps, one image); more = that many images packed side by side in the workspace
  int64_t pack_images() const {
    const int64_t plane = H * W;
    if (!pointwise() || N < 2 || plane >= kPackColumns) return 1;
    return std::min<int64_t>(N, (kPackColumns + plane - 1) / plane);
  }
  // images per GEMM of the im2col_batched path (1: it runs as the im2col path)
  int64_t im2col_images() const {
    const int64_t plane = HO * WO;
    if (N < 2 || plane >= kPackColumns) return 1;
    return std::min<int64_t>(N, (kPackColumns + plane - 1) / plane);
  }
  // output rows per band of the general path
  int64_t band_rows() const {
    const int64_t per_row = kdim() * WO * static_cast<int64_t>(sizeof(float));
    return std::max<int64_t>(1, std::min<int64_t>(HO, kColumnBudget / std::max<int64_t>(per_row, 1)));
  }
};

// Which path runs a node: the shape's choice (the op-named kernel) or one variant, forced.
enum class Path { kAuto = 0, kIm2col = 1, kPointwise = 2, kDepthwise = 3, kPointwiseBatched = 4, kIm2colBatched = 5 };
enum ConvOp { kForward = 0, kGradInput = 1, kGradWeight = 2 };

// Registry names, [op][path]; also what every error message starts with (no allocation in run).
constexpr const char* kKernelNames[3][6] = {
    {"conv2d", "conv2d.im2col", "conv2d.pointwise", "conv2d.depthwise", "conv2d.pointwise_batched",
     "conv2d.im2col_batched"},
    {"conv2d_grad_input", "conv2d_grad_input.im2col", "conv2d_grad_input.pointwise", "conv2d_grad_input.depthwise",
     "conv2d_grad_input.pointwise_batched", "conv2d_grad_input.im2col_batched"},
    {"conv2d_grad_weight", "conv2d_grad_weight.im2col", "conv2d_grad_weight.pointwise",
     "conv2d_grad_weight.depthwise", "conv2d_grad_weight.pointwise_batched", "conv2d_grad_weight.im2col_batched"},
};

const char* kernel_name(ConvOp op, Path p) { return kKernelNames[op][static_cast<int>(p)]; }

// The path that runs: auto picks depthwise, then pointwise, then im2col, as the shape allows.
Path resolve(const Conv& c, Path p) {
  if (p != Path::kAuto) return p;
  if (c.depthwise()) return Path::kDepthwise;
  if (c.pointwise()) return Path::kPointwise;
  return Path::kIm2col;
}

std::string pair_string(int64_t a, int64_t b) {
  return a == b ? std::to_string(a) : std::to_string(a) + "x" + std::to_string(b);
}

nhwc::ConvShape nhwc_shape(const Conv& c) {
  return {c.N, c.C, c.H, c.W, c.O, c.KH, c.KW, c.HO, c.WO, c.SH, c.SW, c.PH, c.PW, c.DH, c.DW, c.G};
}

// A forced variant's refusal of a geometry it cannot run (auto and im2col run every NCHW geometry).
// NHWC runs on the op-named kernel only, and only where conv_nhwc.cc has a path.
Status path_fits(ConvOp op, const Conv& c, Path p) {
  const char* kernel = kernel_name(op, p);
  if (c.nhwc) {
    if (p != Path::kAuto)
      return invalid_argument(std::string(kernel) + " runs NCHW only; layout nhwc runs on the " +
                              kernel_name(op, Path::kAuto) + " kernel");
    if (nhwc::kind_of(nhwc_shape(c)) == nhwc::Kind::kNone)
      return invalid_argument(std::string(kernel) +
                              ": layout nhwc supports pointwise (1x1, stride 1, no padding, groups 1) and depthwise "
                              "(groups = input channels = output channels) convolutions only, got " +
                              std::to_string(c.KH) + "x" + std::to_string(c.KW) + " stride " + pair_string(c.SH, c.SW) +
                              " padding " + pair_string(c.PH, c.PW) + " groups " + std::to_string(c.G) + ", " +
                              std::to_string(c.C) + " -> " + std::to_string(c.O) + " channels");
    return Status::Ok();
  }
  if ((p == Path::kPointwise || p == Path::kPointwiseBatched) && !c.pointwise())
    return invalid_argument(std::string(kernel) + " needs a 1x1 stride-1 unpadded kernel, got " +
                            std::to_string(c.KH) + "x" + std::to_string(c.KW) + " stride " + pair_string(c.SH, c.SW) +
                            " padding " + pair_string(c.PH, c.PW));
  if (p == Path::kDepthwise && !c.depthwise())
    return invalid_argument(std::string(kernel) + " needs one input channel per group, got " + std::to_string(c.C) +
                            " input channels in " + std::to_string(c.G) + " group(s)");
  return Status::Ok();
}

// Geometry from the input shape x[N,C,H,W] (logical order, whatever the layout), the weight shape
// w[O,Cg,KH,KW] and the attrs; checks that dy/y has shape [N,O,HO,WO] ([N,HO,WO,O] with layout nhwc).
// Used by check (full validation) and run (already validated).
Status make_conv(const char* op, const Attrs& attrs, const int64_t* xs, const int64_t* ws, const TensorView& y,
                 Conv* cv) {
  Conv& c = *cv;
  ET_RETURN_IF_ERROR(nhwc::read_layout(attrs, op, &c.nhwc));
  c.N = xs[0], c.C = xs[1], c.H = xs[2], c.W = xs[3];
  c.O = ws[0], c.Cg = ws[1], c.KH = ws[2], c.KW = ws[3];
  cpu::ConvParams cp;
  ET_RETURN_IF_ERROR(cpu::read_conv_params(op, attrs, &cp));
  c.SH = cp.SH, c.SW = cp.SW, c.PH = cp.PH, c.PW = cp.PW, c.DH = cp.DH, c.DW = cp.DW, c.G = cp.G;
  if (c.SH < 1 || c.SW < 1 || c.DH < 1 || c.DW < 1 || c.PH < 0 || c.PW < 0)
    return invalid_argument(std::string(op) + ": stride and dilation must be >= 1, padding >= 0");
  if (c.G < 1 || c.C % c.G || c.O % c.G || c.C / c.G != c.Cg || c.KH < 1 || c.KW < 1)
    return invalid_argument(std::string(op) + ": input channels " + std::to_string(c.C) + " / groups " +
                            std::to_string(c.G) + " do not fit weight " + cpu::dims_string(c.O, c.Cg, c.KH, c.KW));
  c.HO = cpu::conv_out_size(c.H, c.KH, c.SH, c.PH, c.DH);
  c.WO = cpu::conv_out_size(c.W, c.KW, c.SW, c.PW, c.DW);
  if (c.HO <= 0 || c.WO <= 0) return invalid_argument(std::string(op) + ": output would be empty");
  if (c.nhwc ? !cpu::is_shape(y, c.N, c.HO, c.WO, c.O) : !cpu::is_shape(y, c.N, c.O, c.HO, c.WO))
    return invalid_argument(std::string(op) + ": output/gradient " + y.shape_string() + " is not " +
                            (c.nhwc ? cpu::dims_string(c.N, c.HO, c.WO, c.O) + " (layout nhwc)"
                                    : cpu::dims_string(c.N, c.O, c.HO, c.WO)));
  return Status::Ok();
}

// The logical [N, C, H, W] of a stored activation tensor (x of conv2d and conv2d_grad_weight): its
// own shape, or [N, H, W, C] read back with layout nhwc (an unknown layout: make_conv reports it).
void logical_input(const Attrs& attrs, const TensorView& x, int64_t* xs) {
  bool is_nhwc = false;
  (void)nhwc::read_layout(attrs, "conv2d", &is_nhwc);
  if (is_nhwc) {
    xs[0] = x.shape[0], xs[1] = x.shape[3], xs[2] = x.shape[1], xs[3] = x.shape[2];
  } else {
    for (int i = 0; i < 4; ++i) xs[i] = x.shape[i];
  }
}

// Output positions o in [lo, hi) whose input coordinate o*s - p + k*d lies inside [0, size).
void valid_range(int64_t out, int64_t size, int64_t s, int64_t p, int64_t kd, int64_t* lo, int64_t* hi) {
  const int64_t off = kd - p;  // input coordinate = o*s + off
  int64_t l = off >= 0 ? 0 : (-off + s - 1) / s;
  int64_t h = size - off <= 0 ? 0 : (size - off - 1) / s + 1;
  l = std::min(l, out);
  h = std::max(l, std::min(h, out));
  *lo = l;
  *hi = h;
}

// ---- im2col / col2im --------------------------------------------------------------------------
// Column matrix of one group of one image, for output rows [oh0, oh1): row (c, i, j), column
// (oh - oh0) * WO + ow, value x[c, oh*SH - PH + i*DH, ow*SW - PW + j*DW] (0 outside).

// ld: the column matrix's row stride (default: ncols; more when several images sit side by side).
// pool: null = the calling thread only (inside another parallel_for).
void im2col(const Conv& c, const float* x /* [Cg,H,W] */, int64_t oh0, int64_t oh1, float* col, ThreadPool* pool,
            int64_t ld = 0) {
  const int64_t ncols = (oh1 - oh0) * c.WO;
  if (ld == 0) ld = ncols;
  const int64_t kk = c.KH * c.KW;
  auto rows = [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t ch = r / kk, i = (r % kk) / c.KW, j = r % c.KW;
      const float* xc = x + ch * c.H * c.W;
      float* dst = col + r * ld;
      int64_t lo, hi;
      valid_range(c.WO, c.W, c.SW, c.PW, j * c.DW, &lo, &hi);
      const int64_t woff = j * c.DW - c.PW;
      for (int64_t oh = oh0; oh < oh1; ++oh, dst += c.WO) {
        const int64_t ih = oh * c.SH - c.PH + i * c.DH;
        if (ih < 0 || ih >= c.H) {
          std::fill(dst, dst + c.WO, 0.0f);
          continue;
        }
        std::fill(dst, dst + lo, 0.0f);
        if (hi > lo) {
          const float* xr = xc + ih * c.W + lo * c.SW + woff;  // input of output column lo
          if (c.SW == 1) {
            std::memcpy(dst + lo, xr, sizeof(float) * (hi - lo));
          } else {
            for (int64_t k = 0; k < hi - lo; ++k) dst[lo + k] = xr[k * c.SW];
          }
        }
        std::fill(dst + hi, dst + c.WO, 0.0f);
      }
    }
  };
  if (!pool) return rows(0, c.Cg * kk);
  pool->parallel_for(c.Cg * kk, std::max<int64_t>(1, 4096 / std::max<int64_t>(ncols, 1)), rows);
}

// dx[c] += scatter of the column rows of channel c; one channel per task, so writes never collide.
// `mask` (last band only, else null): the task then masks its channel while it is in cache;
// mask_index is the masked tensor's index of dx[0, 0, 0].
void col2im(const Conv& c, const float* col, int64_t oh0, int64_t oh1, float* dx /* [Cg,H,W] */, ThreadPool* pool,
            const OutputMask* mask = nullptr, int64_t mask_index = 0, int64_t ld = 0) {
  const int64_t ncols = (oh1 - oh0) * c.WO;
  if (ld == 0) ld = ncols;
  const int64_t kk = c.KH * c.KW;
  pool->parallel_for(c.Cg, std::max<int64_t>(1, 4096 / std::max<int64_t>(ncols * kk, 1)), [&](int64_t c0, int64_t c1) {
    for (int64_t ch = c0; ch < c1; ++ch) {
      float* dxc = dx + ch * c.H * c.W;
      for (int64_t i = 0; i < c.KH; ++i) {
        for (int64_t j = 0; j < c.KW; ++j) {
          const float* src = col + ((ch * c.KH + i) * c.KW + j) * ld;
          int64_t lo, hi;
          valid_range(c.WO, c.W, c.SW, c.PW, j * c.DW, &lo, &hi);
          const int64_t woff = j * c.DW - c.PW;
          for (int64_t oh = oh0; oh < oh1; ++oh, src += c.WO) {
            const int64_t ih = oh * c.SH - c.PH + i * c.DH;
            if (ih < 0 || ih >= c.H || hi <= lo) continue;
            float* __restrict xr = dxc + ih * c.W + lo * c.SW + woff;
            const float* __restrict sr = src + lo;
            if (c.SW == 1) {
              for (int64_t k = 0; k < hi - lo; ++k) xr[k] += sr[k];
            } else {
              for (int64_t k = 0; k < hi - lo; ++k) xr[k * c.SW] += sr[k];
            }
          }
        }
      }
      if (mask) mask->apply(dxc, mask_index + ch * c.H * c.W, c.H * c.W);
    }
  });
}

// The workspace the planner reserved from *_workspace(): the im2col path's column buffer, or the
// pointwise_batched path's packed chunk (both operands of one group: [Cg + Og, images * H*W]), or
// what the NHWC path of the op needs (conv_nhwc.h).
size_t column_bytes(const Conv& c, Path p, ConvOp op) {
  if (c.nhwc) return nhwc::workspace_bytes(nhwc_shape(c), op);
  const Path path = resolve(c, p);
  if (path == Path::kPointwiseBatched && c.pack_images() > 1)
    return static_cast<size_t>((c.Cg + c.Og()) * c.pack_images() * c.H * c.W) * sizeof(float);
  if (path == Path::kIm2colBatched && c.im2col_images() > 1)  // columns + the packed other operand
    return static_cast<size_t>((c.kdim() + c.Og()) * c.im2col_images() * c.HO * c.WO) * sizeof(float);
  if (path != Path::kIm2col && path != Path::kIm2colBatched) return 0;
  return static_cast<size_t>(c.kdim() * c.band_rows() * c.WO) * sizeof(float);
}

// ---- pointwise packing -------------------------------------------------------------------------
// A chunk of images n0 .. n0+nb of one group as one matrix: row r (channel first + r of a tensor
// with `channels` channels per image), column i * plane + k = element k of image n0 + i.

void pack_images(const float* t, int64_t channels, int64_t first, int64_t rows, int64_t plane, int64_t n0,
                 int64_t nb, float* packed, ThreadPool* pool) {
  const int64_t cols = nb * plane;
  pool->parallel_for(rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(cols, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t i = 0; i < nb; ++i)
        std::memcpy(packed + r * cols + i * plane, t + ((n0 + i) * channels + first + r) * plane,
                    sizeof(float) * plane);
  });
}

// The inverse: packed rows back into the tensor, each image's plane masked (mask: null, or indexed
// by the tensor's own row-major index) as it lands.
void unpack_images(const float* packed, int64_t channels, int64_t first, int64_t rows, int64_t plane, int64_t n0,
                   int64_t nb, float* t, const OutputMask* mask, ThreadPool* pool) {
  const int64_t cols = nb * plane;
  pool->parallel_for(rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(cols, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t i = 0; i < nb; ++i) {
        const int64_t index = ((n0 + i) * channels + first + r) * plane;
        std::memcpy(t + index, packed + r * cols + i * plane, sizeof(float) * plane);
        if (mask) mask->apply(t + index, index, plane);
      }
  });
}

Status expect_workspace(const KernelArgs& a, const Conv& c, Path p, ConvOp op) {
  const char* kernel = kernel_name(op, p);
  const size_t need = column_bytes(c, p, op);
  if (a.workspace_bytes >= need && (a.workspace || need == 0)) return Status::Ok();
  return internal_error(std::string(kernel) + ": workspace of " + std::to_string(a.workspace_bytes) +
                        " bytes, needs " + std::to_string(need));
}

// out[0..n) = min(max(out, lo), hi), NaN kept (the generic paths' activation).
void clamp_row(float* out, int64_t n, float lo, float hi) {
  for (int64_t k = 0; k < n; ++k) {
    float r = out[k] < lo ? lo : out[k];
    out[k] = r > hi ? hi : r;
  }
}

// Grain for a parallel_for over planes of `plane` elements.
int64_t plane_grain(int64_t plane) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(plane, 1)); }

// ---- conv2d ----------------------------------------------------------------------------------

Status conv_check(const KernelArgs& a, Path p) {
  const char* kernel = kernel_name(kForward, p);
  ET_RETURN_IF_ERROR(expect_arity(a, kernel, 2, 3, 1));
  ET_RETURN_IF_ERROR(cpu::expect_all_f32(a, kernel, a.num_inputs));
  const TensorView &x = a.in(0), &w = a.in(1);
  if (x.rank != 4 || w.rank != 4)
    return invalid_argument(std::string(kernel) + ": wants 4-d input and weight, got " + x.shape_string() + " and " +
                            w.shape_string());
  Conv c;
  int64_t xs[4];
  logical_input(a.attr(), x, xs);
  ET_RETURN_IF_ERROR(make_conv(kernel, a.attr(), xs, w.shape, a.out(0), &c));
  if (a.num_inputs == 3 && (a.in(2).rank != 1 || a.in(2).shape[0] != c.O))
    return invalid_argument(std::string(kernel) + ": bias " + a.in(2).shape_string() + " does not fit " +
                            std::to_string(c.O) + " output channels");
  float lo, hi;
  ET_RETURN_IF_ERROR(read_activation(a.attr(), kernel, &lo, &hi));
  return path_fits(kForward, c, p);
}

size_t conv_workspace(const KernelArgs& a, Path p) {
  Conv c;
  int64_t xs[4];
  logical_input(a.attr(), a.in(0), xs);
  if (!make_conv(kernel_name(kForward, p), a.attr(), xs, a.in(1).shape, a.out(0), &c).ok()) return 0;
  return column_bytes(c, p, kForward);
}

// y = clamp(depthwise conv + bias, act_lo, act_hi); -inf/+inf without an activation.
void conv_depthwise_generic(const Conv& c, const float* x, const float* w, const float* bias, float act_lo,
                            float act_hi, float* y, ThreadPool* pool) {
  const int64_t mult = c.Og();  // output channels per input channel
  const int64_t plane = c.HO * c.WO;
  pool->parallel_for(c.N * c.O, plane_grain(plane * c.KH * c.KW), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t n = p / c.O, o = p % c.O;
      const float* xc = x + (n * c.C + o / mult) * c.H * c.W;
      const float* wo = w + o * c.KH * c.KW;
      float* yp = y + p * plane;
      const float b0 = bias ? bias[o] : 0.0f;
      for (int64_t oh = 0; oh < c.HO; ++oh) {
        float* yr = yp + oh * c.WO;
        std::fill(yr, yr + c.WO, b0);
        for (int64_t i = 0; i < c.KH; ++i) {
          const int64_t ih = oh * c.SH - c.PH + i * c.DH;
          if (ih < 0 || ih >= c.H) continue;
          for (int64_t j = 0; j < c.KW; ++j) {
            int64_t lo, hi;
            valid_range(c.WO, c.W, c.SW, c.PW, j * c.DW, &lo, &hi);
            if (hi <= lo) continue;
            const float wv = wo[i * c.KW + j];
            const float* __restrict xr = xc + ih * c.W + lo * c.SW + j * c.DW - c.PW;
            float* __restrict yl = yr + lo;
            if (c.SW == 1) {
              for (int64_t k = 0; k < hi - lo; ++k) yl[k] += wv * xr[k];
            } else {
              for (int64_t k = 0; k < hi - lo; ++k) yl[k] += wv * xr[k * c.SW];
            }
          }
        }
        clamp_row(yr, c.WO, act_lo, act_hi);  // the row is finished and still in L1
      }
    }
  });
}

// ---- depthwise, staged rows --------------------------------------------------------------------
// The fast depthwise path copies each input row it needs into a stack buffer, zero-padded and
// split into SW phases: ph[r * np + q] = xpad[q * SW + r]. Tap (i, j) of output column ow then
// reads phase (j*DW) % SW at position ow + (j*DW) / SW, so every tap is one contiguous,
// bounds-free vector loop over the output row, whatever the stride, padding or dilation. Rows
// are staged a little past WO (to a whole number of kChunk vectors), so the loops never need a
// scalar tail: the extra outputs are computed from zero padding and thrown away.
// Rows too wide for the buffer (or more than kMaxTaps taps) take the generic loops above.

constexpr int64_t kStageFloats = 8192;  // 32 KiB of stack per thread per buffer
constexpr int64_t kMaxTaps = 64;
constexpr int64_t kChunk = 16;          // floats per vector step of the row loops

int64_t round_chunk(int64_t n) { return (n + kChunk - 1) / kChunk * kChunk; }

// positions per phase the forward / weight-gradient taps read (whole chunks of outputs)
int64_t stage_positions(const Conv& c) { return round_chunk(c.WO) + ((c.KW - 1) * c.DW) / c.SW; }

// padded phase positions the input-gradient rows cover: the scatter targets and the cropped row
int64_t scatter_positions(const Conv& c) {
  return std::max(c.W - 1 + c.PW, (c.WO - 1) * c.SW + (c.KW - 1) * c.DW) / c.SW + 1;
}

bool stageable(const Conv& c) {
  return c.KH * c.SW * stage_positions(c) <= kStageFloats && c.SW * scatter_positions(c) <= kStageFloats &&
         c.KH * c.KW <= kMaxTaps;
}

// dst[k] += w * src[k]
inline void axpy(float* __restrict dst, const float* __restrict src, float w, int64_t n) {
  for (int64_t k = 0; k < n; ++k) dst[k] += w * src[k];
}

#if defined(__GNUC__) || defined(__clang__)
typedef float VChunk __attribute__((vector_size(kChunk * sizeof(float))));
typedef float VChunkU __attribute__((vector_size(kChunk * sizeof(float)), aligned(alignof(float)), may_alias));

// y[k] = clamp(b + sum_t w[t] * src[t][k], lo, hi) for the NV chunks at k0: all taps accumulate
// in registers (NV independent chains hide the FMA latency), the activation is applied there
// too (two compares+selects per vector; lo/hi = -inf/+inf leave every value, NaN included,
// as it is), and y is written once.
template <int NV>
inline void taps_chunk(float* out, int64_t k0, float b, const float* const* src, const float* w, int64_t taps,
                       float lo, float hi) {
  VChunk acc[NV];
  for (int v = 0; v < NV; ++v) acc[v] = VChunk{} + b;
  for (int64_t t = 0; t < taps; ++t) {
    const float wt = w[t];
    const float* s = src[t] + k0;
    for (int v = 0; v < NV; ++v) acc[v] += wt * *reinterpret_cast<const VChunkU*>(s + v * kChunk);
  }
  const VChunk vlo = VChunk{} + lo, vhi = VChunk{} + hi;
  for (int v = 0; v < NV; ++v) {
    VChunk r = acc[v] < vlo ? vlo : acc[v];
    r = r > vhi ? vhi : r;
    *reinterpret_cast<VChunkU*>(out + k0 + v * kChunk) = r;
  }
}

// out[0..n) (n whole chunks) = clamp(b + sum_t w[t] * src[t][0..n), lo, hi)
void taps_row(float* out, int64_t n, float b, const float* const* src, const float* w, int64_t taps, float lo,
              float hi) {
  int64_t k = 0;
  for (; k + 4 * kChunk <= n; k += 4 * kChunk) taps_chunk<4>(out, k, b, src, w, taps, lo, hi);
  if (k + 2 * kChunk <= n) taps_chunk<2>(out, k, b, src, w, taps, lo, hi), k += 2 * kChunk;
  if (k < n) taps_chunk<1>(out, k, b, src, w, taps, lo, hi);
}
#else
void taps_row(float* out, int64_t n, float b, const float* const* src, const float* w, int64_t taps, float lo,
              float hi) {
  std::fill(out, out + n, b);
  for (int64_t t = 0; t < taps; ++t) axpy(out, src[t], w[t], n);
  clamp_row(out, n, lo, hi);
}
#endif

// ---- depthwise, channel blocks (small maps) ------------------------------------------------------
// On the small maps of late stages (W of 8, 4, 2, 1) a row holds fewer outputs than one vector
// step, so the row loops above spend most lanes on padding. There (one output channel per input
// channel) the kernel works channels-last inside: a block of kChannelBlock channels of one image
// is transposed into a stack buffer [H*W][block], every tap is then one vector loop over the
// block's channels, and the result is transposed back (masked / clamped on the way). Each output
// still sums its taps in (i, j) order from the bias, as the row path does. grad_weight below.

constexpr int64_t kChannelBlock = 64;

bool channel_blockable(const Conv& c) {
  return c.Og() == 1 && c.WO < kChunk && c.KH * c.KW <= kMaxTaps && c.H * c.W * kChannelBlock <= kStageFloats &&
         c.HO * c.WO * kChannelBlock <= kStageFloats;
}

// dst[k * kChannelBlock + ch] = src[(c0 + ch) * plane + k] for ch < cb, k < plane (one image)
void to_channels_last(const float* src, int64_t c0, int64_t cb, int64_t plane, float* dst) {
  for (int64_t ch = 0; ch < cb; ++ch) {
    const float* s = src + (c0 + ch) * plane;
    for (int64_t k = 0; k < plane; ++k) dst[k * kChannelBlock + ch] = s[k];
  }
}

// wt[t * kChannelBlock + ch] = w[(c0 + ch) * taps + t]: the block's filters, tap-major
void filters_channels_last(const float* w, int64_t c0, int64_t cb, int64_t taps, float* wt) {
  for (int64_t ch = 0; ch < cb; ++ch)
    for (int64_t t = 0; t < taps; ++t) wt[t * kChannelBlock + ch] = w[(c0 + ch) * taps + t];
}

int64_t channel_blocks(const Conv& c) { return (c.C + kChannelBlock - 1) / kChannelBlock; }

// body(n, c0, cb, wt, it, ot) for every (channel block, image) task: wt holds the block's filters
// tap-major, it the image's block of `in` channels-last ([in_plane][kChannelBlock]), ot is scratch
// of the same size for the result. Tasks run block-major, so a task range re-stages a block's
// filters only when the block changes.
template <typename Body>
void for_each_channel_block(const Conv& c, const float* w, const float* in, int64_t in_channels, int64_t in_plane,
                            int64_t grain, ThreadPool* pool, const Body& body) {
  const int64_t taps = c.KH * c.KW;
  pool->parallel_for(channel_blocks(c) * c.N, grain, [&](int64_t p0, int64_t p1) {
    alignas(64) float it[kStageFloats];
    alignas(64) float ot[kStageFloats];
    alignas(64) float wt[kMaxTaps * kChannelBlock];
    int64_t loaded = -1;
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t block = p / c.N, n = p % c.N, c0 = block * kChannelBlock;
      const int64_t cb = std::min(kChannelBlock, c.C - c0);
      if (block != loaded) filters_channels_last(w, c0, cb, taps, wt), loaded = block;
      to_channels_last(in + n * in_channels * in_plane, c0, cb, in_plane, it);
      body(n, c0, cb, wt, it, ot);
    }
  });
}

void conv_depthwise_channels(const Conv& c, const float* x, const float* w, const float* bias, float act_lo,
                             float act_hi, float* y, ThreadPool* pool) {
  const int64_t plane = c.H * c.W, oplane = c.HO * c.WO, taps = c.KH * c.KW;
  const int64_t grain = plane_grain(oplane * taps * kChannelBlock);
  for_each_channel_block(c, w, x, c.C, plane, grain, pool, [&](int64_t n, int64_t c0, int64_t cb, const float* wt,
                                                               const float* xt, float* yt) {
    for (int64_t oh = 0; oh < c.HO; ++oh) {
      for (int64_t ow = 0; ow < c.WO; ++ow) {
        float* __restrict acc = yt + (oh * c.WO + ow) * kChannelBlock;
        for (int64_t ch = 0; ch < cb; ++ch) acc[ch] = bias ? bias[c0 + ch] : 0.0f;
        for (int64_t i = 0; i < c.KH; ++i) {
          const int64_t ih = oh * c.SH - c.PH + i * c.DH;
          if (ih < 0 || ih >= c.H) continue;
          for (int64_t j = 0; j < c.KW; ++j) {
            const int64_t iw = ow * c.SW - c.PW + j * c.DW;
            if (iw < 0 || iw >= c.W) continue;
            const float* __restrict xs = xt + (ih * c.W + iw) * kChannelBlock;
            const float* __restrict ws = wt + (i * c.KW + j) * kChannelBlock;
            for (int64_t ch = 0; ch < cb; ++ch) acc[ch] += ws[ch] * xs[ch];
          }
        }
      }
    }
    for (int64_t ch = 0; ch < cb; ++ch) {
      float* out = y + (n * c.O + c0 + ch) * oplane;
      for (int64_t k = 0; k < oplane; ++k) out[k] = yt[k * kChannelBlock + ch];
      clamp_row(out, oplane, act_lo, act_hi);
    }
  });
}

// dx[ih, iw] = sum over the taps (i, j) whose output (oh, ow) reads (ih, iw), in (i, j) order.
void grad_input_depthwise_channels(const Conv& c, const float* dy, const float* w, const OutputMask* mask, float* dx,
                                   ThreadPool* pool) {
  const int64_t plane = c.H * c.W, oplane = c.HO * c.WO, taps = c.KH * c.KW;
  const int64_t grain = plane_grain(plane * taps * kChannelBlock);
  for_each_channel_block(c, w, dy, c.O, oplane, grain, pool, [&](int64_t n, int64_t c0, int64_t cb, const float* wt,
                                                                 const float* dyt, float* dxt) {
    for (int64_t ih = 0; ih < c.H; ++ih) {
      for (int64_t iw = 0; iw < c.W; ++iw) {
        float* __restrict acc = dxt + (ih * c.W + iw) * kChannelBlock;
        for (int64_t ch = 0; ch < cb; ++ch) acc[ch] = 0.0f;
        for (int64_t i = 0; i < c.KH; ++i) {
          const int64_t num = ih + c.PH - i * c.DH;  // = oh * SH
          if (num < 0 || num % c.SH || num / c.SH >= c.HO) continue;
          for (int64_t j = 0; j < c.KW; ++j) {
            const int64_t numw = iw + c.PW - j * c.DW;  // = ow * SW
            if (numw < 0 || numw % c.SW || numw / c.SW >= c.WO) continue;
            const float* __restrict ds = dyt + ((num / c.SH) * c.WO + numw / c.SW) * kChannelBlock;
            const float* __restrict ws = wt + (i * c.KW + j) * kChannelBlock;
            for (int64_t ch = 0; ch < cb; ++ch) acc[ch] += ws[ch] * ds[ch];
          }
        }
      }
    }
    for (int64_t ch = 0; ch < cb; ++ch) {
      const int64_t index = (n * c.C + c0 + ch) * plane;
      for (int64_t k = 0; k < plane; ++k) dx[index + k] = dxt[k * kChannelBlock + ch];
      if (mask) mask->apply(dx + index, index, plane);
    }
  });
}

void conv_depthwise(const Conv& c, const float* x, const float* w, const float* bias, float act_lo, float act_hi,
                    float* y, ThreadPool* pool) {
  if (channel_blockable(c)) return conv_depthwise_channels(c, x, w, bias, act_lo, act_hi, y, pool);
  if (!stageable(c)) return conv_depthwise_generic(c, x, w, bias, act_lo, act_hi, y, pool);
  const int64_t mult = c.Og(), plane = c.HO * c.WO, np = stage_positions(c), nout = round_chunk(c.WO);
  // Staged rows are kept in a ring of `span` slots (input row ih in slot ih % span) and staged
  // once per plane, not once per output row that reads them: 3x fewer stagings for a 3x3 stride 1,
  // 1.5x for stride 2 (the deinterleaving copies were half of the kernel's time). The rows one
  // output row reads span (KH-1)*DH+1 input rows, so they never share a slot, and a slot is reused
  // only by a row below them all. Where the ring does not fit, each output row restages its KH.
  const int64_t span = (c.KH - 1) * c.DH + 1;
  const bool ring = span <= kMaxTaps && span * c.SW * np <= kStageFloats;
  pool->parallel_for(c.N * c.O, plane_grain(plane * c.KH * c.KW), [&](int64_t p0, int64_t p1) {
    alignas(64) float ph[kStageFloats];  // the staged input rows
    alignas(64) float row[kStageFloats];  // one output row, whole chunks
    const float* src[kMaxTaps];
    float wt[kMaxTaps];
    int64_t staged[kMaxTaps];  // the input row each ring slot holds (-1: none)
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t n = p / c.O, o = p % c.O;
      const float* xc = x + (n * c.C + o / mult) * c.H * c.W;
      const float* wo = w + o * c.KH * c.KW;
      const float b0 = bias ? bias[o] : 0.0f;
      std::fill(staged, staged + kMaxTaps, int64_t{-1});
      for (int64_t oh = 0; oh < c.HO; ++oh) {
        int64_t taps = 0;
        for (int64_t i = 0; i < c.KH; ++i) {
          const int64_t ih = oh * c.SH - c.PH + i * c.DH;
          if (ih < 0 || ih >= c.H) continue;  // a padding row adds nothing
          const int64_t slot = ring ? ih % span : i;
          float* phi = ph + slot * c.SW * np;
          if (!ring || staged[slot] != ih) {
            cpu::stage_row(xc + ih * c.W, c.W, c.PW, c.SW, np, 0.0f, phi);
            staged[slot] = ih;
          }
          for (int64_t j = 0; j < c.KW; ++j, ++taps) {
            const int64_t t = j * c.DW;
            src[taps] = phi + (t % c.SW) * np + t / c.SW;
            wt[taps] = wo[i * c.KW + j];
          }
        }
        taps_row(row, nout, b0, src, wt, taps, act_lo, act_hi);  // taps in (i, j) order
        std::memcpy(y + p * plane + oh * c.WO, row, sizeof(float) * c.WO);
      }
    }
  });
}

// y_g[:, rows oh0..oh1) = w_g @ im2col(x_g, rows oh0..oh1), the columns in col. One parallel
// region: each thread takes a slice of the band's rows, lays out its own columns in its part of
// col and runs its GEMM single-threaded while they are in its cache. Threading the im2col and
// then the GEMM instead (two fork/joins per band, the GEMM's N split in halves after the columns
// were written by both threads) ran ResNet's 64->64 3x3 at 157 GFLOP/s on 2 threads vs 107 on
// one. Each output element is still one GEMM's dot product over the same K (the library's and
// the own kernel's sums do not depend on N), so the result does not depend on the thread count.
void im2col_gemm_band(const Conv& c, const float* xg, const float* wg, int64_t oh0, int64_t oh1, float* col,
                      float* yg, const GemmBias& gb, ThreadPool* pool) {
  const int64_t kdim = c.kdim(), Og = c.Og(), plane = c.HO * c.WO, rows = oh1 - oh0;
  const int64_t parts = std::min<int64_t>(pool->num_threads(), rows);
  if (parts <= 1) {
    const int64_t ncols = rows * c.WO;
    im2col(c, xg, oh0, oh1, col, pool);
    sgemm(false, false, Og, ncols, kdim, 1.0f, wg, kdim, col, ncols, 0.0f, yg + oh0 * c.WO, plane, pool, gb);
    return;
  }
  pool->parallel_for(parts, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t r0 = oh0 + rows * t / parts, r1 = oh0 + rows * (t + 1) / parts, ncols = (r1 - r0) * c.WO;
      float* part = col + kdim * (r0 - oh0) * c.WO;
      im2col(c, xg, r0, r1, part, nullptr);
      sgemm(false, false, Og, ncols, kdim, 1.0f, wg, kdim, part, ncols, 0.0f, yg + r0 * c.WO, plane, nullptr, gb);
    }
  });
}

Status conv_run(const KernelArgs& a, Path p) {
  const char* kernel = kernel_name(kForward, p);
  Conv c;
  int64_t xs[4];
  logical_input(a.attr(), a.in(0), xs);
  (void)make_conv(kernel, a.attr(), xs, a.in(1).shape, a.out(0), &c);  // check validated it
  const float* x = a.in(0).as<float>();
  const float* w = a.in(1).as<float>();
  const float* bias = a.num_inputs == 3 ? a.in(2).as<float>() : nullptr;
  float* y = a.out(0).as<float>();
  GemmBias ep;  // the activation, clamped as the GEMM writes y
  ET_RETURN_IF_ERROR(read_activation(a.attr(), kernel, &ep.clamp_lo, &ep.clamp_hi));
  if (c.nhwc) {
    ET_RETURN_IF_ERROR(expect_workspace(a, c, p, kForward));
    nhwc::forward(nhwc_shape(c), x, w, bias, ep.clamp_lo, ep.clamp_hi, y, a.workspace, a.pool);
    return Status::Ok();
  }
  const Path path = resolve(c, p);
  if (path == Path::kDepthwise) {
    conv_depthwise(c, x, w, bias, ep.clamp_lo, ep.clamp_hi, y, a.pool);
    return Status::Ok();
  }
  const int64_t plane = c.HO * c.WO, kdim = c.kdim(), Og = c.Og();
  const int64_t band = c.band_rows();
  float* col = static_cast<float*>(a.workspace);
  ET_RETURN_IF_ERROR(expect_workspace(a, c, p, kForward));
  if (path == Path::kPointwiseBatched && c.pack_images() > 1) {  // yp[Og, cols] = w_g @ xp[Cg, cols]
    const int64_t per = c.pack_images();
    for (int64_t n0 = 0; n0 < c.N; n0 += per) {
      const int64_t nb = std::min(per, c.N - n0), cols = nb * plane;
      float* xp = col;
      float* yp = col + kdim * cols;
      for (int64_t g = 0; g < c.G; ++g) {
        GemmBias gb = ep;
        if (bias) gb.row = bias + g * Og;
        pack_images(x, c.C, g * c.Cg, c.Cg, plane, n0, nb, xp, a.pool);
        sgemm(false, false, Og, cols, kdim, 1.0f, w + g * Og * kdim, kdim, xp, cols, 0.0f, yp, cols, a.pool, gb);
        unpack_images(yp, c.O, g * Og, Og, plane, n0, nb, y, nullptr, a.pool);
      }
    }
    return Status::Ok();
  }
  if (path == Path::kIm2colBatched && c.im2col_images() > 1) {  // yp[Og, cols] = w_g @ col[kdim, cols]
    const int64_t per = c.im2col_images();
    for (int64_t n0 = 0; n0 < c.N; n0 += per) {
      const int64_t nb = std::min(per, c.N - n0), cols = nb * plane;
      float* yp = col + kdim * cols;
      for (int64_t g = 0; g < c.G; ++g) {
        GemmBias gb = ep;
        if (bias) gb.row = bias + g * Og;
        for (int64_t i = 0; i < nb; ++i)
          im2col(c, x + ((n0 + i) * c.C + g * c.Cg) * c.H * c.W, 0, c.HO, col + i * plane, a.pool, cols);
        sgemm(false, false, Og, cols, kdim, 1.0f, w + g * Og * kdim, kdim, col, cols, 0.0f, yp, cols, a.pool, gb);
        unpack_images(yp, c.O, g * Og, Og, plane, n0, nb, y, nullptr, a.pool);
      }
    }
    return Status::Ok();
  }
  for (int64_t n = 0; n < c.N; ++n) {
    for (int64_t g = 0; g < c.G; ++g) {
      const float* xg = x + (n * c.C + g * c.Cg) * c.H * c.W;
      const float* wg = w + g * Og * kdim;
      float* yg = y + (n * c.O + g * Og) * plane;
      GemmBias gb = ep;  // the bias of output channel o is a per-row bias of the [Og, HW] product
      if (bias) gb.row = bias + g * Og;
      if (path == Path::kPointwise || path == Path::kPointwiseBatched) {  // y_g = w_g @ x_g
        sgemm(false, false, Og, plane, kdim, 1.0f, wg, kdim, xg, c.H * c.W, 0.0f, yg, plane, a.pool, gb);
        continue;
      }
      for (int64_t oh0 = 0; oh0 < c.HO; oh0 += band) {
        const int64_t oh1 = std::min(c.HO, oh0 + band);
        im2col_gemm_band(c, xg, wg, oh0, oh1, col, yg, gb, a.pool);
      }
    }
  }
  return Status::Ok();
}

// ---- conv2d_grad_input ------------------------------------------------------------------------

Status grad_input_geometry(const KernelArgs& a, const char* kernel, Conv* c) {
  int64_t xs[4];
  if (!cpu::read_shape4(a.attr(), "input_shape", xs))
    return invalid_argument(std::string(kernel) + ": attr input_shape must be 4 ints");
  return make_conv(kernel, a.attr(), xs, a.in(1).shape, a.in(0), c);
}

Status grad_input_check(const KernelArgs& a, Path p) {
  const char* kernel = kernel_name(kGradInput, p);
  ET_RETURN_IF_ERROR(expect_arity(a, kernel, 2, 3, 1));
  ET_RETURN_IF_ERROR(cpu::expect_all_f32(a, kernel, 2));
  if (a.in(0).rank != 4 || a.in(1).rank != 4)
    return invalid_argument(std::string(kernel) + ": wants 4-d dy and weight, got " + a.in(0).shape_string() +
                            " and " + a.in(1).shape_string());
  Conv c;
  ET_RETURN_IF_ERROR(grad_input_geometry(a, kernel, &c));
  // input_shape is logical [N, C, H, W]; dx is stored [N, H, W, C] with layout nhwc
  if (c.nhwc ? !cpu::is_shape(a.out(0), c.N, c.H, c.W, c.C) : !cpu::is_shape(a.out(0), c.N, c.C, c.H, c.W))
    return invalid_argument(std::string(kernel) + ": output " + a.out(0).shape_string() + " is not input_shape" +
                            (c.nhwc ? " in layout nhwc" : ""));
  OutputMask mask;
  ET_RETURN_IF_ERROR(read_output_mask(a, 2, a.out(0), kernel, &mask));
  return path_fits(kGradInput, c, p);
}

size_t grad_input_workspace(const KernelArgs& a, Path p) {
  Conv c;
  return grad_input_geometry(a, kernel_name(kGradInput, p), &c).ok() ? column_bytes(c, p, kGradInput) : 0;
}

// mask: null, or zeroes dx elements (index = dx's own row-major index) once each plane is done.
void grad_input_depthwise_generic(const Conv& c, const float* dy, const float* w, const OutputMask* mask, float* dx,
                                  ThreadPool* pool) {
  const int64_t mult = c.Og();
  const int64_t plane = c.H * c.W, oplane = c.HO * c.WO;
  pool->parallel_for(c.N * c.C, plane_grain(oplane * mult * c.KH * c.KW), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {  // p = (n, input channel)
      const int64_t n = p / c.C, ch = p % c.C;
      float* dxp = dx + p * plane;
      std::fill(dxp, dxp + plane, 0.0f);
      for (int64_t m = 0; m < mult; ++m) {
        const int64_t o = ch * mult + m;
        const float* dyo = dy + (n * c.O + o) * oplane;
        const float* wo = w + o * c.KH * c.KW;
        for (int64_t oh = 0; oh < c.HO; ++oh) {
          const float* dyr = dyo + oh * c.WO;
          for (int64_t i = 0; i < c.KH; ++i) {
            const int64_t ih = oh * c.SH - c.PH + i * c.DH;
            if (ih < 0 || ih >= c.H) continue;
            for (int64_t j = 0; j < c.KW; ++j) {
              int64_t lo, hi;
              valid_range(c.WO, c.W, c.SW, c.PW, j * c.DW, &lo, &hi);
              if (hi <= lo) continue;
              const float wv = wo[i * c.KW + j];
              float* __restrict xr = dxp + ih * c.W + lo * c.SW + j * c.DW - c.PW;
              const float* __restrict dl = dyr + lo;
              if (c.SW == 1) {
                for (int64_t k = 0; k < hi - lo; ++k) xr[k] += wv * dl[k];
              } else {
                for (int64_t k = 0; k < hi - lo; ++k) xr[k * c.SW] += wv * dl[k];
              }
            }
          }
        }
      }
      if (mask) mask->apply(dxp, p * plane, plane);
    }
  });
}

// ---- depthwise input gradient, unit column stride: the taps summed in registers ----------------
// With SW == 1, dx[ih, iw] = sum over the taps (m, i, j) whose output row oh = (ih + PH - i*DH) / SH
// exists of w[m, i, j] * dy[m, oh, iw + PW - j*DW] (0 outside [0, WO)): the forward's tap sum, over
// shifted rows of dy. Each dy row is staged once per plane, zero-padded, into a ring (as the
// forward's input rows), and every dx row is one taps_row over its sources, accumulated in
// registers and written once. The phase path below adds each tap into a row buffer instead, a load
// and a store per tap and element: store-bound, 2x slower at 3x3. Same terms in the same
// (m, i, j) order from 0, so the same sums.
// fn(m, o, i, oh) for each filter o = ch * Og + m of input channel ch and each kernel row i whose
// output row oh reads input row ih, in (m, i) order: the dy rows one dx row gathers from.
template <typename Fn>
inline void for_each_reading_row(const Conv& c, int64_t ch, int64_t ih, const Fn& fn) {
  for (int64_t m = 0; m < c.Og(); ++m) {
    for (int64_t i = 0; i < c.KH; ++i) {
      const int64_t num = ih + c.PH - i * c.DH;  // = oh * SH
      if (num < 0 || num % c.SH || num / c.SH >= c.HO) continue;
      fn(m, ch * c.Og() + m, i, num / c.SH);
    }
  }
}

struct DyRing {
  int64_t left, positions, span;  // zeros before a row, floats per staged row, ring slots per filter
};

DyRing dy_ring(const Conv& c) {
  const int64_t left = std::max<int64_t>(0, (c.KW - 1) * c.DW - c.PW);
  return {left, left + c.PW + round_chunk(c.W), (c.KH - 1) * c.DH / c.SH + 1};
}

bool gatherable(const Conv& c) {
  const DyRing r = dy_ring(c);
  return c.SW == 1 && c.Og() * c.KH * c.KW <= kMaxTaps && c.Og() * r.span <= kMaxTaps &&
         c.Og() * r.span * r.positions <= kStageFloats && round_chunk(c.W) <= kStageFloats;
}

void grad_input_depthwise_gather(const Conv& c, const float* dy, const float* w, const OutputMask* mask, float* dx,
                                 ThreadPool* pool) {
  const int64_t mult = c.Og(), plane = c.H * c.W, oplane = c.HO * c.WO, nout = round_chunk(c.W);
  const DyRing r = dy_ring(c);
  const float inf = std::numeric_limits<float>::infinity();
  pool->parallel_for(c.N * c.C, plane_grain(oplane * mult * c.KH * c.KW), [&](int64_t p0, int64_t p1) {
    alignas(64) float ring[kStageFloats];  // staged dy rows, slot m * span + oh % span
    alignas(64) float row[kStageFloats];   // one dx row, whole chunks
    const float* src[kMaxTaps];
    float wt[kMaxTaps];
    int64_t staged[kMaxTaps];  // the dy row each slot holds (-1: none)
    for (int64_t p = p0; p < p1; ++p) {  // p = (n, input channel)
      const int64_t n = p / c.C, ch = p % c.C;
      std::fill(staged, staged + mult * r.span, int64_t{-1});
      for (int64_t ih = 0; ih < c.H; ++ih) {
        int64_t taps = 0;
        for_each_reading_row(c, ch, ih, [&](int64_t m, int64_t o, int64_t i, int64_t oh) {
          const int64_t slot = m * r.span + oh % r.span;
          float* staged_row = ring + slot * r.positions;
          if (staged[slot] != oh) {
            std::fill(staged_row, staged_row + r.left, 0.0f);
            std::memcpy(staged_row + r.left, dy + (n * c.O + o) * oplane + oh * c.WO, sizeof(float) * c.WO);
            std::fill(staged_row + r.left + c.WO, staged_row + r.positions, 0.0f);
            staged[slot] = oh;
          }
          for (int64_t j = 0; j < c.KW; ++j, ++taps) {  // dy column iw + PW - j*DW at iw = 0
            src[taps] = staged_row + r.left + c.PW - j * c.DW;
            wt[taps] = w[(o * c.KH + i) * c.KW + j];
          }
        });
        taps_row(row, nout, 0.0f, src, wt, taps, -inf, inf);
        float* dxr = dx + p * plane + ih * c.W;
        std::memcpy(dxr, row, sizeof(float) * c.W);
        if (mask) mask->apply(dxr, p * plane + ih * c.W, c.W);
      }
    }
  });
}

// mask: null, or zeroes dx elements (index = dx's own row-major index) as each dx row is cropped.
void grad_input_depthwise(const Conv& c, const float* dy, const float* w, const OutputMask* mask, float* dx,
                          ThreadPool* pool) {
  if (channel_blockable(c)) return grad_input_depthwise_channels(c, dy, w, mask, dx, pool);
  if (!stageable(c)) return grad_input_depthwise_generic(c, dy, w, mask, dx, pool);
  if (gatherable(c)) return grad_input_depthwise_gather(c, dy, w, mask, dx, pool);
  const int64_t mult = c.Og(), plane = c.H * c.W, oplane = c.HO * c.WO, np = scatter_positions(c);
  // Each dx row gathers its contributions in a phase-split padded buffer (tap (i, j) of output
  // column ow lands on phase (j*DW) % SW, position ow + (j*DW) / SW: contiguous adds), then is
  // cropped back out of the padding.
  pool->parallel_for(c.N * c.C, plane_grain(oplane * mult * c.KH * c.KW), [&](int64_t p0, int64_t p1) {
    alignas(64) float acc[kStageFloats];
    for (int64_t p = p0; p < p1; ++p) {  // p = (n, input channel)
      const int64_t n = p / c.C, ch = p % c.C;
      for (int64_t ih = 0; ih < c.H; ++ih) {
        std::fill(acc, acc + c.SW * np, 0.0f);
        for_each_reading_row(c, ch, ih, [&](int64_t, int64_t o, int64_t i, int64_t oh) {
          const float* dyr = dy + (n * c.O + o) * oplane + oh * c.WO;
          for (int64_t j = 0; j < c.KW; ++j) {
            const int64_t t = j * c.DW;
            axpy(acc + (t % c.SW) * np + t / c.SW, dyr, w[(o * c.KH + i) * c.KW + j], c.WO);
          }
        });
        // crop: dx[iw] = padded[iw + PW], padded[q*SW + r] = acc[r*np + q]
        float* dxr = dx + p * plane + ih * c.W;
        if (c.SW == 1) {
          std::memcpy(dxr, acc + c.PW, sizeof(float) * c.W);
        } else {
          for (int64_t r = 0; r < c.SW; ++r) {
            const int64_t q0 = c.PW - r > 0 ? (c.PW - r + c.SW - 1) / c.SW : 0;  // first q with iw >= 0
            const int64_t q1 = (c.W + c.PW - r + c.SW - 1) / c.SW;            // first q with iw >= W
            const float* src = acc + r * np;
            float* dst = dxr + q0 * c.SW + r - c.PW;
            if (c.SW == 2) {
              for (int64_t k = 0; k < q1 - q0; ++k) dst[2 * k] = src[q0 + k];
            } else {
              for (int64_t k = 0; k < q1 - q0; ++k) dst[k * c.SW] = src[q0 + k];
            }
          }
        }
        if (mask) mask->apply(dxr, p * plane + ih * c.W, c.W);
      }
    }
  });
}

Status grad_input_run(const KernelArgs& a, Path p) {
  const char* kernel = kernel_name(kGradInput, p);
  Conv c;
  (void)grad_input_geometry(a, kernel, &c);
  const float* dy = a.in(0).as<float>();
  const float* w = a.in(1).as<float>();
  float* dx = a.out(0).as<float>();
  OutputMask m;
  ET_RETURN_IF_ERROR(read_output_mask(a, 2, a.out(0), kernel, &m));
  const OutputMask* mask = m.active() ? &m : nullptr;
  if (c.nhwc) {
    ET_RETURN_IF_ERROR(expect_workspace(a, c, p, kGradInput));
    nhwc::grad_input(nhwc_shape(c), dy, w, mask, dx, a.workspace, a.pool);
    return Status::Ok();
  }
  const Path path = resolve(c, p);
  if (path == Path::kDepthwise) {
    grad_input_depthwise(c, dy, w, mask, dx, a.pool);
    return Status::Ok();
  }
  const int64_t plane = c.H * c.W, oplane = c.HO * c.WO, kdim = c.kdim(), Og = c.Og();
  const int64_t band = c.band_rows();
  float* col = static_cast<float*>(a.workspace);
  ET_RETURN_IF_ERROR(expect_workspace(a, c, p, kGradInput));
  if (path == Path::kPointwiseBatched && c.pack_images() > 1) {  // dxp[Cg, cols] = w_g^T @ dyp[Og, cols]
    const int64_t per = c.pack_images();
    for (int64_t n0 = 0; n0 < c.N; n0 += per) {
      const int64_t nb = std::min(per, c.N - n0), cols = nb * plane;
      float* dyp = col;
      float* dxp = col + Og * cols;
      for (int64_t g = 0; g < c.G; ++g) {
        pack_images(dy, c.O, g * Og, Og, plane, n0, nb, dyp, a.pool);
        sgemm(true, false, kdim, cols, Og, 1.0f, w + g * Og * kdim, kdim, dyp, cols, 0.0f, dxp, cols, a.pool);
        unpack_images(dxp, c.C, g * c.Cg, c.Cg, plane, n0, nb, dx, mask, a.pool);
      }
    }
    return Status::Ok();
  }
  if (path == Path::kIm2col || path == Path::kIm2colBatched) {  // col2im accumulates
    a.pool->parallel_for(c.N * c.C, plane_grain(plane), [&](int64_t p0, int64_t p1) {
      std::fill(dx + p0 * plane, dx + p1 * plane, 0.0f);
    });
  }
  if (path == Path::kIm2colBatched && c.im2col_images() > 1) {  // col[kdim, cols] = w_g^T @ dyp[Og, cols]
    const int64_t per = c.im2col_images();
    for (int64_t n0 = 0; n0 < c.N; n0 += per) {
      const int64_t nb = std::min(per, c.N - n0), cols = nb * oplane;
      float* dyp = col + kdim * cols;
      for (int64_t g = 0; g < c.G; ++g) {
        pack_images(dy, c.O, g * Og, Og, oplane, n0, nb, dyp, a.pool);
        sgemm(true, false, kdim, cols, Og, 1.0f, w + g * Og * kdim, kdim, dyp, cols, 0.0f, col, cols, a.pool);
        for (int64_t i = 0; i < nb; ++i) {
          const int64_t dx_index = ((n0 + i) * c.C + g * c.Cg) * plane;
          col2im(c, col + i * oplane, 0, c.HO, dx + dx_index, a.pool, mask, dx_index, cols);
        }
      }
    }
    return Status::Ok();
  }
  for (int64_t n = 0; n < c.N; ++n) {
    for (int64_t g = 0; g < c.G; ++g) {
      const float* dyg = dy + (n * c.O + g * Og) * oplane;
      const float* wg = w + g * Og * kdim;
      const int64_t dx_index = (n * c.C + g * c.Cg) * plane;  // dx_g's first element, for the mask
      float* dxg = dx + dx_index;
      if (path == Path::kPointwise || path == Path::kPointwiseBatched) {  // dx_g = w_g^T @ dy_g, masked
        GemmBias ep;
        ep.mask = m;
        ep.mask_index = dx_index;
        sgemm(true, false, kdim, oplane, Og, 1.0f, wg, kdim, dyg, oplane, 0.0f, dxg, plane, a.pool, ep);
        continue;
      }
      for (int64_t oh0 = 0; oh0 < c.HO; oh0 += band) {
        const int64_t oh1 = std::min(c.HO, oh0 + band), ncols = (oh1 - oh0) * c.WO;
        sgemm(true, false, kdim, ncols, Og, 1.0f, wg, kdim, dyg + oh0 * c.WO, oplane, 0.0f, col, ncols, a.pool);
        // later bands still add to the rows this one touched: mask after the last
        col2im(c, col, oh0, oh1, dxg, a.pool, oh1 == c.HO ? mask : nullptr, dx_index);
      }
    }
  }
  return Status::Ok();
}

// ---- conv2d_grad_weight -----------------------------------------------------------------------

Status grad_weight_geometry(const KernelArgs& a, const char* kernel, Conv* c) {
  int64_t ws[4];
  if (!cpu::read_shape4(a.attr(), "weight_shape", ws))
    return invalid_argument(std::string(kernel) + ": attr weight_shape must be 4 ints");
  int64_t xs[4];
  logical_input(a.attr(), a.in(1), xs);
  return make_conv(kernel, a.attr(), xs, ws, a.in(0), c);
}

Status grad_weight_check(const KernelArgs& a, Path p) {
  const char* kernel = kernel_name(kGradWeight, p);
  ET_RETURN_IF_ERROR(expect_arity(a, kernel, 2, 2, 1));
  ET_RETURN_IF_ERROR(cpu::expect_all_f32(a, kernel, 2));
  if (a.in(0).rank != 4 || a.in(1).rank != 4)
    return invalid_argument(std::string(kernel) + ": wants 4-d dy and input, got " + a.in(0).shape_string() +
                            " and " + a.in(1).shape_string());
  Conv c;
  ET_RETURN_IF_ERROR(grad_weight_geometry(a, kernel, &c));
  if (!cpu::is_shape(a.out(0), c.O, c.Cg, c.KH, c.KW))
    return invalid_argument(std::string(kernel) + ": output " + a.out(0).shape_string() + " is not weight_shape");
  return path_fits(kGradWeight, c, p);
}

size_t grad_weight_workspace(const KernelArgs& a, Path p) {
  Conv c;
  return grad_weight_geometry(a, kernel_name(kGradWeight, p), &c).ok() ? column_bytes(c, p, kGradWeight) : 0;
}

// sum_{k < n} a[k] * b[k * stride], in double, fixed order (the generic path's row dot)
double dot_strided(const float* a, const float* b, int64_t stride, int64_t n) {
  constexpr int kLanes = 8;
  double lane[kLanes] = {};
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes)
    for (int l = 0; l < kLanes; ++l) lane[l] += static_cast<double>(a[k + l]) * b[(k + l) * stride];
  double s = 0;
  for (int l = 0; l < kLanes; ++l) s += lane[l];
  for (; k < n; ++k) s += static_cast<double>(a[k]) * b[k * stride];
  return s;
}

void grad_weight_depthwise_generic(const Conv& c, const float* dy, const float* x, float* dw, ThreadPool* pool) {
  const int64_t mult = c.Og();
  const int64_t plane = c.H * c.W, oplane = c.HO * c.WO;
  // one output channel per task: its kh*kw sums over the whole batch stay on one thread
  pool->parallel_for(c.O, std::max<int64_t>(1, 16384 / std::max<int64_t>(c.N * oplane * c.KH * c.KW, 1)),
                     [&](int64_t o0, int64_t o1) {
    for (int64_t o = o0; o < o1; ++o) {
      const int64_t ch = o / mult;
      for (int64_t i = 0; i < c.KH; ++i) {
        for (int64_t j = 0; j < c.KW; ++j) {
          int64_t lo, hi;
          valid_range(c.WO, c.W, c.SW, c.PW, j * c.DW, &lo, &hi);
          double s = 0;
          for (int64_t n = 0; n < c.N; ++n) {
            const float* dyo = dy + (n * c.O + o) * oplane;
            const float* xc = x + (n * c.C + ch) * plane;
            for (int64_t oh = 0; oh < c.HO; ++oh) {
              const int64_t ih = oh * c.SH - c.PH + i * c.DH;
              if (ih < 0 || ih >= c.H || hi <= lo) continue;
              const float* xr = xc + ih * c.W + lo * c.SW + j * c.DW - c.PW;
              s += dot_strided(dyo + oh * c.WO + lo, xr, c.SW, hi - lo);
            }
          }
          dw[(o * c.KH + i) * c.KW + j] = static_cast<float>(s);
        }
      }
    }
  });
}

// Small maps, channels-last blocks (see conv_depthwise_channels): one task per block of channels,
// so each weight's sum over the batch stays on one thread, in order. Per image the products
// gather in float lanes (at most H*W*taps of them per lane), then join double sums.
void grad_weight_depthwise_channels(const Conv& c, const float* dy, const float* x, float* dw, ThreadPool* pool) {
  const int64_t plane = c.H * c.W, oplane = c.HO * c.WO, taps = c.KH * c.KW;
  pool->parallel_for(channel_blocks(c), 1, [&](int64_t b0, int64_t b1) {
    alignas(64) float xt[kStageFloats];
    alignas(64) float dyt[kStageFloats];
    alignas(64) float lanes[kMaxTaps * kChannelBlock];
    double sums[kMaxTaps * kChannelBlock];
    for (int64_t block = b0; block < b1; ++block) {
      const int64_t c0 = block * kChannelBlock, cb = std::min(kChannelBlock, c.C - c0);
      std::fill(sums, sums + taps * kChannelBlock, 0.0);
      for (int64_t n = 0; n < c.N; ++n) {
        to_channels_last(x + n * c.C * plane, c0, cb, plane, xt);
        to_channels_last(dy + n * c.O * oplane, c0, cb, oplane, dyt);
        std::fill(lanes, lanes + taps * kChannelBlock, 0.0f);
        for (int64_t oh = 0; oh < c.HO; ++oh) {
          for (int64_t ow = 0; ow < c.WO; ++ow) {
            const float* __restrict ds = dyt + (oh * c.WO + ow) * kChannelBlock;
            for (int64_t i = 0; i < c.KH; ++i) {
              const int64_t ih = oh * c.SH - c.PH + i * c.DH;
              if (ih < 0 || ih >= c.H) continue;
              for (int64_t j = 0; j < c.KW; ++j) {
                const int64_t iw = ow * c.SW - c.PW + j * c.DW;
                if (iw < 0 || iw >= c.W) continue;
                const float* __restrict xs = xt + (ih * c.W + iw) * kChannelBlock;
                float* __restrict lt = lanes + (i * c.KW + j) * kChannelBlock;
                for (int64_t ch = 0; ch < cb; ++ch) lt[ch] += ds[ch] * xs[ch];
              }
            }
          }
        }
        for (int64_t k = 0; k < taps * kChannelBlock; ++k) sums[k] += lanes[k];
      }
      for (int64_t ch = 0; ch < cb; ++ch)
        for (int64_t t = 0; t < taps; ++t) dw[(c0 + ch) * taps + t] = static_cast<float>(sums[t * kChannelBlock + ch]);
    }
  });
}

void grad_weight_depthwise(const Conv& c, const float* dy, const float* x, float* dw, ThreadPool* pool) {
  if (channel_blockable(c)) return grad_weight_depthwise_channels(c, dy, x, dw, pool);
  if (!stageable(c)) return grad_weight_depthwise_generic(c, dy, x, dw, pool);
  const int64_t mult = c.Og(), plane = c.H * c.W, oplane = c.HO * c.WO, np = stage_positions(c);
  const int64_t taps = c.KH * c.KW, nout = round_chunk(c.WO);
  constexpr int64_t kFlushRows = 8;  // float lanes go into the double sums every 8 output rows
  // one output channel per task: its kh*kw sums over the whole batch stay on one thread, in order
  pool->parallel_for(c.O, std::max<int64_t>(1, 16384 / std::max<int64_t>(c.N * oplane * taps, 1)),
                     [&](int64_t o0, int64_t o1) {
    alignas(64) float ph[kStageFloats];
    alignas(64) float dyb[kStageFloats];
    alignas(64) float lanes[kMaxTaps][kChunk];
    double s[kMaxTaps];
    for (int64_t o = o0; o < o1; ++o) {
      std::fill(s, s + taps, 0.0);
      for (int64_t n = 0; n < c.N; ++n) {
        const float* xc = x + (n * c.C + o / mult) * plane;
        for (int64_t oh0 = 0; oh0 < c.HO; oh0 += kFlushRows) {
          for (int64_t t = 0; t < taps; ++t) std::fill(lanes[t], lanes[t] + kChunk, 0.0f);
          for (int64_t oh = oh0; oh < std::min(c.HO, oh0 + kFlushRows); ++oh) {
            std::memcpy(dyb, dy + (n * c.O + o) * oplane + oh * c.WO, sizeof(float) * c.WO);
            std::fill(dyb + c.WO, dyb + nout, 0.0f);  // zero tail: the extra products vanish
            for (int64_t i = 0; i < c.KH; ++i) {
              const int64_t ih = oh * c.SH - c.PH + i * c.DH;
              if (ih < 0 || ih >= c.H) continue;
              cpu::stage_row(xc + ih * c.W, c.W, c.PW, c.SW, np, 0.0f, ph);
              for (int64_t j = 0; j < c.KW; ++j) {
                const int64_t t = j * c.DW;
                const float* src = ph + (t % c.SW) * np + t / c.SW;
                float* lt = lanes[i * c.KW + j];
                for (int64_t k = 0; k < nout; k += kChunk)
                  for (int l = 0; l < kChunk; ++l) lt[l] += dyb[k + l] * src[k + l];
              }
            }
          }
          for (int64_t t = 0; t < taps; ++t)
            for (int l = 0; l < kChunk; ++l) s[t] += lanes[t][l];
        }
      }
      for (int64_t t = 0; t < taps; ++t) dw[o * taps + t] = static_cast<float>(s[t]);
    }
  });
}

Status grad_weight_run(const KernelArgs& a, Path p) {
  const char* kernel = kernel_name(kGradWeight, p);
  Conv c;
  (void)grad_weight_geometry(a, kernel, &c);
  const float* dy = a.in(0).as<float>();
  const float* x = a.in(1).as<float>();
  float* dw = a.out(0).as<float>();
  if (c.nhwc) {
    ET_RETURN_IF_ERROR(expect_workspace(a, c, p, kGradWeight));
    nhwc::grad_weight(nhwc_shape(c), dy, x, dw, a.workspace, a.pool);
    return Status::Ok();
  }
  const Path path = resolve(c, p);
  if (path == Path::kDepthwise) {
    grad_weight_depthwise(c, dy, x, dw, a.pool);
    return Status::Ok();
  }
  const int64_t plane = c.H * c.W, oplane = c.HO * c.WO, kdim = c.kdim(), Og = c.Og();
  const int64_t band = c.band_rows();
  float* col = static_cast<float*>(a.workspace);
  ET_RETURN_IF_ERROR(expect_workspace(a, c, p, kGradWeight));
  if (path == Path::kPointwiseBatched && c.pack_images() > 1) {  // dw_g += dyp @ xp^T per chunk
    const int64_t per = c.pack_images();
    for (int64_t n0 = 0; n0 < c.N; n0 += per) {
      const int64_t nb = std::min(per, c.N - n0), cols = nb * plane;
      float* dyp = col;
      float* xp = col + Og * cols;
      for (int64_t g = 0; g < c.G; ++g) {
        pack_images(dy, c.O, g * Og, Og, plane, n0, nb, dyp, a.pool);
        pack_images(x, c.C, g * c.Cg, c.Cg, plane, n0, nb, xp, a.pool);
        sgemm(false, true, Og, kdim, cols, 1.0f, dyp, cols, xp, cols, n0 == 0 ? 0.0f : 1.0f, dw + g * Og * kdim, kdim,
              a.pool);
      }
    }
    return Status::Ok();
  }
  if (path == Path::kIm2colBatched && c.im2col_images() > 1) {  // dw_g += dyp @ col^T per chunk
    const int64_t per = c.im2col_images();
    for (int64_t n0 = 0; n0 < c.N; n0 += per) {
      const int64_t nb = std::min(per, c.N - n0), cols = nb * oplane;
      float* dyp = col + kdim * cols;
      for (int64_t g = 0; g < c.G; ++g) {
        pack_images(dy, c.O, g * Og, Og, oplane, n0, nb, dyp, a.pool);
        for (int64_t i = 0; i < nb; ++i)
          im2col(c, x + ((n0 + i) * c.C + g * c.Cg) * plane, 0, c.HO, col + i * oplane, a.pool, cols);
        sgemm(false, true, Og, kdim, cols, 1.0f, dyp, cols, col, cols, n0 == 0 ? 0.0f : 1.0f, dw + g * Og * kdim, kdim,
              a.pool);
      }
    }
    return Status::Ok();
  }
  // dw_g[Og, kdim] = sum over images and bands of dy_g[Og, cols] @ col[kdim, cols]^T, in order
  for (int64_t n = 0; n < c.N; ++n) {
    for (int64_t g = 0; g < c.G; ++g) {
      const float* dyg = dy + (n * c.O + g * Og) * oplane;
      const float* xg = x + (n * c.C + g * c.Cg) * plane;
      float* dwg = dw + g * Og * kdim;
      if (path == Path::kPointwise || path == Path::kPointwiseBatched) {
        sgemm(false, true, Og, kdim, oplane, 1.0f, dyg, oplane, xg, plane, n == 0 ? 0.0f : 1.0f, dwg, kdim, a.pool);
        continue;
      }
      for (int64_t oh0 = 0; oh0 < c.HO; oh0 += band) {
        const int64_t oh1 = std::min(c.HO, oh0 + band), ncols = (oh1 - oh0) * c.WO;
        im2col(c, xg, oh0, oh1, col, a.pool);
        const float beta = n == 0 && oh0 == 0 ? 0.0f : 1.0f;
        sgemm(false, true, Og, kdim, ncols, 1.0f, dyg + oh0 * c.WO, oplane, col, ncols, beta, dwg, kdim, a.pool);
      }
    }
  }
  return Status::Ok();
}

// KernelDef takes plain function pointers: one instantiation per path.
template <Path P> Status conv_check_at(const KernelArgs& a) { return conv_check(a, P); }
template <Path P> size_t conv_workspace_at(const KernelArgs& a) { return conv_workspace(a, P); }
template <Path P> Status conv_run_at(const KernelArgs& a) { return conv_run(a, P); }
template <Path P> Status grad_input_check_at(const KernelArgs& a) { return grad_input_check(a, P); }
template <Path P> size_t grad_input_workspace_at(const KernelArgs& a) { return grad_input_workspace(a, P); }
template <Path P> Status grad_input_run_at(const KernelArgs& a) { return grad_input_run(a, P); }
template <Path P> Status grad_weight_check_at(const KernelArgs& a) { return grad_weight_check(a, P); }
template <Path P> size_t grad_weight_workspace_at(const KernelArgs& a) { return grad_weight_workspace(a, P); }
template <Path P> Status grad_weight_run_at(const KernelArgs& a) { return grad_weight_run(a, P); }

template <Path P>
void add_path(KernelRegistry& r) {
  r.add({"conv2d", kernel_name(kForward, P), conv_check_at<P>, conv_workspace_at<P>, conv_run_at<P>});
  r.add({"conv2d_grad_input", kernel_name(kGradInput, P), grad_input_check_at<P>, grad_input_workspace_at<P>,
         grad_input_run_at<P>});
  r.add({"conv2d_grad_weight", kernel_name(kGradWeight, P), grad_weight_check_at<P>, grad_weight_workspace_at<P>,
         grad_weight_run_at<P>});
}

}  // namespace

void register_conv_kernels(KernelRegistry& r) {
  add_path<Path::kAuto>(r);
  add_path<Path::kIm2col>(r);
  add_path<Path::kPointwise>(r);
  add_path<Path::kDepthwise>(r);
  add_path<Path::kPointwiseBatched>(r);
  add_path<Path::kIm2colBatched>(r);
}

}  // namespace edgetune
