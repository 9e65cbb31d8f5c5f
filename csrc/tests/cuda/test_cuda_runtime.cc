// The runtime on the cuda backend (core/cuda_device.cu) against the cpu backend and the float64
// reference, on the committed test plans (csrc/tests/data: mlp_sgd, small_cnn_adamw). Needs a GPU:
// every test skips (GTEST_SKIP) where a cuda Runtime cannot be made, so CI runs it harmlessly.
// Run on a GPU machine: ./build/<dir>/csrc/edgetune_cuda_runtime_tests
//
//   MatchesFloat64Reference        forward output, 3 losses, every changed weight: the CPU tests'
//                                  tolerances (reference.json), on cuda
//   MatchesCpuOverFiveSteps        losses, weights and optimizer state of 5 steps, cuda vs cpu
//   GraphReplayIsBitIdentical      steps replayed as CUDA Graphs == the same steps uncaptured
//                                  (profiling mode), bit for bit; profiling times every node
//   NanLossStopsBeforeUpdates      a NaN input: kNumericError, same message as the cpu, nothing updated
//   NonFiniteUpdateIsRefused       lr = inf: the update guard refuses, same message as the cpu,
//                                  nothing written (weights, moments, the step counter), then recovers
//   CheckpointRoundTrips           write (read back from the GPU) -> restore on a fresh cuda runtime
//                                  (and on cpu): bit-identical state and next loss
//
// The plans: tests/data/<stem>.cuda.etp, the cuda-target twins of <stem>.etp (same model, weights and
// batch; written by data/make_cuda_plans.py), on both backends, so cpu and cuda run the same plan
// (same nodes, same plan hash for checkpoints). The <stem>.etp files were compiled for the cpu
// target: their workspaces are the cpu kernels', which the cuda loader refuses (kInvalidPlan, "needs
// N workspace bytes"); without a twin a plan is skipped with that message rather than failed.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "core/runtime.h"
#include "tools/checkpoint.h"
#include "../test_reference_util.h"

namespace edgetune {
namespace {

using reference_test::Buffer;
using reference_test::Json;
using reference_test::ReferenceData;

std::vector<uint8_t> read_data(const std::string& name) {
  std::ifstream f(std::string(EDGETUNE_TEST_DATA) + "/" + name, std::ios::binary);
  std::vector<uint8_t> bytes{std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
  if (bytes.empty()) ADD_FAILURE() << "missing test data " << name;
  return bytes;
}

// The plan `stem` on `backend` with its test inputs set; null and *skip = why when cuda cannot run
// here or refuses the plan's (cpu-sized) workspace.
// <stem>.cuda.etp where it exists (the cuda-target twin), else <stem>.etp.
std::string plan_file(const std::string& stem) {
  std::ifstream twin(std::string(EDGETUNE_TEST_DATA) + "/" + stem + ".cuda.etp");
  return stem + (twin ? ".cuda.etp" : ".etp");
}

std::unique_ptr<Runtime> load(const std::string& stem, const std::string& backend, std::string* skip) {
  auto plan = read_data(plan_file(stem));
  RuntimeOptions opt;
  opt.backend = backend;
  opt.num_threads = 1;
  auto r = Runtime::load(plan.data(), plan.size(), opt);
  if (!r.ok()) {
    const Status& st = r.status();
    if (backend == "cuda" && st.code() == StatusCode::kUnimplemented) {
      *skip = "no usable GPU: " + st.message();
      return nullptr;
    }
    if (backend == "cuda" && st.code() == StatusCode::kInvalidPlan && st.message().find("workspace") != std::string::npos) {
      *skip = plan_file(stem) + " was compiled for the cpu target and the cuda loader refuses its workspace: " +
              st.message();
      return nullptr;
    }
    ADD_FAILURE() << stem << " on " << backend << ": " << st.to_string();
    return nullptr;
  }
  auto rt = std::move(r).value();
  auto x = read_data(stem + ".x.bin");
  auto y = read_data(stem + ".y.bin");
  EXPECT_TRUE(rt->set_input(0, x.data(), x.size()).ok());
  EXPECT_TRUE(rt->set_input(1, y.data(), y.size()).ok());
  return rt;
}

#define LOAD_OR_SKIP(var, stem, backend)             \
  std::string var##_skip;                            \
  auto var = load(stem, backend, &var##_skip);       \
  if (!var) {                                        \
    if (!var##_skip.empty()) GTEST_SKIP() << var##_skip; \
    return;                                          \
  }

std::vector<uint8_t> bytes_of(const Runtime& rt, const Binding& b) {
  std::vector<uint8_t> out(b.view.nbytes());
  Status st = rt.read(b, out.data(), out.size());
  EXPECT_TRUE(st.ok()) << st.to_string();
  return out;
}

std::vector<float> floats_of(const Runtime& rt, const Binding& b) {
  std::vector<float> out(static_cast<size_t>(b.view.numel()));
  if (b.view.dtype != DType::f32) return out;
  Status st = rt.read(b, out.data(), b.view.nbytes());
  EXPECT_TRUE(st.ok()) << st.to_string();
  return out;
}

const Binding* state(const Runtime& rt, const std::string& name) {
  for (const Binding& b : rt.optimizer_state())
    if (b.name == name) return &b;
  return nullptr;
}

void set_lr(Runtime& rt, float lr) {
  const Binding* b = state(rt, "optim.lr");
  ASSERT_NE(b, nullptr);
  ASSERT_TRUE(rt.write(*b, &lr, sizeof lr).ok());
}

const char* const kPlans[] = {"mlp_sgd", "small_cnn_adamw"};

// ---- against the float64 reference, with the CPU tests' tolerances ----------------------------------
TEST(CudaRuntime, MatchesFloat64Reference) {
  std::unique_ptr<ReferenceData> d;
  try {
    d.reset(new ReferenceData(EDGETUNE_TEST_DATA));
  } catch (const std::exception& e) {
    FAIL() << "reference data unusable: " << e.what();
  }
  for (const Json& p : d->manifest().at("plans").array()) {
    std::string stem = p.at("plan").string();  // "mlp_sgd.etp": the reference applies to its twin too
    stem = plan_file(stem.substr(0, stem.size() - 4));
    SCOPED_TRACE(stem);
    auto bytes = read_data(stem);
    RuntimeOptions opt;
    opt.backend = "cuda";
    auto r = Runtime::load(bytes.data(), bytes.size(), opt);
    if (!r.ok() && r.status().code() == StatusCode::kUnimplemented) GTEST_SKIP() << r.status().message();
    if (!r.ok() && r.status().message().find("workspace") != std::string::npos) {
      std::printf("[ SKIPPED  ] %s: the cuda loader refuses its cpu-sized workspace: %s\n", stem.c_str(),
                  r.status().message().c_str());
      continue;
    }
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    auto rt = std::move(r).value();
    const Json& inputs = p.at("inputs");
    ASSERT_EQ(inputs.size(), rt->inputs().size());
    for (size_t i = 0; i < inputs.size(); ++i) {
      Buffer x = d->tensor(inputs.at(i).string());
      ASSERT_TRUE(rt->set_input(static_cast<int>(i), x.data(), x.nbytes()).ok());
    }
    auto close = [&](const std::string& what, const Binding& b, const Buffer& ref, double atol) {
      std::vector<float> got = floats_of(*rt, b);
      ASSERT_EQ(static_cast<int64_t>(got.size()), ref.numel()) << what;
      int bad = 0;
      for (int64_t i = 0; i < ref.numel(); ++i)
        if (!(std::fabs(got[static_cast<size_t>(i)] - ref.at(i)) <= atol) && bad++ < 3)
          ADD_FAILURE() << what << "[" << i << "]: cuda " << got[static_cast<size_t>(i)] << ", reference " << ref.at(i)
                        << ", atol " << atol;
      EXPECT_EQ(bad, 0) << what;
    };
    ASSERT_TRUE(rt->forward().ok());
    close("forward output", *rt->output("output"), d->tensor(p.at("output").at("ref").string()),
          p.at("output").at("atol").number());
    Buffer losses = d->tensor(p.at("losses").at("ref").string());
    for (int64_t s = 0; s < p.at("steps").integer(); ++s) {
      auto loss = rt->step();
      ASSERT_TRUE(loss.ok()) << loss.status().to_string();
      EXPECT_NEAR(loss.value(), losses.at(s), p.at("losses").at("atol").at(static_cast<size_t>(s)).number())
          << "loss of step " << s + 1;
    }
    for (const Json& w : p.at("weights").array()) {
      const Binding* b = rt->weight(w.at("name").string());
      ASSERT_NE(b, nullptr);
      close(w.at("name").string(), *b, d->tensor(w.at("ref").string()), w.at("atol").number());
    }
  }
}

// ---- against the cpu backend over five steps ----------------------------------------------------------
TEST(CudaRuntime, MatchesCpuOverFiveSteps) {
  for (const char* stem : kPlans) {
    SCOPED_TRACE(stem);
    LOAD_OR_SKIP(gpu, stem, "cuda");
    std::string unused;
    auto cpu = load(stem, "cpu", &unused);
    ASSERT_TRUE(cpu);
    EXPECT_EQ(gpu->memory().total(), cpu->memory().total());  // the same plan, the same bytes
    for (int s = 0; s < 5; ++s) {
      auto a = gpu->step();
      auto b = cpu->step();
      ASSERT_TRUE(a.ok()) << a.status().to_string();
      ASSERT_TRUE(b.ok()) << b.status().to_string();
      // summation order differs (cuBLASLt, block trees): float32 rounding, well below any real error
      EXPECT_NEAR(a.value(), b.value(), 1e-5 + 1e-4 * std::fabs(b.value())) << "loss of step " << s + 1;
    }
    EXPECT_EQ(gpu->steps_done(), 5);
    auto compare = [&](const std::vector<Binding>& g, const std::vector<Binding>& c) {
      ASSERT_EQ(g.size(), c.size());
      for (size_t i = 0; i < g.size(); ++i) {
        ASSERT_EQ(g[i].name, c[i].name);
        std::vector<float> x = floats_of(*gpu, g[i]), y = floats_of(*cpu, c[i]);
        float scale = 0;
        for (float v : y) scale = std::max(scale, std::fabs(v));
        for (size_t j = 0; j < x.size(); ++j)
          ASSERT_NEAR(x[j], y[j], 1e-5 + 1e-4 * scale) << g[i].name << "[" << j << "] after 5 steps";
      }
    };
    compare(gpu->weights(), cpu->weights());
    compare(gpu->optimizer_state(), cpu->optimizer_state());
  }
}

// ---- graphs vs uncaptured -------------------------------------------------------------------------
TEST(CudaRuntime, GraphReplayIsBitIdenticalToUncaptured) {
  for (const char* stem : kPlans) {
    SCOPED_TRACE(stem);
    LOAD_OR_SKIP(graphs, stem, "cuda");
    std::string unused;
    auto plain = load(stem, "cuda", &unused);
    ASSERT_TRUE(plain);
    plain->set_profiling(true);  // uncaptured, every node timed with events
    for (int s = 0; s < 5; ++s) {  // step 1 runs uncaptured, 2..5 replay the graphs
      auto a = graphs->step();
      auto b = plain->step();
      ASSERT_TRUE(a.ok() && b.ok()) << a.status().to_string() << " / " << b.status().to_string();
      EXPECT_EQ(std::memcmp(&a.value(), &b.value(), sizeof(float)), 0) << "loss of step " << s + 1;
    }
    for (size_t i = 0; i < graphs->weights().size(); ++i)
      EXPECT_EQ(bytes_of(*graphs, graphs->weights()[i]), bytes_of(*plain, plain->weights()[i]))
          << graphs->weights()[i].name;
    for (size_t i = 0; i < graphs->optimizer_state().size(); ++i)
      EXPECT_EQ(bytes_of(*graphs, graphs->optimizer_state()[i]), bytes_of(*plain, plain->optimizer_state()[i]))
          << graphs->optimizer_state()[i].name;
    double total = 0;
    for (const auto& p : plain->profile()) {
      EXPECT_EQ(p.calls, 5) << *p.op;
      total += p.seconds;
    }
    EXPECT_GT(total, 0.0);
    for (const auto& p : graphs->profile()) EXPECT_EQ(p.calls, 0) << *p.op;
  }
}

// ---- numeric refusals ---------------------------------------------------------------------------------
TEST(CudaRuntime, NanLossStopsBeforeUpdates) {
  LOAD_OR_SKIP(gpu, "mlp_sgd", "cuda");
  std::string unused;
  auto cpu = load("mlp_sgd", "cpu", &unused);
  for (Runtime* rt : {gpu.get(), cpu.get()})
    for (int s = 0; s < 2; ++s) ASSERT_TRUE(rt->step().ok());  // cuda: graphs captured by now
  std::vector<std::vector<uint8_t>> before;
  for (const Binding& b : gpu->weights()) before.push_back(bytes_of(*gpu, b));
  for (const Binding& b : gpu->optimizer_state()) before.push_back(bytes_of(*gpu, b));
  std::vector<float> nan_x(8 * 6, std::nanf(""));
  Status a = gpu->set_input(0, nan_x.data(), nan_x.size() * sizeof(float)).ok() ? gpu->step().status() : Status();
  Status b = cpu->set_input(0, nan_x.data(), nan_x.size() * sizeof(float)).ok() ? cpu->step().status() : Status();
  EXPECT_EQ(a.code(), StatusCode::kNumericError) << a.to_string();
  EXPECT_EQ(a.message(), b.message());
  EXPECT_NE(a.message().find("loss is NaN at step 3"), std::string::npos) << a.message();
  EXPECT_EQ(gpu->steps_done(), 2);
  size_t k = 0;
  for (const Binding& w : gpu->weights()) EXPECT_EQ(bytes_of(*gpu, w), before[k++]) << w.name;
  for (const Binding& s : gpu->optimizer_state()) EXPECT_EQ(bytes_of(*gpu, s), before[k++]) << s.name;
  // finite data again: training goes on
  auto x = read_data("mlp_sgd.x.bin");
  ASSERT_TRUE(gpu->set_input(0, x.data(), x.size()).ok());
  auto ok = gpu->step();
  ASSERT_TRUE(ok.ok()) << ok.status().to_string();
  EXPECT_EQ(gpu->steps_done(), 3);
}

TEST(CudaRuntime, NonFiniteUpdateIsRefused) {
  for (const char* stem : kPlans) {
    for (int warm : {0, 2}) {  // refused in the first (uncaptured) step, and in a graph replay
      SCOPED_TRACE(std::string(stem) + ", after " + std::to_string(warm) + " steps");
      LOAD_OR_SKIP(gpu, stem, "cuda");
      std::string unused;
      auto cpu = load(stem, "cpu", &unused);
      for (Runtime* rt : {gpu.get(), cpu.get()})
        for (int s = 0; s < warm; ++s) ASSERT_TRUE(rt->step().ok());
      std::vector<std::vector<uint8_t>> before;
      for (const Binding& b : gpu->weights()) before.push_back(bytes_of(*gpu, b));
      for (const Binding& b : gpu->optimizer_state()) before.push_back(bytes_of(*gpu, b));
      const float inf = std::numeric_limits<float>::infinity();
      set_lr(*gpu, inf);
      set_lr(*cpu, inf);
      auto a = gpu->step();
      auto b = cpu->step();
      ASSERT_FALSE(a.ok());
      ASSERT_FALSE(b.ok());
      EXPECT_EQ(a.status().code(), StatusCode::kNumericError);
      EXPECT_EQ(a.status().message(), b.status().message());  // same node, same count of applied updates
      EXPECT_NE(a.status().message().find("refused"), std::string::npos) << a.status().message();
      EXPECT_EQ(gpu->steps_done(), warm);
      size_t k = 0;
      for (const Binding& w : gpu->weights()) EXPECT_EQ(bytes_of(*gpu, w), before[k++]) << w.name;
      for (const Binding& s : gpu->optimizer_state()) {
        if (s.name == "optim.lr") {
          ++k;
          continue;
        }
        EXPECT_EQ(bytes_of(*gpu, s), before[k++]) << s.name << " (the step counter and moments: not copied)";
      }
      // the guard is reset by the next step
      set_lr(*gpu, 0.01f);
      set_lr(*cpu, 0.01f);
      auto c = gpu->step();
      auto e = cpu->step();
      ASSERT_TRUE(c.ok()) << c.status().to_string();
      ASSERT_TRUE(e.ok());
      EXPECT_NEAR(c.value(), e.value(), 1e-5 + 1e-4 * std::fabs(e.value()));
      EXPECT_EQ(gpu->steps_done(), warm + 1);
    }
  }
}

// ---- checkpoints ---------------------------------------------------------------------------------------
TEST(CudaRuntime, CheckpointRoundTrips) {
  for (const char* stem : kPlans) {
    SCOPED_TRACE(stem);
    LOAD_OR_SKIP(gpu, stem, "cuda");
    for (int s = 0; s < 3; ++s) ASSERT_TRUE(gpu->step().ok());
    char path[] = "/tmp/edgetune_cuda_ckpt_XXXXXX";
    const int fd = mkstemp(path);
    ASSERT_GE(fd, 0);
    close(fd);
    Status w = tools::write_checkpoint(path, *gpu, {{"user.test", "1"}});
    ASSERT_TRUE(w.ok()) << w.to_string();
    auto ckpt = tools::read_checkpoint(path);
    ASSERT_TRUE(ckpt.ok()) << ckpt.status().to_string();
    for (const std::string backend : {"cuda", "cpu"}) {
      SCOPED_TRACE(backend);
      std::string unused;
      auto fresh = load(stem, backend, &unused);
      ASSERT_TRUE(fresh);
      Status r = tools::restore_checkpoint(*fresh, ckpt.value());
      ASSERT_TRUE(r.ok()) << r.to_string();
      EXPECT_EQ(fresh->steps_done(), 3);
      for (size_t i = 0; i < gpu->weights().size(); ++i)
        EXPECT_EQ(bytes_of(*fresh, fresh->weights()[i]), bytes_of(*gpu, gpu->weights()[i])) << gpu->weights()[i].name;
      for (size_t i = 0; i < gpu->optimizer_state().size(); ++i)
        EXPECT_EQ(bytes_of(*fresh, fresh->optimizer_state()[i]), bytes_of(*gpu, gpu->optimizer_state()[i]))
            << gpu->optimizer_state()[i].name;
      if (backend == "cuda") {  // resumed on the GPU: the next step is the one the original takes
        auto a = fresh->step();
        auto b = gpu->step();
        ASSERT_TRUE(a.ok() && b.ok());
        EXPECT_EQ(std::memcmp(&a.value(), &b.value(), sizeof(float)), 0);
      }
    }
    std::remove(path);
  }
}

}  // namespace
}  // namespace edgetune
