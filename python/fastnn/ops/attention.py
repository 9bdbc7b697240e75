"""Scaled dot-product attention (kernel: cpp/include/fastnn/attention.hpp).

The kernel tiles the keys with an online softmax (the FlashAttention scheme): memory is one
block of logits per thread plus one logsumexp per query row, never the T×S matrix, unless
the probabilities are asked for.
"""

import math
import numbers

import numpy as np

from .. import _core
from ..autodiff import Tensor, is_traced, unbroadcast, value_of
from ..operation import symbolic


def _real(fn, name, value):
    """A float argument: a real number (not a string, None or an array), as a float."""
    if not isinstance(value, numbers.Real):
        raise TypeError(f"{fn}: '{name}' must be a float, got {value!r}")
    return float(value)


def _flag(fn, name, value):
    """A bool argument: the truth value of a bool or a number (not of a string, None or an array)."""
    if not isinstance(value, (numbers.Number, np.bool_)):
        raise TypeError(f"{fn}: '{name}' must be a bool, got {value!r}")
    return bool(value)


def _seed(fn, value):
    """The dropout seed: an int in [0, 2**64)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{fn}: 'seed' must be an int in [0, 2**64), got {value!r}")
    if not 0 <= value < 2**64:
        raise ValueError(f"{fn}: 'seed' must be an int in [0, 2**64), got {value!r}")
    return int(value)


def _heads_axis(fn, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value not in (1, 2):
        raise ValueError(f"{fn}: 'heads_axis' must be 2 (batch, time, heads, features: Keras) or 1 (batch, heads, "
                         f"time, features: PyTorch), got {value!r}")
    return int(value)


def attention_forward(query, key, value, mask=None, bias=None, scale=1.0, causal=False, dropout_rate=0.0,
                      seed=0, return_probabilities=False, heads_axis=2):
    """Attention forward pass in one kernel call: ``softmax(scale·Q Kᵀ + bias, masked) V`` per head.

    Args:
        query: array of shape ``(B, T, heads, dk)`` (``heads_axis=2``, Keras' layout) or
            ``(B, heads, T, dk)`` (``heads_axis=1``, PyTorch's).
        key: array of shape ``(B, S, heads, dk)`` (or ``(B, heads, S, dk)``).
        value: array of shape ``(B, S, heads, dv)`` (or ``(B, heads, S, dv)``).
        mask: optional boolean array broadcastable to ``(B, heads, T, S)``; False entries are
            not attended. Default None.
        bias: optional array broadcastable to ``(B, heads, T, S)``, added to the logits.
            Default None.
        scale: float, default 1.0: the factor of the logits.
        causal: bool, default False: query i attends to keys j <= i only.
        dropout_rate: float in [0, 1), default 0.0: dropout on the probabilities.
        seed: int, default 0: the dropout mask's seed (the backward pass needs the same).
        return_probabilities: bool, default False: also return the probabilities
            ``(B, heads, T, S)`` (before dropout).
        heads_axis: 2 (default) or 1: the layout, see ``query``.

    Returns:
        ``(out, logsumexp, probabilities)``: ``out`` of shape ``(B, T, heads, dv)`` (in the
        layout of ``query``), the per-row logsumexp ``(B, heads, T)`` that
        ``attention_backward`` needs, and the probabilities or None. A query row with every
        key masked gives zeros (as Keras' masked softmax).
    """
    fn = "attention_forward"
    return _core.attention_forward(query, key, value, mask, bias, _real(fn, "scale", scale),
                                   _flag(fn, "causal", causal), _real(fn, "dropout_rate", dropout_rate), _seed(fn, seed),
                                   _flag(fn, "return_probabilities", return_probabilities), _heads_axis(fn, heads_axis))


def attention_backward(dout, query, key, value, out, logsumexp, mask=None, bias=None, scale=1.0, causal=False,
                       dropout_rate=0.0, seed=0, heads_axis=2, need_query_grad=True, need_key_grad=True,
                       need_value_grad=True):
    """Backward of ``attention_forward`` (same arguments): ``(dquery, dkey, dvalue)``.

    Args:
        dout: dL/d(out), shaped like ``out``.
        out, logsumexp: what ``attention_forward`` returned.
        need_query_grad, need_key_grad, need_value_grad: bool, default True: which
            gradients to compute (None in their place otherwise).
    """
    fn = "attention_backward"
    return _core.attention_backward(query, key, value, out, dout, logsumexp, mask, bias, _real(fn, "scale", scale),
                                    _flag(fn, "causal", causal), _real(fn, "dropout_rate", dropout_rate),
                                    _seed(fn, seed), _heads_axis(fn, heads_axis),
                                    _flag(fn, "need_query_grad", need_query_grad),
                                    _flag(fn, "need_key_grad", need_key_grad),
                                    _flag(fn, "need_value_grad", need_value_grad))


def _check_4d(name, x):
    if np.ndim(x) != 4:
        raise ValueError(f"dot_product_attention: '{name}' must be 4-D (batch, time, heads, features), got shape "
                         f"{np.shape(x)}")


@symbolic
def dot_product_attention(query, key, value, bias=None, mask=None, scale=None, is_causal=False, flash_attention=None,
                          attn_logits_soft_cap=None):
    """Scaled dot-product attention (Keras 3's ``keras.ops.dot_product_attention``).

    ``softmax(scale · Q Kᵀ + bias, where mask) V`` for every batch and head, computed by a
    tiled kernel that never holds the T×S matrix.

    Args:
        query: array of shape ``(B, T, N, H)``.
        key: array of shape ``(B, S, N, H)``.
        value: array of shape ``(B, S, N, H_v)``.
        bias: optional array broadcastable to ``(B, N, T, S)``, added to the logits.
            Default None.
        mask: optional boolean array broadcastable to ``(B, N, T, S)``; True entries take
            part in the softmax. A query whose every key is masked (or whose logits are all
            -inf) gives zeros. A masked key's probability is exactly 0; a NaN or inf in its
            value reaches the output as 0·NaN where the kernel multiplies that key's block
            (as Keras' dense product does) but not from keys past the causal boundary, which
            are never read. Default None.
        scale: optional float, default ``1 / sqrt(H)``.
        is_causal: bool, default False: query i attends to keys j <= i only.
        flash_attention: None, True or False, default None: accepted for Keras
            compatibility; fastnn's kernel is always the tiled (flash) one.
        attn_logits_soft_cap: must be None (logit soft-capping is not supported).

    Returns:
        Array of shape ``(B, T, N, H_v)``.

    Example:
        >>> import numpy as np
        >>> from fastnn import ops
        >>> q = np.ones((1, 2, 1, 4), np.float32)
        >>> v = np.arange(8, dtype=np.float32).reshape(1, 2, 1, 4)
        >>> ops.dot_product_attention(q, q, v)[0, :, 0]
        array([[2., 3., 4., 5.],
               [2., 3., 4., 5.]], dtype=float32)
    """
    if attn_logits_soft_cap is not None:
        raise ValueError(f"dot_product_attention: 'attn_logits_soft_cap' is not supported (must be None), got "
                         f"{attn_logits_soft_cap!r}")
    fn = "dot_product_attention"
    if not (flash_attention is None or (isinstance(flash_attention, (bool, np.bool_, numbers.Integral))
                                        and flash_attention in (0, 1))):
        raise TypeError(f"{fn}: 'flash_attention' must be None, True or False, got {flash_attention!r}")
    for name, x in (("query", query), ("key", key), ("value", value)):
        _check_4d(name, x)
    head_size = np.shape(query)[-1]
    if scale is None:
        scale = 1.0 / math.sqrt(head_size) if head_size else 1.0
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)):
        raise TypeError(f"{fn}: 'scale' must be a float or None, got {scale!r}")
    if mask is not None:
        mask = np.asarray(value_of(mask))
        if mask.dtype.kind not in "biuf":
            raise TypeError(f"{fn}: 'mask' must be a boolean array (True = attend), got dtype {mask.dtype}")
        mask = mask.astype(bool, copy=False)
    # The package's input contract: real numbers only; the dtype of the float32/float64 arrays,
    # which must agree (float32 when none decides).
    given = {"query": value_of(query), "key": value_of(key), "value": value_of(value), "bias": value_of(bias)}
    deciding = {}
    for name, x in given.items():
        if x is None:
            continue
        kind = np.asarray(x).dtype.kind
        if kind not in "biuf":
            raise TypeError(f"{fn}: '{name}' must hold real numbers (float32 or float64), got dtype "
                            f"{np.asarray(x).dtype}")
        if isinstance(x, np.ndarray) and kind == "f" and x.dtype.itemsize in (4, 8):
            deciding[name] = x.dtype.itemsize
    if len(set(deciding.values())) > 1:
        first = next(iter(deciding))
        other = next(n for n in deciding if deciding[n] != deciding[first])
        raise TypeError(f"{fn}: '{first}' is float{8 * deciding[first]} but '{other}' is float{8 * deciding[other]}; "
                        "fastnn does not mix precisions silently: cast one of them")
    dtype = np.float64 if 8 in deciding.values() else np.float32
    q, k, v, b = (None if x is None else np.asarray(x) for x in given.values())
    q, k, v = (np.ascontiguousarray(x, dtype=dtype) for x in (q, k, v))
    if b is not None:
        b = np.ascontiguousarray(b, dtype=dtype)
    traced = is_traced(query, key, value, bias)
    out, lse, _ = attention_forward(q, k, v, mask, b, scale, is_causal)
    if not traced:
        return out
    grads = {}

    def grad_of(index):
        def grad(g):
            if not grads:
                grads["qkv"] = attention_backward(np.ascontiguousarray(g, dtype=dtype), q, k, v, out, lse, mask, b,
                                                  scale, is_causal)
            return grads["qkv"][index]
        return grad

    def grad_bias(g):  # dL/dbias = dS = P∘(dP − D), summed over the axes bias broadcast along
        g = np.asarray(g, dtype=dtype)
        _, _, p = attention_forward(q, k, v, mask, b, scale, is_causal, return_probabilities=True)
        dp = np.einsum("bthd,bshd->bhts", g, v)
        ds = p * (dp - np.einsum("bthd,bthd->bht", g, out)[..., None])
        return unbroadcast(ds, np.shape(bias))

    parents = tuple((p, fn) for p, fn in ((query, grad_of(0)), (key, grad_of(1)), (value, grad_of(2)),
                                          (bias, grad_bias)) if isinstance(p, Tensor))
    return Tensor(out, parents)
