// GoogleTest tests of tools/npy.h: .npy headers of every supported version and dtype, the
// refusals (bad magic, truncation, Fortran order, big-endian, structured dtypes), reading from a
// file, dtype conversion and binding to a plan input. Fixtures are built byte by byte here, the
// way numpy.save writes them, instead of committing binary files. Suite: ToolsNpy.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "test_tools_util.h"
#include "tools/npy.h"

namespace edgetune {
namespace tools {
namespace {

using tools_test::ScratchDir;

// The bytes numpy.save writes: magic, version, header length, the dict padded with spaces to a
// multiple of 64 (16 for version 1.0 files from old numpy) and ended by '\n', then the data.
std::string npy_bytes(const std::string& dict, const std::string& data, int major = 1) {
  const size_t prefix = major == 1 ? 10 : 12;
  std::string header = dict;
  while ((prefix + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string out = "\x93NUMPY";
  out += static_cast<char>(major);
  out += '\0';
  const size_t n = header.size();
  out += static_cast<char>(n & 0xFF);
  out += static_cast<char>((n >> 8) & 0xFF);
  if (major != 1) {
    out += static_cast<char>((n >> 16) & 0xFF);
    out += static_cast<char>((n >> 24) & 0xFF);
  }
  return out + header + data;
}

std::string dict(const std::string& descr, const std::string& shape, bool fortran = false) {
  return "{'descr': '" + descr + "', 'fortran_order': " + (fortran ? "True" : "False") + ", 'shape': " + shape + ", }";
}

template <typename T>
std::string raw(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

Result<NpyArray> parse(const std::string& bytes) {
  auto keep = std::make_shared<std::string>(bytes);
  return parse_npy(reinterpret_cast<const uint8_t*>(keep->data()), keep->size(), "x.npy", keep);
}

template <typename T>
std::vector<T> values(const NpyArray& a) {
  std::vector<T> out(static_cast<size_t>(a.numel()));
  std::memcpy(out.data(), a.data, a.nbytes);
  return out;
}

TEST(ToolsNpy, ParsesFloat32Matrix) {
  std::vector<float> v = {1, 2, 3, 4, 5, 6};
  auto r = parse(npy_bytes(dict("<f4", "(2, 3)"), raw(v)));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->dtype, DType::f32);
  EXPECT_EQ(r->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(r->rows(), 2);
  EXPECT_EQ(r->row_bytes(), 12u);
  EXPECT_EQ(r->shape_string(), "f32[2,3]");
  EXPECT_EQ(values<float>(r.value()), v);
}

TEST(ToolsNpy, ParsesEveryDtype) {
  struct Case {
    const char* descr;
    DType dtype;
    size_t item;
  } cases[] = {{"<f4", DType::f32, 4}, {"<f8", DType::f64, 8}, {"<i8", DType::i64, 8}, {"<i4", DType::i32, 4},
               {"|u1", DType::u8, 1},  {"|b1", DType::boolean, 1}, {"|i1", DType::i8, 1}};
  for (const auto& c : cases) {
    auto r = parse(npy_bytes(dict(c.descr, "(3,)"), std::string(3 * c.item, '\x01')));
    ASSERT_TRUE(r.ok()) << c.descr << ": " << r.status().to_string();
    EXPECT_EQ(r->dtype, c.dtype) << c.descr;
    EXPECT_EQ(r->nbytes, 3 * c.item) << c.descr;
  }
}

TEST(ToolsNpy, ParsesVersion2And3Headers) {
  std::vector<int64_t> v = {7, -8};
  for (int major : {2, 3}) {
    auto r = parse(npy_bytes(dict("<i8", "(2,)"), raw(v), major));
    ASSERT_TRUE(r.ok()) << major << ": " << r.status().to_string();
    EXPECT_EQ(values<int64_t>(r.value()), v);
  }
}

TEST(ToolsNpy, AcceptsKeyOrderQuotesAndPython2Longs) {
  // Hand-written or very old files: keys in another order, double quotes, 3L-style integers.
  std::vector<float> v(6, 0.5f);
  auto r = parse(npy_bytes("{\"shape\": (3L, 2L), \"fortran_order\": False, \"descr\": \"<f4\"}", raw(v)));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->shape, (std::vector<int64_t>{3, 2}));
}

TEST(ToolsNpy, EmptyFirstAxisIsValid) {
  auto r = parse(npy_bytes(dict("<f4", "(0, 4)"), ""));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->rows(), 0);
}

TEST(ToolsNpy, RejectsBadMagic) {
  std::string b = npy_bytes(dict("<f4", "(1,)"), raw(std::vector<float>{1}));
  b[1] = 'X';
  auto r = parse(b);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("x.npy"), std::string::npos);
  EXPECT_NE(r.status().message().find("not a .npy file"), std::string::npos);
  EXPECT_FALSE(parse("short").ok());
}

TEST(ToolsNpy, RejectsTruncatedData) {
  std::vector<float> v = {1, 2, 3, 4, 5, 6};
  std::string b = npy_bytes(dict("<f4", "(2, 3)"), raw(v));
  auto r = parse(b.substr(0, b.size() - 3));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("truncated"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("24 data bytes"), std::string::npos) << r.status().message();
}

TEST(ToolsNpy, RejectsTruncatedHeader) {
  std::string b = npy_bytes(dict("<f4", "(2, 3)"), "");
  auto r = parse(b.substr(0, 30));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("truncated"), std::string::npos) << r.status().message();
}

TEST(ToolsNpy, RejectsFortranOrder) {
  auto r = parse(npy_bytes(dict("<f4", "(2, 3)", /*fortran=*/true), std::string(24, '\0')));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("Fortran"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("ascontiguousarray"), std::string::npos) << r.status().message();
  // One axis: Fortran and C order are the same bytes.
  EXPECT_TRUE(parse(npy_bytes(dict("<f4", "(3,)", true), std::string(12, '\0'))).ok());
}

TEST(ToolsNpy, RejectsUnsupportedDtypes) {
  auto big = parse(npy_bytes(dict(">f4", "(1,)"), std::string(4, '\0')));
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.status().message().find("big-endian"), std::string::npos);
  auto complex = parse(npy_bytes(dict("<c8", "(1,)"), std::string(8, '\0')));
  ASSERT_FALSE(complex.ok());
  EXPECT_NE(complex.status().message().find("'<c8'"), std::string::npos);
  auto rec = parse(npy_bytes("{'descr': [('a', '<f4'), ('b', '<i4')], 'fortran_order': False, 'shape': (1,), }",
                             std::string(8, '\0')));
  ASSERT_FALSE(rec.ok());
  EXPECT_NE(rec.status().message().find("structured"), std::string::npos);
}

TEST(ToolsNpy, RejectsScalarsVersionsAndBrokenHeaders) {
  EXPECT_FALSE(parse(npy_bytes(dict("<f4", "()"), std::string(4, '\0'))).ok());  // no samples axis
  EXPECT_FALSE(parse(npy_bytes(dict("<f4", "(1,)"), std::string(4, '\0'), /*major=*/4)).ok());
  EXPECT_FALSE(parse(npy_bytes("{'descr': '<f4', 'shape': (1,), }", std::string(4, '\0'))).ok());
  EXPECT_FALSE(parse(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", "")).ok());
  EXPECT_FALSE(parse(npy_bytes("not a dict", "")).ok());
  EXPECT_FALSE(
      parse(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999), }", "")).ok());
}

TEST(ToolsNpy, ReadsFileAndReportsMissingOnes) {
  ScratchDir dir;
  std::vector<int32_t> v = {1, 2, 3, 4};
  tools_test::write_file(dir / "y.npy", npy_bytes(dict("<i4", "(4,)"), raw(v)));
  auto r = read_npy(dir / "y.npy");
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(values<int32_t>(r.value()), v);
  auto missing = read_npy(dir / "nope.npy");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("nope.npy"), std::string::npos);
  tools_test::write_file(dir / "empty.npy", "");
  EXPECT_FALSE(read_npy(dir / "empty.npy").ok());
  EXPECT_FALSE(read_npy(dir.path()).ok());
}

TEST(ToolsNpy, RejectsDeeplyNestedUnknownKeyWithoutCrashing) {
  // 100,000 nested lists under a key numpy never writes: a recursive skip overflowed the stack.
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  auto r = parse(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'junk': " + deep + ", }",
                           std::string(4, '\0'), /*major=*/2));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("x.npy"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("nested deeper than 64"), std::string::npos) << r.status().message();
  // moderate nesting (a structured descr, an unknown key) is still skipped
  EXPECT_TRUE(parse(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'junk': " +
                                  std::string(20, '[') + std::string(20, ']') + ", }",
                              std::string(4, '\0')))
                  .ok());
}

TEST(ToolsNpy, RefusesFifoAndDevicesWithoutBlocking) {
  ScratchDir dir;
  ASSERT_EQ(mkfifo((dir / "fifo.npy").c_str(), 0600), 0);
  auto fifo = read_npy(dir / "fifo.npy");  // would block forever in open() without O_NONBLOCK
  ASSERT_FALSE(fifo.ok());
  EXPECT_NE(fifo.status().message().find("not a regular file"), std::string::npos) << fifo.status().message();
  auto zero = read_npy("/dev/zero");
  ASSERT_FALSE(zero.ok());
  EXPECT_EQ(zero.status().code(), StatusCode::kInvalidArgument);
}

TEST(ToolsNpy, ConvertsWithinAKind) {
  auto f64 = parse(npy_bytes(dict("<f8", "(3,)"), raw(std::vector<double>{0.5, -2, 1e300})));
  ASSERT_TRUE(f64.ok());
  auto f32 = convert_dtype(f64.value(), DType::f32, "x.npy", "input 'x'");
  ASSERT_TRUE(f32.ok()) << f32.status().to_string();
  auto fv = values<float>(f32.value());
  EXPECT_EQ(fv[0], 0.5f);
  EXPECT_EQ(fv[1], -2.0f);
  EXPECT_TRUE(std::isinf(fv[2]));  // out of f32 range: +inf, which the runtime's NaN/Inf check reports

  auto i32 = parse(npy_bytes(dict("<i4", "(2,)"), raw(std::vector<int32_t>{7, -1})));
  ASSERT_TRUE(i32.ok());
  auto i64 = convert_dtype(i32.value(), DType::i64, "y.npy", "target");
  ASSERT_TRUE(i64.ok());
  EXPECT_EQ(values<int64_t>(i64.value()), (std::vector<int64_t>{7, -1}));

  auto u8 = parse(npy_bytes(dict("|u1", "(2,)"), raw(std::vector<uint8_t>{3, 250})));
  ASSERT_TRUE(u8.ok());
  auto wide = convert_dtype(u8.value(), DType::i64, "y.npy", "target");
  ASSERT_TRUE(wide.ok());
  EXPECT_EQ(values<int64_t>(wide.value()), (std::vector<int64_t>{3, 250}));
}

// A converted copy too large to allocate is kOutOfMemory (not an I/O error, not an exception).
// Skipped under AddressSanitizer, which aborts on an impossible allocation instead of failing it.
TEST(ToolsNpy, ConversionThatCannotBeAllocatedIsOutOfMemory) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer aborts on impossible allocations";
#else
  NpyArray huge;
  huge.dtype = DType::f64;
  huge.shape = {int64_t{1} << 50};  // 4 PiB as f32: more than any address space; data is never read
  auto r = convert_dtype(huge, DType::f32, "x.npy", "plan input 'x'");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kOutOfMemory);
  EXPECT_NE(r.status().message().find("x.npy: cannot allocate"), std::string::npos) << r.status().message();
#endif
}

TEST(ToolsNpy, RefusesCrossKindAndOutOfRangeConversions) {
  auto f = parse(npy_bytes(dict("<f4", "(1,)"), raw(std::vector<float>{1})));
  ASSERT_TRUE(f.ok());
  auto r = convert_dtype(f.value(), DType::i64, "y.npy", "plan input 'target'");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("y.npy"), std::string::npos);
  EXPECT_NE(r.status().message().find("f32"), std::string::npos);
  EXPECT_NE(r.status().message().find("i64"), std::string::npos);

  auto big = parse(npy_bytes(dict("<i8", "(2,)"), raw(std::vector<int64_t>{1, 300})));
  ASSERT_TRUE(big.ok());
  auto n = convert_dtype(big.value(), DType::i8, "y.npy", "target");
  ASSERT_FALSE(n.ok());
  EXPECT_NE(n.status().message().find("value 300 at flat index 1"), std::string::npos) << n.status().message();

  auto b = parse(npy_bytes(dict("|b1", "(1,)"), std::string(1, '\1')));
  ASSERT_TRUE(b.ok());
  EXPECT_FALSE(convert_dtype(b.value(), DType::f32, "m.npy", "mask").ok());
}

TensorView plan_input(DType dtype, std::vector<int64_t> shape) {
  TensorView v;
  v.dtype = dtype;
  v.rank = static_cast<int>(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) v.shape[i] = shape[i];
  return v;
}

TEST(ToolsNpy, BindChecksPerSampleShape) {
  auto a = parse(npy_bytes(dict("<f4", "(10, 16)"), std::string(640, '\0')));
  ASSERT_TRUE(a.ok());
  auto ok = bind_to_input(a.value(), "x.npy", "x", plan_input(DType::f32, {4, 16}));
  EXPECT_TRUE(ok.ok()) << ok.status().to_string();
  auto bad = bind_to_input(a.value(), "x.npy", "x", plan_input(DType::f32, {4, 32}));
  ASSERT_FALSE(bad.ok());
  const std::string& m = bad.status().message();
  EXPECT_NE(m.find("x.npy"), std::string::npos) << m;
  EXPECT_NE(m.find("[16]"), std::string::npos) << m;  // actual per-sample shape
  EXPECT_NE(m.find("[32]"), std::string::npos) << m;  // expected
  EXPECT_NE(m.find("'x'"), std::string::npos) << m;
}

TEST(ToolsNpy, BindConvertsDtype) {
  auto a = parse(npy_bytes(dict("<f8", "(2, 2)"), raw(std::vector<double>{1, 2, 3, 4})));
  ASSERT_TRUE(a.ok());
  auto b = bind_to_input(a.value(), "x.npy", "x", plan_input(DType::f32, {1, 2}));
  ASSERT_TRUE(b.ok()) << b.status().to_string();
  EXPECT_EQ(b->dtype, DType::f32);
  EXPECT_EQ(values<float>(b.value()), (std::vector<float>{1, 2, 3, 4}));
}

TEST(ToolsNpy, BoolInputs) {
  // a mask saved by numpy: '|b1', bytes 0/1; binds to a bool input as is
  auto m = parse(npy_bytes(dict("|b1", "(2, 3)"), std::string("\1\1\0\1\0\0", 6)));
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  EXPECT_EQ(m->dtype, DType::boolean);
  EXPECT_STREQ(npy_descr(DType::boolean), "|b1");
  auto b = bind_to_input(m.value(), "mask.npy", "attention_mask", plan_input(DType::boolean, {4, 3}));
  ASSERT_TRUE(b.ok()) << b.status().to_string();
  EXPECT_EQ(b->data, m->data);  // no copy
  // an int64 file for a bool input, and a bool file for an int64 one: both refused, naming the
  // file, the input and the .npy dtypes
  auto i = parse(npy_bytes(dict("<i8", "(2, 3)"), raw(std::vector<int64_t>{1, 1, 0, 1, 0, 0})));
  ASSERT_TRUE(i.ok());
  auto bad = bind_to_input(i.value(), "mask.npy", "attention_mask", plan_input(DType::boolean, {4, 3}));
  ASSERT_FALSE(bad.ok());
  std::string e = bad.status().message();
  EXPECT_NE(e.find("mask.npy: holds i64 data ('<i8'), but plan input 'attention_mask' is bool ('|b1')"),
            std::string::npos) << e;
  EXPECT_NE(e.find("astype(bool)"), std::string::npos) << e;
  auto bad2 = bind_to_input(m.value(), "mask.npy", "attention_mask", plan_input(DType::i64, {4, 3}));
  ASSERT_FALSE(bad2.ok());
  e = bad2.status().message();
  EXPECT_NE(e.find("holds bool data ('|b1'), but plan input 'attention_mask' is i64 ('<i8')"), std::string::npos) << e;
  // a '|b1' file whose bytes are not 0/1 (not what numpy writes) is refused at bind
  auto junk = parse(npy_bytes(dict("|b1", "(2, 3)"), std::string("\1\1\0\2\0\0", 6)));
  ASSERT_TRUE(junk.ok());
  auto refused = bind_to_input(junk.value(), "mask.npy", "attention_mask", plan_input(DType::boolean, {4, 3}));
  ASSERT_FALSE(refused.ok());
  e = refused.status().message();
  EXPECT_NE(e.find("mask.npy: byte 2 at flat index 3 is not a bool"), std::string::npos) << e;
}

TEST(ToolsNpy, GatherRowsCopiesSelectedSamples) {
  auto a = parse(npy_bytes(dict("<f4", "(4, 2)"), raw(std::vector<float>{0, 1, 10, 11, 20, 21, 30, 31})));
  ASSERT_TRUE(a.ok());
  const int64_t rows[] = {3, 0, 2};
  std::vector<float> out(6);
  gather_rows(a.value(), rows, 3, out.data());
  EXPECT_EQ(out, (std::vector<float>{30, 31, 0, 1, 20, 21}));
}

}  // namespace
}  // namespace tools
}  // namespace edgetune
