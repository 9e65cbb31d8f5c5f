// GoogleTest tests of core/thread_pool.h: parallel_for covers [0, n) exactly once in
// non-empty contiguous chunks for many n/grain/thread combinations, runs inline with one
// thread or one chunk, really runs chunks concurrently, survives many back-to-back jobs, and
// the destructor joins its workers; idle workers spin unless OMP_WAIT_POLICY=PASSIVE and still
// wake from sleep after long gaps. Meant to be run under the ASan/UBSan build too.
// Suite: CoreThreadPool.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <dirent.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

#include "core/thread_pool.h"

namespace edgetune {
namespace {

// What one parallel_for call did: the chunks it handed out and who ran them.
struct Record {
  std::mutex mu;
  std::vector<std::pair<int64_t, int64_t>> chunks;
  std::vector<std::thread::id> threads;
};

template <typename Pool>
void run_recorded(Pool& pool, int64_t n, int64_t grain, std::vector<std::atomic<int>>* hits, Record* rec) {
  pool.parallel_for(n, grain, [&](int64_t begin, int64_t end) {
    {
      std::lock_guard<std::mutex> lock(rec->mu);
      rec->chunks.emplace_back(begin, end);
      rec->threads.push_back(std::this_thread::get_id());
    }
    for (int64_t i = begin; i < end; ++i)
      if (i >= 0 && i < n) (*hits)[static_cast<size_t>(i)].fetch_add(1, std::memory_order_relaxed);
  });
}

TEST(CoreThreadPool, NumThreads) {
  EXPECT_EQ(ThreadPool(1).num_threads(), 1);
  EXPECT_EQ(ThreadPool(3).num_threads(), 3);
  EXPECT_GE(ThreadPool(0).num_threads(), 1);   // 0 = hardware concurrency
  EXPECT_GE(ThreadPool(-4).num_threads(), 1);  // negative too
}

TEST(CoreThreadPool, CoversEveryIndexExactlyOnce) {
  const int thread_counts[] = {1, 2, 3, 4, 7, 8};
  const int64_t ns[] = {1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 63, 100, 1000, 4097};
  const int64_t grains[] = {0, 1, 2, 3, 7, 64, 1000, 1 << 20};
  for (int t : thread_counts) {
    ThreadPool pool(t);
    for (int64_t n : ns) {
      for (int64_t grain : grains) {
        SCOPED_TRACE(testing::Message() << "threads=" << t << " n=" << n << " grain=" << grain);
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        for (auto& h : hits) h.store(0);
        Record rec;
        run_recorded(pool, n, grain, &hits, &rec);

        int wrong = 0;
        for (int64_t i = 0; i < n; ++i) wrong += hits[static_cast<size_t>(i)].load() != 1;
        EXPECT_EQ(wrong, 0) << "indices not covered exactly once";

        // chunks: non-empty, in range, no more than threads (or needed chunks), and together
        // they tile [0, n) without overlap (checked above) in contiguous pieces
        ASSERT_GE(rec.chunks.size(), 1u);
        EXPECT_LE(rec.chunks.size(), static_cast<size_t>(t));
        if (grain > 0) {
          EXPECT_LE(static_cast<int64_t>(rec.chunks.size()), (n + grain - 1) / grain);
        }
        int64_t total = 0;
        for (const auto& c : rec.chunks) {
          EXPECT_GE(c.first, 0);
          EXPECT_LT(c.first, c.second) << "empty chunk";
          EXPECT_LE(c.second, n);
          total += c.second - c.first;
        }
        EXPECT_EQ(total, n);
      }
    }
  }
}

TEST(CoreThreadPool, NonPositiveNCallsNothing) {
  ThreadPool pool(4);
  std::atomic<int> calls{0};
  pool.parallel_for(0, 1, [&](int64_t, int64_t) { calls++; });
  pool.parallel_for(-5, 1, [&](int64_t, int64_t) { calls++; });
  pool.parallel_for(0, 0, [&](int64_t, int64_t) { calls++; });
  EXPECT_EQ(calls.load(), 0);
}

TEST(CoreThreadPool, OneThreadRunsInline) {
  ThreadPool pool(1);
  const std::thread::id me = std::this_thread::get_id();
  for (int64_t n : {1, 2, 100, 100000}) {
    for (int64_t grain : {0, 1, 10}) {
      std::vector<std::pair<int64_t, int64_t>> calls;  // no lock: must be this thread only
      std::thread::id who;
      pool.parallel_for(n, grain, [&](int64_t b, int64_t e) {
        calls.emplace_back(b, e);
        who = std::this_thread::get_id();
      });
      ASSERT_EQ(calls.size(), 1u);
      EXPECT_EQ(calls[0].first, 0);
      EXPECT_EQ(calls[0].second, n);
      EXPECT_EQ(who, me);
    }
  }
}

TEST(CoreThreadPool, OneChunkRunsInlineOnCaller) {
  ThreadPool pool(4);
  const std::thread::id me = std::this_thread::get_id();
  // grain >= n: not worth splitting
  for (int64_t n : {1, 5, 64}) {
    int calls = 0;
    std::thread::id who;
    pool.parallel_for(n, 64, [&](int64_t b, int64_t e) {
      ++calls;
      who = std::this_thread::get_id();
      EXPECT_EQ(b, 0);
      EXPECT_EQ(e, n);
    });
    EXPECT_EQ(calls, 1);
    EXPECT_EQ(who, me);
  }
}

TEST(CoreThreadPool, FewerIndicesThanThreads) {
  ThreadPool pool(8);
  for (int64_t n = 1; n < 8; ++n) {
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    for (auto& h : hits) h.store(0);
    Record rec;
    run_recorded(pool, n, 1, &hits, &rec);
    EXPECT_EQ(rec.chunks.size(), static_cast<size_t>(n));  // one index per chunk
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(hits[static_cast<size_t>(i)].load(), 1);
  }
}

// Four chunks on four threads must all be in flight at once: each waits (bounded) until all
// four have started. Proves the workers really take chunks, not only the caller.
TEST(CoreThreadPool, ChunksRunConcurrently) {
  constexpr int kThreads = 4;
  ThreadPool pool(kThreads);
  std::atomic<int> started{0};
  std::atomic<int> timed_out{0};
  Record rec;
  pool.parallel_for(kThreads, 1, [&](int64_t b, int64_t e) {
    {
      std::lock_guard<std::mutex> lock(rec.mu);
      rec.threads.push_back(std::this_thread::get_id());
    }
    started.fetch_add(1);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (started.load() < kThreads) {
      if (std::chrono::steady_clock::now() > deadline) {
        timed_out.fetch_add(1);
        break;
      }
      std::this_thread::yield();
    }
  });
  EXPECT_EQ(timed_out.load(), 0);
  ASSERT_EQ(rec.threads.size(), static_cast<size_t>(kThreads));
  for (int i = 0; i < kThreads; ++i)
    for (int j = i + 1; j < kThreads; ++j) EXPECT_NE(rec.threads[i], rec.threads[j]);
}

TEST(CoreThreadPool, ThousandBackToBackJobs) {
  for (int t : {2, 4, 8}) {
    SCOPED_TRACE(testing::Message() << "threads=" << t);
    ThreadPool pool(t);
    std::vector<int64_t> data(4096, 0);
    int64_t expected_sum = 0;
    for (int job = 0; job < 1000; ++job) {
      // vary n and grain so consecutive jobs have different chunkings
      const int64_t n = 1 + (job * 37) % 4096;
      const int64_t grain = (job % 5 == 0) ? 0 : 1 + job % 13;
      std::atomic<int64_t> covered{0};
      pool.parallel_for(n, grain, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) data[static_cast<size_t>(i)] += 1;  // disjoint chunks: no race
        covered.fetch_add(e - b, std::memory_order_relaxed);
      });
      ASSERT_EQ(covered.load(), n) << "job " << job;
      expected_sum += n;
    }
    int64_t sum = 0;
    for (int64_t v : data) sum += v;
    EXPECT_EQ(sum, expected_sum);
  }
}

TEST(CoreThreadPool, TinyJobsBackToBack) {
  // the smallest splittable jobs stress the hand-off between one job's end and the next start
  ThreadPool pool(4);
  std::atomic<int64_t> total{0};
  for (int job = 0; job < 1000; ++job) {
    pool.parallel_for(2 + job % 3, 1, [&](int64_t b, int64_t e) { total.fetch_add(e - b); });
  }
  int64_t expected = 0;
  for (int job = 0; job < 1000; ++job) expected += 2 + job % 3;
  EXPECT_EQ(total.load(), expected);
}

TEST(CoreThreadPool, SpinsUnlessWaitPolicyIsPassive) {
  // OMP_WAIT_POLICY=PASSIVE (any case) turns the idle spin off, as for OpenMP runtimes; anything
  // else keeps it. Read when a pool starts.
  const char* before = std::getenv("OMP_WAIT_POLICY");
  const std::string saved = before ? before : "";
  setenv("OMP_WAIT_POLICY", "Passive", 1);
  EXPECT_EQ(ThreadPool(2).spin_micros(), 0);
  setenv("OMP_WAIT_POLICY", "ACTIVE", 1);
  EXPECT_EQ(ThreadPool(2).spin_micros(), ThreadPool::kSpinMicros);
  unsetenv("OMP_WAIT_POLICY");
  EXPECT_EQ(ThreadPool(2).spin_micros(), ThreadPool::kSpinMicros);
  if (before) setenv("OMP_WAIT_POLICY", saved.c_str(), 1);
}

TEST(CoreThreadPool, JobsAfterIdleGapsWakeSleepingWorkers) {
  // Jobs separated by more than the spin time find the workers asleep on the condition
  // variable; jobs right after each other find them spinning. Both hand-offs must cover every
  // index, and a job whose chunks the caller took alone must not leave a worker spinning on a
  // stale generation (the next job still runs on several threads).
  ThreadPool pool(2);
  for (int round = 0; round < 20; ++round) {
    if (round % 4 == 0) std::this_thread::sleep_for(std::chrono::microseconds(3 * ThreadPool::kSpinMicros));
    std::atomic<int64_t> covered{0};
    pool.parallel_for(1000, 1, [&](int64_t b, int64_t e) { covered.fetch_add(e - b); });
    ASSERT_EQ(covered.load(), 1000) << "round " << round;
  }
  // the worker still takes chunks after all that: one chunk blocks until the other has started
  std::atomic<int> started{0};
  std::atomic<bool> both{false};
  pool.parallel_for(2, 1, [&](int64_t, int64_t) {
    started.fetch_add(1);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (started.load() < 2 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
    if (started.load() == 2) both = true;
  });
  EXPECT_TRUE(both.load());
}

TEST(CoreThreadPool, MutableCallableState) {
  ThreadPool pool(3);
  std::vector<double> out(999, 0.0);
  struct Scale {
    std::vector<double>* out;
    double k;
    void operator()(int64_t b, int64_t e) const {
      for (int64_t i = b; i < e; ++i) (*out)[static_cast<size_t>(i)] = k * static_cast<double>(i);
    }
  } fn{&out, 0.5};
  pool.parallel_for(static_cast<int64_t>(out.size()), 10, fn);
  for (size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], 0.5 * static_cast<double>(i));
}

TEST(CoreThreadPool, IndependentPoolsOnSeparateThreads) {
  auto work = [](int64_t* result) {
    ThreadPool pool(3);
    std::atomic<int64_t> s{0};
    for (int job = 0; job < 200; ++job)
      pool.parallel_for(100, 1, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) s.fetch_add(i, std::memory_order_relaxed);
      });
    *result = s.load();
  };
  int64_t r1 = 0, r2 = 0;
  std::thread a(work, &r1), b(work, &r2);
  a.join();
  b.join();
  EXPECT_EQ(r1, 200 * 4950);
  EXPECT_EQ(r2, 200 * 4950);
}

#if defined(__linux__)
int count_threads() {
  int n = 0;
  DIR* d = opendir("/proc/self/task");
  if (!d) return -1;
  while (dirent* e = readdir(d))
    if (e->d_name[0] != '.') ++n;
  closedir(d);
  return n;
}
#endif

TEST(CoreThreadPool, DestructorJoinsWorkers) {
  // construct/destroy, idle and after work, many times: no hang, no leak, no crash
  for (int round = 0; round < 50; ++round) {
    ThreadPool idle(4);
  }
  for (int round = 0; round < 50; ++round) {
    ThreadPool pool(1 + round % 6);
    std::atomic<int64_t> s{0};
    pool.parallel_for(64, 1, [&](int64_t b, int64_t e) { s.fetch_add(e - b); });
    EXPECT_EQ(s.load(), 64);
  }
  // heap-allocated pool destroyed from another thread than the one that used it
  auto pool = std::make_unique<ThreadPool>(4);
  std::atomic<int64_t> s{0};
  pool->parallel_for(1000, 1, [&](int64_t b, int64_t e) { s.fetch_add(e - b); });
  std::thread([p = std::move(pool)]() mutable { p.reset(); }).join();
  EXPECT_EQ(s.load(), 1000);

#if defined(__linux__)
  // after the destructor, the workers are gone from the process
  const int before = count_threads();
  if (before > 0) {
    {
      ThreadPool p(5);
      std::atomic<int> c{0};
      p.parallel_for(5, 1, [&](int64_t, int64_t) { c++; });
      EXPECT_EQ(c.load(), 5);
      EXPECT_GE(count_threads(), before + 4);
    }
    // an exited thread may linger in /proc for a moment after join() returns
    int after = count_threads();
    for (int i = 0; i < 200 && after != before; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      after = count_threads();
    }
    EXPECT_EQ(after, before);
  }
#endif
}

}  // namespace

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ET_TEST_ASAN 1
#endif
#endif
#if defined(__linux__) && !defined(__SANITIZE_ADDRESS__) && !defined(ET_TEST_ASAN)  // ASan needs the address space
// Thread creation failing part-way (here: an address-space limit, 8 MiB stacks): the pool stops
// the workers it started and reports it; it used to hang forever in pthread_cond_destroy. Run in
// a child process (the limit is process-wide) that alarm() kills if it hangs.
TEST(CoreThreadPool, PartialStartStopsStartedWorkersAndReports) {
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    alarm(20);
    struct rlimit lim = {size_t{1} << 30, size_t{1} << 30};
    if (setrlimit(RLIMIT_AS, &lim) != 0) _exit(10);
    int code = 0;
    {
      ThreadPool pool(ThreadPool::kMaxThreads);
      if (pool.start_status().ok()) code = 11;  // the limit did not bite: nothing proven
      else if (pool.num_threads() != 1) code = 12;
      else if (pool.start_status().message().find("cannot start") == std::string::npos) code = 13;
      int64_t sum = 0;
      pool.parallel_for(100, 1, [&](int64_t b, int64_t e) { sum += e - b; });
      if (code == 0 && sum != 100) code = 14;
    }
    _exit(code);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "child died by signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0)
                                 << " (SIGALRM = a hang)";
  if (WEXITSTATUS(status) == 11) GTEST_SKIP() << "a 1 GiB address-space limit did not stop 4096 threads here";
  EXPECT_EQ(WEXITSTATUS(status), 0);
}
#endif

}  // namespace edgetune
