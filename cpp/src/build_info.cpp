#include "fastnn/build_info.hpp"

#include <Eigen/Core>

namespace fastnn {

unsigned required_isa() {
  unsigned bits = 0;
#ifdef __SSE4_2__
  bits |= kIsaSse42;
#endif
#ifdef __AVX__
  bits |= kIsaAvx;
#endif
#ifdef __AVX2__
  bits |= kIsaAvx2;
#endif
#ifdef __FMA__
  bits |= kIsaFma;
#endif
#ifdef __AVX512F__
  bits |= kIsaAvx512f;
#endif
#ifdef __AVX512DQ__
  bits |= kIsaAvx512dq;
#endif
#ifdef __AVX512BW__
  bits |= kIsaAvx512bw;
#endif
#ifdef __AVX512VL__
  bits |= kIsaAvx512vl;
#endif
  return bits;
}

namespace {
std::vector<std::string> eigen_simd() {
  // Eigen's own SimdInstructionSetsInUse() reports an AVX2 build as "AVX": read the macros.
  std::vector<std::string> s;
#ifdef EIGEN_VECTORIZE_AVX512
  s.push_back("AVX512F");
#endif
#ifdef EIGEN_VECTORIZE_AVX512DQ
  s.push_back("AVX512DQ");
#endif
#ifdef EIGEN_VECTORIZE_AVX512BW
  s.push_back("AVX512BW");
#endif
#ifdef EIGEN_VECTORIZE_AVX512FP16
  s.push_back("AVX512FP16");
#endif
#ifdef EIGEN_VECTORIZE_AVX2
  s.push_back("AVX2");
#endif
#ifdef EIGEN_VECTORIZE_FMA
  s.push_back("FMA");
#endif
#ifdef EIGEN_VECTORIZE_AVX
  s.push_back("AVX");
#endif
#ifdef EIGEN_VECTORIZE_SSE4_2
  s.push_back("SSE4.2");
#endif
#ifdef EIGEN_VECTORIZE_SSE2
  s.push_back("SSE2");
#endif
#ifdef EIGEN_VECTORIZE_NEON
  s.push_back("NEON");
#endif
#ifdef EIGEN_VECTORIZE_SVE
  s.push_back("SVE");
#endif
#ifndef EIGEN_VECTORIZE
  s.push_back("none (scalar)");
#endif
  return s;
}

std::string openmp_version() {
#ifdef _OPENMP
  const long date = _OPENMP;
  const char* spec = date >= 202111 ? "5.2"
                     : date >= 202011 ? "5.1"
                     : date >= 201811 ? "5.0"
                     : date >= 201511 ? "4.5"
                     : date >= 201307 ? "4.0"
                     : date >= 201107 ? "3.1"
                                      : "3.0 or older";
  return std::string(spec) + " (" + std::to_string(date) + ")";
#else
  return "";
#endif
}
}  // namespace

BuildInfo build_info() {
  BuildInfo info;
  info.version = FASTNN_VERSION;
  info.compiler = FASTNN_COMPILER;
  info.flags = FASTNN_CXX_FLAGS;
  info.arch = FASTNN_ARCH;
  info.level = FASTNN_LEVEL;
  info.simd = eigen_simd();
  info.eigen_version = std::to_string(EIGEN_WORLD_VERSION) + "." +
                       std::to_string(EIGEN_MAJOR_VERSION) + "." +
                       std::to_string(EIGEN_MINOR_VERSION);
  info.openmp = openmp_version();
  return info;
}

}  // namespace fastnn
