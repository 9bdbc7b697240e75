// Dropout kernels (see fastnn/dropout.hpp).
#include "fastnn/dropout.hpp"

namespace fastnn {
namespace {

template <typename T>
void apply_mask(const T* in, T* out, Index n, double rate, uint64_t seed) {
  const DropoutMask mask(rate, seed);
  parallel_chunks(n, 6.0, [&](Index b, Index c) { mask.apply(in + b, out + b, c, uint64_t(b)); });
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
