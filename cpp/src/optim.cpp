// Optimizer kernels (see fastnn/optim.hpp). Scalar loops over contiguous chunks: the
// compiler vectorises them (sqrt and division included); the bound is memory bandwidth.
#include "fastnn/optim.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

namespace fastnn {
namespace {
constexpr double kCost = 8.0;  // flops-equivalents per value, for the threading threshold
}

// Each update's loop lives in a function of its own taking the scalars by value: inside a
// lambda capturing them by reference, the compiler must assume the stores to w may change
// them and leaves the loop scalar (6x slower).
template <typename T>
void sgd_chunk(T* __restrict w, const T* __restrict g, T* __restrict m, Index c, T lr, T mu,
               bool nesterov) {
  if (!m) {
    for (Index i = 0; i < c; ++i) w[i] -= lr * g[i];
    return;
  }
  for (Index i = 0; i < c; ++i) {
    const T mi = mu * m[i] - lr * g[i];
    m[i] = mi;
    w[i] += nesterov ? mu * mi - lr * g[i] : mi;
  }
}

template <typename T>
void sgd_update(T* w, const T* g, T* m, Index n, double lr, double momentum, bool nesterov) {
  parallel_chunks(n, kCost, [&](Index b, Index c) {
    sgd_chunk(w + b, g + b, m ? m + b : nullptr, c, T(lr), T(momentum), nesterov);
  });
}

template <typename T>
void adagrad_chunk(T* __restrict w, const T* __restrict g, T* __restrict acc, Index c, T lr,
                   T eps) {
  for (Index i = 0; i < c; ++i) {
    const T a = acc[i] + g[i] * g[i];
    acc[i] = a;
    w[i] -= lr * g[i] / std::sqrt(a + eps);
  }
}

template <typename T>
void adagrad_update(T* w, const T* g, T* acc, Index n, double lr, double eps) {
  parallel_chunks(n, kCost, [&](Index b, Index c) {
    adagrad_chunk(w + b, g + b, acc + b, c, T(lr), T(eps));
  });
}

template <typename T>
void rmsprop_chunk(T* __restrict w, const T* __restrict g, T* __restrict v, T* __restrict mean_g,
                   T* __restrict m, Index c, T lr, T rho, T mu, T eps) {
  for (Index i = 0; i < c; ++i) {
    const T gi = g[i];
    const T vi = rho * v[i] + (T(1) - rho) * gi * gi;
    v[i] = vi;
    T denom = vi;
    if (mean_g) {
      const T ci = rho * mean_g[i] + (T(1) - rho) * gi;
      mean_g[i] = ci;
      denom = vi - ci * ci;
    }
    const T step = lr * gi / std::sqrt(denom + eps);
    if (m) {
      const T mi = mu * m[i] + step;
      m[i] = mi;
      w[i] -= mi;
    } else {
      w[i] -= step;
    }
  }
}

template <typename T>
void rmsprop_update(T* w, const T* g, T* v, T* mean_g, T* m, Index n, double lr, double rho,
                    double momentum, double eps) {
  parallel_chunks(n, kCost, [&](Index b, Index c) {
    rmsprop_chunk(w + b, g + b, v + b, mean_g ? mean_g + b : nullptr, m ? m + b : nullptr, c,
                  T(lr), T(rho), T(momentum), T(eps));
  });
}

template <typename T>
void adadelta_chunk(T* __restrict w, const T* __restrict g, T* __restrict acc_g,
                    T* __restrict acc_d, Index c, T lr, T rho, T eps) {
  for (Index i = 0; i < c; ++i) {
    const T gi = g[i];
    const T ag = rho * acc_g[i] + (T(1) - rho) * gi * gi;
    acc_g[i] = ag;
    const T d = -std::sqrt(acc_d[i] + eps) / std::sqrt(ag + eps) * gi;
    acc_d[i] = rho * acc_d[i] + (T(1) - rho) * d * d;
    w[i] += lr * d;
  }
}

template <typename T>
void adadelta_update(T* w, const T* g, T* acc_g, T* acc_d, Index n, double lr, double rho,
                     double eps) {
  parallel_chunks(n, kCost, [&](Index b, Index c) {
    adadelta_chunk(w + b, g + b, acc_g + b, acc_d + b, c, T(lr), T(rho), T(eps));
  });
}

// Adam (and AdamW's decay factor, 1 when none); v_max for AMSGrad.
template <typename T>
void adam_chunk(T* __restrict w, const T* __restrict g, T* __restrict m, T* __restrict v,
                T* __restrict v_max, Index c, T alpha, T b1, T b2, T eps, T decay) {
  if (v_max) {
    for (Index i = 0; i < c; ++i) {
      const T gi = g[i];
      const T mi = m[i] + (gi - m[i]) * (T(1) - b1);
      const T vi = v[i] + (gi * gi - v[i]) * (T(1) - b2);
      const T hi = (vi > v_max[i] || vi != vi) ? vi : v_max[i];  // max that keeps a NaN (std::max drops it)
      m[i] = mi;
      v[i] = vi;
      v_max[i] = hi;
      const T decayed = w[i] * decay;  // rounded on its own, as a separate scaling would be
      w[i] = decayed - alpha * mi / (std::sqrt(hi) + eps);
    }
    return;
  }
  for (Index i = 0; i < c; ++i) {
    const T gi = g[i];
    const T mi = m[i] + (gi - m[i]) * (T(1) - b1);
    const T vi = v[i] + (gi * gi - v[i]) * (T(1) - b2);
    m[i] = mi;
    v[i] = vi;
    const T decayed = w[i] * decay;
    w[i] = decayed - alpha * mi / (std::sqrt(vi) + eps);
  }
}

template <typename T>
void adam_update(T* w, const T* g, T* m, T* v, T* v_max, Index n, double lr, double beta1,
                 double beta2, double eps, double t, double weight_decay) {
  const T alpha = T(lr * std::sqrt(1.0 - std::pow(beta2, t)) / (1.0 - std::pow(beta1, t)));
  const T decay = T(1.0 - lr * weight_decay);  // AdamW: w -= lr·λ·w before the step
  parallel_chunks(n, kCost, [&](Index b, Index c) {
    adam_chunk(w + b, g + b, m + b, v + b, v_max ? v_max + b : nullptr, c, alpha, T(beta1),
               T(beta2), T(eps), decay);
  });
}

template <typename T>
void nadam_chunk(T* __restrict w, const T* __restrict g, T* __restrict m, T* __restrict v,
                 Index c, T lr, T b1, T b2, T eps, T c_m, T c_g, T c_v, T decay) {
  for (Index i = 0; i < c; ++i) {
    const T gi = g[i];
    const T mi = m[i] + (gi - m[i]) * (T(1) - b1);
    const T vi = v[i] + (gi * gi - v[i]) * (T(1) - b2);
    m[i] = mi;
    v[i] = vi;
    const T m_hat = c_m * mi + c_g * gi;
    const T v_hat = c_v * vi;
    const T decayed = w[i] * decay;
    w[i] = decayed - lr * m_hat / (std::sqrt(v_hat) + eps);
  }
}

template <typename T>
void nadam_update(T* w, const T* g, T* m, T* v, Index n, double lr, double beta1, double beta2,
                  double eps, double t, double u_product_t, double u_product_t1,
                  double weight_decay) {
  const double u_t = beta1 * (1.0 - 0.5 * std::pow(0.96, t));
  const double u_t1 = beta1 * (1.0 - 0.5 * std::pow(0.96, t + 1));
  const T c_m = T(u_t1 / (1.0 - u_product_t1));
  const T c_g = T((1.0 - u_t) / (1.0 - u_product_t));
  const T c_v = T(1.0 / (1.0 - std::pow(beta2, t)));
  const T decay = T(1.0 - lr * weight_decay);
  parallel_chunks(n, kCost, [&](Index b, Index c) {
    nadam_chunk(w + b, g + b, m + b, v + b, c, T(lr), T(beta1), T(beta2), T(eps), c_m, c_g, c_v,
                decay);
  });
}

template <typename T>
void sum_squares(const T* g, const Index* offsets, Index segments, double* out) {
  // Fixed blocks per segment, each summed in double, then the blocks in order.
  constexpr Index kBlock = Index(1) << 14;
  std::vector<Index> first_block(size_t(segments) + 1, 0);
  for (Index s = 0; s < segments; ++s)
    first_block[s + 1] = first_block[s] + (offsets[s + 1] - offsets[s] + kBlock - 1) / kBlock;
  const Index blocks = first_block[segments];
  std::vector<double> partial(static_cast<size_t>(blocks), 0.0);
  std::vector<Index> block_segment(static_cast<size_t>(blocks));
  for (Index s = 0; s < segments; ++s)
    for (Index bl = first_block[s]; bl < first_block[s + 1]; ++bl) block_segment[bl] = s;
  parallel_for(blocks, threads_for(2.0 * double(offsets[segments])), [&](Index bl) {
    const Index s = block_segment[bl];
    const Index begin = offsets[s] + (bl - first_block[s]) * kBlock;
    const Index end = std::min(offsets[s + 1], begin + kBlock);
    double acc = 0;
    for (Index i = begin; i < end; ++i) acc += double(g[i]) * double(g[i]);
    partial[bl] = acc;
  });
  for (Index s = 0; s < segments; ++s) {
    double acc = 0;
    for (Index bl = first_block[s]; bl < first_block[s + 1]; ++bl) acc += partial[bl];
    out[s] = acc;
  }
}

template <typename T>
double regularize_chunk(const T* __restrict w, T* __restrict g, Index c, T l1, T two_l2) {
  double penalty_l1 = 0, penalty_l2 = 0;
  for (Index i = 0; i < c; ++i) {
    const T wi = w[i];
    const T sign = wi > T(0) ? T(1) : (wi < T(0) ? T(-1) : T(0));
    g[i] += l1 * sign + two_l2 * wi;
  }
  for (Index i = 0; i < c; ++i) {
    penalty_l1 += std::abs(double(w[i]));
    penalty_l2 += double(w[i]) * double(w[i]);
  }
  return double(l1) * penalty_l1 + 0.5 * double(two_l2) * penalty_l2;
}

template <typename T>
double regularize(const T* w, T* g, const Index* offsets, Index segments, const double* l1,
                  const double* l2) {
  constexpr Index kBlock = Index(1) << 14;
  // Fixed blocks, each segment's blocks summed in order, then the segments in order.
  std::vector<Index> first(static_cast<size_t>(segments) + 1, 0);
  for (Index s = 0; s < segments; ++s)
    first[s + 1] = first[s] + (offsets[s + 1] - offsets[s] + kBlock - 1) / kBlock;
  const Index blocks = first[segments];
  std::vector<double> partial(static_cast<size_t>(blocks), 0.0);
  std::vector<Index> owner(static_cast<size_t>(blocks));
  for (Index s = 0; s < segments; ++s)
    for (Index b = first[s]; b < first[s + 1]; ++b) owner[b] = s;
  parallel_for(blocks, threads_for(4.0 * double(offsets[segments] - offsets[0])), [&](Index b) {
    const Index s = owner[b];
    if (l1[s] == 0.0 && l2[s] == 0.0) return;  // a gap between regularised weights
    const Index begin = offsets[s] + (b - first[s]) * kBlock;
    const Index count = std::min(kBlock, offsets[s + 1] - begin);
    partial[b] = regularize_chunk(w + begin, g + begin, count, T(l1[s]), T(2.0 * l2[s]));
  });
  double total = 0;
  for (Index b = 0; b < blocks; ++b) total += partial[b];
  return total;
}

template <typename T>
void ema_chunk(T* __restrict ema, const T* __restrict w, Index c, T m) {
  for (Index i = 0; i < c; ++i) ema[i] = m * ema[i] + (T(1) - m) * w[i];
}

template <typename T>
void ema_update(T* ema, const T* w, Index n, double momentum) {
  parallel_chunks(n, 3.0, [&](Index b, Index c) { ema_chunk(ema + b, w + b, c, T(momentum)); });
}

template <typename T>
void clip_chunk(T* __restrict g, Index c, T limit) {
  for (Index i = 0; i < c; ++i) g[i] = std::min(std::max(g[i], -limit), limit);
}

template <typename T>
void scale_chunk(T* __restrict g, Index c, T f) {
  for (Index i = 0; i < c; ++i) g[i] *= f;
}

template <typename T>
void clip_by_value(T* g, Index n, double c) {
  parallel_chunks(n, 1.0, [&](Index b, Index cnt) { clip_chunk(g + b, cnt, T(c)); });
}

template <typename T>
void scale_segments(T* g, const Index* offsets, Index segments, const double* factors) {
  for (Index s = 0; s < segments; ++s) {
    if (factors[s] == 1.0) continue;
    T* base = g + offsets[s];
    const T f = T(factors[s]);
    parallel_chunks(offsets[s + 1] - offsets[s], 1.0,
                    [&](Index b, Index c) { scale_chunk(base + b, c, f); });
  }
}

#define FASTNN_INSTANTIATE(T)                                                                   \
  template void sgd_update<T>(T*, const T*, T*, Index, double, double, bool);                 \
  template void adagrad_update<T>(T*, const T*, T*, Index, double, double);                   \
  template void rmsprop_update<T>(T*, const T*, T*, T*, T*, Index, double, double, double,    \
                                  double);                                                    \
  template void adadelta_update<T>(T*, const T*, T*, T*, Index, double, double, double);      \
  template void adam_update<T>(T*, const T*, T*, T*, T*, Index, double, double, double,       \
                               double, double, double);                                       \
  template void nadam_update<T>(T*, const T*, T*, T*, Index, double, double, double, double,  \
                                double, double, double, double);                              \
  template void sum_squares<T>(const T*, const Index*, Index, double*);                       \
  template double regularize<T>(const T*, T*, const Index*, Index, const double*,             \
                                const double*);                                               \
  template void ema_update<T>(T*, const T*, Index, double);                                   \
  template void clip_by_value<T>(T*, Index, double);                                          \
  template void scale_segments<T>(T*, const Index*, Index, const double*);
FASTNN_INSTANTIATE(float)
FASTNN_INSTANTIATE(double)
#undef FASTNN_INSTANTIATE

}  // namespace fastnn
