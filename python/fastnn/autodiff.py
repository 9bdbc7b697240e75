"""A small reverse-mode autodiff over fastnn.ops math, for custom losses and activations.

A function written with ``fastnn.ops`` (mean, square, log, clip, where, ...) and Python
arithmetic runs on NumPy arrays as usual; called on a ``Tensor`` it also records how each
result was made, and ``vjp`` walks that record backwards. Only what custom losses need:
elementwise maths with broadcasting, reductions, and a few shape functions.

Example:
    >>> import numpy as np
    >>> from fastnn import autodiff, ops
    >>> autodiff.grad(lambda x: ops.sum(ops.square(x)), np.array([1.0, 2.0]))
    array([2., 4.])
"""

import numpy as np

from .operators import ArithmeticOperators


class Tensor(ArithmeticOperators):
    """A value with the operations that produced it (its parents and their local derivatives)."""

    __array_priority__ = 1000  # so that ndarray <op> Tensor defers to Tensor

    def __init__(self, value, parents=()):
        self.value = np.asarray(value)
        self.parents = parents  # tuple of (Tensor, function mapping d(self) to d(parent))

    shape = property(lambda self: self.value.shape)
    ndim = property(lambda self: self.value.ndim)
    dtype = property(lambda self: self.value.dtype)
    size = property(lambda self: self.value.size)

    def __len__(self):
        return len(self.value)

    def __array__(self, dtype=None, copy=None):
        return self.value if dtype is None else self.value.astype(dtype)

    def numpy(self):
        return self.value

    def __repr__(self):
        return f"Tensor({self.value!r})"

    # comparisons give plain boolean arrays (no derivative)
    def __lt__(self, other): return self.value < value_of(other)
    def __le__(self, other): return self.value <= value_of(other)
    def __gt__(self, other): return self.value > value_of(other)
    def __ge__(self, other): return self.value >= value_of(other)

    def __eq__(self, other): return self.value == value_of(other)
    def __ne__(self, other): return self.value != value_of(other)
    __hash__ = object.__hash__


def value_of(x):
    """The array inside a Tensor, or x itself."""
    return x.value if isinstance(x, Tensor) else x


def is_traced(*args):
    return any(isinstance(a, Tensor) for a in args)


def unbroadcast(grad, shape):
    """Sums grad over the axes broadcasting added or stretched, back to `shape`."""
    grad = np.asarray(grad)
    if grad.shape == tuple(shape):
        return grad
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    return grad.reshape(shape)


def backward(output, seed=None):
    """Gradients of `output` (seed: d(loss)/d(output), default ones) for every Tensor on its path.

    Returns a dict id(tensor) -> gradient array.
    """
    order, seen = [], set()

    def visit(node):  # iterative depth-first topological sort
        stack = [(node, False)]
        while stack:
            current, done = stack.pop()
            if done:
                order.append(current)
                continue
            if id(current) in seen:
                continue
            seen.add(id(current))
            stack.append((current, True))
            for parent, _ in current.parents:
                if id(parent) not in seen:
                    stack.append((parent, False))

    visit(output)
    grads = {id(output): np.ones_like(output.value, dtype=np.float64) if seed is None else np.asarray(seed)}
    for node in reversed(order):
        g = grads.get(id(node))
        if g is None:
            continue
        for parent, local in node.parents:
            contribution = local(g)
            if contribution is None:
                continue
            key = id(parent)
            grads[key] = grads[key] + contribution if key in grads else contribution
    return grads


def grad(fn, x):
    """d fn(x) / dx for a function returning a scalar (or the gradient of its sum)."""
    leaf = Tensor(np.asarray(x, dtype=np.float64) if np.asarray(x).dtype.kind != "f" else x)
    out = fn(leaf)
    if not isinstance(out, Tensor):
        return np.zeros_like(leaf.value)
    g = backward(out).get(id(leaf))
    return np.zeros_like(leaf.value) if g is None else np.asarray(g, dtype=leaf.value.dtype)


def vjp(fn, x, dy):
    """dy · ∂fn(x)/∂x for an elementwise or any function of one array."""
    leaf = Tensor(x)
    out = fn(leaf)
    if not isinstance(out, Tensor):
        return np.zeros_like(leaf.value)
    g = backward(out, np.broadcast_to(dy, out.shape)).get(id(leaf))
    return np.zeros_like(leaf.value) if g is None else np.asarray(g)


__all__ = ["Tensor", "grad", "vjp", "backward", "value_of"]
