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

template <typename T>
void sgd_update(T* w, const T* g, T* m, Index n, double lr_, double momentum_, bool nesterov) {
  const T lr = T(lr_), mu = T(momentum_);
  parallel_chunks(n, kCost, [&](Index b, Index c) {
    T* __restrict wp = w + b;
    const T* __restrict gp = g + b;
    if (!m) {
      for (Index i = 0; i < c; ++i) wp[i] -= lr * gp[i];
      return;
    }
    T* __restrict mp = m + b;
    for (Index i = 0; i < c; ++i) {
      const T mi = mu * mp[i] - lr * gp[i];
      mp[i] = mi;
      wp[i] += nesterov ? mu * mi - lr * gp[i] : mi;
    }
  });
}

template <typename T>
void adagrad_update(T* w, const T* g, T* acc, Index n, double lr_, double eps_) {
  const T lr = T(lr_), eps = T(eps_);
  parallel_chunks(n, kCost, [&](Index b, Index c) {
    T* __restrict wp = w + b;
    T* __restrict ap = acc + b;
    const T* __restrict gp = g + b;
    for (Index i = 0; i < c; ++i) {
      const T a = ap[i] + gp[i] * gp[i];
      ap[i] = a;
      wp[i] -= lr * gp[i] / std::sqrt(a + eps);
    }
  });
}

template <typename T>
void rmsprop_update(T* w, const T* g, T* v, T* mean_g, T* m, Index n, double lr_, double rho_,
                    double momentum_, double eps_) {
  const T lr = T(lr_), rho = T(rho_), mu = T(momentum_), eps = T(eps_);
  parallel_chunks(n, kCost, [&](Index b, Index c) {
    for (Index i = b; i < b + c; ++i) {
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
  });
}

template <typename T>
void adadelta_update(T* w, const T* g, T* acc_g, T* acc_d, Index n, double lr_, double rho_,
                     double eps_) {
  const T lr = T(lr_), rho = T(rho_), eps = T(eps_);
  parallel_chunks(n, kCost, [&](Index b, Index c) {
    for (Index i = b; i < b + c; ++i) {
      const T gi = g[i];
      const T ag = rho * acc_g[i] + (T(1) - rho) * gi * gi;
      acc_g[i] = ag;
      const T d = -std::sqrt(acc_d[i] + eps) / std::sqrt(ag + eps) * gi;
      acc_d[i] = rho * acc_d[i] + (T(1) - rho) * d * d;
      w[i] += lr * d;
    }
  });
}

template <typename T>
void adam_update(T* w, const T* g, T* m, T* v, T* v_max, Index n, double lr_, double beta1_,
                 double beta2_, double eps_, double t, double weight_decay) {
  const T b1 = T(beta1_), b2 = T(beta2_), eps = T(eps_);
  const T alpha = T(lr_ * std::sqrt(1.0 - std::pow(beta2_, t)) / (1.0 - std::pow(beta1_, t)));
  const T decay = T(1.0 - lr_ * weight_decay);  // AdamW: w -= lr·λ·w before the step
  const bool decayed = weight_decay != 0.0;
  parallel_chunks(n, kCost, [&](Index b, Index c) {
    T* __restrict wp = w + b;
    T* __restrict mp = m + b;
    T* __restrict vp = v + b;
    const T* __restrict gp = g + b;
    if (v_max) {
      T* __restrict hp = v_max + b;
      for (Index i = 0; i < c; ++i) {
        const T gi = gp[i];
        const T mi = mp[i] + (gi - mp[i]) * (T(1) - b1);
        const T vi = vp[i] + (gi * gi - vp[i]) * (T(1) - b2);
        const T hi = std::max(hp[i], vi);
        mp[i] = mi;
        vp[i] = vi;
        hp[i] = hi;
        const T wi = decayed ? wp[i] * decay : wp[i];
        wp[i] = wi - alpha * mi / (std::sqrt(hi) + eps);
      }
      return;
    }
    for (Index i = 0; i < c; ++i) {
      const T gi = gp[i];
      const T mi = mp[i] + (gi - mp[i]) * (T(1) - b1);
      const T vi = vp[i] + (gi * gi - vp[i]) * (T(1) - b2);
      mp[i] = mi;
      vp[i] = vi;
      const T wi = decayed ? wp[i] * decay : wp[i];
      wp[i] = wi - alpha * mi / (std::sqrt(vi) + eps);
    }
  });
}

template <typename T>
void nadam_update(T* w, const T* g, T* m, T* v, Index n, double lr_, double beta1_,
                  double beta2_, double eps_, double t, double u_product_t, double u_product_t1,
                  double weight_decay) {
  const double u_t = beta1_ * (1.0 - 0.5 * std::pow(0.96, 0.004 * t));
  const double u_t1 = beta1_ * (1.0 - 0.5 * std::pow(0.96, 0.004 * (t + 1)));
  const T b1 = T(beta1_), b2 = T(beta2_), eps = T(eps_), lr = T(lr_);
  const T c_m = T(u_t1 / (1.0 - u_product_t1));
  const T c_g = T((1.0 - u_t) / (1.0 - u_product_t));
  const T c_v = T(1.0 / (1.0 - std::pow(beta2_, t)));
  const T decay = T(1.0 - lr_ * weight_decay);
  const bool decayed = weight_decay != 0.0;
  parallel_chunks(n, kCost, [&](Index b, Index c) {
    T* __restrict wp = w + b;
    T* __restrict mp = m + b;
    T* __restrict vp = v + b;
    const T* __restrict gp = g + b;
    for (Index i = 0; i < c; ++i) {
      const T gi = gp[i];
      const T mi = mp[i] + (gi - mp[i]) * (T(1) - b1);
      const T vi = vp[i] + (gi * gi - vp[i]) * (T(1) - b2);
      mp[i] = mi;
      vp[i] = vi;
      const T m_hat = c_m * mi + c_g * gi;
      const T v_hat = c_v * vi;
      const T wi = decayed ? wp[i] * decay : wp[i];
      wp[i] = wi - lr * m_hat / (std::sqrt(v_hat) + eps);
    }
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
void clip_by_value(T* g, Index n, double c_) {
  const T c = T(c_);
  parallel_chunks(n, 1.0, [&](Index b, Index cnt) {
    for (Index i = b; i < b + cnt; ++i) g[i] = std::min(std::max(g[i], -c), c);
  });
}

template <typename T>
void scale_segments(T* g, const Index* offsets, Index segments, const double* factors) {
  for (Index s = 0; s < segments; ++s) {
    if (factors[s] == 1.0) continue;
    const T f = T(factors[s]);
    T* base = g + offsets[s];
    parallel_chunks(offsets[s + 1] - offsets[s], 1.0, [&](Index b, Index c) {
      for (Index i = b; i < b + c; ++i) base[i] *= f;
    });
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
  template void clip_by_value<T>(T*, Index, double);                                          \
  template void scale_segments<T>(T*, const Index*, Index, const double*);
FASTNN_INSTANTIATE(float)
FASTNN_INSTANTIATE(double)
#undef FASTNN_INSTANTIATE

}  // namespace fastnn
