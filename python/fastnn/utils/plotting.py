"""Plotting training curves with matplotlib (an optional dependency: ``pip install "fastnn[plot]"``).

matplotlib is imported when a function here is called, never when fastnn is imported.
"""

import math
import numbers
import os

import numpy as np


def _import_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ImportError('plot_history needs matplotlib, an optional dependency of fastnn: install it with '
                          'pip install "fastnn[plot]" (or pip install matplotlib)') from exc


def _history_dict(history):
    """The {name: [value per epoch]} dict and the epoch indices of a History, a dict or a model."""
    epochs = None
    seen = 0
    while not isinstance(history, dict) and hasattr(history, "history") and seen < 3:
        # a Model (model.history is a History) or a History (history.history is the dict)
        if epochs is None and isinstance(getattr(history, "epoch", None), list):
            epochs = list(history.epoch)
        history, seen = history.history, seen + 1
    if not isinstance(history, dict):
        raise TypeError(f"plot_history: expected a History (what fit returns) or its .history dict, "
                        f"got {type(history).__name__}")
    return history, epochs


def _is_scalar_series(values):
    try:
        return len(values) > 0 and all(isinstance(v, numbers.Real) or np.ndim(v) == 0 for v in values)
    except TypeError:
        return False


def plot_history(history, path=None, metrics=None):
    """Plots the training curves of a fit: one panel per quantity, training and validation.

    Each panel shows one quantity (the loss, then each metric) over the epochs: the
    training value as a solid line and, when fit validated, the ``val_`` value as a dashed
    line. A quantity logged only for validation (or only for training) is drawn alone.

    Args:
        history: the ``History`` returned by ``model.fit`` (or its ``.history`` dict, or a
            model that was fit: its ``model.history``).
        path: str or path-like, default None: where to save the figure as a PNG file. The
            figure is then drawn with the non-interactive Agg canvas (no display needed,
            and pyplot's global state is left alone). With None, the figure is made with
            ``matplotlib.pyplot`` so that ``plt.show()`` displays it.
        metrics: list of names, default None: the quantities to plot, in this order
            (``"loss"``, ``"accuracy"``...; a ``"val_"`` prefix is ignored). None plots the
            loss and every metric in the history.

    Returns:
        The matplotlib ``Figure``.

    Raises:
        ImportError: matplotlib is not installed.
        ValueError: the history is empty, or a requested metric is not in it.

    Example:
        >>> history = model.fit(x, y, epochs=10, validation_split=0.2, verbose=0)
        >>> fig = fastnn.utils.plot_history(history, "curves.png")
    """
    logs, epochs = _history_dict(history)
    series = {name: list(values) for name, values in logs.items() if _is_scalar_series(list(values))}
    if not series:
        raise ValueError("plot_history: the history has no values to plot (was the model trained?)")
    names = _quantities(series, logs, metrics)

    _import_matplotlib()
    if path is not None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        make_figure = Figure
    else:
        import matplotlib.pyplot as plt

        make_figure = plt.figure

    cols = min(len(names), 3)
    rows = math.ceil(len(names) / cols)
    fig = make_figure(figsize=(4.8 * cols, 3.6 * rows))
    if path is not None:
        FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    longest = max(len(v) for v in series.values())
    if epochs is None or len(epochs) != longest:
        epochs = list(range(longest))
    for ax, name in zip(axes, names):
        for key, label, style in ((name, "train", "-"), (f"val_{name}", "validation", "--")):
            if key not in series:
                continue
            values = np.asarray(series[key], dtype=np.float64)
            values[~np.isfinite(values)] = np.nan  # inf would break the axis limits
            x = _epoch_axis(epochs, len(values))
            ax.plot(x, values, style, marker="o" if len(values) < 20 else None, markersize=3, label=label)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.legend()
        if len(epochs) <= 10:
            ax.set_xticks([e + 1 for e in epochs])
    for ax in axes[len(names):]:
        ax.set_visible(False)
    fig.tight_layout()
    if path is not None:
        fig.savefig(os.fspath(path), format="png")
    return fig


def _quantities(series, logs, metrics):
    """The base names to plot (without "val_"), loss first."""
    available = []
    for key in series:
        base = key[4:] if key.startswith("val_") else key
        if base not in available:
            available.append(base)
    if metrics is None:
        return sorted(available, key=lambda name: name != "loss")
    if isinstance(metrics, str):
        metrics = [metrics]
    names = []
    for name in metrics:
        base = name[4:] if name.startswith("val_") else name
        if base not in available:
            why = " (its values are not scalars)" if base in logs or f"val_{base}" in logs else ""
            raise ValueError(f"plot_history: no {base!r} in the history{why}; it has {sorted(available)}")
        if base not in names:
            names.append(base)
    if not names:
        raise ValueError("plot_history: 'metrics' is empty")
    return names


def _epoch_axis(epochs, count):
    """1-based epoch numbers for `count` values; fewer values than epochs (validation_freq > 1)
    are spread evenly, the last value on the last epoch."""
    epochs = [e + 1 for e in epochs]
    if count == len(epochs):
        return epochs
    step = max(len(epochs) // max(count, 1), 1)
    picked = epochs[step - 1::step][:count]
    return picked if len(picked) == count else epochs[:count]
