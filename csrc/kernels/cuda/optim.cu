// CUDA kernels for compiler/ops/optim.py (kernels/cpu/optim.cc on the device): sgd_update (momentum,
// dampening, nesterov, weight decay, maximize; torch's first momentum step) and adamw_update
// (decoupled weight decay, bias-corrected moments). lr and step are f32 scalars in device memory,
// read by the kernel (a schedule changes them between graph replays). The arithmetic follows the
// CPU term by term (gradient terms in double, state-times-constant products in f32); outputs may be
// the inputs' buffers: each element is read before it is written, by one thread.
//
// Non-finite guard (the CPU's, kernels/cpu/optim.cc, on the device; contract in cuda_context.h):
// each kernel is a template on kCheck. With a guard (ctx->update_guard), run() first launches the
// check pass (kCheck: the same arithmetic, nothing written), which sets the guard to ctx->node_tag
// by atomicCAS from 0 when any new parameter or state value would be inf/NaN or lr is not finite,
// then the update pass, which writes nothing while the guard is set. The host cannot be told from
// run() without a sync, so the runtime reads the guard back after the step: a set guard means this
// update and every later one of the step wrote nothing (they all see it), the earlier ones did.
#include <cmath>

#include "kernels/cuda/cuda_util.h"

namespace edgetune {
namespace cuda {
namespace {

struct Sgd {
  double sign, mom, damp;
  float wd_f, mom_f;
  bool decay, nesterov;
};

// Sets the guard to `tag` unless an earlier refusal already did (the first one wins).
__device__ inline void refuse(unsigned int* guard, unsigned int tag) { atomicCAS(guard, 0u, tag); }

template <bool kCheck>
__global__ void sgd_kernel(const float* p, const float* g, const float* lr_p, const float* buf, const float* step_p,
                           float* new_p, float* new_buf, int64_t n, Sgd h, unsigned int* guard, unsigned int tag) {
  if (guard && *guard) return;  // this or an earlier update of the step refused: write nothing
  const double lr = static_cast<double>(*lr_p);
  if (kCheck && !isfinite(lr)) {
    if (blockIdx.x == 0 && threadIdx.x == 0) refuse(guard, tag);
    return;
  }
  const bool momentum = h.mom != 0.0;
  const bool first = momentum && static_cast<double>(*step_p) <= 1.0;
  ET_GRID_LOOP(i, n) {
    const float pi = p[i];
    double d = h.sign * static_cast<double>(g[i]);
    if (h.decay) d += static_cast<double>(h.wd_f * pi);
    if (momentum) {
      double nb = d;
      if (!first) nb = static_cast<double>(h.mom_f * buf[i]) + h.damp * d;
      d = h.nesterov ? d + h.mom * nb : nb;
      if (kCheck) {
        if (!isfinite(static_cast<float>(nb))) refuse(guard, tag);
      } else {
        new_buf[i] = static_cast<float>(nb);
      }
    }
    const float np = static_cast<float>(static_cast<double>(pi) - lr * d);
    if (kCheck) {
      if (!isfinite(np)) refuse(guard, tag);
    } else {
      new_p[i] = np;
    }
  }
}

Status run_sgd(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  const Attrs& at = a.attr();
  Sgd h;
  h.mom = at.get_float("momentum");
  h.damp = 1.0 - at.get_float("dampening");
  h.sign = at.get_int("maximize", 0) ? -1.0 : 1.0;
  h.mom_f = static_cast<float>(h.mom);
  const double wd = at.get_float("weight_decay");
  h.wd_f = static_cast<float>(wd);
  h.decay = wd != 0.0;
  h.nesterov = at.get_int("nesterov") != 0;
  const int64_t n = a.in(0).numel();
  unsigned int* guard = ctx->update_guard;
  if (n == 0 && !guard) return Status::Ok();  // with a guard, an empty update still refuses a non-finite lr (as the CPU)
  const unsigned int tag = ctx->node_tag ? ctx->node_tag : ~0u;  // never 0: 0 means "no refusal"
  const bool m = h.mom != 0.0;
  const float* buf = m ? a.in(3).as<float>() : nullptr;
  const float* step = m ? a.in(4).as<float>() : nullptr;
  float* new_buf = m ? a.out(1).as<float>() : nullptr;
  if (guard) {
    sgd_kernel<true><<<grid_for(n), kBlock, 0, ctx->stream>>>(a.in(0).as<float>(), a.in(1).as<float>(), a.in(2).as<float>(),
                                                              buf, step, a.out(0).as<float>(), new_buf, n, h, guard, tag);
    ET_CUDA_LAUNCHED("sgd_update (check)");
  }
  sgd_kernel<false><<<grid_for(n), kBlock, 0, ctx->stream>>>(a.in(0).as<float>(), a.in(1).as<float>(), a.in(2).as<float>(),
                                                             buf, step, a.out(0).as<float>(), new_buf, n, h, guard, tag);
  ET_CUDA_LAUNCHED("sgd_update");
  return Status::Ok();
}

struct Adam {
  double b1, b2, eps, wd, sign;
};

template <bool kCheck>
__global__ void adamw_kernel(const float* p, const float* g, const float* lr_p, const float* m, const float* v,
                             const float* step_p, float* new_p, float* new_m, float* new_v, int64_t n, Adam h,
                             unsigned int* guard, unsigned int tag) {
  if (guard && *guard) return;  // this or an earlier update of the step refused: write nothing
  const double lr = static_cast<double>(*lr_p), step = static_cast<double>(*step_p);
  if (kCheck && !isfinite(lr)) {
    if (blockIdx.x == 0 && threadIdx.x == 0) refuse(guard, tag);
    return;
  }
  const float decay = static_cast<float>(1.0 - lr * h.wd);
  const float b2_f = static_cast<float>(h.b2);
  const double one_minus_b1 = 1.0 - h.b1, one_minus_b2 = 1.0 - h.b2;
  const double step_size = lr / (1.0 - pow(h.b1, step));
  const double sqrt_bc2 = sqrt(1.0 - pow(h.b2, step));
  ET_GRID_LOOP(i, n) {
    const float pi = p[i], gi_f = g[i], mi_f = m[i], vi_f = v[i];
    const double gi = h.sign * static_cast<double>(gi_f);
    const double mi = static_cast<double>(mi_f);
    const double pd = static_cast<double>(pi * decay);
    const double m1 = mi + (gi - mi) * one_minus_b1;
    const double v1 = static_cast<double>(vi_f * b2_f) + one_minus_b2 * gi * gi;
    const double denom = sqrt(v1) / sqrt_bc2 + h.eps;
    const float np = static_cast<float>(pd - step_size * m1 / denom);
    if (kCheck) {
      if (!isfinite(np) || !isfinite(static_cast<float>(m1)) || !isfinite(static_cast<float>(v1))) refuse(guard, tag);
    } else {
      new_p[i] = np;
      new_m[i] = static_cast<float>(m1);
      new_v[i] = static_cast<float>(v1);
    }
  }
}

Status run_adamw(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  const Attrs& at = a.attr();
  Adam h{at.get_float("beta1"), at.get_float("beta2"), at.get_float("eps"), at.get_float("weight_decay"),
         at.get_int("maximize", 0) ? -1.0 : 1.0};
  const int64_t n = a.in(0).numel();
  unsigned int* guard = ctx->update_guard;
  if (n == 0 && !guard) return Status::Ok();
  const unsigned int tag = ctx->node_tag ? ctx->node_tag : ~0u;
  if (guard) {
    adamw_kernel<true><<<grid_for(n), kBlock, 0, ctx->stream>>>(
        a.in(0).as<float>(), a.in(1).as<float>(), a.in(2).as<float>(), a.in(3).as<float>(), a.in(4).as<float>(),
        a.in(5).as<float>(), a.out(0).as<float>(), a.out(1).as<float>(), a.out(2).as<float>(), n, h, guard, tag);
    ET_CUDA_LAUNCHED("adamw_update (check)");
  }
  adamw_kernel<false><<<grid_for(n), kBlock, 0, ctx->stream>>>(
      a.in(0).as<float>(), a.in(1).as<float>(), a.in(2).as<float>(), a.in(3).as<float>(), a.in(4).as<float>(),
      a.in(5).as<float>(), a.out(0).as<float>(), a.out(1).as<float>(), a.out(2).as<float>(), n, h, guard, tag);
  ET_CUDA_LAUNCHED("adamw_update");
  return Status::Ok();
}

}  // namespace

void register_optim_kernels(KernelRegistry& r) {
  add_like_cpu(r, "sgd_update", "sgd_update", nullptr, &run_sgd);
  add_like_cpu(r, "adamw_update", "adamw_update", nullptr, &run_adamw);
}

}  // namespace cuda
}  // namespace edgetune
