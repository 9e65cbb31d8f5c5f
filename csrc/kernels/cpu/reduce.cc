// CPU kernels for compiler/ops/reduce.py: sum and mean over an explicit, sorted list of dims.
//
// Both run on cpu::Reduction (broadcast.h): float sums accumulate in double, integer sums in
// int64, and the result is the same for any thread count. keepdim changes the output shape but
// not its memory layout, so it needs no code.
//
// f32 column sums (the reduced dims lead, the kept dims trail: x is [R, C] and out[c] sums
// column c; every bias gradient of a linear layer) take column_sums below instead: Reduction's
// 256-wide tiles keep their double accumulators in memory and gave a [256, 384] input two work
// items, 2x slower than PyTorch (the text model: 37 such sums a step). column_sums keeps a strip
// of 64 columns in double registers, adds rows in groups of 4 in float first (one conversion per
// group: error at most 3u, u = 2^-24, of the group's absolute sum, below what numpy's own f32 sum
// costs), and gives each thread whole strips: every column adds its rows in one order, fixed by
// the shape, whatever the thread count.
#include <algorithm>
#include <cstring>
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

bool as_columns(const TensorView& x, const bool* reduced, int64_t* R, int64_t* C);
bool use_column_sums(int64_t R, int64_t C);

size_t workspace_reduce(const KernelArgs& a) {
  bool reduced[kMaxRank];
  if (!cpu::reduced_dims(a, reduced)) return 0;
  int64_t R, C;
  if (a.in(0).dtype == DType::f32 && as_columns(a.in(0), reduced, &R, &C) && use_column_sums(R, C)) return 0;
  cpu::Reduction red;
  red.init(a.in(0), reduced);
  return red.workspace_bytes();
}

// ---- f32 column sums ------------------------------------------------------------------------
// x as [R, C] with the reduced dims leading and the kept ones trailing (size-1 dims ignored);
// false for any other split.
bool as_columns(const TensorView& x, const bool* reduced, int64_t* R, int64_t* C) {
  int64_t r = 1, c = 1;
  bool kept_seen = false;
  for (int d = 0; d < x.rank; ++d) {
    if (x.shape[d] == 1) continue;
    if (reduced[d]) {
      if (kept_seen) return false;
      r *= x.shape[d];
    } else {
      kept_seen = true;
      c *= x.shape[d];
    }
  }
  *R = r;
  *C = c;
  return true;
}

constexpr int64_t kStrip = 64;     // columns per task, held in double registers
constexpr int64_t kRowGroup = 4;   // rows added in float before the group goes into double
constexpr int64_t kMinStrips = 16; // fewer strips than this on a big input: Reduction splits rows instead

// Column sums are worth this path when they keep the threads busy with whole strips, or when the
// input is small enough that Reduction would not split its rows either.
bool use_column_sums(int64_t R, int64_t C) {
  if (R == 0 || C < 8) return false;
  const int64_t strips = (C + kStrip - 1) / kStrip;
  return strips >= kMinStrips || R * C < 2 * cpu::Reduction::kChunkElems;
}

typedef float F8 __attribute__((vector_size(32)));
typedef double D8 __attribute__((vector_size(64)));

inline F8 load8(const float* p) {
  F8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// One strip [c0, c0 + n): out[c] = finish(sum over rows of x[r, c]), rows in groups of kRowGroup
// added in float as ((x0 + x1) + x2) + x3, then into the double sum; left-over rows one by one.
// Written with vector types (GCC/Clang vector extensions, plain code where the target has none)
// since GCC does not vectorize the float -> double step of a lane loop.
template <typename Finish>
void column_strip(const float* x, int64_t R, int64_t C, int64_t c0, int64_t n, float* out, const Finish& finish) {
  if (n == kStrip) {
    constexpr int kV = kStrip / 8;
    D8 acc[kV];
    for (int v = 0; v < kV; ++v) acc[v] = D8{0, 0, 0, 0, 0, 0, 0, 0};
    int64_t r = 0;
    for (; r + kRowGroup <= R; r += kRowGroup) {
      const float* p = x + r * C + c0;
      for (int v = 0; v < kV; ++v) {
        const F8 f = ((load8(p + 8 * v) + load8(p + C + 8 * v)) + load8(p + 2 * C + 8 * v)) + load8(p + 3 * C + 8 * v);
        acc[v] += __builtin_convertvector(f, D8);
      }
    }
    for (; r < R; ++r)
      for (int v = 0; v < kV; ++v) acc[v] += __builtin_convertvector(load8(x + r * C + c0 + 8 * v), D8);
    for (int v = 0; v < kV; ++v)
      for (int l = 0; l < 8; ++l) out[c0 + 8 * v + l] = finish(acc[v][l]);
    return;
  }
  // a last, narrower strip: the same order, one column at a time
  for (int64_t c = c0; c < c0 + n; ++c) {
    const float* p = x + c;
    double acc = 0;
    int64_t r = 0;
    for (; r + kRowGroup <= R; r += kRowGroup)
      acc += ((p[r * C] + p[(r + 1) * C]) + p[(r + 2) * C]) + p[(r + 3) * C];
    for (; r < R; ++r) acc += p[r * C];
    out[c] = finish(acc);
  }
}

template <typename Finish>
void column_sums(const KernelArgs& a, const float* x, float* out, int64_t R, int64_t C, const Finish& finish) {
  const int64_t strips = (C + kStrip - 1) / kStrip;
  const int64_t grain = std::max<int64_t>(1, cpu::kGrain / std::max<int64_t>(1, R * kStrip));
  cpu::parallel_for(a, strips, grain, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s) {
      const int64_t c0 = s * kStrip;
      column_strip(x, R, C, c0, std::min(kStrip, C - c0), out, finish);
    }
  });
}

template <bool kMean>
Status run_reduce(const KernelArgs& a) {
  const TensorView &x = a.in(0), &out = a.out(0);
  bool reduced[kMaxRank];
  if (!cpu::reduced_dims(a, reduced)) return internal_error("reduce: shapes changed after check");
  int64_t R, C;
  if (x.dtype == DType::f32 && as_columns(x, reduced, &R, &C) && use_column_sums(R, C)) {
    const double count = static_cast<double>(R);
    if constexpr (kMean) {
      column_sums(a, x.as<float>(), out.as<float>(), R, C, [count](double acc) { return static_cast<float>(acc / count); });
    } else {
      column_sums(a, x.as<float>(), out.as<float>(), R, C, [](double acc) { return static_cast<float>(acc); });
    }
    return Status::Ok();
  }
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
