"""``model.summary()``: a table of the layers, their output shapes and parameter counts, and for
graphs Keras' "Connected to" column (``dense[0][0]``: layer, call, output)."""

import numpy as np

from ..operation import FunctionOperation
from . import functional


def _connections(model):
    """layer -> list of "name[node][tensor]" it reads, over the calls in this model's graph."""
    graph = model._graph
    if graph is None:
        return {}
    own = {id(n) for n in graph.nodes}
    links = {}
    for node in graph.nodes:
        names = links.setdefault(id(node.operation), [])
        for t in node.input_tensors:
            op, index, t_index = t._keras_history
            kept = [n for n in op._inbound_nodes if id(n) in own or n.is_input]
            position = next((i for i, n in enumerate(kept) if n is op._inbound_nodes[index]), index)
            names.append(f"{op.name}[{position}][{t_index}]")
    return links


def _shape_text(layer, model):
    if not getattr(layer, "built", True) and not layer._is_input_layer:
        return "?"
    shape = getattr(layer, "output_shape", None)
    if model._graph is not None:  # what the layer's call in this graph returns
        for node in model._graph.nodes:
            if node.operation is layer:
                shapes = [t.shape for t in node.output_tensors]
                shape = shapes[0] if len(shapes) == 1 else shapes
                break
    return str(shape)


def _rows(model, show_trainable, expand_nested, indent=""):
    """The table's rows for `model`'s layers (and, with expand_nested, its nested models')."""
    graph_like = model._functional and not _is_chain(model)
    layers = functional.graph_layers(model._graph, include_ops=True) if graph_like else model.layers
    links = _connections(model) if graph_like else {}
    rows = []
    for layer in layers:
        if isinstance(layer, FunctionOperation):
            kind = "".join(part.capitalize() for part in layer.fn.__name__.split("_"))
            name, params, trainable = f" {indent}{layer.name} ({kind})", "0", "-"
        else:
            name = f" {indent}{layer.name} ({type(layer).__name__})"
            params = f"{layer.count_params():,}" if (layer.built or layer._is_input_layer) else "0 (unbuilt)"
            trainable = "Y" if layer.trainable else "N"
        row = [name, _shape_text(layer, model), params]
        if graph_like:
            row.append(", ".join(links.get(id(layer), [])) or "-")
        if show_trainable:
            row.append(trainable)
        rows.append(row)
        if expand_nested and hasattr(layer, "_functional") and layer.built and layer is not model:
            for inner in _rows(layer, show_trainable, expand_nested, indent + "| "):
                rows.append(inner[:3] + (["-"] if graph_like else []) + inner[-1:] * show_trainable)
    return rows


def print_summary(model, line_length=None, positions=None, print_fn=None, expand_nested=False, show_trainable=False):
    print_fn = print_fn or print
    graph_like = model._functional and not _is_chain(model)
    rows = _rows(model, show_trainable, expand_nested)
    headers = [" Layer (type)", "Output Shape", "Param #"] + (["Connected to"] if graph_like else []) + \
        (["Trainable"] if show_trainable else [])
    widths = [max(len(h), *(len(r[i]) for r in rows)) + 2 if rows else len(h) + 2 for i, h in enumerate(headers)]
    if line_length:  # scale the columns to the requested width
        scale = line_length / sum(widths)
        widths = [max(4, int(w * scale)) for w in widths]
    if positions is not None:  # Keras: where each column ends, as fractions of the line or characters
        total = line_length or sum(widths)
        ends = [int(p * total) if p <= 1 else int(p) for p in positions][:len(widths)]
        starts = [0] + ends[:-1]
        widths[:len(ends)] = [max(4, e - b) for b, e in zip(starts, ends)]
    width = sum(widths)

    def line(cells):
        return "".join(str(c)[:w - 1].ljust(w) for c, w in zip(cells, widths)).rstrip()

    print_fn(f'Model: "{model.name}"')
    print_fn("_" * width)
    print_fn(line(headers))
    print_fn("=" * width)
    for i, row in enumerate(rows):
        print_fn(line(row))
        if i < len(rows) - 1:
            print_fn("")
    print_fn("=" * width)
    trainable = sum(v.value.size for v in model.trainable_weights)
    frozen = sum(v.value.size for v in model.non_trainable_weights)
    itemsize = np.dtype(model._float_dtype()).itemsize
    print_fn(f"Total params: {trainable + frozen:,} ({_memory(trainable + frozen, itemsize)})")
    print_fn(f"Trainable params: {trainable:,} ({_memory(trainable, itemsize)})")
    print_fn(f"Non-trainable params: {frozen:,} ({_memory(frozen, itemsize)})")
    print_fn("_" * width)


def _is_chain(model):
    from .sequential import Sequential

    return isinstance(model, Sequential)


def _memory(count, itemsize):
    size = float(count * itemsize)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.2f} {unit}"
        size /= 1024
