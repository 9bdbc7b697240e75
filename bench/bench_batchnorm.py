"""Batch normalisation, training mode: forward (batch statistics, moving averages updated)
plus backward (dx, dgamma, dbeta) on NHWC float32 activations of a small CNN.

fastnn: ops.batch_norm_forward + ops.batch_norm_backward (two kernel calls). NumPy: a careful
vectorised implementation over the (N·H·W, C) view. PyTorch: torch.nn.functional.batch_norm
and autograd (torch.autograd.grad, so that nothing accumulates between calls), once with a
channels_last input (the same memory as fastnn's NHWC) and once with NCHW (contiguous); each
layout is its own row. Memory-bound: no GFLOP/s.
"""

import numpy as np

from harness import Case, normalization_inputs

import fastnn

SHAPES = {"full": [(64, 28, 28, 32), (64, 14, 14, 64)], "quick": [(64, 14, 14, 64)], "smoke": [(2, 4, 4, 8)]}
MOMENTUM, EPSILON = 0.99, 1e-3


def numpy_batchnorm(x2, dy2, gamma, beta, mm, mv, tmp):
    """Forward (training) and backward over the rows of x2 (rows × C); updates mm, mv in place."""
    n = x2.shape[0]
    mean = x2.mean(axis=0)
    xc = np.subtract(x2, mean, out=tmp[0])
    var = np.einsum("ij,ij->j", xc, xc) / n
    invstd = 1.0 / np.sqrt(var + EPSILON)
    xhat = np.multiply(xc, invstd, out=xc)
    y = xhat * gamma
    y += beta
    mm *= MOMENTUM
    mm += (1 - MOMENTUM) * mean
    mv *= MOMENTUM
    mv += (1 - MOMENTUM) * var
    dbeta = dy2.sum(axis=0)
    dgamma = np.einsum("ij,ij->j", dy2, xhat)
    # dx = gamma·invstd/N·(N·dy - Σdy - x̂·Σ(dy·x̂))
    dx = np.multiply(xhat, dgamma, out=tmp[1])
    dx += dbeta
    np.subtract(dy2 * n, dx, out=dx)
    dx *= gamma * invstd / n
    return y, dx, dgamma, dbeta


def _check(ours, theirs):
    """(dx, dgamma, dbeta) of a peer against fastnn's; torch's dx has NCHW indices."""
    dx, dgamma, dbeta = ours
    t_dx, t_dgamma, t_dbeta = (v.detach().numpy() if hasattr(v, "detach") else np.asarray(v) for v in theirs)
    if hasattr(theirs[0], "detach"):
        t_dx = np.moveaxis(t_dx, 1, -1)
    np.testing.assert_allclose(t_dx.reshape(dx.shape), dx, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(t_dgamma, dgamma, rtol=1e-3, atol=1e-2)
    np.testing.assert_allclose(t_dbeta, dbeta, rtol=1e-3, atol=1e-2)


def cases(torch, size="full"):
    rng = np.random.default_rng(0)
    out = []
    for shape in SHAPES[size]:
        c = shape[-1]
        x, dy, gamma, beta = normalization_inputs(rng, shape)
        mm, mv = np.zeros(c, np.float32), np.ones(c, np.float32)
        dgamma, dbeta = np.empty(c, np.float32), np.empty(c, np.float32)

        def run_fastnn(x=x, dy=dy, gamma=gamma, beta=beta, mm=mm, mv=mv, dgamma=dgamma, dbeta=dbeta):
            y, mean, invstd = fastnn.ops.batch_norm_forward(x, gamma, beta, mm, mv, momentum=MOMENTUM,
                                                            epsilon=EPSILON)
            dx = fastnn.ops.batch_norm_backward(dy, x, mean, invstd, gamma, dgamma=dgamma, dbeta=dbeta)
            return dx, dgamma, dbeta

        x2, dy2 = x.reshape(-1, c), dy.reshape(-1, c)
        np_mm, np_mv = mm.copy(), mv.copy()
        tmp = (np.empty_like(x2), np.empty_like(x2))

        def run_numpy(x2=x2, dy2=dy2, gamma=gamma, beta=beta, mm=np_mm, mv=np_mv, tmp=tmp):
            _, dx, dg, db = numpy_batchnorm(x2, dy2, gamma, beta, mm, mv, tmp)
            return dx, dg, db

        run = {"fastnn": run_fastnn, "numpy": run_numpy}
        label = "×".join(map(str, shape))
        if torch is None:
            out.append(Case("batchnorm", f"BN train fwd+bwd {label} f32 (NHWC)", 0.0, run, _check))
            continue
        for layout in ("channels_last", "NCHW"):
            tx = torch.from_numpy(x).permute(0, 3, 1, 2)  # NCHW indices over NHWC memory: channels_last
            tdy = torch.from_numpy(dy).permute(0, 3, 1, 2)
            if layout == "NCHW":
                tx, tdy = tx.contiguous(), tdy.contiguous()
            tx = tx.detach().requires_grad_(True)
            tw = torch.from_numpy(gamma.copy()).requires_grad_(True)
            tb = torch.from_numpy(beta.copy()).requires_grad_(True)
            rm, rv = torch.zeros(c), torch.ones(c)

            def run_torch(tx=tx, tdy=tdy, tw=tw, tb=tb, rm=rm, rv=rv):
                # PyTorch's momentum is the weight of the batch statistic: 1 - Keras' momentum.
                y = torch.nn.functional.batch_norm(tx, rm, rv, tw, tb, training=True, momentum=1 - MOMENTUM,
                                                   eps=EPSILON)
                return torch.autograd.grad(y, (tx, tw, tb), tdy)

            peers = dict(run)
            peers["torch"] = run_torch
            out.append(Case("batchnorm", f"BN train fwd+bwd {label} f32 (torch {layout})", 0.0, peers, _check))
    return out
