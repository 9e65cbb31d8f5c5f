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

bool Attrs::get_pair(const char* name, int64_t dflt, int64_t* a, int64_t* b) const {
  const std::vector<int64_t>& v = get_ints(name);
  if (v.size() == 2) {
    *a = v[0];
    *b = v[1];
    return true;
  }
  if (v.size() == 1) {
    *a = *b = v[0];
    return true;
  }
  const Attr* at = find(name);
  if (!at || (at->kind == AttrKind::kInts && at->ints.empty())) {
    *a = *b = dflt;
    return true;
  }
  if (at->kind != AttrKind::kInt) return false;
  *a = *b = at->i;
  return true;
}

}  // namespace edgetune
