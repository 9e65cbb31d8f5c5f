// edgetune-gpu-op-check: every cuda kernel on the op-sweep samples (issue 12, GPU check part a).
//
//   edgetune-gpu-op-check build/gpu-cases/ops/op_cases.safetensors [--json OUT.json]
//
// The cases file comes from benchmarks/gpu/prepare_cases.py (made on the CPU): for each kernel name
// and each op-sweep sample of its op, the inputs and what the cpu kernel of that name computed.
// Here each case runs through the cuda registry's check / workspace / run in device memory (outputs
// poisoned with 0xFF first, so an element a kernel forgets is NaN), twice: the two results must be
// bit-identical (determinism) and match the cpu kernel within |gpu - cpu| <= atol + rtol * |cpu|,
// atol scaled by the largest |cpu| value of the output (sums over many terms round differently).
// Prints one line per kernel (cases, failures, worst error) and exits 1 on any failure.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "core/kernel.h"
#include "kernels/cuda/cuda_context.h"
#include "tests/test_reference_util.h"  // JsonParser (header-only)
#include "tools/safetensors.h"

namespace edgetune {
namespace {

constexpr double kRtol = 1e-4, kAtol = 1e-5;

#define CHECK_CUDA(call)                                                                                    \
  do {                                                                                                     \
    cudaError_t e_ = (call);                                                                               \
    if (e_ != cudaSuccess) {                                                                               \
      std::fprintf(stderr, "%s failed: %s\n", #call, cudaGetErrorString(e_));                               \
      std::exit(2);                                                                                        \
    }                                                                                                      \
  } while (0)

TensorView view_of(const tools::SafetensorsTensor& t, void* data) {
  TensorView v;
  v.dtype = t.dtype;
  v.rank = static_cast<int>(t.shape.size());
  for (int i = 0; i < v.rank; ++i) v.shape[i] = t.shape[static_cast<size_t>(i)];
  v.data = data;
  return v;
}

Attrs attrs_of(const reference_test::Json& j) {
  std::vector<Attr> out;
  for (const auto& [name, entry] : j.obj) {
    Attr a;
    a.name = name;
    const std::string& kind = entry.at(0).string();
    const reference_test::Json& v = entry.at(1);
    if (kind == "i") {
      a.kind = AttrKind::kInt, a.i = v.integer();
    } else if (kind == "f") {
      a.kind = AttrKind::kFloat, a.f = v.number();
    } else if (kind == "I") {
      a.kind = AttrKind::kInts;
      for (const auto& e : v.array()) a.ints.push_back(e.integer());
    } else if (kind == "F") {
      a.kind = AttrKind::kFloats;
      for (const auto& e : v.array()) a.floats.push_back(e.number());
    } else {
      a.kind = AttrKind::kString, a.s = v.string();
    }
    out.push_back(std::move(a));
  }
  return Attrs(std::move(out));
}

double element(DType dt, const uint8_t* p, int64_t i) {
  switch (dt) {
    case DType::f32: { float v; std::memcpy(&v, p + 4 * i, 4); return v; }
    case DType::f64: { double v; std::memcpy(&v, p + 8 * i, 8); return v; }
    case DType::i64: { int64_t v; std::memcpy(&v, p + 8 * i, 8); return static_cast<double>(v); }
    case DType::i32: { int32_t v; std::memcpy(&v, p + 4 * i, 4); return v; }
    default: return p[i * static_cast<int64_t>(dtype_size(dt))];
  }
}

struct KernelSummary {
  int cases = 0, failed = 0;
  double worst = 0;  // worst |gpu - cpu| / (atol + rtol |cpu|); <= 1 passes
  std::string first_failure;
};

}  // namespace
}  // namespace edgetune

int main(int argc, char** argv) {
  using namespace edgetune;
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s op_cases.safetensors [--json OUT.json]\n", argv[0]);
    return 2;
  }
  const char* json_out = argc >= 4 && std::string(argv[2]) == "--json" ? argv[3] : nullptr;
  int n_dev = 0;
  if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
    std::fprintf(stderr, "no CUDA device\n");
    return 2;
  }
  auto file = tools::read_safetensors(argv[1]);
  if (!file.ok()) {
    std::fprintf(stderr, "%s\n", file.status().message().c_str());
    return 2;
  }
  const tools::SafetensorsFile& f = file.value();
  const KernelRegistry* cuda = KernelRegistry::for_backend("cuda");
  if (!cuda) {
    std::fprintf(stderr, "this build has no cuda backend\n");
    return 2;
  }
  CudaContext ctx;
  CHECK_CUDA(cudaStreamCreate(&ctx.stream));
  if (cublasCreate(&ctx.cublas) != CUBLAS_STATUS_SUCCESS || cublasSetStream(ctx.cublas, ctx.stream) != CUBLAS_STATUS_SUCCESS ||
      cublasLtCreate(&ctx.cublaslt) != CUBLAS_STATUS_SUCCESS) {
    std::fprintf(stderr, "cuBLAS initialisation failed\n");
    return 2;
  }
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  ctx.sm_count = prop.multiProcessorCount, ctx.cc_major = prop.major, ctx.cc_minor = prop.minor;
  std::printf("GPU: %s (sm_%d%d, %d SMs)\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount);

  const int n_cases = std::stoi(*f.meta("cases"));
  std::map<std::string, KernelSummary> summary;
  int failures = 0;
  for (int c = 0; c < n_cases; ++c) {
    const std::string id = "c" + std::to_string(c);
    const reference_test::Json meta = reference_test::JsonParser(*f.meta(id)).parse();
    const std::string kernel = meta.at("kernel").string();
    const std::string where = kernel + " sample " + std::to_string(meta.at("sample").integer());
    KernelSummary& s = summary[kernel];
    ++s.cases;
    auto fail = [&](const std::string& why) {
      ++s.failed, ++failures;
      if (s.first_failure.empty()) s.first_failure = where + ": " + why;
    };
    const KernelDef* def = cuda->find(kernel);
    if (!def) {
      fail("no cuda kernel of this name");
      continue;
    }
    Attrs attrs = attrs_of(meta.at("attrs"));
    std::vector<void*> owned;
    auto dalloc = [&](size_t n) {
      void* p = nullptr;
      CHECK_CUDA(cudaMalloc(&p, n + 256));
      owned.push_back(p);
      return p;
    };
    std::vector<TensorView> ins, outs;
    std::vector<const tools::SafetensorsTensor*> expected;
    for (int j = 0;; ++j) {
      const auto* t = f.find(id + "/in" + std::to_string(j));
      if (!t) break;
      void* p = dalloc(t->nbytes);
      CHECK_CUDA(cudaMemcpy(p, t->data, t->nbytes, cudaMemcpyHostToDevice));
      ins.push_back(view_of(*t, p));
    }
    for (int j = 0;; ++j) {
      const auto* t = f.find(id + "/out" + std::to_string(j));
      if (!t) break;
      expected.push_back(t);
      outs.push_back(view_of(*t, dalloc(t->nbytes)));
    }
    KernelArgs a;
    a.inputs = ins.data(), a.num_inputs = static_cast<int>(ins.size());
    a.outputs = outs.data(), a.num_outputs = static_cast<int>(outs.size());
    a.attrs = &attrs, a.device = &ctx;
    if (def->check) {
      Status st = def->check(a);
      if (!st.ok()) {
        fail("check refused what the cpu kernel ran: " + st.message());
        for (void* p : owned) cudaFree(p);
        continue;
      }
    }
    a.workspace_bytes = def->workspace ? def->workspace(a) : 0;
    a.workspace = a.workspace_bytes ? dalloc(a.workspace_bytes) : nullptr;
    std::vector<std::vector<uint8_t>> first(outs.size());
    bool ran = true;
    for (int rep = 0; rep < 2 && ran; ++rep) {
      for (auto& o : outs) CHECK_CUDA(cudaMemset(o.data, 0xff, o.nbytes()));
      Status st = def->run(a);
      cudaError_t e = cudaStreamSynchronize(ctx.stream);
      if (!st.ok() || e != cudaSuccess) {
        fail(!st.ok() ? st.message() : std::string("CUDA error: ") + cudaGetErrorString(e));
        ran = false;
        if (e != cudaSuccess) {  // a sticky error (illegal address) poisons the context: stop here
          std::fprintf(stderr, "%s: %s; stopping\n", where.c_str(), cudaGetErrorString(e));
          c = n_cases;
        }
        break;
      }
      for (size_t j = 0; j < outs.size(); ++j) {
        std::vector<uint8_t> got(outs[j].nbytes());
        CHECK_CUDA(cudaMemcpy(got.data(), outs[j].data, got.size(), cudaMemcpyDeviceToHost));
        if (rep == 0) {
          first[j] = got;
          continue;
        }
        if (got != first[j]) fail("output " + std::to_string(j) + " differs between two runs (not deterministic)");
        const tools::SafetensorsTensor& want = *expected[j];
        const int64_t n = outs[j].numel();
        double scale = 0;
        for (int64_t i = 0; i < n; ++i) scale = std::max(scale, std::fabs(element(want.dtype, want.data, i)));
        double worst = 0;
        int64_t worst_i = -1;
        for (int64_t i = 0; i < n; ++i) {
          const double w = element(want.dtype, want.data, i), g = element(outs[j].dtype, got.data(), i);
          const double err = std::isnan(w) && std::isnan(g) ? 0
                             : std::fabs(g - w) / (kAtol * std::max(1.0, scale) + kRtol * std::fabs(w));
          if (!(err <= worst)) worst = std::isnan(err) ? INFINITY : err, worst_i = i;
        }
        s.worst = std::max(s.worst, worst);
        if (worst > 1) {
          char buf[200];
          std::snprintf(buf, sizeof buf, "output %zu element %lld: gpu %.9g, cpu %.9g", j,
                        static_cast<long long>(worst_i), element(outs[j].dtype, got.data(), worst_i),
                        element(want.dtype, want.data, worst_i));
          fail(buf);
        }
      }
    }
    for (void* p : owned) cudaFree(p);
  }
  std::printf("%-36s %6s %6s %10s  %s\n", "kernel", "cases", "failed", "worst", "first failure");
  for (const auto& [k, s] : summary)
    std::printf("%-36s %6d %6d %10.3g  %s\n", k.c_str(), s.cases, s.failed, s.worst, s.first_failure.c_str());
  std::printf("%d cases, %zu kernels, %d failures (tolerance |gpu-cpu| <= %g*max(1,max|cpu|) + %g*|cpu|)\n", n_cases,
              summary.size(), failures, kAtol, kRtol);
  if (json_out) {
    if (FILE* out = std::fopen(json_out, "w")) {
      std::fprintf(out, "{\"cases\": %d, \"failures\": %d, \"kernels\": {", n_cases, failures);
      bool first = true;
      for (const auto& [k, s] : summary) {
        std::fprintf(out, "%s\"%s\": {\"cases\": %d, \"failed\": %d, \"worst\": %.6g, \"first_failure\": \"%s\"}",
                     first ? "" : ", ", k.c_str(), s.cases, s.failed, std::isfinite(s.worst) ? s.worst : 1e300,
                     tools::json_escape(s.first_failure).c_str());
        first = false;
      }
      std::fprintf(out, "}}\n");
      std::fclose(out);
    }
  }
  return failures ? 1 : 0;
}
