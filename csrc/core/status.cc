// Status names and formatting.
#include "core/status.h"

#include <cstdio>
#include <cstdlib>

namespace edgetune {

const char* status_code_name(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "ok";
    case StatusCode::kInvalidArgument: return "invalid argument";
    case StatusCode::kInvalidPlan: return "invalid plan";
    case StatusCode::kNotFound: return "not found";
    case StatusCode::kIoError: return "I/O error";
    case StatusCode::kOutOfMemory: return "out of memory";
    case StatusCode::kUnimplemented: return "unimplemented";
    case StatusCode::kNumericError: return "numeric error";
    case StatusCode::kInternal: return "internal error";
  }
  return "unknown";
}

std::string Status::to_string() const {
  if (ok()) return "ok";
  return std::string(status_code_name(code_)) + ": " + message_;
}

namespace detail {

void result_value_on_error(const Status& status, const char* file, int line) {
  std::fprintf(stderr, "edgetune: %s:%d: Result::value() on an error: %s\n", file, line, status.to_string().c_str());
  std::fflush(stderr);
  std::abort();
}

Status ok_status_without_value() {
  return internal_error("Result constructed from an ok Status without a value");
}

}  // namespace detail

}  // namespace edgetune
