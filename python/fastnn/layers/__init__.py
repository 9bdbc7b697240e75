"""Layers (Keras names and arguments). See layers/base.py for the contract."""

from ..saving import registration
from .activation import ELU, LeakyReLU, PReLU, ReLU, Softmax
from .augmentation import RandomContrast, RandomCrop, RandomFlip, RandomRotation, RandomTranslation, RandomZoom
from .base import Layer, Variable
from .conv import Conv1D, Conv2D, Convolution1D, Convolution2D
from .core import Activation, Dense, Dropout, Flatten, Identity, Input, InputLayer, Reshape
from .einsum_dense import EinsumDense
from .multi_head_attention import MultiHeadAttention
from .embedding import Embedding
from .lambda_layer import Lambda
from .masking import Masking
from .merging import (Add, Average, Concatenate, Dot, Maximum, Minimum, Multiply, Subtract, add, average,
                      concatenate, dot, maximum, minimum, multiply, subtract)
from .normalization import BatchNormalization, LayerNormalization
from .pooling import (AveragePooling1D, AveragePooling2D, AvgPool1D, AvgPool2D, GlobalAveragePooling1D,
                      GlobalAveragePooling2D, GlobalAvgPool1D, GlobalAvgPool2D, GlobalMaxPool1D, GlobalMaxPool2D,
                      GlobalMaxPooling1D, GlobalMaxPooling2D, MaxPool1D, MaxPool2D, MaxPooling1D, MaxPooling2D,
                      UpSampling2D, ZeroPadding2D)
from .preprocessing import Normalization, Rescaling
from .recurrent import GRU, LSTM, SimpleRNN
from .reshaping import Cropping1D, Cropping2D, Permute, RepeatVector
from .wrappers import Bidirectional, TimeDistributed

def serialize(layer):
    """{'class_name': ..., 'config': ...}: enough to rebuild the layer with ``deserialize``."""
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


def deserialize(config, custom_objects=None):
    """A layer from ``serialize``'s output (custom layer classes via custom_objects)."""
    classes = {**registration.builtin_classes("layer"), **(custom_objects or {})}
    name = config["class_name"]
    if name not in classes:
        raise ValueError(f"Unknown layer class {name!r}; pass it in custom_objects")
    return classes[name].from_config(config["config"])


__all__ = ["Layer", "Variable", "Input", "InputLayer", "Dense", "EinsumDense", "MultiHeadAttention", "Activation", "Dropout", "Flatten",
           "Reshape", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax", "Normalization", "Rescaling", "Conv1D", "Conv2D",
           "Convolution1D", "Convolution2D",
           "RandomFlip", "RandomRotation", "RandomTranslation", "RandomZoom", "RandomCrop", "RandomContrast",
           "MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D", "GlobalMaxPooling1D",
           "GlobalMaxPooling2D", "GlobalAveragePooling1D", "GlobalAveragePooling2D", "MaxPool1D", "MaxPool2D",
           "AvgPool1D", "AvgPool2D", "GlobalMaxPool1D", "GlobalMaxPool2D", "GlobalAvgPool1D", "GlobalAvgPool2D",
           "ZeroPadding2D", "UpSampling2D", "BatchNormalization", "LayerNormalization", "Embedding", "Masking", "LSTM", "GRU", "SimpleRNN",
           "Bidirectional", "TimeDistributed", "Identity", "Lambda", "Add", "Subtract", "Multiply", "Average",
           "Maximum", "Minimum", "Concatenate", "Dot", "add", "subtract", "multiply", "average", "maximum",
           "minimum", "concatenate", "dot", "Permute", "RepeatVector", "Cropping1D", "Cropping2D", "serialize",
           "deserialize"]
