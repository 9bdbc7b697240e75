// Image warps: one projective transform per image of an NHWC batch (Keras' affine_transform).
//
// Output pixel (y, x) of image n reads the input at
//     x' = (a0·x + a1·y + a2) / k,   y' = (b0·x + b1·y + b2) / k,   k = c0·x + c1·y + 1
// with t = [a0 a1 a2 b0 b1 b2 c0 c1] the image's transform (output -> input, as in Keras;
// pixel centres at integer coordinates). Interpolation:
//   nearest:  the tap at (round(y'), round(x')), halves rounded away from zero;
//   bilinear: the four taps around (y', x') weighted (1-fy)(1-fx), (1-fy)fx, fy(1-fx), fy·fx.
// Each integer tap outside the image is resolved by the fill mode (Keras' names):
//   constant: the tap reads fill_value          (k k k k | a b c d | k k k k)
//   nearest:  clamped to the edge                (a a a a | a b c d | d d d d)
//   reflect:  reflected about the edge           (d c b a | a b c d | d c b a)
//   mirror:   reflected about the edge pixel     (d c b | a b c d | c b a)
//   wrap:     periodic                           (a b c d | a b c d | a b c d)
// This is the tap-wise convention of Keras' NumPy and JAX backends (scipy/JAX
// map_coordinates over a padded input). A coordinate that is not finite or beyond ±2^61
// gives fill_value in every mode.
//
// The backward pass is the adjoint of the same linear map: each output gradient is
// scattered to the taps that produced the value, with the same weights (taps that read
// fill_value receive nothing).
//
// Layouts: images (n, in_h, in_w, c), output (n, out_h, out_w, c), transforms (n, 8) as
// float64. Cost: ~20 operations per output pixel for the coordinates (vectorised across
// pixels in the bilinear forward pass) plus 8 (bilinear) or 1 (nearest) per value and four
// (one) random reads; ~4 ns a pixel of one channel on one Zen 4 core. Threads: the forward
// pass splits into (image, block of rows) tasks, the backward pass into images (its scatter
// crosses rows); the partition does not depend on the thread count, so results are
// bit-identical on 1 or N threads.
//
// Also here, the two other per-image operations of the augmentation layers:
//   flips:    y[i] = x[i] reversed along the width and/or the height (a copy);
//   contrast: y = clip((x - m)·c_i + m, low, high) with m the mean of image i's channel over
//             its pixels (two passes; the means are summed in float64 in a fixed order).
#pragma once

#include <cstdint>

#include "fastnn/parallel.hpp"

namespace fastnn {

enum class Interpolation { Nearest = 0, Bilinear = 1 };
enum class FillMode { Constant = 0, Nearest = 1, Reflect = 2, Mirror = 3, Wrap = 4 };

/// Sizes of a warp: n images of in_h×in_w×channels into out_h×out_w×channels.
struct WarpShape {
  Index n, in_h, in_w, channels, out_h, out_w;
};

/// out[n, y, x, :] = images sampled at transform n applied to (x, y). Requires in_h, in_w >= 1.
template <typename T>
void affine_transform_forward(const T* images, const double* transforms, T* out,
                              const WarpShape& shape, Interpolation interpolation,
                              FillMode fill_mode, T fill_value);

/// dx = Aᵀ·dy with A the forward warp as a linear map of the images (dx is overwritten; it
/// has the input images' shape).
template <typename T>
void affine_transform_backward(const T* dy, const double* transforms, T* dx,
                               const WarpShape& shape, Interpolation interpolation,
                               FillMode fill_mode);

/// y[i] = x[i] (n images of h×w×c) with its columns reversed where horizontal[i] != 0 and its
/// rows reversed where vertical[i] != 0. Its own adjoint.
template <typename T>
void flip_images(const T* x, const uint8_t* horizontal, const uint8_t* vertical, T* y, Index n,
                 Index h, Index w, Index c);

/// y = clip((x - m)·factors[i] + m, low, high) per image i and channel, m the channel's mean
/// over the image's `pixels` pixels (x: n × pixels × c).
template <typename T>
void contrast_forward(const T* x, const T* factors, T* y, Index n, Index pixels, Index c, T low,
                      T high);

/// The input gradient of contrast_forward: with g = dy where the unclipped output lies in
/// [low, high] (0 elsewhere), dx = c·g + (1 - c)·mean(g) per image and channel.
template <typename T>
void contrast_backward(const T* x, const T* dy, const T* factors, T* dx, Index n, Index pixels,
                       Index c, T low, T high);

}  // namespace fastnn
