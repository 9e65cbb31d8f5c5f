// DType and TensorView: what a kernel sees of a tensor.
//
// A TensorView is a non-owning, dense, row-major view: a pointer into the arena (or the
// persistent region, or the input region), a dtype and a static shape. Kernels never own or
// allocate memory; every byte they touch was placed by the memory planner at compile time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace edgetune {

// Same numbering as csrc/schema/plan.fbs (DType) and compiler/ir.py (DTYPES).
enum class DType : uint8_t { f32 = 0, f64 = 1, f16 = 2, bf16 = 3, i64 = 4, i32 = 5, i8 = 6, u8 = 7, boolean = 8 };

constexpr int kNumDTypes = 9;
size_t dtype_size(DType t);
const char* dtype_name(DType t);  // IR spelling: "f32", "i64", "bool", ...
bool dtype_from_name(const std::string& name, DType* out);

constexpr int kMaxRank = 8;

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::f32;
  int rank = 0;
  int64_t shape[kMaxRank] = {0};

  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < rank; ++i) n *= shape[i];
    return n;
  }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  int64_t dim(int i) const { return shape[i < 0 ? i + rank : i]; }
  template <typename T>
  T* as() const { return static_cast<T*>(data); }
  std::string shape_string() const;  // "f32[8,3,224,224]"
};

}  // namespace edgetune
