// The elementwise part of one recurrent step for one sample (a row of units), forward and
// backward, for each kind (see fastnn/rnn.hpp for the formulas). The products around them
// are in rnn.cpp.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>

#include "fastnn/activation.hpp"
#include "fastnn/rnn.hpp"

namespace fastnn::rnn_detail {

namespace ei = Eigen::internal;

/// The general activation kernel's form of the kinds it computes (the others are here).
inline Activation general_activation(RnnActivation kind) {
  switch (kind) {
    case RnnActivation::Relu: return {ActivationKind::Relu};
    case RnnActivation::Sigmoid: return {ActivationKind::Sigmoid};
    case RnnActivation::Tanh: return {ActivationKind::Tanh};
    case RnnActivation::Elu: return {ActivationKind::Elu, 1.0};
    case RnnActivation::Selu: return {ActivationKind::Selu};
    case RnnActivation::Softplus: return {ActivationKind::Softplus};
    case RnnActivation::LeakyRelu: return {ActivationKind::LeakyRelu, 0.2};
    default: return {ActivationKind::Linear};
  }
}

// SELU's constants, as in activation.cpp.
constexpr double kSeluAlpha = 1.6732632423543772848170429916717;
constexpr double kSeluScale = 1.0507009873554804934193349852946;

/// d[i] = f'(x) for y[i] = f(x), from the output alone (see RnnActivation). Where f is flat
/// or kinked the derivative is Keras' (TensorFlow's): 0 at relu's 0, at the ends of the hard
/// functions' ranges.
template <typename T>
void derivative_from_output(RnnActivation kind, const T* __restrict__ y, T* __restrict__ d, Index n) {
  switch (kind) {
    case RnnActivation::Sigmoid:
      for (Index i = 0; i < n; ++i) d[i] = y[i] * (T(1) - y[i]);
      break;
    case RnnActivation::Tanh:
      for (Index i = 0; i < n; ++i) d[i] = T(1) - y[i] * y[i];
      break;
    case RnnActivation::Relu:
      for (Index i = 0; i < n; ++i) d[i] = y[i] > T(0) ? T(1) : T(0);
      break;
    case RnnActivation::HardSigmoid:
      for (Index i = 0; i < n; ++i) d[i] = y[i] > T(0) && y[i] < T(1) ? T(1) / T(6) : T(0);
      break;
    case RnnActivation::Softsign:  // 1/(1 + |x|)² with 1/(1 + |x|) = 1 − |y|
      for (Index i = 0; i < n; ++i) {
        const T a = T(1) - std::abs(y[i]);
        d[i] = a * a;
      }
      break;
    case RnnActivation::Elu:  // e^x = y + 1 below 0
      for (Index i = 0; i < n; ++i) d[i] = y[i] > T(0) ? T(1) : y[i] + T(1);
      break;
    case RnnActivation::Selu:  // scale·alpha·e^x = y + scale·alpha below 0
      for (Index i = 0; i < n; ++i) d[i] = y[i] > T(0) ? T(kSeluScale) : y[i] + T(kSeluScale * kSeluAlpha);
      break;
    case RnnActivation::Softplus:  // σ(x) = 1 − e^−y
      for (Index i = 0; i < n; ++i) d[i] = -std::expm1(-y[i]);
      break;
    case RnnActivation::LeakyRelu:
      for (Index i = 0; i < n; ++i) d[i] = y[i] > T(0) ? T(1) : T(0.2);
      break;
    case RnnActivation::Relu6:
      for (Index i = 0; i < n; ++i) d[i] = y[i] > T(0) && y[i] < T(6) ? T(1) : T(0);
      break;
    case RnnActivation::HardTanh:
      for (Index i = 0; i < n; ++i) d[i] = y[i] > T(-1) && y[i] < T(1) ? T(1) : T(0);
      break;
    default:
      for (Index i = 0; i < n; ++i) d[i] = T(1);
  }
}

/// y = f(x) for a step's gates (y may be x). The sigmoid runs as (1 + tanh(x/2))/2: the
/// vectorised tanh is ~3x faster than exp and a division, and the absolute error (what a
/// gate's product sees) stays at float rounding. The piecewise ones are a few exact
/// operations per value: the same bits whichever loop (vector or scalar) computes them.
template <typename T>
void gate_forward(RnnActivation kind, T* x, T* y, Index n) {
  switch (kind) {
    case RnnActivation::Sigmoid:
      for (Index i = 0; i < n; ++i) y[i] = T(0.5) * x[i];
      activation_forward_serial(Activation{ActivationKind::Tanh}, y, y, n);
      for (Index i = 0; i < n; ++i) y[i] = T(0.5) + T(0.5) * y[i];
      return;
    case RnnActivation::HardSigmoid:
      for (Index i = 0; i < n; ++i) y[i] = std::min(std::max(x[i] / T(6) + T(0.5), T(0)), T(1));
      return;
    case RnnActivation::Softsign:
      for (Index i = 0; i < n; ++i) y[i] = x[i] / (T(1) + std::abs(x[i]));
      return;
    case RnnActivation::Relu6:
      for (Index i = 0; i < n; ++i) y[i] = std::min(std::max(x[i], T(0)), T(6));
      return;
    case RnnActivation::HardTanh:
      for (Index i = 0; i < n; ++i) y[i] = std::min(std::max(x[i], T(-1)), T(1));
      return;
    default:
      activation_forward_serial(general_activation(kind), x, y, n);
  }
}

// ---- LSTM: gates i, f, g (act), o --------------------------------------------------------

// The default LSTM (tanh, sigmoid) in float: the whole step's gate maths in one pass over
// the units, in vector registers. Units past the last full vector go through a padded
// vector, so every unit takes the same path (the result depends on the value only).
using FloatPacket = ei::packet_traits<float>::type;
constexpr int kFloatLanes = ei::unpacket_traits<FloatPacket>::size;

inline FloatPacket packet_sigmoid(const FloatPacket& x) {  // (1 + tanh(x/2))/2
  const FloatPacket half = ei::pset1<FloatPacket>(0.5f);
  return ei::pmadd(ei::ptanh(ei::pmul(x, half)), half, half);
}

inline void lstm_vector(float* zi, float* zf, float* zg, float* zo, const float* cp, float* c,
                        float* ac, float* h) {
  const FloatPacket i = packet_sigmoid(ei::ploadu<FloatPacket>(zi));
  const FloatPacket f = packet_sigmoid(ei::ploadu<FloatPacket>(zf));
  const FloatPacket g = ei::ptanh(ei::ploadu<FloatPacket>(zg));
  const FloatPacket o = packet_sigmoid(ei::ploadu<FloatPacket>(zo));
  ei::pstoreu(zi, i);
  ei::pstoreu(zf, f);
  ei::pstoreu(zg, g);
  ei::pstoreu(zo, o);
  const FloatPacket cn = ei::pmadd(f, ei::ploadu<FloatPacket>(cp), ei::pmul(i, g));
  const FloatPacket a = ei::ptanh(cn);
  ei::pstoreu(c, cn);
  ei::pstoreu(ac, a);
  ei::pstoreu(h, ei::pmul(o, a));
}

/// The fused step when it applies (float, activation tanh, recurrent_activation sigmoid).
inline bool lstm_step_fused(RnnActivation act, RnnActivation ract, Index u, float* z,
                            const float* c_prev, float* c, float* act_c, float* h) {
  if constexpr (!ei::packet_traits<float>::HasTanh) return false;
  if (act != RnnActivation::Tanh || ract != RnnActivation::Sigmoid) return false;
  constexpr Index L = kFloatLanes;
  Index j = 0;
  for (; j + L <= u; j += L)
    lstm_vector(z + j, z + u + j, z + 2 * u + j, z + 3 * u + j, c_prev + j, c + j, act_c + j, h + j);
  if (j < u) {
    alignas(64) float pad[8][L] = {};
    const Index n = u - j;
    for (int q = 0; q < 4; ++q) std::copy(z + q * u + j, z + q * u + u, pad[q]);
    std::copy(c_prev + j, c_prev + u, pad[4]);
    lstm_vector(pad[0], pad[1], pad[2], pad[3], pad[4], pad[5], pad[6], pad[7]);
    for (int q = 0; q < 4; ++q) std::copy(pad[q], pad[q] + n, z + q * u + j);
    std::copy(pad[5], pad[5] + n, c + j);
    std::copy(pad[6], pad[6] + n, act_c + j);
    std::copy(pad[7], pad[7] + n, h + j);
  }
  return true;
}

template <typename T>
bool lstm_step_fused(RnnActivation, RnnActivation, Index, T*, const T*, T*, T*, T*) {
  return false;  // double: the general path
}

/// z: the step's pre-activations (4u), activated in place; writes c, act(c) and h.
template <typename T>
void lstm_step(RnnActivation act, RnnActivation ract, Index u, T* z, const T* c_prev,
               T* c, T* act_c, T* h) {
  if (lstm_step_fused(act, ract, u, z, c_prev, c, act_c, h)) return;
  gate_forward(ract, z, z, 2 * u);
  gate_forward(act, z + 2 * u, z + 2 * u, u);
  gate_forward(ract, z + 3 * u, z + 3 * u, u);
  const T *i = z, *f = z + u, *g = z + 2 * u;
  for (Index j = 0; j < u; ++j) c[j] = f[j] * c_prev[j] + i[j] * g[j];
  gate_forward(act, c, act_c, u);
  const T* o = z + 3 * u;
  for (Index j = 0; j < u; ++j) h[j] = o[j] * act_c[j];
}

/// dh: d(loss)/dh of this step; dc: d(loss)/dc in, d(loss)/dc_prev out; dz: the gates'
/// pre-activation gradients (4u). tmp: 5u scratch values. (The pointers never alias:
/// __restrict__ lets the loops vectorise.)
template <typename T>
void lstm_step_backward(RnnActivation act, RnnActivation ract, Index u,
                        const T* __restrict__ gates, const T* __restrict__ c_prev,
                        const T* __restrict__ act_c, const T* __restrict__ dh, T* __restrict__ dc,
                        T* __restrict__ dz, T* __restrict__ tmp) {
  if (act == RnnActivation::Tanh && ract == RnnActivation::Sigmoid) {
    // The default activations: their derivatives inline, one pass.
    for (Index j = 0; j < u; ++j) {
      const T i = gates[j], f = gates[u + j], g = gates[2 * u + j], o = gates[3 * u + j];
      const T a = act_c[j];
      const T dcj = dc[j] + dh[j] * o * (T(1) - a * a);
      dz[j] = dcj * g * (i * (T(1) - i));
      dz[u + j] = dcj * c_prev[j] * (f * (T(1) - f));
      dz[2 * u + j] = dcj * i * (T(1) - g * g);
      dz[3 * u + j] = dh[j] * a * (o * (T(1) - o));
      dc[j] = dcj * f;
    }
    return;
  }
  T* __restrict__ dgate = tmp;         // f'(pre-activation) of each gate, from its output
  T* __restrict__ dact = tmp + 4 * u;  // act'(c)
  derivative_from_output(ract, gates, dgate, 4 * u);
  derivative_from_output(act, gates + 2 * u, dgate + 2 * u, u);
  derivative_from_output(act, act_c, dact, u);
  const T* __restrict__ i = gates;
  const T* __restrict__ f = gates + u;
  const T* __restrict__ g = gates + 2 * u;
  const T* __restrict__ o = gates + 3 * u;
  T* __restrict__ dzi = dz;
  T* __restrict__ dzf = dz + u;
  T* __restrict__ dzg = dz + 2 * u;
  T* __restrict__ dzo = dz + 3 * u;
  for (Index j = 0; j < u; ++j) {
    const T dcj = dc[j] + dh[j] * o[j] * dact[j];
    dzi[j] = dcj * g[j] * dgate[j];
    dzf[j] = dcj * c_prev[j] * dgate[u + j];
    dzg[j] = dcj * i[j] * dgate[2 * u + j];
    dzo[j] = dh[j] * act_c[j] * dgate[3 * u + j];
    dc[j] = dcj * f[j];
  }
}

// ---- GRU (reset_after): gates z, r, ĥ -----------------------------------------------------

/// xz: x·W + b_in (3u), replaced by the activated gates z, r, ĥ; rec: h_prev·R + b_rec (3u).
template <typename T>
void gru_step(RnnActivation act, RnnActivation ract, Index u, T* xz, const T* rec,
              const T* h_prev, T* rh, T* h) {
  for (Index j = 0; j < 2 * u; ++j) xz[j] += rec[j];
  gate_forward(ract, xz, xz, 2 * u);
  const T *z = xz, *r = xz + u;
  T* hh = xz + 2 * u;
  for (Index j = 0; j < u; ++j) {
    rh[j] = rec[2 * u + j];
    hh[j] += r[j] * rh[j];
  }
  gate_forward(act, hh, hh, u);
  for (Index j = 0; j < u; ++j) h[j] = z[j] * h_prev[j] + (T(1) - z[j]) * hh[j];
}

/// dh: d(loss)/dh; writes the input-side (dxz) and recurrent-side (drec) pre-activation
/// gradients (3u each) and the direct part of d(loss)/dh_prev (carry). tmp: 3u values.
template <typename T>
void gru_step_backward(RnnActivation act, RnnActivation ract, Index u,
                       const T* __restrict__ gates, const T* __restrict__ rh,
                       const T* __restrict__ h_prev, const T* __restrict__ dh, T* __restrict__ dxz,
                       T* __restrict__ drec, T* __restrict__ carry, T* __restrict__ tmp) {
  derivative_from_output(ract, gates, tmp, 2 * u);
  derivative_from_output(act, gates + 2 * u, tmp + 2 * u, u);
  const T *z = gates, *r = gates + u, *hh = gates + 2 * u;
  for (Index j = 0; j < u; ++j) {
    const T dzz = dh[j] * (h_prev[j] - hh[j]) * tmp[j];
    const T da = dh[j] * (T(1) - z[j]) * tmp[2 * u + j];
    const T dr = da * rh[j] * tmp[u + j];
    dxz[j] = drec[j] = dzz;
    dxz[u + j] = drec[u + j] = dr;
    dxz[2 * u + j] = da;
    drec[2 * u + j] = da * r[j];
    carry[j] = dh[j] * z[j];
  }
}

// ---- GRU (reset_after=False): gates z, r, ĥ; r scales h before its product -----------------

/// First half of a step. z: x·W + b + h_in·R_zr in its first 2u values, activated in place
/// to z, r; q = r⊙h_in (what R_h multiplies; zeros when there is no h_in, i.e. h = 0).
template <typename T>
void gru_rb_gates(RnnActivation ract, Index u, T* z, const T* h_in, T* q) {
  gate_forward(ract, z, z, 2 * u);
  const T* r = z + u;
  if (h_in) {
    for (Index j = 0; j < u; ++j) q[j] = r[j] * h_in[j];
  } else {
    std::fill(q, q + u, T(0));
  }
}

/// Second half: z[2u, 3u) holds x·W_h + b_h + q·R_h, activated in place to ĥ; writes h.
template <typename T>
void gru_rb_output(RnnActivation act, Index u, T* z, const T* h_prev, T* h) {
  gate_forward(act, z + 2 * u, z + 2 * u, u);
  const T *zz = z, *hh = z + 2 * u;
  for (Index j = 0; j < u; ++j) h[j] = zz[j] * h_prev[j] + (T(1) - zz[j]) * hh[j];
}

/// First half of a step's backward: the update gate's and ĥ's pre-activation gradients
/// (dz[0, u), dz[2u, 3u)) and the direct part of d(loss)/dh_prev (carry). tmp: u values.
template <typename T>
void gru_rb_backward_output(RnnActivation act, RnnActivation ract, Index u, const T* __restrict__ gates,
                            const T* __restrict__ h_prev, const T* __restrict__ dh, T* __restrict__ dz,
                            T* __restrict__ carry, T* __restrict__ tmp) {
  const T *z = gates, *hh = gates + 2 * u;
  derivative_from_output(ract, z, tmp, u);
  for (Index j = 0; j < u; ++j) {
    dz[j] = dh[j] * (h_prev[j] - hh[j]) * tmp[j];
    carry[j] = dh[j] * z[j];
  }
  derivative_from_output(act, hh, tmp, u);
  for (Index j = 0; j < u; ++j) dz[2 * u + j] = dh[j] * (T(1) - z[j]) * tmp[j];
}

/// Second half: from dq = d(loss)/dq (dz[2u, 3u)·R_hᵀ), the reset gate's pre-activation
/// gradient dz[u, 2u) and dq⊙r, the part of d(loss)/dh_in through q. tmp: u values.
template <typename T>
void gru_rb_backward_reset(RnnActivation ract, Index u, const T* __restrict__ gates,
                           const T* __restrict__ h_in, const T* __restrict__ dq, T* __restrict__ dz,
                           T* __restrict__ dh_in, T* __restrict__ tmp) {
  const T* r = gates + u;
  derivative_from_output(ract, r, tmp, u);
  for (Index j = 0; j < u; ++j) {
    dz[u + j] = dq[j] * h_in[j] * tmp[j];
    dh_in[j] = dq[j] * r[j];
  }
}

// ---- SimpleRNN ------------------------------------------------------------------------------

template <typename T>
void simple_step(RnnActivation act, Index u, T* z, T* h) {
  gate_forward(act, z, h, u);
}

template <typename T>
void simple_step_backward(RnnActivation act, Index u, const T* __restrict__ h,
                          const T* __restrict__ dh, T* __restrict__ dz) {
  derivative_from_output(act, h, dz, u);
  for (Index j = 0; j < u; ++j) dz[j] *= dh[j];
}

}  // namespace fastnn::rnn_detail
