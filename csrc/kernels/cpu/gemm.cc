// sgemm: the GEMM library when the build has one (MKL or OpenBLAS), and the built-in packed
// kernel (sgemm_own) always.
//
// The built-in kernel is the classic GotoBLAS/BLIS structure, sized so that its packing buffers
// fit on a thread's stack (no heap; no thread_local either, which a dlopen'ed module allocates):
//
//   C is cut into tasks: a kNC-wide column block, and within it a group of rows (all of M unless
//   there are too few column blocks for the threads). parallel_for hands tasks to threads. A task
//   walks K in kKC blocks: it packs its B block once (kKC x kNC, kNR-wide slivers, k-major), then
//   for each kMC row block packs A (kMR-tall slivers, k-major) and runs the kMR x kNR
//   micro-kernel over every sliver pair; the B sliver (kKC x kNR) stays in L1 while A streams
//   from L2. Partial slivers are zero-padded while packing, so the micro-kernel always computes a
//   full tile and only the write-back is clipped. An operand that runs along K in memory (A not
//   transposed, B transposed) is packed with 4x4 register transposes.
//
// The micro-kernel keeps kMR x kNV vector accumulators in registers. It is written with GCC/Clang
// vector extensions (`vector_size`), which the compiler lowers to AVX-512 / AVX2+FMA / NEON / SSE
// for whatever -march the build targets, so no intrinsics are needed; a plain-array version is
// the fallback for other compilers (and with -DEDGETUNE_GEMM_PORTABLE, to test it). Tile shapes
// per ISA follow the register budget; benchmarks/gemm_bench.cc measures them. The write-back
// applies alpha, beta and an optional row/column bias (GemmBias), so a bias costs no extra pass;
// on the last K block it also applies the clamp (a fused activation) in registers and the output
// mask to the tile's rows just stored (still in L1).
//
// Determinism: every C element is summed by one micro-kernel call per K block, K blocks in order,
// and K is blocked by kKC alone; how C is cut into tasks and threads never changes a result.
#include "kernels/cpu/gemm.h"

#include <algorithm>
#include <cstring>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#if defined(EDGETUNE_HAVE_MKL)
#include <mkl_cblas.h>
#define ET_HAVE_CBLAS 1
#elif defined(EDGETUNE_HAVE_OPENBLAS)
#include <cblas.h>
#define ET_HAVE_CBLAS 1
#endif

namespace edgetune {
namespace {

// Register tile: kMR rows x kNV vectors of kVec floats. Accumulators + kNV B vectors + one
// broadcast must fit the register file (32 zmm / 16 ymm / 32 NEON q / 16 xmm).
#if defined(__AVX512F__)
constexpr int kVec = 16, kMR = 12, kNV = 2;  // 24 accumulators
#elif defined(__AVX__)
constexpr int kVec = 8, kMR = 6, kNV = 2;  // 12 accumulators (the AVX2 classic 6x16)
#elif defined(__aarch64__)
constexpr int kVec = 4, kMR = 8, kNV = 3;  // 24 accumulators, 8x12 as in OpenBLAS's NEON sgemm
#else
constexpr int kVec = 4, kMR = 4, kNV = 2;  // SSE2, 32-bit NEON: 8 accumulators of 16 registers
#endif
constexpr int kNR = kVec * kNV;

// Cache blocking. Stack per thread: (kMC + kNC) * kKC * 4 bytes = 352 KiB with the AVX-512 tile
// (160 KiB with aarch64's): fine for glibc's 8 MiB thread stacks, too much for musl's 128 KiB
// default. kNC = 8 slivers measured ~5% faster than 4 on the shapes of gemm_bench.
constexpr int64_t kKC = 256;
constexpr int64_t kMC = kMR * 8;
constexpr int64_t kNC = kNR * 8;

// Below this many multiply-adds one thread is faster than waking the pool.
constexpr int64_t kMinParallelMacs = int64_t{1} << 18;

struct Gemm {
  bool ta, tb;
  int64_t M, N, K;
  float alpha;
  const float* A;
  int64_t lda;
  const float* B;
  int64_t ldb;
  float beta;
  float* C;
  int64_t ldc;
  GemmBias ep;  // bias, clamp, mask
};

// dst[k * width + r] = src[r * ld + k] for r < rows, k < kc, and 0 for rows <= r < width: the
// transposing copy both packs need when their operand runs along K in memory (a non-transposed A,
// a transposed B). Done in 4x4 blocks transposed in registers (two rounds of shuffles, lowered to
// unpck/shuf on x86 and zip/trn on NEON), which is several times faster than element copies.
#if (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)) && !defined(EDGETUNE_GEMM_PORTABLE)
typedef float F4 __attribute__((vector_size(16)));
typedef float F4U __attribute__((vector_size(16), aligned(alignof(float)), may_alias));
#define ET_HAVE_SHUFFLE 1
#endif

void pack_transposed(const float* src, int64_t ld, int64_t rows, int64_t kc, int width, float* dst) {
  int64_t r = 0;
#ifdef ET_HAVE_SHUFFLE
  for (; r + 4 <= rows; r += 4) {
    const float* s0 = src + r * ld;
    const float* s1 = s0 + ld;
    const float* s2 = s1 + ld;
    const float* s3 = s2 + ld;
    int64_t k = 0;
    for (; k + 4 <= kc; k += 4) {
      const F4 a = *reinterpret_cast<const F4U*>(s0 + k), b = *reinterpret_cast<const F4U*>(s1 + k);
      const F4 c = *reinterpret_cast<const F4U*>(s2 + k), d = *reinterpret_cast<const F4U*>(s3 + k);
      const F4 ab_lo = __builtin_shufflevector(a, b, 0, 4, 1, 5), ab_hi = __builtin_shufflevector(a, b, 2, 6, 3, 7);
      const F4 cd_lo = __builtin_shufflevector(c, d, 0, 4, 1, 5), cd_hi = __builtin_shufflevector(c, d, 2, 6, 3, 7);
      float* o = dst + k * width + r;
      *reinterpret_cast<F4U*>(o) = __builtin_shufflevector(ab_lo, cd_lo, 0, 1, 4, 5);
      *reinterpret_cast<F4U*>(o + width) = __builtin_shufflevector(ab_lo, cd_lo, 2, 3, 6, 7);
      *reinterpret_cast<F4U*>(o + 2 * width) = __builtin_shufflevector(ab_hi, cd_hi, 0, 1, 4, 5);
      *reinterpret_cast<F4U*>(o + 3 * width) = __builtin_shufflevector(ab_hi, cd_hi, 2, 3, 6, 7);
    }
    for (; k < kc; ++k) {
      float* o = dst + k * width + r;
      o[0] = s0[k], o[1] = s1[k], o[2] = s2[k], o[3] = s3[k];
    }
  }
#endif
  for (; r < rows; ++r)
    for (int64_t k = 0; k < kc; ++k) dst[k * width + r] = src[r * ld + k];
  if (rows < width)
    for (int64_t k = 0; k < kc; ++k) std::fill(dst + k * width + rows, dst + (k + 1) * width, 0.0f);
}

// A rows [i0, i0+mc) x cols [k0, k0+kc) -> kMR-row slivers, each stored k-major (kMR per k).
void pack_a(const Gemm& g, int64_t i0, int64_t mc, int64_t k0, int64_t kc, float* pa) {
  for (int64_t s = 0; s < mc; s += kMR) {
    float* dst = pa + s * kc;
    const int64_t rows = std::min<int64_t>(kMR, mc - s);
    if (g.ta) {  // A stored [K, M]: the kMR values of one k are contiguous
      for (int64_t k = 0; k < kc; ++k) {
        const float* src = g.A + (k0 + k) * g.lda + i0 + s;
        float* d = dst + k * kMR;
        for (int64_t r = 0; r < rows; ++r) d[r] = src[r];
        for (int64_t r = rows; r < kMR; ++r) d[r] = 0.0f;
      }
    } else {  // A stored [M, K]: kMR rows, each contiguous along K
      pack_transposed(g.A + (i0 + s) * g.lda + k0, g.lda, rows, kc, kMR, dst);
    }
  }
}

// B rows [k0, k0+kc) x cols [j0, j0+nc) -> kNR-column slivers, each stored k-major (kNR per k).
void pack_b(const Gemm& g, int64_t k0, int64_t kc, int64_t j0, int64_t nc, float* pb) {
  for (int64_t t = 0; t < nc; t += kNR) {
    float* dst = pb + t * kc;
    const int64_t cols = std::min<int64_t>(kNR, nc - t);
    if (!g.tb) {  // B stored [K, N]: a sliver row is contiguous
      const float* src = g.B + k0 * g.ldb + j0 + t;
      if (cols == kNR) {
        for (int64_t k = 0; k < kc; ++k) std::memcpy(dst + k * kNR, src + k * g.ldb, sizeof(float) * kNR);
      } else {
        for (int64_t k = 0; k < kc; ++k) {
          for (int64_t c = 0; c < cols; ++c) dst[k * kNR + c] = src[k * g.ldb + c];
          for (int64_t c = cols; c < kNR; ++c) dst[k * kNR + c] = 0.0f;
        }
      }
    } else {  // B stored [N, K]: kNR rows of storage, each contiguous along K
      pack_transposed(g.B + (j0 + t) * g.ldb + k0, g.ldb, cols, kc, kNR, dst);
    }
  }
}

#if defined(__GNUC__) || defined(__clang__)
#define ET_NOINLINE __attribute__((noinline))
#else
#define ET_NOINLINE
#endif

// How a tile's sums land in C: C = alpha * sum + beta * C (+ bias on the first K block, where
// rb/cb point at the tile's first row / column of the biases, or are null); on the last K block
// clamped to [lo, hi] when `clamp`, then masked when `mask` is set (mask_index: the masked
// tensor's index of the tile's element (0, 0)).
struct Epilogue {
  float alpha, beta;
  const float* rb;
  const float* cb;
  bool clamp = false;
  float lo = 0.0f, hi = 0.0f;
  const OutputMask* mask = nullptr;
  int64_t mask_index = 0;
};

// max then min, written as compares so NaN passes through (np.clip keeps NaN too)
inline float clamp_scalar(float r, float lo, float hi) {
  r = r < lo ? lo : r;
  return r > hi ? hi : r;
}

inline void mask_tile(float* c, int64_t ldc, int rows, int cols, const Epilogue& e) {
  for (int i = 0; i < rows; ++i) e.mask->apply(c + i * ldc, e.mask_index + i * ldc, cols);
}

// Writes rows x cols of one kMR x kNR tile (row-major in `t`, row stride kNR) into C.
// beta == 0: C is not read.
inline void store_tile_clipped(const float* t, float* c, int64_t ldc, int rows, int cols, const Epilogue& e) {
  for (int i = 0; i < rows; ++i) {
    float* ci = c + i * ldc;
    const float* ti = t + i * kNR;
    const float rbi = e.rb ? e.rb[i] : 0.0f;
    for (int j = 0; j < cols; ++j) {
      float r = e.alpha * ti[j];
      if (e.beta != 0.0f) r += e.beta * ci[j];
      if (e.cb) r += e.cb[j];
      r += rbi;
      ci[j] = e.clamp ? clamp_scalar(r, e.lo, e.hi) : r;
    }
  }
  if (e.mask) mask_tile(c, ldc, rows, cols, e);
}

#if (defined(__GNUC__) || defined(__clang__)) && !defined(EDGETUNE_GEMM_PORTABLE)
typedef float VecF __attribute__((vector_size(kVec * sizeof(float))));
// unaligned, aliasing-safe view for loads and stores (C rows need not be vector-aligned)
typedef float VecFU __attribute__((vector_size(kVec * sizeof(float)), aligned(alignof(float)), may_alias));

inline VecF vload(const float* p) { return *reinterpret_cast<const VecFU*>(p); }
inline void vstore(float* p, VecF v) { *reinterpret_cast<VecFU*>(p) = v; }

// clamp_scalar lane by lane (vector compares + selects: maxps/minps-like, NaN kept)
inline VecF clamp_vec(VecF r, VecF lo, VecF hi) {
  r = r < lo ? lo : r;
  return r > hi ? hi : r;
}

// kc steps of: kNV vector loads of B, kMR broadcasts of A, kMR*kNV fused multiply-adds.
ET_NOINLINE void micro_kernel(int64_t kc, const float* __restrict a, const float* __restrict b, float* c, int64_t ldc,
                             int rows, int cols, const Epilogue& e) {
  VecF acc[kMR][kNV];
#pragma GCC unroll 16
  for (int i = 0; i < kMR; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < kNV; ++j) acc[i][j] = VecF{};
  for (int64_t k = 0; k < kc; ++k) {
    VecF bv[kNV];
#pragma GCC unroll 4
    for (int j = 0; j < kNV; ++j) bv[j] = vload(b + j * kVec);
#if defined(__aarch64__)
    // NEON: load the kMR A values as vectors and multiply by lane (fmla v, v, v.s[i]); scalar
    // loads would need kMR more registers than the 32 the 8x12 tile leaves free.
    VecF av[kMR / kVec];
#pragma GCC unroll 4
    for (int v = 0; v < kMR / kVec; ++v) av[v] = vload(a + v * kVec);
#pragma GCC unroll 16
    for (int i = 0; i < kMR; ++i) {
      const float ai = av[i / kVec][i % kVec];
#pragma GCC unroll 4
      for (int j = 0; j < kNV; ++j) acc[i][j] += ai * bv[j];
    }
#else
#pragma GCC unroll 16
    for (int i = 0; i < kMR; ++i) {
      const float ai = a[i];  // x86: folds into a broadcast load (vbroadcastss / {1toN})
#pragma GCC unroll 4
      for (int j = 0; j < kNV; ++j) acc[i][j] += ai * bv[j];
    }
#endif
    a += kMR;
    b += kNR;
  }
  if (rows == kMR && cols == kNR) {
    const VecF lo = VecF{} + e.lo, hi = VecF{} + e.hi;
#pragma GCC unroll 16
    for (int i = 0; i < kMR; ++i) {
#pragma GCC unroll 4
      for (int j = 0; j < kNV; ++j) {
        float* p = c + i * ldc + j * kVec;
        VecF r = e.alpha == 1.0f ? acc[i][j] : e.alpha * acc[i][j];
        if (e.beta != 0.0f) r += e.beta == 1.0f ? vload(p) : e.beta * vload(p);
        if (e.cb) r += vload(e.cb + j * kVec);
        if (e.rb) r += e.rb[i];
        if (e.clamp) r = clamp_vec(r, lo, hi);
        vstore(p, r);
      }
    }
    if (e.mask) mask_tile(c, ldc, kMR, kNR, e);
    return;
  }
  alignas(64) float tile[kMR * kNR];
  for (int i = 0; i < kMR; ++i)
    for (int j = 0; j < kNV; ++j) vstore(tile + i * kNR + j * kVec, acc[i][j]);
  store_tile_clipped(tile, c, ldc, rows, cols, e);
}
#else
// Portable fallback: the same tile as plain arrays; compilers vectorize the j loops.
ET_NOINLINE void micro_kernel(int64_t kc, const float* __restrict a, const float* __restrict b, float* c, int64_t ldc,
                             int rows, int cols, const Epilogue& e) {
  float acc[kMR][kNR] = {};
  for (int64_t k = 0; k < kc; ++k) {
    for (int i = 0; i < kMR; ++i)
      for (int j = 0; j < kNR; ++j) acc[i][j] += a[i] * b[j];
    a += kMR;
    b += kNR;
  }
  store_tile_clipped(&acc[0][0], c, ldc, rows, cols, e);
}
#endif

// One task: C rows [i_begin, i_end) x cols [j0, j0+nc), nc <= kNC, over all of K. The B block
// is packed once per K block and reused by every kMC row block of the task.
void gemm_task(const Gemm& g, int64_t i_begin, int64_t i_end, int64_t j0, int64_t nc) {
  alignas(64) float pa[kMC * kKC];
  alignas(64) float pb[kKC * kNC];
  for (int64_t k0 = 0; k0 < g.K; k0 += kKC) {
    const int64_t kc = std::min(kKC, g.K - k0);
    const bool first = k0 == 0;  // later K blocks accumulate onto the first, which adds the bias
    const bool last = k0 + kc >= g.K;  // C is final here: clamp and mask
    const bool clamp = last && g.ep.clamps();
    const OutputMask* mask = last && g.ep.mask.active() ? &g.ep.mask : nullptr;
    pack_b(g, k0, kc, j0, nc, pb);
    for (int64_t i0 = i_begin; i0 < i_end; i0 += kMC) {
      const int64_t mc = std::min(kMC, i_end - i0);
      pack_a(g, i0, mc, k0, kc, pa);
      for (int64_t jr = 0; jr < nc; jr += kNR) {
        const int cols = static_cast<int>(std::min<int64_t>(kNR, nc - jr));
        for (int64_t ir = 0; ir < mc; ir += kMR) {
          const int rows = static_cast<int>(std::min<int64_t>(kMR, mc - ir));
          const Epilogue e{g.alpha,
                           first ? g.beta : 1.0f,
                           first && g.ep.row ? g.ep.row + i0 + ir : nullptr,
                           first && g.ep.col ? g.ep.col + j0 + jr : nullptr,
                           clamp,
                           g.ep.clamp_lo,
                           g.ep.clamp_hi,
                           mask,
                           g.ep.mask_index + (i0 + ir) * g.ldc + j0 + jr};
          micro_kernel(kc, pa + ir * kc, pb + jr * kc, g.C + (i0 + ir) * g.ldc + j0 + jr, g.ldc, rows, cols, e);
        }
      }
    }
  }
}

// Clamp and mask of C rows [i0, i1) x cols [j0, j1), once they hold their final sums.
void finish_c(const Gemm& g, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  const bool clamp = g.ep.clamps();
  for (int64_t i = i0; i < i1; ++i) {
    float* ci = g.C + i * g.ldc;
    if (clamp)
      for (int64_t j = j0; j < j1; ++j) ci[j] = clamp_scalar(ci[j], g.ep.clamp_lo, g.ep.clamp_hi);
    if (g.ep.mask.active()) g.ep.mask.apply(ci + j0, g.ep.mask_index + i * g.ldc + j0, j1 - j0);
  }
}

// C rows [i0, i1) x cols [j0, j1) = beta * C + bias: with `finish` (then clamped and masked) the
// whole result of a K == 0 / alpha == 0 product; without, what OpenBLAS tiles start from when
// there is a bias.
void scale_c(const Gemm& g, int64_t i0, int64_t i1, int64_t j0, int64_t j1, bool finish) {
  for (int64_t i = i0; i < i1; ++i) {
    float* ci = g.C + i * g.ldc;
    const float rb = g.ep.row ? g.ep.row[i] : 0.0f;
    for (int64_t j = j0; j < j1; ++j) {
      float r = g.beta == 0.0f ? 0.0f : g.beta * ci[j];
      if (g.ep.col) r += g.ep.col[j];
      ci[j] = r + rb;
    }
  }
  if (finish) finish_c(g, i0, i1, j0, j1);
}

}  // namespace

void sgemm_own(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
               int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc, ThreadPool* pool,
               GemmBias bias) {
  if (M <= 0 || N <= 0) return;
  const Gemm g{trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias};
  if (K <= 0 || alpha == 0.0f) {
    scale_c(g, 0, M, 0, N, /*finish=*/true);
    return;
  }
  // Tasks: every kNC column block, its rows cut into `rg` groups of whole kMR slivers only when
  // there are too few column blocks to keep the threads busy (each group repacks the B block).
  // How C is cut never changes a result: each element's K order is fixed by kKC alone.
  const int64_t ms = (M + kMR - 1) / kMR, nb = (N + kNC - 1) / kNC;
  const int threads = pool && M * N * K >= kMinParallelMacs ? pool->num_threads() : 1;
  const int64_t rg = threads > 1 ? std::min(ms, (2 * threads + nb - 1) / nb) : 1;
  auto tasks = [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t jb = t / rg, grp = t % rg;
      const int64_t i_begin = ms * grp / rg * kMR, i_end = std::min(M, ms * (grp + 1) / rg * kMR);
      gemm_task(g, i_begin, i_end, jb * kNC, std::min(kNC, N - jb * kNC));
    }
  };
  if (threads > 1 && nb * rg > 1) {
    pool->parallel_for(nb * rg, 1, tasks);
  } else {
    tasks(0, nb * rg);
  }
}

#ifdef ET_HAVE_CBLAS
// A library's own threading changes results with its thread count (measured with OpenBLAS
// 0.3.21: ~5% of the elements of a 512^3 product differ, up to 8e-4 relative, between 1 and 2
// threads), which would break "N threads == 1 thread". So the library always runs single-threaded
// (MKL: the sequential layer is what the build links; OpenBLAS: openblas_set_num_threads(1)), and
// sgemm threads it itself: C is cut into one tile per thread (fewer for small products), each
// tile one cblas_sgemm call. The tile count follows the thread count, so the results rest on the
// library computing an element the same way whatever the extent of the call it sits in: MKL
// 2024+ does on every product sgemm cuts (tiles of >= 32 rows or >= 64 columns: checked on the
// text, 1x1 and 3x3 conv shapes split 2, 3, 4, 8 and 16 ways; only a split down to single rows,
// which sgemm never makes, took its matrix-vector path and differed), and
// KernelsGemm.ThreadedTilesAreIdenticalForAnyThreadCount holds every build to it on 1-4 threads.
// One tile per thread because each call re-packs its panels and runs its own blocking: on 2
// threads (Intel Xeon) 2 tiles instead of up to 8 made ResNet's 3x3 convs 1.2x faster (64@56
// forward 147 -> 177 GFLOP/s, grad_input 180 -> 224) and a 1024x1536x384 linear 280 -> 322.
namespace {

// Smallest tile worth its own cblas call (multiply-adds).
constexpr int64_t kBlasTileMacs = int64_t{1} << 21;

void blas_call(const Gemm& g, int64_t i0, int64_t m, int64_t j0, int64_t n) {
  const float* a = g.ta ? g.A + i0 : g.A + i0 * g.lda;
  const float* b = g.tb ? g.B + j0 * g.ldb : g.B + j0;
  float beta = g.beta;
  if (g.ep.row || g.ep.col) {  // cblas has no bias: start the tile from beta * C + bias
    scale_c(g, i0, i0 + m, j0, j0 + n, /*finish=*/false);
    beta = 1.0f;
  }
  cblas_sgemm(CblasRowMajor, g.ta ? CblasTrans : CblasNoTrans, g.tb ? CblasTrans : CblasNoTrans, static_cast<int>(m),
              static_cast<int>(n), static_cast<int>(g.K), g.alpha, a, static_cast<int>(g.lda), b,
              static_cast<int>(g.ldb), beta, g.C + i0 * g.ldc + j0, static_cast<int>(g.ldc));
  if (g.ep.clamps() || g.ep.mask.active()) finish_c(g, i0, i0 + m, j0, j0 + n);  // the tile is still cached
}

}  // namespace

void sgemm_library(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                   int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc, ThreadPool* pool,
                   GemmBias bias) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == 0.0f) {  // cblas wants lda >= 1 even then; the own kernel just scales C
    sgemm_own(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, nullptr, bias);
    return;
  }
#ifdef EDGETUNE_HAVE_OPENBLAS
  // Once per process, thread-safe (function-local static): OpenBLAS computes on the caller's thread.
  static const bool single_threaded = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)single_threaded;
#endif
  const Gemm g{trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias};
  // Tiles: halve the longer side (in units of work) until there is one per thread or they get small.
  int64_t tm = 1, tn = 1;
  const int64_t threads = pool ? pool->num_threads() : 1;
  const int64_t want = std::min(threads, std::max<int64_t>(1, M * N * K / kBlasTileMacs));
  while (tm * tn < want) {
    if (N / tn >= M / tm && N / tn >= 64) tn *= 2;
    else if (M / tm >= 32) tm *= 2;
    else if (N / tn >= 64) tn *= 2;
    else break;
  }
  const int64_t bm = ((M + tm - 1) / tm + 7) / 8 * 8, bn = ((N + tn - 1) / tn + 15) / 16 * 16;
  const int64_t mb = (M + bm - 1) / bm, nb = (N + bn - 1) / bn;
  auto tiles = [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t i0 = (t % mb) * bm, j0 = (t / mb) * bn;
      blas_call(g, i0, std::min(bm, M - i0), j0, std::min(bn, N - j0));
    }
  };
  if (pool && pool->num_threads() > 1 && mb * nb > 1) {
    pool->parallel_for(mb * nb, 1, tiles);
  } else {
    tiles(0, mb * nb);
  }
}

// The library on every shape: on the Xeon it measured as fast or faster than the built-in kernel
// down to 8x8x8 (gemm_bench's "tiny" rows); where it does not win on some machine, the kernel
// selection pass picks the ".own" variant for that node.
void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc, ThreadPool* pool, GemmBias bias) {
  sgemm_library(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, pool, bias);
}

#if defined(EDGETUNE_HAVE_MKL)
const char* sgemm_backend() { return "mkl"; }
#else
const char* sgemm_backend() { return "openblas"; }
#endif
bool sgemm_has_library() { return true; }
#else
void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc, ThreadPool* pool, GemmBias bias) {
  sgemm_own(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, pool, bias);
}

void sgemm_library(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                   int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc, ThreadPool* pool,
                   GemmBias bias) {
  sgemm_own(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, pool, bias);
}

const char* sgemm_backend() { return "own"; }
bool sgemm_has_library() { return false; }
#endif

// ---- epilogue helpers ---------------------------------------------------------------------------

namespace {

// Lane masks of every mask byte: lanes[b][l] = all ones where bit l of b is set, else 0. ANDing
// 8 floats' bits with one row keeps or zeroes them (a zeroed float is +0, whatever it held) in
// one vector op, with no branch on the bit pattern (an activation's mask is close to random).
struct ByteLanes {
  uint32_t lanes[256][8];
  constexpr ByteLanes() : lanes() {
    for (int b = 0; b < 256; ++b)
      for (int l = 0; l < 8; ++l) lanes[b][l] = (b >> l) & 1 ? 0xFFFFFFFFu : 0u;
  }
};
constexpr ByteLanes kByteLanes;

}  // namespace

void OutputMask::apply(float* out, int64_t index, int64_t n) const {
  if (kind == kValues) {
    const float* v = values + index;
    for (int64_t k = 0; k < n; ++k) out[k] = v[k] > lo && v[k] < hi ? out[k] : 0.0f;
    return;
  }
  if (kind != kBits) return;
  int64_t k = 0;
#if defined(__AVX512F__)
  // 16 elements at a time at any bit offset: the 16 bits starting at bit index+k, taken from the
  // 2 or 3 bytes that hold them, are the lane mask of a zero-masking move
  for (; k + 16 <= n; k += 16) {
    const int64_t bit = index + k;
    const uint8_t* p = bits + (bit >> 3);
    const int shift = static_cast<int>(bit & 7);
    uint32_t word = p[0] | (static_cast<uint32_t>(p[1]) << 8);
    if (shift) word |= static_cast<uint32_t>(p[2]) << 16;  // p[2] holds bits this range needs only then
    const __mmask16 m = static_cast<__mmask16>(word >> shift);
    _mm512_storeu_ps(out + k, _mm512_maskz_mov_ps(m, _mm512_loadu_ps(out + k)));
  }
#endif
  for (; k < n && ((index + k) & 7); ++k)  // up to the next whole byte
    if (!((bits[(index + k) >> 3] >> ((index + k) & 7)) & 1)) out[k] = 0.0f;
  for (; k + 8 <= n; k += 8) {  // a byte at a time
    const uint32_t* lane = kByteLanes.lanes[bits[(index + k) >> 3]];
    uint32_t v[8];
    std::memcpy(v, out + k, sizeof v);
    for (int l = 0; l < 8; ++l) v[l] &= lane[l];
    std::memcpy(out + k, v, sizeof v);
  }
  for (; k < n; ++k)
    if (!((bits[(index + k) >> 3] >> ((index + k) & 7)) & 1)) out[k] = 0.0f;
}

}  // namespace edgetune
