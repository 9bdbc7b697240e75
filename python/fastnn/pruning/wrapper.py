"""``PruneLowMagnitude``: a layer whose prunable weights carry a mask (tfmot's pruning wrapper).

The wrapper owns the layer it wraps (its weights are the wrapper's weights, first) and adds,
per prunable weight, a non-trainable ``<weight>_mask`` of the same shape (1 keeps, 0 prunes),
and one ``pruning_step`` (the pruning step of the last training batch begun; -1 before any).
They are ordinary weights: they sit in the model's flat buffer, are saved and loaded with it.

Forward and backward are the wrapped layer's own kernels: nothing is masked per call. The
masks act elsewhere:

* ``UpdatePruningStep`` (a callback fit needs) advances the step before each batch and, when
  the schedule says so, recomputes the masks from the weights' current magnitudes and zeroes
  the pruned weights;
* the optimizer (``Optimizer._after_update``) multiplies each masked weight, and every
  optimizer slot of it (moments, accumulators, moving average), by its mask after each
  update: pruned weights and their optimizer state stay exactly 0.0.

What is prunable (tfmot's choice: kernels, never biases): Dense, EinsumDense, Conv1D and
Conv2D ``kernel``; Embedding ``embeddings``; LSTM, GRU and SimpleRNN ``kernel`` and
``recurrent_kernel``; any layer with a ``get_prunable_weights()`` method (``PrunableLayer``)
the weights it returns.
"""

import numpy as np

from .. import initializers
from ..layers.base import Layer
from . import masks as masks_module
from .schedules import ConstantSparsity, PruningSchedule

_CALLBACK_ERROR = (
    "Layer '{name}' is pruned (PruneLowMagnitude), and training it needs the UpdatePruningStep callback, which "
    "advances the pruning step and updates the masks: model.fit(..., callbacks=[fastnn.pruning.UpdatePruningStep()]). "
    "In a training loop of your own, call callback.set_model(model) and callback.on_train_begin() once, then "
    "callback.on_train_batch_begin(batch) before each batch (as in tfmot).")


class PrunableLayer:
    """Mixin for a custom layer that says which of its weights to prune (tfmot's ``PrunableLayer``).

    Implement ``get_prunable_weights()``, returning the Variables to prune (e.g.
    ``[self.kernel]``); ``prune_low_magnitude`` then accepts the layer. A layer with a
    ``get_prunable_weights`` method is accepted whether or not it inherits this class.

    Example:
        >>> class MyDense(fastnn.layers.Layer, fastnn.pruning.PrunableLayer):
        ...     def build(self, input_shape):
        ...         self.kernel = self.add_weight(shape=(input_shape[-1], 8))
        ...     def call(self, x):
        ...         return fastnn.ops.matmul(x, self.kernel)
        ...     def get_prunable_weights(self):
        ...         return [self.kernel]
    """

    def __init_subclass__(cls, **kwargs):
        # tfmot's abstract method: a subclass without it is refused where it is defined
        super().__init_subclass__(**kwargs)
        if not callable(getattr(cls, "get_prunable_weights", None)):
            raise TypeError(f"{cls.__name__}: a PrunableLayer must implement get_prunable_weights(), returning the "
                            "Variables to prune")


# ---- which weights of which layers ------------------------------------------------------------------------
def _registry():
    """[(layer class, (weight attribute names))]: the built-in prunable layers."""
    from ..layers import GRU, LSTM, Conv1D, Conv2D, Dense, EinsumDense, Embedding, SimpleRNN

    return [(Dense, ("kernel",)), (EinsumDense, ("kernel",)), (Conv1D, ("kernel",)), (Conv2D, ("kernel",)),
            (Embedding, ("embeddings",)), (LSTM, ("kernel", "recurrent_kernel")),
            (GRU, ("kernel", "recurrent_kernel")), (SimpleRNN, ("kernel", "recurrent_kernel"))]


def _without_weights_to_prune():
    """Built-in layers with weights but nothing to prune (tfmot's too): left alone without a warning."""
    from ..layers import BatchNormalization, LayerNormalization, Normalization, PReLU

    return (BatchNormalization, LayerNormalization, Normalization, PReLU)


def is_prunable(layer):
    """Whether `layer` has weights ``PruneLowMagnitude`` can prune (a built-in kind, or a layer with
    ``get_prunable_weights``); stateful recurrent layers are not (their batch-bound build)."""
    if isinstance(layer, PruneLowMagnitude) or getattr(layer, "_functional", False):
        return False
    if callable(getattr(layer, "get_prunable_weights", None)):
        return True
    if getattr(layer, "stateful", False):
        return False
    return any(isinstance(layer, cls) for cls, _ in _registry())


def prunable_weights(layer):
    """The Variables of a built `layer` that pruning masks: its ``get_prunable_weights()``, or the
    registry's (kernels and embeddings, not biases)."""
    custom = getattr(layer, "get_prunable_weights", None)
    if callable(custom):
        weights = list(custom())
        for w in weights:
            if not hasattr(w, "value") or not hasattr(w, "name"):
                raise TypeError(f"{type(layer).__name__}.get_prunable_weights() must return the layer's Variables, "
                                f"got {type(w).__name__}")
        return weights
    for cls, names in _registry():
        if isinstance(layer, cls):
            return [getattr(layer, name) for name in names if getattr(layer, name, None) is not None]
    return []


def input_axis(layer, weight):
    """The axis of `weight` along which m-by-n groups run: the layer's input axis (Dense,
    Embedding, recurrent kernels: 0; Conv kernels (k..., in, out): -2; EinsumDense: the kernel
    axis its equation contracts with the input)."""
    from ..layers import Conv1D, Conv2D, EinsumDense

    if weight.ndim <= 1:
        return 0
    if isinstance(layer, (Conv1D, Conv2D)):
        return weight.ndim - 2
    if isinstance(layer, EinsumDense):
        lhs, _, out = layer.equation.replace(" ", "").replace("...", "").partition("->")
        parts = lhs.split(",")
        if len(parts) == 2:
            x_spec, kernel_spec = parts
            for i, label in enumerate(kernel_spec):
                if label in x_spec and label not in out:
                    return i
        return 0
    if weight.ndim >= 3:  # a convolution-like custom kernel (..., in, out)
        return weight.ndim - 2
    return 0


# ---- arguments ---------------------------------------------------------------------------------------------
def check_arguments(who, pruning_schedule, block_size, block_pooling_type, sparsity_m_by_n):
    """The arguments checked and normalised: (schedule, block_size tuple, pooling, m_by_n tuple or None)."""
    if not isinstance(pruning_schedule, PruningSchedule):
        raise TypeError(f"{who}: 'pruning_schedule' must be a PruningSchedule (e.g. "
                        f"fastnn.pruning.ConstantSparsity(0.5, begin_step=0)), got {pruning_schedule!r:.80}")
    block = _two_ints(block_size, "block_size", who)
    if block is None or min(block) < 1:
        raise ValueError(f"{who}: 'block_size' must be 2 positive ints (block height, width), got {block_size!r}")
    if not isinstance(block_pooling_type, str) or block_pooling_type.upper() not in ("AVG", "MAX"):
        raise ValueError(f"{who}: 'block_pooling_type' must be 'AVG' or 'MAX', got {block_pooling_type!r}")
    m_by_n = None
    if sparsity_m_by_n is not None:
        m_by_n = _two_ints(sparsity_m_by_n, "sparsity_m_by_n", who)
        if m_by_n is None or not 0 < m_by_n[0] < m_by_n[1]:
            raise ValueError(f"{who}: 'sparsity_m_by_n' must be None or (m, n), 2 ints with 0 < m < n (m zeros in "
                             f"every n consecutive weights, e.g. (2, 4)), got {sparsity_m_by_n!r}")
        if block != (1, 1):
            raise ValueError(f"{who}: give 'block_size' or 'sparsity_m_by_n', not both (got block_size={block_size!r}, "
                             f"sparsity_m_by_n={sparsity_m_by_n!r})")
    return pruning_schedule, block, block_pooling_type.upper(), m_by_n


def _two_ints(value, name, who):
    """(int, int) from a tuple or list of 2 ints, else None."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list, np.ndarray)):
        return None
    items = list(value)
    if len(items) != 2 or any(isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) for v in items):
        return None
    return int(items[0]), int(items[1])


_DEFAULT_SCHEDULE = ConstantSparsity(0.5, begin_step=0)


class PruneLowMagnitude(Layer):
    """A layer with magnitude pruning of its kernels (tfmot's ``PruneLowMagnitude``); made by
    ``fastnn.pruning.prune_low_magnitude``, removed by ``strip_pruning``.

    It runs the wrapped layer's own forward and backward. Its extra weights, per prunable
    weight ``w``: ``<w>_mask`` (same shape, 1 keeps, 0 prunes; initially ones), and
    ``pruning_step`` (float; -1 until training starts; exact up to 2**24 steps in float32).
    ``UpdatePruningStep`` recomputes the masks when ``pruning_schedule`` says so; the optimizer
    keeps the pruned weights and their optimizer state at exactly zero.

    Args:
        layer: the Layer to prune (Dense, EinsumDense, Conv1D, Conv2D, Embedding, LSTM, GRU,
            SimpleRNN, or a layer with ``get_prunable_weights()``).
        pruning_schedule: PruningSchedule, default ``ConstantSparsity(0.5, begin_step=0)``.
        block_size: (int, int), default (1, 1): prune blocks of this (rows, columns) of the
            weight seen as a matrix (rows: every axis but the last), ranked by pooled magnitude.
        block_pooling_type: "AVG" (default) or "MAX": how a block's magnitude is pooled.
        sparsity_m_by_n: None (default) or (m, n), 0 < m < n: zero the m smallest of every n
            consecutive weights along the input axis (e.g. (2, 4)); the schedule then says
            when, not how much.
        **kwargs: name (default ``"prune_low_magnitude_" + layer.name``), trainable.

    Example:
        >>> layer = fastnn.pruning.PruneLowMagnitude(fastnn.layers.Dense(64), fastnn.pruning.ConstantSparsity(0.8, 0))
    """

    def __init__(self, layer, pruning_schedule=_DEFAULT_SCHEDULE, block_size=(1, 1), block_pooling_type="AVG",
                 sparsity_m_by_n=None, **kwargs):
        who = "PruneLowMagnitude"
        if not isinstance(layer, Layer):
            raise TypeError(f"{who}: 'layer' must be a Layer, got {type(layer).__name__}")
        if not is_prunable(layer):
            raise ValueError(f"{who}: cannot prune layer '{layer.name}' ({type(layer).__name__}): prunable layers are "
                             "Dense, EinsumDense, Conv1D, Conv2D, Embedding, LSTM, GRU, SimpleRNN (not stateful) and "
                             "layers with a get_prunable_weights() method (fastnn.pruning.PrunableLayer)")
        schedule, block, pooling, m_by_n = check_arguments(who, pruning_schedule, block_size, block_pooling_type,
                                                           sparsity_m_by_n)
        kwargs.setdefault("name", f"prune_low_magnitude_{layer.name}")
        kwargs.setdefault("dtype", layer.dtype)
        kwargs.setdefault("trainable", layer.trainable)
        kwargs.pop("input_shape", None)  # the wrapped layer's (below)
        super().__init__(**kwargs)
        self.layer = layer  # a tracked sublayer: its weights are this layer's
        self._declared_input_shape = layer._declared_input_shape
        self._batch_size = layer._batch_size
        self.pruning_schedule = schedule
        self.block_size = block
        self.block_pooling_type = pooling
        self.sparsity_m_by_n = m_by_n
        self.pruning_vars = []  # (weight, mask, input axis) per prunable weight, once built
        self.pruning_step = None
        self._stepping = False  # an UpdatePruningStep has started training on this layer

    # ---- building ------------------------------------------------------------------------------------
    def build(self, input_shape):
        output_shape = self.layer.ensure_built(input_shape)
        pairs = []
        for weight in prunable_weights(self.layer):
            base = weight.name.rsplit("/", 1)[-1]
            mask = self.add_weight(shape=weight.shape, initializer="ones", trainable=False, name=f"{base}_mask",
                                   dtype=weight.dtype)
            weight._pruning_mask = mask  # the optimizer finds the masks of its variables here
            pairs.append((weight, mask, input_axis(self.layer, weight)))
        if self.sparsity_m_by_n is not None:
            for weight, _, axis in pairs:
                if weight.ndim == 0 or weight.shape[axis] < self.sparsity_m_by_n[1]:
                    raise ValueError(f"PruneLowMagnitude '{self.name}': sparsity_m_by_n={self.sparsity_m_by_n} needs "
                                     f"at least {self.sparsity_m_by_n[1]} weights along the input axis of "
                                     f"'{weight.name}' (shape {weight.shape}, axis {axis})")
        self.pruning_step = self.add_weight(shape=(), initializer=initializers.Constant(-1.0), trainable=False,
                                            name="pruning_step")
        self.pruning_vars = pairs
        return output_shape

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    @property
    def _variables(self):
        """The wrapped layer's weights first (as tfmot), then the masks and the step."""
        inner = self.layer._variables
        seen = {id(v) for v in inner}
        return inner + [v for v in self._own_variables if id(v) not in seen]

    # ---- the wrapped layer's behaviour ------------------------------------------------------------------
    def forward(self, x, training=False, **kwargs):
        """The wrapped layer's forward (training needs UpdatePruningStep running)."""
        if training and not self._stepping:
            raise RuntimeError(_CALLBACK_ERROR.format(name=self.name))
        return self.layer.forward(x, training, **kwargs)

    def backward(self, cache, dys, need_input_grad=True, accumulate=False):
        return self.layer.backward(cache, dys, need_input_grad, accumulate)

    @property
    def input_dtype(self):
        return self.layer.input_dtype

    def _output_dtype(self, input_dtype):
        return self.layer._output_dtype(input_dtype)

    @property
    def supports_masking(self):
        return self.layer.supports_masking

    @property
    def _consumes_mask(self):
        return self.layer._consumes_mask

    @property
    def _graph_masks(self):
        return self.layer._graph_masks

    @property
    def _keeps_mask_dtype(self):
        return self.layer._keeps_mask_dtype

    @property
    def _flexible_input_shape(self):
        return self.layer._flexible_input_shape

    @property
    def _training_dependent(self):
        return self.layer._training_dependent

    def _may_produce_mask(self):
        return self.layer._may_produce_mask()

    def compute_mask(self, inputs, mask=None):
        return self.layer.compute_mask(inputs, mask)

    def output_activation(self):
        """The wrapped layer's fusable activation (a softmax output still fuses with its loss)."""
        inner = getattr(self.layer, "output_activation", None)
        return inner() if callable(inner) else None

    @property
    def activity_regularizer(self):
        layer = self.__dict__.get("layer")
        return None if layer is None else layer.activity_regularizer

    @activity_regularizer.setter
    def activity_regularizer(self, value):
        if value is not None:  # (Layer.__init__ sets None; the wrapped layer keeps its own)
            raise ValueError(f"PruneLowMagnitude: set 'activity_regularizer' on the wrapped layer, got {value!r}")

    # ---- pruning -------------------------------------------------------------------------------------
    def _compute_mask(self, weight, axis, sparsity):
        if self.sparsity_m_by_n is not None:
            return masks_module.m_by_n_mask(weight.value, self.sparsity_m_by_n, axis)
        return masks_module.block_mask(weight.value, sparsity, self.block_size, self.block_pooling_type)

    def _advance(self):
        """One training batch begins: the step advances; the masks are recomputed if the schedule says so."""
        if self.pruning_step is None:
            return
        step = int(self.pruning_step.value) + 1
        self.pruning_step.value[...] = step
        should_prune, sparsity = self.pruning_schedule(step)
        if should_prune:
            self.update_masks(sparsity)

    def update_masks(self, sparsity):
        """Recomputes the masks from the weights' magnitudes at `sparsity` (block_size, pooling or
        m-by-n as configured) and zeroes the pruned weights.

        Args:
            sparsity: float in [0, 1) (not used with sparsity_m_by_n).
        """
        for weight, mask, axis in self.pruning_vars:
            mask.value[...] = self._compute_mask(weight, axis, float(sparsity))
        self.apply_masks()

    def apply_masks(self):
        """Zeroes the pruned weights (weight *= mask, as +0.0)."""
        for weight, mask, _ in self.pruning_vars:
            _zero_pruned(weight.value, mask.value)

    # ---- saving ---------------------------------------------------------------------------------------
    def get_config(self):
        from ..saving import serialize_keras_object

        return {"name": self.name, "trainable": self.trainable, "layer": serialize_keras_object(self.layer),
                "pruning_schedule": serialize_keras_object(self.pruning_schedule),
                "block_size": list(self.block_size), "block_pooling_type": self.block_pooling_type,
                "sparsity_m_by_n": None if self.sparsity_m_by_n is None else list(self.sparsity_m_by_n)}

    @classmethod
    def from_config(cls, config):
        from ..saving import deserialize_keras_object

        config = dict(config)
        if isinstance(config.get("layer"), dict):
            config["layer"] = deserialize_keras_object(config["layer"], kind="layer")
        if isinstance(config.get("pruning_schedule"), dict):
            config["pruning_schedule"] = deserialize_keras_object(config["pruning_schedule"], kind="pruning schedule")
        return cls(**config)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_stepping"] = False  # a copy starts outside any training run
        return state


def _zero_pruned(values, mask):
    """values *= mask in place, the pruned entries made +0.0 (-x·0 is -0.0, which compresses worse)."""
    flat = values.reshape(-1)
    np.multiply(flat, mask.reshape(-1), out=flat)
    np.add(flat, 0.0, out=flat)

