"""Drawing a model's graph with pydot and Graphviz (Keras' ``plot_model`` / ``model_to_dot``).

Both are optional: ``pip install "fastnn[plot]"`` brings pydot, and Graphviz's ``dot``
program comes from the system (``apt install graphviz``, ``brew install graphviz``,
``conda install graphviz``). Nothing here is imported until a function is called.
"""

import html
import os


def _import_pydot():
    try:
        import pydot
    except ImportError as exc:
        raise ImportError('plot_model and model_to_dot need pydot, an optional dependency of fastnn: install it with '
                          'pip install "fastnn[plot]" (or pip install pydot), and Graphviz\'s dot program '
                          "(e.g. apt install graphviz)") from exc
    return pydot


def _graph_of(model):
    if model._functional:
        return model._graph
    if not model.built:
        raise ValueError(f"Model '{model.name}' is not built yet, so it has no graph to draw: build it (model.build("
                         "input_shape)) or call it on data first")
    return model._execution_graph(False)


def _shape_text(shapes):
    shapes = [s for s in shapes]
    text = str(shapes[0]) if len(shapes) == 1 else ", ".join(str(s) for s in shapes)
    return html.escape(text)


def _label(op, node, show_shapes, show_dtype, show_layer_names, show_layer_activations, show_trainable):
    from ..operation import FunctionOperation

    kind = "".join(p.capitalize() for p in op.fn.__name__.split("_")) if isinstance(op, FunctionOperation) \
        else type(op).__name__
    title = f"<b>{html.escape(op.name)}</b> ({kind})" if show_layer_names else f"<b>{kind}</b>"
    rows = [f'<tr><td colspan="2" bgcolor="black"><font color="white">{title}</font></td></tr>']
    activation = getattr(op, "activation", None)
    if show_layer_activations and activation is not None:
        name = getattr(activation, "name", None) or getattr(activation, "__name__", str(activation))
        rows.append(f'<tr><td colspan="2">Activation: <b>{html.escape(str(name))}</b></td></tr>')
    if show_shapes and node is not None:
        inputs = [t.shape for t in node.input_tensors] or [t.shape for t in node.output_tensors]
        rows.append(f"<tr><td>Input shape: <b>{_shape_text(inputs)}</b></td>"
                    f"<td>Output shape: <b>{_shape_text([t.shape for t in node.output_tensors])}</b></td></tr>")
    if show_dtype and node is not None:
        rows.append(f'<tr><td colspan="2">Output dtype: <b>{html.escape(node.output_tensors[0].dtype)}</b></td></tr>')
    if show_trainable and hasattr(op, "trainable"):
        rows.append(f'<tr><td colspan="2">Trainable: <b>{"Y" if op.trainable else "N"}</b></td></tr>')
    return '<<table border="0" cellborder="1" cellpadding="6">' + "".join(rows) + "</table>>"


def model_to_dot(model, show_shapes=False, show_dtype=False, show_layer_names=True, rankdir="TB", expand_nested=False,
                 dpi=200, subgraph=False, show_layer_activations=False, show_trainable=False, **kwargs):
    """The model's graph as a ``pydot.Dot``: one box per layer or op, an arrow per tensor.

    Args:
        model: a built Model (functional, Sequential, or subclassed and built).
        show_shapes: bool, default False: each box shows its input and output shapes.
        show_dtype: bool, default False: each box shows its output dtype.
        show_layer_names: bool, default True: the name before the class name.
        rankdir: "TB" (default, top to bottom) or "LR" (left to right).
        expand_nested: bool, default False: draw nested models' layers inside a frame
            instead of one box.
        dpi: int, default 200.
        subgraph: bool, default False: return a cluster to put in another graph.
        show_layer_activations: bool, default False: show Dense/Conv activations.
        show_trainable: bool, default False: show whether each layer is trainable.

    Returns:
        pydot.Dot (pydot.Cluster with subgraph=True).

    Raises:
        ImportError: pydot is not installed (the message names the extra to install).
        ValueError: a model that is not built.
    """
    from ..models.model import Model

    if kwargs:
        raise TypeError(f"model_to_dot: unexpected keyword argument(s) {sorted(kwargs)}")
    if rankdir not in ("TB", "LR"):
        raise ValueError(f"model_to_dot: 'rankdir' must be 'TB' or 'LR', got {rankdir!r}")
    pydot = _import_pydot()
    options = dict(show_shapes=show_shapes, show_dtype=show_dtype, show_layer_names=show_layer_names,
                   show_layer_activations=show_layer_activations, show_trainable=show_trainable)
    if subgraph:
        dot = pydot.Cluster(style="dashed", graph_name=model.name, label=model.name)
    else:
        dot = pydot.Dot(graph_type="digraph", rankdir=rankdir, concentrate=True, dpi=dpi)
        dot.set_node_defaults(shape="plaintext", fontname="Helvetica")
    _draw(model, dot, pydot, options, expand_nested, Model, prefix="")
    return dot


def _draw(model, dot, pydot, options, expand_nested, model_cls, prefix):
    """Adds `model`'s graph to `dot`; returns (entry node ids per input, exit node ids per output)."""
    graph = _graph_of(model)
    clusters = {}  # id(nested model) -> its (entry ids, exit ids): drawn once however often it is called

    def box(op, node):
        key = prefix + str(id(op))
        if isinstance(op, model_cls) and expand_nested and op is not model:
            if id(op) not in clusters:
                cluster = pydot.Cluster(graph_name=key, style="dashed", label=op.name)
                dot.add_subgraph(cluster)
                clusters[id(op)] = _draw(op, cluster, pydot, options, expand_nested, model_cls, prefix=key + "/")
            return clusters[id(op)]
        if not dot.get_node(key):
            dot.add_node(pydot.Node(key, label=_label(op, node, **options), shape="plaintext"))
        return None, None

    input_ids = []
    for t in graph.inputs:
        op = t._keras_history[0] if t._keras_history else None
        key = prefix + str(id(op) if op is not None else id(t))
        if op is None:
            dot.add_node(pydot.Node(key, label=f"<<b>{html.escape(t.name or 'input')}</b>>", shape="plaintext"))
        else:
            box(op, op._inbound_nodes[t._keras_history[1]])
        input_ids.append(key)
    producers = {id(t): key for t, key in zip(graph.inputs, input_ids)}
    for node in graph.nodes:
        entries, exits = box(node.operation, node)
        key = prefix + str(id(node.operation))
        for i, t in enumerate(node.input_tensors):
            source = producers.get(id(t))
            target = entries[i] if entries is not None and i < len(entries) else key
            if source is not None and not dot.get_edge(source, target):
                dot.add_edge(pydot.Edge(source, target))
        for i, t in enumerate(node.output_tensors):
            producers[id(t)] = exits[i] if exits is not None and i < len(exits) else key
    return input_ids, [producers[id(t)] for t in graph.outputs]


def plot_model(model, to_file="model.png", show_shapes=False, show_dtype=False, show_layer_names=True, rankdir="TB",
               expand_nested=False, dpi=200, show_layer_activations=False, show_trainable=False, **kwargs):
    """Draws the model's graph into an image file (Keras' ``keras.utils.plot_model``).

    Args:
        model: a built Model.
        to_file: str or path-like, default "model.png"; the extension picks the format
            (png, svg, pdf, jpg, dot...).
        show_shapes, show_dtype, show_layer_names, rankdir, expand_nested, dpi,
            show_layer_activations, show_trainable: as ``model_to_dot``.

    Returns:
        IPython's Image of the file in a notebook (when IPython is installed and the file is
        an image it shows), else None.

    Raises:
        ImportError: pydot or Graphviz's dot program is missing (the message says how to
            install them).

    Example:
        >>> fastnn.utils.plot_model(model, "model.png", show_shapes=True)
    """
    pydot = _import_pydot()
    dot = model_to_dot(model, show_shapes=show_shapes, show_dtype=show_dtype, show_layer_names=show_layer_names,
                       rankdir=rankdir, expand_nested=expand_nested, dpi=dpi,
                       show_layer_activations=show_layer_activations, show_trainable=show_trainable, **kwargs)
    path = os.fspath(to_file)
    extension = os.path.splitext(path)[1][1:].lower() or "png"
    try:
        dot.write(path, format="raw" if extension == "dot" else extension)
    except (OSError, FileNotFoundError, getattr(pydot, "PydotException", OSError)) as exc:
        if "dot" in str(exc) or isinstance(exc, FileNotFoundError):
            raise ImportError("plot_model needs Graphviz's dot program to draw the graph: install Graphviz (e.g. apt "
                              "install graphviz, brew install graphviz or conda install graphviz)") from exc
        raise
    if extension in ("png", "jpg", "jpeg"):
        try:
            from IPython import display
        except ImportError:
            return None
        return display.Image(filename=path)
    return None
