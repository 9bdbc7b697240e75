"""The base class of every optimizer: what all algorithms share.

In Keras' order: gradient clipping (``clipnorm`` per variable, ``global_clipnorm``,
``clipvalue``), decoupled weight decay ``w -= lr·λ·w``, the algorithm's update (a
subclass's ``_update``: one fused kernel), the iteration count, and an exponential moving
average of the weights (``use_ema``); after the update, the weights' constraints, then the
pruning masks (``fastnn.pruning``: a masked weight and all its state slots times its mask).

A model keeps its parameters (and gradients) in one flat buffer, so one kernel call
updates the whole model; the state (moments, accumulators) lives in flat arrays of the
same layout, one slot per variable, indexed by the variable's position, never by memory
address.
"""

import math
import re
import warnings

import numpy as np

from ..ops import clip_by_value, ema_update, scale_segments, sum_squares
from ..ops.optim import _real
from ..saving import registration
from . import schedules


class Optimizer:
    """Base class of the optimizers: clipping, weight decay, EMA, state; subclasses add the update.

    A subclass declares its state slots (``_slots``, or ``_slot_names()``) and implements
    ``_update(w, g, state, lr, step, weight_decay)``, one kernel call from ``fastnn.ops``.

    Args:
        learning_rate: float >= 0, or a schedule (a callable taking the iteration count),
            default 0.001.
        weight_decay: float >= 0 or None, default None: decoupled decay
            ``w -= lr·weight_decay·w`` before each update.
        clipnorm: float > 0 or None, default None: clip each variable's gradient to this
            L2 norm.
        clipvalue: float > 0 or None, default None: clip gradient values to
            [-clipvalue, clipvalue].
        global_clipnorm: float > 0 or None, default None: clip all gradients together to
            this L2 norm. At most one of clipnorm, clipvalue and global_clipnorm.
        use_ema: bool, default False: keep an exponential moving average of the weights.
        ema_momentum: float in [0, 1], default 0.99.
        ema_overwrite_frequency: int >= 1 or None, default None: every so many steps, copy
            the average into the weights (0 as None, as Keras).
        name: str or None, default None: the class name in lower case.
    """

    # state slots: name -> initial value
    _slots = {}

    def __init__(self, learning_rate=0.001, weight_decay=None, clipnorm=None, clipvalue=None,
                 global_clipnorm=None, use_ema=False, ema_momentum=0.99, ema_overwrite_frequency=None,
                 name=None, **kwargs):
        who = type(self).__name__
        if kwargs.pop("decay", None) is not None:  # Keras 2's argument: Keras 3 warns and ignores it
            warnings.warn(f"{who}: argument 'decay' is no longer supported and will be ignored; use a "
                          "learning-rate schedule", stacklevel=2)
        if kwargs:
            raise TypeError(f"{who}: unexpected keyword argument(s) {sorted(kwargs)}")
        if sum(c is not None for c in (clipnorm, clipvalue, global_clipnorm)) > 1:
            raise ValueError(f"{who}: set at most one of clipnorm, clipvalue, global_clipnorm (as Keras), got "
                             f"clipnorm={clipnorm!r}, clipvalue={clipvalue!r}, global_clipnorm={global_clipnorm!r}")
        clips = [None if value is None else _real(who, arg, value, low=0.0, low_open=True)
                 for arg, value in (("clipnorm", clipnorm), ("clipvalue", clipvalue),
                                    ("global_clipnorm", global_clipnorm))]
        if weight_decay is not None:
            weight_decay = _real(who, "weight_decay", weight_decay, low=0.0)
        ema_momentum = _real(who, "ema_momentum", ema_momentum, 0.0, 1.0)
        if ema_overwrite_frequency is not None and (
                isinstance(ema_overwrite_frequency, (bool, np.bool_))
                or not isinstance(ema_overwrite_frequency, (int, np.integer)) or ema_overwrite_frequency < 0):
            raise ValueError(f"{who}: 'ema_overwrite_frequency' must be None or an int >= 1 (0: never), got "
                             f"{ema_overwrite_frequency!r}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"{who}: 'name' must be a string or None, got {name!r}")
        self.name = name or type(self).__name__.lower()
        self._learning_rate = self._check_lr(learning_rate)
        self.weight_decay = weight_decay
        self.clipnorm, self.clipvalue, self.global_clipnorm = clips
        self.use_ema, self.ema_momentum = bool(use_ema), ema_momentum
        self.ema_overwrite_frequency = None if ema_overwrite_frequency is None else int(ema_overwrite_frequency)
        self.iterations = 0
        self._excluded_names = []
        self._variables = None
        self._state = {}
        self._flat = None  # (params, grads) when the variables live in one flat buffer
        self._constrained = []  # the variables with a constraint, after build
        self._masked = []  # (index, mask Variable) of the pruned variables, after build
        # data parallelism (fastnn.distribution): sums apply()'s gradients over the processes
        self._gradient_reducer = None

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
        # only the constrained variables: an empty list (no cost) when no layer has a constraint
        self._constrained = [v for v in self._variables if getattr(v, "constraint", None) is not None]
        # the pruned variables (fastnn.pruning): (index, mask Variable); empty without pruning
        self._masked = [(i, v._pruning_mask) for i, v in enumerate(self._variables)
                        if getattr(v, "_pruning_mask", None) is not None]
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
        reducer = getattr(self, "_gradient_reducer", None)  # (absent from optimizers pickled before it)
        if reducer is not None:
            reducer(flat_grads)
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
            scale_segments(params, self._offsets, factors)
            decay = 0.0
        self._update(params, grads, state, lr, self.iterations, decay)
        self._after_update()

    def _dtype(self):
        return self._variables[0].value.dtype if self._variables else np.float32

    def _clip(self, grads, offsets):
        if self.clipvalue is not None:
            clip_by_value(grads, self.clipvalue)
        elif self.clipnorm is not None:
            norms = np.sqrt(sum_squares(grads, offsets))
            scale_segments(grads, offsets, self.clipnorm / np.maximum(norms, self.clipnorm))
        elif self.global_clipnorm is not None:
            norm = math.sqrt(float(sum_squares(grads, offsets[[0, -1]])[0]))
            if norm > self.global_clipnorm or not np.isfinite(norm):
                factor = self.global_clipnorm / norm if np.isfinite(norm) else float("nan")
                scale_segments(grads, offsets[[0, -1]], np.array([factor]))

    def _begin_step(self):
        """Per-step scalar state, before the update (e.g. Nadam's momentum product)."""

    def _after_update(self):
        self._update_ema()
        # Keras: variable.assign(constraint(variable)) after the update (and its EMA), here in
        # place on each constrained variable's view of the flat buffer.
        for var in self._constrained:
            projected = np.asarray(var.constraint(var.value))
            if projected.shape != var.value.shape:
                raise ValueError(f"{self.name}: the constraint {var.constraint!r} of '{var.name}' returned shape "
                                 f"{projected.shape}, expected the weight's {var.value.shape}")
            var.value[...] = projected
        if getattr(self, "_masked", None):  # (absent from optimizers pickled before pruning)
            self._apply_pruning_masks()

    def _apply_pruning_masks(self):
        """Pruning (fastnn.pruning): each masked variable and every state slot of it (moments,
        accumulators, the moving average) multiplied by its 0/1 mask, last in the step (after the
        constraints), so that pruned weights and their state are exactly 0.0 after every update.
        One multiply per array segment, no per-element Python; the weights and their moving
        average (which may become the weights) get one add more, which turns -0.0 into +0.0
        (saved files compress better)."""
        offsets = self._offsets
        for i, mask_var in self._masked:
            mask = mask_var.value.reshape(-1)
            a, b = offsets[i], offsets[i + 1]
            weight = self._variables[i].value.reshape(-1)
            for name, segment in [("weight", weight)] + [(k, s[a:b]) for k, s in self._state.items()]:
                np.multiply(segment, mask, out=segment)
                if name in ("weight", "ema"):
                    np.add(segment, 0.0, out=segment)

    def _update_ema(self):
        if not self.use_ema:
            return
        params = self._flat[0] if self._flat is not None else np.concatenate([v.value.ravel() for v in self._variables])
        # Keras: the first step copies the weights, later ones average (one fused pass).
        ema_update(self._state["ema"], params, self.ema_momentum if self.iterations > 1 else 0.0)
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

    # ---- registration (saving/registration.py) ------------------------------------------------
    def __init_subclass__(cls, **kwargs):
        """fastnn's own optimizers register by name, so that saved configs find them (a user's do not)."""
        super().__init_subclass__(**kwargs)
        registration.register_builtin(cls, "optimizer")


registration.register_builtin(Optimizer, "optimizer")
