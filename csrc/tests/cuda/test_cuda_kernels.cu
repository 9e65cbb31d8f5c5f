// Each CUDA kernel against the CPU kernel of the same name on the same inputs (host memory for the
// cpu, device memory and a test-local CudaContext for cuda), with the CPU tests' tolerances, and
// twice on the GPU for bit-identical results (determinism). Skips cleanly without a GPU, so it can
// run in CI. Run on a GPU machine: ./build/<dir>/csrc/edgetune_cuda_kernel_tests
// (benchmarks/gpu/gpu_check.sh builds and runs it). CoverageReport lists the kernel names no case exercises yet.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/kernel.h"
#include "core/thread_pool.h"
#include "kernels/cuda/cuda_context.h"

namespace edgetune {
namespace {

bool have_gpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

struct In {
  DType dt;
  std::vector<int64_t> shape;
  int gen = 0;  // 0 normal, 1 integers in [0, hi), 2 positive, 3 random bytes, 4 scalar value `val`
  double hi = 0, val = 0;
};
struct Out {
  DType dt;
  std::vector<int64_t> shape;
};
struct Case {
  std::string kernel;
  std::vector<In> ins;
  std::vector<Out> outs;
  std::vector<Attr> attrs;
  double tol = 1e-4;
};

Attr I(const char* n, int64_t v) { Attr a; a.name = n; a.kind = AttrKind::kInt; a.i = v; return a; }
Attr F(const char* n, double v) { Attr a; a.name = n; a.kind = AttrKind::kFloat; a.f = v; return a; }
Attr Is(const char* n, std::vector<int64_t> v) { Attr a; a.name = n; a.kind = AttrKind::kInts; a.ints = v; return a; }
Attr S(const char* n, const char* v) { Attr a; a.name = n; a.kind = AttrKind::kString; a.s = v; return a; }

TensorView view(DType dt, const std::vector<int64_t>& shape, void* data) {
  TensorView t;
  t.dtype = dt;
  t.rank = static_cast<int>(shape.size());
  for (int i = 0; i < t.rank; ++i) t.shape[i] = shape[i];
  t.data = data;
  return t;
}

std::vector<unsigned char> fill(const In& in, std::mt19937& rng) {
  TensorView t = view(in.dt, in.shape, nullptr);
  std::vector<unsigned char> b(t.nbytes());
  const int64_t n = t.numel();
  std::normal_distribution<double> nd;
  std::uniform_real_distribution<double> ud(0.1, 2.0);
  for (int64_t i = 0; i < n; ++i) {
    double v = in.gen == 0 ? nd(rng) : in.gen == 1 ? std::floor(std::uniform_real_distribution<double>(0, in.hi)(rng))
             : in.gen == 2 ? ud(rng) : in.gen == 4 ? in.val : static_cast<double>(rng() & 0xff);
    switch (in.dt) {
      case DType::f32: reinterpret_cast<float*>(b.data())[i] = static_cast<float>(v); break;
      case DType::f64: reinterpret_cast<double*>(b.data())[i] = v; break;
      case DType::i64: reinterpret_cast<int64_t*>(b.data())[i] = static_cast<int64_t>(v); break;
      case DType::i32: reinterpret_cast<int32_t*>(b.data())[i] = static_cast<int32_t>(v); break;
      default: b[i * dtype_size(in.dt)] = static_cast<unsigned char>(v); break;
    }
  }
  return b;
}

double value_at(const TensorView& t, const std::vector<unsigned char>& b, int64_t i) {
  switch (t.dtype) {
    case DType::f32: return reinterpret_cast<const float*>(b.data())[i];
    case DType::f64: return reinterpret_cast<const double*>(b.data())[i];
    case DType::i64: return static_cast<double>(reinterpret_cast<const int64_t*>(b.data())[i]);
    case DType::i32: return reinterpret_cast<const int32_t*>(b.data())[i];
    default: return b[i];
  }
}

class CudaKernels : public ::testing::TestWithParam<Case> {};

TEST_P(CudaKernels, MatchesCpuAndIsDeterministic) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  const Case& c = GetParam();
  const KernelDef* cpu = KernelRegistry::for_backend("cpu")->find(c.kernel);
  const KernelDef* gpu = KernelRegistry::for_backend("cuda")->find(c.kernel);
  ASSERT_TRUE(cpu && gpu) << c.kernel;
  Attrs attrs(c.attrs);
  std::mt19937 rng(1234);
  std::vector<std::vector<unsigned char>> hin;
  std::vector<TensorView> cin, cout_, gin, gout;
  for (const In& in : c.ins) hin.push_back(fill(in, rng));
  std::vector<std::vector<unsigned char>> hout;
  for (const Out& o : c.outs) hout.emplace_back(view(o.dt, o.shape, nullptr).nbytes() + 1);
  for (size_t i = 0; i < c.ins.size(); ++i) cin.push_back(view(c.ins[i].dt, c.ins[i].shape, hin[i].data()));
  for (size_t i = 0; i < c.outs.size(); ++i) cout_.push_back(view(c.outs[i].dt, c.outs[i].shape, hout[i].data()));
  KernelArgs a;
  a.inputs = cin.data(), a.num_inputs = static_cast<int>(cin.size());
  a.outputs = cout_.data(), a.num_outputs = static_cast<int>(cout_.size());
  a.attrs = &attrs;
  // check at load: both accept
  ASSERT_TRUE(!cpu->check || cpu->check(a).ok()) << c.kernel;
  ASSERT_TRUE(!gpu->check || gpu->check(a).ok()) << c.kernel;
  ThreadPool pool(2);
  std::vector<unsigned char> cws(cpu->workspace ? cpu->workspace(a) + 64 : 64);
  a.workspace = cws.data(), a.workspace_bytes = cws.size(), a.pool = &pool;
  ASSERT_TRUE(cpu->run(a).ok()) << c.kernel;

  CudaContext ctx;
  ASSERT_EQ(cudaStreamCreate(&ctx.stream), cudaSuccess);
  ASSERT_EQ(cublasLtCreate(&ctx.cublaslt), CUBLAS_STATUS_SUCCESS);
  std::vector<void*> dptr;
  auto dalloc = [&](size_t bytes) { void* p = nullptr; EXPECT_EQ(cudaMalloc(&p, bytes + 256), cudaSuccess); dptr.push_back(p); return p; };
  for (size_t i = 0; i < c.ins.size(); ++i) {
    void* p = dalloc(hin[i].size());
    cudaMemcpy(p, hin[i].data(), hin[i].size(), cudaMemcpyHostToDevice);
    gin.push_back(view(c.ins[i].dt, c.ins[i].shape, p));
  }
  for (size_t i = 0; i < c.outs.size(); ++i) gout.push_back(view(c.outs[i].dt, c.outs[i].shape, dalloc(hout[i].size())));
  KernelArgs g = a;
  g.inputs = gin.data(), g.outputs = gout.data(), g.pool = nullptr, g.device = &ctx;
  g.workspace_bytes = gpu->workspace ? gpu->workspace(g) : 0;
  g.workspace = g.workspace_bytes ? dalloc(g.workspace_bytes) : nullptr;
  std::vector<std::vector<unsigned char>> first;
  for (int rep = 0; rep < 2; ++rep) {
    for (size_t i = 0; i < c.outs.size(); ++i) cudaMemset(gout[i].data, 0xff, gout[i].nbytes());
    Status st = gpu->run(g);
    ASSERT_TRUE(st.ok()) << c.kernel << ": " << st.message();
    ASSERT_EQ(cudaStreamSynchronize(ctx.stream), cudaSuccess) << c.kernel;
    for (size_t i = 0; i < c.outs.size(); ++i) {
      std::vector<unsigned char> h(gout[i].nbytes());
      cudaMemcpy(h.data(), gout[i].data, h.size(), cudaMemcpyDeviceToHost);
      if (rep == 0) {
        first.push_back(h);
        const int64_t n = cout_[i].numel();
        int bad = 0;
        for (int64_t k = 0; k < n && bad < 5; ++k) {
          const double want = value_at(cout_[i], hout[i], k), got = value_at(gout[i], h, k);
          const bool ok = (std::isnan(want) && std::isnan(got)) || std::fabs(want - got) <= c.tol * (1 + std::fabs(want));
          if (!ok) ++bad, ADD_FAILURE() << c.kernel << " output " << i << " element " << k << ": cpu " << want << ", cuda " << got;
        }
      } else {
        EXPECT_EQ(0, std::memcmp(first[i].data(), h.data(), h.size())) << c.kernel << ": output " << i << " differs between runs";
      }
    }
  }
  for (void* p : dptr) cudaFree(p);
  cublasLtDestroy(ctx.cublaslt);
  cudaStreamDestroy(ctx.stream);
}

const DType f32 = DType::f32, i64 = DType::i64;
In R(std::vector<int64_t> s) { return In{f32, s, 0}; }
In P(std::vector<int64_t> s) { return In{f32, s, 2}; }
In Idx(std::vector<int64_t> s, double hi) { return In{i64, s, 1, hi}; }
In Scalar(double v) { return In{f32, {1}, 4, 0, v}; }
Out O(std::vector<int64_t> s, DType dt = DType::f32) { return Out{dt, s}; }

std::vector<Case> cases() {
  std::vector<Case> v;
  for (const char* op : {"add", "sub", "mul", "div"}) {
    v.push_back({op, {R({3, 5, 7}), P({3, 5, 7})}, {O({3, 5, 7})}, {}});
    v.push_back({op, {R({3, 5, 7}), P({5, 1})}, {O({3, 5, 7})}, {}});
  }
  for (const char* op : {"relu", "sigmoid", "tanh", "silu", "hardsigmoid", "hardswish", "exp", "neg"})
    v.push_back({op, {R({1000, 3})}, {O({1000, 3})}, {}});
  for (const char* op : {"log", "sqrt", "rsqrt"}) v.push_back({op, {P({517})}, {O({517})}, {}});
  v.push_back({"gelu", {R({257})}, {O({257})}, {S("approximate", "tanh")}});
  v.push_back({"gelu", {R({257})}, {O({257})}, {}});
  v.push_back({"hardtanh", {R({99})}, {O({99})}, {F("min", -0.5), F("max", 0.5)}});
  for (const char* op : {"relu_backward", "sigmoid_backward", "tanh_backward", "silu_backward", "hardswish_backward",
                         "hardsigmoid_backward", "gelu_backward"})
    v.push_back({op, {R({33, 9}), R({33, 9})}, {O({33, 9})}, {}});
  v.push_back({"hardtanh_backward", {R({64}), R({64})}, {O({64})}, {F("min", -1), F("max", 1)}});
  v.push_back({"pow_scalar", {P({100})}, {O({100})}, {F("exponent", 2.5)}});
  v.push_back({"pow_scalar", {R({100})}, {O({100})}, {F("exponent", 2)}});
  v.push_back({"where", {In{DType::boolean, {4, 1}, 1, 2}, R({4, 6}), R({6})}, {O({4, 6})}, {}});
  v.push_back({"sum", {R({4, 5, 6})}, {O({5})}, {Is("dims", {0, 2})}});
  v.push_back({"sum", {R({3, 70000})}, {O({3})}, {Is("dims", {1})}});
  v.push_back({"mean", {R({4, 5, 6})}, {O({4, 1, 6})}, {Is("dims", {1}), I("keepdim", 1)}});
  v.push_back({"sum_to", {R({8, 3, 5})}, {O({3, 1})}, {}});
  v.push_back({"reshape", {R({6, 4})}, {O({24})}, {}});
  v.push_back({"permute", {R({2, 3, 4, 5})}, {O({5, 2, 4, 3})}, {Is("dims", {3, 0, 2, 1})}});
  v.push_back({"expand", {R({3, 1})}, {O({2, 3, 4})}, {}});
  v.push_back({"concat", {R({2, 3}), R({2, 5})}, {O({2, 8})}, {I("dim", 1)}});
  v.push_back({"slice", {R({4, 10})}, {O({4, 3})}, {I("dim", 1), I("start", 1), I("end", 9), I("step", 3)}});
  v.push_back({"slice_backward", {R({4, 3})}, {O({4, 10})},
               {I("dim", 1), I("start", 1), I("end", 9), I("step", 3), Is("input_shape", {4, 10})}});
  v.push_back({"cast", {R({50})}, {O({50}, i64)}, {S("dtype", "i64")}});
  v.push_back({"matmul", {R({5, 7}), R({7, 3})}, {O({5, 3})}, {}});
  v.push_back({"matmul", {R({2, 3, 5, 7}), R({3, 7, 4})}, {O({2, 3, 5, 4})}, {}});
  v.push_back({"matmul", {R({2, 1, 5, 7}), R({1, 3, 7, 4})}, {O({2, 3, 5, 4})}, {}});
  v.push_back({"linear", {R({6, 9}), R({5, 9}), R({5})}, {O({6, 5})}, {}});
  v.push_back({"linear", {R({2, 3, 9}), R({5, 9}), R({5})}, {O({2, 3, 5})}, {S("activation", "relu")}});
  for (const char* k : {"conv2d", "conv2d.im2col", "conv2d.winograd"})
    v.push_back({k, {R({2, 3, 9, 9}), R({4, 3, 3, 3}), R({4})}, {O({2, 4, 9, 9})}, {Is("padding", {1, 1})}});
  v.push_back({"conv2d", {R({2, 4, 9, 9}), R({6, 2, 3, 3})}, {O({2, 6, 5, 5})}, {Is("stride", {2, 2}), Is("padding", {1, 1}), I("groups", 2)}});
  v.push_back({"conv2d.depthwise", {R({2, 4, 8, 8}), R({4, 1, 3, 3}), R({4})}, {O({2, 4, 4, 4})},
               {Is("stride", {2, 2}), Is("padding", {1, 1}), I("groups", 4), S("activation", "relu")}});
  v.push_back({"conv2d.pointwise", {R({2, 4, 5, 5}), R({6, 4, 1, 1})}, {O({2, 6, 5, 5})}, {}});
  for (const char* k : {"conv2d_grad_input", "conv2d_grad_input.winograd"})
    v.push_back({k, {R({2, 4, 9, 9}), R({4, 3, 3, 3})}, {O({2, 3, 9, 9})}, {Is("padding", {1, 1}), Is("input_shape", {2, 3, 9, 9})}});
  v.push_back({"conv2d_grad_input.depthwise", {R({2, 4, 4, 4}), R({4, 1, 3, 3})}, {O({2, 4, 8, 8})},
               {Is("stride", {2, 2}), Is("padding", {1, 1}), I("groups", 4), Is("input_shape", {2, 4, 8, 8})}});
  v.push_back({"conv2d_grad_weight", {R({2, 4, 9, 9}), R({2, 3, 9, 9})}, {O({4, 3, 3, 3})}, {Is("padding", {1, 1}), Is("weight_shape", {4, 3, 3, 3})}});
  v.push_back({"conv2d_grad_weight.depthwise", {R({2, 4, 4, 4}), R({2, 4, 8, 8})}, {O({4, 1, 3, 3})},
               {Is("stride", {2, 2}), Is("padding", {1, 1}), I("groups", 4), Is("weight_shape", {4, 1, 3, 3})}});
  v.push_back({"conv2d_grad_input.im2col", {R({2, 4, 5, 5}), R({4, 3, 3, 3})}, {O({2, 3, 9, 9})},
               {Is("stride", {2, 2}), Is("padding", {1, 1}), Is("input_shape", {2, 3, 9, 9})}});
  v.push_back({"conv2d_grad_input.pointwise", {R({2, 6, 5, 5}), R({6, 4, 1, 1})}, {O({2, 4, 5, 5})}, {Is("input_shape", {2, 4, 5, 5})}});
  v.push_back({"conv2d_grad_weight.im2col", {R({2, 4, 5, 5}), R({2, 3, 9, 9})}, {O({4, 3, 3, 3})},
               {Is("stride", {2, 2}), Is("padding", {1, 1}), Is("weight_shape", {4, 3, 3, 3})}});
  v.push_back({"conv2d_grad_weight.pointwise", {R({2, 6, 5, 5}), R({2, 4, 5, 5})}, {O({6, 4, 1, 1})}, {Is("weight_shape", {6, 4, 1, 1})}});
  v.push_back({"max_pool2d_backward", {R({2, 3, 4, 4}), Idx({2, 3, 4, 4}, 81)}, {O({2, 3, 9, 9})},
               {Is("kernel", {3, 3}), Is("stride", {2, 2}), Is("input_shape", {2, 3, 9, 9})}});
  v.push_back({"batch_norm_train", {R({4, 3, 5, 5}), R({3}), R({3}), R({3}), P({3})}, {O({4, 3, 5, 5}), O({3}), O({3}), O({3}), O({3})}, {}});
  v.push_back({"batch_norm_infer", {R({4, 3, 5}), R({3}), R({3}), R({3}), P({3})}, {O({4, 3, 5})}, {}});
  v.push_back({"batch_norm_backward", {R({4, 3, 5}), R({4, 3, 5}), R({3}), R({3}), P({3})}, {O({4, 3, 5}), O({3}), O({3})},
               {Is("output_mask", {1, 1, 1})}});
  v.push_back({"layer_norm", {R({6, 33}), R({33}), R({33})}, {O({6, 33}), O({6}), O({6})}, {Is("normalized_shape", {33})}});
  v.push_back({"layer_norm_backward", {R({6, 33}), R({6, 33}), R({33}), R({6}), P({6})}, {O({6, 33}), O({33}), O({33})},
               {Is("normalized_shape", {33}), Is("output_mask", {1, 1, 1})}});
  for (const char* k : {"softmax", "log_softmax"}) {
    v.push_back({k, {R({7, 300})}, {O({7, 300})}, {I("dim", 1)}});
    v.push_back({k, {R({3, 5, 4})}, {O({3, 5, 4})}, {I("dim", 1)}});
  }
  for (const char* k : {"softmax_backward", "log_softmax_backward"})
    v.push_back({k, {R({3, 5, 4}), R({3, 5, 4})}, {O({3, 5, 4})}, {I("dim", 1)}});
  v.push_back({"max_pool2d", {R({2, 3, 9, 9})}, {O({2, 3, 4, 4}), O({2, 3, 4, 4}, i64)}, {Is("kernel", {3, 3}), Is("stride", {2, 2})}});
  v.push_back({"avg_pool2d", {R({2, 3, 9, 9})}, {O({2, 3, 5, 5})}, {Is("kernel", {3, 3}), Is("stride", {2, 2}), Is("padding", {1, 1})}});
  v.push_back({"avg_pool2d_backward", {R({2, 3, 5, 5})}, {O({2, 3, 9, 9})},
               {Is("kernel", {3, 3}), Is("stride", {2, 2}), Is("padding", {1, 1}), Is("input_shape", {2, 3, 9, 9})}});
  v.push_back({"embedding", {R({10, 4}), Idx({3, 5}, 10)}, {O({3, 5, 4})}, {}});
  v.push_back({"embedding_backward", {R({3, 5, 4}), Idx({3, 5}, 10)}, {O({10, 4})}, {I("num_weights", 10), I("padding_idx", 2)}});
  v.push_back({"dropout", {R({1000}), In{i64, {1}, 4, 0, 7}}, {O({1000}), O({1000})}, {F("p", 0.3), I("seed", 5)}});
  v.push_back({"cross_entropy", {R({6, 11}), Idx({6}, 11)}, {O({1})}, {F("label_smoothing", 0.1)}});
  v.push_back({"cross_entropy", {R({6, 11}), Idx({6}, 11)}, {O({6})}, {S("reduction", "none")}});
  v.push_back({"cross_entropy_backward", {Scalar(1.0), R({6, 11}), Idx({6}, 11)}, {O({6, 11})}, {}});
  v.push_back({"nll_loss", {R({6, 11}), Idx({6}, 11)}, {O({1})}, {S("reduction", "sum")}});
  v.push_back({"nll_loss_backward", {Scalar(1.0), Idx({6}, 11)}, {O({6, 11})}, {I("num_classes", 11)}});
  v.push_back({"mse_loss", {R({300, 7}), R({300, 7})}, {O({1})}, {}});
  v.push_back({"sgd_update", {R({100}), R({100}), Scalar(0.1), R({100}), Scalar(3)}, {O({100}), O({100})},
               {F("momentum", 0.9), F("dampening", 0), I("nesterov", 1), F("weight_decay", 0.01)}});
  v.push_back({"adamw_update", {R({100}), R({100}), Scalar(0.01), R({100}), P({100}), Scalar(4)}, {O({100}), O({100}), O({100})},
               {F("beta1", 0.9), F("beta2", 0.999), F("eps", 1e-8), F("weight_decay", 0.01)}});
  v.push_back({"activation_mask", {R({37})}, {O({5}, DType::u8)}, {F("min", 0)}});
  v.push_back({"mask_grad", {R({37}), In{DType::u8, {5}, 3}}, {O({37})}, {}});
  v.push_back({"fused_elementwise", {R({4, 6}), R({6}), Scalar(2)}, {O({4, 6}), O({4, 6})},
               {Is("shape", {4, 6}), S("program", "t0=add(x0,x1); t1=mul(t0,x2); t2=gelu(t1,approximate=tanh); y0=t2; y1=t0")}});
  return v;
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  std::string s = std::to_string(info.index) + "_" + info.param.kernel;
  for (char& ch : s)
    if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return s;
}

INSTANTIATE_TEST_SUITE_P(AllKernels, CudaKernels, ::testing::ValuesIn(cases()), case_name);

// Names of cuda kernels no case covers (printed; the parity test guards presence).
TEST(CudaKernelsCoverage, Report) {
  std::set<std::string> covered;
  for (const Case& c : cases()) covered.insert(c.kernel);
  std::string missing;
  for (const std::string& n : KernelRegistry::for_backend("cuda")->names())
    if (!covered.count(n)) missing += " " + n;
  std::printf("cuda kernels without a case:%s\n", missing.empty() ? " none" : missing.c_str());
}

}  // namespace
}  // namespace edgetune
