// Implementation of fastnn/gemm.hpp, included once per scalar type by gemm_<type>.cpp so
// that the two instantiations compile in parallel.
//
// A blocked GEMM in the style of GotoBLAS/BLIS, written on Eigen's portable packet
// primitives (pset1 / ploadu / pmadd: AVX-512, AVX2+FMA, SSE, NEON):
//
//   for each pass over <= NC columns of C:
//     pack op(B) in panels of NR columns, per k-block  (only when transposed or when its
//                                                       rows alias in cache; else in place)
//     for each work item (a block of rows × a group of panels):        (parallel loop)
//       for each k-block (kc steps, sizes from k alone):
//         pack op(A)[rows, k-block] in panels of MR rows               (per thread)
//         for each B panel, for each A panel: a register tile of MR×NR elements of C
//
// The register tile keeps its part of C in registers, adds the kc rank-1 updates of the
// k-block in order, and writes C once. Every element of C thus sees the same operations
// in the same order whatever the partition into items, threads or tile shapes: results
// are identical bit for bit on any number of threads.
//
// Edge tiles (m % MR rows, n % NR columns) run smaller register tiles instead of padding,
// so batch sizes that are multiples of 4 and widths that are multiples of the vector
// length waste no arithmetic. Narrow float32 products (n <= 12) use dot products instead.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cstdlib>
#include <new>
#include <type_traits>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "fastnn/gemm.hpp"
#include "fastnn/scratch.hpp"

namespace fastnn {
namespace gemm_detail {

namespace ei = Eigen::internal;

inline Index ceil_div(Index a, Index b) { return (a + b - 1) / b; }

#if defined(EIGEN_VECTORIZE_AVX512) || defined(__aarch64__)
constexpr int kVectorRegisters = 32;
#else
constexpr int kVectorRegisters = 16;
#endif

// The register tile: MR rows × NV vectors of C. Its accumulators (MR·NV), the NV loaded
// B vectors and one broadcast A value fill the register file: 8×3 with 32 registers
// (AVX-512), 4×3 with 16 (AVX2). Measured on a Zen 4 core, an 8×3 float tile runs at
// 97 % of the FMA peak with its panels in L1.
//
// Products of one or two rows (predicting a sample, a GEMV) use wider panels, 1-2×8
// vectors with AVX-512: B is then read in longer runs and more FMA chains are in flight.
template <typename T>
struct Blocking {
  using Packet = typename ei::packet_traits<T>::type;
  static constexpr int W = ei::unpacket_traits<Packet>::size;  // lanes per vector
  static constexpr int MR = kVectorRegisters >= 32 ? 8 : 4;
  static constexpr int NV = 3;       // vectors per panel
  static constexpr int NV_WIDE = kVectorRegisters >= 32 ? 8 : 4;  // vectors per panel when m <= 2
  static constexpr Index KC = 256;   // k-block: a packed B panel (KC×NR) stays in L1/L2
  static constexpr Index MC = 144;   // rows per item: the packed A block (MC×KC) stays in L2
  static constexpr Index NC = 4032;  // columns per pass, at most
  static constexpr Index kMaxPackedB = Index(1) << 21;  // elements of packed B per pass (8 MB f32)
  static_assert(MR * NV + NV + 1 <= kVectorRegisters, "register tile too large");
  static_assert(2 * NV_WIDE + NV_WIDE + 1 <= kVectorRegisters, "wide tile too large");
};

// Address of op(A)[r, c] and op(B)[r, c] as stored (A possibly gathered).
template <typename T>
inline const T* at_a(const GemmArgs<T>& p, const T* a, Index r, Index c) {
  if (p.a_row_offsets) return a + p.a_row_offsets[r] + p.a_step_offsets[c];
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
    if (p.a_row_offsets) {  // gathered: each row's base, then the steps' offsets
      const T* src[MR];
      for (int i = 0; i < MR; ++i)
        src[i] = a + p.a_row_offsets[r0 + q + std::min<Index>(i, mr - 1)];
      const Index* steps = p.a_step_offsets + pc;
      for (Index t = 0; t < kc; ++t)
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) dst[t * MR + i] = i < mr ? src[i][steps[t]] : T(0);
    } else if (p.trans_a) {  // each step's values are contiguous in A
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
    // A transpose (B's rows are contiguous over steps), in W×W blocks through registers.
    using P = typename Blocking<T>::Packet;
    constexpr int W = Blocking<T>::W;
    Index t0 = 0;
    if constexpr (W > 1) {
      for (; t0 + W <= kc; t0 += W) {
        Index j = 0;
        for (; j + W <= cols; j += W) {
          ei::PacketBlock<P, W> block;
          for (int r = 0; r < W; ++r) block.packet[r] = ei::ploadu<P>(at_b(p, b, pc + t0, c0 + j + r));
          ei::ptranspose(block);
          for (int r = 0; r < W; ++r) ei::pstoreu(out + (t0 + r) * NR + j, block.packet[r]);
        }
        for (; j < cols; ++j) {
          const T* src = at_b(p, b, pc + t0, c0 + j);
          for (Index t = 0; t < W; ++t) out[(t0 + t) * NR + j] = src[t];
        }
      }
    }
    for (Index j = 0; j < cols; ++j) {  // the last kc % W steps
      const T* src = at_b(p, b, pc, c0 + j);
      for (Index t = t0; t < kc; ++t) out[t * NR + j] = src[t];
    }
    for (Index t = 0; t < kc; ++t)
      for (Index j = cols; j < NR; ++j) out[t * NR + j] = T(0);
  } else {
    for (Index t = 0; t < kc; ++t) {
      const T* src = at_b(p, b, pc + t, c0);
      T* dst = out + t * NR;
      for (Index j = 0; j < NR; ++j) dst[j] = j < cols ? src[j] : T(0);
    }
  }
}

// Where a micro-kernel reads its tile's A values: a packed panel (step t, row i at
// packed[t·MR + i]), or A in place (row i's step t at rows[i][steps[t]]: strided rows, or
// gathered ones such as a convolution's patches). In place saves the packing pass when
// each A value serves only one or two B panels (narrow n).
template <typename T>
struct APanel {
  const T* packed = nullptr;
  const T* rows[Blocking<T>::MR];
  const Index* steps = nullptr;
};

// Partial vectors: the first `lanes` lanes of a vector, zero (load) or untouched (store)
// elsewhere. AVX-512 has masked moves, so ragged edges of B and C are read and written in
// place; other instruction sets pack B's ragged panel and store through a buffer.
#ifdef EIGEN_VECTORIZE_AVX512
constexpr bool kMaskedMoves = true;
inline __m512 load_lanes(const float* p, int lanes) {
  return _mm512_maskz_loadu_ps(__mmask16((1u << lanes) - 1), p);
}
inline __m512d load_lanes(const double* p, int lanes) {
  return _mm512_maskz_loadu_pd(__mmask8((1u << lanes) - 1), p);
}
inline void store_lanes(float* p, __m512 v, int lanes) {
  _mm512_mask_storeu_ps(p, __mmask16((1u << lanes) - 1), v);
}
inline void store_lanes(double* p, __m512d v, int lanes) {
  _mm512_mask_storeu_pd(p, __mmask8((1u << lanes) - 1), v);
}
#else
constexpr bool kMaskedMoves = false;
#endif

// One tile of C: C[0:mr, 0:nr] (row stride ldc) gets Σ_t a_t ⊗ b_t over kc steps, b a
// panel with row stride ldb. RM×NVC is the register tile computing it (mr <= RM,
// NVC = ceil(nr / W)). On the first k-block C = acc (+ bias) or, when accumulating,
// C += acc (+ bias); later k-blocks add acc.
template <typename T, int RM, int NVC, bool kPackedA>
void tile_kernel(Index kc, const APanel<T>& a, const T* __restrict b, Index ldb, T* c, Index ldc,
                 Index mr, Index nr, const T* bias, bool overwrite) {
  using P = typename Blocking<T>::Packet;
  constexpr int W = Blocking<T>::W, MR = Blocking<T>::MR;
  const int last = static_cast<int>(nr - (NVC - 1) * W);  // lanes used in the last vector
  P acc[RM][NVC];
#pragma GCC unroll 8
  for (int i = 0; i < RM; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NVC; ++j) acc[i][j] = ei::pset1<P>(T(0));

  const T* __restrict ap = a.packed;
  const T* rows[RM];
  for (int i = 0; i < RM; ++i) rows[i] = a.rows[i];
  const Index* __restrict steps = a.steps;
#pragma GCC unroll 2
  for (Index t = 0; t < kc; ++t) {
    P bv[NVC];
#pragma GCC unroll 8
    for (int j = 0; j < NVC; ++j) {
#ifdef EIGEN_VECTORIZE_AVX512
      // B's ragged edge is read in place (masked), never past the row's end.
      bv[j] = j == NVC - 1 ? load_lanes(b + t * ldb + j * W, last) : ei::ploadu<P>(b + t * ldb + j * W);
#else
      bv[j] = ei::ploadu<P>(b + t * ldb + j * W);  // a ragged edge was packed with zeros
#endif
    }
#pragma GCC unroll 8
    for (int i = 0; i < RM; ++i) {
      const P av = ei::pset1<P>(kPackedA ? ap[t * MR + i] : rows[i][steps[t]]);
#pragma GCC unroll 8
      for (int j = 0; j < NVC; ++j) acc[i][j] = ei::pmadd(av, bv[j], acc[i][j]);
    }
  }

  P bias_v[NVC];
  if (mr == RM && last == W) {
    if (bias)
      for (int j = 0; j < NVC; ++j) bias_v[j] = ei::ploadu<P>(bias + j * W);
#pragma GCC unroll 8
    for (int i = 0; i < RM; ++i)
#pragma GCC unroll 8
      for (int j = 0; j < NVC; ++j) {
        T* dst = c + i * ldc + j * W;
        P v = overwrite ? acc[i][j] : ei::padd(ei::ploadu<P>(dst), acc[i][j]);
        if (bias) v = ei::padd(v, bias_v[j]);
        ei::pstoreu(dst, v);
      }
    return;
  }
#ifdef EIGEN_VECTORIZE_AVX512
  // Ragged tile: the same additions on the used lanes, with masked moves.
  if (bias)
    for (int j = 0; j < NVC; ++j) bias_v[j] = load_lanes(bias + j * W, j == NVC - 1 ? last : W);
  // (Constant trip counts: a runtime index into acc would force it out of registers.)
#pragma GCC unroll 8
  for (int i = 0; i < RM; ++i) {
    if (i >= mr) break;
#pragma GCC unroll 8
    for (int j = 0; j < NVC; ++j) {
      T* dst = c + i * ldc + j * W;
      const int lanes = j == NVC - 1 ? last : W;
      P v = overwrite ? acc[i][j] : ei::padd(load_lanes(dst, lanes), acc[i][j]);
      if (bias) v = ei::padd(v, bias_v[j]);
      store_lanes(dst, v, lanes);
    }
  }
#else
  // Ragged tile: the same additions, element by element.
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
#endif
}

template <typename T>
using TileFn = void (*)(Index, const APanel<T>&, const T*, Index, T*, Index, Index, Index,
                        const T*, bool);

// The tile_kernel for an mr×nr tile: 1, 2, 4 or MR rows; 1 to 3 vectors (1 to 8 for
// the wide panels of one- and two-row products).
template <typename T, bool kPackedA>
TileFn<T> tile_for(Index mr, Index nr) {
  constexpr int MR = Blocking<T>::MR;
  static_assert(Blocking<T>::NV == 3 && Blocking<T>::NV_WIDE <= 8, "tile table");
  const Index vectors = ceil_div(nr, Blocking<T>::W);
#define FASTNN_TILE(RM, V) &tile_kernel<T, RM, V, kPackedA>
  if (mr <= 2) {
    static constexpr TileFn<T> narrow[2][8] = {
        {FASTNN_TILE(1, 1), FASTNN_TILE(1, 2), FASTNN_TILE(1, 3), FASTNN_TILE(1, 4),
         FASTNN_TILE(1, 5), FASTNN_TILE(1, 6), FASTNN_TILE(1, 7), FASTNN_TILE(1, 8)},
        {FASTNN_TILE(2, 1), FASTNN_TILE(2, 2), FASTNN_TILE(2, 3), FASTNN_TILE(2, 4),
         FASTNN_TILE(2, 5), FASTNN_TILE(2, 6), FASTNN_TILE(2, 7), FASTNN_TILE(2, 8)}};
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

// Narrow float32 products with AVX-512 (n <= 12, A not transposed: a Dense output layer of
// ~10 classes) waste most lanes in the tiled kernel. Here each element of C is a dot product
// instead, vectorised along k: op(B)ᵀ is packed as n rows of k, A's rows are read in place,
// and a 4×4 block of dot products shares its loads. The 16 lane-wise sums are then reduced
// by a fixed shuffle tree: the same bits on any thread count.
#ifdef EIGEN_VECTORIZE_AVX512
constexpr bool kHaveDotKernel = true;

// [v0..v15] -> one vector whose lane i is the sum of v_i's lanes.
inline __m512 reduce16(const __m512 (&v)[16]) {
  auto pairs = [](__m512 a, __m512 b) {  // per 128-bit block: a0+a1, a2+a3, b0+b1, b2+b3
    return _mm512_add_ps(_mm512_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1)));
  };
  __m512 h[8], g[4];
  for (int i = 0; i < 8; ++i) h[i] = pairs(v[2 * i], v[2 * i + 1]);
  for (int i = 0; i < 4; ++i) g[i] = pairs(h[2 * i], h[2 * i + 1]);  // block b of g[i]: 4 partial sums
  const __m512 s01 = _mm512_add_ps(_mm512_shuffle_f32x4(g[0], g[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                   _mm512_shuffle_f32x4(g[0], g[1], _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 s23 = _mm512_add_ps(_mm512_shuffle_f32x4(g[2], g[3], _MM_SHUFFLE(1, 0, 1, 0)),
                                   _mm512_shuffle_f32x4(g[2], g[3], _MM_SHUFFLE(3, 2, 3, 2)));
  return _mm512_add_ps(_mm512_shuffle_f32x4(s01, s23, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(s01, s23, _MM_SHUFFLE(3, 1, 3, 1)));
}

// C[i0:i0+ri, j0:j0+NJ] (ri <= 4) from A rows and packed Bᵀ rows of length k.
template <int NJ>
void dot_block(const GemmArgs<float>& p, const float* a, const float* bt, float* c, Index i0,
               Index j0, int ri) {
  const Index k = p.k;
  __m512 acc[16];
#pragma GCC unroll 16
  for (int v = 0; v < 16; ++v) acc[v] = _mm512_setzero_ps();
  const float* arow[4];
  for (int i = 0; i < 4; ++i) arow[i] = a + (i0 + std::min(i, ri - 1)) * p.lda;
  const float* brow[NJ];
  for (int j = 0; j < NJ; ++j) brow[j] = bt + (j0 + j) * k;
  for (Index t = 0; t < k; t += 16) {
    const int lanes = static_cast<int>(std::min<Index>(16, k - t));
    __m512 av[4], bv[NJ];
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) av[i] = load_lanes(arow[i] + t, lanes);
#pragma GCC unroll 4
    for (int j = 0; j < NJ; ++j) bv[j] = load_lanes(brow[j] + t, lanes);
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i)
#pragma GCC unroll 4
      for (int j = 0; j < NJ; ++j) acc[i * 4 + j] = _mm512_fmadd_ps(av[i], bv[j], acc[i * 4 + j]);
  }
  // A copy for the reduction: taking acc's address would keep it out of registers above.
  __m512 lanes[16];
#pragma GCC unroll 16
  for (int v = 0; v < 16; ++v) lanes[v] = acc[v];
  alignas(64) float sums[16];
  _mm512_store_ps(sums, reduce16(lanes));
  for (int i = 0; i < ri; ++i) {
    float* dst = c + (i0 + i) * p.ldc + j0;
    for (int j = 0; j < NJ; ++j) {
      float v = sums[i * 4 + j];
      if (p.accumulate) v = dst[j] + v;
      if (p.bias) v = v + p.bias[j0 + j];
      dst[j] = v;
    }
  }
}

template <typename T>
bool use_dot_kernel(const GemmArgs<T>& p) {
  return std::is_same<T, float>::value && !p.trans_a && !p.a_row_offsets && p.n <= 12 &&
         p.k >= 16 && p.m >= 16;
}

inline void gemm_dot(const GemmArgs<float>& p, const float* a, const float* b, float* c,
                     int threads) {
  const Index m = p.m, n = p.n, k = p.k;
  // op(B)ᵀ as n contiguous rows of k: B itself when stored transposed and contiguous.
  const float* bt = b;
  if (!p.trans_b || p.ldb != k) {
    float* packed = thread_scratch<float>(ScratchSlot::GemmPackedB, n * k);
    for (Index j = 0; j < n; ++j)  // sequential writes; reads are n apart
      for (Index t = 0; t < k; ++t) packed[j * k + t] = *at_b(p, b, t, j);
    bt = packed;
  }
  using Fn = void (*)(const GemmArgs<float>&, const float*, const float*, float*, Index, Index, int);
  static constexpr Fn blocks[4] = {&dot_block<1>, &dot_block<2>, &dot_block<3>, &dot_block<4>};
  constexpr Index kRowsPerItem = 64;
  const Index items = ceil_div(m, kRowsPerItem);
  run_team(static_cast<int>(std::min<Index>(threads, items)), [&](const Team& team) {
    team.for_dynamic(items, [&](Index item) {
      const Index r_end = std::min(m, (item + 1) * kRowsPerItem);
      for (Index i = item * kRowsPerItem; i < r_end; i += 4)
        for (Index j = 0; j < n; j += 4)
          blocks[std::min<Index>(4, n - j) - 1](p, a, bt, c, i, j,
                                                 static_cast<int>(std::min<Index>(4, r_end - i)));
    });
  });
}
#else
constexpr bool kHaveDotKernel = false;
template <typename T>
bool use_dot_kernel(const GemmArgs<T>&) { return false; }
inline void gemm_dot(const GemmArgs<float>&, const float*, const float*, float*, int) {}
#endif

// One product, on `threads` threads (called inside no parallel region when threads > 1).
template <typename T>
void gemm_one(const GemmArgs<T>& p, const T* a, const T* b, T* c, int threads) {
  using B = Blocking<T>;
  constexpr int MR = B::MR;
  constexpr Index MC = B::MC;
  const Index m = p.m, n = p.n, k = p.k;
  if (m == 0 || n == 0) return;
  if (k == 0) return empty_product(p, c);
  if constexpr (std::is_same<T, float>::value)
    if (use_dot_kernel(p)) return gemm_dot(p, a, b, c, threads);

  // Panel width: 3 vectors (more for one or two rows), no wider than n needs.
  Index NR = std::min<Index>(B::W * (m <= 2 ? B::NV_WIDE : B::NV), ceil_div(n, B::W) * B::W);
  // k-blocks of (nearly) equal size, from k alone.
  const Index k_blocks = ceil_div(k, B::KC), kc_max = ceil_div(k, k_blocks);
  // Columns per pass: all of k is packed at once (one barrier per pass), within a bound.
  const Index nc_max = std::min(
      n, std::max(NR, std::min(B::NC, B::kMaxPackedB / (k_blocks * kc_max)) / NR * NR));
  const Index panels_max = ceil_div(nc_max, NR);
  // B is read in place (the panel streams from L2 either way; measured up to 1.15x faster
  // than packing), except when stored transposed, or when its rows are a multiple of 4 KB
  // apart: they would then share a few cache sets and evict each other (n = 1024 floats).
  const bool pack_b = p.trans_b || (p.ldb * Index(sizeof(T))) % 4096 == 0;
  // A is packed when each A panel serves more than two B panels (packing costs about as
  // much as two panels' arithmetic) and fills a register tile.
  const bool pack_a = ceil_div(n, NR) > 2 && m >= MR;
  // Four vectors of columns (n = 64 floats, a convolution's filters) read A in place as one
  // 6-row × 4-vector tile instead of 8×3 plus 8×1: fewer loads and C stores per FMA (7 %
  // faster on a 64×32×32×3 → 64 convolution); 24 accumulators + 4 + 1 fit 32 registers.
  constexpr int kWideRows = 6;
  const bool wide4 = kVectorRegisters >= 32 && !pack_a && m > 2 && n > 3 * B::W && n <= 4 * B::W;
  if (wide4) NR = 4 * B::W;
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

  T* b_packed = pack_b ? thread_scratch<T>(ScratchSlot::GemmPackedB, k_blocks * panels_max * kc_max * NR) : nullptr;
  const Index a_size = pack_a ? mc * kc_max : 0;
  const Index edge_size = kc_max * NR;  // one B panel with a ragged edge, packed

  // Per-thread scratch, allocated before the team starts: nothing may throw inside it.
  T* scratch = thread_scratch<T>(ScratchSlot::GemmThread, threads * (a_size + edge_size));
  // A read in place: step t of a row at rows[i][steps[t]] (strided A: a fixed table).
  const bool gathered = p.a_row_offsets != nullptr;
  Index* strided_steps = nullptr;
  if (!pack_a && !gathered) {
    strided_steps = thread_scratch<Index>(ScratchSlot::GemmSteps, kc_max);
    const Index step = p.trans_a ? p.lda : 1;
    for (Index t = 0; t < kc_max; ++t) strided_steps[t] = t * step;
  }
  run_team(threads, [&](const Team& team) {
    T* my_a = scratch + team.rank() * (a_size + edge_size);
    T* my_b_edge = my_a + a_size;
    for (Index jc = 0; jc < n; jc += nc_max) {
      const Index nc = std::min(nc_max, n - jc), panels = ceil_div(nc, NR);
      // Panel q of k-block kb is at packed_panel(kb, q).
      auto packed_panel = [&](Index kb, Index q) { return b_packed + (kb * panels + q) * kc_max * NR; };
      if (pack_b)
        team.for_static(k_blocks * panels, [&](Index task) {
          const Index kb = task / panels, q = task % panels, pc = kb * kc_max;
          pack_b_panel(p, b, pc, std::min(kc_max, k - pc), jc + q * NR, std::min(NR, nc - q * NR),
                       NR, packed_panel(kb, q));
        });
      // Each item owns its rows of C across all k-blocks: no barrier between k-blocks.
      team.for_dynamic(items, [&](Index item) {
        const Index r0 = (item / groups) * mc, rows = std::min(mc, m - r0);
        const Index g = item % groups;
        const Index q_begin = g * panels / groups, q_end = (g + 1) * panels / groups;
        if (q_begin == q_end) return;
        for (Index kb = 0; kb < k_blocks; ++kb) {
          const Index pc = kb * kc_max, kc = std::min(kc_max, k - pc);
          const bool first = kb == 0;
          if (pack_a) pack_a_block(p, a, r0, rows, pc, kc, my_a);
          for (Index q = q_begin; q < q_end; ++q) {
            const Index c0 = jc + q * NR, nr = std::min(NR, n - c0);
            const T* bp = pack_b ? packed_panel(kb, q) : nullptr;
            Index ldb = NR;
            if (!pack_b && (kMaskedMoves || nr % B::W == 0)) {  // reads exactly nr columns
              bp = at_b(p, b, pc, c0);
              ldb = p.ldb;
            } else if (!pack_b) {
              pack_b_panel(p, b, pc, kc, c0, nr, NR, my_b_edge);
              bp = my_b_edge;
            }
            const T* bias = first && p.bias ? p.bias + c0 : nullptr;
            const bool overwrite = first && !p.accumulate;
            const Index tile_rows = wide4 ? kWideRows : MR;
            for (Index i = 0; i < rows; i += tile_rows) {
              const Index mr = std::min<Index>(tile_rows, rows - i);
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
                for (int r = 0; r < MR; ++r) {
                  const Index row = r0 + i + std::min<Index>(r, mr - 1);
                  ap.rows[r] = gathered ? a + p.a_row_offsets[row] : at_a(p, a, row, pc);
                }
                ap.steps = gathered ? p.a_step_offsets + pc : strided_steps;
                if (wide4)
                  tile_kernel<T, kWideRows, 4, false>(kc, ap, bp, ldb, ct, p.ldc, mr, nr, bias, overwrite);
                else
                  tile_for<T, false>(mr, nr)(kc, ap, bp, ldb, ct, p.ldc, mr, nr, bias, overwrite);
              }
            }
          }
        }
      });
    }
  });
}

}  // namespace gemm_detail

template <typename T>
void gemm_batched(const GemmArgs<T>& p, Index batch, const Index* a_offsets,
                  const Index* b_offsets, Index c_stride) {
  using gemm_detail::gemm_one;
  if (batch <= 0 || p.m == 0 || p.n == 0) return;
  const double flops = 2.0 * double(batch) * double(p.m) * double(p.n) * double(p.k);
  int threads = threads_for(flops);
  if (p.max_threads > 0) threads = std::min(threads, p.max_threads);
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
