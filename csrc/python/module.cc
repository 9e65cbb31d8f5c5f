// edgetune._native: the C++ runtime seen from Python (pybind11).
//
//   kernel_names(backend)                       registered kernels of a backend
//   workspace_bytes(kernel, ins, outs, attrs)   scratch a node needs (asked by the memory planner)
//   run_kernel(kernel, arrays, outs, attrs)     one kernel on numpy arrays (the kernel test harness)
//   Runtime(plan_bytes, backend, threads)       a loaded, verified plan: step / forward / weights
//
// A failed Status becomes a Python exception here and nowhere else: RuntimeError subclasses
// keyed by StatusCode are mapped to edgetune's own exceptions by runtime/native.py.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/kernel.h"
#include "core/status.h"

namespace py = pybind11;
using namespace edgetune;

namespace {

// Raised for every failed Status; `code` carries the StatusCode name.
struct NativeError {
  Status status;
};

void throw_if_error(const Status& st) {
  if (!st.ok()) throw NativeError{st};
}

DType dtype_from_py(const std::string& name) {
  DType t;
  if (!dtype_from_name(name, &t)) throw NativeError{invalid_argument("unknown dtype '" + name + "'")};
  return t;
}

DType dtype_of_array(const py::array& a) {
  char kind = a.dtype().kind();
  size_t size = a.dtype().itemsize();
  if (kind == 'f' && size == 4) return DType::f32;
  if (kind == 'f' && size == 8) return DType::f64;
  if (kind == 'f' && size == 2) return DType::f16;
  if (kind == 'i' && size == 8) return DType::i64;
  if (kind == 'i' && size == 4) return DType::i32;
  if (kind == 'i' && size == 1) return DType::i8;
  if (kind == 'u' && size == 1) return DType::u8;
  if (kind == 'b') return DType::boolean;
  throw NativeError{invalid_argument("numpy dtype " + std::string(py::str(a.dtype())) + " has no edgetune dtype")};
}

py::dtype numpy_dtype(DType t) {
  switch (t) {
    case DType::f32: return py::dtype("float32");
    case DType::f64: return py::dtype("float64");
    case DType::f16: return py::dtype("float16");
    case DType::i64: return py::dtype("int64");
    case DType::i32: return py::dtype("int32");
    case DType::i8: return py::dtype("int8");
    case DType::u8: return py::dtype("uint8");
    case DType::boolean: return py::dtype("bool");
    default: throw NativeError{unimplemented(std::string("no numpy dtype for ") + dtype_name(t))};
  }
}

// IR attrs (python dict) -> Attrs. bool/int -> int, float -> float, str -> string,
// list of ints/bools -> ints, list with any float -> floats, None -> absent.
Attrs attrs_from_py(const py::dict& d) {
  Attrs attrs;
  for (auto item : d) {
    Attr a;
    a.name = py::str(item.first);
    py::handle v = item.second;
    if (v.is_none()) continue;
    if (py::isinstance<py::bool_>(v) || py::isinstance<py::int_>(v)) {
      a.kind = AttrKind::kInt;
      a.i = v.cast<int64_t>();
    } else if (py::isinstance<py::float_>(v)) {
      a.kind = AttrKind::kFloat;
      a.f = v.cast<double>();
    } else if (py::isinstance<py::str>(v)) {
      a.kind = AttrKind::kString;
      a.s = v.cast<std::string>();
    } else if (py::isinstance<py::list>(v) || py::isinstance<py::tuple>(v)) {
      bool any_float = false;
      for (auto e : v) any_float |= py::isinstance<py::float_>(e);
      if (any_float) {
        a.kind = AttrKind::kFloats;
        for (auto e : v) a.floats.push_back(e.cast<double>());
      } else {
        a.kind = AttrKind::kInts;
        for (auto e : v) a.ints.push_back(e.cast<int64_t>());
      }
    } else {
      throw NativeError{invalid_argument("attribute '" + a.name + "' has unsupported type " +
                                         std::string(py::str(v.get_type())))};
    }
    attrs.add(std::move(a));
  }
  return attrs;
}

TensorView view_of_spec(const py::tuple& spec) {  // (dtype name, shape)
  TensorView t;
  t.dtype = dtype_from_py(spec[0].cast<std::string>());
  auto shape = spec[1].cast<std::vector<int64_t>>();
  if (shape.size() > static_cast<size_t>(kMaxRank)) throw NativeError{unimplemented("rank > 8")};
  t.rank = static_cast<int>(shape.size());
  for (int i = 0; i < t.rank; ++i) t.shape[i] = shape[i];
  return t;
}

const KernelDef& find_kernel(const std::string& backend, const std::string& name) {
  const KernelRegistry* reg = KernelRegistry::for_backend(backend);
  if (!reg) throw NativeError{not_found("backend '" + backend + "' is not built into this runtime")};
  const KernelDef* k = reg->find(name);
  if (!k) throw NativeError{not_found("backend '" + backend + "' has no kernel '" + name + "'")};
  return *k;
}

size_t py_workspace_bytes(const std::string& backend, const std::string& kernel, const std::vector<py::tuple>& ins,
                          const std::vector<py::tuple>& outs, const py::dict& attrs_py) {
  const KernelDef& k = find_kernel(backend, kernel);
  std::vector<TensorView> in_views, out_views;
  for (auto& s : ins) in_views.push_back(view_of_spec(s));
  for (auto& s : outs) out_views.push_back(view_of_spec(s));
  Attrs attrs = attrs_from_py(attrs_py);
  KernelArgs a{in_views.data(), static_cast<int>(in_views.size()), out_views.data(),
               static_cast<int>(out_views.size()), &attrs, nullptr, 0, nullptr};
  if (k.check) throw_if_error(k.check(a).with_context(kernel));
  return k.workspace ? k.workspace(a) : 0;
}

std::vector<py::array> py_run_kernel(const std::string& backend, const std::string& kernel,
                                     const std::vector<py::array>& arrays, const std::vector<py::tuple>& outs,
                                     const py::dict& attrs_py, int threads) {
  const KernelDef& k = find_kernel(backend, kernel);
  std::vector<py::array> keep;  // contiguous copies of the inputs
  std::vector<TensorView> in_views, out_views;
  for (const py::array& arr : arrays) {
    py::array c = py::array::ensure(arr, py::array::c_style);
    keep.push_back(c);
    TensorView t;
    t.dtype = dtype_of_array(c);
    t.rank = static_cast<int>(c.ndim());
    for (int i = 0; i < t.rank; ++i) t.shape[i] = c.shape(i);
    t.data = const_cast<void*>(c.data());
    in_views.push_back(t);
  }
  std::vector<py::array> results;
  for (auto& s : outs) {
    TensorView t = view_of_spec(s);
    std::vector<py::ssize_t> shape(t.shape, t.shape + t.rank);
    py::array out(numpy_dtype(t.dtype), shape);
    // poison outputs so a kernel that forgets to write an element fails the comparison
    std::memset(out.mutable_data(), 0x7f, out.nbytes());
    t.data = out.mutable_data();
    out_views.push_back(t);
    results.push_back(out);
  }
  Attrs attrs = attrs_from_py(attrs_py);
  ThreadPool pool(threads);
  KernelArgs a{in_views.data(), static_cast<int>(in_views.size()), out_views.data(),
               static_cast<int>(out_views.size()), &attrs, nullptr, 0, &pool};
  if (k.check) throw_if_error(k.check(a).with_context(kernel));
  size_t ws = k.workspace ? k.workspace(a) : 0;
  std::vector<unsigned char> workspace(ws + 64);
  a.workspace = ws ? workspace.data() : nullptr;
  a.workspace_bytes = ws;
  {
    py::gil_scoped_release release;
    throw_if_error(k.run(a).with_context(kernel));
  }
  return results;
}

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "edgetune C++ runtime";
  static py::exception<NativeError> native_error(m, "NativeError", PyExc_RuntimeError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const NativeError& e) {
      py::object cls = py::reinterpret_borrow<py::object>(native_error.ptr());
      py::object err = cls(py::str(e.status.message()));
      err.attr("code") = py::str(status_code_name(e.status.code()));
      PyErr_SetObject(native_error.ptr(), err.ptr());
    }
  });
  m.def("backends", &KernelRegistry::backends);
  m.def("kernel_names", [](const std::string& backend) {
    const KernelRegistry* r = KernelRegistry::for_backend(backend);
    if (!r) throw NativeError{not_found("backend '" + backend + "' is not built into this runtime")};
    return r->names();
  });
  m.def("workspace_bytes", &py_workspace_bytes, py::arg("backend"), py::arg("kernel"), py::arg("inputs"),
        py::arg("outputs"), py::arg("attrs"));
  m.def("run_kernel", &py_run_kernel, py::arg("backend"), py::arg("kernel"), py::arg("arrays"),
        py::arg("outputs"), py::arg("attrs"), py::arg("threads") = 1);
#ifdef EDGETUNE_HAVE_OPENBLAS
  m.attr("gemm_backend") = "openblas";
#else
  m.attr("gemm_backend") = "own";
#endif
}
