// Persistent thread pool. Workers are created once (and again only on setThreads), then
// park between jobs: they spin for a short while (a decode step issues kernels back to
// back, and waking a sleeping thread costs tens of microseconds), then sleep on a
// condition variable. The calling thread always takes part in the work. Jobs are claimed
// from an atomic counter; which thread runs a job never changes its numbers, because
// every job writes its own outputs with an order fixed by the problem alone.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sched.h>
#endif
#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <immintrin.h>
#define DSV3_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define DSV3_PAUSE() __asm__ __volatile__("yield")
#else
#define DSV3_PAUSE() ((void)0)
#endif

#include "common.h"

namespace dsv3 {
namespace {

struct Pool {
  std::mutex m;
  std::condition_variable cv;
  std::vector<std::thread> workers;
  std::atomic<std::uint64_t> gen{0};
  std::atomic<int> sleepers{0};
  std::atomic<int> done{0};
  std::atomic<i64> next{0};
  std::atomic<bool> stop{false};
  // The current job (written by the caller before gen is bumped).
  JobFn fn = nullptr;
  void* ctx = nullptr;
  i64 njobs = 0;
  int active = 0;  // workers (by index) that take part in the current job
  std::mutex dispatch;  // one job at a time (another JS thread runs its job serially)
  long spinUs = 200;
};

Pool* g_pool = nullptr;  // leaked on purpose: no destructor may run at process exit
std::once_flag g_once;
int g_threads = 0;

void work(Pool* p, int idx, std::uint64_t seen) {
  for (;;) {
    std::uint64_t g = p->gen.load(std::memory_order_acquire);
    if (g == seen) {
      auto t0 = std::chrono::steady_clock::now();
      for (int it = 1;; it++) {
        DSV3_PAUSE();
        g = p->gen.load(std::memory_order_acquire);
        if (g != seen || p->stop.load(std::memory_order_relaxed)) break;
        if ((it & 255) == 0 &&
            std::chrono::steady_clock::now() - t0 > std::chrono::microseconds(p->spinUs))
          break;
      }
    }
    if (g == seen && !p->stop.load()) {
      std::unique_lock<std::mutex> lk(p->m);
      p->sleepers.fetch_add(1);
      p->cv.wait(lk, [&] { return p->gen.load() != seen || p->stop.load(); });
      p->sleepers.fetch_sub(1);
      g = p->gen.load();
    }
    if (p->stop.load()) return;
    seen = g;
    if (idx < p->active) {
      for (;;) {
        i64 j = p->next.fetch_add(1, std::memory_order_relaxed);
        if (j >= p->njobs) break;
        p->fn(p->ctx, j);
      }
    }
    p->done.fetch_add(1, std::memory_order_release);
  }
}

void stop_workers(Pool* p) {
  {
    std::lock_guard<std::mutex> lk(p->m);
    p->stop.store(true);
  }
  p->cv.notify_all();
  for (auto& t : p->workers) t.join();
  p->workers.clear();
  p->stop.store(false);
}

void start_workers(Pool* p, int n) {
  // The generation is read here, not in the new thread: a job published before the
  // thread gets to run must still be seen as new by it.
  const std::uint64_t g = p->gen.load();
  for (int i = 0; i < n - 1; i++) p->workers.emplace_back(work, p, i, g);
}

void init() {
  g_pool = new Pool();
  if (const char* s = std::getenv("DSV3_SPIN_US")) g_pool->spinUs = std::atol(s);
  int n = pool_default_threads();
  if (const char* s = std::getenv("DSV3_THREADS")) {
    int v = std::atoi(s);
    if (v > 0) n = v;
  }
  g_threads = n;
  start_workers(g_pool, n);
}

}  // namespace

int pool_default_threads() {
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int c = CPU_COUNT(&set);
    if (c > 0) return c;
  }
#endif
  unsigned n = std::thread::hardware_concurrency();
  return n ? (int)n : 1;
}

int pool_threads() {
  std::call_once(g_once, init);
  return g_threads;
}

void pool_set_threads(int n) {
  std::call_once(g_once, init);
  if (n <= 0) n = pool_default_threads();
  if (n > 256) n = 256;
  std::lock_guard<std::mutex> lk(g_pool->dispatch);
  if (n == g_threads) return;
  stop_workers(g_pool);
  g_threads = n;
  start_workers(g_pool, n);
}

void pool_run(i64 njobs, JobFn fn, void* ctx, int maxThreads) {
  std::call_once(g_once, init);
  Pool* p = g_pool;
  int nt = g_threads;
  if (maxThreads > 0 && maxThreads < nt) nt = maxThreads;
  if (nt > njobs) nt = (int)njobs;
  std::unique_lock<std::mutex> lk(p->dispatch, std::try_to_lock);
  if (nt <= 1 || !lk.owns_lock()) {
    for (i64 j = 0; j < njobs; j++) fn(ctx, j);
    return;
  }
  int nw = (int)p->workers.size();
  p->fn = fn;
  p->ctx = ctx;
  p->njobs = njobs;
  p->active = nt - 1;
  p->next.store(0, std::memory_order_relaxed);
  p->done.store(0, std::memory_order_relaxed);
  p->gen.fetch_add(1);  // seq_cst: pairs with the sleepers check below
  if (p->sleepers.load() > 0) {
    std::lock_guard<std::mutex> g(p->m);
    p->cv.notify_all();
  }
  for (;;) {
    i64 j = p->next.fetch_add(1, std::memory_order_relaxed);
    if (j >= njobs) break;
    fn(ctx, j);
  }
  while (p->done.load(std::memory_order_acquire) < nw) DSV3_PAUSE();
}

}  // namespace dsv3
