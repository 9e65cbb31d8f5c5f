// GoogleTest tests of tools/embedded_plan.h: the trailer [plan][u64 LE size]["ETPLEMB1"] is
// found exactly when present, a damaged one is an error rather than a wild read, and the plan
// bytes come back intact from a file laid out like an emitted binary. Suite: ToolsEmbeddedPlan.
#include <gtest/gtest.h>

#include <string>

#include "test_tools_util.h"
#include "tools/embedded_plan.h"

namespace edgetune {
namespace tools {
namespace {

using tools_test::ScratchDir;

std::string trailer(uint64_t size) {
  std::string t;
  for (int i = 0; i < 8; ++i) t += static_cast<char>((size >> (8 * i)) & 0xFF);
  return t + "ETPLEMB1";
}

TEST(ToolsEmbeddedPlan, ParsesTrailer) {
  std::string t = trailer(100);
  uint64_t off = 0, size = 0;
  auto r = parse_trailer(reinterpret_cast<const uint8_t*>(t.data()), 1000, &off, &size, "exe");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r.value());
  EXPECT_EQ(size, 100u);
  EXPECT_EQ(off, 1000u - 16 - 100);
}

TEST(ToolsEmbeddedPlan, NoMagicMeansNoPlan) {
  std::string t = trailer(100);
  t[15] = '2';  // another format version: not ours
  uint64_t off = 0, size = 0;
  auto r = parse_trailer(reinterpret_cast<const uint8_t*>(t.data()), 1000, &off, &size, "exe");
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r.value());
}

TEST(ToolsEmbeddedPlan, DamagedSizeIsAnError) {
  uint64_t off = 0, size = 0;
  std::string t = trailer(5000);
  auto r = parse_trailer(reinterpret_cast<const uint8_t*>(t.data()), 1000, &off, &size, "./train");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidPlan);
  EXPECT_NE(r.status().message().find("./train"), std::string::npos);
  std::string zero = trailer(0);
  EXPECT_FALSE(parse_trailer(reinterpret_cast<const uint8_t*>(zero.data()), 1000, &off, &size, "x").ok());
}

TEST(ToolsEmbeddedPlan, ReadsPlanAppendedToAFile) {
  ScratchDir dir;
  std::string exe = "\x7f" "ELF pretend executable bytes";
  std::string plan("plan\0bytes\x01\x02", 12);
  tools_test::write_file(dir / "train", exe + plan + trailer(plan.size()));
  auto r = read_embedded_plan(dir / "train");
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_TRUE(r->found);
  EXPECT_EQ(std::string(r->bytes.begin(), r->bytes.end()), plan);
}

TEST(ToolsEmbeddedPlan, PlainFilesHaveNoPlan) {
  ScratchDir dir;
  tools_test::write_file(dir / "plain", std::string(4096, 'x'));
  tools_test::write_file(dir / "tiny", "abc");
  for (const char* name : {"plain", "tiny"}) {
    auto r = read_embedded_plan(dir / name);
    ASSERT_TRUE(r.ok()) << name;
    EXPECT_FALSE(r->found) << name;
  }
  EXPECT_FALSE(read_embedded_plan(dir / "missing").ok());
}

TEST(ToolsEmbeddedPlan, TestBinaryHasNoPlan) {
  std::string self = self_executable("edgetune_cpp_tests");
  ASSERT_FALSE(self.empty());
  auto r = read_embedded_plan(self);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_FALSE(r->found);
}

}  // namespace
}  // namespace tools
}  // namespace edgetune
