"""Callbacks: hooks into fit/evaluate/predict (Keras' Callback interface and its standard set).

``History`` (always installed by fit) records each epoch's logs; ``ProgbarLogger`` shows
progress. The others stop early, save checkpoints, change the learning rate, log to CSV or
TensorBoard, stop on NaN, or run your lambdas. A callback can stop training by setting
``self.model.stop_training = True``.
"""

import csv
import math
import os
import sys

import numpy as np

from .utils.progbar import Progbar


class Callback:
    """Base class: override the hooks you need. ``self.model`` and ``self.params`` are set by fit.

    In data-parallel training (``fastnn.distribution``) callbacks run on every process with the
    same global logs, except those whose ``rank_zero_only`` is True (the ones that print or
    write files: ProgbarLogger, CSVLogger, TensorBoard), which run on rank 0 alone.

    Hooks: on_train_begin/end, on_epoch_begin/end, on_train_batch_begin/end (by default they
    call on_batch_begin/end, Keras' older names for them), on_test_begin/end,
    on_test_batch_begin/end, on_predict_begin/end, on_predict_batch_begin/end. ``logs`` is a
    dict of floats.
    """

    rank_zero_only = False
    # Data parallelism: True when the callback sets stop_training from its logs alone (which are
    # the same on every process), so the processes need not agree on it at every batch.
    stops_from_logs_only = False

    def __init__(self):
        self.model = None
        self.params = {}

    def _overrides(self, *hooks):
        """Whether this callback implements any of `hooks` (by its class, or as LambdaCallback
        does, by an attribute of its own)."""
        return any(getattr(type(self), h) is not getattr(Callback, h) or h in vars(self) for h in hooks)

    def _reads_batch_logs(self, training=True):
        """Whether it looks at each batch's logs (data parallelism sums them over the processes
        at each batch only when some callback does; else once, at the end of the epoch)."""
        if training:
            return self._overrides("on_train_batch_end", "on_batch_end")
        return self._overrides("on_test_batch_end")

    def _may_stop_on_its_own(self):
        """Whether it might set stop_training at a batch from anything but its logs."""
        return not self.stops_from_logs_only and self._overrides(
            "on_train_batch_begin", "on_train_batch_end", "on_batch_begin", "on_batch_end")

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None): pass
    def on_train_end(self, logs=None): pass
    def on_epoch_begin(self, epoch, logs=None): pass
    def on_epoch_end(self, epoch, logs=None): pass
    def on_batch_begin(self, batch, logs=None): pass
    def on_batch_end(self, batch, logs=None): pass
    def on_train_batch_begin(self, batch, logs=None): self.on_batch_begin(batch, logs)
    def on_train_batch_end(self, batch, logs=None): self.on_batch_end(batch, logs)
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
        indexed = "batch" in hook or "epoch" in hook  # hooks that take (index, logs)

        def call(*args, logs=None):
            # Every callback gets a logs dict, as Keras passes it.
            args = args + ((logs if logs is not None else {}),) if len(args) == int(indexed) else args
            for cb in self.callbacks:
                getattr(cb, hook)(*args)

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
    """Prints progress: "Epoch 3/10", then a bar or a line per epoch (``fastnn.utils.progbar``).

    fit and evaluate add one themselves when their ``verbose`` is not 0. On a terminal the
    lines fit its width: the bar shrinks or goes, every figure is shown, and a final line
    wider than the terminal continues on an indented row.

    With an unknown number of steps (a generator without ``steps_per_epoch``) the first
    epoch counts its steps without a total ("12/Unknown", as Keras); later epochs know it.

    Args:
        verbose: 1 (default, or "auto"): a live bar on a terminal and each epoch's final
            line (only that line when the output is not a terminal); 2: one line per epoch
            without the bar; 0: nothing.
        stream: file to print to, default None (``sys.stdout`` at the time of printing).
    """

    rank_zero_only = True
    stops_from_logs_only = True

    def _reads_batch_logs(self, training=True):
        # the live bar only: a log file gets each epoch's final line
        return self.verbose == 1 and bool(getattr(self._out(), "isatty", lambda: False)())

    def __init__(self, verbose=1, stream=None):
        super().__init__()
        if verbose == "auto":
            verbose = 1
        if verbose not in (0, 1, 2):
            raise ValueError(f"ProgbarLogger: 'verbose' must be 'auto', 0, 1 or 2, got {verbose!r}")
        self.verbose = verbose
        self.stream = stream
        self._bar = None
        self._seen = 0
        self._learnt = None  # the steps counted in the first epoch, when params do not say

    def _out(self):
        return self.stream or sys.stdout

    def _start(self):
        self._seen = 0
        target = self.params.get("steps")
        self._bar = Progbar(target if target is not None else self._learnt, self.verbose, self._out())

    def _advance(self, batch, logs):
        if self._bar is not None:
            self._seen = batch + 1
            self._bar.update(self._seen, logs)

    def _finish(self, logs):
        if self._bar is not None:
            if self._bar.target is None:
                self._learnt = self._seen  # the next epochs show it as their total
            self._bar.update(self._seen if self._bar.target is None else self._bar.target, logs, finalize=True)
            self._bar = None

    def on_train_begin(self, logs=None):
        processes = self.params.get("processes")
        if processes and self.verbose:  # data parallelism: which processes and threads train
            self._out().write(f"Data-parallel training: {processes} (figures over all processes)\n")

    def on_epoch_begin(self, epoch, logs=None):
        epochs = self.params.get("epochs", 1)
        if epochs > 1 and self.verbose:
            self._out().write(f"Epoch {epoch + 1}/{epochs}\n")
        self._start()

    def on_train_batch_end(self, batch, logs=None):
        self._advance(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._finish(logs)

    def on_test_begin(self, logs=None):
        if self.params.get("evaluating"):
            self._start()

    def on_test_batch_end(self, batch, logs=None):
        if self.params.get("evaluating"):
            self._advance(batch, logs)

    def on_test_end(self, logs=None):
        if self.params.get("evaluating"):
            self._finish(logs)


# ---- monitoring a quantity ------------------------------------------------------------------
_MAXIMIZED = ("acc", "accuracy", "auc", "precision", "recall", "f1_score", "top_k")


def _direction(monitor, mode, who):
    """'min' or 'max' for a monitored quantity (mode 'auto': accuracies and AUC go up)."""
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{who}: 'mode' must be 'auto', 'min' or 'max', got {mode!r}")
    if mode != "auto":
        return mode
    name = monitor[4:] if monitor.startswith("val_") else monitor
    return "max" if any(name == m or name.startswith(m) or name.endswith(m) for m in _MAXIMIZED) else "min"


class _Monitor:
    """Tracks the best value of `monitor`; improved() applies min_delta in the right direction."""

    def __init__(self, monitor, mode, min_delta, who):
        self.monitor = monitor
        self.direction = _direction(monitor, mode, who)
        self.min_delta = abs(min_delta)
        self.reset()

    def reset(self):
        self.best = math.inf if self.direction == "min" else -math.inf

    def improved(self, current, reference=None):
        reference = self.best if reference is None else reference
        if self.direction == "min":
            return current < reference - self.min_delta
        return current > reference + self.min_delta


def _current(logs, monitor, who):
    value = (logs or {}).get(monitor)
    if value is None:
        available = ", ".join(sorted(logs or {})) or "none"
        sys.stderr.write(f"{who}: the monitored quantity '{monitor}' is not in the logs (available: {available})\n")
        return None
    return float(value)


class EarlyStopping(Callback):
    """Stops training when `monitor` has stopped improving.

    Args:
        monitor: default "val_loss".
        min_delta: default 0: smaller changes do not count as improvements.
        patience: default 0: epochs without improvement before stopping.
        verbose: default 0.
        mode: "auto" (default), "min" or "max".
        baseline: default None: the value to beat; until it is beaten, patience runs.
        restore_best_weights: default False: at the end of training (stopped early or
            not), set the weights of the best epoch.
        start_from_epoch: default 0: epochs of warm-up before watching.
    """

    def __init__(self, monitor="val_loss", min_delta=0, patience=0, verbose=0, mode="auto", baseline=None,
                 restore_best_weights=False, start_from_epoch=0):
        super().__init__()
        if patience < 0:
            raise ValueError(f"EarlyStopping: 'patience' must be >= 0, got {patience}")
        self._monitor = _Monitor(monitor, mode, min_delta, "EarlyStopping")
        self.monitor, self.patience, self.verbose = monitor, patience, verbose
        self.baseline, self.restore_best_weights, self.start_from_epoch = baseline, restore_best_weights, start_from_epoch

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.stopped_epoch = 0
        self.best_weights = None
        self.best_epoch = 0
        self._monitor.reset()

    @property
    def best(self):
        return self._monitor.best

    def on_epoch_end(self, epoch, logs=None):
        current = _current(logs, self.monitor, "EarlyStopping")
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model.get_weights()  # even if nothing ever improves
        self.wait += 1
        if self._monitor.improved(current):
            self._monitor.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._monitor.improved(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose:
                print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(Callback):
    """Saves the model (or its weights) during training.

    Args:
        filepath: str, formatted with ``epoch`` (1-based) and the logs, e.g.
            ``"ckpt-{epoch:02d}-{val_loss:.2f}.fastnn"``.
        monitor: default "val_loss" (used with save_best_only).
        verbose: default 0.
        save_best_only: default False: only when `monitor` improved.
        save_weights_only: default False: ``model.save_weights`` instead of ``model.save``.
        mode: "auto" (default), "min" or "max".
        save_freq: "epoch" (default) or an int: every that many batches.
        initial_value_threshold: default None: the value the first save must beat.
    """

    stops_from_logs_only = True  # (it never stops training)

    def _reads_batch_logs(self, training=True):
        return training and self.save_freq != "epoch"

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False, save_weights_only=False,
                 mode="auto", save_freq="epoch", initial_value_threshold=None):
        super().__init__()
        self.filepath = os.fspath(filepath)
        self.monitor, self.verbose = monitor, verbose
        self.save_best_only, self.save_weights_only = save_best_only, save_weights_only
        if save_freq != "epoch" and not (isinstance(save_freq, int) and save_freq > 0):
            raise ValueError(f"ModelCheckpoint: 'save_freq' must be 'epoch' or a positive int, got {save_freq!r}")
        self.save_freq = save_freq
        self._monitor = _Monitor(monitor, mode, 0, "ModelCheckpoint")
        self.initial_value_threshold = initial_value_threshold
        self._batches = 0
        self._epoch = 0

    def on_train_begin(self, logs=None):
        self._monitor.reset()
        if self.initial_value_threshold is not None:
            self._monitor.best = float(self.initial_value_threshold)

    @property
    def best(self):
        return self._monitor.best

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.save_freq != "epoch":
            self._batches += 1
            if self._batches % self.save_freq == 0:
                self._save(self._epoch, logs, batch=batch)

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save(epoch, logs)

    def _save(self, epoch, logs, batch=None):
        logs = dict(logs or {})
        try:
            path = self.filepath.format(epoch=epoch + 1, batch=None if batch is None else batch + 1, **logs)
        except KeyError as missing:
            raise KeyError(f"ModelCheckpoint: filepath {self.filepath!r} needs {missing}, which is not in "
                           f"the logs ({', '.join(sorted(logs))})") from None
        if self.save_best_only:
            current = _current(logs, self.monitor, "ModelCheckpoint")
            if current is None or not self._monitor.improved(current):
                return
            if self.verbose:
                print(f"Epoch {epoch + 1}: {self.monitor} improved from {self._monitor.best:.5f} to "
                      f"{current:.5f}, saving model to {path}")
            self._monitor.best = current
        elif self.verbose:
            print(f"Epoch {epoch + 1}: saving model to {path}")
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)


class LearningRateScheduler(Callback):
    """Sets the learning rate at each epoch from ``schedule(epoch, lr)`` (or ``schedule(epoch)``).

    Args:
        schedule: callable returning the new learning rate (a float).
        verbose: default 0.
    """

    def __init__(self, schedule, verbose=0):
        super().__init__()
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        try:
            lr = self.schedule(epoch, optimizer.learning_rate)
        except TypeError:
            lr = self.schedule(epoch)
        if not isinstance(lr, (float, int, np.floating, np.integer)) or not np.isfinite(lr):
            raise ValueError(f"LearningRateScheduler: the schedule must return a finite float, got {lr!r}")
        optimizer.learning_rate = float(lr)
        if self.verbose:
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {float(lr)}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.learning_rate)


class ReduceLROnPlateau(Callback):
    """Multiplies the learning rate by `factor` when `monitor` stops improving.

    Args:
        monitor: default "val_loss". factor: default 0.1 (< 1). patience: default 10.
        verbose: default 0. mode: "auto", "min" or "max". min_delta: default 1e-4.
        cooldown: default 0: epochs to wait after a reduction. min_lr: default 0.
    """

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto", min_delta=1e-4,
                 cooldown=0, min_lr=0.0):
        super().__init__()
        if not 0 <= factor < 1:
            raise ValueError(f"ReduceLROnPlateau: 'factor' must be in [0, 1), got {factor}")
        self.monitor, self.factor, self.patience, self.verbose = monitor, factor, patience, verbose
        self.cooldown, self.min_lr = cooldown, min_lr
        self._monitor = _Monitor(monitor, mode, min_delta, "ReduceLROnPlateau")

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.cooldown_counter = 0
        self._monitor.reset()

    def on_epoch_end(self, epoch, logs=None):
        optimizer = self.model.optimizer
        if logs is not None:
            logs["learning_rate"] = float(optimizer.learning_rate)
        current = _current(logs, self.monitor, "ReduceLROnPlateau")
        if current is None:
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._monitor.improved(current):
            self._monitor.best = current
            self.wait = 0
        elif self.cooldown_counter <= 0:
            self.wait += 1
            if self.wait >= self.patience:
                old = float(optimizer.learning_rate)
                if old > self.min_lr:
                    new = max(old * self.factor, self.min_lr)
                    optimizer.learning_rate = new
                    if self.verbose:
                        print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new}.")
                    self.cooldown_counter = self.cooldown
                    self.wait = 0


class CSVLogger(Callback):
    """Writes each epoch's logs as a CSV row (header: epoch and the log names).

    Args:
        filename: path of the CSV file.
        separator: default ",".
        append: default False: append to an existing file instead of overwriting it.
    """

    rank_zero_only = True

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        self.filename, self.separator, self.append = os.fspath(filename), separator, append
        self._file = self._writer = None
        self._keys = None

    def on_train_begin(self, logs=None):
        exists = self.append and os.path.exists(self.filename) and os.path.getsize(self.filename) > 0
        self._file = open(self.filename, "a" if self.append else "w", newline="")
        self._keys = None
        self._header_written = exists

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self._keys is None:
            self._keys = sorted(logs)
            self._writer = csv.DictWriter(self._file, fieldnames=["epoch"] + self._keys, delimiter=self.separator)
            if not self._header_written:
                self._writer.writeheader()
        row = {"epoch": epoch}
        for key in self._keys:
            value = logs.get(key, "NA")
            row[key] = value if np.ndim(value) == 0 else '"[' + ", ".join(str(v) for v in np.ravel(value)) + ']"'
        self._writer.writerow(row)
        self._file.flush()

    def on_train_end(self, logs=None):
        if self._file is not None:
            self._file.close()
            self._file = None


class TerminateOnNaN(Callback):
    """Stops training as soon as a batch's loss is NaN or infinite."""

    stops_from_logs_only = True

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(loss):
            print(f"Batch {batch}: Invalid loss, terminating training")
            self.model.stop_training = True


class LambdaCallback(Callback):
    """A callback from functions: ``LambdaCallback(on_epoch_end=lambda epoch, logs: ...)``.

    Args: any of on_epoch_begin(epoch, logs), on_epoch_end(epoch, logs),
    on_train_begin(logs), on_train_end(logs), on_train_batch_begin(batch, logs),
    on_train_batch_end(batch, logs) (or on_batch_begin / on_batch_end, as Keras), and the
    test/predict hooks by the same names.
    """

    def __init__(self, **hooks):
        super().__init__()
        for name, fn in hooks.items():
            if not name.startswith("on_") or not hasattr(Callback, name):
                raise TypeError(f"LambdaCallback: unknown hook {name!r}")
            if fn is not None:
                setattr(self, name, fn)


class SwapEMAWeights(Callback):
    """Evaluates with the optimizer's moving average of the weights (``use_ema=True``).

    The averaged weights are swapped in for each evaluation (validation included) and
    swapped back afterwards. With ``swap_on_epoch=True`` they are also in place from the
    end of each epoch to the start of the next, so other callbacks (ModelCheckpoint) see them.
    """

    def __init__(self, swap_on_epoch=False):
        super().__init__()
        self.swap_on_epoch = swap_on_epoch
        self._swapped = False

    def _swap(self):
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and optimizer.use_ema:
            optimizer.swap_ema_weights()
            self._swapped = not self._swapped

    def on_test_begin(self, logs=None):
        if not self._swapped:
            self._swap()
            self._in_test = True

    def on_test_end(self, logs=None):
        if getattr(self, "_in_test", False):
            self._in_test = False
            self._swap()

    def on_epoch_begin(self, epoch, logs=None):
        if self.swap_on_epoch and self._swapped:
            self._swap()

    def on_epoch_end(self, epoch, logs=None):
        if self.swap_on_epoch and not self._swapped:
            self._swap()

    def on_train_end(self, logs=None):
        if self._swapped:
            self._swap()


class TensorBoard(Callback):
    """Writes scalars (and optionally weight histograms) that TensorBoard reads.

    Training values go to ``log_dir/train``, validation values to ``log_dir/validation``, as
    ``epoch_loss``, ``epoch_accuracy``...; with ``update_freq='batch'`` (or an int N) also
    ``batch_loss`` every (N) batch. Uses tensorboardX (``pip install "fastnn[tensorboard]"``).

    Args:
        log_dir: default "logs".
        histogram_freq: default 0: every that many epochs, write each weight's histogram.
        update_freq: "epoch" (default), "batch" or an int.
    """

    rank_zero_only = True
    stops_from_logs_only = True

    def _reads_batch_logs(self, training=True):
        return training and self.update_freq != "epoch"

    def __init__(self, log_dir="logs", histogram_freq=0, update_freq="epoch"):
        super().__init__()
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise ImportError('TensorBoard needs tensorboardX: pip install "fastnn[tensorboard]"') from None
        self._writer_class = SummaryWriter
        self.log_dir = os.fspath(log_dir)
        self.histogram_freq = histogram_freq
        if update_freq not in ("epoch", "batch") and not (isinstance(update_freq, int) and update_freq > 0):
            raise ValueError(f"TensorBoard: 'update_freq' must be 'epoch', 'batch' or a positive int, got {update_freq!r}")
        self.update_freq = 1 if update_freq == "batch" else update_freq
        self._train = self._validation = None
        self._step = 0

    def on_train_begin(self, logs=None):
        self._train = self._writer_class(os.path.join(self.log_dir, "train"))
        self._validation = self._writer_class(os.path.join(self.log_dir, "validation"))

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self.update_freq != "epoch" and self._step % self.update_freq == 0:
            for key, value in (logs or {}).items():
                if np.ndim(value) == 0:
                    self._train.add_scalar(f"batch_{key}", float(value), self._step)

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            if np.ndim(value):
                continue
            if key.startswith("val_"):
                self._validation.add_scalar(f"epoch_{key[4:]}", float(value), epoch)
            else:
                self._train.add_scalar(f"epoch_{key}", float(value), epoch)
        if self.histogram_freq and epoch % self.histogram_freq == 0:
            for var in self.model.weights:
                self._train.add_histogram(var.name, var.value, epoch)
        self._train.flush()
        self._validation.flush()

    def on_train_end(self, logs=None):
        for writer in (self._train, self._validation):
            if writer is not None:
                writer.close()


__all__ = ["Callback", "CallbackList", "History", "ProgbarLogger", "EarlyStopping", "ModelCheckpoint",
           "LearningRateScheduler", "ReduceLROnPlateau", "CSVLogger", "TensorBoard", "TerminateOnNaN",
           "LambdaCallback", "SwapEMAWeights"]
