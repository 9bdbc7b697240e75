"""Layer wrappers: Bidirectional (a recurrent layer run both ways) and TimeDistributed.

A wrapper owns its inner layers (attributes: their weights are its weights) and runs them
through their own forward and backward, keeping their caches inside its own.
"""

import numpy as np

from .base import Layer

_MERGE_MODES = ("concat", "sum", "mul", "ave", None)


class _Wrapper(Layer):
    """A layer around other layers, saved with their configs.

    ``_layer_args`` maps each constructor argument that takes a layer to the attribute that
    holds it.
    """

    _layer_args = {"layer": "layer"}

    def get_config(self):
        from . import serialize

        cfg = super().get_config()
        cfg.pop("dtype", None)
        cfg.update({arg: serialize(getattr(self, attr)) for arg, attr in self._layer_args.items()})
        return cfg

    @classmethod
    def from_config(cls, cfg):
        from . import deserialize

        cfg = dict(cfg)
        for key in cls._layer_args:  # descriptions, or layers saving already rebuilt
            if isinstance(cfg.get(key), dict):
                cfg[key] = deserialize(cfg[key])
        return cls(**cfg)


def _split_needs(need_input_grad, n_forward):
    """need_input_grad of a call with initial states, split for the forward and backward layers
    (each gets the input's flag and its own states')."""
    if not isinstance(need_input_grad, (list, tuple)):
        return need_input_grad, need_input_grad
    needs = list(need_input_grad)
    return [needs[0]] + needs[1:1 + n_forward], [needs[0]] + needs[1 + n_forward:]


class Bidirectional(_Wrapper):
    """Runs a recurrent layer forwards and a copy of it backwards, and merges the outputs.

    The backward copy has the same configuration with ``go_backwards`` flipped (and its own
    weights). With return_sequences its outputs are put back in input order before the
    merge, so step t of the result sees the whole sequence, as in Keras. As Keras, it sets
    ``zero_output_for_mask`` to return_sequences on both layers: under a mask, the merged
    output of a masked step is built from zeros (not from each direction's previous output).

    Args:
        layer: an LSTM, GRU or SimpleRNN instance (not yet built).
        merge_mode: "concat" (default), "sum", "mul", "ave" or None (a list of both outputs).
        weights: optional list of arrays to set once built.
        backward_layer: optional recurrent layer to use as the backward one (its
            go_backwards must be the opposite of layer's).
        **kwargs: name, trainable, input_shape.

    With the inner layer's return_state the outputs are the merged output(s) followed by the
    forward layer's final states and the backward layer's; ``initial_state`` takes the
    forward layer's states followed by the backward layer's.

    Example:
        >>> fastnn.layers.Bidirectional(fastnn.layers.LSTM(64, dropout=0.2))
    """

    supports_masking = True
    _consumes_mask = True
    _training_dependent = True
    _layer_args = {"layer": "forward_layer", "backward_layer": "backward_layer"}

    def __init__(self, layer, merge_mode="concat", weights=None, backward_layer=None, **kwargs):
        from .recurrent import RNN

        if not isinstance(layer, RNN):
            raise TypeError(f"Bidirectional: 'layer' must be an LSTM, GRU or SimpleRNN instance, got "
                            f"{type(layer).__name__}")
        if merge_mode not in _MERGE_MODES:
            raise ValueError(f"Bidirectional: 'merge_mode' must be one of {_MERGE_MODES}, got {merge_mode!r}")
        kwargs.setdefault("dtype", layer.dtype)
        super().__init__(**kwargs)
        config = layer.get_config()
        if backward_layer is None:
            config.update(name=f"backward_{layer.name}", go_backwards=not layer.go_backwards)
            config.pop("input_shape", None)
            backward_layer = type(layer).from_config(config)
        elif not isinstance(backward_layer, RNN) or backward_layer.go_backwards == layer.go_backwards:
            raise ValueError("Bidirectional: 'backward_layer' must be a recurrent layer with the opposite "
                             "go_backwards of 'layer'")
        if backward_layer.stateful != layer.stateful:  # (Keras' check of the common attributes)
            raise ValueError(f"Bidirectional: 'backward_layer' must have the stateful of 'layer' ({layer.stateful}), "
                             f"got {backward_layer.stateful}")
        if layer._declared_input_shape is not None and self._declared_input_shape is None:
            self._declared_input_shape = layer._declared_input_shape
        self.forward_layer = layer  # tracked sublayers: their weights are this layer's, forward's first
        self.backward_layer = backward_layer
        for inner in (layer, backward_layer):  # Keras' force_zero_output_for_mask
            inner.zero_output_for_mask = inner.return_sequences
        self.merge_mode = merge_mode
        self.return_sequences = layer.return_sequences
        self.return_state = layer.return_state
        self.stateful = layer.stateful
        self._initial_weights = weights

    def ensure_built(self, input_shape, dtypes=None):
        if self.stateful and not self.built and isinstance(input_shape, tuple) and input_shape:
            # stateful layers need the batch size, which build's shapes lose: build them first
            batch = input_shape[0] if input_shape[0] is not None else self._batch_size
            for inner in (self.forward_layer, self.backward_layer):
                inner.ensure_built((batch,) + tuple(input_shape[1:]))
        return super().ensure_built(input_shape, dtypes)

    def reset_state(self):
        """Sets both layers' carried states to zeros (Keras: an AttributeError unless stateful)."""
        if not self.stateful:
            raise AttributeError(f"Bidirectional '{self.name}': reset_state() needs a stateful layer "
                                 "(stateful=True), got stateful=False")
        self.forward_layer.reset_state()
        self.backward_layer.reset_state()

    def reset_states(self):
        """Keras' compatibility alias of ``reset_state()``."""
        self.reset_state()

    @property
    def states(self):
        """The forward layer's carried states then the backward layer's (None until both have some)."""
        if self.forward_layer.states and self.backward_layer.states:
            return tuple(self.forward_layer.states + self.backward_layer.states)
        return None

    def build(self, input_shape):
        self.forward_layer.ensure_built(input_shape)
        self.backward_layer.ensure_built(input_shape)
        if self._initial_weights is not None:
            self.set_weights(self._initial_weights)
            self._initial_weights = None

    @property
    def _n_outputs(self):
        return 2 if self.merge_mode is None else 1

    def compute_output_shape(self, input_shape):
        shape = self.forward_layer.compute_output_shape(input_shape)
        states = []
        if self.return_state:
            shape, *states = shape
            states = states + states  # the forward layer's, then the backward layer's
        if self.merge_mode == "concat":
            shape = tuple(shape[:-1]) + (2 * shape[-1],)
        outputs = [tuple(shape)] * self._n_outputs
        return outputs + states if self.return_state or self.merge_mode is None else outputs[0]

    def compute_mask(self, inputs, mask=None):
        out = mask if self.return_sequences else None
        if not self.return_state and self.merge_mode is not None:
            return out
        return [out] * self._n_outputs + [None] * (2 * self.forward_layer._n_states if self.return_state else 0)

    def forward(self, x, training=False, mask=None, initial_state=None, keep_cache=False):
        fwd_state = bwd_state = None
        if initial_state is not None:  # [forward states..., backward states...]
            half = len(initial_state) // 2
            fwd_state, bwd_state = initial_state[:half], initial_state[half:]
        y_f, cache_f = self.forward_layer.forward(x, training, mask=mask, initial_state=fwd_state,
                                                  keep_cache=keep_cache)
        y_b, cache_b = self.backward_layer.forward(x, training, mask=mask, initial_state=bwd_state,
                                                   keep_cache=keep_cache)
        states = []
        if self.return_state:
            y_f, *s_f = y_f
            y_b, *s_b = y_b
            states = s_f + s_b
        if self.return_sequences:
            y_b = y_b[:, ::-1]
        if self.merge_mode == "concat":
            y = np.concatenate([y_f, y_b], axis=-1)
        elif self.merge_mode == "sum":
            y = y_f + y_b
        elif self.merge_mode == "mul":
            y = y_f * y_b
        elif self.merge_mode == "ave":
            y = (y_f + y_b) * y_f.dtype.type(0.5)
        else:
            y = [y_f, np.ascontiguousarray(y_b)]
        if self.return_state:
            y = (y if isinstance(y, list) else [y]) + states
        return y, ((cache_f, cache_b, y_f, y_b, initial_state is not None) if training or keep_cache else None)

    def backward(self, cache, dy, need_input_grad=True, accumulate=False):
        cache_f, cache_b, y_f, y_b, has_initial = cache
        d_states = []
        if self.return_state:
            parts = list(dy)
            dy, d_states = (parts[:2], parts[2:]) if self.merge_mode is None else (parts[0], parts[1:])
        if self.merge_mode is None:
            d_f, d_b = dy
        elif dy is None:  # only the states got a gradient
            d_f = d_b = None
        elif self.merge_mode == "concat":
            units = y_f.shape[-1]
            d_f, d_b = dy[..., :units], dy[..., units:]
        elif self.merge_mode == "sum":
            d_f = d_b = dy
        elif self.merge_mode == "mul":
            d_f, d_b = dy * y_b, dy * y_f
        else:  # ave
            d_f = d_b = dy * dy.dtype.type(0.5)
        if self.return_sequences and d_b is not None:
            d_b = d_b[:, ::-1]
        d_f = None if d_f is None else np.ascontiguousarray(d_f)
        d_b = None if d_b is None else np.ascontiguousarray(d_b)
        if self.return_state:
            half = len(d_states) // 2
            d_f, d_b = [d_f] + d_states[:half], [d_b] + d_states[half:]
        need_f, need_b = _split_needs(need_input_grad, self.forward_layer._n_states)
        dx_f = self.forward_layer.backward(cache_f, d_f, need_f, accumulate)
        dx_b = self.backward_layer.backward(cache_b, d_b, need_b, accumulate)
        d_initial = []
        if has_initial:  # [dx, forward states' gradients..., backward states' gradients...]
            (dx_f, *ds_f), (dx_b, *ds_b) = dx_f, dx_b
            d_initial = ds_f + ds_b
        dx = None if dx_f is None or dx_b is None else dx_f + dx_b
        return [dx] + d_initial if has_initial else dx

    def get_config(self):
        cfg = super().get_config()
        cfg["merge_mode"] = self.merge_mode
        return cfg


class TimeDistributed(_Wrapper):
    """Applies a layer to every time step: (batch, timesteps, ...) -> (batch, timesteps, ...).

    The steps are folded into the batch (one call of the inner layer on batch·timesteps
    samples), so a Dense over every step is one product.

    Args:
        layer: a Layer instance (not yet built).
        **kwargs: name, trainable, input_shape.

    Masks (Keras): a mask (batch, timesteps, ...) must match the input's first two axes; it
    is passed on as the output's mask, and each step's slice goes to an inner layer that
    uses masks (folded into the batch like the inputs).

    Example:
        >>> fastnn.layers.TimeDistributed(fastnn.layers.Dense(10))
    """

    supports_masking = True
    _consumes_mask = True  # to check it and hand each step's slice to the inner layer

    def __init__(self, layer, **kwargs):
        if not isinstance(layer, Layer):
            raise TypeError(f"TimeDistributed: 'layer' must be a Layer instance, got {type(layer).__name__}")
        kwargs.setdefault("dtype", layer.dtype)
        super().__init__(**kwargs)
        self.layer = layer  # a tracked sublayer: its weights are this layer's

    def _step_shape(self, input_shape):
        if len(input_shape) < 3:
            raise ValueError(f"TimeDistributed '{self.name}': expects input (batch, timesteps, ...), got {input_shape}")
        return (None,) + tuple(input_shape[2:])

    def build(self, input_shape):
        self.layer.ensure_built(self._step_shape(input_shape))

    def compute_output_shape(self, input_shape):
        inner = self.layer.ensure_built(self._step_shape(input_shape))
        return (input_shape[0], input_shape[1]) + tuple(inner[1:])

    @property
    def _training_dependent(self):
        return self.layer._training_dependent

    def _steps_mask(self, mask, x):
        """Keras' checks of the mask, then the mask folded like the inputs (None when the inner
        layer does not use masks)."""
        mask = np.asarray(mask)
        if mask.ndim < 2:
            raise ValueError(f"TimeDistributed '{self.name}': 'mask' must have at least 2 axes (batch, timesteps), "
                             f"got shape {mask.shape}")
        if mask.shape[:2] != x.shape[:2]:
            raise ValueError(f"TimeDistributed '{self.name}': 'mask' must start with the input's (batch, timesteps) "
                             f"= {x.shape[:2]}, got shape {mask.shape}")
        if not self.layer._consumes_mask:
            return None
        return np.ascontiguousarray(mask.reshape((-1,) + mask.shape[2:]))  # as given: the inner layer reads it

    def forward(self, x, training=False, mask=None, keep_cache=False):
        batch, steps = x.shape[:2]
        steps_as_batch = np.ascontiguousarray(x.reshape((batch * steps,) + x.shape[2:]))
        if keep_cache and not training and not self.layer._training_dependent:
            training = True  # the same outputs either way: ask for the cache
        kwargs = {"keep_cache": True} if keep_cache and not training else {}
        inner_mask = None if mask is None else self._steps_mask(mask, x)
        if inner_mask is not None:
            kwargs["mask"] = inner_mask
        y, inner = self.layer.forward(steps_as_batch, training, **kwargs)
        keep = training or keep_cache
        return y.reshape((batch, steps) + y.shape[1:]), ((batch, steps, inner) if keep else None)

    def backward(self, cache, dy, need_input_grad=True, accumulate=False):
        batch, steps, inner = cache
        dx = self.layer.backward(inner, np.ascontiguousarray(dy.reshape((batch * steps,) + dy.shape[2:])),
                                 need_input_grad, accumulate)
        return None if dx is None else dx.reshape((batch, steps) + dx.shape[1:])
