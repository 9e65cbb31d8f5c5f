// The Device layer (core/device.h) on the CPU, Runtime::read / write, and what loading a plan on the
// cuda backend says where it cannot run (a build without CUDA, or no GPU): these run everywhere.
// The cuda backend itself is tested on a GPU by tests/cuda/test_cuda_runtime.cc.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/runtime.h"

namespace edgetune {
namespace {

std::vector<uint8_t> plan_bytes(const std::string& name) {
  std::ifstream f(std::string(EDGETUNE_TEST_DATA) + "/" + name, std::ios::binary);
  std::vector<uint8_t> bytes{std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
  if (bytes.empty()) ADD_FAILURE() << "missing test data " << name;
  return bytes;
}

TEST(Device, CpuAllocatesAlignedZeroedHostMemory) {
  auto d = make_device("cpu");
  ASSERT_TRUE(d.ok()) << d.status().to_string();
  Device& dev = *d.value();
  EXPECT_EQ(dev.backend(), "cpu");
  EXPECT_TRUE(dev.host_accessible());
  EXPECT_FALSE(dev.runs_steps());
  EXPECT_EQ(dev.kernel_context(), nullptr);
  for (size_t alignment : {16, 64, 4096}) {
    auto p = dev.allocate(100, alignment);
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p.value()) % alignment, 0u);
    for (size_t i = 0; i < 100; ++i) ASSERT_EQ(p.value()[i], 0) << i;
    dev.release(p.value());
  }
  auto empty = dev.allocate(0, 64);  // an empty region is still one block (views point into it)
  ASSERT_TRUE(empty.ok());
  EXPECT_NE(empty.value(), nullptr);
  dev.release(empty.value());
  dev.release(nullptr);
}

TEST(Device, CpuCopiesBothWays) {
  auto dev = std::move(make_device("cpu")).value();
  auto p = dev->allocate(64, 64);
  ASSERT_TRUE(p.ok());
  const char text[] = "edgetune device";
  ASSERT_TRUE(dev->copy_to_device(p.value(), text, sizeof text).ok());
  char back[sizeof text] = {};
  ASSERT_TRUE(dev->copy_to_host(back, p.value(), sizeof text).ok());
  EXPECT_STREQ(back, text);
  EXPECT_TRUE(dev->copy_to_host(back, p.value(), 0).ok());
  dev->release(p.value());
}

TEST(Device, UnknownBackendIsUnimplemented) {
  auto d = make_device("tpu");
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(d.status().message().find("'tpu'"), std::string::npos) << d.status().message();
}

// A cuda load either works (a CUDA build on a GPU) or is kUnimplemented with the reason: the build
// has no CUDA backend, or the machine has no usable GPU (the CUDA error is named).
TEST(Device, CudaUnavailableSaysWhy) {
  auto plan = plan_bytes("mlp_sgd.etp");
  RuntimeOptions opt;
  opt.backend = "cuda";
  auto r = Runtime::load(plan.data(), plan.size(), opt);
  if (r.ok()) {
    EXPECT_EQ(r.value()->backend(), "cuda");
    GTEST_SKIP() << "a GPU is usable here: " << r.value()->device_description();
  }
  EXPECT_EQ(r.status().code(), StatusCode::kUnimplemented) << r.status().to_string();
  const std::string& m = r.status().message();
#ifdef EDGETUNE_HAVE_CUDA
  EXPECT_NE(m.find("backend 'cuda' cannot run here"), std::string::npos) << m;
  EXPECT_NE(m.find("cuda"), std::string::npos) << m;
#else
  EXPECT_NE(m.find("backend 'cuda' is not built into this runtime"), std::string::npos) << m;
  EXPECT_NE(m.find("EDGETUNE_CUDA=ON"), std::string::npos) << m;
#endif
  auto d = make_device("cuda");
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().message(), m);
}

TEST(RuntimeReadWrite, RoundTripsWeightsAndChecksTheBinding) {
  auto plan = plan_bytes("mlp_sgd.etp");
  RuntimeOptions opt;
  opt.num_threads = 1;
  auto r = Runtime::load(plan.data(), plan.size(), opt);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  Runtime& rt = *r.value();
  EXPECT_EQ(rt.backend(), "cpu");
  EXPECT_EQ(rt.device_description(), "host memory");
  const Binding* w = rt.weight("layers.0.weight");
  ASSERT_NE(w, nullptr);
  const size_t n = w->view.nbytes();
  ASSERT_EQ(rt.host_data(*w), w->view.data);  // cpu: readable in place
  std::vector<float> got(w->view.numel());
  ASSERT_TRUE(rt.read(*w, got.data(), n).ok());
  EXPECT_EQ(std::memcmp(got.data(), w->view.data, n), 0);
  std::vector<float> mine(got.size());
  for (size_t i = 0; i < mine.size(); ++i) mine[i] = 0.25f * static_cast<float>(i);
  ASSERT_TRUE(rt.write(*w, mine.data(), n).ok());
  ASSERT_TRUE(rt.read(*w, got.data(), n).ok());
  EXPECT_EQ(got, mine);

  Status wrong = rt.read(*w, got.data(), n - 4);
  EXPECT_EQ(wrong.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(wrong.message().find("layers.0.weight"), std::string::npos) << wrong.message();
  Binding made_up{"made_up", w->view};
  float outside[4] = {};
  made_up.view.data = outside;
  made_up.view.rank = 1;
  made_up.view.shape[0] = 4;
  Status foreign = rt.write(made_up, outside, sizeof outside);
  EXPECT_EQ(foreign.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(foreign.message().find("not a tensor of this runtime"), std::string::npos) << foreign.message();

  // outputs and optimizer state read the same way
  ASSERT_TRUE(rt.set_input(0, std::vector<float>(8 * 6, 0.5f).data(), 8 * 6 * sizeof(float)).ok());
  auto loss = rt.step();
  ASSERT_TRUE(loss.ok()) << loss.status().to_string();
  float l = 0;
  ASSERT_TRUE(rt.read(*rt.output("loss"), &l, sizeof l).ok());
  EXPECT_EQ(l, loss.value());
  for (const Binding& b : rt.optimizer_state())
    if (b.name == "optim.lr") {
      float lr = 0;
      ASSERT_TRUE(rt.read(b, &lr, sizeof lr).ok());
      EXPECT_GT(lr, 0.0f);
    }
}

// The cuda-target twins (data/make_cuda_plans.py; used by tests/cuda/test_cuda_runtime.cc) are the
// same model, weights and batch as the cpu plans: on the cpu backend both train to the same losses.
TEST(RuntimeReadWrite, CudaTwinPlansMatchTheirCpuPlans) {
  for (const std::string stem : {"mlp_sgd", "small_cnn_adamw"}) {
    SCOPED_TRACE(stem);
    std::vector<std::unique_ptr<Runtime>> rts;
    for (const std::string& file : {stem + ".etp", stem + ".cuda.etp"}) {
      auto plan = plan_bytes(file);
      RuntimeOptions opt;
      opt.num_threads = 1;
      auto r = Runtime::load(plan.data(), plan.size(), opt);
      ASSERT_TRUE(r.ok()) << file << ": " << r.status().to_string();
      auto x = plan_bytes(stem + ".x.bin"), y = plan_bytes(stem + ".y.bin");
      ASSERT_TRUE(r.value()->set_input(0, x.data(), x.size()).ok());
      ASSERT_TRUE(r.value()->set_input(1, y.data(), y.size()).ok());
      rts.push_back(std::move(r).value());
    }
    ASSERT_EQ(rts[0]->weights().size(), rts[1]->weights().size());
    for (size_t i = 0; i < rts[0]->weights().size(); ++i) {
      const Binding& a = rts[0]->weights()[i];
      const Binding& b = rts[1]->weights()[i];
      ASSERT_EQ(a.name, b.name);
      ASSERT_EQ(a.view.nbytes(), b.view.nbytes());
      EXPECT_EQ(std::memcmp(rts[0]->host_data(a), rts[1]->host_data(b), a.view.nbytes()), 0) << a.name;
    }
    for (int s = 0; s < 3; ++s) {
      auto l0 = rts[0]->step(), l1 = rts[1]->step();
      ASSERT_TRUE(l0.ok() && l1.ok());
      EXPECT_NEAR(l0.value(), l1.value(), 1e-5 + 1e-5 * std::fabs(l0.value())) << "step " << s + 1;
    }
  }
}

}  // namespace
}  // namespace edgetune
