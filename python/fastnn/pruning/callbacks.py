"""``UpdatePruningStep``: the callback that drives pruning during fit (tfmot's name and role)."""

from ..callbacks import Callback


def collect_pruned_layers(model):
    """The PruneLowMagnitude layers of `model` (nested models and layers included), each once."""
    from .wrapper import PruneLowMagnitude

    found, seen, pending = [], set(), [model]
    while pending:
        layer = pending.pop(0)
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, PruneLowMagnitude):
            found.append(layer)
            continue
        pending.extend(layer._sublayers())
    return found


class UpdatePruningStep(Callback):
    """Advances the pruning step before each training batch and updates the masks on schedule.

    Training a model made by ``prune_low_magnitude`` needs it: without it, the first
    training step raises a RuntimeError that says so (as tfmot's wrapper does). Before each
    batch, every pruned layer's ``pruning_step`` goes up by one (the first batch of a new
    pruned model is step 0; a reloaded model continues from its saved step) and, when the
    layer's schedule says so at that step, its masks are recomputed from the weights'
    current magnitudes and the pruned weights zeroed. At the end of each epoch and of
    training the masks are applied once more (the optimizer already keeps pruned weights at
    zero after every update).

    In a training loop of your own: ``callback.set_model(model)``, ``callback.on_train_begin()``
    once, then ``callback.on_train_batch_begin(batch)`` before each batch.

    Example:
        >>> model.fit(x, y, epochs=2, callbacks=[fastnn.pruning.UpdatePruningStep()])
    """

    stops_from_logs_only = True  # it never stops training (data parallelism need not agree on it each batch)

    def __init__(self):
        super().__init__()
        self.prunable_layers = []

    def _reads_batch_logs(self, training=True):
        return False

    def on_train_begin(self, logs=None):
        self.prunable_layers = collect_pruned_layers(self.model) if self.model is not None else []
        for layer in self.prunable_layers:
            layer._stepping = True

    def on_train_batch_begin(self, batch, logs=None):
        for layer in self.prunable_layers:
            layer._advance()

    def on_epoch_end(self, epoch, logs=None):
        for layer in self.prunable_layers:
            layer.apply_masks()

    def on_train_end(self, logs=None):
        for layer in self.prunable_layers:
            layer.apply_masks()
            layer._stepping = False
