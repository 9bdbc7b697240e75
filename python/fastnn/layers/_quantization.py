"""int8 quantization of a layer's weights (Keras 3's ``layer.quantize("int8")``).

A quantized layer keeps its kernel as an int8, non-trainable Variable named as in Keras
(``kernel``, ``embeddings``) plus a float ``kernel_scale`` (``embeddings_scale``): the int8
values are ``round(clip(w · scale))`` (``fastnn.quantizers.abs_max_quantize``). Its dtype
policy is ``"int8_from_float32"`` (the layer's float dtype after ``_from_``): that name is the
``dtype`` of its config, so a saved model rebuilds its quantized layers directly.

The int8 weights live outside the model's flat float buffer (it holds float values only);
the saver writes them as int8 arrays. Layers that multiply with ``fastnn.quantizers.int8_dense``
pack their kernel once (``_int8_packed``) and pack again after their int8 weight changes
(load, set_weights).

Training a quantized layer is not supported: its backward is an error naming it (and
``Model.fit`` / ``train_on_batch`` refuse earlier, naming every quantized layer).
"""

import numpy as np

#: The quantization modes fastnn implements.
QUANTIZATION_MODES = ("int8",)


class DTypePolicy:
    """A layer's dtype policy (Keras 3's ``layer.dtype_policy``), read-only.

    Attributes:
        name: "float32", "float64", or "int8_from_float32" for an int8-quantized layer.
        compute_dtype, variable_dtype: the layer's float dtype.
        quantization_mode: None or "int8".
    """

    __slots__ = ("name", "compute_dtype", "variable_dtype", "quantization_mode")

    def __init__(self, dtype, quantization_mode=None):
        self.compute_dtype = self.variable_dtype = np.dtype(dtype).name
        self.quantization_mode = quantization_mode
        self.name = f"{quantization_mode}_from_{self.compute_dtype}" if quantization_mode else self.compute_dtype

    def __repr__(self):
        return f'<DTypePolicy "{self.name}">'


def parse_dtype(dtype, who):
    """(float dtype or None, quantization mode or None) of a layer's ``dtype`` argument:
    "int8_from_float32" is int8 quantization of a float32 layer."""
    if isinstance(dtype, dict):  # Keras' serialized policy {"class_name": ..., "config": {"name": ...}}
        dtype = (dtype.get("config") or {}).get("name", dtype)
    if isinstance(dtype, DTypePolicy):
        dtype = dtype.name
    if isinstance(dtype, str) and "_from_" in dtype:
        mode, _, base = dtype.partition("_from_")
        if mode not in QUANTIZATION_MODES:
            raise ValueError(f"{who}: unknown quantized dtype policy {dtype!r}; fastnn knows "
                             f"{', '.join(m + '_from_float32' for m in QUANTIZATION_MODES)}")
        return base, mode
    return dtype, None


class Int8Quantizable:
    """Mixin of the layers ``model.quantize("int8")`` quantizes.

    A layer writes ``_int8_quantize()`` (its float kernel to int8 values and scales, through
    ``_swap_to_int8``), builds its int8 weights in ``build`` when ``self._quantization_mode``
    is set (``_add_int8_weight``, ``_add_scale_weight``), and runs its quantized forward.
    """

    _quantizable = True
    _packed_int8 = None

    def quantize(self, mode, **kwargs):
        """Quantizes this layer's weights (Keras 3's ``layer.quantize``): see ``Model.quantize``.

        Args:
            mode: "int8".
            **kwargs: accepted for Keras compatibility (type_check, config=None).

        Raises:
            ValueError: the layer is not built, `mode` is unknown, or it is already quantized.
        """
        config = kwargs.pop("config", None)
        kwargs.pop("type_check", None)
        if kwargs or config is not None:
            raise ValueError(f"{type(self).__name__} '{self.name}'.quantize: unsupported argument(s) "
                             f"{sorted(kwargs) + (['config'] if config is not None else [])}")
        check_mode(mode, f"{type(self).__name__} '{self.name}'.quantize")
        if not self.built:
            raise ValueError(f"{type(self).__name__} '{self.name}'.quantize: the layer is not built yet; build it "
                             "(or its model) first")
        if self._quantization_mode is not None:
            raise ValueError(f"{type(self).__name__} '{self.name}' is already quantized "
                             f"({self.dtype_policy.name}); quantize the float layer once")
        self._int8_quantize()
        self._quantization_mode = mode

    # ---- weights ----------------------------------------------------------------------------------
    def _add_int8_weight(self, name, shape):
        var = self.add_weight(shape=shape, initializer=_int8_zeros, dtype="int8", trainable=False, name=name)
        var._on_change = self._int8_weights_changed
        return var

    def _add_scale_weight(self, name, shape):
        return self.add_weight(shape=shape, initializer="ones", trainable=False, name=name)

    def _swap_to_int8(self, kernels, scales):
        """Replaces float weights by int8 ones in place (same name, same position) and appends
        the scales: Keras' variable order (kernel, bias, kernel_scale).

        Args:
            kernels: list of (attribute, int8 values): the float Variable at that attribute
                becomes an int8 Variable of the same name holding the values.
            scales: list of (attribute, float values): new non-trainable Variables.
        """
        for attribute, values in kernels:
            old = getattr(self, attribute)
            index = next(i for i, v in enumerate(self._own_variables) if v is old)
            del self._own_variables[index]
            var = self._add_int8_weight(old.name.rsplit("/", 1)[-1], values.shape)
            self._own_variables.remove(var)
            self._own_variables.insert(index, var)
            var.value[...] = values
            setattr(self, attribute, var)
        for attribute, values in scales:
            var = self._add_scale_weight(attribute, np.shape(values))
            var.value[...] = values
            setattr(self, attribute, var)
        self._int8_weights_changed()

    def _int8_weights_changed(self):
        self._packed_int8 = None

    def _int8_packed(self, matrix):
        """The PackedInt8 of `matrix` (an int8 (k, n) view of the kernel), packed once."""
        if self._packed_int8 is None:
            from ..quantizers import pack_int8

            self._packed_int8 = pack_int8(matrix)
        return self._packed_int8

    def _int8_backward_error(self):
        return ValueError(f"{type(self).__name__} '{self.name}' is quantized ({self.dtype_policy.name}) and "
                          "cannot be trained: fastnn's quantized layers are for inference (predict, evaluate); "
                          "train the float model, then quantize it")


def _int8_zeros(shape, dtype=None):
    return np.zeros(shape, np.int8)


def check_mode(mode, who):
    if mode not in QUANTIZATION_MODES:
        raise ValueError(f"{who}: invalid quantization mode {mode!r}; expected one of "
                         f"{', '.join(repr(m) for m in QUANTIZATION_MODES)}")


def int8_activation(act, logits):
    """(activation name for int8_dense's fused activation or None, whether to apply `act`
    after): the kernel fuses the named activations without a parameter."""
    if logits:
        return None, False
    if act.kind is not None and act.alpha == 0.0:
        return act.kind, False
    return None, True
