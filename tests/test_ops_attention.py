"""Scaled dot-product attention: the tiled kernels (cpp/src/attention.cpp: online softmax over
128-query × 256-key blocks, FlashAttention-2 backward), ops.attention_forward /
attention_backward and Keras' ops.dot_product_attention.

References: plain NumPy in float64 written here (logits = einsum · scale + bias, masked to −∞,
causal by tril, softmax with fully masked rows giving zero probabilities, einsum with V; the
analytic backward dV = Pᵀ dO, dP = dO Vᵀ, dS = P∘(dP − rowsum(P∘dP)), dQ = scale·dS K,
dK = scale·dSᵀ Q), central finite differences in float64 (the kernel with dropout, and
dot_product_attention through fastnn.autodiff, bias included) and Keras' documented formula.
Plus: the dropout mask's statistics, bit-identical results on 1 and 2 threads and however
the work is split, bounded memory at T = S = 4096, and bad input.
"""

import os
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

import fastnn
from fastnn import autodiff, ops
from finite_differences import numeric_gradient

PYTHON_DIR = os.path.dirname(os.path.dirname(fastnn.__file__))  # the child imports the fastnn this test imported


# ----------------------------------------------------------------------------------------
# NumPy references (float64)
# ----------------------------------------------------------------------------------------
def to_heads_first(x, heads_axis):
    """(B, T, H, D) with heads_axis=2, or (B, H, T, D) with heads_axis=1 -> (B, H, T, D) float64."""
    x = np.asarray(x, np.float64)
    return x.transpose(0, 2, 1, 3) if heads_axis == 2 else x


def from_heads_first(x, heads_axis):
    return x.transpose(0, 2, 1, 3) if heads_axis == 2 else x


def ref_probabilities(q, k, mask, bias, scale, causal):
    """P (B, H, T, S) and the logsumexp (B, H, T) from q, k of shape (B, H, ·, D), float64."""
    logits = np.einsum("bhtd,bhsd->bhts", q, k) * scale
    if bias is not None:
        logits = logits + np.asarray(bias, np.float64)
    t, s = logits.shape[-2:]
    attend = np.ones(logits.shape, bool)
    if mask is not None:
        attend &= np.broadcast_to(np.asarray(mask, bool), logits.shape)
    if causal:  # Keras' top-left alignment: key j attends query i iff j <= i
        attend &= np.tril(np.ones((t, s), bool))
    logits = np.where(attend, logits, -np.inf)
    m = logits.max(axis=-1, keepdims=True, initial=-np.inf)
    e = np.exp(logits - np.where(np.isfinite(m), m, 0.0))  # exp(−∞) = 0
    total = e.sum(axis=-1, keepdims=True)
    some = total > 0
    p = e / np.where(some, total, 1.0)  # a row with nothing attended: P = 0
    lse = np.where(some, m + np.log(np.where(some, total, 1.0)), np.inf)[..., 0]
    return p, lse


def ref_forward(q, k, v, mask=None, bias=None, scale=1.0, causal=False, heads_axis=2, keep=None, rate=0.0):
    """(out, logsumexp, P) as the kernel returns them; `keep` (B, H, T, S) of 0/1 is a dropout mask."""
    q, k, v = (to_heads_first(x, heads_axis) for x in (q, k, v))
    p, lse = ref_probabilities(q, k, mask, bias, scale, causal)
    used = p if keep is None else p * keep / (1.0 - rate)
    out = np.einsum("bhts,bhsd->bhtd", used, v)
    return from_heads_first(out, heads_axis), lse, p


def ref_backward(dout, q, k, v, mask=None, bias=None, scale=1.0, causal=False, heads_axis=2, keep=None,
                 rate=0.0):
    """(dq, dk, dv, dS): the analytic backward, with dS = dL/dlogits (= dL/dbias before broadcasting)."""
    g, q, k, v = (to_heads_first(x, heads_axis) for x in (dout, q, k, v))
    p, _ = ref_probabilities(q, k, mask, bias, scale, causal)
    drop = 1.0 if keep is None else keep / (1.0 - rate)
    dv = np.einsum("bhts,bhtd->bhsd", p * drop, g)
    dp = np.einsum("bhtd,bhsd->bhts", g, v) * drop
    ds = p * (dp - (p * dp).sum(axis=-1, keepdims=True))
    dq = scale * np.einsum("bhts,bhsd->bhtd", ds, k)
    dk = scale * np.einsum("bhts,bhtd->bhsd", ds, q)
    return from_heads_first(dq, heads_axis), from_heads_first(dk, heads_axis), from_heads_first(dv, heads_axis), ds


def keras_reference(query, key, value, bias=None, mask=None, scale=None, is_causal=False):
    """Keras 3's dot_product_attention (backend/numpy/nn.py: _dot_product_attention_xla, _apply_masks)."""
    q, k, v = (np.asarray(x, np.float64) for x in (query, key, value))
    if scale is None:
        scale = 1.0 / np.sqrt(k.shape[-1])
    logits = np.einsum("BTNH,BSNH->BNTS", q, k) * scale
    if bias is not None:
        logits = logits + bias
    if mask is not None or is_causal:
        combined = np.ones_like(logits, dtype=bool)
        if mask is not None:
            combined = np.logical_and(combined, mask)
        if is_causal:
            t, s = logits.shape[2], logits.shape[3]
            combined = np.logical_and(combined, np.tril(np.ones((t, s), bool))[None, None])
        logits = np.where(combined, logits, -0.7 * np.finfo(np.float32).max)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs = e / e.sum(axis=-1, keepdims=True)
    return np.einsum("BNTS,BSNH->BTNH", probs, v)


def layout_shape(batch, time, heads, d, heads_axis):
    return (batch, time, heads, d) if heads_axis == 2 else (batch, heads, time, d)


def make_qkv(rng, batch, t, s, heads, dk, dv, dtype, heads_axis=2):
    q = rng.normal(size=layout_shape(batch, t, heads, dk, heads_axis)).astype(dtype)
    k = rng.normal(size=layout_shape(batch, s, heads, dk, heads_axis)).astype(dtype)
    v = rng.normal(size=layout_shape(batch, s, heads, dv, heads_axis)).astype(dtype)
    return q, k, v


def assert_close(got, want, dtype, what, rel=None):
    """Equal up to `rel` (default 2e-5 in float32, 1e-12 in float64) of max(1, max |want|)."""
    want = np.asarray(want)
    rel = rel if rel is not None else (2e-5 if dtype == np.float32 else 1e-12)
    size = max(1.0, float(np.abs(want[np.isfinite(want)]).max(initial=0.0)))
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    np.testing.assert_allclose(got, want, rtol=rel, atol=rel * size, err_msg=what)


def check_against_reference(q, k, v, dtype, heads_axis=2, mask=None, bias=None, scale=1.0, causal=False,
                            seed=0, rate=0.0, keep=None, dout=None, rng=None, rel=None):
    """The kernel's forward (out, logsumexp, probabilities) and backward against NumPy; returns all six."""
    out, lse, p = ops.attention_forward(q, k, v, mask, bias, scale, causal, rate, seed, return_probabilities=True,
                                        heads_axis=heads_axis)
    r_out, r_lse, r_p = ref_forward(q, k, v, mask, bias, scale, causal, heads_axis, keep, rate)
    assert out.dtype == lse.dtype == p.dtype == dtype
    assert_close(out, r_out, dtype, "out", rel)
    assert_close(lse, r_lse, dtype, "logsumexp", rel)
    np.testing.assert_array_equal(np.isinf(lse), np.isinf(r_lse))
    assert_close(p, r_p, dtype, "probabilities", rel)
    if dout is None:
        dout = rng.normal(size=out.shape).astype(dtype)
    dq, dk, dv = ops.attention_backward(dout, q, k, v, out, lse, mask, bias, scale, causal, rate, seed,
                                        heads_axis)
    r_dq, r_dk, r_dv, _ = ref_backward(dout, q, k, v, mask, bias, scale, causal, heads_axis, keep, rate)
    grad_rel = rel
    if grad_rel is None and dtype == np.float32:
        grad_rel = 5e-5  # sums over S (dq) or T (dk, dv) of float32 products
    for name, got, want in (("dq", dq, r_dq), ("dk", dk, r_dk), ("dv", dv, r_dv)):
        assert got.dtype == dtype
        assert_close(got, want, dtype, name, grad_rel)
    for name, x in (("out", out), ("probabilities", p), ("dq", dq), ("dk", dk), ("dv", dv)):
        assert not np.isnan(x).any(), f"NaN in {name}"
    return out, lse, p, dq, dk, dv


# ----------------------------------------------------------------------------------------
# 1. The kernel against NumPy over many shapes
# ----------------------------------------------------------------------------------------
# (batch, T, S, heads, dk, dv): T crosses the 128-query blocks, S the 256-key blocks.
SHAPES = [
    (1, 1, 1, 1, 1, 1),
    (2, 2, 7, 1, 3, 5),
    (3, 7, 2, 2, 16, 3),
    (1, 127, 129, 3, 32, 16),
    (2, 128, 256, 2, 16, 32),
    (1, 129, 257, 4, 64, 32),
    (1, 255, 128, 2, 3, 64),
    (2, 256, 255, 1, 32, 1),
    (1, 257, 300, 2, 16, 3),
    (1, 300, 1, 3, 1, 16),
    (2, 1, 300, 4, 64, 16),
    (1, 300, 257, 1, 32, 32),
]


@pytest.mark.parametrize("heads_axis", [2, 1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}-T{}-S{}-H{}-dk{}-dv{}".format(*s))
def test_kernel_matches_numpy(shape, dtype, heads_axis, rng):
    batch, t, s, heads, dk, dv = shape
    q, k, v = make_qkv(rng, batch, t, s, heads, dk, dv, dtype, heads_axis)
    scale = float(rng.uniform(0.5, 1.5) / np.sqrt(dk))
    out, lse, p, dq, dk_, dv_ = check_against_reference(q, k, v, dtype, heads_axis, scale=scale, rng=rng)
    assert out.shape == layout_shape(batch, t, heads, dv, heads_axis)
    assert lse.shape == (batch, heads, t) and p.shape == (batch, heads, t, s)
    assert dq.shape == q.shape and dk_.shape == k.shape and dv_.shape == v.shape
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-5 if dtype == np.float32 else 1e-13)


def test_gradients_asked_for_only(rng):
    q, k, v = make_qkv(rng, 2, 130, 260, 2, 8, 5, np.float64)
    out, lse, _ = ops.attention_forward(q, k, v, scale=0.3, causal=True)
    g = rng.normal(size=out.shape)
    full = ops.attention_backward(g, q, k, v, out, lse, scale=0.3, causal=True)
    for flags in ((True, False, False), (False, True, False), (False, False, True), (False, True, True)):
        some = ops.attention_backward(g, q, k, v, out, lse, scale=0.3, causal=True, need_query_grad=flags[0],
                                      need_key_grad=flags[1], need_value_grad=flags[2])
        for want, got, needed in zip(full, some, flags):
            if needed:
                np.testing.assert_array_equal(got, want)
            else:
                assert got is None


def test_empty_sequences(rng):
    """No keys: every query row is fully masked (zeros, logsumexp +∞); no queries: zero key grads."""
    q, k, v = make_qkv(rng, 2, 5, 0, 3, 4, 2, np.float64)
    out, lse, p = ops.attention_forward(q, k, v, return_probabilities=True)
    assert out.shape == (2, 5, 3, 2) and p.shape == (2, 3, 5, 0)
    np.testing.assert_array_equal(out, 0)
    assert np.all(lse == np.inf)
    dq, dk, dv = ops.attention_backward(np.ones_like(out), q, k, v, out, lse)
    np.testing.assert_array_equal(dq, 0)
    assert dk.shape == (2, 0, 3, 4) and dv.shape == (2, 0, 3, 2)

    q, k, v = make_qkv(rng, 2, 0, 6, 3, 4, 2, np.float64)
    out, lse, _ = ops.attention_forward(q, k, v)
    assert out.shape == (2, 0, 3, 2) and lse.shape == (2, 3, 0)
    dq, dk, dv = ops.attention_backward(out, q, k, v, out, lse)
    assert dq.shape == (2, 0, 3, 4)
    np.testing.assert_array_equal(dk, 0)
    np.testing.assert_array_equal(dv, 0)


def test_large_logits_are_stable(rng):
    """Logits of ±1e4: the online softmax never overflows (P nearly one-hot, several key blocks)."""
    q, k, v = make_qkv(rng, 1, 130, 600, 2, 16, 8, np.float64)
    q, k = q * 30, k * 30
    check_against_reference(q, k, v, np.float64, scale=1.0, rng=rng)
    # float32: exp(1e4) would overflow; the logits themselves carry ~1e-3 absolute rounding
    out, lse, p = ops.attention_forward(q.astype(np.float32), k.astype(np.float32), v.astype(np.float32),
                                        return_probabilities=True)
    r_out, r_lse, _ = ref_forward(q, k, v)
    assert np.isfinite(out).all() and np.isfinite(lse).all() and np.isfinite(p).all()
    np.testing.assert_allclose(lse, r_lse, rtol=1e-5)
    # P = exp(L − logsumexp) is recomputed from a float32 logsumexp of size ~|L|: its rows sum
    # to 1 within a few of its ulps (~2.4e-4 at 3600), not within float32's epsilon
    assert np.all(np.abs(p.sum(axis=-1) - 1) < 8 * np.spacing(np.abs(lse)) + 1e-5)
    np.testing.assert_allclose(out, r_out, atol=0.05)


# ----------------------------------------------------------------------------------------
# 2. Masks, bias and causal
# ----------------------------------------------------------------------------------------
B, H, T, S = 2, 3, 129, 260  # two query blocks, two key blocks

MASK_SHAPES = [(T, S), (B, 1, T, S), (1, H, T, S), (B, H, T, S), (S,), (T, 1), (B, 1, 1, S)]


def random_mask(rng, shape, keep=0.7):
    """A random boolean mask of `shape`; entries along a T axis of size T get whole rows False."""
    mask = rng.uniform(size=shape) < keep
    if len(shape) >= 2 and shape[-2] == T:
        mask[..., 5, :] = False  # query 5 attends nothing
        mask[..., T - 1, :] = False  # the last query (second query block) neither
    return mask


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", MASK_SHAPES, ids=str)
def test_boolean_mask(shape, dtype, rng):
    q, k, v = make_qkv(rng, B, T, S, H, 16, 8, dtype)
    mask = random_mask(rng, shape)
    out, lse, p, dq, dk, dv = check_against_reference(q, k, v, dtype, mask=mask, scale=0.25, rng=rng)
    full = np.broadcast_to(mask, (B, H, T, S))
    empty_rows = ~full.any(axis=-1)  # (B, H, T)
    never_read = ~full.any(axis=-2)  # (B, H, S)
    if shape in ((T, S), (T, 1), (B, 1, T, S), (1, H, T, S), (B, H, T, S)):
        assert empty_rows.any()
    empty_bth, never_bsh = empty_rows.transpose(0, 2, 1), never_read.transpose(0, 2, 1)
    assert np.all(out[empty_bth] == 0) and np.all(dq[empty_bth] == 0)
    assert np.all(p[empty_rows] == 0) and np.all(lse[empty_rows] == np.inf)
    assert np.all(dk[never_bsh] == 0) and np.all(dv[never_bsh] == 0)
    assert np.all(p[~full] == 0)


def test_fully_masked_everything_gives_zeros_without_nan(rng):
    q, k, v = make_qkv(rng, 2, 130, 270, 2, 4, 3, np.float32)
    for mask in (np.zeros(270, bool), np.zeros((2, 1, 130, 270), bool)):
        out, lse, p = ops.attention_forward(q, k, v, mask, return_probabilities=True)
        np.testing.assert_array_equal(out, 0)
        np.testing.assert_array_equal(p, 0)
        assert np.all(lse == np.inf)
        grads = ops.attention_backward(rng.normal(size=out.shape).astype(np.float32), q, k, v, out, lse, mask)
        for g in grads:
            np.testing.assert_array_equal(g, 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(T, S), (1, H, T, S), (B, 1, 1, S), (B, H, T, S), (S,)], ids=str)
def test_additive_bias_with_minus_infinity(shape, dtype, rng):
    q, k, v = make_qkv(rng, B, T, S, H, 8, 16, dtype)
    bias = rng.normal(0, 2, size=shape).astype(dtype)
    bias[rng.uniform(size=shape) < 0.2] = -np.inf
    if len(shape) >= 2 and shape[-2] == T:
        bias[..., 7, :] = -np.inf  # a query whose every logit is −∞: as fully masked
    out, lse, p, dq, dk, dv = check_against_reference(q, k, v, dtype, bias=bias, scale=0.4, rng=rng)
    hidden = np.broadcast_to(bias == -np.inf, (B, H, T, S))
    assert np.all(p[hidden] == 0)
    if len(shape) >= 2 and shape[-2] == T:
        assert np.all(out[:, 7] == 0) and np.all(dq[:, 7] == 0) and np.all(lse[:, :, 7] == np.inf)


def test_bias_and_mask_together(rng):
    q, k, v = make_qkv(rng, B, T, S, H, 8, 4, np.float64)
    bias = rng.normal(size=(H, T, S))
    bias[:, :, ::7] = -np.inf
    mask = random_mask(rng, (B, 1, T, S))
    check_against_reference(q, k, v, np.float64, mask=mask, bias=bias, scale=0.5, rng=rng)
    check_against_reference(q, k, v, np.float64, mask=mask, bias=bias, scale=0.5, causal=True, rng=rng)


CAUSAL_LENGTHS = [(1, 1), (7, 2), (2, 7), (129, 300), (300, 129), (257, 256), (128, 520), (520, 3)]


@pytest.mark.parametrize("heads_axis", [2, 1])
@pytest.mark.parametrize("t,s", CAUSAL_LENGTHS)
def test_causal(t, s, heads_axis, rng):
    q, k, v = make_qkv(rng, 2, t, s, 2, 16, 8, np.float64, heads_axis)
    out, lse, p, dq, dk, dv = check_against_reference(q, k, v, np.float64, heads_axis, scale=0.25, causal=True,
                                                      rng=rng)
    # top-left alignment: query 0 reads key 0 only; keys j >= T are read by no query
    np.testing.assert_allclose(p[:, :, 0, 0], 1.0, rtol=1e-15)
    time_axis = 1 if heads_axis == 2 else 2
    first_value = v[:, :1] if heads_axis == 2 else v[:, :, :1]
    np.testing.assert_allclose(np.take(out, [0], axis=time_axis), first_value, rtol=1e-14, atol=1e-15)
    assert np.all(p[..., np.triu(np.ones((t, s), bool), 1)] == 0)
    unread = np.take(dk, np.arange(t, s), axis=time_axis), np.take(dv, np.arange(t, s), axis=time_axis)
    for g in unread:
        np.testing.assert_array_equal(g, 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_causal_with_mask(dtype, rng):
    t, s = 300, 270
    q, k, v = make_qkv(rng, 2, t, s, 2, 8, 8, dtype)
    mask = rng.uniform(size=(2, 1, t, s)) < 0.6
    mask[:, :, 0, 0] = False  # causal leaves query 0 key 0 only: now it attends nothing
    mask[1, :, 200, :201] = False  # query 200 of batch 1: only keys > 200, which causal hides
    out, lse, p, dq, dk, dv = check_against_reference(q, k, v, dtype, mask=mask, scale=0.3, causal=True, rng=rng)
    assert np.all(out[:, 0] == 0) and np.all(dq[:, 0] == 0) and np.all(lse[:, :, 0] == np.inf)
    assert np.all(out[1, 200] == 0) and np.all(dq[1, 200] == 0) and np.all(lse[1, :, 200] == np.inf)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_attending_one_key_block_only(dtype, rng):
    """Rows whose keys are all in the second key block (the online softmax starts from −∞
    there), all in the first, the last key of one block and the first of the next."""
    t, s = 130, 300
    q, k, v = make_qkv(rng, 2, t, s, 2, 8, 4, dtype)
    mask = np.ones((t, s), bool)
    mask[0] = np.arange(s) >= 280
    mask[1] = np.arange(s) < 3
    mask[2] = np.arange(s) == 255
    mask[3] = np.arange(s) == 256
    mask[4] = np.isin(np.arange(s), [0, s - 1])
    mask[129] = np.arange(s) >= 256  # second query block too
    check_against_reference(q, k, v, dtype, mask=mask, scale=0.3, rng=rng)
    check_against_reference(q, k, v, dtype, mask=mask, scale=0.3, causal=True, rng=rng)


def test_strided_and_broadcast_arguments(rng):
    """Views (reversed, transposed, every other column, broadcast with zero strides), a
    Fortran-ordered bias, a scalar bias, a nested-list mask: read as NumPy reads them."""
    t, s = 130, 300
    q, k, v = make_qkv(rng, 2, t, s, 2, 8, 4, np.float64)
    cases = [
        dict(bias=rng.normal(size=(t, 2 * s))[:, ::2]),
        dict(bias=np.asfortranarray(rng.normal(size=(t, s)))),
        dict(bias=np.float64(3.0)),
        dict(mask=(rng.uniform(size=(s, t)) < 0.5).T),
        dict(mask=np.broadcast_to(rng.uniform(size=(1, 1, 1, s)) < 0.5, (2, 2, t, s))),
    ]
    for kw in cases:
        check_against_reference(q, k, v, np.float64, rng=rng, **kw)
    check_against_reference(q[:, ::-1], k[:, ::-1], v[:, ::-1], np.float64, rng=rng)
    mask = [[True, False, True], [False, False, True]]
    out, lse, _ = ops.attention_forward(q[:, :2], k[:, :3], v[:, :3], mask=mask)
    np.testing.assert_allclose(out, ref_forward(q[:, :2], k[:, :3], v[:, :3], mask=np.array(mask))[0],
                               rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------
# 3. Long sequences (many key blocks), and the same work split differently
# ----------------------------------------------------------------------------------------
def test_long_sequence_matches_numpy(rng):
    q, k, v = make_qkv(rng, 1, 1000, 1000, 1, 32, 24, np.float64)
    mask = rng.uniform(size=(1000, 1000)) < 0.9
    bias = rng.normal(size=(1000, 1000))
    check_against_reference(q, k, v, np.float64, scale=0.2, rng=rng)
    check_against_reference(q, k, v, np.float64, mask=mask, bias=bias, scale=0.2, causal=True, rng=rng)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_split_work_gives_identical_bits(dtype, rng):
    """A batch vs each sequence alone, all heads vs each head alone, both layouts, query halves."""
    nb, nh, t, s = 3, 2, 300, 520
    q, k, v = make_qkv(rng, nb, t, s, nh, 16, 8, dtype)
    mask = rng.uniform(size=(nb, 1, t, s)) < 0.8
    bias = rng.normal(size=(t, s)).astype(dtype)
    g = rng.normal(size=(nb, t, nh, 8)).astype(dtype)
    kw = dict(mask=mask, bias=bias, scale=0.25)
    out, lse, p = ops.attention_forward(q, k, v, return_probabilities=True, **kw)
    grads = ops.attention_backward(g, q, k, v, out, lse, **kw)

    def same(got, want):
        want = np.ascontiguousarray(want)
        assert got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes()

    for b in range(nb):  # each sequence alone
        one = [np.ascontiguousarray(x[b:b + 1]) for x in (q, k, v, g, mask)]
        kw1 = dict(mask=one[4], bias=bias, scale=0.25)
        o1, l1, p1 = ops.attention_forward(*one[:3], return_probabilities=True, **kw1)
        same(o1, out[b:b + 1])
        same(l1, lse[b:b + 1])
        same(p1, p[b:b + 1])
        for got, want in zip(ops.attention_backward(one[3], *one[:3], o1, l1, **kw1), grads):
            same(got, want[b:b + 1])
    # (B, H, T, D): the same numbers read in place, and each head alone
    bh = [np.ascontiguousarray(x.transpose(0, 2, 1, 3)) for x in (q, k, v, g)]
    o2, l2, p2 = ops.attention_forward(*bh[:3], return_probabilities=True, heads_axis=1, **kw)
    same(o2, out.transpose(0, 2, 1, 3))
    same(l2, lse)
    same(p2, p)
    grads2 = ops.attention_backward(bh[3], *bh[:3], o2, l2, heads_axis=1, **kw)
    for got, want in zip(grads2, grads):
        same(got, want.transpose(0, 2, 1, 3))
    for h in range(nh):
        head = [np.ascontiguousarray(x[:, h:h + 1]) for x in bh]
        o3, l3, p3 = ops.attention_forward(*head[:3], return_probabilities=True, heads_axis=1, **kw)
        same(o3, o2[:, h:h + 1])
        same(l3, lse[:, h:h + 1])
        same(p3, p[:, h:h + 1])
        for got, want in zip(ops.attention_backward(head[3], *head[:3], o3, l3, heads_axis=1, **kw), grads2):
            same(got, want[:, h:h + 1])
    # strided (non-contiguous) inputs read as their contiguous copies
    strided = [x.transpose(0, 2, 1, 3) for x in bh[:3]]
    same(ops.attention_forward(*strided, **kw)[0], out)
    # whole query blocks: the first 256 queries alone (the forward of a query reads no other query)
    o4, l4, p4 = ops.attention_forward(np.ascontiguousarray(q[:, :256]), k, v, np.ascontiguousarray(mask[:, :, :256]),
                                       np.ascontiguousarray(bias[:256]), 0.25, return_probabilities=True)
    same(o4, out[:, :256])
    same(l4, lse[:, :, :256])
    same(p4, p[:, :, :256])


# ----------------------------------------------------------------------------------------
# 4. Dropout
# ----------------------------------------------------------------------------------------
def recover_keep(batch, heads, t, s, seed, rate):
    """The kernel's keep mask Z (batch, heads, T, S) of 0/1 for (seed, rate), read off a probe
    call: Q = K = 0 makes P = 1/S everywhere and V = I makes out = P∘Z/(1 − rate)."""
    q = np.zeros((batch, heads, t, 1))
    k = np.zeros((batch, heads, s, 1))
    v = np.ascontiguousarray(np.broadcast_to(np.eye(s), (batch, heads, s, s)))
    out, _, _ = ops.attention_forward(q, k, v, dropout_rate=rate, seed=seed, heads_axis=1)
    z = out * s * (1.0 - rate)
    keep = np.rint(z)
    np.testing.assert_allclose(z, keep, atol=1e-9)
    assert set(np.unique(keep)) <= {0.0, 1.0}
    return keep


def test_dropout_is_a_function_of_the_seed(rng):
    q, k, v = make_qkv(rng, 2, 130, 270, 2, 8, 4, np.float32)
    g = rng.normal(size=(2, 130, 2, 4)).astype(np.float32)

    def run(rate, seed):
        out, lse, p = ops.attention_forward(q, k, v, dropout_rate=rate, seed=seed, return_probabilities=True)
        return (out, lse, p) + tuple(ops.attention_backward(g, q, k, v, out, lse, dropout_rate=rate, seed=seed))

    plain = run(0.0, 0)
    first, again, other = run(0.3, 11), run(0.3, 11), run(0.3, 12)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    for i in (0, 3, 4, 5):  # out and the gradients change with the seed
        assert not np.array_equal(first[i], other[i])
    for a, b in zip(run(0.0, 12345), plain):  # rate 0: the seed does nothing
        np.testing.assert_array_equal(a, b)
    # the logsumexp and the probabilities are those before dropout
    np.testing.assert_array_equal(first[1], plain[1])
    np.testing.assert_array_equal(first[2], plain[2])


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.85])
def test_dropout_mask_statistics(rate, rng):
    nb, nh, t, s = 2, 2, 64, 300
    keep = recover_keep(nb, nh, t, s, seed=7, rate=rate)
    n = keep.size
    dropped = 1.0 - keep
    # the fraction dropped: Binomial(n, rate)/n
    assert abs(dropped.mean() - rate) < 5 * np.sqrt(rate * (1 - rate) / n)
    # neighbours independent: both of two adjacent keys dropped with probability rate² (the m
    # overlapping pairs: variance m·rate²(1 − rate²) + 2(m − 1)·rate³(1 − rate) of the count)
    pairs = dropped[..., 1:] * dropped[..., :-1]
    m = pairs.size
    sd = np.sqrt((m * rate**2 * (1 - rate**2) + 2 * (m - 1) * rate**3 * (1 - rate)) / m**2)
    assert abs(pairs.mean() - rate**2) < 6 * sd
    # another seed: an independent mask (disagreement 2·rate·(1 − rate))
    other = recover_keep(nb, nh, t, s, seed=8, rate=rate)
    differ = (keep != other).mean()
    assert abs(differ - 2 * rate * (1 - rate)) < 6 * np.sqrt(2 * rate * (1 - rate) / n)
    # every head and batch entry has its own mask
    assert not np.array_equal(keep[0, 0], keep[0, 1]) and not np.array_equal(keep[0, 0], keep[1, 0])
    # the dropped probability mass: Σ P∘(1 − Z) has mean rate per row and variance rate(1 − rate) Σ P²
    q, k, v = make_qkv(rng, nb, t, s, nh, 8, 4, np.float64, heads_axis=1)
    _, _, p = ops.attention_forward(q, k, v, scale=0.5, return_probabilities=True, heads_axis=1)
    mass = (p * dropped).sum()
    rows = nb * nh * t
    assert abs(mass - rate * rows) < 6 * np.sqrt(rate * (1 - rate) * (p * p).sum())


@pytest.mark.parametrize("heads_axis", [2, 1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_forward_and_backward_match_numpy(dtype, heads_axis, rng):
    """out = (P∘Z/(1 − r)) V and its backward, with the keep mask Z read off a probe call."""
    nb, nh, t, s, rate, seed = 2, 2, 129, 260, 0.3, 2024
    keep = recover_keep(nb, nh, t, s, seed, rate)
    q, k, v = make_qkv(rng, nb, t, s, nh, 16, 8, dtype, heads_axis)
    mask = random_mask(rng, (nb, 1, t, s), keep=0.8)
    check_against_reference(q, k, v, dtype, heads_axis, scale=0.3, seed=seed, rate=rate, keep=keep, rng=rng)
    check_against_reference(q, k, v, dtype, heads_axis, mask=mask, scale=0.3, causal=True, seed=seed, rate=rate,
                            keep=keep, rng=rng)


def test_dropout_mean_over_seeds_is_the_output_without_dropout(rng):
    q, k, v = make_qkv(rng, 1, 4, 16, 2, 4, 3, np.float64)
    want = ops.attention_forward(q, k, v, scale=0.5)[0]
    n = 400
    outs = np.stack([ops.attention_forward(q, k, v, scale=0.5, dropout_rate=0.5, seed=seed)[0] for seed in range(n)])
    se = outs.std(axis=0, ddof=1) / np.sqrt(n)
    assert np.all(se > 0)
    z = (outs.mean(axis=0) - want) / se
    assert np.abs(z).max() < 6, f"mean over {n} seeds off by {np.abs(z).max():.2f} standard errors"


def test_dropout_backward_matches_finite_differences(rng):
    """float64 central differences of sum(out · w) with the same seed (the mask depends on it only)."""
    nb, t, s, nh, dk, dv = 2, 5, 9, 2, 3, 4
    q, k, v = make_qkv(rng, nb, t, s, nh, dk, dv, np.float64)
    mask = rng.uniform(size=(nb, 1, t, s)) < 0.8
    mask[..., 0] = True  # no query fully masked (with causal, key 0 is every query's)
    bias = rng.normal(size=(nh, t, s))
    w = rng.normal(size=(nb, t, nh, dv))
    kw = dict(mask=mask, bias=bias, scale=0.7, causal=True, dropout_rate=0.4, seed=99)
    out, lse, _ = ops.attention_forward(q, k, v, **kw)
    assert not np.array_equal(out, ops.attention_forward(q, k, v, mask, bias, 0.7, True)[0])
    grads = ops.attention_backward(w, q, k, v, out, lse, **kw)

    def loss():
        return float(np.sum(ops.attention_forward(q, k, v, **kw)[0] * w))

    for name, got, target in zip(("dq", "dk", "dv"), grads, (q, k, v)):
        fd = numeric_gradient(loss, target, 1e-6)
        rel = np.linalg.norm(got - fd) / np.linalg.norm(fd)
        assert rel < 1e-7, f"{name}: relative error {rel:.3g}"


# ----------------------------------------------------------------------------------------
# 5. dot_product_attention through fastnn.autodiff against finite differences
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("bias_shape", [(2, 2, 6, 9), (6, 9), (1, 2, 1, 9)], ids=str)
def test_dot_product_attention_gradients_match_finite_differences(bias_shape, rng):
    nb, t, s, nh, hd, hv = 2, 6, 9, 2, 3, 4
    q, k, v = make_qkv(rng, nb, t, s, nh, hd, hv, np.float64)
    bias = rng.normal(size=bias_shape)
    mask = rng.uniform(size=(nb, 1, t, s)) < 0.75
    mask[..., 0] = True
    mask[1, :, 0, 0] = False  # batch 1, query 0: causal leaves key 0 only, masked: a zero row
    w = rng.normal(size=(nb, t, nh, hv))

    def loss():
        return float(np.sum(ops.dot_product_attention(q, k, v, bias, mask, is_causal=True) * w))

    tensors = [autodiff.Tensor(x) for x in (q, k, v, bias)]
    out = ops.dot_product_attention(*tensors, mask=mask, is_causal=True)
    assert isinstance(out, autodiff.Tensor)
    np.testing.assert_array_equal(out.value, ops.dot_product_attention(q, k, v, bias, mask, is_causal=True))
    np.testing.assert_array_equal(out.value[1, 0], 0)
    found = autodiff.backward(out, w)
    for name, tensor, target in zip(("query", "key", "value", "bias"), tensors, (q, k, v, bias)):
        got = found[id(tensor)]
        assert got.shape == target.shape
        fd = numeric_gradient(loss, target, 1e-6)
        rel = np.linalg.norm(got - fd) / np.linalg.norm(fd)
        assert rel < 1e-7, f"d{name}: relative error {rel:.3g}"
    # and against the analytic NumPy backward (dS is dL/dbias before broadcasting)
    r_dq, r_dk, r_dv, ds = ref_backward(w, q, k, v, mask, bias, 1 / np.sqrt(hd), True)
    for got, want in zip((found[id(x)] for x in tensors), (r_dq, r_dk, r_dv)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    want_bias = ds.sum(axis=tuple(range(4 - len(bias_shape))))
    want_bias = want_bias.sum(axis=tuple(i for i, n in enumerate(bias_shape) if n == 1), keepdims=True)
    np.testing.assert_allclose(found[id(tensors[3])], want_bias, rtol=1e-12, atol=1e-12)


def test_dot_product_attention_grad_and_vjp(rng):
    q, k, v = make_qkv(rng, 1, 5, 7, 2, 3, 2, np.float64)
    w = rng.normal(size=(1, 5, 2, 2))

    def loss_of(x):
        return ops.sum(ops.dot_product_attention(x, k, v, is_causal=True) * w)

    dq = autodiff.grad(loss_of, q)
    np.testing.assert_allclose(dq, ref_backward(w, q, k, v, scale=1 / np.sqrt(3), causal=True)[0],
                               rtol=1e-12, atol=1e-12)
    dv = autodiff.vjp(lambda x: ops.dot_product_attention(q, k, x), v, w)
    np.testing.assert_allclose(dv, ref_backward(w, q, k, v, scale=1 / np.sqrt(3))[2], rtol=1e-12, atol=1e-12)
    # self-attention: one tensor as query, key and value collects the three gradients
    x = rng.normal(size=(1, 6, 2, 3))
    g = rng.normal(size=(1, 6, 2, 3))
    got = autodiff.vjp(lambda t: ops.dot_product_attention(t, t, t), x, g)
    r_dq, r_dk, r_dv, _ = ref_backward(g, x, x, x, scale=1 / np.sqrt(3))
    np.testing.assert_allclose(got, r_dq + r_dk + r_dv, rtol=1e-12, atol=1e-12)

    def self_loss():
        return float(np.sum(ops.dot_product_attention(x, x, x) * g))

    fd = numeric_gradient(self_loss, x, 1e-6)
    assert np.linalg.norm(got - fd) / np.linalg.norm(fd) < 1e-7


# ----------------------------------------------------------------------------------------
# 6. Determinism across thread counts
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bit_identical_on_one_and_two_threads(dtype, threads, rng):
    # 2·2 heads × 300 × 520: far above the kernel's one-thread threshold, forward and backward
    q, k, v = make_qkv(rng, 2, 300, 520, 2, 32, 16, dtype)
    g = rng.normal(size=(2, 300, 2, 16)).astype(dtype)
    mask = rng.uniform(size=(2, 1, 300, 520)) < 0.8
    bias = rng.normal(size=(2, 300, 520)).astype(dtype)
    configs = [dict(scale=0.2), dict(mask=mask, bias=bias, scale=0.2, causal=True, dropout_rate=0.25, seed=5)]
    results = []
    for n in (1, 2):
        threads(n)
        assert fastnn.get_num_threads() == n
        run = []
        for kw in configs:
            out, lse, p = ops.attention_forward(q, k, v, return_probabilities=True, **kw)
            run += [out, lse, p, *ops.attention_backward(g, q, k, v, out, lse, **kw)]
        results.append(run)
    for one, two in zip(*results):
        assert one.tobytes() == two.tobytes()


# ----------------------------------------------------------------------------------------
# 7. Bounded memory: never the T×S matrix
# ----------------------------------------------------------------------------------------
def test_probabilities_only_when_asked(rng):
    q, k, v = make_qkv(rng, 1, 3, 4, 1, 2, 2, np.float32)
    out, lse, p = ops.attention_forward(q, k, v)
    assert p is None and out.shape == (1, 3, 1, 2) and lse.shape == (1, 1, 3)
    assert ops.attention_forward(q, k, v, return_probabilities=False)[2] is None


def test_long_sequence_without_the_score_matrix(rng):
    """T = S = 4096: forward and backward allocate O(T) on the Python side (the 4096² float32
    matrix would be 64 MiB), and the results are right on the rows one can afford to check."""
    n, dk = 4096, 16
    q, k, v = make_qkv(rng, 1, n, n, 1, dk, dk, np.float32)
    g = rng.normal(size=q.shape).astype(np.float32)
    scale = 0.25
    tracemalloc.start()
    try:
        out, lse, p = ops.attention_forward(q, k, v, scale=scale)
        dq, dk_, dv = ops.attention_backward(g, q, k, v, out, lse, scale=scale)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert p is None
    assert peak < 2 * 1024 * 1024, f"peak Python-side allocation {peak} bytes"  # 4 arrays of 256 KiB + lse
    # rows 0..31 and 4000..4031 against NumPy, forward and dq (which needs P and dP of its rows only)
    rows = np.r_[0:32, 4000:4032]
    q64, k64, v64, g64 = (x[0, :, 0].astype(np.float64) for x in (q, k, v, g))
    logits = scale * q64[rows] @ k64.T
    pr = np.exp(logits - logits.max(axis=1, keepdims=True))
    pr /= pr.sum(axis=1, keepdims=True)
    o_rows = pr @ v64
    np.testing.assert_allclose(out[0, rows, 0], o_rows, rtol=1e-4, atol=1e-5)
    dp = g64[rows] @ v64.T
    ds = pr * (dp - (pr * dp).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(dq[0, rows, 0], scale * ds @ k64, rtol=1e-3, atol=1e-4)
    # the rows of P sum to 1, those of dS to 0: Σ_s dV_s = Σ_t dO_t and Σ_s dK_s = 0
    np.testing.assert_allclose(dv[0, :, 0].sum(axis=0, dtype=np.float64), g64.sum(axis=0), rtol=1e-3, atol=1e-2)
    np.testing.assert_allclose(dk_[0, :, 0].sum(axis=0, dtype=np.float64), 0, atol=2e-2)


def test_long_sequence_resident_memory_stays_small():
    """In a fresh process: the peak resident size grows < 40 MB over a T = S = 4096 forward and
    backward (C++ allocations included; the T×S matrix alone is 64 MiB)."""
    script = textwrap.dedent("""
        import resource
        import numpy as np
        from fastnn import ops
        rng = np.random.default_rng(0)
        q, k, v, g = (rng.normal(size=(1, 4096, 1, 16)).astype(np.float32) for _ in range(4))
        small = [x[:, :300].copy() for x in (q, k, v, g)]  # warm up: threads, scratch, code pages
        o, l, _ = ops.attention_forward(*small[:3])
        ops.attention_backward(small[3], *small[:3], o, l)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out, lse, _ = ops.attention_forward(q, k, v, scale=0.25)
        grads = ops.attention_backward(g, q, k, v, out, lse, scale=0.25)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert all(np.isfinite(x).all() for x in (out, *grads))
        print(after - before)
    """)
    env = dict(os.environ, PYTHONPATH=PYTHON_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    growth_kib = int(done.stdout.strip().splitlines()[-1])  # ru_maxrss is in KiB on Linux
    assert growth_kib < 40 * 1024, f"resident size grew by {growth_kib} KiB"


# ----------------------------------------------------------------------------------------
# 8. Bad input
# ----------------------------------------------------------------------------------------
def _bad_cases():
    f32 = np.float32
    q, k, v = np.zeros((2, 5, 3, 4), f32), np.zeros((2, 6, 3, 4), f32), np.zeros((2, 6, 3, 2), f32)
    fwd = ops.attention_forward
    return [
        ("3-D query", lambda: fwd(q[0], k, v), ValueError, r"attention_forward: 'query' must have 4 dimensions"),
        ("5-D key", lambda: fwd(q, k[None], v), ValueError, r"attention_forward: 'key' must have 4 dimensions"),
        ("batch", lambda: fwd(q, k[:1], v[:1]), ValueError,
         r"'query', 'key' and 'value' must agree in batch size and heads .*\(2, 5, 3, 4\), \(1, 6, 3, 4\)"),
        ("heads", lambda: fwd(q, k[:, :, :2], v), ValueError, r"'query', 'key' and 'value' must agree in batch"),
        ("value heads", lambda: fwd(q, k, v[:, :, :1]), ValueError, r"must agree in batch size and heads"),
        ("key features", lambda: fwd(q, k[..., :3], v), ValueError,
         r"attention_forward: 'key' must have the features of 'query' \(4\), got shape \(2, 6, 3, 3\)"),
        ("value length", lambda: fwd(q, k, v[:, :5]), ValueError,
         r"attention_forward: 'value' must have the length of 'key' \(6\), got shape \(2, 5, 3, 2\)"),
        ("no features", lambda: fwd(q[..., :0], k[..., :0], v), ValueError,
         r"the features of 'query' and 'key' must be at least 1"),
        ("mask shape", lambda: fwd(q, k, v, mask=np.ones((5, 5), bool)), ValueError,
         r"attention_forward: 'mask' must broadcast to \(batch, heads, T, S\) = \(2, 3, 5, 6\), got shape \(5, 5\)"),
        ("mask 5-D", lambda: fwd(q, k, v, mask=np.ones((1, 2, 3, 5, 6), bool)), ValueError,
         r"'mask' must broadcast to"),
        ("mask int", lambda: fwd(q, k, v, mask=np.ones((5, 6), np.int32)), TypeError,
         r"attention_forward: 'mask' must be a boolean array \(True = attend\), got int32"),
        ("mask float", lambda: fwd(q, k, v, mask=np.ones((5, 6), f32)), TypeError, r"'mask' must be a boolean array"),
        ("bias shape", lambda: fwd(q, k, v, bias=np.zeros((3, 6, 6), f32)), ValueError,
         r"attention_forward: 'bias' must broadcast to \(batch, heads, T, S\)"),
        ("bias float64", lambda: fwd(q, k, v, bias=np.zeros((5, 6))), TypeError,
         r"'query' is float32 but 'bias' is float64"),
        ("mixed precision", lambda: fwd(q, k.astype(np.float64), v), TypeError,
         r"attention_forward: 'query' is float32 but 'key' is float64"),
        ("dropout 1", lambda: fwd(q, k, v, dropout_rate=1.0), ValueError,
         r"attention_forward: 'dropout_rate' must be in \[0, 1\), got 1"),
        ("dropout negative", lambda: fwd(q, k, v, dropout_rate=-0.1), ValueError,
         r"'dropout_rate' must be in \[0, 1\)"),
        ("dropout nan", lambda: fwd(q, k, v, dropout_rate=float("nan")), ValueError, r"'dropout_rate' must be in"),
        ("heads_axis 3", lambda: fwd(q, k, v, heads_axis=3), ValueError,
         r"attention_forward: 'heads_axis' must be 2 .* or 1 .*, got 3"),
        ("heads_axis 0", lambda: fwd(q, k, v, heads_axis=0), ValueError, r"'heads_axis' must be 2"),
        ("scale nan", lambda: fwd(q, k, v, scale=float("nan")), ValueError,
         r"attention_forward: 'scale' must be a finite number, got nan"),
        ("scale inf", lambda: fwd(q, k, v, scale=float("inf")), ValueError, r"'scale' must be a finite number"),
        ("query None", lambda: fwd(None, k, v), TypeError, r"attention_forward: 'query' must be an array, got None"),
        ("soft cap", lambda: ops.dot_product_attention(q, k, v, attn_logits_soft_cap=30.0), ValueError,
         r"dot_product_attention: 'attn_logits_soft_cap' is not supported \(must be None\), got 30.0"),
        ("flash_attention", lambda: ops.dot_product_attention(q, k, v, flash_attention="yes"), TypeError,
         r"dot_product_attention: 'flash_attention' must be None, True or False"),
        ("keras 3-D", lambda: ops.dot_product_attention(q[0], k[0], v[0]), ValueError,
         r"dot_product_attention: 'query' must be 4-D"),
        ("keras scale", lambda: ops.dot_product_attention(q, k, v, scale="big"), TypeError,
         r"dot_product_attention: 'scale' must be a float or None"),
        ("keras scale nan", lambda: ops.dot_product_attention(q, k, v, scale=float("nan")), ValueError,
         r"'scale' must be a finite number"),
        ("keras mask shape", lambda: ops.dot_product_attention(q, k, v, mask=np.ones((4, 6), bool)), ValueError,
         r"'mask' must broadcast to"),
    ]


BAD = _bad_cases()


@pytest.mark.parametrize("call,error,match", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_bad_backward_input():
    f32 = np.float32
    q, k, v = np.zeros((2, 5, 3, 4), f32), np.zeros((2, 6, 3, 4), f32), np.zeros((2, 6, 3, 2), f32)
    out, lse, _ = ops.attention_forward(q, k, v)
    bwd = ops.attention_backward
    with pytest.raises(ValueError,
                       match=r"attention_backward: 'dout' must have shape \(2, 5, 3, 2\), got \(2, 4, 3, 2\)"):
        bwd(out[:, :4], q, k, v, out, lse)
    with pytest.raises(ValueError, match=r"attention_backward: 'out' must have shape \(2, 5, 3, 2\)"):
        bwd(out, q, k, v, out[:1], lse)
    with pytest.raises(ValueError, match=r"attention_backward: 'logsumexp' must have shape \(2, 3, 5\)"):
        bwd(out, q, k, v, out, lse[:, :, :4])
    with pytest.raises(TypeError, match=r"attention_backward: 'query' is float32 but 'logsumexp' is float64"):
        bwd(out, q, k, v, out, lse.astype(np.float64))
    with pytest.raises(ValueError, match=r"attention_backward: 'dropout_rate' must be in \[0, 1\)"):
        bwd(out, q, k, v, out, lse, dropout_rate=1.0)
    with pytest.raises(ValueError, match=r"attention_backward: 'mask' must broadcast to"):
        bwd(out, q, k, v, out, lse, mask=np.ones((6, 5), bool))
    with pytest.raises(ValueError, match=r"attention_backward: 'heads_axis' must be 2"):
        bwd(out, q, k, v, out, lse, heads_axis=3)
    with pytest.raises(ValueError, match=r"attention_backward: 'key' must have the features of 'query'"):
        bwd(out, q, k[..., :3], v, out, lse)


# ----------------------------------------------------------------------------------------
# 9. dot_product_attention is Keras' formula
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dot_product_attention_is_keras_formula(dtype, rng):
    nb, t, s, nh, hd, hv = 2, 140, 270, 3, 8, 5
    q, k, v = make_qkv(rng, nb, t, s, nh, hd, hv, dtype)
    bias = rng.normal(size=(nb, nh, t, s)).astype(dtype)
    mask = rng.uniform(size=(nb, 1, t, s)) < 0.7
    mask[..., 0] = True  # every row keeps a key (with is_causal too): Keras and fastnn agree
    tol = dict(rtol=2e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    for kw in (dict(), dict(bias=bias), dict(mask=mask), dict(is_causal=True), dict(scale=0.7),
               dict(bias=bias, mask=mask, is_causal=True, scale=0.3)):
        got = ops.dot_product_attention(q, k, v, **kw)
        assert got.dtype == dtype and got.shape == (nb, t, nh, hv)
        np.testing.assert_allclose(got, keras_reference(q, k, v, **kw), **tol, err_msg=str(sorted(kw)))
    # the default scale is 1/sqrt(H), the head size
    np.testing.assert_array_equal(ops.dot_product_attention(q, k, v),
                                  ops.attention_forward(q, k, v, scale=1 / np.sqrt(hd))[0])
    # flash_attention is accepted and changes nothing
    for flash in (True, False):
        np.testing.assert_array_equal(ops.dot_product_attention(q, k, v, flash_attention=flash),
                                      ops.dot_product_attention(q, k, v))
    # a mask of 0/1 integers is read as booleans
    np.testing.assert_array_equal(ops.dot_product_attention(q, k, v, mask=mask.astype(np.int32)),
                                  ops.dot_product_attention(q, k, v, mask=mask))


def test_fully_masked_row_differs_from_keras_by_design(rng):
    """Keras' large-negative padding averages the values over a fully masked row; fastnn gives zeros."""
    q, k, v = make_qkv(rng, 1, 4, 6, 1, 3, 2, np.float64)
    mask = np.ones((1, 1, 4, 6), bool)
    mask[0, 0, 2] = False
    got = ops.dot_product_attention(q, k, v, mask=mask)
    keras = keras_reference(q, k, v, mask=mask)
    np.testing.assert_array_equal(got[0, 2], 0)
    np.testing.assert_allclose(keras[0, 2], v[0].mean(axis=0), rtol=1e-12)
    rows = [0, 1, 3]
    np.testing.assert_allclose(got[:, rows], keras[:, rows], rtol=1e-12, atol=1e-13)
