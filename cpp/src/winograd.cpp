// Winograd F(2×2, 3×3) convolution forward (see winograd.hpp).
//
// The output's 2×2 tiles (over all images) are split into fixed blocks of kBlockTiles tiles,
// processed in parallel, each on one thread: transform its input tiles into V[16][tiles][c],
// run 16 single-threaded GEMMs M[ξ] = V[ξ]·U[ξ] with U[16][c][f] the transformed kernel,
// then transform M back into 2×2 output tiles with the bias. The partition comes from the
// shapes alone and every block runs the same code: results are the same bits on any number
// of threads.
#include "winograd.hpp"

#include <algorithm>
#include <vector>

#include "fastnn/gemm.hpp"
#include "fastnn/scratch.hpp"

namespace fastnn {
namespace {

// Tiles per block: V and M (16 × tiles × channels each) stay within L2 for 64 channels.
constexpr Index kBlockTiles = 128;
// Partial weight gradients (16·c·f values each) for the weight gradient's groups of blocks.
constexpr Index kGradientGroups = 16;

// U[ξ][c][f] = (G g Gᵀ)[ξ] for each (c, f), g the 3×3 kernel slice w[:, :, c, f].
// G = [[1, 0, 0], [½, ½, ½], [½, -½, ½], [0, 0, 1]].
template <typename T>
void transform_kernel(const ConvShape& s, const T* w, T* u) {
  const Index C = s.c, F = s.f, plane = C * F;
  for (Index c = 0; c < C; ++c) {
    const T* g = w + c * F;  // g[(p·3 + q)·C·F + f]
#pragma omp simd
    for (Index f = 0; f < F; ++f) {
      T k[3][3], t[4][3];
      for (int p = 0; p < 3; ++p)
        for (int q = 0; q < 3; ++q) k[p][q] = g[(p * 3 + q) * plane + f];
      for (int q = 0; q < 3; ++q) {  // G·g
        t[0][q] = k[0][q];
        t[1][q] = T(0.5) * (k[0][q] + k[1][q] + k[2][q]);
        t[2][q] = T(0.5) * (k[0][q] - k[1][q] + k[2][q]);
        t[3][q] = k[2][q];
      }
      for (int i = 0; i < 4; ++i) {  // (G·g)·Gᵀ
        T* out = u + (i * 4) * plane + c * F + f;
        out[0 * plane] = t[i][0];
        out[1 * plane] = T(0.5) * (t[i][0] + t[i][1] + t[i][2]);
        out[2 * plane] = T(0.5) * (t[i][0] - t[i][1] + t[i][2]);
        out[3 * plane] = t[i][2];
      }
    }
  }
}

struct Tiling {
  Index rows, cols, per_image, total;  // tiles down, across, per image, in all
};

// V[ξ][t][c] = (Bᵀ d B)[ξ] for the block's tiles, d the 4×4 input tile (zeros outside the
// image). Bᵀ = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]].
template <typename T>
void transform_input(const ConvShape& s, const Tiling& tl, const T* x, const T* zeros,
                     Index first, Index count, T* v) {
  const Index C = s.c, plane = count * C;
  for (Index t = 0; t < count; ++t) {
    const Index tile = first + t, img = tile / tl.per_image, r = tile % tl.per_image;
    const Index row0 = (r / tl.cols) * 2 - s.pad_top, col0 = (r % tl.cols) * 2 - s.pad_left;
    const T* src[4][4];
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) {
        const Index row = row0 + i, col = col0 + j;
        src[i][j] = (row < 0 || row >= s.h || col < 0 || col >= s.w)
                        ? zeros
                        : x + ((img * s.h + row) * s.w + col) * C;
      }
    T* dst = v + t * C;
#pragma omp simd
    for (Index c = 0; c < C; ++c) {
      T d[4][4], b[4][4];
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) d[i][j] = src[i][j][c];
      for (int j = 0; j < 4; ++j) {  // Bᵀ·d
        b[0][j] = d[0][j] - d[2][j];
        b[1][j] = d[1][j] + d[2][j];
        b[2][j] = d[2][j] - d[1][j];
        b[3][j] = d[1][j] - d[3][j];
      }
      for (int i = 0; i < 4; ++i) {  // (Bᵀ·d)·B
        T* out = dst + (i * 4) * plane + c;
        out[0 * plane] = b[i][0] - b[i][2];
        out[1 * plane] = b[i][1] + b[i][2];
        out[2 * plane] = b[i][2] - b[i][1];
        out[3 * plane] = b[i][1] - b[i][3];
      }
    }
  }
}

// 2×2 output tiles = Aᵀ m A + bias, m[ξ] = M[ξ][t][f]; positions past the output's edge
// are dropped. Aᵀ = [[1, 1, 1, 0], [0, 1, -1, -1]].
template <typename T>
void transform_output(const ConvShape& s, const Tiling& tl, const T* m, const T* bias,
                      Index first, Index count, T* out) {
  const Index F = s.f, plane = count * F;
  for (Index t = 0; t < count; ++t) {
    const Index tile = first + t, img = tile / tl.per_image, r = tile % tl.per_image;
    const Index row0 = (r / tl.cols) * 2, col0 = (r % tl.cols) * 2;
    const bool full_rows = row0 + 1 < s.oh, full_cols = col0 + 1 < s.ow;
    T* dst00 = out + ((img * s.oh + row0) * s.ow + col0) * F;
    T* dst01 = dst00 + F;
    T* dst10 = dst00 + s.ow * F;
    T* dst11 = dst10 + F;
    const T* src = m + t * F;
#pragma omp simd
    for (Index f = 0; f < F; ++f) {
      T a[4][4], row[2][4];
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) a[i][j] = src[(i * 4 + j) * plane + f];
      for (int j = 0; j < 4; ++j) {  // Aᵀ·m
        row[0][j] = a[0][j] + a[1][j] + a[2][j];
        row[1][j] = a[1][j] - a[2][j] - a[3][j];
      }
      const T b = bias ? bias[f] : T(0);
      const T y00 = row[0][0] + row[0][1] + row[0][2] + b;
      const T y01 = row[0][1] - row[0][2] - row[0][3] + b;
      const T y10 = row[1][0] + row[1][1] + row[1][2] + b;
      const T y11 = row[1][1] - row[1][2] - row[1][3] + b;
      dst00[f] = y00;
      if (full_cols) dst01[f] = y01;
      if (full_rows) dst10[f] = y10;
      if (full_rows && full_cols) dst11[f] = y11;
    }
  }
}

// D[ξ][t][f] = (A dz Aᵀ)[ξ] for the block's tiles, dz the 2×2 output-gradient tile (zeros
// past the output's edge); A = [[1, 0], [1, 1], [1, -1], [0, -1]]. The transpose of the
// output transform: the weight gradient's side of the product.
template <typename T>
void transform_output_gradient(const ConvShape& s, const Tiling& tl, const T* dz, const T* zeros,
                               Index first, Index count, T* d) {
  const Index F = s.f, plane = count * F;
  for (Index t = 0; t < count; ++t) {
    const Index tile = first + t, img = tile / tl.per_image, r = tile % tl.per_image;
    const Index row0 = (r / tl.cols) * 2, col0 = (r % tl.cols) * 2;
    const T* src[2][2];
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 2; ++j) {
        const Index row = row0 + i, col = col0 + j;
        src[i][j] = (row >= s.oh || col >= s.ow) ? zeros : dz + ((img * s.oh + row) * s.ow + col) * F;
      }
    T* dst = d + t * F;
#pragma omp simd
    for (Index f = 0; f < F; ++f) {
      const T y00 = src[0][0][f], y01 = src[0][1][f], y10 = src[1][0][f], y11 = src[1][1][f];
      T a[4][2];  // A·dz
      a[0][0] = y00, a[0][1] = y01;
      a[1][0] = y00 + y10, a[1][1] = y01 + y11;
      a[2][0] = y00 - y10, a[2][1] = y01 - y11;
      a[3][0] = -y10, a[3][1] = -y11;
      for (int i = 0; i < 4; ++i) {  // (A·dz)·Aᵀ
        T* out = dst + (i * 4) * plane + f;
        out[0 * plane] = a[i][0];
        out[1 * plane] = a[i][0] + a[i][1];
        out[2 * plane] = a[i][0] - a[i][1];
        out[3 * plane] = -a[i][1];
      }
    }
  }
}

// dw[p][q][c][f] (+)= (Gᵀ S G)[p][q] for S[ξ][c][f] the transformed sums; the transpose of
// the kernel transform. Gᵀ = [[1, ½, ½, 0], [0, ½, -½, 0], [0, ½, ½, 1]].
template <typename T>
void transform_kernel_gradient(const ConvShape& s, const T* sums, T* dw, bool accumulate) {
  const Index C = s.c, F = s.f, plane = C * F;
  for (Index c = 0; c < C; ++c) {
#pragma omp simd
    for (Index f = 0; f < F; ++f) {
      T m[4][4], t[3][4];
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) m[i][j] = sums[(i * 4 + j) * plane + c * F + f];
      for (int j = 0; j < 4; ++j) {  // Gᵀ·S
        t[0][j] = m[0][j] + T(0.5) * (m[1][j] + m[2][j]);
        t[1][j] = T(0.5) * (m[1][j] - m[2][j]);
        t[2][j] = T(0.5) * (m[1][j] + m[2][j]) + m[3][j];
      }
      for (int p = 0; p < 3; ++p) {  // (Gᵀ·S)·G
        const T g[3] = {t[p][0] + T(0.5) * (t[p][1] + t[p][2]), T(0.5) * (t[p][1] - t[p][2]),
                        T(0.5) * (t[p][1] + t[p][2]) + t[p][3]};
        for (int q = 0; q < 3; ++q) {
          T& out = dw[(p * 3 + q) * plane + c * F + f];
          out = accumulate ? out + g[q] : g[q];
        }
      }
    }
  }
}

}  // namespace

bool winograd_applicable(const ConvShape& s) {
  // Narrow channel counts make short GEMMs whose transforms cost more than they save.
  return s.groups == 1 && s.kh == 3 && s.kw == 3 && s.sh == 1 && s.sw == 1 && s.dh == 1 && s.dw == 1 && s.c >= 16 &&
         s.f >= 16 && s.oh >= 2 && s.ow >= 2;
}

template <typename T>
void winograd_forward(const ConvShape& s, const T* x, const T* w, const T* bias,
                      const Activation& act, T* z, T* y) {
  Tiling tl;
  tl.rows = (s.oh + 1) / 2;
  tl.cols = (s.ow + 1) / 2;
  tl.per_image = tl.rows * tl.cols;
  tl.total = s.n * tl.per_image;
  const Index C = s.c, F = s.f;
  const Index blocks = (tl.total + kBlockTiles - 1) / kBlockTiles;
  // Allocated by the calling thread before the team starts (nothing may throw inside it).
  T* u = thread_scratch<T>(ScratchSlot::WinogradKernel, 16 * C * F);
  transform_kernel(s, w, u);
  std::vector<T> zeros(size_t(C), T(0));
  const double flops = 2.0 * 16.0 * double(tl.total) * double(C) * double(F);
  const int threads = std::min<int>(threads_for(flops), int(blocks));
  T* out = z ? z : y;
  parallel_for(blocks, threads, [&](Index block) {
    const Index first = block * kBlockTiles, count = std::min(kBlockTiles, tl.total - first);
    T* v = thread_scratch<T>(ScratchSlot::WinogradInput, 16 * kBlockTiles * C);
    T* m = thread_scratch<T>(ScratchSlot::WinogradProducts, 16 * kBlockTiles * F);
    transform_input(s, tl, x, zeros.data(), first, count, v);
    for (int xi = 0; xi < 16; ++xi) {
      GemmArgs<T> g;
      g.m = count;
      g.n = F;
      g.k = C;
      g.a = v + xi * count * C;
      g.lda = C;
      g.b = u + xi * C * F;
      g.ldb = F;
      g.c = m + xi * count * F;
      g.ldc = F;
      g.max_threads = 1;  // blocks already run in parallel
      gemm(g);
    }
    transform_output(s, tl, m, bias, first, count, out);
  });
  if (act.kind != ActivationKind::Linear || (z && z != y))
    activation_forward(act, out, y, s.n * s.oh * s.ow * F, F);
}

template <typename T>
void winograd_kernel_gradient(const ConvShape& s, const T* x, const T* dz, T* dw, bool accumulate) {
  Tiling tl;
  tl.rows = (s.oh + 1) / 2;
  tl.cols = (s.ow + 1) / 2;
  tl.per_image = tl.rows * tl.cols;
  tl.total = s.n * tl.per_image;
  const Index C = s.c, F = s.f, plane = 16 * C * F;
  // Blocks form a fixed number of groups (from the shapes alone); each group's blocks add
  // into its own transformed partial sum in order, and the partials are summed in group
  // order: the same bits on any thread count.
  const Index blocks = (tl.total + kBlockTiles - 1) / kBlockTiles;
  const Index groups = std::min<Index>(blocks, kGradientGroups);
  const Index per_group = (blocks + groups - 1) / groups;
  std::vector<T> partials(size_t(groups) * size_t(plane));
  std::vector<T> zeros(size_t(std::max(C, F)), T(0));
  const double flops = 2.0 * 16.0 * double(tl.total) * double(C) * double(F);
  const int threads = std::min<int>(threads_for(flops), int(groups));
  parallel_for(groups, threads, [&](Index group) {
    T* v = thread_scratch<T>(ScratchSlot::WinogradInput, 16 * kBlockTiles * C);
    T* d = thread_scratch<T>(ScratchSlot::WinogradProducts, 16 * kBlockTiles * F);
    T* sums = partials.data() + group * plane;
    const Index block_end = std::min(blocks, (group + 1) * per_group);
    for (Index block = group * per_group; block < block_end; ++block) {
      const Index first = block * kBlockTiles, count = std::min(kBlockTiles, tl.total - first);
      transform_input(s, tl, x, zeros.data(), first, count, v);
      transform_output_gradient(s, tl, dz, zeros.data(), first, count, d);
      for (int xi = 0; xi < 16; ++xi) {
        GemmArgs<T> g;  // S[ξ] (+)= V[ξ]ᵀ · D[ξ]
        g.m = C;
        g.n = F;
        g.k = count;
        g.a = v + xi * count * C;
        g.lda = C;
        g.trans_a = true;
        g.b = d + xi * count * F;
        g.ldb = F;
        g.c = sums + xi * C * F;
        g.ldc = F;
        g.accumulate = block > group * per_group;
        g.max_threads = 1;  // groups already run in parallel
        gemm(g);
      }
    }
  });
  for (Index g = 1; g < groups; ++g) {
    const T* src = partials.data() + g * plane;
    T* total = partials.data();
    for (Index i = 0; i < plane; ++i) total[i] += src[i];
  }
  transform_kernel_gradient(s, partials.data(), dw, accumulate);
}

#define FASTNN_INSTANTIATE(T)                                                                  \
  template void winograd_forward<T>(const ConvShape&, const T*, const T*, const T*,           \
                                    const Activation&, T*, T*);                      \
  template void winograd_kernel_gradient<T>(const ConvShape&, const T*, const T*, T*, bool);
FASTNN_INSTANTIATE(float)
FASTNN_INSTANTIATE(double)
#undef FASTNN_INSTANTIATE

}  // namespace fastnn
