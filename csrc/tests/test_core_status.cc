// GoogleTest tests of core/status.h: Status, Result<T>, the error factories, with_context and
// the ET_RETURN_IF_ERROR / ET_ASSIGN_OR_RETURN macros. Suites: CoreStatus, CoreResult,
// CoreResultDeathTest (value() on an error aborts with the caller's file:line and the Status).
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "core/status.h"

namespace edgetune {
namespace {

// ---- Status ---------------------------------------------------------------------------------

TEST(CoreStatus, DefaultIsOk) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kOk);
  EXPECT_EQ(s.message(), "");
  EXPECT_EQ(s.to_string(), "ok");
  EXPECT_TRUE(Status::Ok().ok());
  EXPECT_EQ(Status::Ok().to_string(), "ok");
}

TEST(CoreStatus, FactoriesSetCodeAndMessage) {
  struct Case {
    Status st;
    StatusCode code;
    const char* name;
  };
  const std::vector<Case> cases = {
      {invalid_argument("m"), StatusCode::kInvalidArgument, "invalid argument"},
      {invalid_plan("m"), StatusCode::kInvalidPlan, "invalid plan"},
      {not_found("m"), StatusCode::kNotFound, "not found"},
      {io_error("m"), StatusCode::kIoError, "I/O error"},
      {out_of_memory("m"), StatusCode::kOutOfMemory, "out of memory"},
      {unimplemented("m"), StatusCode::kUnimplemented, "unimplemented"},
      {numeric_error("m"), StatusCode::kNumericError, "numeric error"},
      {internal_error("m"), StatusCode::kInternal, "internal error"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    EXPECT_FALSE(c.st.ok());
    EXPECT_EQ(c.st.code(), c.code);
    EXPECT_EQ(c.st.message(), "m");
    EXPECT_STREQ(status_code_name(c.code), c.name);
    EXPECT_EQ(c.st.to_string(), std::string(c.name) + ": m");
  }
  EXPECT_STREQ(status_code_name(StatusCode::kOk), "ok");
}

TEST(CoreStatus, ToStringNamesWhatAndWhere) {
  Status s = invalid_plan("node 12 (conv2d): weight is f64");
  EXPECT_EQ(s.to_string(), "invalid plan: node 12 (conv2d): weight is f64");
}

TEST(CoreStatus, WithContextPrefixesErrors) {
  Status s = io_error("short read").with_context("loading plan.etp");
  EXPECT_EQ(s.code(), StatusCode::kIoError);
  EXPECT_EQ(s.message(), "loading plan.etp: short read");
  EXPECT_EQ(s.to_string(), "I/O error: loading plan.etp: short read");
  // context accumulates outward-in as the failure travels up
  Status t = s.with_context("session");
  EXPECT_EQ(t.message(), "session: loading plan.etp: short read");
  EXPECT_EQ(t.code(), StatusCode::kIoError);
  // the original is unchanged (with_context is const)
  EXPECT_EQ(s.message(), "loading plan.etp: short read");
}

TEST(CoreStatus, WithContextLeavesOkAlone) {
  Status s = Status::Ok().with_context("loading plan.etp");
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.message(), "");
  EXPECT_EQ(s.to_string(), "ok");
}

TEST(CoreStatus, CopyAndMove) {
  Status a = not_found("kernel 'foo'");
  Status b = a;
  EXPECT_EQ(b.code(), StatusCode::kNotFound);
  EXPECT_EQ(b.message(), "kernel 'foo'");
  Status c = std::move(b);
  EXPECT_EQ(c.code(), StatusCode::kNotFound);
  EXPECT_EQ(c.message(), "kernel 'foo'");
  c = Status::Ok();
  EXPECT_TRUE(c.ok());
  EXPECT_EQ(a.message(), "kernel 'foo'");
}

// ---- ET_RETURN_IF_ERROR -----------------------------------------------------------------------

int g_calls = 0;
Status counted(Status s) {
  ++g_calls;
  return s;
}

Status two_steps(Status first, Status second, int* reached) {
  *reached = 0;
  ET_RETURN_IF_ERROR(counted(first));
  *reached = 1;
  ET_RETURN_IF_ERROR(counted(second));
  *reached = 2;
  return Status::Ok();
}

TEST(CoreStatus, ReturnIfErrorReturnsEarly) {
  int reached = -1;
  g_calls = 0;
  EXPECT_TRUE(two_steps(Status::Ok(), Status::Ok(), &reached).ok());
  EXPECT_EQ(reached, 2);
  EXPECT_EQ(g_calls, 2);

  g_calls = 0;
  Status s = two_steps(invalid_argument("first"), Status::Ok(), &reached);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "first");
  EXPECT_EQ(reached, 0);
  EXPECT_EQ(g_calls, 1);  // expression evaluated once, second never evaluated

  g_calls = 0;
  s = two_steps(Status::Ok(), numeric_error("second"), &reached);
  EXPECT_EQ(s.code(), StatusCode::kNumericError);
  EXPECT_EQ(s.message(), "second");
  EXPECT_EQ(reached, 1);
  EXPECT_EQ(g_calls, 2);
}

// ---- Result<T> --------------------------------------------------------------------------------

TEST(CoreResult, HoldsValue) {
  Result<int> r = 42;
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r.status().ok());
  EXPECT_EQ(r.status().to_string(), "ok");
  EXPECT_EQ(r.value(), 42);
  EXPECT_EQ(*r, 42);
  r.value() = 7;
  EXPECT_EQ(*r, 7);
  const Result<int>& cr = r;
  EXPECT_EQ(cr.value(), 7);
}

TEST(CoreResult, HoldsStatus) {
  Result<int> r = not_found("tensor 'w'");
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(r.status().message(), "tensor 'w'");
}

TEST(CoreResult, OkStatusWithoutValueIsInternalError) {
  // Ok without a value cannot exist: the Result holds an internal error that says why.
  Result<int> r = Status::Ok();
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInternal);
  EXPECT_NE(r.status().message().find("ok Status without a value"), std::string::npos) << r.status().message();
  Result<std::string> s{Status()};
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kInternal);
  // an error Status is kept as it is
  Result<int> e = io_error("disk");
  EXPECT_EQ(e.status().code(), StatusCode::kIoError);
  EXPECT_EQ(e.status().message(), "disk");
}

TEST(CoreResult, OkStatusThroughAssignOrReturn) {
  // a function that "returns ok" from a Result<T> function reports an internal error upward
  auto make = []() -> Result<int> { return Status::Ok(); };
  auto use = [&]() -> Status {
    ET_ASSIGN_OR_RETURN(int v, make());
    (void)v;
    return Status::Ok();
  };
  Status st = use();
  EXPECT_EQ(st.code(), StatusCode::kInternal);
}

// value() on an error is a bug in the caller: it aborts (no exception) naming where it was
// called and what the error was.
TEST(CoreResultDeathTest, ValueOnErrorAborts) {
  Result<int> r = not_found("tensor 'w'");
  EXPECT_DEATH((void)r.value(), "test_core_status\\.cc:[0-9]+: Result::value\\(\\) on an error: not found: tensor 'w'");
  const Result<int>& cr = r;
  EXPECT_DEATH((void)cr.value(), "test_core_status\\.cc:[0-9]+: .*not found: tensor 'w'");
  EXPECT_DEATH((void)std::move(r).value(), "test_core_status\\.cc:[0-9]+: .*not found: tensor 'w'");
  EXPECT_DEATH((void)*r, "Result::value\\(\\) on an error: not found: tensor 'w'");
  Result<std::string> s = invalid_plan("bad");
  EXPECT_DEATH((void)s->size(), "on an error: invalid plan: bad");
}

TEST(CoreResultDeathTest, ValueOfOkStatusResultAborts) {
  Result<int> r = Status::Ok();
  EXPECT_DEATH((void)r.value(), "internal error: Result constructed from an ok Status without a value");
}

TEST(CoreResult, ArrowAndMoveOut) {
  Result<std::string> r = std::string("hello");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->size(), 5u);
  std::string s = std::move(r).value();
  EXPECT_EQ(s, "hello");
}

TEST(CoreResult, MoveOnlyValue) {
  Result<std::unique_ptr<int>> r = std::make_unique<int>(5);
  ASSERT_TRUE(r.ok());
  std::unique_ptr<int> p = std::move(r).value();
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(*p, 5);
}

TEST(CoreResult, VectorValue) {
  Result<std::vector<int64_t>> r = std::vector<int64_t>{1, 2, 3};
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->size(), 3u);
  EXPECT_EQ((*r)[2], 3);
}

// ---- ET_ASSIGN_OR_RETURN ----------------------------------------------------------------------

Result<int> parse_positive(int x) {
  if (x <= 0) return invalid_argument("not positive: " + std::to_string(x));
  return x;
}

Result<std::unique_ptr<int>> make_box(int x) {
  if (x < 0) return internal_error("negative box");
  return std::make_unique<int>(x);
}

// two uses in one function (distinct temporaries per line), declaration and plain assignment
Result<int> add_parsed(int a, int b, int* steps) {
  *steps = 0;
  ET_ASSIGN_OR_RETURN(int x, parse_positive(a));
  *steps = 1;
  int y = 0;
  ET_ASSIGN_OR_RETURN(y, parse_positive(b));
  *steps = 2;
  return x + y;
}

// inside a function returning plain Status
Status box_value(int x, int* out) {
  ET_ASSIGN_OR_RETURN(auto box, make_box(x));
  *out = *box;
  return Status::Ok();
}

TEST(CoreResult, AssignOrReturnAssigns) {
  int steps = -1;
  Result<int> r = add_parsed(2, 3, &steps);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(*r, 5);
  EXPECT_EQ(steps, 2);
}

TEST(CoreResult, AssignOrReturnPropagatesFirstError) {
  int steps = -1;
  Result<int> r = add_parsed(-1, 3, &steps);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "not positive: -1");
  EXPECT_EQ(steps, 0);
}

TEST(CoreResult, AssignOrReturnPropagatesSecondError) {
  int steps = -1;
  Result<int> r = add_parsed(1, 0, &steps);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "not positive: 0");
  EXPECT_EQ(steps, 1);
}

TEST(CoreResult, AssignOrReturnMoveOnlyIntoStatusFunction) {
  int out = -1;
  EXPECT_TRUE(box_value(9, &out).ok());
  EXPECT_EQ(out, 9);
  out = -1;
  Status s = box_value(-1, &out);
  EXPECT_EQ(s.code(), StatusCode::kInternal);
  EXPECT_EQ(s.message(), "negative box");
  EXPECT_EQ(out, -1);
}

TEST(CoreResult, ErrorWithContextThroughLayers) {
  auto inner = []() -> Result<int> { return io_error("short read"); };
  auto outer = [&]() -> Status {
    Result<int> r = inner();
    if (!r.ok()) return r.status().with_context("loading plan.etp");
    return Status::Ok();
  };
  Status s = outer();
  EXPECT_EQ(s.to_string(), "I/O error: loading plan.etp: short read");
}

}  // namespace
}  // namespace edgetune
