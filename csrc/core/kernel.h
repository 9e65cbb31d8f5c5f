// Kernels and their registry.
//
// A kernel implements one IR op (compiler/ops/) on one backend. It is registered under a
// kernel name — the op name for the default implementation ("conv2d"), "op.variant" for
// alternatives ("conv2d.depthwise") — and has three parts:
//
//   check(args)      at plan load: are these dtypes/shapes/attrs something I can run?
//                    (data pointers are null here). A plan asking for anything else is
//                    rejected before any kernel runs.
//   workspace(args)  scratch bytes this node needs; the compiler asks the same function
//                    (through the Python module) so the arena plan reserves it.
//   run(args)        compute. No allocation, no I/O, no exceptions; threads via args.pool.
//
// Every kernel file exposes one `register_<family>_kernels(KernelRegistry&)` called from
// kernels/cpu/registry.cc (kernels/cuda/registry.cu for cuda), so static linking can never drop a
// kernel silently.
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <vector>

#include "core/attrs.h"
#include "core/status.h"
#include "core/tensor.h"
#include "core/thread_pool.h"

namespace edgetune {

struct KernelArgs {
  const TensorView* inputs = nullptr;
  int num_inputs = 0;
  TensorView* outputs = nullptr;
  int num_outputs = 0;
  const Attrs* attrs = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  ThreadPool* pool = nullptr;
  void* device = nullptr;  // the backend's per-runtime context (kernels/cuda/cuda_context.h for cuda; null on cpu)

  const TensorView& in(int i) const { return inputs[i]; }
  TensorView& out(int i) const { return outputs[i]; }
  const Attrs& attr() const { return *attrs; }
};

using KernelCheck = Status (*)(const KernelArgs&);
using KernelWorkspace = size_t (*)(const KernelArgs&);
using KernelRun = Status (*)(const KernelArgs&);

struct KernelDef {
  std::string op;      // IR op it implements
  std::string name;    // registry key: op or op.variant
  KernelCheck check = nullptr;          // null = accept anything the IR's shape rule accepted
  KernelWorkspace workspace = nullptr;  // null = needs none
  KernelRun run = nullptr;
};

class KernelRegistry {
 public:
  // The registry of a backend ("cpu", and "cuda" in a build with EDGETUNE_HAVE_CUDA); null for a
  // backend this build does not have. Building a registry only registers functions: it touches no device.
  static const KernelRegistry* for_backend(const std::string& backend);
  static std::vector<std::string> backends();

  void add(KernelDef def);
  const KernelDef* find(const std::string& name) const;
  std::vector<std::string> names() const;

 private:
  std::map<std::string, KernelDef> kernels_;
};

// Helpers shared by kernel checks.
Status expect_dtype(const KernelArgs& a, const char* what, const TensorView& t, DType want);
Status expect_arity(const KernelArgs& a, const char* op, int min_in, int max_in, int num_out);

}  // namespace edgetune
