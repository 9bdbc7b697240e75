"""Kernel errors in the words of the public function that called the kernel.

Several ``fastnn.ops`` functions share a kernel whose arguments have other names (``ops.conv``'s
``inputs``, ``kernel`` and ``bias`` are the conv kernel's ``x``, ``w`` and ``b``; Keras'
``ops.batch_normalization`` passes ``scale`` and ``offset`` as the layer's ``gamma`` and
``beta``). The kernels quote argument names (``'x' must be ...``), so the public names are put
back into their messages here rather than each function repeating the kernel's checks.
"""

import contextlib


@contextlib.contextmanager
def public_names(function, kernel, **names):
    """Re-raises a ValueError/TypeError of `kernel` as `function`'s, with each quoted kernel
    argument name (a key of `names`) replaced by its public name (the value)."""
    try:
        yield
    except (ValueError, TypeError) as exc:
        if type(exc) not in (ValueError, TypeError):
            raise
        message = str(exc)
        if message.startswith(kernel + ":"):
            message = function + message[len(kernel):]
        for inner, public in names.items():
            message = message.replace(f"'{inner}'", f"'{public}'").replace(f"{inner}.shape", f"{public}.shape")
        if message == str(exc):
            raise
        raise type(exc)(message) from None
