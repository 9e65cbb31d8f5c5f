// Attribute lookup.
#include "core/attrs.h"

#include <cstring>

namespace edgetune {

const Attr* Attrs::find(const char* name) const {
  for (const Attr& a : attrs_)
    if (std::strcmp(a.name.c_str(), name) == 0) return &a;
  return nullptr;
}

int64_t Attrs::get_int(const char* name, int64_t dflt) const {
  const Attr* a = find(name);
  if (!a) return dflt;
  if (a->kind == AttrKind::kFloat) return static_cast<int64_t>(a->f);
  return a->i;
}

double Attrs::get_float(const char* name, double dflt) const {
  const Attr* a = find(name);
  if (!a) return dflt;
  if (a->kind == AttrKind::kInt) return static_cast<double>(a->i);
  return a->f;
}

const std::vector<int64_t>& Attrs::get_ints(const char* name) const {
  static const std::vector<int64_t> kEmpty;
  const Attr* a = find(name);
  if (!a || a->kind != AttrKind::kInts) return kEmpty;
  return a->ints;
}

const std::string& Attrs::get_string(const char* name) const {
  static const std::string kEmpty;
  const Attr* a = find(name);
  return a && a->kind == AttrKind::kString ? a->s : kEmpty;
}

}  // namespace edgetune
