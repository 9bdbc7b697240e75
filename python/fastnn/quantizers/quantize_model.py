"""``Model.quantize``: quantizes every layer of a model that can be (Keras 3's semantics).

The layers walked are the model's and, depth first, the layers they own (MultiHeadAttention's
EinsumDense projections, a Bidirectional's LSTMs, nested models). Layers with weights that
fastnn cannot quantize stay float and are named in one warning.
"""

import re
import warnings

from ..layers._quantization import check_mode


def _walk(layer, seen):
    for sub in layer._sublayers():
        if id(sub) in seen:
            continue
        seen.add(id(sub))
        yield sub
        yield from _walk(sub, seen)


def _layers(model):
    return list(_walk(model, {id(model)}))


def _describe(layers):
    return ", ".join(f"{layer.name} ({type(layer).__name__})" for layer in layers)


def _selector(filters, who):
    """layer -> bool from Keras' ``filters`` argument (None, regex, list of regexes, callable)."""
    if filters is None:
        return lambda layer: True
    if callable(filters):
        return lambda layer: bool(filters(layer))
    patterns = [filters] if isinstance(filters, str) else filters
    try:
        compiled = [re.compile(p) for p in patterns]
    except (TypeError, re.error) as error:
        raise ValueError(f"{who}: 'filters' must be a regex string, a list of them or a callable, got "
                         f"{filters!r} ({error})") from None
    return lambda layer: any(p.search(layer.name) for p in compiled)


def quantized_layers(model):
    """The quantized layers of `model` (walked as ``Model.quantize`` walks them)."""
    return [layer for layer in _layers(model) if layer.quantization_mode is not None]


def quantize_model(model, mode, filters=None, verbose=True, **kwargs):
    """The work of ``Model.quantize`` (see there)."""
    who = f"Model '{model.name}'.quantize"
    config = kwargs.pop("config", None)
    kwargs.pop("type_check", None)
    if kwargs or config is not None:
        raise ValueError(f"{who}: unsupported argument(s) {sorted(kwargs) + (['config'] if config is not None else [])}"
                         "; fastnn's int8 mode has no configuration")
    if mode is None:
        raise ValueError(f"{who}: give the mode, e.g. quantize('int8')")
    check_mode(mode, who)
    if not model.built:
        raise ValueError(f"{who}: the model is not built yet; build it first (model.build(input_shape), an Input, "
                         "or fit / call it on data)")
    layers = _layers(model)
    done = [layer for layer in layers if layer.quantization_mode is not None]
    if done:
        raise ValueError(f"{who}: the model is already quantized ({done[0].dtype_policy.name}: "
                         f"{_describe(done)}); quantize the float model once")
    chosen = _selector(filters, who)
    quantized, skipped = [], []
    for layer in layers:
        if getattr(layer, "_quantizable", False):
            if not chosen(layer):
                continue
            reason = layer._int8_unsupported() if hasattr(layer, "_int8_unsupported") else None
            if reason is None:
                layer.quantize(mode)
                quantized.append(layer)
                continue
            skipped.append((layer, reason))
        elif layer._own_variables and not hasattr(layer, "_functional") and chosen(layer):
            skipped.append((layer, None))
    if verbose and skipped:
        details = ", ".join(f"{layer.name} ({type(layer).__name__}{': ' + reason if reason else ''})"
                            for layer, reason in skipped)
        warnings.warn(f"{who}('{mode}'): {len(skipped)} layer(s) with weights stay float (fastnn quantizes Dense, "
                      f"EinsumDense, Embedding, Conv1D, Conv2D, LSTM and GRU): {details}", stacklevel=3)
    if quantized:
        model._pack_weights()  # the float kernels leave the flat buffer
    return {"quantized": [layer.name for layer in quantized], "skipped": [layer.name for layer, _ in skipped]}


def check_trainable(model, who):
    """ValueError naming the quantized layers when `model` has any (training is not supported)."""
    layers = quantized_layers(model)
    if layers:
        raise ValueError(f"Model '{model.name}'.{who}: the model is quantized ({layers[0].dtype_policy.name}) and "
                         f"cannot be trained; its quantized layers: {_describe(layers)}. fastnn's quantized layers "
                         "are for inference (predict, evaluate, save): train the float model, then quantize it")
