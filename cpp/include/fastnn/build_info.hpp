// What the kernels were compiled with: reported by fastnn.show_config() and checked
// against the running CPU when the module is imported.
#pragma once

#include <string>
#include <vector>

namespace fastnn {

// Instruction-set extensions a build may require of the CPU.
enum IsaFeature : unsigned {
  kIsaSse42 = 1u << 0,
  kIsaAvx = 1u << 1,
  kIsaAvx2 = 1u << 2,
  kIsaFma = 1u << 3,
  kIsaAvx512f = 1u << 4,
  kIsaAvx512dq = 1u << 5,
  kIsaAvx512bw = 1u << 6,
  kIsaAvx512vl = 1u << 7,
};

struct BuildInfo {
  std::string version;        // fastnn version
  std::string compiler;       // e.g. "GNU 12.2.0"
  std::string flags;          // optimisation and -march flags of the kernels
  std::string arch;           // FASTNN_ARCH as configured ("native", "portable", ...)
  std::string level;          // this module's level: native, v2, v3, v4, neon, generic, custom
  std::vector<std::string> simd;  // Eigen's vectorisation actually compiled in
  std::string eigen_version;
  std::string openmp;         // "4.5 (201511)" or "" without OpenMP
};

BuildInfo build_info();

/// IsaFeature bits the kernels were compiled to use. Must stay trivial: it runs before
/// the import-time CPU check, in code compiled for the build's instruction set.
unsigned required_isa();

}  // namespace fastnn
