// Pooling, zero-padding and upsampling kernels (see fastnn/pool.hpp).
//
// Channels are the contiguous axis, so every inner loop runs over a block of channels
// with a compile-time width (vectorised, values in registers); the loops above it walk
// windows and rows, unrolled for the interior windows of 2×2 and 3×3 pools. Tasks are
// blocks of whole rows (output rows forward, input rows backward) whose size depends on
// the shape only.
//
// Measured on 64×28×28×32 float32, 2×2 max pooling, 1 thread: storing int32 argmax in the
// forward pass and reading it back costs the same as recomputing the first maximum from
// x and y in the backward pass (0.43-0.59 ms against 0.46-0.61 ms for forward +
// backward, the recomputing version specialised to this shape); argmax is kept: the
// backward pass then needs neither x nor y, and overlapping windows stay simple.
#include "fastnn/pool.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <limits>
#include <type_traits>

namespace fastnn {
namespace {

constexpr double kTaskCost = 32768;  // values touched per task: a few microseconds

// body(row) for row in [0, rows), on blocks of rows fixed by the shape. Each row's result
// depends on that row alone, so neither the blocks nor the threads change the values.
template <typename Body>
void for_rows(Index rows, double cost_per_row, Body&& body) {
  if (rows <= 0) return;
  const double cost = std::max(cost_per_row, 1.0);
  const Index per_task = std::max<Index>(1, Index(kTaskCost / cost));
  const Index tasks = (rows + per_task - 1) / per_task;
  parallel_for(tasks, threads_for(cost * double(rows)), [&](Index t) {
    const Index end = std::min(rows, (t + 1) * per_task);
    for (Index r = t * per_task; r < end; ++r) body(r);
  });
}

// In-bounds part [lo, hi) of a window of size k starting at `start` in an axis of size n.
inline void clip_window(Index start, Index k, Index n, Index& lo, Index& hi) {
  lo = std::max<Index>(0, -start);
  hi = std::min<Index>(k, n - start);
}

// Output positions whose window (start o·s - pad, size k) covers input position i:
// [first, last], empty when first > last.
inline void covering(Index i, Index k, Index s, Index pad, Index out, Index& first, Index& last) {
  const Index num = i + pad - k + 1;  // o·s >= num
  first = num <= 0 ? 0 : (num + s - 1) / s;
  last = std::min<Index>(out - 1, (i + pad) / s);
}

// ---- channel loops ------------------------------------------------------------------------

template <typename T>
inline void copy_values(const T* __restrict x, T* __restrict y, Index n) {
  for (Index c = 0; c < n; ++c) y[c] = x[c];
}

template <typename T>
inline void fill_zero(T* __restrict y, Index n) {
  for (Index c = 0; c < n; ++c) y[c] = T(0);
}

template <typename T>
inline void add_values(const T* __restrict x, T* __restrict y, Index n) {
  for (Index c = 0; c < n; ++c) y[c] += x[c];
}

inline void fill_index(int32_t* __restrict a, int32_t key, Index n) {
  for (Index c = 0; c < n; ++c) a[c] = key;
}

// The running maximum takes v when v > best, or when v is NaN and best is not: "not
// (v <= best)" is true for both, and "best == best" keeps the first NaN.
template <typename T>
inline bool takes(T v, T best) {
  return !(v <= best) & (best == best);
}

template <typename T>
inline void max_update(const T* __restrict x, T* __restrict y, Index n) {
  for (Index c = 0; c < n; ++c) {
    const T v = x[c], b = y[c];
    y[c] = takes(v, b) ? v : b;
  }
}

template <typename T>
inline void max_update_index(const T* __restrict x, T* __restrict y, int32_t* __restrict a,
                             int32_t key, Index n) {
  for (Index c = 0; c < n; ++c) {
    const T v = x[c], b = y[c];
    const bool m = takes(v, b);
    y[c] = m ? v : b;
    a[c] = m ? key : a[c];
  }
}

// dx = (a == key) ? g : 0.
template <typename T>
inline void route_set(const int32_t* __restrict a, const T* __restrict g, T* __restrict d,
                      int32_t key, Index n) {
  for (Index c = 0; c < n; ++c) d[c] = a[c] == key ? g[c] : T(0);
}

template <typename T>
inline void scale_set(const T* __restrict g, T* __restrict d, T scale, Index n) {
  for (Index c = 0; c < n; ++c) d[c] = g[c] * scale;
}

template <typename T>
inline void divide_by(T* __restrict y, T count, Index n) {
  for (Index c = 0; c < n; ++c) y[c] /= count;
}

// Runs f(c, width) over the channels in blocks: width is a compile-time constant (a
// std::integral_constant), so the loops over a block become a few vector instructions
// whose values stay in registers. Blocks of 128 bytes, then 32, then single channels.
// The loops over window positions run inside f, so a block's setup is paid once a row.
template <typename T, typename F>
inline void channel_blocks(Index channels, F&& f) {
  constexpr Index kWide = 128 / sizeof(T), kNarrow = 32 / sizeof(T);
  Index c = 0;
  for (; c + kWide <= channels; c += kWide) f(c, std::integral_constant<Index, kWide>());
  for (; c + kNarrow <= channels; c += kNarrow) f(c, std::integral_constant<Index, kNarrow>());
  for (; c < channels; ++c) f(c, std::integral_constant<Index, 1>());
}

// Loops over the channels of a block. "omp simd" keeps the compiler from unrolling a
// short block into scalar code before it vectorises it.
#define FASTNN_BLOCK_LOOP(k, B) _Pragma("omp simd") for (Index k = 0; k < (B); ++k)

// body(n, o_row, h0, nr) for every output row (n, i): o_row = (n·out_h + i)·out_w is the
// flat index of its first position; rows [h0, h0 + nr) of the input are in its windows.
template <typename Body>
void for_output_rows(const Pool2D& p, Body&& body) {
  const double cost = double(p.out_w) * double(p.channels) * double(p.pool_h * p.pool_w);
  for_rows(p.batch * p.out_h, cost, [&](Index ni) {
    const Index top = (ni % p.out_h) * p.stride_h - p.pad_top;
    Index r0, r1;
    clip_window(top, p.pool_h, p.in_h, r0, r1);
    body(ni / p.out_h, ni * p.out_w, top + r0, r1 - r0);
  });
}

// The in-bounds columns [w0, w0 + nq) of the window of output column j.
inline void window_columns(const Pool2D& p, Index j, Index& w0, Index& nq) {
  const Index left = j * p.stride_w - p.pad_left;
  Index q0, q1;
  clip_window(left, p.pool_w, p.in_w, q0, q1);
  w0 = left + q0;
  nq = q1 - q0;
}

// Builds dx one input row at a time. For input row (n, h), each channel block and each
// window covering the row in increasing (i, j): share(width, set, o, h, w0, nq, count, d,
// c) writes (set) or adds window o's shares for the positions (h, w0 + q), q < nq, into
// the blocks of channels [c, c + width) at d + q·C (count: the window's in-bounds
// positions). When exactly one window row covers h and windows do not overlap across the
// width, each position receives at most one share and is written; otherwise the row is
// zeroed and the shares are added, in that fixed order.
template <typename T, typename Share>
void gather_backward(const Pool2D& p, T* dx, Share&& share) {
  const Index C = p.channels, W = p.in_w, row = W * C;
  const bool disjoint_w = p.stride_w >= p.pool_w;
  // Columns past the last window ('valid' leaves up to stride - 1 of them).
  const Index covered_end =
      p.out_w ? std::min<Index>(W, (p.out_w - 1) * p.stride_w - p.pad_left + p.pool_w) : 0;
  const double cost = double(row) * double((p.pool_h + p.stride_h - 1) / p.stride_h) *
                      double((p.pool_w + p.stride_w - 1) / p.stride_w);
  for_rows(p.batch * p.in_h, cost, [&](Index nh) {
    const Index n = nh / p.in_h, h = nh % p.in_h;
    T* d = dx + nh * row;
    Index i0, i1;
    covering(h, p.pool_h, p.stride_h, p.pad_top, p.out_h, i0, i1);
    if (i0 > i1 || p.out_w == 0) {
      fill_zero(d, row);
      return;
    }
    const bool set = i0 == i1 && disjoint_w;
    if (!set || p.stride_w > p.pool_w)
      fill_zero(d, row);  // shares to add up, or gaps between windows
    else
      fill_zero(d + covered_end * C, row - covered_end * C);
    auto walk = [&](auto set_tag) {
      channel_blocks<T>(C, [&](Index c, auto width) {
        for (Index i = i0; i <= i1; ++i) {
          const Index o_row = (n * p.out_h + i) * p.out_w;
          Index r0, r1;
          clip_window(i * p.stride_h - p.pad_top, p.pool_h, p.in_h, r0, r1);
          for (Index j = 0; j < p.out_w; ++j) {
            Index w0, nq;
            window_columns(p, j, w0, nq);
            share(width, set_tag, o_row + j, h, w0, nq, (r1 - r0) * nq, d + w0 * C + c, c);
          }
        }
      });
    };
    if (set)
      walk(std::true_type());
    else
      walk(std::false_type());
  });
}

// The maximum of one window over a block of B channels and, with kIndex, the key
// (h·W + w) of its first maximum. It starts from the window's first position, so a
// window of -inf values reports that position; NaN, once taken, stays (takes() is false
// against NaN). KH, KW > 0: a compile-time extent (interior windows of common pool
// sizes: the loops unroll); 0: nr × nq at run time. Key is the type the keys are carried
// in: T where they are exact (float: images of at most 2^24 positions), so that their
// selects have the values' vector width (~10 % faster than int32), else int32_t.
template <typename T, typename Key, Index B, bool kIndex, int KH, int KW>
inline void max_window(const T* __restrict xw, Index W, Index C, Index nr, Index nq, int32_t key0,
                       T* __restrict yo, int32_t* __restrict ao) {
  const Index rows = KH ? KH : nr, cols = KW ? KW : nq;
  T best[B];
  Key index[B];
  FASTNN_BLOCK_LOOP(k, B) {
    best[k] = xw[k];
    if constexpr (kIndex) index[k] = Key(key0);
  }
  for (Index r = 0; r < rows; ++r)
    for (Index q = r == 0 ? 1 : 0; q < cols; ++q) {
      const T* xi = xw + (r * W + q) * C;
      const Key key = Key(key0 + int32_t(r * W + q));
      FASTNN_BLOCK_LOOP(k, B) {
        const T v = xi[k];
        const bool m = takes(v, best[k]);
        best[k] = m ? v : best[k];
        if constexpr (kIndex) index[k] = m ? key : index[k];
      }
    }
  FASTNN_BLOCK_LOOP(k, B) yo[k] = best[k];
  if constexpr (kIndex) FASTNN_BLOCK_LOOP(k, B) ao[k] = int32_t(index[k]);
}

template <typename T, typename Key, bool kIndex>
void max_pool_forward_impl(const Pool2D& p, const T* x, T* y, int32_t* argmax) {
  const Index C = p.channels, W = p.in_w;
  const bool is_2x2 = p.pool_h == 2 && p.pool_w == 2, is_3x3 = p.pool_h == 3 && p.pool_w == 3;
  for_output_rows(p, [&](Index n, Index o_row, Index h0, Index nr) {
    channel_blocks<T>(C, [&](Index c, auto width) {
      constexpr Index B = decltype(width)::value;
      for (Index j = 0; j < p.out_w; ++j) {
        Index w0, nq;
        window_columns(p, j, w0, nq);
        const T* xw = x + ((n * p.in_h + h0) * W + w0) * C + c;
        const int32_t key0 = int32_t(h0 * W + w0);
        T* yo = y + (o_row + j) * C + c;
        int32_t* ao = kIndex ? argmax + (o_row + j) * C + c : nullptr;
        const bool whole = nr == p.pool_h && nq == p.pool_w;
        if (whole && is_2x2)
          max_window<T, Key, B, kIndex, 2, 2>(xw, W, C, nr, nq, key0, yo, ao);
        else if (whole && is_3x3)
          max_window<T, Key, B, kIndex, 3, 3>(xw, W, C, nr, nq, key0, yo, ao);
        else
          max_window<T, Key, B, kIndex, 0, 0>(xw, W, C, nr, nq, key0, yo, ao);
      }
    });
  });
}

}  // namespace

// The output size and the padding before along one axis of `in` positions, for any window k
// and stride s >= 1 (up to 2^63 - 1): exact, with no intermediate overflow. A stride only
// matters between the windows that exist and a window wider than 2·(in + s + 1) covers the
// whole input wherever it starts, so both are clamped to sizes that give the same windows
// (the kernels' index arithmetic then stays far from overflow).
static void pool_axis(Index in, bool same, Index& k, Index& s, Index& out, Index& pad) {
  if (same) {
    out = in / s + (in % s != 0);
    if (out <= 1) s = std::max<Index>(in, 1);
    if (in < PTRDIFF_MAX / 8) k = std::min<Index>(k, 2 * (in + s + 1));
    pad = std::max<Index>((out - 1) * s - in + k, 0) / 2;  // (out − 1)·s < in: no overflow
  } else {
    out = in >= k ? (in - k) / s + 1 : 0;
    if (out <= 1) s = std::max<Index>(in - std::min(in, k) + 1, 1);
    pad = 0;
  }
}

Pool2D make_pool2d(Index batch, Index in_h, Index in_w, Index channels, Index pool_h,
                   Index pool_w, Index stride_h, Index stride_w, bool same) {
  Pool2D p;
  p.batch = batch;
  p.in_h = in_h;
  p.in_w = in_w;
  p.channels = channels;
  p.pool_h = pool_h;
  p.pool_w = pool_w;
  p.stride_h = stride_h;
  p.stride_w = stride_w;
  pool_axis(in_h, same, p.pool_h, p.stride_h, p.out_h, p.pad_top);
  pool_axis(in_w, same, p.pool_w, p.stride_w, p.out_w, p.pad_left);
  return p;
}

template <typename T>
void max_pool_forward(const Pool2D& p, const T* x, T* y, int32_t* argmax) {
  // Keys below 2^24 (2^53 in double) are exact in T.
  const bool exact = sizeof(T) == 8 || p.in_h * p.in_w <= (Index(1) << 24);
  if (!argmax)
    max_pool_forward_impl<T, T, false>(p, x, y, nullptr);
  else if (exact)
    max_pool_forward_impl<T, T, true>(p, x, y, argmax);
  else
    max_pool_forward_impl<T, int32_t, true>(p, x, y, argmax);
}

// Calls f(kw) with kw = std::integral_constant<int, n> for n = 2 or 3 (the loops over a
// window's columns then unroll), else with 0 (n at run time).
template <typename F>
inline void with_columns(Index n, F&& f) {
  if (n == 2)
    f(std::integral_constant<int, 2>());
  else if (n == 3)
    f(std::integral_constant<int, 3>());
  else
    f(std::integral_constant<int, 0>());
}

template <typename T>
void max_pool_backward(const Pool2D& p, const int32_t* argmax, const T* dy, T* dx) {
  const Index C = p.channels, W = p.in_w;
  gather_backward<T>(p, dx, [&](auto width, auto set, Index o, Index h, Index w0, Index nq, Index,
                                T* d, Index c) {
    constexpr Index B = decltype(width)::value;
    const int32_t* __restrict a = argmax + o * C + c;
    const T* __restrict g = dy + o * C + c;
    const int32_t key0 = int32_t(h * W + w0);
    with_columns(nq, [&](auto kw) {
      constexpr int KW = decltype(kw)::value;
      for (Index q = 0; q < (KW ? KW : nq); ++q) {
        T* __restrict dq = d + q * C;
        const int32_t key = key0 + int32_t(q);
        if constexpr (decltype(set)::value) {
          FASTNN_BLOCK_LOOP(k, B) dq[k] = a[k] == key ? g[k] : T(0);
        } else {
          FASTNN_BLOCK_LOOP(k, B) dq[k] += a[k] == key ? g[k] : T(0);
        }
      }
    });
  });
}

namespace {

// The mean of one window over a block of B channels, summed in row-major window order
// (KH, KW as in max_window).
template <typename T, Index B, int KH, int KW>
inline void average_window(const T* __restrict xw, Index W, Index C, Index nr, Index nq,
                           T* __restrict yo) {
  const Index rows = KH ? KH : nr, cols = KW ? KW : nq;
  T sum[B];
  FASTNN_BLOCK_LOOP(k, B) sum[k] = xw[k];
  for (Index r = 0; r < rows; ++r)
    for (Index q = r == 0 ? 1 : 0; q < cols; ++q) {
      const T* xi = xw + (r * W + q) * C;
      FASTNN_BLOCK_LOOP(k, B) sum[k] += xi[k];
    }
  const T count = T(rows * cols);
  FASTNN_BLOCK_LOOP(k, B) yo[k] = sum[k] / count;
}

}  // namespace

template <typename T>
void average_pool_forward(const Pool2D& p, const T* x, T* y) {
  const Index C = p.channels, W = p.in_w;
  const bool is_2x2 = p.pool_h == 2 && p.pool_w == 2, is_3x3 = p.pool_h == 3 && p.pool_w == 3;
  for_output_rows(p, [&](Index n, Index o_row, Index h0, Index nr) {
    channel_blocks<T>(C, [&](Index c, auto width) {
      constexpr Index B = decltype(width)::value;
      for (Index j = 0; j < p.out_w; ++j) {
        Index w0, nq;
        window_columns(p, j, w0, nq);
        const T* xw = x + ((n * p.in_h + h0) * W + w0) * C + c;
        T* yo = y + (o_row + j) * C + c;
        const bool whole = nr == p.pool_h && nq == p.pool_w;
        if (whole && is_2x2)
          average_window<T, B, 2, 2>(xw, W, C, nr, nq, yo);
        else if (whole && is_3x3)
          average_window<T, B, 3, 3>(xw, W, C, nr, nq, yo);
        else
          average_window<T, B, 0, 0>(xw, W, C, nr, nq, yo);
      }
    });
  });
}

template <typename T>
void average_pool_backward(const Pool2D& p, const T* dy, T* dx) {
  const Index C = p.channels;
  // A multiplication by 1/count (within an ulp of dividing): a division per position
  // would cost as much as the rest of the pass.
  gather_backward<T>(p, dx, [&](auto width, auto set, Index o, Index, Index, Index nq, Index count,
                                T* d, Index c) {
    constexpr Index B = decltype(width)::value;
    const T* __restrict g = dy + o * C + c;
    const T scale = T(1) / T(count);
    T share[B];
    FASTNN_BLOCK_LOOP(k, B) share[k] = g[k] * scale;
    with_columns(nq, [&](auto kw) {
      constexpr int KW = decltype(kw)::value;
      for (Index q = 0; q < (KW ? KW : nq); ++q) {
        T* __restrict dq = d + q * C;
        if constexpr (decltype(set)::value) {
          FASTNN_BLOCK_LOOP(k, B) dq[k] = share[k];
        } else {
          FASTNN_BLOCK_LOOP(k, B) dq[k] += share[k];
        }
      }
    });
  });
}

template <typename T>
void global_max_pool_forward(Index batch, Index steps, Index channels, const T* x, T* y,
                             int32_t* argmax) {
  const Index C = channels;
  for_rows(batch, double(steps) * double(C), [&](Index n) {
    const T* xn = x + n * steps * C;
    T* yn = y + n * C;
    int32_t* an = argmax ? argmax + n * C : nullptr;
    if (steps == 0) return;  // refused by the bindings; nothing to read
    copy_values(xn, yn, C);
    if (an) fill_index(an, 0, C);
    for (Index s = 1; s < steps; ++s) {
      if (an)
        max_update_index(xn + s * C, yn, an, int32_t(s), C);
      else
        max_update(xn + s * C, yn, C);
    }
  });
}

template <typename T>
void global_max_pool_backward(Index batch, Index steps, Index channels, const int32_t* argmax,
                              const T* dy, T* dx) {
  const Index C = channels;
  for_rows(batch * steps, double(C), [&](Index ns) {
    const Index n = ns / steps, s = ns % steps;
    route_set(argmax + n * C, dy + n * C, dx + ns * C, int32_t(s), C);
  });
}

template <typename T>
void global_average_pool_forward(Index batch, Index steps, Index channels, const T* x, T* y) {
  const Index C = channels;
  for_rows(batch, double(steps) * double(C), [&](Index n) {
    const T* xn = x + n * steps * C;
    T* yn = y + n * C;
    if (steps == 0) return;
    copy_values(xn, yn, C);
    for (Index s = 1; s < steps; ++s) add_values(xn + s * C, yn, C);
    divide_by(yn, T(steps), C);
  });
}

template <typename T>
void global_average_pool_backward(Index batch, Index steps, Index channels, const T* dy, T* dx) {
  const Index C = channels;
  const T scale = steps ? T(1) / T(steps) : T(0);
  for_rows(batch * steps, double(C), [&](Index ns) {
    scale_set(dy + (ns / steps) * C, dx + ns * C, scale, C);
  });
}

template <typename T>
void zero_pad2d_forward(Index batch, Index h, Index w, Index channels, const Pad2D& pad,
                        const T* x, T* y) {
  const Index C = channels, out_h = h + pad.top + pad.bottom, out_w = w + pad.left + pad.right;
  const Index out_row = out_w * C;
  for_rows(batch * out_h, double(out_row), [&](Index nr) {
    const Index n = nr / out_h, r = nr % out_h - pad.top;
    T* yr = y + nr * out_row;
    if (r < 0 || r >= h) {
      fill_zero(yr, out_row);
      return;
    }
    fill_zero(yr, pad.left * C);
    copy_values(x + (n * h + r) * w * C, yr + pad.left * C, w * C);
    fill_zero(yr + (pad.left + w) * C, pad.right * C);
  });
}

template <typename T>
void zero_pad2d_backward(Index batch, Index h, Index w, Index channels, const Pad2D& pad,
                         const T* dy, T* dx) {
  const Index C = channels, out_h = h + pad.top + pad.bottom, out_w = w + pad.left + pad.right;
  for_rows(batch * h, double(w * C), [&](Index nr) {
    const Index n = nr / h, r = nr % h;
    copy_values(dy + ((n * out_h + r + pad.top) * out_w + pad.left) * C, dx + nr * w * C, w * C);
  });
}

template <typename T>
void upsample2d_forward(Index batch, Index h, Index w, Index channels, Index sh, Index sw,
                        const T* x, T* y) {
  const Index C = channels, out_h = h * sh, out_row = w * sw * C;
  for_rows(batch * out_h, double(out_row), [&](Index nr) {
    const Index n = nr / out_h, r = nr % out_h;
    const T* xr = x + (n * h + r / sh) * w * C;
    T* yr = y + nr * out_row;
    for (Index j = 0; j < w; ++j)
      for (Index b = 0; b < sw; ++b) copy_values(xr + j * C, yr + (j * sw + b) * C, C);
  });
}

template <typename T>
void upsample2d_backward(Index batch, Index h, Index w, Index channels, Index sh, Index sw,
                         const T* dy, T* dx) {
  const Index C = channels, out_w = w * sw, row = w * C;
  for_rows(batch * h, double(row * sh * sw), [&](Index nr) {
    T* d = dx + nr * row;
    const T* g = dy + nr * sh * out_w * C;  // row (n, r·sh) of dy
    for (Index a = 0; a < sh; ++a) {
      const T* ga = g + a * out_w * C;
      for (Index j = 0; j < w; ++j)
        for (Index b = 0; b < sw; ++b) {
          if (a == 0 && b == 0)
            copy_values(ga + j * sw * C, d + j * C, C);
          else
            add_values(ga + (j * sw + b) * C, d + j * C, C);
        }
    }
  });
}

// Eigen's packet types carry vector attributes that templates drop, harmlessly.
#pragma GCC diagnostic ignored "-Wignored-attributes"

template <typename T>
void transpose_batched(Index batch, Index rows, Index cols, const T* x, T* y) {
  // W×W blocks through vector registers: every load and store is a whole vector, so the
  // power-of-two strides of image sizes (which made a scalar tiled copy thrash one cache
  // set, ~6x slower than a copy) cost nothing extra. Tasks are (matrix, band of W rows).
  using P = typename Eigen::internal::packet_traits<T>::type;
  constexpr int W = Eigen::internal::unpacket_traits<P>::size;
  const Index bands = (rows + W - 1) / W, size = rows * cols;
  parallel_for(batch * bands, threads_for(4.0 * double(batch) * double(size)), [&](Index t) {
    const Index n = t / bands, r0 = (t % bands) * W;
    const T* xs = x + n * size;
    T* ys = y + n * size;
    Index c0 = 0;
    if constexpr (W > 1) {
      if (r0 + W <= rows) {
        for (; c0 + W <= cols; c0 += W) {
          Eigen::internal::PacketBlock<P, W> block;
          for (int r = 0; r < W; ++r)
            block.packet[r] = Eigen::internal::ploadu<P>(xs + (r0 + r) * cols + c0);
          Eigen::internal::ptranspose(block);
          for (int c = 0; c < W; ++c) Eigen::internal::pstoreu(ys + (c0 + c) * rows + r0, block.packet[c]);
        }
      }
    }
    const Index r1 = r0 + W < rows ? r0 + W : rows;
    for (Index c = c0; c < cols; ++c)  // the edges: the last cols % W columns, or a short band
      for (Index r = r0; r < r1; ++r) ys[c * rows + r] = xs[r * cols + c];
  });
}

#define FASTNN_POOL_INSTANTIATE(T)                                                             \
  template void max_pool_forward<T>(const Pool2D&, const T*, T*, int32_t*);                    \
  template void max_pool_backward<T>(const Pool2D&, const int32_t*, const T*, T*);             \
  template void average_pool_forward<T>(const Pool2D&, const T*, T*);                          \
  template void average_pool_backward<T>(const Pool2D&, const T*, T*);                         \
  template void global_max_pool_forward<T>(Index, Index, Index, const T*, T*, int32_t*);       \
  template void global_max_pool_backward<T>(Index, Index, Index, const int32_t*, const T*, T*); \
  template void global_average_pool_forward<T>(Index, Index, Index, const T*, T*);             \
  template void global_average_pool_backward<T>(Index, Index, Index, const T*, T*);            \
  template void zero_pad2d_forward<T>(Index, Index, Index, Index, const Pad2D&, const T*, T*); \
  template void zero_pad2d_backward<T>(Index, Index, Index, Index, const Pad2D&, const T*, T*); \
  template void upsample2d_forward<T>(Index, Index, Index, Index, Index, Index, const T*, T*); \
  template void upsample2d_backward<T>(Index, Index, Index, Index, Index, Index, const T*, T*); \
  template void transpose_batched<T>(Index, Index, Index, const T*, T*);

FASTNN_POOL_INSTANTIATE(float)
FASTNN_POOL_INSTANTIATE(double)

}  // namespace fastnn
