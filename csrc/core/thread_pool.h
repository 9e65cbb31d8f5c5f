// ThreadPool: the runtime's worker threads, started once when a session loads.
//
// `parallel_for(n, fn)` splits [0, n) into contiguous chunks, runs them on the workers and the
// calling thread, and returns when all are done. The callable is passed by reference (no
// std::function, no allocation), so kernels can call it inside a training step. With one
// thread, or n too small to split, it runs inline.
//
// Waiting: a worker that runs out of chunks spins (a pause loop) for up to kSpinMicros before it
// sleeps on the condition variable, and so does the caller waiting for the last chunks. A training
// step runs hundreds of nodes back to back, each one parallel_for: waking a sleeping thread costs
// a futex round trip per node (tens of microseconds), which dominated small nodes; a spinning
// worker picks the next job up within a microsecond. Between steps (or when a model's nodes run
// single-threaded for long) the spin runs out and the thread sleeps, so an idle session burns no
// CPU beyond kSpinMicros. OMP_WAIT_POLICY=PASSIVE in the environment turns spinning off, as it
// does for OpenMP runtimes (libgomp, PyTorch's threads): the choice for cores shared with other
// busy processes, where a spinning thread takes time from them.
//
// Starting threads can fail part-way (a memory or process limit): the pool then stops and joins
// the workers it did start, runs everything on the caller (num_threads() == 1), and says why in
// start_status(). The runtime's loader turns that into an error; nothing throws.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "core/status.h"

namespace edgetune {

class ThreadPool {
 public:
  // The most threads a pool starts; a request for more is refused by the runtime's loader.
  static constexpr int kMaxThreads = 4096;
  // How long a thread with nothing to do spins before it sleeps (see the header comment).
  static constexpr int kSpinMicros = 200;

  explicit ThreadPool(int num_threads);  // total threads incl. the caller; <= 0 = hardware
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }
  // Microseconds an idle thread spins before sleeping: kSpinMicros, or 0 under
  // OMP_WAIT_POLICY=PASSIVE.
  int spin_micros() const { return spin_micros_; }
  // Ok, or why not all the requested threads could be started (then the pool runs inline).
  const Status& start_status() const { return start_status_; }

  // fn(begin, end) over chunks of [0, n); `grain` = the smallest chunk worth a thread.
  template <typename Fn>
  void parallel_for(int64_t n, int64_t grain, const Fn& fn) {
    if (n <= 0) return;
    int64_t chunks = grain > 0 ? (n + grain - 1) / grain : n;
    if (chunks > num_threads_) chunks = num_threads_;
    if (chunks <= 1) {
      fn(int64_t{0}, n);
      return;
    }
    run_chunks(n, chunks, &invoke<Fn>, &fn);
  }

 private:
  using Trampoline = void (*)(const void* fn, int64_t begin, int64_t end);
  template <typename Fn>
  static void invoke(const void* fn, int64_t begin, int64_t end) {
    (*static_cast<const Fn*>(fn))(begin, end);
  }
  void run_chunks(int64_t n, int64_t chunks, Trampoline tramp, const void* fn);
  void worker_loop(int index);
  void run_chunk(int64_t chunk);
  void stop_workers();
  // Spins until done() is true or spin_micros() pass; true if done() became true.
  template <typename Done>
  bool spin_until(const Done& done) const;

  int num_threads_;
  int spin_micros_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  // the job being run (valid while pending_ > 0). Everything is written under mu_; generation_,
  // pending_ and stop_ are atomics so that spinning threads may also read them without it.
  std::atomic<uint64_t> generation_{0};
  int64_t job_n_ = 0, job_chunks_ = 0;
  Trampoline job_tramp_ = nullptr;
  const void* job_fn_ = nullptr;
  int64_t next_chunk_ = 0;
  std::atomic<int64_t> pending_{0};
  std::atomic<bool> stop_{false};
  Status start_status_;
};

}  // namespace edgetune
