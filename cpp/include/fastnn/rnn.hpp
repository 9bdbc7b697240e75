// Recurrent layers over whole sequences: LSTM, GRU (Keras' reset_after=True and =False) and
// SimpleRNN, forward and backward through time, each one call.
//
//   LSTM:      z = x_t·W + h·R + b (gates i, f, c, o);  i, f, o = σ(z), g = act(z_c)
//              c' = f⊙c + i⊙g,  h' = o⊙act(c')
//   GRU:       xz = x_t·W + b_in,  rh = h·R + b_rec (gates z, r, h)
//              z = σ(xz_z + rh_z),  r = σ(xz_r + rh_r),  ĥ = act(xz_h + r⊙rh_h)
//              h' = z⊙h + (1 − z)⊙ĥ
//   GRU, reset_after=False (GruResetBefore): xz = x_t·W + b (one bias, 3·units)
//              z = σ(xz_z + h·R_z),  r = σ(xz_r + h·R_r),  ĥ = act(xz_h + (r⊙h)·R_h)
//              h' = z⊙h + (1 − z)⊙ĥ   (two products per step: ĥ's waits for r)
//   SimpleRNN: h' = act(x_t·W + h·R + b)
// (σ stands for the recurrent activation.)
//
// Layouts (Keras): x is (batch, steps, input); W is (input, G·units) and R (units, G·units)
// with G = 4 (LSTM), 3 (GRU), 1 (SimpleRNN); b is (G·units), for the reset_after GRU
// (2, 3·units): input bias then recurrent bias. The mask is (batch, steps) in input order: a masked step
// leaves the states as they were. With go_backwards the steps run from last to first.
//
// Cost: the input projection of all steps is one GEMM (2·B·T·D·G·U flops); each step adds
// one B×U by U×G·U product and the fused elementwise gate maths. Backward: one product per
// step for the recurrent gradient, then the weight gradients and dx as three GEMMs over all
// steps (3× the forward flops in all). Every product and the bias sums reduce in a fixed
// order, so results are the same bits on any thread count.
#pragma once

#include <cstdint>

#include "fastnn/activation.hpp"
#include "fastnn/parallel.hpp"

namespace fastnn {

enum class RnnKind : int { Lstm = 0, Gru, SimpleRnn, GruResetBefore };

/// Gate blocks per kind (G above).
constexpr Index rnn_gates(RnnKind kind) {
  return kind == RnnKind::Lstm ? 4 : kind == RnnKind::SimpleRnn ? 1 : 3;
}

/// The activations of the recurrent kernels (Keras' names in the bindings). The tape keeps
/// activated gates only, so each derivative must follow from the output: y > 0 tells x > 0
/// for the ELUs and ReLUs, softplus' is 1 − e^−y, softsign's (1 − |y|)², the hard ones' are
/// their slope strictly inside their range. (gelu and swish are not monotonic: no.)
enum class RnnActivation : int {
  Linear = 0,
  Relu,
  Sigmoid,
  Tanh,
  HardSigmoid,  // Keras 3: relu6(x + 3)/6, computed as clip(x/6 + 0.5, 0, 1)
  Softsign,     // x/(1 + |x|)
  Elu,          // alpha 1 (Keras' default)
  Selu,
  Softplus,
  LeakyRelu,    // negative slope 0.2 (Keras' default)
  Relu6,
  HardTanh,     // clip(x, −1, 1)
};
constexpr int kRnnActivationCount = int(RnnActivation::HardTanh) + 1;

/// A row stride for a matrix of `cols` values per row: `cols`, padded when a row is a
/// multiple of 4 KB (rows that far apart share cache sets, and the GEMM would copy such a
/// matrix before reading it, i.e. on every step).
template <typename T>
constexpr Index unaliased_stride(Index cols) {
  return (cols * Index(sizeof(T))) % 4096 == 0 ? cols + 64 / Index(sizeof(T)) : cols;
}

template <typename T>
struct RnnArgs {
  RnnKind kind = RnnKind::Lstm;
  Index batch = 0, steps = 0, input = 0, units = 0;
  bool go_backwards = false;
  const T* x = nullptr;          // (batch, steps, input)
  const T* kernel = nullptr;     // (input, G·units); null: x already holds the input projections
                                 //   x·kernel (input = G·units), e.g. from int8 products
  const T* recurrent = nullptr;  // (units, G·units)
  const T* bias = nullptr;       // optional: (G·units); reset_after GRU (2, 3·units)
  const T* h0 = nullptr;         // optional (batch, units): zeros when null
  const T* c0 = nullptr;         // LSTM, optional (batch, units)
  const std::uint8_t* mask = nullptr;  // optional (batch, steps), input order; 0 = skip
  const T* recurrent_scale = nullptr;  // optional (batch, units): h ⊙ scale enters the
                                       // recurrent product (recurrent dropout's mask)
  RnnActivation act = RnnActivation::Tanh;
  RnnActivation recurrent_act = RnnActivation::Sigmoid;

  Index width() const { return rnn_gates(kind) * units; }  // G·units
  /// Row stride of the gate arrays.
  Index gate_stride() const { return unaliased_stride<T>(width()); }
  /// The input step read at processing step s.
  Index time(Index s) const { return go_backwards ? steps - 1 - s : s; }
};

/// What the forward pass keeps for the backward pass ("the tape"), time-major and in
/// processing order (step s reads input step time(s)), so that each step's rows are one
/// contiguous block.
template <typename T>
struct RnnTape {
  T* h = nullptr;      // (steps + 1, batch, units): h[0] the initial state, h[s + 1] after step s
  T* c = nullptr;      // LSTM: (steps + 1, batch, units) the cell state, likewise
  T* act_c = nullptr;  // LSTM: (steps, batch, units) act(c) after step s
  T* gates = nullptr;  // LSTM, GRU: (steps, batch, gate_stride()) activated gates in the
                       //   first G·units of each row (LSTM i, f, g, o; GRU z, r, ĥ)
  T* rh = nullptr;     // GRU: (steps, batch, units) h·R_h + b_rec,h; GruResetBefore: r⊙h
                       //   (h ⊙ recurrent_scale with recurrent dropout), what R_h multiplies
};

template <typename T>
struct RnnGrads {
  T* dx = nullptr;          // (batch, steps, input), overwritten
  T* dkernel = nullptr;     // as kernel
  T* drecurrent = nullptr;  // as recurrent
  T* dbias = nullptr;       // as bias
  T* dh0 = nullptr;         // (batch, units), overwritten
  T* dc0 = nullptr;         // LSTM (batch, units), overwritten
  bool accumulate = false;  // add to dkernel, drecurrent, dbias instead of overwriting
};

/// Runs the sequence, filling the tape (every pointer the kind needs must be given).
template <typename T>
void rnn_forward(const RnnArgs<T>& a, const RnnTape<T>& tape);

/// Backward through time. dy: optional (batch, steps, units) gradient of the outputs
/// h[1:] (batch-major, processing order); dh_last, dc_last: optional gradients of the final states. Each
/// gradient pointer may be null (skipped).
template <typename T>
void rnn_backward(const RnnArgs<T>& a, const RnnTape<T>& tape, const T* dy, const T* dh_last,
                  const T* dc_last, const RnnGrads<T>& g);

}  // namespace fastnn
