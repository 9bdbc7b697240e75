"""End to end: one training epoch of an MLP 784-256-128-10 (batch 128, Adam) and a one-sample
predict, fastnn vs PyTorch (torch.nn + torch.optim.Adam) vs a NumPy from-scratch loop."""

import numpy as np

from harness import Case

import fastnn

SIZES = {"full": (60_000, 128), "quick": (12_000, 128), "smoke": (512, 128)}
LAYERS = (784, 256, 128, 10)


def _flops_per_epoch(n):
    macs = sum(a * b for a, b in zip(LAYERS[:-1], LAYERS[1:]))
    return 3 * 2 * n * macs  # forward, and backward's two products per layer


def _fastnn_model():
    fastnn.utils.set_random_seed(0)
    model = fastnn.Sequential([
        fastnn.layers.Dense(256, activation="relu", input_shape=(784,)),
        fastnn.layers.Dense(128, activation="relu"),
        fastnn.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=fastnn.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    return model


class NumpyMLP:
    """The from-scratch baseline a NumPy user writes: matmuls, ReLU, softmax-CE, Adam."""

    def __init__(self, rng):
        self.params = []
        for a, b in zip(LAYERS[:-1], LAYERS[1:]):
            limit = np.sqrt(6 / (a + b))
            self.params += [rng.uniform(-limit, limit, (a, b)).astype(np.float32), np.zeros(b, np.float32)]
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.t = 0

    def forward(self, x):
        acts = [x]
        for i in range(0, len(self.params), 2):
            z = acts[-1] @ self.params[i] + self.params[i + 1]
            acts.append(np.maximum(z, 0) if i + 2 < len(self.params) else z)
        return acts

    def step(self, x, y, lr=1e-3, b1=0.9, b2=0.999, eps=1e-7):
        acts = self.forward(x)
        logits = acts[-1]
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(len(y)), y] -= 1
        d = p / len(y)
        grads = [None] * len(self.params)
        for i in range(len(self.params) - 2, -1, -2):
            grads[i] = acts[i // 2].T @ d
            grads[i + 1] = d.sum(axis=0)
            if i:
                d = (d @ self.params[i].T) * (acts[i // 2] > 0)
        self.t += 1
        alpha = lr * np.sqrt(1 - b2 ** self.t) / (1 - b1 ** self.t)
        for w, g, m, v in zip(self.params, grads, self.m, self.v):
            m += (g - m) * (1 - b1)
            v += (g * g - v) * (1 - b2)
            w -= alpha * m / (np.sqrt(v) + eps)

    def epoch(self, x, y, batch, rng):
        order = rng.permutation(len(x))
        for s in range(0, len(x), batch):
            idx = order[s:s + batch]
            self.step(x[idx], y[idx])


def cases(torch, size="full"):
    n, batch = SIZES[size]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 784)).astype(np.float32)
    y = rng.integers(0, 10, n)
    model = _fastnn_model()
    numpy_mlp = NumpyMLP(rng)
    run = {"fastnn": lambda: model.fit(x, y, batch_size=batch, epochs=1, verbose=0),
           "numpy": lambda: numpy_mlp.epoch(x, y, batch, rng)}
    one = x[:1].copy()
    predict = {"fastnn": lambda: model.predict(one),
               "numpy": lambda: numpy_mlp.forward(one)[-1]}
    if torch is not None:
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128),
                                  torch.nn.ReLU(), torch.nn.Linear(128, 10))
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        loss_fn = torch.nn.CrossEntropyLoss()
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)

        def torch_epoch():
            order = torch.randperm(n)
            for s in range(0, n, batch):
                idx = order[s:s + batch]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(net(tx[idx]), ty[idx])
                loss.backward()
                opt.step()

        def torch_predict():
            with torch.no_grad():
                return net(torch.from_numpy(one))

        run["torch"] = torch_epoch
        predict["torch"] = torch_predict
    return [Case("mlp", f"epoch MLP 784-256-128-10, {n:,} samples, batch {batch}, Adam", _flops_per_epoch(n),
                 run, rounds=3 if size == "full" else None),
            Case("mlp", "predict 1 sample, MLP 784-256-128-10", 2 * sum(a * b for a, b in zip(LAYERS[:-1], LAYERS[1:])),
                 predict)]
