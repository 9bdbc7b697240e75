// Scaled dot-product attention kernels (see fastnn/attention.hpp).
#include "fastnn/attention.hpp"

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <limits>

#include "fastnn/dropout.hpp"
#include "fastnn/gemm.hpp"
#include "fastnn/scratch.hpp"

namespace fastnn {
namespace {

// Queries per task and keys per block. A 64×128 block of logits (32 KiB in float32) stays in
// L1/L2 with its operands; 64 queries give a 32×8-head batch of length 128 512 tasks.
constexpr Index kQueryBlock = 128;
constexpr Index kKeyBlock = 256;

// Dropout on the probabilities: entry (b, h, i, j) is kept by the rule of fastnn/dropout.hpp
// applied to its flat index.
struct Dropout : DropoutMask {
  bool active;
  Dropout(double rate, uint64_t seed) : DropoutMask(rate, seed), active(rate > 0.0) {}
};

template <typename T>
using ArrayMap = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;

// C (m×n, row stride ldc) = / += op(A)·op(B) on the calling thread.
template <typename T>
void block_product(Index m, Index n, Index k, const T* a, Index lda, bool trans_a, const T* b,
                   Index ldb, bool trans_b, T* c, Index ldc, bool accumulate) {
  GemmArgs<T> g;
  g.m = m;
  g.n = n;
  g.k = k;
  g.a = a;
  g.lda = lda;
  g.trans_a = trans_a;
  g.b = b;
  g.ldb = ldb;
  g.trans_b = trans_b;
  g.c = c;
  g.ldc = ldc;
  g.accumulate = accumulate;
  g.max_threads = 1;
  gemm(g);
}

template <typename T>
class HeadAttention {
 public:
  HeadAttention(const AttentionArgs<T>& a, Index b, Index h) : a_(a), b_(b), h_(h) {}

  // Queries i0 .. i0+rows of this head scaled by `scale`, contiguous (rows × dk).
  void scaled_queries(Index i0, Index rows, T* qs) const {
    const Index dk = a_.key_dim;
    const T scale = T(a_.scale);
    for (Index r = 0; r < rows; ++r) {
      const T* q = a_.q.row(b_, h_, i0 + r);
      T* out = qs + r * dk;
      for (Index c = 0; c < dk; ++c) out[c] = q[c] * scale;
    }
  }

  // The last key (exclusive) that query block [i0, i0 + rows) attends to.
  Index key_end(Index i0, Index rows) const {
    return a_.causal ? std::min(a_.keys, i0 + rows) : a_.keys;
  }

  // Logits of queries [i0, i0+rows) × keys [j0, j0+cols) into s (rows × cols), from the
  // scaled queries qs: −∞ where masked.
  void logits(const T* qs, Index i0, Index rows, Index j0, Index cols, T* s) const {
    block_product<T>(rows, cols, a_.key_dim, qs, a_.key_dim, false, a_.k.row(b_, h_, j0),
                     a_.k.time_stride, true, s, cols, false);
    if (a_.bias.data) {
      const T* base = a_.bias.data + b_ * a_.bias.batch_stride + h_ * a_.bias.head_stride;
      for (Index r = 0; r < rows; ++r) {
        const T* bias = base + (i0 + r) * a_.bias.query_stride + j0 * a_.bias.key_stride;
        T* row = s + r * cols;
        const Index ks = a_.bias.key_stride;
        for (Index c = 0; c < cols; ++c) row[c] += bias[c * ks];
      }
    }
    if (a_.mask.data) {
      const uint8_t* base = a_.mask.data + b_ * a_.mask.batch_stride + h_ * a_.mask.head_stride;
      const T ninf = -std::numeric_limits<T>::infinity();
      for (Index r = 0; r < rows; ++r) {
        const uint8_t* m = base + (i0 + r) * a_.mask.query_stride + j0 * a_.mask.key_stride;
        T* row = s + r * cols;
        const Index ks = a_.mask.key_stride;
        for (Index c = 0; c < cols; ++c)
          if (!m[c * ks]) row[c] = ninf;
      }
    }
    if (a_.causal && j0 + cols - 1 > i0) {  // keys past a query's own position
      const T ninf = -std::numeric_limits<T>::infinity();
      for (Index r = 0; r < rows; ++r) {
        const Index first_hidden = std::max<Index>(i0 + r + 1 - j0, 0);
        T* row = s + r * cols;
        for (Index c = first_hidden; c < cols; ++c) row[c] = ninf;
      }
    }
  }

  // The flat index of entry (i, j) of this head's T×S matrix (the dropout counter).
  uint64_t counter(Index i, Index j) const {
    return ((uint64_t(b_) * uint64_t(a_.heads) + uint64_t(h_)) * uint64_t(a_.queries) +
            uint64_t(i)) * uint64_t(a_.keys) + uint64_t(j);
  }

 private:
  const AttentionArgs<T>& a_;
  Index b_, h_;
};

// row ← exp(row − shift), entries at −∞ exactly 0; returns the sum of the new row. One
// vectorised pass (Eigen's select would not vectorise the exponential), summed in a fixed
// order: lane by lane, then the lanes, then the tail.
template <typename T>
T exp_shifted_sum(T* row, Index n, T shift) {
  namespace ei = Eigen::internal;
  using Packet = typename ei::packet_traits<T>::type;
  constexpr Index W = ei::unpacket_traits<Packet>::size;
  const T ninf = -std::numeric_limits<T>::infinity();
  const Packet p_shift = ei::pset1<Packet>(shift), p_ninf = ei::pset1<Packet>(ninf);
  Packet acc = ei::pset1<Packet>(T(0));
  Index c = 0;
  for (; c + W <= n; c += W) {
    const Packet x = ei::ploadu<Packet>(row + c);
    // exp(−∞ − shift) is not exactly 0 in Eigen's clamped exp: clear the lanes at −∞ (NaN
    // stays NaN).
    const Packet e = ei::pandnot(ei::pexp(ei::psub(x, p_shift)), ei::pcmp_eq(x, p_ninf));
    ei::pstoreu(row + c, e);
    acc = ei::padd(acc, e);
  }
  T sum = ei::predux(acc);
  for (; c < n; ++c) {
    row[c] = row[c] == ninf ? T(0) : std::exp(row[c] - shift);
    sum += row[c];
  }
  return sum;
}

template <typename T>
void forward_block(const AttentionArgs<T>& a, const Dropout& drop, Index b, Index h,
                   Index i0, Index rows, const HeadsView<T>& out, T* logsumexp, T* probabilities) {
  const Index dk = a.key_dim, dv = a.value_dim;
  HeadAttention<T> head(a, b, h);
  T* qs = thread_scratch<T>(ScratchSlot::AttentionQueries, kQueryBlock * dk);
  T* s = thread_scratch<T>(ScratchSlot::AttentionScores, kQueryBlock * kKeyBlock);
  T* acc = thread_scratch<T>(ScratchSlot::AttentionAccumulator, kQueryBlock * std::max<Index>(dv, 1));
  T* stats = thread_scratch<T>(ScratchSlot::AttentionRowStats, 2 * kQueryBlock);
  T* run_max = stats;
  T* run_sum = stats + kQueryBlock;
  const T ninf = -std::numeric_limits<T>::infinity();
  std::fill(run_max, run_max + rows, ninf);
  std::fill(run_sum, run_sum + rows, T(0));
  std::fill(acc, acc + rows * dv, T(0));
  head.scaled_queries(i0, rows, qs);
  const Index end = head.key_end(i0, rows);
  for (Index j0 = 0; j0 < end; j0 += kKeyBlock) {
    const Index cols = std::min(kKeyBlock, end - j0);
    head.logits(qs, i0, rows, j0, cols, s);
    for (Index r = 0; r < rows; ++r) {
      T* row = s + r * cols;
      T m_new = std::max(run_max[r], ArrayMap<T>(row, cols).maxCoeff());
      if (m_new == ninf) {
        // Every key so far masked for this query, unless the (fast, NaN-skipping) maximum
        // passed over a NaN logit: that row is NaN, as exp(NaN - max) makes it elsewhere.
        if (!ArrayMap<T>(row, cols).isNaN().any()) {
          std::fill(row, row + cols, T(0));
          continue;
        }
        m_new = std::numeric_limits<T>::quiet_NaN();
      }
      const T row_sum = exp_shifted_sum(row, cols, m_new);
      const T alpha = run_max[r] == ninf ? T(0) : std::exp(run_max[r] - m_new);
      run_sum[r] = run_sum[r] * alpha + row_sum;
      if (alpha != T(1)) ArrayMap<T>(acc + r * dv, dv) *= alpha;
      run_max[r] = m_new;
      if (drop.active) drop.apply(row, row, cols, head.counter(i0 + r, j0));
    }
    block_product<T>(rows, dv, cols, s, cols, false, a.v.row(b, h, j0), a.v.time_stride, false,
                     acc, dv, true);
  }
  const T inf = std::numeric_limits<T>::infinity();
  T* lse = logsumexp ? logsumexp + (b * a.heads + h) * a.queries + i0 : nullptr;
  for (Index r = 0; r < rows; ++r) {
    // l == 0: every key masked (zeros, as Keras' masked softmax; logsumexp +inf marks it for
    // the backward pass). l NaN (a NaN or +inf logit, whose exp(x - max) is NaN, as in the
    // softmax formula): NaN outputs, not a masked row.
    const T l = run_sum[r];
    T* o = out.row(b, h, i0 + r);
    const bool masked = l == T(0);
    if (!masked) {
      const T inv = T(1) / l;
      for (Index c = 0; c < dv; ++c) o[c] = acc[r * dv + c] * inv;
    } else {
      std::fill(o, o + dv, T(0));
    }
    const T row_lse = masked ? inf : run_max[r] + std::log(l);
    if (lse) lse[r] = row_lse;
    stats[r] = row_lse;  // run_max no longer needed
  }
  if (!probabilities) return;
  // Second pass: P = exp(L − logsumexp), written row by row into (b, h, i, :).
  const Index S = a.keys;
  T* p_base = probabilities + ((b * a.heads + h) * a.queries + i0) * S;
  for (Index r = 0; r < rows; ++r) std::fill(p_base + r * S + end, p_base + (r + 1) * S, T(0));
  for (Index j0 = 0; j0 < end; j0 += kKeyBlock) {
    const Index cols = std::min(kKeyBlock, end - j0);
    head.logits(qs, i0, rows, j0, cols, s);
    for (Index r = 0; r < rows; ++r) {
      T* row = s + r * cols;
      T* p = p_base + r * S + j0;
      if (stats[r] == inf) {
        std::fill(p, p + cols, T(0));
        continue;
      }
      exp_shifted_sum(row, cols, stats[r]);
      std::copy(row, row + cols, p);
    }
  }
}

template <typename T>
void backward_head(const AttentionArgs<T>& a, const Dropout& drop, Index b, Index h,
                   const HeadsView<const T>& out, const HeadsView<const T>& dout,
                   const T* logsumexp, const HeadsView<T>& dq, const HeadsView<T>& dk,
                   const HeadsView<T>& dv) {
  const Index T_ = a.queries, S = a.keys, kd = a.key_dim, vd = a.value_dim;
  HeadAttention<T> head(a, b, h);
  const T* lse = logsumexp + (b * a.heads + h) * T_;
  T* qs = thread_scratch<T>(ScratchSlot::AttentionQueries, T_ * kd);
  T* p = thread_scratch<T>(ScratchSlot::AttentionScores, kQueryBlock * kKeyBlock);
  T* pd = thread_scratch<T>(ScratchSlot::AttentionProbs, kQueryBlock * kKeyBlock);
  T* dp = thread_scratch<T>(ScratchSlot::AttentionAccumulator, kQueryBlock * kKeyBlock);
  T* dk_acc = thread_scratch<T>(ScratchSlot::AttentionKeyGrads, kKeyBlock * kd);
  T* dv_acc = thread_scratch<T>(ScratchSlot::AttentionValueGrads, kKeyBlock * std::max<Index>(vd, 1));
  T* delta = thread_scratch<T>(ScratchSlot::AttentionRowStats, T_);
  head.scaled_queries(0, T_, qs);
  for (Index i = 0; i < T_; ++i) {  // D_i = dO_i · O_i
    const T* o = out.row(b, h, i);
    const T* g = dout.row(b, h, i);
    T d = 0;
    for (Index c = 0; c < vd; ++c) d += o[c] * g[c];
    delta[i] = d;
  }
  if (dq.data)
    for (Index i = 0; i < T_; ++i) std::fill(dq.row(b, h, i), dq.row(b, h, i) + kd, T(0));
  const T inf = std::numeric_limits<T>::infinity();
  const T scale = T(a.scale);
  for (Index j0 = 0; j0 < S; j0 += kKeyBlock) {
    const Index cols = std::min(kKeyBlock, S - j0);
    std::fill(dk_acc, dk_acc + cols * kd, T(0));
    std::fill(dv_acc, dv_acc + cols * vd, T(0));
    // Causal: queries before j0 see none of these keys.
    const Index first_block = a.causal ? (j0 / kQueryBlock) * kQueryBlock : 0;
    for (Index i0 = first_block; i0 < T_; i0 += kQueryBlock) {
      const Index rows = std::min(kQueryBlock, T_ - i0);
      head.logits(qs + i0 * kd, i0, rows, j0, cols, p);
      for (Index r = 0; r < rows; ++r) {
        T* row = p + r * cols;
        if (lse[i0 + r] == inf)
          std::fill(row, row + cols, T(0));
        else
          exp_shifted_sum(row, cols, lse[i0 + r]);
      }
      const T* p_used = p;  // the probabilities after dropout
      if (drop.active) {
        for (Index r = 0; r < rows; ++r)
          drop.apply(p + r * cols, pd + r * cols, cols, head.counter(i0 + r, j0));
        p_used = pd;
      }
      if (dv.data)  // dV += P_usedᵀ dO
        block_product<T>(cols, vd, rows, p_used, cols, true, dout.row(b, h, i0), dout.time_stride,
                         false, dv_acc, vd, true);
      // dP = dO Vᵀ (through the dropout), then dS = P∘(dP − D) in place.
      block_product<T>(rows, cols, vd, dout.row(b, h, i0), dout.time_stride, false,
                       a.v.row(b, h, j0), a.v.time_stride, true, dp, cols, false);
      for (Index r = 0; r < rows; ++r) {
        T* g = dp + r * cols;
        if (drop.active) drop.apply(g, g, cols, head.counter(i0 + r, j0));
        ArrayMap<T> gm(g, cols);
        gm = ArrayMap<T>(p + r * cols, cols) * (gm - delta[i0 + r]);
      }
      if (dk.data)  // dK += dSᵀ (scale·Q)
        block_product<T>(cols, kd, rows, dp, cols, true, qs + i0 * kd, kd, false, dk_acc, kd, true);
      if (dq.data) {  // dQ += scale·dS K
        ArrayMap<T>(dp, rows * cols) *= scale;
        block_product<T>(rows, kd, cols, dp, cols, false, a.k.row(b, h, j0), a.k.time_stride,
                         false, dq.row(b, h, i0), dq.time_stride, true);
      }
    }
    for (Index c = 0; c < cols; ++c) {
      if (dk.data) std::copy(dk_acc + c * kd, dk_acc + (c + 1) * kd, dk.row(b, h, j0 + c));
      if (dv.data) std::copy(dv_acc + c * vd, dv_acc + (c + 1) * vd, dv.row(b, h, j0 + c));
    }
  }
}

}  // namespace

template <typename T>
void attention_forward(const AttentionArgs<T>& a, const HeadsView<T>& out, T* logsumexp,
                       T* probabilities) {
  const Index blocks = (a.queries + kQueryBlock - 1) / kQueryBlock;
  const Index tasks = a.batch * a.heads * blocks;
  if (tasks == 0) return;
  const Dropout drop(a.dropout_rate, a.seed);
  const double flops = 2.0 * double(a.batch * a.heads) * double(a.queries) * double(a.keys) *
                       double(a.key_dim + a.value_dim + 4);
  parallel_for(tasks, threads_for(flops), [&](Index t) {
    const Index bh = t / blocks, qb = t % blocks;
    const Index i0 = qb * kQueryBlock;
    forward_block(a, drop, bh / a.heads, bh % a.heads, i0, std::min(kQueryBlock, a.queries - i0),
                  out, logsumexp, probabilities);
  });
}

template <typename T>
void attention_backward(const AttentionArgs<T>& a, const HeadsView<const T>& out,
                        const HeadsView<const T>& dout, const T* logsumexp,
                        const HeadsView<T>& dq, const HeadsView<T>& dk, const HeadsView<T>& dv) {
  const Index tasks = a.batch * a.heads;
  if (tasks == 0 || a.queries == 0) {
    // No query reads any key: the key and value gradients are zero.
    for (Index b = 0; b < a.batch; ++b)
      for (Index h = 0; h < a.heads; ++h)
        for (Index j = 0; j < a.keys; ++j) {
          if (dk.data) std::fill(dk.row(b, h, j), dk.row(b, h, j) + a.key_dim, T(0));
          if (dv.data) std::fill(dv.row(b, h, j), dv.row(b, h, j) + a.value_dim, T(0));
        }
    return;
  }
  const Dropout drop(a.dropout_rate, a.seed);
  const double flops = 5.0 * double(tasks) * double(a.queries) * double(a.keys) *
                       double(a.key_dim + a.value_dim + 4);
  parallel_for(tasks, threads_for(flops), [&](Index t) {
    backward_head(a, drop, t / a.heads, t % a.heads, out, dout, logsumexp, dq, dk, dv);
  });
}

template void attention_forward<float>(const AttentionArgs<float>&, const HeadsView<float>&,
                                       float*, float*);
template void attention_forward<double>(const AttentionArgs<double>&, const HeadsView<double>&,
                                        double*, double*);
template void attention_backward<float>(const AttentionArgs<float>&, const HeadsView<const float>&,
                                        const HeadsView<const float>&, const float*,
                                        const HeadsView<float>&, const HeadsView<float>&,
                                        const HeadsView<float>&);
template void attention_backward<double>(const AttentionArgs<double>&,
                                         const HeadsView<const double>&,
                                         const HeadsView<const double>&, const double*,
                                         const HeadsView<double>&, const HeadsView<double>&,
                                         const HeadsView<double>&);

}  // namespace fastnn
