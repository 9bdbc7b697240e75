// int8 products: packing, per-row quantization, and the three paths' tiles (see qgemm.hpp).
//
// The work is cut into tiles of rows × 16-column blocks; a tile's K loop runs whole in
// registers (vnni: 6 rows × 64 columns in 24 zmm accumulators; avx2: 4 rows × 16 columns).
// Tasks are blocks of 48 rows × 256 columns: the column loop is outside the row loop, so a
// panel of B (16-64 columns × k) stays in cache while the rows pass. Integer sums are exact,
// so any partition gives the same bits.
#include "fastnn/qgemm.hpp"
#include "fastnn/scratch.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define FASTNN_INT8_X86 1
#define FASTNN_TARGET_VNNI __attribute__((target("avx512f,avx512bw,avx512dq,avx512vnni")))
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
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni"))
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
#else
  (void)path;  // only the scalar path exists off x86-64 (int8_best_path() is Scalar there)
#endif
  return scalar;
}

/// The rows of A in the layout the tiles read: stride k4, zero-padded, +128 for vnni.
struct Panel {
  Panel(Index rows, Index k) : stride(int8_k4(k)), bytes(new uint8_t[size_t(rows * int8_k4(k))]) {
    if (stride != k)  // only the padding needs zeros: every row's k values are written
      for (Index i = 0; i < rows; ++i) std::memset(bytes.get() + i * stride + k, 0, size_t(stride - k));
  }
  uint8_t* row(Index i) const { return bytes.get() + i * stride; }
  Index stride;
  std::unique_ptr<uint8_t[]> bytes;
};

/// Runs every tile of C = panel · B on `threads`, handing each to
/// out(row, rows, col, cols, tile) (tile: rows × kTileStride int32, cols ≤ 64 valid columns).
template <typename Out>
void for_each_tile(const PathTiles& tiles, const Panel& panel, Index m, const Int8Packed& b, Out&& out) {
  const Index k4 = int8_k4(b.k), kq = k4 / 4, blocks = int8_n16(b.n) / 16;
  const Index bstride = kq * 64;
  const Index row_tasks = (m + kRowBlock - 1) / kRowBlock;
  const double ops = 2.0 * double(m) * double(b.n) * double(k4);
  const int threads = threads_for(ops / 8);
  // few row blocks (small batches): narrower column tasks, so that every thread has work
  const Index width = row_tasks >= 4 * threads ? kColBlocks : 4;
  const Index col_tasks = (blocks + width - 1) / width;
  parallel_for(row_tasks * col_tasks, threads, [&](Index task) {
    const Index r0 = (task / col_tasks) * kRowBlock, r1 = std::min(m, r0 + kRowBlock);
    const Index jb0 = (task % col_tasks) * width, jb1 = std::min(blocks, jb0 + width);
    alignas(64) int32_t tile[6 * kTileStride];
    for (Index jb = jb0; jb < jb1; jb += tiles.blocks) {
      const int nb = int(std::min<Index>(tiles.blocks, jb1 - jb));
      const int8_t* bp = b.data + jb * bstride;
      for (Index i = r0; i < r1; i += tiles.rows) {
        const int mr = int(std::min<Index>(tiles.rows, r1 - i));
        tiles.fn[mr - 1][nb - 1](panel.row(i), panel.stride, bp, bstride, kq, tile);
        const Index j = jb * 16;
        out(i, mr, j, std::min<Index>(Index(nb) * 16, b.n - j), tile);
      }
    }
  });
}

// ---- per-row quantization: scale = 127 / (max|x| + 1e-7), q = clip(round_half_even(x·scale)) ----
// The vector versions do the same float operations as the scalar one (so every path
// quantizes to the same bytes), and write the panel's encoding (xor `flip`) directly.

/// The row's scale, or NaN when it holds NaN or inf.
float row_scale(float top, bool finite) {
  return finite ? 127.0f / (top + 1e-7f) : std::numeric_limits<float>::quiet_NaN();
}

/// The scalar end of a row's scan (values j..k), and the scale; false (the row's bytes all
/// `flip`, i.e. 0) when the row holds NaN or inf.
bool finish_scan(const float* x, Index j, Index k, float top, bool finite, uint8_t* q, float* scale, uint8_t flip) {
  for (; j < k; ++j) {
    const float v = std::fabs(x[j]);
    finite &= v <= std::numeric_limits<float>::max();
    top = std::max(top, v);
  }
  *scale = row_scale(top, finite);
  if (!finite) std::memset(q, flip, size_t(k));
  return finite;
}

int8_t quantize_value(float v, float s) {
  const float r = std::nearbyint(v * s);  // round half to even, as NumPy's rint
  return static_cast<int8_t>(std::min(127.0f, std::max(-127.0f, r)));
}

void quantize_row_scalar(const float* x, Index k, uint8_t* q, float* scale, uint8_t flip) {
  if (!finish_scan(x, 0, k, 0.0f, true, q, scale, flip)) return;
  const float s = *scale;
  for (Index j = 0; j < k; ++j) q[j] = static_cast<uint8_t>(quantize_value(x[j], s)) ^ flip;
}

#ifdef FASTNN_INT8_X86
FASTNN_TARGET_VNNI void quantize_row_avx512(const float* x, Index k, uint8_t* q, float* scale, uint8_t flip) {
  const __m512 magnitude_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
  const __m512 largest = _mm512_set1_ps(std::numeric_limits<float>::max());
  __m512 top16 = _mm512_setzero_ps();
  __mmask16 bad = 0;
  Index j = 0;
  for (; j + 16 <= k; j += 16) {
    const __m512 v = _mm512_and_ps(_mm512_loadu_ps(x + j), magnitude_mask);
    bad |= _mm512_cmp_ps_mask(v, largest, _CMP_NLE_UQ);  // inf or NaN
    top16 = _mm512_max_ps(top16, v);
  }
  if (!finish_scan(x, j, k, _mm512_reduce_max_ps(top16), bad == 0, q, scale, flip)) return;
  const float s = *scale;
  const __m512 vs = _mm512_set1_ps(s), hi = _mm512_set1_ps(127.0f), lo = _mm512_set1_ps(-127.0f);
  const __m128i vflip = _mm_set1_epi8(static_cast<char>(flip));
  for (j = 0; j + 16 <= k; j += 16) {
    __m512 r = _mm512_roundscale_ps(_mm512_mul_ps(_mm512_loadu_ps(x + j), vs),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r = _mm512_min_ps(hi, _mm512_max_ps(lo, r));
    const __m128i bytes = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(r));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + j), _mm_xor_si128(bytes, vflip));
  }
  for (; j < k; ++j) q[j] = static_cast<uint8_t>(quantize_value(x[j], s)) ^ flip;
}

FASTNN_TARGET_AVX2 void quantize_row_avx2(const float* x, Index k, uint8_t* q, float* scale, uint8_t flip) {
  const __m256 magnitude_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 largest = _mm256_set1_ps(std::numeric_limits<float>::max());
  __m256 top8 = _mm256_setzero_ps();
  __m256 bad = _mm256_setzero_ps();
  Index j = 0;
  for (; j + 8 <= k; j += 8) {
    const __m256 v = _mm256_and_ps(_mm256_loadu_ps(x + j), magnitude_mask);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(v, largest, _CMP_NLE_UQ));
    top8 = _mm256_max_ps(top8, v);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, top8);
  float top = 0.0f;
  for (float v : lanes) top = std::max(top, v);
  if (!finish_scan(x, j, k, top, _mm256_movemask_ps(bad) == 0, q, scale, flip)) return;
  const float s = *scale;
  const __m256 vs = _mm256_set1_ps(s), hi = _mm256_set1_ps(127.0f), lo = _mm256_set1_ps(-127.0f);
  const __m128i vflip = _mm_set1_epi8(static_cast<char>(flip));
  for (j = 0; j + 8 <= k; j += 8) {
    __m256 r = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + j), vs), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r = _mm256_min_ps(hi, _mm256_max_ps(lo, r));
    const __m256i ints = _mm256_cvtps_epi32(r);
    const __m128i words = _mm_packs_epi32(_mm256_castsi256_si128(ints), _mm256_extracti128_si256(ints, 1));
    const __m128i bytes = _mm_xor_si128(_mm_packs_epi16(words, words), vflip);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q + j), bytes);
  }
  for (; j < k; ++j) q[j] = static_cast<uint8_t>(quantize_value(x[j], s)) ^ flip;
}
#endif

/// Quantizes a row into `q` in the encoding of `path` (vnni: +128), with the fastest code
/// the path's CPU runs.
void quantize_row(Int8Path path, const float* x, Index k, uint8_t* q, float* scale, uint8_t flip) {
#ifdef FASTNN_INT8_X86
  if (path == Int8Path::Vnni) return quantize_row_avx512(x, k, q, scale, flip);
  if (path == Int8Path::Avx2) return quantize_row_avx2(x, k, q, scale, flip);
#else
  (void)path;
#endif
  quantize_row_scalar(x, k, q, scale, flip);
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
  const Int8Path path = int8_path();
  parallel_for(m, threads_for(4.0 * double(m) * double(k)), [&](Index i) {
    quantize_row(path, x + i * k, k, reinterpret_cast<uint8_t*>(q + i * k), scale + i, 0);
  });
}

void int8_gemm(Index m, const int8_t* a, Index lda, const Int8Packed& b, int32_t* c, Index ldc) {
  check_k(b.k);
  if (m <= 0 || b.n <= 0) return;
  const PathTiles& tiles = tiles_for(int8_path());
  const Panel panel(m, b.k);  // (its padding is 0: B is 0 there, so it adds nothing in either encoding)
  const uint8_t flip = tiles.unsigned_a ? 0x80 : 0x00;
  for (Index i = 0; i < m; ++i) {
    uint8_t* __restrict dst = panel.row(i);
    const int8_t* __restrict src = a + i * lda;
    for (Index j = 0; j < b.k; ++j) dst[j] = static_cast<uint8_t>(src[j]) ^ flip;
  }
  const bool correct = tiles.unsigned_a;
  for_each_tile(tiles, panel, m, b, [&](Index i, int rows, Index j, Index cols, const int32_t* tile) {
    for (int r = 0; r < rows; ++r)
      for (Index t = 0; t < cols; ++t)
        c[(i + r) * ldc + j + t] = tile[r * kTileStride + t] - (correct ? 128 * b.col_sums[j + t] : 0);
  });
}

namespace {

constexpr Index kChunkRows = 4096;  // rows quantized, then multiplied, at a time

/// The quantized Dense over rows that `row(i, scratch)` provides (a pointer to row i's k
/// floats, or row i gathered into `scratch`): chunk by chunk, rows quantized into a panel,
/// then the tiles, dequantized with bias and activation.
template <typename RowSource>
void dense_rows(Index m, const RowSource& row, const Int8Packed& b, const float* scale_b, const float* bias,
                const Activation& act, float* y) {
  check_k(b.k);
  if (m <= 0 || b.n <= 0) return;
  const Int8Path path = int8_path();  // (read once: set_int8_path may run meanwhile)
  const PathTiles& tiles = tiles_for(path);
  const Index k = b.k, n = b.n;
  const Index chunk = std::min(m, kChunkRows);
  const Panel panel(chunk, k);
  std::unique_ptr<float[]> scale_x(new float[size_t(chunk)]);
  const uint8_t flip = tiles.unsigned_a ? 0x80 : 0x00;
  const bool correct = tiles.unsigned_a;
  const bool fuse_activation = act.kind != ActivationKind::Linear && act.kind != ActivationKind::Softmax;
  for (Index c0 = 0; c0 < m; c0 += chunk) {
    const Index rows = std::min(chunk, m - c0);
    parallel_for((rows + 63) / 64, threads_for(4.0 * double(rows) * double(k)), [&](Index t) {
      float* scratch = thread_scratch<float>(ScratchSlot::Int8Row, k);
      for (Index i = t * 64; i < std::min(rows, t * 64 + 64); ++i)
        quantize_row(path, row(c0 + i, scratch), k, panel.row(i), &scale_x[size_t(i)], flip);
    });
    float* yc = y + c0 * n;
    for_each_tile(tiles, panel, rows, b, [&](Index i, int tile_rows, Index j, Index cols, const int32_t* tile) {
      for (int r = 0; r < tile_rows; ++r) {
        float* out = yc + (i + r) * n + j;
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
  }
  if (act.kind == ActivationKind::Softmax) activation_forward(act, y, y, m * n, n);
}

}  // namespace

void int8_dense_forward(const float* x, Index m, const Int8Packed& b, const float* scale_b, const float* bias,
                        const Activation& act, float* y) {
  const Index k = b.k;
  dense_rows(m, [&](Index i, float*) { return x + i * k; }, b, scale_b, bias, act, y);
}

void int8_conv_forward(const GatheredRows& rows, Index m, const Int8Packed& b, const float* scale_b,
                       const float* bias, const Activation& act, float* y) {
  if (rows.taps * rows.channels != b.k)
    throw std::invalid_argument("int8_conv_forward: taps · channels must equal the kernel's k");
  const size_t bytes = sizeof(float) * size_t(rows.channels);
  dense_rows(m, [&](Index i, float* scratch) {
    const float* base = rows.x + rows.row_offsets[i];
    for (Index t = 0; t < rows.taps; ++t) std::memcpy(scratch + t * rows.channels, base + rows.tap_offsets[t], bytes);
    return static_cast<const float*>(scratch);
  }, b, scale_b, bias, act, y);
}

}  // namespace fastnn
