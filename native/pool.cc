// Persistent thread pool. Workers are created once (and again only on setThreads), then
// park between jobs: they spin for a short while (a decode step issues kernels back to
// back, and waking a sleeping thread costs tens of microseconds), then sleep on a
// condition variable. The calling thread always takes part in the work.
//
// A job is a range of independent items claimed from an atomic counter. Workers must
// *join* a job before touching it, and the caller closes the job once every item is
// claimed; it then waits only for workers that joined. So a worker that is descheduled
// (an oversubscribed machine) or slow to wake never delays a call: the caller simply does
// the items itself. Which thread runs an item never changes its numbers, because every
// item writes its own outputs with an order fixed by the problem alone.
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

// state = generation << 16 | CLOSED | joined-worker count
const std::uint64_t CLOSED = 1u << 15, COUNT = CLOSED - 1;

struct Pool {
  std::mutex m;
  std::condition_variable cv;
  std::vector<std::thread> workers;
  std::atomic<std::uint64_t> state{CLOSED};
  std::atomic<int> sleepers{0};
  std::atomic<i64> next{0};
  std::atomic<bool> stop{false};
  // The current job (written by the caller before the state is published).
  JobFn fn = nullptr;
  void* ctx = nullptr;
  i64 njobs = 0;
  int maxWorkers = 0;   // workers (by index) allowed to join
  std::mutex dispatch;  // one job at a time (another JS thread runs its job serially)
  long spinUs = 300;
};

Pool* g_pool = nullptr;  // leaked on purpose: no destructor may run at process exit
std::once_flag g_once;
int g_threads = 0;

inline std::uint64_t gen_of(std::uint64_t s) { return s >> 16; }

void work(Pool* p, int idx) {
  std::uint64_t seen = gen_of(p->state.load());
  for (;;) {
    std::uint64_t s = p->state.load(std::memory_order_acquire);
    if (gen_of(s) == seen) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int it = 1;; it++) {
        DSV3_PAUSE();
        s = p->state.load(std::memory_order_acquire);
        if (gen_of(s) != seen || p->stop.load(std::memory_order_relaxed)) break;
        if ((it & 255) == 0 && std::chrono::steady_clock::now() - t0 > std::chrono::microseconds(p->spinUs)) break;
      }
    }
    if (gen_of(s) == seen && !p->stop.load()) {
      std::unique_lock<std::mutex> lk(p->m);
      p->sleepers.fetch_add(1);
      p->cv.wait(lk, [&] { return gen_of(p->state.load()) != seen || p->stop.load(); });
      p->sleepers.fetch_sub(1);
      s = p->state.load();
    }
    if (p->stop.load()) return;
    seen = gen_of(s);
    // Join the job unless it is closed (or already replaced by a newer one).
    bool joined = false;
    while (!(s & CLOSED) && gen_of(s) == seen) {
      if (p->state.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel)) {
        joined = true;
        break;
      }
    }
    if (!joined) continue;
    if (idx < p->maxWorkers) {
      for (;;) {
        const i64 j = p->next.fetch_add(1, std::memory_order_relaxed);
        if (j >= p->njobs) break;
        p->fn(p->ctx, j);
      }
    }
    p->state.fetch_sub(1, std::memory_order_acq_rel);
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
  for (int i = 0; i < n - 1; i++) p->workers.emplace_back(work, p, i);
}

void init() {
  g_pool = new Pool();
  if (const char* s = std::getenv("DSV3_SPIN_US")) g_pool->spinUs = std::atol(s);
  int n = pool_default_threads();
  if (const char* s = std::getenv("DSV3_THREADS")) {
    const int v = std::atoi(s);
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
    const int c = CPU_COUNT(&set);
    if (c > 0) return c;
  }
#endif
  const unsigned n = std::thread::hardware_concurrency();
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
  p->fn = fn;
  p->ctx = ctx;
  p->njobs = njobs;
  p->maxWorkers = nt - 1;
  p->next.store(0, std::memory_order_relaxed);
  // Publish: new generation, open, nobody joined yet.
  const std::uint64_t g = gen_of(p->state.load()) + 1;
  p->state.store(g << 16);  // seq_cst: pairs with the sleepers check below
  if (p->sleepers.load() > 0) {
    std::lock_guard<std::mutex> guard(p->m);
    p->cv.notify_all();
  }
  for (;;) {
    const i64 j = p->next.fetch_add(1, std::memory_order_relaxed);
    if (j >= njobs) break;
    fn(ctx, j);
  }
  // Close, then wait for the workers that joined to finish their items.
  std::uint64_t s = p->state.fetch_or(CLOSED) | CLOSED;
  while ((s & COUNT) != 0) {
    DSV3_PAUSE();
    s = p->state.load(std::memory_order_acquire);
  }
}

}  // namespace dsv3
