// Pooling, zero padding and nearest-neighbour upsampling over NHWC images.
//
//   max pooling:      y[n,i,j,c] = max over the window of x[n, i·sh - pt + r, j·sw - pl + q, c]
//   average pooling:  y[n,i,j,c] = (Σ over the window's in-bounds positions) / (their count)
//   global pooling:   y[n,c] = max or mean over s of x[n,s,c]   (s runs over H×W or steps)
//   zero padding:     y = x placed at (top, left) inside zeros of (H+top+bottom, W+left+right)
//   upsampling:       y[n,i,j,c] = x[n, i / sh, j / sw, c]
//   channel moves:    y[n,b,a] = x[n,a,b]  (NCHW <-> NHWC for the channels_first layers)
//
// Layout: x (batch, height, width, channels), C-contiguous; 1-D pooling is height 1. The
// window of output (i, j) starts at (i·sh - pt, j·sw - pl); padding follows TensorFlow's
// 'same' rule (total = max((ceil(in/s) - 1)·s + k - in, 0), pt = total/2, the rest after).
// Padded positions take no part: max ignores them, the average divides by the count of
// in-bounds positions only. Every window holds at least one in-bounds position.
//
// Max pooling's backward routes each gradient to the first maximum of its window in
// row-major window order. The forward pass stores where that is, as the flat index
// h·W + w of the input position for each (n, i, j, c) ("argmax", int32, like PyTorch's
// indices); NaN counts as the maximum (it propagates, as in NumPy).
//
// Backward passes are gathers: each task owns whole rows of dx and adds, for each of its
// positions, the contributions of the windows covering it in increasing (i, j) order.
// Overlapping windows therefore sum in a fixed order, whatever the number of threads,
// and an argmax that matches no position of its window contributes nothing (never a
// write out of bounds).
//
// Vectorised across channels (the contiguous axis). Cost: one pass over x and y; the
// window's positions are re-read from cache when windows overlap.
#pragma once

#include <cstdint>

#include "fastnn/parallel.hpp"

namespace fastnn {

/// The geometry of a 2-D pooling: sizes, window, strides and padding.
struct Pool2D {
  Index batch = 0, in_h = 0, in_w = 0, channels = 0;
  Index pool_h = 1, pool_w = 1, stride_h = 1, stride_w = 1;
  Index pad_top = 0, pad_left = 0;  // 'same' only; the bottom/right padding is implied
  Index out_h = 0, out_w = 0;
};

/// The geometry for these sizes. `same`: TensorFlow's 'same' padding, else 'valid'.
/// Requires pool and strides >= 1, and for 'valid' a window no larger than the input
/// (checked by the bindings; here out_h/out_w would come out <= 0).
Pool2D make_pool2d(Index batch, Index in_h, Index in_w, Index channels, Index pool_h,
                   Index pool_w, Index stride_h, Index stride_w, bool same);

/// y (batch, out_h, out_w, channels) = window maxima; argmax (same shape) when not null.
template <typename T>
void max_pool_forward(const Pool2D& p, const T* x, T* y, int32_t* argmax);

/// dx (batch, in_h, in_w, channels) = Σ of dy over the windows whose argmax is that position.
template <typename T>
void max_pool_backward(const Pool2D& p, const int32_t* argmax, const T* dy, T* dx);

/// y = window means over in-bounds positions.
template <typename T>
void average_pool_forward(const Pool2D& p, const T* x, T* y);

/// dx = Σ over the windows covering each position of dy / (the window's count).
template <typename T>
void average_pool_backward(const Pool2D& p, const T* dy, T* dx);

/// y[n,c] = max_s x[n,s,c] for x (batch, steps, channels); argmax[n,c] = the first such s.
template <typename T>
void global_max_pool_forward(Index batch, Index steps, Index channels, const T* x, T* y,
                             int32_t* argmax);

/// dx[n,s,c] = dy[n,c] where s == argmax[n,c], else 0.
template <typename T>
void global_max_pool_backward(Index batch, Index steps, Index channels, const int32_t* argmax,
                              const T* dy, T* dx);

/// y[n,c] = (Σ_s x[n,s,c]) / steps, summed in order of s.
template <typename T>
void global_average_pool_forward(Index batch, Index steps, Index channels, const T* x, T* y);

/// dx[n,s,c] = dy[n,c] / steps.
template <typename T>
void global_average_pool_backward(Index batch, Index steps, Index channels, const T* dy, T* dx);

/// Padding amounts of ZeroPadding2D (all >= 0).
struct Pad2D {
  Index top = 0, bottom = 0, left = 0, right = 0;
};

/// y (batch, h+top+bottom, w+left+right, channels) = x surrounded by zeros.
template <typename T>
void zero_pad2d_forward(Index batch, Index h, Index w, Index channels, const Pad2D& pad,
                        const T* x, T* y);

/// dx (batch, h, w, channels) = the interior of dy.
template <typename T>
void zero_pad2d_backward(Index batch, Index h, Index w, Index channels, const Pad2D& pad,
                         const T* dy, T* dx);

/// y (batch, h·sh, w·sw, channels) = each pixel repeated sh×sw times.
template <typename T>
void upsample2d_forward(Index batch, Index h, Index w, Index channels, Index sh, Index sw,
                        const T* x, T* y);

/// dx[n,i,j,c] = Σ of dy over the sh×sw block of (i, j), summed row by row.
template <typename T>
void upsample2d_backward(Index batch, Index h, Index w, Index channels, Index sh, Index sw,
                         const T* dy, T* dx);

/// y[n, c, r] = x[n, r, c] for x (batch, rows, cols): each matrix transposed in 32×32 tiles
/// (both tiles stay in L1), parallel over (matrix, row of tiles). NCHW -> NHWC is rows = C,
/// cols = H·W; the way back swaps them. A copy: bit-identical on any number of threads.
template <typename T>
void transpose_batched(Index batch, Index rows, Index cols, const T* x, T* y);

}  // namespace fastnn
