// Batch normalisation kernels (see fastnn/batchnorm.hpp).
//
// Two layouts of the same maths:
// - channels last (inner == 1): x is rows × C. Consecutive rows are grouped into "tiles" of
//   m rows (m·C >= 256 values and a multiple of 16 when C is small), so that the inner loops
//   run over a whole tile, channel c at tile positions j·C + c: short channel counts (C = 1,
//   3, 32) still fill the SIMD lanes. Per-position partial sums are folded into channels
//   once per sub-block. More than kGroupWidth channels are split into channel groups
//   (tasks) instead.
// - runs (inner > 1): channel c of x[o, c, i] is `outer` contiguous runs of `inner` values;
//   sums are SIMD reductions along a run.
//
// Every reduction walks a partition fixed by (outer, C, inner): tasks of ~32K values, each
// made of L1-sized sub-blocks. A sub-block's moments are exact two-pass ones (the second
// pass, about the rounded block mean, also sums the residuals to correct it), merged into
// the task's in double precision with Chan's formula; tasks are merged in task order. The
// thread count only decides who computes a task, never what it computes.
#include "fastnn/batchnorm.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "fastnn/scratch.hpp"

namespace fastnn {
namespace {

constexpr Index kSubValues = 4096;                 // a sub-block: stays in L1 for its second pass
constexpr Index kTaskValues = Index(1) << 15;      // values per reduction task
constexpr Index kTileTarget = 256;                 // shortest tile (values), channels last
constexpr Index kGroupWidth = 1024;                // channels per task beyond this many
constexpr Index kPartialBudget = Index(1) << 18;   // row ranges × channels (partials' memory)
constexpr Index kChunkValues = Index(1) << 14;     // values per elementwise task

// Floating-point operations per value, for threads_for.
constexpr double kStatsCost = 4, kNormCost = 3, kSumsCost = 3, kDxCost = 4;

Index ceil_div(Index a, Index b) { return (a + b - 1) / b; }

// max(v, 0) that keeps a NaN (std::max(0.0, NaN) is 0: a channel holding inf would get a
// variance of 0 instead of NaN).
inline double nonnegative(double v) { return v < 0 ? 0.0 : v; }

// Chan et al.: merges (nb, mb, m2b) into the running (count, mean, m2).
inline void merge_moments(double count, double& mean, double& m2, double nb, double mb, double m2b) {
  if (count == 0) {
    mean = mb;
    m2 = m2b;
    return;
  }
  const double n = count + nb, delta = mb - mean;
  mean += delta * (nb / n);
  m2 += m2b + delta * delta * (count * nb / n);
}

// ============================================================================================
// Channels last: rows × C
// ============================================================================================
struct RowsPlan {
  Index rows = 0, C = 0;
  Index m = 1;          // rows per tile
  Index groups = 1;     // channel groups (only with m == 1)
  Index width = 0;      // channels per group (the last may have fewer)
  Index tiles = 0;      // whole tiles: rows / m
  Index tail = 0;       // rows after the last whole tile (processed as single rows)
  Index per_sub = 1;    // tiles per sub-block
  Index per_range = 1;  // tiles per task (row range)
  Index ranges = 1;

  Index tile_values() const { return m * C; }  // a tile's length in the elementwise passes
  Index group_width(Index g) const { return std::min(width, C - g * width); }
};

RowsPlan plan_rows(Index rows, Index C) {
  RowsPlan p;
  p.rows = rows;
  p.C = C;
  if (C < kTileTarget) {
    const Index unit = 16 / std::gcd(C, Index(16));  // rows making unit·C a multiple of 16
    p.m = unit * ceil_div(kTileTarget, unit * C);
  }
  p.groups = (p.m == 1 && C > kGroupWidth) ? ceil_div(C, kGroupWidth) : 1;
  p.width = p.groups > 1 ? kGroupWidth : C;
  p.tiles = rows / p.m;
  p.tail = rows % p.m;
  p.per_sub = std::max<Index>(1, kSubValues / (p.m * p.width));
  Index target = ceil_div(rows * C, kTaskValues);
  target = std::min(target, std::max<Index>(1, kPartialBudget / C));
  target = std::max<Index>(1, std::min(target, p.tiles));
  p.per_range = p.tiles ? ceil_div(p.tiles, target) : 1;
  p.ranges = p.tiles ? ceil_div(p.tiles, p.per_range) : 1;
  return p;
}

// Moments of q tiles at `base` (tile s at base + s·ld, m rows of w channels: channel c at
// positions j·w + c), merged into (count, mean[w], m2[w]). acc, acc2, tile: m·w scratch.
template <typename T>
void tile_moments(const T* base, Index q, Index ld, Index m, Index w, double& count, double* mean,
                  double* m2, T* __restrict acc, T* __restrict acc2, T* __restrict tile) {
  const Index P = m * w;
  std::fill(acc, acc + P, T(0));
  for (Index s = 0; s < q; ++s) {
    const T* __restrict row = base + s * ld;
    for (Index k = 0; k < P; ++k) acc[k] += row[k];
  }
  const double nb = double(q) * double(m);
  for (Index c = 0; c < w; ++c) {
    double sum = 0;
    for (Index j = 0; j < m; ++j) sum += acc[j * w + c];
    const T mu = T(sum / nb);
    for (Index j = 0; j < m; ++j) tile[j * w + c] = mu;
  }
  std::fill(acc, acc + P, T(0));
  std::fill(acc2, acc2 + P, T(0));
  for (Index s = 0; s < q; ++s) {
    const T* __restrict row = base + s * ld;
    for (Index k = 0; k < P; ++k) {
      const T d = row[k] - tile[k];
      acc[k] += d;
      acc2[k] += d * d;
    }
  }
  for (Index c = 0; c < w; ++c) {
    double d = 0, q2 = 0;
    for (Index j = 0; j < m; ++j) {
      d += acc[j * w + c];
      q2 += acc2[j * w + c];
    }
    // About the rounded mean mu: the exact mean is mu + d/n and Σ(x - mean)² = q2 - d²/n.
    const double mb = double(tile[c]) + d / nb;
    const double m2b = nonnegative(q2 - d * d / nb);
    merge_moments(count, mean[c], m2[c], nb, mb, m2b);
  }
  count += nb;
}

// Per-channel (mean, M2) of x (rows × C), over all rows: out_mean, out_m2 hold C values.
template <typename T>
void rows_moments(const T* x, const RowsPlan& p, double* out_mean, double* out_m2) {
  const Index C = p.C;
  std::vector<double> counts(p.ranges, 0.0), means(p.ranges * C), m2s(p.ranges * C);
  const Index ld = p.m * C, scratch = p.m * p.width;
  parallel_for(p.ranges * p.groups, threads_for(kStatsCost * double(p.rows) * double(C)),
               [&](Index t) {
                 const Index r = t / p.groups, g = t % p.groups, c0 = g * p.width;
                 const Index w = p.group_width(g);
                 T* acc = thread_scratch<T>(ScratchSlot::LayerTemp, 3 * scratch);
                 double* mean = means.data() + r * C + c0;
                 double* m2 = m2s.data() + r * C + c0;
                 double count = 0;
                 const Index s0 = r * p.per_range, s1 = std::min(p.tiles, s0 + p.per_range);
                 for (Index s = s0; s < s1; s += p.per_sub)
                   tile_moments(x + s * ld + c0, std::min(p.per_sub, s1 - s), ld, p.m, w, count, mean,
                                m2, acc, acc + scratch, acc + 2 * scratch);
                 if (p.tail && r == p.ranges - 1)  // only when groups == 1
                   tile_moments(x + p.tiles * ld, p.tail, C, Index(1), C, count, mean, m2, acc,
                                acc + scratch, acc + 2 * scratch);
                 if (g == 0) counts[r] = count;
               });
  double count = 0;
  for (Index r = 0; r < p.ranges; ++r) {
    for (Index c = 0; c < C; ++c)
      merge_moments(count, out_mean[c], out_m2[c], counts[r], means[r * C + c], m2s[r * C + c]);
    count += counts[r];
  }
}

// out = (x - mean)·scale + shift per channel, over tiles of m·C values (per-position copies
// of the per-channel values in the tiles mt, at, bt).
template <typename T>
void rows_affine(const T* x, Index total, Index P, const T* mt, const T* at, const T* bt, T* y) {
  const Index len = P * std::max<Index>(1, kChunkValues / P);
  parallel_for(ceil_div(total, len), threads_for(kNormCost * double(total)), [&](Index t) {
    const Index end = std::min(total, (t + 1) * len);
    for (Index off = t * len; off < end; off += P) {
      const Index n = std::min(P, end - off);
      const T* __restrict xr = x + off;
      T* __restrict yr = y + off;
      const T* __restrict m = mt;
      const T* __restrict a = at;
      const T* __restrict b = bt;
      for (Index k = 0; k < n; ++k) yr[k] = (xr[k] - m[k]) * a[k] + b[k];
    }
  });
}

// Σ dy and Σ dy·(x - mean) per channel (double), rows × C.
template <typename T>
void rows_grad_sums(const T* x, const T* dy, const RowsPlan& p, const T* mean_tile,
                    double* sum_dy, double* sum_dyxc) {
  const Index C = p.C;
  std::vector<double> s1(p.ranges * C, 0.0), s2(p.ranges * C, 0.0);
  const Index ld = p.m * C, scratch = p.m * p.width;
  parallel_for(p.ranges * p.groups, threads_for(kSumsCost * double(p.rows) * double(C)),
               [&](Index t) {
                 const Index r = t / p.groups, g = t % p.groups, c0 = g * p.width;
                 const Index w = p.group_width(g);
                 T* acc = thread_scratch<T>(ScratchSlot::LayerTemp, 2 * scratch);
                 double* o1 = s1.data() + r * C + c0;
                 double* o2 = s2.data() + r * C + c0;
                 auto block = [&](Index offset, Index q, Index step, Index m, Index width) {
                   const Index P = m * width;
                   T* __restrict a1 = acc;
                   T* __restrict a2 = acc + scratch;
                   std::fill(a1, a1 + P, T(0));
                   std::fill(a2, a2 + P, T(0));
                   const T* __restrict mt = mean_tile + c0;
                   for (Index s = 0; s < q; ++s) {
                     const T* __restrict xr = x + offset + s * step;
                     const T* __restrict gr = dy + offset + s * step;
                     for (Index k = 0; k < P; ++k) {
                       a1[k] += gr[k];
                       a2[k] += gr[k] * (xr[k] - mt[k]);
                     }
                   }
                   for (Index c = 0; c < width; ++c)
                     for (Index j = 0; j < m; ++j) {
                       o1[c] += a1[j * width + c];
                       o2[c] += a2[j * width + c];
                     }
                 };
                 const Index s0 = r * p.per_range, s1_ = std::min(p.tiles, s0 + p.per_range);
                 for (Index s = s0; s < s1_; s += p.per_sub)
                   block(s * ld + c0, std::min(p.per_sub, s1_ - s), ld, p.m, w);
                 if (p.tail && r == p.ranges - 1) block(p.tiles * ld, p.tail, C, 1, C);
               });
  std::fill(sum_dy, sum_dy + C, 0.0);
  std::fill(sum_dyxc, sum_dyxc + C, 0.0);
  for (Index r = 0; r < p.ranges; ++r)
    for (Index c = 0; c < C; ++c) {
      sum_dy[c] += s1[r * C + c];
      sum_dyxc[c] += s2[r * C + c];
    }
}

// dx = A·dy + B·(x - mean) + K per channel (tiles as in rows_affine); B, K null: dx = A·dy.
template <typename T>
void rows_dx(const T* x, const T* dy, Index total, Index P, const T* mt, const T* at, const T* bt,
             const T* kt, T* dx) {
  const Index len = P * std::max<Index>(1, kChunkValues / P);
  parallel_for(ceil_div(total, len), threads_for(kDxCost * double(total)), [&](Index t) {
    const Index end = std::min(total, (t + 1) * len);
    for (Index off = t * len; off < end; off += P) {
      const Index n = std::min(P, end - off);
      const T* __restrict xr = x + off;
      const T* __restrict gr = dy + off;
      T* __restrict out = dx + off;
      const T* __restrict a = at;
      if (!bt) {
        for (Index k = 0; k < n; ++k) out[k] = a[k] * gr[k];
        continue;
      }
      const T* __restrict m = mt;
      const T* __restrict b = bt;
      const T* __restrict kk = kt;
      for (Index k = 0; k < n; ++k) out[k] = a[k] * gr[k] + b[k] * (xr[k] - m[k]) + kk[k];
    }
  });
}

// Copies per-channel values into a tile of m·C positions.
template <typename T>
std::vector<T> tiled(const std::vector<T>& v, Index m) {
  const Index C = Index(v.size());
  std::vector<T> out(m * C);
  for (Index j = 0; j < m; ++j) std::copy(v.begin(), v.end(), out.begin() + j * C);
  return out;
}

// ============================================================================================
// Runs: outer × C × inner with inner > 1
// ============================================================================================
struct RunsPlan {
  Index outer = 0, C = 0, inner = 0;
  Index chunk = 0;         // values per piece of a run
  Index chunks = 1;        // pieces per run (> 1 when inner > kSubValues)
  Index runs_per_unit = 1; // runs per sub-block when a run is short
  Index units = 0;         // sub-blocks per channel
  Index per_task = 1;      // sub-blocks per task
  Index tasks = 0;         // tasks per channel

  // Sub-block u of a channel: runs [o0, o1), values [i0, i1) of each.
  void unit(Index u, Index& o0, Index& o1, Index& i0, Index& i1) const {
    if (chunks > 1) {
      o0 = u / chunks;
      o1 = o0 + 1;
      i0 = (u % chunks) * chunk;
      i1 = std::min(inner, i0 + chunk);
    } else {
      o0 = u * runs_per_unit;
      o1 = std::min(outer, o0 + runs_per_unit);
      i0 = 0;
      i1 = inner;
    }
  }
};

RunsPlan plan_runs(Index outer, Index C, Index inner) {
  RunsPlan p;
  p.outer = outer;
  p.C = C;
  p.inner = inner;
  p.chunk = std::min(inner, kSubValues);
  p.chunks = ceil_div(inner, p.chunk);
  p.runs_per_unit = p.chunks > 1 ? 1 : std::max<Index>(1, kSubValues / inner);
  p.units = p.chunks > 1 ? outer * p.chunks : ceil_div(outer, p.runs_per_unit);
  p.per_task = std::max<Index>(1, kTaskValues / kSubValues);
  p.tasks = ceil_div(p.units, p.per_task);
  return p;
}

template <typename T>
void runs_moments(const T* x, const RunsPlan& p, double* out_mean, double* out_m2) {
  const Index C = p.C, tasks = p.tasks, stride = C * p.inner;
  std::vector<double> counts(C * tasks, 0.0), means(C * tasks), m2s(C * tasks);
  const double values = double(p.outer) * double(C) * double(p.inner);
  parallel_for(C * tasks, threads_for(kStatsCost * values), [&](Index t) {
    const Index c = t / tasks, u0 = (t % tasks) * p.per_task;
    const Index u1 = std::min(p.units, u0 + p.per_task);
    const T* base = x + c * p.inner;
    double count = 0, mean = 0, m2 = 0;
    for (Index u = u0; u < u1; ++u) {
      Index o0, o1, i0, i1;
      p.unit(u, o0, o1, i0, i1);
      const Index len = i1 - i0;
      T s = 0;
      for (Index o = o0; o < o1; ++o) {
        const T* __restrict run = base + o * stride + i0;
#pragma omp simd reduction(+ : s)
        for (Index i = 0; i < len; ++i) s += run[i];
      }
      const double nb = double(o1 - o0) * double(len);
      const T mu = T(double(s) / nb);
      T d = 0, q = 0;
      for (Index o = o0; o < o1; ++o) {
        const T* __restrict run = base + o * stride + i0;
#pragma omp simd reduction(+ : d, q)
        for (Index i = 0; i < len; ++i) {
          const T e = run[i] - mu;
          d += e;
          q += e * e;
        }
      }
      const double dd = double(d);
      merge_moments(count, mean, m2, nb, double(mu) + dd / nb, nonnegative(double(q) - dd * dd / nb));
      count += nb;
    }
    counts[t] = count;
    means[t] = mean;
    m2s[t] = m2;
  });
  for (Index c = 0; c < C; ++c) {
    double count = 0;
    for (Index t = 0; t < tasks; ++t) {
      const Index i = c * tasks + t;
      merge_moments(count, out_mean[c], out_m2[c], counts[i], means[i], m2s[i]);
      count += counts[i];
    }
  }
}

// out = (x - mean[c])·a[c] + b[c] (dx form with dy when given: a·dy + b·(x - mean) + k).
template <typename T, typename Body>
void runs_elementwise(const RunsPlan& p, double cost, Body&& body) {
  const Index runs = p.outer * p.C;
  const Index per_task = std::max<Index>(1, kChunkValues / p.inner);
  parallel_for(ceil_div(runs, per_task), threads_for(cost * double(runs) * double(p.inner)),
               [&](Index t) {
                 const Index r1 = std::min(runs, (t + 1) * per_task);
                 for (Index r = t * per_task; r < r1; ++r) body(r % p.C, r * p.inner);
               });
}

template <typename T>
void runs_grad_sums(const T* x, const T* dy, const RunsPlan& p, const T* mean, double* sum_dy,
                    double* sum_dyxc) {
  const Index C = p.C, tasks = p.tasks, stride = C * p.inner;
  std::vector<double> s1(C * tasks), s2(C * tasks);
  const double values = double(p.outer) * double(C) * double(p.inner);
  parallel_for(C * tasks, threads_for(kSumsCost * values), [&](Index t) {
    const Index c = t / tasks, u0 = (t % tasks) * p.per_task;
    const Index u1 = std::min(p.units, u0 + p.per_task);
    const T mu = mean[c];
    double a = 0, b = 0;
    for (Index u = u0; u < u1; ++u) {
      Index o0, o1, i0, i1;
      p.unit(u, o0, o1, i0, i1);
      const Index len = i1 - i0;
      T g = 0, gx = 0;
      for (Index o = o0; o < o1; ++o) {
        const Index off = c * p.inner + o * stride + i0;
        const T* __restrict xr = x + off;
        const T* __restrict gr = dy + off;
#pragma omp simd reduction(+ : g, gx)
        for (Index i = 0; i < len; ++i) {
          g += gr[i];
          gx += gr[i] * (xr[i] - mu);
        }
      }
      a += double(g);
      b += double(gx);
    }
    s1[t] = a;
    s2[t] = b;
  });
  for (Index c = 0; c < C; ++c) {
    double a = 0, b = 0;
    for (Index t = 0; t < tasks; ++t) {
      a += s1[c * tasks + t];
      b += s2[c * tasks + t];
    }
    sum_dy[c] = a;
    sum_dyxc[c] = b;
  }
}

// ============================================================================================
// Shared
// ============================================================================================
struct Shape {
  Index outer, C, inner;
};

// One channel: the same as channels last with every value a row. No values: rows too (the
// runs plan divides by the run length).
template <typename T>
Shape shape_of(const BatchNormArgs<T>& a) {
  if (a.channels == 1 || a.inner == 1 || a.outer == 0 || a.inner == 0)
    return {a.outer * a.inner, a.channels, 1};
  return {a.outer, a.channels, a.inner};
}

// y = (x - mean)·(γ·invstd) + β.
template <typename T>
void apply_affine(const BatchNormArgs<T>& a, const Shape& sh, const std::vector<T>& mean,
                  const std::vector<T>& invstd, T* y) {
  const Index C = sh.C;
  std::vector<T> scale(C), shift(C);
  for (Index c = 0; c < C; ++c) {
    scale[c] = a.gamma ? T(a.gamma[c] * invstd[c]) : invstd[c];
    shift[c] = a.beta ? a.beta[c] : T(0);
  }
  const Index total = sh.outer * C * sh.inner;
  if (total == 0) return;
  if (sh.inner == 1) {
    const RowsPlan p = plan_rows(sh.outer, C);
    const Index m = p.tile_values() / C;
    const auto mt = tiled(mean, m), at = tiled(scale, m), bt = tiled(shift, m);
    rows_affine(a.x, total, p.tile_values(), mt.data(), at.data(), bt.data(), y);
    return;
  }
  const RunsPlan p = plan_runs(sh.outer, C, sh.inner);
  const T* x = a.x;
  runs_elementwise<T>(p, kNormCost, [&](Index c, Index off) {
    const T mu = mean[c], s = scale[c], b = shift[c];
    const T* __restrict xr = x + off;
    T* __restrict yr = y + off;
    for (Index i = 0; i < p.inner; ++i) yr[i] = (xr[i] - mu) * s + b;
  });
}

// Mean and M2 of channel c by plain sums, for a channel whose merged moments are not finite
// (inf or NaN among its values, where the shifted sums give NaN): NumPy's answers, a mean of
// ±inf or NaN and an M2 of NaN (inf - inf) or inf.
template <typename T>
void plain_moments(const T* x, const Shape& sh, Index c, double& mean, double& m2) {
  double sum = 0, squares = 0;
  for (Index o = 0; o < sh.outer; ++o) {
    const T* run = x + (o * sh.C + c) * sh.inner;
    for (Index i = 0; i < sh.inner; ++i) {
      sum += double(run[i]);
      squares += double(run[i]) * double(run[i]);
    }
  }
  const double n = double(sh.outer) * double(sh.inner);
  mean = sum / n;
  m2 = squares - n * mean * mean;
}

}  // namespace

template <typename T>
void batchnorm_forward_training(const BatchNormArgs<T>& a, T* y, T* mean, T* invstd, T* variance,
                                double momentum, T* moving_mean, T* moving_variance) {
  const Shape sh = shape_of(a);
  const Index C = sh.C;
  if (C == 0) return;
  std::vector<double> mu(C, 0.0), m2(C, 0.0);
  if (sh.inner == 1)
    rows_moments(a.x, plan_rows(sh.outer, C), mu.data(), m2.data());
  else
    runs_moments(a.x, plan_runs(sh.outer, C, sh.inner), mu.data(), m2.data());
  for (Index c = 0; c < C; ++c)
    if (!std::isfinite(mu[c]) || !std::isfinite(m2[c])) plain_moments(a.x, sh, c, mu[c], m2[c]);
  const double n = double(sh.outer) * double(sh.inner);
  std::vector<T> mean_t(C), invstd_t(C);
  for (Index c = 0; c < C; ++c) {
    const double var = m2[c] / n;
    mean_t[c] = T(mu[c]);
    invstd_t[c] = T(1.0 / std::sqrt(var + a.epsilon));
    mean[c] = mean_t[c];
    invstd[c] = invstd_t[c];
    if (variance) variance[c] = T(var);
    if (moving_mean) moving_mean[c] = T(double(moving_mean[c]) * momentum + mu[c] * (1.0 - momentum));
    if (moving_variance)
      moving_variance[c] = T(double(moving_variance[c]) * momentum + var * (1.0 - momentum));
  }
  apply_affine(a, sh, mean_t, invstd_t, y);
}

template <typename T>
void batchnorm_forward_inference(const BatchNormArgs<T>& a, const T* mean, const T* variance, T* y,
                                 T* invstd) {
  const Shape sh = shape_of(a);
  const Index C = sh.C;
  std::vector<T> mean_t(mean, mean + C), invstd_t(C);
  for (Index c = 0; c < C; ++c) {
    invstd_t[c] = T(1.0 / std::sqrt(double(variance[c]) + a.epsilon));
    if (invstd) invstd[c] = invstd_t[c];
  }
  apply_affine(a, sh, mean_t, invstd_t, y);
}

template <typename T>
void batchnorm_backward(const BatchNormArgs<T>& a, const T* mean, const T* invstd, const T* dy,
                        bool batch_statistics, T* dgamma, T* dbeta, bool accumulate, T* dx) {
  const Shape sh = shape_of(a);
  const Index C = sh.C, total = sh.outer * C * sh.inner;
  if (C == 0) return;
  const double n = double(sh.outer) * double(sh.inner);
  const bool need_sums = dgamma || dbeta || (dx && batch_statistics);
  std::vector<double> sum_dy(C, 0.0), sum_dyxc(C, 0.0);
  const RowsPlan rp = sh.inner == 1 ? plan_rows(sh.outer, C) : RowsPlan{};
  const RunsPlan fp = sh.inner == 1 ? RunsPlan{} : plan_runs(sh.outer, C, sh.inner);
  const Index m = sh.inner == 1 ? rp.tile_values() / C : 1;
  std::vector<T> mean_v(mean, mean + C);
  std::vector<T> mean_tile = sh.inner == 1 ? tiled(mean_v, m) : std::vector<T>();
  if (need_sums && total > 0) {
    if (sh.inner == 1)
      rows_grad_sums(a.x, dy, rp, mean_tile.data(), sum_dy.data(), sum_dyxc.data());
    else
      runs_grad_sums(a.x, dy, fp, mean, sum_dy.data(), sum_dyxc.data());
  }
  // dx = A·dy + B·(x - μ) + K with A = γs, B = -γs³·Σdy(x-μ)/N, K = -γs·Σdy/N.
  std::vector<T> A(C), B(C), K(C), dg(C), db(C);
  for (Index c = 0; c < C; ++c) {
    const double s = double(invstd[c]), gs = (a.gamma ? double(a.gamma[c]) : 1.0) * s;
    A[c] = T(gs);
    B[c] = n > 0 ? T(-gs * s * s * sum_dyxc[c] / n) : T(0);
    K[c] = n > 0 ? T(-gs * sum_dy[c] / n) : T(0);
    dg[c] = T(sum_dyxc[c] * s);
    db[c] = T(sum_dy[c]);
  }
  // The per-channel results go out last, after every read of the inputs.
  auto write_param_grads = [&] {
    for (Index c = 0; c < C; ++c) {
      if (dgamma) dgamma[c] = accumulate ? T(dgamma[c] + dg[c]) : dg[c];
      if (dbeta) dbeta[c] = accumulate ? T(dbeta[c] + db[c]) : db[c];
    }
  };
  if (!dx || total == 0) return write_param_grads();
  if (sh.inner == 1) {
    const auto at = tiled(A, m);
    if (!batch_statistics) {
      rows_dx<T>(a.x, dy, total, rp.tile_values(), nullptr, at.data(), nullptr, nullptr, dx);
      return write_param_grads();
    }
    const auto bt = tiled(B, m), kt = tiled(K, m);
    rows_dx(a.x, dy, total, rp.tile_values(), mean_tile.data(), at.data(), bt.data(), kt.data(), dx);
    return write_param_grads();
  }
  const T* x = a.x;
  runs_elementwise<T>(fp, kDxCost, [&](Index c, Index off) {
    const T* __restrict xr = x + off;
    const T* __restrict gr = dy + off;
    T* __restrict out = dx + off;
    const T ac = A[c];
    if (!batch_statistics) {
      for (Index i = 0; i < fp.inner; ++i) out[i] = ac * gr[i];
      return;
    }
    const T bc = B[c], kc = K[c], mu = mean_v[c];
    for (Index i = 0; i < fp.inner; ++i) out[i] = ac * gr[i] + bc * (xr[i] - mu) + kc;
  });
  write_param_grads();
}

#define FASTNN_INSTANTIATE(T)                                                                   \
  template void batchnorm_forward_training<T>(const BatchNormArgs<T>&, T*, T*, T*, T*, double,  \
                                              T*, T*);                                          \
  template void batchnorm_forward_inference<T>(const BatchNormArgs<T>&, const T*, const T*, T*, \
                                               T*);                                             \
  template void batchnorm_backward<T>(const BatchNormArgs<T>&, const T*, const T*, const T*,    \
                                      bool, T*, T*, bool, T*);
FASTNN_INSTANTIATE(float)
FASTNN_INSTANTIATE(double)
#undef FASTNN_INSTANTIATE

}  // namespace fastnn
