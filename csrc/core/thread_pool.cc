// ThreadPool implementation: one job at a time, chunks handed out under a mutex; idle threads
// spin briefly before sleeping (see thread_pool.h).
#include "core/thread_pool.h"

#include <cctype>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <new>
#include <string>
#include <system_error>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace edgetune {

namespace {
// One spin-loop iteration's hint to the core (frees the pipeline for the sibling hyperthread).
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// OMP_WAIT_POLICY=PASSIVE (any case) means: do not spin.
int spin_micros_from_environment() {
  const char* policy = std::getenv("OMP_WAIT_POLICY");
  if (!policy) return ThreadPool::kSpinMicros;
  std::string p(policy);
  for (char& ch : p) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return p == "passive" ? 0 : ThreadPool::kSpinMicros;
}
}  // namespace

template <typename Done>
bool ThreadPool::spin_until(const Done& done) const {
  if (spin_micros_ <= 0) return done();
  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  for (unsigned i = 1;; ++i) {
    if (done()) return true;
    cpu_relax();
    if ((i & 255) == 0 && Clock::now() - start > std::chrono::microseconds(spin_micros_)) return done();
  }
}

ThreadPool::ThreadPool(int num_threads) : spin_micros_(spin_micros_from_environment()) {
  if (num_threads <= 0) num_threads = static_cast<int>(std::thread::hardware_concurrency());
  if (num_threads <= 0) num_threads = 1;
  if (num_threads > kMaxThreads) num_threads = kMaxThreads;
  num_threads_ = num_threads;
  std::string why;
  try {
    workers_.reserve(static_cast<size_t>(num_threads_ - 1));
    for (int i = 1; i < num_threads_; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
    return;
  } catch (const std::system_error& e) {
    why = e.what();
  } catch (const std::bad_alloc&) {
    why = "out of memory";
  } catch (const std::exception& e) {
    why = e.what();
  }
  // Part-way: the started workers wait on our condition variables, so they must be stopped and
  // joined before anything else happens (destroying the pool under them hung in cond_destroy).
  const size_t started = workers_.size();
  stop_workers();
  workers_.clear();
  start_status_ = Status(StatusCode::kOutOfMemory,
                         "cannot start " + std::to_string(num_threads_) + " threads (" + std::to_string(started + 1) +
                             " started before the system refused: " + why + "); use fewer threads");
  num_threads_ = 1;
  stop_ = false;
}

void ThreadPool::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

ThreadPool::~ThreadPool() { stop_workers(); }

void ThreadPool::run_chunk(int64_t chunk) {
  int64_t begin = job_n_ * chunk / job_chunks_;
  int64_t end = job_n_ * (chunk + 1) / job_chunks_;
  job_tramp_(job_fn_, begin, end);
}

void ThreadPool::run_chunks(int64_t n, int64_t chunks, Trampoline tramp, const void* fn) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_n_ = n;
    job_chunks_ = chunks;
    job_tramp_ = tramp;
    job_fn_ = fn;
    next_chunk_ = 0;
    pending_ = chunks;
    ++generation_;
  }
  work_cv_.notify_all();
  // the caller works too
  for (;;) {
    int64_t chunk;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (next_chunk_ >= job_chunks_) break;
      chunk = next_chunk_++;
    }
    run_chunk(chunk);
    std::lock_guard<std::mutex> lock(mu_);
    if (--pending_ == 0) done_cv_.notify_all();
  }
  if (spin_until([this] { return pending_.load(std::memory_order_acquire) == 0; })) return;
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [this] { return pending_ == 0; });
}

void ThreadPool::worker_loop(int /*index*/) {
  uint64_t seen = 0;
  auto has_work = [&] { return stop_ || (generation_ != seen && next_chunk_ < job_chunks_); };
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    if (!has_work()) {  // spin for the next job before sleeping; has_work() decides under the lock
      seen = generation_;  // a job whose chunks are all taken is seen: spin for the one after it
      lock.unlock();
      spin_until([&] { return stop_.load(std::memory_order_relaxed) || generation_.load(std::memory_order_acquire) != seen; });
      lock.lock();
      work_cv_.wait(lock, has_work);
    }
    if (stop_) return;
    seen = generation_;
    while (next_chunk_ < job_chunks_) {
      int64_t chunk = next_chunk_++;
      lock.unlock();
      run_chunk(chunk);
      lock.lock();
      if (--pending_ == 0) done_cv_.notify_all();
    }
  }
}

}  // namespace edgetune
