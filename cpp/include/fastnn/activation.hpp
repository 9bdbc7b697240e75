// Activation functions and their derivatives, elementwise (softmax: per row).
//
//   forward:   y = f(x)
//   backward:  dx = dy ⊙ f'(x), computed from x or y (whichever the function needs)
//
// Layout: x, y, dy, dx are contiguous arrays of n values; softmax treats them as rows of
// `cols` values (the last axis). Cost: one pass over memory (a few exp/erf per element
// for the smooth functions). Threads: contiguous chunks whose results do not depend on
// the partition (softmax: whole rows per thread).
#pragma once

#include "fastnn/parallel.hpp"

namespace fastnn {

enum class ActivationKind : int {
  Linear = 0,
  Relu,
  Sigmoid,
  Tanh,
  LeakyRelu,  // alpha: slope for x < 0
  Elu,        // alpha: scale of the negative part
  Selu,
  Gelu,       // exact (erf); GeluTanh is the tanh approximation
  GeluTanh,
  Softplus,
  Swish,      // x·sigmoid(x), a.k.a. SiLU
  Softmax,    // over the last axis
};

struct Activation {
  ActivationKind kind = ActivationKind::Linear;
  double alpha = 0.0;
};

/// Whether the backward pass needs the input x (otherwise the output y suffices, and a
/// layer may keep only y).
bool activation_backward_needs_input(ActivationKind kind);

/// y = f(x) for n values (softmax: rows of `cols`). y may alias x.
template <typename T>
void activation_forward(const Activation& act, const T* x, T* y, Index n, Index cols);

/// y = f(x) for n values on the calling thread only (for kernels already running in
/// parallel, e.g. an RNN's gates row by row); not for Softmax. y may alias x. The values
/// are the same bits as activation_forward's.
template <typename T>
void activation_forward_serial(const Activation& act, const T* x, T* y, Index n);

/// dx = dy ⊙ f'(x). x may be null when the function needs only y; dx may alias dy.
template <typename T>
void activation_backward(const Activation& act, const T* x, const T* y, const T* dy, T* dx,
                         Index n, Index cols);

/// PReLU over rows of `cols` values: y = x for x > 0, alpha[j]·x otherwise (alpha has cols
/// values, shared by every row).
template <typename T>
void prelu_forward(const T* x, const T* alpha, T* y, Index rows, Index cols);

/// dx = dy·(x > 0 ? 1 : alpha[j]); dalpha[j] (+)= Σ_rows dy·x·(x <= 0), rows summed in order.
template <typename T>
void prelu_backward(const T* x, const T* alpha, const T* dy, T* dx, T* dalpha, Index rows,
                    Index cols, bool accumulate);

}  // namespace fastnn
