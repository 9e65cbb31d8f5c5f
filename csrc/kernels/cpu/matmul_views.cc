// The cpu matmul kernel's strided-view path (matmul_views.h): a node with lhs_/rhs_/out_ view
// attrs (compiler/passes/matmul_views.py) runs as one strided-batched GEMM (gemm_batched.h). A
// column-major output is written as the transposed product, C^T = op(y)^T op(x)^T.
#include "kernels/cpu/matmul_views.h"

#include "kernels/cpu/cpu_util.h"
#include "kernels/cpu/gemm_batched.h"

namespace edgetune {
namespace cpu {

Status matmul_views_check(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, "matmul", 2, 3, 1));
  ET_RETURN_IF_ERROR(expect_all_f32(a, "matmul", 2));
  MatmulLayout l;
  ET_RETURN_IF_ERROR(matmul_layout(a, &l));
  OutputMask mask;
  return read_output_mask(a, 2, a.out(0), "matmul", &mask);
}

Status matmul_views_run(const KernelArgs& a) {
  MatmulLayout l;
  ET_RETURN_IF_ERROR(matmul_layout(a, &l));
  GemmBias ep;
  ET_RETURN_IF_ERROR(read_output_mask(a, 2, a.out(0), "matmul", &ep.mask));
  if (l.batch == 0 || l.M == 0 || l.N == 0) return Status::Ok();
  const float* xp = a.in(0).as<float>();
  const float* yp = a.in(1).as<float>();
  float* op = a.out(0).as<float>();
  GemmBatch g;
  g.rank = l.batch_rank;
  g.mask_stride = l.M * l.N;
  for (int d = 0; d < g.rank; ++d) {
    g.shape[d] = l.batch_shape[d];
    g.a[d] = l.x.batch_stride[d], g.b[d] = l.y.batch_stride[d], g.c[d] = l.out.batch_stride[d];
  }
  if (!l.out.trans) {
    sgemm_batched(l.x.trans, l.y.trans, l.M, l.N, l.K, xp, l.x.ld, yp, l.y.ld, op, l.out.ld, g, a.pool, ep);
  } else {  // no mask here (the layout refuses a mask with out_strides)
    std::swap(g.a, g.b);
    sgemm_batched(!l.y.trans, !l.x.trans, l.N, l.M, l.K, yp, l.y.ld, xp, l.x.ld, op, l.out.ld, g, a.pool);
  }
  return Status::Ok();
}

}  // namespace cpu
}  // namespace edgetune
