"""Property-based tests (Hypothesis) of every public layer's constructor (``fastnn.layers``).

Each constructor argument gets random values: valid ones most often, else ints of 0, -1 and
2**63 and beyond, floats (NaN, inf), bools, strings, None, bytes and tuples of the wrong
length. The oracle: the layer constructs, or raises ValueError/TypeError whose message names
the argument (and the layer). A layer that constructs then runs on a small finite input of the
shape it expects: its output has the shape ``compute_output_shape`` gives and is finite (when
its arguments are), or the call raises ValueError/TypeError naming an argument that was given.

Profiles and the thorough command: see tests/test_property_ops.py (and tests/conftest.py):

    FASTNN_HYPOTHESIS_PROFILE=thorough python -m pytest tests/test_property_ops.py tests/test_property_layers.py
"""

import inspect
import math

import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st
from property_support import assert_names, describe_call, guarded

from fastnn import layers

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::UserWarning",
                                        "ignore::DeprecationWarning")

NOT_LAYERS = {"Layer", "Variable", "InputLayer"}  # the base class, a weight, the functional API's input
LAYER_NAMES = sorted(n for n in dir(layers) if not n.startswith("_") and inspect.isclass(getattr(layers, n))
                     and n not in NOT_LAYERS)

# ---------------------------------------------------------------------------------------------
# argument values
# ---------------------------------------------------------------------------------------------
BAD_VALUES = [0, -1, -(2**63), 2**63 - 1, 2**63, 2**64, 1.5, float("nan"), float("inf"), -float("inf"), True, False,
              None, "", "x", b"x", (), (1,), (1, 2, 3), [1, 2], (0, 0), (-1, 2), ((1, 1), (1,)), {"a": 1}, 1j]

# valid values of the arguments without a default, and of some with one (Keras' meanings)
VALID = {
    "units": st.integers(1, 4), "filters": st.integers(1, 3), "kernel_size": st.sampled_from([1, 2, (1, 2), (2, 2)]),
    "rate": st.sampled_from([0.0, 0.25, 0.5]), "input_dim": st.integers(1, 5), "output_dim": st.integers(1, 3),
    "n": st.integers(1, 3), "target_shape": st.just((12,)), "dims": st.just((2, 1)),
    "function": st.just(lambda x: x), "layer": st.builds(lambda: layers.Dense(2)),
    "activation": st.sampled_from(["relu", "linear", None, "tanh", "softmax"]), "height": st.integers(1, 4),
    "width": st.integers(1, 4), "factor": st.sampled_from([0.1, (0.1, 0.3), 0.5]),
    "height_factor": st.sampled_from([0.1, (-0.2, 0.2)]), "width_factor": st.sampled_from([0.1, (-0.2, 0.2), None]),
    "scale": st.sampled_from([1.0, 0.5, 1 / 255]), "num_heads": st.integers(1, 2), "key_dim": st.integers(1, 3),
    "axes": st.sampled_from([1, -1, (1, 1)]), "equation": st.just("ab,bc->ac"), "output_shape": st.just(3),
    "pool_size": st.sampled_from([1, 2, (2, 2), (1, 2)]), "strides": st.sampled_from([None, 1, 2, (1, 1)]),
    "padding": st.sampled_from(["valid", "same"]), "size": st.sampled_from([1, 2, (2, 1)]),
    "cropping": st.sampled_from([0, 1, (1, 0), ((1, 0), (0, 1))]), "dilation_rate": st.sampled_from([1, 2, (1, 1)]),
    "axis": st.sampled_from([-1, 1]), "momentum": st.sampled_from([0.9, 0.99]), "epsilon": st.sampled_from([1e-3, 1e-5]),
    "alpha": st.sampled_from([1.0, 0.5]), "negative_slope": st.sampled_from([0.3, 0.0]),
    "max_value": st.sampled_from([None, 6.0]), "threshold": st.sampled_from([0.0, 0.5]),
    "mask_value": st.sampled_from([0.0, -1.0]), "mode": st.sampled_from(["horizontal", "vertical",
                                                                         "horizontal_and_vertical"]),
    "value_range": st.sampled_from([(0, 255), (0.0, 1.0)]), "offset": st.sampled_from([0.0, -1.0]),
    "dropout": st.sampled_from([0.0, 0.1]), "seed": st.sampled_from([None, 0, 7]),
    "merge_mode": st.sampled_from(["concat", "sum", "mul", "ave", None]),
}


def value_for(draw, name, default):
    """A value for argument `name`: a valid one most often, else an edge or a wrong type."""
    if draw(st.integers(0, 9)) < 3:
        return draw(st.sampled_from(BAD_VALUES))
    if name in VALID:
        return draw(VALID[name])
    if default is inspect.Parameter.empty:
        return draw(st.sampled_from([1, 2, "relu", None]))
    if isinstance(default, bool):
        return draw(st.booleans())
    if isinstance(default, int):
        return draw(st.integers(max(0, default - 1), default + 2))
    if isinstance(default, float):
        return draw(st.sampled_from([default, default / 2, default * 2, 0.0]))
    return default


def drawn_kwargs(draw, cls):
    """Keyword arguments for cls(): every required one, and each optional one now and then."""
    params = [p for p in inspect.signature(cls.__init__).parameters.values()
              if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    kwargs = {}
    for p in params:
        if p.name in ("name", "dtype", "trainable", "input_shape", "input_dim", "batch_size",
                      "activity_regularizer", "weights", "backward_layer", "quantization_config",
                      "gptq_unpacked_column_size") and p.default is not inspect.Parameter.empty:
            continue  # (the base Layer's, and plumbing)
        if "initializer" in p.name or "regularizer" in p.name or "constraint" in p.name:
            continue
        if p.default is inspect.Parameter.empty or draw(st.integers(0, 2)) == 0:
            kwargs[p.name] = value_for(draw, p.name, p.default)
    return kwargs


# ---------------------------------------------------------------------------------------------
# inputs the layers expect
# ---------------------------------------------------------------------------------------------
IMAGE_LAYERS = {"Conv2D", "Convolution2D", "MaxPool2D", "MaxPooling2D", "AvgPool2D", "AveragePooling2D",
                "GlobalMaxPool2D", "GlobalMaxPooling2D", "GlobalAvgPool2D", "GlobalAveragePooling2D", "Cropping2D",
                "ZeroPadding2D", "UpSampling2D", "RandomFlip", "RandomRotation", "RandomTranslation", "RandomZoom",
                "RandomContrast", "RandomCrop"}
SEQUENCE_LAYERS = {"Conv1D", "Convolution1D", "MaxPool1D", "MaxPooling1D", "AvgPool1D", "AveragePooling1D",
                   "GlobalMaxPool1D", "GlobalMaxPooling1D", "GlobalAvgPool1D", "GlobalAveragePooling1D", "Cropping1D",
                   "LSTM", "GRU", "SimpleRNN", "Bidirectional", "Masking", "MultiHeadAttention"}
MERGING = {"Add", "Average", "Maximum", "Minimum", "Multiply", "Subtract", "Concatenate", "Dot"}
NO_CALL = {"Lambda", "TimeDistributed", "EinsumDense"}  # (their inputs depend on their arguments too much)


def layer_input(name, kwargs, rng):
    if name in IMAGE_LAYERS:
        return rng.uniform(0, 1, (2, 6, 6, 3)).astype(np.float32)
    if name in SEQUENCE_LAYERS:
        return rng.uniform(-1, 1, (2, 6, 4)).astype(np.float32)
    if name == "Embedding":
        dim = kwargs.get("input_dim")
        if not (isinstance(dim, int) and not isinstance(dim, bool) and 1 <= dim <= 1000):
            return None
        return rng.integers(0, dim, (2, 3))
    if name == "RepeatVector":
        return rng.uniform(-1, 1, (2, 3)).astype(np.float32)
    if name == "Reshape":
        return rng.uniform(-1, 1, (2, 3, 4)).astype(np.float32)
    if name == "Permute":
        return rng.uniform(-1, 1, (2, 3, 4)).astype(np.float32)
    return rng.uniform(-1, 1, (2, 3, 4)).astype(np.float32)


def finite_args(kwargs):
    """Whether the arguments leave a finite output possible: no non-finite floats, and no huge
    numbers (ReLU(negative_slope=2**64, threshold=2**64) overflows float32, as in Keras)."""
    def ok(v):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return math.isfinite(v) and abs(v) < 1e6
        if isinstance(v, (tuple, list)):
            return all(ok(x) for x in v)
        return True
    return all(ok(v) for v in kwargs.values())


def run_layer(name, layer, x):
    if name in MERGING:
        return layer([x, x])
    if name == "MultiHeadAttention":
        return layer(x, x)
    if name.startswith("Random") or name == "Dropout":
        return layer(x, training=True)
    return layer(x)


ANY_FUNCTION = ("",)  # a layer's error names the argument; the layer's name is not required


def huge_ints(kwargs):
    def huge(v):
        if isinstance(v, (tuple, list)):
            return any(huge(x) for x in v)
        return isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 2**31
    return any(huge(v) for v in kwargs.values())


@pytest.mark.parametrize("name", LAYER_NAMES)
@given(data=st.data())
def test_layer_constructor(name, data):
    draw = data.draw
    cls = getattr(layers, name)
    kwargs = drawn_kwargs(draw, cls)
    desc = describe_call(name, **kwargs)
    note(desc)
    try:
        layer = guarded(lambda: cls(**kwargs), desc)
    except Exception as exc:  # noqa: BLE001 - the oracle classifies every exception
        assert_names(exc, ANY_FUNCTION, tuple(kwargs))
        return
    if name in NO_CALL:
        return
    x = layer_input(name, kwargs, np.random.default_rng(0))
    if x is None:
        return
    try:
        y = guarded(lambda: run_layer(name, layer, x), desc + " on " + repr(x.shape))
    except Exception as exc:  # noqa: BLE001
        if huge_ints(kwargs) and (isinstance(exc, MemoryError) or "array is too big" in str(exc)
                                  or "Maximum allowed dimension exceeded" in str(exc)):
            return  # weights of 2**31 or more units, filters...: too large to allocate, as asked
        assert_names(exc, ANY_FUNCTION, tuple(kwargs) + ("inputs", "input_shape"))
        return
    if isinstance(y, (list, tuple)):
        return
    y = np.asarray(y)
    if finite_args(kwargs) and not (isinstance(kwargs.get("mask_value"), float)):
        assert np.all(np.isfinite(y)), f"{desc}: a non-finite output for a finite input"
    try:
        want = layer.compute_output_shape([x.shape, x.shape] if name in MERGING else x.shape)
    except Exception:  # noqa: BLE001 - (not every layer computes it without being built)
        return
    if isinstance(want, list):
        return
    want = tuple(want)
    assert len(want) == y.ndim and all(w is None or w == g for w, g in zip(want, y.shape)), \
        f"{desc}: output shape {y.shape}, compute_output_shape says {want}"


def test_every_public_layer_has_a_property():
    """A new public layer gets into LAYER_NAMES (the parametrisation above) by itself."""
    assert {"Dense", "Conv2D", "LSTM", "MultiHeadAttention"} <= set(LAYER_NAMES)
