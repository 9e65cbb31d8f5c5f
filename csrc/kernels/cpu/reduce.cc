// CPU kernels for compiler/ops/reduce.py: sum and mean over an explicit, sorted list of dims.
//
// Both run on cpu::Reduction (broadcast.h): float sums accumulate in double, integer sums in
// int64, and the result is the same for any thread count. keepdim changes the output shape but
// not its memory layout, so it needs no code.
#include <string>

#include "core/kernel.h"
#include "kernels/cpu/broadcast.h"
#include "kernels/cpu/cpu_util.h"

namespace edgetune {
namespace {

template <bool kMean>
Status check_reduce(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, kMean ? "mean" : "sum", 1, 1, 1));
  const TensorView &x = a.in(0), &out = a.out(0);
  ET_RETURN_IF_ERROR(kMean ? cpu::want_float("input", x) : cpu::want_arith("input", x));
  ET_RETURN_IF_ERROR(cpu::want_same_dtype("output", out, x));
  bool reduced[kMaxRank];
  if (!cpu::reduced_dims(a, reduced))
    return invalid_argument("reduce dims do not take " + x.shape_string() + " to " + out.shape_string());
  return Status::Ok();
}

size_t workspace_reduce(const KernelArgs& a) {
  bool reduced[kMaxRank];
  if (!cpu::reduced_dims(a, reduced)) return 0;
  cpu::Reduction red;
  red.init(a.in(0), reduced);
  return red.workspace_bytes();
}

template <bool kMean>
Status run_reduce(const KernelArgs& a) {
  const TensorView &x = a.in(0), &out = a.out(0);
  bool reduced[kMaxRank];
  if (!cpu::reduced_dims(a, reduced)) return internal_error("reduce: shapes changed after check");
  cpu::Reduction red;
  red.init(x, reduced);
  auto body = [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (kMean) {
      // an empty mean is 0/0 = NaN, as in numpy
      const double count = static_cast<double>(red.reduced_numel());
      red.run(a, x.as<T>(), out.as<T>(), a.workspace, [count](double acc) { return static_cast<T>(acc / count); });
    } else {
      red.run(a, x.as<T>(), out.as<T>(), a.workspace, [](auto acc) { return static_cast<T>(acc); });
    }
  };
  bool ok;
  if constexpr (kMean) ok = cpu::visit_float(x.dtype, body);
  else ok = cpu::visit_arith(x.dtype, body);
  return ok ? Status::Ok() : internal_error("reduce: dtype not dispatched");
}

}  // namespace

void register_reduce_kernels(KernelRegistry& r) {
  r.add(KernelDef{"sum", "sum", &check_reduce<false>, &workspace_reduce, &run_reduce<false>});
  r.add(KernelDef{"mean", "mean", &check_reduce<true>, &workspace_reduce, &run_reduce<true>});
}

}  // namespace edgetune
