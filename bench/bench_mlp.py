"""End to end: one training epoch of an MLP 784-256-128-10 (batch 128, Adam) and a one-sample
predict, fastnn vs PyTorch (torch.nn + torch.optim.Adam) vs a NumPy from-scratch loop; and one
epoch of a residual MLP built with the functional API (784-256, two blocks x + Dense(x), 10)
against the same model as a torch.nn.Module."""

import numpy as np

from harness import Case

import fastnn

SIZES = {"full": (60_000, 128), "quick": (12_000, 128), "smoke": (512, 128)}
LAYERS = (784, 256, 128, 10)
RESIDUAL = (784, 256, 2, 10)  # input, width, residual blocks, classes


def _residual_model():
    fastnn.utils.set_random_seed(0)
    features, width, blocks, classes = RESIDUAL
    inputs = fastnn.Input((features,))
    x = fastnn.layers.Dense(width, activation="relu")(inputs)
    for _ in range(blocks):
        x = fastnn.layers.Add()([x, fastnn.layers.Dense(width, activation="relu")(x)])
    outputs = fastnn.layers.Dense(classes, activation="softmax")(x)
    model = fastnn.Model(inputs, outputs)
    model.compile(optimizer=fastnn.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    return model


def _residual_flops_per_epoch(n):
    features, width, blocks, classes = RESIDUAL
    return 3 * 2 * n * (features * width + blocks * width * width + width * classes)


def _torch_residual(torch):
    features, width, blocks, classes = RESIDUAL

    class ResidualMLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Linear(features, width)
            self.blocks = torch.nn.ModuleList(torch.nn.Linear(width, width) for _ in range(blocks))
            self.head = torch.nn.Linear(width, classes)

        def forward(self, x):
            x = torch.relu(self.stem(x))
            for block in self.blocks:
                x = x + torch.relu(block(x))
            return self.head(x)

    return ResidualMLP()


def _torch_epoch(torch, net, tx, ty, batch):
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    n = len(tx)

    def epoch():
        order = torch.randperm(n)
        for s in range(0, n, batch):
            idx = order[s:s + batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(tx[idx]), ty[idx])
            loss.backward()
            opt.step()

    return epoch


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
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        torch_epoch = _torch_epoch(torch, net, tx, ty, batch)

        def torch_predict():
            with torch.no_grad():
                return net(torch.from_numpy(one))

        run["torch"] = torch_epoch
        predict["torch"] = torch_predict
    residual = _residual_model()
    residual_run = {"fastnn": lambda: residual.fit(x, y, batch_size=batch, epochs=1, verbose=0)}
    if torch is not None:
        torch.manual_seed(0)
        residual_run["torch"] = _torch_epoch(torch, _torch_residual(torch), tx, ty, batch)
    return [Case("mlp", f"epoch MLP 784-256-128-10, {n:,} samples, batch {batch}, Adam", _flops_per_epoch(n),
                 run, rounds=3 if size == "full" else None),
            Case("mlp", f"epoch residual MLP (functional, 2 Add blocks) 784-256-256-256-10, {n:,} samples, "
                        f"batch {batch}, Adam", _residual_flops_per_epoch(n), residual_run,
                 rounds=3 if size == "full" else None),
            Case("mlp", "predict 1 sample, MLP 784-256-128-10", 2 * sum(a * b for a, b in zip(LAYERS[:-1], LAYERS[1:])),
                 predict)]
