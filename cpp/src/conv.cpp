// Convolution kernels (see fastnn/conv.hpp): implicit GEMM per chunk of images.
#include "fastnn/conv.hpp"

#include <algorithm>
#include <cstring>
#include <vector>

#include "fastnn/dense.hpp"
#include "fastnn/gemm.hpp"
#include "fastnn/scratch.hpp"
#include "winograd.hpp"

namespace fastnn {
namespace {

// A fixed partition of the batch into chunks of whole images, from the shapes alone: about
// kTargetRows output pixels per chunk (its patch matrix stays in L2/L3), at most kMaxChunks
// chunks (each keeps a partial weight gradient).
constexpr Index kTargetRows = 2048;
constexpr Index kMaxColumnElements = Index(1) << 20;  // 4 MB of float32 patches
constexpr Index kMaxChunks = 32;

struct Chunks {
  Index per, count;
};

Chunks plan_chunks(const ConvShape& s) {
  const Index pixels = std::max<Index>(1, s.out_pixels());
  Index per = std::max<Index>(1, kTargetRows / pixels);
  per = std::max<Index>(1, std::min(per, kMaxColumnElements / std::max<Index>(1, pixels * s.patch())));
  per = std::max(per, (s.n + kMaxChunks - 1) / kMaxChunks);
  per = std::min(per, std::max<Index>(1, s.n));
  return {per, s.n ? (s.n + per - 1) / per : 0};
}

// A 1×1, stride-1, unpadded convolution: the input itself is the patch matrix.
bool is_pointwise(const ConvShape& s) {
  return s.groups == 1 && s.kh == 1 && s.kw == 1 && s.sh == 1 && s.sw == 1 && s.pad_top == 0 &&
         s.pad_left == 0 && s.oh == s.h && s.ow == s.w;
}

// dx of `images` images from the patch-matrix gradient of group `group` (its channels only;
// dx is zeroed by the caller): each patch value adds into the input position it was read
// from, in a fixed order.
template <typename T>
void col2im(const ConvShape& s, const T* dcol, Index images, T* dx, Index group) {
  const Index K = s.patch(), image_size = s.h * s.w * s.c, gc = s.group_c();
  dx += group * gc;
  for (Index img = 0; img < images; ++img) {
    T* dxi = dx + img * image_size;
    for (Index i = 0; i < s.oh; ++i)
      for (Index j = 0; j < s.ow; ++j) {
        const T* src = dcol + ((img * s.oh + i) * s.ow + j) * K;
        for (Index p = 0; p < s.kh; ++p) {
          const Index row = i * s.sh + p * s.dh - s.pad_top;
          if (row < 0 || row >= s.h) continue;
          for (Index q = 0; q < s.kw; ++q) {
            const Index c0 = j * s.sw - s.pad_left + q * s.dw;
            if (c0 < 0 || c0 >= s.w) continue;
            T* d = dxi + (row * s.w + c0) * s.c;
            const T* g = src + (p * s.kw + q) * gc;
            for (Index c = 0; c < gc; ++c) d[c] += g[c];
          }
        }
      }
  }
}

// Implicit GEMM: the patch matrix is never formed. The GEMM reads patch value (r, t) at
// base[row_offset[r] + step_offset[t]] in a copy of the input with zero borders wide enough
// that every read lands inside it (no bounds checks in the inner loop). An explicit patch
// matrix (im2col) wrote kh·kw times the input per pass, half of a 28×28 forward pass's time;
// the bordered copy writes it once.
struct Bordered {
  Index h, w;  // height and width with borders
  bool copy;   // false: the input itself serves (no padding read)
};

Bordered bordered_layout(const ConvShape& s) {
  const Index reach_h = (s.oh - 1) * s.sh + (s.kh - 1) * s.dh + 1;  // rows read, from -pad_top
  const Index reach_w = (s.ow - 1) * s.sw + (s.kw - 1) * s.dw + 1;
  Bordered b;
  b.h = std::max(s.h + s.pad_top, reach_h);
  b.w = std::max(s.w + s.pad_left, reach_w);
  b.copy = b.h != s.h || b.w != s.w;
  return b;
}

// `images` images from x, with borders, into dst (b.h × b.w × c each).
template <typename T>
void add_borders(const ConvShape& s, const Bordered& b, const T* x, Index images, T* dst) {
  const Index c = s.c, right = (b.w - s.pad_left - s.w) * c;
  for (Index img = 0; img < images; ++img) {
    const T* xi = x + img * s.h * s.w * c;
    for (Index r = 0; r < b.h; ++r, dst += b.w * c) {
      const Index src_row = r - s.pad_top;
      if (src_row < 0 || src_row >= s.h) {
        std::fill(dst, dst + b.w * c, T(0));
        continue;
      }
      std::fill(dst, dst + s.pad_left * c, T(0));
      std::memcpy(dst + s.pad_left * c, xi + src_row * s.w * c, size_t(s.w * c) * sizeof(T));
      std::fill(dst + (s.pad_left + s.w) * c, dst + (s.pad_left + s.w) * c + right, T(0));
    }
  }
}

// Offsets of patch value (p, q, ch) from its patch's corner, in kernel order (kh, kw, c/G),
// for group 0 (group g adds g·c/G to the base).
void patch_offsets(const ConvShape& s, const Bordered& b, Index* out) {
  for (Index p = 0; p < s.kh; ++p)
    for (Index q = 0; q < s.kw; ++q)
      for (Index ch = 0; ch < s.group_c(); ++ch) *out++ = (p * s.dh * b.w + q * s.dw) * s.c + ch;
}

// Offsets of each output pixel's patch corner, for `images` images.
void pixel_offsets(const ConvShape& s, const Bordered& b, Index images, Index* out) {
  for (Index img = 0; img < images; ++img)
    for (Index i = 0; i < s.oh; ++i)
      for (Index j = 0; j < s.ow; ++j) *out++ = img * b.h * b.w * s.c + (i * s.sh * b.w + j * s.sw) * s.c;
}

// The patch-matrix side of each chunk's product: the input itself (pointwise), or a bordered
// chunk read at the pixel offsets (the same for every chunk, relative to its first image;
// computed once per call) and patch offsets.
template <typename T>
struct Patches {
  const ConvShape& s;
  Bordered b;
  bool pointwise;
  const Index* pixel = nullptr;
  const Index* patch = nullptr;

  Patches(const ConvShape& shape, Index images_per_chunk)
      : s(shape), b(bordered_layout(shape)), pointwise(is_pointwise(shape)) {
    if (pointwise) return;
    Index* offsets = thread_scratch<Index>(ScratchSlot::ConvStepOffsets,
                                           s.patch() + images_per_chunk * s.out_pixels());
    patch_offsets(s, b, offsets);
    pixel_offsets(s, b, images_per_chunk, offsets + s.patch());
    patch = offsets;
    pixel = offsets + s.patch();
  }

  // The chunk's base: x itself, or its bordered copy in the calling thread's buffer.
  const T* base(const T* x, Index images) const {
    if (pointwise || !b.copy) return x;
    T* buffer = thread_scratch<T>(ScratchSlot::ConvPadded, images * b.h * b.w * s.c);
    add_borders(s, b, x, images, buffer);
    return buffer;
  }
};

// Depthwise convolutions (groups = channels; m = f / c outputs per channel): a GEMM per
// group would have one column and a 1·kh·kw depth, so they run as direct loops instead,
// vectorised across the channels of a pixel. Output o reads input channel o / m.
// Taps outside the image are skipped (the padding reads 0).
template <typename T, typename Body>
void for_each_tap(const ConvShape& s, Index i, Index j, Body&& body) {
  for (Index p = 0; p < s.kh; ++p) {
    const Index row = i * s.sh + p * s.dh - s.pad_top;
    if (row < 0 || row >= s.h) continue;
    for (Index q = 0; q < s.kw; ++q) {
      const Index col = j * s.sw + q * s.dw - s.pad_left;
      if (col < 0 || col >= s.w) continue;
      body(row * s.w + col, p * s.kw + q);
    }
  }
}

bool is_depthwise(const ConvShape& s) { return s.groups > 1 && s.groups == s.c; }

// z (images of one chunk) = depthwise conv + bias.
template <typename T>
void depthwise_forward(const ConvShape& s, const T* x, const T* w, const T* bias, Index images, T* out) {
  const Index f = s.f, m = s.group_f(), c = s.c;
  for (Index img = 0; img < images; ++img) {
    const T* xi = x + img * s.h * s.w * c;
    for (Index i = 0; i < s.oh; ++i)
      for (Index j = 0; j < s.ow; ++j) {
        T* o = out + ((img * s.oh + i) * s.ow + j) * f;
        for (Index k = 0; k < f; ++k) o[k] = bias ? bias[k] : T(0);
        for_each_tap<T>(s, i, j, [&](Index pos, Index tap) {
          const T* xv = xi + pos * c;
          const T* wv = w + tap * f;
          if (m == 1) {
            for (Index k = 0; k < f; ++k) o[k] += xv[k] * wv[k];
          } else {
            for (Index g = 0; g < c; ++g)
              for (Index k = 0; k < m; ++k) o[g * m + k] += xv[g] * wv[g * m + k];
          }
        });
      }
  }
}

// dw (kh × kw × 1 × f) += Σ over the chunk's pixels of x · dz, in pixel order.
template <typename T>
void depthwise_kernel_gradient(const ConvShape& s, const T* x, const T* dz, Index images, T* dw) {
  const Index f = s.f, m = s.group_f(), c = s.c;
  for (Index img = 0; img < images; ++img) {
    const T* xi = x + img * s.h * s.w * c;
    for (Index i = 0; i < s.oh; ++i)
      for (Index j = 0; j < s.ow; ++j) {
        const T* d = dz + ((img * s.oh + i) * s.ow + j) * f;
        for_each_tap<T>(s, i, j, [&](Index pos, Index tap) {
          const T* xv = xi + pos * c;
          T* g = dw + tap * f;
          if (m == 1) {
            for (Index k = 0; k < f; ++k) g[k] += xv[k] * d[k];
          } else {
            for (Index ch = 0; ch < c; ++ch)
              for (Index k = 0; k < m; ++k) g[ch * m + k] += xv[ch] * d[ch * m + k];
          }
        });
      }
  }
}

// dx of the chunk's images (overwritten) = the taps' dz · w, added in pixel order.
template <typename T>
void depthwise_input_gradient(const ConvShape& s, const T* w, const T* dz, Index images, T* dx) {
  const Index f = s.f, m = s.group_f(), c = s.c;
  std::fill(dx, dx + images * s.h * s.w * c, T(0));
  for (Index img = 0; img < images; ++img) {
    T* dxi = dx + img * s.h * s.w * c;
    for (Index i = 0; i < s.oh; ++i)
      for (Index j = 0; j < s.ow; ++j) {
        const T* d = dz + ((img * s.oh + i) * s.ow + j) * f;
        for_each_tap<T>(s, i, j, [&](Index pos, Index tap) {
          T* g = dxi + pos * c;
          const T* wv = w + tap * f;
          if (m == 1) {
            for (Index k = 0; k < f; ++k) g[k] += d[k] * wv[k];
          } else {
            for (Index ch = 0; ch < c; ++ch) {
              T sum = 0;
              for (Index k = 0; k < m; ++k) sum += d[ch * m + k] * wv[ch * m + k];
              g[ch] += sum;
            }
          }
        });
      }
  }
}

// z (or y) = conv(x, w) + bias, then the activation, over a fixed partition into chunks.
template <typename T>
void forward_chunks(const ConvShape& s, const T* x, const T* w, const T* bias,
                    const Activation& act, T* z, T* y) {
  if (winograd_applicable(s)) return winograd_forward(s, x, w, bias, act, z, y);
  const Index K = s.patch(), pixels = s.out_pixels();
  const Chunks chunks = plan_chunks(s);
  const double flops = 2.0 * double(s.n) * double(pixels) * double(s.f) * double(K);
  const int threads = std::min<int>(threads_for(flops), int(chunks.count));
  const Patches<T> patches(s, chunks.per);
  T* out = z ? z : y;
  const Index gc = s.group_c(), gf = s.group_f();
  if (is_depthwise(s)) {
    parallel_for(chunks.count, threads, [&](Index ch) {
      const Index first = ch * chunks.per, images = std::min(chunks.per, s.n - first);
      T* chunk_out = out + first * pixels * s.f;
      depthwise_forward(s, x + first * s.h * s.w * s.c, w, bias, images, chunk_out);
      if (act.kind != ActivationKind::Linear || (z && z != y))
        activation_forward(act, chunk_out, y + first * pixels * s.f, images * pixels * s.f, s.f);
    });
    return;
  }
  parallel_for(chunks.count, threads, [&](Index ch) {
    const Index first = ch * chunks.per, images = std::min(chunks.per, s.n - first);
    const Index rows = images * pixels;
    const T* base = patches.base(x + first * s.h * s.w * s.c, images);
    T* chunk_out = out + first * pixels * s.f;
    for (Index group = 0; group < s.groups; ++group) {  // group g: its channels into its filters
      GemmArgs<T> g;
      g.m = rows;
      g.n = gf;
      g.k = K;
      g.a = base + group * gc;
      g.lda = K;
      g.a_row_offsets = patches.pixel;
      g.a_step_offsets = patches.patch;
      g.b = w + group * gf;
      g.ldb = s.f;
      g.c = chunk_out + group * gf;
      g.ldc = s.f;
      g.bias = bias ? bias + group * gf : nullptr;
      g.max_threads = threads > 1 ? 1 : 0;  // chunks already run in parallel
      gemm(g);
    }
    if (act.kind != ActivationKind::Linear || (z && z != y))
      activation_forward(act, chunk_out, y + first * pixels * s.f, rows * s.f, s.f);
  });
}

}  // namespace

template <typename T>
void conv2d_forward(const ConvArgs<T>& a, T* z, T* y) {
  const ConvShape& s = a.s;
  if (s.n == 0 || s.out_pixels() == 0 || s.f == 0) return;
  forward_chunks(s, a.x, a.w, a.b, a.act, z, y);
}

template <typename T>
void conv2d_backward(const ConvArgs<T>& a, const T* z, const T* y, const T* dy, T* dw, T* db,
                     bool accumulate, T* dx) {
  const ConvShape& s = a.s;
  const Index K = s.patch(), pixels = s.out_pixels(), rows_total = s.n * pixels;
  const Index image_size = s.h * s.w * s.c, kernel_size = K * s.f;
  const Index gc = s.group_c(), gf = s.group_f();
  if (dx && (pixels == 0 || s.f == 0)) std::fill(dx, dx + s.n * image_size, T(0));
  if (s.n == 0 || pixels == 0 || s.f == 0) {
    if (dw && !accumulate) std::fill(dw, dw + kernel_size, T(0));
    if (db && !accumulate) std::fill(db, db + s.f, T(0));
    return;
  }
  const T* dz = dy;
  if (a.act.kind != ActivationKind::Linear) {
    T* buffer = thread_scratch<T>(ScratchSlot::ConvGradient, rows_total * s.f);
    activation_backward(a.act, z, y, dy, buffer, rows_total * s.f, s.f);
    dz = buffer;
  }
  if (db) column_sums(dz, rows_total, s.f, db, accumulate);
  if (!dw && !dx) return;

  const Chunks chunks = plan_chunks(s);
  const double flops = 2.0 * double(rows_total) * double(s.f) * double(K);
  const int threads = std::min<int>(threads_for(flops), int(chunks.count));
  const bool pointwise = is_pointwise(s);

  if (dw && winograd_applicable(s)) {
    winograd_kernel_gradient(s, a.x, dz, dw, accumulate);
  } else if (dw && is_depthwise(s)) {
    // One partial per chunk, summed in chunk order: the same bits on any number of threads.
    std::vector<T> partials(size_t(chunks.count) * size_t(kernel_size), T(0));
    parallel_for(chunks.count, threads, [&](Index ch) {
      const Index first = ch * chunks.per, images = std::min(chunks.per, s.n - first);
      depthwise_kernel_gradient(s, a.x + first * image_size, dz + first * pixels * s.f, images,
                                partials.data() + ch * kernel_size);
    });
    for (Index i = 0; i < kernel_size; ++i) {
      T total = accumulate ? dw[i] : T(0);
      for (Index ch = 0; ch < chunks.count; ++ch) total += partials[size_t(ch * kernel_size + i)];
      dw[i] = total;
    }
  } else if (dw) {
    const Patches<T> patches(s, chunks.per);
    // One weight-gradient partial per chunk, summed in chunk order below (one chunk: direct).
    const bool direct = chunks.count == 1;
    std::vector<T> partials(direct ? 0 : size_t(chunks.count) * size_t(kernel_size));
    parallel_for(chunks.count, threads, [&](Index ch) {
      const Index first = ch * chunks.per, images = std::min(chunks.per, s.n - first);
      const T* base = patches.base(a.x + first * image_size, images);
      for (Index group = 0; group < s.groups; ++group) {
        GemmArgs<T> g;  // partial dw of the group's filters = its patchesᵀ · its dz
        g.m = K;
        g.n = gf;
        g.k = images * pixels;
        g.a = base + group * gc;
        g.lda = K;
        g.trans_a = true;
        g.a_row_offsets = patches.patch;  // patchesᵀ: rows are patch positions
        g.a_step_offsets = patches.pixel;
        g.b = dz + first * pixels * s.f + group * gf;
        g.ldb = s.f;
        g.c = (direct ? dw : partials.data() + ch * kernel_size) + group * gf;
        g.ldc = s.f;
        g.accumulate = direct && accumulate;
        g.max_threads = threads > 1 ? 1 : 0;
        gemm(g);
      }
    });
    if (!direct)
      parallel_chunks(kernel_size, double(chunks.count), [&](Index begin, Index count) {
        for (Index i = begin; i < begin + count; ++i) {
          T total = accumulate ? dw[i] : T(0);
          for (Index ch = 0; ch < chunks.count; ++ch) total += partials[size_t(ch * kernel_size + i)];
          dw[i] = total;
        }
      });
  }
  if (!dx) return;

  if (s.groups == 1 && s.sh == 1 && s.sw == 1 && !pointwise && s.c >= 16) {
    // Stride 1: dx is the "full" correlation of dz with the kernel turned 180° and its
    // channel axes swapped: a forward convolution of f channels into c.
    const Index pad_top = (s.kh - 1) * s.dh - s.pad_top, pad_left = (s.kw - 1) * s.dw - s.pad_left;
    if (pad_top >= 0 && pad_left >= 0) {
      ConvShape t = s;
      t.h = s.oh;
      t.w = s.ow;
      t.c = s.f;
      t.f = s.c;
      t.pad_top = pad_top;
      t.pad_left = pad_left;
      t.oh = s.h;
      t.ow = s.w;
      T* flipped = thread_scratch<T>(ScratchSlot::LayerTemp2, kernel_size);
      for (Index p = 0; p < s.kh; ++p)
        for (Index q = 0; q < s.kw; ++q) {
          const T* src = a.w + ((s.kh - 1 - p) * s.kw + (s.kw - 1 - q)) * s.c * s.f;
          T* dst = flipped + (p * s.kw + q) * s.f * s.c;
          for (Index ch = 0; ch < s.c; ++ch)
            for (Index f = 0; f < s.f; ++f) dst[f * s.c + ch] = src[ch * s.f + f];
        }
      forward_chunks<T>(t, dz, flipped, nullptr, Activation{}, nullptr, dx);
      return;
    }
  }
  if (is_depthwise(s)) {
    parallel_for(chunks.count, threads, [&](Index ch) {
      const Index first = ch * chunks.per, images = std::min(chunks.per, s.n - first);
      depthwise_input_gradient(s, a.w, dz + first * pixels * s.f, images, dx + first * image_size);
    });
    return;
  }
  // Otherwise: patch gradients dz·wᵀ per chunk, scattered back (col2im).
  parallel_for(chunks.count, threads, [&](Index ch) {
    const Index first = ch * chunks.per, images = std::min(chunks.per, s.n - first);
    const Index rows = images * pixels;
    T* dx_chunk = dx + first * image_size;
    T* dcol = pointwise ? dx_chunk : thread_scratch<T>(ScratchSlot::ConvColumns, rows * K);
    if (!pointwise) std::fill(dx_chunk, dx_chunk + images * image_size, T(0));
    for (Index group = 0; group < s.groups; ++group) {
      GemmArgs<T> g;  // the group's patch gradients = its dz · its wᵀ
      g.m = rows;
      g.n = K;
      g.k = gf;
      g.a = dz + first * pixels * s.f + group * gf;
      g.lda = s.f;
      g.b = a.w + group * gf;
      g.ldb = s.f;
      g.trans_b = true;
      g.c = dcol;
      g.ldc = K;
      g.max_threads = threads > 1 ? 1 : 0;
      gemm(g);
      if (!pointwise) col2im(s, dcol, images, dx_chunk, group);
    }
  });
}

#define FASTNN_INSTANTIATE(T)                                                                   \
  template void conv2d_forward<T>(const ConvArgs<T>&, T*, T*);                                 \
  template void conv2d_backward<T>(const ConvArgs<T>&, const T*, const T*, const T*, T*, T*,   \
                                   bool, T*);
FASTNN_INSTANTIATE(float)
FASTNN_INSTANTIATE(double)
#undef FASTNN_INSTANTIATE

}  // namespace fastnn
