// Activation kernels (see fastnn/activation.hpp), on Eigen's vectorised array functions.
#include "fastnn/activation.hpp"

#include <Eigen/Core>
#include <unsupported/Eigen/SpecialFunctions>
#include <algorithm>
#include <cmath>
#include <limits>

#include "fastnn/scratch.hpp"

namespace fastnn {
namespace {

// Eigen evaluates a Map of unknown alignment with scalar code up to the first aligned
// address and after the last full vector, and its scalar exp/log differ from the vector
// ones in the last bit: results would depend on where NumPy placed the array. So the
// transcendental functions run on aligned, padded blocks: every value takes the vector
// path, and the result depends on the value only.
constexpr Index kBlock = 256;  // values per block: a multiple of every vector width

template <typename T>
using Block = Eigen::Map<Eigen::Array<T, kBlock, 1>, Eigen::Aligned64>;
template <typename T>
using ConstBlock = Eigen::Map<const Eigen::Array<T, kBlock, 1>, Eigen::Aligned64>;
template <typename T>
using Vec = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
template <typename T>
using ConstVec = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;
template <typename T>
using AlignedVec = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>, Eigen::Aligned64>;

constexpr double kSeluAlpha = 1.6732632423543772848170429916717;
constexpr double kSeluScale = 1.0507009873554804934193349852946;
constexpr Index kChunk = 1 << 14;  // values per softmax task: whole rows up to this many

// Cost of one element in flops-equivalents, for the threading threshold.
double cost_per_element(ActivationKind kind) {
  switch (kind) {
    case ActivationKind::Linear:
    case ActivationKind::Relu:
    case ActivationKind::LeakyRelu:
      return 1;
    default:
      return 20;
  }
}

// Comparisons, selects and products round the same way on every path.
bool exact_everywhere(ActivationKind kind) {
  return kind == ActivationKind::Linear || kind == ActivationKind::Relu ||
         kind == ActivationKind::LeakyRelu;
}

// 1/(1 + e^-x) from e^-|x|: accurate in relative terms on both sides (Eigen's logistic
// is accurate only absolutely: 4e-4 relative error near x = -8 in float32).
// e^-|x| is evaluated once into a block (as a lazy expression Eigen computed it for each
// branch of the select, at 7 ns a value).
template <typename X>
typename X::PlainObject sigmoid(const X& x) {
  using T = typename X::Scalar;
  const typename X::PlainObject e = (-x.abs()).exp();
  const typename X::PlainObject r = T(1) / (T(1) + e);
  return (x >= T(0)).select(r, e * r);
}

template <typename X, typename Y>
void forward_values(const Activation& act, const X& x, Y&& y) {
  using T = typename X::Scalar;
  const T alpha = static_cast<T>(act.alpha);
  switch (act.kind) {
    case ActivationKind::Linear:
      y = x;
      break;
    case ActivationKind::Relu:
      y = x.max(T(0));
      break;
    case ActivationKind::Sigmoid:
      y = sigmoid(x);
      break;
    case ActivationKind::Tanh:
      y = x.tanh();
      break;
    case ActivationKind::LeakyRelu:
      y = (x > T(0)).select(x, alpha * x);
      break;
    case ActivationKind::Elu:
      y = (x > T(0)).select(x, alpha * x.expm1());
      break;
    case ActivationKind::Selu:
      y = T(kSeluScale) * (x > T(0)).select(x, T(kSeluAlpha) * x.expm1());
      break;
    case ActivationKind::Gelu:
      y = T(0.5) * x * (T(1) + (x * T(M_SQRT1_2)).erf());
      break;
    case ActivationKind::GeluTanh:
      y = T(0.5) * x * (T(1) + (T(0.7978845608028654) * (x + T(0.044715) * x.cube())).tanh());
      break;
    case ActivationKind::Softplus:  // log(1 + e^x) without overflow
      y = x.max(T(0)) + (-x.abs()).exp().log1p();
      break;
    case ActivationKind::Swish:
      y = x * sigmoid(x);
      break;
    case ActivationKind::Softmax:
      break;  // handled per row
  }
}

template <typename X, typename Y, typename D, typename DX>
void backward_values(const Activation& act, const X& x, const Y& y, const D& dy, DX&& dx) {
  using T = typename Y::Scalar;
  const T alpha = static_cast<T>(act.alpha);
  switch (act.kind) {
    case ActivationKind::Linear:
      dx = dy;
      break;
    case ActivationKind::Relu:
      dx = (y > T(0)).select(dy, T(0));
      break;
    case ActivationKind::Sigmoid:
      dx = dy * y * (T(1) - y);
      break;
    case ActivationKind::Tanh:
      dx = dy * (T(1) - y.square());
      break;
    case ActivationKind::LeakyRelu:
      dx = (x > T(0)).select(dy, alpha * dy);
      break;
    case ActivationKind::Elu:  // f'(x) = f(x) + alpha for x <= 0
      dx = (x > T(0)).select(dy, dy * (y + alpha));
      break;
    case ActivationKind::Selu:  // f'(x) = f(x) + scale·alpha for x <= 0
      dx = (x > T(0)).select(T(kSeluScale) * dy, dy * (y + T(kSeluScale * kSeluAlpha)));
      break;
    case ActivationKind::Gelu:  // Φ(x) + x·φ(x)
      dx = dy * (T(0.5) * (T(1) + (x * T(M_SQRT1_2)).erf()) +
                 x * T(0.3989422804014327) * (T(-0.5) * x.square()).exp());
      break;
    case ActivationKind::GeluTanh: {
      const T c = T(0.7978845608028654);
      const auto t = (c * (x + T(0.044715) * x.cube())).tanh().eval();
      dx = dy * (T(0.5) * (T(1) + t) +
                 T(0.5) * x * (T(1) - t.square()) * c * (T(1) + T(3 * 0.044715) * x.square()));
      break;
    }
    case ActivationKind::Softplus:  // sigmoid(x)
      dx = dy * sigmoid(x);
      break;
    case ActivationKind::Swish: {  // s + x·s·(1 - s)
      const auto s = sigmoid(x).eval();
      dx = dy * (s + x * s * (T(1) - s));
      break;
    }
    case ActivationKind::Softmax:
      break;  // handled per row
  }
}

// Copies `count` values into an aligned block, zero-padded.
template <typename T>
void load_block(T* block, const T* src, Index count) {
  std::copy(src, src + count, block);
  std::fill(block + count, block + kBlock, T(0));
}

template <typename T>
void forward_chunk(const Activation& act, const T* x, T* y, Index n) {
  if (exact_everywhere(act.kind)) {
    if (act.kind == ActivationKind::Linear && x == y) return;
    forward_values(act, ConstVec<T>(x, n), Vec<T>(y, n));
    return;
  }
  alignas(64) T in[kBlock];
  alignas(64) T out[kBlock];
  for (Index b = 0; b < n; b += kBlock) {
    const Index count = std::min(kBlock, n - b);
    load_block(in, x + b, count);
    forward_values(act, ConstBlock<T>(in), Block<T>(out));
    std::copy(out, out + count, y + b);
  }
}

template <typename T>
void backward_chunk(const Activation& act, const T* x, const T* y, const T* dy, T* dx, Index n) {
  if (exact_everywhere(act.kind)) {
    if (act.kind == ActivationKind::Linear && dx == dy) return;
    // (x is only read by LeakyRelu, which always receives it.)
    backward_values(act, ConstVec<T>(x ? x : y, n), ConstVec<T>(y, n), ConstVec<T>(dy, n),
                    Vec<T>(dx, n));
    return;
  }
  alignas(64) T xb[kBlock];
  alignas(64) T yb[kBlock];
  alignas(64) T db[kBlock];
  alignas(64) T out[kBlock];
  for (Index b = 0; b < n; b += kBlock) {
    const Index count = std::min(kBlock, n - b);
    load_block(xb, x ? x + b : y + b, count);
    load_block(yb, y + b, count);
    load_block(db, dy + b, count);
    backward_values(act, ConstBlock<T>(xb), ConstBlock<T>(yb), ConstBlock<T>(db), Block<T>(out));
    std::copy(out, out + count, dx + b);
  }
}

// Softmax of rows, each copied into an aligned buffer padded to whole vectors (with -inf,
// whose exp adds 0 to the sum), so that the sum's order does not depend on the address.
template <typename T>
Index padded(Index cols) {
  return (cols + 15) / 16 * 16;
}

template <typename T>
void softmax_rows(const T* x, T* y, Index rows, Index cols) {
  const Index width = padded<T>(cols);
  T* buffer = thread_scratch<T>(ScratchSlot::ActivationRows, width);
  AlignedVec<T> row(buffer, width);
  for (Index r = 0; r < rows; ++r) {
    std::copy(x + r * cols, x + (r + 1) * cols, buffer);
    std::fill(buffer + cols, buffer + width, -std::numeric_limits<T>::infinity());
    const T top = row.maxCoeff();
    row = (row - top).exp();
    row /= row.sum();
    std::copy(buffer, buffer + cols, y + r * cols);
  }
}

template <typename T>
void softmax_backward_rows(const T* y, const T* dy, T* dx, Index rows, Index cols) {
  const Index width = padded<T>(cols);
  T* buffer = thread_scratch<T>(ScratchSlot::ActivationRows, 2 * width);
  AlignedVec<T> yr(buffer, width), dyr(buffer + width, width);
  for (Index r = 0; r < rows; ++r) {
    std::copy(y + r * cols, y + (r + 1) * cols, buffer);
    std::fill(buffer + cols, buffer + width, T(0));
    std::copy(dy + r * cols, dy + (r + 1) * cols, buffer + width);
    std::fill(buffer + width + cols, buffer + 2 * width, T(0));
    const T dot = (yr * dyr).sum();
    dyr = yr * (dyr - dot);
    std::copy(buffer + width, buffer + width + cols, dx + r * cols);
  }
}

}  // namespace

bool activation_backward_needs_input(ActivationKind kind) {
  switch (kind) {
    case ActivationKind::LeakyRelu:
    case ActivationKind::Elu:
    case ActivationKind::Selu:
    case ActivationKind::Gelu:
    case ActivationKind::GeluTanh:
    case ActivationKind::Softplus:
    case ActivationKind::Swish:
      return true;
    default:
      return false;
  }
}

template <typename T>
void activation_forward(const Activation& act, const T* x, T* y, Index n, Index cols) {
  if (n <= 0) return;
  if (act.kind == ActivationKind::Softmax) {
    const Index rows = n / cols, rows_per_task = std::max<Index>(1, kChunk / cols);
    const Index tasks = (rows + rows_per_task - 1) / rows_per_task;
    parallel_for(tasks, threads_for(20.0 * double(n)), [&](Index t) {
      const Index r0 = t * rows_per_task, count = std::min(rows_per_task, rows - r0);
      softmax_rows(x + r0 * cols, y + r0 * cols, count, cols);
    });
    return;
  }
  parallel_chunks(n, cost_per_element(act.kind), [&](Index begin, Index count) {
    forward_chunk(act, x + begin, y + begin, count);
  });
}

template <typename T>
void activation_forward_serial(const Activation& act, const T* x, T* y, Index n) {
  if (n > 0) forward_chunk(act, x, y, n);
}

template <typename T>
void activation_backward(const Activation& act, const T* x, const T* y, const T* dy, T* dx,
                         Index n, Index cols) {
  if (n <= 0) return;
  if (act.kind == ActivationKind::Softmax) {
    const Index rows = n / cols, rows_per_task = std::max<Index>(1, kChunk / cols);
    const Index tasks = (rows + rows_per_task - 1) / rows_per_task;
    parallel_for(tasks, threads_for(4.0 * double(n)), [&](Index t) {
      const Index r0 = t * rows_per_task, count = std::min(rows_per_task, rows - r0);
      softmax_backward_rows(y + r0 * cols, dy + r0 * cols, dx + r0 * cols, count, cols);
    });
    return;
  }
  parallel_chunks(n, cost_per_element(act.kind), [&](Index begin, Index count) {
    backward_chunk(act, x ? x + begin : nullptr, y + begin, dy + begin, dx + begin, count);
  });
}

template <typename T>
void prelu_forward(const T* x, const T* alpha, T* y, Index rows, Index cols) {
  parallel_for(rows, threads_for(double(rows) * double(cols)), [&](Index r) {
    const T* xr = x + r * cols;
    T* yr = y + r * cols;
    for (Index j = 0; j < cols; ++j) yr[j] = xr[j] > T(0) ? xr[j] : alpha[j] * xr[j];
  });
}

template <typename T>
void prelu_backward(const T* x, const T* alpha, const T* dy, T* dx, T* dalpha, Index rows,
                    Index cols, bool accumulate) {
  parallel_for(rows, threads_for(double(rows) * double(cols)), [&](Index r) {
    const T* xr = x + r * cols;
    const T* dyr = dy + r * cols;
    T* dxr = dx + r * cols;
    for (Index j = 0; j < cols; ++j) dxr[j] = xr[j] > T(0) ? dyr[j] : alpha[j] * dyr[j];
  });
  // dalpha: blocks of columns, rows in order (deterministic).
  constexpr Index kBlock = 512;
  const Index tasks = (cols + kBlock - 1) / kBlock;
  parallel_for(tasks, threads_for(double(rows) * double(cols)), [&](Index t) {
    const Index c0 = t * kBlock, count = std::min(kBlock, cols - c0);
    T* acc = dalpha + c0;
    if (!accumulate)
      for (Index j = 0; j < count; ++j) acc[j] = T(0);
    for (Index r = 0; r < rows; ++r) {
      const T* xr = x + r * cols + c0;
      const T* dyr = dy + r * cols + c0;
      for (Index j = 0; j < count; ++j) acc[j] += xr[j] > T(0) ? T(0) : dyr[j] * xr[j];
    }
  });
}

template void prelu_forward<float>(const float*, const float*, float*, Index, Index);
template void prelu_forward<double>(const double*, const double*, double*, Index, Index);
template void prelu_backward<float>(const float*, const float*, const float*, float*, float*,
                                    Index, Index, bool);
template void prelu_backward<double>(const double*, const double*, const double*, double*,
                                     double*, Index, Index, bool);

template void activation_forward_serial<float>(const Activation&, const float*, float*, Index);
template void activation_forward_serial<double>(const Activation&, const double*, double*, Index);
template void activation_forward<float>(const Activation&, const float*, float*, Index, Index);
template void activation_forward<double>(const Activation&, const double*, double*, Index, Index);
template void activation_backward<float>(const Activation&, const float*, const float*,
                                         const float*, float*, Index, Index);
template void activation_backward<double>(const Activation&, const double*, const double*,
                                          const double*, double*, Index, Index);

}  // namespace fastnn
