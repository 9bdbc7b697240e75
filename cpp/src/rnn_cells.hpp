// The elementwise part of one recurrent step for one sample (a row of units), forward and
// backward, for each kind (see fastnn/rnn.hpp for the formulas). The products around them
// are in rnn.cpp.
#pragma once

#include "fastnn/activation.hpp"

namespace fastnn::rnn_detail {

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

/// z: the step's pre-activations (4u), activated in place; writes c, act(c) and h.
template <typename T>
void lstm_step(const Activation& act, const Activation& ract, Index u, T* z, const T* c_prev,
               T* c, T* act_c, T* h) {
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
