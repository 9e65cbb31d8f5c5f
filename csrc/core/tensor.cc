// DType tables and TensorView formatting.
#include "core/tensor.h"

namespace edgetune {

namespace {
struct DTypeInfo {
  const char* name;
  size_t size;
};
constexpr DTypeInfo kDTypes[kNumDTypes] = {
    {"f32", 4}, {"f64", 8}, {"f16", 2}, {"bf16", 2}, {"i64", 8},
    {"i32", 4}, {"i8", 1},  {"u8", 1},  {"bool", 1},
};
}  // namespace

size_t dtype_size(DType t) {
  auto i = static_cast<size_t>(t);
  return i < kNumDTypes ? kDTypes[i].size : 0;
}

const char* dtype_name(DType t) {
  auto i = static_cast<size_t>(t);
  return i < kNumDTypes ? kDTypes[i].name : "?";
}

bool dtype_from_name(const std::string& name, DType* out) {
  for (int i = 0; i < kNumDTypes; ++i) {
    if (name == kDTypes[i].name) {
      *out = static_cast<DType>(i);
      return true;
    }
  }
  return false;
}

std::string TensorView::shape_string() const {
  std::string s = dtype_name(dtype);
  s += "[";
  for (int i = 0; i < rank; ++i) {
    if (i) s += ",";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

}  // namespace edgetune
