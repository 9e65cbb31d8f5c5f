// Adapter export recipes and files (see adapter_export.h).
#include "tools/adapter_export.h"

#include <sys/stat.h>
#include <sys/types.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <new>
#include <set>

#include "tools/atomic_file.h"

namespace edgetune {
namespace tools {

namespace {

// No recipe result or operand is larger than this (2^40 float64 values = 8 TiB): anything
// bigger is a malformed recipe, refused before an allocation is tried.
constexpr int64_t kMaxElements = int64_t{1} << 40;

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

std::string ints_str(const std::vector<int64_t>& v) {
  std::string out = "[";
  const size_t n = v.size() > 8 ? 8 : v.size();
  for (size_t i = 0; i < n; ++i) out += (i ? ", " : "") + std::to_string(v[i]);
  if (v.size() > n) out += ", ... (" + std::to_string(v.size()) + " in all)";
  return out + "]";
}

// The element count of `shape`; false when a dim is negative or the count exceeds kMaxElements.
bool checked_numel(const std::vector<int64_t>& shape, int64_t* out) {
  for (int64_t d : shape)
    if (d < 0) return false;
  for (int64_t d : shape)
    if (d == 0) return *out = 0, true;
  int64_t n = 1;
  for (int64_t d : shape) {
    if (n > kMaxElements / d) return false;
    n *= d;
  }
  *out = n;
  return true;
}

int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Row-major element strides of `shape`.
std::vector<int64_t> strides_of(const std::vector<int64_t>& shape) {
  std::vector<int64_t> s(shape.size(), 1);
  for (size_t i = shape.size(); i-- > 1;) s[i - 1] = s[i] * shape[i];
  return s;
}

// dst[k] = src[offset of the k-th multi-index of `shape` under `strides`] (a transpose or a
// broadcast: stride 0 repeats an element).
void strided_copy(const std::vector<int64_t>& shape, const std::vector<int64_t>& strides, const double* src, double* dst) {
  const int64_t n = numel_of(shape);
  if (n == 0) return;
  const size_t r = shape.size();
  std::vector<int64_t> idx(r, 0);
  int64_t off = 0;
  for (int64_t k = 0; k < n; ++k) {
    dst[k] = src[off];
    for (size_t d = r; d-- > 0;) {
      ++idx[d];
      off += strides[d];
      if (idx[d] < shape[d]) break;
      off -= strides[d] * shape[d];
      idx[d] = 0;
    }
  }
}

// numpy's broadcast of two shapes; false when they do not broadcast.
bool broadcast_shapes(const std::vector<int64_t>& a, const std::vector<int64_t>& b, std::vector<int64_t>* out) {
  const size_t r = a.size() > b.size() ? a.size() : b.size();
  out->assign(r, 1);
  for (size_t i = 0; i < r; ++i) {
    const int64_t da = i < r - a.size() ? 1 : a[i - (r - a.size())];
    const int64_t db = i < r - b.size() ? 1 : b[i - (r - b.size())];
    if (da == db || db == 1) (*out)[i] = da;
    else if (da == 1) (*out)[i] = db;
    else return false;
  }
  return true;
}

// The strides that read `from` (row-major) as if it had shape `to` (which it broadcasts to).
std::vector<int64_t> broadcast_strides(const std::vector<int64_t>& from, const std::vector<int64_t>& to) {
  const std::vector<int64_t> s = strides_of(from);
  std::vector<int64_t> out(to.size(), 0);
  const size_t lead = to.size() - from.size();
  for (size_t i = 0; i < from.size(); ++i) out[lead + i] = from[i] == 1 ? 0 : s[i];
  return out;
}

// Sizes `a.data` for its shape (unless shapes_only); kOutOfMemory when that fails.
Status allocate(F64Array* a, bool shapes_only) {
  if (shapes_only) return Status::Ok();
  const int64_t n = numel_of(a->shape);
  try {
    a->data.assign(static_cast<size_t>(n), 0.0);
  } catch (const std::bad_alloc&) {
    return out_of_memory("cannot allocate " + std::to_string(n) + " float64 values for an export recipe");
  }
  return Status::Ok();
}

// IEEE binary16 / bfloat16 <-> double (ebits exponent bits, mbits mantissa bits).
double decode_small_float(uint32_t bits, int ebits, int mbits) {
  const uint32_t sign = (bits >> (ebits + mbits)) & 1u;
  const uint32_t exp = (bits >> mbits) & ((1u << ebits) - 1u);
  const uint32_t man = bits & ((1u << mbits) - 1u);
  const int bias = (1 << (ebits - 1)) - 1;
  double v;
  if (exp == (1u << ebits) - 1u) {
    v = man ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  } else if (exp == 0) {
    v = std::ldexp(static_cast<double>(man), 1 - bias - mbits);
  } else {
    v = std::ldexp(1.0 + std::ldexp(static_cast<double>(man), -mbits), static_cast<int>(exp) - bias);
  }
  return sign ? -v : v;
}

// Round to nearest, ties to even, straight from double (numpy's float64 -> float16).
uint32_t encode_small_float(double x, int ebits, int mbits) {
  const uint32_t sign = std::signbit(x) ? 1u << (ebits + mbits) : 0u;
  const uint32_t exp_ones = ((1u << ebits) - 1u) << mbits;
  if (std::isnan(x)) return sign | exp_ones | (1u << (mbits - 1));
  const double a = std::fabs(x);
  const int bias = (1 << (ebits - 1)) - 1;
  const int emin = 1 - bias;
  // halfway between the largest finite value and the next power of two rounds to infinity
  const double overflow = std::ldexp(2.0 - std::ldexp(1.0, -(mbits + 1)), bias);
  if (a >= overflow) return sign | exp_ones;
  if (a < std::ldexp(1.0, emin)) {  // subnormal (a carry into the smallest normal encodes itself)
    return sign | static_cast<uint32_t>(std::nearbyint(std::ldexp(a, mbits - emin)));
  }
  int ex = 0;
  std::frexp(a, &ex);
  const int e = ex - 1;  // a = mant * 2^e, mant in [1, 2)
  const double mant = std::ldexp(a, -e);
  const uint32_t m = static_cast<uint32_t>(std::nearbyint(std::ldexp(mant - 1.0, mbits)));  // a carry bumps e
  return sign | ((static_cast<uint32_t>(e + bias) << mbits) + m);
}

double load_element(const uint8_t* p, DType t) {
  switch (t) {
    case DType::f32: { float v; std::memcpy(&v, p, 4); return v; }
    case DType::f64: { double v; std::memcpy(&v, p, 8); return v; }
    case DType::f16: { uint16_t v; std::memcpy(&v, p, 2); return decode_small_float(v, 5, 10); }
    case DType::bf16: { uint16_t v; std::memcpy(&v, p, 2); return decode_small_float(v, 8, 7); }
    case DType::i64: { int64_t v; std::memcpy(&v, p, 8); return static_cast<double>(v); }
    case DType::i32: { int32_t v; std::memcpy(&v, p, 4); return v; }
    case DType::i8: return static_cast<int8_t>(p[0]);
    case DType::u8: return p[0];
    case DType::boolean: return p[0] != 0 ? 1.0 : 0.0;
  }
  return 0;
}

// float64 values from here on round to +-inf as float32 (halfway between FLT_MAX and 2^128).
const double kFloatOverflow = std::ldexp(2.0 - std::ldexp(1.0, -24), 127);

template <typename T>
bool store_int(double v, uint8_t* p) {
  // truncation toward zero, as numpy's astype; NaN, Inf and values out of range have no integer
  if (!std::isfinite(v)) return false;
  const double t = std::trunc(v);
  const double lo = static_cast<double>(std::numeric_limits<T>::min());
  const double hi = static_cast<double>(std::numeric_limits<T>::max()) + 1.0;  // int64: exactly 2^63
  if (t < lo || t >= hi) return false;
  const T x = static_cast<T>(t);
  std::memcpy(p, &x, sizeof x);
  return true;
}

// The step as text for messages: "mm", "w 'fc.weight'", "reshape [4, 8]", "scale 0.5".
std::string describe(const ExportStep& s) {
  if (s.op == "w") return "w '" + s.name + "'";
  if (s.op == "scale") {
    char buf[40];
    std::snprintf(buf, sizeof buf, "scale %.17g", s.f);
    return buf;
  }
  if (s.op == "reshape" || s.op == "cat" || s.op == "rows") return s.op + " " + ints_str(s.ints);
  return "'" + s.op + "'";
}

// ---- the ops (shapes checked, then, unless shapes_only, values computed) ------------------------
Result<F64Array> op_transpose(const F64Array& a, bool shapes_only) {
  F64Array out;
  out.shape.assign(a.shape.rbegin(), a.shape.rend());
  ET_RETURN_IF_ERROR(allocate(&out, shapes_only));
  if (!shapes_only) {
    const std::vector<int64_t> s = strides_of(a.shape);
    strided_copy(out.shape, std::vector<int64_t>(s.rbegin(), s.rend()), a.data.data(), out.data.data());
  }
  return out;
}

}  // namespace

int64_t F64Array::numel() const { return numel_of(shape); }

RecipeState::RecipeState(const std::vector<SafetensorsEntry>& entries) : entries_(entries) {
  for (size_t i = 0; i < entries.size(); ++i) index_.emplace(entries[i].name, i);
}

const SafetensorsEntry* RecipeState::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

Result<F64Array> evaluate_recipe(const std::vector<ExportStep>& steps, const RecipeState& state,
                                 const std::string& where, bool shapes_only) {
  std::vector<F64Array> stack;
  for (size_t i = 0; i < steps.size(); ++i) {
    const ExportStep& s = steps[i];
    auto fail = [&](const std::string& what) {
      return invalid_plan(where + ": malformed export recipe: step " + std::to_string(i + 1) + " of " +
                          std::to_string(steps.size()) + " (" + describe(s) + "): " + what);
    };
    auto pop = [&](size_t n, std::vector<F64Array>* out) -> Status {
      if (stack.size() < n)
        return fail("stack underflow (it takes " + std::to_string(n) + " operand" + (n == 1 ? "" : "s") +
                    ", the stack holds " + std::to_string(stack.size()) + ")");
      out->clear();
      for (size_t k = stack.size() - n; k < stack.size(); ++k) out->push_back(std::move(stack[k]));
      stack.resize(stack.size() - n);
      return Status::Ok();
    };
    std::vector<F64Array> in;
    F64Array out;
    if (s.op == "w") {
      const SafetensorsEntry* e = state.find(s.name);
      if (!e) return fail("the plan has no weight '" + s.name + "'");
      out.shape = e->shape;
      int64_t n = 0;
      if (!checked_numel(out.shape, &n)) return fail("weight '" + s.name + "' has shape " + shape_str(out.shape));
      ET_RETURN_IF_ERROR(allocate(&out, shapes_only));
      if (!shapes_only) {
        const size_t item = dtype_size(e->dtype);
        if (e->nbytes != static_cast<size_t>(n) * item || (n > 0 && e->data == nullptr))
          return internal_error(where + ": weight '" + s.name + "' has no data of its size");
        const uint8_t* p = static_cast<const uint8_t*>(e->data);
        for (int64_t k = 0; k < n; ++k) out.data[static_cast<size_t>(k)] = load_element(p + static_cast<size_t>(k) * item, e->dtype);
      }
    } else if (s.op == "t") {
      ET_RETURN_IF_ERROR(pop(1, &in));
      ET_ASSIGN_OR_RETURN(out, op_transpose(in[0], shapes_only));
    } else if (s.op == "mm") {
      ET_RETURN_IF_ERROR(pop(2, &in));
      const F64Array &a = in[0], &b = in[1];
      const std::string operands = " (operands " + shape_str(a.shape) + " and " + shape_str(b.shape) + ")";
      if (a.shape.empty() || b.shape.empty()) return fail("operands must have at least one dimension" + operands);
      if (a.shape[0] == 0 || b.shape[0] == 0) return fail("an operand's first dimension is 0" + operands);
      const int64_t m = a.shape[0], k = a.numel() / m;
      if (b.shape[0] != k)
        return fail("shape mismatch: [" + std::to_string(m) + ", " + std::to_string(k) + "] @ [" +
                    std::to_string(b.shape[0]) + ", " + std::to_string(b.numel() / b.shape[0]) + "]" + operands);
      const int64_t n = b.numel() / k;
      out.shape = {m, n};
      int64_t total = 0;
      if (!checked_numel(out.shape, &total)) return fail("the result " + shape_str(out.shape) + " is too large");
      ET_RETURN_IF_ERROR(allocate(&out, shapes_only));
      if (!shapes_only) {
        for (int64_t r = 0; r < m; ++r) {
          double* o = out.data.data() + r * n;
          for (int64_t p = 0; p < k; ++p) {
            const double x = a.data[static_cast<size_t>(r * k + p)];
            const double* brow = b.data.data() + p * n;
            for (int64_t c = 0; c < n; ++c) o[c] += x * brow[c];
          }
        }
      }
    } else if (s.op == "reshape") {
      ET_RETURN_IF_ERROR(pop(1, &in));
      const F64Array& a = in[0];
      int64_t known = 1, infer = -1;
      bool zero = false;
      for (size_t d = 0; d < s.ints.size(); ++d) {
        const int64_t v = s.ints[d];
        if (v == -1) {
          if (infer >= 0) return fail("more than one -1 in the shape");
          infer = static_cast<int64_t>(d);
        } else if (v < 0) {
          return fail("negative dimension " + std::to_string(v));
        } else if (v == 0) {
          zero = true;
        } else {
          if (known > kMaxElements / v) return fail("cannot reshape " + shape_str(a.shape) + " into " + ints_str(s.ints));
          known *= v;
        }
      }
      if (zero) known = 0;
      if (s.ints.size() > static_cast<size_t>(kMaxRank))
        return fail("shape of rank " + std::to_string(s.ints.size()) + " (at most " + std::to_string(kMaxRank) + ")");
      out.shape = s.ints;
      const int64_t n = a.numel();
      if (infer >= 0) {
        if (known == 0 || n % known != 0)
          return fail("shape mismatch: cannot reshape " + shape_str(a.shape) + " (" + std::to_string(n) +
                      " values) into " + ints_str(s.ints));
        out.shape[static_cast<size_t>(infer)] = n / known;
      } else if (known != n) {
        return fail("shape mismatch: cannot reshape " + shape_str(a.shape) + " (" + std::to_string(n) +
                    " values) into " + ints_str(s.ints));
      }
      out.data = std::move(in[0].data);
    } else if (s.op == "scale") {
      ET_RETURN_IF_ERROR(pop(1, &in));
      out = std::move(in[0]);
      for (double& v : out.data) v *= s.f;
    } else if (s.op == "add" || s.op == "sub" || s.op == "mul" || s.op == "div") {
      ET_RETURN_IF_ERROR(pop(2, &in));
      const F64Array &a = in[0], &b = in[1];
      if (!broadcast_shapes(a.shape, b.shape, &out.shape))
        return fail("shape mismatch: " + shape_str(a.shape) + " and " + shape_str(b.shape) + " do not broadcast");
      int64_t total = 0;
      if (!checked_numel(out.shape, &total)) return fail("the result " + shape_str(out.shape) + " is too large");
      ET_RETURN_IF_ERROR(allocate(&out, shapes_only));
      if (!shapes_only && total > 0) {
        F64Array ab, bb;
        ab.shape = bb.shape = out.shape;
        ET_RETURN_IF_ERROR(allocate(&ab, false));
        ET_RETURN_IF_ERROR(allocate(&bb, false));
        strided_copy(out.shape, broadcast_strides(a.shape, out.shape), a.data.data(), ab.data.data());
        strided_copy(out.shape, broadcast_strides(b.shape, out.shape), b.data.data(), bb.data.data());
        const char o = s.op[0] == 'a' ? '+' : s.op[0] == 's' ? '-' : s.op[0] == 'm' ? '*' : '/';
        for (size_t k = 0; k < out.data.size(); ++k) {
          const double x = ab.data[k], y = bb.data[k];
          out.data[k] = o == '+' ? x + y : o == '-' ? x - y : o == '*' ? x * y : x / y;
        }
      }
    } else if (s.op == "rownorm") {
      ET_RETURN_IF_ERROR(pop(1, &in));
      const F64Array& a = in[0];
      if (a.shape.empty() || a.shape[0] == 0)
        return fail("the operand " + shape_str(a.shape) + " has no rows (it needs a first dimension > 0)");
      const int64_t m = a.shape[0], k = a.numel() / m;
      out.shape = {m};
      ET_RETURN_IF_ERROR(allocate(&out, shapes_only));
      if (!shapes_only) {
        for (int64_t r = 0; r < m; ++r) {
          double sum = 0;
          for (int64_t c = 0; c < k; ++c) {
            const double v = a.data[static_cast<size_t>(r * k + c)];
            sum += v * v;
          }
          out.data[static_cast<size_t>(r)] = std::sqrt(sum);
        }
      }
    } else if (s.op == "cat") {
      if (s.ints.size() != 2) return fail("takes [axis, n], got " + ints_str(s.ints));
      const int64_t n = s.ints[1];
      if (n < 1) return fail("needs at least one tensor, got n = " + std::to_string(n));
      if (static_cast<uint64_t>(n) > stack.size())
        return fail("stack underflow (it takes " + std::to_string(n) + " operands, the stack holds " +
                    std::to_string(stack.size()) + ")");
      ET_RETURN_IF_ERROR(pop(static_cast<size_t>(n), &in));
      const size_t rank = in[0].shape.size();
      std::string shapes;
      for (const auto& x : in) shapes += (shapes.empty() ? "" : ", ") + shape_str(x.shape);
      if (rank == 0) return fail("cannot concatenate 0-dimensional tensors (" + shapes + ")");
      int64_t axis = s.ints[0];
      if (axis < -static_cast<int64_t>(rank) || axis >= static_cast<int64_t>(rank))
        return fail("axis " + std::to_string(axis) + " is out of range for rank " + std::to_string(rank));
      if (axis < 0) axis += static_cast<int64_t>(rank);
      const size_t ax = static_cast<size_t>(axis);
      out.shape = in[0].shape;
      out.shape[ax] = 0;
      for (const auto& x : in) {
        bool fits = x.shape.size() == rank;
        for (size_t d = 0; fits && d < rank; ++d) fits = d == ax || x.shape[d] == in[0].shape[d];
        if (!fits) return fail("shape mismatch along the other axes: " + shapes);
        if (out.shape[ax] > kMaxElements - x.shape[ax]) return fail("the result is too large");
        out.shape[ax] += x.shape[ax];
      }
      int64_t total = 0;
      if (!checked_numel(out.shape, &total)) return fail("the result " + shape_str(out.shape) + " is too large");
      ET_RETURN_IF_ERROR(allocate(&out, shapes_only));
      if (!shapes_only && total > 0) {
        int64_t outer = 1, inner = 1;
        for (size_t d = 0; d < ax; ++d) outer *= out.shape[d];
        for (size_t d = ax + 1; d < rank; ++d) inner *= out.shape[d];
        double* o = out.data.data();
        for (int64_t r = 0; r < outer; ++r)
          for (const auto& x : in) {
            const int64_t chunk = x.shape[ax] * inner;
            std::memcpy(o, x.data.data() + r * chunk, static_cast<size_t>(chunk) * sizeof(double));
            o += chunk;
          }
      }
    } else if (s.op == "rows") {
      ET_RETURN_IF_ERROR(pop(2, &in));
      const F64Array &base = in[0], &rows = in[1];
      if (base.shape.empty()) return fail("the base tensor is 0-dimensional (it needs rows)");
      const int64_t d0 = base.shape[0];
      std::vector<int64_t> index(s.ints.size());
      for (size_t k = 0; k < s.ints.size(); ++k) {
        const int64_t v = s.ints[k];
        if (v < -d0 || v >= d0)
          return fail("index " + std::to_string(v) + " is out of range for " + std::to_string(d0) + " rows");
        index[k] = v < 0 ? v + d0 : v;
      }
      std::vector<int64_t> target = base.shape;
      target[0] = static_cast<int64_t>(index.size());
      std::vector<int64_t> joint;
      if (rows.shape.size() > target.size() || !broadcast_shapes(rows.shape, target, &joint) || joint != target)
        return fail("shape mismatch: rows " + shape_str(rows.shape) + " do not fit " + shape_str(target) + " (" +
                    std::to_string(index.size()) + " rows of " + shape_str(base.shape) + ")");
      out.shape = base.shape;
      if (!shapes_only) {
        out.data = base.data;
        F64Array rb;
        rb.shape = target;
        ET_RETURN_IF_ERROR(allocate(&rb, false));
        strided_copy(target, broadcast_strides(rows.shape, target), rows.data.data(), rb.data.data());
        const int64_t row = d0 > 0 ? base.numel() / d0 : 0;
        for (size_t k = 0; k < index.size(); ++k)
          if (row > 0)
            std::memcpy(out.data.data() + index[k] * row, rb.data.data() + static_cast<int64_t>(k) * row,
                        static_cast<size_t>(row) * sizeof(double));
      }
    } else {
      return fail("unknown export step '" + s.op + "'");
    }
    stack.push_back(std::move(out));
  }
  if (stack.size() != 1)
    return invalid_plan(where + ": malformed export recipe: it leaves " + std::to_string(stack.size()) +
                        " results (one expected)");
  return std::move(stack[0]);
}

Status store_as(const F64Array& a, DType dtype, uint8_t* out, const std::string& where) {
  const size_t item = dtype_size(dtype);
  for (size_t k = 0; k < a.data.size(); ++k) {
    const double v = a.data[k];
    uint8_t* p = out + k * item;
    bool ok = true;
    switch (dtype) {
      case DType::f32: {
        // numpy's astype: nearest, and beyond float's range +-inf (where a plain cast is undefined)
        const double a = std::fabs(v);
        const float f = !std::isfinite(v) ? static_cast<float>(v)
                        : a >= kFloatOverflow ? std::copysign(std::numeric_limits<float>::infinity(), static_cast<float>(v))
                        : a > std::numeric_limits<float>::max() ? std::copysign(std::numeric_limits<float>::max(), static_cast<float>(v))
                        : static_cast<float>(v);
        std::memcpy(p, &f, 4);
        break;
      }
      case DType::f64: std::memcpy(p, &v, 8); break;
      case DType::f16: { const uint16_t h = static_cast<uint16_t>(encode_small_float(v, 5, 10)); std::memcpy(p, &h, 2); break; }
      case DType::bf16: { const uint16_t h = static_cast<uint16_t>(encode_small_float(v, 8, 7)); std::memcpy(p, &h, 2); break; }
      case DType::i64: ok = store_int<int64_t>(v, p); break;
      case DType::i32: ok = store_int<int32_t>(v, p); break;
      case DType::i8: ok = store_int<int8_t>(v, p); break;
      case DType::u8: ok = store_int<uint8_t>(v, p); break;
      case DType::boolean: p[0] = v != 0 ? 1 : 0; break;  // NaN is true, as numpy's
    }
    if (!ok) {
      char buf[40];
      std::snprintf(buf, sizeof buf, "%.17g", v);
      return numeric_error(where + ": value " + buf + " (element " + std::to_string(k) + ") cannot be stored as " +
                           dtype_name(dtype));
    }
  }
  return Status::Ok();
}

size_t ExportedTensors::data_bytes() const {
  size_t n = 0;
  for (const auto& e : entries) n += e.nbytes;
  return n;
}

namespace {

// One recipe's result as a safetensors entry of `dtype` (its bytes in `out->storage`).
Status add_computed(ExportedTensors* out, const std::string& name, const std::vector<ExportStep>& steps,
                    const RecipeState& state, DType dtype, const std::string& where, bool shapes_only) {
  ET_ASSIGN_OR_RETURN(F64Array a, evaluate_recipe(steps, state, where, shapes_only));
  SafetensorsEntry e;
  e.name = name;
  e.dtype = dtype;
  e.shape = a.shape;
  e.nbytes = static_cast<size_t>(a.numel()) * dtype_size(dtype);
  if (!shapes_only) {
    std::unique_ptr<uint8_t[]> bytes;
    try {
      bytes.reset(new uint8_t[e.nbytes ? e.nbytes : 1]);
    } catch (const std::bad_alloc&) {
      return out_of_memory(where + ": cannot allocate " + std::to_string(e.nbytes) + " bytes");
    }
    ET_RETURN_IF_ERROR(store_as(a, dtype, bytes.get(), where));
    e.data = bytes.get();
    out->storage.push_back(std::move(bytes));
  }
  out->entries.push_back(std::move(e));
  return Status::Ok();
}

}  // namespace

Result<ExportedTensors> export_tensors(const std::vector<ExportTensor>& recipes, const RecipeState& state,
                                       bool like_state, const std::string& what, bool shapes_only) {
  ExportedTensors out;
  for (const auto& r : recipes) {
    const SafetensorsEntry* like = like_state ? state.find(r.name) : nullptr;
    ET_RETURN_IF_ERROR(add_computed(&out, r.name, r.steps, state, like ? like->dtype : DType::f32,
                                    what + " '" + r.name + "'", shapes_only));
  }
  return out;
}

std::string unmergeable_reasons(const ExportTable& table) {
  std::string s;
  for (const auto& r : table.unmergeable) s += (s.empty() ? "" : "; ") + r;
  return s;
}

bool is_hidden(const ExportTable* table, const std::string& name) {
  if (!table) return false;
  for (const auto& h : table->hidden)
    if (h == name) return true;
  return false;
}

Result<ExportedTensors> merged_tensors(const ExportTable& table, const RecipeState& state, bool shapes_only) {
  if (!table.unmergeable.empty())
    return invalid_argument("the adapters cannot be merged into the base weights: " + unmergeable_reasons(table));
  std::set<std::string> skip(table.hidden.begin(), table.hidden.end());
  skip.insert(table.drop_when_merged.begin(), table.drop_when_merged.end());
  std::unordered_map<std::string, const ExportTensor*> recipe;
  for (const auto& r : table.merged) recipe[r.name] = &r;  // a repeated name: the last one, as a dict
  ExportedTensors out;
  std::set<std::string> done;
  for (const SafetensorsEntry& w : state.entries()) {
    if (skip.count(w.name)) continue;
    auto it = recipe.find(w.name);
    if (it == recipe.end()) {
      out.entries.push_back(w);  // unchanged: points at the weight's own bytes
      continue;
    }
    ET_RETURN_IF_ERROR(add_computed(&out, w.name, it->second->steps, state, w.dtype, "merged '" + w.name + "'", shapes_only));
    done.insert(w.name);
  }
  for (const auto& r : table.merged) {  // not a kept weight: appended, as Python's dict does
    if (done.count(r.name) || recipe[r.name] != &r) continue;
    const SafetensorsEntry* like = state.find(r.name);
    ET_RETURN_IF_ERROR(add_computed(&out, r.name, r.steps, state, like ? like->dtype : DType::f32,
                                    "merged '" + r.name + "'", shapes_only));
    done.insert(r.name);
  }
  return out;
}

Result<std::vector<AdapterFile>> adapter_files(const ExportTable& table, const RecipeState& state, bool shapes_only) {
  std::vector<AdapterFile> files;
  if (table.has_peft) {
    AdapterFile config;
    config.name = "adapter_config.json";
    config.json = true;
    config.text = table.peft_config;
    AdapterFile model;
    model.name = "adapter_model.safetensors";
    ET_ASSIGN_OR_RETURN(model.tensors, export_tensors(table.peft_tensors, state, false, "adapter tensor", shapes_only));
    files.push_back(std::move(config));
    files.push_back(std::move(model));
  }
  AdapterFile config;
  config.name = "edgetune_adapter.json";
  config.json = true;
  config.text = table.own_config;
  AdapterFile own;
  own.name = "edgetune_adapter.safetensors";
  ET_ASSIGN_OR_RETURN(own.tensors, export_tensors(table.own_tensors, state, true, "adapter tensor", shapes_only));
  files.push_back(std::move(config));
  files.push_back(std::move(own));
  return files;
}

Metadata export_metadata(int64_t steps) {
  return {{"format", "pt"}, {"producer", "edgetune"}, {"steps", std::to_string(steps)}};
}

std::string join_path(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

Status write_adapter_files(const std::string& dir, const std::vector<AdapterFile>& files, const Metadata& metadata) {
  for (const auto& f : files) {
    const std::string path = join_path(dir, f.name);
    if (f.json) {
      ET_ASSIGN_OR_RETURN(auto file, AtomicFile::create(path));
      ET_RETURN_IF_ERROR(file->write(f.text.data(), f.text.size()));
      ET_RETURN_IF_ERROR(file->commit());
    } else {
      ET_RETURN_IF_ERROR(write_safetensors(path, f.tensors.entries, metadata));
    }
  }
  return Status::Ok();
}

Status make_directories(const std::string& dir) {
  if (dir.empty()) return invalid_argument("empty directory name");
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = dir.find('/', pos + 1);
    const std::string part = dir.substr(0, pos);
    if (part.empty() || part == "/") continue;
    struct stat st;
    if (::stat(part.c_str(), &st) == 0) {
      if (!S_ISDIR(st.st_mode)) return invalid_argument(part + " exists and is not a directory");
      continue;
    }
    if (::mkdir(part.c_str(), 0777) != 0) {
      const int e = errno;
      if (e != EEXIST) return io_error("cannot create directory " + part + ": " + std::strerror(e));
    }
  }
  return Status::Ok();
}

}  // namespace tools
}  // namespace edgetune
