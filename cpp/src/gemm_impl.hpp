// Implementation of fastnn/gemm.hpp, included once per scalar type by gemm_<type>.cpp so
// that the two instantiations compile in parallel.
//
// A blocked GEMM in the style of GotoBLAS/BLIS, written on Eigen's portable packet
// primitives (pset1 / ploadu / pmadd: AVX-512, AVX2+FMA, SSE, NEON):
//
//   for pc in k, step kc:                       k-blocks, sizes from k alone
//     pack op(B)[pc:pc+kc, :] in panels of NR columns        (shared by the threads)
//     for each work item (a block of MC rows × a range of B panels):   (parallel loop)
//       pack op(A)[rows, pc:pc+kc] in panels of MR rows      (per thread)
//       for each B panel, for each A panel: micro-kernel on one MR×NR tile of C
//
// The micro-kernel keeps its tile of C in registers, adds the kc rank-1 updates of the
// k-block in order, and writes the tile once. Every element of C thus sees the same
// operations in the same order whatever the partition into items, threads or tile
// shapes: results are identical bit for bit on any number of threads.
//
// Edge tiles (m % MR rows, n % NR columns) run smaller register tiles instead of padding,
// so batch sizes that are multiples of 4 and widths that are multiples of the vector
// length waste no arithmetic.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cstdlib>
#include <new>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "fastnn/gemm.hpp"

namespace fastnn {
namespace gemm_detail {

namespace ei = Eigen::internal;

inline Index ceil_div(Index a, Index b) { return (a + b - 1) / b; }

#if defined(__AVX512F__) || defined(__aarch64__)
constexpr int kVectorRegisters = 32;
#else
constexpr int kVectorRegisters = 16;
#endif

// The register tile: MR rows × NV vectors of C. Its accumulators (MR·NV), the NV loaded
// B vectors and one broadcast A value fill the register file: 8×3 with 32 registers
// (AVX-512), 4×3 with 16 (AVX2). Measured on a Zen 4 core, an 8×3 float tile runs at
// 97 % of the FMA peak with its panels in L1.
//
// Products of one or two rows (predicting a sample, a GEMV) use panels twice as wide,
// 1-2×6 vectors: B is then read in longer runs and more FMA chains are in flight.
template <typename T>
struct Blocking {
  using Packet = typename ei::packet_traits<T>::type;
  static constexpr int W = ei::unpacket_traits<Packet>::size;  // lanes per vector
  static constexpr int MR = kVectorRegisters >= 32 ? 8 : 4;
  static constexpr int NV = 3;       // vectors per panel
  static constexpr int NV_WIDE = kVectorRegisters >= 32 ? 6 : 4;  // vectors per panel when m <= 2
  static constexpr Index KC = 256;   // k-block: a packed B panel (KC×NR) stays in L1/L2
  static constexpr Index MC = 144;   // rows per item: the packed A block (MC×KC) stays in L2
  static constexpr Index NC = 4032;  // columns per pass: bounds the packed B block (4 MB)
  static_assert(MR * NV + NV + 1 <= kVectorRegisters, "register tile too large");
  static_assert(2 * NV_WIDE + NV_WIDE + 1 <= kVectorRegisters, "wide tile too large");
};

// Scratch memory of the calling thread, kept between calls: allocating (and page-faulting)
// a few hundred KB per product cost ~10 % at n = 256.
template <typename T>
T* thread_scratch(int slot, Index n) {
  struct Slot {
    T* ptr = nullptr;
    Index size = 0;
    ~Slot() { std::free(ptr); }
  };
  thread_local Slot slots[2];
  Slot& s = slots[slot];
  if (s.size < n) {
    const Index grown = std::max(n, s.size + s.size / 2);
    const size_t bytes = ((size_t(grown) * sizeof(T) + 63) / 64) * 64;
    T* fresh = static_cast<T*>(std::aligned_alloc(64, bytes));
    if (!fresh) throw std::bad_alloc();
    std::free(s.ptr);
    s.ptr = fresh;
    s.size = grown;
  }
  return s.ptr;
}

// Address of op(A)[r, c] and op(B)[r, c] as stored.
template <typename T>
inline const T* at_a(const GemmArgs<T>& p, const T* a, Index r, Index c) {
  return p.trans_a ? a + c * p.lda + r : a + r * p.lda + c;
}
template <typename T>
inline const T* at_b(const GemmArgs<T>& p, const T* b, Index r, Index c) {
  return p.trans_b ? b + c * p.ldb + r : b + r * p.ldb + c;
}

// Packs op(A)[r0:r0+rows, pc:pc+kc] as panels of MR rows: panel q holds, for each step t,
// the MR values op(A)[r0+q·MR+i, pc+t] (zero past the last row).
template <typename T>
void pack_a_block(const GemmArgs<T>& p, const T* a, Index r0, Index rows, Index pc, Index kc,
                  T* out) {
  constexpr int MR = Blocking<T>::MR;
  for (Index q = 0; q < rows; q += MR) {
    const Index mr = std::min<Index>(MR, rows - q);
    T* dst = out + q * kc;
    if (p.trans_a) {  // each step's values are contiguous in A
      for (Index t = 0; t < kc; ++t) {
        const T* src = at_a(p, a, r0 + q, pc + t);
        for (Index i = 0; i < mr; ++i) dst[t * MR + i] = src[i];
        for (Index i = mr; i < MR; ++i) dst[t * MR + i] = T(0);
      }
    } else if (mr == MR) {  // MR rows read side by side: the writes stay sequential
      const T* src[MR];
      for (int i = 0; i < MR; ++i) src[i] = at_a(p, a, r0 + q + i, pc);
      for (Index t = 0; t < kc; ++t)
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) dst[t * MR + i] = src[i][t];
    } else {
      for (Index i = 0; i < MR; ++i) {
        const T* src = at_a(p, a, r0 + q + std::min<Index>(i, mr - 1), pc);
        for (Index t = 0; t < kc; ++t) dst[t * MR + i] = i < mr ? src[t] : T(0);
      }
    }
  }
}

// Packs op(B)[pc:pc+kc, c0:c0+cols] (cols <= NR) as one panel of NR values per step
// (zero past the last column).
template <typename T>
void pack_b_panel(const GemmArgs<T>& p, const T* b, Index pc, Index kc, Index c0, Index cols,
                  Index NR, T* out) {
  if (p.trans_b) {
    for (Index j = 0; j < cols; ++j) {
      const T* src = at_b(p, b, pc, c0 + j);  // a row of B: contiguous over steps
      for (Index t = 0; t < kc; ++t) out[t * NR + j] = src[t];
    }
    for (Index t = 0; t < kc; ++t)
      for (Index j = cols; j < NR; ++j) out[t * NR + j] = T(0);
  } else {
    for (Index t = 0; t < kc; ++t) {
      const T* src = at_b(p, b, pc + t, c0);
      T* dst = out + t * NR;
      for (Index j = 0; j < cols; ++j) dst[j] = src[j];
      for (Index j = cols; j < NR; ++j) dst[j] = T(0);
    }
  }
}

// Where a micro-kernel reads its tile's A values: a packed panel (step t, row i at
// packed[t·MR + i]), or A in place (row i at rows[i], steps `step` apart). In place saves
// the packing pass when each A value serves only one or two B panels (narrow n).
template <typename T>
struct APanel {
  const T* packed = nullptr;
  const T* rows[Blocking<T>::MR];
  Index step = 1;
};

// One tile of C: C[0:mr, 0:nr] (row stride ldc) gets Σ_t a_t ⊗ b_t over kc steps, b a
// panel with row stride ldb. RM×NVC is the register tile computing it (mr <= RM,
// nr <= NVC·W). On the first k-block C = acc (+ bias) or, when accumulating, C += acc
// (+ bias); later k-blocks add acc.
template <typename T, int RM, int NVC, bool kPackedA>
void tile_kernel(Index kc, const APanel<T>& a, const T* __restrict b, Index ldb, T* c, Index ldc,
                 Index mr, Index nr, const T* bias, bool overwrite) {
  using P = typename Blocking<T>::Packet;
  constexpr int W = Blocking<T>::W, MR = Blocking<T>::MR;
  P acc[RM][NVC];
#pragma GCC unroll 8
  for (int i = 0; i < RM; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NVC; ++j) acc[i][j] = ei::pset1<P>(T(0));

  const T* __restrict ap = a.packed;
  const T* rows[RM];
  for (int i = 0; i < RM; ++i) rows[i] = a.rows[i];
  const Index step = a.step;
#pragma GCC unroll 2
  for (Index t = 0; t < kc; ++t) {
    P bv[NVC];
#pragma GCC unroll 8
    for (int j = 0; j < NVC; ++j) bv[j] = ei::ploadu<P>(b + t * ldb + j * W);
#pragma GCC unroll 8
    for (int i = 0; i < RM; ++i) {
      const P av = ei::pset1<P>(kPackedA ? ap[t * MR + i] : rows[i][t * step]);
#pragma GCC unroll 8
      for (int j = 0; j < NVC; ++j) acc[i][j] = ei::pmadd(av, bv[j], acc[i][j]);
    }
  }

  if (mr == RM && nr == NVC * W) {
    P bv[NVC];
    if (bias)
      for (int j = 0; j < NVC; ++j) bv[j] = ei::ploadu<P>(bias + j * W);
#pragma GCC unroll 8
    for (int i = 0; i < RM; ++i)
#pragma GCC unroll 8
      for (int j = 0; j < NVC; ++j) {
        T* dst = c + i * ldc + j * W;
        P v = overwrite ? acc[i][j] : ei::padd(ei::ploadu<P>(dst), acc[i][j]);
        if (bias) v = ei::padd(v, bv[j]);
        ei::pstoreu(dst, v);
      }
    return;
  }
  // Partial tile: the same additions, element by element.
  alignas(64) T tmp[RM * NVC * W];
  for (int i = 0; i < RM; ++i)
    for (int j = 0; j < NVC; ++j) ei::pstore(tmp + (i * NVC + j) * W, acc[i][j]);
  for (Index i = 0; i < mr; ++i) {
    T* dst = c + i * ldc;
    const T* src = tmp + i * NVC * W;
    if (overwrite && !bias) {
      for (Index j = 0; j < nr; ++j) dst[j] = src[j];
    } else if (overwrite) {
      for (Index j = 0; j < nr; ++j) dst[j] = src[j] + bias[j];
    } else if (!bias) {
      for (Index j = 0; j < nr; ++j) dst[j] = dst[j] + src[j];
    } else {
      for (Index j = 0; j < nr; ++j) dst[j] = (dst[j] + src[j]) + bias[j];
    }
  }
}

template <typename T>
using TileFn = void (*)(Index, const APanel<T>&, const T*, Index, T*, Index, Index, Index,
                        const T*, bool);

// The tile_kernel for an mr×nr tile: 1, 2, 4 or MR rows; 1 to 3 vectors (1 to 6 for
// the wide panels of one- and two-row products).
template <typename T, bool kPackedA>
TileFn<T> tile_for(Index mr, Index nr) {
  constexpr int MR = Blocking<T>::MR;
  static_assert(Blocking<T>::NV == 3 && Blocking<T>::NV_WIDE <= 6, "tile table");
  const Index vectors = ceil_div(nr, Blocking<T>::W);
#define FASTNN_TILE(RM, V) &tile_kernel<T, RM, V, kPackedA>
  if (mr <= 2) {
    static constexpr TileFn<T> narrow[2][6] = {
        {FASTNN_TILE(1, 1), FASTNN_TILE(1, 2), FASTNN_TILE(1, 3), FASTNN_TILE(1, 4),
         FASTNN_TILE(1, 5), FASTNN_TILE(1, 6)},
        {FASTNN_TILE(2, 1), FASTNN_TILE(2, 2), FASTNN_TILE(2, 3), FASTNN_TILE(2, 4),
         FASTNN_TILE(2, 5), FASTNN_TILE(2, 6)}};
    return narrow[mr - 1][vectors - 1];
  }
  static constexpr TileFn<T> tall[2][3] = {
      {FASTNN_TILE(4, 1), FASTNN_TILE(4, 2), FASTNN_TILE(4, 3)},
      {FASTNN_TILE(MR, 1), FASTNN_TILE(MR, 2), FASTNN_TILE(MR, 3)}};
#undef FASTNN_TILE
  return tall[mr <= 4 ? 0 : 1][vectors - 1];
}

// C = bias (or 0), or C += bias, when k == 0.
template <typename T>
void empty_product(const GemmArgs<T>& p, T* c) {
  for (Index i = 0; i < p.m; ++i)
    for (Index j = 0; j < p.n; ++j) {
      const T b = p.bias ? p.bias[j] : T(0);
      c[i * p.ldc + j] = p.accumulate ? c[i * p.ldc + j] + b : b;
    }
}

// One product, on `threads` threads (called inside no parallel region when threads > 1).
template <typename T>
void gemm_one(const GemmArgs<T>& p, const T* a, const T* b, T* c, int threads) {
  using B = Blocking<T>;
  constexpr int MR = B::MR;
  constexpr Index MC = B::MC;
  const Index m = p.m, n = p.n, k = p.k;
  if (m == 0 || n == 0) return;
  if (k == 0) return empty_product(p, c);

  const Index NR = B::W * (m <= 2 ? B::NV_WIDE : B::NV);  // panel width
  // k-blocks of (nearly) equal size, from k alone.
  const Index kc_max = ceil_div(k, ceil_div(k, B::KC));
  const Index nc_max = std::min(n, (B::NC / NR) * NR);
  const Index panels_max = ceil_div(nc_max, NR);
  // B is packed when several row panels reuse it, or when it is stored transposed;
  // otherwise its panels are read in place.
  const bool pack_b = p.trans_b || m > 4 * MR;
  // A is packed when each A panel serves more than two B panels (packing costs about as
  // much as two panels' arithmetic) and fills a register tile.
  const bool pack_a = ceil_div(n, NR) > 2 && m >= MR;
  // Items: row blocks × groups of B panels. Threads share rows first (each packs only its
  // own rows of A) in a multiple of the thread count; panel groups split the rest.
  Index row_blocks = ceil_div(m, MC), groups = 1;
  if (threads > 1) {
    const Index most = std::max<Index>(1, m / (2 * MR));  // at least two row tiles each
    row_blocks = std::min(ceil_div(row_blocks, threads) * threads, most);
  }
  const Index mc = ceil_div(ceil_div(m, row_blocks), MR) * MR;
  row_blocks = ceil_div(m, mc);
  if (threads > 1 && row_blocks % threads != 0)
    groups = std::clamp<Index>(ceil_div(2 * threads, row_blocks), 1, panels_max);
  const Index items = row_blocks * groups;
  threads = static_cast<int>(std::min<Index>(threads, items));

  T* b_packed = pack_b ? thread_scratch<T>(0, kc_max * panels_max * NR) : nullptr;
  const Index a_size = pack_a ? mc * kc_max : 0;
  const Index edge_size = kc_max * NR;  // one B panel with a ragged edge, packed

  // Runs in every thread.
  auto work = [&]() {
    FlushDenormals ftz;
    T* my_a = thread_scratch<T>(1, a_size + edge_size);
    T* my_b_edge = my_a + a_size;
    for (Index jc = 0; jc < n; jc += nc_max) {
      const Index nc = std::min(nc_max, n - jc), panels = ceil_div(nc, NR);
      for (Index pc = 0; pc < k; pc += kc_max) {
        const Index kc = std::min(kc_max, k - pc);
        const bool first = pc == 0;
        if (pack_b) {
#pragma omp for schedule(static)
          for (Index q = 0; q < panels; ++q)
            pack_b_panel(p, b, pc, kc, jc + q * NR, std::min(NR, nc - q * NR), NR,
                         b_packed + q * kc * NR);
        }
#pragma omp for schedule(dynamic, 1)
        for (Index item = 0; item < items; ++item) {
          const Index r0 = (item / groups) * mc, rows = std::min(mc, m - r0);
          const Index g = item % groups;
          const Index q_begin = g * panels / groups, q_end = (g + 1) * panels / groups;
          if (pack_a && q_begin < q_end) pack_a_block(p, a, r0, rows, pc, kc, my_a);
          for (Index q = q_begin; q < q_end; ++q) {
            const Index c0 = jc + q * NR, nr = std::min(NR, n - c0);
            const T* bp = b_packed + q * kc * NR;
            Index ldb = NR;
            if (!pack_b && nr % B::W == 0) {  // the kernel reads exactly nr columns
              bp = at_b(p, b, pc, c0);
              ldb = p.ldb;
            } else if (!pack_b) {
              pack_b_panel(p, b, pc, kc, c0, nr, NR, my_b_edge);
              bp = my_b_edge;
            }
            const T* bias = first && p.bias ? p.bias + c0 : nullptr;
            const bool overwrite = first && !p.accumulate;
            for (Index i = 0; i < rows; i += MR) {
              const Index mr = std::min<Index>(MR, rows - i);
              T* ct = c + (r0 + i) * p.ldc + c0;
              // Fetch the C tile while the kernel computes: it is only touched at the end.
              for (Index r = 0; r < mr; ++r) {
                __builtin_prefetch(ct + r * p.ldc, 1);
                __builtin_prefetch(ct + r * p.ldc + nr - 1, 1);
              }
              APanel<T> ap;
              if (pack_a) {
                ap.packed = my_a + i * kc;
                tile_for<T, true>(mr, nr)(kc, ap, bp, ldb, ct, p.ldc, mr, nr, bias, overwrite);
              } else {
                // Rows past the end repeat the last row; their results are dropped.
                for (int r = 0; r < MR; ++r)
                  ap.rows[r] = at_a(p, a, r0 + i + std::min<Index>(r, mr - 1), pc);
                ap.step = p.trans_a ? p.lda : 1;
                tile_for<T, false>(mr, nr)(kc, ap, bp, ldb, ct, p.ldc, mr, nr, bias, overwrite);
              }
            }
          }
        }
      }
    }
  };
  if (threads <= 1) {
    work();  // its omp for loops run as plain loops outside a parallel region
    return;
  }
  // Scratch is allocated before the region so that no allocation can throw inside it.
  thread_scratch<T>(1, a_size + edge_size);
#pragma omp parallel num_threads(threads)
  work();
}

}  // namespace gemm_detail

template <typename T>
void gemm_batched(const GemmArgs<T>& p, Index batch, const Index* a_offsets,
                  const Index* b_offsets, Index c_stride) {
  using gemm_detail::gemm_one;
  if (batch <= 0 || p.m == 0 || p.n == 0) return;
  const double flops = 2.0 * double(batch) * double(p.m) * double(p.n) * double(p.k);
  const int threads = flops < kParallelMinFlops ? 1 : num_threads();
  if (batch > 1 && batch >= threads) {  // many products: one thread each
    parallel_for(batch, threads, [&](Index i) {
      gemm_one(p, p.a + a_offsets[i], p.b + b_offsets[i], p.c + i * c_stride, 1);
    });
    return;
  }
  for (Index i = 0; i < batch; ++i)
    gemm_one(p, p.a + a_offsets[i], p.b + b_offsets[i], p.c + i * c_stride, threads);
}

template <typename T>
void gemm(const GemmArgs<T>& p) {
  const Index zero = 0;
  gemm_batched(p, 1, &zero, &zero, 0);
}

}  // namespace fastnn
