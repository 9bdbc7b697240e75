// Winograd F(2×2, 3×3) convolution (internal to conv.cpp): 3×3, stride-1, undilated
// convolutions with enough channels compute each 2×2 output tile from a 4×4 input tile with
// 16 products per channel pair instead of 36, i.e. 2.25× fewer multiply-adds (Lavin & Gray,
// "Fast Algorithms for Convolutional Neural Networks", 2016):
//
//   Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A,   summed over input channels,
//
// where the elementwise product summed over channels is 16 GEMMs (tiles × c)·(c × f), one
// per position of the 4×4 transformed tile. F(2, 3)'s transforms use only 0, ±1 and ½, so
// float32 results stay within a few ulps of the direct convolution's.
#pragma once

#include "fastnn/conv.hpp"

namespace fastnn {

/// Whether winograd_forward handles this shape (and is measured to be faster there).
bool winograd_applicable(const ConvShape& s);

/// z (or y when z is null) = conv(x, w) + bias; y = act(z). As conv2d_forward.
template <typename T>
void winograd_forward(const ConvShape& s, const T* x, const T* w, const T* bias,
                      const Activation& act, T* z, T* y);

/// dw (+)= the kernel gradient of a convolution with input x and pre-activation gradient dz
/// (same shape rules): 16 GEMMs V[ξ]ᵀ·D[ξ] over the tiles, D the transformed dz tiles.
template <typename T>
void winograd_kernel_gradient(const ConvShape& s, const T* x, const T* dz, T* dw, bool accumulate);

}  // namespace fastnn
