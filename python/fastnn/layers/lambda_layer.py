"""The Lambda layer: a function written with ``fastnn.ops`` maths, as a layer."""

import inspect

from ..structure import flatten
from .base import Layer, _as_shape


class Lambda(Layer):
    """Wraps a function of tensors as a layer: ``Lambda(lambda x: fastnn.ops.square(x))``.

    The function is traced once on symbolic inputs (see ``fastnn.tracing``): it must compute
    with ``fastnn.ops`` functions and Python operators on its inputs (NumPy functions cannot
    see symbolic tensors and raise a clear error), and its gradient comes from theirs.

    Args:
        function: callable taking the input tensor (or list of tensors) first.
        output_shape: optional tuple, without the batch axis, that the function's output must
            have (checked when the layer is built: a function returning another shape is a
            ValueError), or a function of the input shape giving the full output shape.
        mask: optional: a callable ``mask(inputs, mask)`` or a fixed mask for the output.
        arguments: optional dict of keyword arguments passed to the function.
        **kwargs: name, dtype, trainable, input_shape.

    A Lambda whose function is a Python ``lambda`` cannot be saved (fastnn files never hold
    code); use a function defined with ``def`` and registered with
    ``fastnn.saving.register_keras_serializable``, or a Layer subclass.

    Example:
        >>> scaled = fastnn.layers.Lambda(lambda x: x * 0.5)(inputs)
    """

    def __init__(self, function, output_shape=None, mask=None, arguments=None, **kwargs):
        super().__init__(**kwargs)
        if not callable(function):
            raise TypeError(f"Lambda: 'function' must be callable, got {type(function).__name__}")
        self.function = function
        if arguments is not None and not isinstance(arguments, dict):
            raise TypeError(f"Lambda: 'arguments' must be a dict or None, got {arguments!r}")
        if output_shape is not None and not callable(output_shape):
            output_shape = _as_shape(output_shape, "Lambda: 'output_shape'")
        self.arguments = dict(arguments or {})
        self.mask = mask
        self.supports_masking = mask is not None
        self._output_shape = output_shape
        try:
            parameters = inspect.signature(function).parameters
        except (TypeError, ValueError):
            parameters = {}
        self._takes_training = "training" in parameters

    def call(self, inputs, training=False):
        kwargs = dict(self.arguments)
        if self._takes_training:
            kwargs["training"] = training
        return self.function(inputs, **kwargs)

    def ensure_built(self, input_shape, dtypes=None):
        output = super().ensure_built(input_shape, dtypes)
        self._check_declared(input_shape, output)
        return output

    def _check_declared(self, input_shape, output):
        declared = self._output_shape
        if declared is None:
            return
        if callable(declared):
            expected = tuple(declared(input_shape))
        else:
            batch = flatten(input_shape)[0] if isinstance(input_shape, list) else input_shape[0]
            expected = (batch,) + tuple(declared)
        got = tuple(output) if not isinstance(output, list) else output
        if isinstance(got, list) or len(got) != len(expected) or any(
                e is not None and g is not None and e != g for e, g in zip(expected[1:], got[1:])):
            raise ValueError(f"Lambda '{self.name}': the function returns tensors of shape {got} but output_shape "
                             f"declares {expected}")

    def compute_mask(self, inputs, mask=None):
        if callable(self.mask):
            return self.mask(inputs, mask)
        return self.mask

    def _may_produce_mask(self):
        return self.mask is not None  # (without one, the output has no mask, as in Keras)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(function=getattr(self.function, "__name__", repr(self.function)), arguments=self.arguments)
        if self._output_shape is not None:
            cfg["output_shape"] = self._output_shape
        return cfg
