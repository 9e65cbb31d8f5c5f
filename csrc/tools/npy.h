// Reading .npy files (numpy.save) for edgetune-train's training data.
//
// Accepts format versions 1.0, 2.0 and 3.0, C order, little-endian (or single-byte) dtypes
// <f4 <f8 <i8 <i4 |i1 |u1 |b1. Everything else is refused with a message that says what the file
// holds and how to re-save it (Fortran order, big-endian, structured dtypes, object arrays).
// read_npy() maps the file read-only instead of copying it: a dataset larger than the free RAM
// still works when each step only touches a batch of rows.
//
// Also the data side of binding a file to a plan input: shape checks against the plan's
// per-sample shape, same-kind dtype conversion (f64 -> f32, i32 -> i64, ...), and gathering the
// rows of a batch into the runtime's input buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"

namespace edgetune {
namespace tools {

struct NpyArray {
  DType dtype = DType::f32;
  std::vector<int64_t> shape;  // shape[0] = samples
  const uint8_t* data = nullptr;  // C-order element bytes, little-endian
  size_t nbytes = 0;
  std::shared_ptr<const void> storage;  // keeps `data` alive (a file mapping or a buffer)

  int64_t numel() const;
  int64_t rows() const { return shape.empty() ? 0 : shape[0]; }
  size_t row_bytes() const;  // bytes of one sample
  std::string shape_string() const;  // "f32[100,32]"
};

// "[100,32]" — shapes in messages are written the same way everywhere.
std::string shape_list(const std::vector<int64_t>& shape);

// The .npy dtype string ('descr') numpy.save writes for `t`: "<f4", "<i8", "|b1", ...; "" for a
// dtype edgetune-train does not read (f16, bf16).
const char* npy_descr(DType t);

// Parses an in-memory .npy image. `where` names it in errors (a path). `storage` is kept in the
// result and must own `bytes`.
Result<NpyArray> parse_npy(const uint8_t* bytes, size_t size, const std::string& where,
                           std::shared_ptr<const void> storage = nullptr);
// Maps and parses a file.
Result<NpyArray> read_npy(const std::string& path);

// The array as `to` (same data if it already is). Allowed: float -> float (f64/f32) and
// integer -> integer (i64/i32/i8/u8), with a range check when narrowing integers; anything else
// (float data for an integer input, bool, f16) is an error naming `where` and `what`.
Result<NpyArray> convert_dtype(const NpyArray& a, DType to, const std::string& where, const std::string& what);

// Checks file `path` (array `a`) against plan input `name` whose full shape (batch first) is
// `input`; returns the array converted to the input's dtype. A bool input's bytes must be 0 or 1.
Result<NpyArray> bind_to_input(const NpyArray& a, const std::string& path, const std::string& name,
                               const TensorView& input);

// Copies rows `rows[0..count)` of `a` one after another into `dst` (count * row_bytes bytes).
void gather_rows(const NpyArray& a, const int64_t* rows, int64_t count, void* dst);

}  // namespace tools
}  // namespace edgetune
