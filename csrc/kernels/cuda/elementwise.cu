// CUDA kernels for compiler/ops/elementwise.py (kernels/cpu/elementwise.cc on the device): add sub
// mul div and the comparisons eq ne lt le gt ge (bool output) with numpy broadcasting, where, the
// unary activations and math functions, and the activation backward ops (dy, saved) -> dx. One
// thread per output element (grid-stride); the float formulas are elementwise_math.h's, compiled
// for the device too, and the library is built with --fmad=false, so these kernels compute what the
// CPU kernels compute (log / sqrt / pow are CUDA's libdevice, within an ulp or two of glibc's).
// Checks are the CPU kernels'.
#include <type_traits>

#include "kernels/cpu/broadcast.h"
#include "kernels/cpu/elementwise_math.h"
#include "kernels/cuda/cuda_util.h"

namespace edgetune {
namespace cuda {
namespace {

using cpu::Tag;

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
  template <typename T>
  __device__ static T f(T a, T b) { return static_cast<T>(static_cast<Wide<T>>(a) + static_cast<Wide<T>>(b)); }
};
struct SubOp {
  static constexpr const char* kName = "sub";
  template <typename T>
  __device__ static T f(T a, T b) { return static_cast<T>(static_cast<Wide<T>>(a) - static_cast<Wide<T>>(b)); }
};
struct MulOp {
  static constexpr const char* kName = "mul";
  template <typename T>
  __device__ static T f(T a, T b) { return static_cast<T>(static_cast<Wide<T>>(a) * static_cast<Wide<T>>(b)); }
};
struct DivOp {
  static constexpr const char* kName = "div";
  template <typename T>
  __device__ static T f(T a, T b) { return a / b; }
};

template <typename Op, typename T>
__global__ void binary_same(const T* x, const T* y, T* o, int64_t n) {
  ET_GRID_LOOP(i, n) o[i] = Op::template f<T>(x[i], y[i]);
}

template <typename Op, typename T>
__global__ void binary_bcast(const T* x, const T* y, T* o, int64_t n, BcastIndex<2> bc) {
  ET_GRID_LOOP(i, n) o[i] = Op::template f<T>(x[bc.offset(0, i)], y[bc.offset(1, i)]);
}

template <typename Op>
Status run_binary(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  const TensorView &x = a.in(0), &y = a.in(1), &out = a.out(0);
  cpu::Broadcast<2> bc;
  const TensorView* ins[2] = {&x, &y};
  if (!bc.init(out, ins)) return internal_error("binary op: shapes changed after check");
  const int64_t n = bc.numel;
  if (n == 0) return Status::Ok();
  const bool same = cpu::same_shape(x, out) && cpu::same_shape(y, out);
  const BcastIndex<2> bi = bcast_index(bc);
  bool ok = cpu::visit_arith(x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (same) binary_same<Op, T><<<grid_for(n), kBlock, 0, ctx->stream>>>(x.as<T>(), y.as<T>(), out.as<T>(), n);
    else binary_bcast<Op, T><<<grid_for(n), kBlock, 0, ctx->stream>>>(x.as<T>(), y.as<T>(), out.as<T>(), n, bi);
  });
  if (!ok) return internal_error("binary op: dtype not dispatched");
  ET_CUDA_LAUNCHED(Op::kName);
  return Status::Ok();
}

// ---- comparisons eq ne lt le gt ge: bool output (0/1 bytes); bool inputs read as their bytes ----
struct EqOp {
  static constexpr const char* kName = "eq";
  template <typename T>
  __device__ static bool f(T a, T b) { return a == b; }
};
struct NeOp {
  static constexpr const char* kName = "ne";
  template <typename T>
  __device__ static bool f(T a, T b) { return a != b; }
};
struct LtOp {
  static constexpr const char* kName = "lt";
  template <typename T>
  __device__ static bool f(T a, T b) { return a < b; }
};
struct LeOp {
  static constexpr const char* kName = "le";
  template <typename T>
  __device__ static bool f(T a, T b) { return a <= b; }
};
struct GtOp {
  static constexpr const char* kName = "gt";
  template <typename T>
  __device__ static bool f(T a, T b) { return a > b; }
};
struct GeOp {
  static constexpr const char* kName = "ge";
  template <typename T>
  __device__ static bool f(T a, T b) { return a >= b; }
};

template <typename Op, typename T>
__global__ void compare_same(const T* x, const T* y, uint8_t* o, int64_t n) {
  ET_GRID_LOOP(i, n) o[i] = Op::template f<T>(x[i], y[i]);
}

template <typename Op, typename T>
__global__ void compare_bcast(const T* x, const T* y, uint8_t* o, int64_t n, BcastIndex<2> bc) {
  ET_GRID_LOOP(i, n) o[i] = Op::template f<T>(x[bc.offset(0, i)], y[bc.offset(1, i)]);
}

template <typename Op>
Status run_compare(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  const TensorView &x = a.in(0), &y = a.in(1), &out = a.out(0);
  cpu::Broadcast<2> bc;
  const TensorView* ins[2] = {&x, &y};
  if (!bc.init(out, ins)) return internal_error("comparison: shapes changed after check");
  const int64_t n = bc.numel;
  if (n == 0) return Status::Ok();
  const bool same = cpu::same_shape(x, out) && cpu::same_shape(y, out);
  const BcastIndex<2> bi = bcast_index(bc);
  uint8_t* o = out.as<uint8_t>();
  bool ok = cpu::visit_compare(x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (same) compare_same<Op, T><<<grid_for(n), kBlock, 0, ctx->stream>>>(x.as<T>(), y.as<T>(), o, n);
    else compare_bcast<Op, T><<<grid_for(n), kBlock, 0, ctx->stream>>>(x.as<T>(), y.as<T>(), o, n, bi);
  });
  if (!ok) return internal_error("comparison: dtype not dispatched");
  ET_CUDA_LAUNCHED(Op::kName);
  return Status::Ok();
}

// ---- unary and backward ops: functors F<T>{attrs} with __device__ operator() -----------------
template <typename F, typename T>
__global__ void unary_kernel(const T* x, T* y, int64_t n, F f) {
  ET_GRID_LOOP(i, n) y[i] = f(x[i]);
}

template <typename F, typename T>
__global__ void backward_kernel(const T* dy, const T* s, T* dx, int64_t n, F f) {
  ET_GRID_LOOP(i, n) dx[i] = f(dy[i], s[i]);
}

template <template <typename> class F, bool kArith = false>
Status run_unary(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  const TensorView &x = a.in(0), &out = a.out(0);
  const int64_t n = x.numel();
  if (n == 0) return Status::Ok();
  auto body = [&](auto tag) {
    using T = typename decltype(tag)::type;
    unary_kernel<<<grid_for(n), kBlock, 0, ctx->stream>>>(x.as<T>(), out.as<T>(), n, F<T>(a.attr()));
  };
  bool ok;
  if constexpr (kArith) ok = cpu::visit_arith(x.dtype, body);
  else ok = cpu::visit_float(x.dtype, body);
  if (!ok) return internal_error("unary op: dtype not dispatched");
  ET_CUDA_LAUNCHED("unary op");
  return Status::Ok();
}

template <template <typename> class F>
Status run_backward(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  const TensorView &dy = a.in(0), &saved = a.in(1), &out = a.out(0);
  const int64_t n = dy.numel();
  if (n == 0) return Status::Ok();
  bool ok = cpu::visit_float(dy.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    backward_kernel<<<grid_for(n), kBlock, 0, ctx->stream>>>(dy.as<T>(), saved.as<T>(), out.as<T>(), n, F<T>(a.attr()));
  });
  if (!ok) return internal_error("backward op: dtype not dispatched");
  ET_CUDA_LAUNCHED("backward op");
  return Status::Ok();
}

struct NoAttrs {
  NoAttrs() = default;
  explicit NoAttrs(const Attrs&) {}
};

template <typename T>
struct Neg : NoAttrs {
  using NoAttrs::NoAttrs;
  __device__ T operator()(T x) const { return static_cast<T>(Wide<T>(0) - static_cast<Wide<T>>(x)); }
};

#define ET_UNARY_FUNCTOR(Name, fn)                     \
  template <typename T>                                \
  struct Name : NoAttrs {                              \
    using NoAttrs::NoAttrs;                            \
    __device__ T operator()(T x) const { return fn(x); } \
  };
#define ET_BACKWARD_FUNCTOR(Name, fn)                             \
  template <typename T>                                           \
  struct Name : NoAttrs {                                         \
    using NoAttrs::NoAttrs;                                       \
    __device__ T operator()(T dy, T s) const { return fn(dy, s); } \
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
  __device__ T operator()(T x) const { return math::hardtanh(x, lo, hi); }
};
template <typename T>
struct HardtanhBackward : Hardtanh<T> {
  using Hardtanh<T>::Hardtanh;
  __device__ T operator()(T dy, T y) const { return math::hardtanh_backward(dy, y, this->lo, this->hi); }
};

template <typename T, int kMode>
struct PowBy {
  T e;
  explicit PowBy(const Attrs& at) : e(T(at.get_float("exponent"))) {}
  __device__ T operator()(T x) const { return math::pow_by_mode<kMode>(x, e); }
};

template <typename T, int kMode>
Status pow_launch(const KernelArgs& a, CudaContext* ctx) {
  const int64_t n = a.in(0).numel();
  unary_kernel<<<grid_for(n), kBlock, 0, ctx->stream>>>(a.in(0).as<T>(), a.out(0).as<T>(), n, PowBy<T, kMode>(a.attr()));
  ET_CUDA_LAUNCHED("pow_scalar");
  return Status::Ok();
}

template <typename T>
Status pow_dispatch(const KernelArgs& a, CudaContext* ctx) {
  switch (math::pow_mode(T(a.attr().get_float("exponent")))) {
    case math::kPowSquare: return pow_launch<T, math::kPowSquare>(a, ctx);
    case math::kPowCube: return pow_launch<T, math::kPowCube>(a, ctx);
    case math::kPowSqrt: return pow_launch<T, math::kPowSqrt>(a, ctx);
    case math::kPowReciprocal: return pow_launch<T, math::kPowReciprocal>(a, ctx);
    case math::kPowRsqrt: return pow_launch<T, math::kPowRsqrt>(a, ctx);
    case math::kPowIdentity: return pow_launch<T, math::kPowIdentity>(a, ctx);
    case math::kPowGeneral: break;
  }
  return pow_launch<T, math::kPowGeneral>(a, ctx);
}

Status run_pow_scalar(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  if (a.in(0).numel() == 0) return Status::Ok();
  if (a.in(0).dtype == DType::f64) return pow_dispatch<double>(a, ctx);
  if (a.in(0).dtype == DType::f32) return pow_dispatch<float>(a, ctx);
  return internal_error("pow_scalar: dtype not dispatched");
}

bool gelu_is_tanh(const Attrs& at) { return at.get_string("approximate") == "tanh"; }
Status run_gelu(const KernelArgs& a) { return gelu_is_tanh(a.attr()) ? run_unary<GeluTanh>(a) : run_unary<GeluErf>(a); }
Status run_gelu_backward(const KernelArgs& a) {
  return gelu_is_tanh(a.attr()) ? run_backward<GeluTanhBackward>(a) : run_backward<GeluErfBackward>(a);
}

// ---- where(cond, x, y): moves bits, any dtype ----------------------------------------------------
template <typename T>
__global__ void where_kernel(const uint8_t* c, const T* x, const T* y, T* o, int64_t n, BcastIndex<3> bc) {
  ET_GRID_LOOP(i, n) o[i] = c[bc.offset(0, i)] ? x[bc.offset(1, i)] : y[bc.offset(2, i)];
}

Status run_where(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  const TensorView &c = a.in(0), &x = a.in(1), &y = a.in(2), &out = a.out(0);
  cpu::Broadcast<3> bc;
  const TensorView* ins[3] = {&c, &x, &y};
  if (!bc.init(out, ins)) return internal_error("where: shapes changed after check");
  const int64_t n = bc.numel;
  if (n == 0) return Status::Ok();
  const BcastIndex<3> bi = bcast_index(bc);
  bool ok = cpu::visit_bits(x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    where_kernel<<<grid_for(n), kBlock, 0, ctx->stream>>>(c.as<uint8_t>(), x.as<T>(), y.as<T>(), out.as<T>(), n, bi);
  });
  if (!ok) return internal_error("where: dtype not dispatched");
  ET_CUDA_LAUNCHED("where");
  return Status::Ok();
}

template <template <typename> class F>
void add_unary(KernelRegistry& r, const char* op) {
  add_like_cpu(r, op, op, nullptr, &run_unary<F>);
}
template <template <typename> class F>
void add_backward(KernelRegistry& r, const char* op) {
  add_like_cpu(r, op, op, nullptr, &run_backward<F>);
}
template <typename Op>
void add_binary(KernelRegistry& r) {
  add_like_cpu(r, Op::kName, Op::kName, nullptr, &run_binary<Op>);
}
template <typename Op>
void add_compare(KernelRegistry& r) {
  add_like_cpu(r, Op::kName, Op::kName, nullptr, &run_compare<Op>);
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
  add_like_cpu(r, "neg", "neg", nullptr, &run_unary<Neg, true>);
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
  add_like_cpu(r, "gelu", "gelu", nullptr, &run_gelu);
  add_like_cpu(r, "gelu_backward", "gelu_backward", nullptr, &run_gelu_backward);
  add_unary<Exp>(r, "exp");
  add_unary<Log>(r, "log");
  add_unary<Sqrt>(r, "sqrt");
  add_unary<Rsqrt>(r, "rsqrt");
  add_like_cpu(r, "pow_scalar", "pow_scalar", nullptr, &run_pow_scalar);
  add_like_cpu(r, "where", "where", nullptr, &run_where);
}

}  // namespace cuda
}  // namespace edgetune
