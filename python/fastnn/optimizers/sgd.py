"""SGD: stochastic gradient descent with optional (Nesterov) momentum."""

from ..ops import sgd_update
from ..ops.optim import _real
from .base import Optimizer


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum.

    ``w -= lr·g``; with momentum ``m = momentum·m - lr·g; w += m`` (Nesterov:
    ``w += momentum·m - lr·g``).

    Args:
        learning_rate: float >= 0 or a schedule, default 0.01.
        momentum: float in [0, 1], default 0.0.
        nesterov: bool, default False.
        name: str, default "SGD".
        **kwargs: the base `Optimizer`'s arguments (weight decay, clipping, EMA).
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, name="SGD", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        # Keras: ValueError for a momentum that is not a float in [0, 1] (ints accepted here)
        try:
            self.momentum = _real("SGD", "momentum", momentum, 0.0, 1.0)
        except TypeError as error:
            raise ValueError(str(error)) from None
        self.nesterov = bool(nesterov)

    def _slot_names(self):
        return {"momentum": 0.0} if self.momentum else {}

    def _update(self, w, g, state, lr, step, weight_decay):
        self._decay(w, lr, weight_decay)
        sgd_update(w, g, state.get("momentum"), lr, self.momentum, self.nesterov)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}
