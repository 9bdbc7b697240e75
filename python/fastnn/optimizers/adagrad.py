"""Adagrad: per-parameter learning rates from the sum of squared gradients."""

from ..ops import adagrad_update
from ..ops.optim import _real
from .base import Optimizer


class Adagrad(Optimizer):
    """Adagrad: per-parameter rates from the sum of squared gradients.

    ``acc += g²; w -= lr·g / sqrt(acc + epsilon)``.

    Args:
        learning_rate: float >= 0 or a schedule, default 0.001.
        initial_accumulator_value: float >= 0, default 0.1.
        epsilon: float > 0, default 1e-7 (inside the square root).
        name: str, default "adagrad".
        **kwargs: the base `Optimizer`'s arguments (weight decay, clipping, EMA).
    """

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, name="adagrad", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.initial_accumulator_value = _real("Adagrad", "initial_accumulator_value", initial_accumulator_value,
                                               low=0.0)
        self.epsilon = _real("Adagrad", "epsilon", epsilon, low=0.0, low_open=True)

    def _slot_names(self):
        return {"accumulator": self.initial_accumulator_value}

    def _update(self, w, g, state, lr, step, weight_decay):
        self._decay(w, lr, weight_decay)
        adagrad_update(w, g, state["accumulator"], lr, self.epsilon)

    def get_config(self):
        return {**super().get_config(), "initial_accumulator_value": self.initial_accumulator_value,
                "epsilon": self.epsilon}
