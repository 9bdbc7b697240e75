"""Models: the Sequential container (training loops in trainer.py, saving in saving.py).

A built model keeps every weight in one flat parameter buffer and every gradient in
another; each layer's Variables are views into them. One optimizer kernel call then
updates the whole model, and get_weights / set_weights are copies in and out.
"""

import numpy as np

from . import losses as losses_module
from . import metrics as metrics_module
from . import optimizers as optimizers_module
from . import trainer
from .layers.base import Layer
from .layers.core import InputLayer
from .saving import registration


class Model:
    """What every model offers: compile, fit, evaluate, predict, summary, weights.

    Subclasses provide ``layers``, ``build(input_shape)``, ``forward`` and ``backward``.
    """

    def __init__(self, name=None):
        from .layers.base import _unique_name

        self.name = name or _unique_name("sequential" if isinstance(self, Sequential) else "model")
        self.optimizer = None
        self.loss = None
        self.compiled_metrics = []
        self.stop_training = False
        self.history = None
        self.built = False
        self._params = self._grads = None
        self._packed = []

    # ---- compile / fit / evaluate / predict --------------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, loss_weights=None, weighted_metrics=None,
                run_eagerly=None, jit_compile=None, **kwargs):
        """Configures training.

        Args:
            optimizer: name ("adam") or Optimizer instance, default "rmsprop".
            loss: name, Loss instance or function ``loss(y_true, y_pred)``.
            metrics: list of names ("accuracy", "mae"...), Metric instances or functions.
            loss_weights: a float scaling the loss (a model with one output has one
                loss; a list or dict of one value is accepted too).
            weighted_metrics: metrics that also receive sample_weight.
        """
        if kwargs:
            raise TypeError(f"compile: unexpected keyword argument(s) {sorted(kwargs)}")
        if loss is None:
            raise ValueError("compile: 'loss' is required (e.g. loss='sparse_categorical_crossentropy')")
        self.optimizer = optimizers_module.get(optimizer)
        self.loss = losses_module.get(loss)
        if isinstance(loss_weights, dict):
            loss_weights = list(loss_weights.values())
        if isinstance(loss_weights, (list, tuple)):
            if len(loss_weights) != 1:
                raise ValueError(f"compile: one output, so 'loss_weights' needs one value, got {loss_weights}")
            loss_weights = loss_weights[0]
        self._loss_weight = 1.0 if loss_weights is None else float(loss_weights)
        if isinstance(metrics, (str, metrics_module.Metric)) or callable(metrics):
            metrics = [metrics]
        self.compiled_metrics = [metrics_module.get(m) for m in (metrics or [])]
        if isinstance(weighted_metrics, (str, metrics_module.Metric)):
            weighted_metrics = [weighted_metrics]
        self.weighted_metrics = [metrics_module.get(m) for m in (weighted_metrics or [])]
        self.compiled = True
        if self.built:
            self._attach_optimizer()

    @property
    def metrics_names(self):
        return ["loss"] + [m.name for m in self.compiled_metrics + getattr(self, "weighted_metrics", [])]

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, class_weight=None, sample_weight=None,
            initial_epoch=0, steps_per_epoch=None, validation_batch_size=None, validation_freq=1):
        """Trains for `epochs` epochs; returns a History (``history.history['loss']`` ...).

        Args:
            x: array (n, ...) of inputs. y: array (n, ...) of targets.
            batch_size: int, default 32.
            epochs: int, default 1.
            verbose: "auto" (=1), 0 silent, 1 progress bar, 2 one line per epoch.
            callbacks: list of Callback.
            validation_split: float in [0, 1): the LAST fraction of x/y (before
                shuffling) is held out and evaluated each epoch.
            validation_data: (x_val, y_val) or (x_val, y_val, sample_weight_val).
            shuffle: bool, default True (fastnn's seeded generator).
            class_weight: dict class -> weight, turned into sample weights.
            sample_weight: array (n,) of per-sample loss weights.
            initial_epoch: int, default 0: the epoch to start from.
            steps_per_epoch: int or None: batches per epoch (default all).
            validation_batch_size: default batch_size.
            validation_freq: int, default 1: validate every so many epochs.
        """
        return trainer.fit(self, x, y, batch_size=batch_size, epochs=epochs, verbose=verbose, callbacks=callbacks,
                           validation_split=validation_split, validation_data=validation_data, shuffle=shuffle,
                           class_weight=class_weight, sample_weight=sample_weight, initial_epoch=initial_epoch,
                           steps_per_epoch=steps_per_epoch, validation_batch_size=validation_batch_size,
                           validation_freq=validation_freq)

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None, steps=None,
                 callbacks=None, return_dict=False):
        """Loss (and metrics) on (x, y): a float, or [loss, *metrics] when metrics were compiled.

        Args:
            batch_size: default 32. verbose: "auto" (=1), 0, 1 or 2.
            sample_weight: optional per-sample weights. return_dict: return {name: value}.
        """
        return trainer.evaluate(self, x, y, batch_size=batch_size, verbose=verbose, sample_weight=sample_weight,
                                steps=steps, callbacks=callbacks, return_dict=return_dict)

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """Outputs for x, in batches of `batch_size` (default 32).

        The fast path: no progress display (``verbose='auto'`` is silent here; pass 1 for a
        bar) and no callbacks unless given, so one sample costs microseconds.
        """
        return trainer.predict(self, x, batch_size=batch_size, verbose=verbose, steps=steps, callbacks=callbacks)

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict=False):
        """One gradient update on the batch (x, y).

        Returns the batch's loss (a float), or [loss, *metrics] when metrics were compiled
        (metrics over this batch alone), or a dict with return_dict=True.
        """
        return trainer.train_on_batch(self, x, y, sample_weight=sample_weight, class_weight=class_weight,
                                      return_dict=return_dict)

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        """Loss (and metrics) on one batch, without updating the weights; as train_on_batch."""
        return trainer.test_on_batch(self, x, y, sample_weight=sample_weight, return_dict=return_dict)

    def predict_on_batch(self, x):
        """Outputs for x as one batch (no callbacks, no progress display)."""
        return self.forward(trainer.prepare_x(self, x, "predict_on_batch", finite=False), training=False)

    def __call__(self, x, training=False):
        """The model's output for x (no batching, no callbacks)."""
        return self.forward(trainer.prepare_x(self, x, self.name, finite=False), training=training)

    # ---- weights ---------------------------------------------------------------------------
    @property
    def weights(self):
        return [v for layer in self.layers for v in layer.weights]

    @property
    def trainable_weights(self):
        return [v for layer in self.layers for v in layer.trainable_weights]

    @property
    def non_trainable_weights(self):
        return [v for layer in self.layers for v in layer.non_trainable_weights]

    def get_weights(self):
        """Copies of all weights, layer by layer (each layer's get_weights order)."""
        return [w for layer in self.layers for w in layer.get_weights()]

    def set_weights(self, weights):
        """Sets all weights from a list like get_weights(); on error nothing changes."""
        weights = list(weights)
        expected = sum(len(layer.weights) for layer in self.layers)
        if len(weights) != expected:
            raise ValueError(f"set_weights: the model has {expected} weight arrays, got {len(weights)}")
        position = 0
        for layer in self.layers:  # check everything before changing anything
            for var in layer.weights:
                value = np.asarray(weights[position])
                if value.shape != var.shape:
                    raise ValueError(f"set_weights: '{var.name}' has shape {var.shape}, got {value.shape}")
                if not np.all(np.isfinite(value)):
                    raise ValueError(f"set_weights: the value for '{var.name}' contains NaN or inf")
                position += 1
        position = 0
        for layer in self.layers:
            count = len(layer.weights)
            layer.set_weights(weights[position:position + count])
            position += count

    def count_params(self):
        return int(sum(layer.count_params() for layer in self.layers))

    # ---- saving ------------------------------------------------------------------------------
    def save(self, filepath, overwrite=True):
        """Saves the model to one file: architecture, weights, compile settings, optimizer state.

        ``fastnn.models.load_model(filepath)`` rebuilds it, ready to predict or to resume
        training exactly where it stopped. The write is atomic: a crash leaves any previous
        file intact. See ``fastnn.saving`` for the format (a zip of JSON and .npy arrays,
        never pickle).

        Args:
            filepath: str or path-like; ".fastnn" is suggested (".keras" works too).
            overwrite: bool, default True: replace an existing file (False: FileExistsError).
        """
        from . import saving

        saving.save_model(self, filepath, overwrite=overwrite)

    def save_weights(self, filepath, overwrite=True):
        """Saves the weights alone (no architecture, no optimizer state) to one file.

        Args:
            filepath: str or path-like (".weights.fastnn" is suggested).
            overwrite: bool, default True.
        """
        from . import saving

        saving.save_weights(self, filepath, overwrite=overwrite)

    def load_weights(self, filepath, skip_mismatch=False):
        """Loads weights written by ``save_weights`` (or ``save``) into this model.

        Args:
            filepath: str or path-like.
            skip_mismatch: bool, default False: leave layers whose weights do not match
                as they are (with a warning) instead of raising.

        Raises:
            ValueError: a different architecture (the message names the first weight that
                does not match), or a file that is not a fastnn file, truncated or corrupted.
        """
        from . import saving

        saving.load_weights(self, filepath, skip_mismatch=skip_mismatch)

    def _pack_weights(self):
        """Moves every Variable into the flat buffers (trainable ones first, in layer order)."""
        trainable = [v for layer in self.layers for v in layer.trainable_weights]
        frozen = [v for layer in self.layers for v in layer.non_trainable_weights]
        dtypes = {v.dtype for v in trainable + frozen}
        if len(dtypes) > 1:
            raise ValueError(f"Model '{self.name}': layers have different dtypes {sorted(d.name for d in dtypes)}")
        dtype = dtypes.pop() if dtypes else np.dtype(self._float_dtype())
        total_t = sum(v.value.size for v in trainable)
        total = total_t + sum(v.value.size for v in frozen)
        params = np.empty(total, dtype)
        grads = np.zeros(total_t, dtype)
        offset = 0
        for v in trainable + frozen:
            size = v.value.size
            value_view = params[offset:offset + size].reshape(v.shape)
            grad_view = grads[offset:offset + size].reshape(v.shape) if offset + size <= total_t else None
            v._rebind(value_view, grad_view)
            if grad_view is None:
                v.grad = None
            offset += size
        self._params, self._grads = params, grads
        self._packed = trainable
        if self.optimizer is not None:
            self._attach_optimizer()

    # ---- copies and pickles ------------------------------------------------------------------
    def __getstate__(self):
        state = self.__dict__.copy()
        if self.optimizer is not None and self.optimizer.built:
            state["_optimizer_state"] = self.optimizer.get_state()
        return state

    def __setstate__(self, state):
        # A copy gets its variables as separate arrays: move them back into flat buffers
        # (otherwise the optimizer would update buffers the layers no longer read).
        optimizer_state = state.pop("_optimizer_state", None)
        self.__dict__.update(state)
        if self.built:
            self._pack_weights()
            if optimizer_state is not None:
                self.optimizer.set_state(optimizer_state)

    def _attach_optimizer(self):
        self.optimizer.build(self._packed, flat=(self._params[:self._grads.size], self._grads))

    def _ensure_packed(self):
        """Repacks when layers were frozen or unfrozen since the last pack."""
        current = [v for layer in self.layers for v in layer.trainable_weights]
        if current != self._packed:
            self._pack_weights()
        elif self.optimizer is not None and not self.optimizer.built:
            self._attach_optimizer()

    def _input_dtype(self):
        """The dtype inputs are converted to (the first layer's: integer ids for an Embedding)."""
        return self.layers[0].input_dtype if self.layers else "float32"

    def _float_dtype(self):
        """The model's floating-point type (weights, outputs, targets)."""
        return self.layers[0].dtype if self.layers else "float32"

    # ---- summary -----------------------------------------------------------------------------
    def summary(self, line_length=None, print_fn=None):
        """Prints a table of the layers (name and type, output shape, parameter count) and totals."""
        print_fn = print_fn or print
        width = line_length or 65
        cols = [int(width * 0.45), int(width * 0.80)]
        rule, thick = "_" * width, "=" * width

        def row(a, b, c):
            text = a[:cols[0] - 1].ljust(cols[0]) + b[:cols[1] - cols[0] - 1].ljust(cols[1] - cols[0]) + c
            return text

        print_fn(f'Model: "{self.name}"')
        print_fn(rule)
        print_fn(row(" Layer (type)", "Output Shape", "Param #"))
        print_fn(thick)
        for i, layer in enumerate(self.layers):
            shape = str(layer.output_shape) if layer.built else "?"
            params = f"{layer.count_params():,}" if layer.built else "0 (unbuilt)"
            print_fn(row(f" {layer.name} ({type(layer).__name__})", shape, params))
            if i < len(self.layers) - 1:
                print_fn("")
        print_fn(thick)
        trainable = sum(v.value.size for v in self.trainable_weights)
        frozen = sum(v.value.size for v in self.non_trainable_weights)
        itemsize = np.dtype(self._float_dtype()).itemsize
        print_fn(f"Total params: {trainable + frozen:,} ({_memory(self, trainable + frozen, itemsize)})")
        print_fn(f"Trainable params: {trainable:,} ({_memory(self, trainable, itemsize)})")
        print_fn(f"Non-trainable params: {frozen:,} ({_memory(self, frozen, itemsize)})")
        print_fn(rule)

    # ---- registration (saving/registration.py) ------------------------------------------------
    def __init_subclass__(cls, **kwargs):
        """fastnn's own models register by name, so that saved configs find them (a user's do not)."""
        super().__init_subclass__(**kwargs)
        registration.register_builtin(cls, "model")


registration.register_builtin(Model, "model")  # the base is a usable model class too
# ---- end of registration ------------------------------------------------------------------------


def _memory(model, count, itemsize):
    size = float(count * itemsize)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.2f} {unit}"
        size /= 1024


class Sequential(Model):
    """A linear stack of layers: ``Sequential([Dense(64, activation='relu', input_shape=(20,)), Dense(1)])``.

    Args:
        layers: list of Layer (optional; or use ``add``). The first may be ``Input(shape)``
            or carry ``input_shape=``; otherwise the model is built on its first data.
        name: str.
    """

    def __init__(self, layers=None, name=None):
        super().__init__(name=name)
        self._layers = []
        self._input_layer = None
        for layer in layers or []:
            self.add(layer, _rebuild=False)
        self._maybe_build()

    @property
    def layers(self):
        """The layers, without the Input."""
        return list(self._layers)

    def add(self, layer, _rebuild=True):
        """Appends a layer (or an Input declaring the input shape)."""
        if isinstance(layer, InputLayer):
            if self._layers or self._input_layer is not None:
                raise ValueError("Sequential: an Input must come first, and only once")
            self._input_layer = layer
            return
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add: expected a Layer, got {type(layer).__name__}")
        if any(existing is layer for existing in self._layers):
            raise ValueError(f"Sequential: layer '{layer.name}' was added twice")
        if any(existing.name == layer.name for existing in self._layers):
            raise ValueError(f"Sequential: two layers are named '{layer.name}'")
        self._layers.append(layer)
        if self.built:
            self.built = False
        if _rebuild:
            self._maybe_build()

    def pop(self):
        """Removes and returns the last layer."""
        if not self._layers:
            raise TypeError("Sequential.pop: there are no layers")
        layer = self._layers.pop()
        self.built = False
        self._maybe_build()
        return layer

    def _declared_input_shape(self):
        if self._input_layer is not None:
            return self._input_layer.shape
        if self._layers and self._layers[0]._declared_input_shape is not None:
            return self._layers[0]._declared_input_shape
        return None

    def _maybe_build(self):
        shape = self._declared_input_shape()
        if shape is not None and self._layers:
            self.build((None,) + tuple(shape))

    def build(self, input_shape=None):
        """Builds every layer for `input_shape` (batch axis included) and packs the weights."""
        if input_shape is None:
            declared = self._declared_input_shape()
            if declared is None:
                raise ValueError("Sequential.build: give input_shape, or an Input / input_shape= on the first layer")
            input_shape = (None,) + tuple(declared)
        shape = (None,) + tuple(input_shape[1:])
        self.input_shape = shape
        for layer in self._layers:
            shape = layer.ensure_built(shape)
        self.output_shape = shape
        # Nothing needs d(loss)/d(x) of the model's input, nor of layers with no weights before
        # them (augmentation or rescaling first, then a convolution).
        for i, layer in enumerate(self._layers):
            layer._need_input_grad = any(earlier.weights for earlier in self._layers[:i])
        self.built = True
        self._pack_weights()

    def _input_dtype(self):
        if self._input_layer is not None and np.dtype(self._input_layer.dtype).kind == "f":
            return self._input_layer.dtype
        return self._layers[0].input_dtype if self._layers else "float32"

    def _float_dtype(self):
        if self._input_layer is not None and np.dtype(self._input_layer.dtype).kind == "f":
            return self._input_layer.dtype
        return self._layers[0].dtype if self._layers else "float32"

    def forward(self, x, training=False, penalties=False):
        """Runs every layer; with training=True each keeps what backward needs.

        With training (or `penalties`), the activity regularizers' penalties of this pass
        are summed in ``self.activity_penalty``.
        """
        self.activity_penalty = 0.0
        mask = None  # Keras masking: made by an Embedding(mask_zero=True), used by recurrent layers
        for layer in self._layers:
            x_in = x
            if mask is not None and layer._consumes_mask:
                x = layer.forward(x, training=training, mask=mask)
            else:
                x = layer.forward(x, training=training)
            mask = layer.compute_mask(x_in, mask)
            if layer.activity_regularizer is not None and (training or penalties):
                self.activity_penalty += layer.activity_regularizer.penalty(x)
                layer._activity_output = x if training else None
        self._output_mask = mask  # a mask that reaches the output weights the loss (Keras)
        return x

    def backward(self, dy):
        """Backpropagates dy through the layers, filling every gradient."""
        for layer in reversed(self._layers):
            output = getattr(layer, "_activity_output", None)
            if layer.activity_regularizer is not None and output is not None:
                dy = dy + layer.activity_regularizer.gradient(output).astype(dy.dtype, copy=False)
            dy = layer.backward(dy)
            if dy is None:
                break
        return dy

    def get_config(self):
        """{'name', 'layers': [layer descriptions], 'build_input_shape' (when built)}."""
        from .saving import serialize_keras_object

        layers = ([self._input_layer] if self._input_layer is not None else []) + self._layers
        config = {"name": self.name, "layers": [serialize_keras_object(layer) for layer in layers]}
        if self.built:
            config["build_input_shape"] = self.input_shape
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """A new (untrained) model from ``get_config()``'s output.

        Args:
            config: dict from get_config().
            custom_objects: dict, default None: name -> custom layer class or function.
        """
        from .saving import deserialize_keras_object

        layers = [deserialize_keras_object(layer, custom_objects, kind="layer") for layer in config.get("layers", [])]
        model = cls(layers=layers, name=config.get("name"))
        shape = config.get("build_input_shape")
        if shape is not None and not model.built and model.layers:
            model.build(tuple(shape))
        return model


def load_model(filepath, custom_objects=None, compile=True, safe_mode=True):
    """Loads a model saved with ``model.save``.

    Args:
        filepath: str or path-like.
        custom_objects: dict, default None: name -> class or function, for custom layers,
            losses, metrics or activations not registered with
            ``fastnn.saving.register_keras_serializable``.
        compile: bool, default True: compile as saved (optimizer with its state, loss,
            metrics, loss weights), so that training resumes exactly. False: uncompiled.
        safe_mode: bool, default True: accepted for Keras compatibility; fastnn files never
            carry code, so loading is always safe.

    Returns:
        The model.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a fastnn model file, truncated or corrupted, arrays that would need
            unpickling, or an unknown custom class or function (named, with the fix).
    """
    from . import saving

    return saving.load_model(filepath, custom_objects=custom_objects, compile=compile, safe_mode=safe_mode)
