// Embedding lookup: rows of a table gathered by integer ids, and the gradient scattered back.
//
//   forward:   out[i, :] = table[ids[i], :]
//   backward:  dtable[v, :] (+)= Σ_{i : ids[i] = v} dy[i, :]
//
// Layouts: table is (vocabulary, dim); ids has n entries (any shape flattened), out and dy
// are (n, dim). Cost: n·dim copies forward, n·dim additions backward (+ writing the whole
// table when not accumulating). Duplicate ids are the rule in a batch of text: the backward
// pass groups the positions of each id (a stable counting sort) and sums each group in
// position order, one id per task, so the result is the same bits on any thread count.
#pragma once

#include <cstdint>

#include "fastnn/parallel.hpp"

namespace fastnn {

/// Index of the first id outside [0, vocabulary), or -1 when all are valid.
Index embedding_first_invalid(const std::int64_t* ids, Index n, Index vocabulary);

/// out = table[ids] (ids must be valid).
template <typename T>
void embedding_forward(const T* table, Index vocabulary, Index dim, const std::int64_t* ids,
                       Index n, T* out);

/// dtable (+)= the scatter-sum of dy's rows at ids (ids must be valid).
template <typename T>
void embedding_backward(const std::int64_t* ids, Index n, const T* dy, Index vocabulary,
                        Index dim, T* dtable, bool accumulate);

}  // namespace fastnn
