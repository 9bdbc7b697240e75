"""The progress display on terminals of every width: every figure shown, no garbage left.

The reference for "what the user sees" is a small model of a VT100-style terminal (``Screen``):
printable characters fill the row and wrap to the next one after the last column, a carriage
return goes back to the start of the cursor's row, a newline starts the next row. A live line
that wrapped, or that was overwritten by a shorter one without blanking, leaves characters
on this screen; the tests compare the screen with the one the final lines alone give.
"""

import io
import os
import re
import select
import struct
import subprocess
import sys
import textwrap
import time

import pytest

import fastnn
from fastnn.utils.progbar import Progbar

FAKE_FD = 1000  # the fake terminal's file descriptor: os.get_terminal_size answers for it


class Screen:
    """A terminal of `columns` columns with autowrap (the cursor wraps when a character is
    written past the last column, as xterm's pending-wrap state does)."""

    def __init__(self, columns):
        self.columns, self.rows, self.row, self.col, self.pending = columns, [[]], 0, 0, False

    def feed(self, text):
        for ch in text:
            if ch == "\r":
                self.col, self.pending = 0, False
            elif ch == "\n":
                self.row, self.col, self.pending = self.row + 1, 0, False
            else:
                if self.pending:
                    self.row, self.col, self.pending = self.row + 1, 0, False
                while len(self.rows) <= self.row:
                    self.rows.append([])
                line = self.rows[self.row]
                line.extend(" " * (self.col + 1 - len(line)))
                line[self.col] = ch
                if self.col == self.columns - 1:
                    self.pending = True
                else:
                    self.col += 1
        return self

    def lines(self):
        text = ["".join(r).rstrip() for r in self.rows]
        while text and not text[-1]:
            text.pop()
        return text


def expected_figures(logs):
    """'name: value' as Keras formats it: 4 decimals, scientific notation for tiny values."""
    return [f"{k}: {v:.4e}" if 0 < abs(v) <= 1e-3 else f"{k}: {v:.4f}" for k, v in logs.items()]


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True

    def fileno(self):
        return FAKE_FD


@pytest.fixture
def terminal(monkeypatch):
    """A fake terminal stream whose size the test sets: size(columns, rows)."""
    size = {"value": (80, 24)}
    real = os.get_terminal_size

    def get_terminal_size(fd=1):
        if fd == FAKE_FD:
            return os.terminal_size(size["value"])
        return real(fd)

    monkeypatch.setattr(os, "get_terminal_size", get_terminal_size)
    monkeypatch.delenv("COLUMNS", raising=False)
    stream = FakeTerminal()

    def resize(columns, rows=24):
        size["value"] = (columns, rows)

    stream.resize = resize
    return stream


TRAIN = {"loss": 1.66871234, "accuracy": 0.45}
FINAL = {"loss": 1.66871234, "accuracy": 0.45, "val_loss": 1.6, "val_accuracy": 0.48125, "learning_rate": 1e-5}


def run_epoch(stream, steps=12, logs=FINAL):
    bar = Progbar(steps, verbose=1, stream=stream, interval=0.0)
    for step in range(1, steps + 1):
        bar.update(step, {k: v * (1 + 0.01 * step) for k, v in TRAIN.items()})
    bar.update(steps, logs, finalize=True)
    return stream.getvalue()


@pytest.mark.parametrize("size,columns", [
    ((200, 50), 200), ((120, 30), 120), ((80, 24), 80), ((60, 24), 60), ((40, 24), 40), ((24, 10), 24),
    ((0, 0), 80),  # a pseudo-terminal that reports no size: 80 columns
])
def test_every_figure_is_shown_whole_and_the_live_line_leaves_nothing(terminal, size, columns):
    terminal.resize(*size)
    out = run_epoch(terminal)
    live, final = out.rsplit("\r", 1)[0].split("\r")[1:], out.rsplit("\r", 1)[1]
    assert len(live) == 12 and final.endswith("\n")
    for line in live:  # one row each, the last column left free: nothing wraps
        assert "\n" not in line and len(line) <= columns - 1, line
        # the figures come all or none, never cut
        shown = [f for f in expected_figures(TRAIN) if f.split(":")[0] + ":" in line]
        assert shown == [] or len(shown) == len(TRAIN)
        assert re.fullmatch(r" ?\d+/12( \[[=>.]+\])?( - ETA: \d+s)?( - \w+: \d\.\d{4})*", line.rstrip()), line
    rows = final[:-1].split("\n")
    figures = expected_figures(FINAL)
    for figure in figures:  # each figure whole on one row, exactly as formatted
        assert sum(figure in row for row in rows) == 1, (figure, rows)
    logical = " ".join(" ".join(rows).split())  # the rows joined, as one line
    assert re.fullmatch(r"12/12( \[=+\])? - 0s \d+(us|ms|s)/step - " + re.escape(" - ".join(figures)), logical)
    for row in rows:  # within the row, but for a figure wider than the terminal (then alone on its row)
        assert len(row.rstrip()) <= columns - 1 or re.fullmatch(r" *- \w+: \S+", row), row
    # what stays on the screen is the final line alone: the live lines left nothing behind
    assert Screen(columns).feed(out).lines() == Screen(columns).feed(final.lstrip("\r")).lines()


def test_a_wide_terminal_shows_the_full_bar_and_one_line(terminal):
    terminal.resize(200, 50)
    out = run_epoch(terminal)
    final = out.rsplit("\r", 1)[1]
    assert final.startswith("12/12 [==============================] - 0s ") and final.count("\n") == 1
    assert final.rstrip().endswith(" - ".join(expected_figures(FINAL)))


def test_on_80_columns_the_bar_shrinks_before_any_figure_goes(terminal):
    terminal.resize(80, 24)
    out = run_epoch(terminal, logs=TRAIN)
    final = out.rsplit("\r", 1)[1]
    assert re.match(r"12/12 \[=+\] - 0s \d+(us|ms|s)/step - loss: 1\.6687 - accuracy: 0\.4500 *\n$", final), final
    assert 10 <= final.index("]") - final.index("[") - 1 < 30 and len(final.rstrip()) <= 79


def test_a_narrow_terminal_folds_the_final_line_between_figures(terminal):
    terminal.resize(40, 24)
    out = run_epoch(terminal)
    rows = out.rsplit("\r", 1)[1].rstrip("\n").split("\n")
    assert len(rows) > 1 and rows[0].startswith("12/12 - 0s ")
    for row in rows[1:]:  # continuation rows, indented under the first " - "
        assert row.startswith("      - ") and len(row) <= 39


def test_columns_is_the_fallback_of_a_terminal_without_a_size(terminal, monkeypatch):
    terminal.resize(0, 0)
    monkeypatch.setenv("COLUMNS", "50")
    out = run_epoch(terminal)
    assert all(len(line) <= 49 for line in out.replace("\n", "\r").split("\r"))
    assert Screen(50).feed(out).lines() == Screen(50).feed(out.rsplit("\r", 1)[1]).lines()


def test_a_resize_mid_epoch_is_followed(terminal):
    terminal.resize(120, 24)
    bar = Progbar(20, verbose=1, stream=terminal, interval=0.0)
    bar.update(1, TRAIN)
    terminal.resize(40, 24)
    bar.update(2, TRAIN)  # blanks no more than a 40-column row holds: nothing wraps
    terminal.resize(100, 24)
    bar.update(3, TRAIN)
    draws = terminal.getvalue().split("\r")[1:]
    assert [len(d) <= room for d, room in zip(draws, (119, 39, 99))] == [True] * 3
    assert "loss: " in draws[0] and "loss: " not in draws[1] and "loss: " in draws[2]


def test_verbose_2_on_a_terminal_writes_one_line_per_epoch_without_the_bar(terminal):
    terminal.resize(40, 24)
    bar = Progbar(12, verbose=2, stream=terminal, interval=0.0)
    for step in range(1, 13):
        bar.update(step, TRAIN)
    bar.update(12, FINAL, finalize=True)
    out = terminal.getvalue()
    assert "\r" not in out and "[" not in out and out.count("\n") == 1
    assert out.startswith("12/12 - 0s - ") and out.rstrip().endswith(" - ".join(expected_figures(FINAL)))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="'verbose' must be 0, 1 or 2, got 3"):
        Progbar(10, verbose=3)
    with pytest.raises(ValueError, match="'target' must be a non-negative int or None, got -1"):
        Progbar(-1)


# ---- a real pseudo-terminal --------------------------------------------------------------------------
FIT = textwrap.dedent("""
    import numpy as np
    import fastnn as keras
    rng = np.random.default_rng(0)
    x = rng.standard_normal((160, 6)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Dense(8, activation="relu", input_shape=(6,)),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=3, batch_size=16, validation_split=0.25)
""")


def run_in_pty(columns, rows, timeout=60):
    """Runs FIT with its output on a new pseudo-terminal of the given size; what it printed."""
    import fcntl
    import pty
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    here = os.path.dirname(os.path.dirname(fastnn.__file__))  # the child imports the fastnn this test imported
    env["PYTHONPATH"] = os.pathsep.join([here] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    proc = subprocess.Popen([sys.executable, "-c", FIT], stdin=slave, stdout=slave, stderr=slave, env=env,
                            close_fds=True)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        else:
            pytest.fail(f"the fit in the pseudo-terminal did not finish in {timeout} s: {b''.join(chunks)!r}")
        assert proc.wait(timeout=timeout) == 0, b"".join(chunks).decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return b"".join(chunks).decode()


@pytest.mark.parametrize("size,columns", [((80, 24), 80), ((0, 0), 80)])
def test_fit_in_a_real_pseudo_terminal_shows_the_validation_figures(size, columns):
    out = run_in_pty(*size)
    assert "val_loss: " in out and "val_accuracy: " in out
    screen = Screen(columns).feed(out).lines()
    text = "\n".join(screen)
    assert [line for line in screen if line.startswith("Epoch ")] == ["Epoch 1/3", "Epoch 2/3", "Epoch 3/3"]
    for name in ("loss", "accuracy", "val_loss", "val_accuracy"):  # once an epoch: no live line left behind
        assert len(re.findall(rf"(?<![\w]){name}: \d\.\d{{4}}", text)) == 3, (name, screen)
    assert all(len(line) <= columns - 1 for line in screen)
