#include "fastnn/parallel.hpp"

#include <algorithm>
#include <atomic>
#include <stdexcept>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace fastnn {
namespace {
// 0 = not yet read from OpenMP (which honours OMP_NUM_THREADS).
std::atomic<int> g_num_threads{0};
// 0 = no cap.
std::atomic<int> g_thread_limit{0};
}  // namespace

int num_processors() {
#ifdef _OPENMP
  return omp_get_num_procs();
#else
  return 1;
#endif
}

bool have_openmp() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

int num_threads() {
  const int n = configured_threads();
  const int limit = g_thread_limit.load(std::memory_order_relaxed);
  return limit > 0 && limit < n ? limit : n;
}

int configured_threads() {
  int n = g_num_threads.load(std::memory_order_relaxed);
  if (n > 0) return n;
#ifdef _OPENMP
  n = std::max(1, omp_get_max_threads());
#else
  n = 1;
#endif
  int expected = 0;
  g_num_threads.compare_exchange_strong(expected, n);
  return g_num_threads.load(std::memory_order_relaxed);
}

void set_num_threads(int n) {
  if (n < 1) throw std::invalid_argument("set_num_threads: n must be >= 1");
  g_num_threads.store(have_openmp() ? n : 1, std::memory_order_relaxed);
}

void set_thread_limit(int limit) {
  if (limit < 0) throw std::invalid_argument("set_thread_limit: limit must be >= 0");
  g_thread_limit.store(limit, std::memory_order_relaxed);
}

int thread_limit() { return g_thread_limit.load(std::memory_order_relaxed); }

void release_threads() {
// OpenMP 5.0's pause; GCC's libgomp has it since GCC 10 while still announcing OpenMP 4.5.
#if defined(_OPENMP) && (_OPENMP >= 201811 || (defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 10))
  omp_pause_resource_all(omp_pause_hard);
#endif
}

}  // namespace fastnn
