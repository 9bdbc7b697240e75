"""Keras-style progress display for fit/evaluate/predict.

Three ways to show an epoch, as Keras' ``verbose``:

* ``verbose=1`` on a terminal: a live line, redrawn in place with a carriage return,
  ``12/45 [=======>......................] - ETA: 1s - loss: 0.3102 - accuracy: 0.8750``,
  then the epoch's final line
  ``45/45 [==============================] - 3s 23ms/step - loss: 0.3102 - accuracy: 0.8750``.
* ``verbose=1`` when the output is not a terminal (a log file, CI, a notebook's captured
  output): only the final line, so that logs never fill with carriage-return updates.
* ``verbose=2``: one line per epoch without the bar, ``45/45 - 3s - 23ms/step - loss: ...``.

On a terminal the lines are fitted to its width, measured at each redraw (a resized window
is followed), and the figures are never cut: the bar shrinks, then goes. The final line is
always written whole: when even the figures are wider than the terminal it is broken
between two figures and continues on an indented row (a figure is never split in the
middle, as the terminal's own wrapping would do)::

    144/144 - 0s 64us/step - loss: 1.9931 - accuracy: 0.3681 - val_loss: 1.6267
            - val_accuracy: 0.6944

The live line never wraps: a carriage return only goes back to the start of the cursor's
row, so a wrapped live line would leave its first rows behind at every redraw. So when the
figures do not fit in one row the live line shows the progress alone
(``12/45 [=======>.......] - ETA: 1s``) and the figures come with the final line. This
needs nothing but a carriage return, which every terminal, IDE console and ``script`` log
understands (unlike redrawing several rows with cursor-movement escapes, which breaks on
terminals without them, on resizing, and when other output is printed mid-epoch). The last
column is left free, so that no terminal wraps the live line early. A terminal that reports
no size (0x0, as some CI pseudo-terminals and ``script`` do) is taken to have ``COLUMNS``
columns, or 80.
"""

import numbers
import os
import sys
import time

_BAR_WIDTH = 30  # the bar's inside, in characters, when the terminal has room for it
_MIN_BAR_WIDTH = 10  # narrower bars say too little: drop the bar instead
_DEFAULT_COLUMNS = 80


def _per_step(seconds):
    if seconds >= 1:
        return f"{seconds:.0f}s/step"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.0f}ms/step"
    return f"{seconds * 1e6:.0f}us/step"


def _eta(seconds):
    if seconds >= 3600:
        return f"{int(seconds // 3600)}:{int(seconds % 3600 // 60):02d}:{int(seconds % 60):02d}"
    if seconds >= 60:
        return f"{int(seconds // 60)}:{int(seconds % 60):02d}"
    return f"{seconds:.0f}s"


def format_logs(values):
    """' - loss: 0.3102 - accuracy: 0.8750' (scientific notation for tiny values, as Keras).

    Args:
        values: dict name -> number; entries that are not numbers are left out.

    Returns:
        The string, each entry as `` - name: value``.
    """
    return "".join(_log_parts(values))


def _log_parts(values):
    parts = []
    for key, value in values.items():
        try:
            value = float(value)
        except (TypeError, ValueError):
            continue
        parts.append(f" - {key}: {value:.4e}" if 0 < abs(value) <= 1e-3 else f" - {key}: {value:.4f}")
    return parts


def terminal_columns(stream):
    """The width of the terminal `stream` writes to, in columns.

    Args:
        stream: a file object.

    Returns:
        The terminal's width; when it reports none (no terminal, or a size of 0 as some
        pseudo-terminals give), the ``COLUMNS`` environment variable, else 80.
    """
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):  # no file descriptor, or not a terminal
        columns = 0
    if columns <= 0:
        try:
            columns = int(os.environ.get("COLUMNS", ""))
        except ValueError:
            columns = 0
    return columns if columns > 0 else _DEFAULT_COLUMNS


def _bar(current, target, width):
    """'[=======>......]' with `width` characters inside the brackets."""
    filled = min(width, int(width * current / target)) if target else 0
    inside = "=" * filled if filled == width else "=" * max(filled - 1, 0) + (">" if filled else "")
    return f"[{inside}{'.' * (width - len(inside))}]"


def fit_line(counter, figures, current, target, columns, bar_width=_BAR_WIDTH):
    """``counter [bar]figures`` fitted to `columns`: the bar shrinks, then goes; None if the
    figures alone do not fit.

    Args:
        counter: the "12/45" part.
        figures: the rest, starting with " - ".
        current, target: the progress (target None: no bar).
        columns: the room, in characters.
        bar_width: int, default 30: the bar's widest inside.

    Returns:
        The line (str), at most `columns` characters, or None.
    """
    if target:
        room = columns - len(counter) - len(figures) - 3  # " [" and "]"
        if room >= _MIN_BAR_WIDTH:
            return f"{counter} {_bar(current, target, min(bar_width, room))}{figures}"
    line = counter + figures
    return line if len(line) <= columns else None


def _fold(counter, parts, columns):
    """The final line as rows of at most `columns` characters, broken between the figures
    (`parts`, each " - name: value"); continuation rows are indented under the first " - ".
    A figure wider than a row gets a row of its own, which the terminal wraps."""
    rows, row = [], counter
    for part in parts:
        if len(row) + len(part) <= columns:
            row += part
            continue
        rows.append(row)
        row = " " * len(counter) + part if len(counter) + len(part) <= columns else part.lstrip()
    return rows + [row]


class Progbar:
    """Progress over `target` steps, written as Keras does (see the module's docstring).

    Args:
        target: int or None: the number of steps (None if unknown).
        verbose: 1 (default): a live bar on a terminal, the final line only otherwise;
            2: the final line only, without the bar; 0: nothing.
        stream: file to write to, default None (``sys.stdout``).
        width: int, default 30: the bar's widest inside, in characters (narrower on a
            narrow terminal).
        interval: float, default 0.05: the least time between two redraws of the live
            line, in seconds.
    """

    def __init__(self, target, verbose=1, stream=None, *, width=_BAR_WIDTH, interval=0.05):
        if verbose not in (0, 1, 2):
            raise ValueError(f"Progbar: 'verbose' must be 0, 1 or 2, got {verbose!r}")
        if target is not None and (isinstance(target, bool) or not isinstance(target, numbers.Integral) or target < 0):
            raise ValueError(f"Progbar: 'target' must be a non-negative int or None, got {target!r}")
        self.target, self.verbose = (None if target is None else int(target)), verbose
        self.stream = stream or sys.stdout
        self.width, self.interval = int(width), float(interval)
        self.start = time.perf_counter()
        self.current = 0
        self._interactive = verbose == 1 and bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_draw = None
        self._drawn = 0  # characters of the live line now on the screen

    def update(self, current, values=None, finalize=False):
        """Moves to step `current`.

        Args:
            current: int: the steps done.
            values: dict name -> number, default None: the running values to show
                (loss, metrics).
            finalize: bool, default False: this is the last update: write the final line.
        """
        values = values or {}
        now = time.perf_counter()
        elapsed = now - self.start
        self.current = current
        if self.verbose == 0:
            return
        if finalize:
            self._write_final(current, values, elapsed)
        elif self._interactive and (self._last_draw is None or now - self._last_draw >= self.interval):
            self._draw_live(current, values, elapsed)
            self._last_draw = now

    def _counter(self, current):
        if self.target is None:
            return f"{current:7d}/Unknown"
        return f"{current:{len(str(self.target))}d}/{self.target}"

    def _draw_live(self, current, values, elapsed):
        counter = self._counter(current)
        if self.target and current:
            timing = f" - ETA: {_eta(elapsed / current * max(self.target - current, 0))}"
        else:
            timing = f" - {elapsed:.0f}s"
        room = terminal_columns(self.stream) - 1  # the last column left free: no wrap, on any terminal
        line = fit_line(counter, timing + format_logs(values), current, self.target, room, self.width)
        if line is None:  # the figures do not fit in one row: the progress alone
            line = fit_line(counter, timing, current, self.target, room, self.width) or counter[:room]
        self._write("\r" + line + self._blank(line, room))
        self._drawn = len(line)

    def _blank(self, line, room):
        """Spaces over what the previous live line leaves uncovered: no more than the row
        holds now (after a resize, more would wrap)."""
        return " " * (min(self._drawn, room) - len(line))

    def _write_final(self, current, values, elapsed):
        per_step = _per_step(elapsed / max(current, 1))
        counter = self._counter(current)
        if self.verbose == 2:
            self._write(f"{counter} - {elapsed:.0f}s - {per_step}{format_logs(values)}\n")
            return
        parts = [f" - {elapsed:.0f}s {per_step}"] + _log_parts(values)
        if not self._interactive:
            bar = f" {_bar(current, self.target, self.width)}" if self.target else ""
            self._write(counter + bar + "".join(parts) + "\n")
            return
        columns = terminal_columns(self.stream) - 1
        line = fit_line(counter, "".join(parts), current, self.target, columns, self.width)
        rows = [line] if line is not None else _fold(counter, parts, columns)
        # over the live line, blanking what the first row leaves uncovered
        self._write("\r" + rows[0] + self._blank(rows[0], columns) + "".join("\n" + r for r in rows[1:]) + "\n")
        self._drawn = 0

    def _write(self, text):
        self.stream.write(text)
        self.stream.flush()

