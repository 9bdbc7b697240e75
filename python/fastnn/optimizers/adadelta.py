"""Adadelta: steps scaled by a ratio of moving RMS of updates and gradients."""

from ..ops import adadelta_update
from .base import Optimizer


class Adadelta(Optimizer):
    """Adadelta: steps scaled by a ratio of moving RMS of updates and gradients.

    Args:
        learning_rate: float >= 0 or a schedule, default 0.001.
        rho: float, default 0.95: the moving averages' decay.
        epsilon: float, default 1e-7.
        name: str, default "adadelta".
        **kwargs: the base `Optimizer`'s arguments (weight decay, clipping, EMA).
    """

    _slots = {"accumulated_grad": 0.0, "accumulated_delta_var": 0.0}

    def __init__(self, learning_rate=0.001, rho=0.95, epsilon=1e-7, name="adadelta", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.rho, self.epsilon = float(rho), float(epsilon)

    def _update(self, w, g, state, lr, step, weight_decay):
        self._decay(w, lr, weight_decay)
        adadelta_update(w, g, state["accumulated_grad"], state["accumulated_delta_var"], lr, self.rho,
                        self.epsilon)

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "epsilon": self.epsilon}
