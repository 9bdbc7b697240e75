"""plot_model / model_to_dot (python/fastnn/utils/model_visualization.py): the drawn graph has a
box per layer or op and an arrow per tensor; missing optional dependencies say what to install."""

import shutil
import sys

import numpy as np
import pytest

import fastnn as keras
from fastnn import layers, ops

pydot = pytest.importorskip("pydot")


def _model():
    a, b = keras.Input((4,), name="left"), keras.Input((4,), name="right")
    shared = layers.Dense(5, activation="tanh", name="shared")
    inner_in = keras.Input((5,), name="inner_in")
    inner = keras.Model(inner_in, layers.Dense(3, name="inner_dense")(inner_in), name="inner")
    joined = layers.Concatenate(name="join")([inner(shared(a)), inner(shared(b))])
    return keras.Model([a, b], layers.Dense(2, activation="softmax", name="head")(ops.relu(joined)))


def _names(dot):
    """Node id -> the layer name in its label."""
    names = {}
    for node in dot.get_nodes() + [n for g in dot.get_subgraphs() for n in g.get_nodes()]:
        label = node.get("label") or ""
        if "<b>" in label:
            names[node.get_name()] = label.split("<b>")[1].split("</b>")[0]
    return names


def test_model_to_dot_draws_a_box_per_layer_and_an_arrow_per_tensor():
    dot = keras.utils.model_to_dot(_model(), show_shapes=True)
    names = _names(dot)
    relus = [n for n in names.values() if n.startswith("relu")]  # the op's name is made unique
    assert len(relus) == 1 and len(names) == 7
    assert set(names.values()) - set(relus) == {"left", "right", "shared", "inner", "join", "head"}
    edges = {(names[e.get_source()], names[e.get_destination()]) for e in dot.get_edges()}
    assert {("left", "shared"), ("right", "shared"), ("shared", "inner"), ("inner", "join")} <= edges
    assert any(src == "join" and dst.startswith("relu") for src, dst in edges)
    head = next(n for n in dot.get_nodes() if names.get(n.get_name()) == "head")
    assert "Input shape: <b>(None, 6)</b>" in head.get("label") and "Output shape: <b>(None, 2)</b>" in head.get("label")


def test_expand_nested_draws_the_inner_model_in_a_frame():
    dot = keras.utils.model_to_dot(_model(), expand_nested=True)
    clusters = dot.get_subgraphs()
    assert len(clusters) == 1 and clusters[0].get("label") == "inner"
    inner_names = set(_names(clusters[0]).values())
    assert inner_names == {"inner_in", "inner_dense"}
    names = _names(dot)
    edges = {(names.get(e.get_source()), names.get(e.get_destination())) for e in dot.get_edges()}
    assert ("shared", "inner_in") in edges and ("inner_dense", "join") in edges


def test_plot_model_writes_the_image(tmp_path):
    model = _model()
    target = tmp_path / "model.png"
    if shutil.which("dot") is None:  # without Graphviz the error says what to install
        with pytest.raises(ImportError, match="Graphviz"):
            keras.utils.plot_model(model, target)
        return
    keras.utils.plot_model(model, target, show_shapes=True, show_layer_activations=True)
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    keras.utils.plot_model(model, tmp_path / "model.svg")
    assert b"<svg" in (tmp_path / "model.svg").read_bytes()


def test_missing_pydot_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydot", None)
    with pytest.raises(ImportError, match=r'pip install "fastnn\[plot\]"'):
        keras.utils.plot_model(_model(), "unused.png")


def test_an_unbuilt_subclassed_model_cannot_be_drawn_yet_a_built_one_can():
    class Tiny(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    model = Tiny()
    with pytest.raises(ValueError, match="not built yet"):
        keras.utils.model_to_dot(model)
    model(np.ones((1, 3), np.float32))
    assert "dense" in "".join(_names(keras.utils.model_to_dot(model)).values())
