// GoogleTest tests of tools/safetensors.h: the exact header bytes (length prefix, JSON, space
// padding to 8), tensor data after it in offset order, scalar shapes, name escaping and the
// refusals (duplicate names, size mismatch). The file written is parsed back here by hand, the
// way safetensors.numpy.load_file reads it. Suite: ToolsSafetensors.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "test_tools_util.h"
#include "tools/safetensors.h"

namespace edgetune {
namespace tools {
namespace {

using tools_test::ScratchDir;

uint64_t le64(const std::string& s) {
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<uint8_t>(s[static_cast<size_t>(i)])) << (8 * i);
  return n;
}

TEST(ToolsSafetensors, HeaderIsExactAndPadded) {
  std::vector<float> w = {1, 2, 3, 4, 5, 6};
  int64_t step = 42;
  std::vector<SafetensorsEntry> entries = {
      {"fc.weight", DType::f32, {2, 3}, w.data(), w.size() * 4},
      {"bn.num_batches_tracked", DType::i64, {}, &step, 8},
  };
  auto h = safetensors_header(entries, {{"producer", "edgetune-train"}, {"steps", "3"}});
  ASSERT_TRUE(h.ok()) << h.status().to_string();
  const std::string& s = h.value();
  uint64_t n = le64(s);
  EXPECT_EQ(n + 8, s.size());
  EXPECT_EQ(s.size() % 8, 0u);
  std::string json = s.substr(8);
  std::string expect =
      "{\"__metadata__\":{\"producer\":\"edgetune-train\",\"steps\":\"3\"},"
      "\"fc.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
      "\"bn.num_batches_tracked\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[24,32]}}";
  ASSERT_GE(json.size(), expect.size());
  EXPECT_EQ(json.substr(0, expect.size()), expect);
  EXPECT_EQ(json.find_first_not_of(' ', expect.size()), std::string::npos);  // only spaces after
}

TEST(ToolsSafetensors, WritesDataInOffsetOrder) {
  ScratchDir dir;
  std::vector<float> a = {1.5f, -2.5f};
  std::vector<uint8_t> b = {1, 0, 1};
  std::vector<SafetensorsEntry> entries = {
      {"a", DType::f32, {2}, a.data(), 8},
      {"mask", DType::boolean, {3}, b.data(), 3},
  };
  ASSERT_TRUE(write_safetensors(dir / "w.safetensors", entries, {}).ok());
  std::string file = tools_test::read_file(dir / "w.safetensors");
  uint64_t n = le64(file);
  ASSERT_EQ(file.size(), 8 + n + 11);
  std::string json = file.substr(8, n);
  EXPECT_EQ(json.find("__metadata__"), std::string::npos);  // no metadata given, none written
  EXPECT_NE(json.find("\"mask\":{\"dtype\":\"BOOL\",\"shape\":[3],\"data_offsets\":[8,11]}"), std::string::npos);
  float got[2];
  std::memcpy(got, file.data() + 8 + n, 8);
  EXPECT_EQ(got[0], 1.5f);
  EXPECT_EQ(got[1], -2.5f);
  EXPECT_EQ(file.substr(8 + n + 8), std::string("\x01\x00\x01", 3));
  EXPECT_EQ(dir.entries().size(), 1u);  // no temp file left behind
}

TEST(ToolsSafetensors, DtypeNames) {
  EXPECT_STREQ(safetensors_dtype(DType::f32), "F32");
  EXPECT_STREQ(safetensors_dtype(DType::f64), "F64");
  EXPECT_STREQ(safetensors_dtype(DType::f16), "F16");
  EXPECT_STREQ(safetensors_dtype(DType::bf16), "BF16");
  EXPECT_STREQ(safetensors_dtype(DType::i64), "I64");
  EXPECT_STREQ(safetensors_dtype(DType::i32), "I32");
  EXPECT_STREQ(safetensors_dtype(DType::i8), "I8");
  EXPECT_STREQ(safetensors_dtype(DType::u8), "U8");
  EXPECT_STREQ(safetensors_dtype(DType::boolean), "BOOL");
}

TEST(ToolsSafetensors, EscapesJson) {
  EXPECT_EQ(json_escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
  EXPECT_EQ(json_escape(std::string("\x01", 1)), "\\u0001");
  EXPECT_EQ(json_escape("layers.0.weight"), "layers.0.weight");
}

TEST(ToolsSafetensors, RejectsDuplicateNamesAndBadSizes) {
  float x = 0;
  EXPECT_FALSE(safetensors_header({{"a", DType::f32, {1}, &x, 4}, {"a", DType::f32, {1}, &x, 4}}, {}).ok());
  EXPECT_FALSE(safetensors_header({{"a", DType::f32, {2}, &x, 4}}, {}).ok());
  EXPECT_FALSE(safetensors_header({{"__metadata__", DType::f32, {1}, &x, 4}}, {}).ok());
}

TEST(ToolsSafetensors, FailedWriteLeavesNothing) {
  ScratchDir dir;
  float x = 0;
  Status s = write_safetensors(dir / "missing/w.safetensors", {{"a", DType::f32, {1}, &x, 4}}, {});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("does not exist"), std::string::npos) << s.message();
  EXPECT_TRUE(dir.entries().empty());
}

}  // namespace
}  // namespace tools
}  // namespace edgetune

// ---- the reader ---------------------------------------------------------------------------------
namespace edgetune {
namespace tools {
namespace {

std::vector<uint8_t> file_of(const std::string& json, const std::string& data) {
  std::string h = json;
  while (h.size() % 8) h += ' ';
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>((h.size() >> (8 * i)) & 0xFF);
  out += h + data;
  return std::vector<uint8_t>(out.begin(), out.end());
}

std::string parse_error(const std::string& json, const std::string& data) {
  auto r = parse_safetensors(file_of(json, data), "t.safetensors");
  return r.ok() ? "" : r.status().message();
}

TEST(ToolsSafetensorsReader, ReadsWhatTheWriterWrites) {
  ScratchDir dir;
  const float w[6] = {1, 2, 3, 4, 5, 6};
  const int64_t step = 7;
  std::vector<SafetensorsEntry> entries = {{"w\"eird\\name\n", DType::f32, {2, 3}, w, sizeof w},
                                           {"step", DType::i64, {}, &step, sizeof step}};
  ASSERT_TRUE(write_safetensors(dir / "a.safetensors", entries, {{"k", "v\u00e9"}, {"steps", "7"}}).ok());
  auto r = read_safetensors(dir / "a.safetensors");
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  const SafetensorsFile& f = r.value();
  ASSERT_EQ(f.tensors.size(), 2u);
  const SafetensorsTensor* t = f.find("w\"eird\\name\n");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(std::memcmp(t->data, w, sizeof w), 0);
  EXPECT_EQ(f.find("step")->shape.size(), 0u);
  ASSERT_NE(f.meta("k"), nullptr);
  EXPECT_EQ(*f.meta("k"), "v\u00e9");
}

TEST(ToolsSafetensorsReader, AcceptsEscapesAndEmptyFiles) {
  EXPECT_EQ(parse_error("{}", ""), "");
  auto r = parse_safetensors(file_of(R"({"a\u00e9\ud83d\ude00\/":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", "xy"), "t");
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r.value().tensors[0].name, "a\u00e9\U0001F600/");
}

TEST(ToolsSafetensorsReader, RefusesMalformedFilesNamingTheProblem) {
  const std::string one = R"("t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::string eight(8, 'x');
  EXPECT_NE(parse_error("{" + one + "}", eight.substr(0, 4)).find("truncated"), std::string::npos);
  EXPECT_NE(parse_error("{" + one + "}", eight + "x").find("after the last tensor"), std::string::npos);
  EXPECT_NE(parse_error("{" + one + "," + one + "}", eight).find("appears twice"), std::string::npos);
  EXPECT_NE(parse_error(R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", eight).find("need"), std::string::npos);
  EXPECT_NE(parse_error(R"({"t":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}})", eight).find("unknown dtype"),
            std::string::npos);
  EXPECT_NE(parse_error(R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", eight).find("non-negative"),
            std::string::npos);
  EXPECT_NE(parse_error(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                        R"("b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}})",
                        eight.substr(0, 6))
                .find("inside the tensor before it"),
            std::string::npos);
  EXPECT_NE(parse_error(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", eight).find("hole"),
            std::string::npos);
  EXPECT_NE(parse_error(R"({"__metadata__":{"a":{"b":"c"}}})", "").find("not a string"), std::string::npos);
  EXPECT_NE(parse_error(R"({"__metadata__":{"a":"1","a":"2"}})", "").find("appears twice"), std::string::npos);
  EXPECT_NE(parse_error(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}})", "1234").find("unexpected"),
            std::string::npos);
  EXPECT_NE(parse_error(R"({"\ud800x":{}})", "").find("surrogate"), std::string::npos);
  EXPECT_NE(parse_error(std::string(100000, '['), "").find("expected '{'"), std::string::npos);  // no recursion
  EXPECT_NE(parse_error(R"({"t":{"dtype":"F32","shape":[1e3],"data_offsets":[0,4]}})", "1234").find("integer"),
            std::string::npos);
  // a header longer than the file, and one past the format's limit
  std::vector<uint8_t> lying = file_of("{}", "");
  lying[0] = 0xFF;
  EXPECT_FALSE(parse_safetensors(lying, "t").ok());
  lying[7] = 0x7F;
  EXPECT_NE(parse_safetensors(lying, "t").status().message().find("100 MiB"), std::string::npos);
}

TEST(ToolsSafetensorsReader, ReadsOnlyRegularFiles) {
  ScratchDir dir;
  EXPECT_EQ(read_safetensors(dir / "missing").status().code(), StatusCode::kNotFound);
  EXPECT_NE(read_safetensors(dir.path()).status().message().find("directory"), std::string::npos);
  EXPECT_NE(read_safetensors("/dev/zero").status().message().find("not a regular file"), std::string::npos);
}

TEST(ToolsSafetensors, RefusesRepeatedMetadataKeys) {
  EXPECT_FALSE(safetensors_header({}, {{"a", "1"}, {"a", "2"}}).ok());
}

}  // namespace
}  // namespace tools
}  // namespace edgetune
