"""``model.summary()``: a table of the layers, their output shapes and parameter counts, and for
graphs Keras' "Connected to" column (``dense[0][0]``: layer, call, output)."""

import numbers
import sys
import textwrap

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


def _quantized(model):
    """Whether any layer of the model is quantized: the table then has a "Dtype" column."""
    from ..quantizers import quantize_model

    return bool(quantize_model.quantized_layers(model))


def _dtype_text(layer):
    policy = getattr(layer, "dtype_policy", None)
    return policy.name if policy is not None else "-"


def _rows(model, show_trainable, expand_nested, indent="", show_dtype=False):
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
        if show_dtype:
            row.append("-" if isinstance(layer, FunctionOperation) else _dtype_text(layer))
        if graph_like:
            row.append(", ".join(links.get(id(layer), [])) or "-")
        if show_trainable:
            row.append(trainable)
        rows.append(row)
        if expand_nested and hasattr(layer, "_functional") and layer.built and layer is not model:
            for inner in _rows(layer, show_trainable, expand_nested, indent + "| ", show_dtype):
                rows.append(inner[:3 + show_dtype] + (["-"] if graph_like else []) + inner[-1:] * show_trainable)
    return rows


_MIN_COLUMN = 4  # characters: the narrowest a column gets (one of them is the gap to the next)


def print_summary(model, line_length=None, positions=None, print_fn=None, expand_nested=False, show_trainable=False):
    """Prints the table of ``model.summary`` (see there for the arguments).

    Each column is as wide as its widest cell, so names are shown whole. When the table
    must be narrower (``line_length``, ``positions``, or a terminal narrower than the
    table when printing to it), the widest columns give way first and their cells wrap
    within the column, as Keras' do: at spaces where they can ("bidirectional" above
    "(Bidirectional)"), else folded; nothing is ever cut.
    """
    print_fn = print_fn or print
    graph_like = model._functional and not _is_chain(model)
    show_dtype = _quantized(model)
    rows = _rows(model, show_trainable, expand_nested, show_dtype=show_dtype)
    headers = [" Layer (type)", "Output Shape", "Param #"] + (["Dtype"] if show_dtype else []) + \
        (["Connected to"] if graph_like else []) + \
        (["Trainable"] if show_trainable else [])
    natural = [max(len(h), *(len(r[i]) for r in rows)) + 2 if rows else len(h) + 2 for i, h in enumerate(headers)]
    if line_length is None and positions is None and print_fn is print and _stdout_is_a_terminal():
        from ..utils.progbar import terminal_columns

        room = terminal_columns(sys.stdout) - 1
        if sum(natural) > room >= _MIN_COLUMN * len(natural):  # narrower than the table: fit it
            line_length = room
    widths = _column_widths(natural, line_length, positions)
    width = sum(widths)

    def lines(cells):
        wrapped = [_wrap(str(cell), w - 1) for cell, w in zip(cells, widths)]  # w - 1: a space between columns
        for i in range(max(len(parts) for parts in wrapped)):
            yield "".join((parts[i] if i < len(parts) else "").ljust(w) for parts, w in zip(wrapped, widths)).rstrip()

    print_fn(f'Model: "{model.name}"')
    print_fn("_" * width)
    for text in lines(headers):
        print_fn(text)
    print_fn("=" * width)
    for i, row in enumerate(rows):
        for text in lines(row):
            print_fn(text)
        if i < len(rows) - 1:
            print_fn("")
    print_fn("=" * width)
    trainable = sum(v.value.size for v in model.trainable_weights)
    frozen = sum(v.value.size for v in model.non_trainable_weights)
    # bytes as stored: a quantized layer's int8 weights take one byte each
    trainable_bytes = sum(v.value.nbytes for v in model.trainable_weights)
    frozen_bytes = sum(v.value.nbytes for v in model.non_trainable_weights)
    print_fn(f"Total params: {trainable + frozen:,} ({_memory(trainable_bytes + frozen_bytes, 1)})")
    print_fn(f"Trainable params: {trainable:,} ({_memory(trainable_bytes, 1)})")
    print_fn(f"Non-trainable params: {frozen:,} ({_memory(frozen_bytes, 1)})")
    print_fn("_" * width)


def _stdout_is_a_terminal():
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced by an object without isatty, or closed
        return False


def _column_widths(natural, line_length, positions):
    """The columns' widths: `natural` (each column's widest cell), or fitted to `line_length`
    (the widest columns capped first), or where `positions` end them (Keras' argument)."""
    count = len(natural)
    if line_length is not None:
        if isinstance(line_length, bool) or not isinstance(line_length, numbers.Integral):
            raise TypeError(f"summary: 'line_length' must be an int, got {type(line_length).__name__}")
        if line_length < _MIN_COLUMN * count:
            raise ValueError(f"summary: 'line_length' must leave at least {_MIN_COLUMN} characters to each of the "
                             f"{count} columns (at least {_MIN_COLUMN * count}), got {line_length}")
        line_length = int(line_length)
    if positions is not None:  # Keras: where each column ends, as fractions of the line or characters
        try:
            positions = [float(p) for p in positions]
        except (TypeError, ValueError):
            raise TypeError(f"summary: 'positions' must be a list of numbers, got {positions!r}") from None
        total = line_length or sum(natural)
        ends = [int(p * total) if p <= 1 else int(p) for p in positions][:count]
        starts = [0] + ends[:-1]
        return [max(_MIN_COLUMN, e - b) for b, e in zip(starts, ends)] + list(natural[len(ends):])
    if line_length is None:
        return list(natural)
    if line_length >= sum(natural):  # room to spare: every column grows in proportion
        widths = [int(w * line_length / sum(natural)) for w in natural]
        widths[0] += line_length - sum(widths)
        return widths
    cap = max(natural)  # too narrow: cap the widest columns, as little as needed
    while sum(min(w, cap) for w in natural) > line_length:
        cap -= 1
    widths = [min(w, cap) for w in natural]
    spare = line_length - sum(widths)
    for i, w in enumerate(natural):  # what the whole-character cap leaves, to the capped columns
        if w > cap and spare:
            widths[i] += 1
            spare -= 1
    return widths


def _wrap(text, width):
    """`text` as lines of at most `width` characters: broken at spaces, long words folded;
    later lines keep the first's indentation (nested layers' " | ")."""
    if len(text) <= width:
        return [text]
    indent = text[:len(text) - len(text.lstrip(" |"))]
    if len(indent) >= width:
        indent = ""
    return textwrap.wrap(text, width, subsequent_indent=indent, break_on_hyphens=False) or [""]


def _is_chain(model):
    from .sequential import Sequential

    return isinstance(model, Sequential)


def _memory(count, itemsize):
    size = float(count * itemsize)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.2f} {unit}"
        size /= 1024
