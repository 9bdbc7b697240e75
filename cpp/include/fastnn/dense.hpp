// The Dense layer: an affine map over the last axis and an activation, in one call.
//
//   forward:   z = x·W + b,   y = f(z)
//   backward:  dz = dy ⊙ f'(z),   dW (+)= xᵀ·dz,   db (+)= Σ_rows dz,   dx = dz·Wᵀ
//
// Layouts (Keras): x is m×k (rows = all leading axes of the input), W is k×n, b has n
// values, y/z/dy are m×n. Cost: 2·m·n·k flops forward, 4·m·n·k backward (2·m·n·k
// without dx). The bias gradient sums rows in order, so it is the same on any thread
// count, like the products.
#pragma once

#include "fastnn/activation.hpp"
#include "fastnn/parallel.hpp"

namespace fastnn {

template <typename T>
struct DenseArgs {
  Index m = 0, k = 0, n = 0;
  const T* x = nullptr;
  const T* w = nullptr;
  const T* b = nullptr;  // optional
  Activation act;
};

/// y = f(x·W + b). z receives x·W + b when not null (kept for the backward pass when the
/// activation's derivative needs its input); y may equal z only for Linear.
template <typename T>
void dense_forward(const DenseArgs<T>& a, T* z, T* y);

/// Gradients of the loss for dy = dL/dy. z may be null when f' needs only y. dW and db
/// are overwritten, or added to when `accumulate`; each of dW, db, dx is skipped when null.
template <typename T>
void dense_backward(const DenseArgs<T>& a, const T* z, const T* y, const T* dy, T* dw, T* db,
                    bool accumulate, T* dx);

/// out[j] (+)= Σ_i m[i, j] for an m×n row-major matrix: rows summed in order within fixed
/// blocks of 1024, the blocks' sums in order (the same bits on any thread count).
template <typename T>
void column_sums(const T* m, Index rows, Index cols, T* out, bool accumulate);

/// column_sums of a matrix whose rows are `ld` values apart.
template <typename T>
void column_sums_strided(const T* m, Index rows, Index cols, Index ld, T* out, bool accumulate);

}  // namespace fastnn
