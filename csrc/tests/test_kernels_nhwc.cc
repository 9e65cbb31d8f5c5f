// GoogleTest tests of the NHWC (channels-last) layout of the conv and batch-norm CPU kernels
// (attr layout = "nhwc": kernels/cpu/conv_nhwc.cc, the nhwc section of kernels/cpu/norm.cc), run
// through the kernel registry the way the executor calls them (check, workspace, run).
//
// Each NHWC result is compared with the NCHW kernel's result on the same data transposed:
//   conv2d / _grad_input / _grad_weight, pointwise (one GEMM over N*H*W rows) and depthwise (strides 1
//   and 2, padding, dilation 2, 5x5 and a 9x9 kernel with more taps than the register batch, channel
//   counts with a 64-, 16- and scalar tail), bias, relu / hardtanh, u8-bit and f32 masks; batch norm
//   train (with and without activation, |mean| >> std), infer, backward for each output_mask.
//   Tolerances: the pointwise GEMMs (the library's summation order differs with the operands'
//   layout), the depthwise grad_weight (sums over (n, oh, ow) in other float chunks) and the batch-norm
//   statistics (row blocks instead of planes) differ by float roundings: compared relative to the
//   sum of the terms' magnitudes. The depthwise forward / grad_input sum the same taps in the same
//   (i, j) order and batch_norm_infer does the same arithmetic per element: compared exactly.
// Every NHWC run is repeated on 1, 2 and 3 threads and must give identical bits. Plus the checks:
// forced variants (".im2col", ".winograd", ...) refuse layout nhwc, unknown layouts are errors
// everywhere, geometries without an NHWC path are refused by name. Suite: KernelsNhwc.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/kernel.h"
#include "core/thread_pool.h"

namespace edgetune {
namespace {

// A tensor the test owns: f32 values or u8 bytes.
struct Tensor {
  std::vector<int64_t> shape;
  DType dtype = DType::f32;
  std::vector<float> f;
  std::vector<uint8_t> u;
};
Tensor f32(std::vector<int64_t> shape, std::vector<float> v) { return {std::move(shape), DType::f32, std::move(v), {}}; }
Tensor u8(std::vector<int64_t> shape, std::vector<uint8_t> v) { return {std::move(shape), DType::u8, {}, std::move(v)}; }

TensorView view_of(const std::vector<int64_t>& shape, DType dt, void* data) {
  TensorView t;
  t.dtype = dt;
  t.rank = static_cast<int>(shape.size());
  for (int i = 0; i < t.rank; ++i) t.shape[i] = shape[i];
  t.data = data;
  return t;
}

struct Call {
  std::vector<TensorView> ins, outs;
  KernelArgs args;
};

Call make_call(std::vector<Tensor>& ins, const std::vector<std::vector<int64_t>>& out_shapes,
               std::vector<std::vector<float>>& outs, const Attrs& attrs) {
  Call c;
  for (Tensor& t : ins)
    c.ins.push_back(view_of(t.shape, t.dtype, t.dtype == DType::f32 ? static_cast<void*>(t.f.data()) : t.u.data()));
  outs.resize(out_shapes.size());
  for (size_t i = 0; i < out_shapes.size(); ++i) {
    int64_t n = 1;
    for (int64_t d : out_shapes[i]) n *= d;
    outs[i].assign(n, std::numeric_limits<float>::quiet_NaN());  // poisoned: every element must be written
    c.outs.push_back(view_of(out_shapes[i], DType::f32, outs[i].data()));
  }
  c.args = KernelArgs{c.ins.data(), static_cast<int>(c.ins.size()), c.outs.data(), static_cast<int>(c.outs.size()),
                      &attrs, nullptr, 0, nullptr};
  return c;
}

const KernelDef& kernel(const std::string& name) {
  const KernelDef* k = KernelRegistry::for_backend("cpu")->find(name);
  EXPECT_NE(k, nullptr) << name;
  return *k;
}

// What the kernel's check says about these tensors and attrs.
Status check(const std::string& name, std::vector<Tensor> ins, const std::vector<std::vector<int64_t>>& out_shapes,
             const Attrs& attrs) {
  std::vector<std::vector<float>> outs;
  Call c = make_call(ins, out_shapes, outs, attrs);
  const KernelDef& k = kernel(name);
  return k.check ? k.check(c.args) : Status::Ok();
}

// Runs kernel `name` (check must pass) on `threads` threads; returns the outputs.
std::vector<std::vector<float>> run(const std::string& name, std::vector<Tensor> ins,
                                    const std::vector<std::vector<int64_t>>& out_shapes, const Attrs& attrs,
                                    int threads) {
  std::vector<std::vector<float>> outs;
  Call c = make_call(ins, out_shapes, outs, attrs);
  const KernelDef& k = kernel(name);
  if (k.check) {
    const Status st = k.check(c.args);
    EXPECT_TRUE(st.ok()) << name << ": " << st.to_string();
    if (!st.ok()) return outs;
  }
  const size_t ws = k.workspace ? k.workspace(c.args) : 0;
  std::vector<unsigned char> buf(ws + 64);
  c.args.workspace = ws ? buf.data() : nullptr;
  c.args.workspace_bytes = ws;
  ThreadPool pool(threads);
  c.args.pool = &pool;
  const Status st = k.run(c.args);
  EXPECT_TRUE(st.ok()) << name << ": " << st.to_string();
  return outs;
}

// The NHWC runs on 1, 2 and 3 threads, which must agree bit for bit; returns the 1-thread result.
std::vector<std::vector<float>> run_threads(const std::string& name, const std::vector<Tensor>& ins,
                                            const std::vector<std::vector<int64_t>>& out_shapes, const Attrs& attrs,
                                            const std::string& what) {
  const auto first = run(name, ins, out_shapes, attrs, 1);
  for (int threads : {2, 3}) {
    const auto other = run(name, ins, out_shapes, attrs, threads);
    for (size_t i = 0; i < first.size(); ++i)
      EXPECT_EQ(0, std::memcmp(first[i].data(), other[i].data(), first[i].size() * sizeof(float)))
          << what << ": output " << i << " differs on " << threads << " threads";
  }
  return first;
}

// [N, C, H, W] <-> [N, H, W, C]
std::vector<float> to_nhwc(const std::vector<float>& v, int64_t N, int64_t C, int64_t H, int64_t W) {
  std::vector<float> out(v.size());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t p = 0; p < H * W; ++p) out[(n * H * W + p) * C + c] = v[(n * C + c) * H * W + p];
  return out;
}
std::vector<float> to_nchw(const std::vector<float>& v, int64_t N, int64_t C, int64_t H, int64_t W) {
  std::vector<float> out(v.size());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t p = 0; p < H * W; ++p) out[(n * C + c) * H * W + p] = v[(n * H * W + p) * C + c];
  return out;
}

std::vector<float> random_values(int64_t n, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

// |got - want| <= rel * scale elementwise (scale: the terms' magnitude, e.g. the sum of |products|)
void expect_close(const std::vector<float>& got, const std::vector<float>& want, double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int64_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const bool ok = std::fabs(static_cast<double>(got[i]) - want[i]) <= tol * (1.0 + std::fabs(want[i]));
    if (!ok && bad++ < 3) ADD_FAILURE() << what << ": element " << i << " is " << got[i] << ", want " << want[i];
  }
  EXPECT_EQ(bad, 0) << what;
}
void expect_equal(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int64_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const bool ok = std::memcmp(&got[i], &want[i], sizeof(float)) == 0;
    if (!ok && bad++ < 3) ADD_FAILURE() << what << ": element " << i << " is " << got[i] << ", want " << want[i];
  }
  EXPECT_EQ(bad, 0) << what;
}

// ---- convolutions ------------------------------------------------------------------------------------

struct ConvCase {
  int64_t N, C, H, W, O, K, S, P, D, G;
  const char* name;
};

std::string describe(const ConvCase& c) {
  return std::string(c.name) + " N" + std::to_string(c.N) + " C" + std::to_string(c.C) + " " + std::to_string(c.H) +
         "x" + std::to_string(c.W) + " O" + std::to_string(c.O) + " k" + std::to_string(c.K) + " s" +
         std::to_string(c.S) + " p" + std::to_string(c.P) + " d" + std::to_string(c.D) + " g" + std::to_string(c.G);
}

Attrs conv_attrs(const ConvCase& c, bool nhwc) {
  Attrs a({ints_attr("stride", {c.S, c.S}), ints_attr("padding", {c.P, c.P}), ints_attr("dilation", {c.D, c.D}), int_attr("groups", c.G)});
  if (nhwc) a.add(string_attr("layout", "nhwc"));
  return a;
}

const ConvCase kPointwise[] = {
    {2, 24, 7, 7, 40, 1, 1, 0, 1, 1, "pointwise"},
    {3, 17, 5, 9, 33, 1, 1, 0, 1, 1, "pointwise odd"},
    {2, 96, 14, 14, 24, 1, 1, 0, 1, 1, "pointwise 96->24"},
};
const ConvCase kDepthwise[] = {
    {2, 37, 11, 11, 37, 3, 1, 1, 1, 37, "depthwise s1"},
    {2, 37, 11, 12, 37, 3, 2, 1, 1, 37, "depthwise s2"},
    {2, 83, 9, 9, 83, 3, 1, 2, 2, 83, "depthwise dilation 2"},
    {1, 20, 13, 10, 20, 5, 2, 2, 2, 20, "depthwise 5x5 s2 d2"},
    {2, 21, 12, 12, 21, 9, 1, 4, 1, 21, "depthwise 9x9 (81 taps)"},
    {2, 16, 7, 7, 16, 3, 1, 0, 1, 16, "depthwise no padding"},
    {2, 5, 3, 3, 5, 3, 2, 1, 1, 5, "depthwise tiny"},
};

int64_t out_size(int64_t size, const ConvCase& c) { return (size + 2 * c.P - c.D * (c.K - 1) - 1) / c.S + 1; }

enum class Act { kNone, kRelu, kHardtanh };

void add_activation(Attrs& a, Act act) {
  if (act == Act::kRelu) a.add(string_attr("activation", "relu"));
  if (act == Act::kHardtanh) {
    a.add(string_attr("activation", "hardtanh"));
    a.add(float_attr("act_min", -0.25));
    a.add(float_attr("act_max", 0.5));
  }
}

// forward: NHWC vs NCHW; exact when `exact`, else within tol
void check_forward(const ConvCase& c, bool bias, Act act, bool exact, double tol) {
  std::mt19937 rng(7);
  const int64_t HO = out_size(c.H, c), WO = out_size(c.W, c);
  const std::vector<float> x = random_values(c.N * c.C * c.H * c.W, rng);
  const std::vector<float> w = random_values(c.O * (c.C / c.G) * c.K * c.K, rng);
  const std::vector<float> b = random_values(c.O, rng);
  std::vector<int64_t> ws{c.O, c.C / c.G, c.K, c.K};
  Attrs nchw = conv_attrs(c, false), nhwc = conv_attrs(c, true);
  add_activation(nchw, act);
  add_activation(nhwc, act);
  std::vector<Tensor> in_nchw{f32({c.N, c.C, c.H, c.W}, x), f32(ws, w)};
  std::vector<Tensor> in_nhwc{f32({c.N, c.H, c.W, c.C}, to_nhwc(x, c.N, c.C, c.H, c.W)), f32(ws, w)};
  if (bias) {
    in_nchw.push_back(f32({c.O}, b));
    in_nhwc.push_back(f32({c.O}, b));
  }
  const std::string what = describe(c) + " forward bias=" + std::to_string(bias) + " act=" +
                           std::to_string(static_cast<int>(act));
  const auto want = run("conv2d", in_nchw, {{c.N, c.O, HO, WO}}, nchw, 1);
  const auto got = run_threads("conv2d", in_nhwc, {{c.N, HO, WO, c.O}}, nhwc, what);
  const std::vector<float> back = to_nchw(got[0], c.N, c.O, HO, WO);
  if (exact) {
    expect_equal(back, want[0], what);
  } else {
    expect_close(back, want[0], tol, what);
  }
}

enum class Mask { kNone, kBits, kValues };

void check_grad_input(const ConvCase& c, Mask mask, bool exact, double tol) {
  std::mt19937 rng(11);
  const int64_t HO = out_size(c.H, c), WO = out_size(c.W, c), numel = c.N * c.C * c.H * c.W;
  const std::vector<float> dy = random_values(c.N * c.O * HO * WO, rng);
  const std::vector<float> w = random_values(c.O * (c.C / c.G) * c.K * c.K, rng);
  std::vector<int64_t> ws{c.O, c.C / c.G, c.K, c.K};
  Attrs nchw = conv_attrs(c, false), nhwc = conv_attrs(c, true);
  nchw.add(ints_attr("input_shape", {c.N, c.C, c.H, c.W}));
  nhwc.add(ints_attr("input_shape", {c.N, c.C, c.H, c.W}));  // logical order in either layout
  std::vector<Tensor> in_nchw{f32({c.N, c.O, HO, WO}, dy), f32(ws, w)};
  std::vector<Tensor> in_nhwc{f32({c.N, HO, WO, c.O}, to_nhwc(dy, c.N, c.O, HO, WO)), f32(ws, w)};
  if (mask == Mask::kBits) {  // one keep bit per logical element, packed in each layout's flat order
    std::vector<float> keep = random_values(numel, rng, 0.0f, 1.0f);
    const std::vector<float> keep_nhwc = to_nhwc(keep, c.N, c.C, c.H, c.W);
    std::vector<uint8_t> bits_nchw((numel + 7) / 8, 0), bits_nhwc((numel + 7) / 8, 0);
    for (int64_t e = 0; e < numel; ++e) {
      if (keep[e] > 0.3f) bits_nchw[e >> 3] |= static_cast<uint8_t>(1u << (e & 7));
      if (keep_nhwc[e] > 0.3f) bits_nhwc[e >> 3] |= static_cast<uint8_t>(1u << (e & 7));
    }
    in_nchw.push_back(u8({(numel + 7) / 8}, bits_nchw));
    in_nhwc.push_back(u8({(numel + 7) / 8}, bits_nhwc));
  }
  if (mask == Mask::kValues) {  // a relu6 output: kept where 0 < y < 6
    std::vector<float> y = random_values(numel, rng, -2.0f, 8.0f);
    for (int64_t e = 0; e < numel; e += 5) y[e] = 0.0f;
    in_nchw.push_back(f32({c.N, c.C, c.H, c.W}, y));
    in_nhwc.push_back(f32({c.N, c.H, c.W, c.C}, to_nhwc(y, c.N, c.C, c.H, c.W)));
    for (Attrs* a : {&nchw, &nhwc}) {
      a->add(float_attr("mask_min", 0.0));
      a->add(float_attr("mask_max", 6.0));
    }
  }
  const std::string what = describe(c) + " grad_input mask=" + std::to_string(static_cast<int>(mask));
  const auto want = run("conv2d_grad_input", in_nchw, {{c.N, c.C, c.H, c.W}}, nchw, 1);
  const auto got = run_threads("conv2d_grad_input", in_nhwc, {{c.N, c.H, c.W, c.C}}, nhwc, what);
  const std::vector<float> back = to_nchw(got[0], c.N, c.C, c.H, c.W);
  if (exact) {
    expect_equal(back, want[0], what);
  } else {
    expect_close(back, want[0], tol, what);
  }
}

void check_grad_weight(const ConvCase& c, double tol) {
  std::mt19937 rng(13);
  const int64_t HO = out_size(c.H, c), WO = out_size(c.W, c);
  const std::vector<float> dy = random_values(c.N * c.O * HO * WO, rng);
  const std::vector<float> x = random_values(c.N * c.C * c.H * c.W, rng);
  std::vector<int64_t> ws{c.O, c.C / c.G, c.K, c.K};
  Attrs nchw = conv_attrs(c, false), nhwc = conv_attrs(c, true);
  nchw.add(ints_attr("weight_shape", ws));
  nhwc.add(ints_attr("weight_shape", ws));
  const std::string what = describe(c) + " grad_weight";
  const auto want =
      run("conv2d_grad_weight", {f32({c.N, c.O, HO, WO}, dy), f32({c.N, c.C, c.H, c.W}, x)}, {ws}, nchw, 1);
  const auto got = run_threads("conv2d_grad_weight",
                               {f32({c.N, HO, WO, c.O}, to_nhwc(dy, c.N, c.O, HO, WO)),
                                f32({c.N, c.H, c.W, c.C}, to_nhwc(x, c.N, c.C, c.H, c.W))},
                               {ws}, nhwc, what);
  // a weight's sum has N*HO*WO terms of size ~1/3: tolerance relative to sqrt of that many roundings
  expect_close(got[0], want[0], tol, what);
}

TEST(KernelsNhwc, PointwiseForwardMatchesNchw) {
  for (const ConvCase& c : kPointwise)
    for (bool bias : {false, true})
      for (Act act : {Act::kNone, Act::kRelu, Act::kHardtanh}) check_forward(c, bias, act, false, 2e-6);
}

TEST(KernelsNhwc, PointwiseGradInputMatchesNchw) {
  for (const ConvCase& c : kPointwise)
    for (Mask m : {Mask::kNone, Mask::kBits, Mask::kValues}) check_grad_input(c, m, false, 2e-6);
}

TEST(KernelsNhwc, PointwiseGradWeightMatchesNchw) {
  for (const ConvCase& c : kPointwise) check_grad_weight(c, 2e-5);
}

TEST(KernelsNhwc, DepthwiseForwardMatchesNchwExactly) {
  for (const ConvCase& c : kDepthwise)
    for (bool bias : {false, true})
      for (Act act : {Act::kNone, Act::kRelu, Act::kHardtanh}) check_forward(c, bias, act, true, 0);
}

TEST(KernelsNhwc, DepthwiseGradInputMatchesNchwExactly) {
  // beyond 64 taps the NCHW kernel scatters (output row by row into dx): the same 81 terms in
  // another order, so the 9x9 case compares within their float roundings (|term| <= 1, sums of
  // ~20 in |terms|: a few 1e-6; an unoptimised build, which contracts no multiply-adds, showed 1.2e-6)
  for (const ConvCase& c : kDepthwise)
    for (Mask m : {Mask::kNone, Mask::kBits, Mask::kValues}) check_grad_input(c, m, c.K * c.K <= 64, 2e-5);
}

TEST(KernelsNhwc, DepthwiseGradWeightMatchesNchw) {
  for (const ConvCase& c : kDepthwise) check_grad_weight(c, 2e-5);
}

TEST(KernelsNhwc, ExplicitNchwLayoutIsTheDefault) {
  const ConvCase c = kDepthwise[1];
  std::mt19937 rng(3);
  const std::vector<float> x = random_values(c.N * c.C * c.H * c.W, rng), w = random_values(c.C * 9, rng);
  const int64_t HO = out_size(c.H, c), WO = out_size(c.W, c);
  Attrs plain = conv_attrs(c, false), named = conv_attrs(c, false);
  named.add(string_attr("layout", "nchw"));
  std::vector<Tensor> ins{f32({c.N, c.C, c.H, c.W}, x), f32({c.C, 1, 3, 3}, w)};
  expect_equal(run("conv2d", ins, {{c.N, c.C, HO, WO}}, named, 2)[0], run("conv2d", ins, {{c.N, c.C, HO, WO}}, plain, 2)[0],
               "layout nchw");
}

TEST(KernelsNhwc, DepthwiseNeedsAWorkspaceForTheTransposedFilters) {
  const ConvCase c = kDepthwise[0];
  std::vector<Tensor> ins{f32({c.N, c.H, c.W, c.C}, std::vector<float>(c.N * c.H * c.W * c.C)),
                          f32({c.C, 1, 3, 3}, std::vector<float>(c.C * 9))};
  std::vector<std::vector<float>> outs;
  const Attrs a = conv_attrs(c, true);
  Call call = make_call(ins, {{c.N, c.H, c.W, c.C}}, outs, a);
  EXPECT_EQ(kernel("conv2d").workspace(call.args), static_cast<size_t>(9 * c.C) * sizeof(float));
}

void expect_error(const Status& st, const std::string& part, const std::string& what) {
  EXPECT_FALSE(st.ok()) << what;
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << what << ": " << st.to_string();
  EXPECT_NE(st.message().find(part), std::string::npos) << what << ": " << st.to_string();
}

TEST(KernelsNhwc, ForcedVariantsRefuseNhwc) {
  const ConvCase pw{2, 8, 6, 6, 8, 1, 1, 0, 1, 1, "pw"};
  const ConvCase c3{2, 8, 6, 6, 8, 3, 1, 1, 1, 1, "3x3"};
  const ConvCase dw{2, 8, 6, 6, 8, 3, 1, 1, 1, 8, "dw"};
  for (const ConvCase& c : {pw, c3, dw}) {
    const std::vector<int64_t> x{c.N, c.H, c.W, c.C}, w{c.O, c.C / c.G, c.K, c.K}, y{c.N, c.H, c.W, c.O};
    const std::vector<Tensor> fwd{f32(x, {}), f32(w, {})}, gi{f32(y, {}), f32(w, {})}, gw{f32(y, {}), f32(x, {})};
    Attrs a = conv_attrs(c, true), ai = a, aw = a;
    ai.add(ints_attr("input_shape", {c.N, c.C, c.H, c.W}));
    aw.add(ints_attr("weight_shape", w));
    for (const char* v : {".im2col", ".pointwise", ".depthwise", ".pointwise_batched", ".im2col_batched", ".winograd"}) {
      expect_error(check(std::string("conv2d") + v, fwd, {y}, a), "runs NCHW only", describe(c) + " conv2d" + v);
      expect_error(check(std::string("conv2d_grad_input") + v, gi, {x}, ai), "runs NCHW only",
                   describe(c) + " conv2d_grad_input" + v);
      if (std::string(v) != ".winograd")
        expect_error(check(std::string("conv2d_grad_weight") + v, gw, {w}, aw), "runs NCHW only",
                     describe(c) + " conv2d_grad_weight" + v);
    }
    if (c.K == 3 && c.G == 1) {  // no NHWC path: the op-named kernel says which geometries have one
      expect_error(check("conv2d", fwd, {y}, a), "layout nhwc supports pointwise", "3x3 conv2d");
      expect_error(check("conv2d_grad_input", gi, {x}, ai), "layout nhwc supports pointwise", "3x3 grad_input");
      expect_error(check("conv2d_grad_weight", gw, {w}, aw), "layout nhwc supports pointwise", "3x3 grad_weight");
    } else {
      EXPECT_TRUE(check("conv2d", fwd, {y}, a).ok()) << describe(c);
      EXPECT_TRUE(check("conv2d_grad_input", gi, {x}, ai).ok()) << describe(c);
      EXPECT_TRUE(check("conv2d_grad_weight", gw, {w}, aw).ok()) << describe(c);
    }
  }
}

TEST(KernelsNhwc, ConvChecksRefuseOtherNhwcGeometriesAndShapes) {
  // grouped 1x1 and depthwise with a channel multiplier have no NHWC path
  const ConvCase grouped{1, 8, 4, 4, 8, 1, 1, 0, 1, 2, "grouped"};
  const ConvCase mult{1, 4, 4, 4, 8, 3, 1, 1, 1, 4, "multiplier 2"};
  const ConvCase strided{1, 8, 4, 4, 8, 1, 2, 0, 1, 1, "1x1 stride 2"};
  for (const ConvCase& c : {grouped, mult, strided}) {
    const int64_t HO = out_size(c.H, c);
    expect_error(check("conv2d", {f32({c.N, c.H, c.W, c.C}, {}), f32({c.O, c.C / c.G, c.K, c.K}, {})},
                       {{c.N, HO, HO, c.O}}, conv_attrs(c, true)),
                 "layout nhwc supports pointwise", describe(c));
  }
  // an NHWC node whose output is NCHW-shaped (and the reverse)
  const ConvCase c{1, 8, 4, 4, 16, 1, 1, 0, 1, 1, "pw"};
  expect_error(check("conv2d", {f32({1, 4, 4, 8}, {}), f32({16, 8, 1, 1}, {})}, {{1, 16, 4, 4}}, conv_attrs(c, true)),
               "layout nhwc", "nchw-shaped output");
  Attrs ai = conv_attrs(c, true);
  ai.add(ints_attr("input_shape", {1, 8, 4, 4}));
  expect_error(check("conv2d_grad_input", {f32({1, 4, 4, 16}, {}), f32({16, 8, 1, 1}, {})}, {{1, 8, 4, 4}}, ai),
               "input_shape", "nchw-shaped dx");
}

TEST(KernelsNhwc, UnknownLayoutIsAnErrorEverywhere) {
  const ConvCase c{1, 8, 6, 6, 8, 3, 1, 1, 1, 1, "3x3"};
  Attrs a = conv_attrs(c, false);
  a.add(string_attr("layout", "nchwc"));
  const std::vector<Tensor> fwd{f32({1, 8, 6, 6}, {}), f32({8, 8, 3, 3}, {})};
  for (const char* k : {"conv2d", "conv2d.im2col", "conv2d.depthwise", "conv2d.winograd"})
    expect_error(check(k, fwd, {{1, 8, 6, 6}}, a), "unknown layout 'nchwc'", k);
  Attrs ai = a;
  ai.add(ints_attr("input_shape", {1, 8, 6, 6}));
  for (const char* k : {"conv2d_grad_input", "conv2d_grad_input.winograd"})
    expect_error(check(k, fwd, {{1, 8, 6, 6}}, ai), "unknown layout 'nchwc'", k);
  Attrs aw = a;
  aw.add(ints_attr("weight_shape", {8, 8, 3, 3}));
  expect_error(check("conv2d_grad_weight", {f32({1, 8, 6, 6}, {}), f32({1, 8, 6, 6}, {})}, {{8, 8, 3, 3}}, aw),
               "unknown layout 'nchwc'", "conv2d_grad_weight");
  Attrs bn({float_attr("eps", 1e-5), float_attr("momentum", 0.1), string_attr("layout", "chw")});
  const std::vector<int64_t> x{2, 3, 4, 4}, v{3};
  expect_error(check("batch_norm_train", {f32(x, {}), f32(v, {}), f32(v, {}), f32(v, {}), f32(v, {})},
                     {x, v, v, v, v}, bn),
               "unknown layout 'chw'", "batch_norm_train");
  expect_error(check("batch_norm_infer", {f32(x, {}), f32(v, {}), f32(v, {}), f32(v, {}), f32(v, {})}, {x}, bn),
               "unknown layout 'chw'", "batch_norm_infer");
  Attrs bb = bn;
  bb.add(ints_attr("output_mask", {1, 1, 1}));
  expect_error(check("batch_norm_backward", {f32(x, {}), f32(x, {}), f32(v, {}), f32(v, {}), f32(v, {})}, {x, v, v}, bb),
               "unknown layout 'chw'", "batch_norm_backward");
}

// ---- batch norm ----------------------------------------------------------------------------------------

struct BnCase {
  int64_t N, C, H, W;
  float offset;  // added to x: |mean| >> std
};
const BnCase kBn[] = {{2, 37, 5, 7, 0.0f}, {8, 19, 32, 32, 0.0f}, {3, 80, 6, 6, 100.0f}, {1, 3, 1, 1, 0.0f}};

std::string describe(const BnCase& b) {
  return "BN [" + std::to_string(b.N) + "," + std::to_string(b.C) + "," + std::to_string(b.H) + "," +
         std::to_string(b.W) + "] offset " + std::to_string(b.offset);
}

struct BnData {
  std::vector<float> x, dy, w, b, rm, rv;
};
BnData bn_data(const BnCase& c) {
  std::mt19937 rng(17);
  BnData d;
  d.x = random_values(c.N * c.C * c.H * c.W, rng, -2.0f, 2.0f);
  for (float& v : d.x) v += c.offset;
  d.dy = random_values(c.N * c.C * c.H * c.W, rng);
  d.w = random_values(c.C, rng, 0.5f, 1.5f);
  d.b = random_values(c.C, rng);
  d.rm = random_values(c.C, rng);
  d.rv = random_values(c.C, rng, 0.5f, 2.0f);
  return d;
}

TEST(KernelsNhwc, BatchNormTrainMatchesNchw) {
  for (const BnCase& c : kBn) {
    const BnData d = bn_data(c);
    for (Act act : {Act::kNone, Act::kRelu, Act::kHardtanh}) {
      Attrs nchw({float_attr("eps", 1e-5), float_attr("momentum", 0.1)});
      add_activation(nchw, act);
      Attrs nhwc = nchw;
      nhwc.add(string_attr("layout", "nhwc"));
      const std::vector<int64_t> xs{c.N, c.C, c.H, c.W}, xt{c.N, c.H, c.W, c.C}, v{c.C};
      const std::string what = describe(c) + " train act=" + std::to_string(static_cast<int>(act));
      const auto want = run("batch_norm_train", {f32(xs, d.x), f32(v, d.w), f32(v, d.b), f32(v, d.rm), f32(v, d.rv)},
                            {xs, v, v, v, v}, nchw, 1);
      const auto got = run_threads("batch_norm_train",
                                   {f32(xt, to_nhwc(d.x, c.N, c.C, c.H, c.W)), f32(v, d.w), f32(v, d.b), f32(v, d.rm),
                                    f32(v, d.rv)},
                                   {xt, v, v, v, v}, nhwc, what);
      // statistics summed in another order: a few float roundings of std (and of |mean| for the mean)
      expect_close(to_nchw(got[0], c.N, c.C, c.H, c.W), want[0], 1e-5, what + " y");
      for (int i = 1; i < 5; ++i) expect_close(got[i], want[i], 1e-6, what + " output " + std::to_string(i));
    }
  }
}

TEST(KernelsNhwc, BatchNormInferMatchesNchwExactly) {
  for (const BnCase& c : kBn) {
    const BnData d = bn_data(c);
    for (Act act : {Act::kNone, Act::kHardtanh}) {
      Attrs nchw({float_attr("eps", 1e-5)});
      add_activation(nchw, act);
      Attrs nhwc = nchw;
      nhwc.add(string_attr("layout", "nhwc"));
      const std::vector<int64_t> xs{c.N, c.C, c.H, c.W}, xt{c.N, c.H, c.W, c.C}, v{c.C};
      const std::string what = describe(c) + " infer act=" + std::to_string(static_cast<int>(act));
      const auto want =
          run("batch_norm_infer", {f32(xs, d.x), f32(v, d.w), f32(v, d.b), f32(v, d.rm), f32(v, d.rv)}, {xs}, nchw, 1);
      const auto got = run_threads("batch_norm_infer",
                                   {f32(xt, to_nhwc(d.x, c.N, c.C, c.H, c.W)), f32(v, d.w), f32(v, d.b), f32(v, d.rm),
                                    f32(v, d.rv)},
                                   {xt}, nhwc, what);
      expect_equal(to_nchw(got[0], c.N, c.C, c.H, c.W), want[0], what);
    }
  }
}

TEST(KernelsNhwc, BatchNormBackwardMatchesNchwForEachOutputMask) {
  for (const BnCase& c : kBn) {
    const BnData d = bn_data(c);
    const std::vector<int64_t> xs{c.N, c.C, c.H, c.W}, xt{c.N, c.H, c.W, c.C}, v{c.C};
    // mean / invstd from the NCHW training kernel
    const auto stats = run("batch_norm_train", {f32(xs, d.x), f32(v, d.w), f32(v, d.b), f32(v, d.rm), f32(v, d.rv)},
                           {xs, v, v, v, v}, Attrs({float_attr("eps", 1e-5)}), 1);
    for (int mask = 1; mask < 8; ++mask) {
      const std::vector<int64_t> om{mask & 1, (mask >> 1) & 1, (mask >> 2) & 1};
      std::vector<std::vector<int64_t>> outs_nchw, outs_nhwc;
      if (om[0]) outs_nchw.push_back(xs), outs_nhwc.push_back(xt);
      for (int i = 1; i < 3; ++i)
        if (om[i]) outs_nchw.push_back(v), outs_nhwc.push_back(v);
      Attrs nchw({ints_attr("output_mask", om), float_attr("eps", 1e-5)});
      Attrs nhwc = nchw;
      nhwc.add(string_attr("layout", "nhwc"));
      const std::string what = describe(c) + " backward mask=" + std::to_string(mask);
      const auto want = run("batch_norm_backward",
                            {f32(xs, d.dy), f32(xs, d.x), f32(v, d.w), f32(v, stats[1]), f32(v, stats[2])}, outs_nchw,
                            nchw, 1);
      const auto got = run_threads("batch_norm_backward",
                                   {f32(xt, to_nhwc(d.dy, c.N, c.C, c.H, c.W)), f32(xt, to_nhwc(d.x, c.N, c.C, c.H, c.W)),
                                    f32(v, d.w), f32(v, stats[1]), f32(v, stats[2])},
                                   outs_nhwc, nhwc, what);
      size_t k = 0;
      if (om[0]) {
        expect_close(to_nchw(got[0], c.N, c.C, c.H, c.W), want[0], 1e-5, what + " dx");
        ++k;
      }
      // sums of count terms of size ~1: relative to their magnitude
      for (; k < got.size(); ++k) expect_close(got[k], want[k], 1e-5, what + " output " + std::to_string(k));
    }
  }
}

TEST(KernelsNhwc, BatchNormNhwcNeedsA4dInputAndChannelsLast) {
  Attrs a({float_attr("eps", 1e-5), float_attr("momentum", 0.1), string_attr("layout", "nhwc")});
  const std::vector<int64_t> x2{4, 3}, v3{3};
  expect_error(check("batch_norm_train", {f32(x2, {}), f32(v3, {}), f32(v3, {}), f32(v3, {}), f32(v3, {})},
                     {x2, v3, v3, v3, v3}, a),
               "needs a 4-d", "rank 2");
  // [N, H, W, C] = [2, 4, 4, 3]: per-channel vectors of 4 (the NCHW channel dim) do not fit
  const std::vector<int64_t> x{2, 4, 4, 3}, v4{4};
  expect_error(check("batch_norm_infer", {f32(x, {}), f32(v4, {}), f32(v4, {}), f32(v4, {}), f32(v4, {})}, {x}, a),
               "does not fit 3 channels", "channel dim");
  EXPECT_TRUE(check("batch_norm_infer", {f32(x, {}), f32(v3, {}), f32(v3, {}), f32(v3, {}), f32(v3, {})}, {x}, a).ok());
  // the coefficients live on the stack (no workspace on the planned peak): up to 2048 channels
  const std::vector<int64_t> wide{1, 1, 1, 2049}, v2049{2049};
  expect_error(check("batch_norm_train", {f32(wide, {}), f32(v2049, {}), f32(v2049, {}), f32(v2049, {}), f32(v2049, {})},
                     {wide, v2049, v2049, v2049, v2049}, a),
               "up to 2048 channels", "channel limit");
  for (const char* op : {"batch_norm_train", "batch_norm_infer", "batch_norm_backward"})
    EXPECT_EQ(kernel(op).workspace, nullptr) << op;
}

}  // namespace
}  // namespace edgetune
