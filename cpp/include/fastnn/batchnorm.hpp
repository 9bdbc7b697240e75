// Batch normalisation: per-channel statistics, the normalised and scaled output, the
// moving-average update and the backward pass, each in one call.
//
//   training:   μ = mean(x),  σ² = mean((x − μ)²)  (biased),  s = 1/√(σ² + ε)
//               y = (x − μ)·s·γ + β
//               moving_mean ← moving_mean·momentum + μ·(1 − momentum)   (same for σ²)
//   inference:  y = (x − m)·s·γ + β  with the given m, v and s = 1/√(v + ε)
//   backward:   dβ = Σ dy,  dγ = Σ dy·x̂  (x̂ = (x − μ)·s)
//               batch statistics:   dx = γ·s/N·(N·dy − Σdy − x̂·Σ(dy·x̂))
//               fixed statistics:   dx = γ·s·dy
//
// Layout: x is viewed as outer × C × inner (C-contiguous), the channel axis in the middle:
// outer is the product of the axes before it, inner of those after it. Channels last
// (NHWC images, axis=-1) is inner = 1: rows × C, where reductions run down the rows with
// the channels side by side in SIMD lanes. Any other axis (NCHW, axis=1) is read in place
// with inner > 1: each channel is `outer` contiguous runs of `inner` values, vectorised
// along the run. No transposed copies either way. N = outer·inner values per channel.
//
// Cost: memory-bound. Training forward reads x twice (statistics, then output) and writes y;
// backward reads x and dy twice and writes dx; inference reads x once.
//
// Determinism: statistics are computed over blocks of the input fixed by its shape alone
// (each block exactly, by two passes over data still in L1), and the blocks are merged in
// a fixed order (Chan et al.'s pairwise formula, in double precision), so results are the
// same bit for bit on any thread count.
#pragma once

#include "fastnn/parallel.hpp"

namespace fastnn {

template <typename T>
struct BatchNormArgs {
  Index outer = 0;     // product of the axes before the channel axis
  Index channels = 0;  // C
  Index inner = 1;     // product of the axes after it (1: channels last)
  const T* x = nullptr;
  const T* gamma = nullptr;  // C values, optional (none: γ = 1, i.e. scale=False)
  const T* beta = nullptr;   // C values, optional (none: β = 0, i.e. center=False)
  double epsilon = 1e-3;
};

/// Training mode: batch statistics. Writes y (same shape as x), the batch mean and 1/√(σ²+ε)
/// (C values each; the backward pass takes them), the biased batch variance when `variance`
/// is not null, and updates moving_mean / moving_variance in place when they are not null.
/// Requires outer·inner >= 1.
template <typename T>
void batchnorm_forward_training(const BatchNormArgs<T>& a, T* y, T* mean, T* invstd, T* variance,
                                double momentum, T* moving_mean, T* moving_variance);

/// Inference mode: y from the given statistics (C values each). Writes 1/√(v+ε) into
/// `invstd` when not null (the backward pass takes it with `mean`).
template <typename T>
void batchnorm_forward_inference(const BatchNormArgs<T>& a, const T* mean, const T* variance, T* y,
                                 T* invstd);

/// Gradients for dy = dL/dy, given the forward pass's mean and invstd. batch_statistics:
/// the forward ran in training mode (μ and σ² depend on x); otherwise they were constants.
/// dgamma and dbeta (C values) are overwritten, or added to when `accumulate`; each of
/// dgamma, dbeta, dx is skipped when null. a.beta is not read.
template <typename T>
void batchnorm_backward(const BatchNormArgs<T>& a, const T* mean, const T* invstd, const T* dy,
                        bool batch_statistics, T* dgamma, T* dbeta, bool accumulate, T* dx);

}  // namespace fastnn
