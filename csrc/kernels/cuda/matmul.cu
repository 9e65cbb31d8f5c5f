// CUDA kernels for compiler/ops/matmul.py: matmul (numpy semantics, batched, broadcasting batch
// dims, optional output mask) and linear (y = x W^T + b, fused relu / hardtanh), f32, and the
// cuBLASLt GEMM of cuda_gemm.h that every GEMM-shaped CUDA kernel uses.
//
//   matmul  a y without batch dims folds x's batch into M (one GEMM); batch dims that are all
//           broadcast or none broadcast on each side are one strided-batched GEMM (stride 0 for
//           the broadcast side); mixed broadcasting runs one GEMM per batch element. The mask
//           (u8 bits or the f32 activation output with mask_min/max) is a pass over the output.
//   linear  one GEMM with cuBLASLt's bias (+ relu) epilogue; hardtanh clamps in a second pass.
// A matmul with strided operand views (lhs_/rhs_/out_ attrs, kernels/cpu/matmul_views.h) is one
// strided-batched GEMM over its innermost batch dim per element of the outer ones (attention:
// B calls of H heads each), a column-major output written as the transposed product.
// Checks are the CPU kernels'.
#include <cmath>
#include <limits>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/matmul_views.h"
#include "kernels/cuda/cuda_gemm.h"

namespace edgetune {
namespace cuda {

namespace {

// Largest power of two <= 256 dividing the pointer and the byte strides (what cuBLASLt's
// heuristic must assume about every matrix it reads or writes).
uint32_t alignment(const void* p, int64_t ld, int64_t stride, int64_t batch) {
  uint64_t v = reinterpret_cast<uintptr_t>(p) | 256u;
  v |= static_cast<uint64_t>(ld) * 4u;
  if (batch > 1) v |= static_cast<uint64_t>(stride) * 4u | (stride == 0 ? 256u : 0u);
  return static_cast<uint32_t>(v & (~v + 1));  // lowest set bit
}

template <typename T>
cublasStatus_t set_desc(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr, const T& v) {
  return cublasLtMatmulDescSetAttribute(d, attr, &v, sizeof v);
}

Status set_batch(cublasLtMatrixLayout_t l, int64_t batch, int64_t stride) {
  if (batch <= 1) return Status::Ok();
  const int32_t count = static_cast<int32_t>(batch);
  ET_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count));
  ET_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride));
  return Status::Ok();
}

__global__ void fill_k0(float* c, int64_t M, int64_t N, int64_t ldc, int64_t sC, int64_t batch, float beta,
                        const float* bias, bool relu) {
  const int64_t n = batch * M * N;
  ET_GRID_LOOP(i, n) {
    const int64_t j = i % N, r = (i / N) % M, b = i / (M * N);
    float* p = c + b * sC + r * ldc + j;
    float v = beta == 0.0f ? 0.0f : beta * *p;
    if (bias) v += bias[j];
    if (relu) v = v < 0.0f ? 0.0f : v;
    *p = v;
  }
}

__global__ void epilogue_kernel(float* y, int64_t n, int64_t inner, int64_t channels, const float* bias, float lo,
                                float hi, bool clamp, DevMask mask, int64_t mask_offset) {
  ET_GRID_LOOP(i, n) {
    float v = y[i];
    if (bias) v += bias[(i / inner) % channels];
    if (clamp) {
      v = v < lo ? lo : v;
      v = v > hi ? hi : v;
    }
    if (!mask.keep(i + mask_offset)) v = 0.0f;
    y[i] = v;
  }
}

}  // namespace

Status gemm(const KernelArgs& a, CudaContext* ctx, const Gemm& g) {
  if (g.M == 0 || g.N == 0 || g.batch == 0) return Status::Ok();
  if (g.batch > INT32_MAX) return internal_error("gemm: batch too large");
  if (g.K == 0) {
    fill_k0<<<grid_for(g.batch * g.M * g.N), kBlock, 0, ctx->stream>>>(g.C, g.M, g.N, g.ldc, g.sC, g.batch, g.beta,
                                                                        g.bias, g.relu);
    ET_CUDA_LAUNCHED("gemm (K = 0)");
    return Status::Ok();
  }
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: cuBLASLt's A is our B.
  cublasLtMatmulDescOpaque_t desc_s;
  cublasLtMatmulDesc_t desc = &desc_s;
  ET_CUBLAS_CHECK(cublasLtMatmulDescInit(desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t opa = g.tb ? CUBLAS_OP_T : CUBLAS_OP_N, opb = g.ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  ET_CUBLAS_CHECK(set_desc(desc, CUBLASLT_MATMUL_DESC_TRANSA, opa));
  ET_CUBLAS_CHECK(set_desc(desc, CUBLASLT_MATMUL_DESC_TRANSB, opb));
  cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_DEFAULT;
  if (g.bias) epi = g.relu ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_BIAS;
  else if (g.relu) epi = CUBLASLT_EPILOGUE_RELU;
  ET_CUBLAS_CHECK(set_desc(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, epi));
  if (g.bias) {
    const void* bias = g.bias;
    ET_CUBLAS_CHECK(set_desc(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias));
  }
  cublasLtMatrixLayoutOpaque_t la_s, lb_s, lc_s;
  cublasLtMatrixLayout_t la = &la_s, lb = &lb_s, lc = &lc_s;
  // cuBLASLt A = our B: column-major [N, K] (stored row-major [K, N]) or, transposed, [K, N]
  ET_CUBLAS_CHECK(cublasLtMatrixLayoutInit(la, CUDA_R_32F, g.tb ? g.K : g.N, g.tb ? g.N : g.K, g.ldb));
  ET_CUBLAS_CHECK(cublasLtMatrixLayoutInit(lb, CUDA_R_32F, g.ta ? g.M : g.K, g.ta ? g.K : g.M, g.lda));
  ET_CUBLAS_CHECK(cublasLtMatrixLayoutInit(lc, CUDA_R_32F, g.N, g.M, g.ldc));
  ET_RETURN_IF_ERROR(set_batch(la, g.batch, g.sB));
  ET_RETURN_IF_ERROR(set_batch(lb, g.batch, g.sA));
  ET_RETURN_IF_ERROR(set_batch(lc, g.batch, g.sC));

  const size_t ws_bytes = a.workspace ? std::min(a.workspace_bytes, kGemmWorkspaceBytes) : 0;
  cublasLtMatmulPreferenceOpaque_t pref_s;
  cublasLtMatmulPreference_t pref = &pref_s;
  ET_CUBLAS_CHECK(cublasLtMatmulPreferenceInit(pref));
  const uint64_t max_ws = ws_bytes;
  ET_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &max_ws, sizeof max_ws));
  // no in-place split-K (it accumulates into C in whatever order the CTAs finish)
  const uint32_t schemes = CUBLASLT_REDUCTION_SCHEME_NONE | CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE |
                           CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE;
  ET_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &schemes, sizeof schemes));
  const uint32_t al_a = alignment(g.B, g.ldb, g.sB, g.batch), al_b = alignment(g.A, g.lda, g.sA, g.batch);
  const uint32_t al_c = alignment(g.C, g.ldc, g.sC, g.batch);
  ET_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof al_a));
  ET_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof al_b));
  ET_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, sizeof al_c));
  ET_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, sizeof al_c));
  cublasLtMatmulHeuristicResult_t result;
  int found = 0;
  ET_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(ctx->cublaslt, desc, la, lb, lc, lc, pref, 1, &result, &found));
  if (found < 1) return internal_error("gemm: cuBLASLt has no algorithm for this shape");
  const float alpha = 1.0f, beta = g.beta;
  ET_CUBLAS_CHECK(cublasLtMatmul(ctx->cublaslt, desc, &alpha, g.B, la, g.A, lb, &beta, g.C, lc, g.C, lc, &result.algo,
                                 ws_bytes ? a.workspace : nullptr, ws_bytes, ctx->stream));
  return Status::Ok();
}

Status epilogue(CudaContext* ctx, float* y, int64_t n, int64_t inner, int64_t channels, const float* bias, float lo,
                float hi, const DevMask& mask, int64_t mask_offset) {
  const float inf = std::numeric_limits<float>::infinity();
  const bool clamp = lo > -inf || hi < inf;
  if (n == 0 || (!bias && !clamp && !mask.active())) return Status::Ok();
  epilogue_kernel<<<grid_for(n), kBlock, 0, ctx->stream>>>(y, n, std::max<int64_t>(inner, 1), std::max<int64_t>(channels, 1),
                                                           bias, lo, hi, clamp, mask, mask_offset);
  ET_CUDA_LAUNCHED("gemm epilogue");
  return Status::Ok();
}

Status read_dev_mask(const KernelArgs& a, int slot, const TensorView& out, const char* kernel, DevMask* m) {
  OutputMask om;
  ET_RETURN_IF_ERROR(read_output_mask(a, slot, out, kernel, &om));
  *m = DevMask{};
  if (om.kind == OutputMask::kBits) m->bits = om.bits;
  if (om.kind == OutputMask::kValues) {
    m->values = om.values;
    m->lo = om.lo;
    m->hi = om.hi;
    m->bounded = true;
  }
  return Status::Ok();
}

namespace {

size_t matmul_workspace(const KernelArgs&) { return gemm_workspace(); }

Status matmul_views_run(const KernelArgs& a, CudaContext* ctx) {
  cpu::MatmulLayout l;
  ET_RETURN_IF_ERROR(cpu::matmul_layout(a, &l));
  if (l.batch == 0 || l.M == 0 || l.N == 0) return Status::Ok();
  DevMask mask;
  ET_RETURN_IF_ERROR(read_dev_mask(a, 2, a.out(0), "matmul", &mask));
  const float* xp = a.in(0).as<float>();
  const float* yp = a.in(1).as<float>();
  float* op = a.out(0).as<float>();
  Gemm g;
  const int inner = l.batch_rank - 1;  // the strided-batch dim; -1 = no batch dims
  g.batch = inner >= 0 ? l.batch_shape[inner] : 1;
  if (!l.out.trans) {
    g.M = l.M, g.N = l.N, g.K = l.K;
    g.ta = l.x.trans, g.lda = l.x.ld, g.tb = l.y.trans, g.ldb = l.y.ld;
    if (inner >= 0) g.sA = l.x.batch_stride[inner], g.sB = l.y.batch_stride[inner];
  } else {  // C^T = op(y)^T op(x)^T
    g.M = l.N, g.N = l.M, g.K = l.K;
    g.ta = !l.y.trans, g.lda = l.y.ld, g.tb = !l.x.trans, g.ldb = l.x.ld;
    if (inner >= 0) g.sA = l.y.batch_stride[inner], g.sB = l.x.batch_stride[inner];
  }
  g.ldc = l.out.ld;
  if (inner >= 0) g.sC = l.out.batch_stride[inner];
  const int64_t outer = l.batch / g.batch;
  for (int64_t o = 0; o < outer; ++o) {
    const int64_t b = o * g.batch;  // first element of this run of the innermost dim
    const float* xb = xp + l.offset(l.x, b);
    const float* yb = yp + l.offset(l.y, b);
    Gemm gb = g;
    gb.A = l.out.trans ? yb : xb;
    gb.B = l.out.trans ? xb : yb;
    gb.C = op + l.offset(l.out, b);
    ET_RETURN_IF_ERROR(gemm(a, ctx, gb));
  }
  const float inf = std::numeric_limits<float>::infinity();
  return epilogue(ctx, op, a.out(0).numel(), 1, 1, nullptr, -inf, inf, mask);
}

Status matmul_run(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  if (cpu::matmul_has_views(a.attr())) return matmul_views_run(a, ctx);
  const TensorView &x = a.in(0), &y = a.in(1), &out = a.out(0);
  const int64_t M = x.dim(-2), K = x.dim(-1), N = y.dim(-1);
  const int r = out.rank;
  int64_t batch = 1, x_batch = 1, y_batch = 1;
  for (int d = 0; d < r - 2; ++d) batch *= out.shape[d];
  for (int d = 0; d < x.rank - 2; ++d) x_batch *= x.shape[d];
  for (int d = 0; d < y.rank - 2; ++d) y_batch *= y.shape[d];
  if (batch == 0 || M == 0 || N == 0) return Status::Ok();
  DevMask mask;
  ET_RETURN_IF_ERROR(read_dev_mask(a, 2, out, "matmul", &mask));
  Gemm g;
  g.M = M, g.N = N, g.K = K;
  g.A = x.as<float>(), g.lda = K;
  g.B = y.as<float>(), g.ldb = N;
  g.C = out.as<float>(), g.ldc = N;
  if (y_batch == 1 && x_batch == batch) {  // one matrix y: x's batch folds into M
    g.M = batch * M;
    ET_RETURN_IF_ERROR(gemm(a, ctx, g));
  } else if ((x_batch == batch || x_batch == 1) && (y_batch == batch || y_batch == 1)) {
    g.batch = batch;
    g.sA = x_batch == 1 ? 0 : M * K;
    g.sB = y_batch == 1 ? 0 : K * N;
    g.sC = M * N;
    ET_RETURN_IF_ERROR(gemm(a, ctx, g));
  } else {  // mixed broadcasting: one GEMM per output batch element
    int64_t xstride[kMaxRank] = {0}, ystride[kMaxRank] = {0};
    cpu::matmul_batch_strides(x, y, r, M, K, N, xstride, ystride);
    for (int64_t b = 0; b < batch; ++b) {
      int64_t xo = 0, yo = 0, rest = b;
      for (int d = r - 3; d >= 0; --d) {
        const int64_t i = rest % out.shape[d];
        rest /= out.shape[d];
        xo += i * xstride[d];
        yo += i * ystride[d];
      }
      Gemm gb = g;
      gb.A = x.as<float>() + xo;
      gb.B = y.as<float>() + yo;
      gb.C = out.as<float>() + b * M * N;
      ET_RETURN_IF_ERROR(gemm(a, ctx, gb));
    }
  }
  const float inf = std::numeric_limits<float>::infinity();
  return epilogue(ctx, out.as<float>(), out.numel(), 1, 1, nullptr, -inf, inf, mask);
}

size_t linear_workspace(const KernelArgs&) { return gemm_workspace(); }

Status linear_run(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  const TensorView &x = a.in(0), &w = a.in(1), &out = a.out(0);
  const int64_t in = w.shape[1], outf = w.shape[0];
  const int64_t rows = in ? x.numel() / in : out.numel() / std::max<int64_t>(outf, 1);
  if (rows == 0 || outf == 0) return Status::Ok();
  float lo, hi;
  ET_RETURN_IF_ERROR(read_activation(a.attr(), "linear", &lo, &hi));
  const float inf = std::numeric_limits<float>::infinity();
  Gemm g;
  g.tb = true;
  g.M = rows, g.N = outf, g.K = in;
  g.A = x.as<float>(), g.lda = in;
  g.B = w.as<float>(), g.ldb = in;
  g.C = out.as<float>(), g.ldc = outf;
  g.bias = a.num_inputs == 3 ? a.in(2).as<float>() : nullptr;
  g.relu = lo == 0.0f && hi == inf;
  ET_RETURN_IF_ERROR(gemm(a, ctx, g));
  if (g.relu || (lo == -inf && hi == inf)) return Status::Ok();
  return epilogue(ctx, out.as<float>(), out.numel(), 1, 1, nullptr, lo, hi, DevMask{});
}

}  // namespace

void register_matmul_kernels(KernelRegistry& r) {
  add_like_cpu(r, "matmul", "matmul", &matmul_workspace, &matmul_run);
  add_like_cpu(r, "linear", "linear", &linear_workspace, &linear_run);
  // the cpu's ".own" variants (built-in GEMM instead of the library) mean nothing on a GPU: the
  // same cuBLAS kernels, registered so a plan compiled for cpu loads on cuda (registry parity)
  add_like_cpu(r, "matmul", "matmul.own", &matmul_workspace, &matmul_run);
  add_like_cpu(r, "linear", "linear.own", &linear_workspace, &linear_run);
}

}  // namespace cuda
}  // namespace edgetune
