// int8 products: packing, per-row quantization, and the three paths' tiles (see qgemm.hpp).
//
// The work is cut into tiles of rows × 16-column blocks; a tile's K loop runs whole in
// registers (vnni: 6 rows × 64 columns in 24 zmm accumulators; avx2: 4 rows × 16 columns).
// Tasks are blocks of 48 rows × 256 columns: the column loop is outside the row loop, so a
// panel of B (16-64 columns × k) stays in cache while the rows pass. Integer sums are exact,
// so any partition gives the same bits.
#include "fastnn/qgemm.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define FASTNN_INT8_X86 1
#define FASTNN_TARGET_VNNI __attribute__((target("avx512f,avx512bw,avx512vnni")))
#define FASTNN_TARGET_AVX2 __attribute__((target("avx2")))
#endif

namespace fastnn {
namespace {

constexpr Index kRowBlock = 48;     // rows per task (a multiple of both paths' tile rows)
constexpr Index kColBlocks = 16;    // 16-column blocks per task (256 columns)
constexpr int kTileStride = 64;     // int32 values per row of a tile buffer

Int8Path detect() {
#ifdef FASTNN_INT8_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vnni"))
    return Int8Path::Vnni;
  if (__builtin_cpu_supports("avx2")) return Int8Path::Avx2;
#endif
  return Int8Path::Scalar;
}

std::atomic<int> g_forced{-1};

// ---- tiles: rows × nb 16-column blocks of C, written to tile[r·64 + c·16 + jj] ----------------
// a: the rows (stride lda = k4 bytes); b: the first column block (blocks bstride bytes apart).
using TileFn = void (*)(const uint8_t* a, Index lda, const int8_t* b, Index bstride, Index kq, int32_t* tile);

template <int MR, int NB>
void tile_scalar(const uint8_t* au, Index lda, const int8_t* b, Index bstride, Index kq, int32_t* tile) {
  const auto* a = reinterpret_cast<const int8_t*>(au);
  for (int r = 0; r < MR; ++r)
    for (int c = 0; c < NB; ++c)
      for (int jj = 0; jj < 16; ++jj) {
        int32_t s = 0;
        const int8_t* bc = b + c * bstride + jj * 4;
        const int8_t* ar = a + r * lda;
        for (Index q = 0; q < kq; ++q)
          for (int t = 0; t < 4; ++t) s += int32_t(ar[4 * q + t]) * int32_t(bc[q * 64 + t]);
        tile[r * kTileStride + c * 16 + jj] = s;
      }
}

#ifdef FASTNN_INT8_X86
// a holds A + 128 as unsigned bytes (vpdpbusd multiplies unsigned by signed bytes).
template <int MR, int NB>
FASTNN_TARGET_VNNI void tile_vnni(const uint8_t* a, Index lda, const int8_t* b, Index bstride, Index kq,
                                  int32_t* tile) {
  // (unrolled loops over constant counts: GCC then keeps the accumulators in registers)
  __m512i acc[MR][NB];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < NB; ++c) acc[r][c] = _mm512_setzero_si512();
  for (Index q = 0; q < kq; ++q) {
    __m512i w[NB];
#pragma GCC unroll 4
    for (int c = 0; c < NB; ++c) w[c] = _mm512_loadu_si512(b + c * bstride + q * 64);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      int32_t quad;
      std::memcpy(&quad, a + r * lda + 4 * q, 4);
      const __m512i va = _mm512_set1_epi32(quad);
#pragma GCC unroll 4
      for (int c = 0; c < NB; ++c) acc[r][c] = _mm512_dpbusd_epi32(acc[r][c], va, w[c]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < NB; ++c) _mm512_storeu_si512(tile + r * kTileStride + c * 16, acc[r][c]);
}

// |a|·(b·sign a) = a·b, in pairs of at most 2·127·127 < 2^15: vpmaddubsw never saturates.
template <int MR, int NB>
FASTNN_TARGET_AVX2 void tile_avx2(const uint8_t* a, Index lda, const int8_t* b, Index bstride, Index kq,
                                  int32_t* tile) {
  static_assert(NB == 1, "avx2 tiles are one 16-column block wide");
  (void)bstride;
  __m256i acc[MR][2];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
  const __m256i ones = _mm256_set1_epi16(1);
  for (Index q = 0; q < kq; ++q) {
    const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + q * 64));
    const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + q * 64 + 32));
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      int32_t quad;
      std::memcpy(&quad, a + r * lda + 4 * q, 4);
      const __m256i va = _mm256_set1_epi32(quad);
      const __m256i magnitude = _mm256_abs_epi8(va);
      const __m256i p0 = _mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(w0, va));
      const __m256i p1 = _mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(w1, va));
      acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(p0, ones));
      acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(p1, ones));
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(tile + r * kTileStride), acc[r][0]);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(tile + r * kTileStride + 8), acc[r][1]);
  }
}
#endif

struct PathTiles {
  int rows;    // tile rows (MR)
  int blocks;  // 16-column blocks per tile (NB)
  TileFn fn[6][4];  // [rows - 1][blocks - 1]
  bool unsigned_a;  // A is encoded as A + 128
};

PathTiles scalar_tiles() {
  PathTiles p{4, 1, {}, false};
  p.fn[0][0] = &tile_scalar<1, 1>;
  p.fn[1][0] = &tile_scalar<2, 1>;
  p.fn[2][0] = &tile_scalar<3, 1>;
  p.fn[3][0] = &tile_scalar<4, 1>;
  return p;
}

#ifdef FASTNN_INT8_X86
template <int MR>
void fill_vnni_row(PathTiles& p) {
  p.fn[MR - 1][0] = &tile_vnni<MR, 1>;
  p.fn[MR - 1][1] = &tile_vnni<MR, 2>;
  p.fn[MR - 1][2] = &tile_vnni<MR, 3>;
  p.fn[MR - 1][3] = &tile_vnni<MR, 4>;
}

PathTiles vnni_tiles() {
  PathTiles p{6, 4, {}, true};
  fill_vnni_row<1>(p);
  fill_vnni_row<2>(p);
  fill_vnni_row<3>(p);
  fill_vnni_row<4>(p);
  fill_vnni_row<5>(p);
  fill_vnni_row<6>(p);
  return p;
}

PathTiles avx2_tiles() {
  PathTiles p{4, 1, {}, false};
  p.fn[0][0] = &tile_avx2<1, 1>;
  p.fn[1][0] = &tile_avx2<2, 1>;
  p.fn[2][0] = &tile_avx2<3, 1>;
  p.fn[3][0] = &tile_avx2<4, 1>;
  return p;
}
#endif

const PathTiles& tiles_for(Int8Path path) {
  static const PathTiles scalar = scalar_tiles();
#ifdef FASTNN_INT8_X86
  static const PathTiles vnni = vnni_tiles();
  static const PathTiles avx2 = avx2_tiles();
  if (path == Int8Path::Vnni) return vnni;
  if (path == Int8Path::Avx2) return avx2;
#endif
  return scalar;
}

/// The rows of A in the layout the tiles read: stride k4, zero-padded, +128 for vnni.
struct Panel {
  std::vector<uint8_t> bytes;
  Index stride = 0;
};

/// Runs every tile of C = panel · B on `threads`, handing each to
/// out(row, rows, col, cols, tile) (tile: rows × kTileStride int32, cols ≤ 64 valid columns).
template <typename Out>
void for_each_tile(const PathTiles& tiles, const Panel& panel, Index m, const Int8Packed& b, Out&& out) {
  const Index k4 = int8_k4(b.k), kq = k4 / 4, blocks = int8_n16(b.n) / 16;
  const Index bstride = kq * 64;
  const Index row_tasks = (m + kRowBlock - 1) / kRowBlock;
  const Index col_tasks = (blocks + kColBlocks - 1) / kColBlocks;
  const double ops = 2.0 * double(m) * double(b.n) * double(k4);
  parallel_for(row_tasks * col_tasks, threads_for(ops / 8), [&](Index task) {
    const Index r0 = (task / col_tasks) * kRowBlock, r1 = std::min(m, r0 + kRowBlock);
    const Index jb0 = (task % col_tasks) * kColBlocks, jb1 = std::min(blocks, jb0 + kColBlocks);
    alignas(64) int32_t tile[6 * kTileStride];
    for (Index jb = jb0; jb < jb1; jb += tiles.blocks) {
      const int nb = int(std::min<Index>(tiles.blocks, jb1 - jb));
      const int8_t* bp = b.data + jb * bstride;
      for (Index i = r0; i < r1; i += tiles.rows) {
        const int mr = int(std::min<Index>(tiles.rows, r1 - i));
        tiles.fn[mr - 1][nb - 1](panel.bytes.data() + i * panel.stride, panel.stride, bp, bstride, kq, tile);
        const Index j = jb * 16;
        out(i, mr, j, std::min<Index>(Index(nb) * 16, b.n - j), tile);
      }
    }
  });
}

void quantize_row(const float* x, Index k, int8_t* q, float* scale) {
  float top = 0.0f;
  bool finite = true;
  for (Index j = 0; j < k; ++j) {
    const float v = std::fabs(x[j]);
    finite &= v <= std::numeric_limits<float>::max();
    top = std::max(top, v);
  }
  if (!finite) {
    *scale = std::numeric_limits<float>::quiet_NaN();
    std::memset(q, 0, size_t(k));
    return;
  }
  const float s = 127.0f / (top + 1e-7f);
  *scale = s;
  for (Index j = 0; j < k; ++j) {
    const float r = std::nearbyint(x[j] * s);  // round half to even, as NumPy's rint
    q[j] = static_cast<int8_t>(std::min(127.0f, std::max(-127.0f, r)));
  }
}

void check_k(Index k) {
  if (k > 65536)
    throw std::invalid_argument("int8 products accumulate exactly in int32 only for k <= 65536, got k=" +
                                std::to_string(k));
}

}  // namespace

Int8Path int8_best_path() {
  static const Int8Path best = detect();
  return best;
}

Int8Path int8_path() {
  const int forced = g_forced.load();
  return forced < 0 ? int8_best_path() : static_cast<Int8Path>(forced);
}

void set_int8_path(Int8Path path) {
  if (static_cast<int>(path) > static_cast<int>(int8_best_path()))
    throw std::invalid_argument(std::string("this CPU cannot run the int8 path '") + int8_path_name(path) +
                                "' (its best is '" + int8_path_name(int8_best_path()) + "')");
  g_forced.store(static_cast<int>(path));
}

const char* int8_path_name(Int8Path path) {
  switch (path) {
    case Int8Path::Vnni: return "vnni";
    case Int8Path::Avx2: return "avx2";
    default: return "scalar";
  }
}

void int8_pack(const int8_t* b, Index k, Index n, int8_t* packed, int32_t* col_sums) {
  const Index kq = int8_k4(k) / 4, blocks = int8_n16(n) / 16;
  for (Index jb = 0; jb < blocks; ++jb)
    for (Index q = 0; q < kq; ++q)
      for (Index jj = 0; jj < 16; ++jj)
        for (Index r = 0; r < 4; ++r) {
          const Index row = 4 * q + r, col = 16 * jb + jj;
          packed[((jb * kq + q) * 16 + jj) * 4 + r] = row < k && col < n ? b[row * n + col] : 0;
        }
  for (Index j = 0; j < blocks * 16; ++j) {
    int32_t s = 0;
    if (j < n)
      for (Index row = 0; row < k; ++row) s += b[row * n + j];
    col_sums[j] = s;
  }
}

void int8_quantize_rows(const float* x, Index m, Index k, int8_t* q, float* scale) {
  parallel_for(m, threads_for(4.0 * double(m) * double(k)),
               [&](Index i) { quantize_row(x + i * k, k, q + i * k, scale + i); });
}

void int8_gemm(Index m, const int8_t* a, Index lda, const Int8Packed& b, int32_t* c, Index ldc) {
  check_k(b.k);
  if (m <= 0 || b.n <= 0) return;
  const PathTiles& tiles = tiles_for(int8_path());
  Panel panel;
  panel.stride = int8_k4(b.k);
  panel.bytes.assign(size_t(m * panel.stride), 0);
  const uint8_t flip = tiles.unsigned_a ? 0x80 : 0x00;
  for (Index i = 0; i < m; ++i)
    for (Index j = 0; j < b.k; ++j)
      panel.bytes[size_t(i * panel.stride + j)] = static_cast<uint8_t>(a[i * lda + j]) ^ flip;
  // (the padding stays 0: B is 0 there, so it adds nothing in either encoding)
  const bool correct = tiles.unsigned_a;
  for_each_tile(tiles, panel, m, b, [&](Index i, int rows, Index j, Index cols, const int32_t* tile) {
    for (int r = 0; r < rows; ++r)
      for (Index t = 0; t < cols; ++t)
        c[(i + r) * ldc + j + t] = tile[r * kTileStride + t] - (correct ? 128 * b.col_sums[j + t] : 0);
  });
}

void int8_dense_forward(const float* x, Index m, const Int8Packed& b, const float* scale_b, const float* bias,
                        const Activation& act, float* y) {
  check_k(b.k);
  if (m <= 0 || b.n <= 0) return;
  const PathTiles& tiles = tiles_for(int8_path());
  const Index k = b.k, n = b.n;
  Panel panel;
  panel.stride = int8_k4(k);
  panel.bytes.assign(size_t(m * panel.stride), 0);
  std::vector<float> scale_x(static_cast<size_t>(m));
  const uint8_t flip = tiles.unsigned_a ? 0x80 : 0x00;
  parallel_for(m, threads_for(4.0 * double(m) * double(k)), [&](Index i) {
    auto* row = reinterpret_cast<int8_t*>(panel.bytes.data() + i * panel.stride);
    quantize_row(x + i * k, k, row, &scale_x[size_t(i)]);
    if (flip)
      for (Index j = 0; j < k; ++j) row[j] = static_cast<int8_t>(static_cast<uint8_t>(row[j]) ^ flip);
  });
  const bool correct = tiles.unsigned_a;
  const bool fuse_activation = act.kind != ActivationKind::Linear && act.kind != ActivationKind::Softmax;
  for_each_tile(tiles, panel, m, b, [&](Index i, int rows, Index j, Index cols, const int32_t* tile) {
    for (int r = 0; r < rows; ++r) {
      float* out = y + (i + r) * n + j;
      const float sx = scale_x[size_t(i + r)];
      for (Index t = 0; t < cols; ++t) {
        const int32_t acc = tile[r * kTileStride + t] - (correct ? 128 * b.col_sums[j + t] : 0);
        float v = static_cast<float>(acc) / (sx * scale_b[j + t]);  // Keras: divide by the scales' product
        if (bias) v += bias[j + t];
        out[t] = v;
      }
      if (fuse_activation) activation_forward_serial(act, out, out, cols);
    }
  });
  if (act.kind == ActivationKind::Softmax) activation_forward(act, y, y, m * n, n);
}

}  // namespace fastnn
