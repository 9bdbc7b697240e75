"""Saving and loading models (Keras 3's ``model.save`` / ``keras.saving.load_model``).

``model.save(path)`` writes one file holding the architecture, the weights, the compile
settings and the optimizer's state; ``load_model(path)`` rebuilds the model from it so that
training resumes exactly where it stopped. ``model.save_weights(path)`` and
``model.load_weights(path)`` handle the weights alone.

The file (suggested extension ``.fastnn``; any name works) is a zip archive with
uncompressed members:

* ``fastnn.json``: the format name and version, the fastnn version, the kind of file
  ("model" or "weights"), the model's config, its compile config, and a manifest of the
  arrays (member name, weight name, shape, dtype and SHA-256 of each);
* ``weights/<i>.npy``: the weights, layer by layer in creation order;
* ``optimizer/<i>.npy``: the optimizer's state slots (model files of compiled models).

Loading never runs code from the file: there is no pickle anywhere (each ``.npy`` header is
checked and object arrays are refused before ``np.load(..., allow_pickle=False)``), and
configs only name classes and functions, which are looked up among fastnn's own, those
registered with ``register_keras_serializable`` and the given ``custom_objects``.

Writes are atomic: the file is written next to the target under a temporary name, flushed
to disk, then renamed over the target, so a crash mid-write leaves the previous file intact.
"""

import contextlib
import hashlib
import inspect
import io
import json
import os
import secrets
import threading
import warnings
import zipfile

import numpy as np

from ._version import __version__

FORMAT_NAME = "fastnn"
FORMAT_VERSION = 1
_CONFIG_MEMBER = "fastnn.json"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member dates: the same model gives the same bytes
_MAX_CONFIG_BYTES = 256 << 20
_NPY_HEADER_SLACK = 1 << 16
_ALLOWED_KINDS = "fiub"  # float, signed, unsigned, bool arrays; never objects
_FUNCTION = "function"

# ---- the registry of custom objects -------------------------------------------------------------
_GLOBAL_CUSTOM_OBJECTS = {}
_GLOBAL_CUSTOM_NAMES = {}
_SCOPE = threading.local()


def register_keras_serializable(package="Custom", name=None):
    """Registers a class or function so that saved models find it again by name.

    The object is registered as ``"package>name"``; a saved config refers to it by that
    key, so ``load_model`` rebuilds it without ``custom_objects``. Classes must implement
    ``get_config()`` (and, when their config is not just their ``__init__`` arguments,
    ``from_config``); functions need nothing.

    Args:
        package: str, default "Custom": a namespace against name collisions.
        name: str, default None: the name to register under (default: the object's
            ``__name__``).

    Returns:
        A decorator that registers its argument and returns it unchanged.

    Example:
        >>> @fastnn.saving.register_keras_serializable(package="MyProject")
        ... def scaled_mse(y_true, y_pred):
        ...     return 2.0 * fastnn.ops.mean(fastnn.ops.square(y_pred - y_true), axis=-1)
    """
    if not isinstance(package, str) or not package:
        raise TypeError(f"register_keras_serializable: 'package' must be a non-empty string, got {package!r}")
    if name is not None and (not isinstance(name, str) or not name):
        raise TypeError(f"register_keras_serializable: 'name' must be a non-empty string or None, got {name!r}")

    def decorator(arg):
        object_name = name if name is not None else getattr(arg, "__name__", None)
        if not object_name:
            raise TypeError(f"register_keras_serializable: cannot register {arg!r}: it has no __name__; "
                            "pass name=")
        if inspect.isclass(arg) and not hasattr(arg, "get_config"):
            raise ValueError(f"register_keras_serializable: class {arg.__name__} has no get_config() method, "
                             "so it cannot be saved")
        if object_name == "<lambda>":
            raise ValueError("register_keras_serializable: a lambda has no name to find it by; define the "
                             "function with def, or pass name=")
        registered_name = f"{package}>{object_name}"
        _GLOBAL_CUSTOM_OBJECTS[registered_name] = arg
        _GLOBAL_CUSTOM_NAMES[arg] = registered_name
        return arg

    return decorator


def get_registered_name(obj):
    """Returns the name `obj` is registered under ("package>name"), else its ``__name__``.

    Args:
        obj: a class or function.
    """
    if obj in _GLOBAL_CUSTOM_NAMES:
        return _GLOBAL_CUSTOM_NAMES[obj]
    return obj.__name__


def get_registered_object(name, custom_objects=None, module_objects=None):
    """Returns the class or function known as `name`, or None.

    Looks in the active ``custom_object_scope``, the registry, then `custom_objects`, then
    `module_objects`.

    Args:
        name: str, e.g. "MyPackage>MyLayer".
        custom_objects: dict name -> object, default None.
        module_objects: dict name -> object, default None.
    """
    for table in (_scope_objects(), _GLOBAL_CUSTOM_OBJECTS, custom_objects or {}, module_objects or {}):
        if name in table:
            return table[name]
    return None


def get_custom_objects():
    """The live global registry: a dict ``{"package>name": object}``."""
    return _GLOBAL_CUSTOM_OBJECTS


class CustomObjectScope:
    """Makes custom classes and functions known to deserialization within a ``with`` block.

    Args:
        *args: dicts ``{name: object}`` (name: the class or function name, or its
            registered "package>name").

    Example:
        >>> with fastnn.saving.custom_object_scope({"MyLayer": MyLayer}):
        ...     model = fastnn.models.load_model("model.fastnn")
    """

    def __init__(self, *args):
        self.custom_objects = {}
        for objects in args:
            if objects is None:
                continue
            if not isinstance(objects, dict):
                raise TypeError(f"custom_object_scope: expected dicts of name -> object, got {type(objects).__name__}")
            self.custom_objects.update(objects)
        self._backup = None

    def __enter__(self):
        self._backup = _scope_objects()
        _SCOPE.objects = {**self._backup, **self.custom_objects}
        return self

    def __exit__(self, *exc):
        _SCOPE.objects = self._backup


custom_object_scope = CustomObjectScope


def _scope_objects():
    return getattr(_SCOPE, "objects", None) or {}


# ---- serialization of objects ----------------------------------------------------------------------
def serialize_keras_object(obj):
    """A JSON-ready description of a layer, loss, metric, optimizer... or function.

    Objects give ``{"module", "class_name", "config", "registered_name"}`` (config from
    ``get_config()``, with custom functions and registered objects inside it described
    the same way); functions give ``{"module", "class_name": "function", "config": name,
    "registered_name"}``. Plain numbers, strings, lists and dicts pass through.

    Args:
        obj: an object with ``get_config()``, a function, or a plain value.

    Raises:
        ValueError: an object without ``get_config()``.
    """
    if obj is None or isinstance(obj, (bool, int, float, str, np.generic, np.ndarray)):
        return obj
    if isinstance(obj, (list, tuple)):
        return [serialize_keras_object(o) for o in obj]
    if isinstance(obj, dict):
        return {k: serialize_keras_object(v) for k, v in obj.items()}
    if _is_function(obj):
        return {"module": getattr(obj, "__module__", None), "class_name": _FUNCTION,
                "config": getattr(obj, "__name__", repr(obj)), "registered_name": _GLOBAL_CUSTOM_NAMES.get(obj)}
    if not hasattr(obj, "get_config"):
        raise ValueError(f"Cannot save {obj!r}: {type(obj).__name__} has no get_config() method")
    cls = type(obj)
    config = _encode_config(obj, obj.get_config())
    return {"module": cls.__module__, "class_name": cls.__name__, "config": config,
            "registered_name": _GLOBAL_CUSTOM_NAMES.get(cls)}


def _is_function(obj):
    return inspect.isfunction(obj) or inspect.isbuiltin(obj) or inspect.ismethod(obj)


def _encode_config(obj, config):
    """get_config()'s output with custom functions and registered objects made findable.

    A config names a custom activation or loss function by its bare name; this replaces it
    with a function reference (module, registered name), read from the object's attribute
    of the same name (or with a leading underscore).
    """
    from .activations import ActivationSpec

    if not isinstance(config, dict):
        raise ValueError(f"Cannot save {type(obj).__name__}: get_config() must return a dict, got "
                         f"{type(config).__name__}")
    out = dict(config)
    for key, value in config.items():
        attr = _attribute(obj, key)
        if isinstance(attr, ActivationSpec):
            attr = attr.fn  # None for the built-in activations, which stay names
        if attr is None or attr is value:
            continue
        if _is_function(attr) and isinstance(value, str):
            out[key] = serialize_keras_object(attr)
        elif type(attr) in _GLOBAL_CUSTOM_NAMES and not isinstance(value, (bool, int, float, str)):
            out[key] = serialize_keras_object(attr)
    return out


def _attribute(obj, key):
    for name in (key, "_" + key):
        try:
            value = getattr(obj, name)
        except Exception:  # a property that fails is simply not used
            continue
        if value is not None:
            return value
    return None


def deserialize_keras_object(config, custom_objects=None, kind="object"):
    """Rebuilds what ``serialize_keras_object`` described.

    Classes and functions are looked up in `custom_objects` (and any active
    ``custom_object_scope``), the registry, then fastnn's own; nothing else is imported or
    run.

    Args:
        config: the description (a dict, or a plain value returned as is).
        custom_objects: dict name -> class or function, default None.
        kind: what is being rebuilt ("layer", "loss"...), for error messages.

    Raises:
        ValueError: an unknown class or function (the message says how to provide it),
            or a config its class cannot be rebuilt from.
    """
    with CustomObjectScope(custom_objects):
        return _deserialize(config, kind)


class UnknownObjectError(ValueError):
    """A saved config names a class or function this process does not know."""


def _deserialize(config, kind):
    if not isinstance(config, dict) or "class_name" not in config:
        return config
    class_name = config["class_name"]
    if not isinstance(class_name, str):
        raise ValueError(f"Invalid {kind} description: 'class_name' must be a string, got {class_name!r}")
    if class_name == _FUNCTION:
        return _resolve_function(config, kind)
    cls = _resolve_class(config, kind)
    inner = config.get("config", {})
    if not isinstance(inner, dict):
        raise ValueError(f"Invalid config for {kind} {class_name!r}: expected a dict, got {type(inner).__name__}")
    inner = _decode_config(inner)
    try:
        return cls.from_config(inner)
    except UnknownObjectError:
        raise
    except Exception as e:
        raise ValueError(f"Cannot rebuild {kind} {class_name!r} from its config {inner}: "
                         f"{type(e).__name__}: {e}. A custom class needs get_config() to return the arguments "
                         "of its __init__ (or a matching from_config classmethod).") from e


def _decode_config(config):
    """Function references and registered objects inside a config, turned back into objects."""
    from . import activations

    out = dict(config)
    for key, value in config.items():
        if isinstance(value, dict) and "class_name" in value:
            if value["class_name"] == _FUNCTION:
                out[key] = _resolve_function(value, key)
            elif _custom_class(value) is not None:
                out[key] = _deserialize(value, key)
            elif value["class_name"] in _builtin_classes("layer"):  # a wrapper's inner layer
                out[key] = _deserialize(value, "layer")
            elif not _is_builtin_nested(value["class_name"]):
                raise _unknown(key, value["class_name"], value.get("module"))
        elif key == "activation" and isinstance(value, str) and value.lower() not in activations._BY_NAME:
            # a custom activation named by a get_config() made outside saving: found if known,
            # else left for the layer to report
            with contextlib.suppress(UnknownObjectError):
                out[key] = _resolve_function({"class_name": _FUNCTION, "config": value}, "activation")
    return out


def _custom_class(config):
    """The class a description names among the custom objects in scope or the registry, or None."""
    registered, class_name = config.get("registered_name"), config.get("class_name")
    scope = _scope_objects()
    for name in (registered, class_name):
        if isinstance(name, str) and name in scope:
            return scope[name]
    if isinstance(registered, str) and registered in _GLOBAL_CUSTOM_OBJECTS:
        return _GLOBAL_CUSTOM_OBJECTS[registered]
    return None


def _builtin_classes(kind):
    from . import initializers, layers, losses, metrics, models, optimizers, regularizers
    from .optimizers import schedules

    modules = {"layer": [(layers, layers.Layer)], "model": [(models, models.Model)],
               "loss": [(losses, losses.Loss)], "metric": [(metrics, metrics.Metric)],
               "optimizer": [(optimizers, optimizers.Optimizer)],
               "learning-rate schedule": [(schedules, schedules.LearningRateSchedule)]}
    nested = [(initializers, initializers.Initializer), (regularizers, regularizers.Regularizer),
              (schedules, schedules.LearningRateSchedule)]
    found = {}
    for module, base in modules.get(kind, nested):
        for name, value in vars(module).items():
            if isinstance(value, type) and issubclass(value, base):
                found.setdefault(name, value)
    if kind == "layer":
        found.update(getattr(layers, "_CLASSES", {}))
    return found


def _is_builtin_nested(class_name):
    return class_name in _builtin_classes("nested")


def _resolve_class(config, kind):
    class_name = config["class_name"]
    custom = _custom_class(config)
    if custom is not None:
        return custom
    builtin = _builtin_classes(kind)
    if not config.get("registered_name") and class_name in builtin:
        return builtin[class_name]
    short = [obj for key, obj in _GLOBAL_CUSTOM_OBJECTS.items() if key.split(">", 1)[-1] == class_name
             and inspect.isclass(obj)]
    if not config.get("registered_name") and len(short) == 1:
        return short[0]
    raise _unknown(kind, config.get("registered_name") or class_name, config.get("module"), class_name)


def _resolve_function(config, kind):
    from . import activations, losses, metrics

    name = config.get("config")
    registered = config.get("registered_name")
    module = config.get("module")
    if not isinstance(name, str):
        raise ValueError(f"Invalid function reference for {kind}: {config!r}")
    if name == "<lambda>":
        raise ValueError(f"The saved {kind} is a lambda, which cannot be restored without running code")
    scope = _scope_objects()
    for key in (registered, name):
        if key and key in scope:
            return scope[key]
    if registered and registered in _GLOBAL_CUSTOM_OBJECTS:
        return _GLOBAL_CUSTOM_OBJECTS[registered]
    own = {"fastnn.activations": activations, "fastnn.losses": losses, "fastnn.metrics": metrics}
    if module in own or (module is None and not registered):
        for mod in ([own[module]] if module in own else own.values()):
            candidate = vars(mod).get(name)
            if candidate is not None and _is_function(candidate) and not name.startswith("_"):
                return candidate
    short = [obj for key, obj in _GLOBAL_CUSTOM_OBJECTS.items() if key.split(">", 1)[-1] == name
             and not inspect.isclass(obj)]
    if not registered and len(short) == 1:
        return short[0]
    raise _unknown(f"function ({kind})", registered or name, module, name)


def _unknown(kind, name, module=None, short=None):
    short = short or str(name).split(">", 1)[-1]
    where = f" (defined in module {module!r})" if module else ""
    return UnknownObjectError(
        f"Unknown {kind} {name!r}{where}. Either decorate its definition with "
        f"@fastnn.saving.register_keras_serializable() (and import that module before loading), or pass "
        f"custom_objects={{{short!r}: {short}}} to load_model.")


# ---- the archive: writing ----------------------------------------------------------------------------
def _atomic_write(path, write):
    """Calls write(file) on a temporary file next to `path`, then renames it over `path`.

    The data is flushed and fsynced before the rename and the folder is fsynced after it,
    so after a crash `path` holds either the old file or the complete new one; on any
    error the temporary file is removed and the old file is untouched.
    """
    folder = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = os.path.join(folder, f".{base[:100]}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)  # the umask applies, as for an ordinary file
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)


def _fsync_folder(folder):
    if not hasattr(os, "O_DIRECTORY"):
        return  # e.g. Windows: folders cannot be opened, and the rename is already durable
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _HashingWriter:
    """A write-only file that hashes what passes through it."""

    def __init__(self, out):
        self._out = out
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data):
        data = memoryview(data).cast("B")
        self.sha256.update(data)
        self.size += len(data)
        return self._out.write(data)


def _zipinfo(member):
    info = zipfile.ZipInfo(member, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    return info


def _write_array(archive, member, array):
    """Writes one array as a .npy member; returns its SHA-256 (hex)."""
    with archive.open(_zipinfo(member), "w", force_zip64=array.nbytes > (1 << 30)) as out:
        writer = _HashingWriter(out)
        np.lib.format.write_array(writer, np.ascontiguousarray(array), allow_pickle=False)
    return writer.sha256.hexdigest()


def _write_archive(f, header, arrays):
    """Writes the zip: every array, then fastnn.json with their checksums in the manifest."""
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for entry, array in arrays:
            entry["sha256"] = _write_array(archive, entry["file"], array)
        archive.writestr(_zipinfo(_CONFIG_MEMBER), _dump_json(header))


def _dump_json(header):
    return json.dumps(header, default=_json_default, indent=1, allow_nan=True).encode("utf-8")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.dtype.kind in _ALLOWED_KINDS:
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"a value of type {type(value).__name__} ({value!r:.80}) cannot be written to JSON")


def _array_entry(member, array, **extra):
    array = np.asarray(array)
    return {"file": member, **extra, "shape": list(array.shape), "dtype": array.dtype.str}


def _check_no_lambdas(node, where="model"):
    """Refuses to write a file that could never be loaded: lambdas have no name to find."""
    if isinstance(node, dict):
        if node.get("class_name") == _FUNCTION and node.get("config") == "<lambda>":
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


def _short_name(layer, var):
    prefix = f"{layer.name}/"
    return var.name[len(prefix):] if var.name.startswith(prefix) else var.name


def _weight_arrays(model):
    """Manifest entries and values of every weight."""
    out = []
    for index, layer in enumerate(model.layers):
        for var in _layer_variables(layer):
            entry = _array_entry(f"weights/{len(out)}.npy", var.value, name=var.name, layer=layer.name,
                                 layer_index=index, layer_class=type(layer).__name__,
                                 weight=_short_name(layer, var))
            out.append((entry, var.value))
    return out


def _layer_states(model):
    """State of the layers that is not a weight: the generators of seeded layers (Dropout(seed=...))."""
    from .utils import rng

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
    from . import metrics as metrics_module

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
    return {"optimizer": optimizer,
            "loss": serialize_keras_object(model.loss),
            "metrics": [metric(m) for m in model.compiled_metrics],
            "weighted_metrics": [metric(m) for m in getattr(model, "weighted_metrics", [])],
            "loss_weights": float(getattr(model, "_loss_weight", 1.0))}


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
        arrays.append((_array_entry(f"optimizer/{i}.npy", value, slot=slot), np.asarray(value)))
    info = {"class_name": type(optimizer).__name__, "iterations": int(state["iterations"]),
            "scalars": {k: float(v) for k, v in state.get("scalars", {}).items()},
            "slots": [entry for entry, _ in arrays]}
    return info, arrays


def _header(kind, model):
    header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "kind": kind, "fastnn_version": __version__}
    if kind == "model":
        header["model"] = _model_config(model)
        header["compile_config"] = _compile_config(model)
    else:
        header["model_info"] = {"class_name": type(model).__name__, "name": model.name,
                                "build_input_shape": _build_shape(model)}
    return header


def _build_shape(model):
    return list(model.input_shape) if getattr(model, "built", False) and getattr(model, "input_shape", None) else None


def _check_target(filepath, overwrite):
    path = os.fspath(filepath)
    if not isinstance(path, str):
        path = os.fsdecode(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"Cannot save to {path!r}: it is a folder; give a file name such as "
                                f"'{os.path.join(path, 'model.fastnn')}'")
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"Cannot save to {path!r}: the file exists and overwrite=False")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Cannot save to {path!r}: the folder {folder!r} does not exist")
    return path


def save_model(model, filepath, overwrite=True):
    """Saves a model to one file: architecture, weights, compile settings, optimizer state.

    ``load_model(filepath)`` gives back a model that predicts the same and, compiled with
    the same optimizer state (iterations included), continues training exactly as the
    original would have.

    Args:
        model: the Model to save.
        filepath: str or path-like; ".fastnn" is suggested (".keras" is accepted too).
        overwrite: bool, default True: replace an existing file (False: FileExistsError).

    Raises:
        ValueError: something in the model cannot be saved (e.g. a lambda as loss or
            activation, a custom class without get_config).
    """
    path = _check_target(filepath, overwrite)
    header = _header("model", model)
    weights = _weight_arrays(model) if getattr(model, "built", False) else []
    optimizer_info, optimizer_arrays = _optimizer_arrays(model)
    header["weights"] = [entry for entry, _ in weights]
    header["optimizer_state"] = optimizer_info
    header["layer_states"] = _layer_states(model)
    _check_no_lambdas(header["model"], "model")
    _check_no_lambdas(header["compile_config"], "compile_config")
    _validate_json(header, path)
    _atomic_write(path, lambda f: _write_archive(f, header, weights + optimizer_arrays))


def save_weights(model, filepath, overwrite=True):
    """Saves a model's weights alone (no architecture, no optimizer) to one file.

    Args:
        model: the Model.
        filepath: str or path-like (".weights.fastnn" is suggested; any name works).
        overwrite: bool, default True.
    """
    path = _check_target(filepath, overwrite)
    if not getattr(model, "built", False):
        raise ValueError(f"Cannot save the weights of model '{model.name}' to {path!r}: it is not built yet "
                         "(build it, or fit or call it on data first)")
    header = _header("weights", model)
    weights = _weight_arrays(model)
    header["weights"] = [entry for entry, _ in weights]
    header["layer_states"] = _layer_states(model)
    _validate_json(header, path)
    _atomic_write(path, lambda f: _write_archive(f, header, weights))


def _validate_json(header, path):
    try:
        _dump_json(header)
    except (TypeError, ValueError) as e:
        raise ValueError(f"Cannot save to {path!r}: the model's config is not JSON-serializable: {e}. "
                         "Make get_config() return plain numbers, strings, lists and dicts.") from e


# ---- the archive: reading -------------------------------------------------------------------------------
class _Loaded:
    """A checked archive: its header and arrays (every checksum, dtype and shape verified)."""

    def __init__(self, path, header, weights, optimizer):
        self.path, self.header, self.weights, self.optimizer = path, header, weights, optimizer


class InvalidFileError(ValueError):
    """The file cannot be read: not a fastnn file, truncated, corrupted, tampered with, or newer."""


def _corrupt(path, detail):
    return InvalidFileError(f"{path!r} is truncated or corrupted ({detail}); it cannot be loaded. "
                      "Use another copy of the file.")


def _read_archive(filepath):
    path = os.fspath(filepath)
    if not isinstance(path, str):
        path = os.fsdecode(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such file: {path!r}")
    if os.path.isdir(path):
        raise InvalidFileError(f"{path!r} is a folder, not a fastnn file (a TensorFlow SavedModel?); fastnn "
                               "files are single files written by model.save")
    with open(path, "rb") as f:
        magic = f.read(8)
    if magic[:4] != b"PK\x03\x04":
        if not magic:
            raise InvalidFileError(f"{path!r} is empty: not a fastnn file (an interrupted copy?)")
        what = " (it is an HDF5 file, e.g. Keras 2's .h5)" if magic.startswith(b"\x89HDF") else ""
        raise InvalidFileError(f"{path!r} is not a fastnn file{what}: fastnn files are zip archives written "
                               "by model.save or model.save_weights")
    try:
        with zipfile.ZipFile(path) as archive:
            header = _read_header(archive, path)
            weights = [(entry, _read_array(archive, entry, path)) for entry in header["weights"]]
            state = header.get("optimizer_state")
            optimizer = [(entry, _read_array(archive, entry, path)) for entry in state["slots"]] if state else []
    except InvalidFileError:
        raise
    except zipfile.BadZipFile as e:
        raise _corrupt(path, f"zip: {e}") from e
    except Exception as e:  # a damaged archive can fail in many ways inside zipfile
        raise _corrupt(path, f"{type(e).__name__}: {e}") from e
    return _Loaded(path, header, weights, optimizer)


def _read_header(archive, path):
    names = archive.namelist()
    if _CONFIG_MEMBER not in names:
        if "config.json" in names and "metadata.json" in names:
            raise InvalidFileError(f"{path!r} is a Keras .keras archive, not a fastnn file: fastnn cannot read "
                                   "Keras weights; rebuild the model in fastnn and save it with model.save")
        raise InvalidFileError(f"{path!r} is not a fastnn file: the zip archive has no {_CONFIG_MEMBER!r} member")
    info = archive.getinfo(_CONFIG_MEMBER)
    if info.file_size > _MAX_CONFIG_BYTES:
        raise _corrupt(path, f"{_CONFIG_MEMBER} claims {info.file_size} bytes")
    raw = archive.read(_CONFIG_MEMBER)  # checks the CRC
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _corrupt(path, f"{_CONFIG_MEMBER} is not valid JSON: {e}") from e
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise InvalidFileError(f"{path!r} is not a fastnn file: {_CONFIG_MEMBER} does not declare format "
                               f"{FORMAT_NAME!r}")
    version = header.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _corrupt(path, f"invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise InvalidFileError(f"{path!r} was written by fastnn {header.get('fastnn_version', '?')} in file "
                               f"format version {version}; this fastnn ({__version__}) reads versions up to "
                               f"{FORMAT_VERSION}. Upgrade fastnn to load it.")
    if header.get("kind") not in ("model", "weights"):
        raise _corrupt(path, f"unknown file kind {header.get('kind')!r}")
    if not isinstance(header.get("weights"), list):
        raise _corrupt(path, "no weights manifest")
    state = header.get("optimizer_state")
    if state is not None and (not isinstance(state, dict) or not isinstance(state.get("slots"), list)):
        raise _corrupt(path, "invalid optimizer_state")
    layer_states = header.get("layer_states")
    if layer_states is not None and not (isinstance(layer_states, list)
                                         and all(isinstance(s, dict) for s in layer_states)):
        raise _corrupt(path, "invalid layer_states")
    for entry in header["weights"] + (state["slots"] if state else []):
        if not (isinstance(entry, dict) and isinstance(entry.get("file"), str) and isinstance(entry.get("shape"), list)
                and isinstance(entry.get("dtype"), str) and isinstance(entry.get("sha256"), str)):
            raise _corrupt(path, f"invalid manifest entry {entry!r:.200}")
    return header


def _read_npy_header(buffer, member, path):
    """(shape, dtype) from a .npy header, refusing anything that could hold pickled objects."""
    try:
        version = np.lib.format.read_magic(buffer)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(buffer)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(buffer)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except ValueError as e:
        raise _corrupt(path, f"member {member!r} is not a valid .npy array: {e}") from e
    if dtype.hasobject or dtype.kind not in _ALLOWED_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise InvalidFileError(f"{path!r}: member {member!r} holds an array of dtype {dtype!r} (Python objects "
                               "or records). Loading it would mean unpickling, which can run arbitrary code, so it "
                               "is refused: fastnn files only hold plain numeric arrays. Was this file tampered "
                               "with?")
    return tuple(shape), dtype, fortran_order


def _read_array(archive, entry, path):
    member = entry["file"]
    try:
        info = archive.getinfo(member)
    except KeyError:
        raise _corrupt(path, f"the member {member!r} listed in the manifest is missing") from None
    try:
        expected_dtype = np.dtype(entry["dtype"])
        expected_shape = tuple(int(d) for d in entry["shape"])
    except (TypeError, ValueError) as e:
        raise _corrupt(path, f"invalid dtype or shape for {member!r}: {e}") from e
    if expected_dtype.hasobject or expected_dtype.kind not in _ALLOWED_KINDS:
        raise InvalidFileError(f"{path!r}: the manifest declares member {member!r} as dtype {expected_dtype!r}; "
                               "only plain numeric arrays are allowed (object arrays would need unpickling)")
    limit = int(np.prod(expected_shape, dtype=np.int64)) * expected_dtype.itemsize + _NPY_HEADER_SLACK
    if info.file_size > limit:
        raise _corrupt(path, f"member {member!r} has {info.file_size} bytes, more than its manifest allows")
    data = archive.read(member)  # checks the CRC
    buffer = io.BytesIO(data)
    shape, dtype, fortran = _read_npy_header(buffer, member, path)
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise _corrupt(path, f"checksum mismatch in member {member!r}")
    if shape != expected_shape or dtype != expected_dtype:
        raise _corrupt(path, f"member {member!r} holds {dtype} {shape}, the manifest says {expected_dtype} "
                             f"{expected_shape}")
    buffer.seek(0)
    array = np.load(buffer, allow_pickle=False)
    if buffer.read(1):
        raise _corrupt(path, f"member {member!r} has trailing bytes")
    return np.ascontiguousarray(array.astype(array.dtype.newbyteorder("="), copy=False))


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
    model_layers = [(layer, _layer_variables(layer)) for layer in model.layers]
    model_layers = [(layer, vs) for layer, vs in model_layers if vs]
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
        if tuple(var.shape) != tuple(array.shape) or entry.get("weight") != _short_name(layer, var):
            return f"the model's weight {_describe_var(layer, var)} does not match the file's {_describe(entry)}"
        if array.dtype.kind not in "fiub":
            return f"the file's weight {_describe(entry)} is not numeric"
    return None


def _assign(pairs):
    for var, array in pairs:
        var.value[...] = array  # in place: the variables are views of the model's flat buffer


def _restore_layer_states(model, loaded, strict):
    from .utils import rng

    states = loaded.header.get("layer_states") or []
    layers = model.layers
    for state in states:
        index = state.get("layer_index")
        if not isinstance(index, int) or not 0 <= index < len(layers):
            if strict:
                raise _corrupt(loaded.path, f"invalid layer_states entry {state!r:.200}")
            continue
        layer = layers[index]
        generator = getattr(layer, "_generator", None)
        if (type(layer).__name__ != state.get("layer_class") or not isinstance(generator, np.random.Generator)
                or generator is rng.global_generator()):
            continue  # not the layer the state was saved from, or one without a generator of its own
        try:
            generator.bit_generator.state = state["rng_state"]
        except (KeyError, TypeError, ValueError) as e:
            raise _corrupt(loaded.path, f"invalid random state for layer '{layer.name}': {e}") from e


def _ensure_built(model, shape, path):
    if getattr(model, "built", False):
        return
    if shape is None:
        raise ValueError(f"Cannot load weights from {path!r} into model '{model.name}': the model is not built "
                         "and the file does not record an input shape; build the model first")
    model.build(tuple(shape))


def _compile_from_config(model, config, loaded):
    from . import losses as losses_module
    from . import metrics as metrics_module

    opt_config = dict(config["optimizer"])
    excluded = opt_config.pop("excluded_from_weight_decay", [])
    inner = dict(opt_config.get("config") or {})
    if isinstance(inner.get("learning_rate"), dict):
        inner["learning_rate"] = _deserialize(inner["learning_rate"], "learning-rate schedule")
    optimizer = _deserialize({**opt_config, "config": inner}, "optimizer")
    if excluded:
        optimizer.exclude_from_weight_decay(var_names=excluded)
    loss = _deserialize(config["loss"], "loss")
    if _is_function(loss):
        loss = losses_module.get(loss)

    def metric(m):
        if isinstance(m, str):
            return metrics_module.get(m)
        m = _deserialize(m, "metric")
        return metrics_module.get(m)

    model.compile(optimizer=optimizer, loss=loss, metrics=[metric(m) for m in config.get("metrics") or []],
                  weighted_metrics=[metric(m) for m in config.get("weighted_metrics") or []],
                  loss_weights=config.get("loss_weights"))
    state = loaded.header.get("optimizer_state")
    if state is None:
        return
    if not model.built:
        raise _corrupt(loaded.path, "the file has optimizer state but its model has no input shape")
    model._ensure_packed()
    iterations, scalars = state.get("iterations", 0), state.get("scalars") or {}
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise _corrupt(loaded.path, f"invalid optimizer iteration count {iterations!r}")
    if state.get("stale"):  # saved between a freeze and the next fit: only the count survives
        optimizer.iterations = iterations
        return
    known = set(optimizer._scalar_state())  # set_state sets these as attributes: nothing else
    if not isinstance(scalars, dict) or set(scalars) != known or \
            not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scalars.values()):
        raise _corrupt(loaded.path, f"optimizer scalars {scalars!r:.200} do not fit {type(optimizer).__name__} "
                                    f"(expected {sorted(known)})")
    slots = {entry.get("slot"): array for entry, array in loaded.optimizer}
    try:
        optimizer.set_state({"iterations": iterations, "slots": slots, "scalars": scalars})
    except (ValueError, TypeError) as e:
        raise ValueError(f"Cannot restore the optimizer state saved in {loaded.path!r}: {e}") from e


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
            function (the message names it and says how to provide it).
    """
    if custom_objects is not None and not isinstance(custom_objects, dict):
        raise TypeError(f"load_model: 'custom_objects' must be a dict, got {type(custom_objects).__name__}")
    loaded = _read_archive(filepath)
    path, header = loaded.path, loaded.header
    if header["kind"] != "model":
        raise ValueError(f"{path!r} holds weights only (written by save_weights), not a model: build the model in "
                         "code and call model.load_weights on it")
    if not isinstance(header.get("model"), dict):
        raise _corrupt(path, "no model config")
    with CustomObjectScope(custom_objects):
        try:
            model = _deserialize(header["model"], "model")
        except ValueError as e:
            raise _with_path(e, path) from e
        if not hasattr(model, "layers") or not hasattr(model, "compile"):
            raise _corrupt(path, f"the model config describes {type(model).__name__}, not a model")
        if loaded.weights:
            _ensure_built(model, _build_shape_from(header), path)
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
            that does not match), or the file is not a fastnn file, truncated or corrupted.
    """
    loaded = _read_archive(filepath)
    _ensure_built(model, _build_shape_from(loaded.header), loaded.path)
    if hasattr(model, "_ensure_packed"):
        model._ensure_packed()
    pairs = _match_weights(model, loaded, skip_mismatch=skip_mismatch)
    _assign(pairs)
    _restore_layer_states(model, loaded, strict=False)


__all__ = ["register_keras_serializable", "get_registered_name", "get_registered_object", "get_custom_objects",
           "CustomObjectScope", "custom_object_scope", "serialize_keras_object", "deserialize_keras_object",
           "save_model", "load_model", "save_weights", "load_weights", "UnknownObjectError", "InvalidFileError"]
