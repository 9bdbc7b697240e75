"""Python's arithmetic operators as ``fastnn.ops`` maths, for the array-like classes that take
part in it: autodiff tensors (custom losses), symbolic tensors (model graphs) and weights
(``Variable``, in a custom layer's ``call``). ``x + y`` is ``ops.add(x, y)``, ``x @ w`` is
``ops.matmul(x, w)``, ``x[:, 0]`` is ``ops.take_index(x, (slice(None), 0))``..., so each
class records or computes the same maths the functions do."""


def _ops():
    from .ops import math

    return math


def _matmul():
    from .ops import matmul

    return matmul


class ArithmeticOperators:
    """Mixin: the arithmetic operators, each one ``fastnn.ops`` call."""

    def __add__(self, other): return _ops().add(self, other)
    def __radd__(self, other): return _ops().add(other, self)
    def __sub__(self, other): return _ops().subtract(self, other)
    def __rsub__(self, other): return _ops().subtract(other, self)
    def __mul__(self, other): return _ops().multiply(self, other)
    def __rmul__(self, other): return _ops().multiply(other, self)
    def __truediv__(self, other): return _ops().divide(self, other)
    def __rtruediv__(self, other): return _ops().divide(other, self)
    def __matmul__(self, other): return _matmul()(self, other)
    def __rmatmul__(self, other): return _matmul()(other, self)
    def __pow__(self, other): return _ops().power(self, other)
    def __rpow__(self, other): return _ops().power(other, self)
    def __neg__(self): return _ops().negative(self)
    def __pos__(self): return self
    def __abs__(self): return _ops().abs(self)
    def __getitem__(self, index): return _ops().take_index(self, index)

    @property
    def T(self):
        return _ops().transpose(self)
