// .npy parsing, mapping, dtype conversion and row gathering (see npy.h).
#include "tools/npy.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <limits>
#include <new>
#include <type_traits>

namespace edgetune {
namespace tools {

namespace {

bool host_is_little_endian() {
  const uint16_t one = 1;
  uint8_t first;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

// The header is a Python dict literal, e.g.
//   {'descr': '<f4', 'fortran_order': False, 'shape': (100, 32), }
// This reads exactly the subset numpy writes: string keys; string, True/False/None, and
// tuples/lists of integers as values (a list of tuples — a structured dtype — is recognised only
// to be refused by name).
class HeaderParser {
 public:
  HeaderParser(const std::string& text, const std::string& where) : s_(text), where_(where) {}

  Status parse() {
    skip_ws();
    if (!eat('{')) return fail("header does not start with '{'");
    skip_ws();
    while (!eat('}')) {
      std::string key;
      ET_RETURN_IF_ERROR(parse_string(&key));
      skip_ws();
      if (!eat(':')) return fail("expected ':' after '" + key + "'");
      skip_ws();
      ET_RETURN_IF_ERROR(parse_value(key));
      skip_ws();
      if (eat(',')) {
        skip_ws();
        continue;
      }
      if (peek() != '}') return fail("expected ',' or '}' after the value of '" + key + "'");
    }
    if (!have_descr_) return fail("header has no 'descr'");
    if (!have_order_) return fail("header has no 'fortran_order'");
    if (!have_shape_) return fail("header has no 'shape'");
    return Status::Ok();
  }

  std::string descr;
  bool structured = false;
  bool fortran_order = false;
  std::vector<int64_t> shape;

 private:
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  bool eat(char c) {
    if (peek() != c) return false;
    ++pos_;
    return true;
  }
  void skip_ws() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  Status fail(const std::string& what) const {
    return invalid_argument(where_ + ": not a valid .npy header (" + what + " at header byte " + std::to_string(pos_) +
                            ")");
  }

  Status parse_string(std::string* out) {
    char q = peek();
    if (q != '\'' && q != '"') return fail("expected a quoted string");
    ++pos_;
    out->clear();
    while (pos_ < s_.size() && s_[pos_] != q) {
      if (s_[pos_] == '\\' && pos_ + 1 < s_.size()) ++pos_;
      out->push_back(s_[pos_++]);
    }
    if (!eat(q)) return fail("unterminated string");
    return Status::Ok();
  }

  Status parse_word(std::string* out) {
    out->clear();
    while (pos_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[pos_])) || s_[pos_] == '_')) {
      out->push_back(s_[pos_++]);
    }
    if (out->empty()) return fail("expected a value");
    return Status::Ok();
  }

  Status parse_int_tuple(std::vector<int64_t>* out) {
    char close = peek() == '(' ? ')' : ']';
    ++pos_;
    out->clear();
    skip_ws();
    while (!eat(close)) {
      if (!std::isdigit(static_cast<unsigned char>(peek()))) return fail("expected a non-negative integer in the shape");
      int64_t v = 0;
      while (std::isdigit(static_cast<unsigned char>(peek()))) {
        int d = s_[pos_++] - '0';
        if (v > (std::numeric_limits<int64_t>::max() - d) / 10) return fail("shape dimension overflows 64 bits");
        v = v * 10 + d;
      }
      eat('L');  // Python 2 wrote long literals as 3L
      out->push_back(v);
      skip_ws();
      if (eat(',')) {
        skip_ws();
      } else if (peek() != close) {
        return fail("expected ',' in the shape");
      }
    }
    return Status::Ok();
  }

  // Skips any Python literal (used for keys we do not know and for structured descrs). Nesting
  // is bounded: a header of 100,000 '[' must be an error, not a stack overflow.
  static constexpr int kMaxNesting = 64;
  Status skip_value(int depth = 0) {
    char c = peek();
    if (c == '\'' || c == '"') {
      std::string tmp;
      return parse_string(&tmp);
    }
    if (c == '(' || c == '[' || c == '{') {
      if (depth >= kMaxNesting) {
        return fail("brackets nested deeper than " + std::to_string(kMaxNesting) + " levels");
      }
      char close = c == '(' ? ')' : c == '[' ? ']' : '}';
      ++pos_;
      skip_ws();
      while (!eat(close)) {
        ET_RETURN_IF_ERROR(skip_value(depth + 1));
        skip_ws();
        if (eat(':') || eat(',')) skip_ws();
        if (pos_ >= s_.size()) return fail("unterminated bracket");
      }
      return Status::Ok();
    }
    if (c == '-' || c == '+') ++pos_;
    std::string word;
    return parse_word(&word);
  }

  Status parse_value(const std::string& key) {
    if (key == "descr") {
      have_descr_ = true;
      if (peek() == '[') {
        structured = true;
        return skip_value();
      }
      return parse_string(&descr);
    }
    if (key == "fortran_order") {
      have_order_ = true;
      std::string w;
      ET_RETURN_IF_ERROR(parse_word(&w));
      if (w != "True" && w != "False") return fail("'fortran_order' must be True or False, got " + w);
      fortran_order = w == "True";
      return Status::Ok();
    }
    if (key == "shape") {
      have_shape_ = true;
      if (peek() != '(' && peek() != '[') return fail("'shape' must be a tuple");
      return parse_int_tuple(&shape);
    }
    return skip_value();
  }

  const std::string& s_;
  const std::string& where_;
  size_t pos_ = 0;
  bool have_descr_ = false, have_order_ = false, have_shape_ = false;
};

Status dtype_from_descr(const std::string& descr, DType* out, const std::string& where) {
  static const struct {
    const char* code;
    DType dtype;
  } kCodes[] = {{"f4", DType::f32}, {"f8", DType::f64}, {"i8", DType::i64}, {"i4", DType::i32},
                {"i1", DType::i8},  {"u1", DType::u8},  {"b1", DType::boolean}};
  if (descr.size() == 3) {
    char order = descr[0];
    std::string code = descr.substr(1);
    for (const auto& c : kCodes) {
      if (code != c.code) continue;
      bool one_byte = dtype_size(c.dtype) == 1;
      if (order == '<' || order == '|' || (one_byte && (order == '>' || order == '='))) {
        *out = c.dtype;
        return Status::Ok();
      }
      if (order == '>') {
        return invalid_argument(where + ": big-endian data ('" + descr +
                                "') is not supported; save it little-endian, e.g. np.save(path, a.astype('<" + code +
                                "'))");
      }
      if (order == '=' && host_is_little_endian()) {
        *out = c.dtype;
        return Status::Ok();
      }
    }
  }
  return invalid_argument(where + ": unsupported dtype '" + descr +
                          "' (edgetune-train reads <f4, <f8, <i8, <i4, |i1, |u1, |b1; convert with a.astype(np.float32) "
                          "or a.astype(np.int64))");
}

bool checked_numel(const std::vector<int64_t>& shape, int64_t* out) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return false;
    if (d != 0 && n > std::numeric_limits<int64_t>::max() / d) return false;
    n *= d;
  }
  *out = n;
  return true;
}

struct Mapping {
  void* addr = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (addr) munmap(addr, size);
  }
};

std::string errno_text(int e) { return std::strerror(e); }

}  // namespace

int64_t NpyArray::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

size_t NpyArray::row_bytes() const {
  size_t n = dtype_size(dtype);
  for (size_t i = 1; i < shape.size(); ++i) n *= static_cast<size_t>(shape[i]);
  return n;
}

std::string shape_list(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ",";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

const char* npy_descr(DType t) {
  switch (t) {
    case DType::f32: return "<f4";
    case DType::f64: return "<f8";
    case DType::i64: return "<i8";
    case DType::i32: return "<i4";
    case DType::i8: return "|i1";
    case DType::u8: return "|u1";
    case DType::boolean: return "|b1";
    default: return "";
  }
}

std::string NpyArray::shape_string() const { return std::string(dtype_name(dtype)) + shape_list(shape); }

Result<NpyArray> parse_npy(const uint8_t* bytes, size_t size, const std::string& where,
                           std::shared_ptr<const void> storage) {
  static const uint8_t kMagic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  if (size < 10 || std::memcmp(bytes, kMagic, 6) != 0) {
    return invalid_argument(where + ": not a .npy file (no \\x93NUMPY magic at the start; write it with numpy.save)");
  }
  if (!host_is_little_endian()) {
    return unimplemented(where + ": reading .npy on a big-endian host is not implemented");
  }
  const int major = bytes[6], minor = bytes[7];
  size_t header_len = 0, header_start = 0;
  if (major == 1) {
    header_len = static_cast<size_t>(bytes[8]) | static_cast<size_t>(bytes[9]) << 8;
    header_start = 10;
  } else if (major == 2 || major == 3) {
    if (size < 12) return invalid_argument(where + ": truncated .npy file (" + std::to_string(size) + " bytes)");
    header_len = static_cast<size_t>(bytes[8]) | static_cast<size_t>(bytes[9]) << 8 |
                 static_cast<size_t>(bytes[10]) << 16 | static_cast<size_t>(bytes[11]) << 24;
    header_start = 12;
  } else {
    return invalid_argument(where + ": .npy format version " + std::to_string(major) + "." + std::to_string(minor) +
                            " is not supported (1.0, 2.0 and 3.0 are)");
  }
  if (header_len > size - header_start) {
    return invalid_argument(where + ": truncated .npy file: the header says " + std::to_string(header_len) +
                            " header bytes, the file has " + std::to_string(size - header_start) + " after the preamble");
  }
  std::string header(reinterpret_cast<const char*>(bytes + header_start), header_len);
  HeaderParser p(header, where);
  ET_RETURN_IF_ERROR(p.parse());
  if (p.structured) {
    return invalid_argument(where + ": structured (record) dtypes are not supported; save one plain array per file");
  }
  NpyArray a;
  ET_RETURN_IF_ERROR(dtype_from_descr(p.descr, &a.dtype, where));
  a.shape = p.shape;
  // Fortran order only differs from C order with two or more axes of size > 1.
  int big_axes = 0;
  for (int64_t d : a.shape) big_axes += d > 1;
  if (p.fortran_order && big_axes > 1) {
    return invalid_argument(where + ": the array is stored in Fortran (column-major) order; re-save it in C order: "
                            "np.save(path, np.ascontiguousarray(a))");
  }
  if (a.shape.empty()) {
    return invalid_argument(where + ": holds a 0-d array; training data needs a first axis of samples");
  }
  int64_t numel = 0;
  if (!checked_numel(a.shape, &numel) ||
      static_cast<uint64_t>(numel) > std::numeric_limits<size_t>::max() / dtype_size(a.dtype)) {
    return invalid_argument(where + ": shape " + shape_list(a.shape) + " is too large");
  }
  a.nbytes = static_cast<size_t>(numel) * dtype_size(a.dtype);
  const size_t data_start = header_start + header_len;
  if (a.nbytes > size - data_start) {
    return invalid_argument(where + ": truncated .npy file: shape " + shape_list(a.shape) + " of " + p.descr + " needs " +
                            std::to_string(a.nbytes) + " data bytes, the file has " +
                            std::to_string(size - data_start));
  }
  a.data = bytes + data_start;
  a.storage = std::move(storage);
  return a;
}

Result<NpyArray> read_npy(const std::string& path) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer; only regular files are read.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    int e = errno;
    if (e == ENOENT) return not_found(path + ": no such file");
    return io_error(path + ": cannot open: " + errno_text(e));
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    return io_error(path + ": cannot stat: " + errno_text(e));
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    return invalid_argument(path + ": is a directory, not a .npy file");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return invalid_argument(path + ": is not a regular file (a FIFO, device or socket); give a .npy file");
  }
  auto size = static_cast<size_t>(st.st_size);
  if (size < 10) {
    ::close(fd);
    return invalid_argument(path + ": not a .npy file (" + std::to_string(size) + " bytes)");
  }
  auto map = std::make_shared<Mapping>();
  map->addr = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int e = errno;
  ::close(fd);  // the mapping keeps the file
  if (map->addr == MAP_FAILED) {
    map->addr = nullptr;
    if (e == ENOMEM) return out_of_memory(path + ": cannot map " + std::to_string(size) + " bytes: " + errno_text(e));
    return io_error(path + ": cannot map: " + errno_text(e));
  }
  map->size = size;
  const auto* bytes = static_cast<const uint8_t*>(map->addr);
  return parse_npy(bytes, size, path, map);
}

namespace {

template <typename From, typename To>
void cast_all(const uint8_t* src, uint8_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    From v;
    std::memcpy(&v, src + i * sizeof(From), sizeof(From));
    To w;
    if constexpr (std::is_same_v<From, double> && std::is_same_v<To, float>) {
      // Out-of-range double -> float is undefined behaviour in C++; make it the IEEE result
      // (+-inf) explicitly, so the NaN/Inf check in the runtime reports it.
      constexpr double kMax = std::numeric_limits<float>::max();
      w = v > kMax ? std::numeric_limits<float>::infinity()
                   : v < -kMax ? -std::numeric_limits<float>::infinity() : static_cast<float>(v);
    } else {
      w = static_cast<To>(v);
    }
    std::memcpy(dst + i * sizeof(To), &w, sizeof(To));
  }
}

// Integer narrowing with a range check: returns the first index whose value does not fit.
template <typename From, typename To>
int64_t cast_ints(const uint8_t* src, uint8_t* dst, int64_t n, From* bad_value) {
  for (int64_t i = 0; i < n; ++i) {
    From v;
    std::memcpy(&v, src + i * sizeof(From), sizeof(From));
    if (static_cast<int64_t>(v) < static_cast<int64_t>(std::numeric_limits<To>::min()) ||
        static_cast<int64_t>(v) > static_cast<int64_t>(std::numeric_limits<To>::max())) {
      *bad_value = v;
      return i;
    }
    To w = static_cast<To>(v);
    std::memcpy(dst + i * sizeof(To), &w, sizeof(To));
  }
  return -1;
}

bool is_float(DType t) { return t == DType::f32 || t == DType::f64; }
bool is_int(DType t) { return t == DType::i64 || t == DType::i32 || t == DType::i8 || t == DType::u8; }

template <typename From>
int64_t cast_int_from(const uint8_t* src, uint8_t* dst, int64_t n, DType to, int64_t* bad) {
  From b = 0;
  int64_t at = -1;
  switch (to) {
    case DType::i64: at = cast_ints<From, int64_t>(src, dst, n, &b); break;
    case DType::i32: at = cast_ints<From, int32_t>(src, dst, n, &b); break;
    case DType::i8: at = cast_ints<From, int8_t>(src, dst, n, &b); break;
    case DType::u8: at = cast_ints<From, uint8_t>(src, dst, n, &b); break;
    default: break;
  }
  *bad = static_cast<int64_t>(b);
  return at;
}

}  // namespace

Result<NpyArray> convert_dtype(const NpyArray& a, DType to, const std::string& where, const std::string& what) {
  if (a.dtype == to) return a;
  const bool floats = is_float(a.dtype) && is_float(to);
  const bool ints = is_int(a.dtype) && is_int(to);
  if (!floats && !ints) {
    // e.g. "mask.npy: holds i64 data ('<i8'), but plan input 'mask' is bool ('|b1') (...)"
    std::string hint = "only float->float and integer->integer conversions are done; convert the array before "
                       "saving it";
    const char* want = npy_descr(to);
    if (to == DType::boolean) {
      hint += ", e.g. np.save(path, a.astype(bool)) for a mask";
    } else if (*want) {
      hint += std::string(", e.g. np.save(path, a.astype('") + want + "'))";
    }
    return invalid_argument(where + ": holds " + dtype_name(a.dtype) + " data ('" + npy_descr(a.dtype) + "'), but " +
                            what + " is " + dtype_name(to) + (*want ? std::string(" ('") + want + "')" : "") + " (" +
                            hint + ")");
  }
  const int64_t n = a.numel();
  const size_t nbytes = static_cast<size_t>(n) * dtype_size(to);
  uint8_t* dst = new (std::nothrow) uint8_t[nbytes > 0 ? nbytes : 1];
  if (dst == nullptr) {
    return out_of_memory(where + ": cannot allocate " + std::to_string(nbytes) + " bytes to convert its " +
                         dtype_name(a.dtype) + " data to " + dtype_name(to) + " for " + what);
  }
  std::shared_ptr<const void> buf(dst, std::default_delete<uint8_t[]>());
  if (floats) {
    if (a.dtype == DType::f64) {
      cast_all<double, float>(a.data, dst, n);
    } else {
      cast_all<float, double>(a.data, dst, n);
    }
  } else {
    int64_t bad = 0, at = -1;
    switch (a.dtype) {
      case DType::i64: at = cast_int_from<int64_t>(a.data, dst, n, to, &bad); break;
      case DType::i32: at = cast_int_from<int32_t>(a.data, dst, n, to, &bad); break;
      case DType::i8: at = cast_int_from<int8_t>(a.data, dst, n, to, &bad); break;
      case DType::u8: at = cast_int_from<uint8_t>(a.data, dst, n, to, &bad); break;
      default: break;
    }
    if (at >= 0) {
      return invalid_argument(where + ": value " + std::to_string(bad) + " at flat index " + std::to_string(at) +
                              " does not fit " + dtype_name(to) + ", the dtype of " + what);
    }
  }
  NpyArray out;
  out.dtype = to;
  out.shape = a.shape;
  out.data = dst;
  out.nbytes = nbytes;
  out.storage = std::move(buf);
  return out;
}

Result<NpyArray> bind_to_input(const NpyArray& a, const std::string& path, const std::string& name,
                               const TensorView& input) {
  std::vector<int64_t> want(input.shape + 1, input.shape + (input.rank > 0 ? input.rank : 1));
  std::vector<int64_t> got(a.shape.begin() + 1, a.shape.end());
  if (got != want) {
    return invalid_argument(path + ": per-sample shape " + shape_list(got) + " (file shape " + shape_list(a.shape) +
                            ") does not match plan input '" + name + "' " + input.shape_string() +
                            ", which expects per-sample shape " + shape_list(want));
  }
  ET_ASSIGN_OR_RETURN(NpyArray out, convert_dtype(a, input.dtype, path, "plan input '" + name + "'"));
  if (out.dtype == DType::boolean) {
    // numpy's bools are bytes 0 and 1; a kernel reads any other byte as an undefined bool
    for (size_t i = 0; i < out.nbytes; ++i) {
      if (out.data[i] > 1) {
        return invalid_argument(path + ": byte " + std::to_string(out.data[i]) + " at flat index " + std::to_string(i) +
                                " is not a bool (0 or 1) for plan input '" + name +
                                "'; save the mask with np.save(path, a.astype(bool))");
      }
    }
  }
  return out;
}

void gather_rows(const NpyArray& a, const int64_t* rows, int64_t count, void* dst) {
  const size_t rb = a.row_bytes();
  auto* out = static_cast<uint8_t*>(dst);
  for (int64_t i = 0; i < count; ++i) {
    std::memcpy(out + static_cast<size_t>(i) * rb, a.data + static_cast<size_t>(rows[i]) * rb, rb);
  }
}

}  // namespace tools
}  // namespace edgetune
