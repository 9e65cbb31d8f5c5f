// GoogleTest tests of tools/checkpoint.h on the committed test plans: a checkpoint restores a
// runtime to the exact state (continuing gives the same losses and weights as never stopping),
// and every refusal (another plan, a damaged file, a missing or misshapen tensor, a non-finite
// value) leaves the runtime untouched. Suite: ToolsCheckpoint.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "core/runtime.h"
#include "test_tools_util.h"
#include "tools/checkpoint.h"

namespace edgetune {
namespace tools {
namespace {

using tools_test::ScratchDir;

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::vector<uint8_t> bytes{std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
  if (bytes.empty()) ADD_FAILURE() << "missing " << path;
  return bytes;
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

std::unique_ptr<Runtime> load(const std::string& stem) {
  const std::string base = std::string(EDGETUNE_TEST_DATA) + "/" + stem;
  auto plan = read_bytes(base + ".etp");
  auto r = Runtime::load(plan.data(), plan.size(), RuntimeOptions{"cpu", 1});
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  auto rt = std::move(r).value();
  auto x = read_bytes(base + ".x.bin");
  auto y = read_bytes(base + ".y.bin");
  EXPECT_TRUE(rt->set_input(0, x.data(), x.size()).ok());
  EXPECT_TRUE(rt->set_input(1, y.data(), y.size()).ok());
  return rt;
}

std::vector<std::string> snapshot(const Runtime& rt) {
  std::vector<std::string> out;
  for (const auto* list : {&rt.weights(), &rt.optimizer_state()})
    for (const Binding& b : *list) out.emplace_back(static_cast<const char*>(b.view.data), b.view.nbytes());
  return out;
}

TEST(ToolsCheckpoint, ResumedRuntimeContinuesBitForBit) {
  ScratchDir dir;
  for (const char* stem : {"mlp_sgd", "small_cnn_adamw"}) {
    auto a = load(stem);
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(a->step().ok());
    ASSERT_TRUE(write_checkpoint(dir / "c.ckpt", *a, {{"run.note", "x"}}).ok());
    std::vector<float> losses_a;
    for (int i = 0; i < 4; ++i) losses_a.push_back(a->step().value());

    auto b = load(stem);
    auto ckpt = read_checkpoint(dir / "c.ckpt");
    ASSERT_TRUE(ckpt.ok()) << ckpt.status().to_string();
    EXPECT_EQ(*ckpt.value().meta("run.note"), "x");
    ASSERT_TRUE(restore_checkpoint(*b, ckpt.value()).ok());
    EXPECT_EQ(b->steps_done(), 3);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(b->step().value(), losses_a[static_cast<size_t>(i)]) << stem;
    EXPECT_EQ(snapshot(*a), snapshot(*b)) << stem;
    // the reserved size is an upper bound of the file written
    auto size = checkpoint_size(*a, {{"run.note", "x"}});
    ASSERT_TRUE(size.ok());
    EXPECT_GE(size.value(), read_bytes(dir / "c.ckpt").size());
  }
}

TEST(ToolsCheckpoint, RefusalsChangeNothing) {
  ScratchDir dir;
  auto a = load("mlp_sgd");
  ASSERT_TRUE(a->step().ok());
  ASSERT_TRUE(write_checkpoint(dir / "c.ckpt", *a, {}).ok());
  const auto good = read_bytes(dir / "c.ckpt");

  auto fresh = load("mlp_sgd");
  const auto before = snapshot(*fresh);
  // another plan
  auto other = load("small_cnn_adamw");
  ASSERT_TRUE(write_checkpoint(dir / "other.ckpt", *other, {}).ok());
  auto o = read_checkpoint(dir / "other.ckpt");
  ASSERT_TRUE(o.ok());
  EXPECT_NE(restore_checkpoint(*fresh, o.value()).message().find("another plan"), std::string::npos);
  // a flipped data byte
  auto flipped = good;
  flipped[flipped.size() - 3] ^= 1;
  write_bytes(dir / "flip.ckpt", flipped);
  EXPECT_NE(read_checkpoint(dir / "flip.ckpt").status().message().find("damaged"), std::string::npos);
  // a plain weights file
  const float w = 1;
  ASSERT_TRUE(write_safetensors(dir / "w.safetensors", {{"w", DType::f32, {1}, &w, 4}}, {}).ok());
  EXPECT_NE(read_checkpoint(dir / "w.safetensors").status().message().find("not an edgetune checkpoint"),
            std::string::npos);
  // a tensor missing, one with a NaN: checked against the runtime before anything is written
  auto f = read_checkpoint(dir / "c.ckpt");
  ASSERT_TRUE(f.ok());
  SafetensorsFile missing = f.value();
  missing.tensors.pop_back();
  EXPECT_NE(restore_checkpoint(*fresh, missing).message().find("has no"), std::string::npos);
  SafetensorsFile nan = f.value();
  for (auto& t : nan.tensors) {
    if (t.name.rfind("weights/", 0) == 0 && t.dtype == DType::f32 && t.nbytes >= 4) {
      const float bad = std::nanf("");
      std::memcpy(const_cast<uint8_t*>(t.data), &bad, 4);
      break;
    }
  }
  EXPECT_NE(restore_checkpoint(*fresh, nan).message().find("inf or NaN"), std::string::npos);
  EXPECT_EQ(snapshot(*fresh), before);
  EXPECT_EQ(fresh->steps_done(), 0);
}

}  // namespace
}  // namespace tools
}  // namespace edgetune
