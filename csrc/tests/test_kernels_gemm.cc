// GoogleTest tests of kernels/cpu/gemm.h: sgemm (the build's GEMM library, or the built-in
// kernel), sgemm_library and sgemm_own each against a float64 reference on awkward shapes —
// M/N/K of 1, 3, 17 and sizes that cross the own kernel's register tile and K block, every
// transpose combination, leading dimensions wider than the matrix, alpha != 1, beta = 0 (C not
// read: it starts as NaN), beta = 1 accumulation and beta = 0.5, K = 0 — and with every epilogue
// (row/column bias, relu / hardtanh clamp, u8-bit and f32-value output masks on a C that is a
// block of a bigger masked tensor). Plus: 1 and 2 threads give bit-identical results for each
// implementation, and sgemm_backend / sgemm_has_library agree. Meant for every build (OWN, MKL,
// OpenBLAS; ASan). Suite: KernelsGemm.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "kernels/cpu/gemm.h"

namespace edgetune {
namespace {

using GemmFn = void (*)(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t,
                        float, float*, int64_t, ThreadPool*, GemmBias);

struct Impl {
  const char* name;
  GemmFn fn;
};
// sgemm and sgemm_library are sgemm_own in a build without a library: checked once then (qemu)
std::vector<Impl> impls() {
  std::vector<Impl> out = {{"sgemm_own", &sgemm_own}};
  if (sgemm_has_library()) out.insert(out.end(), {{"sgemm", &sgemm}, {"sgemm_library", &sgemm_library}});
  return out;
}

struct Case {
  bool ta, tb;
  int64_t M, N, K;
  float alpha, beta;
  int64_t pad;  // extra columns in every leading dimension
};

std::string describe(const Case& c) {
  return std::string(c.ta ? "T" : "N") + (c.tb ? "T" : "N") + " M=" + std::to_string(c.M) + " N=" +
         std::to_string(c.N) + " K=" + std::to_string(c.K) + " alpha=" + std::to_string(c.alpha) +
         " beta=" + std::to_string(c.beta) + " pad=" + std::to_string(c.pad);
}

// Which epilogue a run applies.
enum class Ep { kNone, kRowBias, kColBias, kBothBiasRelu, kHardtanh, kMaskBits, kMaskValues };
const Ep kEpilogues[] = {Ep::kNone, Ep::kRowBias, Ep::kColBias, Ep::kBothBiasRelu, Ep::kHardtanh, Ep::kMaskBits,
                         Ep::kMaskValues};

struct Data {
  std::vector<float> a, b, c0, row, col, mask_values;
  std::vector<uint8_t> mask_bits;
  int64_t lda, ldb, ldc;
  int64_t mask_index;  // C is a block of the masked tensor starting at this element
};

Data make(const Case& c, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  Data d;
  const int64_t arows = c.ta ? c.K : c.M, acols = c.ta ? c.M : c.K;
  const int64_t brows = c.tb ? c.N : c.K, bcols = c.tb ? c.K : c.N;
  d.lda = acols + c.pad;
  d.ldb = bcols + c.pad;
  d.ldc = c.N + c.pad;
  d.a.resize(std::max<int64_t>(1, arows * d.lda));
  d.b.resize(std::max<int64_t>(1, brows * d.ldb));
  d.c0.resize(c.M * d.ldc);
  for (auto& v : d.a) v = u(rng);
  for (auto& v : d.b) v = u(rng);
  for (auto& v : d.c0) v = u(rng);
  d.row.resize(c.M);
  d.col.resize(c.N);
  for (auto& v : d.row) v = u(rng);
  for (auto& v : d.col) v = u(rng);
  d.mask_index = 5;  // an offset that is not a whole byte of bits
  const int64_t masked = d.mask_index + c.M * d.ldc;
  d.mask_bits.resize((masked + 7) / 8);
  for (auto& v : d.mask_bits) v = static_cast<uint8_t>(rng());
  d.mask_values.resize(masked);
  for (auto& v : d.mask_values) v = 2 * u(rng);
  return d;
}

GemmBias epilogue(Ep ep, const Data& d) {
  GemmBias g;
  switch (ep) {
    case Ep::kNone: break;
    case Ep::kRowBias: g.row = d.row.data(); break;
    case Ep::kColBias: g.col = d.col.data(); break;
    case Ep::kBothBiasRelu:
      g.row = d.row.data(), g.col = d.col.data();
      g.clamp_lo = 0.0f;
      break;
    case Ep::kHardtanh:
      g.col = d.col.data();
      g.clamp_lo = -0.25f, g.clamp_hi = 0.5f;
      break;
    case Ep::kMaskBits:
      g.mask.kind = OutputMask::kBits, g.mask.bits = d.mask_bits.data();
      g.mask_index = d.mask_index;
      break;
    case Ep::kMaskValues:
      g.mask.kind = OutputMask::kValues, g.mask.values = d.mask_values.data();
      g.mask.lo = -0.5f, g.mask.hi = 1.0f;
      g.mask_index = d.mask_index;
      break;
  }
  return g;
}

// float64 reference of the whole contract (gemm.h): alpha A B + beta C + bias, clamp, mask.
// Returns C (ldc layout; the padding columns keep c0) and, per element, a tolerance.
void reference(const Case& c, const Data& d, const GemmBias& g, std::vector<double>* out, std::vector<double>* tol) {
  out->assign(d.c0.begin(), d.c0.end());
  tol->assign(d.c0.size(), 0.0);
  for (int64_t i = 0; i < c.M; ++i)
    for (int64_t j = 0; j < c.N; ++j) {
      double s = 0, mag = 0;
      for (int64_t k = 0; k < c.K; ++k) {
        const double av = c.ta ? d.a[k * d.lda + i] : d.a[i * d.lda + k];
        const double bv = c.tb ? d.b[j * d.ldb + k] : d.b[k * d.ldb + j];
        s += av * bv;
        mag += std::fabs(av * bv);
      }
      double r = c.alpha * s + (c.beta != 0.0f ? c.beta * static_cast<double>(d.c0[i * d.ldc + j]) : 0.0);
      if (g.row) r += g.row[i];
      if (g.col) r += g.col[j];
      r = std::min(std::max(r, static_cast<double>(g.clamp_lo)), static_cast<double>(g.clamp_hi));
      const int64_t e = g.mask_index + i * d.ldc + j;
      if (g.mask.kind == OutputMask::kBits && !((g.mask.bits[e >> 3] >> (e & 7)) & 1)) r = 0;
      if (g.mask.kind == OutputMask::kValues && !(g.mask.values[e] > g.mask.lo && g.mask.values[e] < g.mask.hi)) r = 0;
      (*out)[i * d.ldc + j] = r;
      // float32 sums: a few ulps of the absolute terms, plus the beta/bias terms' own rounding
      (*tol)[i * d.ldc + j] = 1e-5 * (std::fabs(c.alpha) * mag + 4.0) + 1e-6;
    }
}

std::vector<float> run(const Impl& im, const Case& c, const Data& d, const GemmBias& g, ThreadPool* pool) {
  std::vector<float> out = d.c0;
  if (c.beta == 0.0f)  // beta == 0 must not read C: poison the product's elements (not the padding)
    for (int64_t i = 0; i < c.M; ++i)
      for (int64_t j = 0; j < c.N; ++j) out[i * d.ldc + j] = std::numeric_limits<float>::quiet_NaN();
  im.fn(c.ta, c.tb, c.M, c.N, c.K, c.alpha, d.a.data(), d.lda, d.b.data(), d.ldb, c.beta, out.data(), d.ldc, pool, g);
  return out;
}

std::vector<Case> cases() {
  std::vector<Case> out;
  const int64_t dims[][3] = {{1, 1, 1},   {1, 17, 3},  {3, 3, 3},    {17, 1, 17},  {3, 17, 1},     {17, 17, 17},
                             {1, 300, 40}, {40, 1, 300}, {13, 37, 259}, {70, 45, 31}, {129, 97, 513}};
  for (const auto& m : dims)
    for (int t = 0; t < 4; ++t) out.push_back({(t & 1) != 0, (t & 2) != 0, m[0], m[1], m[2], 1.0f, 0.0f, 0});
  // alpha, beta, wider leading dimensions
  for (int t = 0; t < 4; ++t) {
    const bool ta = (t & 1) != 0, tb = (t & 2) != 0;
    out.push_back({ta, tb, 17, 33, 65, 1.0f, 1.0f, 0});    // accumulation
    out.push_back({ta, tb, 31, 20, 300, -0.5f, 0.5f, 3});  // both scaled, padded
    out.push_back({ta, tb, 3, 70, 17, 2.0f, 1.0f, 7});
  }
  out.push_back({false, false, 9, 11, 0, 1.0f, 0.5f, 0});  // K = 0: beta C + bias only
  out.push_back({true, true, 9, 11, 0, 1.0f, 0.0f, 2});
  return out;
}

TEST(KernelsGemm, BackendNameAgrees) {
  const std::string b = sgemm_backend();
  EXPECT_TRUE(b == "own" || b == "mkl" || b == "openblas") << b;
  EXPECT_EQ(sgemm_has_library(), b != "own");
#if defined(EDGETUNE_HAVE_MKL)
  EXPECT_EQ(b, "mkl");
#elif defined(EDGETUNE_HAVE_OPENBLAS)
  EXPECT_EQ(b, "openblas");
#else
  EXPECT_EQ(b, "own");
#endif
}

TEST(KernelsGemm, EveryImplementationMatchesFloat64Reference) {
  std::mt19937 rng(1234);
  ThreadPool two(2);
  int checked = 0;
  for (const Case& c : cases()) {
    const Data d = make(c, rng);
    for (Ep ep : kEpilogues) {
      const GemmBias g = epilogue(ep, d);
      std::vector<double> want, tol;
      reference(c, d, g, &want, &tol);
      for (const Impl& im : impls()) {
        const std::vector<float> got1 = run(im, c, d, g, nullptr);
        const std::vector<float> got2 = run(im, c, d, g, &two);
        for (size_t e = 0; e < want.size(); ++e) {
          ASSERT_LE(std::fabs(got1[e] - want[e]), tol[e])
              << im.name << " " << describe(c) << " epilogue " << static_cast<int>(ep) << " element " << e
              << " (row " << e / d.ldc << ", col " << e % d.ldc << "): got " << got1[e] << ", want " << want[e];
        }
        ASSERT_EQ(std::memcmp(got1.data(), got2.data(), got1.size() * sizeof(float)), 0)
            << im.name << " " << describe(c) << " epilogue " << static_cast<int>(ep)
            << ": 2 threads differ from 1 thread";
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 300);
}

// Products big enough for sgemm to cut C into several library tiles / own-kernel tasks, run on
// 1, 2, 3 and 4 threads: bit-identical (the library is cut into one tile per thread, so this is
// what holds a library to computing an element the same way whatever the tile around it), and
// bias + clamp + mask applied on every tile. Shapes: the text model's, a 3x3 conv band (M = 64,
// odd N), ResNet's 512-channel 7x7 stage (N = 49), a skinny M.
TEST(KernelsGemm, ThreadedTilesAreIdenticalForAnyThreadCount) {
  std::mt19937 rng(99);
  ThreadPool two(2), three(3), four(4);
  const int64_t shapes[][3] = {{256, 384, 384}, {64, 455, 576}, {512, 49, 4608}, {40, 1000, 320}};
  for (const auto& shape : shapes)
  for (int t = 0; t < 4; ++t) {
    const Case c{(t & 1) != 0, (t & 2) != 0, shape[0], shape[1], shape[2], 1.0f, 0.0f, 0};
    const Data d = make(c, rng);
    GemmBias g = epilogue(Ep::kMaskBits, d);
    g.col = d.col.data();
    g.clamp_lo = -2.0f, g.clamp_hi = 2.0f;
    std::vector<double> want, tol;
    reference(c, d, g, &want, &tol);
    for (const Impl& im : impls()) {
      const std::vector<float> r1 = run(im, c, d, g, nullptr), r2 = run(im, c, d, g, &two), r3 = run(im, c, d, g, &three),
                               r4 = run(im, c, d, g, &four);
      EXPECT_EQ(std::memcmp(r1.data(), r2.data(), r1.size() * sizeof(float)), 0) << im.name << " " << describe(c);
      EXPECT_EQ(std::memcmp(r1.data(), r3.data(), r1.size() * sizeof(float)), 0) << im.name << " " << describe(c);
      EXPECT_EQ(std::memcmp(r1.data(), r4.data(), r1.size() * sizeof(float)), 0) << im.name << " " << describe(c);
      double worst = 0;
      for (size_t e = 0; e < want.size(); ++e) worst = std::max(worst, std::fabs(r1[e] - want[e]) - tol[e]);
      EXPECT_LE(worst, 0.0) << im.name << " " << describe(c);
    }
  }
}

}  // namespace
}  // namespace edgetune
