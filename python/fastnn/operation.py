"""Operations: what a graph node runs (Keras 3's ``keras.Operation``).

``Operation`` is the contract the graph executor talks to; ``Layer`` is the operation with
weights, and ``FunctionOperation`` is a ``fastnn.ops`` function (``add``, ``matmul``,
``softmax``...) applied to symbolic tensors. The contract::

    forward(inputs, training=False, **kwargs) -> (outputs, cache)
    backward(cache, dys, need_input_grad=True, accumulate=False) -> dxs

Lists stand for several inputs or outputs. ``backward`` returns the gradients of the call's
tensor arguments in call order (one array when the call had one tensor), and puts the
gradients of the weights it read into their ``grad`` arrays: written when ``accumulate`` is
False, added when it is True (the executor decides, see ``fastnn.graph``).

``training`` is behaviour, and a forward pass in training also returns the cache. An
operation whose outputs depend on ``training`` (Dropout, BatchNormalization, augmentation,
recurrent dropout, a nested model) sets ``_training_dependent`` and takes
``forward(..., training=False, keep_cache=True)``: it then behaves as in inference and still
returns the cache its backward needs (Keras' fine-tuning idiom ``base(x, training=False)``
backpropagates through the base). Other operations behave the same either way, so the
executor simply calls them with ``training=True`` when it needs their cache.
"""

import functools
import threading

import numpy as np

from . import autodiff
from .keras_tensor import KerasTensor, any_symbolic
from .structure import Slot, fill, flatten, template

class _TracingDepth(threading.local):
    """``_TRACING[0]``: how many call()s this thread is tracing (> 0: ops on weights alone are
    recorded too). Per thread: a trace in one thread leaves another thread's eager calls eager."""

    depth = 0

    def __getitem__(self, index):
        return self.depth

    def __setitem__(self, index, value):
        self.depth = value


_TRACING = _TracingDepth()
_TRAINABLE_EPOCH = [0]
_NAMES_LOCK = threading.Lock()


def trainable_epoch():
    """A counter bumped whenever a layer or weight changes trainability (graphs re-plan then)."""
    return _TRAINABLE_EPOCH[0]


def trainability_changed():
    """Bumps the trainability counter (a layer or weight was frozen or unfrozen)."""
    _TRAINABLE_EPOCH[0] += 1


class Operation:
    """Base of layers and recorded ops: a name, the nodes it was called in, the contract."""

    activity_regularizer = None
    supports_masking = False
    _training_dependent = False
    _consumes_mask = False
    _graph_masks = False
    _is_input_layer = False

    def __init__(self, name=None):
        self.name = name or type(self).__name__.lower()
        self._inbound_nodes = []

    def forward(self, inputs, training=False, **kwargs):
        """(outputs, cache) for `inputs`; the cache is what backward needs (None when not training)."""
        raise TypeError(f"{type(self).__name__} must implement forward(inputs, training)")

    def backward(self, cache, dys, need_input_grad=True, accumulate=False):
        """The inputs' gradients from the outputs' (dys); weight gradients into their grad arrays."""
        raise TypeError(f"{type(self).__name__} must implement backward(cache, dys)")

    def compute_mask(self, inputs, mask=None):
        """The mask of the output for `inputs` carrying `mask` (Keras masking)."""
        return mask if self.supports_masking else None

    def _may_produce_mask(self):
        """Whether this operation can make a mask from unmasked inputs (Embedding(mask_zero))."""
        return False

    def _grad_variables(self):
        """The Variables whose gradients backward writes."""
        return []


def _is_variable(value):
    from .layers.base import Variable

    return isinstance(value, Variable)


class FunctionOperation(Operation):
    """A ``fastnn.ops`` function applied to symbolic tensors (and weights), as a graph node.

    Forward calls the function on the node's input values; in training it calls it on
    ``fastnn.autodiff`` tensors, so that backward is the function's own recorded derivative.
    Weights (Variables) among the arguments are read at each call and receive gradients.

    Args:
        fn: the ops function (the plain one, without the symbolic dispatch).
        args, kwargs: the call's arguments, with KerasTensors and Variables in place.
    """

    def __init__(self, fn, args, kwargs, name=None):
        super().__init__(name=name or unique_name(fn.__name__))
        self.fn = fn
        self.tensors, self.variables = [], []
        kinds = {"tensor": (lambda leaf: isinstance(leaf, KerasTensor), self.tensors),
                 "variable": (_is_variable, self.variables)}
        self.args_template = template(args, kinds)
        self.kwargs_template = template(kwargs, kinds)

    def _call(self, tensors, variables):
        values = {"tensor": tensors, "variable": variables}
        return self.fn(*fill(self.args_template, values), **fill(self.kwargs_template, values))

    # ---- building the node -----------------------------------------------------------------------
    @classmethod
    def apply(cls, fn, args, kwargs):
        """Records ``fn(*args, **kwargs)`` on symbolic tensors; returns the output KerasTensor."""
        from .graph import Node

        op = cls(fn, args, kwargs)
        shape, dtype = op._infer_output(args, kwargs)
        out = KerasTensor(shape, dtype, name=op.name)
        Node(op, (list(op.tensors),), {}, out)
        return out

    def _infer_output(self, args, kwargs):
        """Output shape and dtype from two runs on small arrays of ones: axes whose size changes
        with the unknown sizes (given 2, then 3) are unknown (None) in the output."""
        results = []
        for size in (2, 3):
            values = [np.ones(tuple(size if d is None else d for d in t.shape), dtype=t.dtype) for t in self.tensors]
            try:
                with np.errstate(all="ignore"):
                    out = self._call(values, [v.value for v in self.variables])
            except Exception as e:
                shapes = ", ".join(str(t.shape) for t in self.tensors)
                raise ValueError(f"ops.{self.fn.__name__}: cannot be applied to inputs of shapes {shapes}: "
                                 f"{type(e).__name__}: {e}") from e
            out = np.asarray(autodiff.value_of(out))
            results.append(out)
        a, b = results
        if a.ndim != b.ndim:
            raise ValueError(f"ops.{self.fn.__name__}: the number of output axes depends on the unknown input "
                             f"sizes (inputs {[t.shape for t in self.tensors]}); give the inputs known shapes")
        shape = tuple(None if da != db else int(da) for da, db in zip(a.shape, b.shape))
        return shape, a.dtype

    # ---- the contract ------------------------------------------------------------------------------
    def forward(self, tensors, training=False):
        """(output, cache) for the values of the node's tensor inputs (a list, in order)."""
        if not training:
            out = self._call(tensors, [v.value for v in self.variables])
            return np.asarray(autodiff.value_of(out)), None
        leaves = [autodiff.Tensor(x) if np.asarray(x).dtype.kind == "f" else x for x in tensors]
        var_leaves = [autodiff.Tensor(v.value) for v in self.variables]
        out = self._call(leaves, var_leaves)
        return np.asarray(autodiff.value_of(out)), (leaves, var_leaves, out)

    def backward(self, cache, dys, need_input_grad=True, accumulate=False):
        leaves, var_leaves, out = cache
        grads = autodiff.backward(out, np.asarray(dys)) if isinstance(out, autodiff.Tensor) else {}
        dxs = []
        for leaf in leaves:
            g = grads.get(id(leaf)) if isinstance(leaf, autodiff.Tensor) else None
            dxs.append(None if g is None else np.ascontiguousarray(np.broadcast_to(g, leaf.shape),
                                                                   dtype=leaf.value.dtype))
        for var, leaf in zip(self.variables, var_leaves):
            if var.grad is None or not var._trainable_now():
                continue
            g = grads.get(id(leaf))
            if g is None:
                if not accumulate:
                    var.grad.fill(0)
            elif accumulate:
                var.grad += np.broadcast_to(g, var.shape).astype(var.grad.dtype, copy=False)
            else:
                var.grad[...] = np.broadcast_to(g, var.shape)
        return dxs[0] if len(dxs) == 1 else dxs

    def _grad_variables(self):
        return [v for v in self.variables if v.grad is not None and v._trainable_now()]

    def get_config(self):
        if self.variables:
            raise ValueError(f"Cannot save the op '{self.name}': it reads weights directly; put it in a layer's "
                             "call() so that the layer saves it")
        constants = [c for c in flatten((self.args_template, self.kwargs_template))
                     if not isinstance(c, Slot)]
        for c in constants:
            if not (c is None or isinstance(c, (bool, int, float, str, np.generic, np.ndarray, slice,
                                                type(Ellipsis)))):
                raise ValueError(f"Cannot save the op '{self.name}': its argument {c!r:.60} is not a plain value")
        return {"name": self.name, "function": self.fn.__name__,
                "args": _encode(self.args_template), "kwargs": _encode(self.kwargs_template)}

    @classmethod
    def from_config(cls, config):
        """An op node to be called again on tensors (the inverse of get_config)."""
        from . import ops

        fn = getattr(ops, config["function"], None)
        if fn is None or not hasattr(fn, "__wrapped__"):
            raise ValueError(f"Unknown op function {config['function']!r} in a saved graph")
        op = cls.__new__(cls)
        Operation.__init__(op, name=config.get("name"))
        op.fn = fn.__wrapped__
        op.tensors, op.variables = [], []
        op.args_template = _decode(config["args"])
        op.kwargs_template = _decode(config["kwargs"])
        return op

    def __call__(self, tensors):
        """Calls the restored op on its symbolic tensor inputs (a list: rebuilding a saved graph)."""
        from .graph import Node

        self.tensors = list(tensors)
        shape, dtype = self._infer_output((), {})
        out = KerasTensor(shape, dtype, name=self.name)
        Node(self, (list(tensors),), {}, out)
        return out

    def __repr__(self):
        return f"<FunctionOperation ops.{self.fn.__name__} name={self.name}>"


def _encode(value):
    """A call template's value as JSON-ready data (slots, slices and arrays tagged)."""
    if isinstance(value, Slot):
        return {"__tensor__": value.index}  # (variables are never saved: get_config refuses them)
    if isinstance(value, slice):
        return {"__slice__": [value.start, value.stop, value.step]}
    if value is Ellipsis:
        return {"__ellipsis__": True}
    if isinstance(value, np.ndarray):
        return {"__array__": value.tolist(), "dtype": value.dtype.str}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(t) for t in value]}
    if isinstance(value, list):
        return [_encode(t) for t in value]
    if isinstance(value, dict):
        return {"__dict__": {k: _encode(v) for k, v in value.items()}}
    return value


def _decode(data):
    if isinstance(data, list):
        return [_decode(d) for d in data]
    if isinstance(data, dict):
        if "__tensor__" in data:
            return Slot("tensor", int(data["__tensor__"]))
        if "__slice__" in data:
            return slice(*data["__slice__"])
        if "__ellipsis__" in data:
            return Ellipsis
        if "__array__" in data:
            return np.asarray(data["__array__"], dtype=np.dtype(data["dtype"]))
        if "__tuple__" in data:
            return tuple(_decode(d) for d in data["__tuple__"])
        if "__dict__" in data:
            return {k: _decode(v) for k, v in data["__dict__"].items()}
    return data


_NAME_COUNTS = {}


def unique_name(prefix):
    """`prefix`, then `prefix_1`, `prefix_2`...: one namespace for layers and ops (as Keras), so
    names in a model's config never collide (an Add layer and an ops.add are add and add_1)."""
    with _NAMES_LOCK:  # (layers made in several threads at once still get distinct names)
        count = _NAME_COUNTS.get(prefix, 0)
        _NAME_COUNTS[prefix] = count + 1
    return prefix if count == 0 else f"{prefix}_{count}"


def symbolic(fn):
    """Decorates an ops function: called on symbolic tensors (or, while a call() is traced, on
    weights) it records a graph node instead of computing."""

    @functools.wraps(fn)
    def dispatch(*args, **kwargs):
        if any_symbolic(args, kwargs) or (_TRACING[0] and _any_variable(args, kwargs)):
            return FunctionOperation.apply(fn, args, kwargs)
        return fn(*args, **kwargs)

    return dispatch


def _any_variable(args, kwargs):
    return any(_is_variable(v) for v in flatten((args, kwargs)))
