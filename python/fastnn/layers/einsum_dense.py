"""EinsumDense: a dense layer whose product is an einsum equation (Keras 3's ``EinsumDense``).

Three parts:

* the equation's analysis (``_parse`` and ``_analyze``): Keras' ``_analyze_einsum_string``
  and ``_analyze_split_string``, which turn the equation, ``output_shape``, ``bias_axes``
  and the input shape into the kernel, bias and output shapes (so Keras' weights fit);
* the plan (``_Plan``), made once at build: each axis label is shared (input, kernel and
  output), free in the input, contracted, free in the kernel, or summed out of the input;
* the computation: a *fused* path when the equation is a plain matrix product over
  reshaped views (one ``ops.dense`` call each way, bias and activation inside, as Dense),
  else a *general* path: transposes and one batched ``ops.matmul`` each way.
"""

import collections
import math
import re

import numpy as np

from .. import constraints, activations, initializers, ops, quantizers, regularizers
from . import _quantization, _validation
from .base import Layer, trainable_grad
from .core import _OutputActivation


class EinsumDense(_quantization.Int8Quantizable, _OutputActivation, Layer):
    """A dense layer computing ``activation(einsum(equation, inputs, kernel) + bias)``.

    The equation names the axes of the input, of the kernel and of the output, as in
    ``numpy.einsum``: ``"ab,bc->ac"`` is a Dense layer, ``"abc,cde->abde"`` projects the
    last axis of a sequence to heads x head size (attention's query/key/value projections),
    ``"abcd,cde->abe"`` projects the heads back. An ellipsis stands for any leading axes
    (``"...b,bc->...c"``) or, after at least two labels, trailing axes
    (``"bc...,cd->bd..."``). Every kernel label must appear in the input or the output;
    every output label in the input or the kernel; input labels in neither are summed over.

    Shapes follow Keras exactly, so Keras' weights load with ``set_weights``: the kernel
    axes take their sizes from the output (``output_shape``) or the input; the bias spans
    the output from the first of ``bias_axes`` to the end, with size 1 on the axes it does
    not name (e.g. ``"abc,cde->abde"`` with ``bias_axes="d"``: bias shape ``(d, 1)``).
    Weights: kernel, bias (when ``bias_axes`` is given), in that order.

    Speed: when the input is (free axes, contracted axes), the kernel (contracted axes,
    output axes) and the output (free axes, output axes), all in the same order, and the
    bias (if any) spans exactly the kernel's output axes (as in attention's projections),
    forward and backward are one fused GEMM kernel call each over reshaped views. Other
    equations transpose to a batched matrix product.

    A None entry of ``output_shape`` at an axis the input also has takes the input's size
    (Keras leaves it None). LoRA is not supported, nor a ``quantization_config``: those
    arguments must keep their defaults.

    Quantized (``model.quantize("int8")``), as Keras 3: the kernel is int8 with one scale per
    output element of the kernel (abs-max over the contracted axes); ``kernel_scale`` has the
    output's rank, size 1 on the axes the kernel lacks (Keras' layout: "abc,cde->abde" gives
    (1, 1, d, e)); weights kernel, bias, kernel_scale. The inputs are quantized over their
    contracted axes at run time and ``(einsum(x_q, kernel) / (x_scale · kernel_scale)) + bias``
    then the activation: one ``fastnn.quantizers.int8_dense`` call when the equation is a
    plain matrix product (attention's projections), else an exact integer einsum in NumPy.
    Inference only.

    Args:
        equation: str: the einsum equation, ``"ab,bc->ac"``, ``"...ab,bc->...ac"`` or
            ``"ab...,bc->ac..."`` forms (letters a-z, A-Z).
        output_shape: int or tuple: the output shape without the batch axis and without the
            axes the ellipsis stands for; None for sizes taken from the input.
        activation: name, function or None, default None (linear).
        bias_axes: str or None, default None (no bias): the output labels the bias spans.
        kernel_initializer: default "glorot_uniform" (variance-scaling initializers count
            the contracted axes as fan-in and the kernel's output axes as fan-out, as Keras).
        bias_initializer: default "zeros".
        kernel_regularizer: default None.
        bias_regularizer: default None.
        kernel_constraint: default None: a fastnn.constraints constraint (after each step).
        bias_constraint: default None: likewise for the bias.
        lora_rank: default None; must be None (LoRA is not supported).
        lora_alpha: default None (Keras' LoRA scale; no effect without lora_rank).
        gptq_unpacked_column_size: default None; must be None (quantization).
        quantization_config: default None; must be None (quantization).
        **kwargs: name, dtype, trainable, input_shape, input_dim, activity_regularizer.

    Attributes:
        kernel, bias: the Variables (bias None without bias_axes; both None before build).
        full_output_shape: the output shape with the batch axis, once built.
        partial_output_shape: ``output_shape`` as a tuple.

    Example:
        >>> layer = fastnn.layers.EinsumDense("abc,cde->abde", output_shape=(None, 4, 8), bias_axes="de")
        >>> layer(np.zeros((2, 5, 16), "float32")).shape
        (2, 5, 4, 8)
        >>> layer.kernel.shape, layer.bias.shape
        ((16, 4, 8), (4, 8))
    """

    # Keras fixes the input rank only (its InputSpec): the free axes may change size after build.
    _flexible_input_shape = True

    _size_arguments = (("output_shape", "partial_output_shape"),)

    def __init__(self, equation, output_shape, activation=None, bias_axes=None, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None, kernel_constraint=None,
                 bias_constraint=None, lora_rank=None, lora_alpha=None, gptq_unpacked_column_size=None,
                 quantization_config=None, **kwargs):
        super().__init__(**kwargs)
        who = f"EinsumDense '{self.name}'"
        for arg, value, what in (("lora_rank", lora_rank, "LoRA is"),
                                 ("gptq_unpacked_column_size", gptq_unpacked_column_size, "quantization is"),
                                 ("quantization_config", quantization_config, "quantization is")):
            if value is not None:
                raise ValueError(f"{who}: {what} not supported ({arg} must be None, got {value!r})")
        if bias_axes is not None and not isinstance(bias_axes, str):
            raise TypeError(f"{who}: 'bias_axes' must be a string of output labels or None, got {bias_axes!r}")
        self._equation = _parse(equation, bias_axes, who)
        self.equation = equation
        self.partial_output_shape = _partial_output_shape(output_shape, who)
        self.bias_axes = bias_axes
        self._act = _validation.activation(activation, "activation", who)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = _validation.constraint(kernel_constraint, "kernel_constraint", who)
        self.bias_constraint = _validation.constraint(bias_constraint, "bias_constraint", who)
        self.lora_rank, self.lora_alpha, self.lora_enabled = None, lora_alpha, False
        self.gptq_unpacked_column_size = self.quantization_config = None
        self.kernel = self.bias = None
        self.full_output_shape = None
        self._plan = None

    @property
    def activation(self):
        return self._act

    # ---- shapes ------------------------------------------------------------------------------------
    def _analysis(self, input_shape):
        return _analyze(self._equation, self.bias_axes, tuple(input_shape), self.partial_output_shape,
                        f"EinsumDense '{self.name}'")

    def build(self, input_shape):
        shapes = self._analysis(input_shape)
        if self._quantization_mode:
            self.kernel = self._add_int8_weight("kernel", shapes.kernel_shape)
        else:
            self.kernel = self.add_weight(shape=shapes.kernel_shape, initializer=self._kernel_init(shapes),
                                          regularizer=self.kernel_regularizer, constraint=self.kernel_constraint,
                                          name="kernel")
        if shapes.bias_shape is not None:
            self.bias = self.add_weight(shape=shapes.bias_shape, initializer=self.bias_initializer,
                                        regularizer=self.bias_regularizer, constraint=self.bias_constraint,
                                        name="bias")
        self.full_output_shape = shapes.output_shape
        self._plan = _Plan(shapes)
        self._labels = (shapes.in_labels, shapes.kernel_labels, shapes.out_labels)
        if self._quantization_mode:
            self.kernel_scale = self._add_scale_weight("kernel_scale", self._int8_scale_shape())
        return shapes.output_shape

    # ---- int8 ------------------------------------------------------------------------------------------
    def _int8_axes(self, spec):
        """The axes of `spec` (labels) an abs-max scale spans: those not in the output (Keras)."""
        return tuple(i for i, d in enumerate(spec) if d not in self._labels[2])

    def _int8_scale_shape(self):
        ker, out = self._labels[1], self._labels[2]
        size = dict(zip(ker, self.kernel.shape))
        return tuple(size[d] if d in ker else 1 for d in out)

    def _int8_quantize(self):
        values, scale = quantizers.abs_max_quantize(self.kernel.value, axis=self._int8_axes(self._labels[1]))
        self._swap_to_int8([("kernel", values)], [("kernel_scale", _to_output_layout(scale, self._labels[1],
                                                                                   self._labels[2]))])

    def _int8_forward(self, x, logits):
        plan, act = self._plan, self._act
        bias = None if self.bias is None else self.bias.value
        fused_act, after = _quantization.int8_activation(act, logits)
        if plan.fused:
            if fused_act is not None and not plan.fuses(act):
                fused_act, after = None, True
            packed = self._int8_packed(self.kernel.value.reshape(plan.k, plan.m))
            y = quantizers.int8_dense(x.reshape(plan.rows(x), plan.k), packed, self.kernel_scale.value.reshape(plan.m),
                                      None if bias is None else bias.reshape(plan.m), fused_act)
            y = y.reshape(x.shape[:plan.n_free] + plan.kernel_free_shape)
        else:  # Keras' formula with an exact integer einsum
            ins, ker, out = self._labels
            x_q, x_scale = quantizers.abs_max_quantize(x, axis=self._int8_axes(ins))
            z = np.einsum(f"{''.join(ins)},{''.join(ker)}->{''.join(out)}", x_q.astype(np.int32),
                          self.kernel.value.astype(np.int32))
            y = z.astype(np.float32) / (_to_output_layout(x_scale, ins, out) * self.kernel_scale.value)
            if bias is not None:
                y += bias
            after = after or fused_act is not None
        y = y.astype(self._dtype, copy=False)
        return (act.forward(y) if after else y), None

    def compute_output_shape(self, input_shape):
        shapes = self._analysis(input_shape)
        if self._plan is not None:
            if len(input_shape) != self._plan.ndim or shapes.kernel_shape != self.kernel.shape:
                raise ValueError(f"EinsumDense '{self.name}': built for inputs of shape {self.input_shape} (kernel "
                                 f"{self.kernel.shape}), got inputs of shape {tuple(input_shape)}")
        return shapes.output_shape

    def _kernel_init(self, shapes):
        """Keras' fans for variance scaling: fan-in = the contracted axes, fan-out = the kernel's
        output axes (not the convolution rule for rank > 2). The values are i.i.d., so drawing a
        (fan_in, fan_out) matrix and reshaping it gives exactly that distribution."""
        init = self.kernel_initializer
        if not isinstance(init, initializers.VarianceScaling):
            return init
        fan_in = math.prod(shapes.kernel_shape[i] for i in shapes.input_axes)
        fan_out = math.prod(shapes.kernel_shape[i] for i in shapes.output_axes)
        return lambda shape, dtype=None: np.reshape(init((fan_in, fan_out), dtype), shape)

    # ---- forward and backward ----------------------------------------------------------------------
    def forward(self, x, training=False, logits=False):
        plan = self._plan
        plan.check_input(x, self.name)
        if self._quantization_mode:
            return self._int8_forward(x, logits)
        if plan.fused:
            return self._fused_forward(x, training, logits)
        z, contraction = plan.contract(x, self.kernel.value)
        if self.bias is not None:
            z += self.bias.value  # z is the contraction's own fresh array
        act = None if logits or self._act.is_linear else self._act
        y = z if act is None else act.forward(z)
        return y, ((contraction, z if act is not None and act.needs_input else None, y, act) if training else None)

    def backward(self, cache, dy, need_input_grad=True, accumulate=False):
        if self._quantization_mode:
            raise self._int8_backward_error()
        if self._plan.fused:
            return self._fused_backward(cache, dy, need_input_grad, accumulate)
        contraction, z, y, act = cache
        dz = dy if act is None else act.backward(z, y, np.ascontiguousarray(dy, dtype=y.dtype))
        db = trainable_grad(self.bias)
        if db is not None:
            _reduce_to(dz, db, accumulate)
        return self._plan.contract_backward(contraction, dz, self.kernel.value, trainable_grad(self.kernel),
                                            need_input_grad, accumulate)

    def _fused_forward(self, x, training, logits):
        """Dense's forward over views: x (rows, K) @ kernel (K, M) + bias (M,), activation fused.
        The views are taken per call: a model moves weights into its flat buffer after build."""
        plan, act = self._plan, self._act
        x2 = x.reshape(plan.rows(x), plan.k)
        w = self.kernel.value.reshape(plan.k, plan.m)
        b = None if self.bias is None else self.bias.value.reshape(plan.m)
        out_shape = x.shape[:plan.n_free] + plan.kernel_free_shape
        if logits or not plan.fuses(act):  # linear kernel, then the activation on the output's shape
            z = ops.dense(x2, w, b).reshape(out_shape)
            if logits:
                return z, ((x2, None, z, None, x.shape) if training else None)
            y = act.forward(z)
            return y, ((x2, z, y, act, x.shape) if training else None)
        if training and act.needs_input:
            y, z = ops.dense(x2, w, b, act.kind, act.alpha, return_preactivation=True)
        else:
            y, z = ops.dense(x2, w, b, act.kind, act.alpha), None
        return y.reshape(out_shape), ((x2, z, y, act, x.shape) if training else None)

    def _fused_backward(self, cache, dy, need_input_grad, accumulate):
        x2, z, y, act, x_shape = cache
        plan = self._plan
        kind, alpha = None, 0.0
        if act is not None and not plan.fuses(act):
            dy = act.backward(z, y, np.ascontiguousarray(dy, dtype=y.dtype))
            z = None
        elif act is not None:
            kind, alpha = act.kind, act.alpha
        rows = x2.shape[0]
        as2d = (rows, plan.m)
        dx = ops.dense_backward(x2, self.kernel.value.reshape(plan.k, plan.m), dy.reshape(as2d), y.reshape(as2d),
                                _grad_view(trainable_grad(self.kernel), (plan.k, plan.m)),
                                _grad_view(trainable_grad(self.bias), (plan.m,)), kind,
                                None if z is None else z.reshape(as2d), alpha, accumulate, need_input_grad)
        return None if dx is None else dx.reshape(x_shape)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(output_shape=self.partial_output_shape, equation=self.equation,
                   activation=activations.serialize(self._act), bias_axes=self.bias_axes,
                   kernel_initializer=initializers.serialize(self.kernel_initializer),
                   bias_initializer=initializers.serialize(self.bias_initializer),
                   kernel_regularizer=regularizers.serialize(self.kernel_regularizer),
                   bias_regularizer=regularizers.serialize(self.bias_regularizer),
                   activity_regularizer=regularizers.serialize(self.activity_regularizer),
                   kernel_constraint=constraints.serialize(self.kernel_constraint),
                   bias_constraint=constraints.serialize(self.bias_constraint), quantization_config=None)
        return cfg  # (Keras writes lora_rank / lora_alpha only when LoRA is on: never here)


def _to_output_layout(scale, spec, out):
    """An abs-max scale (keepdims, over the `spec` axes not in the output) laid out to broadcast
    against the output: its axes in the output's order, size 1 where `spec` lacks the label."""
    kept = [d for d in spec if d in out]
    values = scale.reshape([n for d, n in zip(spec, scale.shape) if d in out])
    ordered = [d for d in out if d in spec]
    values = values.transpose([kept.index(d) for d in ordered])
    return np.ascontiguousarray(values.reshape([values.shape[ordered.index(d)] if d in spec else 1 for d in out]),
                                dtype=np.float32)


# ---- the equation ------------------------------------------------------------------------------------
_FORMS = (  # Keras' three forms, "..." written as "0" (as Keras does before matching)
    (re.compile("([a-zA-Z]+),([a-zA-Z]+)->([a-zA-Z]+)"), None),
    (re.compile("0([a-zA-Z]+),([a-zA-Z]+)->0([a-zA-Z]+)"), "left"),
    (re.compile("([a-zA-Z]{2,})0,([a-zA-Z]+)->([a-zA-Z]+)0"), "right"),
)


# The equation's three specs (letters only) and where its ellipsis is (None, "left", "right").
_Equation = collections.namedtuple("_Equation", "text input kernel output ellipsis")


def _parse(equation, bias_axes, who):
    """The equation's specs, with the checks that need no shapes (Keras makes them at build)."""
    if not isinstance(equation, str):
        raise TypeError(f"{who}: 'equation' must be a string such as 'ab,bc->ac', got {equation!r}")
    dotted = equation.replace("...", "0")
    for pattern, ellipsis in _FORMS:
        match = pattern.fullmatch(dotted)  # (Keras' re.match would ignore trailing text, e.g. "ab,bc->ac...")
        if match:
            break
    else:
        raise ValueError(f"{who}: invalid einsum equation '{equation}'. Equations must be in the form "
                         "[X],[Y]->[Z], ...[X],[Y]->...[Z], or [X]...,[Y]->[Z]....")
    eq = _Equation(equation, *match.groups(), ellipsis)
    for what, spec in (("input", eq.input), ("kernel", eq.kernel), ("output", eq.output)):
        repeated = sorted({c for c in spec if spec.count(c) > 1})
        if repeated:
            raise ValueError(f"{who}: equation '{equation}': the {what} spec '{spec}' repeats {repeated} (diagonals "
                             "are not supported)")
    for dim in eq.output:
        if dim not in eq.input and dim not in eq.kernel:
            raise ValueError(f"{who}: dimension '{dim}' was specified in the output '{eq.output}' but has no "
                             f"corresponding dim in the input spec '{eq.input}' or weight spec '{eq.kernel}'")
    for dim in eq.kernel:
        if dim not in eq.input and dim not in eq.output:
            raise ValueError(f"{who}: weight dimension '{dim}' did not have a match in either the input spec "
                             f"'{eq.input}' or the output spec '{eq.output}'. For this layer, the weight must be "
                             "fully specified.")
    if bias_axes is not None:
        if not bias_axes:
            raise ValueError(f"{who}: 'bias_axes' must name at least one output label (or be None for no bias)")
        for char in bias_axes:
            if char not in eq.output:
                raise ValueError(f"{who}: 'bias_axes' {bias_axes!r}: bias dimension '{char}' was requested, but is "
                                 f"not part of the output spec '{eq.output}'")
    return eq


def _partial_output_shape(output_shape, who):
    if isinstance(output_shape, (int, np.integer)) and not isinstance(output_shape, bool):
        output_shape = (output_shape,)
    try:
        shape = tuple(output_shape)
    except TypeError:
        raise TypeError(f"{who}: 'output_shape' must be an int or a tuple of ints/None, got {output_shape!r}") from None
    for d in shape:
        if d is not None and (isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0):
            raise ValueError(f"{who}: 'output_shape' entries must be ints >= 0 or None, got {output_shape!r}")
    return tuple(None if d is None else int(d) for d in shape)


# The analysis: the labels of each operand's axes (the ellipsis' axes as "...0", "...1"...),
# the kernel, bias and full output shapes, and the kernel's input and output axes (its fans).
_Shapes = collections.namedtuple("_Shapes", "in_labels kernel_labels out_labels kernel_shape bias_shape "
                                            "output_shape input_axes output_axes")


def _analyze(eq, bias_axes, input_shape, partial_output_shape, who):
    """Keras' _analyze_einsum_string / _analyze_split_string, with clear errors where Keras
    would fail later (input rank, output_shape length, unknown kernel or bias sizes)."""
    left = eq.ellipsis == "left"
    elided = len(input_shape) - len(eq.input)
    if elided < 0 or (eq.ellipsis is None and elided != 0):
        need = f"at least {len(eq.input)}" if eq.ellipsis else str(len(eq.input))
        raise ValueError(f"{who}: equation '{eq.text}' expects inputs with {need} axes (batch included), got input "
                         f"shape {input_shape}")
    dots = [f"...{i}" for i in range(elided)] if eq.ellipsis else []
    in_labels = dots + list(eq.input) if left else list(eq.input) + dots
    out_labels = dots + list(eq.output) if left else list(eq.output) + dots

    # Keras: the batch size first, then the ellipsis' other leading axes, the user's shape,
    # and the ellipsis' trailing axes.
    output_shape = [input_shape[0]]
    if left and elided > 0:
        output_shape += list(input_shape[1:elided])
    output_shape += list(partial_output_shape)
    if eq.ellipsis == "right":
        output_shape += list(input_shape[len(input_shape) - elided:])
    if len(output_shape) != len(out_labels):
        expected = len(out_labels) - len(output_shape) + len(partial_output_shape)
        raise ValueError(f"{who}: 'output_shape' {partial_output_shape} has {len(partial_output_shape)} entries, but "
                         f"the output '{eq.output}' of '{eq.text}' needs {expected} (its axes without the batch axis"
                         f"{' and the ellipsis' if eq.ellipsis else ''})")

    in_size = dict(zip(in_labels, input_shape))
    for i, dim in enumerate(out_labels):
        if dim in in_size:
            if output_shape[i] is not None and output_shape[i] != in_size[dim]:
                raise ValueError(f"{who}: input shape and output shape do not match at shared dimension '{dim}'. "
                                 f"Input shape is {in_size[dim]}, and output shape is {output_shape[i]}.")
            if output_shape[i] is None:
                output_shape[i] = in_size[dim]  # known from the input (Keras leaves None)
    out_size = dict(zip(out_labels, output_shape))

    kernel_shape, input_axes, output_axes = [], [], []
    for i, dim in enumerate(eq.kernel):
        if dim in out_size:
            kernel_shape.append(out_size[dim])
            output_axes.append(i)
        else:
            kernel_shape.append(in_size[dim])
            input_axes.append(i)
    if any(d is None for d in kernel_shape):
        raise ValueError(f"{who}: the kernel of '{eq.text}' would have shape {tuple(kernel_shape)} for inputs of "
                         f"shape {input_shape} and output_shape {partial_output_shape}: its sizes must be known "
                         "(from the input's contracted axes and from output_shape)")

    bias_shape = None
    if bias_axes is not None:
        first = min(eq.output.find(c) for c in bias_axes)
        bias_shape = [out_size[c] if c in bias_axes else 1 for c in eq.output[first:]]
        if eq.ellipsis == "right":
            bias_shape += [1] * elided
        if any(d is None for d in bias_shape):
            raise ValueError(f"{who}: the bias over bias_axes={bias_axes!r} would have shape {tuple(bias_shape)}: its "
                             "sizes must be known (the batch axis cannot carry a bias)")
        bias_shape = tuple(bias_shape)
    return _Shapes(in_labels=in_labels, kernel_labels=list(eq.kernel), out_labels=out_labels,
                   kernel_shape=tuple(kernel_shape), bias_shape=bias_shape, output_shape=tuple(output_shape),
                   input_axes=input_axes, output_axes=output_axes)


# ---- the computation -----------------------------------------------------------------------------------
class _Plan:
    """How the contraction runs, decided once at build from the labels.

    Labels fall in five groups: shared S (input, kernel, output: a batch of products), free F
    (input and output), contracted C (input and kernel), kernel-free G (kernel and output),
    and summed R (input only). ``fused``: no S or R, input = F + C, kernel = C + G, output =
    F + G (each in one order), bias None or over exactly G: the product is one GEMM of
    (rows, K) by (K, M) on reshaped views, with bias and activation in the same kernel.
    Otherwise the input (R summed) is transposed to (S, F, C), the kernel to (S, C, G), and
    one batched matmul gives (S, F, G), transposed to the output's order.
    """

    def __init__(self, shapes):
        ins, ker, out = shapes.in_labels, shapes.kernel_labels, shapes.out_labels
        shared = [d for d in out if d in ins and d in ker]
        free = [d for d in out if d in ins and d not in ker]
        kfree = [d for d in out if d in ker and d not in ins]
        contracted = [d for d in ker if d in ins and d not in out]
        summed = [d for d in ins if d not in ker and d not in out]
        size = dict(zip(ker, shapes.kernel_shape))
        self.ndim = len(ins)
        # (axis, size) of the input axes the kernel fixes, checked on each call
        self.fixed = [(i, size[d]) for i, d in enumerate(ins) if d in size]
        self.n_free = len(free)
        self.kernel_free_shape = tuple(size[d] for d in kfree)
        self.k = math.prod(size[d] for d in contracted)
        self.m = math.prod(self.kernel_free_shape)
        gemm = not shared and not summed and ins == free + contracted and ker == contracted + kfree \
            and out == free + kfree
        self.fused = gemm and shapes.bias_shape in (None, self.kernel_free_shape)
        # the GEMM's rows are the output's last axis only with one kernel-free axis (softmax's axis)
        self.last_axis_is_row = len(kfree) == 1

        # the general path's permutations (each with its inverse for the backward)
        self.summed_axes = tuple(i for i, d in enumerate(ins) if d in summed)
        kept = [d for d in ins if d not in summed]
        self.counts = (len(shared), len(free), len(contracted))
        sfc, scg, sfg = shared + free + contracted, shared + contracted + kfree, shared + free + kfree
        self.x_perm = [kept.index(d) for d in sfc]
        self.x_back = [sfc.index(d) for d in kept]
        self.k_perm = [ker.index(d) for d in scg]
        self.k_back = [scg.index(d) for d in ker]
        self.k_in_order = self.k_perm == list(range(len(ker)))  # dk can be written straight into the grad
        self.out_perm = [sfg.index(d) for d in out]
        self.out_back = [out.index(d) for d in sfg]

    def fuses(self, act):
        """Whether the fused GEMM kernel applies `act`: a kernel activation, softmax only when
        the GEMM's rows are the output's last axis (else it runs after, on the output's shape)."""
        return act.kind is not None and (act.kind != "softmax" or self.last_axis_is_row)

    def check_input(self, x, who):
        if x.ndim != self.ndim or any(x.shape[i] != n for i, n in self.fixed):
            expected = ["?"] * self.ndim
            for i, n in self.fixed:
                expected[i] = n
            raise ValueError(f"EinsumDense '{who}': expected inputs of shape ({', '.join(map(str, expected))}) "
                             f"(? = any size), got {x.shape}")

    def rows(self, x):
        return math.prod(x.shape[:self.n_free])  # explicit: reshape(-1, K) is ambiguous for empty inputs

    def contract(self, x, kernel):
        """einsum(x, kernel) as a new C-contiguous array in the output's order, and the cache."""
        n_s, n_f, n_c = self.counts
        x_shape = x.shape
        if self.summed_axes:
            x = x.sum(axis=self.summed_axes)
        xt = x.transpose(self.x_perm)
        s_shape, f_shape = xt.shape[:n_s], xt.shape[n_s:n_s + n_f]
        kt = kernel.transpose(self.k_perm)
        g_shape = kt.shape[n_s + n_c:]
        s, f, c, g = math.prod(s_shape), math.prod(f_shape), math.prod(xt.shape[n_s + n_f:]), math.prod(g_shape)
        x3 = xt.reshape(s, f, c)  # views when the axes are already in order
        k3 = kt.reshape(s, c, g)
        z = ops.matmul(x3, k3).reshape(s_shape + f_shape + g_shape).transpose(self.out_perm)
        return np.ascontiguousarray(z), (x3, k3, x_shape, xt.shape, kt.shape)

    def contract_backward(self, cache, dz, kernel, dkernel, need_input_grad, accumulate):
        """The input's gradient (or None); the kernel's into dkernel (written or, with accumulate, added)."""
        x3, k3, x_shape, xt_shape, kt_shape = cache
        s, f, g = x3.shape[0], x3.shape[1], k3.shape[2]
        dz3 = dz.transpose(self.out_back).reshape(s, f, g)
        if dkernel is not None:
            if self.k_in_order:
                ops.matmul(x3, dz3, transpose_a=True, out=_grad_view(dkernel, k3.shape), accumulate=accumulate)
            else:
                dk = ops.matmul(x3, dz3, transpose_a=True).reshape(kt_shape).transpose(self.k_back)
                if accumulate:
                    dkernel += dk
                else:
                    dkernel[...] = dk
        if not need_input_grad:
            return None
        dx = ops.matmul(dz3, k3, transpose_b=True).reshape(xt_shape).transpose(self.x_back)
        if self.summed_axes:  # the sum's gradient: the same value along each summed axis
            dx = np.broadcast_to(np.expand_dims(dx, self.summed_axes), x_shape)
        return np.ascontiguousarray(dx)


def _grad_view(grad, shape):
    """A gradient array reshaped without a copy, so the kernels write into the model's flat
    gradient buffer (None stays None). Gradient arrays are C-contiguous: reshape is a view."""
    if grad is None:
        return None
    if not grad.flags.c_contiguous:
        raise ValueError("EinsumDense: gradient arrays must be C-contiguous")
    return grad.reshape(shape)


def _reduce_to(dz, db, accumulate):
    """The bias' gradient: dz summed over the axes the bias broadcasts along, into db."""
    lead = dz.ndim - db.ndim
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(db.shape) if n == 1)
    total = dz.sum(axis=axes, keepdims=True).reshape(db.shape)
    if accumulate:
        db += total
    else:
        db[...] = total
