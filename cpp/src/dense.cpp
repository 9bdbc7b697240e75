// Dense layer kernels (see fastnn/dense.hpp): GEMM with the bias added inside the product,
// then the activation in place; backward through the activation, two GEMMs and a
// column sum.
#include "fastnn/dense.hpp"

#include <algorithm>

#include "fastnn/gemm.hpp"
#include "fastnn/scratch.hpp"

namespace fastnn {

template <typename T>
void column_sums(const T* m, Index rows, Index cols, T* out, bool accumulate) {
  // Blocks of columns per task; each column's sum runs down the rows in order, with the
  // columns of a block vectorised side by side.
  constexpr Index kBlock = 512;
  const Index tasks = (cols + kBlock - 1) / kBlock;
  parallel_for(tasks, threads_for(double(rows) * double(cols)), [&](Index t) {
    const Index c0 = t * kBlock, count = std::min(kBlock, cols - c0);
    T* acc = out + c0;
    if (!accumulate)
      for (Index j = 0; j < count; ++j) acc[j] = T(0);
    for (Index i = 0; i < rows; ++i) {
      const T* row = m + i * cols + c0;
      for (Index j = 0; j < count; ++j) acc[j] += row[j];
    }
  });
}

template <typename T>
void dense_forward(const DenseArgs<T>& a, T* z, T* y) {
  GemmArgs<T> g;
  g.m = a.m;
  g.n = a.n;
  g.k = a.k;
  g.a = a.x;
  g.lda = a.k;
  g.b = a.w;
  g.ldb = a.n;
  g.c = z ? z : y;
  g.ldc = a.n;
  g.bias = a.b;
  gemm(g);
  if (a.act.kind != ActivationKind::Linear || (z && z != y))
    activation_forward(a.act, g.c, y, a.m * a.n, a.n);
}

template <typename T>
void dense_backward(const DenseArgs<T>& a, const T* z, const T* y, const T* dy, T* dw, T* db,
                    bool accumulate, T* dx) {
  const Index m = a.m, n = a.n, k = a.k;
  const T* dz = dy;
  if (a.act.kind != ActivationKind::Linear) {
    T* buffer = thread_scratch<T>(ScratchSlot::LayerTemp, m * n);
    activation_backward(a.act, z, y, dy, buffer, m * n, n);
    dz = buffer;
  }
  if (dw) {
    GemmArgs<T> g;  // dW (+)= xᵀ·dz
    g.m = k;
    g.n = n;
    g.k = m;
    g.a = a.x;
    g.lda = k;
    g.trans_a = true;
    g.b = dz;
    g.ldb = n;
    g.c = dw;
    g.ldc = n;
    g.accumulate = accumulate;
    gemm(g);
  }
  if (db) column_sums(dz, m, n, db, accumulate);
  if (dx) {
    GemmArgs<T> h;  // dx = dz·Wᵀ
    h.m = m;
    h.n = k;
    h.k = n;
    h.a = dz;
    h.lda = n;
    h.b = a.w;
    h.ldb = n;
    h.trans_b = true;
    h.c = dx;
    h.ldc = k;
    gemm(h);
  }
}

#define FASTNN_INSTANTIATE(T)                                                                 \
  template void column_sums<T>(const T*, Index, Index, T*, bool);                            \
  template void dense_forward<T>(const DenseArgs<T>&, T*, T*);                               \
  template void dense_backward<T>(const DenseArgs<T>&, const T*, const T*, const T*, T*, T*, \
                                  bool, T*);
FASTNN_INSTANTIATE(float)
FASTNN_INSTANTIATE(double)
#undef FASTNN_INSTANTIATE

}  // namespace fastnn
