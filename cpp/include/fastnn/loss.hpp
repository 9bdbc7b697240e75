// Losses with their gradients, in one pass (Keras semantics).
//
// Predictions are `rows` × `cols` (rows = all leading axes, cols = the last axis). Each row
// r gets a loss l_r (mean over the last axis for the regression losses and binary cross-
// entropy, a sum for categorical cross-entropy and KL divergence) and a weight w_r (1 when
// absent). The kernel returns Σ_r w_r·l_r and writes grad = scale · ∂(Σ_r w_r·l_r)/∂pred;
// Keras' "sum over batch size" reduction is scale = 1/rows.
//
// Cross-entropies from logits (and the softmax/sigmoid they fuse with) never take log(0)
// and never overflow: log-sum-exp with the row maximum subtracted, and
// max(z, 0) - z·y + log1p(exp(-|z|)) for the binary case. Their gradient is p - y.
// Cost: one pass over pred (a few exp/log per value).
#pragma once

#include <cstdint>

#include "fastnn/parallel.hpp"

namespace fastnn {

enum class LossKind : int {
  MeanSquaredError = 0,
  MeanAbsoluteError,
  Huber,                          // delta
  BinaryCrossentropy,             // from_logits, label_smoothing
  CategoricalCrossentropy,        // from_logits, label_smoothing
  SparseCategoricalCrossentropy,  // from_logits; labels instead of y_true
  KLDivergence,
};

struct LossSpec {
  LossKind kind = LossKind::MeanSquaredError;
  bool from_logits = false;
  double label_smoothing = 0.0;
  double delta = 1.0;       // Huber
  double epsilon = 1e-7;    // clipping of probabilities (Keras' backend epsilon)
};

template <typename T>
struct LossArgs {
  Index rows = 0, cols = 0;
  const T* pred = nullptr;       // rows × cols: probabilities, logits or values
  const T* y_true = nullptr;     // rows × cols (dense targets)
  const int64_t* labels = nullptr;  // rows class indices (sparse), each in [0, cols)
  const T* weights = nullptr;    // rows, optional
  T scale = T(1);
  T* row_losses = nullptr;       // rows, optional: receives w_r·l_r
};

/// Returns Σ_r w_r·l_r; writes grad (rows × cols) when not null and, for cross-entropies
/// from logits, the probabilities softmax(z) / sigmoid(z) into probs when not null.
/// Throws std::invalid_argument for a label outside [0, cols) (checked before any write).
template <typename T>
double loss_forward_backward(const LossSpec& spec, const LossArgs<T>& args, T* grad, T* probs);

}  // namespace fastnn
