// Helpers shared by the CPU kernels: dtype dispatch, check() building blocks (dtypes, shapes, the
// convolution attributes conv2d and its Winograd variant both read), parallel loops, a parallel
// byte copy, and float exp / tanh / erfc that vectorize (libm's do not).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/kernel.h"

// The vector math below only vectorizes when inlined into the calling loop; GCC's heuristics
// give up on it after a few dozen call sites, so insist.
// Under nvcc (the CUDA backend includes this header and elementwise_math.h) the same functions are
// also __device__, so both backends evaluate one formula; host code is compiled as before.
#if defined(__CUDACC__)
#define ET_VECTOR_INLINE __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define ET_VECTOR_INLINE inline __attribute__((always_inline))
#else
#define ET_VECTOR_INLINE inline
#endif

namespace edgetune {
namespace cpu {

// Smallest chunk worth handing to another thread: below this, waking a worker costs more
// than the work (elementwise ops, in elements; byte copies, in bytes).
constexpr int64_t kGrain = 16384;
constexpr int64_t kCopyGrain = 1 << 18;

template <typename T>
struct Tag {
  using type = T;
};

// ---- dtype dispatch: fn(Tag<T>{}) for the C++ type of `t`; false when `t` is not in the set --
template <typename Fn>
bool visit_float(DType t, Fn&& fn) {
  switch (t) {
    case DType::f32: fn(Tag<float>{}); return true;
    case DType::f64: fn(Tag<double>{}); return true;
    default: return false;
  }
}

// Numeric types that arithmetic is defined on (no f16/bf16: they have no C++ arithmetic type).
template <typename Fn>
bool visit_arith(DType t, Fn&& fn) {
  switch (t) {
    case DType::f32: fn(Tag<float>{}); return true;
    case DType::f64: fn(Tag<double>{}); return true;
    case DType::i64: fn(Tag<int64_t>{}); return true;
    case DType::i32: fn(Tag<int32_t>{}); return true;
    default: return false;
  }
}

// Every dtype with a C++ value type (bool as bool, so conversions give 0/1).
template <typename Fn>
bool visit_value(DType t, Fn&& fn) {
  switch (t) {
    case DType::f32: fn(Tag<float>{}); return true;
    case DType::f64: fn(Tag<double>{}); return true;
    case DType::i64: fn(Tag<int64_t>{}); return true;
    case DType::i32: fn(Tag<int32_t>{}); return true;
    case DType::i8: fn(Tag<int8_t>{}); return true;
    case DType::u8: fn(Tag<uint8_t>{}); return true;
    case DType::boolean: fn(Tag<bool>{}); return true;
    default: return false;
  }
}

// What the comparisons (eq ne lt le gt ge) take: the arithmetic types and bool, read as its
// bytes (0/1: ordered False < True; never a C++ bool load of a byte that might not be 0/1).
template <typename Fn>
bool visit_compare(DType t, Fn&& fn) {
  if (t == DType::boolean) {
    fn(Tag<uint8_t>{});
    return true;
  }
  return visit_arith(t, fn);
}

// Dtype-generic data movement: an unsigned integer of the element's size moves the bits.
template <typename Fn>
bool visit_bits(DType t, Fn&& fn) {
  switch (dtype_size(t)) {
    case 1: fn(Tag<uint8_t>{}); return true;
    case 2: fn(Tag<uint16_t>{}); return true;
    case 4: fn(Tag<uint32_t>{}); return true;
    case 8: fn(Tag<uint64_t>{}); return true;
    default: return false;
  }
}

inline bool is_float(DType t) { return t == DType::f32 || t == DType::f64; }
inline bool is_arith(DType t) { return is_float(t) || t == DType::i64 || t == DType::i32; }
inline bool is_index(DType t) { return t == DType::i64 || t == DType::i32; }
inline bool is_compare(DType t) { return is_arith(t) || t == DType::boolean; }

// ---- check() building blocks -------------------------------------------------------------------
inline Status want_float(const char* what, const TensorView& t) {
  if (is_float(t.dtype)) return Status::Ok();
  return unimplemented(std::string(what) + " is " + t.shape_string() + "; this kernel takes f32 or f64");
}

inline Status want_arith(const char* what, const TensorView& t) {
  if (is_arith(t.dtype)) return Status::Ok();
  return unimplemented(std::string(what) + " is " + t.shape_string() + "; this kernel takes f32, f64, i64 or i32");
}

inline Status want_index(const char* what, const TensorView& t) {
  if (is_index(t.dtype)) return Status::Ok();
  return unimplemented(std::string(what) + " is " + t.shape_string() + "; indices must be i64 or i32");
}

inline Status want_same_dtype(const char* what, const TensorView& t, const TensorView& like) {
  if (t.dtype == like.dtype) return Status::Ok();
  return invalid_argument(std::string(what) + " is " + t.shape_string() + ", expected dtype " +
                          dtype_name(like.dtype));
}

inline bool same_shape(const TensorView& a, const TensorView& b) {
  if (a.rank != b.rank) return false;
  for (int i = 0; i < a.rank; ++i)
    if (a.shape[i] != b.shape[i]) return false;
  return true;
}

inline Status want_same_shape(const char* what, const TensorView& t, const TensorView& like) {
  if (same_shape(t, like)) return Status::Ok();
  return invalid_argument(std::string(what) + " is " + t.shape_string() + ", expected shape " + like.shape_string());
}

inline Status want_scalar(const char* what, const TensorView& t) {
  if (t.numel() == 1) return Status::Ok();
  return invalid_argument(std::string(what) + " must be a scalar, got " + t.shape_string());
}

// f32 for the first `num_inputs` inputs and every output; `op` starts each message
// ("conv2d input 1 is f64[...]"). Kernels whose trailing inputs are not f32 (an activation
// mask, say) pass how many are, and check the rest themselves.
inline Status expect_all_f32(const KernelArgs& a, const char* op, int num_inputs) {
  for (int i = 0; i < num_inputs; ++i)
    ET_RETURN_IF_ERROR(expect_dtype(a, (std::string(op) + " input " + std::to_string(i)).c_str(), a.in(i), DType::f32));
  for (int i = 0; i < a.num_outputs; ++i)
    ET_RETURN_IF_ERROR(
        expect_dtype(a, (std::string(op) + " output " + std::to_string(i)).c_str(), a.out(i), DType::f32));
  return Status::Ok();
}
inline Status expect_all_f32(const KernelArgs& a, const char* op) { return expect_all_f32(a, op, a.num_inputs); }

// Rank 4 with exactly these sizes ([N, C, H, W] images, [O, C, KH, KW] weights).
inline bool is_shape(const TensorView& t, int64_t a, int64_t b, int64_t c, int64_t d) {
  return t.rank == 4 && t.shape[0] == a && t.shape[1] == b && t.shape[2] == c && t.shape[3] == d;
}

// "[2,3,8,8]": four sizes the way messages write shapes.
inline std::string dims_string(int64_t a, int64_t b, int64_t c, int64_t d) {
  return "[" + std::to_string(a) + "," + std::to_string(b) + "," + std::to_string(c) + "," + std::to_string(d) + "]";
}

// Four sizes from an ints attr ("input_shape", "weight_shape"); false unless it has exactly four.
inline bool read_shape4(const Attrs& attrs, const char* name, int64_t* out) {
  const std::vector<int64_t>& v = attrs.get_ints(name);
  if (v.size() != 4) return false;
  for (int i = 0; i < 4; ++i) out[i] = v[i];
  return true;
}

// ---- convolution attributes --------------------------------------------------------------------
// What compiler/ops/conv.py puts on conv2d and its gradients: stride, padding and dilation as
// (h, w) pairs (defaults 1, 0, 1) and groups (default 1). Read here, once, for conv2d.* and
// conv2d*.winograd; each kernel then checks the values it can run.
struct ConvParams {
  int64_t SH = 1, SW = 1, PH = 0, PW = 0, DH = 1, DW = 1, G = 1;
};

inline Status read_conv_params(const char* op, const Attrs& attrs, ConvParams* p) {
  if (!attrs.get_pair("stride", 1, &p->SH, &p->SW) || !attrs.get_pair("padding", 0, &p->PH, &p->PW) ||
      !attrs.get_pair("dilation", 1, &p->DH, &p->DW))
    return invalid_argument(std::string(op) + ": stride/padding/dilation must be int pairs");
  p->G = attrs.get_int("groups", 1);
  return Status::Ok();
}

// Output size of a convolution along one axis (PyTorch's formula; <= 0 when the output is empty).
inline int64_t conv_out_size(int64_t size, int64_t k, int64_t s, int64_t p, int64_t d) {
  return (size + 2 * p - d * (k - 1) - 1) / s + 1;
}

// One input row staged for a window loop (the depthwise conv in conv.cc, max pooling in pool.cc):
// split into S stride phases, ph[r * np + q] = row[q * S + r - P] where that lies in [0, W), else
// `pad` (0 for a convolution, -inf for max pooling). Tap j of output column o then reads phase
// (j * D) % S at position o + (j * D) / S: a contiguous, bounds-free loop whatever the stride.
inline void stage_row(const float* row, int64_t W, int64_t P, int64_t S, int64_t np, float pad, float* ph) {
  for (int64_t r = 0; r < S; ++r) {
    float* d = ph + r * np;
    // q with 0 <= q*S + r - P < W
    const int64_t q0 = std::min(np, P - r > 0 ? (P - r + S - 1) / S : 0);
    const int64_t q1 = std::max(q0, std::min(np, W + P - r > 0 ? (W + P - r + S - 1) / S : 0));
    std::fill(d, d + q0, pad);
    const float* src = row + q0 * S + r - P;
    const int64_t n = q1 - q0;
    if (S == 1) {
      std::memcpy(d + q0, src, sizeof(float) * static_cast<size_t>(n));
    } else if (S == 2) {  // constant stride: vectorizes as a deinterleave
      for (int64_t k = 0; k < n; ++k) d[q0 + k] = src[2 * k];
    } else {
      for (int64_t k = 0; k < n; ++k) d[q0 + k] = src[k * S];
    }
    std::fill(d + q1, d + np, pad);
  }
}

// ---- threads -----------------------------------------------------------------------------------
// The pool is null only in check()/workspace() calls; run() always has one, but kernels that
// are also called from tests without a pool stay correct.
template <typename Fn>
inline void parallel_for(const KernelArgs& a, int64_t n, int64_t grain, const Fn& fn) {
  if (n <= 0) return;
  if (a.pool) {
    a.pool->parallel_for(n, grain, fn);
  } else {
    fn(int64_t{0}, n);
  }
}

// Parallel memcpy (no-op when source and destination are the same buffer).
inline void copy_bytes(const KernelArgs& a, void* dst, const void* src, int64_t nbytes) {
  if (dst == src || nbytes <= 0) return;
  auto* d = static_cast<unsigned char*>(dst);
  const auto* s = static_cast<const unsigned char*>(src);
  parallel_for(a, nbytes, kCopyGrain, [&](int64_t b, int64_t e) { std::memcpy(d + b, s + b, static_cast<size_t>(e - b)); });
}

// Splits `shape` around `dim`: [outer, shape[dim], inner].
inline void split_at(const TensorView& t, int dim, int64_t* outer, int64_t* mid, int64_t* inner) {
  *outer = 1;
  *inner = 1;
  for (int i = 0; i < dim; ++i) *outer *= t.shape[i];
  for (int i = dim + 1; i < t.rank; ++i) *inner *= t.shape[i];
  *mid = t.shape[dim];
}

// ---- float exp ---------------------------------------------------------------------------------
// std::exp does not vectorize without -ffast-math; this one does (plain arithmetic, bit
// moves through memcpy) and stays within 2 ulp of the correctly rounded result on the normal
// range. Results that would be subnormal flush to 0 (an error below 1.2e-38), overflow gives
// +inf, NaN stays NaN — what softmax, sigmoid and friends need. kGuardHigh = false drops the
// clamp and the +inf select above ln(FLT_MAX) for callers whose argument never gets there (GELU's
// erfc exponent, <= 3e-8): two fewer vector ops in its hot loop, the same bits everywhere else.
template <bool kGuardHigh = true>
ET_VECTOR_INLINE float exp_f32(float x) {
  const float kHi = 88.72283935546875f;  // ln(FLT_MAX)
  const float kLo = -87.33654022216797f;  // ln(FLT_MIN)
  float xc = kGuardHigh && x > kHi ? kHi : x;
  xc = xc < kLo ? kLo : xc;
  xc = xc == xc ? xc : 0.0f;  // NaN: compute on 0 (no undefined float->int cast), fixed below
  // n = round(x / ln2) by the 1.5*2^23 trick (round-to-nearest without a library call)
  const float kShift = 12582912.0f;
  float t = xc * 1.44269504088896341f + kShift;
  float n = t - kShift;
  // r = x - n*ln2 in two steps (Cody-Waite) so r keeps full precision
  float r = xc - n * 0.693145751953125f;
  r = r - n * 1.42860682030941723212e-6f;
  // e^r on |r| <= ln2/2 = 1 + r + r^2 P(r), P from Cephes expf
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // 2^n: n is in [-126, 128]; 2^128 is split as 2 * 2^127 so the exponent field never overflows
  int32_t ni = static_cast<int32_t>(n);
  int32_t half = ni >> 1;
  int32_t b1 = (half + 127) << 23, b2 = (ni - half + 127) << 23;
  float s1, s2;
  std::memcpy(&s1, &b1, sizeof s1);
  std::memcpy(&s2, &b2, sizeof s2);
  float y = p * s1 * s2;
  if (kGuardHigh) y = x > kHi ? std::numeric_limits<float>::infinity() : y;
  y = x < kLo ? 0.0f : y;
  return x != x ? x : y;
}

// tanh, vectorizable: an odd polynomial near 0 (Cephes tanhf, where 1 - 2/(e^2x + 1) would
// cancel), 1 - 2/(e^2|x| + 1) elsewhere. Within 3 ulp; NaN stays NaN.
ET_VECTOR_INLINE float tanh_f32(float x) {
  const float a = x < 0.0f ? -x : x;
  const float z = a * a;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  const float small = a + a * z * p;
  const float large = 1.0f - 2.0f / (exp_f32(2.0f * a) + 1.0f);
  const float r = a < 0.625f ? small : large;
  return x < 0.0f ? -r : r;
}

// erfc, vectorizable: the Chebyshev fit of Numerical Recipes (erfcc; relative error < 1.2e-7
// for x >= 0 in exact arithmetic) and erfc(-x) = 2 - erfc(x). In float the exponent -x^2 loses
// about 6e-8 x^2 relative, which matters only where erfc is below ~1e-8. Its exponent
// p(t) - z^2 is <= 3e-8 (the fit's polynomial p lies in [-1.2656, 3e-8] for t in (0, 1]), so
// exp needs no overflow guard here.
ET_VECTOR_INLINE float erfc_f32(float x) {
  const float z = x < 0.0f ? -x : x;
  const float t = 1.0f / (1.0f + 0.5f * z);
  float p = 0.17087277f;
  p = p * t - 0.82215223f;
  p = p * t + 1.48851587f;
  p = p * t - 1.13520398f;
  p = p * t + 0.27886807f;
  p = p * t - 0.18628806f;
  p = p * t + 0.09678418f;
  p = p * t + 0.37409196f;
  p = p * t + 1.00002368f;
  p = p * t - 1.26551223f;
  const float r = t * exp_f32<false>(p - z * z);
  return x < 0.0f ? 2.0f - r : r;
}

ET_VECTOR_INLINE double exp_any(double x) { return std::exp(x); }
ET_VECTOR_INLINE float exp_any(float x) { return exp_f32(x); }
ET_VECTOR_INLINE double tanh_any(double x) { return std::tanh(x); }
ET_VECTOR_INLINE float tanh_any(float x) { return tanh_f32(x); }
ET_VECTOR_INLINE double erfc_any(double x) { return std::erfc(x); }
ET_VECTOR_INLINE float erfc_any(float x) { return erfc_f32(x); }

// sum / mean: marks the reduced dims; false when attribute `dims` is not a sorted list of
// distinct dims of in(0) or out(0) is not its shape without them (or with them as 1s, keepdim).
// Shared by the cpu and cuda reduce kernels, so both accept exactly the same nodes.
inline bool reduced_dims(const KernelArgs& a, bool* reduced) {
  const TensorView &x = a.in(0), &out = a.out(0);
  const auto& dims = a.attr().get_ints("dims");
  for (int d = 0; d < x.rank; ++d) reduced[d] = false;
  int64_t prev = -1;
  for (int64_t d : dims) {
    if (d <= prev || d >= x.rank) return false;
    reduced[d] = true;
    prev = d;
  }
  const bool keepdim = a.attr().get_int("keepdim", 0) != 0;
  int o = 0;
  for (int d = 0; d < x.rank; ++d) {
    if (reduced[d] && !keepdim) continue;
    if (o >= out.rank || out.shape[o] != (reduced[d] ? 1 : x.shape[d])) return false;
    ++o;
  }
  return o == out.rank;
}

// sum_to: false when `out` is not a shape `in` broadcasts from; fills `reduced` otherwise.
inline bool sum_to_dims(const TensorView& in, const TensorView& out, bool* reduced) {
  if (out.rank > in.rank) return false;
  const int lead = in.rank - out.rank;
  for (int d = 0; d < in.rank; ++d) {
    if (d < lead) {
      reduced[d] = true;
      continue;
    }
    int64_t s = in.shape[d], t = out.shape[d - lead];
    if (s != t && t != 1) return false;
    reduced[d] = s != t;
  }
  return true;
}

// matmul of x [..., M, K] and y [..., K, N] broadcast to an output of rank r: the element stride
// of x and of y per output batch dim (0 where that operand is broadcast along it).
inline void matmul_batch_strides(const TensorView& x, const TensorView& y, int r, int64_t M, int64_t K, int64_t N,
                                 int64_t* xstride, int64_t* ystride) {
  int64_t xs = M * K, ys = K * N;
  for (int d = r - 3; d >= 0; --d) {
    const int xd = d - (r - x.rank), yd = d - (r - y.rank);
    const int64_t xdim = xd >= 0 ? x.shape[xd] : 1, ydim = yd >= 0 ? y.shape[yd] : 1;
    xstride[d] = xdim == 1 ? 0 : xs;
    ystride[d] = ydim == 1 ? 0 : ys;
    xs *= xdim;
    ys *= ydim;
  }
}

}  // namespace cpu
}  // namespace edgetune
