"""Every public module of fastnn declares its public names in ``__all__``, and only those.

``__all__`` is Python's definition of a module's public names: what ``from m import *``
brings, what documentation tools and IDEs list. So it must hold the API (classes, functions,
the API's submodules) and never the helpers a module happens to import (``np``, ``os``...).
"""

import importlib
import inspect
import types

import pytest

import fastnn

# The documented modules: fastnn, its Keras namespaces, and their documented submodules.
PUBLIC_MODULES = [
    "fastnn", "fastnn.activations", "fastnn.autodiff", "fastnn.callbacks", "fastnn.config", "fastnn.constraints",
    "fastnn.datasets", "fastnn.distribution",
    "fastnn.datasets.digits", "fastnn.datasets.mnist", "fastnn.initializers", "fastnn.isa", "fastnn.layers", "fastnn.losses",
    "fastnn.metrics", "fastnn.models", "fastnn.ops", "fastnn.optimizers", "fastnn.optimizers.schedules",
    "fastnn.preprocessing", "fastnn.preprocessing.sequence", "fastnn.pruning", "fastnn.quantizers", "fastnn.regularizers", "fastnn.saving", "fastnn.utils",
    "fastnn.wrappers",
]


def public_names(name):
    module = importlib.import_module(name)
    assert isinstance(getattr(module, "__all__", None), (list, tuple)), f"{name} has no __all__"
    return module, list(module.__all__)


def test_the_public_modules_are_exactly_those_reached_from_fastnn():
    reached, pending = set(), ["fastnn"]
    while pending:
        name = pending.pop()
        reached.add(name)
        module, names = public_names(name)
        for attr in names:
            value = getattr(module, attr)
            if isinstance(value, types.ModuleType) and value.__name__ not in reached:
                pending.append(value.__name__)
    assert sorted(reached) == sorted(PUBLIC_MODULES)


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_lists_the_api_and_nothing_else(name):
    module, names = public_names(name)
    assert len(names) == len(set(names)), f"{name}.__all__ repeats a name"
    for attr in names:
        assert isinstance(attr, str) and not attr.startswith("_"), f"{name}.__all__ holds {attr!r}"
        value = getattr(module, attr)  # every name resolves
        if isinstance(value, types.ModuleType):  # a submodule only when it is one of the API's
            assert value.__name__ in PUBLIC_MODULES, f"{name}.__all__ exports the module {value.__name__}"
        else:
            assert callable(value), f"{name}.{attr} is a {type(value).__name__}, not a class or function"
        doc = value.__doc__ if inspect.isclass(value) else inspect.getdoc(value)
        assert doc and doc.strip(), f"{name}.{attr} has no docstring"


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_a_star_import_brings_the_api_only(name):
    namespace = {}
    exec(f"from {name} import *", namespace)
    brought = {k for k in namespace if k != "__builtins__"}
    assert brought == set(importlib.import_module(name).__all__)
    helpers = {"np", "numpy", "os", "sys", "csv", "math", "abc", "functools", "gzip", "hashlib", "json", "time",
               "registration", "rng", "tqdm"}
    assert not brought & helpers


# Classes and functions that public modules define for fastnn's own use, deliberately not exported.
INTERNAL = {"fastnn.activations": {"ActivationSpec"}, "fastnn.autodiff": {"is_traced", "unbroadcast"},
            "fastnn.initializers": {"compute_fans"}}


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_every_class_and_function_a_module_defines_is_exported_or_declared_internal(name):
    """So that a function added to a module without a line in its __all__ is noticed."""
    module, names = public_names(name)
    defined = {attr for attr, value in vars(module).items()
               if not attr.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value))
               and value.__module__ == name}
    assert defined - set(names) == INTERNAL.get(name, set())


def test_callbacks_no_longer_exports_its_imports():
    assert {"csv", "math", "np", "os", "sys", "Progbar"}.isdisjoint(fastnn.callbacks.__all__)
    assert "EarlyStopping" in fastnn.callbacks.__all__ and fastnn.callbacks.np is not None  # the imports still work


def test_ops_exports_its_functions_not_the_files_they_live_in():
    assert {"conv", "matmul", "mean", "lstm", "adam_update"} <= set(fastnn.ops.__all__)
    assert callable(fastnn.ops.conv)  # the function, not the submodule of the same name
    assert {"gemm", "nn", "pool", "rnn", "optim", "image", "normalization"}.isdisjoint(fastnn.ops.__all__)


def test_the_version_is_read_but_not_star_imported():
    namespace = {"__version__": "mine"}
    exec("from fastnn import *", namespace)
    assert namespace["__version__"] == "mine" and isinstance(fastnn.__version__, str)
