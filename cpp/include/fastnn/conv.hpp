// 2-D convolution (and 1-D, as a height-1 image), NHWC images and HWIO kernels (Keras).
//
//   forward:   z[n, i, j, f] = b[f] + Σ_{p, q, c} x[n, i·sh + p·dh - pt, j·sw + q·dw - pl, c] · w[p, q, c, f]
//              y = act(z)   (positions outside the image read 0: the padding)
//   backward:  dz = dy ⊙ act'(z);  dw = Σ patchesᵀ·dz;  db = Σ dz;  dx = scatter(dz·wᵀ)
//
// Algorithm: implicit GEMM per chunk of whole images: the GEMM reads the patch matrix
// (rows = output pixels, cols = kh·kw·c) straight from a zero-bordered copy of the chunk,
// through row and column offset tables, never forming it; a 1×1 stride-1 unpadded
// convolution is a plain GEMM on the input. The input gradient of a stride-1 convolution is
// a convolution of dz with the kernel turned 180° (when it has ≥ 16 channels; narrower ones
// and strided convolutions scatter the patch gradients dz·wᵀ back, col2im). Chunks are a fixed partition of the batch (from
// the shapes alone) processed in parallel, each with single-threaded GEMMs; the weight
// gradient sums the chunks' partial products in chunk order. Results are therefore the
// same bit for bit on any number of threads.
// Grouped convolution (groups G > 1, Keras' `groups`): input channels and filters split into
// G equal groups; filters of group g read only channels of group g, with a kernel
// (kh, kw, C/G, F), filters g·F/G.. of group g. Each chunk runs one GEMM per group on its
// slices, read in place (base pointer and leading dimensions; no copies), so the cost and the
// bit-for-bit reproducibility are those of G small convolutions. (Winograd and the stride-1
// flipped-kernel input gradient are for G = 1.)
// Cost: 2·N·OH·OW·F·KH·KW·C/G flops forward, twice that backward.
#pragma once

#include "fastnn/activation.hpp"
#include "fastnn/parallel.hpp"

namespace fastnn {

struct ConvShape {
  Index n = 0, h = 0, w = 0, c = 0;    // input
  Index kh = 0, kw = 0, f = 0;         // kernel (kh, kw, c, f)
  Index sh = 1, sw = 1, dh = 1, dw = 1;  // strides, dilation
  Index pad_top = 0, pad_left = 0;     // zeros before the first row / column
  Index oh = 0, ow = 0;                // output height, width
  Index groups = 1;                    // c and f are multiples of it

  Index group_c() const { return c / groups; }
  Index group_f() const { return f / groups; }
  Index patch() const { return kh * kw * group_c(); }
  Index out_pixels() const { return oh * ow; }
};

template <typename T>
struct ConvArgs {
  ConvShape s;
  const T* x = nullptr;  // n × h × w × c
  const T* w = nullptr;  // kh × kw × (c / groups) × f
  const T* b = nullptr;  // f, optional
  Activation act;
};

/// y = act(conv(x, w) + b); z receives the pre-activation when not null.
template <typename T>
void conv2d_forward(const ConvArgs<T>& a, T* z, T* y);

/// Gradients for dy = dL/dy: dw (and db, optional) overwritten or, with `accumulate`,
/// added to; dx (optional) overwritten. z may be null when act' needs only y.
template <typename T>
void conv2d_backward(const ConvArgs<T>& a, const T* z, const T* y, const T* dy, T* dw, T* db,
                     bool accumulate, T* dx);

}  // namespace fastnn
