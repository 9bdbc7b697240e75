"""The Embedding layer: integer ids -> dense vectors (kernel: cpp/include/fastnn/embedding.hpp)."""

import numpy as np

from .. import constraints, initializers, ops, quantizers, regularizers
from . import _quantization, _validation
from .base import Layer, _as_input, _as_shape, trainable_grad


class Embedding(_quantization.Int8Quantizable, Layer):
    """Turns integer ids into dense vectors: ``embeddings[ids]``.

    Forward gathers rows in one C++ call; backward scatter-adds the output gradient into
    the table's gradient (duplicate ids summed in position order: the same bits on any
    thread count). Ids outside [0, input_dim) raise ValueError. Ids may come as integers or
    as integer-valued floats (a model's float inputs); other floats raise ValueError.

    Quantized (``model.quantize("int8")``), as Keras 3: ``embeddings`` is int8 with one scale
    per row (``embeddings_scale``, shape (input_dim,)); a lookup returns
    ``embeddings[ids] / embeddings_scale[ids]``. Inference only.

    Args:
        input_dim: int > 0, the vocabulary size (largest id + 1).
        output_dim: int > 0, the vector size.
        embeddings_initializer: default "uniform" (uniform on ±0.05, as Keras).
        embeddings_regularizer: default None.
        mask_zero: bool, default False: id 0 is padding; the layer's mask (ids != 0) makes
            the recurrent layers after it skip those steps, as Keras does. input_dim must
            then count the padding id too (vocabulary + 1).
        input_length: optional int: the sequence length (Keras 2's argument), i.e.
            ``input_shape=(input_length,)``.
        **kwargs: name, dtype, trainable, input_shape.

    Example:
        >>> import fastnn
        >>> layer = fastnn.layers.Embedding(1000, 64, mask_zero=True)
        >>> layer(np.array([[4, 20, 0]])).shape
        (1, 3, 64)
    """

    _size_arguments = ("input_dim", "output_dim")

    def __init__(self, input_dim, output_dim, embeddings_initializer="uniform", embeddings_regularizer=None,
                 embeddings_constraint=None, mask_zero=False, weights=None, input_length=None, sparse=False,
                 **kwargs):
        if input_length is not None and "input_shape" not in kwargs:
            # (Keras 3 ignores it, with a warning; here it still declares the input shape)
            kwargs["input_shape"] = _as_shape((input_length,), "Embedding: 'input_length'")
        super().__init__(**kwargs)
        for name, value in (("input_dim", input_dim), ("output_dim", output_dim)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"Embedding: '{name}' must be a positive int, got {value!r}")
        self.embeddings_constraint = _validation.constraint(embeddings_constraint, "embeddings_constraint",
                                                            "Embedding")
        if sparse:
            raise ValueError("Embedding: sparse=True is not supported; the gradient is a dense table")
        self.input_dim, self.output_dim = int(input_dim), int(output_dim)
        self.embeddings_initializer = initializers.get(embeddings_initializer)
        self.embeddings_regularizer = regularizers.get(embeddings_regularizer)
        self.mask_zero = bool(mask_zero)
        self.input_length = input_length
        self._initial_weights = weights
        self.embeddings = None

    @property
    def input_dtype(self):
        return "int64"

    def build(self, input_shape):
        if self._quantization_mode:
            self.embeddings = self._add_int8_weight("embeddings", (self.input_dim, self.output_dim))
            self.embeddings_scale = self._add_scale_weight("embeddings_scale", (self.input_dim,))
        else:
            self.embeddings = self.add_weight(shape=(self.input_dim, self.output_dim),
                                              initializer=self.embeddings_initializer,
                                              regularizer=self.embeddings_regularizer,
                                              constraint=self.embeddings_constraint, name="embeddings")
        if self._initial_weights is not None:
            self.set_weights(self._initial_weights)
            self._initial_weights = None

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)

    def compute_mask(self, inputs, mask=None):
        return np.asarray(inputs) != 0 if self.mask_zero else None

    def _may_produce_mask(self):
        return self.mask_zero

    def forward(self, x, training=False):
        if x.dtype.kind == "f":  # integer-valued floats (checked) as ids
            x = _as_input(x, np.int64, self.name)
        if self._quantization_mode:
            return self._int8_lookup(x), None
        return ops.embedding(x, self.embeddings.value), (x if training else None)

    def _int8_quantize(self):
        values, scale = quantizers.abs_max_quantize(self.embeddings.value, axis=-1)  # per row
        self._swap_to_int8([("embeddings", values)], [("embeddings_scale", scale.reshape(self.input_dim))])

    def _int8_lookup(self, ids):
        ids = np.asarray(ids)
        if ids.size and (ids.min() < 0 or ids.max() >= self.input_dim):
            raise ValueError(f"Embedding '{self.name}': ids must lie in [0, {self.input_dim}), got values in "
                             f"[{ids.min()}, {ids.max()}]")
        rows = self.embeddings.value[ids].astype(self._dtype)
        return rows / self.embeddings_scale.value[ids][..., None].astype(self._dtype)

    def backward(self, cache, dy, need_input_grad=True, accumulate=False):
        if self._quantization_mode:
            raise self._int8_backward_error()
        grad = trainable_grad(self.embeddings)
        if grad is not None:
            ops.embedding_backward(cache, np.ascontiguousarray(dy, grad.dtype), self.input_dim, out=grad,
                                   accumulate=accumulate)
        return None  # ids have no gradient

    def get_config(self):
        cfg = super().get_config()
        cfg.update(input_dim=self.input_dim, output_dim=self.output_dim,
                   embeddings_initializer=initializers.serialize(self.embeddings_initializer),
                   embeddings_regularizer=regularizers.serialize(self.embeddings_regularizer),
                   embeddings_constraint=constraints.serialize(self.embeddings_constraint),
                   mask_zero=self.mask_zero)
        if self.input_length is not None:
            cfg["input_length"] = self.input_length
            cfg.pop("input_shape", None)
        return cfg
