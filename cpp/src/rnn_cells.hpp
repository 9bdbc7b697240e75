// The elementwise part of one recurrent step for one sample (a row of units), forward and
// backward, for each kind (see fastnn/rnn.hpp for the formulas). The products around them
// are in rnn.cpp.
#pragma once

#include <Eigen/Core>
#include <algorithm>

#include "fastnn/activation.hpp"

namespace fastnn::rnn_detail {

namespace ei = Eigen::internal;

/// d[i] = f'(x) for y[i] = f(x), from the output alone (linear, relu, sigmoid, tanh).
template <typename T>
void derivative_from_output(ActivationKind kind, const T* __restrict__ y, T* __restrict__ d, Index n) {
  switch (kind) {
    case ActivationKind::Sigmoid:
      for (Index i = 0; i < n; ++i) d[i] = y[i] * (T(1) - y[i]);
      break;
    case ActivationKind::Tanh:
      for (Index i = 0; i < n; ++i) d[i] = T(1) - y[i] * y[i];
      break;
    case ActivationKind::Relu:
      for (Index i = 0; i < n; ++i) d[i] = y[i] > T(0) ? T(1) : T(0);
      break;
    default:
      for (Index i = 0; i < n; ++i) d[i] = T(1);
  }
}

/// y = f(x) for a step's gates (y may be x). The sigmoid runs as (1 + tanh(x/2))/2: the
/// vectorised tanh is ~3x faster than exp and a division, and the absolute error (what a
/// gate's product sees) stays at float rounding.
template <typename T>
void gate_forward(const Activation& act, T* x, T* y, Index n) {
  if (act.kind != ActivationKind::Sigmoid) return activation_forward_serial(act, x, y, n);
  for (Index i = 0; i < n; ++i) y[i] = T(0.5) * x[i];
  activation_forward_serial(Activation{ActivationKind::Tanh}, y, y, n);
  for (Index i = 0; i < n; ++i) y[i] = T(0.5) + T(0.5) * y[i];
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
inline bool lstm_step_fused(const Activation& act, const Activation& ract, Index u, float* z,
                            const float* c_prev, float* c, float* act_c, float* h) {
  if constexpr (!ei::packet_traits<float>::HasTanh) return false;
  if (act.kind != ActivationKind::Tanh || ract.kind != ActivationKind::Sigmoid) return false;
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
bool lstm_step_fused(const Activation&, const Activation&, Index, T*, const T*, T*, T*, T*) {
  return false;  // double: the general path
}

/// z: the step's pre-activations (4u), activated in place; writes c, act(c) and h.
template <typename T>
void lstm_step(const Activation& act, const Activation& ract, Index u, T* z, const T* c_prev,
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
void lstm_step_backward(const Activation& act, const Activation& ract, Index u,
                        const T* __restrict__ gates, const T* __restrict__ c_prev,
                        const T* __restrict__ act_c, const T* __restrict__ dh, T* __restrict__ dc,
                        T* __restrict__ dz, T* __restrict__ tmp) {
  if (act.kind == ActivationKind::Tanh && ract.kind == ActivationKind::Sigmoid) {
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
  derivative_from_output(ract.kind, gates, dgate, 4 * u);
  derivative_from_output(act.kind, gates + 2 * u, dgate + 2 * u, u);
  derivative_from_output(act.kind, act_c, dact, u);
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
void gru_step(const Activation& act, const Activation& ract, Index u, T* xz, const T* rec,
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
void gru_step_backward(const Activation& act, const Activation& ract, Index u,
                       const T* __restrict__ gates, const T* __restrict__ rh,
                       const T* __restrict__ h_prev, const T* __restrict__ dh, T* __restrict__ dxz,
                       T* __restrict__ drec, T* __restrict__ carry, T* __restrict__ tmp) {
  derivative_from_output(ract.kind, gates, tmp, 2 * u);
  derivative_from_output(act.kind, gates + 2 * u, tmp + 2 * u, u);
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

// ---- SimpleRNN ------------------------------------------------------------------------------

template <typename T>
void simple_step(const Activation& act, Index u, T* z, T* h) {
  gate_forward(act, z, h, u);
}

template <typename T>
void simple_step_backward(const Activation& act, Index u, const T* __restrict__ h,
                          const T* __restrict__ dh, T* __restrict__ dz) {
  derivative_from_output(act.kind, h, dz, u);
  for (Index j = 0; j < u; ++j) dz[j] *= dh[j];
}

}  // namespace fastnn::rnn_detail
