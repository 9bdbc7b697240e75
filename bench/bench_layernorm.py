"""Layer normalisation over the last axis of float32 activations (rows × features): forward,
and forward plus backward (dx, dgamma, dbeta), as a Transformer block runs it.

fastnn: ops.layer_norm_forward (+ ops.layer_norm_backward): one kernel call each. NumPy: a
careful vectorised implementation. PyTorch: torch.nn.functional.layer_norm, and autograd
(torch.autograd.grad, so that nothing accumulates between calls) for the backward.
Memory-bound: no GFLOP/s.
"""

import numpy as np

from harness import Case, normalization_inputs

import fastnn

SHAPES = {"full": [(32, 128, 256), (16, 128, 768)], "quick": [(32, 128, 256)], "smoke": [(2, 3, 8)]}
EPSILON = 1e-3


def numpy_forward(x2, gamma, beta):
    mean = x2.mean(axis=1, keepdims=True)
    xc = x2 - mean
    var = np.einsum("ij,ij->i", xc, xc)[:, None] / x2.shape[1]
    invstd = 1.0 / np.sqrt(var + EPSILON)
    xhat = np.multiply(xc, invstd, out=xc)
    y = xhat * gamma
    y += beta
    return y, xhat, invstd


def numpy_backward(dy2, xhat, invstd, gamma):
    n = xhat.shape[1]
    dbeta = dy2.sum(axis=0)
    dgamma = np.einsum("ij,ij->j", dy2, xhat)
    g = dy2 * gamma
    # dx = invstd/F·(F·g - Σg - x̂·Σ g·x̂), sums over each row
    sg = g.sum(axis=1, keepdims=True)
    sgx = np.einsum("ij,ij->i", g, xhat)[:, None]
    dx = g * n
    dx -= sg
    dx -= xhat * sgx
    dx *= invstd / n
    return dx, dgamma, dbeta


def _values(v):
    return v.detach().numpy() if hasattr(v, "detach") else np.asarray(v)


def _check_forward(ours, theirs):
    np.testing.assert_allclose(_values(theirs).reshape(ours.shape), ours, rtol=1e-4, atol=1e-4)


def _check_backward(ours, theirs):
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(_values(b).reshape(a.shape), a, rtol=1e-3, atol=1e-2)


def cases(torch, size="full"):
    rng = np.random.default_rng(0)
    out = []
    for shape in SHAPES[size]:
        f = shape[-1]
        x, dy, gamma, beta = normalization_inputs(rng, shape)
        dgamma, dbeta = np.empty(f, np.float32), np.empty(f, np.float32)
        x2, dy2 = x.reshape(-1, f), dy.reshape(-1, f)
        label = "×".join(map(str, shape))

        def fastnn_forward(x=x, gamma=gamma, beta=beta):
            return fastnn.ops.layer_norm_forward(x, gamma, beta, -1, EPSILON)[0]

        def fastnn_both(x=x, dy=dy, gamma=gamma, beta=beta, dgamma=dgamma, dbeta=dbeta):
            _, mean, invstd = fastnn.ops.layer_norm_forward(x, gamma, beta, -1, EPSILON)
            dx = fastnn.ops.layer_norm_backward(dy, x, mean, invstd, gamma, -1, dgamma=dgamma, dbeta=dbeta)
            return dx, dgamma, dbeta

        def numpy_fwd(x2=x2, gamma=gamma, beta=beta):
            return numpy_forward(x2, gamma, beta)[0]

        def numpy_both(x2=x2, dy2=dy2, gamma=gamma, beta=beta):
            _, xhat, invstd = numpy_forward(x2, gamma, beta)
            return numpy_backward(dy2, xhat, invstd, gamma)

        forward = {"fastnn": fastnn_forward, "numpy": numpy_fwd}
        both = {"fastnn": fastnn_both, "numpy": numpy_both}
        if torch is not None:
            tx = torch.from_numpy(x).requires_grad_(True)
            tdy = torch.from_numpy(dy)
            tw = torch.from_numpy(gamma.copy()).requires_grad_(True)
            tb = torch.from_numpy(beta.copy()).requires_grad_(True)

            def torch_forward(tx=tx, tw=tw, tb=tb, f=f):
                with torch.no_grad():
                    return torch.nn.functional.layer_norm(tx, (f,), tw, tb, EPSILON)

            def torch_both(tx=tx, tdy=tdy, tw=tw, tb=tb, f=f):
                y = torch.nn.functional.layer_norm(tx, (f,), tw, tb, EPSILON)
                return torch.autograd.grad(y, (tx, tw, tb), tdy)

            forward["torch"] = torch_forward
            both["torch"] = torch_both
        out.append(Case("layernorm", f"LN fwd {label} f32", 0.0, forward, _check_forward))
        out.append(Case("layernorm", f"LN fwd+bwd {label} f32", 0.0, both, _check_backward))
    return out
