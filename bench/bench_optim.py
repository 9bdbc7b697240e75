"""Optimizer kernels: one Adam step over a flat float32 buffer, fastnn vs NumPy (in place,
vectorised) vs torch.optim.Adam (foreach and fused). Memory-bound: ~28 bytes a parameter."""

import numpy as np

from harness import Case

import fastnn

SIZES = {"full": (1_000_000, 10_000_000), "quick": (1_000_000,), "smoke": (10_000,)}


def numpy_adam(w, g, m, v, t, lr=1e-3, b1=0.9, b2=0.999, eps=1e-7, tmp=None):
    """A careful NumPy Adam: in place, one temporary."""
    alpha = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
    m *= b1
    m += (1 - b1) * g
    np.multiply(g, g, out=tmp)
    v *= b2
    v += (1 - b2) * tmp
    np.sqrt(v, out=tmp)
    tmp += eps
    np.divide(m, tmp, out=tmp)
    w -= alpha * tmp


def cases(torch, size="full"):
    out = []
    rng = np.random.default_rng(0)
    for n in SIZES[size]:
        w = rng.standard_normal(n).astype(np.float32)
        g = rng.standard_normal(n).astype(np.float32)
        state = {"fastnn": [w.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32), 0],
                 "numpy": [w.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32), 0]}
        tmp = np.empty(n, np.float32)

        def run_fastnn(s=state["fastnn"], g=g):
            s[3] += 1
            fastnn.ops.adam_update(s[0], g, s[1], s[2], step=s[3])

        def run_numpy(s=state["numpy"], g=g, tmp=tmp):
            s[3] += 1
            numpy_adam(s[0], g, s[1], s[2], s[3], tmp=tmp)

        run = {"fastnn": run_fastnn, "numpy": run_numpy}
        cases_for_n = [Case("optim", f"Adam step, {n:,} float32 params", 0.0, dict(run))]
        if torch is not None:
            for mode in ("foreach", "fused"):
                p = torch.nn.Parameter(torch.from_numpy(w.copy()))
                p.grad = torch.from_numpy(g.copy())
                opt = torch.optim.Adam([p], lr=1e-3, eps=1e-7, **{mode: True})
                peers = dict(run)
                peers["torch"] = opt.step
                cases_for_n.append(Case("optim", f"Adam step, {n:,} float32 params (torch {mode})", 0.0, peers))
            cases_for_n = cases_for_n[1:]  # every row carries a torch variant
        out += cases_for_n
    return out
