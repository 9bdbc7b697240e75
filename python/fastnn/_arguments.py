"""Names the argument of a ``fastnn._core`` call that pybind11 could not convert.

Each kernel binding has a second overload, ``f(*args, **kwargs)``, that calls ``diagnose``.
pybind11 tries every overload first without implicit conversions, so the catch-all is reached
both when an argument cannot convert at all and when it needs a conversion the first overload
would make (an int for a float or bool parameter, a NumPy scalar). ``diagnose`` therefore
converts what pybind11 would convert and calls the function again, or raises the error a user
can act on ("dropout_forward: 'rate' must be a float, got str") instead of pybind11's
"incompatible function arguments" listing of C++ types.
"""

import numbers
import operator
import re

_PARAMETER = re.compile(r"(\w+): (.+?)(?: = .*)?$")


def _parameters(signature):
    """[(name, type name, has a default)] from pybind11's ``f(a: float, b: int = 0) -> object``."""
    inner = signature[signature.index("(") + 1:signature.rindex(")")]
    out, depth, current = [], 0, ""
    for ch in inner + ",":  # split on the commas outside brackets (defaults may hold some)
        if ch == "," and depth == 0:
            part = current.strip()
            if part:
                match = _PARAMETER.match(part)
                if match:
                    out.append((match.group(1), match.group(2), "=" in part))
            current = ""
            continue
        depth += ch in "([{" and 1 or 0
        depth -= ch in ")]}" and 1 or 0
        current += ch
    return out


def _kind(annotation):
    """pybind11's annotation of a C++ scalar as float / int / bool / str (or None: any object).
    Recent pybind11 writes ``typing.SupportsFloat | typing.SupportsIndex`` for a double."""
    if annotation in ("float", "int", "bool", "str"):
        return annotation
    if "SupportsFloat" in annotation:
        return "float"
    if "SupportsInt" in annotation:
        return "int"
    return None


# The integer arguments left typed in the bindings are C++ ints, but the seeds (uint64) and
# the vocabulary size (int64).
_INT_RANGES = {"seed": (0, 2**64 - 1), "vocabulary": (-2**63, 2**63 - 1)}


def _problem(kind, value, name):
    """Why `value` does not convert to the C++ `kind`, or None."""
    if kind == "float":
        if not isinstance(value, (numbers.Real, np_bool())):  # bools as pybind11 takes them
            return "must be a float"
        try:
            float(value)
        except OverflowError:
            return "must be a float in the double range"
        return None
    if kind == "int":  # (a bool is an int to pybind11, which takes it in its first pass)
        if not isinstance(value, numbers.Integral):
            return "must be an int"
        low, high = _INT_RANGES.get(name, (-2**31, 2**31 - 1))
        if not low <= int(value) <= high:
            return f"must be an int in [{low}, {high}]"
        return None
    if kind == "bool":  # what pybind11 converts: None and a number's truth value
        return None if value is None or isinstance(value, (bool, np_bool(), numbers.Real)) else "must be a bool"
    if kind == "str":
        return None if isinstance(value, (str, bytes)) else "must be a string"  # (pybind11 decodes bytes)
    return None


def np_bool():
    """NumPy's bool scalar type (not a numbers.Integral), imported on first use."""
    import numpy
    return numpy.bool_


def _converted(kind, value):
    """`value` as the exact Python type of the C++ `kind` (what pybind11's conversion gives)."""
    if kind == "float":
        return float(value)
    if kind == "int":
        return operator.index(value)
    if kind == "bool":
        return bool(value) if value is not None else False
    return value


def diagnose(name, signature, args, kwargs):
    """Calls the function again with the scalar arguments converted as pybind11 would convert
    them, or raises the TypeError / ValueError that names the argument that does not convert."""
    parameters = _parameters(signature)
    names = [p[0] for p in parameters]
    if len(args) > len(parameters):
        raise TypeError(f"{name}: takes {len(parameters)} arguments ({', '.join(names)}), got {len(args)}")
    given = dict(zip(names, args))
    for key, value in kwargs.items():
        if key not in names:
            raise TypeError(f"{name}: unexpected argument {key!r}; it takes {', '.join(names)}")
        if key in given:
            raise TypeError(f"{name}: argument {key!r} given twice")
        given[key] = value
    converted, changed = {}, False
    for parameter, annotation, has_default in parameters:
        if parameter not in given:
            if not has_default:
                raise TypeError(f"{name}: missing argument {parameter!r}")
            continue
        value, kind = given[parameter], _kind(annotation)
        problem = _problem(kind, value, parameter)
        if problem is not None:
            error = ValueError if " in " in problem else TypeError
            raise error(f"{name}: {parameter!r} {problem}, got {type(value).__name__} {value!r:.80}")
        converted[parameter] = _converted(kind, value)
        changed |= type(converted[parameter]) is not type(value)
    if changed:  # exact types now: the typed overload takes them in pybind11's first pass
        from fastnn import _core
        positional = []
        for parameter, _, _ in parameters:  # positionally up to the first default left out
            if parameter not in converted:
                break
            positional.append(converted.pop(parameter))
        return getattr(_core, name)(*positional, **converted)
    raise TypeError(f"{name}: invalid arguments for {signature}")
