"""Every public layer's constructor arguments, against Keras 3's rules (keras/src/layers/**).

* BAD: a table of (layer class, construction, error class, message). Each message names the
  layer, the argument, what was expected and what came. Floats are never truncated to ints
  (``Softmax(axis=1.5)`` was axis 1), bools are not ints, NaN is not a rate, sizes are not
  negative. Where Keras checks an argument the error class is Keras' (e.g. ValueError for a
  non-int Dense ``units``, TypeError for a non-int RepeatVector ``n``).
* ACCEPTED: what Keras accepts and normalises (an int for a tuple, a reversed factor pair that
  it sorts, "SAME" for "same", NumPy ints), with the normalised value (repr: ints are Python
  ints) and, where it matters, the same outputs as the canonical form.
* Sizes from users feed exact shape arithmetic (Python ints) or raise a clear ValueError.
* Every class of ``fastnn.layers.__all__`` appears in the table.
"""

import re

import numpy as np
import pytest

import fastnn
from fastnn import layers
from finite_differences import numeric_gradient

NAN, INF = float("nan"), float("inf")
BIG = 2**62
IMG = (2, 6, 6, 3)  # a small NHWC batch
SEQ = (2, 5, 3)  # (batch, steps, features)


def W(name):
    """The regex of a layer's name in a message: "RandomFlip 'random_flip_3'"."""
    return name + r" '\w+'"


# (class, construction, error, message regex)
BAD = [
    # ---- the base Layer's arguments (input_shape, input_dim, batch_size, name, dtype) ----
    (layers.Identity, lambda: layers.Identity(input_shape=(2.5,)), TypeError,
     r"Identity: a shape must be a tuple of ints \(or None\), got \(2.5,\)"),
    (layers.Identity, lambda: layers.Identity(input_shape=(True, 3)), TypeError,
     r"Identity: a shape must be a tuple of ints \(or None\), got \(True, 3\)"),
    (layers.Identity, lambda: layers.Identity(input_shape=("3",)), TypeError, r"a shape must be a tuple of ints"),
    (layers.Identity, lambda: layers.Identity(input_shape="3"), TypeError, r"a shape must be a tuple of ints"),
    (layers.Identity, lambda: layers.Identity(input_shape=(-1,)), ValueError, r"shape dimensions must be >= 0"),
    (layers.Identity, lambda: layers.Identity(input_dim=2.0), TypeError,
     r"Identity: a shape must be a tuple of ints \(or None\), got \(2.0,\)"),
    (layers.Identity, lambda: layers.Identity(batch_size=2.5), TypeError,
     r"Identity: 'batch_size' must be None or an int >= 0, got 2.5"),
    (layers.Identity, lambda: layers.Identity(batch_size=True), TypeError, r"'batch_size' must be None or an int"),
    (layers.Identity, lambda: layers.Identity(batch_size=-1), ValueError,
     r"Identity: 'batch_size' must be None or an int >= 0, got -1"),
    (layers.Identity, lambda: layers.Identity(name=""), TypeError, r"'name' must be a non-empty string"),
    (layers.Identity, lambda: layers.Identity(dtype="int32"), ValueError, r"'dtype' must be float32 or float64"),
    (layers.Layer, lambda: layers.Layer(input_shape=(1.5, 2)), TypeError, r"Layer: a shape must be a tuple of ints"),
    # ---- Input / InputLayer ----
    (layers.InputLayer, lambda: layers.Input(shape=(2.5,)), TypeError,
     r"InputLayer: a shape must be a tuple of ints \(or None\), got \(2.5,\)"),
    (layers.InputLayer, lambda: layers.Input(shape=(INF,)), TypeError, r"a shape must be a tuple of ints"),
    (layers.InputLayer, lambda: layers.Input(shape=(3,), batch_size=1.5), TypeError,
     r"InputLayer: 'batch_size' must be None or an int >= 0, got 1.5"),
    (layers.InputLayer, lambda: layers.Input(shape=(3,), batch_shape=(None, 3)), ValueError,
     r"InputLayer: give 'batch_shape' or 'shape' \(with 'batch_size'\), not both"),
    (layers.InputLayer, lambda: layers.Input(batch_size=4, batch_shape=(None, 3)), ValueError,
     r"give 'batch_shape' or 'shape'"),
    (layers.InputLayer, lambda: layers.Input(batch_shape=()), ValueError, r"'batch_shape' needs the batch axis"),
    (layers.InputLayer, lambda: layers.Input(batch_shape=(None, 2.0)), TypeError, r"a shape must be a tuple of ints"),
    # ---- Dense, EinsumDense, MultiHeadAttention ----
    *[(layers.Dense, (lambda u=u: layers.Dense(u)), ValueError, rf"Dense: 'units' must be a positive int, got {u!r}")
      for u in (0, -1, 2.0, True, "3", None)],
    (layers.EinsumDense, lambda: layers.EinsumDense(5, 3), TypeError,
     r"EinsumDense '\w+': 'equation' must be a string such as 'ab,bc->ac', got 5"),
    (layers.EinsumDense, lambda: layers.EinsumDense("ab,bc->ac", (2.5,)), ValueError,
     r"EinsumDense '\w+': 'output_shape' entries must be ints >= 0 or None, got \(2.5,\)"),
    (layers.EinsumDense, lambda: layers.EinsumDense("ab,bc->ac", (True,)), ValueError,
     r"'output_shape' entries must be ints >= 0 or None"),
    (layers.EinsumDense, lambda: layers.EinsumDense("ab,bc->ac", 3, bias_axes=1), TypeError,
     r"'bias_axes' must be a string of output labels or None, got 1"),
    (layers.EinsumDense, lambda: layers.EinsumDense("ab,bc->ac", 3, bias_axes="x"), ValueError,
     r"EinsumDense '\w+': 'bias_axes' 'x': bias dimension 'x' was requested, but is not part of the output spec 'ac'"),
    (layers.MultiHeadAttention, lambda: layers.MultiHeadAttention(2, 2, output_shape=True), ValueError,
     r"MultiHeadAttention: 'output_shape' must be an int, a tuple or a list of ints, got True"),
    (layers.MultiHeadAttention, lambda: layers.MultiHeadAttention(2, 2, output_shape="3"), ValueError,
     r"'output_shape' must be an int, a tuple or a list of ints, got '3'"),
    (layers.MultiHeadAttention, lambda: layers.MultiHeadAttention(2, 2, output_shape=(2.5,)), ValueError,
     r"'output_shape' must be an int, a tuple or a list of ints, got \(2.5,\)"),
    (layers.MultiHeadAttention, lambda: layers.MultiHeadAttention(2, 2, attention_axes=True), ValueError,
     r"MultiHeadAttention: 'attention_axes' must be an int, list, or tuple of ints, got True"),
    (layers.MultiHeadAttention, lambda: layers.MultiHeadAttention(2, 2, attention_axes=(1.0,)), ValueError,
     r"'attention_axes' must be an int, list, or tuple of ints, got \(1.0,\)"),
    (layers.MultiHeadAttention, lambda: layers.MultiHeadAttention(2, 2, seed=-1), ValueError,
     r"MultiHeadAttention: 'seed' must be None or an int >= 0, got -1"),
    (layers.MultiHeadAttention, lambda: layers.MultiHeadAttention(2, 2, seed=1.5), ValueError,
     r"MultiHeadAttention: 'seed' must be None or an int >= 0, got 1.5"),
    (layers.MultiHeadAttention, lambda: layers.MultiHeadAttention(2.0, 2), ValueError,
     r"MultiHeadAttention: 'num_heads' must be a positive integer, got 2.0"),
    (layers.MultiHeadAttention, lambda: layers.MultiHeadAttention(2, 2, dropout=NAN), ValueError,
     r"MultiHeadAttention: 'dropout' must be a float in \[0, 1\), got nan"),
    # ---- Activation and the activation layers ----
    (layers.Activation, lambda: layers.Activation("no_such_activation"), ValueError, r"no_such_activation"),
    # the activation errors name the argument ('recurrent_activation' too) and the layer
    (layers.Activation, lambda: layers.Activation(5), TypeError,
     r"Activation: 'activation' must be a string, a callable or None, got 5"),
    (layers.Dense, lambda: layers.Dense(2, activation=""), ValueError,
     r"Dense: 'activation': Unknown activation ''; expected one of: celu, elu, exponential, gelu"),
    (layers.Conv2D, lambda: layers.Conv2D(2, 3, activation=b"relu"), TypeError,
     r"Conv2D: 'activation' must be a string, a callable or None, got b'relu'"),
    (layers.EinsumDense, lambda: layers.EinsumDense("ab,bc->ac", 3, activation="nope"), ValueError,
     r"EinsumDense '\w+': 'activation': Unknown activation 'nope'"),
    (layers.LSTM, lambda: layers.LSTM(2, recurrent_activation=""), ValueError,
     r"LSTM: 'recurrent_activation': Unknown activation ''"),
    (layers.GRU, lambda: layers.GRU(2, recurrent_activation=0), TypeError,
     r"GRU: 'recurrent_activation' must be a string, a callable or None, got 0"),
    (layers.SimpleRNN, lambda: layers.SimpleRNN(2, activation=1.5), TypeError,
     r"SimpleRNN: 'activation' must be a string, a callable or None, got 1.5"),
    (layers.ReLU, lambda: layers.ReLU(max_value=-1), ValueError,
     r"ReLU: 'max_value' must be a finite number >= 0 or None, got -1"),
    (layers.ReLU, lambda: layers.ReLU(max_value=NAN), ValueError, r"ReLU: 'max_value' must be .*, got nan"),
    (layers.ReLU, lambda: layers.ReLU(max_value="6"), TypeError, r"ReLU: 'max_value' must be .*, got '6'"),
    (layers.ReLU, lambda: layers.ReLU(max_value=True), TypeError, r"ReLU: 'max_value' must be .*, got True"),
    (layers.ReLU, lambda: layers.ReLU(negative_slope=None), ValueError,
     r"ReLU: 'negative_slope' must be a finite number >= 0, got None"),  # Keras: ValueError for None
    (layers.ReLU, lambda: layers.ReLU(negative_slope=-0.1), ValueError, r"'negative_slope' must be a finite number"),
    (layers.ReLU, lambda: layers.ReLU(threshold=INF), ValueError,
     r"ReLU: 'threshold' must be a finite number >= 0, got inf"),
    (layers.ReLU, lambda: layers.ReLU(threshold=[1.0]), TypeError, r"ReLU: 'threshold' must be .*, got \[1.0\]"),
    (layers.LeakyReLU, lambda: layers.LeakyReLU(-0.1), ValueError,
     r"LeakyReLU: 'negative_slope' must be a finite number >= 0, got -0.1"),
    (layers.LeakyReLU, lambda: layers.LeakyReLU(None), ValueError, r"LeakyReLU: 'negative_slope' .*, got None"),
    (layers.LeakyReLU, lambda: layers.LeakyReLU(NAN), ValueError, r"LeakyReLU: 'negative_slope' .*, got nan"),
    (layers.LeakyReLU, lambda: layers.LeakyReLU(alpha="0.1"), TypeError, r"LeakyReLU: 'negative_slope' .* '0.1'"),
    (layers.ELU, lambda: layers.ELU("1"), TypeError, r"ELU: 'alpha' must be a finite number, got '1'"),
    (layers.ELU, lambda: layers.ELU(NAN), ValueError, r"ELU: 'alpha' must be a finite number, got nan"),
    (layers.ELU, lambda: layers.ELU(True), TypeError, r"ELU: 'alpha' must be a finite number, got True"),
    (layers.Softmax, lambda: layers.Softmax(axis=1.5), TypeError, r"Softmax: 'axis' must be an int, got 1.5"),
    (layers.Softmax, lambda: layers.Softmax(axis=True), TypeError, r"Softmax: 'axis' must be an int, got True"),
    (layers.Softmax, lambda: layers.Softmax(axis="1"), TypeError, r"Softmax: 'axis' must be an int, got '1'"),
    (layers.Softmax, lambda: layers.Softmax(axis=[]), TypeError,
     r"Softmax: 'axis' must be an int or a non-empty list/tuple of ints, got \[\]"),
    (layers.Softmax, lambda: layers.Softmax(axis=(1, 2.0)), TypeError,
     r"'axis' must be an int or a non-empty list/tuple of ints, got \(1, 2.0\)"),
    (layers.Softmax, lambda: layers.Softmax(axis=(1, -1))(np.ones((2, 3))), ValueError,
     r"Softmax '\w+': 'axis' \[1, -1\] repeats an axis"),
    (layers.Softmax, lambda: layers.Softmax(axis=2)(np.ones((2, 3))), ValueError,
     r"Softmax '\w+': 'axis' 2 is out of range for inputs with 2 axes"),
    (layers.PReLU, lambda: layers.PReLU(shared_axes=1.5), TypeError, r"PReLU: 'shared_axes' must be an int, got 1.5"),
    (layers.PReLU, lambda: layers.PReLU(shared_axes=[1, True]), TypeError,
     r"PReLU: 'shared_axes' must be an int, got True"),
    (layers.PReLU, lambda: layers.PReLU(shared_axes=[3])(np.ones((2, 3))), ValueError,
     r"PReLU '\w+': 'shared_axes' \[3\] holds 3, outside 1..1 \(the axes of inputs of shape \(None, 3\) after the "
     r"batch axis\)"),
    (layers.PReLU, lambda: layers.PReLU(shared_axes=0)(np.ones((2, 3))), ValueError,
     r"PReLU '\w+': 'shared_axes' \[0\] holds 0, outside 1..1"),
    # ---- Dropout, Flatten, Reshape ----
    *[(layers.Dropout, (lambda r=r: layers.Dropout(r)), ValueError,
       rf"Dropout: 'rate' must be a finite number in \[0, 1\], got {re.escape(repr(r))}")
      for r in (1.5, -0.1, NAN, INF, "0.5", True, None)],
    *[(layers.Dropout, (lambda s=s: layers.Dropout(0.5, noise_shape=s)), ValueError,
       rf"Dropout: 'noise_shape' must be a tuple of ints > 0 and None, got {re.escape(repr(s))}")
      for s in ("ab", (2.5, 1), (0, 1), (-1,), 3, (True, 1))],
    # a noise_shape that does not broadcast to the input (was NumPy's "operands could not be broadcast")
    *[(layers.Dropout, (lambda s=s: layers.Dropout(0.5, noise_shape=s)(np.ones((2, 3, 4)), training=True)), ValueError,
       rf"Dropout '\w+': 'noise_shape' {re.escape(repr(s))} does not broadcast to inputs of shape \(2, 3, 4\)")
      for s in ((1, 2, 3), (None, None, None, None), (2**63 - 1, 1, 1), (None, 2, None))],
    *[(layers.Dropout, (lambda s=s: layers.Dropout(0.5, seed=s)), ValueError,
       rf"Dropout: 'seed' must be None or an int >= 0, got {re.escape(repr(s))}")
      for s in (-1, 1.5, "1", True)],
    (layers.Flatten, lambda: layers.Flatten(data_format="nchw"), ValueError,
     r"Flatten: 'data_format' must be one of \{'channels_first', 'channels_last'\} or None, got 'nchw'"),
    *[(layers.Reshape, (lambda t=t: layers.Reshape(t)), TypeError,
       rf"Reshape: 'target_shape' must be a tuple of ints >= 0 with at most one -1, got {re.escape(repr(t))}")
      for t in (3, (2.0, 3), (True, 3), "ab", (None, 3))],
    *[(layers.Reshape, (lambda t=t: layers.Reshape(t)), ValueError,
       rf"Reshape: 'target_shape' must be a tuple of ints >= 0 with at most one -1, got {re.escape(repr(t))}")
      for t in ((-1, -1), (-2, 3))],
    (layers.Reshape, lambda: layers.Reshape((0, -1))(np.ones((2, 0))), ValueError,
     r"Reshape '\w+': cannot reshape \(0,\) \(0 values\) into target_shape=\(0, -1\)"),
    (layers.Reshape, lambda: layers.Reshape(())(np.ones((2, 3, 4))), ValueError,
     r"Reshape '\w+': cannot reshape \(3, 4\) \(12 values\) into target_shape=\(\) \(1 values\)"),
    # ---- Normalization, Rescaling ----
    (layers.Normalization, lambda: layers.Normalization(axis=1.5), TypeError,
     r"Normalization '\w+': 'axis' must be an int, a tuple of ints or None, got 1.5"),
    (layers.Normalization, lambda: layers.Normalization(axis=(1, True)), TypeError, r"'axis' must be an int"),
    (layers.Normalization, lambda: layers.Normalization(axis=(1, 1)), ValueError, r"'axis' repeats an axis"),
    (layers.Normalization, lambda: layers.Normalization(axis=(-1, 2))(np.ones((2, 3, 4))), ValueError,
     r"Normalization '\w+': 'axis' \(-1, 2\) repeats an axis of inputs of shape \(None, 3, 4\) \(3 axes\)"),
    (layers.Normalization, lambda: layers.Normalization(mean=0, variance=((1, 1), (1,))), ValueError,
     r"Normalization '\w+': 'variance' must be a number or a rectangular array of numbers, got \(\(1, 1\), \(1,\)\)"),
    (layers.Normalization, lambda: layers.Normalization(mean=True, variance=1.0), TypeError,
     r"Normalization '\w+': 'mean' must be numeric \(not bool\), got an array of dtype bool"),
    (layers.Normalization, lambda: layers.Normalization(mean=0.0, variance=[True]), TypeError,
     r"'variance' must be numeric \(not bool\)"),
    (layers.Normalization, lambda: layers.Normalization(mean=[NAN], variance=[1.0]), ValueError,
     r"'mean' and 'variance' must be finite, got mean=\[nan\], variance=\[1.0\]"),
    (layers.Normalization, lambda: layers.Normalization(mean=0.0, variance=-1.0), ValueError,
     r"'variance' must be >= 0"),
    (layers.Normalization, lambda: layers.Normalization(mean=0.0), ValueError, r"give both 'mean' and 'variance'"),
    (layers.Rescaling, lambda: layers.Rescaling(True), TypeError,
     r"Rescaling '\w+': 'scale' must be numeric \(not bool\), got an array of dtype bool"),
    (layers.Rescaling, lambda: layers.Rescaling("0.5"), TypeError, r"Rescaling '\w+': 'scale' must be numeric"),
    (layers.Rescaling, lambda: layers.Rescaling(1.0, offset=[[1, 2], [3]]), ValueError,
     r"Rescaling '\w+': 'offset' must be a number or a rectangular array of numbers, got \[\[1, 2\], \[3\]\]"),
    (layers.Rescaling, lambda: layers.Rescaling(NAN), ValueError, r"Rescaling '\w+': 'scale' must be finite"),
    (layers.Rescaling, lambda: layers.Rescaling(1.0, offset=INF), ValueError, r"'offset' must be finite, got inf"),
    # ---- convolutions ----
    *[(layers.Conv2D, (lambda f=f: layers.Conv2D(f, 3)), ValueError,
       rf"Conv2D: 'filters' must be a positive int, got {re.escape(repr(f))}") for f in (0, -2, 2.0, True)],
    *[(layers.Conv2D, (lambda k=k: layers.Conv2D(2, k)), TypeError,
       rf"Conv2D: 'kernel_size' must be an int or a tuple of 2 ints >= 1, got {re.escape(repr(k))}")
      for k in ((2.5, 2.5), (3.0, 3), True, "3", (True, 3), None)],
    *[(layers.Conv2D, (lambda k=k: layers.Conv2D(2, k)), ValueError,
       rf"Conv2D: 'kernel_size' must be an int or a tuple of 2 ints >= 1, got {re.escape(repr(k))}")
      for k in (0, (3,), (3, 3, 3), (3, -1))],
    (layers.Conv2D, lambda: layers.Conv2D(2, 3, strides=(1, 0)), ValueError,
     r"Conv2D: 'strides' must be an int or a tuple of 2 ints >= 1, got \(1, 0\)"),
    (layers.Conv2D, lambda: layers.Conv2D(2, 3, strides=2.0), TypeError, r"Conv2D: 'strides' must be an int"),
    (layers.Conv2D, lambda: layers.Conv2D(2, 3, dilation_rate=-1), ValueError,
     r"Conv2D: 'dilation_rate' must be an int or a tuple of 2 ints >= 1, got -1"),
    (layers.Conv2D, lambda: layers.Conv2D(2, 3, dilation_rate=(2, 1.0)), TypeError, r"'dilation_rate' must be"),
    (layers.Conv2D, lambda: layers.Conv2D(2, 3, strides=2, dilation_rate=2), ValueError,
     r"strides > 1 cannot be combined with dilation_rate > 1"),
    (layers.Conv2D, lambda: layers.Conv2D(2, 3, padding="full"), ValueError,
     r"Conv2D: 'padding' must be one of \('valid', 'same'\), got 'full'"),
    (layers.Conv2D, lambda: layers.Conv2D(2, 3, padding=None), ValueError, r"Conv2D: 'padding' must be .*, got None"),
    (layers.Conv2D, lambda: layers.Conv2D(2, 3, padding="causal"), ValueError, r"got 'causal'"),
    (layers.Conv2D, lambda: layers.Conv2D(2, 3, groups=True), TypeError,
     r"Conv2D: 'groups' must be an int >= 1, got True"),
    (layers.Conv2D, lambda: layers.Conv2D(2, 3, groups=0), ValueError, r"Conv2D: 'groups' must be an int >= 1, got 0"),
    (layers.Conv2D, lambda: layers.Conv2D(2, 3, groups=3), ValueError,
     r"Conv2D: the number of filters must be evenly divisible by the number of groups. Received: groups=3, "
     r"filters=2."),
    (layers.Conv2D, lambda: layers.Conv2D(2, 3, data_format="NCHW"), ValueError,
     r"Conv2D: 'data_format' must be one of \{'channels_first', 'channels_last'\} or None, got 'NCHW'"),
    (layers.Conv1D, lambda: layers.Conv1D(2, (3, 3)), ValueError,
     r"Conv1D: 'kernel_size' must be an int or a tuple of 1 ints >= 1, got \(3, 3\)"),
    (layers.Conv1D, lambda: layers.Conv1D(2, 2.0), TypeError, r"Conv1D: 'kernel_size' must be an int .*, got 2.0"),
    (layers.Conv1D, lambda: layers.Conv1D(2, 4, dilation_rate=2)(np.ones((1, 6, 3))), ValueError,
     r"Conv1D '\w+': the kernel spans 7 positions on spatial axis 1 \(kernel_size=\(4,\), dilation_rate=\(2,\)\) "
     r"but the input has 6; use padding='same' or a smaller kernel"),
    (layers.Conv2D, lambda: layers.Conv2D(2, 2**63 - 1)(np.ones((1, 6, 6, 3))), ValueError,
     r"Conv2D '\w+': the kernel spans 9223372036854775807 positions on spatial axis 1 \(kernel_size="
     r"\(9223372036854775807, 9223372036854775807\), dilation_rate=\(1, 1\)\)"),
    (layers.Conv1D, lambda: layers.Conv1D(2, 3, padding="full"), ValueError,
     r"Conv1D: 'padding' must be one of \('valid', 'same', 'causal'\), got 'full'"),
    # ---- augmentation ----
    (layers.RandomFlip, lambda: layers.RandomFlip("diagonal"), ValueError,
     W("RandomFlip") + r": 'mode' must be one of"),
    *[(layers.RandomFlip, (lambda s=s: layers.RandomFlip(seed=s)), ValueError,
       W("RandomFlip") + rf": 'seed' must be None or an int >= 0, got {re.escape(repr(s))}") for s in (-1, 1.5, True)],
    (layers.RandomFlip, lambda: layers.RandomFlip(data_format="channels_first"), ValueError, r"'data_format'"),
    *[(layers.RandomRotation, (lambda f=f: layers.RandomRotation(f)), ValueError,
       W("RandomRotation") + r": 'factor' must be") for f in (1.5, (0.1, 0.2, 0.3), "0.1", NAN, True, (-2, 0.1))],
    (layers.RandomRotation, lambda: layers.RandomRotation(0.1, fill_value=NAN), ValueError,
     W("RandomRotation") + r": 'fill_value' must be a finite number, got nan"),
    (layers.RandomRotation, lambda: layers.RandomRotation(0.1, fill_value="0"), ValueError,
     r"'fill_value' must be a finite number, got '0'"),
    (layers.RandomRotation, lambda: layers.RandomRotation(0.1, fill_mode="mirror"), ValueError, r"'fill_mode'"),
    (layers.RandomRotation, lambda: layers.RandomRotation(0.1, interpolation="bicubic"), ValueError,
     r"'interpolation' must be one of"),
    (layers.RandomTranslation, lambda: layers.RandomTranslation(1.1, 0.1), ValueError,
     W("RandomTranslation") + r": 'height_factor' must be in \[-1.0, 1.0\], got 1.1"),
    (layers.RandomTranslation, lambda: layers.RandomTranslation(0.1, (-2, 0)), ValueError,
     r"'width_factor' must be in \[-1.0, 1.0\], got \(-2, 0\)"),
    (layers.RandomZoom, lambda: layers.RandomZoom(-1.0), ValueError,
     W("RandomZoom") + r": 'height_factor' must be in \(-1.0, 1.0\], got -1.0"),  # Keras: zoom 0 refused
    (layers.RandomZoom, lambda: layers.RandomZoom((-1, 0.5)), ValueError,
     r"'height_factor' must be in \(-1.0, 1.0\], got \(-1, 0.5\)"),
    (layers.RandomZoom, lambda: layers.RandomZoom(0.1, -1.0), ValueError, r"'width_factor' must be in \(-1.0, 1.0\]"),
    (layers.RandomZoom, lambda: layers.RandomZoom(0.1, fill_value=INF), ValueError, r"'fill_value' must be a finite"),
    *[(layers.RandomCrop, (lambda h=h: layers.RandomCrop(h, 4)), ValueError,
       W("RandomCrop") + rf": 'height' must be a positive int, got {re.escape(repr(h))}") for h in (0, 2.5, True)],
    (layers.RandomCrop, lambda: layers.RandomCrop(4, 4, seed=-3), ValueError, r"'seed' must be None or an int >= 0"),
    (layers.RandomContrast, lambda: layers.RandomContrast(1.5), ValueError,
     W("RandomContrast") + r": 'factor' must be in \[0, 1\], got 1.5"),
    (layers.RandomContrast, lambda: layers.RandomContrast((0.1, 2)), ValueError, r"'factor' must be in \[0, 1\]"),
    (layers.RandomContrast, lambda: layers.RandomContrast(0.1, value_range=(0, NAN)), ValueError,
     r"'value_range' must be a pair \(low, high\) of finite numbers"),
    # ---- pooling, padding, upsampling ----
    *[(cls, (lambda cls=cls: cls(pool_size=0)), ValueError, rf"{cls.__name__}: 'pool_size' must hold positive ints")
      for cls in (layers.MaxPooling2D, layers.AveragePooling2D, layers.MaxPooling1D, layers.AveragePooling1D)],
    *[(cls, (lambda cls=cls: cls(pool_size=(2.0, 2))), ValueError,
       rf"{cls.__name__}: 'pool_size' must be an int or a tuple of 2 ints, got \(2.0, 2\)")
      for cls in (layers.MaxPooling2D, layers.AveragePooling2D)],
    *[(cls, (lambda cls=cls: cls(pool_size=True)), TypeError, rf"{cls.__name__}: 'pool_size' must be an int")
      for cls in (layers.MaxPooling1D, layers.AveragePooling1D)],
    (layers.MaxPooling1D, lambda: layers.MaxPooling1D((2, 2)), ValueError,
     r"MaxPooling1D: 'pool_size' must be an int or a tuple of 1 ints, got \(2, 2\)"),
    (layers.MaxPooling2D, lambda: layers.MaxPooling2D(2, strides=(2, 0)), ValueError,
     r"MaxPooling2D: 'strides' must hold positive ints \(at most 2\*\*63 - 1\), got \(2, 0\)"),
    (layers.AveragePooling2D, lambda: layers.AveragePooling2D(2, padding="full"), ValueError,
     r"AveragePooling2D: 'padding' must be 'valid' or 'same', got 'full'"),
    (layers.MaxPooling2D, lambda: layers.MaxPooling2D(2, data_format=1), ValueError,
     r"MaxPooling2D: 'data_format' must be one of .*, got 1"),
    *[(cls, (lambda cls=cls: cls(data_format="nhwc")), ValueError,
       rf"{cls.__name__}: 'data_format' must be one of \{{'channels_first', 'channels_last'\}} or None, got 'nhwc'")
      for cls in (layers.GlobalMaxPooling1D, layers.GlobalMaxPooling2D, layers.GlobalAveragePooling1D,
                  layers.GlobalAveragePooling2D)],
    *[(layers.ZeroPadding2D, (lambda p=p: layers.ZeroPadding2D(p)), ValueError,
       rf"ZeroPadding2D: 'padding' must be an int >= 0, .* got {re.escape(repr(p))}")
      for p in (-1, (1.5, 1), ((1, 2, 3), 1), "1", (1, 2, 3), True, ((1, -1), 0))],
    (layers.ZeroPadding2D, lambda: layers.ZeroPadding2D(1, data_format="first"), ValueError,
     r"ZeroPadding2D: 'data_format' must be one of .*, got 'first'"),
    (layers.UpSampling2D, lambda: layers.UpSampling2D(0), ValueError, r"UpSampling2D: 'size' must hold positive ints"),
    (layers.UpSampling2D, lambda: layers.UpSampling2D((2, 2.0)), ValueError,
     r"UpSampling2D: 'size' must be an int or a tuple of 2 ints, got \(2, 2.0\)"),
    (layers.UpSampling2D, lambda: layers.UpSampling2D(interpolation="lanczos3"), ValueError,
     r"UpSampling2D: interpolation='lanczos3' is not supported"),
    (layers.UpSampling2D, lambda: layers.UpSampling2D(interpolation=5), ValueError,
     r"UpSampling2D: interpolation=5 is not supported"),
    # ---- normalization layers ----
    (layers.BatchNormalization, lambda: layers.BatchNormalization(axis=1.5), TypeError,
     r"BatchNormalization '\w+': 'axis' must be an int \(one channel axis\), got 1.5"),
    (layers.BatchNormalization, lambda: layers.BatchNormalization(axis=True), TypeError, r"'axis' must be an int"),
    (layers.BatchNormalization, lambda: layers.BatchNormalization(momentum=1.5), ValueError,
     r"'momentum' must be in \[0, 1\], got 1.5"),
    (layers.BatchNormalization, lambda: layers.BatchNormalization(momentum=NAN), ValueError, r"'momentum' must be in"),
    (layers.BatchNormalization, lambda: layers.BatchNormalization(momentum="0.9"), TypeError,
     r"'momentum' must be a float"),
    (layers.BatchNormalization, lambda: layers.BatchNormalization(epsilon=0), ValueError,
     r"'epsilon' must be a finite float > 0, got 0"),
    (layers.LayerNormalization, lambda: layers.LayerNormalization(axis=1.5), TypeError,
     r"LayerNormalization '\w+': 'axis' must be an int or a list/tuple of ints, got 1.5"),
    (layers.LayerNormalization, lambda: layers.LayerNormalization(axis=[]), TypeError,
     r"'axis' must be an int or a non-empty list/tuple of ints, got \[\]"),
    (layers.LayerNormalization, lambda: layers.LayerNormalization(epsilon=-1), ValueError,
     r"'epsilon' must be a finite float > 0, got -1"),
    # ---- Embedding, Masking ----
    *[(layers.Embedding, (lambda d=d: layers.Embedding(d, 4)), ValueError,
       rf"Embedding: 'input_dim' must be a positive int, got {re.escape(repr(d))}") for d in (0, 2.0, True, -3)],
    (layers.Embedding, lambda: layers.Embedding(10, -1), ValueError, r"Embedding: 'output_dim' must be a positive int"),
    (layers.Embedding, lambda: layers.Embedding(10, 4, input_length=2.5), TypeError,
     r"Embedding: 'input_length': a shape must be a tuple of ints \(or None\), got \(2.5,\)"),
    *[(layers.Embedding, (lambda n=n: layers.Embedding(10, 4, input_length=n)), TypeError,
       rf"Embedding: 'input_length': a shape must be a tuple of ints \(or None\), got \({n},\)") for n in (INF, NAN)],
    (layers.Embedding, lambda: layers.Embedding(10, 4, input_length=-1), ValueError,
     r"Embedding: 'input_length': shape dimensions must be >= 0, got \(-1,\)"),
    (layers.Masking, lambda: layers.Masking(NAN), ValueError, r"Masking: 'mask_value' must be a number, got nan"),
    (layers.Masking, lambda: layers.Masking("0"), TypeError, r"Masking: 'mask_value' must be a number, got '0'"),
    (layers.Masking, lambda: layers.Masking(True), TypeError, r"Masking: 'mask_value' must be a number, got True"),
    # ---- recurrent layers and wrappers ----
    *[(cls, (lambda cls=cls: cls(0)), ValueError, rf"{cls.__name__}: 'units' must be a positive int, got 0")
      for cls in (layers.LSTM, layers.GRU, layers.SimpleRNN)],
    *[(cls, (lambda cls=cls: cls(2.0)), ValueError, rf"{cls.__name__}: 'units' must be a positive int, got 2.0")
      for cls in (layers.LSTM, layers.GRU, layers.SimpleRNN)],
    *[(layers.LSTM, (lambda d=d: layers.LSTM(3, dropout=d)), ValueError,
       rf"LSTM: 'dropout' must be a finite number in \[0, 1\), got {re.escape(repr(d))}")
      for d in (1.0, -0.1, NAN, "0.1", True)],
    (layers.GRU, lambda: layers.GRU(3, recurrent_dropout=NAN), ValueError,
     r"GRU: 'recurrent_dropout' must be a finite number in \[0, 1\), got nan"),
    (layers.SimpleRNN, lambda: layers.SimpleRNN(3, recurrent_dropout=1.5), ValueError,
     r"SimpleRNN: 'recurrent_dropout' must be a finite number in \[0, 1\), got 1.5"),
    *[(cls, (lambda cls=cls, s=s: cls(3, seed=s)), ValueError,
       rf"{cls.__name__}: 'seed' must be None or an int >= 0, got {re.escape(repr(s))}")
      for cls in (layers.LSTM, layers.GRU, layers.SimpleRNN) for s in (1.5, -1)],
    (layers.LSTM, lambda: layers.LSTM(3, activation="softmax"), ValueError,
     r"LSTM: 'activation' must be one of tanh, sigmoid, relu, linear"),
    (layers.GRU, lambda: layers.GRU(3, reset_after="false"), TypeError, r"GRU: 'reset_after' must be a bool"),
    (layers.GRU, lambda: layers.GRU(3, recurrent_activation="swish"), ValueError,
     r"GRU: 'recurrent_activation' must be one of tanh, sigmoid, relu, linear, hard_sigmoid, softsign, elu, selu, "
     r"softplus, leaky_relu, relu6, hard_tanh \(or None\), got 'swish'"),
    (layers.Bidirectional, lambda: layers.Bidirectional(layers.Dense(2)), TypeError,
     r"Bidirectional: 'layer' must be an LSTM, GRU or SimpleRNN instance, got Dense"),
    (layers.Bidirectional, lambda: layers.Bidirectional(layers.LSTM(2), merge_mode="max"), ValueError,
     r"Bidirectional: 'merge_mode' must be one of"),
    (layers.Bidirectional, lambda: layers.Bidirectional(layers.LSTM(2), backward_layer=layers.LSTM(2)), ValueError,
     r"'backward_layer' must be a recurrent layer with the opposite go_backwards"),
    (layers.TimeDistributed, lambda: layers.TimeDistributed("dense"), TypeError,
     r"TimeDistributed: 'layer' must be a Layer instance, got str"),
    # ---- Lambda ----
    (layers.Lambda, lambda: layers.Lambda(5), TypeError, r"Lambda: 'function' must be callable, got int"),
    (layers.Lambda, lambda: layers.Lambda(abs, output_shape=(2.5,)), TypeError,
     r"Lambda: 'output_shape': a shape must be a tuple of ints \(or None\), got \(2.5,\)"),
    (layers.Lambda, lambda: layers.Lambda(abs, arguments=[("a", 1)]), TypeError,
     r"Lambda: 'arguments' must be a dict or None"),
    # ---- merging (the elementwise layers have only the base arguments) ----
    *[(cls, (lambda cls=cls: cls(batch_size=1.5)), TypeError,
       rf"{cls.__name__}: 'batch_size' must be None or an int >= 0, got 1.5")
      for cls in (layers.Add, layers.Subtract, layers.Multiply, layers.Average, layers.Maximum, layers.Minimum)],
    (layers.Concatenate, lambda: layers.Concatenate(axis=1.0), TypeError,
     r"Concatenate: 'axis' must be an int, got 1.0"),
    (layers.Concatenate, lambda: layers.Concatenate(axis=True), TypeError, r"Concatenate: 'axis' must be an int"),
    (layers.Dot, lambda: layers.Dot(axes=1.0), TypeError, r"Dot: 'axes' must be an int or a pair of ints, got 1.0"),
    (layers.Dot, lambda: layers.Dot(axes=(1, 2, 3)), ValueError, r"Dot: 'axes' must be an int or a pair of ints"),
    (layers.Dot, lambda: layers.Dot(axes=(1.0, 1)), ValueError, r"Dot: 'axes' must be an int or a pair of ints"),
    (layers.Dot, lambda: layers.Dot(axes=(True, 1)), ValueError, r"Dot: 'axes' must be an int or a pair of ints"),
    # ---- shape layers ----
    *[(layers.Permute, (lambda d=d: layers.Permute(d)), TypeError,
       rf"Permute: 'dims' must be a tuple of ints, got {re.escape(repr(d))}") for d in ((2.0, 1), "21", 2, (True, 2))],
    (layers.Permute, lambda: layers.Permute((0, 1)), ValueError, r"Permute: 'dims' must be a permutation of 1..2"),
    (layers.Permute, lambda: layers.Permute((1, 3)), ValueError, r"Permute: 'dims' must be a permutation of 1..2"),
    *[(layers.RepeatVector, (lambda n=n: layers.RepeatVector(n)), TypeError,
       rf"RepeatVector: 'n' must be an int >= 1, got {re.escape(repr(n))}") for n in (2.0, True, "3", None)],
    *[(layers.RepeatVector, (lambda n=n: layers.RepeatVector(n)), ValueError,
       rf"RepeatVector: 'n' must be an int >= 1, got {n}") for n in (0, -2)],
    (layers.Cropping1D, lambda: layers.Cropping1D(-1), ValueError,
     r"Cropping1D: 'cropping' must hold ints >= 0, got -1"),
    (layers.Cropping1D, lambda: layers.Cropping1D((1.5, 1)), ValueError, r"Cropping1D: 'cropping' must hold ints >= 0"),
    (layers.Cropping1D, lambda: layers.Cropping1D("1"), TypeError, r"Cropping1D: 'cropping' must be an int or a tuple"),
    (layers.Cropping2D, lambda: layers.Cropping2D(((1, -1), 0)), ValueError,
     r"Cropping2D: 'cropping' must hold ints >= 0"),
    (layers.Cropping2D, lambda: layers.Cropping2D((1, 2, 3)), ValueError,
     r"Cropping2D: 'cropping' must be an int, 2 ints or 2 pairs of ints, got \(1, 2, 3\)"),
    (layers.Cropping2D, lambda: layers.Cropping2D(True), TypeError,
     r"Cropping2D: 'cropping' must be an int or a tuple"),
    (layers.Cropping2D, lambda: layers.Cropping2D(1, data_format="NHWC"), ValueError,
     r"Cropping2D: 'data_format' must be one of .*, got 'NHWC'"),
]

def _case_id(case):
    cls, _, error, message = case
    return f"{cls.__name__}-{error.__name__}-{message[:60]}"


@pytest.mark.parametrize("cls, build, error, message", BAD, ids=[_case_id(c) for c in BAD])
def test_bad_argument_raises_a_named_error(cls, build, error, message):
    with pytest.raises(error, match=message) as info:
        build()
    assert type(info.value) is error  # not a subclass standing in (e.g. a KeyError for a ValueError)


def test_every_public_layer_class_is_in_the_table():
    covered = {case[0] for case in BAD}
    public = {getattr(layers, name) for name in layers.__all__}
    classes = {obj for obj in public if isinstance(obj, type) and issubclass(obj, layers.Layer)}
    missing = sorted(c.__name__ for c in classes - covered)
    assert not missing, f"layers with no argument case: {missing}"


# ---- accepted and normalised ---------------------------------------------------------------------
ACCEPTED = [  # (construction, {attribute: normalised value}); compared by repr, so 3 is not np.int64(3)
    (lambda: layers.Dense(np.int64(3)), {"units": 3}),
    (lambda: layers.Dropout(1), {"rate": 1.0}),
    (lambda: layers.Dropout(np.float32(0.25)), {"rate": 0.25}),
    (lambda: layers.Dropout(0.5, noise_shape=[None, np.int64(1)], seed=np.int64(4)),
     {"noise_shape": (None, 1), "seed": 4}),
    (lambda: layers.Reshape([2, -1]), {"target_shape": (2, -1)}),
    (lambda: layers.Reshape((0, 3)), {"target_shape": (0, 3)}),  # Keras allows zero sizes
    (lambda: layers.Flatten(data_format="channels_last"), {"data_format": "channels_last"}),
    (lambda: layers.Flatten(), {"data_format": "channels_last"}),
    (lambda: layers.ReLU(max_value=6, negative_slope=np.float32(0.5), threshold=1),
     {"max_value": 6.0, "negative_slope": 0.5, "threshold": 1.0}),
    (lambda: layers.LeakyReLU(alpha=1), {"negative_slope": 1.0}),
    (lambda: layers.ELU(-2), {"alpha": -2.0}),  # Keras does not bound alpha
    (lambda: layers.Softmax(np.int64(1)), {"axis": 1}),
    (lambda: layers.Softmax((1, 2)), {"axis": [1, 2]}),
    (lambda: layers.PReLU(shared_axes=np.int64(1)), {"shared_axes": [1]}),
    (lambda: layers.Conv2D(np.int64(4), 3, strides=np.int32(2), padding="SAME"),
     {"filters": 4, "kernel_size": (3, 3), "strides": (2, 2), "padding": "same"}),
    (lambda: layers.Conv2D(4, [3, np.int64(2)], dilation_rate=[2, 1]),
     {"kernel_size": (3, 2), "dilation_rate": (2, 1)}),
    (lambda: layers.Conv1D(4, 3, padding="Causal"), {"kernel_size": (3,), "padding": "causal", "strides": (1,)}),
    (lambda: layers.MaxPooling2D(np.int64(3), padding="Same"), {"pool_size": (3, 3), "strides": (3, 3),
                                                                 "padding": "same"}),
    (lambda: layers.AveragePooling1D([2], strides=1), {"pool_size": (2,), "strides": (1,)}),
    (lambda: layers.UpSampling2D(2, interpolation="NEAREST"), {"size": (2, 2), "interpolation": "nearest"}),
    (lambda: layers.ZeroPadding2D(2), {"padding": ((2, 2), (2, 2))}),
    (lambda: layers.ZeroPadding2D((1, 2)), {"padding": ((1, 1), (2, 2))}),
    (lambda: layers.ZeroPadding2D(((1, 2), 3)), {"padding": ((1, 2), (3, 3))}),  # mixed, as Keras
    (lambda: layers.Cropping1D(2), {"cropping": ((2, 2),)}),
    (lambda: layers.Cropping2D(((1, 0), np.int64(2))), {"cropping": ((1, 0), (2, 2))}),
    (lambda: layers.Permute([2, np.int64(1)]), {"dims": (2, 1)}),
    (lambda: layers.RepeatVector(np.int64(3)), {"n": 3}),
    (lambda: layers.Embedding(np.int64(10), np.int32(4)), {"input_dim": 10, "output_dim": 4}),
    (lambda: layers.Masking(INF), {"mask_value": INF}),
    (lambda: layers.Masking(np.float32(-1)), {"mask_value": -1.0}),
    (lambda: layers.BatchNormalization(axis=np.int64(1), momentum=1, epsilon=1), {"axis": 1, "momentum": 1.0,
                                                                                  "epsilon": 1.0}),
    (lambda: layers.LayerNormalization(axis=(1, np.int64(2))), {"axis": [1, 2]}),
    (lambda: layers.Normalization(axis=None), {"axis": ()}),
    (lambda: layers.Normalization(axis=np.int64(1)), {"axis": (1,)}),
    (lambda: layers.LSTM(np.int64(3), seed=np.int64(7), dropout=0), {"units": 3, "seed": 7, "dropout": 0.0}),
    (lambda: layers.MultiHeadAttention(2, 2, output_shape=8, attention_axes=np.int64(1), seed=np.int64(3)),
     {"_output_shape": (8,), "attention_axes": (1,), "seed": 3}),
    (lambda: layers.RandomFlip(seed=np.int64(5)), {"seed": 5}),
    (lambda: layers.RandomRotation((0.3, -0.2), fill_value=1), {"_lower": -0.2, "_upper": 0.3, "fill_value": 1.0}),
    (lambda: layers.RandomRotation(-0.2), {"_lower": -0.2, "_upper": 0.2}),
    (lambda: layers.RandomRotation(1), {"_lower": -1.0, "_upper": 1.0}),
    (lambda: layers.RandomTranslation((0.2, -0.1), -1), {"_height": (-0.1, 0.2), "_width": (-1.0, 1.0)}),
    (lambda: layers.RandomZoom((0.5, -0.5), 1), {"_height": (-0.5, 0.5), "_width": (-1.0, 1.0)}),
    (lambda: layers.RandomContrast((0.5, 0.2)), {"_lower": 0.2, "_upper": 0.5}),
    (lambda: layers.Input(shape=np.int64(3)), {"shape": (None, 3)}),
    (lambda: layers.Input(batch_shape=(np.int64(4), 3)), {"shape": (4, 3)}),
    (lambda: layers.Identity(input_dim=np.int64(3), batch_size=np.int64(8)), {"_declared_input_shape": (3,),
                                                                               "_batch_size": 8}),
]


@pytest.mark.parametrize("build, expected", ACCEPTED, ids=[str(i) for i in range(len(ACCEPTED))])
def test_accepted_arguments_are_normalised(build, expected):
    layer = build()
    for attr, value in expected.items():
        assert repr(getattr(layer, attr)) == repr(value), attr


def _same_outputs(a, b, x, training=False):
    np.testing.assert_array_equal(a(x, training=training), b(x, training=training))


def test_conv_int_and_tuple_arguments_give_the_same_outputs(rng):
    x = rng.standard_normal(IMG)
    a = layers.Conv2D(4, 3, strides=2, padding="SAME", dtype="float64")
    b = layers.Conv2D(4, (3, 3), strides=(2, 2), padding="same", dtype="float64")
    a.ensure_built(IMG), b.ensure_built(IMG)
    b.set_weights(a.get_weights())
    _same_outputs(a, b, x)


def test_padding_and_cropping_forms_give_the_same_outputs(rng):
    x = rng.standard_normal(IMG)
    _same_outputs(layers.ZeroPadding2D(((1, 2), 3), dtype="float64"),
                  layers.ZeroPadding2D(((1, 2), (3, 3)), dtype="float64"), x)
    _same_outputs(layers.Cropping2D(((1, 0), 2), dtype="float64"),
                  layers.Cropping2D(((1, 0), (2, 2)), dtype="float64"), x)
    _same_outputs(layers.UpSampling2D(2, interpolation="Nearest", dtype="float64"),
                  layers.UpSampling2D((2, 2), dtype="float64"), x)


@pytest.mark.parametrize("make", [
    lambda f, seed: layers.RandomRotation(f, seed=seed, dtype="float64"),
    lambda f, seed: layers.RandomTranslation(f, f, seed=seed, dtype="float64"),
    lambda f, seed: layers.RandomZoom(f, seed=seed, dtype="float64"),
    lambda f, seed: layers.RandomContrast(tuple(abs(v) for v in f), value_range=(-5, 5), seed=seed, dtype="float64"),
], ids=["rotation", "translation", "zoom", "contrast"])
def test_a_reversed_factor_pair_is_sorted_as_keras_does(rng, make):
    x = rng.standard_normal(IMG)
    _same_outputs(make((0.3, -0.2), 7), make((-0.2, 0.3), 7), x, training=True)


def test_softmax_over_several_axes_matches_numpy_and_its_gradient(rng):
    x = rng.standard_normal((2, 3, 4, 2))
    for axis, ref_axis in (((1, 2), (1, 2)), ([3, -3], (1, 3)), ((0,), 0), ([2], 2)):
        layer = layers.Softmax(axis=axis, dtype="float64")
        e = np.exp(x - x.max(axis=ref_axis, keepdims=True))
        np.testing.assert_allclose(layer(x), e / e.sum(axis=ref_axis, keepdims=True), rtol=1e-13, atol=1e-15)
        assert layers.Softmax.from_config(layer.get_config()).axis == layer.axis
    # a one-axis tuple is that axis
    _same_outputs(layers.Softmax(axis=(1,), dtype="float64"), layers.Softmax(axis=1, dtype="float64"), x)
    # backward: d/dx of sum(softmax(x) * dy) by central differences
    layer = layers.Softmax(axis=(1, 3), dtype="float64")
    dy = rng.standard_normal(x.shape)
    y, cache = layer.forward(x, training=True)
    dx = layer.backward(cache, dy)
    probe = x.copy()
    fd = numeric_gradient(lambda: float(np.sum(layer.forward(probe)[0] * dy)), probe, 1e-6)
    np.testing.assert_allclose(dx, fd, rtol=1e-6, atol=1e-8)


def test_dropout_rate_one_drops_everything_as_keras(rng):
    x = rng.standard_normal((4, 5)) + 3.0
    layer = layers.Dropout(1.0, dtype="float64")
    y, cache = layer.forward(x, training=True)
    np.testing.assert_array_equal(y, np.zeros_like(x))
    np.testing.assert_array_equal(layer.backward(cache, np.ones_like(x)), np.zeros_like(x))
    np.testing.assert_array_equal(layer(x), x)  # inference: the identity
    with_noise = layers.Dropout(1.0, noise_shape=(None, 1), dtype="float64")
    np.testing.assert_array_equal(with_noise(x, training=True), np.zeros_like(x))
    assert layers.Dropout.from_config(layer.get_config()).rate == 1.0


@pytest.mark.parametrize("noise_shape", [(None, 1, 4), (2, 1, 1), (1, 4), (3, 1), (None, 3, 4)])
def test_dropout_noise_shapes_that_broadcast_share_the_mask_along_their_ones(rng, noise_shape):
    x = rng.standard_normal((2, 3, 4)) + 3.0
    y = layers.Dropout(0.5, noise_shape=noise_shape, seed=3, dtype="float64")(x, training=True)
    kept = (y != 0).astype(int)
    shape = tuple(x.shape[-len(noise_shape):][i] if d is None else d for i, d in enumerate(noise_shape))
    for axis, d in enumerate((1,) * (3 - len(shape)) + shape):  # aligned from the right, as NumPy broadcasts
        if d == 1:
            assert np.all(kept == kept.take([0], axis=axis)), f"the mask varies along axis {axis}"
    np.testing.assert_allclose(y[kept == 1], 2 * x[kept == 1])


def test_reshape_with_zero_sizes_as_keras():
    x = np.ones((3, 0), np.float32)
    assert layers.Reshape((0, 4))(x).shape == (3, 0, 4)
    assert layers.Reshape((0, 4)).compute_output_shape((None, 0)) == (None, 0, 4)


# ---- sizes from users: exact shape arithmetic or a clear error -------------------------------------
def test_repeat_vector_then_flatten_has_the_exact_size_and_a_dense_after_it_a_clear_error():
    inputs = fastnn.Input((8,))
    repeated = layers.RepeatVector(BIG)(inputs)
    assert repeated.shape == (None, BIG, 8)
    flat = layers.Flatten()(repeated)
    assert flat.shape == (None, BIG * 8)  # 2**65, exact (int64 arithmetic wrapped it to 0)
    with pytest.raises(ValueError, match=r"dense\w*.add_weight: the weight 'kernel' would have shape "
                                         r"\(36893488147419103232, 2\): its sizes \(zeros aside\) multiply to more "
                                         r"than 2\*\*63 - 1 bytes \(4 per value\)"):
        layers.Dense(2)(flat)
    with pytest.raises(ValueError, match=r"RepeatVector '\w+': the output would have shape \(1, 4611686018427387904, "
                                         r"2\)"):
        layers.RepeatVector(BIG)(np.ones((1, 2), np.float32))


def test_reshape_of_huge_sizes_is_exact():
    with pytest.raises(ValueError, match=r"cannot reshape \(8,\) \(8 values\) into target_shape="
                                         r"\(4611686018427387904, 4\) \(18446744073709551616 values\)"):
        layers.Reshape((BIG, 4)).compute_output_shape((None, 8))
    assert layers.Reshape((-1, 2**40)).compute_output_shape((None, 2**41, 2**30)) == (None, 2**31, 2**40)
    assert layers.Flatten().compute_output_shape((None, 2**40, 2**40, 3)) == (None, 3 * 2**80)


_TOO_BIG = r": its sizes \(zeros aside\) multiply to more than 2\*\*63 - 1 bytes \(4 per value\); "
_B = "4611686018427387904"  # BIG


@pytest.mark.parametrize("build, x, match", [
    (lambda: layers.UpSampling2D(2**30), np.ones((1, 2, 2, 1), np.float32),
     r"UpSampling2D '(\w+)': the output would have shape \(1, 2147483648, 2147483648, 1\)" + _TOO_BIG
     + r"UpSampling2D '\1' made it from size=\(1073741824, 1073741824\) and the input shape \(1, 2, 2, 1\)$"),
    (lambda: layers.UpSampling2D(2**40), np.ones((1, 2, 2, 1), np.float32),
     r"UpSampling2D '(\w+)': the output would have shape \(1, 2199023255552, 2199023255552, 1\)" + _TOO_BIG
     + r"UpSampling2D '\1' made it from size=\(1099511627776, 1099511627776\)"),
    (lambda: layers.ZeroPadding2D(((2**31, 2**31), (2**29, 0))), np.ones((1, 2, 2, 1), np.float32),
     r"ZeroPadding2D '(\w+)': the output would have shape \(1, 4294967298, 536870914, 1\)" + _TOO_BIG
     + r"ZeroPadding2D '\1' made it from padding=\(\(2147483648, 2147483648\), \(536870912, 0\)\) and the "
       r"input shape \(1, 2, 2, 1\)$"),
    (lambda: layers.RandomCrop(2**40, 2**40), np.ones((1, 4, 4, 1), np.float32),
     r"RandomCrop '(\w+)': the output would have shape \(1, 1099511627776, 1099511627776, 1\)" + _TOO_BIG
     + r"RandomCrop '\1' made it from height=1099511627776, width=1099511627776 and the input shape \(1, 4, 4, 1\)$"),
    (lambda: layers.RandomCrop(2**63 - 1, 3), np.ones((2, 6, 6, 3), np.float32),
     r"RandomCrop '(\w+)': the output would have shape \(2, 9223372036854775807, 3, 3\)" + _TOO_BIG
     + r"RandomCrop '\1' made it from height=9223372036854775807, width=3"),
    (lambda: layers.RepeatVector(BIG), np.ones((1, 2), np.float32),
     r"RepeatVector '(\w+)': the output would have shape \(1, " + _B + r", 2\)" + _TOO_BIG
     + r"RepeatVector '\1' made it from n=" + _B + r" and the input shape \(1, 2\)$"),
    (lambda: layers.Embedding(BIG, 2), np.zeros((1, 2), np.int64),
     r"(embedding\w*).add_weight: the weight 'embeddings' would have shape \(" + _B + r", 2\)" + _TOO_BIG
     + r"Embedding '\1' made it from input_dim=" + _B + r", output_dim=2 and the input shape \(None, 2\)$"),
    (lambda: layers.Dense(BIG), np.ones((1, 2), np.float32),
     r"(dense\w*).add_weight: the weight 'kernel' would have shape \(2, " + _B + r"\)" + _TOO_BIG
     + r"Dense '\1' made it from units=" + _B + r" and the input shape \(None, 2\)$"),
    (lambda: layers.Dense(2**63 - 1), np.ones((1, 4), np.float32),
     r"(dense\w*).add_weight: the weight 'kernel' would have shape \(4, 9223372036854775807\)" + _TOO_BIG
     + r"Dense '\1' made it from units=9223372036854775807 and the input shape \(None, 4\)$"),
    (lambda: layers.LSTM(BIG), np.ones((1, 3, 2), np.float32),  # kernel (features, 4 * units)
     r"(lstm\w*).add_weight: the weight 'kernel' would have shape \(2, 18446744073709551616\)" + _TOO_BIG
     + r"LSTM '\1' made it from units=" + _B + r" and the input shape \(None, 3, 2\)$"),
    (lambda: layers.GRU(BIG), np.ones((1, 3, 2), np.float32),
     r"(gru\w*).add_weight: the weight 'kernel' would have shape \(2, 13835058055282163712\)" + _TOO_BIG
     + r"GRU '\1' made it from units=" + _B),
    (lambda: layers.SimpleRNN(BIG), np.ones((1, 3, 2), np.float32),
     r"(simple_rnn\w*).add_weight: the weight 'kernel' would have shape \(2, " + _B + r"\)" + _TOO_BIG
     + r"SimpleRNN '\1' made it from units=" + _B),
    (lambda: layers.Conv2D(BIG, 1), np.ones((1, 4, 4, 1), np.float32),
     r"(conv2d\w*).add_weight: the weight 'kernel' would have shape \(1, 1, 1, " + _B + r"\)" + _TOO_BIG
     + r"Conv2D '\1' made it from filters=" + _B + r", kernel_size=\(1, 1\) and the input shape \(None, 4, 4, 1\)$"),
    (lambda: layers.Conv1D(1, BIG, padding="same"), np.ones((1, 3, 2), np.float32),
     r"(conv1d\w*).add_weight: the weight 'kernel' would have shape \(" + _B + r", 2, 1\)" + _TOO_BIG
     + r"Conv1D '\1' made it from filters=1, kernel_size=\(" + _B + r",\)"),
    (lambda: layers.EinsumDense("ab,bc->ac", BIG), np.ones((1, 2), np.float32),
     r"(einsum_dense\w*).add_weight: the weight 'kernel' would have shape \(2, " + _B + r"\)" + _TOO_BIG
     + r"EinsumDense '\1' made it from output_shape=\(" + _B + r",\) and the input shape \(None, 2\)$"),
    # a sublayer's weight: the layer that made the sublayer names its own arguments too
    (lambda: layers.MultiHeadAttention(BIG, 2), [np.ones((1, 3, 2), np.float32)] * 2,
     r"query.add_weight: the weight 'kernel' would have shape \(2, " + _B + r", 2\)" + _TOO_BIG
     + r"EinsumDense 'query' made it from output_shape=\(None, " + _B + r", 2\) and the input shape \(None, 3, 2\); "
       r"MultiHeadAttention '\w+' made it from num_heads=" + _B + r", key_dim=2, value_dim=2 and the input shapes "
       r"\[\(None, 3, 2\), \(None, 3, 2\)\]$"),
    (lambda: layers.Bidirectional(layers.LSTM(BIG)), np.ones((1, 3, 2), np.float32),
     r"(lstm\w*).add_weight: .*" + _TOO_BIG + r"LSTM '\1' made it from units=" + _B),
])
def test_huge_sizes_are_a_clear_error_naming_the_layer_and_its_arguments(build, x, match):
    layer = build()
    with pytest.raises(ValueError, match=match):
        layer(*x) if isinstance(x, list) else layer(x)


def test_huge_upsampling_has_exact_symbolic_shapes():
    assert layers.UpSampling2D(2**40).compute_output_shape((None, 2**40, 3, 1)) == (None, 2**80, 3 * 2**40, 1)
    assert layers.ZeroPadding2D(BIG).compute_output_shape((None, 1, 1, 2)) == (None, 2 * BIG + 1, 2 * BIG + 1, 2)
