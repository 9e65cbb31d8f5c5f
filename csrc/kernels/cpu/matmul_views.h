// matmul with strided operand views (compiler/ops/matmul.py: lhs_shape/lhs_strides,
// rhs_shape/rhs_strides, out_shape/out_strides; put in by compiler/passes/matmul_views.py): the
// layout of one matmul node as GEMM operands, read from its tensors and attrs and checked once.
// Header-only, so the cpu kernel (matmul.cc -> gemm_batched.cc) and the cuda kernel
// (kernels/cuda/matmul.cu) read and check a node the same way.
//
//   every operand (x, y and the output) is a matrix per batch element: element (i, j) of batch
//   element b at base + offset(b) + i * rs + j * cs, where one of rs/cs is 1 (row- or
//   column-major, `trans`), `ld` the other; offset(b) = sum over the product's batch dims of
//   index * stride (0 where the operand broadcasts). Plain operands are row-major with their
//   own row-major batch strides, so the same layout describes a matmul without views.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>

#include "core/kernel.h"

namespace edgetune {
namespace cpu {

struct MatOperand {
  int64_t rows = 0, cols = 0;
  bool trans = false;  // column-major: element (i, j) at j * ld + i
  int64_t ld = 1;
  int64_t batch_stride[kMaxRank] = {0};  // per product batch dim, in elements
};

struct MatmulLayout {
  int batch_rank = 0;
  int64_t batch_shape[kMaxRank] = {0};
  int64_t batch = 1;
  int64_t M = 0, N = 0, K = 0;
  MatOperand x, y, out;

  // element offset of batch element b (row-major index over batch_shape) in an operand
  int64_t offset(const MatOperand& m, int64_t b) const {
    int64_t o = 0;
    for (int d = batch_rank - 1; d >= 0; --d) {
      const int64_t i = b % batch_shape[d];
      b /= batch_shape[d];
      o += i * m.batch_stride[d];
    }
    return o;
  }
};

inline bool matmul_has_views(const Attrs& attrs) {
  return attrs.has("lhs_strides") || attrs.has("rhs_strides") || attrs.has("out_strides") || attrs.has("lhs_shape") ||
         attrs.has("rhs_shape") || attrs.has("out_shape");
}

namespace matmul_views_detail {

inline std::string ints(const int64_t* v, int n) {
  std::string s = "[";
  for (int i = 0; i < n; ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s + "]";
}

// rows x cols with strides (rs, cs): a GEMM operand? Sets trans and ld.
inline bool matrix(int64_t rows, int64_t cols, int64_t rs, int64_t cs, MatOperand* m) {
  m->rows = rows, m->cols = cols;
  if ((cs == 1 || cols <= 1) && (rs >= cols || rows <= 1)) {
    m->trans = false;
    m->ld = rows <= 1 ? std::max<int64_t>(cols, 1) : rs;
    return true;
  }
  if ((rs == 1 || rows <= 1) && (cs >= rows || cols <= 1)) {
    m->trans = true;
    m->ld = cols <= 1 ? std::max<int64_t>(rows, 1) : cs;
    return true;
  }
  return false;
}

// One input's logical view: from the attrs when present (checked against the stored tensor), else
// the tensor itself, row-major.
inline Status input_view(const Attrs& attrs, const char* side, const TensorView& t, int* rank, int64_t* shape,
                         int64_t* strides) {
  const std::string s(side);
  const Attr* sh = attrs.find((s + "_shape").c_str());
  const Attr* st = attrs.find((s + "_strides").c_str());
  if (!sh && !st) {
    *rank = t.rank;
    int64_t acc = 1;
    for (int d = t.rank - 1; d >= 0; --d) shape[d] = t.shape[d], strides[d] = acc, acc *= t.shape[d];
    return Status::Ok();
  }
  if (!sh || !st || sh->kind != AttrKind::kInts || st->kind != AttrKind::kInts || sh->ints.size() != st->ints.size() ||
      sh->ints.size() < 2 || sh->ints.size() > static_cast<size_t>(kMaxRank))
    return invalid_argument("matmul: " + s + "_shape and " + s + "_strides must be int lists of one length, 2.." +
                            std::to_string(kMaxRank));
  *rank = static_cast<int>(sh->ints.size());
  int64_t numel = 1, last = 0;
  for (int d = 0; d < *rank; ++d) {
    shape[d] = sh->ints[d], strides[d] = st->ints[d];
    if (shape[d] < 0 || strides[d] < 0) return invalid_argument("matmul: " + s + " view has a negative size or stride");
    int64_t reach = 0;  // checked: a damaged plan's sizes must not overflow (found by fuzz_plan_loader)
    if (__builtin_mul_overflow(numel, shape[d], &numel) ||
        (shape[d] > 0 && (__builtin_mul_overflow(shape[d] - 1, strides[d], &reach) ||
                          __builtin_add_overflow(last, reach, &last))))
      return invalid_argument("matmul: " + s + " view " + ints(shape, d + 1) + " strides " + ints(strides, d + 1) +
                              " overflows 64-bit offsets");
  }
  if (numel > 0 && last >= t.numel())
    return invalid_argument("matmul: " + s + " view " + ints(shape, *rank) + " strides " + ints(strides, *rank) +
                            " reaches past " + t.shape_string());
  return Status::Ok();
}

}  // namespace matmul_views_detail

// Reads and checks the node: operand views, broadcasting, the output's shape and coverage.
inline Status matmul_layout(const KernelArgs& a, MatmulLayout* l) {
  using namespace matmul_views_detail;
  const Attrs& attrs = a.attr();
  int xr, yr;
  int64_t xs[kMaxRank], xst[kMaxRank], ys[kMaxRank], yst[kMaxRank];
  ET_RETURN_IF_ERROR(input_view(attrs, "lhs", a.in(0), &xr, xs, xst));
  ET_RETURN_IF_ERROR(input_view(attrs, "rhs", a.in(1), &yr, ys, yst));
  if (xr < 2 || yr < 2 || xs[xr - 1] != ys[yr - 2])
    return invalid_argument("matmul: " + ints(xs, xr) + " @ " + ints(ys, yr) + " is not a matrix product");
  *l = MatmulLayout{};
  l->M = xs[xr - 2], l->K = xs[xr - 1], l->N = ys[yr - 1];
  const int r = std::max(xr, yr);
  l->batch_rank = r - 2;
  int64_t numel = l->M * l->N;
  for (int d = 0; d < r - 2; ++d) {  // batch dims, aligned from the right
    const int xd = d - (r - xr), yd = d - (r - yr);
    const int64_t xn = xd >= 0 ? xs[xd] : 1, yn = yd >= 0 ? ys[yd] : 1;
    if (xn != yn && xn != 1 && yn != 1)
      return invalid_argument("matmul: batch dims of " + ints(xs, xr) + " and " + ints(ys, yr) + " do not broadcast");
    const int64_t n = std::max(xn, yn);
    l->batch_shape[d] = xn == 0 || yn == 0 ? 0 : n;
    l->x.batch_stride[d] = xn == 1 ? 0 : xst[xd];
    l->y.batch_stride[d] = yn == 1 ? 0 : yst[yd];
    l->batch *= l->batch_shape[d];
  }
  numel *= l->batch;
  const bool empty = numel == 0 || l->K == 0;
  if (!matrix(l->M, l->K, xst[xr - 2], xst[xr - 1], &l->x) && !empty)
    return invalid_argument("matmul: lhs view strides " + ints(xst, xr) + " are neither row- nor column-major");
  if (!matrix(l->K, l->N, yst[yr - 2], yst[yr - 1], &l->y) && !empty)
    return invalid_argument("matmul: rhs view strides " + ints(yst, yr) + " are neither row- nor column-major");

  const TensorView& out = a.out(0);
  const Attr* osh = attrs.find("out_shape");
  const Attr* ost = attrs.find("out_strides");
  int64_t shape[kMaxRank], strides[kMaxRank];
  for (int d = 0; d < r - 2; ++d) shape[d] = l->batch_shape[d];
  shape[r - 2] = l->M, shape[r - 1] = l->N;
  if (!osh && !ost) {
    if (out.rank != r) return invalid_argument("matmul: output " + out.shape_string() + " is not " + ints(shape, r));
    for (int d = 0; d < r; ++d)
      if (out.shape[d] != shape[d]) return invalid_argument("matmul: output " + out.shape_string() + " is not " + ints(shape, r));
    int64_t acc = 1;
    for (int d = r - 1; d >= 0; --d) strides[d] = acc, acc *= shape[d];
  } else {
    if (!osh || !ost || osh->kind != AttrKind::kInts || ost->kind != AttrKind::kInts ||
        ost->ints.size() != static_cast<size_t>(r) || osh->ints.size() != static_cast<size_t>(out.rank))
      return invalid_argument("matmul: out_strides need one stride per product dim " + ints(shape, r) +
                              " and out_shape the output's shape " + out.shape_string());
    if (a.num_inputs > 2) return invalid_argument("matmul: no output mask together with out_strides");
    for (int d = 0; d < out.rank; ++d)
      if (osh->ints[d] != out.shape[d])
        return invalid_argument("matmul: out_shape does not match the output " + out.shape_string());
    // the strides must reach every output element exactly once: sorted by stride, each is the
    // product of the sizes below it
    // (a fixed array, not a vector: the run path calls this too, and a step allocates nothing)
    std::pair<int64_t, int64_t> dims[kMaxRank];
    int nd = 0;
    for (int d = 0; d < r; ++d) {
      strides[d] = ost->ints[d];
      if (shape[d] > 1) dims[nd++] = {strides[d], shape[d]};
    }
    for (int k = 1; k < nd; ++k)  // insertion sort of at most kMaxRank pairs
      for (int j = k; j > 0 && dims[j] < dims[j - 1]; --j) std::swap(dims[j], dims[j - 1]);
    int64_t expect = 1;
    bool once = numel == out.numel();
    for (int k = 0; k < nd; ++k) once = once && dims[k].first == expect, expect *= dims[k].second;
    if (!once)
      return invalid_argument("matmul: out_strides " + ints(strides, r) + " of the product " + ints(shape, r) +
                              " do not cover the output " + out.shape_string() + " exactly once");
  }
  for (int d = 0; d < r - 2; ++d) l->out.batch_stride[d] = strides[d];
  if (!matrix(l->M, l->N, strides[r - 2], strides[r - 1], &l->out) && numel > 0)
    return invalid_argument("matmul: out_strides " + ints(strides, r) + " are neither row- nor column-major");
  return Status::Ok();
}

// The cpu kernel's path for a node with view attrs (matmul_views.cc); matmul.cc's check and run
// hand such nodes here.
Status matmul_views_check(const KernelArgs& a);
Status matmul_views_run(const KernelArgs& a);

}  // namespace cpu
}  // namespace edgetune
