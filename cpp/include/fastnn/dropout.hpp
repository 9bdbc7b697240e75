// Dropout (inverted): y = x·keep/(1 - rate), keep ~ Bernoulli(1 - rate) per value.
//
// The mask is a pure function of (seed, index): a counter-based generator (SplitMix64 of
// the index, keyed by the seed: DropoutMask). The backward pass regenerates it instead of storing it,
// and neither depends on how the values are split among threads.
// Cost: one pass; ~10 integer operations per value.
#pragma once

#include <cstdint>

#include "fastnn/parallel.hpp"

namespace fastnn {

/// The keep rule of every dropout kernel (layers' dropout, attention's probabilities): value i
/// is kept when the 24-bit draw of SplitMix64(key ^ i) is at or above rate·2²⁴, with
/// key = SplitMix64(seed); kept values are scaled by 1/(1 − rate).
struct DropoutMask {
  uint64_t key = 0, threshold = 0;
  double scale = 1.0;

  DropoutMask(double rate, uint64_t seed)
      : key(splitmix64(seed)),
        threshold(uint64_t(rate * double(1u << 24))),
        scale(rate < 1.0 ? 1.0 / (1.0 - rate) : 0.0) {}

  static uint64_t splitmix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }

  /// out[c] = in[c]·keep(first + c)·scale for c < n (in may be out). The members are copied
  /// to locals so that the loop vectorises.
  template <typename T>
  void apply(const T* in, T* out, Index n, uint64_t first) const {
    const uint64_t k = key, t = threshold;
    const T s = T(scale);
    for (Index c = 0; c < n; ++c)
      out[c] = (splitmix64(k ^ (first + uint64_t(c))) >> 40) >= t ? in[c] * s : T(0);
  }
};

/// y = x·mask/(1 - rate) for n values (y may alias x).
template <typename T>
void dropout_forward(const T* x, T* y, Index n, double rate, uint64_t seed);

/// dx = dy·mask/(1 - rate) with the mask of the same (rate, seed).
template <typename T>
void dropout_backward(const T* dy, T* dx, Index n, double rate, uint64_t seed);

}  // namespace fastnn
