// Loss kernels (see fastnn/loss.hpp). One row at a time: each row's loss and gradient
// depend only on that row, and the row losses are summed in order afterwards.
#include "fastnn/loss.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "fastnn/scratch.hpp"

namespace fastnn {
namespace {

template <typename T>
T clip(T v, T lo, T hi) {
  return std::min(std::max(v, lo), hi);
}

// Row r of the (smoothed) target, dense or one-hot from a label, into t[0:cols].
template <typename T>
void target_row(const LossSpec& s, const LossArgs<T>& a, Index r, T* t) {
  const Index C = a.cols;
  if (a.labels) {
    std::fill(t, t + C, T(0));
    t[a.labels[r]] = T(1);
  } else {
    std::copy(a.y_true + r * C, a.y_true + (r + 1) * C, t);
  }
  if (s.label_smoothing > 0) {
    const T ls = T(s.label_smoothing);
    const T spread = s.kind == LossKind::BinaryCrossentropy ? T(0.5) * ls : ls / T(C);
    for (Index j = 0; j < C; ++j) t[j] = t[j] * (T(1) - ls) + spread;
  }
}

// Loss of one row; g (may be null) receives ∂l/∂pred for that row, p (may be null) the
// probabilities for the from-logits cross-entropies.
template <typename T>
T row_loss(const LossSpec& s, const LossArgs<T>& a, Index r, T* t, T* g, T* p) {
  const Index C = a.cols;
  const T* x = a.pred + r * C;
  const T eps = T(s.epsilon);
  target_row(s, a, r, t);
  T loss = 0;
  switch (s.kind) {
    case LossKind::MeanSquaredError:
      for (Index j = 0; j < C; ++j) {
        const T d = x[j] - t[j];
        loss += d * d;
        if (g) g[j] = T(2) * d / T(C);
      }
      return loss / T(C);
    case LossKind::MeanAbsoluteError:
      for (Index j = 0; j < C; ++j) {
        const T d = x[j] - t[j];
        loss += std::abs(d);
        if (g) g[j] = (d > 0 ? T(1) : d < 0 ? T(-1) : T(0)) / T(C);
      }
      return loss / T(C);
    case LossKind::Huber: {
      const T delta = T(s.delta);
      for (Index j = 0; j < C; ++j) {
        const T d = x[j] - t[j], ad = std::abs(d);
        loss += ad <= delta ? T(0.5) * d * d : delta * ad - T(0.5) * delta * delta;
        if (g) g[j] = (ad <= delta ? d : (d > 0 ? delta : -delta)) / T(C);
      }
      return loss / T(C);
    }
    case LossKind::BinaryCrossentropy:
      if (s.from_logits) {
        for (Index j = 0; j < C; ++j) {
          const T z = x[j];
          loss += std::max(z, T(0)) - z * t[j] + std::log1p(std::exp(-std::abs(z)));
          const T sig = z >= 0 ? T(1) / (T(1) + std::exp(-z)) : std::exp(z) / (T(1) + std::exp(z));
          if (p) p[j] = sig;
          if (g) g[j] = (sig - t[j]) / T(C);
        }
      } else {
        for (Index j = 0; j < C; ++j) {
          const T q = clip(x[j], eps, T(1) - eps);
          loss -= t[j] * std::log(q) + (T(1) - t[j]) * std::log(T(1) - q);
          const bool inside = x[j] > eps && x[j] < T(1) - eps;  // clip's derivative
          if (g) g[j] = inside ? (q - t[j]) / (q * (T(1) - q)) / T(C) : T(0);
        }
      }
      return loss / T(C);
    case LossKind::CategoricalCrossentropy:
    case LossKind::SparseCategoricalCrossentropy: {
      T total_t = 0;
      for (Index j = 0; j < C; ++j) total_t += t[j];
      if (s.from_logits) {  // Σ_j t_j·(lse - z_j), gradient softmax·Σt - t
        // In terms of z - max (exact however large z is): lse - z_j = log Σ - (z_j - max).
        const T top = *std::max_element(x, x + C);
        T sum = 0;
        for (Index j = 0; j < C; ++j) sum += std::exp(x[j] - top);
        const T log_sum = std::log(sum);
        for (Index j = 0; j < C; ++j) {
          loss += t[j] * (log_sum - (x[j] - top));
          const T prob = std::exp(x[j] - top) / sum;
          if (p) p[j] = prob;
          if (g) g[j] = prob * total_t - t[j];
        }
        return loss;
      }
      // Probabilities: renormalised to sum 1, clipped to [eps, 1 - eps].
      T sum = 0;
      for (Index j = 0; j < C; ++j) sum += x[j];
      T dot = 0;  // Σ_j ∂l/∂q_j · q_j, for the renormalisation's derivative
      for (Index j = 0; j < C; ++j) {
        const T q = x[j] / sum, qc = clip(q, eps, T(1) - eps);
        loss -= t[j] * std::log(qc);
        const T dq = (q > eps && q < T(1) - eps) ? -t[j] / qc : T(0);
        if (g) g[j] = dq;
        dot += dq * q;
      }
      if (g)
        for (Index j = 0; j < C; ++j) g[j] = (g[j] - dot) / sum;
      return loss;
    }
    case LossKind::KLDivergence:
      for (Index j = 0; j < C; ++j) {
        const T yt = clip(t[j], eps, T(1)), yp = clip(x[j], eps, T(1));
        loss += yt * std::log(yt / yp);
        if (g) g[j] = (x[j] > eps && x[j] < T(1)) ? -yt / yp : T(0);
      }
      return loss;
  }
  return loss;
}

}  // namespace

template <typename T>
double loss_forward_backward(const LossSpec& spec, const LossArgs<T>& a, T* grad, T* probs) {
  const Index R = a.rows, C = a.cols;
  if (a.labels) {
    for (Index r = 0; r < R; ++r)
      if (a.labels[r] < 0 || a.labels[r] >= C)
        throw std::invalid_argument("label " + std::to_string(a.labels[r]) + " at index " +
                                    std::to_string(r) + " is outside [0, " + std::to_string(C) +
                                    ")");
  }
  if (R == 0 || C == 0) return 0.0;
  T* row_losses = a.row_losses ? a.row_losses : thread_scratch<T>(ScratchSlot::LayerTemp2, R);
  const bool probs_wanted = probs && spec.from_logits &&
                            spec.kind != LossKind::MeanSquaredError &&
                            spec.kind != LossKind::MeanAbsoluteError &&
                            spec.kind != LossKind::Huber && spec.kind != LossKind::KLDivergence;
  constexpr Index kRowsPerTask = 256;
  const Index tasks = (R + kRowsPerTask - 1) / kRowsPerTask;
  // Per-task target rows, allocated here: nothing may throw inside the parallel loop.
  std::vector<T> targets(size_t(std::min<Index>(tasks, num_threads()) + 1) * size_t(C));
  const int threads = std::min<int>(threads_for(30.0 * double(R) * double(C)), int(tasks));
  run_team(threads, [&](const Team& team) {
    T* t = targets.data() + team.rank() * C;
    team.for_dynamic(tasks, [&](Index task) {
      const Index r_end = std::min(R, (task + 1) * kRowsPerTask);
      for (Index r = task * kRowsPerTask; r < r_end; ++r) {
        T* g = grad ? grad + r * C : nullptr;
        T l = row_loss(spec, a, r, t, g, probs_wanted ? probs + r * C : nullptr);
        const T w = a.weights ? a.weights[r] : T(1);
        row_losses[r] = w * l;
        if (g) {
          const T f = w * a.scale;
          for (Index j = 0; j < C; ++j) g[j] *= f;
        }
      }
    });
  });
  double total = 0;
  for (Index r = 0; r < R; ++r) total += double(row_losses[r]);
  return total;
}

template double loss_forward_backward<float>(const LossSpec&, const LossArgs<float>&, float*, float*);
template double loss_forward_backward<double>(const LossSpec&, const LossArgs<double>&, double*,
                                              double*);

}  // namespace fastnn
