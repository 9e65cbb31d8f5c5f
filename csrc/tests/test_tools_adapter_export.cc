// GoogleTest tests of tools/adapter_export.h: every recipe step against values worked out by hand
// (numpy's semantics: compiler/adapters/export.py `evaluate` is the reference), a LoRA and a DoRA
// merge recipe, shapes-only evaluation, the refusals of malformed recipes (unknown op, stack
// underflow, shape mismatches in add/mm/cat/rows/reshape, indices and axes out of range, a missing
// weight, not one result) as Status errors, storing results in each dtype, the merged weights
// (hidden and adapter weights dropped, order kept, unmergeable refused) and the adapter files
// written and read back. Suite: ToolsAdapterExport.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "test_tools_util.h"
#include "tools/adapter_export.h"
#include "tools/safetensors.h"

namespace edgetune {
namespace tools {
namespace {

using tools_test::ScratchDir;

ExportStep W(const std::string& name) { return {"w", name, {}, 0.0}; }
ExportStep Op(const std::string& op) { return {op, "", {}, 0.0}; }
ExportStep Ints(const std::string& op, std::vector<int64_t> ints) { return {op, "", std::move(ints), 0.0}; }
ExportStep Scale(double f) { return {"scale", "", {}, f}; }

// Weights for the recipes: f32 tensors by name (plus whatever a test adds).
struct State {
  std::vector<std::vector<float>> storage;
  std::vector<SafetensorsEntry> entries;
  State& add(const std::string& name, std::vector<int64_t> shape, std::vector<float> values) {
    storage.push_back(std::move(values));
    // (a vector's buffer stays where it is when `storage` grows: its elements are moved)
    entries.push_back({name, DType::f32, std::move(shape), storage.back().data(), storage.back().size() * 4});
    return *this;
  }
};

F64Array run(const std::vector<ExportStep>& steps, const State& st) {
  RecipeState state(st.entries);
  auto r = evaluate_recipe(steps, state, "test recipe");
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return r.ok() ? r.value() : F64Array{};
}

Status error_of(const std::vector<ExportStep>& steps, const State& st, bool shapes_only = false) {
  RecipeState state(st.entries);
  auto r = evaluate_recipe(steps, state, "adapter tensor 'x'", shapes_only);
  return r.ok() ? Status::Ok() : r.status();
}

void expect_error(const std::vector<ExportStep>& steps, const State& st, const std::string& fragment) {
  for (bool shapes_only : {false, true}) {  // the same refusal whether or not values are computed
    Status s = error_of(steps, st, shapes_only);
    ASSERT_FALSE(s.ok()) << "expected an error containing '" << fragment << "'";
    EXPECT_EQ(s.code(), StatusCode::kInvalidPlan) << s.to_string();
    EXPECT_NE(s.message().find(fragment), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("adapter tensor 'x'"), std::string::npos) << s.message();
  }
}

State basic() {
  State st;
  st.add("a", {2, 3}, {1, 2, 3, 4, 5, 6});
  st.add("b", {3, 2}, {1, 0, 0, 1, 1, 1});
  st.add("v", {3}, {10, 20, 30});
  st.add("col", {2, 1}, {2, 4});
  return st;
}

TEST(ToolsAdapterExport, WeightPushesItsValues) {
  State st = basic();
  F64Array r = run({W("a")}, st);
  EXPECT_EQ(r.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(r.data, (std::vector<double>{1, 2, 3, 4, 5, 6}));
}

TEST(ToolsAdapterExport, WeightOfOtherDtypesReadsAsFloat64) {
  std::vector<int64_t> i64 = {-3, 7};
  std::vector<uint16_t> f16 = {0x3c00, 0xc000};   // 1.0, -2.0
  std::vector<uint16_t> bf16 = {0x3f80, 0x4040};  // 1.0, 3.0
  std::vector<uint8_t> flags = {0, 1};
  std::vector<double> f64 = {0.1, -0.25};
  std::vector<SafetensorsEntry> entries = {{"i", DType::i64, {2}, i64.data(), 16},
                                           {"h", DType::f16, {2}, f16.data(), 4},
                                           {"bh", DType::bf16, {2}, bf16.data(), 4},
                                           {"m", DType::boolean, {2}, flags.data(), 2},
                                           {"d", DType::f64, {2}, f64.data(), 16}};
  RecipeState state(entries);
  auto values = [&](const std::string& name) { return evaluate_recipe({W(name)}, state, "r").value().data; };
  EXPECT_EQ(values("i"), (std::vector<double>{-3, 7}));
  EXPECT_EQ(values("h"), (std::vector<double>{1, -2}));
  EXPECT_EQ(values("bh"), (std::vector<double>{1, 3}));
  EXPECT_EQ(values("m"), (std::vector<double>{0, 1}));
  EXPECT_EQ(values("d"), f64);
}

TEST(ToolsAdapterExport, TransposeReversesAxes) {
  State st = basic();
  F64Array r = run({W("a"), Op("t")}, st);
  EXPECT_EQ(r.shape, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(r.data, (std::vector<double>{1, 4, 2, 5, 3, 6}));
  st.add("c", {2, 1, 3}, {1, 2, 3, 4, 5, 6});
  r = run({W("c"), Op("t")}, st);  // numpy's .T of a 3-d array: [3, 1, 2]
  EXPECT_EQ(r.shape, (std::vector<int64_t>{3, 1, 2}));
  EXPECT_EQ(r.data, (std::vector<double>{1, 4, 2, 5, 3, 6}));
  r = run({W("v"), Op("t")}, st);  // 1-d: unchanged
  EXPECT_EQ(r.shape, (std::vector<int64_t>{3}));
}

TEST(ToolsAdapterExport, MatmulFlattensTrailingDims) {
  State st = basic();
  F64Array r = run({W("a"), W("b"), Op("mm")}, st);  // [2,3] @ [3,2]
  EXPECT_EQ(r.shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(r.data, (std::vector<double>{4, 5, 10, 11}));
  // conv LoRA: B [out, r, 1, 1] @ A [r, in, kh, kw] -> [out, in*kh*kw]
  st.add("B4", {2, 1, 1, 1}, {1, 2});
  st.add("A4", {1, 1, 2, 2}, {1, 2, 3, 4});
  r = run({W("B4"), W("A4"), Op("mm")}, st);
  EXPECT_EQ(r.shape, (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(r.data, (std::vector<double>{1, 2, 3, 4, 2, 4, 6, 8}));
}

TEST(ToolsAdapterExport, ReshapeWithInferredDim) {
  State st = basic();
  F64Array r = run({W("a"), Ints("reshape", {3, -1})}, st);
  EXPECT_EQ(r.shape, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(r.data, (std::vector<double>{1, 2, 3, 4, 5, 6}));
  r = run({W("a"), Ints("reshape", {1, 6, 1})}, st);
  EXPECT_EQ(r.shape, (std::vector<int64_t>{1, 6, 1}));
  st.add("one", {1}, {5});
  r = run({W("one"), Ints("reshape", {})}, st);  // a scalar
  EXPECT_TRUE(r.shape.empty());
  EXPECT_EQ(r.data, (std::vector<double>{5}));
}

TEST(ToolsAdapterExport, ScaleAndElementwiseWithBroadcasting) {
  State st = basic();
  EXPECT_EQ(run({W("v"), Scale(0.5)}, st).data, (std::vector<double>{5, 10, 15}));
  F64Array r = run({W("a"), W("v"), Op("add")}, st);  // [2,3] + [3]
  EXPECT_EQ(r.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(r.data, (std::vector<double>{11, 22, 33, 14, 25, 36}));
  r = run({W("a"), W("col"), Op("sub")}, st);  // [2,3] - [2,1]
  EXPECT_EQ(r.data, (std::vector<double>{-1, 0, 1, 0, 1, 2}));
  r = run({W("col"), W("v"), Op("mul")}, st);  // [2,1] * [3] -> [2,3]
  EXPECT_EQ(r.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(r.data, (std::vector<double>{20, 40, 60, 40, 80, 120}));
  r = run({W("a"), W("col"), Op("div")}, st);
  EXPECT_EQ(r.data, (std::vector<double>{0.5, 1, 1.5, 1, 1.25, 1.5}));
  st.add("zero", {1}, {0});
  r = run({W("v"), W("zero"), Op("div")}, st);  // numpy: inf, no error
  EXPECT_TRUE(std::isinf(r.data[0]));
}

TEST(ToolsAdapterExport, RowNorm) {
  State st;
  st.add("m", {2, 1, 2}, {3, 4, 0, -2});
  F64Array r = run({W("m"), Op("rownorm")}, st);
  EXPECT_EQ(r.shape, (std::vector<int64_t>{2}));
  EXPECT_EQ(r.data, (std::vector<double>{5, 2}));
}

TEST(ToolsAdapterExport, Concatenate) {
  State st = basic();
  F64Array r = run({W("a"), W("a"), Ints("cat", {0, 2})}, st);
  EXPECT_EQ(r.shape, (std::vector<int64_t>{4, 3}));
  EXPECT_EQ(r.data, (std::vector<double>{1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6}));
  r = run({W("a"), W("col"), W("col"), Ints("cat", {1, 3})}, st);  // [2,3] ++ [2,1] ++ [2,1]
  EXPECT_EQ(r.shape, (std::vector<int64_t>{2, 5}));
  EXPECT_EQ(r.data, (std::vector<double>{1, 2, 3, 2, 2, 4, 5, 6, 4, 4}));
  r = run({W("col"), W("a"), Ints("cat", {-1, 2})}, st);
  EXPECT_EQ(r.data, (std::vector<double>{2, 1, 2, 3, 4, 4, 5, 6}));
  r = run({W("v"), Ints("cat", {0, 1})}, st);  // one tensor: itself
  EXPECT_EQ(r.data, (std::vector<double>{10, 20, 30}));
  // PiSSA's PEFT factors: cat(0, A, A0), cat(1, B, -B0) under a scale
  r = run({W("col"), W("col"), Scale(-1.0), Ints("cat", {1, 2})}, st);
  EXPECT_EQ(r.data, (std::vector<double>{2, -2, 4, -4}));
}

TEST(ToolsAdapterExport, RowsReplacesRowsLaterWins) {
  State st;
  st.add("base", {3, 2}, {1, 1, 2, 2, 3, 3});
  st.add("new", {2, 2}, {7, 8, 9, 10});
  st.add("scalar", {}, {0});
  F64Array r = run({W("base"), W("new"), Ints("rows", {2, -3})}, st);
  EXPECT_EQ(r.shape, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(r.data, (std::vector<double>{9, 10, 2, 2, 7, 8}));
  r = run({W("base"), W("new"), Ints("rows", {1, 1})}, st);  // a repeated index: the later row
  EXPECT_EQ(r.data, (std::vector<double>{1, 1, 9, 10, 3, 3}));
  r = run({W("base"), W("scalar"), Ints("rows", {0})}, st);  // broadcast into the row
  EXPECT_EQ(r.data, (std::vector<double>{0, 0, 2, 2, 3, 3}));
}

TEST(ToolsAdapterExport, LoraAndDoraMergeRecipes) {
  // W [2,3], A [1,3], B [2,1], s = 2: W + s·B·A; DoRA: m/||V|| · V, V = W + s·B·A
  State st;
  st.add("W", {2, 3}, {1, 0, 0, 0, 1, 0});
  st.add("A", {1, 3}, {1, 2, 3});
  st.add("B", {2, 1}, {1, -1});
  st.add("m", {2}, {2, 3});
  std::vector<ExportStep> v = {W("W"), W("B"), W("A"), Op("mm"), Scale(2.0), Op("add")};
  F64Array lora = run(v, st);
  EXPECT_EQ(lora.data, (std::vector<double>{3, 4, 6, -2, -3, -6}));
  std::vector<ExportStep> dora = {W("m"), Ints("reshape", {2, 1})};
  dora.insert(dora.end(), v.begin(), v.end());
  dora.push_back(Op("rownorm"));
  dora.push_back(Ints("reshape", {2, 1}));
  dora.push_back(Op("div"));
  dora.insert(dora.end(), v.begin(), v.end());
  dora.push_back(Op("mul"));
  F64Array d = run(dora, st);
  ASSERT_EQ(d.shape, (std::vector<int64_t>{2, 3}));
  const double n0 = std::sqrt(9.0 + 16 + 36), n1 = std::sqrt(4.0 + 9 + 36);
  const double want[] = {2 * 3 / n0, 2 * 4 / n0, 2 * 6 / n0, 3 * -2 / n1, 3 * -3 / n1, 3 * -6 / n1};
  for (int i = 0; i < 6; ++i) EXPECT_DOUBLE_EQ(d.data[static_cast<size_t>(i)], want[i]);
}

TEST(ToolsAdapterExport, ShapesOnlyNeedsNoData) {
  std::vector<SafetensorsEntry> entries = {{"W", DType::f32, {4, 3}, nullptr, 48},
                                           {"A", DType::f32, {2, 3}, nullptr, 24},
                                           {"B", DType::f32, {4, 2}, nullptr, 32}};
  RecipeState state(entries);
  auto r = evaluate_recipe({W("W"), W("B"), W("A"), Op("mm"), Scale(0.5), Op("add"), Op("t")}, state, "r", true);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r.value().shape, (std::vector<int64_t>{3, 4}));
  EXPECT_TRUE(r.value().data.empty());
  // with data asked for, a weight without bytes is an internal error, not a crash
  auto bad = evaluate_recipe({W("W")}, state, "r", false);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInternal);
}

TEST(ToolsAdapterExport, MalformedRecipesAreErrors) {
  State st = basic();
  expect_error({W("a"), Op("frobnicate")}, st, "unknown export step 'frobnicate'");
  expect_error({W("nope")}, st, "the plan has no weight 'nope'");
  expect_error({Op("t")}, st, "stack underflow");
  expect_error({W("a"), Op("mm")}, st, "stack underflow");
  expect_error({W("a"), Op("add")}, st, "stack underflow");
  expect_error({W("a"), Ints("cat", {0, 2})}, st, "stack underflow");
  expect_error({W("a"), Ints("rows", {0})}, st, "stack underflow");
  expect_error({Op("rownorm")}, st, "stack underflow");
  expect_error({Scale(2)}, st, "stack underflow");
  expect_error({}, st, "0 results");
  expect_error({W("a"), W("b")}, st, "2 results");
  // shape mismatches
  expect_error({W("a"), W("a"), Op("mm")}, st, "shape mismatch");     // [2,3] @ [2,3]
  expect_error({W("a"), W("b"), Op("add")}, st, "do not broadcast");  // [2,3] + [3,2]
  expect_error({W("a"), W("b"), Ints("cat", {0, 2})}, st, "shape mismatch");
  expect_error({W("a"), W("v"), Ints("cat", {0, 2})}, st, "shape mismatch");  // rank 2 and 1
  expect_error({W("a"), W("b"), Ints("rows", {0})}, st, "shape mismatch");    // [3,2] into [1,3]
  expect_error({W("a"), Ints("reshape", {4, 2})}, st, "shape mismatch");
  expect_error({W("a"), Ints("reshape", {4, -1})}, st, "shape mismatch");
  expect_error({W("a"), Ints("reshape", {-1, -1})}, st, "more than one -1");
  expect_error({W("a"), Ints("reshape", {-2, -3})}, st, "negative dimension");
  expect_error({W("a"), Ints("reshape", {1, 1, 1, 1, 1, 1, 1, 1, 1, 6})}, st, "rank 10");
  expect_error({W("a"), Ints("reshape", {int64_t{1} << 62, int64_t{1} << 62})}, st, "cannot reshape");
  // indices and axes out of range, bad arguments
  expect_error({W("a"), W("v"), Ints("rows", {2})}, st, "index 2 is out of range for 2 rows");
  expect_error({W("a"), W("v"), Ints("rows", {-3})}, st, "index -3 is out of range");
  expect_error({W("a"), W("a"), Ints("cat", {2, 2})}, st, "axis 2 is out of range");
  expect_error({W("a"), W("a"), Ints("cat", {-3, 2})}, st, "axis -3 is out of range");
  expect_error({W("a"), Ints("cat", {0})}, st, "takes [axis, n]");
  expect_error({W("a"), Ints("cat", {0, 0})}, st, "at least one tensor");
  expect_error({W("a"), Ints("cat", {0, -5})}, st, "at least one tensor");
  expect_error({W("a"), Ints("cat", {0, int64_t{1} << 62})}, st, "stack underflow");
  // operands of the wrong rank
  st.add("s", {}, {1});
  expect_error({W("s"), W("a"), Op("mm")}, st, "at least one dimension");
  expect_error({W("s"), Op("rownorm")}, st, "no rows");
  expect_error({W("s"), W("s"), Ints("cat", {0, 2})}, st, "0-dimensional");
  expect_error({W("s"), W("s"), Ints("rows", {0})}, st, "0-dimensional");
  // the message names the step
  Status s = error_of({W("a"), W("a"), Op("mm")}, st);
  EXPECT_NE(s.message().find("step 3 of 3 ('mm')"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("[2, 3] and [2, 3]"), std::string::npos) << s.message();
}

TEST(ToolsAdapterExport, StoreAsEachDtype) {
  F64Array a;
  a.shape = {4};
  a.data = {1.0, 0.1, 1e300, -2.75};
  std::vector<uint8_t> out(4 * 8);
  ASSERT_TRUE(store_as(a, DType::f32, out.data(), "x").ok());
  float f[4];
  std::memcpy(f, out.data(), 16);
  EXPECT_EQ(f[0], 1.0f);
  EXPECT_EQ(f[1], 0.1f);
  EXPECT_TRUE(std::isinf(f[2]) && f[2] > 0);  // numpy: inf
  EXPECT_EQ(f[3], -2.75f);

  F64Array h;
  h.shape = {6};
  h.data = {1.0, 65504.0, 65520.0, std::ldexp(1.0, -24), std::ldexp(1.0, -25), -0.0};
  ASSERT_TRUE(store_as(h, DType::f16, out.data(), "x").ok());
  uint16_t hv[6];
  std::memcpy(hv, out.data(), 12);
  EXPECT_EQ(hv[0], 0x3c00);
  EXPECT_EQ(hv[1], 0x7bff);  // the largest half
  EXPECT_EQ(hv[2], 0x7c00);  // halfway to 2^16: inf (ties to even)
  EXPECT_EQ(hv[3], 0x0001);  // the smallest subnormal
  EXPECT_EQ(hv[4], 0x0000);  // half of it: ties to even, 0
  EXPECT_EQ(hv[5], 0x8000);
  F64Array one;
  one.shape = {2};
  one.data = {1.0, 1.0 + 1.0 / 256};  // bf16 has 7 mantissa bits: the tie rounds to even (1.0)
  ASSERT_TRUE(store_as(one, DType::bf16, out.data(), "x").ok());
  std::memcpy(hv, out.data(), 4);
  EXPECT_EQ(hv[0], 0x3f80);
  EXPECT_EQ(hv[1], 0x3f80);

  F64Array i;
  i.shape = {3};
  i.data = {2.9, -2.9, 0};
  ASSERT_TRUE(store_as(i, DType::i64, out.data(), "x").ok());
  int64_t iv[3];
  std::memcpy(iv, out.data(), 24);
  EXPECT_EQ(iv[0], 2);
  EXPECT_EQ(iv[1], -2);
  ASSERT_TRUE(store_as(i, DType::boolean, out.data(), "x").ok());
  EXPECT_EQ(out[0], 1);
  EXPECT_EQ(out[2], 0);
  F64Array nan;
  nan.shape = {1};
  nan.data = {std::numeric_limits<double>::quiet_NaN()};
  Status s = store_as(nan, DType::i32, out.data(), "merged 'n'");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("merged 'n'"), std::string::npos);
  F64Array big;
  big.shape = {1};
  big.data = {300};
  EXPECT_FALSE(store_as(big, DType::i8, out.data(), "x").ok());
  EXPECT_FALSE(store_as(big, DType::u8, out.data(), "x").ok());
  big.data = {std::ldexp(1.0, 63)};
  EXPECT_FALSE(store_as(big, DType::i64, out.data(), "x").ok());
}

// A LoRA on "fc" (weight [2,2], bias [2]), a hidden buffer and an i64 buffer.
struct LoraPlan {
  State st;
  ExportTable table;
  LoraPlan() {
    st.add("fc.weight", {2, 2}, {1, 0, 0, 1});
    st.add("fc.bias", {2}, {0.5, -0.5});
    st.add("fc.lora_A.weight", {1, 2}, {1, 2});
    st.add("fc.lora_B.weight", {2, 1}, {3, 4});
    st.add("fc.lora_A.initial", {1, 2}, {9, 9});
    table.has_peft = true;
    table.peft_config = "{\n  \"peft_type\": \"LORA\"\n}\n";
    table.own_config = "{\n  \"format\": \"edgetune-adapter\"\n}\n";
    table.peft_tensors = {{"base_model.model.fc.lora_A.weight", {W("fc.lora_A.weight")}},
                          {"base_model.model.fc.lora_B.weight", {W("fc.lora_B.weight")}}};
    table.own_tensors = {{"fc.lora_A.weight", {W("fc.lora_A.weight")}},
                         {"fc.lora_B.weight", {W("fc.lora_B.weight")}}};
    table.merged = {{"fc.weight", {W("fc.weight"), W("fc.lora_B.weight"), W("fc.lora_A.weight"), Op("mm"), Scale(0.5),
                                   Op("add")}}};
    table.drop_when_merged = {"fc.lora_A.weight", "fc.lora_B.weight"};
    table.hidden = {"fc.lora_A.initial"};
  }
};

std::vector<float> floats(const SafetensorsEntry& e) {
  std::vector<float> v(e.nbytes / 4);
  std::memcpy(v.data(), e.data, e.nbytes);
  return v;
}

TEST(ToolsAdapterExport, MergedWeightsKeepOrderAndDropAdapters) {
  LoraPlan p;
  int64_t tracked = 7;
  p.st.entries.push_back({"bn.num_batches_tracked", DType::i64, {}, &tracked, 8});
  RecipeState state(p.st.entries);
  auto merged = merged_tensors(p.table, state, false);
  ASSERT_TRUE(merged.ok()) << merged.status().to_string();
  const auto& e = merged.value().entries;
  ASSERT_EQ(e.size(), 3u);
  EXPECT_EQ(e[0].name, "fc.weight");
  EXPECT_EQ(floats(e[0]), (std::vector<float>{2.5f, 3, 2, 5}));  // I + 0.5·[3,4]ᵀ[1,2]
  EXPECT_EQ(e[1].name, "fc.bias");
  EXPECT_EQ(e[1].data, p.st.entries[1].data);  // unchanged weights are not copied
  EXPECT_EQ(e[2].name, "bn.num_batches_tracked");
  EXPECT_EQ(e[2].dtype, DType::i64);
  auto shapes = merged_tensors(p.table, state, true);
  ASSERT_TRUE(shapes.ok());
  EXPECT_EQ(shapes.value().data_bytes(), merged.value().data_bytes());

  p.table.unmergeable = {"SSF on 'fc' follows a nonlinearity", "Channels on 'x'"};
  auto refused = merged_tensors(p.table, state, false);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("follows a nonlinearity; Channels on 'x'"), std::string::npos);
}

TEST(ToolsAdapterExport, MergedNameNotAWeightIsAppended) {
  LoraPlan p;
  p.table.merged.push_back({"extra", {W("fc.bias"), Scale(2)}});
  RecipeState state(p.st.entries);
  auto merged = merged_tensors(p.table, state, false);
  ASSERT_TRUE(merged.ok());
  ASSERT_EQ(merged.value().entries.size(), 3u);
  EXPECT_EQ(merged.value().entries[2].name, "extra");
  EXPECT_EQ(floats(merged.value().entries[2]), (std::vector<float>{1, -1}));
}

TEST(ToolsAdapterExport, OwnTensorsKeepTheWeightDtype) {
  std::vector<double> d = {1.5, 2.5};
  std::vector<SafetensorsEntry> entries = {{"p", DType::f64, {2}, d.data(), 16}};
  RecipeState state(entries);
  auto own = export_tensors({{"p", {W("p")}}}, state, true, "adapter tensor", false);
  ASSERT_TRUE(own.ok());
  EXPECT_EQ(own.value().entries[0].dtype, DType::f64);
  auto peft = export_tensors({{"p", {W("p")}}}, state, false, "adapter tensor", false);
  ASSERT_TRUE(peft.ok());
  EXPECT_EQ(peft.value().entries[0].dtype, DType::f32);
  auto bad = export_tensors({{"q", {W("p"), Op("t"), Op("t"), Op("mm")}}}, state, false, "adapter tensor", false);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("adapter tensor 'q'"), std::string::npos);
}

TEST(ToolsAdapterExport, AdapterFilesWrittenAndReadBack) {
  LoraPlan p;
  RecipeState state(p.st.entries);
  ScratchDir tmp;
  const std::string dir = tmp / "out/nested/adapter";
  ASSERT_TRUE(make_directories(dir).ok());
  ASSERT_TRUE(make_directories(dir + "/").ok());  // exists: fine
  auto files = adapter_files(p.table, state, false);
  ASSERT_TRUE(files.ok()) << files.status().to_string();
  ASSERT_EQ(files.value().size(), 4u);
  EXPECT_EQ(files.value()[0].name, "adapter_config.json");
  EXPECT_EQ(files.value()[3].name, "edgetune_adapter.safetensors");
  ASSERT_TRUE(write_adapter_files(dir, files.value(), export_metadata(12)).ok());
  EXPECT_EQ(tools_test::read_file(dir + "/adapter_config.json"), p.table.peft_config);
  EXPECT_EQ(tools_test::read_file(dir + "/edgetune_adapter.json"), p.table.own_config);
  auto peft = read_safetensors(dir + "/adapter_model.safetensors");
  ASSERT_TRUE(peft.ok()) << peft.status().to_string();
  ASSERT_NE(peft.value().meta("steps"), nullptr);
  EXPECT_EQ(*peft.value().meta("steps"), "12");
  EXPECT_EQ(*peft.value().meta("format"), "pt");
  EXPECT_EQ(*peft.value().meta("producer"), "edgetune");
  const SafetensorsTensor* b = peft.value().find("base_model.model.fc.lora_B.weight");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->shape, (std::vector<int64_t>{2, 1}));
  float bv[2];
  std::memcpy(bv, b->data, 8);
  EXPECT_EQ(bv[0], 3);
  EXPECT_EQ(bv[1], 4);
  auto own = read_safetensors(dir + "/edgetune_adapter.safetensors");
  ASSERT_TRUE(own.ok());
  EXPECT_EQ(own.value().tensors.size(), 2u);

  // no PEFT config: only edgetune's files
  p.table.has_peft = false;
  auto only_own = adapter_files(p.table, state, true);
  ASSERT_TRUE(only_own.ok());
  ASSERT_EQ(only_own.value().size(), 2u);
  EXPECT_EQ(only_own.value()[0].name, "edgetune_adapter.json");

  // a file where the directory should be
  ASSERT_TRUE(make_directories(tmp / "plain").ok());
  tools_test::write_file(tmp / "plain/file", "x");
  Status s = make_directories(tmp / "plain/file/sub");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("not a directory"), std::string::npos);
}

TEST(ToolsAdapterExport, JoinPath) {
  EXPECT_EQ(join_path("a", "b.json"), "a/b.json");
  EXPECT_EQ(join_path("a/", "b.json"), "a/b.json");
}

}  // namespace
}  // namespace tools
}  // namespace edgetune
