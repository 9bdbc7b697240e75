"""End to end: one training epoch of the CNN issue's Keras model (Conv2D 32 → MaxPooling →
Conv2D 64 same → MaxPooling → Dropout → Dense 128 → Dense 10) on 28×28×1 images, batch 64,
Adam: fastnn vs PyTorch (NCHW or channels_last, the faster) vs a NumPy from-scratch loop."""

import numpy as np

from harness import Case

import fastnn

SIZES = {"full": 10_000, "quick": 2_000, "smoke": 128}
BATCH = 64


def _flops_per_sample():
    conv1 = 26 * 26 * 32 * 9 * 1
    conv2 = 13 * 13 * 64 * 9 * 32
    dense = 2304 * 128 + 128 * 10
    return 2 * 3 * (conv1 + conv2 + dense)  # forward, and backward's two products per layer


def _fastnn_model():
    fastnn.utils.set_random_seed(0)
    layers = fastnn.layers
    model = fastnn.Sequential([
        layers.Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), padding="same", activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Dropout(0.2),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def _im2col(x, k, pad):
    """Patches (n·h'·w', k·k·c) of NHWC x with `pad` zeros around: stride tricks, one copy."""
    if pad:
        x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    n, h, w, c = x.shape
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))  # n, h', w', c, k, k
    oh, ow = h - k + 1, w - k + 1
    return np.ascontiguousarray(windows.transpose(0, 1, 2, 4, 5, 3)).reshape(n * oh * ow, k * k * c), (n, oh, ow)


def _col2im(dcols, shape, k, pad, c):
    n, oh, ow = shape
    dcols = dcols.reshape(n, oh, ow, k, k, c)
    dx = np.zeros((n, oh + k - 1, ow + k - 1, c), dcols.dtype)
    for p in range(k):
        for q in range(k):
            dx[:, p:p + oh, q:q + ow] += dcols[:, :, :, p, q]
    return dx[:, pad:dx.shape[1] - pad, pad:dx.shape[2] - pad] if pad else dx


def _pool(x):
    n, h, w, c = x.shape
    xc = x[:, :h // 2 * 2, :w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c)
    y = xc.max(axis=(2, 4))
    mask = xc == y[:, :, None, :, None]
    return y, mask


def _unpool(dy, mask, shape):
    n, h, w, c = shape
    d = mask * dy[:, :, None, :, None]
    d = d / np.maximum(mask.sum(axis=(2, 4), keepdims=True), 1)  # ties share (rare on real data)
    dx = np.zeros(shape, dy.dtype)
    dx[:, :h // 2 * 2, :w // 2 * 2] = d.reshape(n, h // 2 * 2, w // 2 * 2, c)
    return dx


class NumpyCNN:
    """The from-scratch baseline a NumPy user writes: im2col convolutions, reshape pooling,
    inverted dropout, softmax cross-entropy, Adam."""

    def __init__(self, rng):
        def glorot(shape, fan_in, fan_out):
            limit = np.sqrt(6 / (fan_in + fan_out))
            return rng.uniform(-limit, limit, shape).astype(np.float32)

        self.rng = rng
        self.params = [glorot((9, 32), 9, 9 * 32), np.zeros(32, np.float32),
                       glorot((9 * 32, 64), 9 * 32, 9 * 64), np.zeros(64, np.float32),
                       glorot((2304, 128), 2304, 128), np.zeros(128, np.float32),
                       glorot((128, 10), 128, 10), np.zeros(10, np.float32)]
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.t = 0

    def step(self, x, y, lr=1e-3, b1=0.9, b2=0.999, eps=1e-7):
        w1, b1_, w2, b2_, w3, b3, w4, b4 = self.params
        n = len(x)
        cols1, s1 = _im2col(x, 3, 0)
        a1 = np.maximum(cols1 @ w1 + b1_, 0).reshape(*s1, 32)
        p1, m1 = _pool(a1)
        cols2, s2 = _im2col(p1, 3, 1)
        a2 = np.maximum(cols2 @ w2 + b2_, 0).reshape(*s2, 64)
        p2, m2 = _pool(a2)
        keep = (self.rng.random(p2.shape) >= 0.2) / np.float32(0.8)
        f = (p2 * keep).reshape(n, -1)
        h = np.maximum(f @ w3 + b3, 0)
        logits = h @ w4 + b4
        prob = np.exp(logits - logits.max(axis=1, keepdims=True))
        prob /= prob.sum(axis=1, keepdims=True)
        prob[np.arange(n), y] -= 1
        d4 = prob / n
        g = [None] * 8
        g[6], g[7] = h.T @ d4, d4.sum(axis=0)
        d3 = (d4 @ w4.T) * (h > 0)
        g[4], g[5] = f.T @ d3, d3.sum(axis=0)
        dp2 = (d3 @ w3.T).reshape(p2.shape) * keep
        da2 = (_unpool(dp2, m2, a2.shape) * (a2 > 0)).reshape(-1, 64)
        g[2], g[3] = cols2.T @ da2, da2.sum(axis=0)
        dp1 = _col2im(da2 @ w2.T, s2, 3, 1, 32)
        da1 = (_unpool(dp1, m1, a1.shape) * (a1 > 0)).reshape(-1, 32)
        g[0], g[1] = cols1.T @ da1, da1.sum(axis=0)  # the first layer needs no input gradient
        self.t += 1
        alpha = lr * np.sqrt(1 - b2 ** self.t) / (1 - b1 ** self.t)
        for w, gw, m, v in zip(self.params, g, self.m, self.v):
            m += (gw - m) * (1 - b1)
            v += (gw * gw - v) * (1 - b2)
            w -= alpha * m / (np.sqrt(v) + eps)

    def epoch(self, x, y, batch):
        order = self.rng.permutation(len(x))
        for s in range(0, len(x), batch):
            idx = order[s:s + batch]
            self.step(x[idx], y[idx])


def _torch_epoch(torch, x, y, batch):
    """PyTorch at its best: NCHW or channels_last, whichever trains faster here (timed on
    20 batches)."""
    import time

    variants = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        probe = _torch_epoch_in(torch, x[:20 * batch], y[:20 * batch], batch, fmt)
        probe()
        start = time.perf_counter()
        probe()
        variants.append((time.perf_counter() - start, fmt))
    return _torch_epoch_in(torch, x, y, batch, min(variants, key=lambda v: v[0])[1])


def _torch_epoch_in(torch, x, y, batch, fmt):
    torch.manual_seed(0)
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(32, 64, 3, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Dropout(0.2), nn.Flatten(), nn.Linear(2304, 128), nn.ReLU(), nn.Linear(128, 10))
    net = net.to(memory_format=fmt)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    tx = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).contiguous(memory_format=fmt)
    ty = torch.from_numpy(y)
    n = len(x)

    def epoch():
        net.train()
        order = torch.randperm(n)
        for s in range(0, n, batch):
            idx = order[s:s + batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(tx[idx].contiguous(memory_format=fmt)), ty[idx])
            loss.backward()
            opt.step()

    return epoch


def cases(torch, size="full"):
    n = SIZES[size]
    rng = np.random.default_rng(0)
    x = rng.random((n, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, n)
    model = _fastnn_model()
    numpy_cnn = NumpyCNN(np.random.default_rng(1))
    run = {"fastnn": lambda: model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0),
           "numpy": lambda: numpy_cnn.epoch(x, y, BATCH)}
    if torch is not None:
        run["torch"] = _torch_epoch(torch, x, y, BATCH)
    return [Case("cnn", f"epoch CNN (Keras MNIST model), {n:,} samples 28×28×1, batch {BATCH}, Adam",
                 _flops_per_sample() * n, run, rounds=3 if size == "full" else None)]
