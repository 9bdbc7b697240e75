"""``Sequential``: a linear stack of layers, run as the chain case of the graph core (as Keras 3)."""

import numpy as np

from ..keras_tensor import KerasTensor
from ..layers.base import Layer
from ..layers.core import InputLayer
from .model import Model


class Sequential(Model):
    """A linear stack of layers: ``Sequential([Dense(64, activation='relu', input_shape=(20,)), Dense(1)])``.

    Once the input shape is known (an ``Input(shape)`` first, ``input_shape=`` on the first
    layer, ``build(input_shape)``, or the first data given to fit/predict), the layers are
    called one after the other on a symbolic input, which records the chain graph the model
    runs.

    Args:
        layers: list of Layer (optional; or use ``add``). The first may be ``Input(shape)``.
        trainable: bool, default True.
        name: str, default "sequential" (made unique).
    """

    def __init__(self, layers=None, trainable=True, name=None):
        super().__init__(name=name, trainable=trainable)
        self._layers = []
        self._input_layer = None
        for layer in layers or []:
            self.add(layer, rebuild=False)
        self._maybe_build()

    @property
    def layers(self):
        """The layers, without the Input."""
        return list(self._layers)

    def _sublayers(self):
        return list(self.__dict__.get("_layers", ()))

    def add(self, layer, rebuild=True):
        """Appends a layer (or an Input declaring the input shape).

        Args:
            layer: a Layer, or ``keras.Input(shape)`` / ``InputLayer`` as the first one.
            rebuild: bool, default True: rebuild the graph now when the input shape is known.
        """
        if isinstance(layer, KerasTensor) and layer._keras_history is not None and \
                isinstance(layer._keras_history[0], InputLayer):
            layer = layer._keras_history[0]
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
        self._unbuild()
        if rebuild:
            self._maybe_build()

    def pop(self):
        """Removes and returns the last layer."""
        if not self._layers:
            raise TypeError("Sequential.pop: there are no layers")
        layer = self._layers.pop()
        self._unbuild()
        self._maybe_build()
        return layer

    def _unbuild(self):
        """Forgets the chain graph (after add or pop); the calls it recorded are dropped."""
        if self._graph is not None:
            for node in reversed(self._graph.nodes):
                nodes = node.operation._inbound_nodes
                if nodes and nodes[-1] is node:
                    nodes.pop()
        self._graph = None
        self._functional = False
        self.built = False

    def _declared_input_shape_of_model(self):
        if self._input_layer is not None:
            return self._input_layer.shape
        if self._layers and self._layers[0]._declared_input_shape is not None:
            return self._layers[0]._declared_input_shape
        return None

    def _maybe_build(self):
        shape = self._declared_input_shape_of_model()
        if shape is not None and self._layers:
            self.build((None,) + tuple(shape))

    def build(self, input_shape=None):
        """Records the chain graph for inputs of `input_shape` (batch axis included)."""
        if input_shape is None:
            declared = self._declared_input_shape_of_model()
            if declared is None:
                raise ValueError("Sequential.build: give input_shape, or an Input / input_shape= on the first layer")
            input_shape = (None,) + tuple(declared)
        if not self._layers:
            raise ValueError(f"Sequential '{self.name}' has no layers to build")
        shape = tuple(input_shape[1:])
        input_layer = self._input_layer
        if input_layer is None or tuple(input_layer.shape) != shape:
            input_layer = InputLayer(shape=shape, dtype=self._input_dtype_name(), name=f"{self.name}_input")
        if self._graph is not None:
            self._unbuild()
        x = input_layer.output
        for layer in self._layers:
            x = layer(x)
        self._init_functional(input_layer.output, x)
        return self.output_shape

    def _input_dtype_name(self):
        if self._input_layer is not None:
            return self._input_layer.dtype
        first = self._layers[0]
        return np.dtype(first.input_dtype).name

    def _build_on_data(self, flat_inputs, structure):
        x = flat_inputs[0]
        self.build((None,) + tuple(x.shape[1:]))

    def get_config(self):
        """{'name', 'layers': [layer descriptions], 'build_input_shape' (when built)}."""
        from ..saving import serialize_keras_object

        layers = ([self._input_layer] if self._input_layer is not None else []) + self._layers
        config = {"name": self.name, "trainable": self.trainable,
                  "layers": [serialize_keras_object(layer) for layer in layers]}
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
        from ..saving import deserialize_keras_object

        layers = [deserialize_keras_object(layer, custom_objects, kind="layer") for layer in config.get("layers", [])]
        model = cls(layers=layers, name=config.get("name"), trainable=config.get("trainable", True))
        shape = config.get("build_input_shape")
        if shape is not None and not model.built and model.layers:
            model.build(tuple(shape))
        return model
