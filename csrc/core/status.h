// Status and Result<T>: how every fallible call in the runtime reports failure.
//
// The runtime never throws across its API (kernels, loader, executor, tools): a call returns a
// Status (ok or a code + message naming what and where) or a Result<T> holding a value or the
// Status that explains its absence. The pybind11 module turns a failed Status into a Python
// exception at the boundary; the CLI prints it and exits non-zero.
//
// A Result cannot be ok without a value: one built from an ok Status holds an kInternal error
// instead (that construction is a bug in the caller). value() on a Result that holds an error is
// a bug too: it prints the caller's file:line and the Status to stderr and calls std::abort(),
// like ExecuTorch's Result::get(); it never throws.
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
  kOutOfMemory,      // an allocation failed (the plan's memory, a data buffer)
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
inline Status out_of_memory(std::string m) { return Status(StatusCode::kOutOfMemory, std::move(m)); }
inline Status unimplemented(std::string m) { return Status(StatusCode::kUnimplemented, std::move(m)); }
inline Status numeric_error(std::string m) { return Status(StatusCode::kNumericError, std::move(m)); }
inline Status internal_error(std::string m) { return Status(StatusCode::kInternal, std::move(m)); }

namespace detail {
// Result::value() on an error: "edgetune: FILE:LINE: Result::value() on an error: <status>" on
// stderr, then std::abort(). Out of line so the message code is not inlined at every call.
[[noreturn]] void result_value_on_error(const Status& status, const char* file, int line);
// The message a Result built from an ok Status carries instead.
Status ok_status_without_value();
}  // namespace detail

// Where value() was called, for its abort message (GCC and Clang; elsewhere: unknown).
#if defined(__GNUC__) || defined(__clang__)
#define ET_CALLER_FILE __builtin_FILE()
#define ET_CALLER_LINE __builtin_LINE()
#else
#define ET_CALLER_FILE "?"
#define ET_CALLER_LINE 0
#endif

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit on purpose, like absl::StatusOr
  // An ok Status has no value to go with it: the Result holds kInternal instead.
  Result(Status status)  // NOLINT
      : v_(status.ok() ? detail::ok_status_without_value() : std::move(status)) {}

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : *std::get_if<Status>(&v_);
  }
  // The value; on an error: a message naming the caller's file:line and the Status, then abort.
  T& value(const char* file = ET_CALLER_FILE, int line = ET_CALLER_LINE) & { return *checked(file, line); }
  T&& value(const char* file = ET_CALLER_FILE, int line = ET_CALLER_LINE) && {
    return std::move(*checked(file, line));
  }
  const T& value(const char* file = ET_CALLER_FILE, int line = ET_CALLER_LINE) const& {
    return *checked(file, line);
  }
  T* operator->() { return checked(__FILE__, __LINE__); }
  T& operator*() { return *checked(__FILE__, __LINE__); }

 private:
  T* checked(const char* file, int line) {
    if (T* v = std::get_if<T>(&v_)) return v;
    detail::result_value_on_error(*std::get_if<Status>(&v_), file, line);
  }
  const T* checked(const char* file, int line) const {
    if (const T* v = std::get_if<T>(&v_)) return v;
    detail::result_value_on_error(*std::get_if<Status>(&v_), file, line);
  }

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
