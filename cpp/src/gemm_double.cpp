// GEMM kernels for double (see gemm_impl.hpp).
#include "gemm_impl.hpp"

namespace fastnn {
template void gemm<double>(const GemmArgs<double>&);
template void gemm_batched<double>(const GemmArgs<double>&, Index, const Index*, const Index*, Index);
}  // namespace fastnn
