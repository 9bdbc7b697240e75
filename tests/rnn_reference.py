"""Plain NumPy step loops of Keras 3's recurrent layers, for tests to compare against.

Written for clarity, not speed: one Python iteration per time step, the formulas as Keras
writes them. They compute in the common floating dtype of their array arguments (float64 in,
float64 out; float32 in, float32 out; integers alone are computed in float64).

Conventions (Keras 3):

* ``x`` is ``(batch, timesteps, features)``; weights are Keras' ``kernel`` ``(features, G*units)``,
  ``recurrent_kernel`` ``(units, G*units)`` and ``bias``, with the G gates side by side along
  the last axis in Keras' order (LSTM: i, f, c, o; GRU: z, r, h).
* ``mask`` is ``(batch, timesteps)``, True for the steps to use, in the ORIGINAL time order.
  At a masked step the states are carried over unchanged and the step's output repeats the
  previous step's output; before the first unmasked step of a sample that output is zeros
  (Keras' ``prev_output`` starts as zeros, whatever the initial state). This is Keras'
  default ``zero_output_for_mask=False``; with ``zero_output_for_mask=True`` a masked step
  outputs zeros instead (keras/src/backend/*/rnn.py: ``where(is_masked, zeros, output_t)``).
* ``go_backwards=True`` processes the inputs (and the mask) from the last time step to the
  first, and returns the outputs in processing order: ``outputs[:, 0]`` belongs to input
  step ``T - 1``. Keras does not reverse them back.
* Each function returns the outputs of every step ``(batch, timesteps, units)`` (Keras'
  ``return_sequences=True``; the last one, ``outputs[:, -1]``, is what ``return_sequences=False``
  gives) and the final states (with a mask: the carried states).
"""

import numpy as np

__all__ = ["sigmoid", "lstm_reference", "gru_reference", "simple_rnn_reference"]


def sigmoid(x):
    """The logistic function 1 / (1 + exp(-x)), without overflow for large |x|; keeps x's float dtype."""
    x = np.asarray(x)
    e = np.exp(-np.abs(x))  # in (0, 1]: never overflows
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def lstm_reference(x, kernel, recurrent_kernel, bias, h0=None, c0=None, mask=None, go_backwards=False,
                   activation=np.tanh, recurrent_activation=sigmoid, recurrent_scale=None, zero_output_for_mask=False):
    """Keras 3 ``LSTM``, one step at a time.

    Per step, with ``a = activation`` and ``ra = recurrent_activation``::

        z = x_t @ kernel + h @ recurrent_kernel + bias        # (batch, 4*units): i | f | c | o
        i, f, g, o = ra(z_i), ra(z_f), a(z_c), ra(z_o)
        c = f * c + i * g
        h = o * a(c)                                          # the step's output

    Args:
        x: (batch, timesteps, features).
        kernel: (features, 4*units). recurrent_kernel: (units, 4*units).
        bias: (4*units,) or None (no bias).
        h0, c0: (batch, units) initial states, default zeros.
        mask: (batch, timesteps) bool or None, in the original time order.
        go_backwards: process the steps from last to first (outputs stay in processing order).
        zero_output_for_mask: masked steps output zeros (not the previous output).

    Returns:
        (outputs (batch, timesteps, units), h_T (batch, units), c_T (batch, units)).
    """
    x, mask, dtype = _inputs(x, mask, kernel, recurrent_kernel, bias, h0, c0)
    units = _units(kernel, recurrent_kernel, gates=4, features=x.shape[2])
    kernel, recurrent_kernel = (np.asarray(w, dtype) for w in (kernel, recurrent_kernel))
    bias = _bias(bias, (4 * units,), dtype)
    h = _state(h0, "h0", x.shape[0], units, dtype)
    c = _state(c0, "c0", x.shape[0], units, dtype)
    a, ra = activation, recurrent_activation

    outputs = []
    prev_output = np.zeros((x.shape[0], units), dtype)
    for t in _time_order(x.shape[1], go_backwards):
        z = x[:, t] @ kernel + _dropped(h, recurrent_scale) @ recurrent_kernel + bias
        z_i, z_f, z_c, z_o = np.split(z, 4, axis=1)
        i, f, g, o = ra(z_i), ra(z_f), a(z_c), ra(z_o)
        c_new = f * c + i * g
        h_new = o * a(c_new)
        if mask is None:
            h, c, output = h_new, c_new, h_new
        else:
            keep = mask[:, t][:, None]
            h = np.where(keep, h_new, h)
            c = np.where(keep, c_new, c)
            output = np.where(keep, h_new, 0 if zero_output_for_mask else prev_output)
        outputs.append(output)
        prev_output = output
    return _stack(outputs, x.shape[0], units, dtype), h, c


def gru_reference(x, kernel, recurrent_kernel, bias, h0=None, mask=None, go_backwards=False,
                  activation=np.tanh, recurrent_activation=sigmoid, recurrent_scale=None, zero_output_for_mask=False,
                  reset_after=True):
    """Keras 3 ``GRU``, one step at a time.

    Per step, with ``a = activation`` and ``ra = recurrent_activation``, ``reset_after=True``
    (Keras' default)::

        xz = x_t @ kernel + bias[0]                           # (batch, 3*units): z | r | h
        rh = _dropped(h, recurrent_scale) @ recurrent_kernel + bias[1]
        z = ra(xz_z + rh_z)
        r = ra(xz_r + rh_r)
        hh = a(xz_h + r * rh_h)                               # reset applied after the matmul
        h = z * h + (1 - z) * hh                              # the step's output

    ``reset_after=False`` (keras/src/layers/rnn/gru.py, GRUCell.call)::

        xz = x_t @ kernel + bias                              # one bias, (3*units,)
        hd = _dropped(h, recurrent_scale)
        z = ra(xz_z + hd @ recurrent_kernel[:, :units])
        r = ra(xz_r + hd @ recurrent_kernel[:, units:2*units])
        hh = a(xz_h + (r * hd) @ recurrent_kernel[:, 2*units:])   # reset applied before the matmul
        h = z * h + (1 - z) * hh

    Args:
        x: (batch, timesteps, features).
        kernel: (features, 3*units). recurrent_kernel: (units, 3*units).
        bias: reset_after=True: (2, 3*units) -- row 0 the input bias, row 1 the recurrent
            bias; reset_after=False: (3*units,); or None.
        h0: (batch, units) initial state, default zeros.
        mask, go_backwards: as in ``lstm_reference``.
        reset_after: bool, default True: which form (above).

    Returns:
        (outputs (batch, timesteps, units), h_T (batch, units)).
    """
    x, mask, dtype = _inputs(x, mask, kernel, recurrent_kernel, bias, h0)
    units = _units(kernel, recurrent_kernel, gates=3, features=x.shape[2])
    kernel, recurrent_kernel = (np.asarray(w, dtype) for w in (kernel, recurrent_kernel))
    bias = _bias(bias, (2, 3 * units) if reset_after else (3 * units,), dtype)
    h = _state(h0, "h0", x.shape[0], units, dtype)
    a, ra = activation, recurrent_activation

    outputs = []
    prev_output = np.zeros((x.shape[0], units), dtype)
    for t in _time_order(x.shape[1], go_backwards):
        if reset_after:
            xz = x[:, t] @ kernel + bias[0]
            rh = _dropped(h, recurrent_scale) @ recurrent_kernel + bias[1]
            xz_z, xz_r, xz_h = np.split(xz, 3, axis=1)
            rh_z, rh_r, rh_h = np.split(rh, 3, axis=1)
            z = ra(xz_z + rh_z)
            r = ra(xz_r + rh_r)
            hh = a(xz_h + r * rh_h)
        else:
            xz_z, xz_r, xz_h = np.split(x[:, t] @ kernel + bias, 3, axis=1)
            hd = _dropped(h, recurrent_scale)
            z = ra(xz_z + hd @ recurrent_kernel[:, :units])
            r = ra(xz_r + hd @ recurrent_kernel[:, units:2 * units])
            hh = a(xz_h + (r * hd) @ recurrent_kernel[:, 2 * units:])
        h_new = z * h + (1 - z) * hh
        if mask is None:
            h, output = h_new, h_new
        else:
            keep = mask[:, t][:, None]
            h = np.where(keep, h_new, h)
            output = np.where(keep, h_new, 0 if zero_output_for_mask else prev_output)
        outputs.append(output)
        prev_output = output
    return _stack(outputs, x.shape[0], units, dtype), h


def simple_rnn_reference(x, kernel, recurrent_kernel, bias, h0=None, mask=None, go_backwards=False,
                         activation=np.tanh, recurrent_scale=None, zero_output_for_mask=False):
    """Keras 3 ``SimpleRNN``, one step at a time: ``h = activation(x_t @ kernel + h @ recurrent_kernel + bias)``.

    Args:
        x: (batch, timesteps, features).
        kernel: (features, units). recurrent_kernel: (units, units).
        bias: (units,) or None.
        h0: (batch, units) initial state, default zeros.
        mask, go_backwards: as in ``lstm_reference``.

    Returns:
        (outputs (batch, timesteps, units), h_T (batch, units)).
    """
    x, mask, dtype = _inputs(x, mask, kernel, recurrent_kernel, bias, h0)
    units = _units(kernel, recurrent_kernel, gates=1, features=x.shape[2])
    kernel, recurrent_kernel = (np.asarray(w, dtype) for w in (kernel, recurrent_kernel))
    bias = _bias(bias, (units,), dtype)
    h = _state(h0, "h0", x.shape[0], units, dtype)

    outputs = []
    prev_output = np.zeros((x.shape[0], units), dtype)
    for t in _time_order(x.shape[1], go_backwards):
        h_new = activation(x[:, t] @ kernel + _dropped(h, recurrent_scale) @ recurrent_kernel + bias)
        if mask is None:
            h, output = h_new, h_new
        else:
            keep = mask[:, t][:, None]
            h = np.where(keep, h_new, h)
            output = np.where(keep, h_new, 0 if zero_output_for_mask else prev_output)
        outputs.append(output)
        prev_output = output
    return _stack(outputs, x.shape[0], units, dtype), h


def _dropped(h, recurrent_scale):
    """Recurrent dropout: the mask (batch, units) scales h where it enters the recurrent product only."""
    return h if recurrent_scale is None else h * recurrent_scale


# ---- helpers -----------------------------------------------------------------------------------------------
def _time_order(timesteps, go_backwards):
    return range(timesteps - 1, -1, -1) if go_backwards else range(timesteps)


def _inputs(x, mask, *arrays):
    """x as an array of the computing dtype (the common float dtype of x and the other arrays), the mask as bool."""
    dtype = np.result_type(*(np.asarray(a) for a in (x,) + arrays if a is not None))
    if not np.issubdtype(dtype, np.floating):
        dtype = np.dtype(np.float64)
    x = np.asarray(x, dtype)
    if x.ndim != 3:
        raise ValueError(f"x must be (batch, timesteps, features), got shape {x.shape}")
    if mask is not None:
        mask = np.asarray(mask).astype(bool)
        if mask.shape != x.shape[:2]:
            raise ValueError(f"mask must be (batch, timesteps) = {x.shape[:2]}, got shape {mask.shape}")
    return x, mask, dtype


def _units(kernel, recurrent_kernel, gates, features):
    kernel_shape, recurrent_shape = np.shape(kernel), np.shape(recurrent_kernel)
    if len(recurrent_shape) != 2 or recurrent_shape[1] != gates * recurrent_shape[0]:
        raise ValueError(f"recurrent_kernel must be (units, {gates}*units), got shape {recurrent_shape}")
    units = recurrent_shape[0]
    if kernel_shape != (features, gates * units):
        raise ValueError(f"kernel must be (features, {gates}*units) = {(features, gates * units)}, "
                         f"got shape {kernel_shape}")
    return units


def _bias(bias, shape, dtype):
    if bias is None:
        return np.zeros(shape, dtype)
    bias = np.asarray(bias, dtype)
    if bias.shape != shape:
        raise ValueError(f"bias must have shape {shape}, got {bias.shape}")
    return bias


def _state(state, name, batch, units, dtype):
    if state is None:
        return np.zeros((batch, units), dtype)
    state = np.asarray(state, dtype)
    if state.shape != (batch, units):
        raise ValueError(f"{name} must be (batch, units) = {(batch, units)}, got shape {state.shape}")
    return state


def _stack(outputs, batch, units, dtype):
    if not outputs:  # zero time steps
        return np.zeros((batch, 0, units), dtype)
    return np.stack(outputs, axis=1)
