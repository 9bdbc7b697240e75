"""Models to and from fastnn files: ``save_model``, ``load_model``, ``save_weights``, ``load_weights``.

``model.save(path)`` writes one file holding the architecture, the weights, the compile
settings and the optimizer's state; ``load_model(path)`` rebuilds the model from it so that
training resumes exactly where it stopped. ``model.save_weights(path)`` and
``model.load_weights(path)`` handle the weights alone. The file format is archive.py's;
this module maps a model's weights, optimizer state and layer states to and from it.
"""

import os
import sys
import warnings

import numpy as np

from . import archive
from .registration import CustomObjectScope
from .serialization import FUNCTION, UnknownObjectError, deserialize_keras_object, is_function, serialize_keras_object


# ---- saving ------------------------------------------------------------------------------------------
def _rank_zero_writes(save):
    """``save`` on one process; in data-parallel training (every process runs the same script
    and holds the same weights) a collective: rank 0 writes the file and every process returns
    once it is written (so that each may load it next), raising rank 0's error if it failed."""

    def collective(model, filepath, overwrite=True):
        from ..distribution import replicas

        group = replicas.for_model()
        if group is None:
            return save(model, filepath, overwrite)
        failure = None
        if group.rank == 0:
            try:
                save(model, filepath, overwrite)
            except Exception as error:  # noqa: BLE001 - told to the other processes, then raised
                failure = error
        told = group.world.broadcast_json(None if failure is None else f"{type(failure).__name__}: {failure}")
        if failure is not None:
            raise replicas.collective(failure)
        if told is not None:
            raise replicas.collective(RuntimeError(f"{save.__name__}: rank 0 could not write "
                                                   f"{os.fspath(filepath)!r}: {told}"))

    collective.__name__, collective.__doc__, collective.__wrapped__ = save.__name__, save.__doc__, save
    return collective


@_rank_zero_writes
def save_model(model, filepath, overwrite=True):
    """Saves a model to one file: architecture, weights, compile settings, optimizer state.

    ``load_model(filepath)`` gives back a model that predicts the same and, compiled with
    the same optimizer state (iterations included), continues training exactly as the
    original would have.

    The file is in fastnn's format (see ``fastnn.saving``), whatever its name: fastnn
    does not write Keras' formats, and Keras cannot read this one. ``.fastnn`` is its
    suffix. Unlike Keras 3, which refuses any name but ``.keras`` (or a legacy ``.h5``),
    fastnn takes any name, so that Keras programs run unchanged; a Keras name
    (``.keras``, ``.h5``, ``.hdf5``) gets a ``UserWarning`` that says the file is
    fastnn's, Keras cannot read it, and which ``.fastnn`` name to use.

    Args:
        model: the Model to save.
        filepath: str or path-like, e.g. ``"model.fastnn"``.
        overwrite: bool, default True: replace an existing file (False: FileExistsError).

    In data-parallel training call it on every process: rank 0 writes, and each process
    returns once the file is written.

    Raises:
        ValueError: something in the model cannot be saved (e.g. a lambda as loss or
            activation, a custom class without get_config).
        FileExistsError: the file exists and overwrite is False.
        FileNotFoundError, IsADirectoryError: no such folder, or `filepath` is a folder.
    """
    path = archive.check_target(filepath, overwrite)

    def contents():
        header = _header("model", model)
        weights = _weight_arrays(model) if getattr(model, "built", False) else []
        optimizer_info, optimizer_arrays = _optimizer_arrays(model)
        header["weights"] = [entry for entry, _ in weights]
        header["optimizer_state"] = optimizer_info
        header["layer_states"] = _layer_states(model)
        _check_no_lambdas(header["model"], "model")
        _check_no_lambdas(header["compile_config"], "compile_config")
        _validate_json(header, path)
        return header, weights + optimizer_arrays

    _write_consistent(model, path, contents)
    _warn_if_keras_name(path, "model")


@_rank_zero_writes
def save_weights(model, filepath, overwrite=True):
    """Saves a model's weights alone (no architecture, no optimizer) to one file.

    The file is in fastnn's format, whatever its name; ``.weights.fastnn`` is the
    suggested suffix. Keras 3 requires ``.weights.h5`` (HDF5); fastnn takes that name too,
    so that Keras programs run unchanged, with a ``UserWarning`` that the file is fastnn's
    and Keras cannot read it (as for ``.keras``, ``.h5``, ``.hdf5`` and ``.weights.json``).

    Args:
        model: the Model (built).
        filepath: str or path-like, e.g. ``"model.weights.fastnn"``.
        overwrite: bool, default True: replace an existing file (False: FileExistsError).

    Raises:
        ValueError: the model is not built yet.
        FileExistsError: the file exists and overwrite is False.
    """
    path = archive.check_target(filepath, overwrite)
    if not getattr(model, "built", False):
        raise ValueError(f"Cannot save the weights of model '{model.name}' to {path!r}: it is not built yet "
                         "(build it, or fit or call it on data first)")

    def contents():
        header = _header("weights", model)
        weights = _weight_arrays(model)
        header["weights"] = [entry for entry, _ in weights]
        header["layer_states"] = _layer_states(model)
        _validate_json(header, path)
        return header, weights

    _write_consistent(model, path, contents)
    _warn_if_keras_name(path, "weights")


def _write_consistent(model, path, contents):
    """Writes the file contents() describes with the weights of one moment: while another
    thread trains the model, copied between two of its steps (the training goes on while the
    copy is written); otherwise written in place, a training loop that starts meanwhile waiting
    for the write (fastnn.loop_guard)."""
    from .. import loop_guard

    with loop_guard.Reading(model) as reading:
        header, arrays = contents()
        if reading.mode != "locked":
            archive.write_file(path, header, arrays)
            return
        arrays = [(entry, np.array(value, copy=True)) for entry, value in arrays]
    archive.write_file(path, header, arrays)


# Keras' file names: what each promises (longest first: ".weights.h5" before ".h5").
_KERAS_NAMES = ((".weights.h5", "Keras .weights.h5 (HDF5) weights file"),
                (".weights.json", "Keras sharded weights file"), (".keras", "Keras .keras archive"),
                (".hdf5", "Keras HDF5 file"), (".h5", "Keras HDF5 (.h5) file"))


def _warn_if_keras_name(path, kind):
    """Says, when `path` has a Keras file name, that the file is fastnn's, which Keras cannot read."""
    lower = path.lower()
    for suffix, what in _KERAS_NAMES:
        if lower.endswith(suffix):
            break
    else:
        return
    suggestion = path[:len(path) - len(suffix)] + (".fastnn" if kind == "model" else ".weights.fastnn")
    reader = "fastnn.models.load_model" if kind == "model" else "fastnn's model.load_weights"
    warnings.warn(f"{path!r} was written in fastnn's own format (a zip archive of JSON and .npy arrays), not as "
                  f"the {what} its name suggests: Keras cannot read it; {reader} reads it back. To say what it "
                  f"holds, name it {suggestion!r} ('.fastnn' is fastnn's suffix).", UserWarning,
                  stacklevel=_user_stacklevel())


def _user_stacklevel():
    """The `stacklevel` for warnings.warn, called from the function calling this one, that
    points at the first caller outside fastnn (model.save's caller, or the fit that ran a
    ModelCheckpoint)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def _validate_json(header, path):
    try:
        archive.dump_json(header)
    except (TypeError, ValueError) as e:
        raise ValueError(f"Cannot save to {path!r}: the model's config is not JSON-serializable: {e}. "
                         "Make get_config() return plain numbers, strings, lists and dicts.") from e


def _check_no_lambdas(node, where="model"):
    """Refuses to write a file that could never be loaded: lambdas have no name to find."""
    if isinstance(node, dict):
        if node.get("class_name") == FUNCTION and node.get("config") == "<lambda>":
            raise ValueError(f"Cannot save: {where} is a lambda, which cannot be restored by name. Use a function "
                             "defined with def (decorated with @fastnn.saving.register_keras_serializable()), or "
                             "save the weights alone with model.save_weights.")
        for key, value in node.items():
            _check_no_lambdas(value, f"{where}.{key}" if where else key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_no_lambdas(value, f"{where}[{i}]")


# ---- what a model holds ------------------------------------------------------------------------------
def _layer_variables(layer):
    """A layer's variables in creation order (the same whichever are frozen)."""
    variables = getattr(layer, "_variables", None)
    return list(variables) if variables is not None else list(layer.weights)


def _variable_groups(model):
    """(holder, its variables) for each layer of the model, then the model's own weights (a
    subclassed model's add_weight); a layer shared by several calls is one holder."""
    groups = [(layer, _layer_variables(layer)) for layer in model.layers]
    own = list(getattr(model, "_own_variables", ()))
    if own:
        groups.append((model, own))
    return groups


def _short_name(layer, var):
    prefix = f"{layer.name}/"
    return var.name[len(prefix):] if var.name.startswith(prefix) else var.name


def _base_name(weight_name):
    """'kernel' of 'dense_3/kernel': a sublayer's weights are named after the sublayer, whose
    automatic name depends on how many layers the process made before (Keras matches weights by
    structure, not by such names): the order, the shapes and this last part identify them."""
    return str(weight_name).rsplit("/", 1)[-1]


def _weight_arrays(model):
    """Manifest entries and values of every weight."""
    out = []
    for index, (layer, variables) in enumerate(_variable_groups(model)):
        for var in variables:
            entry = archive.array_entry(f"weights/{len(out)}.npy", var.value, name=var.name, layer=layer.name,
                                 layer_index=index, layer_class=type(layer).__name__,
                                 weight=_short_name(layer, var))
            out.append((entry, var.value))
    return out


def _layer_states(model):
    """State of the layers that is not a weight: the generators of seeded layers (Dropout(seed=...))."""
    from ..utils import rng

    states = []
    for index, layer in enumerate(model.layers):
        generator = getattr(layer, "_generator", None)
        if isinstance(generator, np.random.Generator) and generator is not rng.global_generator():
            states.append({"layer_index": index, "layer": layer.name, "layer_class": type(layer).__name__,
                           "rng_state": generator.bit_generator.state})
    return states


def _model_config(model):
    if not hasattr(model, "get_config"):
        raise ValueError(f"Cannot save model '{model.name}': {type(model).__name__} has no get_config(); "
                         "save its weights with model.save_weights instead")
    return serialize_keras_object(model)


def _compile_config(model):
    from .. import metrics as metrics_module

    if not getattr(model, "compiled", False) or model.optimizer is None or model.loss is None:
        return None

    def metric(m):
        if isinstance(m, metrics_module._AccuracyByShape):
            return m.name  # "accuracy" / "acc": chosen again from the data's shapes
        return serialize_keras_object(m)

    optimizer = serialize_keras_object(model.optimizer)
    schedule = getattr(model.optimizer, "_learning_rate", None)
    if callable(schedule):  # with its registered name, when it is a registered custom schedule
        optimizer["config"]["learning_rate"] = serialize_keras_object(schedule)
    optimizer["excluded_from_weight_decay"] = list(getattr(model.optimizer, "_excluded_names", []))
    outputs = model._compiled.outputs
    if outputs is None or len(outputs) == 1:  # one output: plain lists, as before several outputs existed
        weight = outputs[0].weight if outputs else 1.0
        metrics = model._compiled.all_metrics
        weighted = model._compiled.all_weighted_metrics
        return {"optimizer": optimizer, "loss": serialize_keras_object(model.loss),
                "metrics": [metric(m) for m in metrics], "weighted_metrics": [metric(m) for m in weighted],
                "loss_weights": float(weight)}
    return {"optimizer": optimizer,  # several outputs: everything keyed by output name
            "loss": {o.name: serialize_keras_object(o.loss) for o in outputs},
            "metrics": {o.name: [metric(m) for m in o.metrics] for o in outputs},
            "weighted_metrics": {o.name: [metric(m) for m in o.weighted_metrics] for o in outputs},
            "loss_weights": {o.name: float(o.weight) for o in outputs}}


def _optimizer_arrays(model):
    optimizer = model.optimizer
    if optimizer is None or not getattr(model, "compiled", False) or not optimizer.built:
        return None, []
    state = optimizer.get_state()
    if list(getattr(model, "_packed", [])) != list(model.trainable_weights):
        # Layers were frozen or unfrozen since the optimizer was built: the next fit rebuilds
        # its slots from zero, keeping the iteration count. Save just that.
        return {"class_name": type(optimizer).__name__, "iterations": int(state["iterations"]), "scalars": {},
                "slots": [], "stale": True}, []
    arrays = []
    for i, (slot, value) in enumerate(state["slots"].items()):
        arrays.append((archive.array_entry(f"optimizer/{i}.npy", value, slot=slot), np.asarray(value)))
    info = {"class_name": type(optimizer).__name__, "iterations": int(state["iterations"]),
            "scalars": {k: float(v) for k, v in state.get("scalars", {}).items()},
            "slots": [entry for entry, _ in arrays]}
    return info, arrays


def _header(kind, model):
    header = archive.new_header(kind)
    if kind == "model":
        header["model"] = _model_config(model)
        header["compile_config"] = _compile_config(model)
    else:
        header["model_info"] = {"class_name": type(model).__name__, "name": model.name,
                                "build_input_shape": _build_shape(model)}
    build_config = model._build_config() if hasattr(model, "_build_config") else None
    if build_config is not None:  # a subclassed model: what its call() was traced for
        header["build_config"] = build_config
    return header


def _build_shape(model):
    if not getattr(model, "built", False) or getattr(model, "input_shape", None) is None:
        return None
    shape = model.input_shape
    return [list(s) for s in shape] if isinstance(shape, list) else list(shape)


# ---- loading -----------------------------------------------------------------------------------------
def load_model(filepath, custom_objects=None, compile=True, safe_mode=True):
    """Loads a model saved with ``model.save``.

    Args:
        filepath: str or path-like.
        custom_objects: dict, default None: name -> class or function, for custom layers,
            losses, metrics, activations... that were not registered with
            ``register_keras_serializable``.
        compile: bool, default True: compile the model as it was (optimizer with its
            state and iteration count, loss, metrics, loss weights), ready to resume
            training. False: an uncompiled model.
        safe_mode: bool, default True. Accepted for Keras compatibility: fastnn files
            never carry code, so loading is always safe.

    Returns:
        The model.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a fastnn model file, is truncated or corrupted, holds
            arrays that would need unpickling, or names an unknown custom class or
            function (the message names it and says how to provide it). A file that Keras
            wrote (a ``.keras`` archive, an HDF5 ``.h5``) is refused with a message that
            says so and how to bring the model over: rebuild it with fastnn layers and
            copy the weights with ``set_weights(keras_model.get_weights())``. The file
            is recognised by its content, not its name: a fastnn file named ``.keras``
            loads.
    """
    if custom_objects is not None and not isinstance(custom_objects, dict):
        raise TypeError(f"load_model: 'custom_objects' must be a dict, got {type(custom_objects).__name__}")
    loaded = archive.read_file(filepath)
    path, header = loaded.path, loaded.header
    if header["kind"] != "model":
        raise ValueError(f"{path!r} holds weights only (written by save_weights), not a model: build the model in "
                         "code and call model.load_weights on it")
    if not isinstance(header.get("model"), dict):
        raise archive.corrupt(path, "no model config")
    with CustomObjectScope(custom_objects):
        try:
            model = deserialize_keras_object(header["model"], kind="model")
        except ValueError as e:
            raise _with_path(e, path) from e
        if not hasattr(model, "layers") or not hasattr(model, "compile"):
            raise archive.corrupt(path, f"the model config describes {type(model).__name__}, not a model")
        if loaded.weights:
            _ensure_built(model, header, path)
        pairs = _match_weights(model, loaded)
        _assign(pairs)
        _restore_layer_states(model, loaded, strict=True)
        if compile and header.get("compile_config"):
            try:
                _compile_from_config(model, header["compile_config"], loaded)
            except ValueError as e:
                if repr(path) in str(e):
                    raise
                raise _with_path(e, path) from e
    return model


def _with_path(error, path):
    """The error, its message prefixed with the file (an UnknownObjectError stays one)."""
    cls = UnknownObjectError if isinstance(error, UnknownObjectError) else ValueError
    return cls(f"Cannot load {path!r}: {error}")


def _build_shape_from(header):
    if header.get("kind") == "weights":
        return (header.get("model_info") or {}).get("build_input_shape")
    return ((header.get("model") or {}).get("config") or {}).get("build_input_shape")


def load_weights(model, filepath, skip_mismatch=False):
    """Loads weights saved with ``save_weights`` (or ``save``) into `model`.

    Weights are matched layer by layer (the layers that have weights, in order) and
    checked before any is changed.

    Args:
        model: the Model (an unbuilt one is built for the input shape the file records).
        filepath: str or path-like.
        skip_mismatch: bool, default False: leave layers whose weights do not match as
            they are (with a warning) instead of raising.

    Raises:
        ValueError: the model's architecture differs (the message names the first weight
            that does not match), or the file is not a fastnn file, truncated or corrupted
            (a Keras ``.weights.h5`` or ``.keras`` file: the message says how to copy its
            weights over with ``set_weights``).
    """
    loaded = archive.read_file(filepath)
    _ensure_built(model, loaded.header, loaded.path)
    if hasattr(model, "_ensure_packed"):
        model._ensure_packed()
    pairs = _match_weights(model, loaded, skip_mismatch=skip_mismatch)
    _assign(pairs)
    _restore_layer_states(model, loaded, strict=False)


# ---- putting values back into a model ------------------------------------------------------------------
def _describe(entry):
    return f"'{entry.get('name')}' ({entry.get('layer_class')}, shape {tuple(entry['shape'])})"


def _describe_var(layer, var):
    return f"'{var.name}' ({type(layer).__name__}, shape {tuple(var.shape)})"


def _group(items, key):
    groups = []
    for item in items:
        if groups and key(groups[-1][0]) == key(item):
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups


def _match_weights(model, loaded, skip_mismatch=False):
    """Pairs the model's variables with the file's arrays, layer by layer (layers with weights).

    Returns:
        list of (Variable, array). Raises ValueError naming the first mismatch (or, with
        skip_mismatch, warns and leaves that layer's weights as they are).
    """
    path = loaded.path
    model_layers = [(layer, vs) for layer, vs in _variable_groups(model) if vs]
    file_layers = _group(loaded.weights, key=lambda item: item[0].get("layer_index"))
    pairs = []
    for i in range(max(len(model_layers), len(file_layers))):
        if i >= len(file_layers):
            layer, variables = model_layers[i]
            problem = (f"the model's weight {_describe_var(layer, variables[0])} has no counterpart in the file "
                       f"(the file has weights for {len(file_layers)} layers, the model {len(model_layers)})")
        elif i >= len(model_layers):
            problem = (f"the file's weight {_describe(file_layers[i][0][0])} has no counterpart in the model "
                       f"(the file has weights for {len(file_layers)} layers, the model {len(model_layers)})")
        else:
            layer, variables = model_layers[i]
            problem = _layer_mismatch(layer, variables, file_layers[i])
            if problem is None:
                pairs.extend((var, array) for var, (_, array) in zip(variables, file_layers[i]))
                continue
        message = f"Cannot load the weights of {path!r} into model '{model.name}': {problem}. The model's " \
                  "architecture differs from the saved one."
        if not skip_mismatch:
            raise ValueError(message)
        warnings.warn(message.replace("Cannot load", "Skipping part of") + " (skip_mismatch=True)", stacklevel=3)
    return pairs


def _layer_mismatch(layer, variables, items):
    for j in range(max(len(variables), len(items))):
        if j >= len(items):
            return f"the model's weight {_describe_var(layer, variables[j])} has no counterpart in the file"
        entry, array = items[j]
        if j >= len(variables):
            return f"the file's weight {_describe(entry)} has no counterpart in the model"
        var = variables[j]
        if tuple(var.shape) != tuple(array.shape) or _base_name(entry.get("weight")) != _base_name(
                _short_name(layer, var)):
            return f"the model's weight {_describe_var(layer, var)} does not match the file's {_describe(entry)}"
        if array.dtype.kind not in "fiub":
            return f"the file's weight {_describe(entry)} is not numeric"
        if (var.dtype.kind == "f") != (array.dtype.kind == "f"):  # a quantized layer's int8 weight
            return (f"the model's weight {_describe_var(layer, var)} is {var.dtype.name} but the file's "
                    f"{_describe(entry)} is {array.dtype.name} (a quantized model and a float one differ)")
    return None


def _assign(pairs):
    for var, array in pairs:
        var.value[...] = array  # in place: the variables are views of the model's flat buffer
        if var._on_change is not None:  # a quantized layer packs its int8 kernel again
            var._on_change()


def _restore_layer_states(model, loaded, strict):
    from ..utils import rng

    states = loaded.header.get("layer_states") or []
    layers = model.layers
    for state in states:
        index = state.get("layer_index")
        if not isinstance(index, int) or not 0 <= index < len(layers):
            if strict:
                raise archive.corrupt(loaded.path, f"invalid layer_states entry {state!r:.200}")
            continue
        layer = layers[index]
        generator = getattr(layer, "_generator", None)
        if (type(layer).__name__ != state.get("layer_class") or not isinstance(generator, np.random.Generator)
                or generator is rng.global_generator()):
            continue  # not the layer the state was saved from, or one without a generator of its own
        try:
            generator.bit_generator.state = state["rng_state"]
        except (KeyError, TypeError, ValueError) as e:
            raise archive.corrupt(loaded.path, f"invalid random state for layer '{layer.name}': {e}") from e


def _ensure_built(model, header, path):
    if getattr(model, "built", False):
        return
    build_config = header.get("build_config")
    if isinstance(build_config, dict) and hasattr(model, "_build_from_config"):
        try:
            model._build_from_config(build_config)
        except (KeyError, TypeError) as e:
            raise archive.corrupt(path, f"invalid build_config {build_config!r:.200}: {e}") from e
        return
    shape = _build_shape_from(header)
    if shape is None:
        raise ValueError(f"Cannot load weights from {path!r} into model '{model.name}': the model is not built "
                         "and the file does not record an input shape; build the model first")
    model.build(tuple(shape))


def _compile_from_config(model, config, loaded):
    from .. import losses as losses_module
    from .. import metrics as metrics_module

    opt_config = dict(config["optimizer"])
    excluded = opt_config.pop("excluded_from_weight_decay", [])
    inner = dict(opt_config.get("config") or {})
    if isinstance(inner.get("learning_rate"), dict):
        inner["learning_rate"] = deserialize_keras_object(inner["learning_rate"], kind="learning-rate schedule")
    optimizer = deserialize_keras_object({**opt_config, "config": inner}, kind="optimizer")
    if excluded:
        optimizer.exclude_from_weight_decay(var_names=excluded)
    def loss(entry):
        value = deserialize_keras_object(entry, kind="loss")
        return losses_module.get(value) if is_function(value) else value

    def metric(m):
        if isinstance(m, str):
            return metrics_module.get(m)
        m = deserialize_keras_object(m, kind="metric")
        return metrics_module.get(m)

    def per_output(value, fn):  # a list, or (several outputs) a dict keyed by output name
        if isinstance(value, dict) and "class_name" not in value:
            return {name: fn(v) for name, v in value.items()}
        return fn(value)

    model.compile(optimizer=optimizer, loss=per_output(config["loss"], loss),
                  metrics=per_output(config.get("metrics") or [], lambda ms: [metric(m) for m in ms]),
                  weighted_metrics=per_output(config.get("weighted_metrics") or [], lambda ms: [metric(m) for m in ms]),
                  loss_weights=config.get("loss_weights"))
    state = loaded.header.get("optimizer_state")
    if state is None:
        return
    if not model.built:
        raise archive.corrupt(loaded.path, "the file has optimizer state but its model has no input shape")
    model._ensure_packed()
    iterations, scalars = state.get("iterations", 0), state.get("scalars") or {}
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise archive.corrupt(loaded.path, f"invalid optimizer iteration count {iterations!r}")
    if state.get("stale"):  # saved between a freeze and the next fit: only the count survives
        optimizer.iterations = iterations
        return
    known = set(optimizer._scalar_state())  # set_state sets these as attributes: nothing else
    if not isinstance(scalars, dict) or set(scalars) != known or \
            not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scalars.values()):
        raise archive.corrupt(loaded.path, f"optimizer scalars {scalars!r:.200} do not fit {type(optimizer).__name__} "
                                    f"(expected {sorted(known)})")
    slots = {entry.get("slot"): array for entry, array in loaded.optimizer}
    try:
        optimizer.set_state({"iterations": iterations, "slots": slots, "scalars": scalars})
    except (ValueError, TypeError) as e:
        raise ValueError(f"Cannot restore the optimizer state saved in {loaded.path!r}: {e}") from e
