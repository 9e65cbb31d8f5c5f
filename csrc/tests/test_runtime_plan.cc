// The runtime on real plan files (csrc/tests/data, written by csrc/tests/data/make_plans.py): loading,
// stepping, state copies, and the verifier's answers to damaged, foreign and future plans.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "core/runtime.h"

namespace edgetune {
namespace {

std::vector<uint8_t> read_file(const std::string& name) {
  std::ifstream f(std::string(EDGETUNE_TEST_DATA) + "/" + name, std::ios::binary);
  std::vector<uint8_t> bytes{std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
  // a missing fixture must fail loudly, not make every "rejects damaged plan" test vacuous
  if (bytes.empty()) ADD_FAILURE() << "missing test data " << name << " (run csrc/tests/data/make_plans.py)";
  return bytes;
}

std::unique_ptr<Runtime> load_with_data(const std::string& stem, int threads = 1) {
  RuntimeOptions opt;
  opt.num_threads = threads;
  auto plan = read_file(stem + ".etp");
  auto r = Runtime::load(plan.data(), plan.size(), opt);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  if (!r.ok()) return nullptr;
  auto rt = std::move(r).value();
  auto x = read_file(stem + ".x.bin");
  auto y = read_file(stem + ".y.bin");
  EXPECT_TRUE(rt->set_input(0, x.data(), x.size()).ok());
  EXPECT_TRUE(rt->set_input(1, y.data(), y.size()).ok());
  return rt;
}

Status load_status(std::vector<uint8_t> bytes) {
  RuntimeOptions opt;
  return Runtime::load(bytes.data(), bytes.size(), opt).status();
}

TEST(RuntimePlan, LoadsAndTrains) {
  for (const char* stem : {"mlp_sgd", "small_cnn_adamw"}) {
    auto rt = load_with_data(stem);
    ASSERT_TRUE(rt) << stem;
    EXPECT_EQ(rt->inputs().size(), 2u);
    EXPECT_EQ(rt->num_model_inputs(), 1);
    EXPECT_GT(rt->memory().arena_bytes, 0u);
    float first = 0, last = 0;
    for (int i = 0; i < 30; ++i) {
      auto loss = rt->step();
      ASSERT_TRUE(loss.ok()) << loss.status().to_string();
      ASSERT_TRUE(std::isfinite(loss.value()));
      if (i == 0) first = loss.value();
      last = loss.value();
    }
    EXPECT_LT(last, first) << stem << ": 30 steps on one batch must fit it";
    EXPECT_EQ(rt->steps_done(), 30);
  }
}

TEST(RuntimePlan, ThreadsDoNotChangeResults) {
  auto one = load_with_data("small_cnn_adamw", 1);
  auto two = load_with_data("small_cnn_adamw", 2);
  ASSERT_TRUE(one && two);
  for (int i = 0; i < 3; ++i) {
    float a = one->step().value(), b = two->step().value();
    EXPECT_NEAR(a, b, 1e-5f * std::fabs(a));
  }
}

TEST(RuntimePlan, WeightsAreNamedLikeTheModel) {
  auto rt = load_with_data("mlp_sgd");
  ASSERT_TRUE(rt);
  ASSERT_NE(rt->weight("layers.0.weight"), nullptr);
  EXPECT_EQ(rt->weight("layers.0.weight")->view.shape_string(), "f32[16,6]");
  EXPECT_TRUE(rt->is_trainable("layers.0.weight"));
  EXPECT_EQ(rt->weight("no.such.weight"), nullptr);
}

TEST(RuntimePlan, RejectsTruncatedPlans) {
  auto plan = read_file("mlp_sgd.etp");
  ASSERT_GT(plan.size(), 100u);
  for (size_t keep : {size_t{0}, size_t{7}, size_t{100}, plan.size() / 2, plan.size() - 1}) {
    std::vector<uint8_t> cut(plan.begin(), plan.begin() + keep);
    Status st = load_status(cut);
    EXPECT_EQ(st.code(), StatusCode::kInvalidPlan) << keep;
    EXPECT_NE(st.message().find("truncated"), std::string::npos) << st.message();
  }
}

TEST(RuntimePlan, RejectsEveryFlippedBit) {
  auto plan = read_file("mlp_sgd.etp");
  ASSERT_FALSE(plan.empty());
  // every byte in the first KiB and a stride through the rest (weights included)
  for (size_t pos = 0; pos < plan.size(); pos += pos < 1024 ? 1 : 97) {
    auto bad = plan;
    bad[pos] ^= 0x04;
    Status st = load_status(bad);
    EXPECT_EQ(st.code(), StatusCode::kInvalidPlan) << "flip at byte " << pos << " was accepted";
  }
}

TEST(RuntimePlan, RejectsForeignFilesAndFutureVersions) {
  auto plan = read_file("mlp_sgd.etp");
  ASSERT_GT(plan.size(), 16u);
  auto foreign = plan;
  // at(), not memcpy/std::copy: GCC 12 cannot see the size checked above and warns
  // (-Warray-bounds on x86-64, -Wstringop-overflow on aarch64)
  for (size_t i = 0; i < 4; ++i) foreign.at(4 + i) = static_cast<uint8_t>("ONNX"[i]);
  Status st = load_status(foreign);
  EXPECT_NE(st.message().find("not an edgetune plan"), std::string::npos) << st.message();

  st = load_status(read_file("mlp_sgd_version99.etp"));
  EXPECT_EQ(st.code(), StatusCode::kInvalidPlan);
  EXPECT_NE(st.message().find("plan format version 99; this runtime reads version 1"), std::string::npos)
      << st.message();
}

TEST(RuntimePlan, RejectsUnknownBackendAndWrongInputSize) {
  auto plan = read_file("mlp_sgd.etp");
  RuntimeOptions opt;
  opt.backend = "tpu";
  EXPECT_EQ(Runtime::load(plan.data(), plan.size(), opt).status().code(), StatusCode::kUnimplemented);
  auto rt = load_with_data("mlp_sgd");
  ASSERT_TRUE(rt);
  float small[3] = {0, 0, 0};
  Status st = rt->set_input(0, small, sizeof small);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("f32[8,6]"), std::string::npos) << st.message();
}

TEST(RuntimePlan, NanLossStopsBeforeAnyUpdate) {
  auto rt = load_with_data("mlp_sgd");
  ASSERT_TRUE(rt);
  ASSERT_TRUE(rt->step().ok());
  const Binding* w = rt->weight("layers.0.weight");
  std::vector<float> before(w->view.as<float>(), w->view.as<float>() + w->view.numel());
  std::vector<float> x(8 * 6, std::nanf(""));
  ASSERT_TRUE(rt->set_input(0, x.data(), x.size() * sizeof(float)).ok());
  auto r = rt->step();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNumericError);
  EXPECT_NE(r.status().message().find("loss is NaN at step 2"), std::string::npos) << r.status().message();
  EXPECT_EQ(std::memcmp(before.data(), w->view.data, before.size() * sizeof(float)), 0);
  EXPECT_EQ(rt->steps_done(), 1);
}

TEST(RuntimePlan, LoadFileReadsOnlyRegularFiles) {
  RuntimeOptions opt;
  opt.num_threads = 1;
  auto ok = Runtime::load_file(std::string(EDGETUNE_TEST_DATA) + "/mlp_sgd.etp", opt);
  EXPECT_TRUE(ok.ok()) << ok.status().to_string();
  // /dev/zero was read until memory ran out
  auto zero = Runtime::load_file("/dev/zero", opt);
  ASSERT_FALSE(zero.ok());
  EXPECT_NE(zero.status().message().find("not a regular file"), std::string::npos) << zero.status().to_string();
  // a FIFO with no writer blocked open() forever
  char dir[] = "/tmp/edgetune-plan-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string fifo = std::string(dir) + "/plan.etp";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  auto r = Runtime::load_file(fifo, opt);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("a FIFO"), std::string::npos) << r.status().to_string();
  unlink(fifo.c_str());
  rmdir(dir);
  auto d = Runtime::load_file(EDGETUNE_TEST_DATA, opt);
  EXPECT_FALSE(d.ok());
}

TEST(RuntimePlan, ThreadCountAboveTheMaximumIsRefused) {
  RuntimeOptions opt;
  opt.num_threads = 10000;
  auto plan = read_file("mlp_sgd.etp");
  auto r = Runtime::load(plan.data(), plan.size(), opt);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("maximum of 4096"), std::string::npos) << r.status().to_string();
}

}  // namespace
}  // namespace edgetune
