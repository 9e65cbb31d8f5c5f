// Single-precision GEMM for the CPU kernels: one row-major entry point, two implementations.
//
//   sgemm      what the kernels call: the GEMM library the build linked (cmake/gemm.cmake,
//              EDGETUNE_BLAS: Intel MKL under EDGETUNE_HAVE_MKL, OpenBLAS under
//              EDGETUNE_HAVE_OPENBLAS), otherwise the built-in packed kernel below. The library is
//              always run single-threaded (MKL's sequential layer; openblas_set_num_threads(1))
//              and sgemm spreads tiles of C over the pool itself (a library's own threading gives
//              thread-count-dependent results).
//   sgemm_own  the built-in kernel (gemm.cc): packed A/B panels in stack buffers, a
//              register-blocked micro-kernel written with GCC/Clang vector extensions so the
//              same source becomes AVX-512, AVX2 or NEON code; compiled in every build. It is
//              what builds without a library use (aarch64, -DEDGETUNE_BLAS=OWN), and what the
//              ".own" kernel variants (matmul.own, linear.own) call, so the kernel-selection
//              pass can time it against the library per node. benchmarks/gemm_bench.cc compares
//              both in one binary.
//
// Both are allocation-free once warm (the libraries set up their internal buffer pools on a
// thread's first call and keep them) and deterministic: 1 and N threads give identical results.
// The own kernel sums every element of C over K in an order fixed by the shape alone; the library
// path cuts C into one tile per thread and relies on the library computing an element the same
// way whatever the tile around it (gemm.cc says where that was checked; a GoogleTest enforces it).
//
// The epilogue (GemmBias) is what the kernels fuse into the write of C instead of a separate
// pass over memory: a bias, then a clamp (the forward activations relu / hardtanh of conv2d and
// linear), then an output mask (the backward of the activation that produced a layer's input,
// fused into conv2d_grad_input and matmul). Below it: the readers of the attrs/inputs that ask
// for these, shared by the kernels that use them (conv.cc, matmul.cc).
#pragma once

#include <cstdint>
#include <limits>
#include <string>

#include "core/kernel.h"
#include "core/thread_pool.h"

namespace edgetune {

// Zeroes the elements of an output that an activation's derivative zeroes. Element e (row-major
// index into the whole masked tensor) is kept where
//   kBits:   bit e of `bits` is 1 (byte e >> 3, bit e & 7, LSB first: activation_mask's format)
//   kValues: lo < values[e] < hi (values = the activation's forward output, as relu_backward /
//            hardtanh_backward test it; hi = +inf when the activation has no upper bound).
// A zeroed element becomes 0 whatever it held (inf, NaN), as np.where / hardtanh_backward do.
struct OutputMask {
  enum Kind : uint8_t { kNone, kBits, kValues };
  Kind kind = kNone;
  const uint8_t* bits = nullptr;
  const float* values = nullptr;
  float lo = 0.0f, hi = std::numeric_limits<float>::infinity();

  bool active() const { return kind != kNone; }
  // out[k], k < n, is element `index + k` of the masked tensor: zero those not kept.
  void apply(float* out, int64_t index, int64_t n) const;
};

// What the GEMM's write-back does beyond alpha * A @ B + beta * C, in this order:
//   bias   row[i] to every element of row i (length M), col[j] to every element of column j
//          (length N); either may be null. Added on the first K block.
//   clamp  C = min(max(C, clamp_lo), clamp_hi) once C is final (relu: lo = 0, hi = +inf). NaN
//          stays NaN, as np.maximum / np.clip keep it.
//   mask   once C is final: element (i, j) of C is element mask_index + i * ldc + j of the
//          tensor `mask` describes (so a C that is a block of a bigger output says where).
// Fused into the own kernel's register write-back; with a library the bias is written before the
// product and clamp/mask run over each tile right after it, while the tile is still in cache.
// Every field has a default, so `GemmBias b; b.row = ...` and `GemmBias{row, col}` keep working.
struct GemmBias {
  const float* row = nullptr;
  const float* col = nullptr;
  float clamp_lo = -std::numeric_limits<float>::infinity();
  float clamp_hi = std::numeric_limits<float>::infinity();
  OutputMask mask;
  int64_t mask_index = 0;

  bool clamps() const {
    return clamp_lo > -std::numeric_limits<float>::infinity() || clamp_hi < std::numeric_limits<float>::infinity();
  }
};

// C[M,N] = alpha * op(A)[M,K] @ op(B)[K,N] + beta * C + bias, every matrix row-major with row
// stride lda/ldb/ldc as stored (op(X) = X^T when trans_x, so a transposed A is stored [K,M]).
// beta == 0 overwrites C without reading it (C may hold garbage or NaN).
// pool: the threads to use; null = the calling thread only. The pool is not re-entrant: inside a
// parallel_for body pass null (concurrent null-pool calls from several threads are fine).
void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc, ThreadPool* pool, GemmBias bias = {});

// The built-in kernel, same contract.
void sgemm_own(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
               int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc, ThreadPool* pool,
               GemmBias bias = {});

// sgemm's library path by name, same contract (today sgemm is exactly this); sgemm_own when the
// build has no library. For benchmarks and tests that want "the library" whatever sgemm routes.
void sgemm_library(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                   int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc, ThreadPool* pool,
                   GemmBias bias = {});

// "mkl", "openblas" or "own": the library sgemm runs in this build.
const char* sgemm_backend();
// true when sgemm calls a library (sgemm_backend() is not "own")
bool sgemm_has_library();

// ---- reading the epilogue attrs and inputs (the kernels' check and run both call these) ------
// Inline here rather than in gemm.cc, so that gemm.cc needs nothing of the runtime core beyond
// the thread pool (benchmarks/gemm_bench.cc links it alone).

namespace epilogue_detail {

// A float attr that must be present (an int reads as a float: the IR may write `act_max=6`).
// Strings are built only on failure, so run() allocates nothing.
inline Status required_float(const Attrs& attrs, const char* name, const char* kernel, const char* why, float* out) {
  const Attr* at = attrs.find(name);
  if (!at || (at->kind != AttrKind::kFloat && at->kind != AttrKind::kInt))
    return invalid_argument(std::string(kernel) + ": " + why + " needs a float attr '" + name + "'");
  *out = static_cast<float>(attrs.get_float(name));
  return Status::Ok();
}

}  // namespace epilogue_detail

// A forward op's fused activation: attr `activation` = "relu" (lo 0, hi +inf), "hardtanh"
// (attrs act_min <= act_max: lo, hi), or absent / "none" (no clamp: -inf, +inf). Anything else,
// or a hardtanh without its bounds, is an error naming `kernel`.
inline Status read_activation(const Attrs& attrs, const char* kernel, float* lo, float* hi) {
  *lo = -std::numeric_limits<float>::infinity();
  *hi = std::numeric_limits<float>::infinity();
  const Attr* at = attrs.find("activation");
  if (!at) return Status::Ok();
  if (at->kind != AttrKind::kString)
    return invalid_argument(std::string(kernel) + ": attr 'activation' must be a string");
  if (at->s == "none") return Status::Ok();
  if (at->s == "relu") {
    *lo = 0.0f;
    return Status::Ok();
  }
  if (at->s == "hardtanh") {
    ET_RETURN_IF_ERROR(epilogue_detail::required_float(attrs, "act_min", kernel, "activation 'hardtanh'", lo));
    ET_RETURN_IF_ERROR(epilogue_detail::required_float(attrs, "act_max", kernel, "activation 'hardtanh'", hi));
    if (!(*lo <= *hi))
      return invalid_argument(std::string(kernel) + ": hardtanh act_min " + std::to_string(*lo) +
                              " is above act_max " + std::to_string(*hi));
    return Status::Ok();
  }
  return invalid_argument(std::string(kernel) + ": unknown activation '" + at->s +
                          "' (want none, relu or hardtanh)");
}

// The optional output mask in input slot `slot` of a kernel whose output is `out` (absent: an
// inactive mask). u8 [(numel(out) + 7) / 8] = bits; f32 shaped like `out` = values, with attrs
// mask_min (required) and mask_max (optional, +inf). Errors name `kernel` and the problem. In
// check() the data pointers are null; the kinds and bounds are already what run() gets.
inline Status read_output_mask(const KernelArgs& a, int slot, const TensorView& out, const char* kernel,
                               OutputMask* mask) {
  *mask = OutputMask{};
  if (a.num_inputs <= slot) return Status::Ok();
  const TensorView& m = a.in(slot);
  if (m.dtype == DType::u8) {
    const int64_t want = (out.numel() + 7) / 8;
    if (m.rank != 1 || m.shape[0] != want)
      return invalid_argument(std::string(kernel) + ": bit mask " + m.shape_string() + " does not fit output " +
                              out.shape_string() + " (want u8[" + std::to_string(want) + "])");
    mask->kind = OutputMask::kBits;
    mask->bits = m.as<uint8_t>();
    return Status::Ok();
  }
  if (m.dtype == DType::f32) {
    bool same = m.rank == out.rank;
    for (int d = 0; same && d < m.rank; ++d) same = m.shape[d] == out.shape[d];
    if (!same)
      return invalid_argument(std::string(kernel) + ": activation mask " + m.shape_string() +
                              " is not shaped like output " + out.shape_string());
    const char* why = "an f32 activation mask";
    ET_RETURN_IF_ERROR(epilogue_detail::required_float(a.attr(), "mask_min", kernel, why, &mask->lo));
    if (a.attr().has("mask_max"))
      ET_RETURN_IF_ERROR(epilogue_detail::required_float(a.attr(), "mask_max", kernel, why, &mask->hi));
    mask->kind = OutputMask::kValues;
    mask->values = m.as<float>();
    return Status::Ok();
  }
  return invalid_argument(std::string(kernel) + ": mask " + m.shape_string() +
                          " must be u8 bits or an f32 activation output");
}

}  // namespace edgetune
