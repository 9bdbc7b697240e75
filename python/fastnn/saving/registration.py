"""The one registry of the classes and functions that saved configs name.

Two tables:

* the user's: classes and functions decorated with ``register_keras_serializable``
  (``"package>name" -> object``), plus those given to an active ``custom_object_scope``;
* fastnn's own classes by kind ("layer", "model", "loss", "metric", "optimizer",
  "learning-rate schedule", "initializer", "regularizer", "constraint", "pruning schedule"),
  filled by the classes themselves: each base class (``Layer``, ``Model``, ``Loss``,
  ``Metric``, ``Optimizer``, ``LearningRateSchedule``, ``Initializer``, ``Regularizer``,
  ``Constraint``, ``PruningSchedule``) calls ``register_builtin(cls, kind)`` from its
  ``__init_subclass__`` (and registers itself unless it is abstract); the last five through
  ``Configurable`` below. Only classes defined in fastnn's modules count: a user's subclass
  is not a built-in, so, as in Keras, it needs ``register_keras_serializable`` or
  ``custom_objects`` to be found again.

A class is registered under its ``__name__``, so Keras' aliases (``Convolution2D`` is
``Conv2D``) are found by the name the class writes into configs.

This module imports nothing from the rest of fastnn: the base classes import it.
"""

import inspect
import threading

KINDS = ("layer", "model", "loss", "metric", "optimizer", "learning-rate schedule", "initializer", "regularizer",
         "constraint", "pruning schedule")

# ---- fastnn's own classes, by kind ------------------------------------------------------------------
_BUILTINS = {kind: {} for kind in KINDS}


def register_builtin(cls, kind):
    """Registers one of fastnn's own classes of `kind` under its ``__name__``.

    Called by the base classes' ``__init_subclass__`` for every subclass, and once for each
    base itself. Left out: classes defined outside fastnn's modules (a user's) and abstract
    classes (``abc`` abstract methods left: no config can rebuild them).

    Args:
        cls: the class.
        kind: one of ``KINDS``.

    Returns:
        cls.

    Raises:
        ValueError: an unknown kind.
        RuntimeError: another fastnn class of the same kind already has this name (a
            config could not tell them apart).
    """
    table = _table(kind, "register_builtin")
    module = getattr(cls, "__module__", None) or ""
    if (module != "fastnn" and not module.startswith("fastnn.")) or inspect.isabstract(cls):
        return cls
    name = cls.__name__
    known = table.get(name)
    if known is not None and _where(known) != _where(cls):  # (the same class of a reloaded module replaces it)
        raise RuntimeError(f"fastnn defines two {kind} classes named {name!r} ({_where(known)} and "
                           f"{_where(cls)}); saved configs name classes by name, so rename one")
    table[name] = cls
    return cls


def _where(cls):
    return f"{cls.__module__}.{cls.__qualname__}"


def _table(kind, who):
    if kind not in _BUILTINS:
        raise ValueError(f"{who}: unknown kind {kind!r}; expected one of {KINDS}")
    return _BUILTINS[kind]


def builtin_classes(kind):
    """fastnn's own classes of `kind`: a new dict ``{class name: class}``.

    Args:
        kind: one of ``KINDS``.
    """
    return dict(_table(kind, "builtin_classes"))


def builtin_class(kind, name):
    """fastnn's own class of `kind` called `name`, or None.

    Args:
        kind: one of ``KINDS``.
        name: the class name a config gives (its ``class_name``).
    """
    return _table(kind, "builtin_class").get(name)


# ---- the user's custom objects ------------------------------------------------------------------------
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
        key = f"{package}>{object_name}"
        _GLOBAL_CUSTOM_OBJECTS[key] = arg
        _GLOBAL_CUSTOM_NAMES[arg] = key
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


def registered_name(obj):
    """The name `obj` is registered under ("package>name"), or None when it is not registered."""
    return _GLOBAL_CUSTOM_NAMES.get(obj)


def get_registered_object(name, custom_objects=None, module_objects=None):
    """Returns the class or function known as `name`, or None.

    Looks in the active ``custom_object_scope``, the registry, then `custom_objects`, then
    `module_objects`.

    Args:
        name: str, e.g. "MyPackage>MyLayer".
        custom_objects: dict name -> object, default None.
        module_objects: dict name -> object, default None.
    """
    for table in (scope_objects(), _GLOBAL_CUSTOM_OBJECTS, custom_objects or {}, module_objects or {}):
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
        self._backup = scope_objects()
        _SCOPE.objects = {**self._backup, **self.custom_objects}
        return self

    def __exit__(self, *exc):
        _SCOPE.objects = self._backup


custom_object_scope = CustomObjectScope


def scope_objects():
    """The objects made known by the active ``custom_object_scope`` blocks (of this thread)."""
    return getattr(_SCOPE, "objects", None) or {}


class Configurable:
    """The plain-argument config of initializers, regularizers, constraints and learning-rate
    schedules: ``get_config()`` (the constructor arguments; none here) and
    ``from_config(config)`` = ``cls(**config)``. A base class names its kind in the class
    statement (``class Regularizer(Configurable, kind="regularizer")``); then it and every
    subclass defined in fastnn register as built-ins of that kind (see ``register_builtin``).
    """

    _builtin_kind = None

    def __init_subclass__(cls, kind=None, **kwargs):
        super().__init_subclass__(**kwargs)
        if kind is not None:
            cls._builtin_kind = kind
        if cls._builtin_kind is not None:
            register_builtin(cls, cls._builtin_kind)

    def get_config(self):
        """The constructor arguments, as a JSON-ready dict."""
        return {}

    @classmethod
    def from_config(cls, config):
        """The object ``cls(**config)``."""
        return cls(**config)
