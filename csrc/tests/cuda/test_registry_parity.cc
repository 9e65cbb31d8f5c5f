// Every kernel name the cpu registry has must be in the cuda registry (and no cuda kernel may exist
// without a cpu one): a plan compiled for cpu then loads on cuda, and a new CPU op cannot skip the
// CUDA backend. Host only: building the registries registers function pointers and calls no CUDA
// API, so this runs (and CI runs it) on machines without a GPU.
#include <cstdio>
#include <set>
#include <string>

#include "core/kernel.h"

int main() {
  using edgetune::KernelRegistry;
  const KernelRegistry* cpu = KernelRegistry::for_backend("cpu");
  const KernelRegistry* cuda = KernelRegistry::for_backend("cuda");
  if (!cpu || !cuda) {
    std::fprintf(stderr, "registry parity: backend missing (cpu %p, cuda %p)\n", static_cast<const void*>(cpu),
                 static_cast<const void*>(cuda));
    return 1;
  }
  const auto cpu_names = cpu->names(), cuda_names = cuda->names();
  const std::set<std::string> a(cpu_names.begin(), cpu_names.end()), b(cuda_names.begin(), cuda_names.end());
  int bad = 0;
  for (const auto& n : a)
    if (!b.count(n)) std::fprintf(stderr, "cuda lacks kernel '%s'\n", n.c_str()), ++bad;
  for (const auto& n : b)
    if (!a.count(n)) std::fprintf(stderr, "cuda kernel '%s' has no cpu kernel\n", n.c_str()), ++bad;
  for (const auto& n : b) {
    const auto* def = cuda->find(n);
    const auto* ref = cpu->find(n);
    if (ref && (!def->run || def->op != ref->op))
      std::fprintf(stderr, "cuda kernel '%s': no run, or another op than the cpu kernel's\n", n.c_str()), ++bad;
  }
  std::printf("registry parity: %zu cpu kernels, %zu cuda kernels, %d problem(s)\n", a.size(), b.size(), bad);
  return bad ? 1 : 0;
}
