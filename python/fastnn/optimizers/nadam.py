"""Nadam: Adam with Nesterov momentum."""

from ..ops import nadam_update
from ..ops.optim import _real
from .base import Optimizer


class Nadam(Optimizer):
    """Adam with Nesterov momentum (Keras' momentum schedule ``u_t = beta_1·(1 - 0.5·0.96ᵗ)``).

    Args:
        learning_rate: float >= 0 or a schedule, default 0.001.
        beta_1: float in [0, 1), default 0.9: the first moment's decay.
        beta_2: float in [0, 1), default 0.999: the second moment's decay.
        epsilon: float > 0, default 1e-7.
        name: str, default "nadam".
        **kwargs: the base `Optimizer`'s arguments (weight decay, clipping, EMA).
    """

    _slots = {"momentum": 0.0, "velocity": 0.0}

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, name="nadam", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1 = _real("Nadam", "beta_1", beta_1, 0.0, 1.0, high_open=True)
        self.beta_2 = _real("Nadam", "beta_2", beta_2, 0.0, 1.0, high_open=True)
        self.epsilon = _real("Nadam", "epsilon", epsilon, low=0.0, low_open=True)

    def _extra_state_init(self):
        self.u_product = 1.0

    def _scalar_state(self):
        return {"u_product": self.u_product}

    def _begin_step(self):
        t = self.iterations
        self.u_product *= self.beta_1 * (1.0 - 0.5 * 0.96 ** t)

    def _update(self, w, g, state, lr, step, weight_decay):
        u_next = self.beta_1 * (1.0 - 0.5 * 0.96 ** (step + 1))
        nadam_update(w, g, state["momentum"], state["velocity"], step, self.u_product, self.u_product * u_next,
                     lr, self.beta_1, self.beta_2, self.epsilon, weight_decay)

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}
