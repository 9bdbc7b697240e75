"""The Layer contract (DESIGN.md): build, compute_output_shape, forward, backward, get_config.

A layer owns Variables (its weights) and, possibly, other layers (tracked when assigned as
attributes, as in Keras). Built-in layers implement the graph contract of
``fastnn.operation.Operation``, one kernel call each way::

    forward(inputs, training=False, **kwargs) -> (outputs, cache)
    backward(cache, dys, need_input_grad=True, accumulate=False) -> dxs

The cache belongs to the call, not to the layer, so a layer called twice (shared) keeps two.
Backward puts the weights' gradients into ``variable.grad`` (inside a model: views into one
flat gradient buffer), writing them or, with ``accumulate``, adding to them.

User layers write Keras' ``call(inputs, training=False)`` with ``fastnn.ops`` maths and
other layers instead: the first call traces ``call`` on symbolic inputs into a graph of
nodes (one per layer or ops call), and that graph is the layer's forward and backward, with
no hand-written gradient (see ``fastnn.tracing``).

Calling a layer on arrays runs it (building it on first use); calling it on symbolic tensors
(``keras.Input`` and what layers return from it) records a node of a model graph.
"""

import inspect
import re

import numpy as np

from .. import config, constraints, initializers, regularizers
from ..keras_tensor import KerasTensor, any_symbolic
from ..operation import _TRACING, Operation, trainability_changed, unique_name
from ..operators import ArithmeticOperators
from ..saving import registration
from . import _quantization, _validation

_unique_name = unique_name  # layers' default names (the one namespace)


def _snake_case(name):
    """Keras' naming: ReLU -> re_lu, PReLU -> p_re_lu, LeakyReLU -> leaky_re_lu, Dense -> dense."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


class Variable(ArithmeticOperators):
    """A named weight array (Keras' ``keras.Variable``).

    Arithmetic on a Variable (``x @ layer.kernel``, ``2 * w``) is ``fastnn.ops`` maths
    (recorded when a ``call`` is traced), so a custom layer's ``call`` can use its weights
    directly.

    Attributes:
        name: e.g. "dense/kernel".
        trainable: whether the optimizer updates it.
        regularizer: a Regularizer or None.
        constraint: a Constraint (or callable) the optimizer applies after each step, or None.
        grad: the gradient array written by backward passes (same shape), or None for
            weights the optimizer does not update.
    """

    __array_priority__ = 1500
    _buffer = None  # the model's flat buffer this variable is a view of, once packed
    _on_change = None  # called after assign (a quantized layer packs its int8 kernel again)

    def __init__(self, name, value, trainable=True, regularizer=None, layer=None, constraint=None):
        self.name = name
        self._value = value
        self._trainable = bool(trainable)
        self.regularizer = regularizer
        self.constraint = constraint
        self._layer = layer
        self.grad = np.zeros_like(value) if trainable else None

    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        self._trainable = bool(value)
        trainability_changed()

    def _trainable_now(self):
        """Trainable itself and in a trainable layer."""
        return self._trainable and (self._layer is None or self._layer._trainable)

    @property
    def value(self):
        """The array itself (not a copy): layers read it, optimizers update it in place."""
        return self._value

    @property
    def shape(self):
        return self._value.shape

    @property
    def dtype(self):
        return self._value.dtype

    @property
    def ndim(self):
        return self._value.ndim

    def numpy(self):
        """A copy of the current value."""
        return self._value.copy()

    def __array__(self, dtype=None, copy=None):
        return self._value if dtype is None else self._value.astype(dtype)

    def assign(self, value):
        """Copies `value` into the variable (shape must match; dtype is converted)."""
        value = np.asarray(value)
        if value.shape != self._value.shape:
            raise ValueError(f"Variable '{self.name}': expected shape {self._value.shape}, got {value.shape}")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"Variable '{self.name}': the new value contains NaN or inf")
        _check_integer_values(self, value)
        self._value[...] = value
        if self._on_change is not None:
            self._on_change()

    def _rebind(self, value, grad):
        """Moves the variable's storage (and its gradient's) into the given views."""
        value[...] = self._value
        self._value = value
        if grad is not None:
            grad[...] = 0
        self.grad = grad

    def __repr__(self):
        return f"<Variable '{self.name}' shape={self.shape} dtype={self.dtype.name}>"


class Layer(Operation):
    """Base class of all layers (Keras 3's ``keras.layers.Layer``).

    Args:
        name: str, default None (derived from the class name, made unique).
        dtype: "float32" or "float64", default fastnn.config.floatx().
        trainable: bool, default True.
        input_shape: tuple, optional: the input shape without the batch axis, for the
            first layer of a Sequential model.
        input_dim: int, optional: shorthand for ``input_shape=(input_dim,)``.
        activity_regularizer: optional regularizer of the layer's output: its penalty is
            added to the loss (and its gradient to the output's) during training.

    Write a layer in one of two ways:

    * Keras' way: ``build(input_shape)`` creating weights with ``self.add_weight(...)``,
      and ``call(inputs, training=False)`` written with ``fastnn.ops`` maths and other
      layers. Its gradient comes from tracing ``call`` (no backward to write).
    * fastnn's kernel way (the built-in layers): ``build``, ``compute_output_shape``,
      ``forward(inputs, training) -> (outputs, cache)`` and ``backward(cache, dys,
      need_input_grad, accumulate) -> dxs``.

    Masks (Keras): a layer with ``supports_masking`` passes the mask of its input on
    (``compute_mask``); a layer that produces one (Embedding with mask_zero=True) overrides
    ``compute_mask`` and ``_may_produce_mask``; a layer that uses one (recurrent layers) sets
    ``_consumes_mask`` and takes ``forward(x, training, mask=...)``. A layer written with
    ``call`` gets its input's mask as Keras gives it, in ``call(inputs, mask=None)``; its
    output's mask is what its ``compute_mask`` says when it overrides it or sets
    ``supports_masking``, else what the layers inside it made.

    Example:
        >>> class Linear(fastnn.layers.Layer):
        ...     def __init__(self, units=32, **kwargs):
        ...         super().__init__(**kwargs)
        ...         self.units = units
        ...     def build(self, input_shape):
        ...         self.w = self.add_weight(shape=(input_shape[-1], self.units), initializer="random_normal")
        ...         self.b = self.add_weight(shape=(self.units,), initializer="zeros")
        ...     def call(self, inputs):
        ...         return fastnn.ops.matmul(inputs, self.w) + self.b
    """

    supports_masking = False
    # The constructor arguments that size the layer's weights and outputs (attribute names, or
    # (argument, attribute) pairs): an error about a size too large to exist names them with
    # their values (_size_origin).
    _size_arguments = ()
    _shape_preserving = False  # output shape == input shape (elementwise layers)
    _flexible_input_shape = False  # once built, other input shapes go to compute_output_shape to judge
    _keeps_mask_dtype = False  # a mask given to __call__ reaches forward as given (else cast to bool)

    def __init__(self, name=None, dtype=None, trainable=True, input_shape=None, input_dim=None,
                 batch_size=None, activity_regularizer=None, **kwargs):
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unexpected keyword argument(s) {sorted(kwargs)}")
        object.__setattr__(self, "_tracked", [])
        name = name if name is not None else _unique_name(_snake_case(type(self).__name__))
        if not isinstance(name, str) or not name:
            raise TypeError(f"{type(self).__name__}: 'name' must be a non-empty string, got {name!r}")
        super().__init__(name=name)
        dtype, self._quantization_mode = _quantization.parse_dtype(dtype, type(self).__name__)
        if self._quantization_mode is not None and not getattr(self, "_quantizable", False):
            raise ValueError(f"{type(self).__name__}: dtype {self._quantization_mode}_from_{dtype} is for the layers "
                             "model.quantize() quantizes (Dense, EinsumDense, Embedding, Conv1D, Conv2D, LSTM, GRU)")
        self._dtype = np.dtype(dtype or config.floatx())
        if self._dtype not in (np.float32, np.float64):
            raise ValueError(f"{type(self).__name__}: 'dtype' must be float32 or float64, got {dtype!r}")
        self._trainable = bool(trainable)
        if input_dim is not None and input_shape is None:
            input_shape = (input_dim,)
        self._declared_input_shape = None
        if input_shape is not None:
            self._declared_input_shape = _as_shape(input_shape, type(self).__name__)
        self._batch_size = _validation.integer(batch_size, "batch_size", type(self).__name__, minimum=0,
                                               allow_none=True)
        self.activity_regularizer = regularizers.get(activity_regularizer)
        self._own_variables = []
        self.built = False
        self.input_shape = None
        self.output_shape = None
        self._traces = {}

    # ---- tracking of sublayers and trainability ------------------------------------------------
    def __setattr__(self, name, value):
        tracked = self.__dict__.get("_tracked")
        if tracked is not None and not name.startswith("__"):
            for layer in (value if isinstance(value, (list, tuple)) else (value,)):
                if isinstance(layer, Layer) and layer is not self and not any(t is layer for t in tracked):
                    tracked.append(layer)
        object.__setattr__(self, name, value)

    def _sublayers(self):
        """The layers this layer owns (assigned as attributes), in assignment order."""
        return list(self.__dict__.get("_tracked", ()))

    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        self._trainable = bool(value)
        for layer in self._sublayers():
            layer.trainable = value
        trainability_changed()

    # ---- weights ----------------------------------------------------------------------------------
    @property
    def dtype(self):
        return self._dtype.name

    @property
    def dtype_policy(self):
        """The layer's dtype policy (Keras 3): its ``name`` is the float dtype ("float32"), or
        "int8_from_float32" once the layer is quantized."""
        return _quantization.DTypePolicy(self._dtype, self._quantization_mode)

    @property
    def quantization_mode(self):
        """None, or "int8" for a quantized layer (Keras 3's ``layer.quantization_mode``)."""
        return self.__dict__.get("_quantization_mode")

    def quantize(self, mode, **kwargs):
        """Quantizes the layer's weights (Keras 3); layers that cannot be quantized raise
        NotImplementedError. ``Model.quantize`` quantizes every layer that can be.

        Args:
            mode: "int8".
            **kwargs: see the quantizable layers (Dense, EinsumDense, Embedding, Conv1D,
                Conv2D, LSTM, GRU).
        """
        raise NotImplementedError(f"Layer {type(self).__name__} does not have a `quantize()` method implemented.")

    def add_weight(self, shape=None, initializer=None, dtype=None, trainable=True, autocast=True,
                   regularizer=None, constraint=None, aggregation="none", name=None):
        """Creates a weight of this layer (in ``build``) and returns it as a Variable.

        Args:
            shape: tuple of ints, default () (a scalar).
            initializer: name, Initializer or callable ``(shape, dtype)``; default
                "glorot_uniform" (Keras' default for float weights).
            dtype: default the layer's dtype.
            trainable: bool, default True: updated by the optimizer.
            autocast, aggregation: accepted for Keras compatibility.
            regularizer: optional regularizer of the weight (its penalty joins the loss).
            constraint: optional constraint (fastnn.constraints) the optimizer applies to the
                weight after each update.
            name: str, default "variable" (made unique within the layer).

        Returns:
            Variable.
        """
        shape = () if shape is None else _as_shape(shape, f"{self.name}.add_weight")
        if any(d is None for d in shape):
            raise ValueError(f"{self.name}.add_weight: 'shape' must be fully known, got {shape}")
        dtype = np.dtype(dtype or self._dtype)
        _validation.check_size(shape, f"{self.name}.add_weight", f"the weight '{name or 'variable'}'",
                               dtype.itemsize)
        init = initializers.get("glorot_uniform" if initializer is None else initializer)
        value = np.array(init(tuple(shape), dtype), dtype=dtype, order="C")  # keeps 0-d shapes
        if value.shape != tuple(shape):
            raise ValueError(f"{self.name}: initializer for '{name}' returned shape {value.shape}, expected "
                             f"{tuple(shape)}")
        base = name or "variable"
        taken = {v.name for v in self._own_variables}
        full, i = f"{self.name}/{base}", 1
        while full in taken:
            full, i = f"{self.name}/{base}_{i}", i + 1
        var = Variable(full, value, trainable=trainable, regularizer=regularizers.get(regularizer), layer=self,
                       constraint=constraints.get(constraint))
        self._own_variables.append(var)
        return var

    @property
    def _variables(self):
        """Every Variable of this layer and its sublayers, in creation order, once."""
        seen, out = set(), []
        for v in self._own_variables:
            seen.add(id(v))
            out.append(v)
        for layer in self._sublayers():
            for v in layer._variables:
                if id(v) not in seen:
                    seen.add(id(v))
                    out.append(v)
        return out

    @property
    def weights(self):
        """All Variables in Keras 3's order: each layer's own in creation order, then its
        sublayers' (so a model's are layer by layer, and freezing one keeps its place)."""
        return self._variables

    @property
    def variables(self):
        return self.weights

    @property
    def trainable_weights(self):
        return [v for v in self._variables if v._trainable_now()]

    @property
    def non_trainable_weights(self):
        return [v for v in self._variables if not v._trainable_now()]

    trainable_variables = trainable_weights
    non_trainable_variables = non_trainable_weights

    @property
    def grads(self):
        """Gradients written by the last backward, in the order of get_weights()."""
        return [v.grad for v in self.weights]

    def _grad_variables(self):
        return [v for v in self.trainable_weights if v.grad is not None]

    def get_weights(self):
        """Copies of the weights' values, in the order of ``weights``."""
        return [v.numpy() for v in self.weights]

    def set_weights(self, weights):
        """Sets the weights from a list of arrays (shapes must match); nothing changes on error."""
        assign_weights(self.weights, weights, self.name)

    def count_params(self):
        return int(sum(v.value.size for v in self._variables))

    # ---- the contract -----------------------------------------------------------------------------
    def build(self, input_shape):
        """Creates the weights for `input_shape` (batch axis None). May return the output shape."""

    def compute_output_shape(self, input_shape):
        """The output shape for `input_shape` (the layer must be built)."""
        if self._shape_preserving:
            return input_shape
        if self.built and _same_shapes(self.input_shape, input_shape):
            return self.output_shape
        raise ValueError(f"Layer '{self.name}' ({type(self).__name__}) was built for inputs of shape "
                         f"{self.input_shape} and cannot tell its output shape for inputs of shape "
                         f"{input_shape}: call it on inputs of the same shape, or define compute_output_shape")

    @property
    def _training_dependent(self):
        """A traced call() may use Dropout or BatchNormalization: assume its outputs depend on training."""
        return self._is_traced()

    def forward(self, inputs, training=False, **kwargs):
        """(outputs, cache): for a layer written with call(), its traced graph."""
        if not self._is_traced():
            raise TypeError(f"{type(self).__name__} must implement call(inputs) (or forward and backward)")
        from .. import tracing

        return tracing.forward(self, inputs, training, kwargs)

    def backward(self, cache, dys, need_input_grad=True, accumulate=False):
        """The inputs' gradients; the weights' gradients into their grad arrays."""
        if not self._is_traced():
            raise TypeError(f"{type(self).__name__} must implement backward(cache, dys) (or call)")
        from .. import tracing

        return tracing.backward(self, cache, dys, need_input_grad, accumulate)

    def call(self, inputs, *args, **kwargs):
        """Keras' forward computation, written with fastnn.ops maths (override it)."""
        raise TypeError(f"{type(self).__name__} must implement call(inputs)")

    def _is_traced(self):
        """Whether this layer is written with call() (its forward is a traced graph)."""
        cls = type(self)
        return cls.call is not Layer.call and cls.forward is Layer.forward

    @property
    def _consumes_mask(self):
        """Whether forward takes the input's mask: a layer written with call() takes it into its
        graph (the layers inside see it, as in Keras; a ``call(inputs, mask=None)`` also gets it
        as an argument); the built-in layers that use one set this to True."""
        return self._is_traced()

    @property
    def _graph_masks(self):
        """A traced layer's output masks come from its own graph's walk, unless the layer says
        what they are (Keras 3: it overrides ``compute_mask``, or sets ``supports_masking`` to
        pass its input's mask on)."""
        return self._is_traced() and not self._declares_masks()

    def _declares_masks(self):
        return self._overrides_compute_mask() or bool(self.supports_masking)

    def _overrides_compute_mask(self):
        return type(self).compute_mask is not Layer.compute_mask

    def _may_produce_mask(self):
        if self._is_traced() and self._overrides_compute_mask():
            return True  # a user's compute_mask may make one (TokenAndPositionEmbedding's padding mask)
        return any(trace.graph.has_masks for trace in self._traces.values())

    def compute_mask(self, inputs, mask=None):
        """The mask of this layer's output for input `inputs` carrying `mask` (or None)."""
        return mask if self.supports_masking else None

    def get_config(self):
        """The arguments that rebuild this layer (``type(layer).from_config(config)``).

        A user's layer that does not implement get_config gets the plain arguments its
        ``__init__`` was called with (numbers, strings, lists...: Keras 3's auto-config).
        """
        cfg = {"name": self.name, "trainable": self.trainable, "dtype": self.dtype_policy.name}
        if self._declared_input_shape is not None:
            cfg["input_shape"] = self._declared_input_shape
        if self.activity_regularizer is not None:
            cfg["activity_regularizer"] = regularizers.serialize(self.activity_regularizer)
        if type(self).get_config is Layer.get_config:
            cfg.update(self._auto_config(cfg))
        return cfg

    def __new__(cls, *args, **kwargs):
        self = super().__new__(cls)
        object.__setattr__(self, "_init_arguments", (args, kwargs))  # for _auto_config
        return self

    def _auto_config(self, base):
        """The arguments of a user's __init__ (not fastnn's own classes) as a config, when plain."""
        if type(self).__module__.startswith("fastnn."):
            return {}
        args, kwargs = getattr(self, "_init_arguments", ((), {}))
        try:
            bound = inspect.signature(type(self).__init__).bind(self, *args, **kwargs)
        except TypeError:
            return {}
        config = {}
        for name, value in list(bound.arguments.items())[1:]:
            parameter = bound.signature.parameters[name]
            values = value.items() if parameter.kind == parameter.VAR_KEYWORD else [(name, value)]
            for key, item in values:
                if key in base or parameter.kind == parameter.VAR_POSITIONAL:
                    continue
                if not _plain(item):
                    raise ValueError(f"Cannot make the config of {type(self).__name__} '{self.name}': its __init__ "
                                     f"argument {key}={item!r:.80} is not a plain value (number, string, list, "
                                     "dict); implement get_config() (and from_config) as in Keras")
                config[key] = item
        return config

    @classmethod
    def from_config(cls, cfg):
        return cls(**cfg)

    # ---- building -------------------------------------------------------------------------------------
    def ensure_built(self, input_shape, dtypes=None):
        """Builds once (returns the output shape); a later incompatible input shape is a clear error.

        Args:
            input_shape: a shape, or a list of shapes for a layer with several inputs.
            dtypes: optional list of the inputs' dtypes (for tracing a call()).
        """
        input_shape = _unbatched(input_shape)
        if not self.built:
            created = len(self._own_variables)
            try:
                output = self.build(input_shape)
                if self._is_traced():
                    from .. import tracing

                    output = tracing.output_shape(self, input_shape, dtypes)
                elif output is None:
                    output = self.compute_output_shape(input_shape)
            except Exception as exc:
                del self._own_variables[created:]  # a failed build leaves the layer as it was
                if isinstance(exc, _validation.TooLarge):
                    raise self._size_error(exc, input_shape) from None
                raise
            self.input_shape = input_shape
            self.output_shape = _as_output_shape(output)
            self.built = True
            return self.output_shape
        if _same_shapes(self.input_shape, input_shape):
            return self.output_shape
        if self._is_traced():
            from .. import tracing

            return tracing.output_shape(self, input_shape, dtypes)
        if not self._flexible_input_shape and not _compatible(self.input_shape, input_shape):
            raise ValueError(f"Layer '{self.name}' was built for input shape {self.input_shape}, got {input_shape}")
        return _as_output_shape(self.compute_output_shape(input_shape))

    # ---- sizes too large to exist --------------------------------------------------------------------
    def _size_origin(self, input_shape):
        """The end of a TooLarge message: this layer's size arguments and `input_shape`."""
        pairs = [(a, a) if isinstance(a, str) else a for a in self._size_arguments]
        arguments = {name: getattr(self, attr) for name, attr in pairs}
        return _validation.size_origin(f"{type(self).__name__} '{self.name}'",
                                       {k: v for k, v in arguments.items() if v is not None}, input_shape)

    def _size_error(self, exc, input_shape):
        """A TooLarge from building (add_weight, a sublayer's build) that also names the arguments
        of this layer that sized the weight; unchanged for a layer without size arguments."""
        if not self._size_arguments:
            return exc
        return _validation.TooLarge(f"{exc}{self._size_origin(input_shape)}")

    def _check_size(self, shape, x, what="the output"):
        """TooLarge (naming the layer, its size arguments and x's shape) unless an array of `shape`
        with x's itemsize can exist."""
        _validation.check_size(shape, f"{type(self).__name__} '{self.name}'", what, x.itemsize,
                               self._size_origin(tuple(x.shape)))

    #: The dtype inputs are converted to (an Embedding takes integer ids).
    @property
    def input_dtype(self):
        return self._dtype

    def _output_dtype(self, input_dtype):
        """The dtype of the outputs of a symbolic call on inputs of `input_dtype`."""
        return self.dtype

    # ---- calling ----------------------------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        """Runs the layer on arrays (building it on first use), or records a node on symbolic tensors.

        Args:
            inputs: an array (or a list of arrays for a layer with several inputs), or
                symbolic tensors.
            training: bool, default False: training behaviour (Dropout drops...).
            mask: optional mask of the inputs (Keras masking).
            **kwargs: the layer's own call arguments (e.g. ``initial_state`` for RNNs).
        """
        if not args:
            if "inputs" not in kwargs:
                raise TypeError(f"{self.name}: call the layer on its inputs, e.g. layer(x)")
            args = (kwargs.pop("inputs"),)
        if any_symbolic(args, kwargs):
            return self._symbolic_call(args, kwargs)
        training = bool(kwargs.pop("training", False) or False)
        mask = kwargs.pop("mask", None)
        first = _as_inputs(args[0], np.dtype(self.input_dtype), self.name)
        rest = [_as_inputs(a, np.dtype(self.input_dtype), self.name) for a in args[1:]]
        self.ensure_built(_shapes_of(first))
        if mask is not None and self._consumes_mask:
            kwargs["mask"] = mask if self._keeps_mask_dtype else np.asarray(mask, bool)
        outputs, _ = self.forward(first, *rest, training=training, **kwargs)
        if _TRACING[0] and self.trainable_weights:
            return self._constant_node(first, rest, kwargs, outputs)
        return outputs

    def _constant_node(self, first, rest, kwargs, outputs):
        """Inside a traced call(), a layer with weights called on constants (Keras' position
        embedding: ``self.pos_emb(ops.arange(maxlen))``) is recorded as a node of the graph, so
        that its weights train; its output's shape is that of the value just computed."""
        from ..graph import Node
        from ..structure import flatten

        if not all(isinstance(y, np.ndarray) for y in flatten(outputs)):
            return outputs
        symbolic = [KerasTensor(y.shape, y.dtype.name, name=self.name) for y in flatten(outputs)]
        Node(self, (first, *rest), kwargs, symbolic[0] if isinstance(outputs, np.ndarray) else symbolic)
        return symbolic[0] if isinstance(outputs, np.ndarray) else symbolic

    def _symbolic_call(self, args, kwargs):
        from ..graph import Node
        from ..structure import flatten

        for leaf in flatten(args):
            if not isinstance(leaf, KerasTensor):
                raise TypeError(f"Layer '{self.name}' was called on symbolic tensors mixed with "
                                f"{type(leaf).__name__} values; wrap constants with fastnn.ops "
                                "(e.g. ops.convert_to_tensor) or pass them as layer arguments")
        shapes = [_shapes_of(a) for a in args]
        dtypes = [t.dtype for t in flatten(args)]
        try:
            output_shape = self.ensure_built(shapes[0], dtypes) if len(shapes) == 1 else self._build_many(shapes)
        except ValueError as e:
            raise ValueError(f"Layer '{self.name}' ({type(self).__name__}) cannot be called on inputs of shape "
                             f"{shapes[0] if len(shapes) == 1 else shapes}: {e}") from e
        out_dtype = self._output_dtype(dtypes[0])
        if isinstance(output_shape, list):
            outputs = [KerasTensor(s, out_dtype, name=f"{self.name}_{i}") for i, s in enumerate(output_shape)]
        else:
            outputs = KerasTensor(output_shape, out_dtype, name=self.name)
        Node(self, args, kwargs, outputs)
        return outputs

    def _build_many(self, shapes):
        """Several positional tensor arguments (e.g. attention's query and value)."""
        shapes = [_unbatched(s) for s in shapes]
        if not self.built:
            self.input_shape = shapes
            try:
                output = self.build(*shapes)
            except _validation.TooLarge as exc:
                raise self._size_error(exc, shapes) from None
            self.built = True
            self.output_shape = _as_output_shape(output if output is not None else self.compute_output_shape(shapes))
            return self.output_shape
        return self.compute_output_shape(shapes)

    # ---- graph attributes (Keras) ----------------------------------------------------------------------
    def _single_node(self, what):
        nodes = [n for n in self._inbound_nodes]
        if not nodes:
            raise AttributeError(f"Layer '{self.name}' has never been called on symbolic tensors, so it has no "
                                 f"{what}")
        if len(nodes) > 1:
            raise AttributeError(f"Layer '{self.name}' has been called {len(nodes)} times, so its {what} is "
                                 "ambiguous")
        return nodes[0]

    @property
    def input(self):
        """The symbolic input of the layer's one call (Keras' ``layer.input``)."""
        node = self._single_node("input")
        return node.input_tensors[0] if len(node.input_tensors) == 1 else list(node.input_tensors)

    @property
    def output(self):
        """The symbolic output of the layer's one call (Keras' ``layer.output``)."""
        return self._single_node("output").outputs

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}, built={self.built}>"

    # ---- registration (saving/registration.py) ------------------------------------------------
    def __init_subclass__(cls, **kwargs):
        """fastnn's own layers register by name, so that saved configs find them (a user's do not)."""
        super().__init_subclass__(**kwargs)
        registration.register_builtin(cls, "layer")


registration.register_builtin(Layer, "layer")
# ---- end of registration ------------------------------------------------------------------------


# ---- shapes -------------------------------------------------------------------------------------------
def _as_shape(shape, who):
    """A shape as a tuple of ints >= 0 and None (an int is a 1-D shape). Floats (even 2.0),
    bools and strings are refused, not converted (Keras' standardize_shape)."""
    if _validation.is_int(shape):
        shape = (shape,)
    try:
        shape = tuple(shape)
    except TypeError:
        raise TypeError(f"{who}: a shape must be a tuple of ints, got {shape!r}") from None
    if isinstance(shape, (str, bytes)) or not all(d is None or _validation.is_int(d) for d in shape):
        raise TypeError(f"{who}: a shape must be a tuple of ints (or None), got {shape!r}")
    shape = tuple(None if d is None else int(d) for d in shape)
    if any(d is not None and d < 0 for d in shape):
        raise ValueError(f"{who}: shape dimensions must be >= 0, got {shape}")
    return shape


def _is_shape(value):
    return isinstance(value, tuple) and all(d is None or isinstance(d, (int, np.integer)) for d in value)


def _unbatched(shape):
    """The shape (or list of shapes) with the batch axis unknown."""
    if _is_shape(shape):
        return tuple(None if i == 0 else d for i, d in enumerate(shape))
    return [_unbatched(s) for s in shape]


def _as_output_shape(shape):
    if isinstance(shape, list) and shape and not _is_shape(shape):
        return [tuple(s) for s in shape]
    if isinstance(shape, list) and shape and all(isinstance(s, (tuple, list)) for s in shape):
        return [tuple(s) for s in shape]
    return tuple(shape)


def _same_shapes(a, b):
    if _is_shape(a) and _is_shape(b):
        return tuple(a) == tuple(b)
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return all(_same_shapes(x, y) for x, y in zip(a, b))
    return False


def _compatible(expected, got):
    if _is_shape(expected) and _is_shape(got):
        if len(expected) != len(got):
            return False
        return all(e is None or g is None or e == g for e, g in zip(expected, got))
    if isinstance(expected, list) and isinstance(got, list) and len(expected) == len(got):
        return all(_compatible(e, g) for e, g in zip(expected, got))
    return False


def _shapes_of(x):
    """The shape of an array / KerasTensor, or the list of shapes of a list of them."""
    if isinstance(x, (list, tuple)):
        return [_shapes_of(item) for item in x]
    if isinstance(x, dict):
        return [_shapes_of(item) for item in x.values()]
    return tuple(x.shape)


def _as_input(x, dtype, who):
    """x as a C-contiguous array of dtype: converted once, strings and objects refused;
    non-integer values for an integer dtype (token ids) refused rather than truncated."""
    if isinstance(x, np.ndarray) and x.dtype == dtype and x.flags.c_contiguous:
        return x
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{who}: expected numeric input, got an array of dtype {arr.dtype}")
    if np.dtype(dtype).kind in "iu" and arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(np.floor(arr) == arr):
            raise ValueError(f"{who}: expected integer ids, got non-integer values")
    return np.ascontiguousarray(arr, dtype=dtype)


def _as_inputs(x, dtype, who):
    """_as_input over a list of arrays (the inputs of a layer with several) or over one input."""
    if isinstance(x, (list, tuple)) and any(isinstance(item, np.ndarray) for item in x):
        return [_as_input(item, dtype, who) for item in x]
    return _as_input(x, dtype, who)


def _check_integer_values(var, value, who=None):
    """An integer (int8) variable takes whole numbers within its dtype's range only."""
    if var.dtype.kind not in "iu":
        return
    info = np.iinfo(var.dtype)
    if value.size and (np.any(value != np.round(value)) or value.min() < info.min or value.max() > info.max):
        raise ValueError(f"{who + ': ' if who else ''}Variable '{var.name}' is {var.dtype.name}: its new value "
                         f"must hold whole numbers in [{info.min}, {info.max}]")


def assign_weights(variables, weights, who):
    """Copies `weights` (arrays) into `variables`, checking all of them first: on error (a count,
    a shape, NaN or inf) nothing changes."""
    weights = list(weights)
    if len(weights) != len(variables):
        raise ValueError(f"{who}: expected {len(variables)} weight arrays, got {len(weights)}")
    arrays = [np.asarray(w) for w in weights]
    for var, value in zip(variables, arrays):
        if value.shape != var.shape:
            raise ValueError(f"{who}: weight '{var.name}' has shape {var.shape}, got {value.shape}")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{who}: weight '{var.name}' would contain NaN or inf")
        _check_integer_values(var, value, who)
    for var, value in zip(variables, arrays):
        var.assign(value)


def _plain(value):
    """Whether a value fits in a JSON config as it is."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def trainable_grad(var):
    """The gradient array a backward pass writes for `var`: its ``grad`` when the weight is
    trainable now (itself and its layer), else None (nothing to write)."""
    if var is None or var.grad is None or not var._trainable:  # (Variable._trainable_now, inline: per step)
        return None
    layer = var._layer
    return var.grad if layer is None or layer._trainable else None


def check_finite(x, who, what="x"):
    """ValueError when x holds NaN or inf."""
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise ValueError(f"{who}: '{what}' contains NaN or inf")
