// CPU kernels for compiler/ops/shape.py: reshape, permute, expand, sum_to, concat, slice,
// slice_backward and cast.
//
// Data movement is dtype-generic: elements move as unsigned integers of their size, so every
// dtype the IR has (f16/bf16 included) is served. sum_to adds, so it takes f32/f64/i64/i32;
// cast converts between every dtype with a C++ value type (not f16/bf16).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>

#include "core/kernel.h"
#include "kernels/cpu/broadcast.h"
#include "kernels/cpu/cpu_util.h"

namespace edgetune {
namespace {

using cpu::Tag;

Status want_sized(const TensorView& t) {
  if (dtype_size(t.dtype) != 0) return Status::Ok();
  return unimplemented("no element size for " + t.shape_string());
}

std::string ints_string(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s + "]";
}

// ---- reshape: same bytes, new shape ---------------------------------------------------------------
Status check_reshape(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, "reshape", 1, 1, 1));
  ET_RETURN_IF_ERROR(want_sized(a.in(0)));
  ET_RETURN_IF_ERROR(cpu::want_same_dtype("output", a.out(0), a.in(0)));
  if (a.out(0).numel() != a.in(0).numel())
    return invalid_argument("reshape " + a.in(0).shape_string() + " to " + a.out(0).shape_string());
  return Status::Ok();
}

Status run_reshape(const KernelArgs& a) {
  cpu::copy_bytes(a, a.out(0).data, a.in(0).data, static_cast<int64_t>(a.in(0).nbytes()));
  return Status::Ok();
}

// ---- permute ----------------------------------------------------------------------------------------
Status check_permute(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, "permute", 1, 1, 1));
  const TensorView &x = a.in(0), &out = a.out(0);
  ET_RETURN_IF_ERROR(want_sized(x));
  ET_RETURN_IF_ERROR(cpu::want_same_dtype("output", out, x));
  const auto& dims = a.attr().get_ints("dims");
  bool seen[kMaxRank] = {false};
  bool ok = static_cast<int>(dims.size()) == x.rank && out.rank == x.rank;
  for (size_t i = 0; ok && i < dims.size(); ++i) {
    int64_t d = dims[i];
    ok = d >= 0 && d < x.rank && !seen[d] && out.shape[i] == x.shape[d];
    if (ok) seen[d] = true;
  }
  if (!ok) return invalid_argument("permute dims " + ints_string(dims) + " do not map " + x.shape_string() + " to " +
                                   out.shape_string());
  return Status::Ok();
}

// Output dims (size-1 dims dropped, mergeable neighbours merged) with their input strides.
struct PermutePlan {
  int rank = 0;
  int64_t shape[kMaxRank], istride[kMaxRank], ostride[kMaxRank];

  void init(const TensorView& x, const std::vector<int64_t>& dims) {
    int64_t in_stride[kMaxRank];
    int64_t s = 1;
    for (int d = x.rank - 1; d >= 0; --d) {
      in_stride[d] = s;
      s *= x.shape[d];
    }
    rank = 0;
    for (int i = 0; i < x.rank; ++i) {
      int64_t size = x.shape[dims[i]], st = in_stride[dims[i]];
      if (size == 1) continue;
      if (rank > 0 && istride[rank - 1] == st * size) {
        shape[rank - 1] *= size;
        istride[rank - 1] = st;
        continue;
      }
      shape[rank] = size;
      istride[rank] = st;
      ++rank;
    }
    if (rank == 0) {
      rank = 1;
      shape[0] = 1;
      istride[0] = 1;
    }
    s = 1;
    for (int d = rank - 1; d >= 0; --d) {
      ostride[d] = s;
      s *= shape[d];
    }
  }
};

template <typename T>
void permute_copy(const KernelArgs& a, const PermutePlan& p, const T* in, T* out, int64_t numel) {
  const int last = p.rank - 1;
  int pdim = -1;  // the output dim that walks the input contiguously
  for (int d = 0; d < p.rank; ++d)
    if (p.istride[d] == 1) pdim = d;
  if (p.istride[last] == 1 || pdim < 0) {
    // runs along the output's innermost dim (contiguous in the input when its stride is 1)
    cpu::Broadcast<1> it;
    it.rank = p.rank;
    it.numel = numel;
    for (int d = 0; d < p.rank; ++d) {
      it.shape[d] = p.shape[d];
      it.stride[0][d] = p.istride[d];
    }
    const int64_t s = p.istride[last];
    cpu::parallel_for(a, numel, cpu::kGrain, [&](int64_t b, int64_t e) {
      it.for_runs(b, e, [&](int64_t o, const int64_t* off, int64_t n) {
        const T* src = in + off[0];
        T* dst = out + o;
        if (s == 1) {
          std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(T));
        } else {
          for (int64_t i = 0; i < n; ++i) dst[i] = src[i * s];
        }
      });
    });
    return;
  }
  // A transpose between output dims pdim and last, batched over the other dims: square tiles
  // keep both the strided reads and the contiguous writes in cache.
  constexpr int64_t kB = 32;
  const int64_t rows = p.shape[pdim], cols = p.shape[last];
  const int64_t tr = (rows + kB - 1) / kB, tc = (cols + kB - 1) / kB;
  int64_t batch = 1;
  for (int d = 0; d < last; ++d)
    if (d != pdim) batch *= p.shape[d];
  const int64_t items = batch * tr * tc;
  const int64_t ostr_p = p.ostride[pdim], istr_l = p.istride[last];
  cpu::parallel_for(a, items, std::max<int64_t>(1, cpu::kGrain / (kB * kB)), [&](int64_t b, int64_t e) {
    for (int64_t item = b; item < e; ++item) {
      int64_t c0 = (item % tc) * kB, r0 = (item / tc % tr) * kB, bi = item / (tc * tr);
      int64_t ioff = 0, ooff = 0;
      for (int d = last - 1; d >= 0; --d) {
        if (d == pdim) continue;
        int64_t i = bi % p.shape[d];
        bi /= p.shape[d];
        ioff += i * p.istride[d];
        ooff += i * p.ostride[d];
      }
      const int64_t r1 = std::min(rows, r0 + kB), c1 = std::min(cols, c0 + kB);
      for (int64_t r = r0; r < r1; ++r) {
        const T* src = in + ioff + r;  // istride[pdim] == 1
        T* dst = out + ooff + r * ostr_p;
        for (int64_t c = c0; c < c1; ++c) dst[c] = src[c * istr_l];
      }
    }
  });
}

Status run_permute(const KernelArgs& a) {
  const TensorView &x = a.in(0), &out = a.out(0);
  PermutePlan p;
  p.init(x, a.attr().get_ints("dims"));
  bool ok = cpu::visit_bits(x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    permute_copy<T>(a, p, x.as<T>(), out.as<T>(), out.numel());
  });
  return ok ? Status::Ok() : internal_error("permute: dtype not dispatched");
}

// ---- expand -----------------------------------------------------------------------------------------
Status check_expand(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, "expand", 1, 1, 1));
  const TensorView &x = a.in(0), &out = a.out(0);
  ET_RETURN_IF_ERROR(want_sized(x));
  ET_RETURN_IF_ERROR(cpu::want_same_dtype("output", out, x));
  cpu::Broadcast<1> bc;
  const TensorView* ins[1] = {&x};
  if (!bc.init(out, ins)) return invalid_argument("cannot expand " + x.shape_string() + " to " + out.shape_string());
  return Status::Ok();
}

Status run_expand(const KernelArgs& a) {
  const TensorView &x = a.in(0), &out = a.out(0);
  cpu::Broadcast<1> bc;
  const TensorView* ins[1] = {&x};
  if (!bc.init(out, ins)) return internal_error("expand: shapes changed after check");
  const int64_t s = bc.inner_stride(0);
  bool ok = cpu::visit_bits(x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* src = x.as<T>();
    T* dst = out.as<T>();
    cpu::parallel_for(a, bc.numel, cpu::kGrain, [&](int64_t b, int64_t e) {
      bc.for_runs(b, e, [&](int64_t o, const int64_t* off, int64_t n) {
        if (s == 0) {
          std::fill(dst + o, dst + o + n, src[off[0]]);
        } else {
          std::memcpy(dst + o, src + off[0], static_cast<size_t>(n) * sizeof(T));
        }
      });
    });
  });
  return ok ? Status::Ok() : internal_error("expand: dtype not dispatched");
}

// ---- sum_to: the reduction that undoes a broadcast ------------------------------------------------
Status check_sum_to(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, "sum_to", 1, 1, 1));
  const TensorView &x = a.in(0), &out = a.out(0);
  ET_RETURN_IF_ERROR(cpu::want_arith("input", x));
  ET_RETURN_IF_ERROR(cpu::want_same_dtype("output", out, x));
  bool reduced[kMaxRank];
  if (!cpu::sum_to_dims(x, out, reduced))
    return invalid_argument("cannot sum " + x.shape_string() + " down to " + out.shape_string());
  return Status::Ok();
}

size_t workspace_sum_to(const KernelArgs& a) {
  bool reduced[kMaxRank];
  if (!cpu::sum_to_dims(a.in(0), a.out(0), reduced)) return 0;
  cpu::Reduction red;
  red.init(a.in(0), reduced);
  return red.workspace_bytes();
}

Status run_sum_to(const KernelArgs& a) {
  const TensorView &x = a.in(0), &out = a.out(0);
  bool reduced[kMaxRank];
  if (!cpu::sum_to_dims(x, out, reduced)) return internal_error("sum_to: shapes changed after check");
  cpu::Reduction red;
  red.init(x, reduced);
  bool ok = cpu::visit_arith(x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    red.run(a, x.as<T>(), out.as<T>(), a.workspace, [](auto acc) { return static_cast<T>(acc); });
  });
  return ok ? Status::Ok() : internal_error("sum_to: dtype not dispatched");
}

// ---- concat ----------------------------------------------------------------------------------------
Status check_concat(const KernelArgs& a) {
  if (a.num_inputs < 1 || a.num_outputs != 1) return expect_arity(a, "concat", 1, 1 << 30, 1);
  const TensorView& out = a.out(0);
  const int64_t dim = a.attr().get_int("dim", -1);
  if (!a.attr().has("dim") || dim < 0 || dim >= out.rank)
    return invalid_argument("concat dim " + std::to_string(dim) + " out of range for " + out.shape_string());
  ET_RETURN_IF_ERROR(want_sized(out));
  int64_t total = 0;
  for (int i = 0; i < a.num_inputs; ++i) {
    const TensorView& x = a.in(i);
    ET_RETURN_IF_ERROR(cpu::want_same_dtype("input", x, out));
    bool ok = x.rank == out.rank;
    for (int d = 0; ok && d < x.rank; ++d) ok = d == dim || x.shape[d] == out.shape[d];
    if (!ok) return invalid_argument("concat input " + x.shape_string() + " does not fit " + out.shape_string());
    total += x.shape[dim];
  }
  if (total != out.shape[dim])
    return invalid_argument("concat inputs add up to " + std::to_string(total) + " along dim " + std::to_string(dim) +
                            ", output has " + std::to_string(out.shape[dim]));
  return Status::Ok();
}

Status run_concat(const KernelArgs& a) {
  const TensorView& out = a.out(0);
  const int dim = static_cast<int>(a.attr().get_int("dim"));
  int64_t outer, mid, inner;
  cpu::split_at(out, dim, &outer, &mid, &inner);
  const int64_t esize = static_cast<int64_t>(dtype_size(out.dtype));
  const int64_t row = mid * inner * esize;  // bytes of one output row (all inputs' chunks)
  auto* dst = static_cast<unsigned char*>(out.data);
  // split the output's bytes evenly: one input may be far bigger than the others
  cpu::parallel_for(a, outer * row, cpu::kCopyGrain, [&](int64_t b, int64_t e) {
    int64_t o = b / row, pos = b % row;
    int i = 0;
    int64_t start = 0;  // byte offset of input i's chunk in a row
    while (true) {
      int64_t chunk = a.in(i).shape[dim] * inner * esize;
      if (pos < start + chunk) break;
      start += chunk;
      ++i;
    }
    int64_t at = b;
    while (at < e) {
      int64_t chunk = a.in(i).shape[dim] * inner * esize;
      int64_t n = std::min(start + chunk - pos, e - at);
      if (n > 0) {
        const auto* src = static_cast<const unsigned char*>(a.in(i).data) + o * chunk + (pos - start);
        std::memcpy(dst + at, src, static_cast<size_t>(n));
      }
      at += n;
      pos += n;
      if (pos == start + chunk) {  // next input, or the next row
        start += chunk;
        ++i;
        if (i == a.num_inputs) {
          i = 0;
          start = 0;
          pos = 0;
          ++o;
        }
      }
    }
  });
  return Status::Ok();
}

// ---- slice / slice_backward -------------------------------------------------------------------------
struct SliceAttrs {
  int64_t dim, start, end, step;
  static bool read(const Attrs& at, SliceAttrs* s) {
    if (!at.has("dim") || !at.has("start") || !at.has("end") || !at.has("step")) return false;
    s->dim = at.get_int("dim");
    s->start = at.get_int("start");
    s->end = at.get_int("end");
    s->step = at.get_int("step");
    return s->step >= 1 && s->start >= 0 && s->dim >= 0;
  }
  // len(range(start, min(end, size), step))
  int64_t length(int64_t size) const {
    int64_t stop = std::min(end, size);
    return stop > start ? (stop - start + step - 1) / step : 0;
  }
};

// `full` is the sliced-from tensor, `part` the slice.
Status check_slice_shapes(const KernelArgs& a, const TensorView& full, const TensorView& part, SliceAttrs* s) {
  if (!SliceAttrs::read(a.attr(), s))
    return invalid_argument("slice needs dim, start >= 0, end, step >= 1");
  if (s->dim >= full.rank || full.rank != part.rank)
    return invalid_argument("slice dim " + std::to_string(s->dim) + " of " + full.shape_string());
  bool ok = part.shape[s->dim] == s->length(full.shape[s->dim]);
  for (int d = 0; ok && d < full.rank; ++d) ok = d == s->dim || full.shape[d] == part.shape[d];
  if (!ok) return invalid_argument("slice of " + full.shape_string() + " cannot be " + part.shape_string());
  ET_RETURN_IF_ERROR(want_sized(full));
  return cpu::want_same_dtype("output", a.out(0), a.in(0));
}

Status check_slice(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, "slice", 1, 1, 1));
  SliceAttrs s;
  return check_slice_shapes(a, a.in(0), a.out(0), &s);
}

Status run_slice(const KernelArgs& a) {
  const TensorView &x = a.in(0), &out = a.out(0);
  SliceAttrs s;
  SliceAttrs::read(a.attr(), &s);
  int64_t outer, size, inner;
  cpu::split_at(x, static_cast<int>(s.dim), &outer, &size, &inner);
  const int64_t len = out.shape[s.dim];
  bool ok = cpu::visit_bits(x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* src = x.as<T>();
    T* dst = out.as<T>();
    if (s.step == 1) {  // one contiguous block per outer index
      const int64_t block = len * inner;
      cpu::parallel_for(a, outer, std::max<int64_t>(1, cpu::kGrain / std::max<int64_t>(1, block)), [&](int64_t b, int64_t e) {
        for (int64_t o = b; o < e; ++o)
          std::memcpy(dst + o * block, src + (o * size + s.start) * inner, static_cast<size_t>(block) * sizeof(T));
      });
      return;
    }
    cpu::parallel_for(a, outer * len, std::max<int64_t>(1, cpu::kGrain / std::max<int64_t>(1, inner)), [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) {
        int64_t o = k / len, j = k % len;
        const T* from = src + (o * size + s.start + j * s.step) * inner;
        T* to = dst + k * inner;
        if (inner == 1) *to = *from;
        else std::memcpy(to, from, static_cast<size_t>(inner) * sizeof(T));
      }
    });
  });
  return ok ? Status::Ok() : internal_error("slice: dtype not dispatched");
}

Status check_slice_backward(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, "slice_backward", 1, 1, 1));
  const auto& shape = a.attr().get_ints("input_shape");
  const TensorView& out = a.out(0);
  bool ok = static_cast<int>(shape.size()) == out.rank;
  for (int d = 0; ok && d < out.rank; ++d) ok = shape[d] == out.shape[d];
  if (!ok) return invalid_argument("slice_backward input_shape " + ints_string(shape) + " vs output " + out.shape_string());
  SliceAttrs s;
  return check_slice_shapes(a, out, a.in(0), &s);
}

// Each output row along dim is either a copied slice row or zeros: one pass, no double write.
Status run_slice_backward(const KernelArgs& a) {
  const TensorView &dy = a.in(0), &out = a.out(0);
  SliceAttrs s;
  SliceAttrs::read(a.attr(), &s);
  int64_t outer, size, inner;
  cpu::split_at(out, static_cast<int>(s.dim), &outer, &size, &inner);
  const int64_t len = dy.shape[s.dim];
  bool ok = cpu::visit_bits(out.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* src = dy.as<T>();
    T* dst = out.as<T>();
    cpu::parallel_for(a, outer * size, std::max<int64_t>(1, cpu::kGrain / std::max<int64_t>(1, inner)), [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) {
        int64_t o = k / size, i = k % size;
        T* to = dst + k * inner;
        int64_t rel = i - s.start;
        if (rel >= 0 && rel % s.step == 0 && rel / s.step < len) {
          std::memcpy(to, src + (o * len + rel / s.step) * inner, static_cast<size_t>(inner) * sizeof(T));
        } else {
          std::memset(to, 0, static_cast<size_t>(inner) * sizeof(T));
        }
      }
    });
  });
  return ok ? Status::Ok() : internal_error("slice_backward: dtype not dispatched");
}

// ---- cast -------------------------------------------------------------------------------------------
bool castable(DType t) { return t != DType::f16 && t != DType::bf16 && dtype_size(t) != 0; }

// numpy's astype for in-range values (floats truncate toward zero, anything nonzero is true).
// Out-of-range floats and NaN have no portable C++ conversion: they saturate, NaN gives 0.
template <typename To, typename From>
To convert(From v) {
  if constexpr (std::is_same_v<To, bool>) {
    return v != From(0);
  } else if constexpr (std::is_floating_point_v<From> && std::is_integral_v<To>) {
    if (!(v == v)) return To(0);
    if (v <= static_cast<From>(std::numeric_limits<To>::min())) return std::numeric_limits<To>::min();
    if (v >= static_cast<From>(std::numeric_limits<To>::max())) return std::numeric_limits<To>::max();
    return static_cast<To>(v);
  } else {
    return static_cast<To>(v);
  }
}

Status check_cast(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, "cast", 1, 1, 1));
  const TensorView &x = a.in(0), &out = a.out(0);
  if (!castable(x.dtype) || !castable(out.dtype))
    return unimplemented(std::string("cast from ") + dtype_name(x.dtype) + " to " + dtype_name(out.dtype) +
                         " (f16/bf16 have no CPU conversion)");
  ET_RETURN_IF_ERROR(cpu::want_same_shape("output", out, x));
  const std::string& want = a.attr().get_string("dtype");
  if (!want.empty() && want != dtype_name(out.dtype))
    return invalid_argument("cast to '" + want + "' but the output is " + out.shape_string());
  return Status::Ok();
}

Status run_cast(const KernelArgs& a) {
  const TensorView &x = a.in(0), &out = a.out(0);
  if (x.dtype == out.dtype) {
    cpu::copy_bytes(a, out.data, x.data, static_cast<int64_t>(x.nbytes()));
    return Status::Ok();
  }
  bool ok = false;
  cpu::visit_value(x.dtype, [&](auto from_tag) {
    using From = typename decltype(from_tag)::type;
    ok = cpu::visit_value(out.dtype, [&](auto to_tag) {
      using To = typename decltype(to_tag)::type;
      const From* src = x.as<From>();
      To* dst = out.as<To>();
      cpu::parallel_for(a, x.numel(), cpu::kGrain, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) dst[i] = convert<To>(src[i]);
      });
    });
  });
  return ok ? Status::Ok() : internal_error("cast: dtype not dispatched");
}

}  // namespace

void register_shape_kernels(KernelRegistry& r) {
  r.add(KernelDef{"reshape", "reshape", &check_reshape, nullptr, &run_reshape});
  r.add(KernelDef{"permute", "permute", &check_permute, nullptr, &run_permute});
  r.add(KernelDef{"expand", "expand", &check_expand, nullptr, &run_expand});
  r.add(KernelDef{"sum_to", "sum_to", &check_sum_to, &workspace_sum_to, &run_sum_to});
  r.add(KernelDef{"concat", "concat", &check_concat, nullptr, &run_concat});
  r.add(KernelDef{"slice", "slice", &check_slice, nullptr, &run_slice});
  r.add(KernelDef{"slice_backward", "slice_backward", &check_slice_backward, nullptr, &run_slice_backward});
  r.add(KernelDef{"cast", "cast", &check_cast, nullptr, &run_cast});
}

}  // namespace edgetune
