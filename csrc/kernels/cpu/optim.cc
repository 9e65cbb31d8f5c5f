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
// Arithmetic follows the reference's numpy promotion so results match it to the last bit where
// that costs nothing: the gradient term runs in double, while a state tensor times a Python
// float (wd * p, momentum * buf, v * beta2, p * (1 - lr wd)) is an f32 product in numpy.
#include <cmath>
#include <string>

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

template <bool kMomentum, bool kNesterov>
void sgd_loop(const KernelArgs& a, const float* p, const float* g, const float* buf, float* new_p, float* new_buf,
              int64_t n, double lr, float wd, bool decay, double sign, float mom_f, double mom, double damp,
              bool first) {
  cpu::parallel_for(a, n, cpu::kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const float pi = p[i];
      double d = sign * static_cast<double>(g[i]);
      if (decay) d += static_cast<double>(wd * pi);
      if constexpr (kMomentum) {
        const double nb = first ? d : static_cast<double>(mom_f * buf[i]) + damp * d;
        d = kNesterov ? d + mom * nb : nb;
        new_buf[i] = static_cast<float>(nb);
      }
      new_p[i] = static_cast<float>(static_cast<double>(pi) - lr * d);
    }
  });
}

Status run_sgd(const KernelArgs& a) {
  const Attrs& at = a.attr();
  const double mom = at.get_float("momentum"), damp = 1.0 - at.get_float("dampening");
  const double wd = at.get_float("weight_decay");
  const bool nesterov = at.get_int("nesterov") != 0;
  const double sign = at.get_int("maximize", 0) ? -1.0 : 1.0;
  const TensorView &p = a.in(0), &g = a.in(1);
  const double lr = static_cast<double>(*a.in(2).as<float>());
  const int64_t n = p.numel();
  if (mom == 0.0) {
    sgd_loop<false, false>(a, p.as<float>(), g.as<float>(), nullptr, a.out(0).as<float>(), nullptr, n, lr,
                           static_cast<float>(wd), wd != 0.0, sign, 0.0f, 0.0, 0.0, false);
    return Status::Ok();
  }
  const bool first = static_cast<double>(*a.in(4).as<float>()) <= 1.0;
  const float* buf = a.in(3).as<float>();
  float* new_buf = a.out(1).as<float>();
  if (nesterov)
    sgd_loop<true, true>(a, p.as<float>(), g.as<float>(), buf, a.out(0).as<float>(), new_buf, n, lr,
                         static_cast<float>(wd), wd != 0.0, sign, static_cast<float>(mom), mom, damp, first);
  else
    sgd_loop<true, false>(a, p.as<float>(), g.as<float>(), buf, a.out(0).as<float>(), new_buf, n, lr,
                          static_cast<float>(wd), wd != 0.0, sign, static_cast<float>(mom), mom, damp, first);
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
  cpu::parallel_for(a, a.in(0).numel(), cpu::kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const double gi = sign * static_cast<double>(g[i]);
      const double mi = static_cast<double>(m[i]);
      const double pd = static_cast<double>(p[i] * decay);
      const double m1 = mi + (gi - mi) * one_minus_b1;
      const double v1 = static_cast<double>(v[i] * b2_f) + one_minus_b2 * gi * gi;
      const double denom = std::sqrt(v1) / sqrt_bc2 + eps;
      new_p[i] = static_cast<float>(pd - step_size * m1 / denom);
      new_m[i] = static_cast<float>(m1);
      new_v[i] = static_cast<float>(v1);
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
