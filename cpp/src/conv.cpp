// Convolution kernels (see fastnn/conv.hpp): implicit GEMM per chunk of images.
#include "fastnn/conv.hpp"

#include <Eigen/Core>
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

namespace ei = Eigen::internal;

// One or two neighbouring pixels of a depthwise convolution with one output per channel (m = 1):
// o = init + Σ over the taps `visit` walks of a[pos]·b[tap], channel by channel, the sums kept in
// SIMD registers (two vectors of channels at a time) until the taps are done. The second pixel
// (Two) has the same taps, each reading a[pos + next], and is written to o + c: four independent
// chains of multiply-adds instead of two.
template <typename T, bool Two, typename Visit>
void gather_pixels(Visit&& visit, const T* a, const T* b, const T* init, Index c, Index next, T* o) {
  using Packet = typename ei::packet_traits<T>::type;
  constexpr Index P = ei::unpacket_traits<Packet>::size;
  const Index shift = next * c;
  Index k = 0;
  for (; k + 2 * P <= c; k += 2 * P) {
    Packet a0 = init ? ei::ploadu<Packet>(init + k) : ei::pset1<Packet>(T(0));
    Packet a1 = init ? ei::ploadu<Packet>(init + k + P) : ei::pset1<Packet>(T(0));
    Packet b0 = a0, b1 = a1;
    visit([&](Index pos, Index tap) {
      const T* av = a + pos * c + k;
      const Packet w0 = ei::ploadu<Packet>(b + tap * c + k), w1 = ei::ploadu<Packet>(b + tap * c + k + P);
      a0 = ei::pmadd(ei::ploadu<Packet>(av), w0, a0);
      a1 = ei::pmadd(ei::ploadu<Packet>(av + P), w1, a1);
      if (Two) {
        b0 = ei::pmadd(ei::ploadu<Packet>(av + shift), w0, b0);
        b1 = ei::pmadd(ei::ploadu<Packet>(av + shift + P), w1, b1);
      }
    });
    ei::pstoreu(o + k, a0);
    ei::pstoreu(o + k + P, a1);
    if (Two) {
      ei::pstoreu(o + c + k, b0);
      ei::pstoreu(o + c + k + P, b1);
    }
  }
  for (; k + P <= c; k += P) {
    Packet a0 = init ? ei::ploadu<Packet>(init + k) : ei::pset1<Packet>(T(0));
    Packet b0 = a0;
    visit([&](Index pos, Index tap) {
      const Packet w0 = ei::ploadu<Packet>(b + tap * c + k);
      a0 = ei::pmadd(ei::ploadu<Packet>(a + pos * c + k), w0, a0);
      if (Two) b0 = ei::pmadd(ei::ploadu<Packet>(a + pos * c + k + shift), w0, b0);
    });
    ei::pstoreu(o + k, a0);
    if (Two) ei::pstoreu(o + c + k, b0);
  }
  for (; k < c; ++k) {
    T a0 = init ? init[k] : T(0), b0 = a0;
    visit([&](Index pos, Index tap) {
      a0 += a[pos * c + k] * b[tap * c + k];
      if (Two) b0 += a[pos * c + k + shift] * b[tap * c + k];
    });
    o[k] = a0;
    if (Two) o[c + k] = b0;
  }
}

// The taps of input pixel (row, col) of a stride-1 depthwise convolution with one output per
// channel, as the output pixels that read it: (i, j) = (row + pad_top - p·dh, col + pad_left - q·dw).
template <typename T, typename Body>
void for_each_reader(const ConvShape& s, Index row, Index col, Body&& body) {
  for (Index p = s.kh - 1; p >= 0; --p) {
    const Index i = row + s.pad_top - p * s.dh;
    if (i < 0 || i >= s.oh) continue;
    for (Index q = s.kw - 1; q >= 0; --q) {
      const Index j = col + s.pad_left - q * s.dw;
      if (j < 0 || j >= s.ow) continue;
      body(i * s.ow + j, p * s.kw + q);
    }
  }
}

// acc[0..n) += a[0..n) · b[0..n), a SIMD vector at a time.
template <typename T>
void multiply_add(const T* a, const T* b, Index n, T* acc) {
  using Packet = typename ei::packet_traits<T>::type;
  constexpr Index P = ei::unpacket_traits<Packet>::size;
  Index k = 0;
  for (; k + P <= n; k += P)
    ei::pstoreu(acc + k, ei::pmadd(ei::ploadu<Packet>(a + k), ei::ploadu<Packet>(b + k), ei::ploadu<Packet>(acc + k)));
  for (; k < n; ++k) acc[k] += a[k] * b[k];
}

// The output columns [*first, *last) whose tap column q falls inside the image.
void tap_columns(const ConvShape& s, Index q, Index* first, Index* last) {
  const Index offset = q * s.dw - s.pad_left;  // input column of output column 0
  const Index lo = offset >= 0 ? 0 : (-offset + s.sw - 1) / s.sw;
  const Index hi = s.w - 1 - offset < 0 ? 0 : std::min(s.ow, (s.w - 1 - offset) / s.sw + 1);
  *first = lo;
  *last = std::max(lo, hi);
}

// acc[k] += Σ_j x[j·x_step + k]·d[j·c + k] for j = 0..n-1, k < c: the sums stay in SIMD registers
// over the j loop, two vectors of channels at a time, the even and the odd j in separate sums
// (four independent chains of multiply-adds) added at the end.
template <typename T>
void accumulate_products(const T* x, Index x_step, const T* d, Index n, Index c, T* acc) {
  using Packet = typename ei::packet_traits<T>::type;
  constexpr Index P = ei::unpacket_traits<Packet>::size;
  Index k = 0;
  for (; k + 2 * P <= c; k += 2 * P) {
    Packet a0 = ei::ploadu<Packet>(acc + k), a1 = ei::ploadu<Packet>(acc + k + P);
    Packet b0 = ei::pset1<Packet>(T(0)), b1 = ei::pset1<Packet>(T(0));
    Index j = 0;
    for (; j + 2 <= n; j += 2) {
      const T* xv = x + j * x_step + k;
      const T* dv = d + j * c + k;
      a0 = ei::pmadd(ei::ploadu<Packet>(xv), ei::ploadu<Packet>(dv), a0);
      a1 = ei::pmadd(ei::ploadu<Packet>(xv + P), ei::ploadu<Packet>(dv + P), a1);
      b0 = ei::pmadd(ei::ploadu<Packet>(xv + x_step), ei::ploadu<Packet>(dv + c), b0);
      b1 = ei::pmadd(ei::ploadu<Packet>(xv + x_step + P), ei::ploadu<Packet>(dv + c + P), b1);
    }
    if (j < n) {
      const T* xv = x + j * x_step + k;
      const T* dv = d + j * c + k;
      a0 = ei::pmadd(ei::ploadu<Packet>(xv), ei::ploadu<Packet>(dv), a0);
      a1 = ei::pmadd(ei::ploadu<Packet>(xv + P), ei::ploadu<Packet>(dv + P), a1);
    }
    ei::pstoreu(acc + k, ei::padd(a0, b0));
    ei::pstoreu(acc + k + P, ei::padd(a1, b1));
  }
  for (; k + P <= c; k += P) {
    Packet a = ei::ploadu<Packet>(acc + k);
    for (Index j = 0; j < n; ++j)
      a = ei::pmadd(ei::ploadu<Packet>(x + j * x_step + k), ei::ploadu<Packet>(d + j * c + k), a);
    ei::pstoreu(acc + k, a);
  }
  for (; k < c; ++k) {
    T a = acc[k];
    for (Index j = 0; j < n; ++j) a += x[j * x_step + k] * d[j * c + k];
    acc[k] = a;
  }
}

// dw += the chunk's x · dz for one output per channel, tap by tap along each output row: each
// row's sum of a tap is kept in registers instead of going through memory at every pixel. The
// order of the additions depends on the shapes only, so the result does not depend on threads.
template <typename T>
void depthwise_kernel_gradient_m1(const ConvShape& s, const T* x, const T* dz, Index images, T* dw) {
  const Index c = s.c;
  for (Index img = 0; img < images; ++img) {
    const T* xi = x + img * s.h * s.w * c;
    for (Index i = 0; i < s.oh; ++i) {
      const T* drow = dz + (img * s.oh + i) * s.ow * c;
      for (Index p = 0; p < s.kh; ++p) {
        const Index row = i * s.sh + p * s.dh - s.pad_top;
        if (row < 0 || row >= s.h) continue;
        for (Index q = 0; q < s.kw; ++q) {
          Index first, last;
          tap_columns(s, q, &first, &last);
          if (first == last) continue;
          const T* xv = xi + (row * s.w + first * s.sw + q * s.dw - s.pad_left) * c;
          accumulate_products(xv, s.sw * c, drow + first * c, last - first, c, dw + (p * s.kw + q) * c);
        }
      }
    }
  }
}

// dx (overwritten) = the taps' dz · w for one output per channel, along each output row. Each
// element receives its terms in the same order as pixel by pixel (for stride and dilation >= 1, a
// later tap column meets the same input column at an earlier output column, hence q descending),
// but consecutive stores go to different elements, so they need not wait for each other.
template <typename T>
void depthwise_input_gradient_m1(const ConvShape& s, const T* w, const T* dz, Index images, T* dx) {
  const Index c = s.c;
  if (s.sh == 1 && s.sw == 1) {
    // Stride 1: each input pixel gathers its taps (output pixels i = row + pad - p·dh, j likewise)
    // in registers and is stored once, its terms added in the same order (p, q descending).
    auto inside = [&](Index col) {  // every tap column's output column exists
      return col < s.w && col + s.pad_left - (s.kw - 1) * s.dw >= 0 && col + s.pad_left < s.ow;
    };
    for (Index img = 0; img < images; ++img)
      for (Index row = 0; row < s.h; ++row)
        for (Index col = 0; col < s.w; ++col) {
          const T* dzi = dz + img * s.oh * s.ow * c;
          T* o = dx + ((img * s.h + row) * s.w + col) * c;
          auto readers = [&](auto&& body) { for_each_reader<T>(s, row, col, body); };
          if (inside(col) && inside(col + 1)) {
            gather_pixels<T, true>(readers, dzi, w, static_cast<const T*>(nullptr), c, 1, o);
            ++col;
          } else {
            gather_pixels<T, false>(readers, dzi, w, static_cast<const T*>(nullptr), c, 1, o);
          }
        }
    return;
  }
  std::fill(dx, dx + images * s.h * s.w * c, T(0));
  for (Index img = 0; img < images; ++img) {
    T* dxi = dx + img * s.h * s.w * c;
    for (Index i = 0; i < s.oh; ++i) {
      const T* drow = dz + (img * s.oh + i) * s.ow * c;
      for (Index p = 0; p < s.kh; ++p) {
        const Index row = i * s.sh + p * s.dh - s.pad_top;
        if (row < 0 || row >= s.h) continue;
        for (Index q = s.kw - 1; q >= 0; --q) {
          Index first, last;
          tap_columns(s, q, &first, &last);
          const T* wv = w + (p * s.kw + q) * c;
          for (Index j = first; j < last; ++j)
            multiply_add(drow + j * c, wv, c, dxi + (row * s.w + j * s.sw + q * s.dw - s.pad_left) * c);
        }
      }
    }
  }
}

// z (images of one chunk) = depthwise conv + bias.
template <typename T>
void depthwise_forward(const ConvShape& s, const T* x, const T* w, const T* bias, Index images, T* out) {
  const Index f = s.f, m = s.group_f(), c = s.c;
  for (Index img = 0; img < images; ++img) {
    const T* xi = x + img * s.h * s.w * c;
    for (Index i = 0; i < s.oh; ++i)
      for (Index j = 0; j < s.ow; ++j) {
        T* o = out + ((img * s.oh + i) * s.ow + j) * f;
        if (m == 1) {
          // Output columns whose taps all fall inside the image go two at a time.
          auto inside = [&](Index jj) {
            return jj < s.ow && jj * s.sw - s.pad_left >= 0 && jj * s.sw + (s.kw - 1) * s.dw - s.pad_left < s.w;
          };
          auto taps = [&](auto&& body) { for_each_tap<T>(s, i, j, body); };
          if (inside(j) && inside(j + 1)) {
            gather_pixels<T, true>(taps, xi, w, bias, c, s.sw, o);
            ++j;
          } else {
            gather_pixels<T, false>(taps, xi, w, bias, c, s.sw, o);
          }
          continue;
        }
        for (Index k = 0; k < f; ++k) o[k] = bias ? bias[k] : T(0);
        for_each_tap<T>(s, i, j, [&](Index pos, Index tap) {
          const T* xv = xi + pos * c;
          const T* wv = w + tap * f;
          for (Index g = 0; g < c; ++g)
            for (Index k = 0; k < m; ++k) o[g * m + k] += xv[g] * wv[g * m + k];
        });
      }
  }
}

// dw (kh × kw × 1 × f) += Σ over the chunk's pixels of x · dz, in pixel order.
template <typename T>
void depthwise_kernel_gradient(const ConvShape& s, const T* x, const T* dz, Index images, T* dw) {
  const Index f = s.f, m = s.group_f(), c = s.c;
  if (m == 1) return depthwise_kernel_gradient_m1(s, x, dz, images, dw);
  for (Index img = 0; img < images; ++img) {
    const T* xi = x + img * s.h * s.w * c;
    for (Index i = 0; i < s.oh; ++i)
      for (Index j = 0; j < s.ow; ++j) {
        const T* d = dz + ((img * s.oh + i) * s.ow + j) * f;
        for_each_tap<T>(s, i, j, [&](Index pos, Index tap) {
          const T* xv = xi + pos * c;
          T* g = dw + tap * f;
          for (Index ch = 0; ch < c; ++ch)
            for (Index k = 0; k < m; ++k) g[ch * m + k] += xv[ch] * d[ch * m + k];
        });
      }
  }
}

// dx of the chunk's images (overwritten) = the taps' dz · w, added in pixel order.
template <typename T>
void depthwise_input_gradient(const ConvShape& s, const T* w, const T* dz, Index images, T* dx) {
  const Index f = s.f, m = s.group_f(), c = s.c;
  if (m == 1) return depthwise_input_gradient_m1(s, w, dz, images, dx);
  std::fill(dx, dx + images * s.h * s.w * c, T(0));
  for (Index img = 0; img < images; ++img) {
    T* dxi = dx + img * s.h * s.w * c;
    for (Index i = 0; i < s.oh; ++i)
      for (Index j = 0; j < s.ow; ++j) {
        const T* d = dz + ((img * s.oh + i) * s.ow + j) * f;
        for_each_tap<T>(s, i, j, [&](Index pos, Index tap) {
          T* g = dxi + pos * c;
          const T* wv = w + tap * f;
          for (Index ch = 0; ch < c; ++ch) {
            T sum = 0;
            for (Index k = 0; k < m; ++k) sum += d[ch * m + k] * wv[ch * m + k];
            g[ch] += sum;
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
