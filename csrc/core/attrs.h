// Attrs: a node's attributes (ints, floats, int lists, float lists, strings), decoded once at
// plan load so kernels read them without touching the file format or allocating.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace edgetune {

enum class AttrKind : uint8_t { kInt = 0, kFloat = 1, kInts = 2, kFloats = 3, kString = 4 };

struct Attr {
  std::string name;
  AttrKind kind = AttrKind::kInt;
  int64_t i = 0;
  double f = 0.0;
  std::vector<int64_t> ints;
  std::vector<double> floats;
  std::string s;
};

class Attrs {
 public:
  Attrs() = default;
  explicit Attrs(std::vector<Attr> attrs) : attrs_(std::move(attrs)) {}

  const Attr* find(const char* name) const;
  bool has(const char* name) const { return find(name) != nullptr; }
  // Typed getters with a default for absent attributes. An int attr reads as a float too
  // (the IR writes `alpha=1` for 1.0); a bool is an int 0/1.
  int64_t get_int(const char* name, int64_t dflt = 0) const;
  double get_float(const char* name, double dflt = 0.0) const;
  // Empty when absent or not a list (an attr that may be either is read with find()).
  const std::vector<int64_t>& get_ints(const char* name) const;
  const std::string& get_string(const char* name) const;  // "" when absent
  // A pair attr (conv/pool "stride": [h, w]): a scalar int or a one-element list means both, absent
  // or [] (PyTorch's "use the default") gives dflt. False for any other kind or length.
  bool get_pair(const char* name, int64_t dflt, int64_t* a, int64_t* b) const;

  const std::vector<Attr>& all() const { return attrs_; }
  void add(Attr a) { attrs_.push_back(std::move(a)); }

 private:
  std::vector<Attr> attrs_;
};

// One attr by value, for C++ that builds attrs itself (tests, benchmarks); plan files and the
// Python bridge decode theirs.
inline Attr int_attr(const char* name, int64_t v) {
  Attr a;
  a.name = name;
  a.kind = AttrKind::kInt;
  a.i = v;
  return a;
}
inline Attr float_attr(const char* name, double v) {
  Attr a;
  a.name = name;
  a.kind = AttrKind::kFloat;
  a.f = v;
  return a;
}
inline Attr ints_attr(const char* name, std::vector<int64_t> v) {
  Attr a;
  a.name = name;
  a.kind = AttrKind::kInts;
  a.ints = std::move(v);
  return a;
}
inline Attr string_attr(const char* name, std::string v) {
  Attr a;
  a.name = name;
  a.kind = AttrKind::kString;
  a.s = std::move(v);
  return a;
}

}  // namespace edgetune
