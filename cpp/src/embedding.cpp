// Embedding gather and scatter-add (see fastnn/embedding.hpp).
#include "fastnn/embedding.hpp"

#include <algorithm>
#include <cstring>

#include "fastnn/scratch.hpp"

namespace fastnn {

Index embedding_first_invalid(const std::int64_t* ids, Index n, Index vocabulary) {
  for (Index i = 0; i < n; ++i)
    if (ids[i] < 0 || ids[i] >= vocabulary) return i;
  return -1;
}

template <typename T>
void embedding_forward(const T* table, Index vocabulary, Index dim, const std::int64_t* ids,
                       Index n, T* out) {
  (void)vocabulary;
  constexpr Index kRowsPerTask = 256;
  const Index tasks = (n + kRowsPerTask - 1) / kRowsPerTask;
  parallel_for(tasks, threads_for(4.0 * double(n) * double(dim)), [&](Index task) {
    const Index end = std::min(n, (task + 1) * kRowsPerTask);
    for (Index i = task * kRowsPerTask; i < end; ++i)
      std::memcpy(out + i * dim, table + ids[i] * dim, sizeof(T) * dim);
  });
}

template <typename T>
void embedding_backward(const std::int64_t* ids, Index n, const T* dy, Index vocabulary,
                        Index dim, T* dtable, bool accumulate) {
  // Positions grouped by id, in position order within each group: start[v]..start[v+1].
  Index* start = thread_scratch<Index>(ScratchSlot::EmbeddingOrder, vocabulary + 1 + n);
  Index* order = start + vocabulary + 1;
  std::fill(start, start + vocabulary + 1, Index(0));
  for (Index i = 0; i < n; ++i) ++start[ids[i] + 1];
  for (Index v = 0; v < vocabulary; ++v) start[v + 1] += start[v];
  {
    Index* next = thread_scratch<Index>(ScratchSlot::RnnRowTemp, vocabulary);
    std::copy(start, start + vocabulary, next);
    for (Index i = 0; i < n; ++i) order[next[ids[i]]++] = i;
  }
  constexpr Index kIdsPerTask = 64;
  const Index tasks = (vocabulary + kIdsPerTask - 1) / kIdsPerTask;
  const double cost = double(n + (accumulate ? 0 : vocabulary)) * double(dim);
  parallel_for(tasks, threads_for(cost), [&](Index task) {
    const Index end = std::min(vocabulary, (task + 1) * kIdsPerTask);
    for (Index v = task * kIdsPerTask; v < end; ++v) {
      T* row = dtable + v * dim;
      if (!accumulate) std::fill(row, row + dim, T(0));
      for (Index p = start[v]; p < start[v + 1]; ++p) {
        const T* src = dy + order[p] * dim;
        for (Index j = 0; j < dim; ++j) row[j] += src[j];
      }
    }
  });
}

#define FASTNN_INSTANTIATE(T)                                                                  \
  template void embedding_forward<T>(const T*, Index, Index, const std::int64_t*, Index, T*); \
  template void embedding_backward<T>(const std::int64_t*, Index, const T*, Index, Index, T*, \
                                      bool);
FASTNN_INSTANTIATE(float)
FASTNN_INSTANTIATE(double)
#undef FASTNN_INSTANTIATE

}  // namespace fastnn
