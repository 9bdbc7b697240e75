// Recurrent sequences (see fastnn/rnn.hpp): the products around the elementwise steps of
// rnn_cells.hpp, and the order of the steps.
#include "fastnn/rnn.hpp"

#include <algorithm>
#include <cstring>
#include <utility>

#include "fastnn/dense.hpp"
#include "fastnn/gemm.hpp"
#include "fastnn/scratch.hpp"
#include "rnn_cells.hpp"

namespace fastnn {

namespace {
using namespace rnn_detail;

// A step's elementwise work on fewer gate values than this stays on the calling thread
// (waking a second thread costs a few µs; batch 32 × 4·128 gates is about the break-even).
constexpr Index kParallelStepValues = 1 << 14;

// R (units × width) and Rᵀ (width × units), copied once per call with unaliased strides.
template <typename T>
struct RecurrentWeights {
  const T* r;
  Index ldr;
  const T* rt = nullptr;
  Index ldrt = 0;

  RecurrentWeights(const RnnArgs<T>& a, bool transposed) {
    const Index u = a.units, w = a.width();
    ldr = unaliased_stride<T>(w);
    ldrt = transposed ? unaliased_stride<T>(u) : 0;
    T* buffer = thread_scratch<T>(ScratchSlot::RnnWeights, u * ldr + w * ldrt);
    for (Index i = 0; i < u; ++i) std::memcpy(buffer + i * ldr, a.recurrent + i * w, sizeof(T) * w);
    r = buffer;
    if (!transposed) return;
    T* t = buffer + u * ldr;
    constexpr Index kTile = 32;  // transpose in tiles: both sides stay in cache
    for (Index i0 = 0; i0 < u; i0 += kTile)
      for (Index j0 = 0; j0 < w; j0 += kTile)
        for (Index j = j0; j < std::min(w, j0 + kTile); ++j)
          for (Index i = i0; i < std::min(u, i0 + kTile); ++i) t[j * ldrt + i] = a.recurrent[i * w + j];
    rt = t;
  }
};

// C (+)= A·B for one step's rows (A and C strided by whole sequences); `serial`: on the
// calling thread (already one of several running slices of the batch).
template <typename T>
void step_product(Index m, Index n, Index k, const T* a, Index lda, const T* b, Index ldb, T* c,
                  Index ldc, const T* bias, bool accumulate, bool serial) {
  GemmArgs<T> g;
  g.max_threads = serial ? 1 : 0;
  g.m = m;
  g.n = n;
  g.k = k;
  g.a = a;
  g.lda = lda;
  g.b = b;
  g.ldb = ldb;
  g.c = c;
  g.ldc = ldc;
  g.bias = bias;
  g.accumulate = accumulate;
  gemm(g);
}

// body(b) for samples [b0, b1) of a step: on the calling thread unless the step is large.
template <typename Body>
void for_each_sample(Index b0, Index b1, Index values, bool serial, Body&& body) {
  const int threads = !serial && (b1 - b0) * values >= kParallelStepValues ? num_threads() : 1;
  parallel_for(b1 - b0, threads, [&](Index i) { body(b0 + i); });
}

// Samples are independent through time. With several per thread, each thread runs a fixed
// slice of the batch through every step on its own (no synchronisation per step; its
// products read R from its own cache); with fewer, every step's product and gate maths are
// shared out instead. Each value is computed the same way either way.
constexpr Index kMinSamplesPerSlice = 8;  // one register tile of rows

template <typename Body>
void for_each_slice(Index batch, Body&& body) {
  const int threads = num_threads();
  const Index slices = threads > 1 && batch >= kMinSamplesPerSlice * threads ? threads : 1;
  parallel_for(slices, int(slices), [&](Index i) {
    body(i * batch / slices, (i + 1) * batch / slices, slices > 1);
  });
}

template <typename T>
bool masked(const RnnArgs<T>& a, Index b, Index t) {  // t: input order
  return a.mask && !a.mask[b * a.steps + t];
}

// Offsets of the inputs read by each processing step's rows (s, b), time-major: the input
// projection and the kernel gradient read x in place through them.
template <typename T>
const Index* step_row_offsets(const RnnArgs<T>& a) {
  const Index B = a.batch, S = a.steps;
  Index* offsets = thread_scratch<Index>(ScratchSlot::RnnOffsets, S * B + a.input);
  for (Index s = 0; s < S; ++s)
    for (Index b = 0; b < B; ++b) offsets[s * B + b] = (b * S + a.time(s)) * a.input;
  for (Index d = 0; d < a.input; ++d) offsets[S * B + d] = d;
  return offsets;
}

template <typename T>
void forward_impl(const RnnArgs<T>& a, const RnnTape<T>& tape) {
  const Index B = a.batch, S = a.steps, D = a.input, U = a.units, W = a.width();
  const Index ldz = a.gate_stride();
  const bool gru = a.kind == RnnKind::Gru, lstm = a.kind == RnnKind::Lstm;
  const bool gru_rb = a.kind == RnnKind::GruResetBefore;
  const Index* rows = step_row_offsets(a);
  // Pre-activations of every step: one product for the inputs of all steps.
  T* z = lstm || gru || gru_rb ? tape.gates : thread_scratch<T>(ScratchSlot::RnnGateGrads, S * B * ldz);
  if (!a.kernel) {  // the projections are given: reorder them by step (and add the bias)
    for (Index r = 0; r < S * B; ++r)
      for (Index j = 0; j < W; ++j) z[r * ldz + j] = a.x[rows[r] + j] + (a.bias ? a.bias[j] : T(0));
  } else {
    GemmArgs<T> g;
    g.m = S * B;
    g.n = W;
    g.k = D;
    g.a = a.x;
    g.a_row_offsets = rows;
    g.a_step_offsets = rows + S * B;  // 0, 1, ..., D - 1
    g.b = a.kernel;
    g.ldb = W;
    g.c = z;
    g.ldc = ldz;
    g.bias = a.bias;  // GRU: the input bias (first row)
    gemm(g);
  }
  const RecurrentWeights<T> weights(a, false);
  const Index block = B * U;  // one step of states
  if (a.h0) std::memcpy(tape.h, a.h0, sizeof(T) * block); else std::fill(tape.h, tape.h + block, T(0));
  if (lstm) {
    if (a.c0) std::memcpy(tape.c, a.c0, sizeof(T) * block); else std::fill(tape.c, tape.c + block, T(0));
  }
  // The GRU's h·R + b_rec per step; h ⊙ recurrent_scale per step (recurrent dropout).
  T* work = thread_scratch<T>(ScratchSlot::RnnStates, (gru ? B * ldz : 0) + (a.recurrent_scale ? block : 0));
  T* rec_all = gru ? work : nullptr;
  T* dropped_all = a.recurrent_scale ? work + (gru ? B * ldz : 0) : nullptr;
  const T* rec_bias = gru && a.bias ? a.bias + W : nullptr;

  for_each_slice(B, [&](Index b0, Index b1, bool serial) {
    const Index n = b1 - b0;
    T* rec = gru ? rec_all + b0 * ldz : nullptr;
    T* dropped = dropped_all ? dropped_all + b0 * U : nullptr;
    const T* scale = a.recurrent_scale ? a.recurrent_scale + b0 * U : nullptr;
    for (Index s = 0; s < S; ++s) {
      const Index t = a.time(s);
      const T* h_prev = tape.h + s * block + b0 * U;
      T* h_next = tape.h + (s + 1) * block;
      T* zs = z + s * B * ldz;
      const bool recur = s > 0 || a.h0;  // otherwise h_prev is zero
      const T* h_in = h_prev;  // what the recurrent product reads
      if (dropped && recur) {
        for (Index i = 0; i < n * U; ++i) dropped[i] = h_prev[i] * scale[i];
        h_in = dropped;
      }
      if (gru_rb) {  // z, r from h_in·R_zr; then ĥ from (r⊙h_in)·R_h
        if (recur)
          step_product<T>(n, 2 * U, U, h_in, U, weights.r, weights.ldr, zs + b0 * ldz, ldz, nullptr, true, serial);
        T* q = tape.rh + s * block;
        for_each_sample(b0, b1, W, serial, [&](Index b) {
          if (masked(a, b, t)) {  // the state carries over; q = 0 keeps dR's product finite
            std::memcpy(h_next + b * U, tape.h + s * block + b * U, sizeof(T) * U);
            std::fill(q + b * U, q + (b + 1) * U, T(0));
            return;
          }
          gru_rb_gates(a.recurrent_act, U, zs + b * ldz, recur ? h_in + (b - b0) * U : nullptr, q + b * U);
        });
        if (recur)
          step_product<T>(n, U, U, q + b0 * U, U, weights.r + 2 * U, weights.ldr, zs + b0 * ldz + 2 * U, ldz,
                          nullptr, true, serial);
        for_each_sample(b0, b1, W, serial, [&](Index b) {
          if (!masked(a, b, t)) gru_rb_output(a.act, U, zs + b * ldz, tape.h + s * block + b * U, h_next + b * U);
        });
        continue;
      }
      if (gru) {
        if (recur) {
          step_product(n, W, U, h_in, U, weights.r, weights.ldr, rec, ldz, rec_bias, false, serial);
        } else {
          for (Index b = 0; b < n; ++b)
            for (Index j = 0; j < W; ++j) rec[b * ldz + j] = rec_bias ? rec_bias[j] : T(0);
        }
      } else if (recur) {
        step_product<T>(n, W, U, h_in, U, weights.r, weights.ldr, zs + b0 * ldz, ldz, nullptr, true, serial);
      }
      for_each_sample(b0, b1, W, serial, [&](Index b) {
        const T* hp = tape.h + s * block + b * U;
        T* h = h_next + b * U;
        T* zr = zs + b * ldz;
        if (masked(a, b, t)) {  // the states carry over
          std::memcpy(h, hp, sizeof(T) * U);
          if (lstm) std::memcpy(tape.c + (s + 1) * block + b * U, tape.c + s * block + b * U, sizeof(T) * U);
          return;
        }
        if (lstm)
          lstm_step(a.act, a.recurrent_act, U, zr, tape.c + s * block + b * U,
                    tape.c + (s + 1) * block + b * U, tape.act_c + s * block + b * U, h);
        else if (gru)
          gru_step(a.act, a.recurrent_act, U, zr, rec + (b - b0) * ldz, hp, tape.rh + s * block + b * U, h);
        else
          simple_step(a.act, U, zr, h);
      });
    }
  });
}

template <typename T>
void backward_impl(const RnnArgs<T>& a, const RnnTape<T>& tape, const T* dy, const T* dh_last,
                   const T* dc_last, const RnnGrads<T>& g) {
  const Index B = a.batch, S = a.steps, D = a.input, U = a.units, W = a.width();
  const Index ldz = a.gate_stride();
  const bool gru = a.kind == RnnKind::Gru, lstm = a.kind == RnnKind::Lstm;
  const bool gru_rb = a.kind == RnnKind::GruResetBefore;
  const Index block = B * U;
  // Pre-activation gradients of every step (time-major); the GRU's recurrent side apart.
  T* dz = thread_scratch<T>(ScratchSlot::RnnGateGrads, S * B * ldz);
  T* drec = gru ? thread_scratch<T>(ScratchSlot::RnnRecurrentGrads, S * B * ldz) : dz;
  const RecurrentWeights<T> weights(a, true);
  // dh (carried), dh of the previous step (being formed), dc; with recurrent dropout or
  // reset_after=False the gradient of what the recurrent products read (h_in); for the
  // latter d(loss)/dq; with recurrent dropout h ⊙ scale before every step (for dR).
  const T* scale_all = a.recurrent_scale;
  const Index dh_in_at = 3 * block, dq_at = dh_in_at + (scale_all || gru_rb ? block : 0);
  const Index hd_at = dq_at + (gru_rb ? block : 0);
  T* states = thread_scratch<T>(ScratchSlot::RnnStates, hd_at + (scale_all ? S * block : 0));
  if (dh_last) std::memcpy(states, dh_last, sizeof(T) * block); else std::fill(states, states + block, T(0));
  T* dc_all = states + 2 * block;
  if (dc_last) std::memcpy(dc_all, dc_last, sizeof(T) * block); else std::fill(dc_all, dc_all + block, T(0));

  for_each_slice(B, [&](Index b0, Index b1, bool serial) {
    const Index n = b1 - b0;
    T* dh = states + b0 * U;  // this slice's rows of each (batch, units) buffer
    T* dh_prev = states + block + b0 * U;
    T* dc = dc_all + b0 * U;
    T* dh_rec = scale_all || gru_rb ? states + dh_in_at + b0 * U : nullptr;
    T* dq = gru_rb ? states + dq_at + b0 * U : nullptr;
    const T* scale = scale_all ? scale_all + b0 * U : nullptr;
    for (Index s = S - 1; s >= 0; --s) {
      const Index t = a.time(s);
      const T* h_prev = tape.h + s * block;
      if (gru_rb) {
        T* dzs = dz + (s * B + b0) * ldz;
        for_each_sample(b0, b1, W, serial, [&](Index b) {
          T* dht = dh + (b - b0) * U;
          if (dy) {
            const T* dys = dy + (b * S + s) * U;
            for (Index j = 0; j < U; ++j) dht[j] += dys[j];
          }
          T* carry = dh_prev + (b - b0) * U;
          T* dzr = dz + (s * B + b) * ldz;
          if (masked(a, b, t)) {
            std::memcpy(carry, dht, sizeof(T) * U);
            std::fill(dzr, dzr + W, T(0));
            return;
          }
          T* tmp = thread_scratch<T>(ScratchSlot::RnnRowTemp, 5 * U);
          gru_rb_backward_output(a.act, a.recurrent_act, U, tape.gates + (s * B + b) * ldz, h_prev + b * U, dht,
                                 dzr, carry, tmp);
        });
        // dq = dĥ_pre·R_hᵀ; then dr_pre and dq⊙r; then + dz_zr·R_zrᵀ: d(loss)/dh_in
        step_product<T>(n, U, U, dzs + 2 * U, ldz, weights.rt + 2 * U * weights.ldrt, weights.ldrt, dq, U, nullptr,
                        false, serial);
        for_each_sample(b0, b1, W, serial, [&](Index b) {
          T* dh_in = dh_rec + (b - b0) * U;
          if (masked(a, b, t)) {
            std::fill(dh_in, dh_in + U, T(0));
            return;
          }
          T* tmp = thread_scratch<T>(ScratchSlot::RnnRowTemp, 5 * U);
          const T* h_in = h_prev + b * U;
          if (scale) {
            const T* sc = scale + (b - b0) * U;
            for (Index j = 0; j < U; ++j) tmp[U + j] = h_in[j] * sc[j];
            h_in = tmp + U;
          }
          gru_rb_backward_reset(a.recurrent_act, U, tape.gates + (s * B + b) * ldz, h_in, dq + (b - b0) * U,
                                dz + (s * B + b) * ldz, dh_in, tmp);
        });
        step_product<T>(n, U, 2 * U, dzs, ldz, weights.rt, weights.ldrt, dh_rec, U, nullptr, true, serial);
        if (scale) {
          for (Index i = 0; i < n * U; ++i) dh_prev[i] += dh_rec[i] * scale[i];
        } else {
          for (Index i = 0; i < n * U; ++i) dh_prev[i] += dh_rec[i];
        }
        std::swap(dh, dh_prev);
        continue;
      }
      for_each_sample(b0, b1, W, serial, [&](Index b) {
        T* dht = dh + (b - b0) * U;  // becomes the step's total d(loss)/dh
        if (dy) {
          const T* dys = dy + (b * S + s) * U;
          for (Index j = 0; j < U; ++j) dht[j] += dys[j];
        }
        T* carry = dh_prev + (b - b0) * U;
        T* dzr = dz + (s * B + b) * ldz;
        T* drr = drec + (s * B + b) * ldz;
        if (masked(a, b, t)) {  // the states passed through unchanged
          std::memcpy(carry, dht, sizeof(T) * U);
          std::fill(dzr, dzr + W, T(0));
          if (gru) std::fill(drr, drr + W, T(0));
          return;
        }
        T* tmp = thread_scratch<T>(ScratchSlot::RnnRowTemp, 5 * U);
        const T* gates = tape.gates ? tape.gates + (s * B + b) * ldz : nullptr;
        if (lstm) {
          lstm_step_backward(a.act, a.recurrent_act, U, gates, tape.c + s * block + b * U,
                             tape.act_c + s * block + b * U, dht, dc + (b - b0) * U, dzr, tmp);
          std::fill(carry, carry + U, T(0));
        } else if (gru) {
          gru_step_backward(a.act, a.recurrent_act, U, gates, tape.rh + s * block + b * U,
                            h_prev + b * U, dht, dzr, drr, carry, tmp);
        } else {
          simple_step_backward(a.act, U, tape.h + (s + 1) * block + b * U, dht, dzr);
          std::fill(carry, carry + U, T(0));
        }
      });
      // d(loss)/dh_prev = carry + drec_s·Rᵀ (⊙ scale)
      const T* drec_s = drec + (s * B + b0) * ldz;
      if (scale) {
        step_product<T>(n, U, W, drec_s, ldz, weights.rt, weights.ldrt, dh_rec, U, nullptr, false, serial);
        for (Index i = 0; i < n * U; ++i) dh_prev[i] += dh_rec[i] * scale[i];
      } else {
        step_product<T>(n, U, W, drec_s, ldz, weights.rt, weights.ldrt, dh_prev, U, nullptr, true, serial);
      }
      std::swap(dh, dh_prev);
    }
    if (g.dh0) std::memcpy(g.dh0 + b0 * U, dh, sizeof(T) * n * U);
    if (g.dc0) {
      if (lstm) std::memcpy(g.dc0 + b0 * U, dc, sizeof(T) * n * U); else std::fill(g.dc0 + b0 * U, g.dc0 + b1 * U, T(0));
    }
  });

  const Index rows = S * B;
  const Index* offsets = step_row_offsets(a);
  if (g.dkernel) {  // xᵀ·dz over all steps (x read in place, in step order)
    GemmArgs<T> p;
    p.m = D;
    p.n = W;
    p.k = rows;
    p.a = a.x;
    p.a_row_offsets = offsets + rows;  // feature d at d
    p.a_step_offsets = offsets;        // row (s, b) at its input step
    p.b = dz;
    p.ldb = ldz;
    p.c = g.dkernel;
    p.ldc = W;
    p.accumulate = g.accumulate;
    gemm(p);
  }
  if (g.drecurrent) {  // h_prevᵀ·drec over all steps: h[0 .. S-1] is one block
    const T* h_in = tape.h;
    if (scale_all) {  // the product read h ⊙ scale
      T* hd = states + hd_at;
      for (Index s = 0; s < S; ++s)
        for (Index i = 0; i < block; ++i) hd[s * block + i] = tape.h[s * block + i] * scale_all[i];
      h_in = hd;
    }
    GemmArgs<T> p;
    p.m = U;
    p.k = rows;
    p.a = h_in;
    p.lda = U;
    p.trans_a = true;
    p.n = gru_rb ? 2 * U : W;  // reset_after=False: R_h's columns read r⊙h_in
    p.b = drec;
    p.ldb = ldz;
    p.c = g.drecurrent;
    p.ldc = W;
    p.accumulate = g.accumulate;
    gemm(p);
    if (gru_rb) {  // q·R_h over all steps: q is one (steps·batch, units) block
      p.a = tape.rh;
      p.n = U;
      p.b = drec + 2 * U;
      p.c = g.drecurrent + 2 * U;
      gemm(p);
    }
  }
  if (g.dbias) {
    column_sums_strided(dz, rows, W, ldz, g.dbias, g.accumulate);
    if (gru) column_sums_strided(drec, rows, W, ldz, g.dbias + W, g.accumulate);
  }
  if (g.dx) {  // dz·Wᵀ, time-major, then into x's layout
    T* dxt = thread_scratch<T>(ScratchSlot::RnnStates, rows * D);
    GemmArgs<T> p;
    p.m = rows;
    p.n = D;
    p.k = W;
    p.a = dz;
    p.lda = ldz;
    p.b = a.kernel;
    p.ldb = W;
    p.trans_b = true;
    p.c = dxt;
    p.ldc = D;
    gemm(p);
    parallel_for(B, threads_for(double(rows * D)), [&](Index b) {
      for (Index s = 0; s < S; ++s)
        std::memcpy(g.dx + (b * S + a.time(s)) * D, dxt + (s * B + b) * D, sizeof(T) * D);
    });
  }
}

}  // namespace

template <typename T>
void rnn_forward(const RnnArgs<T>& a, const RnnTape<T>& tape) {
  if (a.batch == 0 || a.units == 0) return;
  forward_impl(a, tape);  // no steps: the tape holds the initial states
}

template <typename T>
void rnn_backward(const RnnArgs<T>& a, const RnnTape<T>& tape, const T* dy, const T* dh_last,
                  const T* dc_last, const RnnGrads<T>& g) {
  const Index W = a.width();
  if (a.batch == 0 || a.steps == 0 || a.units == 0) {
    if (!g.accumulate) {
      if (g.dkernel) std::fill(g.dkernel, g.dkernel + a.input * W, T(0));
      if (g.drecurrent) std::fill(g.drecurrent, g.drecurrent + a.units * W, T(0));
      if (g.dbias) std::fill(g.dbias, g.dbias + (a.kind == RnnKind::Gru ? 2 : 1) * W, T(0));
    }
    if (g.dx) std::fill(g.dx, g.dx + a.batch * a.steps * a.input, T(0));
    if (g.dh0) std::fill(g.dh0, g.dh0 + a.batch * a.units, T(0));
    if (g.dc0) std::fill(g.dc0, g.dc0 + a.batch * a.units, T(0));
    if (a.steps == 0 && a.units > 0) {  // the final states are the initial ones
      if (g.dh0 && dh_last) std::memcpy(g.dh0, dh_last, sizeof(T) * a.batch * a.units);
      if (g.dc0 && dc_last) std::memcpy(g.dc0, dc_last, sizeof(T) * a.batch * a.units);
    }
    return;
  }
  backward_impl(a, tape, dy, dh_last, dc_last, g);
}

#define FASTNN_INSTANTIATE(T)                                                              \
  template void rnn_forward<T>(const RnnArgs<T>&, const RnnTape<T>&);                     \
  template void rnn_backward<T>(const RnnArgs<T>&, const RnnTape<T>&, const T*, const T*, \
                                const T*, const RnnGrads<T>&);
FASTNN_INSTANTIATE(float)
FASTNN_INSTANTIATE(double)
#undef FASTNN_INSTANTIATE

}  // namespace fastnn
