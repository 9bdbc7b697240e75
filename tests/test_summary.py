"""model.summary() shows every name and class whole, whatever the width it is given."""

import io
import os

import pytest

import fastnn as keras
from fastnn import layers

LONG = "a_user_named_output_layer_with_a_long_and_descriptive_name_x"  # 60 characters


def long_named_model(functional):
    if functional:
        inputs = keras.Input((5, 3), name="sequence")
        hidden = layers.Bidirectional(layers.LSTM(4), name="bidirectional")(inputs)
        return keras.Model(inputs, layers.Dense(2, name=LONG)(hidden))
    return keras.Sequential([keras.Input((5, 3)), layers.Bidirectional(layers.LSTM(4), name="bidirectional"), layers.Dense(2, name=LONG)])


def summary_lines(model, **kwargs):
    lines = []
    model.summary(print_fn=lines.append, **kwargs)
    return lines


def column(lines, index):
    """Per table row, the text of its column `index` (wrapped lines joined with a space)."""
    header = lines[2]  # the header's first line: each title starts its column
    starts = [0] + [header.index(title) for title in ("Output", "Param", "Connec") if title in header]
    start, end = starts[index], (starts[index + 1] if index + 1 < len(starts) else None)
    rules = [i for i, line in enumerate(lines) if line and set(line) == {"="}]
    cells, current = [], []
    for line in lines[rules[0] + 1:rules[1]] + [""]:
        if not line:
            cells.append(" ".join(c for c in current if c))
            current = []
        else:
            current.append(line[start:end].strip())
    return cells


@pytest.mark.parametrize("functional", [False, True])
def test_by_default_every_name_and_class_is_on_one_line(functional):
    text = "\n".join(summary_lines(long_named_model(functional)))
    assert "\n bidirectional (Bidirectional) " in text
    assert f"\n {LONG} (Dense) " in text and len(LONG) == 60


@pytest.mark.parametrize("functional", [False, True])
@pytest.mark.parametrize("options", [
    {"line_length": 100}, {"line_length": 60}, {"line_length": 40}, {"line_length": 30},
    {"line_length": 80, "positions": [0.2, 0.6, 0.8, 1.0]}, {"positions": [10, 30, 40, 60]},
])
def test_a_narrow_table_wraps_names_within_their_column_and_cuts_nothing(functional, options):
    if not functional and "positions" in options:
        options = {**options, "positions": options["positions"][:3]}
    lines = summary_lines(long_named_model(functional), **options)
    names = column(lines, 0)
    # the name and class whole: broken at the space between them, the long name folded
    assert any(n.replace(" ", "") == "bidirectional(Bidirectional)" for n in names), names
    assert any(n.replace(" ", "") == f"{LONG}(Dense)" for n in names), names
    width = len(lines[1])
    assert set(lines[1]) == {"_"} and all(len(line) <= width for line in lines if not line.startswith(("Total", "Trainable", "Non-")))
    if "line_length" in options and "positions" not in options:
        assert width == options["line_length"]
    assert column(lines, 1) == ["(None, 5, 3)"] * functional + ["(None, 8)", "(None, 2)"]
    assert column(lines, 2) == ["0"] * functional + ["256", "18"] and "Total params: 274 (1.07 KB)" in lines
    if functional:
        assert [c.replace(" ", "") for c in column(lines, 3)] == ["-", "sequence[0][0]", "bidirectional[0][0]"]


def test_the_name_column_keeps_what_line_length_allows_and_breaks_at_the_space():
    natural = len(summary_lines(long_named_model(False))[1])
    lines = summary_lines(long_named_model(False), line_length=natural)
    assert any(line.startswith(f" {LONG} (Dense)  (None, 2)") for line in lines)
    lines = summary_lines(long_named_model(False), line_length=natural - 4)  # a little narrower
    at = next(i for i, line in enumerate(lines) if line.startswith(f" {LONG} "))
    assert lines[at].split() == [LONG, "(None,", "2)", "18"] and lines[at + 1] == " (Dense)"


def test_line_length_and_positions_are_checked():
    model = long_named_model(True)
    with pytest.raises(ValueError, match="'line_length' must leave at least 4 characters to each of the 4 columns "
                                         r"\(at least 16\), got 10"):
        model.summary(line_length=10)
    with pytest.raises(TypeError, match="'line_length' must be an int, got str"):
        model.summary(line_length="80")
    with pytest.raises(TypeError, match="'positions' must be a list of numbers"):
        model.summary(positions=["a"])


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True

    def fileno(self):
        return 1000


def test_printed_to_a_narrow_terminal_the_table_fits_it(monkeypatch, capsys):
    real = os.get_terminal_size
    monkeypatch.setattr(os, "get_terminal_size",
                        lambda fd=1: os.terminal_size((70, 24)) if fd == 1000 else real(fd))
    terminal = FakeTerminal()
    monkeypatch.setattr("sys.stdout", terminal)
    long_named_model(True).summary()
    lines = terminal.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 69
    assert any(n.replace(" ", "") == f"{LONG}(Dense)" for n in column(lines, 0))
