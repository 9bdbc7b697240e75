"""Optimizers (Keras 3 names, arguments, defaults and update formulas).

Each algorithm's update is one fused C++ kernel. A model keeps its parameters (and
gradients) in one flat buffer, so one kernel call updates the whole model; the state
(moments, accumulators) lives in flat arrays of the same layout, one slot per variable,
indexed by the variable's position, never by memory address.

The base class owns what every optimizer shares, in Keras' order: gradient clipping
(``clipnorm`` per variable, ``global_clipnorm``, ``clipvalue``), decoupled weight decay
``w -= lr·λ·w``, the update, the iteration count, and an exponential moving average of
the weights (``use_ema``).
"""

import math
import re

import numpy as np

from .. import _core
from . import schedules


class Optimizer:
    """Base class.

    Args:
        learning_rate: float, or a schedule: a callable taking the iteration count.
        weight_decay: float or None: decoupled decay ``w -= lr·weight_decay·w`` before
            each update.
        clipnorm: float or None: clip each variable's gradient to this L2 norm.
        clipvalue: float or None: clip gradient values to [-clipvalue, clipvalue].
        global_clipnorm: float or None: clip all gradients together to this L2 norm.
        use_ema: bool, default False: keep a moving average of the weights.
        ema_momentum: float, default 0.99.
        ema_overwrite_frequency: int or None: every so many steps, copy the average into
            the weights.
        name: str.
    """

    # state slots: name -> initial value
    _slots = {}

    def __init__(self, learning_rate=0.001, weight_decay=None, clipnorm=None, clipvalue=None,
                 global_clipnorm=None, use_ema=False, ema_momentum=0.99, ema_overwrite_frequency=None,
                 name=None, **kwargs):
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unexpected keyword argument(s) {sorted(kwargs)}")
        if sum(c is not None for c in (clipnorm, clipvalue, global_clipnorm)) > 1:
            raise ValueError(f"{type(self).__name__}: set at most one of clipnorm, clipvalue, global_clipnorm")
        for arg, value in (("clipnorm", clipnorm), ("clipvalue", clipvalue), ("global_clipnorm", global_clipnorm)):
            if value is not None and not (np.isfinite(value) and value > 0):
                raise ValueError(f"{type(self).__name__}: '{arg}' must be a float > 0, got {value!r}")
        if weight_decay is not None and not (np.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(f"{type(self).__name__}: 'weight_decay' must be >= 0, got {weight_decay!r}")
        if not 0 <= ema_momentum <= 1:
            raise ValueError(f"{type(self).__name__}: 'ema_momentum' must be in [0, 1], got {ema_momentum}")
        self.name = name or type(self).__name__.lower()
        self._learning_rate = self._check_lr(learning_rate)
        self.weight_decay = weight_decay
        self.clipnorm, self.clipvalue, self.global_clipnorm = clipnorm, clipvalue, global_clipnorm
        self.use_ema, self.ema_momentum = bool(use_ema), float(ema_momentum)
        self.ema_overwrite_frequency = ema_overwrite_frequency
        self.iterations = 0
        self._excluded_names = []
        self._variables = None
        self._state = {}
        self._flat = None  # (params, grads) when the variables live in one flat buffer

    # ---- learning rate ---------------------------------------------------------------------
    def _check_lr(self, lr):
        if callable(lr):
            return lr
        if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating, np.integer)) or not np.isfinite(lr) or lr < 0:
            raise ValueError(f"{type(self).__name__}: 'learning_rate' must be a float >= 0 or a schedule, got {lr!r}")
        return float(lr)

    @property
    def learning_rate(self):
        """The current learning rate (a schedule is evaluated at ``iterations``)."""
        lr = self._learning_rate
        return float(lr(self.iterations)) if callable(lr) else lr

    @learning_rate.setter
    def learning_rate(self, value):
        self._learning_rate = self._check_lr(value)

    # ---- state ----------------------------------------------------------------------------------
    def build(self, variables, flat=None):
        """Creates the state for `variables` (a list of Variables, in slot order).

        Args:
            flat: optional (params, grads): flat arrays the variables' values and gradients
                are contiguous views of, in order; updates then run as one kernel call.
        """
        self._variables = list(variables)
        sizes = [v.value.size for v in self._variables]
        self._offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        dtype = self._variables[0].value.dtype if self._variables else np.float32
        total = int(self._offsets[-1])
        self._state = {}
        for slot, initial in self._slot_names().items():
            self._state[slot] = np.full(total, initial, dtype)
        if self.use_ema:
            self._state["ema"] = np.concatenate([v.value.ravel() for v in self._variables]).astype(dtype) \
                if self._variables else np.zeros(0, dtype)
        self._flat = flat
        self._decay_mask = np.array([not any(re.search(p, v.name) for p in self._excluded_names)
                                     for v in self._variables], dtype=bool)
        self._extra_state_init()

    def _slot_names(self):
        return dict(self._slots)

    def _extra_state_init(self):
        """Scalar state of an algorithm (e.g. Nadam's momentum product)."""

    @property
    def built(self):
        return self._variables is not None

    def variables_state(self, index):
        """The state slots of variable `index`, as a dict of arrays shaped like the variable."""
        v = self._variables[index]
        a, b = self._offsets[index], self._offsets[index + 1]
        return {k: s[a:b].reshape(v.shape) for k, s in self._state.items()}

    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        """Exempts variables (or names matching these regular expressions) from weight decay."""
        self._excluded_names += [re.escape(v.name) for v in (var_list or [])] + list(var_names or [])
        if self.built:
            self._decay_mask = np.array([not any(re.search(p, v.name) for p in self._excluded_names)
                                         for v in self._variables], dtype=bool)

    # ---- applying gradients ---------------------------------------------------------------
    def apply_gradients(self, grads_and_vars):
        """Keras' form: ``apply_gradients(zip(grads, variables))``."""
        pairs = list(grads_and_vars)
        return self.apply([g for g, _ in pairs], [v for _, v in pairs])

    def apply(self, grads, variables=None):
        """One step: clip, decay, update every variable; then iterations += 1.

        Args:
            grads: list of arrays shaped like the variables (None entries are skipped).
            variables: list of Variables (default: those of the last build).
        """
        if variables is not None and (not self.built or list(variables) != self._variables):
            self.build(variables)
        pairs = [(i, np.asarray(g)) for i, g in enumerate(grads) if g is not None]
        for i, g in pairs:
            if g.shape != self._variables[i].shape:
                raise ValueError(f"{self.name}: gradient {i} has shape {g.shape}, variable "
                                 f"'{self._variables[i].name}' has {self._variables[i].shape}")
        flat_grads = np.concatenate([g.ravel() for _, g in pairs]).astype(self._dtype()) if pairs else None
        if flat_grads is None:
            return
        if len(pairs) == len(self._variables):
            offsets = self._offsets
        else:
            sizes = [g.size for _, g in pairs]
            offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._clip(flat_grads, offsets)
        lr = self.learning_rate
        self.iterations += 1
        self._begin_step()
        for k, (i, _) in enumerate(pairs):
            var = self._variables[i]
            g = flat_grads[offsets[k]:offsets[k + 1]]
            w = var.value.reshape(-1)
            state = {name: s[self._offsets[i]:self._offsets[i + 1]] for name, s in self._state.items() if name != "ema"}
            decay = self.weight_decay if (self.weight_decay and self._decay_mask[i]) else 0.0
            self._update(w, g, state, lr, self.iterations, decay)
        self._after_update()

    def apply_flat(self):
        """One step over the flat buffer given to build: the model's training path."""
        params, grads = self._flat
        self._clip(grads, self._offsets)
        lr = self.learning_rate
        self.iterations += 1
        self._begin_step()
        state = {k: s for k, s in self._state.items() if k != "ema"}
        decay = self.weight_decay or 0.0
        if decay and not self._decay_mask.all():
            # Decay only the included variables here, then update without decay.
            factors = np.where(self._decay_mask, 1.0 - lr * decay, 1.0)
            _core.scale_segments(params, self._offsets, factors)
            decay = 0.0
        self._update(params, grads, state, lr, self.iterations, decay)
        self._after_update()

    def _dtype(self):
        return self._variables[0].value.dtype if self._variables else np.float32

    def _clip(self, grads, offsets):
        if self.clipvalue is not None:
            _core.clip_by_value(grads, self.clipvalue)
        elif self.clipnorm is not None:
            norms = np.sqrt(_core.sum_squares(grads, offsets))
            _core.scale_segments(grads, offsets, self.clipnorm / np.maximum(norms, self.clipnorm))
        elif self.global_clipnorm is not None:
            norm = math.sqrt(float(_core.sum_squares(grads, offsets[[0, -1]])[0]))
            if norm > self.global_clipnorm or not np.isfinite(norm):
                factor = self.global_clipnorm / norm if np.isfinite(norm) else float("nan")
                _core.scale_segments(grads, offsets[[0, -1]], np.array([factor]))

    def _begin_step(self):
        """Per-step scalar state, before the update (e.g. Nadam's momentum product)."""

    def _after_update(self):
        if not self.use_ema:
            return
        params = self._flat[0] if self._flat is not None else np.concatenate([v.value.ravel() for v in self._variables])
        # Keras: the first step copies the weights, later ones average (one fused pass).
        _core.ema_update(self._state["ema"], params, self.ema_momentum if self.iterations > 1 else 0.0)
        if self.ema_overwrite_frequency and self.iterations % self.ema_overwrite_frequency == 0:
            self.finalize_variable_values()

    # ---- state, for saving and resuming ------------------------------------------------------
    def get_state(self):
        """Everything a resumed run needs: {'iterations', 'slots': {name: flat array}, 'scalars'}.

        Slot arrays follow the order of the variables given to build (one slot per variable
        position), so they reload into any model with the same architecture.
        """
        return {"iterations": int(self.iterations),
                "slots": {k: v.copy() for k, v in self._state.items()},
                "scalars": self._scalar_state()}

    def set_state(self, state):
        """Restores get_state()'s output (after build); shapes must match."""
        if not self.built:
            raise RuntimeError(f"{self.name}: build the optimizer (compile and build the model) before set_state")
        slots = state.get("slots", {})
        for name, current in self._state.items():
            if name not in slots:
                raise ValueError(f"{self.name}: the saved state has no slot '{name}'")
            value = np.asarray(slots[name])
            if value.shape != current.shape:
                raise ValueError(f"{self.name}: slot '{name}' has {current.size} values, the saved one {value.size}")
        for name, current in self._state.items():
            current[...] = slots[name]
        declared = self._scalar_state()
        unknown = set(state.get("scalars", {})) - set(declared)
        if unknown:
            raise ValueError(f"{self.name}: the saved state has unknown scalars {sorted(unknown)}")
        self.iterations = int(state.get("iterations", 0))
        for key, value in state.get("scalars", {}).items():
            setattr(self, key, float(value))

    def _scalar_state(self):
        """Scalar state of an algorithm (attribute name -> float)."""
        return {}

    def finalize_variable_values(self, variables=None):
        """Copies the moving average into the weights (when use_ema; fit does it at the end)."""
        if not self.use_ema or not self.built:
            return
        for i, var in enumerate(self._variables):
            var.value.reshape(-1)[...] = self._state["ema"][self._offsets[i]:self._offsets[i + 1]]

    def swap_ema_weights(self):
        """Exchanges the weights and their moving average (twice restores both)."""
        if not self.use_ema or not self.built:
            return
        for i, var in enumerate(self._variables):
            part = self._state["ema"][self._offsets[i]:self._offsets[i + 1]]
            current = var.value.reshape(-1).copy()
            var.value.reshape(-1)[...] = part
            part[...] = current

    def _update(self, w, g, state, lr, step, weight_decay):
        """The algorithm: updates flat w (and state) in place from flat g."""
        raise TypeError(f"{type(self).__name__} must implement _update")

    @staticmethod
    def _decay(w, lr, weight_decay):
        if weight_decay:
            w *= w.dtype.type(1.0 - lr * weight_decay)

    def get_config(self):
        lr = self._learning_rate
        if callable(lr):
            lr = schedules.serialize(lr)
        return {"name": self.name, "learning_rate": lr,
                "weight_decay": self.weight_decay, "clipnorm": self.clipnorm, "clipvalue": self.clipvalue,
                "global_clipnorm": self.global_clipnorm, "use_ema": self.use_ema,
                "ema_momentum": self.ema_momentum, "ema_overwrite_frequency": self.ema_overwrite_frequency}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        if isinstance(config.get("learning_rate"), dict):
            config["learning_rate"] = schedules.deserialize(config["learning_rate"], custom_objects)
        return cls(**config)


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum.

    Args:
        learning_rate: default 0.01.
        momentum: float in [0, 1], default 0.0.
        nesterov: bool, default False.
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, name="SGD", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0 <= momentum <= 1:
            raise ValueError(f"SGD: 'momentum' must be in [0, 1], got {momentum}")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)

    def _slot_names(self):
        return {"momentum": 0.0} if self.momentum else {}

    def _update(self, w, g, state, lr, step, weight_decay):
        self._decay(w, lr, weight_decay)
        _core.sgd_update(w, g, state.get("momentum"), lr, self.momentum, self.nesterov)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adagrad(Optimizer):
    """Adagrad: per-parameter rates from the sum of squared gradients.

    Args:
        learning_rate: default 0.001.
        initial_accumulator_value: float >= 0, default 0.1.
        epsilon: default 1e-7 (inside the square root).
    """

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, name="adagrad", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.initial_accumulator_value, self.epsilon = float(initial_accumulator_value), float(epsilon)

    def _slot_names(self):
        return {"accumulator": self.initial_accumulator_value}

    def _update(self, w, g, state, lr, step, weight_decay):
        self._decay(w, lr, weight_decay)
        _core.adagrad_update(w, g, state["accumulator"], lr, self.epsilon)

    def get_config(self):
        return {**super().get_config(), "initial_accumulator_value": self.initial_accumulator_value,
                "epsilon": self.epsilon}


class RMSprop(Optimizer):
    """RMSprop: gradients divided by a moving RMS.

    Args:
        learning_rate: default 0.001.
        rho: default 0.9.
        momentum: default 0.0.
        epsilon: default 1e-7 (inside the square root).
        centered: bool, default False: normalise by the variance instead.
    """

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False,
                 name="rmsprop", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.rho, self.momentum, self.epsilon, self.centered = float(rho), float(momentum), float(epsilon), bool(centered)

    def _slot_names(self):
        slots = {"velocity": 0.0}
        if self.momentum > 0:
            slots["momentum"] = 0.0
        if self.centered:
            slots["average_gradient"] = 0.0
        return slots

    def _update(self, w, g, state, lr, step, weight_decay):
        self._decay(w, lr, weight_decay)
        _core.rmsprop_update(w, g, state["velocity"], state.get("average_gradient"), state.get("momentum"),
                             lr, self.rho, self.momentum, self.epsilon)

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon,
                "centered": self.centered}


class Adadelta(Optimizer):
    """Adadelta: steps scaled by a ratio of moving RMS of updates and gradients.

    Args:
        learning_rate: default 0.001.
        rho: default 0.95.
        epsilon: default 1e-7.
    """

    _slots = {"accumulated_grad": 0.0, "accumulated_delta_var": 0.0}

    def __init__(self, learning_rate=0.001, rho=0.95, epsilon=1e-7, name="adadelta", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.rho, self.epsilon = float(rho), float(epsilon)

    def _update(self, w, g, state, lr, step, weight_decay):
        self._decay(w, lr, weight_decay)
        _core.adadelta_update(w, g, state["accumulated_grad"], state["accumulated_delta_var"], lr, self.rho,
                              self.epsilon)

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "epsilon": self.epsilon}


class Adam(Optimizer):
    """Adam (the design's fused kernel: moments, bias correction and step in one pass).

    Args:
        learning_rate: default 0.001.
        beta_1: default 0.9. beta_2: default 0.999.
        epsilon: default 1e-7 (added to sqrt(v) before bias correction, as Keras).
        amsgrad: bool, default False.
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False,
                 name="adam", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1, self.beta_2, self.epsilon, self.amsgrad = float(beta_1), float(beta_2), float(epsilon), bool(amsgrad)

    def _slot_names(self):
        slots = {"momentum": 0.0, "velocity": 0.0}
        if self.amsgrad:
            slots["velocity_hat"] = 0.0
        return slots

    def _update(self, w, g, state, lr, step, weight_decay):
        _core.adam_update(w, g, state["momentum"], state["velocity"], state.get("velocity_hat"), lr,
                          self.beta_1, self.beta_2, self.epsilon, step, weight_decay)

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
                "amsgrad": self.amsgrad}


class AdamW(Adam):
    """Adam with decoupled weight decay (default 0.004), applied as ``w -= lr·λ·w`` first."""

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, name="adamw", **kwargs):
        if weight_decay is None:
            raise ValueError("AdamW: 'weight_decay' must be a float, got None")
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                         amsgrad=amsgrad, name=name, weight_decay=weight_decay, **kwargs)


class Nadam(Optimizer):
    """Adam with Nesterov momentum (Keras' momentum schedule).

    Args:
        learning_rate: default 0.001. beta_1: default 0.9. beta_2: default 0.999.
        epsilon: default 1e-7.
    """

    _slots = {"momentum": 0.0, "velocity": 0.0}

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, name="nadam", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    def _extra_state_init(self):
        self.u_product = 1.0

    def _scalar_state(self):
        return {"u_product": self.u_product}

    def _begin_step(self):
        t = self.iterations
        self.u_product *= self.beta_1 * (1.0 - 0.5 * 0.96 ** t)

    def _update(self, w, g, state, lr, step, weight_decay):
        u_next = self.beta_1 * (1.0 - 0.5 * 0.96 ** (step + 1))
        _core.nadam_update(w, g, state["momentum"], state["velocity"], lr, self.beta_1, self.beta_2,
                           self.epsilon, step, self.u_product, self.u_product * u_next, weight_decay)

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


_BY_NAME = {"sgd": SGD, "adagrad": Adagrad, "rmsprop": RMSprop, "adadelta": Adadelta, "adam": Adam,
            "adamw": AdamW, "nadam": Nadam}


def get(identifier):
    """An Optimizer from a name ("adam"), class or instance."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Optimizer):
        return identifier()
    if isinstance(identifier, str):
        key = identifier.lower()
        if key not in _BY_NAME:
            raise ValueError(f"Unknown optimizer {identifier!r}; expected one of: {', '.join(sorted(_BY_NAME))}")
        return _BY_NAME[key]()
    raise TypeError(f"optimizer must be a name or an Optimizer, got {type(identifier).__name__}")


def serialize(optimizer):
    return {"class_name": type(optimizer).__name__, "config": optimizer.get_config()}
