"""Layer wrappers: Bidirectional (a recurrent layer run both ways) and TimeDistributed."""

import numpy as np

from .base import Layer

_MERGE_MODES = ("concat", "sum", "mul", "ave", None)


class _Wrapper(Layer):
    """A layer that owns other layers: their weights are its weights."""

    def _adopt(self, *layers):
        self._variables = [v for layer in layers for v in layer._variables]

    @property
    def _need_input_grad(self):
        return self.__dict__.get("_need_grad", True)

    @_need_input_grad.setter
    def _need_input_grad(self, value):
        self.__dict__["_need_grad"] = value
        for layer in self._inner_layers():
            layer._need_input_grad = value

    def _inner_layers(self):
        return []


class Bidirectional(_Wrapper):
    """Runs a recurrent layer forwards and a copy of it backwards, and merges the outputs.

    The backward copy has the same configuration with ``go_backwards`` flipped (and its own
    weights). With return_sequences its outputs are put back in input order before the
    merge, so step t of the result sees the whole sequence, as in Keras.

    Args:
        layer: an LSTM, GRU or SimpleRNN instance (not yet built).
        merge_mode: "concat" (default), "sum", "mul", "ave" or None (a list of both outputs).
        backward_layer: optional recurrent layer to use as the backward one (its
            go_backwards must be the opposite of layer's).
        **kwargs: name, trainable, input_shape.

    Example:
        >>> fastnn.layers.Bidirectional(fastnn.layers.LSTM(64, dropout=0.2))
    """

    supports_masking = True
    _consumes_mask = True

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
        if layer._declared_input_shape is not None and self._declared_input_shape is None:
            self._declared_input_shape = layer._declared_input_shape
        self.forward_layer, self.backward_layer = layer, backward_layer
        self._need_input_grad = self._need_input_grad  # tell the inner layers
        self.merge_mode = merge_mode
        self.return_sequences = layer.return_sequences
        self.return_state = layer.return_state
        self._initial_weights = weights

    def _inner_layers(self):
        return [layer for layer in (getattr(self, "forward_layer", None), getattr(self, "backward_layer", None))
                if layer is not None]

    def build(self, input_shape):
        shape = self.forward_layer.ensure_built(input_shape)
        self.backward_layer.ensure_built(input_shape)
        self._adopt(self.forward_layer, self.backward_layer)
        if self._initial_weights is not None:
            self.set_weights(self._initial_weights)
            self._initial_weights = None
        if self.merge_mode == "concat":
            return tuple(shape[:-1]) + (2 * shape[-1],)
        return tuple(shape)

    def forward(self, x, training=False, mask=None, initial_state=None):
        fwd_state = bwd_state = None
        if initial_state is not None:  # [forward states..., backward states...]
            half = len(initial_state) // 2
            fwd_state, bwd_state = initial_state[:half], initial_state[half:]
        y_f = self.forward_layer.forward(x, training=training, mask=mask, initial_state=fwd_state)
        y_b = self.backward_layer.forward(x, training=training, mask=mask, initial_state=bwd_state)
        states = []
        if self.return_state:
            y_f, *s_f = y_f
            y_b, *s_b = y_b
            states = s_f + s_b
        if self.return_sequences:
            y_b = y_b[:, ::-1]
        if training:
            self._cache = (y_f, y_b)
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
        return (y if isinstance(y, list) else [y]) + states if self.return_state else y

    def backward(self, dy):
        y_f, y_b = self._check_cache()
        d_states = []
        if self.return_state:
            parts = list(dy)
            dy, d_states = (parts[:2], parts[2:]) if self.merge_mode is None else (parts[0], parts[1:])
        if self.merge_mode == "concat":
            units = y_f.shape[-1]
            d_f, d_b = dy[..., :units], dy[..., units:]
        elif self.merge_mode == "sum":
            d_f = d_b = dy
        elif self.merge_mode == "mul":
            d_f, d_b = dy * y_b, dy * y_f
        elif self.merge_mode == "ave":
            d_f = d_b = dy * dy.dtype.type(0.5)
        else:
            d_f, d_b = dy
        if self.return_sequences and d_b is not None:
            d_b = d_b[:, ::-1]
        d_f = None if d_f is None else np.ascontiguousarray(d_f)
        d_b = None if d_b is None else np.ascontiguousarray(d_b)
        if self.return_state:
            half = len(d_states) // 2
            d_f, d_b = [d_f] + d_states[:half], [d_b] + d_states[half:]
        dx_f = self.forward_layer.backward(d_f)
        dx_b = self.backward_layer.backward(d_b)
        if dx_f is None or dx_b is None:
            return None
        return dx_f + dx_b

    def compute_mask(self, inputs, mask=None):
        return mask if self.return_sequences else None

    def get_config(self):
        from . import serialize

        cfg = super().get_config()
        cfg.pop("dtype", None)
        cfg.update(layer=serialize(self.forward_layer), merge_mode=self.merge_mode,
                   backward_layer=serialize(self.backward_layer))
        return cfg

    @classmethod
    def from_config(cls, cfg):
        from . import deserialize

        cfg = dict(cfg)
        for key in ("layer", "backward_layer"):  # descriptions, or layers saving already rebuilt
            if isinstance(cfg.get(key), dict):
                cfg[key] = deserialize(cfg[key])
        return cls(**cfg)


class TimeDistributed(_Wrapper):
    """Applies a layer to every time step: (batch, timesteps, ...) -> (batch, timesteps, ...).

    The steps are folded into the batch (one call of the inner layer on batch·timesteps
    samples), so a Dense over every step is one product.

    Args:
        layer: a Layer instance (not yet built).
        **kwargs: name, trainable, input_shape.

    Example:
        >>> fastnn.layers.TimeDistributed(fastnn.layers.Dense(10))
    """

    supports_masking = True

    def __init__(self, layer, **kwargs):
        if not isinstance(layer, Layer):
            raise TypeError(f"TimeDistributed: 'layer' must be a Layer instance, got {type(layer).__name__}")
        kwargs.setdefault("dtype", layer.dtype)
        super().__init__(**kwargs)
        self.layer = layer
        self._need_input_grad = self._need_input_grad  # tell the inner layer

    def _inner_layers(self):
        layer = getattr(self, "layer", None)
        return [layer] if layer is not None else []

    def build(self, input_shape):
        if len(input_shape) < 3:
            raise ValueError(f"TimeDistributed '{self.name}': expects input (batch, timesteps, ...), got {input_shape}")
        inner = self.layer.ensure_built((None,) + tuple(input_shape[2:]))
        self._adopt(self.layer)
        return (input_shape[0], input_shape[1]) + tuple(inner[1:])

    def forward(self, x, training=False):
        batch, steps = x.shape[:2]
        y = self.layer.forward(np.ascontiguousarray(x.reshape((batch * steps,) + x.shape[2:])), training=training)
        if training:
            self._cache = (batch, steps)
        return y.reshape((batch, steps) + y.shape[1:])

    def backward(self, dy):
        batch, steps = self._check_cache()
        dx = self.layer.backward(np.ascontiguousarray(dy.reshape((batch * steps,) + dy.shape[2:])))
        return None if dx is None else dx.reshape((batch, steps) + dx.shape[1:])

    def get_config(self):
        from . import serialize

        cfg = super().get_config()
        cfg.pop("dtype", None)
        cfg["layer"] = serialize(self.layer)
        return cfg

    @classmethod
    def from_config(cls, cfg):
        from . import deserialize

        cfg = dict(cfg)
        if isinstance(cfg["layer"], dict):  # a description, or a layer saving already rebuilt
            cfg["layer"] = deserialize(cfg["layer"])
        return cls(**cfg)
