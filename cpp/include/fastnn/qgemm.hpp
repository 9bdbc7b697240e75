// int8 matrix products for quantized inference (Keras 3's model.quantize("int8")).
//
//   C[i][j] = Σ_k A[i][k]·B[k][j]                    int8 × int8 → int32, exact
//   y[i][j] = act(C[i][j] / (sa[i]·sb[j]) + bias[j])  the quantized Dense: A and sa from float
//                                                     x per row (abs-max), B and sb per column
//
// Values are symmetric int8 in [-127, 127] (Keras' abs_max_quantize range). Accumulation is
// in int32 and exact for k ≤ 65536: |Σ| ≤ k·255·127 < 2^31 even with the VNNI path's
// unsigned encoding (A + 128, corrected by 128·Σ_k B[k][j]).
//
// Paths, chosen at run time on the CPU the process runs on (not at compile time):
//   vnni:   AVX-512 VNNI vpdpbusd, 64 multiply-adds per instruction (4x float32's FMA rate)
//   avx2:   vpmaddubsw on |a| and sign(b, a) (exact: pairs stay under 2·127·127 < 2^15), then
//           vpmaddwd to int32
//   scalar: plain C++, for any CPU
// Every path gives the same integers, so results do not depend on the path or the threads.
//
// B is packed once (at quantization) into blocks of 16 columns holding their k values in
// quads: byte ((jb·k4/4 + kq)·16 + jj)·4 + r is B[4·kq + r][16·jb + jj] (k padded to k4, a
// multiple of 4, and n to n16, a multiple of 16, with zeros), with the column sums.
// Cost: 2·m·n·k integer operations; reads m·k + k·n bytes.
#pragma once

#include <cstdint>

#include "fastnn/activation.hpp"
#include "fastnn/parallel.hpp"

namespace fastnn {

enum class Int8Path : int { Scalar = 0, Avx2 = 1, Vnni = 2 };

/// The fastest path this CPU can run.
Int8Path int8_best_path();
/// The path products use: the best one, unless set_int8_path chose another.
Int8Path int8_path();
/// Uses `path` from now on (tests compare the paths). Throws std::invalid_argument when the
/// CPU cannot run it.
void set_int8_path(Int8Path path);
const char* int8_path_name(Int8Path path);

/// k and n rounded up to the packed layout's multiples (4 and 16).
inline Index int8_k4(Index k) { return (k + 3) / 4 * 4; }
inline Index int8_n16(Index n) { return (n + 15) / 16 * 16; }

/// Packs B (k×n int8, row-major) into `packed` (int8_n16(n)·int8_k4(k) bytes) and its column
/// sums into `col_sums` (int8_n16(n) values).
void int8_pack(const int8_t* b, Index k, Index n, int8_t* packed, int32_t* col_sums);

/// A packed B as int8_pack wrote it.
struct Int8Packed {
  const int8_t* data = nullptr;
  const int32_t* col_sums = nullptr;
  Index k = 0, n = 0;
};

/// C (m×n int32, row stride ldc) = A (m×k int8, row stride lda) · B.
void int8_gemm(Index m, const int8_t* a, Index lda, const Int8Packed& b, int32_t* c, Index ldc);

/// Keras' abs_max_quantize per row of x (m×k): scale[i] = 127 / (max_j |x[i][j]| + 1e-7) and
/// q[i][j] = clip(round_half_even(x[i][j]·scale[i]), -127, 127). A row holding NaN or inf gets
/// scale NaN (and q 0): the quantized Dense then outputs NaN for it.
void int8_quantize_rows(const float* x, Index m, Index k, int8_t* q, float* scale);

/// The quantized Dense forward: x (m×k float32) quantized per row, multiplied by B, then
/// y = act(float(C) / (scale_x[i]·scale_b[j]) + bias[j]) (bias may be null), all fused per
/// tile of rows and columns.
void int8_dense_forward(const float* x, Index m, const Int8Packed& b, const float* scale_b, const float* bias,
                        const Activation& act, float* y);

/// Rows of A gathered from a float tensor (a convolution's patches, never formed): row r
/// holds, for each tap t in order, the `channels` contiguous values at
/// x + row_offsets[r] + tap_offsets[t] (k = taps·channels).
struct GatheredRows {
  const float* x = nullptr;
  const Index* row_offsets = nullptr;  // m entries
  const Index* tap_offsets = nullptr;  // taps entries
  Index taps = 0, channels = 0;
};

/// int8_dense_forward with gathered rows: the quantized convolution (NHWC input padded
/// beforehand, output rows = output positions). Rows are gathered and quantized in chunks,
/// so the quantized patches need a few MB whatever the batch.
void int8_conv_forward(const GatheredRows& rows, Index m, const Int8Packed& b, const float* scale_b,
                       const float* bias, const Activation& act, float* y);

}  // namespace fastnn
