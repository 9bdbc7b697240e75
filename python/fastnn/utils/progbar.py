"""Keras-style progress display for fit/evaluate/predict.

On a terminal: a live bar drawn by tqdm,
``125/125 [==============================] - 3s 23ms/step - loss: 0.3102 - accuracy: 0.8750``.
When the output is not a terminal (a log file, CI): only the final line, so that logs never
fill with carriage-return updates. ``verbose=2``: one line per epoch without the bar.
"""

import sys
import time

import tqdm


def _per_step(seconds):
    if seconds >= 1:
        return f"{seconds:.0f}s/step"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.0f}ms/step"
    return f"{seconds * 1e6:.0f}us/step"


def format_logs(values):
    """' - loss: 0.3102 - accuracy: 0.8750' (scientific notation for tiny values, as Keras)."""
    parts = []
    for key, value in values.items():
        try:
            value = float(value)
        except (TypeError, ValueError):
            continue
        parts.append(f" - {key}: {value:.4e}" if 0 < abs(value) <= 1e-3 else f" - {key}: {value:.4f}")
    return "".join(parts)


class _Bar(tqdm.tqdm):
    """tqdm with a {logs} field: tqdm's own {postfix} would add a leading comma."""

    logs = ""

    @property
    def format_dict(self):
        d = super().format_dict
        d["logs"] = self.logs
        return d


class Progbar:
    """Progress over `target` steps.

    Args:
        target: number of steps (None if unknown: the count is shown without a total, as
            Keras' "Unknown").
        verbose: 1 (bar on a terminal, final line otherwise) or 2 (final line only).
        stream: file to write to (default sys.stdout).
    """

    def __init__(self, target, verbose=1, stream=None):
        self.target, self.verbose = target, verbose
        self.stream = stream or sys.stdout
        self.start = time.perf_counter()
        self.current = 0
        interactive = verbose == 1 and getattr(self.stream, "isatty", lambda: False)()
        self._bar = None
        if interactive:
            self._bar = _Bar(total=target, file=self.stream, ascii=".>=", mininterval=0.1, leave=True,
                             bar_format="{n_fmt}/{total_fmt} [{bar:30}] - {elapsed_s:.0f}s{logs}" if target
                             is not None else "{n_fmt}/Unknown - {elapsed_s:.0f}s{logs}",
                             dynamic_ncols=False)

    def update(self, current, values=None, finalize=False):
        """Moves to step `current` with the running log values; `finalize` ends the line."""
        values = values or {}
        elapsed = time.perf_counter() - self.start
        step_time = elapsed / max(current, 1)
        if self._bar is not None:
            self._bar.logs = f" {_per_step(step_time)}{format_logs(values)}"
            self._bar.update(current - self.current)
            if finalize:
                self._bar.close()
        elif finalize:
            count = f"{current}/{self.target}" if self.target is not None else f"{current}/Unknown"
            if self.verbose == 1:
                line = f"{count} [{'=' * 30}] - {elapsed:.0f}s {_per_step(step_time)}"
            else:
                line = f"{count} - {elapsed:.0f}s - {_per_step(step_time)}"
            self.stream.write(line + format_logs(values) + "\n")
            self.stream.flush()
        self.current = current
