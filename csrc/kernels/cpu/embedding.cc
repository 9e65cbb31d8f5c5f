// CPU kernels for compiler/ops/embedding.py: embedding (a row gather) and embedding_backward
// (a scatter-add of dy rows into a [num_weights, dim] gradient, padding_idx row left at zero).
//
// The gather copies rows byte-wise, so any weight dtype works. The scatter-add gives every
// thread its own band of weight rows: each thread scans all indices and adds only the rows it
// owns, in index order, so no two threads touch the same row and each row's sum is in the same
// order as np.add.at's, whatever the thread count. Indices outside [0, num_weights) fail the
// step with an error (numpy would wrap negatives; torch rejects them, and so do we).
#include <algorithm>
#include <cstring>
#include <string>

#include "core/kernel.h"
#include "kernels/cpu/cpu_util.h"

namespace edgetune {
namespace {

// Index of the first out-of-range entry, or -1.
template <typename I>
int64_t first_bad_index(const I* idx, int64_t n, int64_t limit) {
  for (int64_t i = 0; i < n; ++i)
    if (idx[i] < 0 || static_cast<int64_t>(idx[i]) >= limit) return i;
  return -1;
}

template <typename I>
int64_t index_at(const TensorView& t, int64_t i) {
  return static_cast<int64_t>(t.as<I>()[i]);
}

int64_t read_index(const TensorView& t, int64_t i) {
  return t.dtype == DType::i64 ? index_at<int64_t>(t, i) : index_at<int32_t>(t, i);
}

int64_t find_bad_index(const TensorView& idx, int64_t limit) {
  return idx.dtype == DType::i64 ? first_bad_index(idx.as<int64_t>(), idx.numel(), limit)
                                 : first_bad_index(idx.as<int32_t>(), idx.numel(), limit);
}

Status bad_index(const TensorView& idx, int64_t at, int64_t limit) {
  return invalid_argument("embedding index " + std::to_string(read_index(idx, at)) + " at position " +
                          std::to_string(at) + " is outside [0, " + std::to_string(limit) + ")");
}

// ---- embedding(weight, indices) -----------------------------------------------------------------
Status check_embedding(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, "embedding", 2, 2, 1));
  const TensorView &w = a.in(0), &idx = a.in(1), &out = a.out(0);
  if (w.rank != 2) return invalid_argument("embedding weight must be 2-d, got " + w.shape_string());
  if (dtype_size(w.dtype) == 0) return unimplemented("embedding weight " + w.shape_string());
  ET_RETURN_IF_ERROR(cpu::want_index("indices", idx));
  ET_RETURN_IF_ERROR(cpu::want_same_dtype("output", out, w));
  bool ok = out.rank == idx.rank + 1 && out.shape[out.rank - 1] == w.shape[1];
  for (int d = 0; ok && d < idx.rank; ++d) ok = out.shape[d] == idx.shape[d];
  if (!ok) return invalid_argument("embedding output " + out.shape_string() + " does not fit indices " +
                                   idx.shape_string() + " and weight " + w.shape_string());
  return Status::Ok();
}

Status run_embedding(const KernelArgs& a) {
  const TensorView &w = a.in(0), &idx = a.in(1), &out = a.out(0);
  const int64_t rows = w.shape[0], n = idx.numel();
  const int64_t bad = find_bad_index(idx, rows);
  if (bad >= 0) return bad_index(idx, bad, rows);
  const size_t row_bytes = static_cast<size_t>(w.shape[1]) * dtype_size(w.dtype);
  const auto* src = static_cast<const unsigned char*>(w.data);
  auto* dst = static_cast<unsigned char*>(out.data);
  const int64_t grain = std::max<int64_t>(1, cpu::kCopyGrain / static_cast<int64_t>(std::max<size_t>(row_bytes, 1)));
  cpu::parallel_for(a, n, grain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) std::memcpy(dst + i * row_bytes, src + read_index(idx, i) * row_bytes, row_bytes);
  });
  return Status::Ok();
}

// ---- embedding_backward(dy, indices) -------------------------------------------------------------
Status check_embedding_backward(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, "embedding_backward", 2, 2, 1));
  const TensorView &dy = a.in(0), &idx = a.in(1), &out = a.out(0);
  ET_RETURN_IF_ERROR(cpu::want_float("dy", dy));
  ET_RETURN_IF_ERROR(cpu::want_index("indices", idx));
  ET_RETURN_IF_ERROR(cpu::want_same_dtype("output", out, dy));
  if (!a.attr().has("num_weights")) return invalid_argument("embedding_backward needs num_weights");
  const int64_t nw = a.attr().get_int("num_weights");
  bool ok = out.rank == 2 && out.shape[0] == nw && dy.rank == idx.rank + 1 && dy.shape[dy.rank - 1] == out.shape[1];
  for (int d = 0; ok && d < idx.rank; ++d) ok = dy.shape[d] == idx.shape[d];
  if (!ok) return invalid_argument("embedding_backward: dy " + dy.shape_string() + ", indices " + idx.shape_string() +
                                   " and output " + out.shape_string() + " do not fit num_weights " + std::to_string(nw));
  return Status::Ok();
}

template <typename T, typename I>
void scatter_rows(const KernelArgs& a, const T* dy, const I* idx, T* dw, int64_t n, int64_t rows, int64_t dim,
                  int64_t pad) {
  // Few chunks, one per thread: each one scans every index, so more chunks cost more scans.
  const int64_t threads = a.pool ? a.pool->num_threads() : 1;
  const int64_t grain = std::max<int64_t>(1, (rows + threads - 1) / threads);
  cpu::parallel_for(a, rows, grain, [&](int64_t r0, int64_t r1) {
    std::memset(dw + r0 * dim, 0, static_cast<size_t>((r1 - r0) * dim) * sizeof(T));
    for (int64_t i = 0; i < n; ++i) {
      const int64_t r = static_cast<int64_t>(idx[i]);
      if (r < r0 || r >= r1 || r == pad) continue;
      const T* src = dy + i * dim;
      T* dst = dw + r * dim;
      for (int64_t j = 0; j < dim; ++j) dst[j] += src[j];
    }
  });
}

Status run_embedding_backward(const KernelArgs& a) {
  const TensorView &dy = a.in(0), &idx = a.in(1), &out = a.out(0);
  const int64_t rows = out.shape[0], dim = out.shape[1], n = idx.numel();
  const int64_t bad = find_bad_index(idx, rows);
  if (bad >= 0) return bad_index(idx, bad, rows);
  // absent or negative padding_idx: no padding row
  const int64_t pad = a.attr().has("padding_idx") ? a.attr().get_int("padding_idx") : -1;
  bool ok = cpu::visit_float(dy.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (idx.dtype == DType::i64)
      scatter_rows(a, dy.as<T>(), idx.as<int64_t>(), out.as<T>(), n, rows, dim, pad);
    else
      scatter_rows(a, dy.as<T>(), idx.as<int32_t>(), out.as<T>(), n, rows, dim, pad);
  });
  return ok ? Status::Ok() : internal_error("embedding_backward: dtype not dispatched");
}

}  // namespace

void register_embedding_kernels(KernelRegistry& r) {
  r.add(KernelDef{"embedding", "embedding", &check_embedding, nullptr, &run_embedding});
  r.add(KernelDef{"embedding_backward", "embedding_backward", &check_embedding_backward, nullptr,
                  &run_embedding_backward});
}

}  // namespace edgetune
