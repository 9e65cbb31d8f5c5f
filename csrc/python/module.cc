// edgetune._native: the C++ runtime seen from Python (pybind11).
//
//   kernel_names(backend)                       registered kernels of a backend
//   workspace_bytes(kernel, ins, outs, attrs)   scratch a node needs (asked by the memory planner)
//   run_kernel(kernel, arrays, outs, attrs)     one kernel on numpy arrays (the kernel test harness)
//   Runtime(plan_bytes, backend, threads)       a loaded, verified plan: step / forward / weights
//                                               (backend "cuda": device memory, read and written
//                                               through Runtime::read / write; importing this module
//                                               touches no GPU, only constructing a cuda Runtime does)
//
// A failed Status becomes a Python exception here and nowhere else: RuntimeError subclasses
// keyed by StatusCode are mapped to edgetune's own exceptions by runtime/native.py.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/kernel.h"
#include "core/runtime.h"
#include "core/status.h"
#include "kernels/cpu/conv_onednn.h"
#include "kernels/cpu/gemm.h"
#include "plan_generated.h"  // the section names of the plan schema (csrc/schema/plan.fbs)

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
                                         std::string(py::str(py::type::handle_of(v))))};
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

// The kernel's check() (a failure names the kernel), then the scratch bytes it asks for.
size_t checked_workspace(const KernelDef& k, const KernelArgs& a, const std::string& kernel) {
  if (k.check) throw_if_error(k.check(a).with_context(kernel));
  return k.workspace ? k.workspace(a) : 0;
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
  return checked_workspace(k, a, kernel);
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
  throw_if_error(pool.start_status());  // threads the system refused: an error, not one quiet thread
  KernelArgs a{in_views.data(), static_cast<int>(in_views.size()), out_views.data(),
               static_cast<int>(out_views.size()), &attrs, nullptr, 0, &pool};
  const size_t ws = checked_workspace(k, a, kernel);
  std::vector<unsigned char> workspace(ws + 64);
  a.workspace = ws ? workspace.data() : nullptr;
  a.workspace_bytes = ws;
  {
    py::gil_scoped_release release;
    throw_if_error(k.run(a).with_context(kernel));
  }
  return results;
}

// Median wall time (seconds) of one kernel on inputs of the given specs: what the compiler's
// kernel selection (compiler/passes/select_kernels.py) measures when compiling for this machine.
// Inputs are filled with small deterministic values (bit masks included: any byte is valid);
// integer inputs are zero, so only kernels without index inputs should be timed.
double py_time_kernel(const std::string& backend, const std::string& kernel, const std::vector<py::tuple>& ins,
                      const std::vector<py::tuple>& outs, const py::dict& attrs_py, int threads, int repeats) {
  const KernelDef& k = find_kernel(backend, kernel);
  std::vector<TensorView> in_views, out_views;
  std::vector<std::vector<unsigned char>> storage;
  auto bind = [&](TensorView t, bool fill) {
    storage.emplace_back(t.nbytes() + 64, 0);
    t.data = storage.back().data();
    if (fill && t.dtype == DType::f32) {
      float* p = static_cast<float*>(t.data);
      for (int64_t i = 0, n = t.numel(); i < n; ++i) p[i] = 0.001f * static_cast<float>((i * 7919) % 2001 - 1000);
    } else if (fill && t.dtype == DType::u8) {
      auto* p = static_cast<unsigned char*>(t.data);
      for (size_t i = 0; i < t.nbytes(); ++i) p[i] = static_cast<unsigned char>(i * 37);
    }
    return t;
  };
  storage.reserve(ins.size() + outs.size() + 1);
  for (auto& s : ins) in_views.push_back(bind(view_of_spec(s), true));
  for (auto& s : outs) out_views.push_back(bind(view_of_spec(s), false));
  Attrs attrs = attrs_from_py(attrs_py);
  ThreadPool pool(threads);
  throw_if_error(pool.start_status());  // threads the system refused: an error, not one quiet thread
  KernelArgs a{in_views.data(), static_cast<int>(in_views.size()), out_views.data(),
               static_cast<int>(out_views.size()), &attrs, nullptr, 0, &pool};
  const size_t ws = checked_workspace(k, a, kernel);
  storage.emplace_back(ws + 64, 0);
  a.workspace = ws ? storage.back().data() : nullptr;
  a.workspace_bytes = ws;
  std::vector<double> times;
  {
    py::gil_scoped_release release;
    throw_if_error(k.run(a).with_context(kernel));  // warm-up: caches, page faults, thread start
    for (int r = 0; r < std::max(1, repeats); ++r) {
      auto t0 = std::chrono::steady_clock::now();
      Status st = k.run(a);
      times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      if (!st.ok()) {
        py::gil_scoped_acquire acquire;
        throw_if_error(st.with_context(kernel));
      }
    }
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// A binding's bytes as a new numpy array, read through the runtime (its memory may be on a GPU).
py::array copy_out(const Runtime& rt, const Binding& b) {
  const TensorView& t = b.view;
  std::vector<py::ssize_t> shape(t.shape, t.shape + t.rank);
  py::array out(numpy_dtype(t.dtype), shape);
  throw_if_error(rt.read(b, out.mutable_data(), t.nbytes()));
  return out;
}

// `arr` as the exact dtype and shape of `t`, C-contiguous (else NativeError naming `what`).
py::array checked_array(const TensorView& t, const py::array& arr, const std::string& what) {
  py::array c = py::array::ensure(arr, py::array::c_style);
  if (!c || dtype_of_array(c) != t.dtype || static_cast<size_t>(c.nbytes()) != t.nbytes() ||
      c.ndim() != t.rank)
    throw NativeError{invalid_argument(what + " expects " + t.shape_string())};
  for (int i = 0; i < t.rank; ++i)
    if (c.shape(i) != t.shape[i]) throw NativeError{invalid_argument(what + " expects " + t.shape_string())};
  return c;
}

void copy_in(Runtime& rt, const Binding& b, const py::array& arr, const std::string& what) {
  py::array c = checked_array(b.view, arr, what);
  throw_if_error(rt.write(b, c.data(), b.view.nbytes()));
}

py::tuple spec_of(const Binding& b) {
  std::vector<int64_t> shape(b.view.shape, b.view.shape + b.view.rank);
  return py::make_tuple(b.name, dtype_name(b.view.dtype), shape);
}

// The Python face of Runtime: numpy in, numpy out (copies, so arrays never dangle).
// One call at a time: step/forward release the GIL while the runtime runs, so without the mutex a
// second Python thread could step, read or write weights in the middle of a step (one arena, one
// set of weights: wrong losses, torn state). Every method that touches rt_ takes `lock()` first.
class PyRuntime {
 public:
  // The mutex is waited for with the GIL released (a thread holding the mutex may need the GIL to
  // finish: waiting with it held would deadlock), and held with the GIL held again.
  std::unique_lock<std::mutex> lock() {
    std::unique_lock<std::mutex> lk(mu_, std::try_to_lock);
    if (!lk.owns_lock()) {
      py::gil_scoped_release release;
      lk.lock();
    }
    return lk;
  }

  PyRuntime(const py::bytes& plan, const std::string& backend, int threads) {
    std::string_view data = plan;
    RuntimeOptions opt;
    opt.backend = backend;
    opt.num_threads = threads;
    auto r = Runtime::load(reinterpret_cast<const uint8_t*>(data.data()), data.size(), opt);
    throw_if_error(r.status());
    rt_ = std::move(r).value();
  }

  std::vector<py::tuple> inputs() {
    auto lk = lock();
    std::vector<py::tuple> out;
    for (const Binding& b : rt_->inputs()) out.push_back(spec_of(b));
    return out;
  }

  void set_inputs(const std::vector<py::array>& arrays, size_t count) {
    if (arrays.size() != count)
      throw NativeError{invalid_argument("expected " + std::to_string(count) + " arrays, got " +
                                         std::to_string(arrays.size()))};
    for (size_t i = 0; i < count; ++i) {
      const Binding& b = rt_->inputs()[i];
      py::array c = checked_array(b.view, arrays[i], "input '" + b.name + "'");
      throw_if_error(rt_->set_input(static_cast<int>(i), c.data(), b.view.nbytes()));
    }
  }

  float step(const std::vector<py::array>& arrays) {
    auto lk = lock();
    set_inputs(arrays, rt_->inputs().size());
    Result<float> r = [&] {
      py::gil_scoped_release release;
      return rt_->step();
    }();
    throw_if_error(r.status());
    return r.value();
  }

  py::array forward(const std::vector<py::array>& arrays) {
    auto lk = lock();
    set_inputs(arrays, static_cast<size_t>(rt_->num_model_inputs()));
    Status st;
    {
      py::gil_scoped_release release;
      st = rt_->forward();
    }
    throw_if_error(st);
    const Binding* out = rt_->output("output");
    if (!out) throw NativeError{invalid_argument("the plan has no 'output'")};
    return copy_out(*rt_, *out);
  }

  py::dict weights() {
    auto lk = lock();
    py::dict d;
    for (const Binding& b : rt_->weights()) d[py::str(b.name)] = copy_out(*rt_, b);
    return d;
  }

  py::dict optimizer_state() {
    auto lk = lock();
    py::dict d;
    for (const Binding& b : rt_->optimizer_state()) d[py::str(b.name)] = copy_out(*rt_, b);
    return d;
  }

  void set_weight(const std::string& name, const py::array& arr) {
    auto lk = lock();
    const Binding* b = rt_->weight(name);
    if (!b) throw NativeError{not_found("the plan has no weight '" + name + "'")};
    if (rt_->is_baked(name)) {  // allowed only when nothing changes (e.g. a full state_dict reload)
      py::array c = py::array::ensure(arr, py::array::c_style);
      std::vector<unsigned char> now(b->view.nbytes());
      throw_if_error(rt_->read(*b, now.data(), now.size()));
      if (!c || static_cast<size_t>(c.nbytes()) != b->view.nbytes() ||
          std::memcmp(c.data(), now.data(), now.size()) != 0)
        throw NativeError{invalid_argument(
            "weight '" + name + "' is frozen and its value was folded into constants at compile time; loading "
            "a different value would train with stale constants. Recompile with these weights (or with "
            "--disable-pass fold_constants)")};
      return;
    }
    copy_in(*rt_, *b, arr, "weight '" + name + "'");
  }

  void set_state(const std::string& name, const py::array& arr) {
    if (name == "optim.lr") return set_lr_array(arr);
    auto lk = lock();
    set_state_locked(name, arr);
  }

  // A finite learning rate >= 0: an inf one gives a finite loss on the next step (the NaN guard
  // checks only the loss) and writes inf/NaN into every trainable weight.
  void set_lr(double lr) {
    if (!std::isfinite(lr) || lr < 0)
      throw NativeError{invalid_argument("learning rate must be a finite number >= 0, got " + std::to_string(lr))};
    auto lk = lock();
    for (const Binding& b : rt_->optimizer_state())
      if (b.name == "optim.lr" && b.view.dtype == DType::f32 && b.view.numel() == 1) {
        const float v = static_cast<float>(lr);
        throw_if_error(rt_->write(b, &v, sizeof v));
        return;
      }
    throw NativeError{not_found("the plan has no float32 optimizer state 'optim.lr'")};
  }

  double lr() {
    auto lk = lock();
    for (const Binding& b : rt_->optimizer_state())
      if (b.name == "optim.lr" && b.view.dtype == DType::f32 && b.view.numel() == 1) {
        float v = 0;
        throw_if_error(rt_->read(b, &v, sizeof v));
        return v;
      }
    throw NativeError{not_found("the plan has no float32 optimizer state 'optim.lr'")};
  }

  void set_lr_array(const py::array& arr) {
    py::array c = py::array::ensure(arr, py::array::c_style);
    if (!c || c.size() != 1 || (c.dtype().kind() != 'f' && c.dtype().kind() != 'i' && c.dtype().kind() != 'u'))
      throw NativeError{invalid_argument("optimizer state 'optim.lr' expects one number")};
    set_lr(py::float_(c.attr("item")()).cast<double>());
  }

  void set_state_locked(const std::string& name, const py::array& arr) {
    for (const Binding& b : rt_->optimizer_state())
      if (b.name == name) return copy_in(*rt_, b, arr, "optimizer state '" + name + "'");
    throw NativeError{not_found("the plan has no optimizer state '" + name + "'")};
  }

  py::dict memory() {
    auto lk = lock();
    MemoryStats m = rt_->memory();
    py::dict d;
    d["persistent_bytes"] = m.persistent_bytes;
    d["arena_bytes"] = m.arena_bytes;
    d["input_bytes"] = m.input_bytes;
    d["total_bytes"] = m.total();
    return d;
  }

  std::vector<std::string> trainable() {
    auto lk = lock();
    std::vector<std::string> out;
    for (const Binding& b : rt_->weights())
      if (rt_->is_trainable(b.name)) out.push_back(b.name);
    return out;
  }

  Runtime& rt() { return *rt_; }

 private:
  std::unique_ptr<Runtime> rt_;
  std::mutex mu_;  // see lock()
};

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "edgetune C++ runtime";
  static py::exception<NativeError> native_error(m, "NativeError", PyExc_RuntimeError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const NativeError& e) {
      py::object cls = py::reinterpret_borrow<py::object>(native_error.ptr());
      // a message quotes plan strings (names, kernels) that a damaged file may hold as any bytes:
      // decode with U+FFFD for invalid UTF-8, or the translator itself would raise UnicodeDecodeError
      const std::string& msg = e.status.message();
      py::object text = py::reinterpret_steal<py::object>(
          PyUnicode_DecodeUTF8(msg.data(), static_cast<Py_ssize_t>(msg.size()), "replace"));
      py::object err = cls(text);
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
  m.def("time_kernel", &py_time_kernel, py::arg("backend"), py::arg("kernel"), py::arg("inputs"),
        py::arg("outputs"), py::arg("attrs"), py::arg("threads") = 1, py::arg("repeats") = 5);
  m.def("run_kernel", &py_run_kernel, py::arg("backend"), py::arg("kernel"), py::arg("arrays"),
        py::arg("outputs"), py::arg("attrs"), py::arg("threads") = 1);
  py::class_<PyRuntime>(m, "Runtime")
      .def(py::init<const py::bytes&, const std::string&, int>(), py::arg("plan"), py::arg("backend") = "cpu",
           py::arg("threads") = 0)
      .def("inputs", &PyRuntime::inputs)
      .def_property_readonly("num_model_inputs", [](PyRuntime& r) {
             auto lk = r.lock();
             return r.rt().num_model_inputs();
           })
      .def("step", &PyRuntime::step)
      .def("forward", &PyRuntime::forward)
      .def("weights", &PyRuntime::weights)
      .def("optimizer_state", &PyRuntime::optimizer_state)
      .def("set_weight", &PyRuntime::set_weight)
      .def("set_state", &PyRuntime::set_state)
      .def("set_lr", &PyRuntime::set_lr, py::arg("lr"), "a finite learning rate >= 0 (else NativeError)")
      .def_property_readonly("lr", &PyRuntime::lr)
      .def("memory", &PyRuntime::memory)
      .def("trainable", &PyRuntime::trainable)
      .def("set_profiling", [](PyRuntime& r, bool on) {
        auto lk = r.lock();
        r.rt().set_profiling(on);
      })
      .def("reset_profile", [](PyRuntime& r) {
        auto lk = r.lock();
        r.rt().reset_profile();
      })
      .def("profile",
           [](PyRuntime& r) {
             auto lk = r.lock();
             py::list out;
             for (const auto& p : r.rt().profile())
               out.append(py::make_tuple(*p.op, *p.kernel, *p.source,
                                         plan::EnumNameSection(static_cast<plan::Section>(p.section)), p.seconds,
                                         p.calls));
             return out;
           },
           "per node: (op, kernel, source, section, seconds, calls)")
      .def_property(
          "steps",
          [](PyRuntime& r) {
            auto lk = r.lock();
            return r.rt().steps_done();
          },
          [](PyRuntime& r, int64_t steps) {  // a resumed session continues the count
            auto lk = r.lock();
            r.rt().set_steps_done(steps);
          })
      .def_property_readonly("plan_sha256", [](PyRuntime& r) { return r.rt().plan_sha256(); })
      .def_property_readonly("threads", [](PyRuntime& r) { return r.rt().num_threads(); })
      .def_property_readonly("backend", [](PyRuntime& r) { return r.rt().backend(); })
      .def_property_readonly("device", [](PyRuntime& r) { return r.rt().device_description(); },
                             "the device in words ('host memory', or the GPU's name and properties)")
      .def_property_readonly("num_nodes", [](PyRuntime& r) { return r.rt().num_nodes(); })
      .def_property_readonly("model", [](PyRuntime& r) { return r.rt().model_label(); });
  // the GEMM library the op-named kernels (matmul, linear, conv2d, ...) use: "mkl", "openblas" or
  // "own" (the built-in kernel, which the ".own" variants always use); cmake/gemm.cmake chose it
  m.attr("gemm_backend") = sgemm_backend();
  // the oneDNN version behind the ".onednn" conv variants, "" when this build has none (cmake/onednn.cmake)
  m.attr("onednn") = onednn_version();
}
