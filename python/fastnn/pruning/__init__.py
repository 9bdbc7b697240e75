"""Magnitude pruning (the TensorFlow Model Optimization Toolkit's ``tfmot.sparsity.keras``, by name).

Pruning zeroes the weights of smallest magnitude during training, so that the model keeps
its accuracy with most of its kernels at zero; a pruned model's file shrinks accordingly
(saved arrays that are mostly zeros are compressed).

The steps, as in tfmot::

    pruned = fastnn.pruning.prune_low_magnitude(model, pruning_schedule=fastnn.pruning.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=0.8, begin_step=0, end_step=1000))
    pruned.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    pruned.fit(x, y, epochs=3, callbacks=[fastnn.pruning.UpdatePruningStep()])
    final = fastnn.pruning.strip_pruning(pruned)   # an ordinary model, its zeros kept
    final.save("model.fastnn")
    fastnn.pruning.get_model_sparsity(final)        # zeros per layer and weight

The pieces:

* ``prune_low_magnitude``: wraps the prunable layers of a model (or one layer) in
  ``PruneLowMagnitude``, which adds a mask per kernel;
* schedules (``ConstantSparsity``, ``PolynomialDecay``): when the masks are recomputed and at
  what sparsity;
* ``UpdatePruningStep``: the callback fit needs; it advances the step and updates the masks;
* the optimizer keeps pruned weights and their optimizer state (moments, moving average) at
  exactly 0.0 after every update;
* ``strip_pruning``: the model without the wrappers; ``get_model_sparsity``: the report.

A pruned model (masks and steps included) saves and loads like any model and continues
pruning where it stopped.
"""

import warnings

import numpy as np

from ..saving import custom_object_scope
from .callbacks import UpdatePruningStep
from .schedules import ConstantSparsity, PolynomialDecay, PruningSchedule
from .wrapper import PrunableLayer, PruneLowMagnitude
from . import wrapper as _wrapper


def prune_low_magnitude(to_prune, pruning_schedule=ConstantSparsity(0.5, begin_step=0), block_size=(1, 1),
                        block_pooling_type="AVG", sparsity_m_by_n=None):
    """Adds magnitude pruning to a model's prunable layers, or to one layer (tfmot's function).

    Prunable: the kernels of Dense, EinsumDense, Conv1D and Conv2D, Embedding tables, the
    kernels and recurrent kernels of LSTM, GRU and SimpleRNN (not stateful ones), and what a
    layer's ``get_prunable_weights()`` returns; biases are never pruned. In a model, other
    layers are left as they are; those that have weights (other than normalization layers
    and PReLU, which have nothing to prune) are listed in one warning.

    The returned model shares its layers (and weights) with `to_prune`, as tfmot's does, and
    is not compiled: compile it, then fit with ``callbacks=[UpdatePruningStep()]``.

    Args:
        to_prune: a functional or Sequential Model (built or not; nested models are pruned
            too), a Layer, or a list of layers. Subclassed models are refused: prune their
            layers in ``__init__`` instead (``self.dense = prune_low_magnitude(Dense(64))``).
        pruning_schedule: PruningSchedule, default ``ConstantSparsity(0.5, begin_step=0)``.
        block_size: (int, int), default (1, 1): prune whole blocks of this (rows, columns) of
            each weight seen as a matrix (rows: every axis but the last), ranked by their
            pooled magnitude.
        block_pooling_type: "AVG" (default) or "MAX": a block's magnitude is the mean or the
            largest of its weights' magnitudes.
        sparsity_m_by_n: None (default) or (m, n), 0 < m < n: zero the m smallest of every n
            consecutive weights along the input axis (tfmot's convention: (2, 4) keeps 2 of
            every 4). The masks are then recomputed when the schedule says (tfmot: once, at
            step 1); its sparsity is not used. Not combined with block_size.

    Returns:
        A new model (the same kind) with the prunable layers wrapped in PruneLowMagnitude, or
        the wrapped layer (a list for a list).

    Raises:
        TypeError: `to_prune` is not a model or layer, or `pruning_schedule` not a schedule.
        ValueError: a bad block_size, block_pooling_type or sparsity_m_by_n (named), a layer
            given alone that cannot be pruned, or a subclassed model.

    Example:
        >>> model = fastnn.Sequential([fastnn.layers.Dense(32, activation="relu", input_shape=(64,)),
        ...                            fastnn.layers.Dense(10, activation="softmax")])
        >>> pruned = fastnn.pruning.prune_low_magnitude(model, fastnn.pruning.ConstantSparsity(0.8, begin_step=0))
    """
    from ..layers.base import Layer
    from ..models import Model

    who = "prune_low_magnitude"
    schedule, block, pooling, m_by_n = _wrapper.check_arguments(who, pruning_schedule, block_size,
                                                                block_pooling_type, sparsity_m_by_n)
    params = {"pruning_schedule": schedule, "block_size": block, "block_pooling_type": pooling,
              "sparsity_m_by_n": m_by_n}

    def alone(layer):
        if isinstance(layer, PruneLowMagnitude):
            return layer
        if isinstance(layer, Model):
            raise TypeError(f"{who}: a list holds layers, got the model '{layer.name}'")
        if not isinstance(layer, Layer):
            raise TypeError(f"{who}: 'to_prune' must be a Model, a Layer or a list of layers, got "
                            f"{type(layer).__name__}")
        return PruneLowMagnitude(layer, **params)

    if isinstance(to_prune, (list, tuple)):
        return [alone(layer) for layer in to_prune]
    if isinstance(to_prune, Model):
        skipped = []
        pruned = _rebuild(to_prune, lambda layer: _prune_in_model(layer, params, skipped), who)
        if skipped:
            warnings.warn(f"{who}: {len(skipped)} layer(s) with weights left unpruned (not supported): "
                          f"{', '.join(skipped)}", UserWarning, stacklevel=2)
        return pruned
    if isinstance(to_prune, Layer) and not isinstance(to_prune, PruneLowMagnitude) and \
            not _wrapper.is_prunable(to_prune):
        raise ValueError(f"{who}: cannot prune layer '{to_prune.name}' ({type(to_prune).__name__}): the prunable "
                         "layers are Dense, EinsumDense, Conv1D, Conv2D, Embedding, LSTM, GRU, SimpleRNN (not "
                         "stateful) and layers with a get_prunable_weights() method (fastnn.pruning.PrunableLayer)")
    return alone(to_prune)


def _prune_in_model(layer, params, skipped):
    from ..models import Model

    if isinstance(layer, PruneLowMagnitude):
        return layer
    if isinstance(layer, Model):
        if _rebuildable(layer):
            return _rebuild(layer, lambda inner: _prune_in_model(inner, params, skipped), "prune_low_magnitude")
        if layer.weights:
            skipped.append(f"'{layer.name}' (subclassed model {type(layer).__name__})")
        return layer
    if _wrapper.is_prunable(layer):
        return PruneLowMagnitude(layer, **params)
    if layer.weights and not isinstance(layer, _wrapper._without_weights_to_prune()):
        skipped.append(f"'{layer.name}' ({type(layer).__name__})")
    return layer


def strip_pruning(model):
    """The model without its pruning wrappers: an ordinary model whose weights keep their zeros.

    Each PruneLowMagnitude is replaced by the layer it wraps (masks applied once more, then
    forgotten: the stripped model trains and saves as any model). The returned model shares
    its layers with `model`; do not train `model` further after stripping it.

    Args:
        model: a functional or Sequential Model (nested models too), or a PruneLowMagnitude
            layer (its wrapped layer is returned).

    Returns:
        A new model of the same kind (or the wrapped layer), not compiled.

    Raises:
        TypeError: not a model or layer. ValueError: a subclassed model holding pruned layers.

    Example:
        >>> final = fastnn.pruning.strip_pruning(pruned)
        >>> final.save("pruned.fastnn")
    """
    from ..layers.base import Layer
    from ..models import Model

    if isinstance(model, PruneLowMagnitude):
        return _strip_one(model)
    if isinstance(model, Model):
        if not _rebuildable(model):
            from .callbacks import collect_pruned_layers

            if collect_pruned_layers(model):
                raise ValueError(f"strip_pruning: '{model.name}' is a subclassed model ({type(model).__name__}); its "
                                 "call() cannot be rebuilt without its pruned layers. Build the model again without "
                                 "prune_low_magnitude and copy the weights: get_weights() of each "
                                 "PruneLowMagnitude's .layer")
            return model
        return _rebuild(model, _strip_in_model, "strip_pruning")
    if isinstance(model, Layer):
        return model
    raise TypeError(f"strip_pruning: 'model' must be a Model or a layer, got {type(model).__name__}")


def _strip_one(layer):
    layer.apply_masks()
    for weight, _, _ in layer.pruning_vars:
        weight._pruning_mask = None  # an optimizer built from now on does not mask it
    return layer.layer


def _strip_in_model(layer):
    from ..models import Model

    if isinstance(layer, PruneLowMagnitude):
        return _strip_one(layer)
    if isinstance(layer, Model) and _rebuildable(layer):
        return _rebuild(layer, _strip_in_model, "strip_pruning")
    return layer


def _rebuildable(model):
    from ..models import Sequential

    return isinstance(model, Sequential) or bool(getattr(model, "_functional", False))


def _rebuild(model, replace, who):
    """A new model of `model`'s kind with each layer swapped for replace(layer) (once per layer:
    shared layers stay shared); the inputs are shared, the graph new."""
    import copy

    from ..keras_tensor import KerasTensor
    from ..layers.base import Layer
    from ..models import Model, Sequential
    from ..structure import flatten

    if not _rebuildable(model):
        raise ValueError(f"{who}: '{model.name}' is a subclassed model ({type(model).__name__}), whose call() cannot "
                         "be rebuilt with other layers (tfmot refuses them too); wrap its layers in __init__ instead: "
                         "self.dense = fastnn.pruning.prune_low_magnitude(fastnn.layers.Dense(64))")
    swapped = {}

    def swap(layer):
        if id(layer) not in swapped:
            swapped[id(layer)] = replace(layer)
        return swapped[id(layer)]

    if isinstance(model, Sequential):
        new = Sequential(name=model.name, trainable=model.trainable)
        if model._input_layer is not None:
            new.add(model._input_layer, rebuild=False)
        for layer in model.layers:
            new.add(swap(layer), rebuild=False)
        if model.built:
            new.build(model.input_shape)
        else:
            new._maybe_build()
        return new

    mapping = {id(t): t for t in model._graph.inputs}

    def remap(value):
        if isinstance(value, KerasTensor):
            return mapping[id(value)]
        if isinstance(value, list):
            return [remap(v) for v in value]
        if isinstance(value, tuple):
            return tuple(remap(v) for v in value)
        if isinstance(value, dict):
            return {k: remap(v) for k, v in value.items()}
        return value

    for node in model._graph.nodes:
        op = node.operation
        if isinstance(op, Layer):
            new_op = swap(op)
        else:  # an ops function recorded in the graph: a copy of it, called on the new tensors
            new_op = copy.copy(op)
            new_op._inbound_nodes = []
        outputs = new_op(*remap(list(node.call_args)), **remap(dict(node.call_kwargs)))
        for old, made in zip(node.output_tensors, flatten(outputs)):
            mapping[id(old)] = made
    return Model(inputs=model._inputs_struct, outputs=remap(model._outputs_struct), name=model.name,
                 trainable=model.trainable)


def get_model_sparsity(model, print_fn=None):
    """The fraction of zeros of each weight of a model (pruned, stripped or neither), and in total.

    Args:
        model: a Model (nested models are walked into) or a Layer.
        print_fn: optional function taking one line (e.g. ``print``): also prints the report
            as a table.

    Returns:
        dict with
        ``"weights"``: one dict per weight, in layer order: ``layer`` (the layer's name; a
        pruned layer's wrapper name), ``weight`` (e.g. "kernel"), ``shape``, ``size``,
        ``zeros``, ``sparsity`` (zeros / size), ``prunable`` (a weight pruning applies to:
        kernels and embeddings), ``masked`` (it has a pruning mask now);
        ``"total"``: ``size``, ``zeros``, ``sparsity`` over every weight listed;
        ``"prunable"``: the same over the prunable weights. The masks and pruning steps
        themselves are not listed.

    Example:
        >>> report = fastnn.pruning.get_model_sparsity(model, print_fn=print)
        >>> report["prunable"]["sparsity"]
    """
    from ..layers.base import Layer

    if not isinstance(model, Layer):
        raise TypeError(f"get_model_sparsity: 'model' must be a Model or a Layer, got {type(model).__name__}")
    rows = []
    for holder in _weight_holders(model):
        if isinstance(holder, PruneLowMagnitude):
            weights = holder.layer.weights
            masked = {id(w) for w, _, _ in holder.pruning_vars}
            prunable = masked if holder.built else set()
        else:
            weights = holder.weights
            masked = set()
            prunable = {id(w) for w in _wrapper.prunable_weights(holder)} \
                if holder.built and _wrapper.is_prunable(holder) else set()
        for w in weights:
            size = int(w.value.size)
            zeros = size - int(np.count_nonzero(w.value))
            rows.append({"layer": holder.name, "weight": w.name.rsplit("/", 1)[-1], "shape": tuple(w.shape),
                         "size": size, "zeros": zeros, "sparsity": zeros / size if size else 0.0,
                         "prunable": id(w) in prunable, "masked": id(w) in masked})

    def total(selected):
        size = sum(r["size"] for r in selected)
        zeros = sum(r["zeros"] for r in selected)
        return {"size": size, "zeros": zeros, "sparsity": zeros / size if size else 0.0}

    report = {"weights": rows, "total": total(rows), "prunable": total([r for r in rows if r["prunable"]])}
    if print_fn is not None:
        _print_report(report, print_fn)
    return report


def _weight_holders(model):
    """The layers holding `model`'s weights, in order (nested models opened, pruned layers whole)."""
    from ..models import Model

    holders, seen = [], set()

    def visit(layer):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        if isinstance(layer, Model) and not isinstance(layer, PruneLowMagnitude):
            for inner in layer.layers:
                visit(inner)
            return
        if layer.weights:
            holders.append(layer)

    visit(model)
    return holders


def _print_report(report, print_fn):
    header = ("Layer", "Weight", "Shape", "Zeros", "Sparsity")
    lines = [(r["layer"], r["weight"] + (" (masked)" if r["masked"] else ""), str(r["shape"]),
              f"{r['zeros']}/{r['size']}", f"{100 * r['sparsity']:.1f} %") for r in report["weights"]]
    for name in ("prunable", "total"):
        t = report[name]
        lines.append((f"{name} weights" if name == "prunable" else "all weights", "", "", f"{t['zeros']}/{t['size']}",
                      f"{100 * t['sparsity']:.1f} %"))
    widths = [max(len(str(row[i])) for row in [header] + lines) for i in range(len(header))]
    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    print_fn("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print_fn(rule)
    for i, row in enumerate(lines):
        if i == len(report["weights"]):
            print_fn(rule)
        print_fn("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))


def prune_scope():
    """A ``custom_object_scope`` for loading pruned models (tfmot's; fastnn needs none).

    fastnn's PruneLowMagnitude and schedules are built-ins that load without it; this keeps
    tfmot programs (``with prune_scope(): load_model(path)``) running unchanged.

    Returns:
        A context manager.
    """
    return custom_object_scope({})


__all__ = ["prune_low_magnitude", "strip_pruning", "get_model_sparsity", "prune_scope", "UpdatePruningStep",
           "PruneLowMagnitude", "PrunableLayer", "PruningSchedule", "ConstantSparsity", "PolynomialDecay"]
