// GEMM kernels for float (see gemm_impl.hpp).
#include "gemm_impl.hpp"

namespace fastnn {
template void gemm<float>(const GemmArgs<float>&);
template void gemm_batched<float>(const GemmArgs<float>&, Index, const Index*, const Index*, Index);
}  // namespace fastnn
