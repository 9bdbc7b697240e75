"""RMSprop: gradients divided by a moving root mean square."""

from ..ops import rmsprop_update
from ..ops.optim import _real
from .base import Optimizer


class RMSprop(Optimizer):
    """RMSprop: gradients divided by a moving RMS.

    Args:
        learning_rate: float >= 0 or a schedule, default 0.001.
        rho: float in [0, 1], default 0.9: the moving average's decay.
        momentum: float in [0, 1], default 0.0.
        epsilon: float > 0, default 1e-7 (inside the square root).
        centered: bool, default False: normalise by the variance instead.
        name: str, default "rmsprop".
        **kwargs: the base `Optimizer`'s arguments (weight decay, clipping, EMA).
    """

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False,
                 name="rmsprop", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.rho = _real("RMSprop", "rho", rho, 0.0, 1.0)
        self.momentum = _real("RMSprop", "momentum", momentum, 0.0, 1.0)
        self.epsilon = _real("RMSprop", "epsilon", epsilon, low=0.0, low_open=True)
        self.centered = bool(centered)

    def _slot_names(self):
        slots = {"velocity": 0.0}
        if self.momentum > 0:
            slots["momentum"] = 0.0
        if self.centered:
            slots["average_gradient"] = 0.0
        return slots

    def _update(self, w, g, state, lr, step, weight_decay):
        self._decay(w, lr, weight_decay)
        rmsprop_update(w, g, state["velocity"], state.get("average_gradient"), state.get("momentum"),
                       lr, self.rho, self.momentum, self.epsilon)

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon,
                "centered": self.centered}
