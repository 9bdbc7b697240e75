// Dropout (inverted): y = x·keep/(1 - rate), keep ~ Bernoulli(1 - rate) per value.
//
// The mask is a pure function of (seed, index): a counter-based generator (SplitMix64 of
// the index, keyed by the seed). The backward pass regenerates it instead of storing it,
// and neither depends on how the values are split among threads.
// Cost: one pass; ~10 integer operations per value.
#pragma once

#include <cstdint>

#include "fastnn/parallel.hpp"

namespace fastnn {

/// y = x·mask/(1 - rate) for n values (y may alias x).
template <typename T>
void dropout_forward(const T* x, T* y, Index n, double rate, uint64_t seed);

/// dx = dy·mask/(1 - rate) with the mask of the same (rate, seed).
template <typename T>
void dropout_backward(const T* dy, T* dx, Index n, double rate, uint64_t seed);

}  // namespace fastnn
