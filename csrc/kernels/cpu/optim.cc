// CPU kernels for compiler/ops/optim.py: sgd_update and adamw_update, one node per parameter.
//
//   sgd_update(param, grad, lr)                 -> new_param             (momentum == 0)
//   sgd_update(param, grad, lr, buf, step)      -> new_param, new_buf    (momentum > 0)
//   adamw_update(param, grad, lr, m, v, step)   -> new_param, new_m, new_v
//
// lr and step are f32 scalar tensors (program state, so a schedule needs no recompile); step
// counts the current update (1 on the first). The outputs may be the very buffers of param /
// buf / m / v (the planner updates state in place): each element is read before it is written.
//
// Non-finite guard: each kernel first runs its arithmetic without writing (kCheck) and refuses
// with kNumericError when any new parameter or state value would be inf/NaN (a gradient that
// overflowed, an absurd lr), so nothing non-finite is ever written into a weight or a moment. The
// check pass reads what the update reads and writes nothing: about as costly as the update.
//
// Arithmetic follows the reference's numpy promotion, so results match it to the bit but for
// the odd last-ulp difference where the compiler fuses a multiply-add: the gradient term runs
// in double, while a state tensor times a Python float (wd * p, momentum * buf, v * beta2,
// p * (1 - lr wd)) is an f32 product in numpy, and so here.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>
#include <type_traits>

#include "core/kernel.h"
#include "kernels/cpu/cpu_util.h"

namespace edgetune {
namespace {

Status want_attrs(const Attrs& at, std::initializer_list<const char*> names) {
  for (const char* n : names)
    if (!at.has(n)) return invalid_argument(std::string("missing attribute '") + n + "'");
  return Status::Ok();
}

Status want_scalar_f32(const char* what, const TensorView& t) {
  if (t.dtype != DType::f32) return unimplemented(std::string(what) + " is " + t.shape_string() + "; must be f32");
  return cpu::want_scalar(what, t);
}

// ---- SGD (torch.optim.SGD semantics: first momentum step sets buf = d, no dampening) -----------
Status check_sgd(const KernelArgs& a) {
  const Attrs& at = a.attr();
  ET_RETURN_IF_ERROR(want_attrs(at, {"momentum", "dampening", "nesterov", "weight_decay"}));
  const bool momentum = at.get_float("momentum") != 0.0;
  ET_RETURN_IF_ERROR(momentum ? expect_arity(a, "sgd_update", 5, 5, 2) : expect_arity(a, "sgd_update", 3, 3, 1));
  const TensorView& p = a.in(0);
  if (p.dtype != DType::f32) return unimplemented("sgd_update param is " + p.shape_string() + "; this kernel takes f32");
  ET_RETURN_IF_ERROR(cpu::want_same_dtype("grad", a.in(1), p));
  ET_RETURN_IF_ERROR(cpu::want_same_shape("grad", a.in(1), p));
  ET_RETURN_IF_ERROR(want_scalar_f32("lr", a.in(2)));
  if (momentum) {
    ET_RETURN_IF_ERROR(cpu::want_same_dtype("momentum buffer", a.in(3), p));
    ET_RETURN_IF_ERROR(cpu::want_same_shape("momentum buffer", a.in(3), p));
    ET_RETURN_IF_ERROR(want_scalar_f32("step", a.in(4)));
  }
  for (int i = 0; i < a.num_outputs; ++i) {
    ET_RETURN_IF_ERROR(cpu::want_same_dtype("output", a.out(i), p));
    ET_RETURN_IF_ERROR(cpu::want_same_shape("output", a.out(i), p));
  }
  return Status::Ok();
}

struct SgdParams {
  double lr, sign, mom, damp;
  float wd_f, mom_f;
};

// Adds 0 for a finite value and NaN for inf/NaN: `acc` stays 0 exactly while all are finite
// (a sum the compiler vectorizes, unlike a branch on std::isfinite).
ET_VECTOR_INLINE void accumulate_nonfinite(float& acc, float v) { acc += v - v; }

// Every flag is a template parameter so each variant is a branch-free, vectorizable loop.
// kCheck: compute without writing, and set *bad when a result is not finite.
template <bool kCheck, bool kDecay, bool kMomentum, bool kFirst, bool kNesterov>
void sgd_loop(const KernelArgs& a, const SgdParams& h, const float* p, const float* g, const float* buf,
              float* new_p, float* new_buf, int64_t n, std::atomic<bool>* bad) {
  cpu::parallel_for(a, n, cpu::kGrain, [&](int64_t b, int64_t e) {
    float acc = 0.0f;
    for (int64_t i = b; i < e; ++i) {
      const float pi = p[i];
      double d = h.sign * static_cast<double>(g[i]);
      if constexpr (kDecay) d += static_cast<double>(h.wd_f * pi);
      if constexpr (kMomentum) {
        double nb = d;
        if constexpr (!kFirst) nb = static_cast<double>(h.mom_f * buf[i]) + h.damp * d;
        if constexpr (kNesterov) d = d + h.mom * nb;
        else d = nb;
        if constexpr (kCheck) accumulate_nonfinite(acc, static_cast<float>(nb));
        else new_buf[i] = static_cast<float>(nb);
      }
      const float np = static_cast<float>(static_cast<double>(pi) - h.lr * d);
      if constexpr (kCheck) accumulate_nonfinite(acc, np);
      else new_p[i] = np;
    }
    if (kCheck && acc != acc) bad->store(true, std::memory_order_relaxed);
  });
}

template <bool kCheck, bool kDecay>
void sgd_dispatch(const KernelArgs& a, const SgdParams& h, bool first, bool nesterov, std::atomic<bool>* bad) {
  const float* p = a.in(0).as<float>();
  const float* g = a.in(1).as<float>();
  float* new_p = a.out(0).as<float>();
  const int64_t n = a.in(0).numel();
  if (h.mom == 0.0) return sgd_loop<kCheck, kDecay, false, false, false>(a, h, p, g, nullptr, new_p, nullptr, n, bad);
  const float* buf = a.in(3).as<float>();
  float* new_buf = a.out(1).as<float>();
  if (first && nesterov) sgd_loop<kCheck, kDecay, true, true, true>(a, h, p, g, buf, new_p, new_buf, n, bad);
  else if (first) sgd_loop<kCheck, kDecay, true, true, false>(a, h, p, g, buf, new_p, new_buf, n, bad);
  else if (nesterov) sgd_loop<kCheck, kDecay, true, false, true>(a, h, p, g, buf, new_p, new_buf, n, bad);
  else sgd_loop<kCheck, kDecay, true, false, false>(a, h, p, g, buf, new_p, new_buf, n, bad);
}

Status refuse_nonfinite_update() {
  return numeric_error("the update would write inf or NaN into the parameter or its optimizer state (a gradient "
                       "holds inf/NaN or overflowed, or the learning rate is too large); this parameter was not changed");
}

Status run_sgd(const KernelArgs& a) {
  const Attrs& at = a.attr();
  SgdParams h;
  h.mom = at.get_float("momentum");
  h.damp = 1.0 - at.get_float("dampening");
  h.sign = at.get_int("maximize", 0) ? -1.0 : 1.0;
  h.lr = static_cast<double>(*a.in(2).as<float>());
  h.mom_f = static_cast<float>(h.mom);
  const double wd = at.get_float("weight_decay");
  h.wd_f = static_cast<float>(wd);
  const bool nesterov = at.get_int("nesterov") != 0;
  // torch's first momentum step: buf = d, no dampening
  const bool first = h.mom != 0.0 && static_cast<double>(*a.in(4).as<float>()) <= 1.0;
  std::atomic<bool> bad{false};
  if (wd != 0.0) sgd_dispatch<true, true>(a, h, first, nesterov, &bad);
  else sgd_dispatch<true, false>(a, h, first, nesterov, &bad);
  if (bad.load() || !std::isfinite(h.lr)) return refuse_nonfinite_update();
  if (wd != 0.0) sgd_dispatch<false, true>(a, h, first, nesterov, &bad);
  else sgd_dispatch<false, false>(a, h, first, nesterov, &bad);
  return Status::Ok();
}

// ---- AdamW (torch.optim.AdamW: decoupled weight decay, bias-corrected moments) -----------------
Status check_adamw(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, "adamw_update", 6, 6, 3));
  ET_RETURN_IF_ERROR(want_attrs(a.attr(), {"beta1", "beta2", "eps", "weight_decay"}));
  const TensorView& p = a.in(0);
  if (p.dtype != DType::f32) return unimplemented("adamw_update param is " + p.shape_string() + "; this kernel takes f32");
  const char* names[6] = {"param", "grad", "lr", "exp_avg", "exp_avg_sq", "step"};
  for (int i : {1, 3, 4}) {
    ET_RETURN_IF_ERROR(cpu::want_same_dtype(names[i], a.in(i), p));
    ET_RETURN_IF_ERROR(cpu::want_same_shape(names[i], a.in(i), p));
  }
  ET_RETURN_IF_ERROR(want_scalar_f32("lr", a.in(2)));
  ET_RETURN_IF_ERROR(want_scalar_f32("step", a.in(5)));
  for (int i = 0; i < 3; ++i) {
    ET_RETURN_IF_ERROR(cpu::want_same_dtype("output", a.out(i), p));
    ET_RETURN_IF_ERROR(cpu::want_same_shape("output", a.out(i), p));
  }
  return Status::Ok();
}

// sqrt for v >= 0 that vectorizes (std::sqrt does not while it may set errno): the classic
// bit-level guess of 1/sqrt(v), within 3.5%, and four Newton steps (error squares each step:
// 2e-3, 5e-6, 3e-11, 1e-21), so the result is within a couple of ulp of the correctly rounded
// double and rounds to the same float. 0 stays 0, NaN stays NaN.
ET_VECTOR_INLINE double sqrt_nonneg(double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  bits = 0x5FE6EB50C7B537A9ull - (bits >> 1);
  double y;
  std::memcpy(&y, &bits, sizeof y);
  const double h = 0.5 * v;
  y = y * (1.5 - h * y * y);  // unrolled by hand: an inner loop blocks vectorizing the caller
  y = y * (1.5 - h * y * y);
  y = y * (1.5 - h * y * y);
  y = y * (1.5 - h * y * y);
  return v > 0.0 ? v * y : v;
}

Status run_adamw(const KernelArgs& a) {
  const Attrs& at = a.attr();
  const double b1 = at.get_float("beta1"), b2 = at.get_float("beta2"), eps = at.get_float("eps");
  const double wd = at.get_float("weight_decay");
  const double sign = at.get_int("maximize", 0) ? -1.0 : 1.0;
  const double lr = static_cast<double>(*a.in(2).as<float>());
  const double step = static_cast<double>(*a.in(5).as<float>());
  const float decay = static_cast<float>(1.0 - lr * wd);
  const float b2_f = static_cast<float>(b2);
  const double one_minus_b1 = 1.0 - b1, one_minus_b2 = 1.0 - b2;
  const double step_size = lr / (1.0 - std::pow(b1, step));
  const double sqrt_bc2 = std::sqrt(1.0 - std::pow(b2, step));
  const float* p = a.in(0).as<float>();
  const float* g = a.in(1).as<float>();
  const float* m = a.in(3).as<float>();
  const float* v = a.in(4).as<float>();
  float* new_p = a.out(0).as<float>();
  float* new_m = a.out(1).as<float>();
  float* new_v = a.out(2).as<float>();
  // Inputs are staged through stack blocks: with seven pointers that may alias (and do, when
  // the update is in place) the compiler gives up vectorizing; stack copies cannot alias.
  constexpr int64_t kBlock = 256;
  std::atomic<bool> bad{false};
  auto pass = [&](auto check_only) {
    constexpr bool kCheck = decltype(check_only)::value;
    cpu::parallel_for(a, a.in(0).numel(), cpu::kGrain, [&](int64_t b, int64_t e) {
      float lp[kBlock], lg[kBlock], lm[kBlock], lv[kBlock];
      float acc = 0.0f;
      for (int64_t i0 = b; i0 < e; i0 += kBlock) {
        const int64_t n = std::min(kBlock, e - i0);
        const size_t bytes = static_cast<size_t>(n) * sizeof(float);
        std::memcpy(lp, p + i0, bytes);
        std::memcpy(lg, g + i0, bytes);
        std::memcpy(lm, m + i0, bytes);
        std::memcpy(lv, v + i0, bytes);
        float* op = new_p + i0;
        float* om = new_m + i0;
        float* ov = new_v + i0;
        for (int64_t i = 0; i < n; ++i) {
          const double gi = sign * static_cast<double>(lg[i]);
          const double mi = static_cast<double>(lm[i]);
          const double pd = static_cast<double>(lp[i] * decay);
          const double m1 = mi + (gi - mi) * one_minus_b1;
          const double v1 = static_cast<double>(lv[i] * b2_f) + one_minus_b2 * gi * gi;
          const double denom = sqrt_nonneg(v1) / sqrt_bc2 + eps;
          const float np = static_cast<float>(pd - step_size * m1 / denom);
          if constexpr (kCheck) {
            accumulate_nonfinite(acc, np);
            accumulate_nonfinite(acc, static_cast<float>(m1));
            accumulate_nonfinite(acc, static_cast<float>(v1));
          } else {
            op[i] = np;
            om[i] = static_cast<float>(m1);
            ov[i] = static_cast<float>(v1);
          }
        }
      }
      if (kCheck && acc != acc) bad.store(true, std::memory_order_relaxed);
    });
  };
  pass(std::true_type{});
  if (bad.load() || !std::isfinite(lr)) return refuse_nonfinite_update();
  pass(std::false_type{});
  return Status::Ok();
}

}  // namespace

void register_optim_kernels(KernelRegistry& r) {
  r.add(KernelDef{"sgd_update", "sgd_update", &check_sgd, nullptr, &run_sgd});
  r.add(KernelDef{"adamw_update", "adamw_update", &check_adamw, nullptr, &run_adamw});
}

}  // namespace edgetune
