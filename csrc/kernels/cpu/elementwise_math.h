// The per-element formulas of the float elementwise ops: activations, their backward ops (dy,
// saved) -> dx, and the math functions. elementwise.cc (one op per kernel) and fused.cc (a chain
// of ops per kernel, see fused_elementwise) both call these, so each formula exists once in C++
// and a fused chain computes bit for bit what the separate kernels compute.
//
// Formulas follow the numpy reference (compiler/ops/elementwise.py) term by term in the input
// dtype; where the reference's own formula would cancel (gelu via 1 + erf / 1 + tanh, its
// backward via 1 - tanh^2) an algebraically equal form without cancellation is used instead.
// exp / tanh / erfc are cpu_util.h's vectorizable versions for f32; sqrt, log and pow stay libm.
// gelu (erf) calls exp_f32<false> for its Gaussian (argument <= 0), as erfc_f32 does for its
// exponent (<= 3e-8): exp without the overflow guard no such argument needs, the same bits; gelu
// was the slowest activation of the text model, and those guards were a third of exp's
// instructions.
// Everything is ET_VECTOR_INLINE: the loops that call these only vectorize when it is inlined.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/cpu_util.h"

namespace edgetune {
namespace math {

constexpr double kSqrt2OverPi = 0.79788456080286535588;
constexpr double kSqrtHalf = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;

template <typename T>
ET_VECTOR_INLINE T sigmoid(T x) { return T(1) / (T(1) + cpu::exp_any(-x)); }
// backward ops read the forward output where it suffices (sigmoid, tanh, relu, hardtanh)
template <typename T>
ET_VECTOR_INLINE T sigmoid_backward(T dy, T y) { return dy * y * (T(1) - y); }

// x < 0 ? 0 : x rather than max(): NaN passes through as np.maximum does
template <typename T>
ET_VECTOR_INLINE T relu(T x) { return x < T(0) ? T(0) : x; }
template <typename T>
ET_VECTOR_INLINE T relu_backward(T dy, T y) { return y > T(0) ? dy : T(0); }

template <typename T>
ET_VECTOR_INLINE T hardtanh(T x, T lo, T hi) { return x < lo ? lo : (x > hi ? hi : x); }
// y is strictly inside (lo, hi) exactly when the forward input was
template <typename T>
ET_VECTOR_INLINE T hardtanh_backward(T dy, T y, T lo, T hi) { return (y > lo && y < hi) ? dy : T(0); }

template <typename T>
ET_VECTOR_INLINE T hardsigmoid(T x) {
  T v = x / T(6) + T(0.5);
  return v < T(0) ? T(0) : (v > T(1) ? T(1) : v);
}
template <typename T>
ET_VECTOR_INLINE T hardsigmoid_backward(T dy, T x) { return (x > T(-3) && x < T(3)) ? dy / T(6) : T(0); }

template <typename T>
ET_VECTOR_INLINE T hardswish(T x) { return x * hardsigmoid(x); }
template <typename T>
ET_VECTOR_INLINE T hardswish_backward(T dy, T x) {
  return x < T(-3) ? T(0) : (x <= T(3) ? dy * (x / T(3) + T(0.5)) : dy);
}

template <typename T>
ET_VECTOR_INLINE T tanh(T x) { return cpu::tanh_any(x); }
template <typename T>
ET_VECTOR_INLINE T tanh_backward(T dy, T y) { return dy * (T(1) - y * y); }

template <typename T>
ET_VECTOR_INLINE T silu(T x) { return x * sigmoid(x); }
template <typename T>
ET_VECTOR_INLINE T silu_backward(T dy, T x) {
  T s = sigmoid(x);
  return dy * s * (T(1) + x * (T(1) - s));
}

// e^x for x <= 0 (NaN included): exp_f32 without its overflow guard for f32
ET_VECTOR_INLINE float exp_nonpositive(float x) { return cpu::exp_f32<false>(x); }
ET_VECTOR_INLINE double exp_nonpositive(double x) { return cpu::exp_any(x); }

// gelu, approximate="none": 0.5 x (1 + erf(x/sqrt2)) = 0.5 x erfc(-x/sqrt2), no cancellation for x < 0
template <typename T>
ET_VECTOR_INLINE T gelu_erf(T x) { return T(0.5) * x * cpu::erfc_any(-x * T(kSqrtHalf)); }
template <typename T>
ET_VECTOR_INLINE T gelu_erf_backward(T dy, T x) {
  T cdf = T(0.5) * cpu::erfc_any(-x * T(kSqrtHalf));
  T pdf = exp_nonpositive(T(-0.5) * x * x) * T(kInvSqrt2Pi);
  return dy * (cdf + x * pdf);
}
// gelu, approximate="tanh": 0.5 x (1 + tanh u) = x sigmoid(2u)
template <typename T>
ET_VECTOR_INLINE T gelu_tanh(T x) {
  T u = T(kSqrt2OverPi) * (x + T(0.044715) * x * x * x);
  return x * sigmoid(T(2) * u);
}
// with s = sigmoid(2u): 0.5 (1 + tanh u) = s and 1 - tanh^2 u = 4 s (1 - s)
template <typename T>
ET_VECTOR_INLINE T gelu_tanh_backward(T dy, T x) {
  T u = T(kSqrt2OverPi) * (x + T(0.044715) * x * x * x);
  T d_inner = T(kSqrt2OverPi) * (T(1) + T(3 * 0.044715) * x * x);
  T s = sigmoid(T(2) * u);
  return dy * (s + T(2) * x * s * (T(1) - s) * d_inner);
}

template <typename T>
ET_VECTOR_INLINE T exp(T x) { return cpu::exp_any(x); }
template <typename T>
ET_VECTOR_INLINE T log(T x) { return std::log(x); }
template <typename T>
ET_VECTOR_INLINE T sqrt(T x) { return std::sqrt(x); }
template <typename T>
ET_VECTOR_INLINE T rsqrt(T x) { return T(1) / std::sqrt(x); }

// pow_scalar: the exponent is rounded to the dtype first, as the reference does; the common
// exponents get closed forms (exact as possible, and vectorizable) instead of the general pow.
// pow_mode picks the form once per kernel call, pow_by_mode<mode> is the per-element formula.
enum PowMode : int { kPowSquare, kPowCube, kPowSqrt, kPowReciprocal, kPowRsqrt, kPowIdentity, kPowGeneral };

template <typename T>
inline PowMode pow_mode(T e) {
  if (e == T(2)) return kPowSquare;
  if (e == T(3)) return kPowCube;
  if (e == T(0.5)) return kPowSqrt;
  if (e == T(-1)) return kPowReciprocal;
  if (e == T(-0.5)) return kPowRsqrt;
  if (e == T(1)) return kPowIdentity;
  return kPowGeneral;
}

template <int kMode, typename T>
ET_VECTOR_INLINE T pow_by_mode(T v, T e) {
  if constexpr (kMode == kPowSquare) return v * v;
  if constexpr (kMode == kPowCube) return v * v * v;
  if constexpr (kMode == kPowSqrt) return std::sqrt(v);
  if constexpr (kMode == kPowReciprocal) return T(1) / v;
  if constexpr (kMode == kPowRsqrt) return T(1) / std::sqrt(v);
  if constexpr (kMode == kPowIdentity) return v;
  if constexpr (kMode == kPowGeneral) return std::pow(v, e);
}

}  // namespace math
}  // namespace edgetune
