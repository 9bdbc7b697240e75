// Layer normalisation: each row of x (viewed as rows × F, the F values of its trailing
// axes) normalised by its own statistics, then scaled and shifted per feature.
//
//   Standard:     μ = mean(x),  σ² = mean((x − μ)²),  s = 1/√(σ² + ε)
//                 y = (x − μ)·s·γ + β
//   KerasRms:     Keras 3's LayerNormalization(rms_scaling=True): y = x·s·γ with the same
//                 s = 1/√(var(x) + ε) (no mean subtracted, no β)
//   Rms:          RMSNorm (keras.ops.rms_normalization): s = 1/√(mean(x²) + ε), y = x·s·γ
//
// In general y = (x − c)·s·γ + β with c the subtracted centre (μ or 0) and
// s = 1/√(mean((x − r)²) + ε) with r the reference of the second moment (μ or 0). Backward,
// with g = γ·dy and N = F:
//   dx = s·g − [c = μ]·s/N·Σg − s³·(x − r)/N·Σ g·(x − c)
//   dγ = Σ_rows dy·(x − c)·s,   dβ = Σ_rows dy
// x − μ is computed as (x − x₀) − (μ − x₀) with x₀ the row's first value: the first
// difference is exact for nearby values and the second is small, so a mean of 1e4 with a
// spread of 1 loses nothing to the rounding of μ in float32.
//
// Moments: one pass over the row, sums of x − x₀ and (x − x₀)² shifted by the row's first
// value (sound for large means: the shifted values are of the order of the spread), in
// SIMD-wide lanes folded into double precision every block.
//
// Determinism: rows are independent; dγ and dβ are sums over rows in chunks of rows fixed
// by the shape alone, each chunk summed in row order and the chunks merged in chunk order,
// so results are the same bit for bit on any thread count.
#pragma once

#include "fastnn/parallel.hpp"

namespace fastnn {

enum class LayerNormMode { Standard, KerasRms, Rms };

template <typename T>
struct LayerNormArgs {
  Index rows = 0;      // product of the leading (not normalised) axes
  Index features = 0;  // F: product of the normalised trailing axes
  const T* x = nullptr;
  const T* gamma = nullptr;  // F values, optional (none: γ = 1)
  const T* beta = nullptr;   // F values, optional (none: β = 0); ignored unless Standard
  double epsilon = 1e-3;
  LayerNormMode mode = LayerNormMode::Standard;
};

/// Writes y (rows × F) and, per row, the row mean μ (in every mode; in double precision, so
/// that x − μ stays exact for data with a large mean) and s = 1/√(second moment + ε) into
/// `mean` and `invstd` (rows values each; either may be null: the backward pass takes them).
template <typename T>
void layernorm_forward(const LayerNormArgs<T>& a, T* y, double* mean, T* invstd);

/// Gradients for dy = dL/dy given the forward's per-row mean (the row mean μ in every mode:
/// the backward of Standard and KerasRms needs it; Rms ignores it) and invstd. dgamma and
/// dbeta (F values) are overwritten, or added to when `accumulate`; each of dgamma, dbeta,
/// dx is skipped when null. a.beta is not read.
template <typename T>
void layernorm_backward(const LayerNormArgs<T>& a, const double* mean, const T* invstd, const T* dy,
                        T* dgamma, T* dbeta, bool accumulate, T* dx);

}  // namespace fastnn
