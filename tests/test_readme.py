"""Every Python example in README.md runs as written: each block is executed on its own, in a
temporary folder, with small data (fit sees at most 512 samples and 2 epochs) and MNIST
replaced by the bundled digits drawn at 28×28 (CI has no internet to download MNIST)."""

import math
import pathlib
import re

import numpy as np
import pytest

import fastnn
from fastnn.datasets import digits

README = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
BLOCKS = re.findall(r"^```python\n(.*?)^```", README, re.S | re.M)
SAMPLES, EPOCHS = 512, 2


def _digits_as_mnist():
    """The bundled 8×8 digits, upscaled 3× and padded to MNIST's 28×28 uint8 images."""
    (x_train, y_train), (x_test, y_test) = digits.load_data()

    def draw(x):
        big = np.kron(x.reshape(-1, 8, 8), np.ones((3, 3))) * (255 / 16)
        return np.pad(big, ((0, 0), (2, 2), (2, 2))).astype(np.uint8)

    return (draw(x_train), y_train.astype(np.uint8)), (draw(x_test), y_test.astype(np.uint8))


def _head(data):
    if isinstance(data, np.ndarray):
        return data[:SAMPLES]
    if isinstance(data, dict):
        return {k: _head(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)) and data and all(isinstance(d, np.ndarray) for d in data):
        return type(data)(_head(d) for d in data)
    return data


@pytest.fixture
def small_runs(monkeypatch, tmp_path):
    fit = fastnn.Model.fit

    def small_fit(self, x=None, y=None, *args, epochs=1, **kwargs):
        return fit(self, _head(x), _head(y), *args, epochs=min(epochs, EPOCHS), **kwargs)

    monkeypatch.setattr(fastnn.Model, "fit", small_fit)
    monkeypatch.setattr(fastnn.datasets.mnist, "load_data", lambda *a, **k: _digits_as_mnist())
    monkeypatch.chdir(tmp_path)


def test_the_readme_has_examples():
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, small_runs):
    namespace = {"__name__": "__readme__"}
    fastnn.utils.set_random_seed(0)
    exec(compile(BLOCKS[index], f"README.md, Python block {index + 1}", "exec"), namespace)
    histories = [v for v in namespace.values() if isinstance(v, fastnn.callbacks.History)]
    for history in histories:
        losses = history.history["loss"]
        assert losses and all(math.isfinite(v) for v in losses)
    models = [v for v in namespace.values() if isinstance(v, fastnn.Model) and v.built]
    assert models or histories, "an example should build or train something"
