// Image warp kernels (see fastnn/image.hpp).
#include "fastnn/image.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace fastnn {
namespace {

// Coordinates at or beyond this magnitude (and NaN) read fill_value: below it floor() and
// the tap index +1 fit an int64 exactly.
constexpr double kMaxCoordinate = 2305843009213693952.0;  // 2^61

// Output values per forward task: a few rows of a large image, or a whole small one.
constexpr Index kValuesPerTask = Index(1) << 13;

// The index an integer tap i reads along an axis of n pixels, or -1 for fill_value. Taps
// within one image size of the edge (all but extreme transforms) need no division.
inline Index resolve(Index i, Index n, FillMode mode) {
  if (i >= 0 && i < n) return i;
  switch (mode) {
    case FillMode::Constant:
      return -1;
    case FillMode::Nearest:
      return i < 0 ? 0 : n - 1;
    case FillMode::Wrap: {
      if (i >= -n && i < 2 * n) return i < 0 ? i + n : i - n;
      const Index m = i % n;
      return m < 0 ? m + n : m;
    }
    case FillMode::Reflect: {  // period 2n: a b c d d c b a
      if (i >= -n && i < 2 * n) return i < 0 ? -1 - i : 2 * n - 1 - i;
      const Index p = 2 * n;
      Index m = i % p;
      if (m < 0) m += p;
      return m < n ? m : p - 1 - m;
    }
    case FillMode::Mirror: {  // period 2n - 2: a b c d c b
      if (n == 1) return 0;
      if (i > -n && i < 2 * n - 1) return i < 0 ? -i : 2 * n - 2 - i;
      const Index p = 2 * n - 2;
      Index m = i % p;
      if (m < 0) m += p;
      return m < n ? m : p - m;
    }
  }
  return -1;
}

// Costs in the "flops" of threads_for, i.e. scaled so that its threshold falls where a
// second thread starts to pay. Measured on the 2-core Zen 4 (threads awake, 28×28×1 and
// 32×32×3 images): a warp of 2 images (~8 µs) is 1.4x faster on 2 threads, one image is
// not worth it; the contrast adjustment pays from ~5 µs (8×28×28×1), its backward from
// ~4 µs; a flip (a copy) only from ~15 µs (8×32×32×3).
inline double warp_cost(const WarpShape& s) {
  return double(s.n) * double(s.out_h) * double(s.out_w) * (1000.0 + 100.0 * double(s.channels));
}
constexpr double kContrastCost = 250.0, kContrastBackwardCost = 300.0, kFlipCost = 60.0;  // per value

// The taps of one output pixel: up to four pixel pointers (into the image, or at the fill
// pixel / gradient sink when a tap falls outside in constant mode) and their weights.
template <typename T>
struct Taps {
  const T* p[4];
  T w[4];
  int count;  // 0: the pixel is fill_value (coordinate NaN or beyond 2^61), 1: nearest, 4: bilinear
};

template <typename T>
class Sampler {
 public:
  Sampler(const double* t, const WarpShape& s, Interpolation interpolation, FillMode mode,
          const T* outside)
      : t_(t),
        projective_(t[6] != 0.0 || t[7] != 0.0),
        in_h_(s.in_h),
        in_w_(s.in_w),
        row_(s.in_w * s.channels),
        channels_(s.channels),
        bilinear_(interpolation == Interpolation::Bilinear),
        mode_(mode),
        outside_(outside) {}

  // Taps of output pixel (x, y) of an image starting at `image`.
  void taps(const T* image, Index x, Index y, Taps<T>& out) const {
    const double xd = double(x), yd = double(y);
    double sx = t_[0] * xd + t_[1] * yd + t_[2];
    double sy = t_[3] * xd + t_[4] * yd + t_[5];
    if (projective_) {
      const double k = t_[6] * xd + t_[7] * yd + 1.0;
      sx /= k;
      sy /= k;
    }
    if (!(std::abs(sx) < kMaxCoordinate && std::abs(sy) < kMaxCoordinate)) {
      out.count = 0;
      return;
    }
    if (!bilinear_) {
      out.count = 1;
      out.p[0] = pixel(image, Index(std::round(sx)), Index(std::round(sy)));
      out.w[0] = T(1);
      return;
    }
    const double fx = std::floor(sx), fy = std::floor(sy);
    const T wx = T(sx - fx), wy = T(sy - fy);
    const Index ix = Index(fx), iy = Index(fy);
    out.count = 4;
    if (ix >= 0 && ix < in_w_ - 1 && iy >= 0 && iy < in_h_ - 1) {  // all four inside
      const T* p = image + iy * row_ + ix * channels_;
      out.p[0] = p;
      out.p[1] = p + channels_;
      out.p[2] = p + row_;
      out.p[3] = p + row_ + channels_;
    } else {
      const Index x0 = resolve(ix, in_w_, mode_), x1 = resolve(ix + 1, in_w_, mode_);
      const Index y0 = resolve(iy, in_h_, mode_), y1 = resolve(iy + 1, in_h_, mode_);
      out.p[0] = at(image, x0, y0);
      out.p[1] = at(image, x1, y0);
      out.p[2] = at(image, x0, y1);
      out.p[3] = at(image, x1, y1);
    }
    out.w[0] = (T(1) - wy) * (T(1) - wx);
    out.w[1] = (T(1) - wy) * wx;
    out.w[2] = wy * (T(1) - wx);
    out.w[3] = wy * wx;
  }

 private:
  const T* pixel(const T* image, Index ix, Index iy) const {
    return at(image, resolve(ix, in_w_, mode_), resolve(iy, in_h_, mode_));
  }
  const T* at(const T* image, Index x, Index y) const {
    return (x < 0 || y < 0) ? outside_ : image + y * row_ + x * channels_;
  }

  const double* t_;
  bool projective_;
  Index in_h_, in_w_, row_, channels_;
  bool bilinear_;
  FillMode mode_;
  const T* outside_;
};

// out[0, C) = Σ w_k·p_k[0, C): kC is the channel count when known at compile time (0: c).
template <int kC, typename T>
inline void blend(const Taps<T>& taps, T* __restrict out, Index c) {
  const Index channels = kC > 0 ? kC : c;
  if (taps.count == 1) {
    for (Index i = 0; i < channels; ++i) out[i] = taps.p[0][i];
    return;
  }
  const T *p0 = taps.p[0], *p1 = taps.p[1], *p2 = taps.p[2], *p3 = taps.p[3];
  const T w0 = taps.w[0], w1 = taps.w[1], w2 = taps.w[2], w3 = taps.w[3];
  for (Index i = 0; i < channels; ++i) out[i] = w0 * p0[i] + w1 * p1[i] + w2 * p2[i] + w3 * p3[i];
}

// p_k[0, C) += w_k·g[0, C), tap after tap (two taps may be the same pixel).
template <int kC, typename T>
inline void scatter(const Taps<T>& taps, const T* g, Index c) {
  const Index channels = kC > 0 ? kC : c;
  for (int k = 0; k < taps.count; ++k) {
    T* p = const_cast<T*>(taps.p[k]);
    const T w = taps.w[k];
    for (Index i = 0; i < channels; ++i) p[i] += w * g[i];
  }
}

// ---- the vectorised bilinear path ----------------------------------------------------------
// For bilinear warps of images of at least 2×2 pixels, a task's pixels are taken in chunks of
// kChunk consecutive pixels (rows run on into the next), each in three loops: (1) the
// coordinates, weights and top-left tap offset of every pixel, and whether its four taps
// are inside the image (vectorised across pixels); (2) the blend of every pixel from its
// offset; (3) the pixels not inside again, through the Sampler. (1) computes exactly what
// the Sampler does, so a pixel's value does not depend on the loop that produced it. Chunks
// rather than rows: the vector loops' scalar remainders cost as much as the rest on
// 28-pixel rows. (Gathers for one channel measured no faster than the scalar blend.)
constexpr Index kChunk = 256;
constexpr Index kLanes = 16;  // (1) runs over a multiple of this many pixels

template <typename T>
struct Chunk {
  alignas(64) double x[kChunk], y[kChunk];
  alignas(64) int32_t offset[kChunk];
  alignas(64) T w0[kChunk], w1[kChunk], w2[kChunk], w3[kChunk];
  alignas(64) uint8_t inside[kChunk];
};

template <bool kProjective, typename T>
void chunk_taps(const double* t, Index count, Index in_h, Index in_w, Index c, Chunk<T>& k) {
  const double* __restrict xs = k.x;
  const double* __restrict ys = k.y;
  int32_t* __restrict offset = k.offset;
  uint8_t* __restrict inside = k.inside;
  T* __restrict w0 = k.w0;
  T* __restrict w1 = k.w1;
  T* __restrict w2 = k.w2;
  T* __restrict w3 = k.w3;
  const double t0 = t[0], t1 = t[1], t2 = t[2], t3 = t[3], t4 = t[4], t5 = t[5], t6 = t[6],
               t7 = t[7];
  // Coordinates are clamped to [-2, size + 1] before the integer conversion (beyond that a
  // pixel is not inside anyway, and converting a huge or NaN value is undefined).
  const double hi_x = double(in_w) + 1.0, hi_y = double(in_h) + 1.0;
  const int32_t last_x = int32_t(in_w - 1), last_y = int32_t(in_h - 1);
  const int32_t row = int32_t(in_w * c), ci = int32_t(c);
  for (Index i = 0; i < count; ++i) {
    double sx = t0 * xs[i] + t1 * ys[i] + t2;
    double sy = t3 * xs[i] + t4 * ys[i] + t5;
    if (kProjective) {
      const double d = t6 * xs[i] + t7 * ys[i] + 1.0;
      sx /= d;
      sy /= d;
    }
    // std::max(-2.0, NaN) is -2.0; no branches, so that the loop vectorises.
    const double cx = std::min(std::max(-2.0, sx), hi_x);
    const double cy = std::min(std::max(-2.0, sy), hi_y);
    const double fx = std::floor(cx), fy = std::floor(cy);
    const int32_t ix = int32_t(fx), iy = int32_t(fy);
    const int32_t in = int32_t(ix >= 0) & int32_t(ix < last_x) & int32_t(iy >= 0) & int32_t(iy < last_y);
    inside[i] = uint8_t(in);
    offset[i] = (iy * row + ix * ci) * in;
    const T wx = T(cx - fx), wy = T(cy - fy);
    w0[i] = (T(1) - wy) * (T(1) - wx);
    w1[i] = (T(1) - wy) * wx;
    w2[i] = wy * (T(1) - wx);
    w3[i] = wy * wx;
  }
}

// Blends `count` pixels from their top-left tap offsets (pixels not inside read the image's
// first 2×2 pixels; the caller overwrites them).
template <int kC, typename T>
void chunk_blend(const T* __restrict image, Index count, Index row, Index c, const Chunk<T>& k,
                 T* __restrict out) {
  const int32_t* __restrict offset = k.offset;
  const T* __restrict w0 = k.w0;
  const T* __restrict w1 = k.w1;
  const T* __restrict w2 = k.w2;
  const T* __restrict w3 = k.w3;
  const Index channels = kC > 0 ? kC : c;
  for (Index i = 0; i < count; ++i) {
    const T* p0 = image + offset[i];
    const T *p1 = p0 + channels, *p2 = p0 + row, *p3 = p0 + row + channels;
    const T a = w0[i], b = w1[i], d = w2[i], e = w3[i];
    T* o = out + i * channels;
    for (Index j = 0; j < channels; ++j) o[j] = a * p0[j] + b * p1[j] + d * p2[j] + e * p3[j];
  }
}

template <int kC, typename T>
void forward_impl(const T* images, const double* transforms, T* out, const WarpShape& s,
                  Interpolation interpolation, FillMode mode, T fill_value) {
  const Index c = s.channels;
  const std::vector<T> fill(size_t(c > 0 ? c : 1), fill_value);
  const Index row_values = s.out_w * c;
  const Index rows_per_task =
      row_values >= kValuesPerTask ? 1 : (kValuesPerTask + row_values - 1) / row_values;
  const Index blocks = (s.out_h + rows_per_task - 1) / rows_per_task;
  const bool bilinear = interpolation == Interpolation::Bilinear;
  const bool vector_path = bilinear && s.in_h >= 2 && s.in_w >= 2 &&
                           double(s.in_h + 3) * double(s.in_w + 3) * double(c) < 2147483647.0;
  parallel_for(s.n * blocks, threads_for(warp_cost(s)), [&](Index task) {
    const Index n = task / blocks, y_begin = (task % blocks) * rows_per_task;
    const Index y_end = y_begin + rows_per_task < s.out_h ? y_begin + rows_per_task : s.out_h;
    const T* image = images + n * s.in_h * s.in_w * c;
    const double* t = transforms + 8 * n;
    T* task_out = out + (n * s.out_h + y_begin) * row_values;
    const Sampler<T> sampler(t, s, interpolation, mode, fill.data());
    Taps<T> taps;
    auto sample = [&](Index x, Index y, T* o) {
      sampler.taps(image, x, y, taps);
      if (taps.count == 0) {
        for (Index i = 0; i < c; ++i) o[i] = fill_value;
      } else {
        blend<kC>(taps, o, c);
      }
    };
    if (!vector_path) {
      T* o = task_out;
      for (Index y = y_begin; y < y_end; ++y)
        for (Index x = 0; x < s.out_w; ++x, o += c) sample(x, y, o);
      return;
    }
    Chunk<T> k;
    const bool projective = t[6] != 0.0 || t[7] != 0.0;
    const Index pixels = (y_end - y_begin) * s.out_w;
    Index x = 0, y = y_begin;  // of the chunk's first pixel
    for (Index first = 0; first < pixels; first += kChunk) {
      const Index count = std::min(kChunk, pixels - first);
      const Index padded = std::min(kChunk, (count + kLanes - 1) / kLanes * kLanes);
      for (Index i = 0, cx = x, cy = y; i < padded; cx = 0, ++cy) {  // the pixels' (x, y), row by row
        const Index run = std::min(padded - i, s.out_w - cx);
        const double yd = double(cy);
        for (Index j = 0; j < run; ++j) {
          k.x[i + j] = double(cx + j);
          k.y[i + j] = yd;
        }
        i += run;
      }
      if (projective)
        chunk_taps<true>(t, padded, s.in_h, s.in_w, c, k);
      else
        chunk_taps<false>(t, padded, s.in_h, s.in_w, c, k);
      T* o = task_out + first * c;
      chunk_blend<kC>(image, count, s.in_w * c, c, k, o);
      for (Index i = 0; i < count; ++i)
        if (!k.inside[i]) sample(Index(k.x[i]), Index(k.y[i]), o + i * c);
      x += count % s.out_w;
      y += count / s.out_w;
      if (x >= s.out_w) x -= s.out_w, ++y;
    }
  });
}

template <int kC, typename T>
void backward_impl(const T* dy, const double* transforms, T* dx, const WarpShape& s,
                   Interpolation interpolation, FillMode mode) {
  const Index c = s.channels;
  const Index in_values = s.in_h * s.in_w * c, out_values = s.out_h * s.out_w * c;
  parallel_for(s.n, threads_for(warp_cost(s)), [&](Index n) {
    T* image = dx + n * in_values;
    for (Index i = 0; i < in_values; ++i) image[i] = T(0);
    std::vector<T> sink(size_t(c > 0 ? c : 1));  // taps that read fill_value
    const Sampler<T> sampler(transforms + 8 * n, s, interpolation, mode, sink.data());
    const T* g = dy + n * out_values;
    Taps<T> taps;
    for (Index y = 0; y < s.out_h; ++y) {
      for (Index x = 0; x < s.out_w; ++x, g += c) {
        sampler.taps(image, x, y, taps);
        scatter<kC>(taps, g, c);
      }
    }
  });
}

// ---- contrast --------------------------------------------------------------------------------
// Sums of an image's values per channel, in float64: the values are read in blocks of L = u·c
// (u = 64 / c pixels, at least one), each position of a block summed into its own
// accumulator, then the accumulators of a channel added. The order is fixed by the shape.
inline Index contrast_block(Index c) { return c * std::max<Index>(1, 64 / c); }

template <typename T>
void channel_sums(const T* x, Index values, Index c, double* acc, Index block, double* sums) {
  for (Index j = 0; j < block; ++j) acc[j] = 0.0;
  Index i = 0;
  for (; i + block <= values; i += block)
    for (Index j = 0; j < block; ++j) acc[j] += double(x[i + j]);
  for (Index j = 0; i + j < values; ++j) acc[j] += double(x[i + j]);
  for (Index k = 0; k < c; ++k) sums[k] = 0.0;
  for (Index j = 0; j < block; ++j) sums[j % c] += acc[j];
}

// Keras' contrast formula (its rounding, too).
template <typename T>
inline T contrast_value(T x, T m, T f) {
  return (x - m) * f + m;
}

template <typename T>
inline T clip(T z, T low, T high) {
  return z < low ? low : (z > high ? high : z);  // NaN stays NaN
}

// Per-image scratch: accumulators, channel sums, the block's repeated means.
struct ContrastScratch {
  std::vector<double> acc, sums;
  explicit ContrastScratch(Index block, Index c) : acc(size_t(block)), sums(size_t(c)) {}
};

template <typename T>
void repeated_means(const T* x, Index pixels, Index c, Index block, ContrastScratch& s, T* means) {
  channel_sums(x, pixels * c, c, s.acc.data(), block, s.sums.data());
  for (Index j = 0; j < block; ++j) means[j] = T(s.sums[j % c] / double(pixels));
}

}  // namespace

template <typename T>
void affine_transform_forward(const T* images, const double* transforms, T* out,
                              const WarpShape& shape, Interpolation interpolation,
                              FillMode fill_mode, T fill_value) {
  if (shape.n == 0 || shape.out_h == 0 || shape.out_w == 0 || shape.channels == 0) return;
  switch (shape.channels) {
    case 1:
      return forward_impl<1>(images, transforms, out, shape, interpolation, fill_mode, fill_value);
    case 3:
      return forward_impl<3>(images, transforms, out, shape, interpolation, fill_mode, fill_value);
    default:
      return forward_impl<0>(images, transforms, out, shape, interpolation, fill_mode, fill_value);
  }
}

template <typename T>
void affine_transform_backward(const T* dy, const double* transforms, T* dx,
                               const WarpShape& shape, Interpolation interpolation,
                               FillMode fill_mode) {
  if (shape.n == 0 || shape.channels == 0 || shape.in_h == 0 || shape.in_w == 0) return;
  switch (shape.channels) {
    case 1:
      return backward_impl<1>(dy, transforms, dx, shape, interpolation, fill_mode);
    case 3:
      return backward_impl<3>(dy, transforms, dx, shape, interpolation, fill_mode);
    default:
      return backward_impl<0>(dy, transforms, dx, shape, interpolation, fill_mode);
  }
}

template <typename T>
void flip_images(const T* x, const uint8_t* horizontal, const uint8_t* vertical, T* y, Index n,
                 Index h, Index w, Index c) {
  const Index row = w * c, image = h * row;
  parallel_for(n, threads_for(kFlipCost * double(n) * double(image)), [&](Index i) {
    const T* src = x + i * image;
    T* dst = y + i * image;
    const bool reverse_columns = horizontal[i] != 0, reverse_rows = vertical[i] != 0;
    for (Index r = 0; r < h; ++r) {
      const T* in = src + (reverse_rows ? h - 1 - r : r) * row;
      T* out = dst + r * row;
      if (!reverse_columns) {
        if (row) std::memcpy(out, in, size_t(row) * sizeof(T));
      } else if (c == 1) {
        for (Index k = 0; k < w; ++k) out[k] = in[w - 1 - k];
      } else {
        for (Index k = 0; k < w; ++k) std::memcpy(out + k * c, in + (w - 1 - k) * c, size_t(c) * sizeof(T));
      }
    }
  });
}

template <typename T>
void contrast_forward(const T* x, const T* factors, T* y, Index n, Index pixels, Index c, T low,
                      T high) {
  if (c == 0 || pixels == 0) return;
  const Index values = pixels * c, block = contrast_block(c);
  parallel_for(n, threads_for(kContrastCost * double(n) * double(values)), [&](Index i) {
    ContrastScratch scratch(block, c);
    std::vector<T> means(static_cast<size_t>(block));
    const T* in = x + i * values;
    T* out = y + i * values;
    repeated_means(in, pixels, c, block, scratch, means.data());
    const T f = factors[i];
    const T* m = means.data();
    Index v = 0;
    for (; v + block <= values; v += block)
      for (Index j = 0; j < block; ++j) out[v + j] = clip(contrast_value(in[v + j], m[j], f), low, high);
    for (Index j = 0; v + j < values; ++j) out[v + j] = clip(contrast_value(in[v + j], m[j], f), low, high);
  });
}

template <typename T>
void contrast_backward(const T* x, const T* dy, const T* factors, T* dx, Index n, Index pixels,
                       Index c, T low, T high) {
  if (c == 0 || pixels == 0) return;
  const Index values = pixels * c, block = contrast_block(c);
  parallel_for(n, threads_for(kContrastBackwardCost * double(n) * double(values)), [&](Index i) {
    ContrastScratch scratch(block, c);
    std::vector<T> means(static_cast<size_t>(block));
    const T* in = x + i * values;
    const T* g = dy + i * values;
    T* out = dx + i * values;
    repeated_means(in, pixels, c, block, scratch, means.data());
    const T f = factors[i];
    const T* m = means.data();
    // dx = g masked by the clip (the same z as the forward pass computed) ...
    auto masked = [&](Index v, Index j) {
      const T z = contrast_value(in[v + j], m[j], f);
      return (z >= low && z <= high) ? g[v + j] : T(0);
    };
    Index v = 0;
    for (; v + block <= values; v += block)
      for (Index j = 0; j < block; ++j) out[v + j] = masked(v, j);
    for (Index j = 0; v + j < values; ++j) out[v + j] = masked(v, j);
    // ... then c·g + (1 - c)·mean(g), mean(g) per channel.
    std::vector<T> g_means(static_cast<size_t>(block));
    repeated_means(out, pixels, c, block, scratch, g_means.data());
    const T* gm = g_means.data();
    const T one_minus_f = T(1) - f;
    v = 0;
    for (; v + block <= values; v += block)
      for (Index j = 0; j < block; ++j) out[v + j] = f * out[v + j] + one_minus_f * gm[j];
    for (Index j = 0; v + j < values; ++j) out[v + j] = f * out[v + j] + one_minus_f * gm[j];
  });
}

template void affine_transform_forward<float>(const float*, const double*, float*,
                                              const WarpShape&, Interpolation, FillMode, float);
template void affine_transform_forward<double>(const double*, const double*, double*,
                                               const WarpShape&, Interpolation, FillMode, double);
template void affine_transform_backward<float>(const float*, const double*, float*,
                                               const WarpShape&, Interpolation, FillMode);
template void affine_transform_backward<double>(const double*, const double*, double*,
                                                const WarpShape&, Interpolation, FillMode);

template void flip_images<float>(const float*, const uint8_t*, const uint8_t*, float*, Index, Index,
                                  Index, Index);
template void flip_images<double>(const double*, const uint8_t*, const uint8_t*, double*, Index,
                                   Index, Index, Index);
template void contrast_forward<float>(const float*, const float*, float*, Index, Index, Index, float,
                                      float);
template void contrast_forward<double>(const double*, const double*, double*, Index, Index, Index,
                                       double, double);
template void contrast_backward<float>(const float*, const float*, const float*, float*, Index,
                                       Index, Index, float, float);
template void contrast_backward<double>(const double*, const double*, const double*, double*,
                                        Index, Index, Index, double, double);

}  // namespace fastnn
