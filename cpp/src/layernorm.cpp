// Layer normalisation kernels (see fastnn/layernorm.hpp).
//
// Rows are independent: the forward pass and dx are parallel over chunks of rows. A row's
// reductions run in kLanes independent accumulators (one SIMD register's worth, so the
// compiler vectorises them without reassociating), folded into double every kFold values
// and at the end in lane order: the result depends on the row alone.
//
// dγ and dβ: each chunk of rows (fixed by the shape) sums its rows' contributions in row
// order into its own F-value partials; the partials are then added in chunk order, in
// double precision.
#include "fastnn/layernorm.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace fastnn {
namespace {

constexpr Index kChunkValues = Index(1) << 14;  // values per task (rows of a chunk × F)
constexpr Index kMaxChunks = 256;               // bounds the dγ/dβ partials' memory
constexpr Index kFold = 1024;                   // values summed in T before a fold into double

// Floating-point operations per value, for threads_for.
constexpr double kForwardCost = 6, kBackwardCost = 10;

// One 512-bit vector of T (GCC/Clang vector extension: two 256-bit registers where the
// target prefers them). Written out because the compiler does not vectorise an array of
// lane accumulators reliably (it kept them scalar).
template <typename T>
struct VecOf {
  typedef T type __attribute__((vector_size(64)));
};
template <typename T>
using Vec = typename VecOf<T>::type;
template <typename T>
constexpr int lanes() {
  return 64 / int(sizeof(T));
}

template <typename T>
inline Vec<T> load(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
inline Vec<T> splat(T value) {
  return Vec<T>{} + value;
}

Index ceil_div(Index a, Index b) { return (a + b - 1) / b; }

Index chunk_rows(Index rows, Index F) {
  return std::max(std::max<Index>(1, kChunkValues / F), ceil_div(rows, kMaxChunks));
}

// Adds the lanes of v (in lane order) to s.
template <typename T>
inline void fold(const Vec<T>& v, double& s) {
  for (int l = 0; l < lanes<T>(); ++l) s += double(v[l]);
}

// Σ (x − x₀) and Σ (x − x₀)² over n values, x₀ = x[0].
template <typename T>
void shifted_sums(const T* __restrict x, Index n, double& s1, double& s2) {
  constexpr int L = lanes<T>();
  const T x0 = x[0];
  const Vec<T> v0 = splat(x0);
  s1 = s2 = 0;
  Index k = 0;
  while (k < n) {
    const Index end = std::min(n, k + kFold);
    Vec<T> a1{}, a2{};
    for (; k + L <= end; k += L) {
      const Vec<T> d = load(x + k) - v0;
      a1 += d;
      a2 += d * d;
    }
    for (; k < end; ++k) {
      const T d = x[k] - x0;
      a1[0] += d;
      a2[0] += d * d;
    }
    fold<T>(a1, s1);
    fold<T>(a2, s2);
  }
}

// Σ g and Σ g·(x − c) over n values, g = γ·dy (γ null: 1), with x − c computed as
// (x − x0) − dc (c = x0 + dc: exact for x near x0 however large). want_sg: compute Σ g.
template <typename T>
void grad_sums(const T* __restrict x, const T* __restrict dy, const T* __restrict gamma, Index n,
               T x0, T dc, bool want_sg, double& sg, double& sgx) {
  constexpr int L = lanes<T>();
  const Vec<T> v0 = splat(x0), vc = splat(dc);
  sg = sgx = 0;
  Index k = 0;
  while (k < n) {
    const Index end = std::min(n, k + kFold);
    Vec<T> a1{}, a2{};
    for (; k + L <= end; k += L) {
      const Vec<T> g = gamma ? load(gamma + k) * load(dy + k) : load(dy + k);
      a1 += g;
      a2 += g * ((load(x + k) - v0) - vc);
    }
    for (; k < end; ++k) {
      const T g = gamma ? gamma[k] * dy[k] : dy[k];
      a1[0] += g;
      a2[0] += g * ((x[k] - x0) - dc);
    }
    if (want_sg) fold<T>(a1, sg);
    fold<T>(a2, sgx);
  }
}

}  // namespace

template <typename T>
void layernorm_forward(const LayerNormArgs<T>& a, T* y, double* mean_out, T* invstd_out) {
  const Index F = a.features, rows = a.rows;
  if (rows <= 0 || F <= 0) return;
  const Index per = std::max<Index>(1, kChunkValues / F);
  const bool standard = a.mode == LayerNormMode::Standard;
  const T* __restrict gamma = a.gamma;
  const T* __restrict beta = standard ? a.beta : nullptr;
  parallel_for(ceil_div(rows, per), threads_for(kForwardCost * double(rows) * double(F)), [&](Index t) {
    const Index r1 = std::min(rows, (t + 1) * per);
    for (Index r = t * per; r < r1; ++r) {
      const T* __restrict x = a.x + r * F;
      T* __restrict out = y + r * F;
      double s1, s2;
      shifted_sums(x, F, s1, s2);
      const double d = s1 / double(F);
      double mu = double(x[0]) + d;
      double var = s2 / double(F) - d * d;
      var = var < 0 ? 0.0 : var;  // (not std::max: a NaN stays NaN)
      double second = a.mode == LayerNormMode::Rms ? var + mu * mu : var;
      if (!std::isfinite(mu) || !std::isfinite(second)) {  // inf or NaN in the row: plain sums
        double sum = 0, squares = 0;
        for (Index k = 0; k < F; ++k) {
          sum += double(x[k]);
          squares += double(x[k]) * double(x[k]);
        }
        mu = sum / double(F);
        var = squares / double(F) - mu * mu;  // inf - inf: NaN, as NumPy's variance
        second = a.mode == LayerNormMode::Rms ? squares / double(F) : var;
      }
      const T s = T(1.0 / std::sqrt(second + a.epsilon));
      // x − μ as (x − x₀) − (μ − x₀): exact to the rounding of a small difference.
      const T x0 = standard ? x[0] : T(0);
      const T c = standard ? T(mu - double(x0)) : T(0);
      if (mean_out) mean_out[r] = mu;
      if (invstd_out) invstd_out[r] = s;
      if (gamma && beta) {
        for (Index k = 0; k < F; ++k) out[k] = ((x[k] - x0) - c) * s * gamma[k] + beta[k];
      } else if (gamma) {
        for (Index k = 0; k < F; ++k) out[k] = ((x[k] - x0) - c) * s * gamma[k];
      } else if (beta) {
        for (Index k = 0; k < F; ++k) out[k] = ((x[k] - x0) - c) * s + beta[k];
      } else {
        for (Index k = 0; k < F; ++k) out[k] = ((x[k] - x0) - c) * s;
      }
    }
  });
}

template <typename T>
void layernorm_backward(const LayerNormArgs<T>& a, const double* mean, const T* invstd, const T* dy,
                        T* dgamma, T* dbeta, bool accumulate, T* dx) {
  const Index F = a.features, rows = a.rows;
  if (F <= 0) return;
  const Index per = chunk_rows(std::max<Index>(rows, 1), F);
  const Index chunks = rows > 0 ? ceil_div(rows, per) : 0;
  const bool standard = a.mode == LayerNormMode::Standard;
  const bool rms = a.mode == LayerNormMode::Rms;
  // Each chunk's partials start on their own cache line (a line shared by two chunks that
  // two threads update row after row ping-pongs between the cores: 3x slower on 2 threads).
  constexpr Index kLine = 64 / Index(sizeof(T));
  const Index stride = ceil_div(F, kLine) * kLine;
  std::vector<T> pg_store(dgamma ? chunks * stride + kLine : 0, T(0));
  std::vector<T> pb_store(dbeta ? chunks * stride + kLine : 0, T(0));
  auto line_aligned = [](std::vector<T>& v) {
    if (v.empty()) return static_cast<T*>(nullptr);
    const auto misalign = reinterpret_cast<std::uintptr_t>(v.data()) % 64;
    return v.data() + (misalign ? (64 - misalign) / sizeof(T) : 0);
  };
  T* const pg = line_aligned(pg_store);
  T* const pb = line_aligned(pb_store);
  const T* __restrict gamma = a.gamma;
  parallel_for(chunks, threads_for(kBackwardCost * double(rows) * double(F)), [&](Index t) {
    const Index r1 = std::min(rows, (t + 1) * per);
    T* __restrict pgc = dgamma ? pg + t * stride : nullptr;
    T* __restrict pbc = dbeta ? pb + t * stride : nullptr;
    for (Index r = t * per; r < r1; ++r) {
      const T* __restrict x = a.x + r * F;
      const T* __restrict g = dy + r * F;
      const T s = invstd[r];
      // The centre c (μ or 0) and the second moment's reference (μ or 0), each as x₀ + d.
      const T c0 = standard ? x[0] : T(0);
      const T cd = standard ? T(mean[r] - double(c0)) : T(0);
      if (pgc)
        for (Index k = 0; k < F; ++k) pgc[k] += g[k] * (((x[k] - c0) - cd) * s);
      if (pbc)
        for (Index k = 0; k < F; ++k) pbc[k] += g[k];
      if (!dx) continue;
      double sg, sgx;
      grad_sums(x, g, gamma, F, c0, cd, standard, sg, sgx);
      const double sd = double(s);
      const T A = standard ? T(sd / double(F) * sg) : T(0);
      const T B = T(sd * sd * sd / double(F) * sgx);
      const T r0 = rms ? T(0) : x[0];
      const T rd = rms ? T(0) : T(mean[r] - double(r0));
      T* __restrict out = dx + r * F;
      if (gamma) {
        for (Index k = 0; k < F; ++k) out[k] = s * gamma[k] * g[k] - A - B * ((x[k] - r0) - rd);
      } else {
        for (Index k = 0; k < F; ++k) out[k] = s * g[k] - A - B * ((x[k] - r0) - rd);
      }
    }
  });
  // The chunks' partials in chunk order (double), then into the outputs.
  FlushDenormals ftz;
  for (auto [part, out] : {std::make_pair(pg, dgamma), std::make_pair(pb, dbeta)}) {
    if (!out) continue;
    std::vector<double> sum(F, 0.0);
    for (Index t = 0; t < chunks; ++t) {
      const T* __restrict p = part + t * stride;
      for (Index k = 0; k < F; ++k) sum[k] += double(p[k]);
    }
    for (Index k = 0; k < F; ++k) out[k] = accumulate ? T(double(out[k]) + sum[k]) : T(sum[k]);
  }
}

template void layernorm_forward<float>(const LayerNormArgs<float>&, float*, double*, float*);
template void layernorm_forward<double>(const LayerNormArgs<double>&, double*, double*, double*);
template void layernorm_backward<float>(const LayerNormArgs<float>&, const double*, const float*,
                                        const float*, float*, float*, bool, float*);
template void layernorm_backward<double>(const LayerNormArgs<double>&, const double*,
                                         const double*, const double*, double*, double*, bool,
                                         double*);

}  // namespace fastnn
