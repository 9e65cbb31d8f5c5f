// Winograd kernels for 3x3, stride-1 convolutions (NCHW, f32): the alternatives
// "conv2d.winograd" and "conv2d_grad_input.winograd" of the im2col kernels in conv.cc. Their checks
// refuse attr layout = "nhwc" (NHWC nodes run on the op-named kernels, conv_nhwc.cc).
//
// Why: a 3x3 stride-1 conv is most of the FLOPs of ResNet-style networks, and Winograd's minimal
// filtering F(m x m, 3x3) computes an m x m output tile from an (m+2)^2 input tile with (m+2)^2
// multiplies per channel pair instead of 9 m^2: F(4x4,3x3) does 36 instead of 144 (4x fewer),
// F(2x2,3x3) 16 instead of 36. The multiplies become (m+2)^2 independent GEMMs, which is where
// the time goes, so the kernels reuse our packed sgemm (gemm.h):
//
//   U[xi] = G g G^T         weights, every run (they may be trainable)     [Cout][xi][Cin]
//   V[xi] = B^T d B         input tiles of one band of tiles               [xi][Cin][tiles]
//   M[xi] = U[xi] @ V[xi]   one GEMM per tile element xi                   [xi][Cout][tiles]
//   Y     = A^T M A         output tiles, + bias, + fused activation / gradient mask
//
// Tile size: kTile = 4, F(4x4,3x3). Against float64 on ResNet-18's channel counts (64..512, He-init
// weights, post-ReLU inputs) its float32 error is 4e-6..8e-6 of max|y| forward and 5e-6..1.1e-5
// for grad_input (tests/kernels/test_winograd.py prints it), well inside the 1e-4 we allow; the
// im2col kernel's is ~2e-7. F(2x2,3x3) is kept below for shapes where a smaller U would pay.
//
// The input gradient of a stride-1 3x3 conv with padding p is itself such a conv: dy convolved
// with the weights transposed ([C,O]) and flipped, padding 2-p. Both ops therefore run one engine
// (WinogradConv) that differs only in how the weight transform reads w and in the epilogue.
//
// Memory: the workspace holds the whole U (the weights times (m+2)^2/9) and, for one band of tiles,
// V and M. Bands are sized so V + M stay under kBandBudget, but never fewer than kMinBandTiles
// tiles (fewer makes every GEMM repack U for too few columns); `workspace` returns exactly the
// bytes run uses. No allocation in run: every buffer is the workspace or a small stack array.
//
// Vectorisation: the transforms work on kLanes tiles (or, for the weights, kLanes input channels)
// at once: every "scalar" of the textbook formulas is a row of kLanes floats, which the compiler
// turns into one vector register op. Coefficients of the transform matrices are compile-time
// constants; zeros are skipped and +-1 become adds, so the transforms cost what the hand-written
// formulas cost.
//
// Threads: the transforms split lane blocks x channels (every task writes its own elements), the
// GEMMs split the (m+2)^2 tile elements (each GEMM on one thread, in sgemm's fixed order), so the
// result is bitwise the same for any thread count.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

#include "core/kernel.h"
#include "kernels/cpu/conv_nhwc.h"
#include "kernels/cpu/cpu_util.h"
#include "kernels/cpu/gemm.h"

namespace edgetune {
namespace {
// Own namespace: unity builds put this file in one translation unit with conv.cc, whose helpers
// have the same names.
namespace winograd {

constexpr int kLanes = 16;                            // tiles (or channels) per vectorised transform
constexpr int64_t kBandBudget = int64_t{4} << 20;     // bytes of V + M per band
constexpr int64_t kMinBandTiles = 64;                 // floor on a band, for GEMM efficiency

// ---- transform matrices --------------------------------------------------------------------
// Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (2016), with the points
// 0, +-1, +-2 (and infinity) for F(4x4,3x3), 0, +-1 for F(2x2,3x3).

template <int M>
struct Transform;

template <>
struct Transform<2> {
  static constexpr int m = 2, alpha = 4;
  static constexpr float BT[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
  static constexpr float G[4][3] = {{1, 0, 0}, {0.5f, 0.5f, 0.5f}, {0.5f, -0.5f, 0.5f}, {0, 0, 1}};
  static constexpr float AT[2][4] = {{1, 1, 1, 0}, {0, 1, -1, -1}};
};

template <>
struct Transform<4> {
  static constexpr int m = 4, alpha = 6;
  static constexpr float BT[6][6] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
                                     {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
  static constexpr float G[6][3] = {{1.0f / 4, 0, 0},
                                    {-1.0f / 6, -1.0f / 6, -1.0f / 6},
                                    {-1.0f / 6, 1.0f / 6, -1.0f / 6},
                                    {1.0f / 24, 1.0f / 12, 1.0f / 6},
                                    {1.0f / 24, -1.0f / 12, 1.0f / 6},
                                    {0, 0, 1}};
  static constexpr float AT[4][6] = {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};
};

// The tile size both kernels use (see the header comment for the measured error).
constexpr int kTile = 4;

// dst[l] (+)= coef * src[l] over the lanes; coef is a compile-time constant after unrolling, so
// the branches fold away and +-1 cost an add.
inline void lane_fma(float* __restrict dst, const float* __restrict src, float coef, bool first) {
  if (first) {
    if (coef == 1.0f) {
      for (int l = 0; l < kLanes; ++l) dst[l] = src[l];
    } else if (coef == -1.0f) {
      for (int l = 0; l < kLanes; ++l) dst[l] = -src[l];
    } else {
      for (int l = 0; l < kLanes; ++l) dst[l] = coef * src[l];
    }
  } else if (coef == 1.0f) {
    for (int l = 0; l < kLanes; ++l) dst[l] += src[l];
  } else if (coef == -1.0f) {
    for (int l = 0; l < kLanes; ++l) dst[l] -= src[l];
  } else {
    for (int l = 0; l < kLanes; ++l) dst[l] += coef * src[l];
  }
}

// out[i][j] = sum_k Mx[i][k] in[k][j] over rows of kLanes floats (in: [K][J][kLanes],
// out: [R][J][kLanes]); every out row has at least one nonzero coefficient in our matrices.
template <int R, int K, int J>
inline void left_multiply(const float (&Mx)[R][K], const float* in, float* out) {
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < J; ++j) {
      bool first = true;
      for (int k = 0; k < K; ++k) {
        if (Mx[i][k] == 0.0f) continue;
        lane_fma(out + (i * J + j) * kLanes, in + (k * J + j) * kLanes, Mx[i][k], first);
        first = false;
      }
    }
}

// out[i][j] = sum_k in[i][k] Mx[j][k] (in: [I][K][kLanes], out rows written to row(i, j)).
template <int I, int R, int K, typename RowOf>
inline void right_multiply_transposed(const float (&Mx)[R][K], const float* in, const RowOf& row) {
  for (int i = 0; i < I; ++i)
    for (int j = 0; j < R; ++j) {
      float* dst = row(i, j);
      bool first = true;
      for (int k = 0; k < K; ++k) {
        if (Mx[j][k] == 0.0f) continue;
        lane_fma(dst, in + (i * K + k) * kLanes, Mx[j][k], first);
        first = false;
      }
    }
}

// dst[0..n) = src[0..n), n <= kLanes; a full row is one fixed-size copy (a vector move, where a
// runtime-sized memcpy is a library call that dominated the weight transform).
inline void copy_lanes(float* __restrict dst, const float* __restrict src, int n) {
  if (n == kLanes) {
    for (int l = 0; l < kLanes; ++l) dst[l] = src[l];
  } else {
    for (int l = 0; l < n; ++l) dst[l] = src[l];
  }
}

// ---- geometry ------------------------------------------------------------------------------

// The conv the engine computes: a 3x3, stride-1 conv of `in` [N, Cin, H, W] with padding (PH, PW)
// into `out` [N, Cout, HO, WO]. For grad_input, in = dy, out = dx and the padding is 2 - p.
struct Geometry {
  int64_t N = 0, Cin = 0, H = 0, W = 0, Cout = 0, HO = 0, WO = 0, PH = 0, PW = 0;
  bool flipped = false;  // weights read as w[k][r][2-i][2-j] (grad_input) instead of w[r][k][i][j]

  int64_t tiles_h() const { return (HO + kTile - 1) / kTile; }
  int64_t tiles_w() const { return (WO + kTile - 1) / kTile; }
  int64_t tiles() const { return N * tiles_h() * tiles_w(); }
  static constexpr int64_t kAlpha2 = (kTile + 2) * (kTile + 2);
  // tiles per band: a multiple of kLanes
  int64_t band_tiles() const {
    const int64_t per_tile = kAlpha2 * (Cin + Cout) * static_cast<int64_t>(sizeof(float));
    int64_t band = kBandBudget / per_tile / kLanes * kLanes;
    band = std::max(band, kMinBandTiles);
    return std::min(band, (tiles() + kLanes - 1) / kLanes * kLanes);
  }
  // floats of each workspace part, rounded to whole 64-byte lines
  static int64_t line(int64_t floats) { return (floats + 15) / 16 * 16; }
  int64_t u_floats() const { return line(kAlpha2 * Cout * Cin); }
  int64_t v_floats() const { return line(kAlpha2 * Cin * band_tiles()); }
  int64_t m_floats() const { return line(kAlpha2 * Cout * band_tiles()); }
  size_t workspace_bytes() const { return static_cast<size_t>(u_floats() + v_floats() + m_floats()) * sizeof(float); }
};

// Stride, dilation, groups and kernel size the Winograd kernels can run; `what` names the kernel.
Status check_geometry(const char* what, const Attrs& attrs, const TensorView& w, int64_t in_channels,
                      int64_t* PH, int64_t* PW) {
  cpu::ConvParams cp;
  ET_RETURN_IF_ERROR(cpu::read_conv_params(what, attrs, &cp));
  const int64_t SH = cp.SH, SW = cp.SW, DH = cp.DH, DW = cp.DW, groups = cp.G;
  *PH = cp.PH, *PW = cp.PW;
  if (w.rank != 4 || w.shape[2] != 3 || w.shape[3] != 3)
    return invalid_argument(std::string(what) + ": only 3x3 kernels, got weight " + w.shape_string());
  if (SH != 1 || SW != 1)
    return invalid_argument(std::string(what) + ": only stride 1, got stride " + std::to_string(SH) + "x" +
                            std::to_string(SW));
  if (DH != 1 || DW != 1)
    return invalid_argument(std::string(what) + ": only dilation 1, got dilation " + std::to_string(DH) + "x" +
                            std::to_string(DW));
  if (groups != 1) return invalid_argument(std::string(what) + ": only groups 1, got groups " + std::to_string(groups));
  if (*PH < 0 || *PH > 2 || *PW < 0 || *PW > 2)
    return invalid_argument(std::string(what) + ": padding must be 0..2, got " + std::to_string(*PH) + "x" +
                            std::to_string(*PW));
  if (w.shape[1] != in_channels)
    return invalid_argument(std::string(what) + ": weight " + w.shape_string() + " does not fit " +
                            std::to_string(in_channels) + " input channels");
  return Status::Ok();
}

// ---- epilogue ------------------------------------------------------------------------------
// What happens to an output element after the output transform: the forward adds the bias and
// applies the fused activation; grad_input zeroes the elements an activation mask drops.

enum class Activation { kNone, kRelu, kHardtanh };

struct Epilogue {
  const float* bias = nullptr;  // [Cout]
  Activation act = Activation::kNone;
  float act_min = -1.0f, act_max = 1.0f;
  const uint8_t* mask_bits = nullptr;  // bit e of element e, LSB first
  const float* mask_y = nullptr;       // keep element e where mask_min < y[e] < mask_max
  float mask_min = 0.0f, mask_max = 0.0f;
  bool has_mask_max = false;

  float apply(float v, int64_t r, int64_t e) const {
    if (bias) v += bias[r];
    if (act == Activation::kRelu) {
      v = v > 0.0f ? v : 0.0f;
    } else if (act == Activation::kHardtanh) {
      v = std::min(std::max(v, act_min), act_max);
    }
    if (mask_bits && !((mask_bits[e >> 3] >> (e & 7)) & 1)) v = 0.0f;
    if (mask_y) {
      const float y = mask_y[e];
      if (!(y > mask_min && (!has_mask_max || y < mask_max))) v = 0.0f;
    }
    return v;
  }
};

Status read_activation(const char* what, const Attrs& attrs, Epilogue* ep) {
  const std::string& act = attrs.get_string("activation");
  if (act.empty() || act == "none") {
    ep->act = Activation::kNone;
  } else if (act == "relu") {
    ep->act = Activation::kRelu;
  } else if (act == "hardtanh") {
    ep->act = Activation::kHardtanh;
    ep->act_min = static_cast<float>(attrs.get_float("act_min", -1.0));
    ep->act_max = static_cast<float>(attrs.get_float("act_max", 1.0));
    if (!(ep->act_min <= ep->act_max))
      return invalid_argument(std::string(what) + ": hardtanh needs act_min <= act_max");
  } else {
    return invalid_argument(std::string(what) + ": unknown activation '" + act + "' (relu, hardtanh or none)");
  }
  return Status::Ok();
}

// ---- the engine ----------------------------------------------------------------------------

// Where lane l of a block of tiles reads its input patch and writes its output tile.
struct LaneTiles {
  int count = 0;                        // lanes that hold a tile (the rest are zero / ignored)
  int64_t n[kLanes], oh[kLanes], ow[kLanes];  // image and top-left output position of the tile
};

LaneTiles lanes_of(const Geometry& g, int64_t first_tile, int64_t end_tile) {
  LaneTiles lt;
  const int64_t th = g.tiles_h(), tw = g.tiles_w();
  for (int64_t t = first_tile; t < end_tile && lt.count < kLanes; ++t, ++lt.count) {
    lt.n[lt.count] = t / (th * tw);
    const int64_t rem = t % (th * tw);
    lt.oh[lt.count] = rem / tw * kTile;
    lt.ow[lt.count] = rem % tw * kTile;
  }
  return lt;
}

using Tf = Transform<kTile>;
constexpr int kAlpha = Tf::alpha;

// U[r][xi][k] for every output channel r and input channel k, kLanes input channels at a time.
// Stored r-major (GEMM xi reads rows with stride (m+2)^2 Cin) so that the rows one output channel
// writes are one contiguous region: with [xi][r][k], each task wrote (m+2)^2 streams a whole U[xi]
// apart, and the stores' cache and TLB misses made the weight transform half the kernel's time.
void transform_weights(const Geometry& g, const float* w, float* U, ThreadPool* pool) {
  const int64_t kblocks = (g.Cin + kLanes - 1) / kLanes;
  pool->parallel_for(g.Cout * kblocks, 16, [&](int64_t p0, int64_t p1) {
    alignas(64) float gl[3 * 3 * kLanes];
    alignas(64) float tmp[kAlpha * 3 * kLanes];
    alignas(64) float u[kAlpha * kAlpha * kLanes];
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t r = p / kblocks, k0 = p % kblocks * kLanes;
      const int nk = static_cast<int>(std::min<int64_t>(kLanes, g.Cin - k0));
      // tap (i, j) of lane l is base[l * lane_stride + tap[i][j]]
      const float* base = g.flipped ? w + (k0 * g.Cout + r) * 9 : w + (r * g.Cin + k0) * 9;
      const int64_t lane_stride = g.flipped ? g.Cout * 9 : 9;
      // lane-major walk: a forward lane's 9 taps are contiguous, so the reads stream
      for (int l = 0; l < kLanes; ++l) {
        const float* src = base + l * lane_stride;
        for (int t = 0; t < 9; ++t) {
          const int src_tap = g.flipped ? 8 - t : t;  // flipped: tap (i, j) reads (2-i, 2-j)
          gl[t * kLanes + l] = l < nk ? src[src_tap] : 0.0f;
        }
      }
      left_multiply<kAlpha, 3, 3>(Tf::G, gl, tmp);
      right_multiply_transposed<kAlpha, kAlpha, 3>(Tf::G, tmp, [&](int i, int j) { return u + (i * kAlpha + j) * kLanes; });
      for (int xi = 0; xi < kAlpha * kAlpha; ++xi) copy_lanes(U + (r * kAlpha * kAlpha + xi) * g.Cin + k0, u + xi * kLanes, nk);
    }
  });
}

// V[xi][k][t - t0] for the tiles t of [t0, t1), padded to whole lane blocks with zero tiles.
void transform_input(const Geometry& g, const float* x, int64_t t0, int64_t t1, int64_t band, float* V,
                     ThreadPool* pool) {
  const int64_t blocks = (t1 - t0 + kLanes - 1) / kLanes;
  const int64_t plane = g.H * g.W;
  pool->parallel_for(blocks * g.Cin, 16, [&](int64_t p0, int64_t p1) {
    alignas(64) float d[kAlpha * kAlpha * kLanes];
    alignas(64) float tmp[kAlpha * kAlpha * kLanes];
    LaneTiles lt;
    int64_t lt_block = -1;
    bool interior[kLanes];
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t b = p / g.Cin, k = p % g.Cin;
      if (b != lt_block) {
        lt = lanes_of(g, t0 + b * kLanes, t1);
        lt_block = b;
        for (int l = 0; l < lt.count; ++l) {
          const int64_t ih = lt.oh[l] - g.PH, iw = lt.ow[l] - g.PW;
          interior[l] = ih >= 0 && iw >= 0 && ih + kAlpha <= g.H && iw + kAlpha <= g.W;
        }
      }
      for (int l = 0; l < kLanes; ++l) {
        if (l >= lt.count) {
          for (int e = 0; e < kAlpha * kAlpha; ++e) d[e * kLanes + l] = 0.0f;
          continue;
        }
        const float* xc = x + (lt.n[l] * g.Cin + k) * plane;
        const int64_t ih0 = lt.oh[l] - g.PH, iw0 = lt.ow[l] - g.PW;
        if (interior[l]) {
          for (int i = 0; i < kAlpha; ++i) {
            const float* row = xc + (ih0 + i) * g.W + iw0;
            for (int j = 0; j < kAlpha; ++j) d[(i * kAlpha + j) * kLanes + l] = row[j];
          }
        } else {
          for (int i = 0; i < kAlpha; ++i) {
            const int64_t ih = ih0 + i;
            const bool row_in = ih >= 0 && ih < g.H;
            for (int j = 0; j < kAlpha; ++j) {
              const int64_t iw = iw0 + j;
              d[(i * kAlpha + j) * kLanes + l] = row_in && iw >= 0 && iw < g.W ? xc[ih * g.W + iw] : 0.0f;
            }
          }
        }
      }
      left_multiply<kAlpha, kAlpha, kAlpha>(Tf::BT, d, tmp);
      float* vk = V + k * band + b * kLanes;
      right_multiply_transposed<kAlpha, kAlpha, kAlpha>(
          Tf::BT, tmp, [&](int i, int j) { return vk + (i * kAlpha + j) * g.Cin * band; });
    }
  });
}

// out tiles of [t0, t1) from M[xi][r][t - t0], through the epilogue.
void transform_output(const Geometry& g, const float* M, int64_t t0, int64_t t1, int64_t band, const Epilogue& ep,
                      float* out, ThreadPool* pool) {
  const int64_t blocks = (t1 - t0 + kLanes - 1) / kLanes;
  const int64_t oplane = g.HO * g.WO;
  pool->parallel_for(blocks * g.Cout, 16, [&](int64_t p0, int64_t p1) {
    alignas(64) float mt[kAlpha * kAlpha * kLanes];
    alignas(64) float tmp[kTile * kAlpha * kLanes];
    alignas(64) float y[kTile * kTile * kLanes];
    LaneTiles lt;
    int64_t lt_block = -1;
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t b = p / g.Cout, r = p % g.Cout;
      if (b != lt_block) {
        lt = lanes_of(g, t0 + b * kLanes, t1);
        lt_block = b;
      }
      const float* mr = M + r * band + b * kLanes;
      for (int xi = 0; xi < kAlpha * kAlpha; ++xi) {
        // lanes past the band's last tile were never written by the GEMM: zero them
        float* dst = mt + xi * kLanes;
        copy_lanes(dst, mr + xi * g.Cout * band, lt.count);
        std::fill(dst + lt.count, dst + kLanes, 0.0f);
      }
      left_multiply<kTile, kAlpha, kAlpha>(Tf::AT, mt, tmp);
      right_multiply_transposed<kTile, kTile, kAlpha>(Tf::AT, tmp, [&](int i, int j) { return y + (i * kTile + j) * kLanes; });
      for (int l = 0; l < lt.count; ++l) {
        const int64_t base = (lt.n[l] * g.Cout + r) * oplane;
        const int rows = static_cast<int>(std::min<int64_t>(kTile, g.HO - lt.oh[l]));
        const int cols = static_cast<int>(std::min<int64_t>(kTile, g.WO - lt.ow[l]));
        for (int i = 0; i < rows; ++i) {
          const int64_t e0 = base + (lt.oh[l] + i) * g.WO + lt.ow[l];
          for (int j = 0; j < cols; ++j) out[e0 + j] = ep.apply(y[(i * kTile + j) * kLanes + l], r, e0 + j);
        }
      }
    }
  });
}

Status run_winograd(const char* what, const Geometry& g, const float* in, const float* w, const Epilogue& ep,
                    float* out, const KernelArgs& a) {
  if (a.workspace_bytes < g.workspace_bytes() || !a.workspace)
    return internal_error(std::string(what) + ": workspace of " + std::to_string(a.workspace_bytes) +
                          " bytes, needs " + std::to_string(g.workspace_bytes()));
  float* U = static_cast<float*>(a.workspace);
  float* V = U + g.u_floats();
  float* M = V + g.v_floats();
  const int64_t band = g.band_tiles(), tiles = g.tiles();
  constexpr int64_t kAlpha2 = Geometry::kAlpha2;
  transform_weights(g, w, U, a.pool);
  for (int64_t t0 = 0; t0 < tiles; t0 += band) {
    const int64_t t1 = std::min(tiles, t0 + band), nt = t1 - t0;
    transform_input(g, in, t0, t1, band, V, a.pool);
    // one GEMM per tile element, each on one thread: M[xi][Cout, nt] = U[xi][Cout, Cin] @ V[xi][Cin, nt]
    a.pool->parallel_for(kAlpha2, 1, [&](int64_t x0, int64_t x1) {
      for (int64_t xi = x0; xi < x1; ++xi)
        sgemm(false, false, g.Cout, nt, g.Cin, 1.0f, U + xi * g.Cin, kAlpha2 * g.Cin, V + xi * g.Cin * band, band,
              0.0f, M + xi * g.Cout * band, band, nullptr);
    });
    transform_output(g, M, t0, t1, band, ep, out, a.pool);
  }
  return Status::Ok();
}

// ---- conv2d.winograd -----------------------------------------------------------------------

constexpr const char* kConvName = "conv2d.winograd";

Status conv_geometry(const KernelArgs& a, Geometry* g) {
  if (a.num_inputs < 2 || a.num_outputs != 1) return invalid_argument(std::string(kConvName) + ": wants x, w[, bias] -> y");
  const TensorView &x = a.in(0), &w = a.in(1);
  if (x.rank != 4 || w.rank != 4)
    return invalid_argument(std::string(kConvName) + ": wants 4-d input and weight, got " + x.shape_string() +
                            " and " + w.shape_string());
  ET_RETURN_IF_ERROR(check_geometry(kConvName, a.attr(), w, x.shape[1], &g->PH, &g->PW));
  g->N = x.shape[0], g->Cin = x.shape[1], g->H = x.shape[2], g->W = x.shape[3], g->Cout = w.shape[0];
  g->HO = cpu::conv_out_size(g->H, 3, 1, g->PH, 1), g->WO = cpu::conv_out_size(g->W, 3, 1, g->PW, 1);
  g->flipped = false;
  if (g->HO <= 0 || g->WO <= 0) return invalid_argument(std::string(kConvName) + ": output would be empty");
  if (!cpu::is_shape(a.out(0), g->N, g->Cout, g->HO, g->WO))
    return invalid_argument(std::string(kConvName) + ": output " + a.out(0).shape_string() + " is not " +
                            cpu::dims_string(g->N, g->Cout, g->HO, g->WO));
  if (a.num_inputs == 3 && (a.in(2).rank != 1 || a.in(2).shape[0] != g->Cout))
    return invalid_argument(std::string(kConvName) + ": bias " + a.in(2).shape_string() + " does not fit " +
                            std::to_string(g->Cout) + " output channels");
  return Status::Ok();
}

Status conv_check(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, kConvName, 2, 3, 1));
  ET_RETURN_IF_ERROR(cpu::expect_all_f32(a, kConvName, a.num_inputs));
  ET_RETURN_IF_ERROR(nhwc::refuse_nhwc(a.attr(), kConvName, "the conv2d kernel"));
  Geometry g;
  ET_RETURN_IF_ERROR(conv_geometry(a, &g));
  Epilogue ep;
  return read_activation(kConvName, a.attr(), &ep);
}

size_t conv_workspace(const KernelArgs& a) {
  Geometry g;
  return conv_geometry(a, &g).ok() ? g.workspace_bytes() : 0;
}

Status conv_run(const KernelArgs& a) {
  Geometry g;
  ET_RETURN_IF_ERROR(conv_geometry(a, &g));
  Epilogue ep;
  ET_RETURN_IF_ERROR(read_activation(kConvName, a.attr(), &ep));
  if (a.num_inputs == 3) ep.bias = a.in(2).as<float>();
  return run_winograd(kConvName, g, a.in(0).as<float>(), a.in(1).as<float>(), ep, a.out(0).as<float>(), a);
}

// ---- conv2d_grad_input.winograd ------------------------------------------------------------

constexpr const char* kGradName = "conv2d_grad_input.winograd";

// dx = conv(dy, flip(w)^T, padding 2 - p): the engine's input is dy, its output dx.
Status grad_geometry(const KernelArgs& a, Geometry* g) {
  if (a.num_inputs < 2 || a.num_outputs != 1) return invalid_argument(std::string(kGradName) + ": wants dy, w[, mask] -> dx");
  const TensorView &dy = a.in(0), &w = a.in(1);
  if (dy.rank != 4 || w.rank != 4)
    return invalid_argument(std::string(kGradName) + ": wants 4-d dy and weight, got " + dy.shape_string() + " and " +
                            w.shape_string());
  int64_t xs[4];
  if (!cpu::read_shape4(a.attr(), "input_shape", xs))
    return invalid_argument(std::string(kGradName) + ": attr input_shape must be 4 ints");
  int64_t PH, PW;
  ET_RETURN_IF_ERROR(check_geometry(kGradName, a.attr(), w, xs[1], &PH, &PW));
  const int64_t HO = cpu::conv_out_size(xs[2], 3, 1, PH, 1), WO = cpu::conv_out_size(xs[3], 3, 1, PW, 1);
  if (HO <= 0 || WO <= 0) return invalid_argument(std::string(kGradName) + ": forward output would be empty");
  if (!cpu::is_shape(dy, xs[0], w.shape[0], HO, WO))
    return invalid_argument(std::string(kGradName) + ": dy " + dy.shape_string() + " is not " +
                            cpu::dims_string(xs[0], w.shape[0], HO, WO));
  if (!cpu::is_shape(a.out(0), xs[0], xs[1], xs[2], xs[3]))
    return invalid_argument(std::string(kGradName) + ": output " + a.out(0).shape_string() + " is not input_shape " +
                            cpu::dims_string(xs[0], xs[1], xs[2], xs[3]));
  g->N = xs[0], g->Cin = w.shape[0], g->H = HO, g->W = WO, g->Cout = xs[1];
  g->HO = xs[2], g->WO = xs[3], g->PH = 2 - PH, g->PW = 2 - PW;
  g->flipped = true;
  return Status::Ok();
}

// The optional third input: an activation mask applied to dx (u8 bits, or f32 y + mask_min/max).
Status read_grad_mask(const KernelArgs& a, Epilogue* ep) {
  if (a.num_inputs < 3) return Status::Ok();
  const TensorView& m = a.in(2);
  const int64_t numel = a.out(0).numel();
  if (m.dtype == DType::u8) {
    if (m.rank != 1 || m.shape[0] != (numel + 7) / 8)
      return invalid_argument(std::string(kGradName) + ": mask bits " + m.shape_string() + " are not u8[" +
                              std::to_string((numel + 7) / 8) + "] for " + std::to_string(numel) + " elements");
    ep->mask_bits = m.as<uint8_t>();
    return Status::Ok();
  }
  if (m.dtype == DType::f32) {
    if (m.numel() != numel || m.rank != a.out(0).rank)
      return invalid_argument(std::string(kGradName) + ": mask input " + m.shape_string() + " is not the shape of dx " +
                              a.out(0).shape_string());
    for (int i = 0; i < m.rank; ++i)
      if (m.shape[i] != a.out(0).shape[i])
        return invalid_argument(std::string(kGradName) + ": mask input " + m.shape_string() +
                                " is not the shape of dx " + a.out(0).shape_string());
    if (!a.attr().has("mask_min"))
      return invalid_argument(std::string(kGradName) + ": an f32 mask input needs attr mask_min");
    ep->mask_y = m.as<float>();
    ep->mask_min = static_cast<float>(a.attr().get_float("mask_min"));
    ep->has_mask_max = a.attr().has("mask_max");
    ep->mask_max = static_cast<float>(a.attr().get_float("mask_max"));
    return Status::Ok();
  }
  return invalid_argument(std::string(kGradName) + ": mask input must be u8 bits or f32, got " + m.shape_string());
}

Status grad_check(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, kGradName, 2, 3, 1));
  ET_RETURN_IF_ERROR(cpu::expect_all_f32(a, kGradName, 2));
  ET_RETURN_IF_ERROR(nhwc::refuse_nhwc(a.attr(), kGradName, "the conv2d_grad_input kernel"));
  Geometry g;
  ET_RETURN_IF_ERROR(grad_geometry(a, &g));
  Epilogue ep;
  return read_grad_mask(a, &ep);
}

size_t grad_workspace(const KernelArgs& a) {
  Geometry g;
  return grad_geometry(a, &g).ok() ? g.workspace_bytes() : 0;
}

Status grad_run(const KernelArgs& a) {
  Geometry g;
  ET_RETURN_IF_ERROR(grad_geometry(a, &g));
  Epilogue ep;
  ET_RETURN_IF_ERROR(read_grad_mask(a, &ep));
  return run_winograd(kGradName, g, a.in(0).as<float>(), a.in(1).as<float>(), ep, a.out(0).as<float>(), a);
}

}  // namespace winograd
}  // namespace

void register_winograd_kernels(KernelRegistry& r) {
  r.add({"conv2d", winograd::kConvName, winograd::conv_check, winograd::conv_workspace, winograd::conv_run});
  r.add({"conv2d_grad_input", winograd::kGradName, winograd::grad_check, winograd::grad_workspace,
         winograd::grad_run});
}

}  // namespace edgetune
