"""Tracing Keras-style ``call()`` into a graph: how custom layers and subclassed models train
without a hand-written gradient.

The first time a layer written with ``call(inputs, training=False)`` runs on inputs of a new
shape, ``call`` is run once on symbolic tensors of that shape: every layer it calls and
every ``fastnn.ops`` function it applies (to the inputs or to the layer's weights) records a
node, and the recorded nodes are the layer's graph (``fastnn.graph.Graph``). From then on
the layer's forward and backward are that graph's, run with the kernels of the layers in
it and the recorded derivatives of the ops.

A ``call`` that takes ``training`` is traced once per value of it (Dropout, BatchNormalization
and Python branches on ``training`` behave as written). A ``call`` that takes ``mask`` gets, as
in Keras, the mask of its input (``Embedding(mask_zero=True)`` upstream, or ``layer(x,
mask=m)``) as a symbolic boolean tensor, an extra input of the graph (traced once with a mask
and once without, None). Python control flow on tensor values
cannot be traced: it raises a TypeError that says so (see ``fastnn.keras_tensor``).
"""

import inspect
import threading

import numpy as np

from . import operation
from .graph import Graph
from .structure import flatten, pack_like
from .keras_tensor import KerasTensor

# One trace at a time in the process: tracing records nodes on the layers it calls (shared
# between models), and a trace made by two threads at once would interleave them. Re-entrant:
# tracing a model traces the custom layers in it.
_TRACE_LOCK = threading.RLock()


class Trace:
    """One traced call(): its graph and the structure of its inputs and outputs (the graph's
    inputs are the flattened inputs, then the mask when call() was given one)."""

    __slots__ = ("graph", "inputs", "outputs", "n_inputs")

    def __init__(self, graph, inputs, outputs, n_inputs):
        self.graph, self.inputs, self.outputs, self.n_inputs = graph, inputs, outputs, n_inputs


class TracedCall:
    """The cache of one forward pass of a traced layer (its trace and the graph's tape)."""

    __slots__ = ("trace", "tape")

    def __init__(self, trace, tape):
        self.trace, self.tape = trace, tape

    @property
    def output_masks(self):
        return self.tape.output_masks


def _takes(layer, argument):
    try:
        parameters = inspect.signature(layer.call).parameters
    except (TypeError, ValueError):
        return False
    return argument in parameters or any(p.kind == p.VAR_KEYWORD for p in parameters.values())


def takes_mask(layer):
    """Whether ``layer.call`` names a ``mask`` argument (Keras then passes the input's mask)."""
    try:
        return "mask" in inspect.signature(layer.call).parameters
    except (TypeError, ValueError):
        return False


def _spec(x):
    """(unbatched shape, dtype) of an array or symbolic tensor."""
    return (None,) + tuple(x.shape[1:]), np.dtype(x.dtype).name


def trace(layer, specs, training, mask_spec=None):
    """Runs layer.call on symbolic inputs described by `specs` (a structure of (shape, dtype)),
    and on a symbolic ``mask`` described by `mask_spec` when given.

    Returns:
        Trace.
    """
    count = [0]

    def symbolic(spec):
        shape, dtype = spec
        count[0] += 1
        return KerasTensor(shape, dtype, name=f"{layer.name}_input_{count[0]}")

    inputs = _map_specs(specs, symbolic)
    kwargs = {"training": training} if _takes(layer, "training") else {}
    extra = []
    if mask_spec is not None:
        extra = [KerasTensor(mask_spec[0], mask_spec[1], name=f"{layer.name}_mask")]
        kwargs["mask"] = extra[0]
    operation._TRACING[0] += 1
    try:
        outputs = layer.call(inputs, **kwargs)
    finally:
        operation._TRACING[0] -= 1
    for out in flatten(outputs):
        if not isinstance(out, KerasTensor):
            raise ValueError(f"{type(layer).__name__} '{layer.name}': call() returned a {type(out).__name__}, not a "
                             "tensor computed from its inputs; compute the outputs from the inputs with layers and "
                             "fastnn.ops functions")
    graph = Graph(flatten(inputs) + extra, flatten(outputs), name=layer.name)
    return Trace(graph, inputs, outputs, len(flatten(inputs)))


def _map_specs(specs, fn):
    if isinstance(specs, list):
        return [_map_specs(s, fn) for s in specs]
    if isinstance(specs, dict):
        return {k: _map_specs(v, fn) for k, v in specs.items()}
    return fn(specs)


def flat_specs(specs):
    """The (shape, dtype) leaves of a structure of specs, in order."""
    if isinstance(specs, list):
        return [s for item in specs for s in flat_specs(item)]
    if isinstance(specs, dict):
        return [s for item in specs.values() for s in flat_specs(item)]
    return [specs]


def _specs_of(inputs):
    if isinstance(inputs, (list, tuple)):
        return [_specs_of(x) for x in inputs]
    if isinstance(inputs, dict):
        return {k: _specs_of(v) for k, v in inputs.items()}
    return _spec(inputs)


def _key(specs):
    if isinstance(specs, list):
        return tuple(_key(s) for s in specs)
    if isinstance(specs, dict):
        return tuple((k, _key(v)) for k, v in specs.items())
    return specs


def trace_for(layer, inputs, training):
    """The trace of layer.call for inputs like `inputs` (arrays or symbolic tensors), made once."""
    return trace_for_specs(layer, _specs_of(inputs), training)


def trace_for_specs(layer, specs, training, mask_spec=None):
    """The trace of layer.call for inputs described by `specs` (and a mask described by
    `mask_spec`), made once per specs, mask spec and mode."""
    mode = bool(training) if _takes(layer, "training") else None
    key = (_key(specs), mode) if mask_spec is None else (_key(specs), mode, mask_spec)
    found = layer._traces.get(key)
    if found is None:
        with _TRACE_LOCK:
            found = layer._traces.get(key)  # (another thread may have made it meanwhile)
            if found is None:
                found = layer._traces[key] = trace(layer, specs, bool(training), mask_spec)
    return found


def forward(layer, inputs, training, kwargs):
    """The traced layer's (outputs, cache)."""
    kwargs = dict(kwargs)
    keep_cache = kwargs.pop("keep_cache", False)
    mask = kwargs.pop("mask", None)
    if kwargs:
        raise TypeError(f"{type(layer).__name__} '{layer.name}': unexpected call arguments {sorted(kwargs)} "
                        "(a traced call() takes its inputs, training and mask)")
    flat = flatten(inputs)
    masks = None
    if mask is not None:  # the inputs' masks flow on through the graph: the layers inside see them
        masks = list(mask) if isinstance(mask, (list, tuple)) else [mask]
        masks = (masks + [None] * len(flat))[:len(flat)]
    if mask is not None and takes_mask(layer):
        if isinstance(mask, (list, tuple, dict)):
            raise TypeError(f"{type(layer).__name__} '{layer.name}': call() takes one mask array (the mask of its "
                            f"first input), got a {type(mask).__name__}")
        mask = np.asarray(mask, bool)
        found = trace_for_specs(layer, _specs_of(inputs), training, _spec(mask))
        flat = flat + [mask]
        masks = masks + [None]
    else:  # (a call() that takes no mask argument does not get one, as in Keras)
        found = trace_for(layer, inputs, training)
    outputs, tape = found.graph.forward(flat, training, keep_cache=keep_cache, masks=masks)
    return pack_like(found.outputs, outputs), TracedCall(found, tape)


def backward(layer, cache, dys, need_input_grad, accumulate):
    """The traced layer's input gradients (weights' gradients into the flat buffer)."""
    found, tape = cache.trace, cache.tape
    n_in = found.n_inputs
    d_outputs = flatten(dys) if len(found.graph.outputs) > 1 else [dys]
    needs = need_input_grad if isinstance(need_input_grad, (list, tuple)) else [need_input_grad] * n_in
    needs = list(needs) + [False] * (len(found.graph.inputs) - n_in)  # the mask has no gradient
    d_inputs = found.graph.backward(tape, d_outputs, needs, accumulate)[:n_in]
    return d_inputs[0] if n_in == 1 else d_inputs


def output_shape(layer, input_shape, dtypes=None):
    """The output shape(s) of the traced layer for `input_shape` (traced in inference mode).

    Args:
        dtypes: optional list of the inputs' dtypes (default: the layer's input dtype).
    """
    default = np.dtype(layer.input_dtype).name
    dtypes = iter(dtypes or ())

    def spec(shape):
        return (None,) + tuple(shape[1:]), next(dtypes, default)

    specs = _map_specs(input_shape, spec)
    found = trace_for_specs(layer, specs, False)
    shapes = [t.shape for t in flatten(found.outputs)]
    return shapes[0] if isinstance(found.outputs, KerasTensor) else shapes

