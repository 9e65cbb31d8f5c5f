// "No heap allocation inside a training step": this test binary interposes malloc & co. (glibc's
// __libc_* entry points do the real work) and counts calls made while Runtime::step() runs.
// Everything in the process goes through these — our kernels, the thread pool, libstdc++,
// OpenBLAS. Skipped under AddressSanitizer, which owns malloc itself. The same interposition
// makes aligned_alloc fail on request, to see the loader report kOutOfMemory.
#include <gtest/gtest.h>

#include <atomic>
#include <cstddef>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "core/runtime.h"

#if defined(__SANITIZE_ADDRESS__)
#define EDGETUNE_COUNT_MALLOC 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EDGETUNE_COUNT_MALLOC 0
#endif
#endif
#ifndef EDGETUNE_COUNT_MALLOC
#if defined(__GLIBC__) || defined(__linux__)
#define EDGETUNE_COUNT_MALLOC 1
#else
#define EDGETUNE_COUNT_MALLOC 0
#endif
#endif

#if EDGETUNE_COUNT_MALLOC
namespace {
std::atomic<bool> g_counting{false};
std::atomic<long> g_allocations{0};
std::atomic<bool> g_fail_aligned_alloc{false};  // aligned_alloc returns null (the loader's regions)
}  // namespace

extern "C" {
void* __libc_malloc(size_t);
void* __libc_calloc(size_t, size_t);
void* __libc_realloc(void*, size_t);
void* __libc_memalign(size_t, size_t);
void __libc_free(void*);

void* malloc(size_t n) {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1);
  return __libc_malloc(n);
}
void* calloc(size_t a, size_t b) {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1);
  return __libc_calloc(a, b);
}
void* realloc(void* p, size_t n) {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1);
  return __libc_realloc(p, n);
}
void* aligned_alloc(size_t alignment, size_t n) {
  if (g_fail_aligned_alloc.load(std::memory_order_relaxed)) return nullptr;
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1);
  return __libc_memalign(alignment, n);
}
int posix_memalign(void** out, size_t alignment, size_t n) {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1);
  *out = __libc_memalign(alignment, n);
  return *out ? 0 : 12;  // ENOMEM
}
void free(void* p) { __libc_free(p); }
}
#endif

namespace edgetune {
namespace {

[[maybe_unused]] std::vector<uint8_t> read_file(const std::string& name) {  // unused under ASan
  std::ifstream f(std::string(EDGETUNE_TEST_DATA) + "/" + name, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

TEST(RuntimeAlloc, TrainingStepAllocatesNothing) {
#if !EDGETUNE_COUNT_MALLOC
  GTEST_SKIP() << "malloc is owned by the sanitizer in this build";
#else
  {  // the counter is live: a real allocation is seen (through a volatile pointer, so it is not elided)
    void* (*volatile do_malloc)(size_t) = malloc;
    g_allocations = 0;
    g_counting = true;
    free(do_malloc(64));
    g_counting = false;
    ASSERT_EQ(g_allocations.load(), 1);
  }
  for (const char* stem : {"mlp_sgd", "small_cnn_adamw"}) {
    for (int threads : {1, 2}) {
      auto plan = read_file(std::string(stem) + ".etp");
      RuntimeOptions opt;
      opt.num_threads = threads;
      auto r = Runtime::load(plan.data(), plan.size(), opt);
      ASSERT_TRUE(r.ok()) << r.status().to_string();
      auto rt = std::move(r).value();
      auto x = read_file(std::string(stem) + ".x.bin");
      auto y = read_file(std::string(stem) + ".y.bin");
      ASSERT_TRUE(rt->set_input(0, x.data(), x.size()).ok());
      ASSERT_TRUE(rt->set_input(1, y.data(), y.size()).ok());
      ASSERT_TRUE(rt->step().ok());  // warm-up: lets BLAS set up its own buffer pool once

      g_allocations = 0;
      g_counting = true;
      bool ok = true;
      for (int i = 0; i < 5; ++i) ok &= rt->step().ok();
      ok &= rt->forward().ok();
      g_counting = false;
      ASSERT_TRUE(ok);
      EXPECT_EQ(g_allocations.load(), 0) << stem << " with " << threads << " threads";
    }
  }
#endif
}

TEST(RuntimeAlloc, FailedRegionAllocationIsOutOfMemory) {
#if !EDGETUNE_COUNT_MALLOC
  GTEST_SKIP() << "malloc is owned by the sanitizer in this build";
#else
  auto plan = read_file("mlp_sgd.etp");
  ASSERT_FALSE(plan.empty());
  g_fail_aligned_alloc = true;
  auto r = Runtime::load(plan.data(), plan.size(), RuntimeOptions());
  g_fail_aligned_alloc = false;
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kOutOfMemory);
  EXPECT_NE(r.status().to_string().find("out of memory: cannot allocate"), std::string::npos)
      << r.status().to_string();
  // and the same plan loads once memory is there again
  EXPECT_TRUE(Runtime::load(plan.data(), plan.size(), RuntimeOptions()).ok());
#endif
}

}  // namespace
}  // namespace edgetune
