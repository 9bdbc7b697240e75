"""Objects to and from JSON-ready descriptions (Keras 3's ``serialize_keras_object``).

An object is described as ``{"module", "class_name", "config", "registered_name"}`` (its
``get_config()``, with the custom functions and registered objects inside it described the
same way); a function as ``{"module", "class_name": "function", "config": its name,
"registered_name"}``.

Descriptions only name classes and functions. Rebuilding one looks the name up, in this
order, among the objects of an active ``custom_object_scope`` (and the ``custom_objects``
given), those registered with ``register_keras_serializable``, and fastnn's own (see
registration.py); nothing is imported and no code from a file is run.
"""

import contextlib
import inspect

import numpy as np

from . import registration
from .registration import CustomObjectScope

FUNCTION = "function"  # the class_name of a function reference
_NESTED_KINDS = ("initializer", "regularizer", "learning-rate schedule", "constraint")  # what layer configs hold
# Config keys whose objects are of one kind, whatever their class name (fastnn.pruning's PolynomialDecay
# is not the learning-rate PolynomialDecay).
_KEY_KINDS = {"pruning_schedule": "pruning schedule"}


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
    if is_function(obj):
        return {"module": getattr(obj, "__module__", None), "class_name": FUNCTION,
                "config": getattr(obj, "__name__", repr(obj)), "registered_name": registration.registered_name(obj)}
    if not hasattr(obj, "get_config"):
        raise ValueError(f"Cannot save {obj!r}: {type(obj).__name__} has no get_config() method")
    cls = type(obj)
    config = _encode_config(obj, obj.get_config())
    return {"module": cls.__module__, "class_name": cls.__name__, "config": config,
            "registered_name": registration.registered_name(cls)}


def is_function(obj):
    """Whether `obj` is saved as a function reference (a function, builtin or bound method)."""
    return inspect.isfunction(obj) or inspect.isbuiltin(obj) or inspect.ismethod(obj)


def _encode_config(obj, config):
    """get_config()'s output with custom functions and registered objects made findable.

    A config names a custom activation or loss function by its bare name; this replaces it
    with a function reference (module, registered name), read from the object's attribute
    of the same name (or with a leading underscore).
    """
    from ..activations import ActivationSpec

    if not isinstance(config, dict):
        raise ValueError(f"Cannot save {type(obj).__name__}: get_config() must return a dict, got "
                         f"{type(config).__name__}")
    out = dict(config)
    for key, value in config.items():
        attr = _attribute(obj, key)
        if isinstance(attr, ActivationSpec):
            attr = attr.fn if attr.name is None else None  # built-in activations stay names
        if attr is None or attr is value:
            continue
        if is_function(attr) and isinstance(value, str):
            out[key] = serialize_keras_object(attr)
        elif registration.registered_name(type(attr)) is not None and not isinstance(value, (bool, int, float, str)):
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
        kind: what is being rebuilt, for error messages and for the fastnn classes its
            name may give: one of ``registration.KINDS`` ("layer", "loss"...); any other
            value stands for what layer configs nest (initializers, regularizers,
            schedules).

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
    if class_name == FUNCTION:
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
    from .. import activations

    out = dict(config)
    for key, value in config.items():
        if isinstance(value, dict) and "class_name" in value:
            if value["class_name"] == FUNCTION:
                out[key] = _resolve_function(value, key)
            elif key in _KEY_KINDS:
                out[key] = _deserialize(value, _KEY_KINDS[key])
            elif _custom_class(value) is not None:
                out[key] = _deserialize(value, key)
            elif registration.builtin_class("layer", value["class_name"]) is not None:  # a wrapper's inner layer
                out[key] = _deserialize(value, "layer")
            elif not _is_builtin_nested(value["class_name"]):
                raise _unknown(key, value["class_name"], value.get("module"))
        elif key == "activation" and isinstance(value, str) and value.lower() not in activations._BY_NAME:
            # a custom activation named by a get_config() made outside saving: found if known,
            # else left for the layer to report
            with contextlib.suppress(UnknownObjectError):
                out[key] = _resolve_function({"class_name": FUNCTION, "config": value}, "activation")
    return out


def _custom_class(config):
    """The class a description names among the custom objects in scope or the registry, or None."""
    registered, class_name = config.get("registered_name"), config.get("class_name")
    scope = registration.scope_objects()
    for name in (registered, class_name):
        if isinstance(name, str) and name in scope:
            return scope[name]
    registry = registration.get_custom_objects()
    if isinstance(registered, str) and registered in registry:
        return registry[registered]
    return None


def _builtin_classes(kind):
    """fastnn's own classes a description of `kind` may name: {name: class}.

    A kind that is not one of the registry's (a layer argument such as "kernel_initializer")
    stands for what layer configs nest: initializers, regularizers and schedules.
    """
    if kind in registration.KINDS:
        return registration.builtin_classes(kind)
    found = {}
    for nested in _NESTED_KINDS:
        for name, cls in registration.builtin_classes(nested).items():
            found.setdefault(name, cls)
    return found


def _is_builtin_nested(class_name):
    return any(registration.builtin_class(kind, class_name) is not None for kind in _NESTED_KINDS)


def _resolve_class(config, kind):
    class_name = config["class_name"]
    custom = _custom_class(config)
    if custom is not None:
        return custom
    builtin = _builtin_classes(kind)
    if not config.get("registered_name") and class_name in builtin:
        return builtin[class_name]
    short = _registered_by_short_name(class_name, classes=True)
    if not config.get("registered_name") and short is not None:
        return short
    raise _unknown(kind, config.get("registered_name") or class_name, config.get("module"), class_name)


def _resolve_function(config, kind):
    from .. import activations, losses, metrics

    name = config.get("config")
    registered = config.get("registered_name")
    module = config.get("module")
    if not isinstance(name, str):
        raise ValueError(f"Invalid function reference for {kind}: {config!r}")
    if name == "<lambda>":
        raise ValueError(f"The saved {kind} is a lambda, which cannot be restored without running code")
    scope = registration.scope_objects()
    for key in (registered, name):
        if key and key in scope:
            return scope[key]
    registry = registration.get_custom_objects()
    if registered and registered in registry:
        return registry[registered]
    own = {"fastnn.activations": activations, "fastnn.losses": losses, "fastnn.metrics": metrics}
    if module in own or (module is None and not registered):
        for mod in ([own[module]] if module in own else own.values()):
            candidate = vars(mod).get(name)
            if candidate is not None and is_function(candidate) and not name.startswith("_"):
                return candidate
    short = _registered_by_short_name(name, classes=False)
    if not registered and short is not None:
        return short
    raise _unknown(f"function ({kind})", registered or name, module, name)


def _registered_by_short_name(name, classes):
    """The one registered class (or, classes=False, function) whose "package>name" ends in `name`, else None."""
    found = [obj for key, obj in registration.get_custom_objects().items()
             if key.split(">", 1)[-1] == name and inspect.isclass(obj) == classes]
    return found[0] if len(found) == 1 else None


def _unknown(kind, name, module=None, short=None):
    short = short or str(name).split(">", 1)[-1]
    where = f" (defined in module {module!r})" if module else ""
    return UnknownObjectError(
        f"Unknown {kind} {name!r}{where}. Either decorate its definition with "
        f"@fastnn.saving.register_keras_serializable() (and import that module before loading), or pass "
        f"custom_objects={{{short!r}: {short}}} to load_model.")
