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
  column_sums_strided(m, rows, cols, cols, out, accumulate);
}

template <typename T>
void column_sums_strided(const T* m, Index rows, Index cols, Index ld, T* out, bool accumulate) {
  // Fixed blocks of rows (from the shape alone) summed in parallel into partials, then the
  // partials added in block order: the same bits on any thread count. Within a block, each
  // task's columns accumulate side by side in a local array (vectorised; no aliasing with
  // the matrix, so no reload per row).
  constexpr Index kRowBlock = 1024, kColBlock = 256;
  const Index row_blocks = std::max<Index>(1, (rows + kRowBlock - 1) / kRowBlock);
  const Index col_tasks = (cols + kColBlock - 1) / kColBlock;
  T* partials = thread_scratch<T>(ScratchSlot::ColumnSums, row_blocks * cols);
  parallel_for(row_blocks * col_tasks, threads_for(double(rows) * double(cols)), [&](Index task) {
    const Index rb = task / col_tasks, c0 = (task % col_tasks) * kColBlock;
    const Index count = std::min(kColBlock, cols - c0);
    const Index r_end = std::min(rows, (rb + 1) * kRowBlock);
    alignas(64) T acc[kColBlock];
    for (Index j = 0; j < count; ++j) acc[j] = T(0);
    for (Index i = rb * kRowBlock; i < r_end; ++i) {
      const T* __restrict row = m + i * ld + c0;
      for (Index j = 0; j < count; ++j) acc[j] += row[j];
    }
    std::copy(acc, acc + count, partials + rb * cols + c0);
  });
  for (Index j = 0; j < cols; ++j) {
    T total = accumulate ? out[j] : T(0);
    for (Index rb = 0; rb < row_blocks; ++rb) total += partials[rb * cols + j];
    out[j] = total;
  }
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
  template void column_sums_strided<T>(const T*, Index, Index, Index, T*, bool);             \
  template void dense_forward<T>(const DenseArgs<T>&, T*, T*);                               \
  template void dense_backward<T>(const DenseArgs<T>&, const T*, const T*, const T*, T*, T*, \
                                  bool, T*);
FASTNN_INSTANTIATE(float)
FASTNN_INSTANTIATE(double)
#undef FASTNN_INSTANTIATE

}  // namespace fastnn
