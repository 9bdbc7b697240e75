"""Input pipeline: one training epoch fed by a PyDataset whose ``__getitem__`` takes as long to
load a batch as a training step takes, with background prefetching (``workers=1``,
``workers=2``) against loading in the training loop (``workers=0``, and a plain generator).
Prefetching overlaps the two, so the epoch should take about max(load, train) per batch
rather than their sum; the arrays row is training alone. fastnn only: the comparison is with
itself.

Two kinds of loading, each lasting the measured 1-thread training step: "sleep" (a
``time.sleep``, as waiting for a disk or the network) and "numpy" (elementwise NumPy work,
which releases the GIL, as decoding or augmenting would; it needs a free core).

``python bench/bench_input_pipeline.py`` prints that comparison as a table; ``bench/run.py``
times the same epochs with the shared harness.
"""

import time

import numpy as np

from harness import Case

import fastnn

SIZES = {"full": (40, 256), "quick": (20, 256), "smoke": (4, 32)}  # batches per epoch, batch size
LAYERS = (784, 256, 128, 10)


def _model():
    fastnn.utils.set_random_seed(0)
    model = fastnn.Sequential([fastnn.layers.Dense(LAYERS[1], activation="relu", input_shape=(LAYERS[0],)),
                               fastnn.layers.Dense(LAYERS[2], activation="relu"),
                               fastnn.layers.Dense(LAYERS[3], activation="softmax")])
    model.compile(optimizer=fastnn.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    return model


class Loader:
    """Simulated loading of one batch, lasting about `seconds`: a sleep, or NumPy work."""

    _WORK = np.random.default_rng(1).random(1_000_000)

    def __init__(self, kind, seconds):
        self.kind, self.seconds = kind, seconds
        self.size = 0
        if kind == "numpy":  # elements of exp + log1p taking `seconds`
            probe = 200_000
            start = time.perf_counter()
            for _ in range(10):
                self._numpy(probe)
            self.size = min(len(self._WORK), max(1, int(probe * seconds / ((time.perf_counter() - start) / 10))))

    def _numpy(self, size):
        out = np.exp(self._WORK[:size])
        np.log1p(out, out=out)

    def __call__(self):
        if self.kind == "sleep":
            time.sleep(self.seconds)
        else:
            self._numpy(self.size)


class SlowBatches(fastnn.utils.PyDataset):
    """Batches of precomputed arrays, each loaded by `load()`."""

    def __init__(self, x, y, batch_size, load, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y, self.batch_size, self.load = x, y, batch_size, load

    def __len__(self):
        return len(self.x) // self.batch_size

    def __getitem__(self, index):
        self.load()
        part = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.x[part], self.y[part]


def _slow_generator(x, y, batch_size, load):
    for start in range(0, len(x) - batch_size + 1, batch_size):
        load()
        yield x[start:start + batch_size], y[start:start + batch_size]


def _setup(size):
    batches, batch_size = SIZES[size]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batches * batch_size, LAYERS[0])).astype(np.float32)
    y = rng.integers(0, LAYERS[-1], len(x))
    model = _model()
    before = fastnn.get_num_threads()
    fastnn.set_num_threads(1)
    try:
        model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)  # warm up
        epochs = []
        for _ in range(5):
            start = time.perf_counter()
            model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=False)
            epochs.append(time.perf_counter() - start)
    finally:
        fastnn.set_num_threads(before)
    step = float(np.median(epochs)) / batches  # the training step at 1 thread: the load time
    return model, x, y, batch_size, step


def _fit(model, source, **kwargs):
    return lambda: model.fit(source() if callable(source) else source, epochs=1, verbose=0, **kwargs)


def _runs(model, x, y, batch_size, seconds):
    """name -> one epoch: training alone, then each way of loading, for each kind of load."""
    runs = {"arrays (train only)": _fit(model, x, y=y, batch_size=batch_size, shuffle=False)}
    for kind in ("sleep", "numpy"):
        load = Loader(kind, seconds)
        runs.update({
            f"{kind} load, generator (inline)": _fit(model, lambda load=load: _slow_generator(x, y, batch_size, load)),
            f"{kind} load, PyDataset workers=0 (inline)": _fit(model, SlowBatches(x, y, batch_size, load, workers=0),
                                                               shuffle=False),
            f"{kind} load, PyDataset workers=1 (prefetch)": _fit(model, SlowBatches(x, y, batch_size, load, workers=1),
                                                                 shuffle=False),
            f"{kind} load, PyDataset workers=2 (prefetch)": _fit(model, SlowBatches(x, y, batch_size, load, workers=2),
                                                                 shuffle=False),
        })
    return runs


def cases(torch, size="full"):
    model, x, y, batch_size, load = _setup(size)
    batches = len(x) // batch_size
    label = (f"epoch {batches}×{batch_size}, load {load * 1e3:.2f} ms/batch = 1-thread step "
             f"(sum {2 * load * batches * 1e3:.0f} ms, max {load * batches * 1e3:.0f} ms)")
    return [Case("input_pipeline", f"{label}: {name}", 0, {"fastnn": run}, rounds=3 if size == "full" else None)
            for name, run in _runs(model, x, y, batch_size, load).items()]


def main(size="full", repeats=5):
    """Prints the epoch time of each way of feeding the same epoch, against load + train and max(load, train)."""
    fastnn.set_num_threads(1)
    model, x, y, batch_size, load = _setup(size)
    batches = len(x) // batch_size
    runs = _runs(model, x, y, batch_size, load)
    times = {}
    for name, run in runs.items():
        run()  # warm up (thread pools)
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            samples.append(time.perf_counter() - start)
        times[name] = float(np.median(samples))
    train = times["arrays (train only)"] / batches
    print(f"1 thread, {batches} batches of {batch_size}, MLP 784-256-128-10, Adam; each batch's load lasts "
          f"{load * 1e3:.2f} ms (the training step measured before)\n")
    print("| input | epoch ms | per batch ms | load + train ms | max(load, train) ms | epoch / max |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, seconds in times.items():
        load_part = 0.0 if name.startswith("arrays") else load
        per_batch = seconds / batches
        print(f"| {name} | {seconds * 1e3:.1f} | {per_batch * 1e3:.2f} | {(load_part + train) * 1e3:.2f} | "
              f"{max(load_part, train) * 1e3:.2f} | {per_batch / max(load_part, train):.2f} |")


if __name__ == "__main__":
    main()
