// Dropout kernels (see fastnn/dropout.hpp).
#include "fastnn/dropout.hpp"

namespace fastnn {
namespace {

inline uint64_t splitmix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Keeps value i when its 24-bit uniform draw is at or above rate·2²⁴. (A function of its
// own with the scalars by value, so that the loop vectorises.)
template <typename T>
void mask_chunk(const T* __restrict in, T* __restrict out, Index begin, Index count,
                uint64_t threshold, T scale, uint64_t key) {
  for (Index i = 0; i < count; ++i) {
    const uint64_t draw = splitmix64(key ^ uint64_t(begin + i)) >> 40;
    out[i] = draw >= threshold ? in[i] * scale : T(0);
  }
}

template <typename T>
void apply_mask(const T* in, T* out, Index n, double rate, uint64_t seed) {
  const uint64_t threshold = uint64_t(rate * double(1u << 24));
  const T scale = rate < 1.0 ? T(1.0 / (1.0 - rate)) : T(0);
  const uint64_t key = splitmix64(seed);
  parallel_chunks(n, 6.0, [&](Index b, Index c) {
    mask_chunk(in + b, out + b, b, c, threshold, scale, key);
  });
}

}  // namespace

template <typename T>
void dropout_forward(const T* x, T* y, Index n, double rate, uint64_t seed) {
  apply_mask(x, y, n, rate, seed);
}

template <typename T>
void dropout_backward(const T* dy, T* dx, Index n, double rate, uint64_t seed) {
  apply_mask(dy, dx, n, rate, seed);
}

template void dropout_forward<float>(const float*, float*, Index, double, uint64_t);
template void dropout_forward<double>(const double*, double*, Index, double, uint64_t);
template void dropout_backward<float>(const float*, float*, Index, double, uint64_t);
template void dropout_backward<double>(const double*, double*, Index, double, uint64_t);

}  // namespace fastnn
