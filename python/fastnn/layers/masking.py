"""The Masking layer: marks time steps to skip (Keras' ``layers.Masking``)."""

import numpy as np

from . import _validation
from .base import Layer


class Masking(Layer):
    """Masks the time steps whose features all equal ``mask_value``.

    The recurrent layers after it skip those steps (the states carry over), as after
    ``Embedding(mask_zero=True)``; the masked steps' values are set to 0 in the output.

    Args:
        mask_value: float (not NaN), default 0.0.
        **kwargs: name, dtype, input_shape.

    Example:
        >>> model = fastnn.Sequential([fastnn.layers.Masking(0.0, input_shape=(None, 3)),
        ...                            fastnn.layers.LSTM(8)])
    """

    supports_masking = True
    _shape_preserving = True

    def __init__(self, mask_value=0.0, **kwargs):
        super().__init__(**kwargs)
        # NaN would mask nothing (NaN != NaN): refused; +-inf are values like any other.
        self.mask_value = _validation.number(mask_value, "mask_value", "Masking", finite=False)

    def compute_mask(self, inputs, mask=None):
        return np.any(np.asarray(inputs) != self.mask_value, axis=-1)

    def _may_produce_mask(self):
        return True

    def forward(self, x, training=False):
        keep = np.any(x != self.mask_value, axis=-1, keepdims=True)
        return x * keep, (keep if training else None)

    def backward(self, cache, dy, need_input_grad=True, accumulate=False):
        return dy * cache

    def get_config(self):
        cfg = super().get_config()
        cfg["mask_value"] = self.mask_value
        return cfg
