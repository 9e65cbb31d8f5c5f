// Status and Result<T>: how every fallible call in the runtime reports failure.
//
// The runtime never throws across its API (kernels, loader, executor, tools): a call returns a
// Status (ok or a code + message naming what and where) or a Result<T> holding a value or the
// Status that explains its absence. The pybind11 module turns a failed Status into a Python
// exception at the boundary; the CLI prints it and exits non-zero.
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace edgetune {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,  // caller passed something malformed (shape, dtype, attribute)
  kInvalidPlan,      // a plan file failed verification
  kNotFound,         // a file, kernel or name that does not exist
  kIoError,          // reading or writing a file failed
  kUnimplemented,    // valid request the runtime cannot serve (dtype/backend not built)
  kNumericError,     // NaN/Inf where training cannot go on
  kInternal,         // a broken invariant: a bug in edgetune
};

const char* status_code_name(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "invalid plan: node 12 (conv2d): ..." — what users see.
  std::string to_string() const;

  // Prefix context while a failure travels up ("loading plan.etp: ...").
  Status with_context(const std::string& context) const {
    if (ok()) return *this;
    return Status(code_, context + ": " + message_);
  }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status invalid_argument(std::string m) { return Status(StatusCode::kInvalidArgument, std::move(m)); }
inline Status invalid_plan(std::string m) { return Status(StatusCode::kInvalidPlan, std::move(m)); }
inline Status not_found(std::string m) { return Status(StatusCode::kNotFound, std::move(m)); }
inline Status io_error(std::string m) { return Status(StatusCode::kIoError, std::move(m)); }
inline Status unimplemented(std::string m) { return Status(StatusCode::kUnimplemented, std::move(m)); }
inline Status numeric_error(std::string m) { return Status(StatusCode::kNumericError, std::move(m)); }
inline Status internal_error(std::string m) { return Status(StatusCode::kInternal, std::move(m)); }

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit on purpose, like absl::StatusOr
  Result(Status status) : v_(std::move(status)) {}  // NOLINT

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  const T& value() const& { return std::get<T>(v_); }
  T* operator->() { return &value(); }
  T& operator*() { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace edgetune

// Return early with the Status of a failed call.
#define ET_RETURN_IF_ERROR(expr)            \
  do {                                      \
    ::edgetune::Status _et_st = (expr);     \
    if (!_et_st.ok()) return _et_st;        \
  } while (0)

#define ET_CONCAT_INNER(a, b) a##b
#define ET_CONCAT(a, b) ET_CONCAT_INNER(a, b)
// ET_ASSIGN_OR_RETURN(auto x, make_x()) — declare x from a Result or return its Status.
#define ET_ASSIGN_OR_RETURN(lhs, expr) ET_ASSIGN_OR_RETURN_IMPL(ET_CONCAT(_et_res_, __LINE__), lhs, expr)
#define ET_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return tmp.status();            \
  lhs = std::move(tmp).value()
