"""Weight initializers (Keras names, formulas and defaults).

Each initializer is called as ``init(shape, dtype)`` and returns a NumPy array. Without a
seed it draws from fastnn's global generator (see ``fastnn.utils.set_random_seed``).
"""

import abc
import math

import numpy as np

from .saving import registration
from .utils import rng


class Initializer(registration.Configurable, abc.ABC, kind="initializer"):
    """Base class: subclasses implement ``__call__(shape, dtype=None)`` and ``get_config``."""

    @abc.abstractmethod
    def __call__(self, shape, dtype=None):
        """Returns an array of ``shape`` and ``dtype`` (default: fastnn.config.floatx())."""


def _dtype(dtype):
    from . import config

    resolved = np.dtype(dtype or config.floatx())
    if resolved.kind != "f":
        raise ValueError(f"initializer: 'dtype' must be a float type, got {resolved}")
    return resolved


class Zeros(Initializer):
    """All zeros."""

    def __call__(self, shape, dtype=None):
        return np.zeros(shape, _dtype(dtype))


class Ones(Initializer):
    """All ones."""

    def __call__(self, shape, dtype=None):
        return np.ones(shape, _dtype(dtype))


class Constant(Initializer):
    """All equal to ``value`` (default 0.0)."""

    def __init__(self, value=0.0):
        self.value = value

    def __call__(self, shape, dtype=None):
        return np.full(shape, self.value, _dtype(dtype))

    def get_config(self):
        return {"value": self.value}


class _Random(Initializer):
    """A seeded initializer gives the same values on every call (as Keras 3 documents);
    an unseeded one draws from fastnn's global generator."""

    def __init__(self, seed=None):
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"{type(self).__name__}: 'seed' must be an int or None, got {seed!r}")
        self.seed = seed

    def _rng(self):
        return rng.generator_for(self.seed) if self.seed is not None else rng.global_generator()

    def get_config(self):
        return {"seed": self.seed}


class RandomNormal(_Random):
    """Normal with ``mean`` (default 0) and ``stddev`` (default 0.05)."""

    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        super().__init__(seed)
        self.mean, self.stddev = mean, stddev

    def __call__(self, shape, dtype=None):
        return self._rng().normal(self.mean, self.stddev, shape).astype(_dtype(dtype))

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class RandomUniform(_Random):
    """Uniform on [minval, maxval) (default ±0.05)."""

    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        super().__init__(seed)
        self.minval, self.maxval = minval, maxval

    def __call__(self, shape, dtype=None):
        return self._rng().uniform(self.minval, self.maxval, shape).astype(_dtype(dtype))

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


def _truncated_normal(generator, mean, stddev, shape):
    """Normal values redrawn until within two standard deviations of the mean."""
    size = int(np.prod(shape, dtype=np.int64))
    out = generator.normal(mean, stddev, size)
    bad = np.abs(out - mean) > 2 * stddev
    while bad.any():
        out[bad] = generator.normal(mean, stddev, int(bad.sum()))
        bad = np.abs(out - mean) > 2 * stddev
    return out.reshape(shape)


class TruncatedNormal(_Random):
    """Normal (``mean`` 0, ``stddev`` 0.05) with values beyond 2 stddev redrawn."""

    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        super().__init__(seed)
        self.mean, self.stddev = mean, stddev

    def __call__(self, shape, dtype=None):
        return _truncated_normal(self._rng(), self.mean, self.stddev, shape).astype(_dtype(dtype))

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


def compute_fans(shape):
    """(fan_in, fan_out) of a kernel: Dense (in, out); convolution (..., in, out)."""
    shape = tuple(shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = int(np.prod(shape[:-2]))
    return shape[-2] * receptive, shape[-1] * receptive


class VarianceScaling(_Random):
    """Scale / fan variance: the base of the Glorot, He and LeCun initializers.

    Args:
        scale: float, default 1.0.
        mode: "fan_in" (default), "fan_out" or "fan_avg".
        distribution: "truncated_normal" (default), "untruncated_normal" or "uniform".
        seed: int or None.
    """

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None):
        super().__init__(seed)
        if scale <= 0:
            raise ValueError(f"VarianceScaling: 'scale' must be > 0, got {scale}")
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(f"VarianceScaling: 'mode' must be fan_in, fan_out or fan_avg, got {mode!r}")
        if distribution == "normal":
            distribution = "truncated_normal"
        if distribution not in ("truncated_normal", "untruncated_normal", "uniform"):
            raise ValueError(f"VarianceScaling: unknown distribution {distribution!r}")
        self.scale, self.mode, self.distribution = scale, mode, distribution

    def __call__(self, shape, dtype=None):
        fan_in, fan_out = compute_fans(shape)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        scale = self.scale / max(1.0, fan)
        if self.distribution == "truncated_normal":
            # 0.8796...: the stddev of a unit normal truncated at ±2.
            values = _truncated_normal(self._rng(), 0.0, math.sqrt(scale) / 0.87962566103423978, shape)
        elif self.distribution == "untruncated_normal":
            values = self._rng().normal(0.0, math.sqrt(scale), shape)
        else:
            limit = math.sqrt(3.0 * scale)
            values = self._rng().uniform(-limit, limit, shape)
        return np.asarray(values).astype(_dtype(dtype))

    def get_config(self):
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution, "seed": self.seed}


class GlorotUniform(VarianceScaling):
    """Uniform on ±sqrt(6 / (fan_in + fan_out)) (Xavier uniform)."""

    def __init__(self, seed=None):
        super().__init__(1.0, "fan_avg", "uniform", seed)

    def get_config(self):
        return {"seed": self.seed}


class GlorotNormal(VarianceScaling):
    """Truncated normal with stddev sqrt(2 / (fan_in + fan_out)) (Xavier normal)."""

    def __init__(self, seed=None):
        super().__init__(1.0, "fan_avg", "truncated_normal", seed)

    def get_config(self):
        return {"seed": self.seed}


class HeUniform(VarianceScaling):
    """Uniform on ±sqrt(6 / fan_in)."""

    def __init__(self, seed=None):
        super().__init__(2.0, "fan_in", "uniform", seed)

    def get_config(self):
        return {"seed": self.seed}


class HeNormal(VarianceScaling):
    """Truncated normal with stddev sqrt(2 / fan_in)."""

    def __init__(self, seed=None):
        super().__init__(2.0, "fan_in", "truncated_normal", seed)

    def get_config(self):
        return {"seed": self.seed}


class LecunUniform(VarianceScaling):
    """Uniform on ±sqrt(3 / fan_in)."""

    def __init__(self, seed=None):
        super().__init__(1.0, "fan_in", "uniform", seed)

    def get_config(self):
        return {"seed": self.seed}


class LecunNormal(VarianceScaling):
    """Truncated normal with stddev sqrt(1 / fan_in)."""

    def __init__(self, seed=None):
        super().__init__(1.0, "fan_in", "truncated_normal", seed)

    def get_config(self):
        return {"seed": self.seed}


class Orthogonal(_Random):
    """A (semi-)orthogonal matrix times ``gain`` (default 1.0), over the last axis."""

    def __init__(self, gain=1.0, seed=None):
        super().__init__(seed)
        self.gain = gain

    def __call__(self, shape, dtype=None):
        if len(shape) < 2:
            raise ValueError(f"Orthogonal: needs a shape of rank >= 2, got {tuple(shape)}")
        rows, cols = int(np.prod(shape[:-1])), int(shape[-1])
        a = self._rng().normal(0.0, 1.0, (max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q *= np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        return (self.gain * q.reshape(shape)).astype(_dtype(dtype))

    def get_config(self):
        return {"gain": self.gain, "seed": self.seed}


_ALIASES = {
    "zeros": Zeros, "ones": Ones, "constant": Constant, "random_normal": RandomNormal,
    "uniform": RandomUniform, "normal": RandomNormal,  # Keras 3's short aliases
    "random_uniform": RandomUniform, "truncated_normal": TruncatedNormal,
    "variance_scaling": VarianceScaling, "glorot_uniform": GlorotUniform,
    "glorot_normal": GlorotNormal, "xavier_uniform": GlorotUniform, "xavier_normal": GlorotNormal,
    "he_uniform": HeUniform, "he_normal": HeNormal, "lecun_uniform": LecunUniform,
    "lecun_normal": LecunNormal, "orthogonal": Orthogonal,
}


def get(identifier):
    """An initializer from a name ("glorot_uniform"), a class, an instance or a callable."""
    if isinstance(identifier, Initializer) or (callable(identifier) and not isinstance(identifier, type)):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Initializer):
        return identifier()
    if isinstance(identifier, str):
        key = identifier.lower()
        if key not in _ALIASES:
            raise ValueError(f"Unknown initializer {identifier!r}; expected one of: {', '.join(sorted(_ALIASES))}")
        return _ALIASES[key]()
    if isinstance(identifier, dict) and "class_name" in identifier:
        return globals()[identifier["class_name"]].from_config(identifier.get("config", {}))
    raise TypeError(f"initializer must be a name, an Initializer or a callable, got {type(identifier).__name__}")


def serialize(initializer):
    """{'class_name': ..., 'config': ...} for a built-in initializer."""
    return {"class_name": type(initializer).__name__, "config": initializer.get_config()}


__all__ = ["Initializer", "Zeros", "Ones", "Constant", "RandomNormal", "RandomUniform", "TruncatedNormal",
           "VarianceScaling", "GlorotUniform", "GlorotNormal", "HeUniform", "HeNormal", "LecunUniform",
           "LecunNormal", "Orthogonal", "get", "serialize"]
