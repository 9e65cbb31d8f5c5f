// CPU kernels for compiler/ops/indexing.py: cumsum, gather and gather_backward.
//
// cumsum: x seen as [outer, n, inner] around `dim`; a work item is one outer index and a tile of up
// to kTile neighbouring inner columns, whose n steps it walks in order (reverse: from the end), so
// every load is a contiguous run and every output element belongs to one thread. Floats sum in
// double (as PyTorch's CPU cumsum and the numpy reference do) and round once per output element;
// i64 / i32 sum in 64-bit unsigned arithmetic (wraps like numpy, no signed-overflow UB).
// gather: one output element per index position, copied as bits (any dtype), threads over chunks of
// positions, each chunk walking the index shape with an odometer. gather_backward: dx = zeros, then
// dy scattered into it with no two threads on one element: a work item owns whole lines of dx along
// `dim` (every element sharing its other coordinates), zeroes them and adds the dy entries of the
// matching index line in index order, np.add.at's order: each element's sum has one order whatever
// the thread count.
// Both gathers check every index before touching memory: one outside [0, x.shape[dim]) (negative
// ones too, as torch.gather) fails the step with an invalid_argument naming the op, the index and
// its position; nothing is read or written out of bounds.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "core/kernel.h"
#include "kernels/cpu/cpu_util.h"

namespace edgetune {
namespace {

using cpu::Tag;

std::string ints_string(const int64_t* v, int n) {
  std::string s = "[";
  for (int i = 0; i < n; ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s + "]";
}

Status read_dim(const KernelArgs& a, const char* op, int rank, int* dim) {
  if (!a.attr().has("dim")) return invalid_argument(std::string(op) + " needs attribute 'dim'");
  const int64_t d = a.attr().get_int("dim", -1);
  if (d < 0 || d >= rank)
    return invalid_argument(std::string(op) + " dim " + std::to_string(d) + " is outside [0, " +
                            std::to_string(rank) + ")");
  *dim = static_cast<int>(d);
  return Status::Ok();
}

// ---- cumsum(x) {dim, reverse} ------------------------------------------------------------------
constexpr int64_t kTile = 256;  // inner columns one work item carries

template <typename T>
using CumAcc = std::conditional_t<std::is_floating_point_v<T>, double, uint64_t>;

template <typename T>
CumAcc<T> to_acc(T v) {
  if constexpr (std::is_floating_point_v<T>) return static_cast<double>(v);
  else return static_cast<uint64_t>(static_cast<int64_t>(v));  // sign-extend, then wrap
}

template <typename T>
T from_acc(CumAcc<T> v) {
  if constexpr (std::is_floating_point_v<T>) return static_cast<T>(v);
  else return static_cast<T>(static_cast<int64_t>(v));  // modular, like numpy's astype
}

Status check_cumsum(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, "cumsum", 1, 1, 1));
  const TensorView &x = a.in(0), &out = a.out(0);
  ET_RETURN_IF_ERROR(cpu::want_arith("cumsum input", x));
  ET_RETURN_IF_ERROR(cpu::want_same_dtype("cumsum output", out, x));
  ET_RETURN_IF_ERROR(cpu::want_same_shape("cumsum output", out, x));
  if (x.rank < 1) return invalid_argument("cumsum of a 0-d input " + x.shape_string());
  int dim = 0;
  return read_dim(a, "cumsum", x.rank, &dim);
}

template <typename T>
void cumsum_typed(const KernelArgs& a, const T* x, T* y, int64_t outer, int64_t n, int64_t inner, bool reverse) {
  const int64_t tiles = (inner + kTile - 1) / kTile;
  const int64_t per_item = std::max<int64_t>(1, n * std::min(inner, kTile));
  cpu::parallel_for(a, outer * tiles, std::max<int64_t>(1, cpu::kGrain / per_item), [&](int64_t b, int64_t e) {
    CumAcc<T> acc[kTile];
    for (int64_t it = b; it < e; ++it) {
      const int64_t o = it / tiles, c0 = (it % tiles) * kTile, w = std::min(kTile, inner - c0);
      for (int64_t j = 0; j < w; ++j) acc[j] = 0;
      for (int64_t s = 0; s < n; ++s) {
        const int64_t k = reverse ? n - 1 - s : s;
        const int64_t off = (o * n + k) * inner + c0;
        const T* src = x + off;
        T* dst = y + off;
        for (int64_t j = 0; j < w; ++j) {
          acc[j] += to_acc(src[j]);
          dst[j] = from_acc<T>(acc[j]);
        }
      }
    }
  });
}

Status run_cumsum(const KernelArgs& a) {
  const TensorView &x = a.in(0), &out = a.out(0);
  const int dim = static_cast<int>(a.attr().get_int("dim", 0));
  const bool reverse = a.attr().get_int("reverse", 0) != 0;
  int64_t outer, n, inner;
  cpu::split_at(x, dim, &outer, &n, &inner);
  if (outer * n * inner == 0) return Status::Ok();
  bool ok = cpu::visit_arith(x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    cumsum_typed(a, x.as<T>(), out.as<T>(), outer, n, inner, reverse);
  });
  return ok ? Status::Ok() : internal_error("cumsum: dtype not dispatched");
}

// ---- shared by gather and gather_backward ------------------------------------------------------
// `idx` (index / output shape) against `data` (x, or dx for the backward): same rank, no longer than
// data along any dim but `dim`.
Status check_index_fits(const char* op, const TensorView& idx, const TensorView& data, int dim, const char* what) {
  ET_RETURN_IF_ERROR(cpu::want_index((std::string(op) + " index").c_str(), idx));
  bool ok = idx.rank == data.rank;
  for (int d = 0; ok && d < idx.rank; ++d) ok = d == dim || idx.shape[d] <= data.shape[d];
  if (!ok)
    return invalid_argument(std::string(op) + " index " + idx.shape_string() + " does not fit " + what + " " +
                            data.shape_string() + " along dim " + std::to_string(dim) +
                            " (same rank; no longer than it along any other dim)");
  return Status::Ok();
}

template <typename I>
int64_t first_bad(const I* idx, int64_t n, int64_t limit) {
  for (int64_t i = 0; i < n; ++i)
    if (idx[i] < 0 || static_cast<int64_t>(idx[i]) >= limit) return i;
  return -1;
}

// invalid_argument for the first index outside [0, data.shape[dim]), Ok when there is none.
Status check_indices(const char* op, const TensorView& idx, const TensorView& data, int dim) {
  const int64_t limit = data.shape[dim], n = idx.numel();
  const bool i64 = idx.dtype == DType::i64;
  const int64_t bad = i64 ? first_bad(idx.as<int64_t>(), n, limit) : first_bad(idx.as<int32_t>(), n, limit);
  if (bad < 0) return Status::Ok();
  const int64_t v = i64 ? idx.as<int64_t>()[bad] : static_cast<int64_t>(idx.as<int32_t>()[bad]);
  int64_t pos[kMaxRank];
  int64_t rem = bad;
  for (int d = idx.rank - 1; d >= 0; --d) {
    pos[d] = rem % idx.shape[d];
    rem /= idx.shape[d];
  }
  return invalid_argument(std::string(op) + " index " + std::to_string(v) + " at position " +
                          ints_string(pos, idx.rank) + " of " + idx.shape_string() + " is outside [0, " +
                          std::to_string(limit) + ") along dim " + std::to_string(dim) + " of " +
                          data.shape_string());
}

void row_major_strides(const TensorView& t, int64_t* stride) {
  int64_t s = 1;
  for (int d = t.rank - 1; d >= 0; --d) {
    stride[d] = s;
    s *= t.shape[d];
  }
}

// ---- gather(x, index) {dim} ---------------------------------------------------------------------
Status check_gather(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, "gather", 2, 2, 1));
  const TensorView &x = a.in(0), &idx = a.in(1), &out = a.out(0);
  if (dtype_size(x.dtype) == 0) return unimplemented("gather input " + x.shape_string());
  if (x.rank < 1) return invalid_argument("gather from a 0-d input " + x.shape_string());
  int dim = 0;
  ET_RETURN_IF_ERROR(read_dim(a, "gather", x.rank, &dim));
  ET_RETURN_IF_ERROR(check_index_fits("gather", idx, x, dim, "input"));
  ET_RETURN_IF_ERROR(cpu::want_same_dtype("gather output", out, x));
  return cpu::want_same_shape("gather output", out, idx);
}

// Output positions [b, e) of index shape `ishape`: out[p] = x[p with coordinate `dim` = idx[p]].
template <typename T, typename I>
void gather_range(const T* x, const I* idx, T* out, int rank, int dim, const int64_t* ishape, const int64_t* xstride,
                  int64_t b, int64_t e) {
  int64_t c[kMaxRank];
  int64_t base = 0;  // x offset of the coordinates other than dim
  int64_t rem = b;
  for (int d = rank - 1; d >= 0; --d) {
    c[d] = rem % ishape[d];
    rem /= ishape[d];
    if (d != dim) base += c[d] * xstride[d];
  }
  const int last = rank - 1;
  const int64_t sd = xstride[dim];
  int64_t p = b;
  while (p < e) {
    const int64_t len = std::min(ishape[last] - c[last], e - p);
    if (last == dim) {  // a run along dim: base is fixed, the index picks the element
      for (int64_t j = 0; j < len; ++j) out[p + j] = x[base + static_cast<int64_t>(idx[p + j])];
    } else {
      const int64_t sl = xstride[last];
      for (int64_t j = 0; j < len; ++j) out[p + j] = x[base + j * sl + static_cast<int64_t>(idx[p + j]) * sd];
      base += len * sl;
    }
    p += len;
    c[last] += len;
    if (p >= e) break;
    // the run ended at the end of the last dim: carry into the outer dims
    if (last != dim) base -= c[last] * xstride[last];
    c[last] = 0;
    for (int d = last - 1; d >= 0; --d) {
      if (d != dim) base += xstride[d];
      if (++c[d] < ishape[d]) break;
      if (d != dim) base -= c[d] * xstride[d];
      c[d] = 0;
    }
  }
}

Status run_gather(const KernelArgs& a) {
  const TensorView &x = a.in(0), &idx = a.in(1), &out = a.out(0);
  const int dim = static_cast<int>(a.attr().get_int("dim", 0));
  const int64_t n = idx.numel();
  if (n == 0) return Status::Ok();
  ET_RETURN_IF_ERROR(check_indices("gather", idx, x, dim));
  int64_t xstride[kMaxRank];
  row_major_strides(x, xstride);
  bool ok = cpu::visit_bits(x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xp = x.as<T>();
    T* op = out.as<T>();
    cpu::parallel_for(a, n, cpu::kGrain, [&](int64_t b, int64_t e) {
      if (idx.dtype == DType::i64)
        gather_range(xp, idx.as<int64_t>(), op, x.rank, dim, idx.shape, xstride, b, e);
      else
        gather_range(xp, idx.as<int32_t>(), op, x.rank, dim, idx.shape, xstride, b, e);
    });
  });
  return ok ? Status::Ok() : internal_error("gather: dtype not dispatched");
}

// ---- gather_backward(dy, index) {dim, input_shape} ----------------------------------------------
Status check_gather_backward(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, "gather_backward", 2, 2, 1));
  const TensorView &dy = a.in(0), &idx = a.in(1), &out = a.out(0);
  ET_RETURN_IF_ERROR(cpu::want_float("gather_backward dy", dy));
  ET_RETURN_IF_ERROR(cpu::want_same_dtype("gather_backward output", out, dy));
  if (out.rank < 1) return invalid_argument("gather_backward output " + out.shape_string() + " is 0-d");
  const std::vector<int64_t>& shape = a.attr().get_ints("input_shape");
  bool same = a.attr().has("input_shape") && static_cast<int>(shape.size()) == out.rank;
  for (int d = 0; same && d < out.rank; ++d) same = shape[d] == out.shape[d];
  if (!same) return invalid_argument("gather_backward output " + out.shape_string() + " is not its input_shape");
  int dim = 0;
  ET_RETURN_IF_ERROR(read_dim(a, "gather_backward", out.rank, &dim));
  ET_RETURN_IF_ERROR(check_index_fits("gather_backward", idx, out, dim, "output"));
  return cpu::want_same_shape("gather_backward dy", dy, idx);
}

// dx lines [b, e) (dx as [outer, L, inner] around dim; line l = (l / inner, l % inner)): zeroed,
// then dx[o, idx[q], i] += dy[q] for the positions q of the matching index line, in order.
template <typename T, typename I>
void scatter_lines(const T* dy, const I* idx, T* dx, int rank, int dim, const int64_t* xshape,
                   const int64_t* ishape, const int64_t* istride, int64_t inner, int64_t b, int64_t e) {
  const int64_t L = xshape[dim], k_len = ishape[dim], ks = istride[dim];
  for (int64_t l = b; l < e; ++l) {
    const int64_t o = l / inner, i = l % inner;
    T* line = dx + o * L * inner + i;
    for (int64_t j = 0; j < L; ++j) line[j * inner] = T(0);
    // coordinates of the line: o over the dims before dim, i over the dims after it
    int64_t off = 0;
    bool inside = true;
    int64_t rem = i;
    for (int d = rank - 1; d > dim; --d) {
      const int64_t c = rem % xshape[d];
      rem /= xshape[d];
      inside &= c < ishape[d];
      off += c * istride[d];
    }
    rem = o;
    for (int d = dim - 1; d >= 0; --d) {
      const int64_t c = rem % xshape[d];
      rem /= xshape[d];
      inside &= c < ishape[d];
      off += c * istride[d];
    }
    if (!inside) continue;  // no index position shares these coordinates: the line stays zero
    for (int64_t k = 0; k < k_len; ++k) {
      const int64_t q = off + k * ks;
      line[static_cast<int64_t>(idx[q]) * inner] += dy[q];
    }
  }
}

Status run_gather_backward(const KernelArgs& a) {
  const TensorView &dy = a.in(0), &idx = a.in(1), &out = a.out(0);
  const int dim = static_cast<int>(a.attr().get_int("dim", 0));
  int64_t outer, L, inner;
  cpu::split_at(out, dim, &outer, &L, &inner);
  const int64_t lines = outer * inner;
  if (lines * L == 0) return Status::Ok();
  ET_RETURN_IF_ERROR(check_indices("gather_backward", idx, out, dim));
  int64_t istride[kMaxRank];
  row_major_strides(idx, istride);
  const int64_t grain = std::max<int64_t>(1, cpu::kGrain / (L + idx.shape[dim] + 1));
  bool ok = cpu::visit_float(dy.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* dp = dy.as<T>();
    T* xp = out.as<T>();
    cpu::parallel_for(a, lines, grain, [&](int64_t b, int64_t e) {
      if (idx.dtype == DType::i64)
        scatter_lines(dp, idx.as<int64_t>(), xp, out.rank, dim, out.shape, idx.shape, istride, inner, b, e);
      else
        scatter_lines(dp, idx.as<int32_t>(), xp, out.rank, dim, out.shape, idx.shape, istride, inner, b, e);
    });
  });
  return ok ? Status::Ok() : internal_error("gather_backward: dtype not dispatched");
}

}  // namespace

void register_indexing_kernels(KernelRegistry& r) {
  r.add(KernelDef{"cumsum", "cumsum", &check_cumsum, nullptr, &run_cumsum});
  r.add(KernelDef{"gather", "gather", &check_gather, nullptr, &run_gather});
  r.add(KernelDef{"gather_backward", "gather_backward", &check_gather_backward, nullptr, &run_gather_backward});
}

}  // namespace edgetune
