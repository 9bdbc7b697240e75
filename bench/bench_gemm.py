"""GEMM: fastnn.ops.matmul / linear against NumPy (OpenBLAS) and torch.matmul."""

import numpy as np

from harness import Case

import fastnn

# (m, k, n): squares, the MLP shapes (batch 128 through 784 -> 256 -> 10), a one-sample
# predict, a weight gradient (transposed A) and a small product under the threading threshold.
FULL = [(256, 256, 256), (512, 512, 512), (1024, 1024, 1024), (2048, 2048, 2048),
        (128, 784, 256), (128, 256, 10), (1, 784, 256), (64, 64, 64)]
QUICK = [(256, 256, 256), (1024, 1024, 1024), (128, 784, 256), (128, 256, 10), (1, 784, 256)]
SMOKE = [(16, 32, 8)]


def _check(ours, theirs):
    np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-3)


def cases(torch, size="full"):
    rng = np.random.default_rng(0)
    shapes = {"full": FULL, "quick": QUICK, "smoke": SMOKE}[size]
    out = []
    for m, k, n in shapes:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        c = np.empty((m, n), np.float32)
        run = {
            "fastnn": lambda a=a, b=b, c=c: fastnn.ops.matmul(a, b, out=c),
            "numpy": lambda a=a, b=b, c=c: np.matmul(a, b, out=c),
        }
        if torch is not None:
            ta, tb, tc = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c.copy())
            run["torch"] = lambda ta=ta, tb=tb, tc=tc: torch.matmul(ta, tb, out=tc)
        out.append(Case("gemm", f"matmul {m}×{k} @ {k}×{n} f32", 2.0 * m * n * k, run, _check))

    # The Dense layer's three products at batch 128, 784 -> 256: forward with bias,
    # weight gradient X^T·dY (accumulated), input gradient dY·W^T.
    if size != "smoke":
        m, k, n = 128, 784, 256
        x = rng.standard_normal((m, k)).astype(np.float32)
        w = rng.standard_normal((k, n)).astype(np.float32)
        bias = rng.standard_normal(n).astype(np.float32)
        dy = rng.standard_normal((m, n)).astype(np.float32)
        dw = np.zeros((k, n), np.float32)
        dx = np.empty((m, k), np.float32)
        run_fwd = {"fastnn": lambda: fastnn.ops.linear(x, w, bias),
                   "numpy": lambda: x @ w + bias}
        run_dw = {"fastnn": lambda: fastnn.ops.matmul(x, dy, transpose_a=True, out=dw),
                  "numpy": lambda: np.matmul(x.T, dy, out=dw)}
        run_dx = {"fastnn": lambda: fastnn.ops.matmul(dy, w, transpose_b=True, out=dx),
                  "numpy": lambda: np.matmul(dy, w.T, out=dx)}
        if torch is not None:
            tx, tw, tb, tdy = (torch.from_numpy(v) for v in (x, w, bias, dy))
            tdw, tdx = torch.from_numpy(dw.copy()), torch.from_numpy(dx.copy())
            run_fwd["torch"] = lambda: torch.addmm(tb, tx, tw)
            run_dw["torch"] = lambda: torch.matmul(tx.T, tdy, out=tdw)
            run_dx["torch"] = lambda: torch.matmul(tdy, tw.T, out=tdx)
        flops = 2.0 * m * n * k
        out += [Case("gemm", f"linear x·W+b {m}×{k} @ {k}×{n} f32", flops, run_fwd, _check),
                Case("gemm", f"weight grad xᵀ·dy {k}×{m} @ {m}×{n} f32", flops, run_dw, _check),
                Case("gemm", f"input grad dy·Wᵀ {m}×{n} @ {n}×{k} f32", flops, run_dx, _check)]
    return out
