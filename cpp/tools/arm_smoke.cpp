// Smoke test for a cross-compiled (aarch64) build of the kernels, run under qemu-user:
// float32/float64 GEMM and the int8 GEMM against naive loops, and the denormal flush.
// Not part of the Python build. Example (objects compiled with the kernels' flags into OBJ):
//   aarch64-linux-gnu-g++ -std=c++17 -O2 -march=armv8-a -fopenmp -static -Icpp/include
//       cpp/tools/arm_smoke.cpp OBJ/gemm_float.o OBJ/gemm_double.o OBJ/qgemm.o
//       OBJ/parallel.o OBJ/activation.o -o arm_smoke && qemu-aarch64-static ./arm_smoke
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "fastnn/gemm.hpp"
#include "fastnn/parallel.hpp"
#include "fastnn/qgemm.hpp"

using fastnn::Index;

namespace {

int failures = 0;

void check(bool ok, const char* what) {
  std::printf("%-66s %s\n", what, ok ? "ok" : "FAILED");
  if (!ok) ++failures;
}

// C = op(A)·op(B) + bias through fastnn::gemm, compared with a triple loop in double.
// Error: max |c - ref| / Σ_t |a_it·b_tj| (the scale of the rounding error of any order of
// summation), and the normwise max |c - ref| / max |ref|.
template <typename T>
void gemm_case(Index m, Index k, Index n, bool trans_b, bool bias, int threads, double tol) {
  std::mt19937 rng(unsigned(m * 131 + k * 17 + n));
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  std::vector<T> a(static_cast<size_t>(m * k)), b(static_cast<size_t>(k * n));
  std::vector<T> c(static_cast<size_t>(m * n), T(7)), bv(static_cast<size_t>(n));
  for (auto& v : a) v = T(u(rng));
  for (auto& v : b) v = T(u(rng));
  for (auto& v : bv) v = T(u(rng));
  fastnn::set_num_threads(threads);
  fastnn::GemmArgs<T> p;
  p.m = m, p.n = n, p.k = k;
  p.a = a.data(), p.lda = k;
  p.b = b.data(), p.ldb = trans_b ? k : n, p.trans_b = trans_b;  // stored n×k when trans_b
  p.c = c.data(), p.ldc = n;
  p.bias = bias ? bv.data() : nullptr;
  fastnn::gemm(p);
  double worst = 0, worst_abs = 0, largest = 0;
  for (Index i = 0; i < m; ++i)
    for (Index j = 0; j < n; ++j) {
      double s = bias ? double(bv[size_t(j)]) : 0.0, mag = std::abs(s);
      for (Index t = 0; t < k; ++t) {
        const double bt = trans_b ? double(b[size_t(j * k + t)]) : double(b[size_t(t * n + j)]);
        s += double(a[size_t(i * k + t)]) * bt;
        mag += std::abs(double(a[size_t(i * k + t)]) * bt);
      }
      const double d = std::abs(double(c[size_t(i * n + j)]) - s);
      worst = std::max(worst, d / mag);
      worst_abs = std::max(worst_abs, d);
      largest = std::max(largest, std::abs(s));
    }
  char what[160];
  std::snprintf(what, sizeof(what), "gemm<%s> %ldx%ld @ %ldx%ld%s%s, %d thr: err %.1e normwise %.1e",
                sizeof(T) == 4 ? "f32" : "f64", long(m), long(k), long(k), long(n),
                trans_b ? " Bt" : "", bias ? " +bias" : "", threads, worst, worst_abs / largest);
  check(worst <= tol, what);
}

// int8 C = A·B through int8_pack + int8_gemm: exact integers.
void int8_case(Index m, Index k, Index n) {
  std::mt19937 rng(unsigned(m + 7 * k + 31 * n));
  std::uniform_int_distribution<int> u(-127, 127);
  std::vector<int8_t> a(size_t(m * k)), b(size_t(k * n));
  for (auto& v : a) v = int8_t(u(rng));
  for (auto& v : b) v = int8_t(u(rng));
  std::vector<int8_t> packed(size_t(fastnn::int8_n16(n) * fastnn::int8_k4(k)));
  std::vector<int32_t> sums(size_t(fastnn::int8_n16(n))), c(size_t(m * n));
  fastnn::int8_pack(b.data(), k, n, packed.data(), sums.data());
  fastnn::Int8Packed pb;
  pb.data = packed.data(), pb.col_sums = sums.data(), pb.k = k, pb.n = n;
  fastnn::int8_gemm(m, a.data(), k, pb, c.data(), n);
  long bad = 0;
  for (Index i = 0; i < m; ++i)
    for (Index j = 0; j < n; ++j) {
      int32_t s = 0;
      for (Index t = 0; t < k; ++t) s += int32_t(a[size_t(i * k + t)]) * int32_t(b[size_t(t * n + j)]);
      bad += c[size_t(i * n + j)] != s;
    }
  char what[160];
  std::snprintf(what, sizeof(what), "int8_gemm (%s) %ldx%ld @ %ldx%ld: %ld wrong",
                fastnn::int8_path_name(fastnn::int8_path()), long(m), long(k), long(k), long(n), bad);
  check(bad == 0, what);
}

}  // namespace

int main() {
  gemm_case<float>(37, 53, 29, false, false, 1, 1e-6);
  gemm_case<float>(37, 53, 29, true, true, 2, 1e-6);
  gemm_case<float>(256, 256, 256, false, false, 2, 1e-6);
  gemm_case<float>(256, 256, 256, true, true, 1, 1e-6);
  gemm_case<float>(64, 40, 10, false, true, 2, 1e-6);  // narrow n
  gemm_case<double>(37, 53, 29, false, true, 2, 1e-14);
  gemm_case<double>(256, 256, 256, true, false, 2, 1e-14);
  int8_case(37, 53, 29);
  int8_case(130, 300, 70);

  // Denormals are zero inside the kernels, and the caller's mode is restored afterwards.
  float tiny = 1e-40f, one = 1.0f, out = -1.0f;
  fastnn::GemmArgs<float> p;
  p.m = p.n = p.k = 1;
  p.a = &tiny, p.lda = 1, p.b = &one, p.ldb = 1, p.c = &out, p.ldc = 1;
  fastnn::gemm(p);
  volatile float small = 1e-38f, hundred = 100.0f;
  const float after = small / hundred;
  check(out == 0.0f, "denormal input flushed to zero inside gemm");
  check(after > 0.0f, "caller keeps denormals after the kernel returns");

  std::printf("%s\n", failures ? "SMOKE FAILED" : "SMOKE OK");
  return failures ? 1 : 0;
}
