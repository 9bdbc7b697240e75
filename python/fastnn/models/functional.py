"""The functional API's bookkeeping: a graph's layers in Keras' order, the inputs' dtypes, and
``get_config`` / ``from_config`` in Keras 3's layout (layers with their inbound nodes).

A config lists every operation once, each with ``inbound_nodes``: for each of its calls in
this model, the call's arguments with every symbolic tensor written as
``{"class_name": "__keras_tensor__", "config": {"shape", "dtype", "keras_history":
[layer name, node index, tensor index]}}``; ``input_layers`` and ``output_layers`` are such
histories. ``from_config`` creates the layers, then replays the calls in an order where each
call's inputs exist (a layer shared at different depths is called when it can be).
"""

import numpy as np

from ..keras_tensor import KerasTensor
from ..operation import FunctionOperation

_TENSOR = "__keras_tensor__"


def graph_layers(graph, include_ops=False):
    """The graph's layers in node order, each InputLayer just before the first layer that reads it
    (`include_ops`: the recorded ops too, as the summary lists them)."""
    from ..layers.base import Layer

    seen, layers = set(), []

    def add(op):
        if id(op) not in seen and (include_ops or isinstance(op, Layer)):
            seen.add(id(op))
            layers.append(op)

    inputs = {id(t) for t in graph.inputs}
    consumed = {id(t) for node in graph.nodes for t in node.input_tensors}
    for t in graph.inputs:  # inputs no layer reads come first
        if id(t) not in consumed and t._keras_history is not None:
            add(t._keras_history[0])
    for node in graph.nodes:
        for t in node.input_tensors:
            if id(t) in inputs and t._keras_history is not None:
                add(t._keras_history[0])
        add(node.operation)
    return layers


def input_dtype(tensor, graph):
    """The dtype data for this input is converted to: its own, or integer ids when it is a float
    Input that only layers taking ids (Embedding) read."""
    dtype = np.dtype(tensor.dtype)
    if dtype.kind != "f":
        return dtype
    readers = [node.operation for node in graph.nodes if any(t is tensor for t in node.input_tensors)]
    if readers and all(np.dtype(getattr(op, "input_dtype", dtype)).kind in "iu" for op in readers):
        return np.dtype("int64")
    return dtype


# ---- get_config --------------------------------------------------------------------------------------
def _own_nodes(model):
    """The nodes of this model's graph, with its InputLayers' nodes."""
    nodes = list(model._graph.nodes)
    for t in model._graph.inputs:
        op, index, _ = t._keras_history
        nodes.insert(0, op._inbound_nodes[index])
    return nodes


def get_config(model):
    from ..saving import serialize_keras_object

    own = _own_nodes(model)
    own_ids = {id(n) for n in own}
    reindex = {}  # id(node) -> its index among the operation's nodes in this model
    for node in own:
        kept = [n for n in node.operation._inbound_nodes if id(n) in own_ids]
        reindex[id(node)] = next(i for i, n in enumerate(kept) if n is node)

    def history(tensor):
        op, index, t_index = tensor._keras_history
        return [op.name, reindex[id(op._inbound_nodes[index])], t_index]

    def encode(value):
        if isinstance(value, KerasTensor):
            return {"class_name": _TENSOR, "config": {"shape": list(value.shape), "dtype": value.dtype,
                                                     "keras_history": history(value)}}
        if isinstance(value, (list, tuple)):
            return [encode(v) for v in value]
        if isinstance(value, dict):
            return {k: encode(v) for k, v in value.items()}
        return serialize_keras_object(value)

    operations, seen = [], set()
    for node in model._graph.nodes:
        for t in node.input_tensors:
            op = t._keras_history[0]
            if op._is_input_layer and id(op) not in seen:
                seen.add(id(op))
                operations.append(op)
        if id(node.operation) not in seen:
            seen.add(id(node.operation))
            operations.append(node.operation)
    for t in model._graph.inputs:
        op = t._keras_history[0]
        if id(op) not in seen:
            seen.add(id(op))
            operations.insert(0, op)
    names = [op.name for op in operations]
    duplicated = {n for n in names if names.count(n) > 1}
    if duplicated:
        raise ValueError(f"Model '{model.name}' cannot be saved: several of its layers are named "
                         f"{sorted(duplicated)}; give them unique names")
    layers = []
    for op in operations:
        if isinstance(op, FunctionOperation):
            entry = {"module": "fastnn.operation", "class_name": "FunctionOperation", "config": op.get_config(),
                     "registered_name": None}
        else:
            entry = serialize_keras_object(op)
        entry["name"] = op.name
        entry["inbound_nodes"] = [{"args": encode(list(n.call_args)), "kwargs": encode(n.call_kwargs)}
                                  for n in op._inbound_nodes if id(n) in own_ids and not n.is_input]
        layers.append(entry)

    def structure(s):
        if isinstance(s, KerasTensor):
            return history(s)
        if isinstance(s, dict):
            return {k: structure(v) for k, v in s.items()}
        return [structure(v) for v in s]

    return {"name": model.name, "trainable": model.trainable, "layers": layers,
            "input_layers": structure(model._inputs_struct), "output_layers": structure(model._outputs_struct)}


# ---- from_config -------------------------------------------------------------------------------------
class _NotYet(Exception):
    """A node's input comes from a call that has not been replayed yet."""


def from_config(cls, config, custom_objects=None):
    from ..saving import deserialize_keras_object

    created, pending, order = {}, {}, []
    for entry in config["layers"]:
        name = entry["name"]
        if entry.get("class_name") == "FunctionOperation":
            op = FunctionOperation.from_config(entry["config"])
        else:
            op = deserialize_keras_object({k: v for k, v in entry.items() if k not in ("name", "inbound_nodes")},
                                          custom_objects, kind="layer")
        created[name] = op
        pending[name] = list(entry.get("inbound_nodes") or [])
        order.append(name)

    def tensor(value):
        layer_name, node_index, t_index = value["config"]["keras_history"]
        op = created.get(layer_name)
        if op is None:
            raise ValueError(f"Invalid functional config: unknown layer {layer_name!r}")
        if node_index >= len(op._inbound_nodes):
            raise _NotYet()
        return op._inbound_nodes[node_index].output_tensors[t_index]

    def decode(value):
        if isinstance(value, dict) and value.get("class_name") == _TENSOR:
            return tensor(value)
        if isinstance(value, list):
            return [decode(v) for v in value]
        if isinstance(value, dict):
            return {k: decode(v) for k, v in value.items()}
        return value

    while any(pending.values()):
        progressed = False
        for name in order:
            queue = pending[name]
            while queue:
                try:
                    args, kwargs = decode(queue[0]["args"]), decode(queue[0]["kwargs"])
                except _NotYet:
                    break
                created[name](*args, **kwargs)
                queue.pop(0)
                progressed = True
        if not progressed:
            stuck = [name for name in order if pending[name]]
            raise ValueError(f"Invalid functional config: the calls of {stuck} read tensors no call makes (a cycle "
                             "or a missing layer)")

    def structure(s):
        if isinstance(s, dict):
            return {k: structure(v) for k, v in s.items()}
        if len(s) == 3 and isinstance(s[0], str):
            return tensor({"config": {"keras_history": s}})
        return [structure(v) for v in s]

    inputs = structure(config["input_layers"])
    outputs = structure(config["output_layers"])
    return cls(inputs=inputs, outputs=outputs, name=config.get("name"), trainable=config.get("trainable", True))

