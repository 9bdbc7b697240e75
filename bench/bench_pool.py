"""Pooling: forward + backward of max, average and global average pooling (float32, NHWC),
fastnn vs NumPy (a from-scratch reshape/argmax implementation) vs PyTorch.

PyTorch runs its ATen kernels directly (max_pool2d_with_indices and its backward: what
autograd calls, without the graph), once on NCHW tensors (its native layout) and once on
channels_last tensors; each layout is its own row, the torch column of each row is that
layout. The values are the same as fastnn's, transposed.
"""

import numpy as np

from harness import Case

import fastnn

# (batch, height, width, channels)
SIZES = {
    "full": {"max": [(64, 28, 28, 32)], "max3": [(32, 27, 27, 32)], "avg": [(64, 28, 28, 32)],
             "gap": [(64, 7, 7, 256)]},
    "quick": {"max": [(64, 28, 28, 32)], "max3": [], "avg": [(64, 28, 28, 32)], "gap": [(64, 7, 7, 256)]},
    "smoke": {"max": [(2, 4, 4, 3)], "max3": [], "avg": [], "gap": []},
}


def _windows(x):
    """The 2×2 windows of x (even height and width) as a last axis of 4, row-major."""
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 2, 4).reshape(n, h // 2, w // 2, c, 4)


def _unwindows(win, shape):
    n, h, w, c = shape
    return win.reshape(n, h // 2, w // 2, c, 2, 2).transpose(0, 1, 4, 2, 5, 3).reshape(shape)


def numpy_max_pool_2x2(x, dy):
    """Forward (values and argmax) and backward of 2×2 max pooling in NumPy."""
    win = _windows(x)
    k = win.argmax(axis=-1)[..., None]
    y = np.take_along_axis(win, k, axis=-1)[..., 0]
    dwin = np.zeros_like(win)
    np.put_along_axis(dwin, k, dy[..., None], axis=-1)
    return y, _unwindows(dwin, x.shape)


def numpy_average_pool_2x2(x, dy):
    n, h, w, c = x.shape
    y = x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
    q = dy * np.float32(0.25)
    dx = np.broadcast_to(q[:, :, None, :, None, :], (n, h // 2, 2, w // 2, 2, c)).reshape(x.shape)
    return y, dx


def numpy_max_pool_3x3_s2_same(x, dy):
    """3×3, stride 2, 'same' on odd sizes (one position of padding on each side): NumPy
    with a -inf border and a strided window view."""
    n, h, w, c = x.shape
    padded = np.full((n, h + 2, w + 2, c), -np.inf, x.dtype)
    padded[:, 1:-1, 1:-1] = x
    view = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2))[:, ::2, ::2]
    win = view.reshape(view.shape[:4] + (9,))
    k = win.argmax(axis=-1)
    y = np.take_along_axis(win, k[..., None], axis=-1)[..., 0]
    dpad = np.zeros_like(padded)
    nn, ii, jj, cc = np.indices(k.shape, sparse=True)
    np.add.at(dpad, (nn, 2 * ii + k // 3, 2 * jj + k % 3, cc), dy)
    return y, dpad[:, 1:-1, 1:-1]


def _to_nhwc(t):
    return t.permute(0, 2, 3, 1).contiguous().numpy()


def _check(ours, theirs):
    if not isinstance(theirs, np.ndarray):
        theirs = _to_nhwc(theirs)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def _torch_layouts(torch, *arrays):
    """{"NCHW": tensors, "channels_last": tensors} holding the NHWC arrays' values."""
    nchw = [torch.from_numpy(a).permute(0, 3, 1, 2).contiguous() for a in arrays]
    return {"NCHW": nchw, "channels_last": [t.contiguous(memory_format=torch.channels_last) for t in nchw]}


def _cases_per_layout(name, run, torch, make_torch, arrays):
    """One Case per torch layout (or one without torch)."""
    if torch is None:
        return [Case("pool", name, 0.0, run, _check)]
    out = []
    for layout, tensors in _torch_layouts(torch, *arrays).items():
        peers = dict(run)
        peers["torch"] = make_torch(*tensors)
        out.append(Case("pool", f"{name} (torch {layout})", 0.0, peers, _check))
    return out


def cases(torch, size="full"):
    rng = np.random.default_rng(0)
    sizes = SIZES[size]
    out = []
    aten = torch.ops.aten if torch is not None else None

    for shape in sizes["max"]:
        x = rng.standard_normal(shape).astype(np.float32)
        dy = rng.standard_normal((shape[0], shape[1] // 2, shape[2] // 2, shape[3])).astype(np.float32)

        def fastnn_max(x=x, dy=dy):
            _, argmax = fastnn.ops.max_pool_with_argmax(x, 2)
            return fastnn.ops.max_pool_backward(dy, argmax, x.shape, 2)

        def torch_max(tx, tdy):
            def run():
                _, idx = aten.max_pool2d_with_indices(tx, [2, 2], [2, 2])
                return aten.max_pool2d_with_indices_backward(tdy, tx, [2, 2], [2, 2], [0, 0], [1, 1], False, idx)
            return run

        run = {"fastnn": fastnn_max, "numpy": lambda x=x, dy=dy: numpy_max_pool_2x2(x, dy)[1]}
        name = f"max pool 2×2 fwd+bwd {'×'.join(map(str, shape))} f32"
        out += _cases_per_layout(name, run, torch, torch_max, (x, dy))

    for shape in sizes["max3"]:
        x = rng.standard_normal(shape).astype(np.float32)
        oh, ow = -(-shape[1] // 2), -(-shape[2] // 2)
        dy = rng.standard_normal((shape[0], oh, ow, shape[3])).astype(np.float32)

        def fastnn_max3(x=x, dy=dy):
            _, argmax = fastnn.ops.max_pool_with_argmax(x, 3, 2, "same")
            return fastnn.ops.max_pool_backward(dy, argmax, x.shape, 3, 2, "same")

        def torch_max3(tx, tdy):
            # On odd sizes TensorFlow's 'same' pads one position on each side: torch's padding=1.
            def run():
                _, idx = aten.max_pool2d_with_indices(tx, [3, 3], [2, 2], [1, 1])
                return aten.max_pool2d_with_indices_backward(tdy, tx, [3, 3], [2, 2], [1, 1], [1, 1], False, idx)
            return run

        run = {"fastnn": fastnn_max3, "numpy": lambda x=x, dy=dy: numpy_max_pool_3x3_s2_same(x, dy)[1]}
        name = f"max pool 3×3/2 same fwd+bwd {'×'.join(map(str, shape))} f32"
        out += _cases_per_layout(name, run, torch, torch_max3, (x, dy))

    for shape in sizes["avg"]:
        x = rng.standard_normal(shape).astype(np.float32)
        dy = rng.standard_normal((shape[0], shape[1] // 2, shape[2] // 2, shape[3])).astype(np.float32)

        def fastnn_avg(x=x, dy=dy):
            fastnn.ops.average_pool(x, 2)
            return fastnn.ops.average_pool_backward(dy, x.shape, 2)

        def torch_avg(tx, tdy):
            def run():
                aten.avg_pool2d(tx, [2, 2], [2, 2])
                return aten.avg_pool2d_backward(tdy, tx, [2, 2], [2, 2], [0, 0], False, True, None)
            return run

        run = {"fastnn": fastnn_avg, "numpy": lambda x=x, dy=dy: numpy_average_pool_2x2(x, dy)[1]}
        name = f"average pool 2×2 fwd+bwd {'×'.join(map(str, shape))} f32"
        out += _cases_per_layout(name, run, torch, torch_avg, (x, dy))

    for shape in sizes["gap"]:
        x = rng.standard_normal(shape).astype(np.float32)
        dy = rng.standard_normal((shape[0], shape[3])).astype(np.float32)
        positions = np.float32(shape[1] * shape[2])

        def fastnn_gap(x=x, dy=dy):
            fastnn.ops.global_average_pool(x)
            return fastnn.ops.global_average_pool_backward(dy, x.shape)

        def numpy_gap(x=x, dy=dy):
            x.mean(axis=(1, 2))
            return np.broadcast_to((dy / positions)[:, None, None, :], x.shape).copy()

        def torch_gap(tx, tdy):
            # nn.AdaptiveAvgPool2d(1), the global pooling of torchvision's CNNs.
            layout = torch.channels_last if tx.is_contiguous(memory_format=torch.channels_last) \
                else torch.contiguous_format
            tdy4 = tdy[:, :, None, None].contiguous(memory_format=layout)

            def run():
                aten._adaptive_avg_pool2d(tx, [1, 1])
                return aten._adaptive_avg_pool2d_backward(tdy4, tx)
            return run

        run = {"fastnn": fastnn_gap, "numpy": numpy_gap}
        name = f"global average pool fwd+bwd {'×'.join(map(str, shape))} f32"
        if torch is None:
            out.append(Case("pool", name, 0.0, run, _check))
        else:
            for layout, (tx,) in _torch_layouts(torch, x).items():
                peers = dict(run)
                peers["torch"] = torch_gap(tx, torch.from_numpy(dy))
                out.append(Case("pool", f"{name} (torch {layout})", 0.0, peers, _check))
    return out
