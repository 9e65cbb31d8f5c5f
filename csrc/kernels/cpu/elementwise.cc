// CPU kernels for compiler/ops/elementwise.py: broadcasting arithmetic (add sub mul div), where,
// unary activations and math functions, and the activation backward ops (dy, saved) -> dx.
//
// Every loop is a flat pass the compiler can vectorize: binary ops and where go through
// Broadcast<N> (same shapes collapse to one run; a broadcast operand becomes a scalar or a
// repeated row), unary and backward ops are contiguous. For f32, exp/tanh/erfc are the
// vectorizable versions of cpu_util.h (within 3 ulp; erfc within ~1e-7 relative where it
// matters); sqrt, log and pow stay libm calls, which only vectorize with -fno-math-errno.
// Formulas follow the numpy reference term by term in the input dtype; where the reference's
// own formula would cancel (gelu via 1 + erf / 1 + tanh, its backward via 1 - tanh^2) an
// algebraically equal form without cancellation is used instead.
#include <cmath>
#include <string>
#include <type_traits>

#include "core/kernel.h"
#include "kernels/cpu/broadcast.h"
#include "kernels/cpu/cpu_util.h"

namespace edgetune {
namespace {

using cpu::Tag;

// Integer arithmetic wraps like numpy (unsigned arithmetic: no signed-overflow UB).
template <typename T, bool = std::is_integral_v<T>>
struct WideOf {
  using type = T;
};
template <typename T>
struct WideOf<T, true> {
  using type = std::make_unsigned_t<T>;
};
template <typename T>
using Wide = typename WideOf<T>::type;

struct AddOp {
  static constexpr const char* kName = "add";
  static constexpr bool kFloatOnly = false;
  template <typename T>
  static T f(T a, T b) { return static_cast<T>(static_cast<Wide<T>>(a) + static_cast<Wide<T>>(b)); }
};
struct SubOp {
  static constexpr const char* kName = "sub";
  static constexpr bool kFloatOnly = false;
  template <typename T>
  static T f(T a, T b) { return static_cast<T>(static_cast<Wide<T>>(a) - static_cast<Wide<T>>(b)); }
};
struct MulOp {
  static constexpr const char* kName = "mul";
  static constexpr bool kFloatOnly = false;
  template <typename T>
  static T f(T a, T b) { return static_cast<T>(static_cast<Wide<T>>(a) * static_cast<Wide<T>>(b)); }
};
struct DivOp {  // integer division would need numpy's float result: floats only
  static constexpr const char* kName = "div";
  static constexpr bool kFloatOnly = true;
  template <typename T>
  static T f(T a, T b) { return a / b; }
};

template <typename Op>
Status check_binary(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, Op::kName, 2, 2, 1));
  const TensorView &x = a.in(0), &y = a.in(1), &out = a.out(0);
  ET_RETURN_IF_ERROR(Op::kFloatOnly ? cpu::want_float("input 0", x) : cpu::want_arith("input 0", x));
  ET_RETURN_IF_ERROR(cpu::want_same_dtype("input 1", y, x));
  ET_RETURN_IF_ERROR(cpu::want_same_dtype("output", out, x));
  cpu::Broadcast<2> bc;
  const TensorView* ins[2] = {&x, &y};
  if (!bc.init(out, ins))
    return invalid_argument("inputs " + x.shape_string() + " and " + y.shape_string() + " do not broadcast to " +
                            out.shape_string());
  return Status::Ok();
}

// One run: each operand's inner stride is 1 (walks with the output) or 0 (held fixed).
template <typename Op, typename T>
void binary_run(T* o, const T* x, int64_t sx, const T* y, int64_t sy, int64_t n) {
  if (sx == 1 && sy == 1) {
    for (int64_t i = 0; i < n; ++i) o[i] = Op::f(x[i], y[i]);
  } else if (sx == 1 && sy == 0) {
    const T yv = y[0];
    for (int64_t i = 0; i < n; ++i) o[i] = Op::f(x[i], yv);
  } else if (sx == 0 && sy == 1) {
    const T xv = x[0];
    for (int64_t i = 0; i < n; ++i) o[i] = Op::f(xv, y[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) o[i] = Op::f(x[i * sx], y[i * sy]);
  }
}

template <typename Op>
Status run_binary(const KernelArgs& a) {
  const TensorView &x = a.in(0), &y = a.in(1), &out = a.out(0);
  cpu::Broadcast<2> bc;
  const TensorView* ins[2] = {&x, &y};
  if (!bc.init(out, ins)) return internal_error("binary op: shapes changed after check");
  const int64_t sx = bc.inner_stride(0), sy = bc.inner_stride(1);
  bool ok = cpu::visit_arith(x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xp = x.as<T>();
    const T* yp = y.as<T>();
    T* op = out.as<T>();
    cpu::parallel_for(a, bc.numel, cpu::kGrain, [&](int64_t b, int64_t e) {
      bc.for_runs(b, e, [&](int64_t o, const int64_t* off, int64_t n) {
        binary_run<Op>(op + o, xp + off[0], sx, yp + off[1], sy, n);
      });
    });
  });
  return ok ? Status::Ok() : internal_error("binary op: dtype not dispatched");
}

// ---- unary ops and backward ops ----------------------------------------------------------------
// A functor F<T>(attrs) with T operator()(T x) (unary) or T operator()(T dy, T saved) (backward).
template <template <typename> class F, bool kArith = false>
Status check_unary(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, "unary op", 1, 1, 1));
  const TensorView &x = a.in(0), &out = a.out(0);
  ET_RETURN_IF_ERROR(kArith ? cpu::want_arith("input", x) : cpu::want_float("input", x));
  ET_RETURN_IF_ERROR(cpu::want_same_dtype("output", out, x));
  ET_RETURN_IF_ERROR(cpu::want_same_shape("output", out, x));
  return F<float>::check(a.attr());
}

template <template <typename> class F, bool kArith = false>
Status run_unary(const KernelArgs& a) {
  const TensorView &x = a.in(0), &out = a.out(0);
  auto body = [&](auto tag) {
    using T = typename decltype(tag)::type;
    const F<T> f(a.attr());
    const T* xp = x.as<T>();
    T* op = out.as<T>();
    cpu::parallel_for(a, x.numel(), cpu::kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) op[i] = f(xp[i]);
    });
  };
  bool ok;
  if constexpr (kArith) ok = cpu::visit_arith(x.dtype, body);
  else ok = cpu::visit_float(x.dtype, body);
  return ok ? Status::Ok() : internal_error("unary op: dtype not dispatched");
}

template <template <typename> class F>
Status check_backward(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, "backward op", 2, 2, 1));
  const TensorView &dy = a.in(0), &saved = a.in(1), &out = a.out(0);
  ET_RETURN_IF_ERROR(cpu::want_float("dy", dy));
  ET_RETURN_IF_ERROR(cpu::want_same_dtype("saved tensor", saved, dy));
  ET_RETURN_IF_ERROR(cpu::want_same_shape("saved tensor", saved, dy));
  ET_RETURN_IF_ERROR(cpu::want_same_dtype("output", out, dy));
  ET_RETURN_IF_ERROR(cpu::want_same_shape("output", out, dy));
  return F<float>::check(a.attr());
}

template <template <typename> class F>
Status run_backward(const KernelArgs& a) {
  const TensorView &dy = a.in(0), &saved = a.in(1), &out = a.out(0);
  bool ok = cpu::visit_float(dy.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const F<T> f(a.attr());
    const T* dp = dy.as<T>();
    const T* sp = saved.as<T>();
    T* op = out.as<T>();
    cpu::parallel_for(a, dy.numel(), cpu::kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) op[i] = f(dp[i], sp[i]);
    });
  });
  return ok ? Status::Ok() : internal_error("backward op: dtype not dispatched");
}

// Functors without attributes.
struct NoAttrs {
  NoAttrs() = default;
  explicit NoAttrs(const Attrs&) {}
  static Status check(const Attrs&) { return Status::Ok(); }
};

Status need_float_attr(const Attrs& at, const char* name) {
  const Attr* x = at.find(name);
  if (x && (x->kind == AttrKind::kFloat || x->kind == AttrKind::kInt)) return Status::Ok();
  return invalid_argument(std::string("missing numeric attribute '") + name + "'");
}

template <typename T>
ET_VECTOR_INLINE T sigmoid(T x) { return T(1) / (T(1) + cpu::exp_any(-x)); }

template <typename T>
struct Neg : NoAttrs {
  using NoAttrs::NoAttrs;
  T operator()(T x) const { return static_cast<T>(Wide<T>(0) - static_cast<Wide<T>>(x)); }
};

// x < 0 ? 0 : x rather than max(): NaN passes through as np.maximum does
template <typename T>
struct Relu : NoAttrs {
  using NoAttrs::NoAttrs;
  T operator()(T x) const { return x < T(0) ? T(0) : x; }
};
template <typename T>
struct ReluBackward : NoAttrs {
  using NoAttrs::NoAttrs;
  T operator()(T dy, T y) const { return y > T(0) ? dy : T(0); }
};

template <typename T>
struct Hardtanh {
  T lo, hi;
  explicit Hardtanh(const Attrs& at) : lo(T(at.get_float("min"))), hi(T(at.get_float("max"))) {}
  static Status check(const Attrs& at) {
    ET_RETURN_IF_ERROR(need_float_attr(at, "min"));
    return need_float_attr(at, "max");
  }
  T operator()(T x) const { return x < lo ? lo : (x > hi ? hi : x); }
};
template <typename T>
struct HardtanhBackward : Hardtanh<T> {  // reads the output: inside (min, max) iff the input was
  using Hardtanh<T>::Hardtanh;
  T operator()(T dy, T y) const { return (y > this->lo && y < this->hi) ? dy : T(0); }
};

template <typename T>
ET_VECTOR_INLINE T hardsigmoid(T x) {
  T v = x / T(6) + T(0.5);
  return v < T(0) ? T(0) : (v > T(1) ? T(1) : v);
}
template <typename T>
struct Hardsigmoid : NoAttrs {
  using NoAttrs::NoAttrs;
  T operator()(T x) const { return hardsigmoid(x); }
};
template <typename T>
struct HardsigmoidBackward : NoAttrs {
  using NoAttrs::NoAttrs;
  T operator()(T dy, T x) const { return (x > T(-3) && x < T(3)) ? dy / T(6) : T(0); }
};
template <typename T>
struct Hardswish : NoAttrs {
  using NoAttrs::NoAttrs;
  T operator()(T x) const { return x * hardsigmoid(x); }
};
template <typename T>
struct HardswishBackward : NoAttrs {
  using NoAttrs::NoAttrs;
  T operator()(T dy, T x) const { return x < T(-3) ? T(0) : (x <= T(3) ? dy * (x / T(3) + T(0.5)) : dy); }
};

template <typename T>
struct Sigmoid : NoAttrs {
  using NoAttrs::NoAttrs;
  T operator()(T x) const { return sigmoid(x); }
};
template <typename T>
struct SigmoidBackward : NoAttrs {
  using NoAttrs::NoAttrs;
  T operator()(T dy, T y) const { return dy * y * (T(1) - y); }
};
template <typename T>
struct Tanh : NoAttrs {
  using NoAttrs::NoAttrs;
  T operator()(T x) const { return cpu::tanh_any(x); }
};
template <typename T>
struct TanhBackward : NoAttrs {
  using NoAttrs::NoAttrs;
  T operator()(T dy, T y) const { return dy * (T(1) - y * y); }
};
template <typename T>
struct Silu : NoAttrs {
  using NoAttrs::NoAttrs;
  T operator()(T x) const { return x * sigmoid(x); }
};
template <typename T>
struct SiluBackward : NoAttrs {
  using NoAttrs::NoAttrs;
  T operator()(T dy, T x) const {
    T s = sigmoid(x);
    return dy * s * (T(1) + x * (T(1) - s));
  }
};

// gelu: approximate = "none" (erf) or "tanh"
constexpr double kSqrt2OverPi = 0.79788456080286535588;
constexpr double kSqrtHalf = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;

Status check_gelu_attrs(const Attrs& at) {
  const std::string& ap = at.get_string("approximate");
  if (at.has("approximate") && ap != "none" && ap != "tanh")
    return unimplemented("gelu approximate='" + ap + "' (this kernel takes 'none' or 'tanh')");
  return Status::Ok();
}
bool gelu_is_tanh(const Attrs& at) { return at.get_string("approximate") == "tanh"; }

// 0.5 x (1 + erf(x/sqrt2)) = 0.5 x erfc(-x/sqrt2): no cancellation for negative x
template <typename T>
struct GeluErf : NoAttrs {
  using NoAttrs::NoAttrs;
  T operator()(T x) const { return T(0.5) * x * cpu::erfc_any(-x * T(kSqrtHalf)); }
};
// 0.5 x (1 + tanh u) = x sigmoid(2u)
template <typename T>
struct GeluTanh : NoAttrs {
  using NoAttrs::NoAttrs;
  T operator()(T x) const {
    T u = T(kSqrt2OverPi) * (x + T(0.044715) * x * x * x);
    return x * sigmoid(T(2) * u);
  }
};
template <typename T>
struct GeluErfBackward : NoAttrs {
  using NoAttrs::NoAttrs;
  T operator()(T dy, T x) const {
    T cdf = T(0.5) * cpu::erfc_any(-x * T(kSqrtHalf));
    T pdf = cpu::exp_any(T(-0.5) * x * x) * T(kInvSqrt2Pi);
    return dy * (cdf + x * pdf);
  }
};
// with s = sigmoid(2u): 0.5 (1 + tanh u) = s and 1 - tanh^2 u = 4 s (1 - s)
template <typename T>
struct GeluTanhBackward : NoAttrs {
  using NoAttrs::NoAttrs;
  T operator()(T dy, T x) const {
    T u = T(kSqrt2OverPi) * (x + T(0.044715) * x * x * x);
    T d_inner = T(kSqrt2OverPi) * (T(1) + T(3 * 0.044715) * x * x);
    T s = sigmoid(T(2) * u);
    return dy * (s + T(2) * x * s * (T(1) - s) * d_inner);
  }
};

Status check_gelu(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(check_unary<Relu>(a));
  return check_gelu_attrs(a.attr());
}
Status run_gelu(const KernelArgs& a) {
  return gelu_is_tanh(a.attr()) ? run_unary<GeluTanh>(a) : run_unary<GeluErf>(a);
}
Status check_gelu_backward(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(check_backward<ReluBackward>(a));
  return check_gelu_attrs(a.attr());
}
Status run_gelu_backward(const KernelArgs& a) {
  return gelu_is_tanh(a.attr()) ? run_backward<GeluTanhBackward>(a) : run_backward<GeluErfBackward>(a);
}

template <typename T>
struct Exp : NoAttrs {
  using NoAttrs::NoAttrs;
  T operator()(T x) const { return cpu::exp_any(x); }
};
template <typename T>
struct Log : NoAttrs {
  using NoAttrs::NoAttrs;
  T operator()(T x) const { return std::log(x); }
};
template <typename T>
struct Sqrt : NoAttrs {
  using NoAttrs::NoAttrs;
  T operator()(T x) const { return std::sqrt(x); }
};
template <typename T>
struct Rsqrt : NoAttrs {
  using NoAttrs::NoAttrs;
  T operator()(T x) const { return T(1) / std::sqrt(x); }
};

// pow_scalar: the exponent is rounded to the dtype first, as the reference does; common
// exponents get exact-as-possible closed forms instead of the (slow) general pow.
template <typename T>
struct PowScalar {
  static Status check(const Attrs& at) { return need_float_attr(at, "exponent"); }
  explicit PowScalar(const Attrs& at) : e(T(at.get_float("exponent"))) {}
  T e;
  T operator()(T x) const { return std::pow(x, e); }
};

template <typename T, int kMode>
void pow_loop(const KernelArgs& a, const T* x, T* y, int64_t n, T e) {
  cpu::parallel_for(a, n, cpu::kGrain, [&](int64_t b, int64_t end) {
    for (int64_t i = b; i < end; ++i) {
      T v = x[i];
      if constexpr (kMode == 0) y[i] = v * v;
      if constexpr (kMode == 1) y[i] = v * v * v;
      if constexpr (kMode == 2) y[i] = std::sqrt(v);
      if constexpr (kMode == 3) y[i] = T(1) / v;
      if constexpr (kMode == 4) y[i] = T(1) / std::sqrt(v);
      if constexpr (kMode == 5) y[i] = v;
      if constexpr (kMode == 6) y[i] = std::pow(v, e);
    }
  });
}

Status run_pow_scalar(const KernelArgs& a) {
  const TensorView &x = a.in(0), &out = a.out(0);
  bool ok = cpu::visit_float(x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T e = T(a.attr().get_float("exponent"));
    const T* xp = x.as<T>();
    T* yp = out.as<T>();
    const int64_t n = x.numel();
    if (e == T(2)) pow_loop<T, 0>(a, xp, yp, n, e);
    else if (e == T(3)) pow_loop<T, 1>(a, xp, yp, n, e);
    else if (e == T(0.5)) pow_loop<T, 2>(a, xp, yp, n, e);
    else if (e == T(-1)) pow_loop<T, 3>(a, xp, yp, n, e);
    else if (e == T(-0.5)) pow_loop<T, 4>(a, xp, yp, n, e);
    else if (e == T(1)) pow_loop<T, 5>(a, xp, yp, n, e);
    else pow_loop<T, 6>(a, xp, yp, n, e);
  });
  return ok ? Status::Ok() : internal_error("pow_scalar: dtype not dispatched");
}

// ---- where(cond, a, b): moves bits, so any dtype of a/b works -----------------------------------
Status check_where(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, "where", 3, 3, 1));
  const TensorView &c = a.in(0), &x = a.in(1), &y = a.in(2), &out = a.out(0);
  if (c.dtype != DType::boolean) return invalid_argument("where condition is " + c.shape_string() + ", must be bool");
  ET_RETURN_IF_ERROR(cpu::want_same_dtype("input 2", y, x));
  ET_RETURN_IF_ERROR(cpu::want_same_dtype("output", out, x));
  if (dtype_size(x.dtype) == 0) return unimplemented("where on " + x.shape_string());
  cpu::Broadcast<3> bc;
  const TensorView* ins[3] = {&c, &x, &y};
  if (!bc.init(out, ins))
    return invalid_argument("where inputs " + c.shape_string() + ", " + x.shape_string() + ", " + y.shape_string() +
                            " do not broadcast to " + out.shape_string());
  return Status::Ok();
}

Status run_where(const KernelArgs& a) {
  const TensorView &c = a.in(0), &x = a.in(1), &y = a.in(2), &out = a.out(0);
  cpu::Broadcast<3> bc;
  const TensorView* ins[3] = {&c, &x, &y};
  if (!bc.init(out, ins)) return internal_error("where: shapes changed after check");
  const int64_t sc = bc.inner_stride(0), sx = bc.inner_stride(1), sy = bc.inner_stride(2);
  bool ok = cpu::visit_bits(x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const uint8_t* cp = c.as<uint8_t>();
    const T* xp = x.as<T>();
    const T* yp = y.as<T>();
    T* op = out.as<T>();
    cpu::parallel_for(a, bc.numel, cpu::kGrain, [&](int64_t b, int64_t e) {
      bc.for_runs(b, e, [&](int64_t o, const int64_t* off, int64_t n) {
        const uint8_t* cc = cp + off[0];
        const T* xx = xp + off[1];
        const T* yy = yp + off[2];
        T* oo = op + o;
        if (sc == 1 && sx == 1 && sy == 1) {
          for (int64_t i = 0; i < n; ++i) oo[i] = cc[i] ? xx[i] : yy[i];
        } else if (sc == 1 && sx == 1 && sy == 0) {  // masked fill of x
          const T v = yy[0];
          for (int64_t i = 0; i < n; ++i) oo[i] = cc[i] ? xx[i] : v;
        } else if (sc == 1 && sx == 0 && sy == 1) {  // masked fill of y
          const T v = xx[0];
          for (int64_t i = 0; i < n; ++i) oo[i] = cc[i] ? v : yy[i];
        } else {
          for (int64_t i = 0; i < n; ++i) oo[i] = cc[i * sc] ? xx[i * sx] : yy[i * sy];
        }
      });
    });
  });
  return ok ? Status::Ok() : internal_error("where: dtype not dispatched");
}

template <template <typename> class F>
void add_unary(KernelRegistry& r, const char* op) {
  r.add(KernelDef{op, op, &check_unary<F>, nullptr, &run_unary<F>});
}
template <template <typename> class F>
void add_backward(KernelRegistry& r, const char* op) {
  r.add(KernelDef{op, op, &check_backward<F>, nullptr, &run_backward<F>});
}
template <typename Op>
void add_binary(KernelRegistry& r) {
  r.add(KernelDef{Op::kName, Op::kName, &check_binary<Op>, nullptr, &run_binary<Op>});
}

}  // namespace

void register_elementwise_kernels(KernelRegistry& r) {
  add_binary<AddOp>(r);
  add_binary<SubOp>(r);
  add_binary<MulOp>(r);
  add_binary<DivOp>(r);
  r.add(KernelDef{"neg", "neg", &check_unary<Neg, true>, nullptr, &run_unary<Neg, true>});
  add_unary<Relu>(r, "relu");
  add_backward<ReluBackward>(r, "relu_backward");
  add_unary<Hardtanh>(r, "hardtanh");
  add_backward<HardtanhBackward>(r, "hardtanh_backward");
  add_unary<Hardsigmoid>(r, "hardsigmoid");
  add_backward<HardsigmoidBackward>(r, "hardsigmoid_backward");
  add_unary<Hardswish>(r, "hardswish");
  add_backward<HardswishBackward>(r, "hardswish_backward");
  add_unary<Sigmoid>(r, "sigmoid");
  add_backward<SigmoidBackward>(r, "sigmoid_backward");
  add_unary<Tanh>(r, "tanh");
  add_backward<TanhBackward>(r, "tanh_backward");
  add_unary<Silu>(r, "silu");
  add_backward<SiluBackward>(r, "silu_backward");
  r.add(KernelDef{"gelu", "gelu", &check_gelu, nullptr, &run_gelu});
  r.add(KernelDef{"gelu_backward", "gelu_backward", &check_gelu_backward, nullptr, &run_gelu_backward});
  add_unary<Exp>(r, "exp");
  add_unary<Log>(r, "log");
  add_unary<Sqrt>(r, "sqrt");
  add_unary<Rsqrt>(r, "rsqrt");
  r.add(KernelDef{"pow_scalar", "pow_scalar", &check_unary<PowScalar>, nullptr, &run_pow_scalar});
  r.add(KernelDef{"where", "where", &check_where, nullptr, &run_where});
}

}  // namespace edgetune
