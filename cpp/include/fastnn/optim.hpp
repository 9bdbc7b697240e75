// Optimizer updates, each one fused pass over a flat parameter buffer (Keras 3 formulas).
//
// w: parameters, g: gradients, state buffers as named; all n values, contiguous. t is the
// 1-based step number. Every update reads and writes each value once (Adam: ~28 bytes a
// float32 parameter), so it is memory-bound; threads take fixed contiguous chunks.
//
//   SGD       m = μ·m - lr·g;  w += m  (nesterov: w += μ·m - lr·g);  μ = 0: w -= lr·g
//   Adagrad   a += g²;  w -= lr·g / sqrt(a + ε)
//   RMSprop   v = ρ·v + (1-ρ)·g²;  [c = ρ·c + (1-ρ)·g;  v̂ = v - c²]  d = lr·g / sqrt(v̂ + ε)
//             μ > 0: m = μ·m + d;  w -= m   else  w -= d
//   Adadelta  a = ρ·a + (1-ρ)·g²;  d = -sqrt(u + ε)/sqrt(a + ε)·g;  u = ρ·u + (1-ρ)·d²;  w += lr·d
//   Adam      m += (g - m)(1-β1);  v += (g² - v)(1-β2);  [v̂ = max(v̂, v)]
//             w -= lr·sqrt(1-β2ᵗ)/(1-β1ᵗ) · m / (sqrt(v̂) + ε);  AdamW first w -= lr·λ·w
//   Nadam     as Keras 3: momentum schedule u_t = β1(1 - ½·0.96ᵗ)
#pragma once

#include "fastnn/parallel.hpp"

namespace fastnn {

template <typename T>
void sgd_update(T* w, const T* g, T* m, Index n, double lr, double momentum, bool nesterov);

template <typename T>
void adagrad_update(T* w, const T* g, T* acc, Index n, double lr, double epsilon);

template <typename T>
void rmsprop_update(T* w, const T* g, T* v, T* mean_g, T* m, Index n, double lr, double rho,
                    double momentum, double epsilon);  // mean_g: centered (else null); m: momentum > 0

template <typename T>
void adadelta_update(T* w, const T* g, T* acc_g, T* acc_d, Index n, double lr, double rho,
                     double epsilon);

template <typename T>
void adam_update(T* w, const T* g, T* m, T* v, T* v_max, Index n, double lr, double beta1,
                 double beta2, double epsilon, double t, double weight_decay);  // v_max: amsgrad

template <typename T>
void nadam_update(T* w, const T* g, T* m, T* v, Index n, double lr, double beta1, double beta2,
                  double epsilon, double t, double u_product_t, double u_product_t1,
                  double weight_decay);

/// Σ g² over each of `segments` consecutive ranges (offsets has segments+1 entries), in
/// double, in a fixed order: the same on any thread count.
template <typename T>
void sum_squares(const T* g, const Index* offsets, Index segments, double* out);

/// Weight penalties, fused: for each segment s of w (offsets has segments+1 entries),
/// g += l1[s]·sign(w) + 2·l2[s]·w, and returns Σ_s l1[s]·Σ|w| + l2[s]·Σw² (in double, in a
/// fixed order). One pass over the regularised weights and their gradients.
template <typename T>
double regularize(const T* w, T* g, const Index* offsets, Index segments, const double* l1,
                  const double* l2);

/// Exponential moving average of the weights: ema = m·ema + (1 - m)·w.
template <typename T>
void ema_update(T* ema, const T* w, Index n, double momentum);

/// g[i] = clip(g[i], -c, c).
template <typename T>
void clip_by_value(T* g, Index n, double c);

/// g[offsets[s]:offsets[s+1]] *= factors[s].
template <typename T>
void scale_segments(T* g, const Index* offsets, Index segments, const double* factors);

}  // namespace fastnn
