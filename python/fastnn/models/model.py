"""``Model``: a graph of layer calls that trains (Keras 3's ``keras.Model``).

Three ways to make one, all running on the same graph core (``fastnn.graph``):

* functional: ``Model(inputs, outputs)`` from ``keras.Input`` tensors and layer calls;
* ``Sequential([...])``: the chain case (models/sequential.py);
* subclassing: ``class MyModel(Model)`` with layers made in ``__init__`` and
  ``call(inputs, training=False)``, traced into a graph (``fastnn.tracing``).

A model is also a layer: called on symbolic tensors it becomes one node of a bigger graph.

A model's weights live in one flat parameter buffer (and their gradients in another); each
Variable is a view into it. One optimizer kernel call then updates the whole model, and
get_weights / set_weights are copies in and out.
"""

import numpy as np

from .. import loop_guard, trainer
from ..graph import Graph
from ..structure import flatten, pack_like
from ..keras_tensor import KerasTensor, any_symbolic
from ..layers.base import Layer, _unique_name, assign_weights
from ..saving import registration
from . import functional


class Model(Layer):
    """A model: layers in a graph, with compile, fit, evaluate, predict, save and summary.

    Args:
        inputs: (functional API) a KerasTensor from ``keras.Input``, or a list or dict of them.
        outputs: (functional API) the KerasTensor(s) computed from the inputs: one, a list,
            or a dict (its keys name the outputs).
        name: str, default None ("functional", "sequential" or the snake-case class name,
            made unique).
        trainable: bool, default True.

    Subclassing: define the layers in ``__init__`` (after ``super().__init__()``) and the
    computation in ``call(self, inputs, training=False)``, with layers and ``fastnn.ops``
    maths; ``fit`` trains it with no hand-written gradient.

    Example:
        >>> inputs = fastnn.Input((784,))
        >>> x = fastnn.layers.Dense(64, activation="relu")(inputs)
        >>> outputs = fastnn.layers.Dense(10, activation="softmax")(x)
        >>> model = fastnn.Model(inputs, outputs)

        >>> class MLP(fastnn.Model):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.hidden = fastnn.layers.Dense(64, activation="relu")
        ...         self.out = fastnn.layers.Dense(10, activation="softmax")
        ...     def call(self, inputs, training=False):
        ...         return self.out(self.hidden(inputs))
    """

    _graph_masks = True
    _consumes_mask = True  # a mask reaching a nested model flows on through its graph
    _training_dependent = True  # it may hold Dropout or BatchNormalization

    def __init__(self, *args, **kwargs):
        inputs = kwargs.pop("inputs", args[0] if len(args) > 0 else None)
        outputs = kwargs.pop("outputs", args[1] if len(args) > 1 else None)
        if len(args) > 2:
            raise TypeError(f"Model: expected at most 2 positional arguments (inputs, outputs), got {len(args)}")
        if (inputs is None) != (outputs is None):
            raise ValueError("Model: give both 'inputs' and 'outputs' (functional API), or neither (subclassing)")
        if "name" not in kwargs or kwargs["name"] is None:
            kwargs["name"] = _unique_name(self._default_name(inputs is not None))
        super().__init__(**kwargs)
        self.optimizer = None
        self.loss = None
        self.compiled = False
        self.compiled_metrics = []
        self.weighted_metrics = []
        self._compiled = None
        self.stop_training = False
        self.history = None
        self._params = self._grads = None
        self._packed = []
        self._functional = False
        self._graph = None
        if inputs is not None:
            self._init_functional(inputs, outputs)

    def _default_name(self, functional_api):
        from .sequential import Sequential

        if isinstance(self, Sequential):
            return "sequential"
        if functional_api and type(self) is Model:
            return "functional"
        from ..layers.base import _snake_case

        return _snake_case(type(self).__name__)

    def _init_functional(self, inputs, outputs):
        """Makes this model the graph from `inputs` to `outputs` (structures of KerasTensors)."""
        for what, structure in (("inputs", inputs), ("outputs", outputs)):
            for t in flatten(structure):
                if not isinstance(t, KerasTensor):
                    raise TypeError(f"Model '{self.name}': '{what}' must be symbolic tensors (keras.Input and what "
                                    f"layers return from it), got {type(t).__name__}")
        self._inputs_struct = _normalize_structure(inputs)
        self._outputs_struct = _normalize_structure(outputs)
        self._graph = Graph(flatten(self._inputs_struct), flatten(self._outputs_struct), name=self.name)
        self._functional = True
        shapes = [t.shape for t in self._graph.inputs]
        self.input_shape = shapes[0] if len(shapes) == 1 else shapes
        out_shapes = [t.shape for t in self._graph.outputs]
        self.output_shape = out_shapes[0] if len(out_shapes) == 1 else out_shapes
        self.built = True
        self._flat_input_specs = [(t.shape, functional.input_dtype(t, self._graph)) for t in self._graph.inputs]
        self._pack_if_free()

    # ---- structure -----------------------------------------------------------------------------------
    @property
    def layers(self):
        """The layers, in graph order (functional: the InputLayers too, as Keras lists them)."""
        if self._functional:
            return functional.graph_layers(self._graph)
        return self._sublayers()

    def _sublayers(self):
        if self._functional:
            return [layer for layer in functional.graph_layers(self._graph) if not layer._is_input_layer]
        return super()._sublayers()

    def get_layer(self, name=None, index=None):
        """A layer by name (or by index in ``layers``)."""
        if index is not None:
            return self.layers[index]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"Model '{self.name}' has no layer named {name!r}; its layers: "
                         f"{[layer.name for layer in self.layers]}")

    @property
    def inputs(self):
        return list(self._graph.inputs) if self._functional else None

    @property
    def outputs(self):
        return list(self._graph.outputs) if self._functional else None

    @property
    def input(self):
        return self._inputs_struct if self._functional else super().input

    @property
    def output(self):
        return self._outputs_struct if self._functional else super().output

    @property
    def input_names(self):
        if isinstance(getattr(self, "_inputs_struct", None), dict):
            return list(self._inputs_struct)
        return [t.name for t in self._graph.inputs] if self._functional else None

    @property
    def output_names(self):
        """The outputs' names: dict keys, else the names of the layers that make them (Keras)."""
        if self._functional:
            if isinstance(self._outputs_struct, dict):
                return list(self._outputs_struct)
            return [t._keras_history[0].name for t in self._graph.outputs]
        graph = self._execution_graph(False) if self.built else None
        if graph is None:
            return ["output"]
        return [t._keras_history[0].name if t._keras_history else f"output_{i}"
                for i, t in enumerate(graph.outputs)]

    # ---- the layer contract: a model as a node of a bigger graph ---------------------------------------
    def _is_traced(self):
        return not self._functional and type(self).call is not Model.call

    def call(self, inputs, training=False, mask=None):
        """The model's outputs for `inputs` (functional: its graph)."""
        if not self._functional:
            raise TypeError(f"{type(self).__name__} must implement call(inputs, training=False) (or be made with "
                            "Model(inputs, outputs))")
        outputs, _ = self.forward(inputs, training)
        return outputs

    def forward(self, inputs, training=False, penalties=False, mask=None, keep_cache=False, **kwargs):
        """(outputs, cache): the model's graph run on `inputs` (arrays in the inputs' structure)."""
        if not self._functional:
            return super().forward(inputs, training, keep_cache=keep_cache, mask=mask, **kwargs)
        flat = self._flatten_inputs(inputs)
        masks = None if mask is None else (list(mask) if isinstance(mask, (list, tuple)) else [mask])
        outputs, tape = self._graph.forward(flat, training, penalties=penalties, masks=masks, keep_cache=keep_cache)
        return self._pack_outputs(outputs), tape

    def _may_produce_mask(self):
        graph = self._execution_graph(False) if self.built else None
        return graph is not None and graph.has_masks

    def backward(self, cache, dys, need_input_grad=True, accumulate=False):
        if not self._functional:
            return super().backward(cache, dys, need_input_grad, accumulate)
        n = len(self._graph.inputs)
        d_outputs = flatten(dys) if len(self._graph.outputs) > 1 else [dys]
        needs = need_input_grad if isinstance(need_input_grad, (list, tuple)) else [need_input_grad] * n
        d_inputs = self._graph.backward(cache, d_outputs, needs, accumulate)
        return d_inputs[0] if n == 1 else d_inputs

    def compute_output_shape(self, input_shape):
        if self._functional:
            return self.output_shape
        return super().compute_output_shape(input_shape)

    def _flatten_inputs(self, inputs):
        struct = self._inputs_struct
        if isinstance(struct, dict) and isinstance(inputs, dict):
            return [inputs[k] for k in struct]
        if isinstance(inputs, (list, tuple)):
            return list(inputs)
        if isinstance(inputs, dict):
            return list(inputs.values())
        return [inputs]

    def _pack_outputs(self, outputs):
        struct = self._outputs_struct
        if isinstance(struct, KerasTensor):
            return outputs[0]
        return pack_like(struct, outputs)

    def __call__(self, *args, **kwargs):
        """The model's outputs for x (no batching, no callbacks); on symbolic tensors, a node."""
        if args and any_symbolic(args, kwargs) or any_symbolic((), kwargs):
            return super().__call__(*args, **kwargs)
        if not args:
            args = (kwargs.pop("inputs"),)
        training = bool(kwargs.pop("training", False) or False)
        kwargs.pop("mask", None)
        if kwargs:
            raise TypeError(f"Model '{self.name}': unexpected call arguments {sorted(kwargs)}")
        flat = trainer.prepare_inputs(self, args[0], self.name, finite=False)
        outputs, _ = loop_guard.infer(self, self._run, flat, training)  # (safe while fit runs: fastnn.loop_guard)
        return self._structure_outputs(outputs)

    # ---- execution (the protocol the trainer talks to) ---------------------------------------------
    def _execution_graph(self, training):
        """The graph that runs this model (a subclassed model has one per training mode)."""
        if self._functional:
            return self._graph
        if not self.built:
            return None
        from .. import tracing

        return tracing.trace_for_specs(self, self._input_specs, training).graph

    def _run(self, flat_inputs, training=False, logits=None, penalties=False):
        """(flat outputs, tape) of the execution graph on the flat inputs."""
        graph = self._execution_graph(training)
        return graph.forward(flat_inputs, training, logits=logits, penalties=penalties)

    def _structure_outputs(self, flat_outputs):
        """Outputs as the model returns them: one array, a list, or a dict."""
        if self._functional:
            return self._pack_outputs(flat_outputs)
        from .. import tracing

        found = tracing.trace_for_specs(self, self._input_specs, False)
        return pack_like(found.outputs, flat_outputs)

    def _input_count(self):
        if self._functional:
            return len(self._graph.inputs)
        from .. import tracing

        specs = getattr(self, "_input_specs", None)
        return len(tracing.flat_specs(specs)) if specs is not None else 1

    def _float_dtype(self):
        """The model's floating-point type (weights, outputs, targets)."""
        variables = self._variables
        if variables:
            return variables[0].dtype.name
        return self.dtype

    def build(self, input_shape=None):
        """Builds the model for inputs of `input_shape` (batch axis included): a subclassed model
        traces its call(); the weights then move into the flat buffers."""
        if self._functional:
            return self.output_shape
        if input_shape is None:
            raise ValueError(f"Model '{self.name}'.build: give the input shape, e.g. build((None, 784))")
        return self._build_from_specs(_specs_from_shape(input_shape, self.input_dtype))

    def _build_from_specs(self, specs):
        """Traces call() for inputs described by specs (structure of (shape, dtype)), packs weights."""
        from .. import tracing
        from ..layers.base import _unbatched

        self._input_specs = specs
        self._flat_input_specs = [(shape, np.dtype(dtype)) for shape, dtype in tracing.flat_specs(specs)]
        found = tracing.trace_for_specs(self, specs, False)
        shapes = [t.shape for t in flatten(found.inputs)]
        self.input_shape = _unbatched(shapes[0] if isinstance(found.inputs, KerasTensor) else shapes)
        out = [t.shape for t in flatten(found.outputs)]
        self.output_shape = out[0] if isinstance(found.outputs, KerasTensor) else out
        self.built = True
        self._pack_weights()
        return self.output_shape

    def _build_on_data(self, flat_inputs, structure):
        """Builds an unbuilt model from the first data it sees."""
        specs = pack_like(structure, [((None,) + tuple(x.shape[1:]), x.dtype.name) for x in flat_inputs])
        self._build_from_specs(specs)

    # ---- compile / fit / evaluate / predict ---------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None, metrics=None, weighted_metrics=None,
                run_eagerly=None, steps_per_execution=None, jit_compile=None, auto_scale_loss=None, **kwargs):
        """Configures training.

        Args:
            optimizer: name ("adam") or Optimizer instance, default "rmsprop".
            loss: a loss (name, Loss instance or function ``loss(y_true, y_pred)``), or one
                per output: a list in output order or a dict keyed by output name (None
                for an output that is not trained). One loss for a model with several
                outputs applies to each.
            loss_weights: float, or one per output (list or dict), default 1.0 each: the
                total loss is the weighted sum of the outputs' losses.
            metrics: list of metrics (names such as "accuracy", "mae", Metric instances or
                functions); with several outputs a list of lists or a dict keyed by output
                name (a flat list applies to each output).
            weighted_metrics: as metrics; these also receive sample_weight.
            run_eagerly, steps_per_execution, jit_compile, auto_scale_loss: accepted for
                Keras compatibility (fastnn always runs its C++ kernels directly).
        """
        from ..compile_utils import CompiledOutputs
        from .. import optimizers as optimizers_module

        if kwargs:
            raise TypeError(f"compile: unexpected keyword argument(s) {sorted(kwargs)}")
        if loss is None:
            raise ValueError("compile: 'loss' is required (e.g. loss='sparse_categorical_crossentropy')")
        self.optimizer = optimizers_module.get(optimizer)
        self._compiled = CompiledOutputs(self, loss, loss_weights, metrics, weighted_metrics)
        self.loss = self._compiled.loss_structure
        self.compiled_metrics = self._compiled.all_metrics
        self.weighted_metrics = self._compiled.all_weighted_metrics
        self.compiled = True
        if self._params is not None:
            self._attach_optimizer()

    @property
    def metrics_names(self):
        """The names of evaluate()'s values, in order."""
        if self._compiled is None:
            return ["loss"]
        return self._compiled.log_names()

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, class_weight=None, sample_weight=None,
            initial_epoch=0, steps_per_epoch=None, validation_steps=None, validation_batch_size=None,
            validation_freq=1):
        """Trains for `epochs` epochs; returns a History (``history.history['loss']`` ...).

        Args:
            x: the inputs: an array (n, ...), or a list / dict of arrays for several inputs.
                Or batches: a generator or iterator yielding ``(x, y)`` or ``(x, y,
                sample_weight)`` batches, an iterable yielding them that can be iterated
                again (e.g. a ``torch.utils.data.DataLoader``: each epoch iterates it
                afresh), or a ``fastnn.utils.PyDataset`` (loaded ahead in background
                workers). Each batch is checked as arrays are; an unbuilt model is built from
                the first one.
            y: the targets: an array, or a list / dict (keyed by output name) for several
                outputs. None when x yields batches.
            batch_size: int, default 32. None when x yields batches.
            epochs: int, default 1.
            verbose: "auto" (=1), 0 silent, 1 progress bar, 2 one line per epoch.
            callbacks: list of Callback.
            validation_split: float in [0, 1): the LAST fraction of x/y (before
                shuffling) is held out and evaluated each epoch (arrays only).
            validation_data: (x_val, y_val) or (x_val, y_val, sample_weight_val), or a
                generator / iterable / PyDataset of such batches.
            shuffle: bool, default True (fastnn's seeded generator): the samples of arrays,
                the batch order of a PyDataset; a generator or iterable is used as it comes.
            class_weight: dict class -> weight, turned into sample weights (one output); for
                batches, batch by batch (Keras refuses it with a generator; fastnn applies it).
            sample_weight: array (n,) of per-sample loss weights (or one per output).
            initial_epoch: int, default 0: the epoch to start from.
            steps_per_epoch: int or None: batches per epoch. Default: all the arrays' batches,
                or one pass over a PyDataset / iterable, or a generator until it is exhausted.
                With batches, each epoch continues where the previous one stopped; a
                generator that runs out stops training with a warning (as Keras).
            validation_steps: int or None: validation batches per epoch (default: all);
                validation starts from the first batch every time (a generator goes on).
            validation_batch_size: default batch_size (arrays only).
            validation_freq: int, default 1: validate every so many epochs.

        With several outputs the logs hold the total ``loss``, each output's ``<name>_loss``
        and its metrics as ``<name>_<metric>`` (``val_`` prefixed for validation), as Keras.
        A subclass's ``train_step`` (and ``test_step`` for validation) is called for each
        batch when it overrides Model's.
        """
        self._check_not_quantized("fit")
        return trainer.fit(self, x, y, batch_size=batch_size, epochs=epochs, verbose=verbose, callbacks=callbacks,
                           validation_split=validation_split, validation_data=validation_data, shuffle=shuffle,
                           class_weight=class_weight, sample_weight=sample_weight, initial_epoch=initial_epoch,
                           steps_per_epoch=steps_per_epoch, validation_steps=validation_steps,
                           validation_batch_size=validation_batch_size, validation_freq=validation_freq)

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None, steps=None,
                 callbacks=None, return_dict=False):
        """Loss (and metrics) on (x, y): a float, or a list in ``metrics_names`` order.

        Args:
            x, y: as fit (x may be a generator, iterable or PyDataset of batches; y then None).
            batch_size: default 32 (None for batches). verbose: "auto" (=1), 0, 1 or 2.
            sample_weight: optional per-sample weights. steps: optional number of batches
                (default: all, or until the generator is exhausted).
            callbacks: list of Callback. return_dict: return {name: value}.
        """
        return trainer.evaluate(self, x, y, batch_size=batch_size, verbose=verbose, sample_weight=sample_weight,
                                steps=steps, callbacks=callbacks, return_dict=return_dict)

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """Outputs for x, in batches of `batch_size` (default 32): an array, or a list / dict.

        x: an array (or a list / dict of arrays), or a generator, iterable or PyDataset
        yielding batches ``x`` or ``(x,)`` (``(x, y)`` too: y is not used); their outputs are
        concatenated. steps: optional number of batches.

        The fast path: no progress display (``verbose='auto'`` is silent here; pass 1 for a
        bar) and no callbacks unless given, so one sample costs microseconds.
        """
        return trainer.predict(self, x, batch_size=batch_size, verbose=verbose, steps=steps, callbacks=callbacks)

    # ---- one step (Keras 3's train_step / test_step / predict_step) -------------------------------------
    def train_step(self, data):
        """One training step on one batch; fit calls it for each batch.

        The default is fastnn's fused step (forward, loss and its gradient, backward, one
        optimizer update over the flat parameter buffer, metrics). Override it to change what
        a step does; fit then calls the override (and keeps the fused path when it is not
        overridden). A common pattern transforms the batch and calls the default::

            def train_step(self, data):
                x, y = data
                return super().train_step((augment(x), y))

        A step written from fastnn's pieces::

            def train_step(self, data):
                x, y = data
                y_pred, cache = self.forward(x, training=True)
                loss, d_y_pred = self.compute_loss_and_grad(x, y, y_pred)
                self.backward(cache, d_y_pred, need_input_grad=False)  # into each weight's .grad
                self.optimizer.apply_gradients(zip([v.grad for v in self.trainable_weights],
                                                   self.trainable_weights))
                return {"loss": loss, **self.compute_metrics(x, y, y_pred)}

        Args:
            data: the batch as fit got it: ``(x, y)`` or ``(x, y, sample_weight)`` (with
                class_weight folded into sample_weight), x converted to the model's input
                dtypes in the structure given (one array, a list or a dict), y and
                sample_weight NumPy arrays as given.

        Returns:
            dict of logs for the progress bar, callbacks and History (the default: the loss
            and metrics averaged over the epoch so far). The last batch's logs are the epoch's.
        """
        return trainer.train_step(self, data)

    def test_step(self, data):
        """One evaluation step on one batch; evaluate (and fit's validation) call it for each batch.

        Args:
            data: ``(x, y)`` or ``(x, y, sample_weight)``, as for train_step.

        Returns:
            dict of logs (the default: loss and metrics averaged over the evaluation so far,
            weight penalties included). The last batch's logs are evaluate's result.
        """
        return trainer.test_step(self, data)

    def predict_step(self, data):
        """The outputs for one batch; predict calls it for each batch and concatenates them.

        Args:
            data: the batch: ``x`` (one array), or ``(x,)`` when x is a list of arrays;
                ``x`` may also be a dict. Unpack it with
                ``fastnn.utils.unpack_x_y_sample_weight(data)``.

        Returns:
            the outputs (an array, or a list / dict of arrays, each with the batch axis first).
        """
        return trainer.predict_step(self, data)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The total loss of a batch (Keras' ``compute_loss``): the compiled losses (times their
        loss_weights) plus the weight regularizers' penalties.

        Args:
            x: the inputs (not used by the default). y: the targets, as fit takes them.
            y_pred: the model's outputs for x (an array, or a list / dict for several outputs).
            sample_weight: optional per-sample weights (or one per output).
            training: bool, default True (not used by the default).

        Returns:
            float.
        """
        loss, _ = trainer.compute_loss(self, x, y, y_pred, sample_weight, False, "compute_loss")
        return loss

    def compute_loss_and_grad(self, x=None, y=None, y_pred=None, sample_weight=None):
        """``compute_loss`` and its gradient with respect to ``y_pred``, for a hand-written
        ``train_step`` (fastnn has no tape over a whole model: ``self.backward(cache, grad)``
        then takes the gradient through the model's layers).

        The gradient covers the compiled losses; the weight penalties' gradients (and output
        masks) are applied by the default train_step only.

        Returns:
            (float loss, gradient shaped like y_pred: an array, or a list / dict with None for
            an output that has no loss).
        """
        return trainer.compute_loss(self, x, y, y_pred, sample_weight, True, "compute_loss_and_grad")

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Updates the compiled metrics with a batch and returns their results (Keras' ``compute_metrics``).

        Args:
            x: the inputs (not used by the default). y: the targets. y_pred: the outputs.
            sample_weight: optional per-sample weights (for weighted_metrics).

        Returns:
            dict metric name -> value (over the batches since the last reset).
        """
        return trainer.compute_metrics(self, x, y, y_pred, sample_weight)

    @property
    def metrics(self):
        """The compiled metrics (Metric objects; fit resets them at each epoch). Unlike Keras' list,
        no loss tracker: fit keeps the running loss itself."""
        if self._compiled is None or self._compiled.outputs is None:
            return []
        return self._compiled.all_metrics + self._compiled.all_weighted_metrics

    def reset_metrics(self):
        """Resets every compiled metric's state."""
        for metric in self.metrics:
            metric.reset_state()

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict=False):
        """One gradient update on the batch (x, y).

        Returns the batch's loss (a float), or a list in ``metrics_names`` order when there
        are metrics or several outputs (metrics over this batch alone), or a dict with
        return_dict=True.
        """
        self._check_not_quantized("train_on_batch")
        return trainer.train_on_batch(self, x, y, sample_weight=sample_weight, class_weight=class_weight,
                                      return_dict=return_dict)

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        """Loss (and metrics) on one batch, without updating the weights; as train_on_batch."""
        return trainer.test_on_batch(self, x, y, sample_weight=sample_weight, return_dict=return_dict)

    def predict_on_batch(self, x):
        """Outputs for x as one batch (no callbacks, no progress display)."""
        flat = trainer.prepare_inputs(self, x, "predict_on_batch", finite=False)
        outputs, _ = loop_guard.infer(self, self._run, flat, False)
        return self._structure_outputs(outputs)

    # ---- quantization ----------------------------------------------------------------------------------
    def quantize(self, mode, filters=None, verbose=True, **kwargs):
        """Quantizes the model's weights for inference (Keras 3's ``model.quantize``).

        ``"int8"`` (Keras' W8A8 dynamic scheme): every Dense, EinsumDense (so
        MultiHeadAttention's projections) and Embedding gets an int8 kernel with one scale
        per output channel (symmetric abs-max, values ``round(clip(w · scale, ±127))``), its
        inputs quantized per row at run time; beyond Keras, Conv1D/Conv2D (per filter; the
        activations quantized per image patch) and the input projection of LSTM/GRU (the
        kernel per gate column; the recurrent kernel stays float). Other layers with weights
        stay float and are named in one warning. The quantized layers' dtype policy becomes
        ``"int8_from_float32"``; their int8 weights are non-trainable, named as in Keras
        (``kernel`` + ``kernel_scale``, ``embeddings`` + ``embeddings_scale``) and saved as int8.

        A quantized model predicts and evaluates; it cannot be trained (``fit`` and
        ``train_on_batch`` raise a ValueError naming its quantized layers): train the float
        model, then quantize it.

        Args:
            mode: "int8" (the one mode fastnn implements).
            filters: optional regex string, list of them, or callable ``layer -> bool``: only
                the layers whose name matches (or for which it returns True) are quantized
                (Keras' argument). Default None: all that can be.
            verbose: bool, default True: warn about the layers left in float.
            **kwargs: ``config`` (must be None) and ``type_check`` are accepted for Keras
                compatibility.

        Returns:
            dict: ``{"quantized": [layer names], "skipped": [layer names]}``.

        Raises:
            ValueError: the model is not built; an unknown mode; the model is already
                quantized.

        Example:
            >>> model = fastnn.Sequential([fastnn.Input((10,)), fastnn.layers.Dense(4)])
            >>> model.quantize("int8")
            {'quantized': ['dense'], 'skipped': []}
        """
        from ..quantizers import quantize_model

        return quantize_model.quantize_model(self, mode, filters=filters, verbose=verbose, **kwargs)

    def _check_not_quantized(self, who):
        """fit / train_on_batch refuse a quantized model (inference only), naming its layers."""
        from ..quantizers import quantize_model

        quantize_model.check_trainable(self, who)

    # ---- weights ---------------------------------------------------------------------------------------
    def get_weights(self):
        """Copies of all weights, layer by layer (each layer's get_weights order); from another
        thread while fit runs, as they are between two training steps."""
        with loop_guard.Reading(self):
            return [w for layer in self._weight_groups() for w in layer.get_weights()] + \
                [v.numpy() for v in self._own_variables]

    def set_weights(self, weights):
        """Sets all weights from a list like get_weights(); on error nothing changes."""
        variables = [v for layer in self._weight_groups() for v in layer.weights] + list(self._own_variables)
        assign_weights(variables, weights, f"set_weights (model '{self.name}')")

    def _weight_groups(self):
        """The layers that hold the model's weights, each once (a shared layer counts once)."""
        seen, groups = set(), []
        for layer in self._sublayers():
            if id(layer) not in seen:
                seen.add(id(layer))
                groups.append(layer)
        return groups

    def _pack_if_free(self):
        """Packs the weights unless another model's flat buffer already holds some of them (a
        sub-model made from a trained model's layers shares them; packing happens at fit)."""
        if all(getattr(v, "_buffer", None) is None for v in self._variables if v.dtype.kind == "f"):
            self._pack_weights()

    def _pack_weights(self):
        """Moves every float Variable into the flat buffers (trainable ones first, in layer
        order); a quantized layer's int8 weights stay arrays of their own (non-trainable)."""
        variables = [v for v in self._variables if v.dtype.kind == "f"]
        trainable = [v for v in variables if v._trainable_now()]
        frozen = [v for v in variables if not v._trainable_now()]
        dtypes = {v.dtype for v in variables}
        if len(dtypes) > 1:
            raise ValueError(f"Model '{self.name}': layers have different dtypes {sorted(d.name for d in dtypes)}")
        dtype = dtypes.pop() if dtypes else np.dtype(self.dtype)
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
            v._buffer = params
            offset += size
        self._params, self._grads = params, grads
        same_order = self._packed == trainable
        self._packed = trainable
        if self.optimizer is not None:
            if same_order and self.optimizer.built:
                self.optimizer._flat = (params[:grads.size], grads)  # moved, not changed: keep the state
            else:
                self._attach_optimizer()

    def _attach_optimizer(self):
        self.optimizer.build(self._packed, flat=(self._params[:self._grads.size], self._grads))

    def _ensure_packed(self):
        """Repacks when layers were frozen or unfrozen, or the weights moved to another model's buffer."""
        variables = [v for v in self._variables if v.dtype.kind == "f"]
        current = [v for v in variables if v._trainable_now()]
        if self._params is None or current != self._packed or \
                any(getattr(v, "_buffer", None) is not self._params for v in variables):
            self._pack_weights()
        elif self.optimizer is not None and not self.optimizer.built:
            self._attach_optimizer()

    # ---- copies and pickles --------------------------------------------------------------------------
    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_loop_guard", None)  # the running loops' state (fastnn.loop_guard): a copy gets its own
        if self.optimizer is not None and self.optimizer.built:
            state["_optimizer_state"] = self.optimizer.get_state()
        return state

    def __setstate__(self, state):
        # A copy gets its variables as separate arrays: move them back into flat buffers
        # (otherwise the optimizer would update buffers the layers no longer read).
        optimizer_state = state.pop("_optimizer_state", None)
        self.__dict__.update(state)
        if self._params is not None:
            self._pack_weights()
            if optimizer_state is not None:
                self._attach_optimizer()
                self.optimizer.set_state(optimizer_state)

    # ---- saving ----------------------------------------------------------------------------------------
    def save(self, filepath, overwrite=True):
        """Saves the model to one file: architecture, weights, compile settings, optimizer state.

        ``fastnn.models.load_model(filepath)`` rebuilds it, ready to predict or to resume
        training exactly where it stopped. The write is atomic: a crash leaves any previous
        file intact. See ``fastnn.saving`` for the format (a zip of JSON and .npy arrays,
        never pickle).

        Args:
            filepath: str or path-like; any name works and ".fastnn" is suggested. Under a
                Keras name (".keras", ".h5") the file is still fastnn's format, which Keras
                cannot read, and a warning says so (unlike Keras, other suffixes are accepted).
            overwrite: bool, default True: replace an existing file (False: FileExistsError).
        """
        from .. import saving

        saving.save_model(self, filepath, overwrite=overwrite)

    def save_weights(self, filepath, overwrite=True):
        """Saves the weights alone (no architecture, no optimizer state) to one file.

        Args:
            filepath: str or path-like (".weights.fastnn" is suggested).
            overwrite: bool, default True.
        """
        from .. import saving

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
        from .. import saving

        saving.load_weights(self, filepath, skip_mismatch=skip_mismatch)

    def get_config(self):
        """Functional models: Keras' layout (layers with their inbound nodes, input and output
        layers). Subclassed models: their name, and the plain arguments ``__init__`` was called
        with (Keras 3's auto-config); override it (with from_config) for anything else."""
        if self._functional:
            return functional.get_config(self)
        config = {"name": self.name, "trainable": self.trainable}
        if type(self).get_config is Model.get_config:
            config.update(self._auto_config(config))
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """A new (untrained) model from ``get_config()``'s output (``custom_objects``: name -> class
        or function, for custom layers)."""
        if "layers" in config and "input_layers" in config:
            return functional.from_config(cls, config, custom_objects)
        return cls(**config)

    def _build_config(self):
        """What a saved file needs to build this model again before loading weights."""
        if self._functional or not self.built:
            return None
        return {"input_specs": _specs_to_json(self._input_specs)}

    def _build_from_config(self, build_config):
        self._build_from_specs(_specs_from_json(build_config["input_specs"]))

    # ---- summary ---------------------------------------------------------------------------------------
    def summary(self, line_length=None, positions=None, print_fn=None, expand_nested=False, show_trainable=False):
        """Prints a table of the layers (name and type, output shape, parameter count; for graphs
        the layers each is connected to, as Keras' "Connected to") and the totals.

        Args:
            line_length: int, default None: the widest cell's width (or the terminal's, when
                narrower); a narrower table wraps cells within their columns, never cuts them.
            positions: optional list: where each column ends, as fractions of the line (<= 1)
                or as characters.
            print_fn: function taking one line, default print.
            expand_nested: bool, default False: list the layers of nested models under them.
            show_trainable: bool, default False: add a column saying whether each layer is
                trainable.
        """
        from . import summary

        summary.print_summary(self, line_length=line_length, positions=positions, print_fn=print_fn,
                              expand_nested=expand_nested, show_trainable=show_trainable)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}, built={self.built}>"

    # ---- registration (saving/registration.py) ------------------------------------------------
    def __init_subclass__(cls, **kwargs):
        """fastnn's own models register by name (as layers too: a model nests in another)."""
        super().__init_subclass__(**kwargs)
        registration.register_builtin(cls, "model")


registration.register_builtin(Model, "model")
# ---- end of registration ------------------------------------------------------------------------
# the steps fit / evaluate / predict call unless a subclass overrides them
trainer.DEFAULT_STEPS.update(train_step=Model.train_step, test_step=Model.test_step, predict_step=Model.predict_step)


def _normalize_structure(structure):
    if isinstance(structure, tuple):
        return list(structure)
    if isinstance(structure, list) and len(structure) == 1 and isinstance(structure[0], KerasTensor):
        return structure  # Keras keeps a list of one as a list
    return structure


def _specs_from_shape(input_shape, dtype):
    dtype = np.dtype(dtype).name
    if isinstance(input_shape, list):
        return [_specs_from_shape(s, dtype) for s in input_shape]
    return ((None,) + tuple(input_shape[1:]), dtype)


def _specs_to_json(specs):
    if isinstance(specs, list):
        return [_specs_to_json(s) for s in specs]
    if isinstance(specs, dict):
        return {k: _specs_to_json(v) for k, v in specs.items()}
    shape, dtype = specs
    return {"shape": list(shape), "dtype": dtype}


def _specs_from_json(data):
    if isinstance(data, list):
        return [_specs_from_json(s) for s in data]
    if isinstance(data, dict) and "shape" not in data:
        return {k: _specs_from_json(v) for k, v in data.items()}
    return (tuple(data["shape"]), data["dtype"])

