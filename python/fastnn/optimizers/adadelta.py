"""Adadelta: steps scaled by a ratio of moving RMS of updates and gradients."""

from ..ops import adadelta_update
from ..ops.optim import _real
from .base import Optimizer


class Adadelta(Optimizer):
    """Adadelta: steps scaled by a ratio of moving RMS of updates and gradients.

    Args:
        learning_rate: float >= 0 or a schedule, default 0.001.
        rho: float in [0, 1], default 0.95: the moving averages' decay.
        epsilon: float > 0, default 1e-7.
        name: str, default "adadelta".
        **kwargs: the base `Optimizer`'s arguments (weight decay, clipping, EMA).
    """

    _slots = {"accumulated_grad": 0.0, "accumulated_delta_var": 0.0}

    def __init__(self, learning_rate=0.001, rho=0.95, epsilon=1e-7, name="adadelta", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.rho = _real("Adadelta", "rho", rho, 0.0, 1.0)
        self.epsilon = _real("Adadelta", "epsilon", epsilon, low=0.0, low_open=True)

    def _update(self, w, g, state, lr, step, weight_decay):
        self._decay(w, lr, weight_decay)
        adadelta_update(w, g, state["accumulated_grad"], state["accumulated_delta_var"], lr, self.rho,
                        self.epsilon)

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "epsilon": self.epsilon}
