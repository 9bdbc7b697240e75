"""Symbolic tensors: what ``keras.Input``, and layers and ops called on it, return.

A ``KerasTensor`` has a shape (``None`` for the batch axis and any other unknown size) and
a dtype, but no values. Calling a layer or a ``fastnn.ops`` function on one records a node
of the model graph (``fastnn.graph``) and returns new KerasTensors; ``keras.Model(inputs,
outputs)`` then turns the recorded nodes into a model. Python operators (``x + y``,
``x @ w``, ``x[:, 0]``, ``-x``...) are ``fastnn.ops`` calls, so they are recorded too.

Because a KerasTensor has no values, Python control flow that depends on them (``if x >
0:``, ``while``, ``bool(x)``, ``float(x)``, ``np.asarray(x)``) cannot be recorded: it
raises a ``TypeError`` saying why (a traced graph would bake in one branch). Decide on
shapes and Python arguments instead, or use ``fastnn.ops.where`` for elementwise choices.
"""

import numpy as np

from .operators import ArithmeticOperators

_CONTROL_FLOW = ("{what} on a symbolic tensor ({tensor}): it has no value while the model graph is built "
                 "(functional API, or a traced call()), so Python control flow or conversions that depend on "
                 "tensor values cannot be recorded -- the graph would keep one branch for every input. Decide "
                 "on shapes and Python arguments (such as `training`) instead, and use fastnn.ops functions "
                 "for values (fastnn.ops.where(condition, x, y) for elementwise choices).")


def _ops():
    from . import ops

    return ops


class KerasTensor(ArithmeticOperators):
    """A symbolic tensor: shape and dtype, no values (Keras 3's ``keras.KerasTensor``).

    Args:
        shape: tuple of ints or None (None: unknown, e.g. the batch axis).
        dtype: str, default "float32".
        name: str, default None.

    Attributes:
        shape, dtype, name, ndim.
    """

    __array_priority__ = 2000  # ndarray <op> KerasTensor defers to KerasTensor

    def __init__(self, shape, dtype="float32", name=None):
        self.shape = tuple(None if d is None else int(d) for d in shape)
        self.dtype = np.dtype(dtype).name
        self.name = name
        self._keras_history = None  # (operation, node_index, tensor_index), set by the node making it

    @property
    def ndim(self):
        return len(self.shape)

    def __repr__(self):
        return f"<KerasTensor shape={self.shape}, dtype={self.dtype}, name={self.name}>"

    def _describe(self):
        return f"'{self.name}', shape {self.shape}"

    # ---- no values -----------------------------------------------------------------------------
    def _refuse(self, what):
        raise TypeError(_CONTROL_FLOW.format(what=what, tensor=self._describe()))

    def __bool__(self):
        self._refuse("bool() (an if/while/and/or)")

    def __array__(self, dtype=None, copy=None):
        self._refuse("Conversion to a NumPy array")

    def __float__(self):
        self._refuse("float()")

    def __int__(self):
        self._refuse("int()")

    def __index__(self):
        self._refuse("Use as an index")

    def __iter__(self):
        raise TypeError(f"Iterating over a symbolic tensor ({self._describe()}) is not possible: its values and "
                        "possibly its length are unknown while the graph is built. Index it with a Python int "
                        "(x[:, 0]) or use fastnn.ops functions.")

    def __len__(self):
        raise TypeError(f"len() of a symbolic tensor ({self._describe()}): use x.shape[0], which is None for "
                        "the batch axis")

    # ---- comparisons: recorded ops too (the arithmetic comes from ArithmeticOperators) -------------
    def __lt__(self, other): return _ops().less(self, other)
    def __le__(self, other): return _ops().less_equal(self, other)
    def __gt__(self, other): return _ops().greater(self, other)
    def __ge__(self, other): return _ops().greater_equal(self, other)
    def __ne__(self, other): return _ops().not_equal(self, other)
    __eq__ = object.__eq__  # identity, as Keras: tensors are kept in lists and dicts
    __hash__ = object.__hash__


def is_keras_tensor(x):
    """Whether x is a symbolic tensor (Keras' ``keras.utils.is_keras_tensor``)."""
    return isinstance(x, KerasTensor)


def any_symbolic(args, kwargs=None):
    """Whether a KerasTensor is among args / kwargs (looking one level into lists, tuples and dicts)."""
    for value in (args if kwargs is None else (*args, *kwargs.values())):
        if isinstance(value, KerasTensor):
            return True
        if isinstance(value, (list, tuple)):
            if any(isinstance(v, KerasTensor) for v in value):
                return True
        elif isinstance(value, dict):
            if any(isinstance(v, KerasTensor) for v in value.values()):
                return True
    return False
