// Scaled dot-product attention, tiled over the keys with an online softmax (FlashAttention).
//
// For each batch b and head h, with queries Q (T×dk), keys K (S×dk), values V (S×dv):
//
//   L = scale · Q Kᵀ + bias        (T×S logits; bias optional, broadcast)
//   L[i, j] = −∞ where the mask is false or, causal, where j > i
//   P = softmax(L) over j          (a row with every entry masked gives P = 0, as Keras)
//   O = (P ∘ Z / (1 − rate)) V     (Z: the dropout keep mask, seeded; rate 0: none)
//
// Forward: one task per (b, h, block of kQueryBlock queries). The task walks the key blocks
// in order keeping, per query row, the running maximum m, the running sum l and the
// unnormalised output; a new block rescales them by exp(m_old − m_new). Memory is one
// block of logits per thread, never the T×S matrix; the per-row logsumexp m + log l is
// kept for the backward pass (T values per head). The probabilities are written only when
// asked for (Keras' return_attention_scores), by a second pass over the key blocks.
//
// Backward (FlashAttention-2): with D_i = dO_i · O_i (equal to Σ_j P_ij dP_ij also with
// dropout), each key block recomputes P = exp(L − logsumexp) per query block and
//   dV += (P∘Z/(1−rate))ᵀ dO,  dP = (dO Vᵀ)∘Z/(1−rate),  dS = P∘(dP − D),
//   dQ += scale·dS K,  dK += scale·dSᵀ Q.
// Tasks are (b, h) pairs, each walking key blocks (outer) and query blocks (inner): every
// sum runs in a fixed order, so results are identical bit for bit on any thread count.
//
// Layouts: Q, K, V, O and their gradients are read through strides (batch, head, time;
// the feature axis contiguous), so Keras' (B, T, heads, d) and PyTorch's (B, heads, T, d)
// are both read in place. Mask and bias are read through four strides (0 to broadcast).
// The dropout mask is a function of (seed, b, h, i, j) only: the backward pass
// regenerates it.
//
// Cost: 2·T·S·(dk + dv) flops forward, about 2.5× that backward; T·S exponentials each way.
#pragma once

#include <cstdint>

#include "fastnn/parallel.hpp"

namespace fastnn {

/// A (batch, heads, time, features) tensor with a contiguous feature axis.
template <typename T>
struct HeadsView {
  T* data = nullptr;
  Index batch_stride = 0, head_stride = 0, time_stride = 0;
  T* row(Index b, Index h, Index t) const {
    return data + b * batch_stride + h * head_stride + t * time_stride;
  }
};

/// A (batch, heads, T, S) array read through strides (0 on a broadcast axis).
template <typename E>
struct ScoresView {
  const E* data = nullptr;
  Index batch_stride = 0, head_stride = 0, query_stride = 0, key_stride = 0;
};

template <typename T>
struct AttentionArgs {
  Index batch = 0, heads = 0;
  Index queries = 0;    // T
  Index keys = 0;       // S
  Index key_dim = 0;    // dk: features of Q and K
  Index value_dim = 0;  // dv: features of V and O
  HeadsView<const T> q, k, v;
  double scale = 1.0;
  ScoresView<uint8_t> mask;  // optional (data null): false = not attended
  ScoresView<T> bias;        // optional additive bias of the logits
  bool causal = false;       // key j attends to query i only when j <= i
  double dropout_rate = 0.0;
  uint64_t seed = 0;
};

/// Writes O (through `out`) and, when not null, the per-row logsumexp (batch·heads·T values,
/// +∞ for a fully masked row) and the probabilities P (batch, heads, T, S, C order).
template <typename T>
void attention_forward(const AttentionArgs<T>& a, const HeadsView<T>& out, T* logsumexp,
                       T* probabilities);

/// Gradients for dO given the forward's O and logsumexp. dq, dk, dv are overwritten (each
/// skipped when its data is null).
template <typename T>
void attention_backward(const AttentionArgs<T>& a, const HeadsView<const T>& out,
                        const HeadsView<const T>& dout, const T* logsumexp,
                        const HeadsView<T>& dq, const HeadsView<T>& dk, const HeadsView<T>& dv);

}  // namespace fastnn
