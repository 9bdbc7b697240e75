"""Adam: adaptive moment estimation, one fused kernel per step."""

from ..ops import adam_update
from ..ops.optim import _real
from .base import Optimizer


class Adam(Optimizer):
    """Adam (the design's fused kernel: moments, bias correction and step in one pass).

    Args:
        learning_rate: float >= 0 or a schedule, default 0.001.
        beta_1: float in [0, 1), default 0.9: the first moment's decay.
        beta_2: float in [0, 1), default 0.999: the second moment's decay.
        epsilon: float > 0, default 1e-7 (added to sqrt(v) before bias correction, as Keras).
        amsgrad: bool, default False: divide by the running maximum of the second moment.
        name: str, default "adam".
        **kwargs: the base `Optimizer`'s arguments (weight decay, clipping, EMA).
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False,
                 name="adam", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        who = type(self).__name__
        self.beta_1 = _real(who, "beta_1", beta_1, 0.0, 1.0, high_open=True)
        self.beta_2 = _real(who, "beta_2", beta_2, 0.0, 1.0, high_open=True)
        self.epsilon = _real(who, "epsilon", epsilon, low=0.0, low_open=True)
        self.amsgrad = bool(amsgrad)

    def _slot_names(self):
        slots = {"momentum": 0.0, "velocity": 0.0}
        if self.amsgrad:
            slots["velocity_hat"] = 0.0
        return slots

    def _update(self, w, g, state, lr, step, weight_decay):
        adam_update(w, g, state["momentum"], state["velocity"], step, state.get("velocity_hat"), lr,
                    self.beta_1, self.beta_2, self.epsilon, weight_decay)

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
                "amsgrad": self.amsgrad}
