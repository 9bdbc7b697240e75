// General matrix product: the Dense forward pass and every weight gradient.
//
//   C  = op(A) · op(B) [+ 1·biasᵀ]        (accumulate = false)
//   C += op(A) · op(B) [+ 1·biasᵀ]        (accumulate = true: gradient accumulation)
//
// op(X) is X or Xᵀ. All matrices are row-major (NumPy's C order) with a leading
// dimension: op(A) is m×k, op(B) is k×n, C is m×n, bias has n entries.
// Cost: 2·m·n·k flops; reads m·k + k·n (+ m·n when accumulating), writes m·n.
//
// Threads: every element of C is computed by the same operations in the same order
// whatever the partition of the work (see cpp/src/gemm_impl.hpp), so the result is the
// same bit for bit on any number of threads. Products under kParallelMinFlops run on the
// calling thread.
#pragma once

#include "fastnn/parallel.hpp"

namespace fastnn {

template <typename T>
struct GemmArgs {
  Index m = 0, n = 0, k = 0;
  const T* a = nullptr;  // op(A) is m×k; stored k×m when trans_a
  Index lda = 0;         // row stride of A as stored
  bool trans_a = false;
  const T* b = nullptr;  // op(B) is k×n; stored n×k when trans_b
  Index ldb = 0;
  bool trans_b = false;
  T* c = nullptr;        // m×n, must not overlap A, B or bias
  Index ldc = 0;
  const T* bias = nullptr;  // optional, n entries, added to every row of C
  bool accumulate = false;  // C += ... instead of C = ...
  int max_threads = 0;      // 0: as many as worthwhile; 1: the calling thread only (a caller
                            // already running in parallel, e.g. one product per image chunk)
  // A gathered rather than strided (a convolution's patch matrix, never formed): element
  // (r, c) of op(A) is a[a_row_offsets[r] + a_step_offsets[c]]; lda and trans_a are unused.
  const Index* a_row_offsets = nullptr;   // m entries
  const Index* a_step_offsets = nullptr;  // k entries
};

/// One product described by `args`.
template <typename T>
void gemm(const GemmArgs<T>& args);

/// `batch` products of the shape in `args`: product i reads A at args.a + a_offsets[i],
/// B at args.b + b_offsets[i] (offsets in elements; repeats allowed, for broadcasting)
/// and writes C at args.c + i·c_stride.
template <typename T>
void gemm_batched(const GemmArgs<T>& args, Index batch, const Index* a_offsets,
                  const Index* b_offsets, Index c_stride);

extern template void gemm<float>(const GemmArgs<float>&);
extern template void gemm<double>(const GemmArgs<double>&);
extern template void gemm_batched<float>(const GemmArgs<float>&, Index, const Index*,
                                         const Index*, Index);
extern template void gemm_batched<double>(const GemmArgs<double>&, Index, const Index*,
                                          const Index*, Index);

}  // namespace fastnn
