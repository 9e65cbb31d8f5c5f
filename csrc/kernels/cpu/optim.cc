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
// check pass reads what the update reads and writes nothing. Both settle almost every block with
// an f32 bound (sgd_provably_finite, adamw_provably_finite) instead of repeating the update's
// double arithmetic (and AdamW's square root and division), and run that exactly only on a block
// the bound cannot settle: this halved the optimizer's time on the main job's text model, and
// took ResNet-18 last-4's SGD from 18 ms/step (0.54x PyTorch's foreach update) to ~10.
//
// Arithmetic follows the reference's numpy promotion, so results match it to the bit but for
// the odd last-ulp difference where the compiler fuses a multiply-add or AdamW multiplies by
// 1 / sqrt(1 - beta2^t) instead of dividing: the gradient term runs in double, while a state
// tensor times a Python float (wd * p, momentum * buf, v * beta2, p * (1 - lr wd)) is an f32
// product in numpy, and so here. On x86 both kernels flush denormals to zero
// (DenormalsAreZero), where numpy keeps them: a difference below 1.2e-38.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <limits>
#if defined(__SSE__)
#include <xmmintrin.h>
#endif
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

// Flush-to-zero and denormals-are-zero on this thread while in scope (x86's MXCSR; elsewhere a
// no-op: ARM cores take denormals at full speed). Optimizer state decays geometrically where a
// gradient is zero (Adam's v by beta2, SGD's momentum by its factor: an embedding row whose token
// is not in the batch), so long runs fill it with denormals, and each x86 instruction that reads
// or makes one takes a microcode assist: the main job's text last-k spent 8.9 ms/step in
// adamw_update with them, 2.9 without. A value below FLT_MIN (1.2e-38) becomes 0, which moves an
// update by less than eps ever could; the check pass runs under the same flags, so it judges the
// arithmetic the update does.
class DenormalsAreZero {
 public:
#if defined(__SSE__)
  DenormalsAreZero() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | kFlushToZero | kDenormalsAreZero); }
  ~DenormalsAreZero() { _mm_setcsr(saved_); }

 private:
  static constexpr unsigned kFlushToZero = 0x8000, kDenormalsAreZero = 0x0040;
  unsigned saved_;
#else
  DenormalsAreZero() {}
#endif
  DenormalsAreZero(const DenormalsAreZero&) = delete;
  DenormalsAreZero& operator=(const DenormalsAreZero&) = delete;
};

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
  // the f32 bound's |coefficients| and limit; bound_usable false when they are not finite
  float abs_wd, abs_mom, abs_damp, abs_lr, limit;
  bool bound_usable;
};

// 1 when the update of this element is certainly finite: every magnitude along the way (|d|,
// |new buf|, the step, |new p|), bounded in f32 from |p|, |g|, |buf|, stays under FLT_MAX / 8, a
// margin that covers the bound's and the update's roundings. NaN and inf inputs fail the
// comparisons. 0 says only "not proven": the exact check then decides.
template <bool kMomentum, bool kFirst, bool kNesterov>
ET_VECTOR_INLINE int sgd_provably_finite(const SgdParams& h, float p, float g, float buf) {
  const float ap = p < 0.0f ? -p : p, ag = g < 0.0f ? -g : g;
  const float ad = ag + h.abs_wd * ap;
  int ok = (ap <= h.limit) & (ad <= h.limit);
  float step = ad;
  if constexpr (kMomentum) {
    const float ab = buf < 0.0f ? -buf : buf;
    const float anb = kFirst ? ad : h.abs_mom * ab + h.abs_damp * ad;
    ok &= (anb <= h.limit);
    step = kNesterov ? ad + h.abs_mom * anb : anb;
  }
  return ok & (step <= h.limit) & (ap + h.abs_lr * step <= h.limit);
}

// Adds 0 for a finite value and NaN for inf/NaN: `acc` stays 0 exactly while all are finite
// (a sum the compiler vectorizes, unlike a branch on std::isfinite).
ET_VECTOR_INLINE void accumulate_nonfinite(float& acc, float v) { acc += v - v; }

// Every flag is a template parameter so each variant is a branch-free, vectorizable loop.
// kCheck: compute without writing and set *bad when a result is not finite; blocks of
// kCheckBlock elements are first tried with the f32 bound, and only a block it cannot settle
// runs the exact arithmetic (sgd_range) without writing.
constexpr int64_t kCheckBlock = 512;

template <bool kCheck, bool kDecay, bool kMomentum, bool kFirst, bool kNesterov>
void sgd_range(const SgdParams& h, const float* p, const float* g, const float* buf, float* new_p, float* new_buf,
               int64_t b, int64_t e, std::atomic<bool>* bad);

template <bool kCheck, bool kDecay, bool kMomentum, bool kFirst, bool kNesterov>
void sgd_loop(const KernelArgs& a, const SgdParams& h, const float* p, const float* g, const float* buf,
              float* new_p, float* new_buf, int64_t n, std::atomic<bool>* bad) {
  cpu::parallel_for(a, n, cpu::kGrain, [&](int64_t b, int64_t e) {
    const DenormalsAreZero flush;
    if constexpr (!kCheck) {
      sgd_range<false, kDecay, kMomentum, kFirst, kNesterov>(h, p, g, buf, new_p, new_buf, b, e, bad);
    } else {
      for (int64_t i0 = b; i0 < e; i0 += kCheckBlock) {
        const int64_t i1 = std::min(e, i0 + kCheckBlock);
        int ok = h.bound_usable ? 1 : 0;
        if (ok)
          for (int64_t i = i0; i < i1; ++i)
            ok &= sgd_provably_finite<kMomentum, kFirst, kNesterov>(h, p[i], g[i], kMomentum ? buf[i] : 0.0f);
        if (!ok) sgd_range<true, kDecay, kMomentum, kFirst, kNesterov>(h, p, g, buf, new_p, new_buf, i0, i1, bad);
      }
    }
  });
}

// The update of elements [b, e) (kCheck: computed, not written; *bad set when one is not finite).
template <bool kCheck, bool kDecay, bool kMomentum, bool kFirst, bool kNesterov>
void sgd_range(const SgdParams& h, const float* p, const float* g, const float* buf, float* new_p, float* new_buf,
               int64_t b, int64_t e, std::atomic<bool>* bad) {
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
  h.abs_wd = std::fabs(h.wd_f);
  h.abs_mom = std::fabs(h.mom_f);
  h.abs_damp = static_cast<float>(std::fabs(h.damp));
  h.abs_lr = static_cast<float>(std::fabs(h.lr));
  h.limit = std::numeric_limits<float>::max() / 8.0f;
  h.bound_usable = std::isfinite(h.abs_lr) && std::isfinite(h.abs_damp) && std::isfinite(h.abs_mom);
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

// The update's arithmetic for one element, in the reference's precision (see the file header):
// the new parameter, first and second moment before their rounding to f32. `h` holds the
// per-step constants.
struct AdamwStep {
  double sign, one_minus_b1, one_minus_b2, step_size, inv_sqrt_bc2, eps;
  float decay, b2_f;
};
struct AdamwResult {
  double p, m, v;
};
ET_VECTOR_INLINE AdamwResult adamw_element(const AdamwStep& h, float p, float g, float m, float v) {
  const double gi = h.sign * static_cast<double>(g);
  const double mi = static_cast<double>(m);
  const double m1 = mi + (gi - mi) * h.one_minus_b1;
  const double v1 = static_cast<double>(v * h.b2_f) + h.one_minus_b2 * gi * gi;
  // sqrt(v1) / sqrt(1 - b2^t) as a product with the reciprocal: within an ulp of the
  // reference's quotient in double, far below the f32 rounding the result gets.
  const double denom = std::sqrt(v1) * h.inv_sqrt_bc2 + h.eps;
  return {static_cast<double>(p * h.decay) - h.step_size * m1 / denom, m1, v1};
}

// The conservative f32 test that lets the check pass skip the double arithmetic (and its
// square root and division, which made the check as costly as the update): true only where the
// update provably writes finite values, i.e. every input is finite and
//   |p * decay| <= L,   |m1| <= L,   v1 <= L,   term = step_size * |m1| / denom <= L
// with L = FLT_MAX / 8, so |new p| <= 2L (plus rounding) stays far from overflow. With
// t = step_size |m1|, term <= L if t <= L eps (denom >= eps), or if t <= 1e18 and
// t^2 <= L v1 / (1 - b2^t) (denom >= sqrt(v1 / (1 - b2^t)), and L > 1), tested without a square
// root or a division; t <= 1e18 keeps t^2 finite, so an inf on the right is a true bound, never an
// inf <= inf tie. f32 rounding moves each quantity by a few ulp, far inside the factor-8 margin;
// NaN fails every comparison and inf fails the bounds, so anything unusual falls to the exact
// check. Under DenormalsAreZero a flushed |m1| or |p decay| is off by < 1.2e-38, which the
// usable-bound limits on step_size and eps keep far below L. The result is an int so the loop
// stays a branch-free, vectorizable reduction.
struct AdamwBound {
  float sign, one_minus_b1, one_minus_b2, decay, b2, step_size, limit, limit_times_eps, limit_over_bc2;
};
ET_VECTOR_INLINE int adamw_provably_finite(const AdamwBound& b, float p, float g, float m, float v) {
  const float gi = b.sign * g;
  const float m1 = m + (gi - m) * b.one_minus_b1;
  const float v1 = v * b.b2 + b.one_minus_b2 * gi * gi;
  const float pd = p * b.decay;
  const float am = m1 < 0.0f ? -m1 : m1;
  const float apd = pd < 0.0f ? -pd : pd;
  const float t = b.step_size * am;
  const bool term_ok = (t <= b.limit_times_eps) | ((t <= 1e18f) & (t * t <= v1 * b.limit_over_bc2));
  return (apd <= b.limit) & (am <= b.limit) & (v1 >= 0.0f) & (v1 <= b.limit) & term_ok;
}

Status run_adamw(const KernelArgs& a) {
  const Attrs& at = a.attr();
  const double b1 = at.get_float("beta1"), b2 = at.get_float("beta2"), eps = at.get_float("eps");
  const double wd = at.get_float("weight_decay");
  const double lr = static_cast<double>(*a.in(2).as<float>());
  const double step = static_cast<double>(*a.in(5).as<float>());
  AdamwStep h;
  h.sign = at.get_int("maximize", 0) ? -1.0 : 1.0;
  h.decay = static_cast<float>(1.0 - lr * wd);
  h.b2_f = static_cast<float>(b2);
  h.one_minus_b1 = 1.0 - b1;
  h.one_minus_b2 = 1.0 - b2;
  h.step_size = lr / (1.0 - std::pow(b1, step));
  const double bc2 = 1.0 - std::pow(b2, step);
  h.inv_sqrt_bc2 = 1.0 / std::sqrt(bc2);
  h.eps = eps;
  if (!std::isfinite(lr) || !std::isfinite(h.step_size) || !std::isfinite(h.inv_sqrt_bc2))
    return refuse_nonfinite_update();
  constexpr float kLimit = std::numeric_limits<float>::max() / 8.0f;
  AdamwBound bound;
  bound.sign = static_cast<float>(h.sign);
  bound.one_minus_b1 = static_cast<float>(h.one_minus_b1);
  bound.one_minus_b2 = static_cast<float>(h.one_minus_b2);
  bound.decay = h.decay;
  bound.b2 = h.b2_f;
  bound.step_size = static_cast<float>(h.step_size);
  bound.limit = kLimit;
  bound.limit_times_eps = static_cast<float>(std::min(kLimit * eps, static_cast<double>(kLimit)));
  bound.limit_over_bc2 = static_cast<float>(std::min(kLimit / bc2, static_cast<double>(kLimit)));
  // Outside these ranges the bound proves nothing (or a flushed denormal could matter): every
  // block takes the exact check.
  const bool bound_usable = b1 >= 0.0 && b1 <= 1.0 && b2 >= 0.0 && b2 <= 1.0 && std::isfinite(bound.decay) &&
                            h.step_size >= 0.0 && h.step_size <= 1e30 && eps >= 1e-30 && bc2 > 0.0;
  const float* p = a.in(0).as<float>();
  const float* g = a.in(1).as<float>();
  const float* m = a.in(3).as<float>();
  const float* v = a.in(4).as<float>();
  float* new_p = a.out(0).as<float>();
  float* new_m = a.out(1).as<float>();
  float* new_v = a.out(2).as<float>();
  const int64_t n = a.in(0).numel();
  // Inputs are staged through stack blocks: with seven pointers that may alias (and do, when
  // the update is in place) the compiler gives up vectorizing; stack copies cannot alias.
  constexpr int64_t kBlock = 256;
  // Check pass: nothing is written until every element is known to update to finite values, so
  // a refused step leaves the parameter and its moments as they were. The f32 bound settles
  // nearly every block with a few multiplies per element; a block it cannot settle (huge state,
  // huge lr, a non-finite input) runs the update's exact arithmetic without writing.
  std::atomic<bool> bad{false};
  cpu::parallel_for(a, n, cpu::kGrain, [&](int64_t b, int64_t e) {
    const DenormalsAreZero flush;
    for (int64_t i0 = b; i0 < e; i0 += kBlock) {
      const int64_t len = std::min(kBlock, e - i0);
      const float *bp = p + i0, *bg = g + i0, *bm = m + i0, *bv = v + i0;
      int ok = bound_usable ? 1 : 0;
      if (ok)
        for (int64_t i = 0; i < len; ++i) ok &= adamw_provably_finite(bound, bp[i], bg[i], bm[i], bv[i]);
      if (ok) continue;
      float acc = 0.0f;
      for (int64_t i = 0; i < len; ++i) {
        const AdamwResult r = adamw_element(h, bp[i], bg[i], bm[i], bv[i]);
        accumulate_nonfinite(acc, static_cast<float>(r.p));
        accumulate_nonfinite(acc, static_cast<float>(r.m));
        accumulate_nonfinite(acc, static_cast<float>(r.v));
      }
      if (acc != acc) {
        bad.store(true, std::memory_order_relaxed);
        return;
      }
    }
  });
  if (bad.load()) return refuse_nonfinite_update();
  cpu::parallel_for(a, n, cpu::kGrain, [&](int64_t b, int64_t e) {
    const DenormalsAreZero flush;
    float lp[kBlock], lg[kBlock], lm[kBlock], lv[kBlock];
    for (int64_t i0 = b; i0 < e; i0 += kBlock) {
      const int64_t len = std::min(kBlock, e - i0);
      const size_t bytes = static_cast<size_t>(len) * sizeof(float);
      std::memcpy(lp, p + i0, bytes);
      std::memcpy(lg, g + i0, bytes);
      std::memcpy(lm, m + i0, bytes);
      std::memcpy(lv, v + i0, bytes);
      float* op = new_p + i0;
      float* om = new_m + i0;
      float* ov = new_v + i0;
      for (int64_t i = 0; i < len; ++i) {
        const AdamwResult r = adamw_element(h, lp[i], lg[i], lm[i], lv[i]);
        op[i] = static_cast<float>(r.p);
        om[i] = static_cast<float>(r.m);
        ov[i] = static_cast<float>(r.v);
      }
    }
  });
  return Status::Ok();
}

}  // namespace

void register_optim_kernels(KernelRegistry& r) {
  r.add(KernelDef{"sgd_update", "sgd_update", &check_sgd, nullptr, &run_sgd});
  r.add(KernelDef{"adamw_update", "adamw_update", &check_adamw, nullptr, &run_adamw});
}

}  // namespace edgetune
