"""Callbacks: hooks into fit/evaluate/predict (Keras' Callback interface).

``History`` (always installed by fit) records each epoch's logs; ``ProgbarLogger`` shows
progress. Custom callbacks subclass ``Callback``; a callback can stop training by setting
``self.model.stop_training = True``.
"""

import sys

from .utils.progbar import Progbar


class Callback:
    """Base class: override the hooks you need. ``self.model`` and ``self.params`` are set by fit.

    Hooks: on_train_begin/end, on_epoch_begin/end, on_train_batch_begin/end,
    on_test_begin/end, on_test_batch_begin/end, on_predict_begin/end,
    on_predict_batch_begin/end. ``logs`` is a dict of floats.
    """

    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None): pass
    def on_train_end(self, logs=None): pass
    def on_epoch_begin(self, epoch, logs=None): pass
    def on_epoch_end(self, epoch, logs=None): pass
    def on_train_batch_begin(self, batch, logs=None): pass
    def on_train_batch_end(self, batch, logs=None): pass
    def on_test_begin(self, logs=None): pass
    def on_test_end(self, logs=None): pass
    def on_test_batch_begin(self, batch, logs=None): pass
    def on_test_batch_end(self, batch, logs=None): pass
    def on_predict_begin(self, logs=None): pass
    def on_predict_end(self, logs=None): pass
    def on_predict_batch_begin(self, batch, logs=None): pass
    def on_predict_batch_end(self, batch, logs=None): pass


class CallbackList:
    """Calls a hook on every callback in order."""

    def __init__(self, callbacks, model=None, params=None):
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be Callback instances, got {type(cb).__name__}")
            if model is not None:
                cb.set_model(model)
            if params is not None:
                cb.set_params(params)

    def __getattr__(self, hook):
        if not hook.startswith("on_"):
            raise AttributeError(hook)

        def call(*args, **kwargs):
            for cb in self.callbacks:
                getattr(cb, hook)(*args, **kwargs)

        return call


class History(Callback):
    """Records the logs of each epoch: ``history.history['loss']`` is a list, one per epoch.

    Attributes:
        history: dict name -> list of floats.
        epoch: list of epoch indices.
    """

    def __init__(self):
        super().__init__()
        self.history = {}
        self.epoch = []

    def on_train_begin(self, logs=None):
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)
        if self.model is not None:
            self.model.history = self


class ProgbarLogger(Callback):
    """Prints progress: verbose=1 a bar (final line only when not a terminal), 2 a line per epoch.

    Args:
        verbose: 1 or 2.
        stream: where to print (default sys.stdout).
    """

    def __init__(self, verbose=1, stream=None):
        super().__init__()
        self.verbose = verbose
        self.stream = stream
        self._bar = None

    def _out(self):
        return self.stream or sys.stdout

    def on_epoch_begin(self, epoch, logs=None):
        epochs = self.params.get("epochs", 1)
        if epochs > 1:
            self._out().write(f"Epoch {epoch + 1}/{epochs}\n")
        self._bar = Progbar(self.params.get("steps"), self.verbose, self._out())

    def on_train_batch_end(self, batch, logs=None):
        if self._bar is not None:
            self._bar.update(batch + 1, logs)

    def on_epoch_end(self, epoch, logs=None):
        if self._bar is not None:
            self._bar.update(self.params.get("steps"), logs, finalize=True)
            self._bar = None

    def on_test_begin(self, logs=None):
        if self.params.get("evaluating"):
            self._bar = Progbar(self.params.get("steps"), self.verbose, self._out())

    def on_test_batch_end(self, batch, logs=None):
        if self.params.get("evaluating") and self._bar is not None:
            self._bar.update(batch + 1, logs)

    def on_test_end(self, logs=None):
        if self.params.get("evaluating") and self._bar is not None:
            self._bar.update(self.params.get("steps"), logs, finalize=True)
            self._bar = None
