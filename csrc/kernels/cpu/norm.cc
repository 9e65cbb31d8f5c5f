// CPU kernels for compiler/ops/norm.py: batch_norm_train, batch_norm_infer, batch_norm_backward,
// layer_norm, layer_norm_backward (f32 tensors; statistics accumulated in double, as the numpy
// references do, so means of large channels do not drift).
//
// Batch norm views x as [N, C, S] (S = the product of the dims after C, 1 for [N, C]) and gives
// each thread whole channels: a channel's sums run on one thread in a fixed order, so results do
// not depend on the thread count. Layer norm gives each thread whole rows; its weight/bias
// gradients (sums over rows) give each thread whole columns instead, for the same reason.
// Both add float terms in float first, a few at a time (4 per lane of a 64-element block along
// a row, groups of 4 rows down a column for layer norm's weight/bias gradients), and only those
// partial sums in double (block_sum / block_sum2, the column sums of ln_backward_run): a
// conversion per element made the loops 2-3x slower than PyTorch's, and the error stays a few
// f32 roundings of the terms' absolute sum (see block_sum); the means sum x - x[0] (layer norm)
// or x - (the channel's first value) (batch norm) so that bound is relative to std, not |mean|.
//
// batch_norm_train / _infer may carry a fused activation (attrs activation, act_min, act_max, read
// by read_activation as conv2d's): the clamp happens in the normalising loop, so BN + ReLU(6) is
// one pass over the tensor instead of two (fuse_epilogue makes it).
//
// Layout: attr layout = "nhwc" (conv_nhwc.h's read_layout; absent or "nchw" is the [N, C, ...]
// view above) on a 4-d x means x, y, dy, dx are stored [N, H, W, C]: C = shape[3], and the tensor is
// N*H*W rows of C contiguous channels. Same formulas, same precision approach (shift by the channel's
// first value, float terms added a few at a time and then in double, the mean as float hi + lo), but
// vectorised over the channels of a row instead of along a channel's plane: the rows are cut into
// a number of blocks fixed by the shape (row_blocks), each block sums groups of kRowGroup rows in
// float lanes per channel and folds them into its own double sums per channel (on the stack: no
// workspace, see kMaxNhwcChannels), and the blocks are added in order, so the result does not
// depend on the thread count. The normalising / dx pass then runs over rows in parallel with
// per-channel coefficients computed once. NCHW and NHWC statistics differ only by the order of the sums (a few f32
// roundings of the terms' absolute sum).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <type_traits>

#include "core/kernel.h"
#include "kernels/cpu/conv_nhwc.h"
#include "kernels/cpu/cpu_util.h"
#include "kernels/cpu/elementwise_math.h"
#include "kernels/cpu/gemm.h"

namespace edgetune {
namespace {

// ---- layer norm's row sums: float lanes per block, blocks folded into double ----------------
// Layer norm sums along a row of D floats (384 in the text model), once per row and pass. With
// double lanes every element costs a conversion and a double add, and those loops ran at a
// third of PyTorch's speed (layer_norm_backward 134 us vs 57 us per text-model call). Here each
// of kFloatLanes float lanes adds kBlock / kFloatLanes = 4 terms of a block, the block's lanes
// are then added into double lanes, and the double lanes are added in order at the end: the
// order is fixed by D alone (never by the thread count), and the error stays what double lanes
// give: a lane's float sum of 4 terms is off by at most 3u (u = 2^-24) of their absolute sum, so
// a row sum is off by at most ~2e-7 of sum |term|, as much as rounding the mean itself to f32 costs
// (and for the mean of data far from 0, ~2e-7 |mean|, not the ~1e-6 that whole-row float lanes
// would give for D = 384).
constexpr int kFloatLanes = 16;
constexpr int64_t kBlock = 64;

// Double lanes that a block's float lanes fold into. Written as vectors (GCC/Clang vector
// extensions, lowered to plain code where the target has none) because GCC does not vectorize
// a float -> double lane loop: it folded lane by lane with scalar conversions, half of
// layer_norm's time.
typedef float F8 __attribute__((vector_size(32)));
typedef double D8 __attribute__((vector_size(64)));
typedef float F16 __attribute__((vector_size(64)));  // the kFloatLanes float lanes
typedef float F16U __attribute__((vector_size(64), aligned(alignof(float)), may_alias));
struct DoubleLanes {
  D8 lo = {0, 0, 0, 0, 0, 0, 0, 0}, hi = {0, 0, 0, 0, 0, 0, 0, 0};
  void add(const F16& fl) {
    F8 a, b;
    std::memcpy(&a, &fl, sizeof a);
    std::memcpy(&b, reinterpret_cast<const char*>(&fl) + sizeof a, sizeof b);
    lo += __builtin_convertvector(a, D8);
    hi += __builtin_convertvector(b, D8);
  }
  double sum() const {  // lanes in order
    double s = 0;
    for (int l = 0; l < 8; ++l) s += lo[l];
    for (int l = 0; l < 8; ++l) s += hi[l];
    return s;
  }
};
static_assert(kFloatLanes == 16, "DoubleLanes holds 16 lanes");

// The terms are generic lambdas, term(k, V& t) / terms(k, V& a, V& b), called with V = F16 for
// the kFloatLanes terms k .. k+15 at once and with V = float for the row's tail: they read
// their operands with lanes<V>(p) and may mix V with float scalars (the vector extensions
// broadcast them). Written this way the loops are plain vector code: with per-lane float
// arrays GCC shuffled every term into place (batch_norm_train's statistics ran at 1.4 ns an
// element on one thread, 0.7 as vectors). Lane l still adds the terms k + j + l in j order.
template <typename V>
inline V lanes(const float* p) {
  if constexpr (std::is_same_v<V, float>) {
    return *p;
  } else {
    return *reinterpret_cast<const F16U*>(p);
  }
}

// sum of term(k) for k in [0, n)
template <typename Term>
inline double block_sum(int64_t n, const Term& term) {
  DoubleLanes dl;
  int64_t k = 0;
  for (; k + kBlock <= n; k += kBlock) {
    F16 fl = {};
    for (int64_t j = 0; j < kBlock; j += kFloatLanes) {
      F16 t;
      term(k + j, t);
      fl += t;
    }
    dl.add(fl);
  }
  double s = dl.sum();
  for (; k < n; ++k) {
    float t;
    term(k, t);
    s += t;
  }
  return s;
}

// the sums of a(k) and b(k) for k in [0, n), where terms(k, a, b) sets a and b
template <typename Terms>
inline void block_sum2(int64_t n, const Terms& terms, double* sa, double* sb) {
  DoubleLanes da, db;
  int64_t k = 0;
  for (; k + kBlock <= n; k += kBlock) {
    F16 fa = {}, fb = {};
    for (int64_t j = 0; j < kBlock; j += kFloatLanes) {
      F16 a, b;
      terms(k + j, a, b);
      fa += a;
      fb += b;
    }
    da.add(fa);
    db.add(fb);
  }
  double s1 = da.sum(), s2 = db.sum();
  for (; k < n; ++k) {
    float a, b;
    terms(k, a, b);
    s1 += a;
    s2 += b;
  }
  *sa = s1;
  *sb = s2;
}

// ---- batch norm's row sums (one (image, channel) plane at a time), on the same blocks --------
// sum (x[k] - k0) and sum (x[k] - k0)^2, added to *s1, *s2. Shifting by a value of the data (k0,
// so exact in f32) keeps E[d^2] - E[d]^2 free of cancellation when |mean| >> std, so one pass
// gives the variance. With double lanes these loops compiled to scalar conversions and adds:
// batch_norm_train on MobileNetV2's 8x96x112x112 took 25 ms on one thread, 2.6 ns an element.
void row_shifted_sums(const float* x, int64_t n, double k0, double* s1, double* s2) {
  const float shift = static_cast<float>(k0);
  double sa, sb;
  block_sum2(
      n,
      [&](int64_t k, auto& a, auto& b) {
        using V = std::remove_reference_t<decltype(a)>;
        const V d = lanes<V>(x + k) - shift;
        a = d;
        b = d * d;
      },
      &sa, &sb);
  *s1 += sa;
  *s2 += sb;
}

// sum dy[k] and sum dy[k] * (x[k] - m)
void row_dy_sums(const float* dy, const float* x, int64_t n, float m, double* s_dy, double* s_dyx) {
  double sa, sb;
  block_sum2(
      n,
      [&](int64_t k, auto& a, auto& b) {
        using V = std::remove_reference_t<decltype(a)>;
        const V d = lanes<V>(dy + k);
        a = d;
        b = d * (lanes<V>(x + k) - m);
      },
      &sa, &sb);
  *s_dy += sa;
  *s_dyx += sb;
}

bool is_vector(const TensorView& t, int64_t n) { return t.rank == 1 && t.shape[0] == n; }

// output_mask attr ([dx, dw, db] as 0/1): how many outputs, and which output slot each takes (-1 = off)
Status read_mask(const KernelArgs& a, const char* op, int slot[3]) {
  const std::vector<int64_t>& m = a.attr().get_ints("output_mask");
  if (m.size() != 3) return invalid_argument(std::string(op) + ": attr output_mask must be 3 bools");
  int next = 0;
  for (int i = 0; i < 3; ++i) slot[i] = m[i] ? next++ : -1;
  if (next != a.num_outputs)
    return invalid_argument(std::string(op) + ": output_mask asks for " + std::to_string(next) + " outputs, node has " +
                            std::to_string(a.num_outputs));
  return Status::Ok();
}

// ---- batch norm ------------------------------------------------------------------------------

// The block sums and the per-channel coefficients live on the stack, not in a workspace: a
// workspace sits on the planned arena's peak whenever the norm does (MobileNetV2's first block),
// and 50 KB of it there was the only thing that made the channels-last plans bigger. Hence a
// channel limit (1280 is the largest of the CNNs here), and fewer blocks on wide layers.
constexpr int64_t kMaxNhwcChannels = 2048;
constexpr int64_t kStackSums = 2 * kMaxNhwcChannels;  // doubles: 2 * blocks * C fit

struct BN {
  int64_t N, C, S;   // NHWC: S = H*W as well; the tensor is N*S rows of C channels
  bool nhwc = false;
  int64_t count() const { return N * S; }
};

// The node's layout for batch norm's x (an error for an unknown layout, or nhwc on x not 4-d).
Status bn_layout(const KernelArgs& a, const char* op, const TensorView& x, bool* nhwc) {
  ET_RETURN_IF_ERROR(nhwc::read_layout(a.attr(), op, nhwc));
  if (*nhwc && x.rank != 4)
    return invalid_argument(std::string(op) + ": layout nhwc needs a 4-d [N, H, W, C] input, got " + x.shape_string());
  if (*nhwc && x.shape[3] > kMaxNhwcChannels)
    return invalid_argument(std::string(op) + ": layout nhwc runs up to " + std::to_string(kMaxNhwcChannels) +
                            " channels, got " + std::to_string(x.shape[3]));
  return Status::Ok();
}

// run() only: the check validated the layout
BN bn_of(const KernelArgs& a, const TensorView& x) {
  bool is_nhwc = false;
  (void)nhwc::read_layout(a.attr(), "batch_norm", &is_nhwc);
  if (is_nhwc) return BN{x.shape[0], x.shape[3], x.shape[1] * x.shape[2], true};
  BN b{x.shape[0], x.shape[1], 1};
  for (int i = 2; i < x.rank; ++i) b.S *= x.shape[i];
  return b;
}

// the channel dim of x: 1, or 3 in layout nhwc
int64_t channels_of(const TensorView& x, bool nhwc) { return nhwc ? x.shape[3] : x.shape[1]; }

// x and the per-channel tensors of batch_norm_train / batch_norm_infer
Status bn_check_inputs(const KernelArgs& a, const char* op) {
  const TensorView& x = a.in(0);
  if (x.rank < 2) return invalid_argument(std::string(op) + ": wants [N, C, ...] input, got " + x.shape_string());
  bool is_nhwc;
  ET_RETURN_IF_ERROR(bn_layout(a, op, x, &is_nhwc));
  const int64_t C = channels_of(x, is_nhwc);
  for (int i = 1; i < 5; ++i)
    if (!is_vector(a.in(i), C))
      return invalid_argument(std::string(op) + ": per-channel input " + a.in(i).shape_string() + " does not fit " +
                              std::to_string(C) + " channels");
  if (!cpu::same_shape(a.out(0), x))
    return invalid_argument(std::string(op) + ": output " + a.out(0).shape_string() + " is not " + x.shape_string());
  return Status::Ok();
}

int64_t channel_grain(const BN& b) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(b.count(), 1)); }

// ---- batch norm, layout nhwc: rows of channels ----------------------------------------------------
// The tensor is rows = N*H*W rows of C channels. Sums run over fixed row blocks (row_blocks: the
// count depends on the shape only), each block in its own double sums per channel, the blocks then
// added in order; within a block, groups of kRowGroup rows add their terms in float vectors over 16
// channels (4 terms per lane, as the NCHW path's 64-element blocks give each of their 16 lanes) and
// the group's sums join the block's doubles.
constexpr int64_t kRowGroup = 4;
constexpr int64_t kMaxRowBlocks = 32;
constexpr int64_t kMinBlockRows = 256;

int64_t row_blocks(int64_t rows, int64_t C) {
  const int64_t fit = kStackSums / (2 * std::max<int64_t>(C, 1));
  return std::max<int64_t>(1, std::min({kMaxRowBlocks, rows / kMinBlockRows, fit}));
}

typedef double D8U __attribute__((vector_size(64), aligned(alignof(double)), may_alias));

// s[0..16) += f, in double
inline void add_in_double(double* s, const F16& f) {
  F8 lo, hi;
  std::memcpy(&lo, &f, sizeof lo);
  std::memcpy(&hi, reinterpret_cast<const char*>(&f) + sizeof lo, sizeof hi);
  *reinterpret_cast<D8U*>(s) += __builtin_convertvector(lo, D8);
  *reinterpret_cast<D8U*>(s + 8) += __builtin_convertvector(hi, D8);
}

// s1[c] = sum of a(r, c), s2[c] = sum of b(r, c) over rows [r0, r1), where terms(r, c, a, b) sets the
// terms of row r for the channels c .. c+15 (V = F16) or channel c (V = float), as block_sum2's terms.
template <typename Terms>
void column_sums2(int64_t r0, int64_t r1, int64_t C, const Terms& terms, double* s1, double* s2) {
  std::fill(s1, s1 + C, 0.0);
  std::fill(s2, s2 + C, 0.0);
  int64_t r = r0;
  for (; r + kRowGroup <= r1; r += kRowGroup) {
    int64_t c = 0;
    for (; c + kFloatLanes <= C; c += kFloatLanes) {
      F16 fa, fb;
      terms(r, c, fa, fb);
      for (int64_t i = 1; i < kRowGroup; ++i) {
        F16 a, b;
        terms(r + i, c, a, b);
        fa += a;
        fb += b;
      }
      add_in_double(s1 + c, fa);
      add_in_double(s2 + c, fb);
    }
    for (; c < C; ++c) {
      float fa, fb;
      terms(r, c, fa, fb);
      for (int64_t i = 1; i < kRowGroup; ++i) {
        float a, b;
        terms(r + i, c, a, b);
        fa += a;
        fb += b;
      }
      s1[c] += fa;
      s2[c] += fb;
    }
  }
  for (; r < r1; ++r) {
    for (int64_t c = 0; c < C; ++c) {
      float a, b;
      terms(r, c, a, b);
      s1[c] += a;
      s2[c] += b;
    }
  }
}

// The per-channel sums of all rows: column_sums2 per block (in parallel), the blocks added in order
// into s1, s2 (= block 0's sums, in place). sums: 2 * row_blocks * C doubles (kStackSums).
template <typename Terms>
void channel_sums2(const KernelArgs& a, int64_t rows, int64_t C, const Terms& terms, double* sums, double** s1,
                   double** s2) {
  const int64_t nb = row_blocks(rows, C);
  a.pool->parallel_for(nb, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      column_sums2(rows * b / nb, rows * (b + 1) / nb, C, terms, sums + 2 * b * C, sums + (2 * b + 1) * C);
  });
  for (int64_t b = 1; b < nb; ++b)
    for (int64_t c = 0; c < C; ++c) {
      sums[c] += sums[2 * b * C + c];
      sums[C + c] += sums[(2 * b + 1) * C + c];
    }
  *s1 = sums;
  *s2 = sums + C;
}

int64_t row_grain(const BN& bn) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(bn.C, 1)); }

Status bn_train_nhwc(const KernelArgs& a, const BN& bn) {
  const int64_t C = bn.C, rows = bn.count();
  const float* x = a.in(0).as<float>();
  const float *w = a.in(1).as<float>(), *b = a.in(2).as<float>();
  const float *rm = a.in(3).as<float>(), *rv = a.in(4).as<float>();
  float* y = a.out(0).as<float>();
  float *mean_out = a.out(1).as<float>(), *invstd_out = a.out(2).as<float>();
  float *rm_out = a.out(3).as<float>(), *rv_out = a.out(4).as<float>();
  const double eps = a.attr().get_float("eps", 1e-5), mom = a.attr().get_float("momentum", 0.1);
  float lo, hi;
  ET_RETURN_IF_ERROR(read_activation(a.attr(), "batch_norm_train", &lo, &hi));
  double sums[kStackSums];
  float coefficients[4 * kMaxNhwcChannels];
  float *mh = coefficients, *ml = mh + C, *scale = ml + C, *shift = scale + C;
  // shifted sums (see row_shifted_sums): the shift of channel c is its first value, x[0, 0, 0, c],
  // the very element the NCHW path shifts by
  double *s1, *s2;
  channel_sums2(
      a, rows, C,
      [&](int64_t r, int64_t c, auto& ta, auto& tb) {
        using V = std::remove_reference_t<decltype(ta)>;
        const V d = lanes<V>(x + r * C + c) - lanes<V>(x + c);
        ta = d;
        tb = d * d;
      },
      sums, &s1, &s2);
  for (int64_t c = 0; c < C; ++c) {  // the NCHW path's per-channel arithmetic, term for term
    const double k0 = rows ? x[c] : 0.0;
    const double dmean = rows ? s1[c] / rows : 0.0;
    const double mean = k0 + dmean;
    const double var = rows ? std::max(0.0, s2[c] / rows - dmean * dmean) : 0.0;
    const double invstd = 1.0 / std::sqrt(var + eps);
    mean_out[c] = static_cast<float>(mean);
    invstd_out[c] = static_cast<float>(invstd);
    rm_out[c] = static_cast<float>((1 - mom) * rm[c] + mom * mean);
    rv_out[c] = static_cast<float>((1 - mom) * rv[c] + mom * var * (static_cast<double>(rows) / std::max<int64_t>(rows - 1, 1)));
    mh[c] = static_cast<float>(mean);
    ml[c] = static_cast<float>(mean - mh[c]);
    scale[c] = static_cast<float>(invstd * w[c]);
    shift[c] = b[c];
  }
  // rows backwards: each thread starts on the rows its share of the statistics pass read last (the
  // same halves of the tensor), still in its cache (NCHW keeps a whole channel there; NHWC cannot)
  a.pool->parallel_for(rows, row_grain(bn), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r1 - 1; r >= r0; --r) {
      const float* xr = x + r * C;
      float* yr = y + r * C;
      for (int64_t c = 0; c < C; ++c) yr[c] = math::hardtanh(((xr[c] - mh[c]) - ml[c]) * scale[c] + shift[c], lo, hi);
    }
  });
  return Status::Ok();
}

Status bn_infer_nhwc(const KernelArgs& a, const BN& bn) {
  const int64_t C = bn.C;
  const float* x = a.in(0).as<float>();
  const float *w = a.in(1).as<float>(), *b = a.in(2).as<float>();
  const float *rm = a.in(3).as<float>(), *rv = a.in(4).as<float>();
  float* y = a.out(0).as<float>();
  const float eps = static_cast<float>(a.attr().get_float("eps", 1e-5));
  float lo, hi;
  ET_RETURN_IF_ERROR(read_activation(a.attr(), "batch_norm_infer", &lo, &hi));
  float coefficients[2 * kMaxNhwcChannels];
  float *scale = coefficients, *shift = scale + C;
  for (int64_t c = 0; c < C; ++c) {  // in float32, as the NCHW path and the reference compute them
    scale[c] = w[c] / std::sqrt(rv[c] + eps);
    shift[c] = b[c] - rm[c] * scale[c];
  }
  a.pool->parallel_for(bn.count(), row_grain(bn), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * C;
      float* yr = y + r * C;
      for (int64_t c = 0; c < C; ++c) yr[c] = math::hardtanh(xr[c] * scale[c] + shift[c], lo, hi);
    }
  });
  return Status::Ok();
}

Status bn_backward_nhwc(const KernelArgs& a, const BN& bn, const int slot[3]) {
  const int64_t C = bn.C, rows = bn.count();
  const float *dy = a.in(0).as<float>(), *x = a.in(1).as<float>(), *w = a.in(2).as<float>();
  const float *mean = a.in(3).as<float>(), *invstd = a.in(4).as<float>();
  float* dx = slot[0] >= 0 ? a.out(slot[0]).as<float>() : nullptr;
  float* dw = slot[1] >= 0 ? a.out(slot[1]).as<float>() : nullptr;
  float* db = slot[2] >= 0 ? a.out(slot[2]).as<float>() : nullptr;
  double sums[kStackSums];
  float coefficients[3 * kMaxNhwcChannels];
  float *k = coefficients, *c_dy = k + C, *c_xh = c_dy + C;
  double *s_dy, *s_dyx;  // sum dy, sum dy * (x - mean)
  channel_sums2(
      a, rows, C,
      [&](int64_t r, int64_t c, auto& ta, auto& tb) {
        using V = std::remove_reference_t<decltype(ta)>;
        const V d = lanes<V>(dy + r * C + c);
        ta = d;
        tb = d * (lanes<V>(x + r * C + c) - lanes<V>(mean + c));
      },
      sums, &s_dy, &s_dyx);
  for (int64_t c = 0; c < C; ++c) {
    const double s_dy_xhat = s_dyx[c] * invstd[c];
    if (dw) dw[c] = static_cast<float>(s_dy_xhat);
    if (db) db[c] = static_cast<float>(s_dy[c]);
    k[c] = w[c] * invstd[c];
    c_dy[c] = rows ? static_cast<float>(s_dy[c] / rows) : 0.0f;
    c_xh[c] = rows ? static_cast<float>(s_dy_xhat / rows) : 0.0f;
  }
  if (!dx) return Status::Ok();
  // dx = w * invstd * (dy - mean(dy) - xhat * mean(dy * xhat)), as the NCHW path writes it; rows
  // backwards, as in bn_train_nhwc
  a.pool->parallel_for(rows, row_grain(bn), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r1 - 1; r >= r0; --r) {
      const float *dyr = dy + r * C, *xr = x + r * C;
      float* dxr = dx + r * C;
      for (int64_t c = 0; c < C; ++c) dxr[c] = k[c] * (dyr[c] - c_dy[c] - (xr[c] - mean[c]) * invstd[c] * c_xh[c]);
    }
  });
  return Status::Ok();
}


Status bn_train_check(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, "batch_norm_train", 5, 5, 5));
  ET_RETURN_IF_ERROR(cpu::expect_all_f32(a, "batch_norm_train"));
  ET_RETURN_IF_ERROR(bn_check_inputs(a, "batch_norm_train"));
  float lo, hi;
  ET_RETURN_IF_ERROR(read_activation(a.attr(), "batch_norm_train", &lo, &hi));
  bool is_nhwc;
  ET_RETURN_IF_ERROR(bn_layout(a, "batch_norm_train", a.in(0), &is_nhwc));
  for (int i = 1; i < 5; ++i)
    if (!is_vector(a.out(i), channels_of(a.in(0), is_nhwc)))
      return invalid_argument("batch_norm_train: output " + std::to_string(i) + " " + a.out(i).shape_string() +
                              " is not per-channel");
  return Status::Ok();
}

Status bn_train_run(const KernelArgs& a) {
  const TensorView& xv = a.in(0);
  const BN bn = bn_of(a, xv);
  if (bn.nhwc) return bn_train_nhwc(a, bn);
  const float* x = xv.as<float>();
  const float *w = a.in(1).as<float>(), *b = a.in(2).as<float>();
  const float *rm = a.in(3).as<float>(), *rv = a.in(4).as<float>();
  float* y = a.out(0).as<float>();
  float *mean_out = a.out(1).as<float>(), *invstd_out = a.out(2).as<float>();
  float *rm_out = a.out(3).as<float>(), *rv_out = a.out(4).as<float>();
  const double eps = a.attr().get_float("eps", 1e-5), mom = a.attr().get_float("momentum", 0.1);
  float lo, hi;  // the fused activation's clamp (-inf, +inf without one); checked in bn_train_check
  ET_RETURN_IF_ERROR(read_activation(a.attr(), "batch_norm_train", &lo, &hi));
  const int64_t count = bn.count();
  a.pool->parallel_for(bn.C, channel_grain(bn), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      // one pass over the channel for mean and variance (shifted sums, see row_shifted_sums)
      const double k0 = count ? x[c * bn.S] : 0.0;
      double s1 = 0, s2 = 0;
      for (int64_t n = 0; n < bn.N; ++n) row_shifted_sums(x + (n * bn.C + c) * bn.S, bn.S, k0, &s1, &s2);
      const double dmean = count ? s1 / count : 0.0;
      const double mean = k0 + dmean;
      const double var = count ? std::max(0.0, s2 / count - dmean * dmean) : 0.0;
      const double invstd = 1.0 / std::sqrt(var + eps);
      mean_out[c] = static_cast<float>(mean);
      invstd_out[c] = static_cast<float>(invstd);
      rm_out[c] = static_cast<float>((1 - mom) * rm[c] + mom * mean);
      rv_out[c] = static_cast<float>((1 - mom) * rv[c] + mom * var * (static_cast<double>(count) / std::max<int64_t>(count - 1, 1)));
      // the mean as float hi + lo: x - hi is exact near the mean, so |mean| >> std costs no precision
      const float mh = static_cast<float>(mean), ml = static_cast<float>(mean - mh);
      const float scale = static_cast<float>(invstd * w[c]), shift = b[c];
      for (int64_t n = 0; n < bn.N; ++n) {
        const float* xr = x + (n * bn.C + c) * bn.S;
        float* yr = y + (n * bn.C + c) * bn.S;
        for (int64_t k = 0; k < bn.S; ++k) {
          const float v = ((xr[k] - mh) - ml) * scale + shift;
          yr[k] = math::hardtanh(v, lo, hi);
        }
      }
    }
  });
  return Status::Ok();
}

Status bn_infer_check(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, "batch_norm_infer", 5, 5, 1));
  ET_RETURN_IF_ERROR(cpu::expect_all_f32(a, "batch_norm_infer"));
  float lo, hi;
  ET_RETURN_IF_ERROR(read_activation(a.attr(), "batch_norm_infer", &lo, &hi));
  return bn_check_inputs(a, "batch_norm_infer");
}

Status bn_infer_run(const KernelArgs& a) {
  const BN bn = bn_of(a, a.in(0));
  if (bn.nhwc) return bn_infer_nhwc(a, bn);
  const float* x = a.in(0).as<float>();
  const float *w = a.in(1).as<float>(), *b = a.in(2).as<float>();
  const float *rm = a.in(3).as<float>(), *rv = a.in(4).as<float>();
  float* y = a.out(0).as<float>();
  const float eps = static_cast<float>(a.attr().get_float("eps", 1e-5));
  float lo, hi;
  ET_RETURN_IF_ERROR(read_activation(a.attr(), "batch_norm_infer", &lo, &hi));
  // one (image, channel) plane per task; scale/shift in float32 as the reference computes them
  a.pool->parallel_for(bn.N * bn.C, std::max<int64_t>(1, 16384 / std::max<int64_t>(bn.S, 1)), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t c = p % bn.C;
      const float scale = w[c] / std::sqrt(rv[c] + eps);
      const float shift = b[c] - rm[c] * scale;
      const float* xr = x + p * bn.S;
      float* yr = y + p * bn.S;
      for (int64_t k = 0; k < bn.S; ++k) {
        const float v = xr[k] * scale + shift;
        yr[k] = math::hardtanh(v, lo, hi);
      }
    }
  });
  return Status::Ok();
}

Status bn_backward_check(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, "batch_norm_backward", 5, 5, a.num_outputs));
  ET_RETURN_IF_ERROR(cpu::expect_all_f32(a, "batch_norm_backward"));
  int slot[3];
  ET_RETURN_IF_ERROR(read_mask(a, "batch_norm_backward", slot));
  const TensorView &dy = a.in(0), &x = a.in(1);
  if (x.rank < 2 || !cpu::same_shape(dy, x))
    return invalid_argument("batch_norm_backward: dy " + dy.shape_string() + " and x " + x.shape_string() +
                            " must be the same [N, C, ...] shape");
  bool is_nhwc;
  ET_RETURN_IF_ERROR(bn_layout(a, "batch_norm_backward", x, &is_nhwc));
  const int64_t C = channels_of(x, is_nhwc);
  for (int i = 2; i < 5; ++i)
    if (!is_vector(a.in(i), C))
      return invalid_argument("batch_norm_backward: per-channel input " + a.in(i).shape_string() + " does not fit " +
                              std::to_string(C) + " channels");
  if (slot[0] >= 0 && !cpu::same_shape(a.out(slot[0]), x))
    return invalid_argument("batch_norm_backward: dx " + a.out(slot[0]).shape_string() + " is not " + x.shape_string());
  for (int i = 1; i < 3; ++i)
    if (slot[i] >= 0 && !is_vector(a.out(slot[i]), C))
      return invalid_argument("batch_norm_backward: output " + a.out(slot[i]).shape_string() + " is not per-channel");
  return Status::Ok();
}

Status bn_backward_run(const KernelArgs& a) {
  int slot[3];
  (void)read_mask(a, "batch_norm_backward", slot);
  const BN bn = bn_of(a, a.in(1));
  if (bn.nhwc) return bn_backward_nhwc(a, bn, slot);
  const float *dy = a.in(0).as<float>(), *x = a.in(1).as<float>(), *w = a.in(2).as<float>();
  const float *mean = a.in(3).as<float>(), *invstd = a.in(4).as<float>();
  float* dx = slot[0] >= 0 ? a.out(slot[0]).as<float>() : nullptr;
  float* dw = slot[1] >= 0 ? a.out(slot[1]).as<float>() : nullptr;
  float* db = slot[2] >= 0 ? a.out(slot[2]).as<float>() : nullptr;
  const int64_t count = bn.count();
  a.pool->parallel_for(bn.C, channel_grain(bn), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      double s_dy = 0, s_dyx = 0;  // sum dy, sum dy * (x - mean)
      for (int64_t n = 0; n < bn.N; ++n) {
        const int64_t off = (n * bn.C + c) * bn.S;
        row_dy_sums(dy + off, x + off, bn.S, mean[c], &s_dy, &s_dyx);
      }
      const double s_dy_xhat = s_dyx * invstd[c];
      if (dw) dw[c] = static_cast<float>(s_dy_xhat);
      if (db) db[c] = static_cast<float>(s_dy);
      if (!dx) continue;
      // dx = w * invstd * (dy - mean(dy) - xhat * mean(dy * xhat))
      const float m = mean[c], is = invstd[c];
      const float k = w[c] * is;
      const float c_dy = count ? static_cast<float>(s_dy / count) : 0.0f;
      const float c_xh = count ? static_cast<float>(s_dy_xhat / count) : 0.0f;
      for (int64_t n = 0; n < bn.N; ++n) {
        const int64_t off = (n * bn.C + c) * bn.S;
        const float *dyr = dy + off, *xr = x + off;
        float* dxr = dx + off;
        for (int64_t j = 0; j < bn.S; ++j) dxr[j] = k * (dyr[j] - c_dy - (xr[j] - m) * is * c_xh);
      }
    }
  });
  return Status::Ok();
}

// ---- layer norm ------------------------------------------------------------------------------

// rows x D, D = prod(normalized_shape), checking that x ends in normalized_shape
Status ln_geometry(const KernelArgs& a, const char* op, const TensorView& x, int64_t* rows, int64_t* D) {
  const std::vector<int64_t>& ns = a.attr().get_ints("normalized_shape");
  const int k = static_cast<int>(ns.size());
  if (k == 0 || k > x.rank)
    return invalid_argument(std::string(op) + ": normalized_shape does not fit input " + x.shape_string());
  int64_t d = 1;
  for (int i = 0; i < k; ++i) {
    if (x.shape[x.rank - k + i] != ns[i])
      return invalid_argument(std::string(op) + ": input " + x.shape_string() + " does not end in normalized_shape");
    d *= ns[i];
  }
  *D = d;
  *rows = d ? x.numel() / d : 0;
  return Status::Ok();
}

Status ln_check(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, "layer_norm", 3, 3, 3));
  ET_RETURN_IF_ERROR(cpu::expect_all_f32(a, "layer_norm"));
  int64_t rows, D;
  ET_RETURN_IF_ERROR(ln_geometry(a, "layer_norm", a.in(0), &rows, &D));
  if (a.in(1).numel() != D || a.in(2).numel() != D)
    return invalid_argument("layer_norm: affine params " + a.in(1).shape_string() + ", " + a.in(2).shape_string() +
                            " do not fit normalized_shape");
  if (!cpu::same_shape(a.out(0), a.in(0)) || a.out(1).numel() != rows || a.out(2).numel() != rows)
    return invalid_argument("layer_norm: outputs do not fit input " + a.in(0).shape_string());
  return Status::Ok();
}

Status ln_run(const KernelArgs& a) {
  int64_t rows, D;
  (void)ln_geometry(a, "layer_norm", a.in(0), &rows, &D);
  const float *x = a.in(0).as<float>(), *w = a.in(1).as<float>(), *b = a.in(2).as<float>();
  float *y = a.out(0).as<float>(), *mean_out = a.out(1).as<float>(), *rstd_out = a.out(2).as<float>();
  const double eps = a.attr().get_float("eps", 1e-5);
  a.pool->parallel_for(rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(D, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * D;
      // the mean as k0 + mean(x - k0), k0 a value of the row (row_shifted_sums' shift): when
      // |mean| >> std the float terms x - k0 are of the size of std, not of |mean|, so the float
      // lanes' error stays a few ulp of std (summing x itself, 3u of |mean| is 2e-5 std at
      // |mean| = 100 std, beyond the tests' 1e-6)
      const float k0 = D ? xr[0] : 0.0f;
      const double mean = k0 + block_sum(D, [xr, k0](int64_t k, auto& t) {
                             t = lanes<std::remove_reference_t<decltype(t)>>(xr + k) - k0;
                           }) / D;
      // the mean as float hi + lo, as in batch_norm_train: x - hi is exact near the mean, so the
      // deviations (the variance's terms, all >= 0: no cancellation in their float sums) and the
      // output keep full precision when |mean| >> std
      const float mh = static_cast<float>(mean), ml = static_cast<float>(mean - mh);
      const double var = block_sum(D, [xr, mh, ml](int64_t k, auto& t) {
                           using V = std::remove_reference_t<decltype(t)>;
                           const V d = (lanes<V>(xr + k) - mh) - ml;
                           t = d * d;
                         }) / D;
      const double rstd = 1.0 / std::sqrt(var + eps);
      mean_out[r] = mh;
      rstd_out[r] = static_cast<float>(rstd);
      const float rf = static_cast<float>(rstd);
      float* yr = y + r * D;
      for (int64_t k = 0; k < D; ++k) yr[k] = ((xr[k] - mh) - ml) * rf * w[k] + b[k];
    }
  });
  return Status::Ok();
}

Status ln_backward_check(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, "layer_norm_backward", 5, 5, a.num_outputs));
  ET_RETURN_IF_ERROR(cpu::expect_all_f32(a, "layer_norm_backward"));
  int slot[3];
  ET_RETURN_IF_ERROR(read_mask(a, "layer_norm_backward", slot));
  const TensorView &dy = a.in(0), &x = a.in(1);
  if (!cpu::same_shape(dy, x))
    return invalid_argument("layer_norm_backward: dy " + dy.shape_string() + " is not x " + x.shape_string());
  int64_t rows, D;
  ET_RETURN_IF_ERROR(ln_geometry(a, "layer_norm_backward", x, &rows, &D));
  if (a.in(2).numel() != D || a.in(3).numel() != rows || a.in(4).numel() != rows)
    return invalid_argument("layer_norm_backward: weight/mean/rstd do not fit x " + x.shape_string());
  if (slot[0] >= 0 && !cpu::same_shape(a.out(slot[0]), x))
    return invalid_argument("layer_norm_backward: dx " + a.out(slot[0]).shape_string() + " is not " + x.shape_string());
  for (int i = 1; i < 3; ++i)
    if (slot[i] >= 0 && a.out(slot[i]).numel() != D)
      return invalid_argument("layer_norm_backward: output " + a.out(slot[i]).shape_string() +
                              " does not fit normalized_shape");
  return Status::Ok();
}

Status ln_backward_run(const KernelArgs& a) {
  int slot[3];
  (void)read_mask(a, "layer_norm_backward", slot);
  int64_t rows, D;
  (void)ln_geometry(a, "layer_norm_backward", a.in(1), &rows, &D);
  const float *dy = a.in(0).as<float>(), *x = a.in(1).as<float>(), *w = a.in(2).as<float>();
  const float *mean = a.in(3).as<float>(), *rstd = a.in(4).as<float>();
  float* dx = slot[0] >= 0 ? a.out(slot[0]).as<float>() : nullptr;
  float* dw = slot[1] >= 0 ? a.out(slot[1]).as<float>() : nullptr;
  float* db = slot[2] >= 0 ? a.out(slot[2]).as<float>() : nullptr;
  if (dx) {  // per row: dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * w
    a.pool->parallel_for(rows, std::max<int64_t>(1, 8192 / std::max<int64_t>(D, 1)), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const float *dyr = dy + r * D, *xr = x + r * D;
        const float m = mean[r], rs = rstd[r];
        double sg, sgx;  // sum g, sum g * xhat
        block_sum2(
            D,
            [&](int64_t k, auto& ga, auto& gb) {
              using V = std::remove_reference_t<decltype(ga)>;
              const V g = lanes<V>(dyr + k) * lanes<V>(w + k);
              ga = g;
              gb = g * ((lanes<V>(xr + k) - m) * rs);
            },
            &sg, &sgx);
        const float cg = static_cast<float>(sg / D), cx = static_cast<float>(sgx / D);
        float* dxr = dx + r * D;
        for (int64_t j = 0; j < D; ++j) dxr[j] = rs * (dyr[j] * w[j] - cg - (xr[j] - m) * rs * cx);
      }
    });
  }
  if (dw || db) {  // column sums over rows: each thread owns a band of columns, rows in order
    constexpr int64_t kBand = 256;
    const int64_t threads = a.pool->num_threads();
    const int64_t band = std::min<int64_t>(kBand, std::max<int64_t>(16, (D + 2 * threads - 1) / (2 * threads)));
    const int64_t nbands = (D + band - 1) / band;
    a.pool->parallel_for(nbands, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t bi = b0; bi < b1; ++bi) {
        const int64_t d0 = bi * band, nd = std::min(band, D - d0);
        double sw[kBand] = {}, sb[kBand] = {};
        // rows in groups of kRowGroup: the group's terms are added in float, then into double
        // (a conversion per group instead of per term; error as in block_sum: 3u of the group's
        // absolute sum)
        constexpr int64_t kRowGroup = 4;
        int64_t r = 0;
        for (; r + kRowGroup <= rows; r += kRowGroup) {
          const float* dyr[kRowGroup];
          const float* xr[kRowGroup];
          float m[kRowGroup], rs[kRowGroup];
          for (int64_t i = 0; i < kRowGroup; ++i) {
            dyr[i] = dy + (r + i) * D + d0;
            xr[i] = x + (r + i) * D + d0;
            m[i] = mean[r + i];
            rs[i] = rstd[r + i];
          }
          for (int64_t j = 0; j < nd; ++j) {
            float tw = dyr[0][j] * ((xr[0][j] - m[0]) * rs[0]), tb = dyr[0][j];
            for (int64_t i = 1; i < kRowGroup; ++i) {
              tw += dyr[i][j] * ((xr[i][j] - m[i]) * rs[i]);
              tb += dyr[i][j];
            }
            sw[j] += tw;
            sb[j] += tb;
          }
        }
        for (; r < rows; ++r) {
          const float *dyr = dy + r * D + d0, *xr = x + r * D + d0;
          const float m = mean[r], rs = rstd[r];
          for (int64_t j = 0; j < nd; ++j) {
            sw[j] += dyr[j] * ((xr[j] - m) * rs);
            sb[j] += dyr[j];
          }
        }
        for (int64_t j = 0; j < nd; ++j) {
          if (dw) dw[d0 + j] = static_cast<float>(sw[j]);
          if (db) db[d0 + j] = static_cast<float>(sb[j]);
        }
      }
    });
  }
  return Status::Ok();
}

}  // namespace

void register_norm_kernels(KernelRegistry& r) {
  r.add({"batch_norm_train", "batch_norm_train", bn_train_check, nullptr, bn_train_run});
  r.add({"batch_norm_infer", "batch_norm_infer", bn_infer_check, nullptr, bn_infer_run});
  r.add({"batch_norm_backward", "batch_norm_backward", bn_backward_check, nullptr, bn_backward_run});
  r.add({"layer_norm", "layer_norm", ln_check, nullptr, ln_run});
  r.add({"layer_norm_backward", "layer_norm_backward", ln_backward_check, nullptr, ln_backward_run});
}

}  // namespace edgetune
