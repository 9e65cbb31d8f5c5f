// CPU kernels for compiler/ops/softmax.py: softmax / log_softmax over one dim, and their
// backward ops, which read the forward output y.
//
// The tensor is viewed as [outer, D, inner] around the dim. With inner == 1 (the usual last-dim
// softmax) each row is contiguous: one pass for the max, one vectorized exp pass, one sum. With
// inner > 1, tiles of up to 256 inner columns are processed together so every loop runs along
// contiguous memory. Sums accumulate in double in a fixed lane order, so results do not depend
// on the thread count. A NaN anywhere in a row makes its sum NaN, so the whole row is NaN (as in
// numpy) without a NaN-aware max; a row of -inf gives NaN too (-inf - -inf), as numpy does.
#include <algorithm>
#include <cmath>

#include "core/kernel.h"
#include "kernels/cpu/cpu_util.h"

namespace edgetune {
namespace {

constexpr int64_t kTile = 256;
constexpr int kLanes = 8;

// Sum of p[0..n) in double, lane-parallel: vectorizable and in an order fixed by n alone.
template <typename T>
double sum_lanes(const T* p, int64_t n) {
  double acc[kLanes] = {0};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int k = 0; k < kLanes; ++k) acc[k] += static_cast<double>(p[j + k]);
  for (; j < n; ++j) acc[0] += static_cast<double>(p[j]);
  double s = 0;
  for (int k = 0; k < kLanes; ++k) s += acc[k];
  return s;
}

template <typename T>
double dot_lanes(const T* p, const T* q, int64_t n) {
  double acc[kLanes] = {0};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int k = 0; k < kLanes; ++k) acc[k] += static_cast<double>(p[j + k]) * static_cast<double>(q[j + k]);
  for (; j < n; ++j) acc[0] += static_cast<double>(p[j]) * static_cast<double>(q[j]);
  double s = 0;
  for (int k = 0; k < kLanes; ++k) s += acc[k];
  return s;
}

// Lane-wise max: a plain `m = x > m ? x : m` chain does not vectorize (NaN ordering).
template <typename T>
T row_max(const T* x, int64_t n) {
  T lane[kLanes];
  for (int k = 0; k < kLanes; ++k) lane[k] = x[0];
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int k = 0; k < kLanes; ++k) lane[k] = x[j + k] > lane[k] ? x[j + k] : lane[k];
  for (; j < n; ++j) lane[0] = x[j] > lane[0] ? x[j] : lane[0];
  T m = lane[0];
  for (int k = 1; k < kLanes; ++k) m = lane[k] > m ? lane[k] : m;
  return m;
}

// y = exp(x - m), returning sum(y) in double (lane order fixed by n).
template <typename T>
double exp_sum(const T* x, T* y, int64_t n, T m) {
  double acc[kLanes] = {0};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int k = 0; k < kLanes; ++k) {
      const T e = cpu::exp_any(x[j + k] - m);
      y[j + k] = e;
      acc[k] += static_cast<double>(e);
    }
  for (; j < n; ++j) {
    y[j] = cpu::exp_any(x[j] - m);
    acc[0] += static_cast<double>(y[j]);
  }
  double s = 0;
  for (int k = 0; k < kLanes; ++k) s += acc[k];
  return s;
}

// ---- forward -------------------------------------------------------------------------------------
template <bool kLog, typename T>
void forward_row(const T* x, T* y, int64_t n) {
  const T m = row_max(x, n);
  const double s = exp_sum(x, y, n, m);
  if constexpr (kLog) {
    const T lse = static_cast<T>(std::log(s));
    for (int64_t j = 0; j < n; ++j) y[j] = (x[j] - m) - lse;
  } else {
    const T inv = static_cast<T>(1.0 / s);
    for (int64_t j = 0; j < n; ++j) y[j] *= inv;
  }
}

// w columns (stride `inner` between rows of the dim) starting at x, y.
template <bool kLog, typename T>
void forward_tile(const T* x, T* y, int64_t n, int64_t inner, int64_t w) {
  T m[kTile];
  double s[kTile];
  for (int64_t c = 0; c < w; ++c) {
    m[c] = x[c];
    s[c] = 0;
  }
  for (int64_t d = 1; d < n; ++d) {
    const T* xr = x + d * inner;
    for (int64_t c = 0; c < w; ++c) m[c] = xr[c] > m[c] ? xr[c] : m[c];
  }
  for (int64_t d = 0; d < n; ++d) {
    const T* xr = x + d * inner;
    T* yr = y + d * inner;
    for (int64_t c = 0; c < w; ++c) yr[c] = cpu::exp_any(xr[c] - m[c]);
    for (int64_t c = 0; c < w; ++c) s[c] += static_cast<double>(yr[c]);
  }
  T k[kTile];
  for (int64_t c = 0; c < w; ++c) k[c] = kLog ? static_cast<T>(std::log(s[c])) : static_cast<T>(1.0 / s[c]);
  for (int64_t d = 0; d < n; ++d) {
    const T* xr = x + d * inner;
    T* yr = y + d * inner;
    if constexpr (kLog) {
      for (int64_t c = 0; c < w; ++c) yr[c] = (xr[c] - m[c]) - k[c];
    } else {
      for (int64_t c = 0; c < w; ++c) yr[c] *= k[c];
    }
  }
}

// ---- backward: softmax dx = y (dy - sum(dy y)); log_softmax dx = dy - exp(y) sum(dy) -----------
template <bool kLog, typename T>
void backward_row(const T* dy, const T* y, T* dx, int64_t n) {
  if constexpr (kLog) {
    const T s = static_cast<T>(sum_lanes(dy, n));
    for (int64_t j = 0; j < n; ++j) dx[j] = dy[j] - cpu::exp_any(y[j]) * s;
  } else {
    const T s = static_cast<T>(dot_lanes(dy, y, n));
    for (int64_t j = 0; j < n; ++j) dx[j] = y[j] * (dy[j] - s);
  }
}

template <bool kLog, typename T>
void backward_tile(const T* dy, const T* y, T* dx, int64_t n, int64_t inner, int64_t w) {
  double acc[kTile];
  for (int64_t c = 0; c < w; ++c) acc[c] = 0;
  for (int64_t d = 0; d < n; ++d) {
    const T* g = dy + d * inner;
    const T* yr = y + d * inner;
    if constexpr (kLog) {
      for (int64_t c = 0; c < w; ++c) acc[c] += static_cast<double>(g[c]);
    } else {
      for (int64_t c = 0; c < w; ++c) acc[c] += static_cast<double>(g[c]) * static_cast<double>(yr[c]);
    }
  }
  T s[kTile];
  for (int64_t c = 0; c < w; ++c) s[c] = static_cast<T>(acc[c]);
  for (int64_t d = 0; d < n; ++d) {
    const T* g = dy + d * inner;
    const T* yr = y + d * inner;
    T* o = dx + d * inner;
    if constexpr (kLog) {
      for (int64_t c = 0; c < w; ++c) o[c] = g[c] - cpu::exp_any(yr[c]) * s[c];
    } else {
      for (int64_t c = 0; c < w; ++c) o[c] = yr[c] * (g[c] - s[c]);
    }
  }
}

// ---- kernels -----------------------------------------------------------------------------------
Status check_dim(const KernelArgs& a, const TensorView& x) {
  const int64_t dim = a.attr().get_int("dim", -1);
  if (!a.attr().has("dim") || dim < 0 || dim >= x.rank)
    return invalid_argument("softmax dim " + std::to_string(dim) + " out of range for " + x.shape_string());
  return Status::Ok();
}

Status check_forward(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, "softmax", 1, 1, 1));
  const TensorView &x = a.in(0), &out = a.out(0);
  ET_RETURN_IF_ERROR(cpu::want_float("input", x));
  ET_RETURN_IF_ERROR(cpu::want_same_dtype("output", out, x));
  ET_RETURN_IF_ERROR(cpu::want_same_shape("output", out, x));
  return check_dim(a, x);
}

Status check_backward(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, "softmax backward", 2, 2, 1));
  const TensorView &dy = a.in(0), &y = a.in(1), &out = a.out(0);
  ET_RETURN_IF_ERROR(cpu::want_float("dy", dy));
  ET_RETURN_IF_ERROR(cpu::want_same_dtype("y", y, dy));
  ET_RETURN_IF_ERROR(cpu::want_same_shape("y", y, dy));
  ET_RETURN_IF_ERROR(cpu::want_same_dtype("output", out, dy));
  ET_RETURN_IF_ERROR(cpu::want_same_shape("output", out, dy));
  return check_dim(a, dy);
}

// Work items: outer rows (inner == 1) or outer x column tiles; fn(base offset, tile width).
template <typename Fn>
void for_items(const KernelArgs& a, const TensorView& x, const Fn& fn) {
  int64_t outer, n, inner;
  cpu::split_at(x, static_cast<int>(a.attr().get_int("dim")), &outer, &n, &inner);
  if (n == 0) return;
  const int64_t tiles = (inner + kTile - 1) / kTile;
  const int64_t per_item = std::max<int64_t>(1, n * std::min(inner, kTile));
  cpu::parallel_for(a, outer * tiles, std::max<int64_t>(1, cpu::kGrain / per_item), [&](int64_t b, int64_t e) {
    for (int64_t it = b; it < e; ++it) {
      int64_t o = it / tiles, c0 = (it % tiles) * kTile;
      fn(o * n * inner + c0, n, inner, std::min(kTile, inner - c0));
    }
  });
}

template <bool kLog>
Status run_forward(const KernelArgs& a) {
  const TensorView &x = a.in(0), &out = a.out(0);
  bool ok = cpu::visit_float(x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xp = x.as<T>();
    T* yp = out.as<T>();
    for_items(a, x, [&](int64_t off, int64_t n, int64_t inner, int64_t w) {
      if (inner == 1) forward_row<kLog>(xp + off, yp + off, n);
      else forward_tile<kLog>(xp + off, yp + off, n, inner, w);
    });
  });
  return ok ? Status::Ok() : internal_error("softmax: dtype not dispatched");
}

template <bool kLog>
Status run_backward(const KernelArgs& a) {
  const TensorView &dy = a.in(0), &y = a.in(1), &out = a.out(0);
  bool ok = cpu::visit_float(dy.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* gp = dy.as<T>();
    const T* yp = y.as<T>();
    T* op = out.as<T>();
    for_items(a, dy, [&](int64_t off, int64_t n, int64_t inner, int64_t w) {
      if (inner == 1) backward_row<kLog>(gp + off, yp + off, op + off, n);
      else backward_tile<kLog>(gp + off, yp + off, op + off, n, inner, w);
    });
  });
  return ok ? Status::Ok() : internal_error("softmax backward: dtype not dispatched");
}

}  // namespace

void register_softmax_kernels(KernelRegistry& r) {
  r.add(KernelDef{"softmax", "softmax", &check_forward, nullptr, &run_forward<false>});
  r.add(KernelDef{"log_softmax", "log_softmax", &check_forward, nullptr, &run_forward<true>});
  r.add(KernelDef{"softmax_backward", "softmax_backward", &check_backward, nullptr, &run_backward<false>});
  r.add(KernelDef{"log_softmax_backward", "log_softmax_backward", &check_backward, nullptr, &run_backward<true>});
}

}  // namespace edgetune
