// NHWC (channels-last) paths of conv2d, conv2d_grad_input and conv2d_grad_weight: what conv.cc's
// op-named kernels run for a node with attr layout = "nhwc" (x, y, dy, dx stored [N, H, W, C]; the
// weight stays [O, C/G, KH, KW], the bias [O]). The compiler's layout pass puts the regions of a CNN
// that are pointwise and depthwise convolutions (MobileNet-style blocks) in NHWC because there both
// ops want the channels contiguous:
//
//   pointwise (1x1, stride 1, no padding, groups 1)  the stored tensors already are the matrices:
//       x [N*H*W, C], y [N*H*W, O]. Each op is ONE GEMM over all N*H*W pixel rows, where NCHW runs
//       one per image (a matrix-vector product on the 7x7 maps of late stages):
//         forward      y[M, O]  = x[M, C] @ w[O, C]^T   bias per column, clamp in the write-back
//         grad_input   dx[M, C] = dy[M, O] @ w[O, C]    mask in the write-back (flat index of dx)
//         grad_weight  dw[O, C] = dy[M, O]^T @ x[M, C]; when dw is small (O*C <= kSplitOutputs) and
//                      M long, K = M is cut into a number of row chunks fixed by the shape
//                      (weight_chunks), one single-threaded GEMM per chunk into the workspace, the
//                      partial products then added in chunk order: sgemm alone cuts the small dw
//                      into two thin tiles that each stream all of x and half of every dy row.
//   depthwise (groups = C = O: channel multiplier 1; any kernel, stride, padding, dilation)  direct
//       loops whose inner loop runs over the contiguous channels, so every tap is a full-width vector
//       op whatever the stride or the map size (the NCHW kernel's rows are short on late stages and
//       strided on stride 2). The filters are transposed once into the workspace, tap-major
//       [KH*KW, C], so a tap's weights are contiguous too.
//         forward      one output pixel at a time: for a chunk of channels all of the pixel's taps
//                      accumulate in registers (from the bias, in (i, j) order, as the NCHW kernel
//                      sums them), clamped there and written once. Threads take output rows (n, oh).
//         grad_input   the gather form of the same sum: each dx pixel sums, in (i, j) order from 0,
//                      the taps whose output (oh, ow) reads it (stride > 1: the taps of the right
//                      phase, by divisibility), in registers; the mask runs over each finished row.
//         grad_weight  dw[c, i, j] = sum over n, oh, ow of dy[n, oh, ow, c] * x[n, ih, iw, c]: one
//                      task per chunk of 16 channels (a vector), so each sum runs on one thread in a
//                      fixed order. Products gather in float vectors over at most kFoldTerms outputs,
//                      then join double sums per channel: the NCHW kernel's float-lanes-into-double
//                      approach, at a comparable number of float terms per lane.
//
// Threads: the GEMMs thread themselves (gemm.h); the depthwise loops split output rows (forward,
// grad_input: each element written by one thread, its sum in a fixed order) or channel chunks
// (grad_weight). Nothing depends on the thread count, so 1, 2 or 3 threads give identical bits.
// No allocation: the filters' transposed copy (depthwise) and the K chunks' partial products
// (pointwise grad_weight) are the node's workspace, the rest lives on the stack.
#include "kernels/cpu/conv_nhwc.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "kernels/cpu/cpu_util.h"

namespace edgetune {
namespace nhwc {
namespace {

constexpr int64_t kLanes = 16;    // floats per vector step over the channels
constexpr int kMaxTaps = 64;      // taps summed in registers before the sum goes through memory
constexpr int64_t kFoldTerms = 64;  // grad_weight: float terms per lane before they join the doubles
constexpr int64_t kSplitOutputs = 16384;  // pointwise grad_weight: largest O*C whose K is split
constexpr int64_t kSplitRows = 4096;      // ... into chunks of at least this many pixel rows
constexpr int64_t kMaxChunks = 16;

typedef float V16 __attribute__((vector_size(kLanes * sizeof(float))));
typedef float V16U __attribute__((vector_size(kLanes * sizeof(float)), aligned(alignof(float)), may_alias));

inline V16 load(const float* p) { return *reinterpret_cast<const V16U*>(p); }
inline void store(float* p, V16 v) { *reinterpret_cast<V16U*>(p) = v; }

// Grain for a parallel_for over rows of `work` multiply-adds each.
int64_t row_grain(int64_t work) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(work, 1)); }

// ---- depthwise forward / grad_input: a pixel's taps over a chunk of channels ------------------------
// out[ch] = clamp(start[ch] + sum_t w[t][ch] * src[t][ch], lo, hi), t in order, for the NV vectors of
// channels at c. start: out itself (from_out: a previous batch of taps), else init (the bias), else 0.
// NV independent chains hide the multiply-add latency; lo/hi = -inf/+inf leave every value as it is.
template <int NV>
inline void tap_chunk(float* out, int64_t c, const float* init, bool from_out, const float* const* w,
                      const float* const* src, int taps, float lo, float hi) {
  V16 acc[NV];
  for (int v = 0; v < NV; ++v) {
    const int64_t k = c + v * kLanes;
    acc[v] = from_out ? load(out + k) : init ? load(init + k) : V16{};
  }
  for (int t = 0; t < taps; ++t)
    for (int v = 0; v < NV; ++v) acc[v] += load(w[t] + c + v * kLanes) * load(src[t] + c + v * kLanes);
  const V16 vlo = V16{} + lo, vhi = V16{} + hi;
  for (int v = 0; v < NV; ++v) {
    V16 r = acc[v] < vlo ? vlo : acc[v];  // NaN stays NaN, as in clamp_row
    r = r > vhi ? vhi : r;
    store(out + c + v * kLanes, r);
  }
}

// The last n < 16 channels at c, in one zero-padded vector: the same vector multiply-adds as the
// full chunks (a scalar loop here was vectorised by GCC without contracting its multiply-adds, so
// those channels lost the bits the NCHW kernel's contracted sums have).
void tap_tail(float* out, int64_t c, int64_t n, const float* init, bool from_out, const float* const* w,
              const float* const* src, int taps, float lo, float hi) {
  const size_t bytes = static_cast<size_t>(n) * sizeof(float);
  V16 acc{};
  if (from_out || init) std::memcpy(&acc, (from_out ? out : init) + c, bytes);
  for (int t = 0; t < taps; ++t) {
    V16 wv{}, sv{};
    std::memcpy(&wv, w[t] + c, bytes);
    std::memcpy(&sv, src[t] + c, bytes);
    acc += wv * sv;
  }
  const V16 vlo = V16{} + lo, vhi = V16{} + hi;
  V16 r = acc < vlo ? vlo : acc;
  r = r > vhi ? vhi : r;
  std::memcpy(out + c, &r, bytes);
}

// tap_chunk over all C channels: 64 at a time, then 16, then the tail (same sums per channel).
void tap_sum(float* out, int64_t C, const float* init, bool from_out, const float* const* w, const float* const* src,
             int taps, float lo, float hi) {
  int64_t c = 0;
  for (; c + 4 * kLanes <= C; c += 4 * kLanes) tap_chunk<4>(out, c, init, from_out, w, src, taps, lo, hi);
  for (; c + kLanes <= C; c += kLanes) tap_chunk<1>(out, c, init, from_out, w, src, taps, lo, hi);
  if (c < C) tap_tail(out, c, C - c, init, from_out, w, src, taps, lo, hi);
}

// The taps of one output pixel, collected in order and summed in batches of kMaxTaps (a kernel
// with more taps sums the rest onto the stored partial result: the same sum, in the same order).
struct TapList {
  const float* w[kMaxTaps];
  const float* src[kMaxTaps];
  int taps = 0;
  bool started = false;  // an earlier batch already wrote out

  void add(float* out, int64_t C, const float* init, const float* wt, const float* s) {
    if (taps == kMaxTaps) {  // no clamp yet: it belongs to the finished sum
      const float inf = std::numeric_limits<float>::infinity();
      tap_sum(out, C, init, started, w, src, taps, -inf, inf);
      started = true;
      taps = 0;
    }
    w[taps] = wt;
    src[taps++] = s;
  }
  void finish(float* out, int64_t C, const float* init, float lo, float hi) {
    tap_sum(out, C, init, started, w, src, taps, lo, hi);
    taps = 0;
    started = false;
  }
};

// wt[t * C + c] = w[c * taps + t]: the filters tap-major, so a tap's weights are contiguous.
float* transpose_filters(const ConvShape& s, const float* w, void* ws) {
  const int64_t taps = s.KH * s.KW;
  float* wt = static_cast<float*>(ws);
  for (int64_t c = 0; c < s.C; ++c)
    for (int64_t t = 0; t < taps; ++t) wt[t * s.C + c] = w[c * taps + t];
  return wt;
}

void depthwise_forward(const ConvShape& s, const float* x, const float* wt, const float* bias, float lo, float hi,
                       float* y, ThreadPool* pool) {
  const int64_t C = s.C;
  pool->parallel_for(s.N * s.HO, row_grain(s.WO * C * s.KH * s.KW), [&](int64_t r0, int64_t r1) {
    TapList tl;
    for (int64_t r = r0; r < r1; ++r) {  // r = (n, oh)
      const int64_t n = r / s.HO, oh = r % s.HO;
      for (int64_t ow = 0; ow < s.WO; ++ow) {
        float* out = y + (r * s.WO + ow) * C;
        for (int64_t i = 0; i < s.KH; ++i) {
          const int64_t ih = oh * s.SH - s.PH + i * s.DH;
          if (ih < 0 || ih >= s.H) continue;  // a padding row adds nothing
          const float* xr = x + (n * s.H + ih) * s.W * C;
          for (int64_t j = 0; j < s.KW; ++j) {
            const int64_t iw = ow * s.SW - s.PW + j * s.DW;
            if (iw < 0 || iw >= s.W) continue;
            tl.add(out, C, bias, wt + (i * s.KW + j) * C, xr + iw * C);
          }
        }
        tl.finish(out, C, bias, lo, hi);
      }
    }
  });
}

void depthwise_grad_input(const ConvShape& s, const float* dy, const float* wt, const OutputMask* mask, float* dx,
                          ThreadPool* pool) {
  const int64_t C = s.C;
  const float inf = std::numeric_limits<float>::infinity();
  pool->parallel_for(s.N * s.H, row_grain(s.W * C * s.KH * s.KW), [&](int64_t r0, int64_t r1) {
    TapList tl;
    for (int64_t r = r0; r < r1; ++r) {  // r = (n, ih)
      const int64_t n = r / s.H, ih = r % s.H;
      for (int64_t iw = 0; iw < s.W; ++iw) {
        float* out = dx + (r * s.W + iw) * C;
        for (int64_t i = 0; i < s.KH; ++i) {
          const int64_t num = ih + s.PH - i * s.DH;  // = oh * SH
          if (num < 0 || num % s.SH || num / s.SH >= s.HO) continue;
          const float* dyr = dy + (n * s.HO + num / s.SH) * s.WO * C;
          for (int64_t j = 0; j < s.KW; ++j) {
            const int64_t numw = iw + s.PW - j * s.DW;  // = ow * SW
            if (numw < 0 || numw % s.SW || numw / s.SW >= s.WO) continue;
            tl.add(out, C, nullptr, wt + (i * s.KW + j) * C, dyr + (numw / s.SW) * C);
          }
        }
        tl.finish(out, C, nullptr, -inf, inf);
      }
      if (mask) mask->apply(dx + r * s.W * C, r * s.W * C, s.W * C);  // the row is done and still cached
    }
  });
}

// ---- depthwise grad_weight -------------------------------------------------------------------------
// V = V16 for a chunk of 16 channels; double for one channel of the tail (C % 16): scalar loads
// there anyway, so its products and sums are simply exact-ish doubles (a float tail lost the
// contracted multiply-adds GCC gives the vectors, and with them the NCHW kernel's accuracy).
template <typename V>
inline V vload(const float* p) {
  if constexpr (sizeof(V) == sizeof(double)) {
    return static_cast<double>(*p);
  } else {
    return load(p);
  }
}
inline void fold(double* s, double v) { s[0] += v; }
inline void fold(double* s, V16 v) {
  for (int l = 0; l < kLanes; ++l) s[l] += v[l];
}

// Output positions o in [lo, hi) whose input coordinate o*s - p + kd lies inside [0, size) (conv.cc's
// valid_range).
void valid_range(int64_t out, int64_t size, int64_t s, int64_t p, int64_t kd, int64_t* lo, int64_t* hi) {
  const int64_t off = kd - p;
  int64_t l = off >= 0 ? 0 : (-off + s - 1) / s;
  int64_t h = size - off <= 0 ? 0 : (size - off - 1) / s + 1;
  l = std::min(l, out);
  h = std::max(l, std::min(h, out));
  *lo = l;
  *hi = h;
}

// dw[c0 + l, tap] for the channels of one V at c0 (16 for V16, 1 for double): each tap's sum over
// (n, oh, ow) in order, in segments of at most kFoldTerms outputs (whole rows on maps narrower than
// that, else equal parts of a row); within a segment four float vectors take the terms in turn
// (independent chains for the multiply-add latency), and their sum, in a fixed order, joins the
// double sums.
template <typename V>
void weight_sums(const ConvShape& s, const float* dy, const float* x, int64_t c0, float* dw) {
  constexpr int64_t L = sizeof(V) == sizeof(double) ? 1 : kLanes;
  const int64_t C = s.C, taps = s.KH * s.KW;
  const int64_t seg_rows = s.WO >= kFoldTerms ? 1 : kFoldTerms / s.WO;
  const int64_t segs = (s.WO + kFoldTerms - 1) / kFoldTerms;  // parts of a row
  constexpr int kBatch = 32;  // taps whose double sums live on the stack at once
  double sums[kBatch * L];
  for (int64_t t0 = 0; t0 < taps; t0 += kBatch) {
    const int64_t nt = std::min<int64_t>(kBatch, taps - t0);
    std::fill(sums, sums + nt * L, 0.0);
    for (int64_t n = 0; n < s.N; ++n) {
      for (int64_t oh0 = 0; oh0 < s.HO; oh0 += seg_rows) {
        const int64_t oh1 = std::min(s.HO, oh0 + seg_rows);
        for (int64_t g = 0; g < segs; ++g) {
          const int64_t ow0 = s.WO * g / segs, ow1 = s.WO * (g + 1) / segs;
          for (int64_t t = t0; t < t0 + nt; ++t) {
            const int64_t i = t / s.KW, j = t % s.KW;
            int64_t lo, hi;
            valid_range(s.WO, s.W, s.SW, s.PW, j * s.DW, &lo, &hi);
            lo = std::max(lo, ow0);
            hi = std::min(hi, ow1);
            V a0{}, a1{}, a2{}, a3{};
            for (int64_t oh = oh0; oh < oh1; ++oh) {
              const int64_t ih = oh * s.SH - s.PH + i * s.DH;
              if (ih < 0 || ih >= s.H || hi <= lo) continue;
              const float* d = dy + (n * s.HO + oh) * s.WO * C + c0;
              const float* xr = x + ((n * s.H + ih) * s.W + j * s.DW - s.PW) * C + c0;  // + ow * SW * C
              const int64_t xs = s.SW * C;
              int64_t ow = lo;
              for (; ow + 4 <= hi; ow += 4) {
                a0 += vload<V>(d + ow * C) * vload<V>(xr + ow * xs);
                a1 += vload<V>(d + (ow + 1) * C) * vload<V>(xr + (ow + 1) * xs);
                a2 += vload<V>(d + (ow + 2) * C) * vload<V>(xr + (ow + 2) * xs);
                a3 += vload<V>(d + (ow + 3) * C) * vload<V>(xr + (ow + 3) * xs);
              }
              for (; ow < hi; ++ow) a0 += vload<V>(d + ow * C) * vload<V>(xr + ow * xs);
            }
            fold(sums + (t - t0) * L, (a0 + a1) + (a2 + a3));
          }
        }
      }
    }
    for (int64_t l = 0; l < L; ++l)
      for (int64_t t = 0; t < nt; ++t) dw[(c0 + l) * taps + t0 + t] = static_cast<float>(sums[t * L + l]);
  }
}

void depthwise_grad_weight(const ConvShape& s, const float* dy, const float* x, float* dw, ThreadPool* pool) {
  // tasks: the full 16-channel chunks, then one per tail channel; fixed by C alone
  const int64_t full = s.C / kLanes, tasks = full + s.C % kLanes;
  pool->parallel_for(tasks, 1, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      if (k < full) {
        weight_sums<V16>(s, dy, x, k * kLanes, dw);
      } else {
        weight_sums<double>(s, dy, x, full * kLanes + (k - full), dw);
      }
    }
  });
}

// Row chunks of the pointwise grad_weight's K (1: one sgemm over all rows).
int64_t weight_chunks(const ConvShape& s) {
  if (s.O * s.C > kSplitOutputs) return 1;
  return std::max<int64_t>(1, std::min(kMaxChunks, s.N * s.H * s.W / kSplitRows));
}

void pointwise_grad_weight(const ConvShape& s, const float* dy, const float* x, float* dw, void* ws,
                           ThreadPool* pool) {
  const int64_t M = s.N * s.H * s.W, chunks = weight_chunks(s), outs = s.O * s.C;
  if (chunks == 1) {
    sgemm(true, false, s.O, s.C, M, 1.0f, dy, s.O, x, s.C, 0.0f, dw, s.C, pool);
    return;
  }
  float* part = static_cast<float*>(ws);  // [chunks][O * C]
  pool->parallel_for(chunks, 1, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t r0 = M * k / chunks, r1 = M * (k + 1) / chunks;
      sgemm(true, false, s.O, s.C, r1 - r0, 1.0f, dy + r0 * s.O, s.O, x + r0 * s.C, s.C, 0.0f, part + k * outs, s.C,
            nullptr);
    }
  });
  pool->parallel_for(outs, 4096, [&](int64_t e0, int64_t e1) {
    for (int64_t e = e0; e < e1; ++e) {
      float acc = part[e];
      for (int64_t k = 1; k < chunks; ++k) acc += part[k * outs + e];  // chunk order
      dw[e] = acc;
    }
  });
}

}  // namespace

Kind kind_of(const ConvShape& s) {
  if (s.G == s.C && s.O == s.C) return Kind::kDepthwise;
  if (s.G == 1 && s.KH == 1 && s.KW == 1 && s.SH == 1 && s.SW == 1 && s.PH == 0 && s.PW == 0) return Kind::kPointwise;
  return Kind::kNone;
}

size_t workspace_bytes(const ConvShape& s, int op) {
  const Kind kind = kind_of(s);
  if (kind == Kind::kDepthwise && op != 2) return static_cast<size_t>(s.KH * s.KW * s.C) * sizeof(float);
  if (kind == Kind::kPointwise && op == 2 && weight_chunks(s) > 1)
    return static_cast<size_t>(weight_chunks(s) * s.O * s.C) * sizeof(float);
  return 0;
}

void forward(const ConvShape& s, const float* x, const float* w, const float* bias, float lo, float hi, float* y,
             void* ws, ThreadPool* pool) {
  if (kind_of(s) == Kind::kDepthwise) {
    depthwise_forward(s, x, transpose_filters(s, w, ws), bias, lo, hi, y, pool);
    return;
  }
  GemmBias gb;  // the bias of output channel o is a per-column bias of the [M, O] product
  gb.col = bias;
  gb.clamp_lo = lo;
  gb.clamp_hi = hi;
  sgemm(false, true, s.N * s.H * s.W, s.O, s.C, 1.0f, x, s.C, w, s.C, 0.0f, y, s.O, pool, gb);
}

void grad_input(const ConvShape& s, const float* dy, const float* w, const OutputMask* mask, float* dx, void* ws,
                ThreadPool* pool) {
  if (kind_of(s) == Kind::kDepthwise) {
    depthwise_grad_input(s, dy, transpose_filters(s, w, ws), mask, dx, pool);
    return;
  }
  GemmBias gb;  // dx is the whole [M, C] product: element (i, j) is dx's flat index i * C + j
  if (mask) gb.mask = *mask;
  sgemm(false, false, s.N * s.H * s.W, s.C, s.O, 1.0f, dy, s.O, w, s.C, 0.0f, dx, s.C, pool, gb);
}

void grad_weight(const ConvShape& s, const float* dy, const float* x, float* dw, void* ws, ThreadPool* pool) {
  if (kind_of(s) == Kind::kDepthwise) {
    depthwise_grad_weight(s, dy, x, dw, pool);
    return;
  }
  pointwise_grad_weight(s, dy, x, dw, ws, pool);
}

}  // namespace nhwc
}  // namespace edgetune
