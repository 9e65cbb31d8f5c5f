// libFuzzer harness: the .npy reader (tools/npy.h parse_npy, the in-memory entry point read_npy
// uses after mapping the file) and what edgetune-train does with a parsed array: dtype
// conversion and row gathering. See csrc/fuzz/README.md.
// Every input must give an array or an error Status: a crash, a sanitizer report or a leak is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "tools/npy.h"

using edgetune::DType;
using edgetune::tools::NpyArray;

namespace {

constexpr size_t kMaxConvertBytes = size_t{1} << 20;  // keep conversions cheap (the data is the input's)

void use(const NpyArray& a) {
  // The parsed description must fit in the bytes it came from.
  (void)a.shape_string();
  const int64_t numel = a.numel();
  if (numel < 0) std::abort();
  if (a.data == nullptr && a.nbytes != 0) std::abort();
  if (a.rows() > 0) {
    const size_t row = a.row_bytes();
    if (row * static_cast<size_t>(a.rows()) != a.nbytes) std::abort();
    if (row <= kMaxConvertBytes) {
      const int64_t rows[2] = {0, a.rows() - 1};
      std::vector<uint8_t> dst(2 * row + 1);
      edgetune::tools::gather_rows(a, rows, 2, dst.data());
    }
  }
  if (a.nbytes > kMaxConvertBytes) return;
  for (DType to : {DType::f32, DType::f64, DType::i64, DType::i32, DType::i8, DType::u8}) {
    auto c = edgetune::tools::convert_dtype(a, to, "fuzz.npy", "input");
    if (c.ok() && c.value().numel() != numel) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto r = edgetune::tools::parse_npy(data, size, "fuzz.npy");
  if (r.ok()) {
    const NpyArray& a = r.value();
    if (a.nbytes > size || (a.nbytes && (a.data < data || a.data + a.nbytes > data + size))) std::abort();
    use(a);
  }
  return 0;
}
