"""Recurrent kernels (cpp/include/fastnn/rnn.hpp) and the embedding lookup
(cpp/include/fastnn/embedding.hpp).

A whole sequence runs in one C++ call, forward and backward through time: the input
projection of all steps is one product, the steps run in C++ (no Python loop over time).
Layouts are Keras': inputs (batch, timesteps, features); LSTM kernel (features, 4·units)
and recurrent kernel (units, 4·units) with gates i, f, c, o; GRU kernel (features, 3·units),
gates z, r, h, bias (2, 3·units) (input bias, recurrent bias) with reset_after=True, (3·units,)
with reset_after=False.

Activations: the kernels keep activated gates only, so they compute the activations whose
derivative follows from the output (``RNN_ACTIVATIONS``: Keras' linear, relu, sigmoid, tanh,
hard_sigmoid, softsign, elu, selu, softplus, leaky_relu, relu6, hard_tanh, with Keras'
default parameters); others (gelu, swish, ...) are a ValueError.

Masks (batch, timesteps) are in input order: a masked step leaves the states unchanged and
outputs the previous step's output (zeros before the first unmasked step), as Keras does.
With ``go_backwards`` the steps run from last to first and the outputs come in that
processing order (as Keras returns them).
"""

import numpy as np

from .. import _core
from ._public_names import public_names

_LSTM, _GRU, _SIMPLE, _GRU_RESET_BEFORE = 0, 1, 2, 3
_NAMES = {_LSTM: "lstm", _GRU: "gru", _SIMPLE: "simple_rnn", _GRU_RESET_BEFORE: "gru"}

_ACTIVATIONS = dict(_core.rnn_activation_kinds)
#: The activation names the recurrent kernels accept (None means linear).
RNN_ACTIVATIONS = tuple(sorted(_ACTIVATIONS, key=_ACTIVATIONS.get))


def _activation(value, fn, name):
    """The kernel number of a recurrent activation name; ValueError naming the argument."""
    if value is None:
        return _ACTIVATIONS["linear"]
    if isinstance(value, str) and value in _ACTIVATIONS:
        return _ACTIVATIONS[value]
    raise ValueError(f"{fn}: '{name}' must be one of {', '.join(RNN_ACTIVATIONS)} (or None), got {value!r}")


class RnnCache:
    """What a forward pass keeps for its backward pass (returned with ``return_cache=True``)."""

    def __init__(self, kind, args, tape, seen):
        self.kind = kind
        self.args = args  # (x, kernel, recurrent_kernel, bias, h0, c0, mask, scale, go_backwards, act, ract)
        self.tape = tape  # (h, c, act_c, gates, rh) from the kernel
        self.seen = seen  # (batch, timesteps, 1) 1 where an output is the state, or None


def _states(initial_state, kind):
    if initial_state is None:
        return None, None
    if isinstance(initial_state, np.ndarray) or not isinstance(initial_state, (list, tuple)):
        initial_state = [initial_state]
    expected = 2 if kind == _LSTM else 1
    if len(initial_state) != expected:
        raise ValueError(f"{_NAMES[kind]}: 'initial_state' must hold {expected} array(s) "
                         f"({'[h, c]' if expected == 2 else '[h]'}), got {len(initial_state)}")
    return initial_state[0], (initial_state[1] if expected == 2 else None)


def _mask(mask, fn):
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.dtype.kind not in "biuf":
        raise TypeError(f"{fn}: 'mask' must be a boolean array, got dtype {mask.dtype}")
    return np.ascontiguousarray(mask != 0)


def _flag(value, name, fn):
    """A bool argument: the truth value of a bool or a number (not of a string, None or an array)."""
    if not isinstance(value, (bool, np.bool_, int, float, np.integer, np.floating)):
        raise TypeError(f"{fn}: '{name}' must be a bool, got {value!r}")
    return bool(value)


# Given as the kernel by fastnn's quantized LSTM/GRU: the inputs are already x·kernel (int8
# products), and the recurrent kernel reads them as its input projections.
PROJECTED_INPUTS = object()


def _forward(kind, inputs, kernel, recurrent_kernel, bias, initial_state, mask, go_backwards,
             activation, recurrent_activation, recurrent_scale=None):
    h0, c0 = _states(initial_state, kind)
    mask = _mask(mask, _NAMES[kind])
    act = _activation(activation, _NAMES[kind], "activation")
    ract = _activation(recurrent_activation, _NAMES[kind], "recurrent_activation")
    go_backwards = _flag(go_backwards, "go_backwards", _NAMES[kind])
    projected = kernel is PROJECTED_INPUTS
    if projected:
        kernel = None
    args = (inputs, kernel, recurrent_kernel, bias, h0, c0, mask, recurrent_scale, go_backwards, act, ract)
    with public_names(_NAMES[kind], "rnn_forward", recurrent_scale="recurrent_dropout_mask"):
        tape = _core.rnn_forward(kind, *args, projected)
    h_seq = tape[0][1:].transpose(1, 0, 2)  # time-major in the kernel
    seen = None
    if mask is not None and h0 is not None:
        # Keras outputs zeros before a sample's first unmasked step, whatever its state.
        processing = mask[:, ::-1] if go_backwards else mask
        seen = np.logical_or.accumulate(processing, axis=1)[..., None].astype(h_seq.dtype)
    # (where, not a product: a NaN or inf state before the first unmasked step still outputs 0)
    outputs = np.ascontiguousarray(h_seq) if seen is None else np.where(seen != 0, h_seq, h_seq.dtype.type(0))
    finals = [tape[0][-1]] + ([tape[1][-1]] if kind == _LSTM else [])
    return outputs, finals, RnnCache(kind, args, tape, seen)


def _backward(cache, d_outputs, d_h, d_c, need_dx, dkernel=None, drecurrent_kernel=None, dbias=None,
              accumulate=False):
    fn = _NAMES[cache.kind] + "_backward"
    accumulate, need_dx = _flag(accumulate, "accumulate", fn), _flag(need_dx, "need_dx", fn)
    if d_outputs is not None and cache.seen is not None:
        d = np.asarray(d_outputs)
        if d.dtype.kind in "biuf" and d.ndim == 3 and d.shape[:2] == cache.seen.shape[:2]:
            # zero before each sample's first unmasked step, in the array's own float dtype (or the call's)
            keeps_dtype = isinstance(d_outputs, np.ndarray) and d.dtype.kind == "f" and d.dtype.itemsize in (4, 8)
            d_outputs = np.where(cache.seen != 0, d, 0).astype(d.dtype if keeps_dtype else cache.seen.dtype)
    if accumulate:  # the kernel adds into its outputs: a missing one starts from zeros (of the call's dtype)
        kernel, recurrent_kernel, bias = cache.args[1:4]
        dtype = cache.tape[0].dtype
        dkernel = np.zeros(np.shape(kernel), dtype) if dkernel is None else dkernel
        drecurrent_kernel = np.zeros(np.shape(recurrent_kernel), dtype) if drecurrent_kernel is None \
            else drecurrent_kernel
        if dbias is None and bias is not None:
            dbias = np.zeros(np.shape(bias), dtype)
    with public_names(fn, "rnn_backward", recurrent_scale="recurrent_dropout_mask", drecurrent="drecurrent_kernel"):
        dx, dk, dr, db, dh0, dc0 = _core.rnn_backward(cache.kind, *cache.args, cache.tape, d_outputs, d_h, d_c,
                                                      dkernel, drecurrent_kernel, dbias, accumulate, need_dx)
    out = {"dx": dx, "kernel": dk, "recurrent_kernel": dr, "bias": db, "h0": dh0}
    if cache.kind == _LSTM:
        out["c0"] = dc0
    return out


def lstm(inputs, kernel, recurrent_kernel, bias=None, initial_state=None, mask=None, go_backwards=False,
         activation="tanh", recurrent_activation="sigmoid", recurrent_dropout_mask=None, return_cache=False):
    """An LSTM over a whole sequence, in one C++ call.

    Per step (Keras' LSTM, gates i, f, c, o along the 4·units axis)::

        z = x_t·kernel + h·recurrent_kernel + bias
        i, f, o = recurrent_activation(z_i, z_f, z_o);  g = activation(z_c)
        c = f·c + i·g;  h = o·activation(c)

    Args:
        inputs: (batch, timesteps, features), float32 or float64.
        kernel: (features, 4·units). recurrent_kernel: (units, 4·units).
        bias: (4·units,) or None.
        initial_state: [h0, c0], each (batch, units), or None (zeros).
        mask: (batch, timesteps) booleans or None: False steps are skipped (see the module).
        go_backwards: process the steps from last to first (outputs in that order).
        activation, recurrent_activation: names from ``RNN_ACTIVATIONS`` (see the module),
            or None (linear); defaults "tanh" and "sigmoid".
        recurrent_dropout_mask: optional (batch, units) multiplier of h where it enters the
            recurrent product (recurrent dropout: 0 or 1/(1 - rate)); the states themselves
            are not scaled.
        return_cache: also return the cache for ``lstm_backward``.

    Returns:
        (outputs (batch, timesteps, units), h (batch, units), c (batch, units)), and the
        cache when return_cache.

    Example:
        >>> y, h, c = fastnn.ops.lstm(x, kernel, recurrent_kernel, bias)
    """
    outputs, (h, c), cache = _forward(_LSTM, inputs, kernel, recurrent_kernel, bias, initial_state, mask,
                                      go_backwards, activation, recurrent_activation, recurrent_dropout_mask)
    return (outputs, h, c, cache) if return_cache else (outputs, h, c)


def lstm_backward(cache, d_outputs=None, d_h=None, d_c=None, need_dx=True, dkernel=None, drecurrent_kernel=None,
                  dbias=None, accumulate=False):
    """Backward through time of ``lstm(..., return_cache=True)``.

    Args:
        cache: the forward's cache.
        d_outputs: (batch, timesteps, units) gradient of the outputs, or None (default).
        d_h, d_c: (batch, units) gradients of the final states, or None (default).
        need_dx: bool, default True: compute the inputs' gradient (False saves one product).
        dkernel, drecurrent_kernel, dbias: optional arrays shaped like kernel, recurrent_kernel
            and bias (C-contiguous, the weights' dtype) that receive the weights' gradients in
            place, e.g. a layer's ``variable.grad``; default None: new arrays.
        accumulate: bool, default False: add the weights' gradients to dkernel,
            drecurrent_kernel and dbias instead of overwriting them (a shared layer).

    Returns:
        dict with "dx" (None unless need_dx), "kernel", "recurrent_kernel", "bias" (None
        without a bias) (the given arrays when given), "h0", "c0" (gradients of the initial
        states).

    Example:
        >>> y, h, c, cache = fastnn.ops.lstm(x, kernel, recurrent_kernel, bias, return_cache=True)
        >>> grads = fastnn.ops.lstm_backward(cache, d_outputs=np.ones_like(y))
    """
    return _backward(cache, d_outputs, d_h, d_c, need_dx, dkernel, drecurrent_kernel, dbias, accumulate)


def gru(inputs, kernel, recurrent_kernel, bias=None, initial_state=None, mask=None, go_backwards=False,
        activation="tanh", recurrent_activation="sigmoid", recurrent_dropout_mask=None, return_cache=False,
        reset_after=True):
    """A GRU over a whole sequence, in one C++ call (Keras' two forms).

    Per step with ``reset_after=True`` (Keras' default; gates z, r, h along the 3·units axis;
    bias rows: input, recurrent)::

        xz = x_t·kernel + bias[0];  rh = h·recurrent_kernel + bias[1]
        z = recurrent_activation(xz_z + rh_z);  r = recurrent_activation(xz_r + rh_r)
        ĥ = activation(xz_h + r·rh_h);  h = z·h + (1 − z)·ĥ

    With ``reset_after=False`` (one bias; the reset gate scales h before its product)::

        xz = x_t·kernel + bias
        z = recurrent_activation(xz_z + h·R_z);  r = recurrent_activation(xz_r + h·R_r)
        ĥ = activation(xz_h + (r·h)·R_h);  h = z·h + (1 − z)·ĥ

    (R_z, R_r, R_h: the recurrent kernel's thirds; with a recurrent dropout mask, h ⊙ mask
    stands for h inside the products.)

    Args:
        inputs: (batch, timesteps, features). kernel: (features, 3·units).
        recurrent_kernel: (units, 3·units). bias: (2, 3·units) with reset_after, else
            (3·units,); or None.
        initial_state: [h0] or h0, (batch, units), or None. Others as ``lstm``.
        reset_after: bool, default True: the form above.

    Returns:
        (outputs (batch, timesteps, units), h (batch, units)), and the cache when return_cache.
    """
    kind = _GRU if _flag(reset_after, "reset_after", "gru") else _GRU_RESET_BEFORE
    outputs, (h,), cache = _forward(kind, inputs, kernel, recurrent_kernel, bias, initial_state, mask,
                                    go_backwards, activation, recurrent_activation, recurrent_dropout_mask)
    return (outputs, h, cache) if return_cache else (outputs, h)


def gru_backward(cache, d_outputs=None, d_h=None, need_dx=True, dkernel=None, drecurrent_kernel=None, dbias=None,
                 accumulate=False):
    """Backward through time of ``gru(..., return_cache=True)``.

    Args:
        cache: the forward's cache.
        d_outputs, d_h, need_dx, dkernel, drecurrent_kernel, dbias, accumulate: as
            ``lstm_backward`` (dbias shaped like the bias).

    Returns:
        dict with "dx", "kernel", "recurrent_kernel", "bias", "h0" (as ``lstm_backward``).
    """
    return _backward(cache, d_outputs, d_h, None, need_dx, dkernel, drecurrent_kernel, dbias, accumulate)


def simple_rnn(inputs, kernel, recurrent_kernel, bias=None, initial_state=None, mask=None, go_backwards=False,
               activation="tanh", recurrent_dropout_mask=None, return_cache=False):
    """A fully connected RNN over a whole sequence: ``h = activation(x_t·kernel + h·recurrent_kernel + bias)``.

    Args:
        inputs: (batch, timesteps, features). kernel: (features, units).
        recurrent_kernel: (units, units). bias: (units,) or None. Others as ``lstm``.

    Returns:
        (outputs (batch, timesteps, units), h (batch, units)), and the cache when return_cache.
    """
    outputs, (h,), cache = _forward(_SIMPLE, inputs, kernel, recurrent_kernel, bias, initial_state, mask,
                                    go_backwards, activation, "sigmoid", recurrent_dropout_mask)
    return (outputs, h, cache) if return_cache else (outputs, h)


def simple_rnn_backward(cache, d_outputs=None, d_h=None, need_dx=True, dkernel=None, drecurrent_kernel=None,
                        dbias=None, accumulate=False):
    """Backward through time of ``simple_rnn(..., return_cache=True)``.

    Args:
        cache: the forward's cache.
        d_outputs, d_h, need_dx, dkernel, drecurrent_kernel, dbias, accumulate: as
            ``lstm_backward``.

    Returns:
        dict with "dx", "kernel", "recurrent_kernel", "bias", "h0" (as ``lstm_backward``).
    """
    return _backward(cache, d_outputs, d_h, None, need_dx, dkernel, drecurrent_kernel, dbias, accumulate)


def lstm_cell(inputs, h, c, kernel, recurrent_kernel, bias=None, activation="tanh",
              recurrent_activation="sigmoid", return_cache=False):
    """One LSTM step, for people who write their own loop: the fused C++ cell.

    Args:
        inputs: (batch, features). h, c: (batch, units). Others as ``lstm``.

    Returns:
        (h, c) after the step, and the cache for ``lstm_cell_backward`` when return_cache.
    """
    x = np.asarray(inputs)
    if x.ndim != 2:
        raise ValueError(f"lstm_cell: 'inputs' must be 2-D (batch, features), got shape {x.shape}")
    _, h_new, c_new, cache = lstm(x[:, None], kernel, recurrent_kernel, bias, initial_state=[h, c],
                                  activation=activation, recurrent_activation=recurrent_activation,
                                  return_cache=True)
    return (h_new, c_new, cache) if return_cache else (h_new, c_new)


def lstm_cell_backward(cache, d_h=None, d_c=None, need_dx=True):
    """Backward of one ``lstm_cell`` step: dict with "dx" (batch, features), "kernel",
    "recurrent_kernel", "bias", "h", "c" (gradients of the step's input states)."""
    out = _backward(cache, None, d_h, d_c, need_dx)
    return {"dx": None if out["dx"] is None else out["dx"][:, 0], "kernel": out["kernel"],
            "recurrent_kernel": out["recurrent_kernel"], "bias": out["bias"], "h": out["h0"], "c": out["c0"]}


def embedding(indices, embeddings):
    """Rows of ``embeddings`` at integer ``indices``: ``embeddings[indices]``, in one C++ call.

    Args:
        indices: integer array of any shape.
        embeddings: (vocabulary, dim) array, float32 or float64.

    Returns:
        Array of shape ``indices.shape + (dim,)``.

    Raises:
        ValueError: an index outside [0, vocabulary). TypeError: non-integer indices.
    """
    return _core.embedding_forward(embeddings, indices)


def embedding_backward(indices, dy, vocabulary, out=None, accumulate=False):
    """The embeddings' gradient: dy's rows summed into a (vocabulary, dim) table at the
    indices (duplicates summed in position order: the same bits on any thread count).

    Args:
        indices: the forward's integer indices.
        dy: array of shape ``indices.shape + (dim,)``.
        vocabulary: int, rows of the table.
        out: optional (vocabulary, dim) array (C-contiguous, dy's dtype) written in place,
            e.g. a layer's ``variable.grad``; default None: a new array.
        accumulate: bool, default False: add into `out` instead of overwriting it.

    Returns:
        The (vocabulary, dim) gradient (`out` when given).
    """
    if isinstance(vocabulary, (bool, np.bool_)) or not isinstance(vocabulary, (int, np.integer)):
        raise TypeError(f"embedding_backward: 'vocabulary' must be an int, got {vocabulary!r}")
    if not 0 <= vocabulary <= 2**63 - 1:
        raise ValueError(f"embedding_backward: 'vocabulary' must be in [0, 2**63 - 1], got {vocabulary!r}")
    return _core.embedding_backward(indices, dy, out, int(vocabulary), _flag(accumulate, "accumulate",
                                                                             "embedding_backward"))
