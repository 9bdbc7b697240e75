"""Checks of layer constructor arguments, shared by the layers.

Each helper takes the value, the argument's name and the caller (``who``, e.g. "Dense" or
"Dense 'dense_3'") and returns the value normalised (a Python int, float or tuple), or raises
an error naming the caller, the argument, what was expected and what came. As in Keras: an
int argument refuses floats (even 2.0) and bools, a float argument refuses bools, strings and
NaN. The error class follows Keras where Keras checks the argument (e.g. ValueError for a
non-int ``units``); otherwise TypeError for a wrong type and ValueError for a wrong value.
"""

import math

import numpy as np

from .. import activations as _activations

MAX_ELEMENTS = 2**63 - 1  # an array's element count (and byte count) must fit an int64


def is_int(value):
    """A Python or NumPy integer, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value):
    """A Python or NumPy integer or float, not a bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _bounds(low, high, low_open, high_open):
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high:g}"
    return ""


def integer(value, arg, who, minimum=None, allow_none=False, type_error=TypeError):
    """`value` as a Python int >= `minimum` (None kept with `allow_none`).

    Raises:
        type_error (default TypeError): not an int (floats and bools included).
        ValueError: below `minimum`.
    """
    if value is None and allow_none:
        return None
    expected = ("None or " if allow_none else "") + "an int" + ("" if minimum is None else f" >= {minimum}")
    if not is_int(value):
        raise type_error(f"{who}: '{arg}' must be {expected}, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{who}: '{arg}' must be {expected}, got {value!r}")
    return int(value)


def number(value, arg, who, low=None, high=None, low_open=False, high_open=False, allow_none=False,
           finite=True, type_error=TypeError):
    """`value` as a Python float, finite (unless `finite` is False; NaN never passes) and in range.

    Raises:
        type_error (default TypeError): not a number (bools and strings included).
        ValueError: None (a missing value, as Keras' ReLU says), NaN, infinite (with
            `finite`) or out of range.
    """
    if value is None and allow_none:
        return None
    expected = ("a finite number" if finite else "a number") + _bounds(low, high, low_open, high_open)
    expected += " or None" if allow_none else ""
    if not is_number(value):
        if value is None:
            raise ValueError(f"{who}: '{arg}' must be {expected}, got None")
        raise type_error(f"{who}: '{arg}' must be {expected}, got {value!r}")
    v = float(value)
    bad = (math.isnan(v) or (finite and math.isinf(v))
           or (low is not None and (v <= low if low_open else v < low))
           or (high is not None and (v >= high if high_open else v > high)))
    if bad:
        raise ValueError(f"{who}: '{arg}' must be {expected}, got {value!r}")
    return v


def rate(value, arg, who, allow_one=False):
    """A dropout rate as a float in [0, 1) (or [0, 1] with `allow_one`); ValueError otherwise (as Keras)."""
    return number(value, arg, who, 0.0, 1.0, high_open=not allow_one, type_error=ValueError)


def seed(value, who, arg="seed"):
    """A seed: None or an int >= 0 (ValueError otherwise, as Keras' SeedGenerator)."""
    return integer(value, arg, who, minimum=0, allow_none=True, type_error=ValueError)


def axis(value, arg, who):
    """An axis: an int (TypeError for anything else: 1.5 is not truncated to 1)."""
    return integer(value, arg, who)


def activation(value, arg, who):
    """``fastnn.activations.get(value)``, its errors naming the caller and the argument
    (``recurrent_activation``, not just "activation"): ValueError for an unknown name,
    TypeError for what is neither a string, a callable nor None."""
    try:
        return _activations.get(value)
    except ValueError as exc:
        raise ValueError(f"{who}: '{arg}': {exc}") from None
    except TypeError:
        raise TypeError(f"{who}: '{arg}' must be a string, a callable or None, got {value!r}") from None


def constraint(value, arg, who):
    """``fastnn.constraints.get(value)``, its errors naming the caller and the argument."""
    from .. import constraints

    try:
        return constraints.get(value)
    except ValueError as exc:
        raise ValueError(f"{who}: '{arg}': {exc}") from None
    except TypeError:
        raise TypeError(f"{who}: '{arg}' must be None, a name, a dict, a fastnn.constraints.Constraint or a "
                        f"callable, got {value!r}") from None


def int_tuple(value, n, arg, who, minimum=1):
    """An int (repeated `n` times) or `n` ints, each >= `minimum`, as a tuple (Keras' standardize_tuple).

    Raises:
        TypeError: a string, a non-iterable, or an element that is not an int (2.0, True).
        ValueError: not `n` elements, or an element below `minimum`.
    """
    expected = f"an int or a tuple of {n} ints >= {minimum}"
    if is_int(value):
        values = (value,) * n
    else:
        if isinstance(value, (str, bytes)):
            raise TypeError(f"{who}: '{arg}' must be {expected}, got {value!r}")
        try:
            values = tuple(value)
        except TypeError:
            raise TypeError(f"{who}: '{arg}' must be {expected}, got {value!r}") from None
        if not all(is_int(v) for v in values):
            raise TypeError(f"{who}: '{arg}' must be {expected}, got {value!r}")
        if len(values) != n:
            raise ValueError(f"{who}: '{arg}' must be {expected}, got {value!r}")
    if any(v < minimum for v in values):
        raise ValueError(f"{who}: '{arg}' must be {expected}, got {value!r}")
    return tuple(int(v) for v in values)


class TooLarge(ValueError):
    """An array (a weight, an output) too large to exist. The layers add which of their
    arguments sized it (``Layer._check_size`` and ``Layer.ensure_built``)."""


def check_size(shape, who, what="the output", itemsize=1, origin=""):
    """TooLarge (a ValueError) unless an array of `shape` (Python ints) and `itemsize` bytes per
    value can exist: its sizes' product (zeros aside, as NumPy counts) times itemsize at most
    2**63 - 1. The product is exact, never a wrapped-around int64. `origin` (see size_origin)
    ends the message."""
    count = math.prod(d for d in shape if d)
    if count * itemsize > MAX_ELEMENTS:
        unit = "elements" if itemsize == 1 else f"bytes ({itemsize} per value)"
        raise TooLarge(f"{who}: {what} would have shape {tuple(shape)}: its sizes (zeros aside) multiply to "
                       f"more than 2**63 - 1 {unit}{origin}")


def size_origin(who, arguments, input_shape):
    """The end of a TooLarge message: which layer made the size, from which of its arguments
    ({name: value}) and which input shape, e.g. "; Dense 'dense' made it from units=2**63-1 ..."."""
    made = ", ".join(f"{name}={value!r}" for name, value in arguments.items())
    shapes = "shapes" if isinstance(input_shape, list) else "shape"  # (attention's query and value)
    return f"; {who} made it from {made + ' and ' if made else ''}the input {shapes} {input_shape}"
