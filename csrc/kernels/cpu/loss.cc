// CPU kernels for compiler/ops/loss.py: cross_entropy (class indices, ignore_index, label
// smoothing), nll_loss, their backward ops, and mse_loss.
//
// Like the reference, every loss is computed in double and rounded once at the end. Rows run in
// parallel; a reduced loss first stores its per-row terms in the workspace and then adds them in
// row order (mse_loss: per fixed chunk), so the loss is the same for any thread count.
// Attributes: reduction "mean" (default) | "sum" | "none"; ignore_index (default -100);
// label_smoothing (default 0). A target that is neither ignore_index nor in [0, C) fails the
// step with an error.
#include <algorithm>
#include <cmath>
#include <string>

#include "core/kernel.h"
#include "kernels/cpu/cpu_util.h"

namespace edgetune {
namespace {

enum class Reduction { kMean, kSum, kNone };

bool read_reduction(const Attrs& at, Reduction* r) {
  if (!at.has("reduction")) {
    *r = Reduction::kMean;
    return true;
  }
  const std::string& s = at.get_string("reduction");
  if (s == "mean") *r = Reduction::kMean;
  else if (s == "sum") *r = Reduction::kSum;
  else if (s == "none") *r = Reduction::kNone;
  else return false;
  return true;
}

Status check_reduction(const KernelArgs& a, Reduction* r) {
  if (!read_reduction(a.attr(), r))
    return invalid_argument("unknown reduction '" + a.attr().get_string("reduction") + "'");
  return Status::Ok();
}

Reduction reduction_of(const KernelArgs& a) {
  Reduction r = Reduction::kMean;
  (void)read_reduction(a.attr(), &r);
  return r;
}

// The loss output: [n] for reduction "none", a scalar otherwise.
Status check_loss_output(const TensorView& out, Reduction r, int64_t n) {
  bool ok = r == Reduction::kNone ? (out.rank == 1 && out.shape[0] == n) : out.numel() == 1;
  if (!ok) return invalid_argument("loss output " + out.shape_string() + " does not fit the reduction");
  return Status::Ok();
}

int64_t target_at(const TensorView& t, int64_t i) {
  return t.dtype == DType::i64 ? t.as<int64_t>()[i] : static_cast<int64_t>(t.as<int32_t>()[i]);
}

// Checks every target; returns the reference's denominator (valid count, at least 1, for
// "mean"; 1 otherwise) or -1 - (position of the first bad target).
int64_t validate_targets(const TensorView& t, int64_t classes, int64_t ignore, Reduction r) {
  int64_t valid = 0;
  for (int64_t i = 0; i < t.numel(); ++i) {
    int64_t c = target_at(t, i);
    if (c == ignore) continue;
    if (c < 0 || c >= classes) return -1 - i;
    ++valid;
  }
  return r == Reduction::kMean ? std::max<int64_t>(valid, 1) : 1;
}

Status bad_target(const TensorView& t, int64_t code, int64_t classes) {
  int64_t i = -1 - code;
  return invalid_argument("target " + std::to_string(target_at(t, i)) + " at row " + std::to_string(i) +
                          " is outside [0, " + std::to_string(classes) + ") and not ignore_index");
}

// What every class-index loss kernel reads before it runs: ignore_index, the reduction, and the
// denominator of "mean" (validate_targets). A target outside [0, C) is an error naming its row.
struct ClassTargets {
  int64_t ignore = -100;
  Reduction r = Reduction::kMean;
  int64_t denom = 1;
};

Status read_class_targets(const KernelArgs& a, const TensorView& target, int64_t classes, ClassTargets* t) {
  t->ignore = a.attr().get_int("ignore_index", -100);
  t->r = reduction_of(a);
  t->denom = validate_targets(target, classes, t->ignore, t->r);
  if (t->denom < 0) return bad_target(target, t->denom, classes);
  return Status::Ok();
}

Status check_class_inputs(const KernelArgs& a, const TensorView& scores, const TensorView& target) {
  ET_RETURN_IF_ERROR(cpu::want_float("scores", scores));
  ET_RETURN_IF_ERROR(cpu::want_index("targets", target));
  if (scores.rank != 2 || target.rank != 1 || target.shape[0] != scores.shape[0])
    return invalid_argument("class-index loss wants [N, C] scores and [N] targets, got " + scores.shape_string() +
                            " and " + target.shape_string());
  return Status::Ok();
}

// Adds the first n doubles in order.
double ordered_sum(const double* v, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += v[i];
  return s;
}

// ---- cross_entropy(logits [N, C], target [N]) --------------------------------------------------
Status check_cross_entropy(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, "cross_entropy", 2, 2, 1));
  ET_RETURN_IF_ERROR(check_class_inputs(a, a.in(0), a.in(1)));
  ET_RETURN_IF_ERROR(cpu::want_same_dtype("output", a.out(0), a.in(0)));
  Reduction r;
  ET_RETURN_IF_ERROR(check_reduction(a, &r));
  return check_loss_output(a.out(0), r, a.in(0).shape[0]);
}

size_t workspace_per_row(const KernelArgs& a) {
  return reduction_of(a) == Reduction::kNone ? 0 : static_cast<size_t>(a.in(0).shape[0]) * sizeof(double);
}

constexpr int kLanes = 8;

// Sum in double over a fixed lane pattern: vectorizable, and the order depends on c alone.
template <typename T, typename F>
double lane_sum(const T* x, int64_t c, const F& f) {
  double acc[kLanes] = {0};
  int64_t j = 0;
  for (; j + kLanes <= c; j += kLanes)
    for (int k = 0; k < kLanes; ++k) acc[k] += static_cast<double>(f(x[j + k]));
  for (; j < c; ++j) acc[0] += static_cast<double>(f(x[j]));
  double s = 0;
  for (int k = 0; k < kLanes; ++k) s += acc[k];
  return s;
}

// Softmax statistics of a row: its max m and s = sum exp(x - m), summed in double. exp runs in
// the row's dtype (the vectorized float exp for f32, within 2 ulp): a relative error of ~1e-7
// in the loss, against the reference's float64.
template <typename T>
struct RowStats {
  T m;
  double s;
  RowStats(const T* x, int64_t c) {
    T lane[kLanes];  // lane-wise max: a plain max chain does not vectorize
    for (int k = 0; k < kLanes; ++k) lane[k] = x[0];
    int64_t j = 0;
    for (; j + kLanes <= c; j += kLanes)
      for (int k = 0; k < kLanes; ++k) lane[k] = x[j + k] > lane[k] ? x[j + k] : lane[k];
    for (; j < c; ++j) lane[0] = x[j] > lane[0] ? x[j] : lane[0];
    m = lane[0];
    for (int k = 1; k < kLanes; ++k) m = lane[k] > m ? lane[k] : m;
    const T mm = m;
    s = lane_sum(x, c, [mm](T v) { return cpu::exp_any(v - mm); });
  }
  double lse() const { return static_cast<double>(m) + std::log(s); }
};

Status run_cross_entropy(const KernelArgs& a) {
  const TensorView &logits = a.in(0), &target = a.in(1), &out = a.out(0);
  const int64_t n = logits.shape[0], c = logits.shape[1];
  const double ls = a.attr().get_float("label_smoothing", 0.0);
  ClassTargets ct;
  ET_RETURN_IF_ERROR(read_class_targets(a, target, c, &ct));
  const int64_t ignore = ct.ignore, denom = ct.denom;
  const Reduction r = ct.r;
  double* rows = static_cast<double*>(a.workspace);
  bool ok = cpu::visit_float(logits.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* x = logits.as<T>();
    T* o = out.as<T>();
    cpu::parallel_for(a, n, std::max<int64_t>(1, cpu::kGrain / std::max<int64_t>(c, 1)), [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const int64_t t = target_at(target, i);
        double loss = 0;
        if (t != ignore && c > 0) {
          const T* row = x + i * c;
          const double lse = RowStats<T>(row, c).lse();
          loss = lse - static_cast<double>(row[t]);  // -log p[t]
          if (ls != 0.0) {
            const double sum_x = lane_sum(row, c, [](T v) { return v; });
            const double sum_logp = sum_x - static_cast<double>(c) * lse;
            loss = (1 - ls) * loss - ls / static_cast<double>(c) * sum_logp;
          }
        }
        if (r == Reduction::kNone) o[i] = static_cast<T>(loss);
        else rows[i] = loss;
      }
    });
    if (r != Reduction::kNone) o[0] = static_cast<T>(ordered_sum(rows, n) / static_cast<double>(denom));
  });
  return ok ? Status::Ok() : internal_error("cross_entropy: dtype not dispatched");
}

// ---- cross_entropy_backward(dloss, logits, target) ----------------------------------------------
Status check_cross_entropy_backward(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, "cross_entropy_backward", 3, 3, 1));
  const TensorView &dloss = a.in(0), &logits = a.in(1);
  ET_RETURN_IF_ERROR(check_class_inputs(a, logits, a.in(2)));
  ET_RETURN_IF_ERROR(cpu::want_same_dtype("dloss", dloss, logits));
  ET_RETURN_IF_ERROR(cpu::want_same_dtype("output", a.out(0), logits));
  ET_RETURN_IF_ERROR(cpu::want_same_shape("output", a.out(0), logits));
  Reduction r;
  ET_RETURN_IF_ERROR(check_reduction(a, &r));
  return check_loss_output(dloss, r, logits.shape[0]);
}

Status run_cross_entropy_backward(const KernelArgs& a) {
  const TensorView &dloss = a.in(0), &logits = a.in(1), &target = a.in(2), &out = a.out(0);
  const int64_t n = logits.shape[0], c = logits.shape[1];
  const double ls = a.attr().get_float("label_smoothing", 0.0);
  ClassTargets ct;
  ET_RETURN_IF_ERROR(read_class_targets(a, target, c, &ct));
  const int64_t ignore = ct.ignore, denom = ct.denom;
  const Reduction r = ct.r;
  bool ok = cpu::visit_float(logits.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* x = logits.as<T>();
    const T* dl = dloss.as<T>();
    T* g = out.as<T>();
    cpu::parallel_for(a, n, std::max<int64_t>(1, cpu::kGrain / std::max<int64_t>(c, 1)), [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        T* gr = g + i * c;
        const int64_t t = target_at(target, i);
        if (t == ignore) {
          std::fill(gr, gr + c, T(0));
          continue;
        }
        // the reference divides dloss by the count in the loss dtype
        const double scale = static_cast<double>(dl[r == Reduction::kNone ? i : 0] / static_cast<T>(denom));
        const T* row = x + i * c;
        const RowStats<T> st(row, c);
        const T m = st.m;
        const double inv_s = 1.0 / st.s, smooth = ls / static_cast<double>(c);
        // (p - q) * scale with q = smooth off the target; the target then gets its own q
        for (int64_t j = 0; j < c; ++j)
          gr[j] = static_cast<T>((static_cast<double>(cpu::exp_any(row[j] - m)) * inv_s - smooth) * scale);
        gr[t] = static_cast<T>((static_cast<double>(cpu::exp_any(row[t] - m)) * inv_s - (1.0 - ls) - smooth) * scale);
      }
    });
  });
  return ok ? Status::Ok() : internal_error("cross_entropy_backward: dtype not dispatched");
}

// ---- nll_loss(logp [N, C], target [N]) ----------------------------------------------------------
Status check_nll_loss(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, "nll_loss", 2, 2, 1));
  ET_RETURN_IF_ERROR(check_class_inputs(a, a.in(0), a.in(1)));
  ET_RETURN_IF_ERROR(cpu::want_same_dtype("output", a.out(0), a.in(0)));
  Reduction r;
  ET_RETURN_IF_ERROR(check_reduction(a, &r));
  return check_loss_output(a.out(0), r, a.in(0).shape[0]);
}

Status run_nll_loss(const KernelArgs& a) {
  const TensorView &logp = a.in(0), &target = a.in(1), &out = a.out(0);
  const int64_t n = logp.shape[0], c = logp.shape[1];
  ClassTargets ct;
  ET_RETURN_IF_ERROR(read_class_targets(a, target, c, &ct));
  const int64_t ignore = ct.ignore, denom = ct.denom;
  const Reduction r = ct.r;
  bool ok = cpu::visit_float(logp.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* x = logp.as<T>();
    T* o = out.as<T>();
    // one read per row: serial is faster than waking threads
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t t = target_at(target, i);
      const double loss = t == ignore ? 0.0 : -static_cast<double>(x[i * c + t]);
      if (r == Reduction::kNone) o[i] = static_cast<T>(loss);
      else sum += loss;
    }
    if (r != Reduction::kNone) o[0] = static_cast<T>(sum / static_cast<double>(denom));
  });
  return ok ? Status::Ok() : internal_error("nll_loss: dtype not dispatched");
}

// ---- nll_loss_backward(dloss, target) -> [N, num_classes] ----------------------------------------
Status check_nll_loss_backward(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, "nll_loss_backward", 2, 2, 1));
  const TensorView &dloss = a.in(0), &target = a.in(1), &out = a.out(0);
  ET_RETURN_IF_ERROR(cpu::want_float("dloss", dloss));
  ET_RETURN_IF_ERROR(cpu::want_index("targets", target));
  ET_RETURN_IF_ERROR(cpu::want_same_dtype("output", out, dloss));
  if (!a.attr().has("num_classes")) return invalid_argument("nll_loss_backward needs num_classes");
  const int64_t c = a.attr().get_int("num_classes");
  if (target.rank != 1 || out.rank != 2 || out.shape[0] != target.shape[0] || out.shape[1] != c)
    return invalid_argument("nll_loss_backward: targets " + target.shape_string() + " and output " +
                            out.shape_string() + " do not fit num_classes " + std::to_string(c));
  Reduction r;
  ET_RETURN_IF_ERROR(check_reduction(a, &r));
  return check_loss_output(dloss, r, target.shape[0]);
}

Status run_nll_loss_backward(const KernelArgs& a) {
  const TensorView &dloss = a.in(0), &target = a.in(1), &out = a.out(0);
  const int64_t n = out.shape[0], c = out.shape[1];
  ClassTargets ct;
  ET_RETURN_IF_ERROR(read_class_targets(a, target, c, &ct));
  const int64_t ignore = ct.ignore, denom = ct.denom;
  const Reduction r = ct.r;
  bool ok = cpu::visit_float(dloss.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* dl = dloss.as<T>();
    T* g = out.as<T>();
    cpu::parallel_for(a, n, std::max<int64_t>(1, cpu::kGrain / std::max<int64_t>(c, 1)), [&](int64_t b, int64_t e) {
      std::fill(g + b * c, g + e * c, T(0));
      for (int64_t i = b; i < e; ++i) {
        const int64_t t = target_at(target, i);
        if (t == ignore) continue;
        const double scale = static_cast<double>(dl[r == Reduction::kNone ? i : 0]) / static_cast<double>(denom);
        g[i * c + t] = static_cast<T>(-scale);
      }
    });
  });
  return ok ? Status::Ok() : internal_error("nll_loss_backward: dtype not dispatched");
}

// ---- mse_loss(output, target) -------------------------------------------------------------------
constexpr int64_t kMseChunk = 1 << 14;  // elements per partial sum; fixed, so the sum order is too

Status check_mse_loss(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, "mse_loss", 2, 2, 1));
  const TensorView &x = a.in(0), &y = a.in(1), &out = a.out(0);
  ET_RETURN_IF_ERROR(cpu::want_float("output", x));
  ET_RETURN_IF_ERROR(cpu::want_same_dtype("target", y, x));
  ET_RETURN_IF_ERROR(cpu::want_same_shape("target", y, x));
  ET_RETURN_IF_ERROR(cpu::want_same_dtype("loss", out, x));
  Reduction r;
  ET_RETURN_IF_ERROR(check_reduction(a, &r));
  if (r == Reduction::kNone) return cpu::want_same_shape("loss", out, x);
  return cpu::want_scalar("loss", out);
}

size_t workspace_mse_loss(const KernelArgs& a) {
  if (reduction_of(a) == Reduction::kNone) return 0;
  return static_cast<size_t>((a.in(0).numel() + kMseChunk - 1) / kMseChunk) * sizeof(double);
}

Status run_mse_loss(const KernelArgs& a) {
  const TensorView &x = a.in(0), &y = a.in(1), &out = a.out(0);
  const Reduction r = reduction_of(a);
  const int64_t n = x.numel();
  bool ok = cpu::visit_float(x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xp = x.as<T>();
    const T* yp = y.as<T>();
    T* o = out.as<T>();
    if (r == Reduction::kNone) {
      cpu::parallel_for(a, n, cpu::kGrain, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          const double d = static_cast<double>(xp[i]) - static_cast<double>(yp[i]);
          o[i] = static_cast<T>(d * d);
        }
      });
      return;
    }
    const int64_t chunks = (n + kMseChunk - 1) / kMseChunk;
    double* part = static_cast<double*>(a.workspace);
    cpu::parallel_for(a, chunks, 1, [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) {
        const int64_t i1 = std::min(n, (k + 1) * kMseChunk);
        double s0 = 0, s1 = 0;  // two chains: independent adds pipeline
        int64_t i = k * kMseChunk;
        for (; i + 2 <= i1; i += 2) {
          const double d0 = static_cast<double>(xp[i]) - static_cast<double>(yp[i]);
          const double d1 = static_cast<double>(xp[i + 1]) - static_cast<double>(yp[i + 1]);
          s0 += d0 * d0;
          s1 += d1 * d1;
        }
        if (i < i1) {
          const double d = static_cast<double>(xp[i]) - static_cast<double>(yp[i]);
          s0 += d * d;
        }
        part[k] = s0 + s1;
      }
    });
    double total = ordered_sum(part, chunks);
    // numpy's mean of an empty array is NaN; 0/0 gives the same
    if (r == Reduction::kMean) total /= static_cast<double>(n);
    o[0] = static_cast<T>(total);
  });
  return ok ? Status::Ok() : internal_error("mse_loss: dtype not dispatched");
}

}  // namespace

void register_loss_kernels(KernelRegistry& r) {
  r.add(KernelDef{"cross_entropy", "cross_entropy", &check_cross_entropy, &workspace_per_row, &run_cross_entropy});
  r.add(KernelDef{"cross_entropy_backward", "cross_entropy_backward", &check_cross_entropy_backward, nullptr,
                  &run_cross_entropy_backward});
  r.add(KernelDef{"nll_loss", "nll_loss", &check_nll_loss, nullptr, &run_nll_loss});
  r.add(KernelDef{"nll_loss_backward", "nll_loss_backward", &check_nll_loss_backward, nullptr, &run_nll_loss_backward});
  r.add(KernelDef{"mse_loss", "mse_loss", &check_mse_loss, &workspace_mse_loss, &run_mse_loss});
}

}  // namespace edgetune
