"""Convolutions: fastnn.ops.conv (+ backward) vs PyTorch (NCHW and channels_last, the faster
one reported) vs a NumPy im2col implementation, on the CNN issue's shapes; grouped
convolutions (groups=, depthwise) vs PyTorch's ``conv2d(groups=)``; and channels_first
(fastnn's NHWC kernel between two channel moves, as the layers run it) vs PyTorch NCHW."""

import numpy as np

from harness import Case

import fastnn

# (batch, height, width, in, filters, kernel), all 'same'
FULL = [(64, 28, 28, 1, 32, 3), (64, 14, 14, 32, 64, 3), (64, 32, 32, 3, 64, 3)]
SMOKE = [(2, 8, 8, 3, 4, 3)]
# (batch, height, width, in, filters, kernel, groups), all 'same'
GROUPED = [(64, 14, 14, 32, 64, 3, 4), (64, 28, 28, 32, 32, 3, 32), (64, 14, 14, 128, 128, 3, 8)]
GROUPED_SMOKE = [(2, 8, 8, 4, 4, 3, 2)]


def numpy_im2col(x, k):
    """The from-scratch baseline: pad, gather patches with stride tricks, one matmul."""
    pad = k // 2
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    n, h, w, c = x.shape
    patches = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(1, 2))  # n, h, w, c, k, k
    return np.ascontiguousarray(patches.transpose(0, 1, 2, 4, 5, 3)).reshape(n * h * w, k * k * c)


def numpy_conv_fwd_bwd(x, w, b, dy):
    n, h, wd, c = x.shape
    k, f = w.shape[0], w.shape[3]
    cols = numpy_im2col(x, k)
    y = (cols @ w.reshape(-1, f) + b).reshape(n, h, wd, f)
    g = dy.reshape(-1, f)
    dw = cols.T @ g
    db = g.sum(axis=0)
    dcols = (g @ w.reshape(-1, f).T).reshape(n, h, wd, k, k, c)
    pad = k // 2
    dxp = np.zeros((n, h + 2 * pad, wd + 2 * pad, c), x.dtype)
    for p in range(k):
        for q in range(k):
            dxp[:, p:p + h, q:q + wd] += dcols[:, :, :, p, q]
    return y, dw, db, dxp[:, pad:pad + h, pad:pad + wd]


def cases(torch, size="full"):
    rng = np.random.default_rng(0)
    out = []
    for n, h, wd, c, f, k in {"full": FULL, "quick": FULL, "smoke": SMOKE}[size]:
        x = rng.standard_normal((n, h, wd, c)).astype(np.float32)
        w = (rng.standard_normal((k, k, c, f)) * 0.1).astype(np.float32)
        b = rng.standard_normal(f).astype(np.float32)
        dy = rng.standard_normal((n, h, wd, f)).astype(np.float32)
        dw, db = np.empty_like(w), np.empty_like(b)
        flops = 2.0 * n * h * wd * f * k * k * c

        def fastnn_fwd(x=x, w=w, b=b):
            return fastnn.ops.conv(x, w, 1, "same", bias=b)

        def fastnn_fwd_bwd(x=x, w=w, b=b, dy=dy, dw=dw, db=db):
            y = fastnn.ops.conv(x, w, 1, "same", bias=b)
            return fastnn.ops.conv_backward(x, w, dy, y, dw, db, 1, "same")

        fwd = {"fastnn": fastnn_fwd, "numpy": lambda x=x, w=w, b=b, k=k, f=f: (
            numpy_im2col(x, k) @ w.reshape(-1, f) + b)}
        both = {"fastnn": fastnn_fwd_bwd, "numpy": lambda x=x, w=w, b=b, dy=dy: numpy_conv_fwd_bwd(x, w, b, dy)}
        if torch is not None:
            fwd["torch"], both["torch"] = _torch_runs(torch, x, w, b, dy)
        label = f"{n}×{h}×{wd}×{c} → {f} {k}×{k} same"
        out += [Case("conv", f"conv fwd {label}", flops, fwd),
                Case("conv", f"conv fwd+bwd {label}", 3 * flops, both)]
        out.append(_channels_first_case(torch, x, w, b, dy, flops, label))
    for n, h, wd, c, f, k, g in {"full": GROUPED, "quick": GROUPED[:2], "smoke": GROUPED_SMOKE}[size]:
        out.append(_grouped_case(torch, rng, n, h, wd, c, f, k, g))
    return out


def _grouped_case(torch, rng, n, h, wd, c, f, k, g):
    """Grouped convolution forward + backward; PyTorch at its best (NCHW or channels_last)."""
    x = rng.standard_normal((n, h, wd, c)).astype(np.float32)
    w = (rng.standard_normal((k, k, c // g, f)) * 0.1).astype(np.float32)
    b = rng.standard_normal(f).astype(np.float32)
    dy = rng.standard_normal((n, h, wd, f)).astype(np.float32)
    dw, db = np.empty_like(w), np.empty_like(b)

    def fastnn_fwd_bwd():
        y = fastnn.ops.conv(x, w, 1, "same", bias=b)
        return fastnn.ops.conv_backward(x, w, dy, y, dw, db, 1, "same")

    run = {"fastnn": fastnn_fwd_bwd}
    if torch is not None:
        run["torch"] = _torch_runs(torch, x, w, b, dy, groups=g)[1]
    kind = "depthwise" if g == c else f"groups={g}"
    return Case("conv", f"conv fwd+bwd {n}×{h}×{wd}×{c} → {f} {k}×{k} same {kind}",
                3 * 2.0 * n * h * wd * f * k * k * (c // g), run)


def _channels_first_case(torch, x, w, b, dy, flops, label):
    """data_format="channels_first": NCHW arrays through fastnn's layer path (move the channels
    last, the NHWC kernel, move them back) against PyTorch on NCHW (contiguous_format)."""
    from fastnn.ops.pool import channels_to_first, channels_to_last

    xf, dyf = channels_to_first(x), channels_to_first(dy)
    dw, db = np.empty_like(w), np.empty_like(b)

    def fastnn_fwd_bwd():
        xl = channels_to_last(xf)
        y = fastnn.ops.conv(xl, w, 1, "same", bias=b)
        out = channels_to_first(y)
        dx = fastnn.ops.conv_backward(xl, w, channels_to_last(dyf), y, dw, db, 1, "same")
        return out, channels_to_first(dx)

    run = {"fastnn": fastnn_fwd_bwd}
    if torch is not None:
        run["torch"] = _torch_runs(torch, x, w, b, dy, formats=(torch.contiguous_format,))[1]
    return Case("conv", f"conv fwd+bwd {label} channels_first (torch NCHW)", 3 * flops, run)


def _torch_runs(torch, x, w, b, dy, groups=1, formats=None):
    """PyTorch at its best: NCHW or channels_last (of `formats`), whichever is faster here
    (timed once)."""
    import time

    F = torch.nn.functional
    tw = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1))).requires_grad_()
    tb = torch.from_numpy(b).requires_grad_()
    variants = {}
    for fmt in formats or (torch.contiguous_format, torch.channels_last):
        tx = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).contiguous(memory_format=fmt)
        tx.requires_grad_()
        tdy = torch.from_numpy(np.ascontiguousarray(dy.transpose(0, 3, 1, 2))).contiguous(memory_format=fmt)
        weight = tw.contiguous(memory_format=fmt) if fmt == torch.channels_last else tw

        def fwd(tx=tx, weight=weight):
            with torch.no_grad():
                return F.conv2d(tx, weight, tb, padding="same", groups=groups)

        def both(tx=tx, weight=weight, tdy=tdy):
            y = F.conv2d(tx, weight, tb, padding="same", groups=groups)
            return torch.autograd.grad(y, (tx, tw, tb), tdy)

        best = min(_once(time, both) for _ in range(3))
        variants[fmt] = (best, fwd, both)
    _, fwd, both = min(variants.values(), key=lambda v: v[0])
    return fwd, both


def _once(time, fn):
    fn()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
