// Per-thread scratch memory, kept between calls: kernels that need temporary buffers
// (packed panels, intermediate gradients) would otherwise allocate and page-fault them on
// every call, which costs ~10 % on a 256³ product.
#pragma once

#include <algorithm>
#include <cstdlib>
#include <new>

#include "fastnn/parallel.hpp"

namespace fastnn {

/// Independent buffers of one thread: a kernel may hold one of each at a time.
enum class ScratchSlot : int {
  GemmPackedB = 0,
  GemmThread,
  GemmSteps,
  LayerTemp,
  LayerTemp2,
  ActivationRows,
  ConvColumns,
  ConvGradient,
  ConvPadded,
  ConvRowOffsets,
  ConvStepOffsets,
  ColumnSums,
  WinogradKernel,
  WinogradInput,
  WinogradProducts,
  RnnWeights,
  RnnGateGrads,
  RnnRecurrentGrads,
  RnnStates,
  RnnRowTemp,
  RnnOffsets,
  EmbeddingOrder,
  Int8Row,
  AttentionQueries,
  AttentionScores,
  AttentionProbs,
  AttentionAccumulator,
  AttentionKeyGrads,
  AttentionValueGrads,
  AttentionRowStats,
  kCount
};

/// 64-byte aligned, uninitialised storage for n values of T, owned by the calling thread
/// and valid until its next request for the same slot. Grows, never shrinks.
template <typename T>
T* thread_scratch(ScratchSlot slot, Index n) {
  struct Slot {
    void* ptr = nullptr;
    size_t bytes = 0;
    ~Slot() { std::free(ptr); }
  };
  thread_local Slot slots[static_cast<int>(ScratchSlot::kCount)];
  Slot& s = slots[static_cast<int>(slot)];
  const size_t need = size_t(std::max<Index>(n, 1)) * sizeof(T);
  if (s.bytes < need) {
    const size_t bytes = ((std::max(need, s.bytes + s.bytes / 2) + 63) / 64) * 64;
    void* fresh = std::aligned_alloc(64, bytes);
    if (!fresh) throw std::bad_alloc();
    std::free(s.ptr);
    s.ptr = fresh;
    s.bytes = bytes;
  }
  return static_cast<T*>(s.ptr);
}

}  // namespace fastnn
