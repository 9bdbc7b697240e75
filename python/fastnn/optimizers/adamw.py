"""AdamW: Adam with decoupled weight decay."""

from .adam import Adam


class AdamW(Adam):
    """Adam with decoupled weight decay, applied as ``w -= lr·weight_decay·w`` first.

    Args:
        learning_rate: float >= 0 or a schedule, default 0.001.
        weight_decay: float >= 0, default 0.004 (None is refused).
        beta_1, beta_2, epsilon, amsgrad: as in `Adam` (defaults 0.9, 0.999, 1e-7, False).
        name: str, default "adamw".
        **kwargs: the base `Optimizer`'s other arguments (clipping, EMA).
    """

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, name="adamw", **kwargs):
        if weight_decay is None:
            raise ValueError("AdamW: 'weight_decay' must be a float, got None")
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                         amsgrad=amsgrad, name=name, weight_decay=weight_decay, **kwargs)
