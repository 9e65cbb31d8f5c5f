// CPU kernels for compiler/ops/elementwise.py: broadcasting arithmetic (add sub mul div), the
// comparisons (eq ne lt le gt ge -> bool), where, unary activations and math functions, and the
// activation backward ops (dy, saved) -> dx.
//
// Every loop is a flat pass the compiler can vectorize: binary ops, comparisons and where go through
// Broadcast<N> (same shapes collapse to one run; a broadcast operand becomes a scalar or a
// repeated row), unary and backward ops are contiguous. For f32, exp/tanh/erfc are the
// vectorizable versions of cpu_util.h (within 3 ulp; erfc within ~1e-7 relative where it
// matters); sqrt, log and pow stay libm calls, which only vectorize with -fno-math-errno.
// The float formulas themselves are in elementwise_math.h, shared with the fused_elementwise
// kernel (fused.cc) so both compute the same bits. The unary and backward loops ask GCC for
// 512-bit vectors on AVX-512 machines (ET_WIDE_VECTORS): they are arithmetic-bound, and the
// width changes how many elements one instruction takes, never an element's result.
#include <cmath>
#include <string>
#include <type_traits>

#include "core/kernel.h"
#include "kernels/cpu/broadcast.h"
#include "kernels/cpu/cpu_util.h"
#include "kernels/cpu/elementwise_math.h"

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

// One run: each operand's inner stride is 1 (walks with the output) or 0 (held fixed). O is T for
// arithmetic, uint8_t (bool) for the comparisons.
template <typename Op, typename T, typename O = T>
void binary_run(O* o, const T* x, int64_t sx, const T* y, int64_t sy, int64_t n) {
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

// ---- comparisons eq ne lt le gt ge: two inputs of one dtype, broadcast, bool output (0/1 bytes) --
// Bool inputs are read as their bytes (0/1), so ordering is False < True as in numpy and torch.
// NaN: the C++ operators are IEEE's (ne true, every other comparison false), as numpy's are.
struct EqOp {
  static constexpr const char* kName = "eq";
  template <typename T>
  static bool f(T a, T b) { return a == b; }
};
struct NeOp {
  static constexpr const char* kName = "ne";
  template <typename T>
  static bool f(T a, T b) { return a != b; }
};
struct LtOp {
  static constexpr const char* kName = "lt";
  template <typename T>
  static bool f(T a, T b) { return a < b; }
};
struct LeOp {
  static constexpr const char* kName = "le";
  template <typename T>
  static bool f(T a, T b) { return a <= b; }
};
struct GtOp {
  static constexpr const char* kName = "gt";
  template <typename T>
  static bool f(T a, T b) { return a > b; }
};
struct GeOp {
  static constexpr const char* kName = "ge";
  template <typename T>
  static bool f(T a, T b) { return a >= b; }
};

template <typename Op>
Status check_compare(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, Op::kName, 2, 2, 1));
  const TensorView &x = a.in(0), &y = a.in(1), &out = a.out(0);
  if (!cpu::is_compare(x.dtype))
    return unimplemented(std::string(Op::kName) + " input 0 is " + x.shape_string() +
                         "; this kernel takes f32, f64, i64, i32 or bool");
  ET_RETURN_IF_ERROR(cpu::want_same_dtype("input 1", y, x));
  ET_RETURN_IF_ERROR(expect_dtype(a, (std::string(Op::kName) + " output").c_str(), out, DType::boolean));
  cpu::Broadcast<2> bc;
  const TensorView* ins[2] = {&x, &y};
  if (!bc.init(out, ins))
    return invalid_argument(std::string(Op::kName) + " inputs " + x.shape_string() + " and " + y.shape_string() +
                            " do not broadcast to " + out.shape_string());
  return Status::Ok();
}

template <typename Op>
Status run_compare(const KernelArgs& a) {
  const TensorView &x = a.in(0), &y = a.in(1), &out = a.out(0);
  cpu::Broadcast<2> bc;
  const TensorView* ins[2] = {&x, &y};
  if (!bc.init(out, ins)) return internal_error(std::string(Op::kName) + ": shapes changed after check");
  const int64_t sx = bc.inner_stride(0), sy = bc.inner_stride(1);
  bool ok = cpu::visit_compare(x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xp = x.as<T>();
    const T* yp = y.as<T>();
    uint8_t* op = out.as<uint8_t>();
    cpu::parallel_for(a, bc.numel, cpu::kGrain, [&](int64_t b, int64_t e) {
      bc.for_runs(b, e, [&](int64_t o, const int64_t* off, int64_t n) {
        binary_run<Op, T, uint8_t>(op + o, xp + off[0], sx, yp + off[1], sy, n);
      });
    });
  });
  return ok ? Status::Ok() : internal_error(std::string(Op::kName) + ": dtype not dispatched");
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

// The unary and backward loops, out of line so they can carry ET_WIDE_VECTORS: on AVX-512 machines
// GCC's tuning picks 256-bit vectors, but these loops are arithmetic-bound (gelu's erfc and exp,
// ~50 instructions a vector), and 512-bit vectors run them ~1.5x faster (text model gelu fwd
// 645 -> ~390 us at 1 thread). Per element the same operations run, so the bits do not change.
#if defined(__GNUC__) && !defined(__clang__) && defined(__AVX512F__)
#define ET_WIDE_VECTORS __attribute__((noinline, target("prefer-vector-width=512")))
#else
#define ET_WIDE_VECTORS
#endif

template <typename F, typename T>
ET_WIDE_VECTORS void unary_loop(const F& f, const T* x, T* y, int64_t b, int64_t e) {
  for (int64_t i = b; i < e; ++i) y[i] = f(x[i]);
}
template <typename F, typename T>
ET_WIDE_VECTORS void backward_loop(const F& f, const T* dy, const T* s, T* y,
                                   int64_t b, int64_t e) {
  for (int64_t i = b; i < e; ++i) y[i] = f(dy[i], s[i]);
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
      unary_loop(f, xp, op, b, e);
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
      backward_loop(f, dp, sp, op, b, e);
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
struct Neg : NoAttrs {
  using NoAttrs::NoAttrs;
  T operator()(T x) const { return static_cast<T>(Wide<T>(0) - static_cast<Wide<T>>(x)); }
};

// The float formulas live in elementwise_math.h (shared with fused_elementwise); these
// functors only bind them, with their attributes, to the loops above.
#define ET_UNARY_FUNCTOR(Name, fn)                 \
  template <typename T>                            \
  struct Name : NoAttrs {                          \
    using NoAttrs::NoAttrs;                        \
    T operator()(T x) const { return fn(x); }      \
  };
#define ET_BACKWARD_FUNCTOR(Name, fn)                      \
  template <typename T>                                    \
  struct Name : NoAttrs {                                  \
    using NoAttrs::NoAttrs;                                \
    T operator()(T dy, T s) const { return fn(dy, s); }    \
  };

ET_UNARY_FUNCTOR(Relu, math::relu)
ET_BACKWARD_FUNCTOR(ReluBackward, math::relu_backward)
ET_UNARY_FUNCTOR(Hardsigmoid, math::hardsigmoid)
ET_BACKWARD_FUNCTOR(HardsigmoidBackward, math::hardsigmoid_backward)
ET_UNARY_FUNCTOR(Hardswish, math::hardswish)
ET_BACKWARD_FUNCTOR(HardswishBackward, math::hardswish_backward)
ET_UNARY_FUNCTOR(Sigmoid, math::sigmoid)
ET_BACKWARD_FUNCTOR(SigmoidBackward, math::sigmoid_backward)
ET_UNARY_FUNCTOR(Tanh, math::tanh)
ET_BACKWARD_FUNCTOR(TanhBackward, math::tanh_backward)
ET_UNARY_FUNCTOR(Silu, math::silu)
ET_BACKWARD_FUNCTOR(SiluBackward, math::silu_backward)
ET_UNARY_FUNCTOR(GeluErf, math::gelu_erf)
ET_BACKWARD_FUNCTOR(GeluErfBackward, math::gelu_erf_backward)
ET_UNARY_FUNCTOR(GeluTanh, math::gelu_tanh)
ET_BACKWARD_FUNCTOR(GeluTanhBackward, math::gelu_tanh_backward)
ET_UNARY_FUNCTOR(Exp, math::exp)
ET_UNARY_FUNCTOR(Log, math::log)
ET_UNARY_FUNCTOR(Sqrt, math::sqrt)
ET_UNARY_FUNCTOR(Rsqrt, math::rsqrt)
#undef ET_UNARY_FUNCTOR
#undef ET_BACKWARD_FUNCTOR

template <typename T>
struct Hardtanh {
  T lo, hi;
  explicit Hardtanh(const Attrs& at) : lo(T(at.get_float("min"))), hi(T(at.get_float("max"))) {}
  static Status check(const Attrs& at) {
    ET_RETURN_IF_ERROR(need_float_attr(at, "min"));
    return need_float_attr(at, "max");
  }
  T operator()(T x) const { return math::hardtanh(x, lo, hi); }
};
template <typename T>
struct HardtanhBackward : Hardtanh<T> {
  using Hardtanh<T>::Hardtanh;
  T operator()(T dy, T y) const { return math::hardtanh_backward(dy, y, this->lo, this->hi); }
};

// gelu: approximate = "none" (erf) or "tanh"
Status check_gelu_attrs(const Attrs& at) {
  const std::string& ap = at.get_string("approximate");
  if (at.has("approximate") && ap != "none" && ap != "tanh")
    return unimplemented("gelu approximate='" + ap + "' (this kernel takes 'none' or 'tanh')");
  return Status::Ok();
}
bool gelu_is_tanh(const Attrs& at) { return at.get_string("approximate") == "tanh"; }

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

// pow_scalar: the exponent's closed form (math::pow_mode) is picked once per call, outside the loop.
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
    for (int64_t i = b; i < end; ++i) y[i] = math::pow_by_mode<kMode>(x[i], e);
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
    switch (math::pow_mode(e)) {
      case math::kPowSquare: pow_loop<T, math::kPowSquare>(a, xp, yp, n, e); break;
      case math::kPowCube: pow_loop<T, math::kPowCube>(a, xp, yp, n, e); break;
      case math::kPowSqrt: pow_loop<T, math::kPowSqrt>(a, xp, yp, n, e); break;
      case math::kPowReciprocal: pow_loop<T, math::kPowReciprocal>(a, xp, yp, n, e); break;
      case math::kPowRsqrt: pow_loop<T, math::kPowRsqrt>(a, xp, yp, n, e); break;
      case math::kPowIdentity: pow_loop<T, math::kPowIdentity>(a, xp, yp, n, e); break;
      case math::kPowGeneral: pow_loop<T, math::kPowGeneral>(a, xp, yp, n, e); break;
    }
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
template <typename Op>
void add_compare(KernelRegistry& r) {
  r.add(KernelDef{Op::kName, Op::kName, &check_compare<Op>, nullptr, &run_compare<Op>});
}

}  // namespace

void register_elementwise_kernels(KernelRegistry& r) {
  add_binary<AddOp>(r);
  add_binary<SubOp>(r);
  add_binary<MulOp>(r);
  add_binary<DivOp>(r);
  add_compare<EqOp>(r);
  add_compare<NeOp>(r);
  add_compare<LtOp>(r);
  add_compare<LeOp>(r);
  add_compare<GtOp>(r);
  add_compare<GeOp>(r);
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
