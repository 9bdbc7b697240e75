// Threads for every kernel.
//
// fastnn owns its threads: one process-wide thread count (set_num_threads, default from
// OMP_NUM_THREADS or the processor count) and OpenMP loops over a partition of the work
// that is fixed by the problem's shape, never by the thread count. A task therefore does
// the same arithmetic on 1 or N threads and results agree bit for bit.
//
// Every thread that runs kernel code flushes denormals to zero (FTZ/DAZ on x86, FPCR.FZ
// on AArch64): float32 gradients that decay into denormals otherwise slow the x86 FPU
// ~10x (and many Arm cores too), and results then agree across the two. The caller's
// floating-point mode is restored when the kernel returns, so NumPy code around fastnn
// keeps IEEE behaviour.
#pragma once

#include <cstddef>
#include <exception>
#include <mutex>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#define FASTNN_HAVE_MXCSR 1
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#include <cstdint>
#define FASTNN_HAVE_FPCR 1
#endif

namespace fastnn {

using Index = std::ptrdiff_t;

/// Threads kernels use now (>= 1): the configured count, capped by the thread limit.
int num_threads();
/// The configured thread count (set_num_threads; default OMP_NUM_THREADS or the processors).
int configured_threads();
/// Sets the thread count for all later kernel calls. Requires n >= 1.
void set_num_threads(int n);
/// Caps the threads kernels use at `limit` without changing the configured count (0 lifts
/// the cap). The training loops lower it while other processes keep the cores busy: results
/// do not depend on the thread count, so the cap changes speed only.
void set_thread_limit(int limit);
/// The current cap (0: none).
int thread_limit();
/// Ends the calling thread's OpenMP worker threads; the next parallel region starts new
/// ones. Called before fork(): the child inherits the pool's bookkeeping but not its
/// threads, and its first parallel region would wait for them forever.
void release_threads();
/// Processors OpenMP may use (1 when built without OpenMP).
int num_processors();
/// Whether the build has OpenMP (otherwise every kernel runs on the calling thread).
bool have_openmp();

/// Work below this many floating-point operations runs on one thread: handing work to a
/// second thread costs more than it saves. Measured with GEMM on a 2-core Zen 4 (float32,
/// threads already awake): 32³ (0.07 MFLOP) 1.8x slower on 2 threads, 64³ (0.5 MFLOP)
/// even, 80³ (1 MFLOP) 1.2x faster, 96³ (1.8 MFLOP) 1.45x faster.
constexpr double kParallelMinFlops = 1.5e6;

/// Threads to use for work that costs `flops`: 1 under kParallelMinFlops, else all.
inline int threads_for(double flops) { return flops < kParallelMinFlops ? 1 : num_threads(); }

/// Sets flush-to-zero and denormals-are-zero for this thread while alive.
class FlushDenormals {
 public:
  FlushDenormals() {
#if defined(FASTNN_HAVE_MXCSR)
    saved_ = _mm_getcsr();
    _mm_setcsr(saved_ | 0x8040u);  // FTZ (bit 15) | DAZ (bit 6)
#elif defined(FASTNN_HAVE_FPCR)
    // FPCR.FZ (bit 24): denormal inputs and results of single and double precision
    // arithmetic are taken as zero, as FTZ|DAZ on x86. (Half precision has its own FZ16.)
    saved_ = read_fpcr();
    if (!(saved_ & kFpcrFz)) write_fpcr(saved_ | kFpcrFz);
#endif
  }
  ~FlushDenormals() {
#if defined(FASTNN_HAVE_MXCSR)
    _mm_setcsr(saved_);
#elif defined(FASTNN_HAVE_FPCR)
    if (!(saved_ & kFpcrFz)) write_fpcr(saved_);
#endif
  }
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;

 private:
#if defined(FASTNN_HAVE_FPCR)
  static constexpr std::uint64_t kFpcrFz = std::uint64_t(1) << 24;
  // The "memory" clobber keeps loads and stores of the kernel's data on their side of the
  // mode switch.
  static std::uint64_t read_fpcr() {
    std::uint64_t v;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(v) : : "memory");
    return v;
  }
  static void write_fpcr(std::uint64_t v) { __asm__ __volatile__("msr fpcr, %0" : : "r"(v) : "memory"); }
  std::uint64_t saved_ = 0;
#else
  unsigned saved_ = 0;
#endif
};

/// Runs body(t) for t in [0, tasks) on `threads` threads (dynamic schedule: tasks are
/// independent, so which thread runs one does not change its result). An exception in a
/// task is rethrown on the calling thread after the loop instead of terminating.
template <typename Body>
void parallel_for(Index tasks, int threads, Body&& body) {
  if (threads <= 1 || tasks <= 1) {
    FlushDenormals ftz;
    for (Index t = 0; t < tasks; ++t) body(t);
    return;
  }
  std::exception_ptr error;
  std::mutex error_mutex;
#pragma omp parallel num_threads(threads)
  {
    FlushDenormals ftz;
#pragma omp for schedule(dynamic, 1)
    for (Index t = 0; t < tasks; ++t) {
      try {
        body(t);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
      }
    }
  }
  if (error) std::rethrow_exception(error);
}

/// Elementwise work over n values: body(begin, count) on contiguous chunks of a fixed size,
/// on several threads when n·cost_per_element flops are worth it. Chunk boundaries do not
/// depend on the thread count.
template <typename Body>
void parallel_chunks(Index n, double cost_per_element, Body&& body) {
  constexpr Index kChunk = Index(1) << 14;
  if (n <= 0) return;
  const Index tasks = (n + kChunk - 1) / kChunk;
  parallel_for(tasks, threads_for(cost_per_element * double(n)), [&](Index t) {
    const Index begin = t * kChunk;
    body(begin, n - begin < kChunk ? n - begin : kChunk);
  });
}

/// A team of threads inside run_team: its loops split work among the team's threads and
/// end with a barrier. With one thread they are plain loops, so a team of one may run
/// inside another parallel region (an orphaned `omp for` there would bind to the outer
/// team and mix unrelated work).
class Team {
 public:
  explicit Team(int size) : size_(size) {}
  int size() const { return size_; }
  /// This thread's number in the team, 0 <= rank < size.
  int rank() const {
#ifdef _OPENMP
    return size_ > 1 ? omp_get_thread_num() : 0;
#else
    return 0;
#endif
  }

  /// body(i) for i in [0, count), i handed out one at a time.
  template <typename Body>
  void for_dynamic(Index count, Body&& body) const {
    if (size_ <= 1) {
      for (Index i = 0; i < count; ++i) body(i);
      return;
    }
#pragma omp for schedule(dynamic, 1)
    for (Index i = 0; i < count; ++i) body(i);
  }

  /// body(i) for i in [0, count), in equal contiguous shares.
  template <typename Body>
  void for_static(Index count, Body&& body) const {
    if (size_ <= 1) {
      for (Index i = 0; i < count; ++i) body(i);
      return;
    }
#pragma omp for schedule(static)
    for (Index i = 0; i < count; ++i) body(i);
  }

 private:
  int size_;
};

/// Runs body(team) on `threads` threads (on the calling thread alone when threads <= 1),
/// with denormals flushed in each. The body must not throw: a thread leaving early would
/// leave the others waiting at the team's next barrier.
template <typename Body>
void run_team(int threads, Body&& body) {
  if (threads <= 1) {
    FlushDenormals ftz;
    body(Team(1));
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    FlushDenormals ftz;
    body(Team(threads));
  }
}

}  // namespace fastnn
