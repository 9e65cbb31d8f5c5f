// Test-local readers for the reference values csrc/tests/data/make_plans.py writes
// (reference.json + reference.safetensors; the format is described in make_plans.py's docstring):
// a small JSON parser, a safetensors reader (header JSON + little-endian data) and the manifest's
// fixed-point decoding. Used by test_reference_values.cc only; throws std::runtime_error on any
// malformed input so a damaged or missing data file fails the test that reads it, loudly.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/attrs.h"
#include "core/tensor.h"

namespace edgetune {
namespace reference_test {

// ---- JSON ---------------------------------------------------------------------------------------
struct Json {
  enum Kind { kNull, kBool, kNumber, kString, kArray, kObject } kind = kNull;
  bool b = false;
  double num = 0;
  std::string str;
  std::vector<Json> arr;
  std::vector<std::pair<std::string, Json>> obj;  // in file order

  const Json* find(const std::string& key) const {
    for (const auto& kv : obj)
      if (kv.first == key) return &kv.second;
    return nullptr;
  }
  const Json& at(const std::string& key) const {
    const Json* j = find(key);
    if (!j) throw std::runtime_error("JSON: missing key '" + key + "'");
    return *j;
  }
  const Json& at(size_t i) const {
    if (kind != kArray || i >= arr.size()) throw std::runtime_error("JSON: index out of range");
    return arr[i];
  }
  size_t size() const { return kind == kArray ? arr.size() : obj.size(); }
  double number() const {
    if (kind != kNumber) throw std::runtime_error("JSON: not a number");
    return num;
  }
  int64_t integer() const {
    double d = number();
    if (d != static_cast<double>(static_cast<int64_t>(d))) throw std::runtime_error("JSON: not an integer");
    return static_cast<int64_t>(d);
  }
  const std::string& string() const {
    if (kind != kString) throw std::runtime_error("JSON: not a string");
    return str;
  }
  const std::vector<Json>& array() const {
    if (kind != kArray) throw std::runtime_error("JSON: not an array");
    return arr;
  }
};

class JsonParser {
 public:
  explicit JsonParser(const std::string& text) : s_(text) {}
  Json parse() {
    Json j = value();
    ws();
    if (p_ != s_.size()) fail("trailing characters");
    return j;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error("JSON: " + what + " at offset " + std::to_string(p_));
  }
  void ws() {
    while (p_ < s_.size() && (s_[p_] == ' ' || s_[p_] == '\n' || s_[p_] == '\r' || s_[p_] == '\t')) ++p_;
  }
  char peek() {
    ws();
    if (p_ >= s_.size()) fail("unexpected end");
    return s_[p_];
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++p_;
  }
  bool literal(const char* word) {
    size_t n = std::strlen(word);
    if (s_.compare(p_, n, word) != 0) return false;
    p_ += n;
    return true;
  }
  std::string string_value() {
    expect('"');
    std::string out;
    while (true) {
      if (p_ >= s_.size()) fail("unterminated string");
      char c = s_[p_++];
      if (c == '"') return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (p_ >= s_.size()) fail("bad escape");
      char e = s_[p_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          if (p_ + 4 > s_.size()) fail("bad \\u escape");
          unsigned cp = static_cast<unsigned>(std::stoul(s_.substr(p_, 4), nullptr, 16));
          p_ += 4;
          if (cp < 0x80) {
            out += static_cast<char>(cp);
          } else if (cp < 0x800) {
            out += static_cast<char>(0xC0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3F));
          } else {  // no surrogate pairs in our files
            out += static_cast<char>(0xE0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
          }
          break;
        }
        default: fail("bad escape");
      }
    }
  }
  Json value() {
    Json j;
    char c = peek();
    if (c == '{') {
      j.kind = Json::kObject;
      ++p_;
      if (peek() == '}') {
        ++p_;
        return j;
      }
      while (true) {
        std::string key = string_value();
        expect(':');
        j.obj.emplace_back(std::move(key), value());
        if (peek() == ',') {
          ++p_;
          continue;
        }
        expect('}');
        return j;
      }
    }
    if (c == '[') {
      j.kind = Json::kArray;
      ++p_;
      if (peek() == ']') {
        ++p_;
        return j;
      }
      while (true) {
        j.arr.push_back(value());
        if (peek() == ',') {
          ++p_;
          continue;
        }
        expect(']');
        return j;
      }
    }
    if (c == '"') {
      j.kind = Json::kString;
      j.str = string_value();
      return j;
    }
    if (literal("true")) {
      j.kind = Json::kBool;
      j.b = true;
      return j;
    }
    if (literal("false")) {
      j.kind = Json::kBool;
      return j;
    }
    if (literal("null")) return j;
    // numbers: strtod reads Python's repr() of a double back exactly
    const char* begin = s_.c_str() + p_;
    char* end = nullptr;
    j.kind = Json::kNumber;
    j.num = std::strtod(begin, &end);
    if (end == begin) fail("bad value");
    p_ += static_cast<size_t>(end - begin);
    return j;
  }

  const std::string& s_;
  size_t p_ = 0;
};

inline std::string read_whole_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path + " (run csrc/tests/data/make_plans.py)");
  std::string bytes{std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
  if (bytes.empty()) throw std::runtime_error(path + " is empty (run csrc/tests/data/make_plans.py)");
  return bytes;
}

// ---- tensors ------------------------------------------------------------------------------------
// An owned, 64-byte aligned tensor (kernels get the alignment the arena gives them).
class Buffer {
 public:
  Buffer() = default;
  Buffer(DType dtype, std::vector<int64_t> shape) : dtype_(dtype), shape_(std::move(shape)) {
    int64_t n = 1;
    for (int64_t d : shape_) n *= d;
    numel_ = n;
    size_t bytes = static_cast<size_t>(n) * dtype_size(dtype);
    storage_.reset(new Block[bytes / sizeof(Block) + 1]());
  }
  DType dtype() const { return dtype_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t numel() const { return numel_; }
  size_t nbytes() const { return static_cast<size_t>(numel_) * dtype_size(dtype_); }
  void* data() { return storage_.get(); }
  const void* data() const { return storage_.get(); }
  template <typename T>
  T* as() { return reinterpret_cast<T*>(storage_.get()); }
  template <typename T>
  const T* as() const { return reinterpret_cast<const T*>(storage_.get()); }
  TensorView view() {
    TensorView t;
    t.data = data();
    t.dtype = dtype_;
    t.rank = static_cast<int>(shape_.size());
    for (int i = 0; i < t.rank; ++i) t.shape[i] = shape_[static_cast<size_t>(i)];
    return t;
  }
  // element i as a double (float and integer dtypes)
  double at(int64_t i) const {
    switch (dtype_) {
      case DType::f32: return as<float>()[i];
      case DType::f64: return as<double>()[i];
      case DType::i64: return static_cast<double>(as<int64_t>()[i]);
      case DType::i32: return as<int32_t>()[i];
      case DType::i8: return as<int8_t>()[i];
      case DType::u8: return as<uint8_t>()[i];
      case DType::boolean: return as<uint8_t>()[i];
      default: throw std::runtime_error(std::string("no element access for ") + dtype_name(dtype_));
    }
  }
  std::string shape_string() const {
    std::string s = std::string(dtype_name(dtype_)) + "[";
    for (size_t i = 0; i < shape_.size(); ++i) s += (i ? "," : "") + std::to_string(shape_[i]);
    return s + "]";
  }

 private:
  struct alignas(64) Block {
    unsigned char b[64];
  };
  DType dtype_ = DType::f32;
  std::vector<int64_t> shape_;
  int64_t numel_ = 0;
  std::unique_ptr<Block[]> storage_;
};

inline bool dtype_from_safetensors(const std::string& s, DType* out) {
  static const std::map<std::string, DType> kNames = {
      {"F32", DType::f32}, {"F64", DType::f64}, {"F16", DType::f16}, {"BF16", DType::bf16}, {"I64", DType::i64},
      {"I32", DType::i32}, {"I8", DType::i8},   {"U8", DType::u8},   {"BOOL", DType::boolean}};
  auto it = kNames.find(s);
  if (it == kNames.end()) return false;
  *out = it->second;
  return true;
}

// A safetensors file read whole. Tensors are copied out as Buffers; I16 (which edgetune has no
// dtype for) only appears fixed-point encoded and is decoded by ReferenceData.
class Safetensors {
 public:
  explicit Safetensors(const std::string& path) : bytes_(read_whole_file(path)) {
    if (bytes_.size() < 8) throw std::runtime_error(path + ": truncated safetensors file");
    uint64_t n = 0;
    for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<uint8_t>(bytes_[static_cast<size_t>(i)])) << (8 * i);
    if (n > bytes_.size() - 8) throw std::runtime_error(path + ": header longer than the file");
    data_offset_ = 8 + n;
    header_ = JsonParser(bytes_.substr(8, n)).parse();
    for (const auto& kv : header_.obj) {
      if (kv.first == "__metadata__") continue;
      const Json& off = kv.second.at("data_offsets");
      uint64_t b = static_cast<uint64_t>(off.at(0).integer()), e = static_cast<uint64_t>(off.at(1).integer());
      if (b > e || e > bytes_.size() - data_offset_) throw std::runtime_error(path + ": '" + kv.first + "' out of range");
    }
  }
  bool has(const std::string& name) const { return name != "__metadata__" && header_.find(name); }
  const std::string& dtype_of(const std::string& name) const { return entry(name).at("dtype").string(); }
  std::vector<int64_t> shape_of(const std::string& name) const {
    std::vector<int64_t> shape;
    for (const Json& d : entry(name).at("shape").array()) shape.push_back(d.integer());
    return shape;
  }
  // raw bytes of a tensor
  std::string raw(const std::string& name) const {
    const Json& off = entry(name).at("data_offsets");
    size_t b = static_cast<size_t>(off.at(0).integer()), e = static_cast<size_t>(off.at(1).integer());
    return bytes_.substr(data_offset_ + b, e - b);
  }
  size_t count() const { return header_.find("__metadata__") ? header_.size() - 1 : header_.size(); }

 private:
  const Json& entry(const std::string& name) const {
    const Json* j = header_.find(name);
    if (!j || name == "__metadata__") throw std::runtime_error("safetensors: no tensor '" + name + "'");
    return *j;
  }
  std::string bytes_;
  size_t data_offset_ = 0;
  Json header_;
};

// reference.json + reference.safetensors, with the manifest's fixed-point entries decoded.
class ReferenceData {
 public:
  explicit ReferenceData(const std::string& dir)
      : dir_(dir), manifest_(JsonParser(read_whole_file(dir + "/reference.json")).parse()) {
    if (manifest_.at("format").string() != "edgetune-reference" || manifest_.at("version").integer() != 1)
      throw std::runtime_error("reference.json: unknown format/version");
    tensors_.reset(new Safetensors(dir + "/" + manifest_.at("tensors").string()));
  }
  const Json& manifest() const { return manifest_; }
  const std::string& dir() const { return dir_; }
  size_t num_tensors() const { return tensors_->count(); }

  Buffer tensor(const std::string& id) const {
    if (!tensors_->has(id)) throw std::runtime_error("reference.safetensors has no tensor '" + id + "'");
    const std::string st = tensors_->dtype_of(id);
    std::vector<int64_t> shape = tensors_->shape_of(id);
    std::string raw = tensors_->raw(id);
    const Json* fixed = manifest_.at("fixed_point").find(id);
    if (fixed) {  // integers k stored, value = k * scale, in dtype
      DType out_t;
      if (!dtype_from_name(fixed->at("dtype").string(), &out_t) || (out_t != DType::f32 && out_t != DType::f64))
        throw std::runtime_error(id + ": bad fixed_point dtype");
      double scale = fixed->at("scale").number();
      Buffer out(out_t, shape);
      size_t width = st == "I8" ? 1 : st == "I16" ? 2 : 0;
      if (!width || raw.size() != static_cast<size_t>(out.numel()) * width)
        throw std::runtime_error(id + ": fixed_point tensor must be I8/I16 of its shape");
      for (int64_t i = 0; i < out.numel(); ++i) {
        int64_t k;
        if (width == 1) {
          k = static_cast<int8_t>(raw[static_cast<size_t>(i)]);
        } else {
          uint16_t u = static_cast<uint16_t>(static_cast<uint8_t>(raw[2 * static_cast<size_t>(i)]) |
                                             (static_cast<uint8_t>(raw[2 * static_cast<size_t>(i) + 1]) << 8));
          k = static_cast<int16_t>(u);
        }
        double v = static_cast<double>(k) * scale;  // exact: |k| < 2^15, scale a power of 2
        if (out_t == DType::f32)
          out.as<float>()[i] = static_cast<float>(v);
        else
          out.as<double>()[i] = v;
      }
      return out;
    }
    DType t;
    if (!dtype_from_safetensors(st, &t)) throw std::runtime_error(id + ": unsupported safetensors dtype " + st);
    Buffer out(t, shape);
    if (raw.size() != out.nbytes()) throw std::runtime_error(id + ": data size does not match its shape");
    std::memcpy(out.data(), raw.data(), raw.size());  // little-endian file, little-endian targets
    return out;
  }

 private:
  std::string dir_;
  Json manifest_;
  std::unique_ptr<Safetensors> tensors_;
};

// The manifest's [[name, kind, value], ...] as Attrs (what run_kernel builds from Python attrs).
inline Attrs attrs_from_manifest(const Json& list) {
  Attrs attrs;
  for (const Json& e : list.array()) {
    Attr a;
    a.name = e.at(0).string();
    const std::string& kind = e.at(1).string();
    const Json& v = e.at(2);
    if (kind == "int") {
      a.kind = AttrKind::kInt;
      a.i = v.integer();
    } else if (kind == "float") {
      a.kind = AttrKind::kFloat;
      a.f = v.number();
    } else if (kind == "string") {
      a.kind = AttrKind::kString;
      a.s = v.string();
    } else if (kind == "ints") {
      a.kind = AttrKind::kInts;
      for (const Json& x : v.array()) a.ints.push_back(x.integer());
    } else if (kind == "floats") {
      a.kind = AttrKind::kFloats;
      for (const Json& x : v.array()) a.floats.push_back(x.number());
    } else {
      throw std::runtime_error("attribute '" + a.name + "': unknown kind '" + kind + "'");
    }
    attrs.add(std::move(a));
  }
  return attrs;
}

}  // namespace reference_test
}  // namespace edgetune
