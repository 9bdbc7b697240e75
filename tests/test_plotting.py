"""fastnn.utils.plotting.plot_history: training curves saved as PNG."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastnn
from fastnn.utils.plotting import plot_history

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def mpl():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")  # no display in tests, for the figures made through pyplot
    return matplotlib


@pytest.fixture(scope="module")
def history():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    fastnn.utils.set_random_seed(0)
    model = fastnn.Sequential([fastnn.Input(shape=(4,)), fastnn.layers.Dense(8, activation="relu"),
                               fastnn.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model.fit(x, y, epochs=6, validation_split=0.25, verbose=0)


def _visible_axes(fig):
    return [ax for ax in fig.axes if ax.get_visible()]


def test_writes_a_png_with_one_panel_per_quantity(mpl, history, tmp_path):
    from matplotlib.figure import Figure
    from matplotlib.image import imread

    path = tmp_path / "history.png"
    fig = plot_history(history, path)
    assert isinstance(fig, Figure)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = imread(path)
    height, width = image.shape[:2]
    assert 200 <= height <= 2000 and 400 <= width <= 4000
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image[..., :3].std() > 0.05  # not a blank canvas
    axes = _visible_axes(fig)
    assert [ax.get_title() for ax in axes] == ["loss", "accuracy"]
    for ax in axes:  # train and validation curves, one point per epoch
        labels = [line.get_label() for line in ax.get_lines()]
        assert labels == ["train", "validation"]
        for line in ax.get_lines():
            np.testing.assert_array_equal(line.get_xdata(), np.arange(1, 7))
        assert ax.get_xlabel() == "epoch"
    np.testing.assert_allclose(axes[0].get_lines()[1].get_ydata(), history.history["val_loss"])


def test_accepts_the_history_dict_and_a_model(mpl, history, tmp_path):
    fig = plot_history(history.history, str(tmp_path / "from_dict.png"))
    assert [ax.get_title() for ax in _visible_axes(fig)] == ["loss", "accuracy"]
    assert (tmp_path / "from_dict.png").read_bytes()[:8] == PNG_SIGNATURE
    model = history.model
    fig = plot_history(model, tmp_path / "from_model.png")
    assert len(_visible_axes(fig)) == 2


def test_metrics_selects_and_orders_the_panels(mpl, history, tmp_path):
    fig = plot_history(history, tmp_path / "a.png", metrics=["val_accuracy", "loss"])
    assert [ax.get_title() for ax in _visible_axes(fig)] == ["accuracy", "loss"]
    fig = plot_history(history, tmp_path / "b.png", metrics="loss")
    assert [ax.get_title() for ax in _visible_axes(fig)] == ["loss"]
    with pytest.raises(ValueError, match="no 'precision' in the history"):
        plot_history(history, tmp_path / "c.png", metrics=["precision"])


def test_many_quantities_wrap_onto_rows(mpl, tmp_path):
    logs = {name: [1.0, 0.5, 0.25] for name in ("loss", "a", "b", "c", "d")}
    logs["val_loss"] = [1.2, 0.7, 0.4]
    fig = plot_history(logs, tmp_path / "grid.png")
    assert [ax.get_title() for ax in _visible_axes(fig)] == ["loss", "a", "b", "c", "d"]
    assert len(fig.axes) == 6  # a 2×3 grid, the last panel hidden


def test_uneven_and_non_finite_values(mpl, tmp_path):
    # validation_freq=2 logs val_ every other epoch; a diverging run logs inf and nan
    logs = {"loss": [1.0, 0.8, np.inf, 0.5, np.nan, 0.3], "val_loss": [0.9, 0.6, 0.4]}
    fig = plot_history(logs, tmp_path / "uneven.png")
    train, val = _visible_axes(fig)[0].get_lines()
    np.testing.assert_array_equal(val.get_xdata(), [2, 4, 6])
    assert np.isnan(train.get_ydata()[2]) and np.isnan(train.get_ydata()[4])
    assert (tmp_path / "uneven.png").read_bytes()[:8] == PNG_SIGNATURE


def test_without_a_path_the_figure_is_a_pyplot_figure(mpl, history):
    import matplotlib.pyplot as plt

    fig = plot_history(history)
    try:
        assert plt.fignum_exists(fig.number)
    finally:
        plt.close(fig)


def test_empty_and_invalid_histories(mpl, tmp_path):
    with pytest.raises(ValueError, match="no values to plot"):
        plot_history({}, tmp_path / "empty.png")
    with pytest.raises(ValueError, match="no values to plot"):
        plot_history(fastnn.callbacks.History(), tmp_path / "empty.png")
    with pytest.raises(TypeError, match="expected a History"):
        plot_history([1.0, 0.5], tmp_path / "list.png")


def _run(code):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True)


def test_matplotlib_is_imported_only_when_plotting_and_pyplot_not_for_a_file(mpl, tmp_path):
    out = _run(f"""
        import sys
        from fastnn.utils.plotting import plot_history
        assert "matplotlib" not in sys.modules
        plot_history({{"loss": [1.0, 0.5]}}, {str(tmp_path / "x.png")!r})
        print("matplotlib" in sys.modules, "matplotlib.pyplot" in sys.modules)
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False"]


def test_missing_matplotlib_is_a_clear_import_error_naming_the_extra(tmp_path):
    out = _run(f"""
        import sys
        sys.modules["matplotlib"] = None  # as if matplotlib were not installed
        from fastnn.utils.plotting import plot_history
        try:
            plot_history({{"loss": [1.0, 0.5]}}, {str(tmp_path / "x.png")!r})
        except ImportError as exc:
            print(exc)
    """)
    assert out.returncode == 0, out.stderr
    assert 'pip install "fastnn[plot]"' in out.stdout
