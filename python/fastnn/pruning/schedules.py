"""Pruning schedules: when to recompute the masks, and at what sparsity (tfmot's names and formulas).

A schedule is a callable ``schedule(step) -> (should_prune, sparsity)``: ``step`` is the
pruning step of the batch about to run (0 for a pruned model's first training batch, counted
by ``UpdatePruningStep``), ``should_prune`` says whether the masks are recomputed before that
batch, ``sparsity`` (in [0, 1)) the fraction of weights the new masks zero.

Masks are recomputed at ``begin_step`` and every ``frequency`` steps after it, up to
``end_step`` included (``end_step=-1``: forever), as in the TensorFlow Model Optimization
Toolkit (``tfmot.sparsity.keras``).

Example:
    >>> from fastnn import pruning
    >>> schedule = pruning.PolynomialDecay(initial_sparsity=0.0, final_sparsity=0.8, begin_step=0, end_step=1000)
    >>> should_prune, sparsity = schedule(500)  # True, about 0.7 (= 0.8 - 0.8 * 0.5 ** 3)
"""

import math

import numpy as np

from ..saving import registration


def _integer(value, name, who, minimum=None):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{who}: '{name}' must be an int, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{who}: '{name}' must be >= {minimum}, got {value!r}")
    return int(value)


def _sparsity(value, name, who):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{who}: '{name}' must be a float in [0, 1), got {value!r}")
    return float(value)


class PruningSchedule(registration.Configurable, kind="pruning schedule"):
    """Base class of the pruning schedules: implement ``__call__(step)`` and ``get_config()``.

    ``schedule(step)`` returns ``(should_prune, sparsity)``: whether the masks are recomputed
    before the batch of pruning step ``step`` (an int >= 0), and the sparsity (a float in
    [0, 1)) they then have. ``_should_prune_in_step`` gives tfmot's timing rule.

    A custom schedule (a subclass defined outside fastnn) saves and loads like any custom
    object: decorate it with ``fastnn.saving.register_keras_serializable()``.
    """

    def __call__(self, step):
        raise TypeError(f"{type(self).__name__} must implement __call__(step) -> (should_prune, sparsity)")

    @staticmethod
    def _should_prune_in_step(step, begin_step, end_step, frequency):
        """True at begin_step, begin_step + frequency, ... up to end_step included (-1: no end)."""
        in_range = step >= begin_step and (end_step < 0 or step <= end_step)
        return bool(in_range and (step - begin_step) % frequency == 0)

    @staticmethod
    def _validate_step(who, begin_step, end_step, frequency, allow_negative_1):
        begin_step = _integer(begin_step, "begin_step", who, minimum=0)
        end_step = _integer(end_step, "end_step", who)
        if end_step == -1 and not allow_negative_1:
            raise ValueError(f"{who}: 'end_step' must be > begin_step ({begin_step}), got -1 (the sparsity needs an "
                             "end to decay towards)")
        if end_step != -1:
            if end_step < 0:
                raise ValueError(f"{who}: 'end_step' must be -1 or >= 0, got {end_step}")
            if end_step < begin_step or (end_step == begin_step and not allow_negative_1):
                relation = ">=" if allow_negative_1 else ">"
                raise ValueError(f"{who}: 'end_step' must be {relation} begin_step ({begin_step}) or -1, got {end_step}")
        frequency = _integer(frequency, "frequency", who, minimum=1)
        return begin_step, end_step, frequency

    def __repr__(self):
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({arguments})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))


class ConstantSparsity(PruningSchedule):
    """The same sparsity at every pruning step (tfmot's ``ConstantSparsity``).

    The masks are recomputed at ``begin_step`` and every ``frequency`` steps after it, up to
    ``end_step`` (included), each time zeroing ``target_sparsity`` of the weights.

    Args:
        target_sparsity: float in [0, 1): the fraction of weights set to zero.
        begin_step: int >= 0: the first step at which the masks are computed (required, as
            in tfmot; ``prune_low_magnitude``'s default schedule uses 0).
        end_step: int, default -1: the last step at which they may be recomputed (>=
            begin_step), or -1 for no end.
        frequency: int >= 1, default 100: recompute every so many steps.

    Example:
        >>> from fastnn import pruning
        >>> schedule = pruning.ConstantSparsity(0.5, begin_step=0, frequency=10)
        >>> schedule(0), schedule(5), schedule(10)
        ((True, 0.5), (False, 0.5), (True, 0.5))
    """

    def __init__(self, target_sparsity, begin_step, end_step=-1, frequency=100):
        who = "ConstantSparsity"
        self.target_sparsity = _sparsity(target_sparsity, "target_sparsity", who)
        self.begin_step, self.end_step, self.frequency = self._validate_step(who, begin_step, end_step, frequency,
                                                                             allow_negative_1=True)

    def __call__(self, step):
        """(should_prune, sparsity) at `step` (an int)."""
        return self._should_prune_in_step(step, self.begin_step, self.end_step, self.frequency), self.target_sparsity

    def get_config(self):
        return {"target_sparsity": self.target_sparsity, "begin_step": self.begin_step, "end_step": self.end_step,
                "frequency": self.frequency}


class PolynomialDecay(PruningSchedule):
    """Sparsity rising from ``initial_sparsity`` to ``final_sparsity`` along a polynomial (tfmot's
    ``PolynomialDecay``, after Zhu & Gupta, 2017)::

        p = clip((step - begin_step) / (end_step - begin_step), 0, 1)
        sparsity = final_sparsity + (initial_sparsity - final_sparsity) * (1 - p) ** power

    It rises fast at first and levels off towards the end. The masks are recomputed at
    ``begin_step`` and every ``frequency`` steps after it, up to ``end_step`` (included).

    Args:
        initial_sparsity: float in [0, 1): the sparsity at begin_step.
        final_sparsity: float in [0, 1): the sparsity from end_step on.
        begin_step: int >= 0: the first step at which the masks are computed.
        end_step: int > begin_step: the last step at which they are recomputed (unlike tfmot,
            end_step == begin_step, which divides by zero there, is refused).
        power: float, default 3: the exponent.
        frequency: int >= 1, default 100: recompute every so many steps.

    Example:
        >>> from fastnn import pruning
        >>> schedule = pruning.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=100, frequency=10)
        >>> schedule(100)
        (True, 0.8)
    """

    def __init__(self, initial_sparsity, final_sparsity, begin_step, end_step, power=3, frequency=100):
        who = "PolynomialDecay"
        self.initial_sparsity = _sparsity(initial_sparsity, "initial_sparsity", who)
        self.final_sparsity = _sparsity(final_sparsity, "final_sparsity", who)
        if isinstance(power, (bool, np.bool_)) or not isinstance(power, (int, float, np.integer, np.floating)) \
                or not math.isfinite(power):
            raise ValueError(f"{who}: 'power' must be a finite number, got {power!r}")
        self.power = power if isinstance(power, int) else float(power)
        self.begin_step, self.end_step, self.frequency = self._validate_step(who, begin_step, end_step, frequency,
                                                                             allow_negative_1=False)

    def sparsity(self, step):
        """The formula's sparsity at `step` (a float, whether or not the masks change then)."""
        p = min(1.0, max(0.0, (step - self.begin_step) / (self.end_step - self.begin_step)))
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1.0 - p) ** self.power

    def __call__(self, step):
        """(should_prune, sparsity) at `step` (an int)."""
        return self._should_prune_in_step(step, self.begin_step, self.end_step, self.frequency), self.sparsity(step)

    def get_config(self):
        return {"initial_sparsity": self.initial_sparsity, "final_sparsity": self.final_sparsity,
                "power": self.power, "begin_step": self.begin_step, "end_step": self.end_step,
                "frequency": self.frequency}
