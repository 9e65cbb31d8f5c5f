// The C++ kernels and runtime against values of the numpy reference executor computed in float64
// (csrc/tests/data/reference.json + reference.safetensors, written by data/make_plans.py; format
// in its docstring). In the spirit of llm.c's test_gpt2.c: what a target build computes is
// compared number by number with the oracle, on every build CI runs (x86-64, ASan, and aarch64
// under qemu, where nothing else checks a kernel's values). Suite: ReferenceValues.
//
//   KernelsMatchFloat64Reference  every registered CPU kernel (variants included) on the op sweep's
//                                 samples, 1 and 2 threads; integer/bool outputs exactly
//   EveryCpuKernelHasACase        a kernel added later cannot go unchecked
//   PlansMatchFloat64Reference    mlp_sgd / small_cnn_adamw: forward output, the first 3 losses,
//                                 every weight the 3 steps change
//
// Tolerance of a kernel's float output element i (why these terms: make_plans.py's docstring):
//
//     |got_i - ref_i| <= F * eps_f32 * K * (|ref_i| + S)
//
//   eps_f32 = 2^-23. K (manifest "terms") = the roundings one element accumulates: a K-term
//   float32 sum is off by at most ~K*u*sum|terms| (u = eps/2, Higham's gamma_K), so the bound
//   grows with the reduction length. S (manifest "scale") = the largest input/output magnitude of
//   the case, what the terms are made of: an output that cancels to ~0 (a gradient summing +/-
//   terms) is judged against the size of what cancelled, not against itself. F = 4 (manifest
//   "kernel_factor"), x2 for Winograd: a few roundings per element beyond the reduction (bias,
//   epilogue, a mean's scale, an optimizer update's 3-6 operations) and 1-4 ulp transcendental
//   functions; measured x86-64 kernels use at most 1/7 of it. A wrong formula, a dropped term or
//   a wrong index is off by O(|ref|) and fails by orders of magnitude.
//
// Plan values: |got - ref| <= atol from the manifest = C * (E + eps_f32 * max|ref|), E the value's
// measured sensitivity to float32 rounding (Monte Carlo reruns of the reference, see make_plans.py).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/kernel.h"
#include "core/runtime.h"
#include "core/thread_pool.h"
#include "test_reference_util.h"

namespace edgetune {
namespace {

using reference_test::Buffer;
using reference_test::Json;
using reference_test::ReferenceData;

// Loaded once for the whole suite; a missing or damaged file fails every test here (never skips).
const ReferenceData* data_or_fail() {
  static std::unique_ptr<ReferenceData> data;
  static std::string error;
  static bool tried = false;
  if (!tried) {
    tried = true;
    try {
      data.reset(new ReferenceData(EDGETUNE_TEST_DATA));
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  if (!data) ADD_FAILURE() << "reference data unusable: " << error;
  return data.get();
}

bool is_float(DType t) { return t == DType::f32 || t == DType::f64; }

// Compares `got` with the float64 reference `ref`, element-wise bound tol(i); reports the first
// few offenders and the count. `what` names the case.
void expect_close(const std::string& what, const Buffer& got, const Buffer& ref, double rtol, double atol) {
  ASSERT_EQ(got.numel(), ref.numel()) << what;
  int64_t bad = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    double g = got.at(i), r = ref.at(i);
    bool ok;
    if (std::isnan(r)) {
      ok = std::isnan(g);
    } else if (std::isinf(r)) {
      ok = g == r;
    } else {
      ok = std::fabs(g - r) <= atol + rtol * std::fabs(r);  // false for a NaN got
    }
    if (!ok && ++bad <= 3) {
      ADD_FAILURE() << what << ": element " << i << " got " << g << ", float64 reference " << r
                    << ", |diff| " << std::fabs(g - r) << " > tolerance " << atol + rtol * std::fabs(r);
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << got.numel() << " elements outside the tolerance";
}

void expect_equal(const std::string& what, const Buffer& got, const Buffer& ref) {
  ASSERT_EQ(got.numel(), ref.numel()) << what;
  ASSERT_EQ(got.dtype(), ref.dtype()) << what;
  int64_t bad = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    if (got.at(i) != ref.at(i) && ++bad <= 3)
      ADD_FAILURE() << what << ": element " << i << " got " << got.at(i) << ", expected " << ref.at(i);
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << got.numel() << " elements differ";
}

// Runs `kernel` on the case's inputs the way edgetune._native.run_kernel does (poisoned outputs,
// check, workspace, run) and compares every output with its reference.
void check_kernel_case(const ReferenceData& d, const Json& c, const std::string& kernel, ThreadPool* pool) {
  const std::string what = c.at("id").string() + " [" + kernel + ", " + std::to_string(pool->num_threads()) +
                           " thread" + (pool->num_threads() > 1 ? "s" : "") + "]";
  const Json& m = d.manifest();
  const KernelRegistry* reg = KernelRegistry::for_backend("cpu");
  ASSERT_NE(reg, nullptr);
  const KernelDef* k = reg->find(kernel);
  ASSERT_NE(k, nullptr) << what << ": no such CPU kernel (the reference data name it)";

  std::vector<Buffer> ins, outs;
  for (const Json& id : c.at("inputs").array()) ins.push_back(d.tensor(id.string()));
  std::vector<TensorView> in_views, out_views;
  for (Buffer& b : ins) in_views.push_back(b.view());
  for (const Json& o : c.at("outputs").array()) {
    DType t;
    ASSERT_TRUE(dtype_from_name(o.at("dtype").string(), &t)) << what;
    std::vector<int64_t> shape;
    for (const Json& s : o.at("shape").array()) shape.push_back(s.integer());
    outs.emplace_back(t, shape);
    std::memset(outs.back().data(), 0x7f, outs.back().nbytes());  // an unwritten element fails
  }
  for (Buffer& b : outs) out_views.push_back(b.view());
  Attrs attrs = reference_test::attrs_from_manifest(c.at("attrs"));
  KernelArgs a{in_views.data(), static_cast<int>(in_views.size()), out_views.data(),
               static_cast<int>(out_views.size()), &attrs, nullptr, 0, pool};
  if (k->check) {
    Status st = k->check(a);
    ASSERT_TRUE(st.ok()) << what << ": check refused the case: " << st.to_string();
  }
  size_t ws = k->workspace ? k->workspace(a) : 0;
  Buffer workspace(DType::u8, {static_cast<int64_t>(ws + 64)});
  a.workspace = ws ? workspace.data() : nullptr;
  a.workspace_bytes = ws;
  Status st = k->run(a);
  ASSERT_TRUE(st.ok()) << what << ": " << st.to_string();

  const double eps = m.at("eps_f32").number();
  double factor = m.at("kernel_factor").number();
  if (kernel.size() > 9 && kernel.compare(kernel.size() - 9, 9, ".winograd") == 0)
    factor *= m.at("winograd_factor").number();
  for (size_t j = 0; j < outs.size(); ++j) {
    const Json& o = c.at("outputs").at(j);
    Buffer ref = d.tensor(o.at("ref").string());
    ASSERT_EQ(ref.shape(), outs[j].shape()) << what << " output " << j;
    const std::string name = what + " output " + std::to_string(j);
    if (is_float(outs[j].dtype())) {
      double rtol = factor * eps * static_cast<double>(o.at("terms").integer());
      expect_close(name, outs[j], ref, rtol, rtol * o.at("scale").number());
    } else {
      expect_equal(name, outs[j], ref);
    }
  }
}

TEST(ReferenceValues, DataFilesArePresent) {
  const ReferenceData* d = data_or_fail();
  ASSERT_NE(d, nullptr);
  EXPECT_GT(d->manifest().at("kernels").size(), 100u);
  EXPECT_EQ(d->manifest().at("plans").size(), 2u);
  EXPECT_GT(d->num_tensors(), 100u);
}

TEST(ReferenceValues, EveryCpuKernelHasACase) {
  const ReferenceData* d = data_or_fail();
  ASSERT_NE(d, nullptr);
  std::set<std::string> covered;
  for (const Json& c : d->manifest().at("kernels").array())
    for (const Json& k : c.at("kernels").array()) covered.insert(k.string());
  const KernelRegistry* reg = KernelRegistry::for_backend("cpu");
  ASSERT_NE(reg, nullptr);
  // ".onednn" variants exist only in builds that found oneDNN (cmake/onednn.cmake); make_plans.py
  // leaves them out so every build loads the same data (tests/kernels/test_conv_variants.py checks them)
  const std::string optional = ".onednn";
  for (const std::string& name : reg->names()) {
    if (name.size() > optional.size() && name.compare(name.size() - optional.size(), optional.size(), optional) == 0)
      continue;
    EXPECT_TRUE(covered.count(name)) << "CPU kernel '" << name << "' has no reference case: give its op a sample "
                                     << "it accepts and rerun csrc/tests/data/make_plans.py";
  }
  for (const std::string& name : covered)
    EXPECT_NE(reg->find(name), nullptr) << "the reference data name kernel '" << name << "', not registered";
}

TEST(ReferenceValues, KernelsMatchFloat64Reference) {
  const ReferenceData* d = data_or_fail();
  ASSERT_NE(d, nullptr);
  ThreadPool one(1), two(2);
  int runs = 0;
  for (const Json& c : d->manifest().at("kernels").array()) {
    for (const Json& k : c.at("kernels").array()) {
      for (ThreadPool* pool : {&one, &two}) {
        SCOPED_TRACE(c.at("id").string() + " " + k.string());
        check_kernel_case(*d, c, k.string(), pool);
        ++runs;
      }
    }
  }
  EXPECT_GT(runs, 200);
}

// ---- plans ----------------------------------------------------------------------------------------
std::vector<uint8_t> file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::vector<uint8_t> bytes{std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
  if (bytes.empty()) ADD_FAILURE() << "missing test data " << path << " (run csrc/tests/data/make_plans.py)";
  return bytes;
}

Buffer copy_of(const TensorView& v) {
  std::vector<int64_t> shape(v.shape, v.shape + v.rank);
  Buffer b(v.dtype, shape);
  std::memcpy(b.data(), v.data, v.nbytes());
  return b;
}

TEST(ReferenceValues, PlansMatchFloat64Reference) {
  const ReferenceData* d = data_or_fail();
  ASSERT_NE(d, nullptr);
  for (const Json& p : d->manifest().at("plans").array()) {
    const std::string plan = p.at("plan").string();
    SCOPED_TRACE(plan);
    auto bytes = file_bytes(d->dir() + "/" + plan);
    RuntimeOptions opt;
    opt.num_threads = 1;
    auto r = Runtime::load(bytes.data(), bytes.size(), opt);
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    std::unique_ptr<Runtime> rt = std::move(r).value();

    const Json& inputs = p.at("inputs");
    ASSERT_EQ(inputs.size(), rt->inputs().size());
    for (size_t i = 0; i < inputs.size(); ++i) {
      Buffer x = d->tensor(inputs.at(i).string());
      ASSERT_EQ(x.shape_string(), rt->inputs()[i].view.shape_string()) << "input " << i;
      ASSERT_TRUE(rt->set_input(static_cast<int>(i), x.data(), x.nbytes()).ok());
    }

    // forward under the initial weights
    ASSERT_TRUE(rt->forward().ok());
    const Binding* out = rt->output("output");
    ASSERT_NE(out, nullptr);
    expect_close(plan + " forward output", copy_of(out->view), d->tensor(p.at("output").at("ref").string()), 0,
                 p.at("output").at("atol").number());

    // the first steps' losses
    Buffer losses = d->tensor(p.at("losses").at("ref").string());
    const int64_t steps = p.at("steps").integer();
    ASSERT_EQ(losses.numel(), steps);
    for (int64_t s = 0; s < steps; ++s) {
      auto loss = rt->step();
      ASSERT_TRUE(loss.ok()) << loss.status().to_string();
      double atol = p.at("losses").at("atol").at(static_cast<size_t>(s)).number();
      EXPECT_NEAR(loss.value(), losses.at(s), atol) << plan << ": loss of step " << s + 1;
    }

    // every weight the steps changed; every trainable weight must be among them
    std::set<std::string> listed;
    for (const Json& w : p.at("weights").array()) {
      const std::string name = w.at("name").string();
      listed.insert(name);
      const Binding* b = rt->weight(name);
      ASSERT_NE(b, nullptr) << plan << ": no weight " << name;
      expect_close(plan + " " + name + " after " + std::to_string(steps) + " steps", copy_of(b->view),
                   d->tensor(w.at("ref").string()), 0, w.at("atol").number());
    }
    for (const Binding& b : rt->weights()) {
      if (rt->is_trainable(b.name)) {
        EXPECT_TRUE(listed.count(b.name)) << plan << ": trainable weight " << b.name << " has no reference value";
      }
    }
  }
}

}  // namespace
}  // namespace edgetune
