"""Built-in losses (fastnn.losses; kernel: cpp/src/loss.cpp) against independent NumPy
implementations of the Keras 3 formulas (see keras/src/losses/losses.py and the backend nn.py):

* every loss reduces the LAST axis: a mean for mse / mae / huber / binary cross-entropy, a sum
  for categorical cross-entropy and KL divergence;
* probabilities are clipped to [1e-7, 1 - 1e-7] (KL: [1e-7, 1]), and categorical
  cross-entropy renormalises y_pred to sum 1 first;
* "sum_over_batch_size" divides the sum of the weighted per-sample losses by the NUMBER of
  per-sample values (never by the sum of the weights); "sum" is the sum; None keeps them.
"""

import numpy as np
import pytest

import fastnn
from fastnn import losses

EPS = 1e-7
DTYPES = [np.float32, np.float64]


# ---- independent references (float64 NumPy) ----------------------------------------------------
def _log_softmax(z):
    top = np.max(z, axis=-1, keepdims=True)
    return z - top - np.log(np.sum(np.exp(z - top), axis=-1, keepdims=True))


def _log_sigmoid(z):
    return -np.logaddexp(0.0, -z)


def _sigmoid(z):
    return np.exp(_log_sigmoid(z))


def _softmax(z):
    return np.exp(_log_softmax(z))


def clip_bounds(dtype):
    """Keras clips with eps and 1 - eps computed in the tensors' dtype (1 - 1e-7 rounds in float32)."""
    dtype = np.dtype(dtype) if np.dtype(dtype).kind == "f" else np.dtype(np.float64)
    lo = dtype.type(EPS)
    return float(lo), float(dtype.type(1) - lo)


def ref_rows(kind, y_true, y_pred, from_logits=False, label_smoothing=0.0, delta=1.0):
    """Per-sample Keras losses, shape y_pred.shape[:-1] (computed in float64)."""
    lo, hi = clip_bounds(np.asarray(y_pred).dtype)
    x = np.asarray(y_pred, np.float64)
    if kind == "scce":
        labels = np.asarray(y_true).reshape(x.shape[:-1]).astype(np.int64)
        t = np.eye(x.shape[-1])[labels]
        kind = "cce"
    else:
        t = np.asarray(y_true, np.float64).reshape(x.shape)
    if kind == "mse":
        return np.mean(np.square(t - x), axis=-1)
    if kind == "mae":
        return np.mean(np.abs(t - x), axis=-1)
    if kind == "huber":
        err = x - t
        a = np.abs(err)
        return np.mean(np.where(a <= delta, 0.5 * err ** 2, delta * a - 0.5 * delta ** 2), axis=-1)
    if kind == "bce":
        if label_smoothing:
            t = t * (1 - label_smoothing) + 0.5 * label_smoothing
        if from_logits:
            per = -t * _log_sigmoid(x) - (1 - t) * _log_sigmoid(-x)
        else:
            out = np.clip(x, lo, hi)
            per = -(t * np.log(out) + (1 - t) * np.log(1 - out))
        return np.mean(per, axis=-1)
    if kind == "cce":
        if label_smoothing:
            t = t * (1 - label_smoothing) + label_smoothing / x.shape[-1]
        if from_logits:
            return -np.sum(t * _log_softmax(x), axis=-1)
        out = x / np.sum(x, axis=-1, keepdims=True)
        out = np.clip(out, lo, hi)
        return -np.sum(t * np.log(out), axis=-1)
    if kind == "kld":
        yt = np.clip(t, lo, 1)
        yp = np.clip(x, lo, 1)
        return np.sum(yt * np.log(yt / yp), axis=-1)
    raise AssertionError(kind)


def keras_weights(sample_weight, rows_shape):
    """Keras' squeeze_or_expand_to_same_rank, then broadcasting, for per-sample weights."""
    w = np.asarray(sample_weight, np.float64)
    if w.ndim == len(rows_shape) + 1 and w.shape[-1] == 1:
        w = w[..., 0]
    while w.ndim < len(rows_shape):
        w = w[..., None]
    return np.broadcast_to(w, rows_shape)


def ref_reduce(rows, sample_weight=None, reduction="sum_over_batch_size"):
    values = rows if sample_weight is None else rows * keras_weights(sample_weight, rows.shape)
    if reduction is None:
        return values
    total = np.sum(values)
    return total / values.size if reduction == "sum_over_batch_size" else total


# ---- the cases -------------------------------------------------------------------------------------
# id: (class, constructor kwargs, reference kind, data kind)
CASES = {
    "mse": (losses.MeanSquaredError, {}, "mse", "regression"),
    "mae": (losses.MeanAbsoluteError, {}, "mae", "regression"),
    "huber": (losses.Huber, {}, "huber", "regression"),
    "huber_delta0.4": (losses.Huber, {"delta": 0.4}, "huber", "regression"),
    "huber_delta2.5": (losses.Huber, {"delta": 2.5}, "huber", "regression"),
    "bce": (losses.BinaryCrossentropy, {}, "bce", "binary"),
    "bce_ls": (losses.BinaryCrossentropy, {"label_smoothing": 0.2}, "bce", "binary"),
    "bce_logits": (losses.BinaryCrossentropy, {"from_logits": True}, "bce", "logits"),
    "bce_logits_ls": (losses.BinaryCrossentropy, {"from_logits": True, "label_smoothing": 0.1}, "bce", "logits"),
    "cce": (losses.CategoricalCrossentropy, {}, "cce", "categorical"),
    "cce_ls": (losses.CategoricalCrossentropy, {"label_smoothing": 0.3}, "cce", "categorical"),
    "cce_logits": (losses.CategoricalCrossentropy, {"from_logits": True}, "cce", "cat_logits"),
    "cce_logits_ls": (losses.CategoricalCrossentropy, {"from_logits": True, "label_smoothing": 0.15},
                      "cce", "cat_logits"),
    "scce": (losses.SparseCategoricalCrossentropy, {}, "scce", "sparse"),
    "scce_logits": (losses.SparseCategoricalCrossentropy, {"from_logits": True}, "scce", "sparse_logits"),
    "kld": (losses.KLDivergence, {}, "kld", "kld"),
}
CASE_IDS = list(CASES)


def make_loss(case, **extra):
    cls, kwargs, _, _ = CASES[case]
    return cls(**kwargs, **extra)


def ref_kwargs(case):
    _, kwargs, kind, _ = CASES[case]
    return kind, {k: v for k, v in kwargs.items()}


def reference_rows(case, y_true, y_pred):
    kind, kw = ref_kwargs(case)
    return ref_rows(kind, y_true, y_pred, **kw)


def make_data(case, rng, shape, dtype=np.float64):
    """(y_true, y_pred) of `shape`, away from clipping bounds and from the kinks of |e| and Huber."""
    _, kwargs, _, data = CASES[case]
    rows = shape[:-1]
    c = shape[-1]
    if data == "regression":
        delta = kwargs.get("delta", 1.0)
        y_true = rng.normal(0, 1, shape)
        small = rng.uniform(0.1, 0.8, shape) * delta
        large = rng.uniform(1.25, 3.0, shape) * delta
        magnitude = np.where(rng.random(shape) < 0.5, small, large)
        y_pred = y_true + np.where(rng.random(shape) < 0.5, -1, 1) * magnitude
    elif data == "binary":
        y_true = np.where(rng.random(shape) < 0.3, rng.uniform(0, 1, shape), rng.integers(0, 2, shape))
        y_pred = rng.uniform(0.05, 0.95, shape)
    elif data == "logits":
        y_true = np.where(rng.random(shape) < 0.3, rng.uniform(0, 1, shape), rng.integers(0, 2, shape))
        y_pred = rng.normal(0, 3, shape)
    elif data in ("categorical", "cat_logits"):
        labels = rng.integers(0, c, rows)
        y_true = np.eye(c)[labels]
        soft = rng.dirichlet(np.ones(c), rows)
        y_true = np.where(rng.random(rows + (1,)) < 0.3, soft, y_true)
        # unnormalised probabilities: the loss renormalises them
        y_pred = rng.uniform(0.1, 1.0, shape) if data == "categorical" else rng.normal(0, 2, shape)
    elif data in ("sparse", "sparse_logits"):
        y_true = rng.integers(0, c, rows)
        y_pred = rng.uniform(0.1, 1.0, shape) if data == "sparse" else rng.normal(0, 2, shape)
    elif data == "kld":
        y_true = rng.dirichlet(np.ones(c), rows)
        y_pred = rng.uniform(0.05, 0.95, shape)
    else:
        raise AssertionError(data)
    y_pred = y_pred.astype(dtype)
    if not CASES[case][2] == "scce":
        y_true = y_true.astype(dtype)
    return y_true, y_pred


def tol(dtype):
    return dict(rtol=1e-11, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-6)


def fd_grad(f, x, h=1e-6):
    """Central finite differences of a scalar function of a float64 array."""
    x = np.array(x, dtype=np.float64)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        keep = x[i]
        x[i] = keep + h
        up = f(x)
        x[i] = keep - h
        down = f(x)
        x[i] = keep
        g[i] = (up - down) / (2 * h)
    return g


def rel_err(got, want):
    return np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-300)


# ---- values ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(6, 4), (3, 2, 5), (7, 1)])
@pytest.mark.parametrize("case", CASE_IDS)
def test_value_matches_keras_formula(rng, case, shape, dtype):
    y_true, y_pred = make_data(case, rng, shape, dtype)
    rows = reference_rows(case, y_true, y_pred)
    assert rows.shape == shape[:-1]
    loss = make_loss(case)
    value = loss(y_true, y_pred)
    assert isinstance(value, float)
    np.testing.assert_allclose(value, np.mean(rows), **tol(dtype))
    per_sample = loss.call(y_true, y_pred)
    assert per_sample.shape == shape[:-1]
    np.testing.assert_allclose(per_sample, rows, **tol(dtype))
    # the value of value_and_grad is the same number (up to float rounding: the kernel may
    # contract a*b+c into an FMA differently when it also writes the gradient)
    v2, grad = loss.value_and_grad(y_true, y_pred)
    np.testing.assert_allclose(v2, value, rtol=1e-15 if dtype == np.float64 else 1e-6)
    assert grad.shape == y_pred.shape and grad.dtype == dtype


def test_hand_computed_values_mean_vs_sum_over_last_axis():
    """Mean over the last axis for mse/mae/huber/bce, sum for cce/kld (numbers by hand)."""
    assert losses.MeanSquaredError()([[0.0, 0.0]], [[1.0, 3.0]]) == pytest.approx(5.0, rel=1e-12)
    assert losses.MeanAbsoluteError()([[0.0, 0.0]], [[1.0, -3.0]]) == pytest.approx(2.0, rel=1e-12)
    huber = losses.Huber(delta=1.0)(np.array([[0.0, 0.0]]), np.array([[0.5, 3.0]]))
    assert huber == pytest.approx((0.125 + 2.5) / 2, rel=1e-12)
    bce = losses.BinaryCrossentropy()(np.array([[1.0, 0.0]]), np.array([[0.5, 0.5]]))
    assert bce == pytest.approx(np.log(2), rel=1e-12)  # mean of two log 2
    cce = losses.CategoricalCrossentropy()(np.array([[1.0, 1.0]]), np.array([[0.5, 0.5]]))
    assert cce == pytest.approx(2 * np.log(2), rel=1e-12)  # sum of two log 2
    kld = losses.KLDivergence()(np.array([[0.5, 0.5]]), np.array([[0.25, 0.75]]))
    assert kld == pytest.approx(0.5 * np.log(2) + 0.5 * np.log(2 / 3), rel=1e-12)
    scce = losses.SparseCategoricalCrossentropy()(np.array([1]), np.array([[0.2, 0.8]]))
    assert scce == pytest.approx(-np.log(0.8), rel=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_categorical_crossentropy_renormalises_probabilities(rng, dtype):
    y_true, y_pred = make_data("cce", rng, (5, 4), np.float64)
    p = y_pred / y_pred.sum(axis=-1, keepdims=True)
    loss = losses.CategoricalCrossentropy(reduction=None)
    base = loss(y_true.astype(dtype), p.astype(dtype))
    for scale in (0.5, 3.0):
        np.testing.assert_allclose(loss(y_true.astype(dtype), (scale * p).astype(dtype)), base, **tol(dtype))
    # a renormalisation-invariant loss: the gradient is orthogonal to y_pred in each row
    _, grad = losses.CategoricalCrossentropy(reduction="sum").value_and_grad(y_true, 3.0 * p)
    np.testing.assert_allclose(np.sum(grad * 3.0 * p, axis=-1), 0, atol=1e-12)
    # sparse labels: the same renormalisation
    labels = rng.integers(0, 4, 5)
    sparse = losses.SparseCategoricalCrossentropy(reduction=None)
    np.testing.assert_allclose(sparse(labels, 2.0 * p), sparse(labels, p), rtol=1e-12)
    np.testing.assert_allclose(sparse(labels, 2.0 * p), -np.log(p[np.arange(5), labels]), rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_probabilities_are_clipped_at_1e_7(dtype):
    # binary: y_pred 0 and 1 (and beyond the bounds) give log(1e-7), finite; no gradient there
    y_true = np.array([[1.0, 0.0, 1.0, 0.0, 1.0, 0.0]], dtype)
    y_pred = np.array([[0.0, 1.0, 1e-9, 1 - 1e-9, 1.0, 0.0]], dtype)
    value, grad = losses.BinaryCrossentropy().value_and_grad(y_true, y_pred)
    lo, hi = clip_bounds(dtype)
    assert np.isfinite(value)
    np.testing.assert_allclose(value, ref_rows("bce", y_true, y_pred)[0], rtol=1e-6 if dtype == np.float32 else 1e-12)
    # (1, 0), (1, 1e-9) -> -log(lo); (0, 1), (0, 1 - 1e-9) -> -log(1 - hi); (1, 1), (0, 0) -> about 1e-7
    np.testing.assert_allclose(value, -(2 * np.log(lo) + 2 * np.log(1 - hi) + np.log(hi) + np.log(1 - lo)) / 6,
                               rtol=1e-6 if dtype == np.float32 else 1e-12)
    if dtype == np.float64:
        np.testing.assert_allclose(value, 4 * -np.log(EPS) / 6, rtol=1e-8)
    assert np.all(grad == 0)
    # categorical: a zero probability on the true class costs -log(1e-7)
    y_true = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype)
    y_pred = np.array([[0.0, 0.5, 0.5], [0.0, 2.0, 2.0]], dtype)
    value, grad = losses.CategoricalCrossentropy(reduction=None).value_and_grad(y_true, y_pred)
    np.testing.assert_allclose(value, [-np.log(EPS), np.log(2)], rtol=1e-6 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(value, ref_rows("cce", y_true, y_pred),
                               rtol=1e-6 if dtype == np.float32 else 1e-12)
    assert np.all(np.isfinite(grad))
    # KL divergence: y_true and y_pred both clipped to [1e-7, 1]
    y_true = np.array([[0.0, 1.0], [0.3, 0.7]], dtype)
    y_pred = np.array([[0.5, 0.0], [0.3, 0.7]], dtype)
    value = losses.KLDivergence(reduction=None)(y_true, y_pred)
    np.testing.assert_allclose(value, ref_rows("kld", y_true, y_pred),
                               rtol=1e-6 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(value[0], lo * np.log(lo / 0.5) + np.log(1 / lo),
                               rtol=1e-6 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(value[1], 0, atol=1e-6)


def test_integer_targets_are_converted(rng):
    y_pred = rng.uniform(0.1, 1, (4, 3))
    labels = np.array([0, 2, 1, 2])
    onehot_int = np.eye(3, dtype=np.int64)[labels]
    cce = losses.CategoricalCrossentropy()
    assert cce(onehot_int, y_pred) == pytest.approx(cce(onehot_int.astype(np.float64), y_pred), rel=1e-15)
    assert cce(onehot_int, y_pred) == pytest.approx(losses.SparseCategoricalCrossentropy()(labels, y_pred),
                                                    rel=1e-12)


# ---- by name, by class, function forms ----------------------------------------------------------
NAMES = {
    "mse": losses.MeanSquaredError, "mean_squared_error": losses.MeanSquaredError,
    "mae": losses.MeanAbsoluteError, "mean_absolute_error": losses.MeanAbsoluteError,
    "huber": losses.Huber, "huber_loss": losses.Huber,
    "binary_crossentropy": losses.BinaryCrossentropy,
    "categorical_crossentropy": losses.CategoricalCrossentropy,
    "sparse_categorical_crossentropy": losses.SparseCategoricalCrossentropy,
    "kl_divergence": losses.KLDivergence, "kld": losses.KLDivergence,
    "kullback_leibler_divergence": losses.KLDivergence,
}
DEFAULT_CASE = {losses.MeanSquaredError: "mse", losses.MeanAbsoluteError: "mae", losses.Huber: "huber",
                losses.BinaryCrossentropy: "bce", losses.CategoricalCrossentropy: "cce",
                losses.SparseCategoricalCrossentropy: "scce", losses.KLDivergence: "kld"}


@pytest.mark.parametrize("name", list(NAMES))
def test_get_by_name(rng, name):
    cls = NAMES[name]
    loss = losses.get(name)
    assert type(loss) is cls
    assert loss.reduction == "sum_over_batch_size"
    assert type(losses.get(name.upper())) is cls
    case = DEFAULT_CASE[cls]
    y_true, y_pred = make_data(case, rng, (5, 3))
    assert loss(y_true, y_pred) == pytest.approx(np.mean(reference_rows(case, y_true, y_pred)), rel=1e-11)
    value, grad = loss.value_and_grad(y_true, y_pred)
    assert grad.shape == y_pred.shape


def test_get_by_class_instance_and_function():
    for cls in DEFAULT_CASE:
        assert type(losses.get(cls)) is cls
        instance = cls()
        assert losses.get(instance) is instance
    assert losses.MeanSquaredError().name == "mean_squared_error"
    assert losses.Huber().name == "huber_loss"
    assert losses.KLDivergence().name == "kl_divergence"
    pairs = {losses.mean_squared_error: losses.MeanSquaredError, losses.mse: losses.MeanSquaredError,
             losses.mean_absolute_error: losses.MeanAbsoluteError, losses.mae: losses.MeanAbsoluteError,
             losses.huber: losses.Huber, losses.binary_crossentropy: losses.BinaryCrossentropy,
             losses.categorical_crossentropy: losses.CategoricalCrossentropy,
             losses.sparse_categorical_crossentropy: losses.SparseCategoricalCrossentropy,
             losses.kl_divergence: losses.KLDivergence, losses.kld: losses.KLDivergence}
    for fn, cls in pairs.items():
        assert type(losses.get(fn)) is cls


def test_get_rejects_unknown():
    with pytest.raises(ValueError, match="Unknown loss 'no_such_loss'"):
        losses.get("no_such_loss")
    with pytest.raises(TypeError, match="loss must be"):
        losses.get(3)


FUNCTIONS = [
    ("mean_squared_error", {}, "mse"), ("mse", {}, "mse"), ("MSE", {}, "mse"),
    ("mean_absolute_error", {}, "mae"), ("mae", {}, "mae"), ("MAE", {}, "mae"),
    ("huber", {}, "huber"), ("huber", {"delta": 0.4}, "huber_delta0.4"),
    ("binary_crossentropy", {}, "bce"), ("binary_crossentropy", {"label_smoothing": 0.2}, "bce_ls"),
    ("binary_crossentropy", {"from_logits": True}, "bce_logits"),
    ("binary_crossentropy", {"from_logits": True, "label_smoothing": 0.1}, "bce_logits_ls"),
    ("categorical_crossentropy", {}, "cce"), ("categorical_crossentropy", {"label_smoothing": 0.3}, "cce_ls"),
    ("categorical_crossentropy", {"from_logits": True}, "cce_logits"),
    ("categorical_crossentropy", {"from_logits": True, "label_smoothing": 0.15}, "cce_logits_ls"),
    ("sparse_categorical_crossentropy", {}, "scce"),
    ("sparse_categorical_crossentropy", {"from_logits": True}, "scce_logits"),
    ("kl_divergence", {}, "kld"), ("kld", {}, "kld"), ("KLD", {}, "kld"),
    ("kullback_leibler_divergence", {}, "kld"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fname,kwargs,case", FUNCTIONS, ids=[f"{f}-{c}" for f, _, c in FUNCTIONS])
def test_function_forms_return_per_sample_values(rng, fname, kwargs, case, dtype):
    y_true, y_pred = make_data(case, rng, (4, 2, 3), dtype)
    got = getattr(losses, fname)(y_true, y_pred, **kwargs)
    assert got.shape == (4, 2)
    np.testing.assert_allclose(got, reference_rows(case, y_true, y_pred), **tol(dtype))


# ---- reductions and sample weights --------------------------------------------------------------
@pytest.mark.parametrize("case", CASE_IDS)
def test_reductions_with_sample_weight(rng, case):
    n = 6
    y_true, y_pred = make_data(case, rng, (n, 3))
    rows = reference_rows(case, y_true, y_pred)
    w = np.array([0.0, 1.0, 2.5, 0.5, 3.0, 1.0])  # sum 8 != n
    weighted = rows * w
    over_batch = make_loss(case)(y_true, y_pred, sample_weight=w)
    assert over_batch == pytest.approx(np.sum(weighted) / n, rel=1e-11)
    assert over_batch != pytest.approx(np.sum(weighted) / np.sum(w), rel=1e-3)
    assert make_loss(case, reduction="sum")(y_true, y_pred, w) == pytest.approx(np.sum(weighted), rel=1e-11)
    none = make_loss(case, reduction=None)(y_true, y_pred, w)
    assert isinstance(none, np.ndarray) and none.shape == (n,)
    np.testing.assert_allclose(none, weighted, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(make_loss(case, reduction=None)(y_true, y_pred), rows, rtol=1e-11)
    # no weights
    assert make_loss(case, reduction="sum")(y_true, y_pred) == pytest.approx(np.sum(rows), rel=1e-11)
    assert make_loss(case)(y_true, y_pred) == pytest.approx(np.mean(rows), rel=1e-11)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,weight_shape", [
    ((5, 3), (5,)), ((5, 3), (5, 1)), ((5, 1), (5,)), ((5, 1), (5, 1)),
    ((4, 3, 2), (4,)), ((4, 3, 2), (4, 1)), ((4, 3, 2), (4, 3)), ((4, 3, 2), (4, 3, 1)),
])
@pytest.mark.parametrize("case", ["mse", "huber", "bce_logits", "cce", "scce_logits", "kld"])
def test_sample_weight_shapes(rng, case, shape, weight_shape, dtype):
    y_true, y_pred = make_data(case, rng, shape, dtype)
    w = rng.uniform(0.1, 3.0, weight_shape).astype(dtype)
    rows = reference_rows(case, y_true, y_pred)
    for reduction in ("sum_over_batch_size", "sum", None):
        got = make_loss(case, reduction=reduction)(y_true, y_pred, sample_weight=w)
        want = ref_reduce(rows, w, reduction)
        if reduction is None:
            assert got.shape == shape[:-1]
        np.testing.assert_allclose(got, want, **tol(dtype))
    # the weights scale each row's gradient: sum_over_batch_size divides by the row count
    _, g_w = make_loss(case).value_and_grad(y_true, y_pred, w)
    _, g_1 = make_loss(case, reduction="sum").value_and_grad(y_true, y_pred)
    wb = keras_weights(w, shape[:-1])[..., None]
    np.testing.assert_allclose(g_w, g_1 * wb / np.prod(shape[:-1]), **tol(dtype))


def test_sparse_labels_with_trailing_one(rng):
    for shape in [(6, 4), (3, 2, 4)]:
        _, y_pred = make_data("scce", rng, shape)
        labels = rng.integers(0, 4, shape[:-1])
        for from_logits in (False, True):
            loss = losses.SparseCategoricalCrossentropy(from_logits=from_logits, reduction=None)
            flat = loss(labels, y_pred)
            np.testing.assert_array_equal(loss(labels[..., None], y_pred), flat)
            np.testing.assert_array_equal(loss(labels.astype(np.float64), y_pred), flat)
            kind_kw = {"from_logits": from_logits}
            np.testing.assert_allclose(flat, ref_rows("scce", labels, y_pred, **kind_kw), rtol=1e-11)
            v1, g1 = losses.SparseCategoricalCrossentropy(from_logits).value_and_grad(labels, y_pred)
            v2, g2 = losses.SparseCategoricalCrossentropy(from_logits).value_and_grad(labels[..., None], y_pred)
            assert v1 == v2
            np.testing.assert_array_equal(g1, g2)


def test_regression_targets_of_shape_n_for_predictions_n_1(rng):
    y_true = rng.normal(size=5)
    y_pred = rng.normal(size=(5, 1))
    got = losses.MeanSquaredError(reduction=None)(y_true, y_pred)
    np.testing.assert_allclose(got, (y_true - y_pred[:, 0]) ** 2, rtol=1e-12)


# ---- dtypes -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASE_IDS)
def test_float32_matches_float64(rng, case):
    y_true, y_pred = make_data(case, rng, (8, 5))
    y_true32 = y_true if CASES[case][2] == "scce" else y_true.astype(np.float32)
    y_pred32 = y_pred.astype(np.float32)
    w = rng.uniform(0.5, 2, 8)
    v64, g64 = make_loss(case).value_and_grad(y_true32 if CASES[case][2] == "scce" else
                                              y_true32.astype(np.float64), y_pred32.astype(np.float64), w)
    v32, g32 = make_loss(case).value_and_grad(y_true32, y_pred32, w)
    assert g32.dtype == np.float32 and g64.dtype == np.float64
    assert v32 == pytest.approx(v64, rel=2e-5)
    np.testing.assert_allclose(g32, g64, rtol=2e-4, atol=1e-6 * np.max(np.abs(g64)))
    rows32 = make_loss(case, reduction=None)(y_true32, y_pred32)
    assert rows32.dtype == np.float32


# ---- gradients against finite differences ----------------------------------------------------------
@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum"])
@pytest.mark.parametrize("shape,weight_shape", [((5, 4), (5,)), ((3, 2, 4), (3,)), ((4, 1), (4, 1)),
                                                 ((5, 4), None)])
@pytest.mark.parametrize("case", CASE_IDS)
def test_gradient_matches_finite_differences(rng, case, shape, weight_shape, reduction):
    y_true, y_pred = make_data(case, rng, shape)
    w = None if weight_shape is None else rng.uniform(0.2, 2.0, weight_shape)
    loss = make_loss(case, reduction=reduction)
    value, grad = loss.value_and_grad(y_true, y_pred, w)
    assert value == pytest.approx(ref_reduce(reference_rows(case, y_true, y_pred), w, reduction), rel=1e-11)
    fd = fd_grad(lambda p: loss(y_true, p, w), y_pred)
    assert grad.shape == y_pred.shape
    assert rel_err(grad, fd) < 1e-6
    # and against the reference formula's own finite differences
    fd_ref = fd_grad(lambda p: ref_reduce(reference_rows(case, y_true, p), w, reduction), y_pred)
    assert rel_err(grad, fd_ref) < 1e-6


# ---- cross-entropies from logits ---------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_categorical_from_logits_is_stable_on_huge_logits(dtype):
    z = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [0.0, 0.0, 0.0], [-1e4, -1e4, -1e4]], dtype)
    labels = np.array([1, 0, 2, 1])
    y = np.eye(3, dtype=dtype)[labels]
    exact_rows = np.array([2e4, 2e4 + np.log(2), np.log(3), np.log(3)])
    softmax = np.array([[1, 0, 0], [0, 0.5, 0.5], [1 / 3] * 3, [1 / 3] * 3])
    # the exact values are representable: a stable log-sum-exp gets within a few ulps
    rtol = 64 * float(np.finfo(dtype).eps)
    for loss, target in [(losses.CategoricalCrossentropy(from_logits=True), y),
                         (losses.SparseCategoricalCrossentropy(from_logits=True), labels)]:
        value, grad, probs = loss.value_and_grad(target, z, want_probs=True)
        assert np.isfinite(value)
        assert value == pytest.approx(np.mean(exact_rows), rel=rtol)
        assert value == pytest.approx(np.mean(ref_rows("cce", y, z, from_logits=True)), rel=rtol)
        assert grad.dtype == dtype and probs.dtype == dtype
        assert np.all(np.isfinite(grad)) and np.all(np.isfinite(probs))
        np.testing.assert_allclose(grad, (softmax - y) / len(z), rtol=rtol, atol=1e-30)
        np.testing.assert_allclose(probs, softmax, rtol=rtol, atol=1e-30)
        rows = type(loss)(from_logits=True, reduction=None)(target, z)
        np.testing.assert_allclose(rows, exact_rows, rtol=rtol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_from_logits_is_stable_on_huge_logits(dtype):
    z = np.array([[1e4, -1e4, 0.0, 30.0], [-1e4, 1e4, -30.0, 1e4]], dtype)
    t = np.array([[0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]], dtype)
    z64 = z.astype(np.float64)
    exact = np.maximum(z64, 0) - z64 * t + np.log1p(np.exp(-np.abs(z64)))
    sig = np.array([[1.0, 0.0, 0.5, _sigmoid(30.0)], [0.0, 1.0, _sigmoid(-30.0), 1.0]])
    rtol = 64 * float(np.finfo(dtype).eps)
    loss = losses.BinaryCrossentropy(from_logits=True)
    value, grad, probs = loss.value_and_grad(t, z, want_probs=True)
    assert np.isfinite(value)
    assert value == pytest.approx(np.mean(exact), rel=rtol)
    assert value == pytest.approx((2e4 + np.log(2) + 30 + np.log1p(np.exp(-30)) + np.log1p(np.exp(-30))) / 8,
                                  rel=rtol)
    assert np.all(np.isfinite(grad)) and np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs, sig, rtol=rtol, atol=1e-30)
    np.testing.assert_allclose(grad, (sig - t) / 8, rtol=rtol, atol=1e-30)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["bce_logits", "bce_logits_ls", "cce_logits", "cce_logits_ls", "scce_logits"])
def test_want_probs_returns_the_activation(rng, case, dtype):
    y_true, z = make_data(case, rng, (6, 5), dtype)
    value, grad, probs = make_loss(case).value_and_grad(y_true, z, want_probs=True)
    z64 = z.astype(np.float64)
    want = _sigmoid(z64) if CASES[case][2] == "bce" else _softmax(z64)
    np.testing.assert_allclose(probs, want, **tol(dtype))
    v2, g2 = make_loss(case).value_and_grad(y_true, z)
    assert value == v2
    np.testing.assert_array_equal(grad, g2)
    if CASES[case][2] != "bce":  # the fused gradient: (softmax - smoothed target) / N
        kind, kw = ref_kwargs(case)
        t = np.eye(5)[y_true] if kind == "scce" else y_true.astype(np.float64)
        ls = kw.get("label_smoothing", 0.0)
        t = t * (1 - ls) + ls / 5
        np.testing.assert_allclose(grad, (want - t) / 6, **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shift", [1e4, -1e4, 3e3])
def test_categorical_from_logits_is_shift_invariant(rng, dtype, shift):
    """softmax(z + c) = softmax(z): large shared offsets must not cost precision."""
    z = rng.integers(-40, 40, (6, 5)) / 8.0  # multiples of 1/8: z + shift is exact in float32
    labels = rng.integers(0, 5, 6)
    y = np.eye(5)[labels]
    shifted = (z + shift).astype(dtype)
    assert np.all(shifted.astype(np.float64) - shift == z)
    rows = ref_rows("cce", y, z, from_logits=True)
    rtol = 64 * float(np.finfo(dtype).eps)
    for loss, target in [(losses.CategoricalCrossentropy(from_logits=True), y.astype(dtype)),
                         (losses.SparseCategoricalCrossentropy(from_logits=True), labels)]:
        value, grad, probs = loss.value_and_grad(target, shifted, want_probs=True)
        np.testing.assert_allclose(type(loss)(from_logits=True, reduction=None)(target, shifted), rows, rtol=rtol)
        assert value == pytest.approx(np.mean(rows), rel=rtol)
        np.testing.assert_allclose(probs, _softmax(z), rtol=rtol)
        np.testing.assert_allclose(np.sum(probs, axis=-1), 1, rtol=rtol)
        np.testing.assert_allclose(grad, (_softmax(z) - y) / 6, rtol=rtol, atol=rtol / 6)


def test_with_logits_twin_matches(rng):
    y_true, z = make_data("cce_logits", rng, (5, 3))
    probs = _softmax(z)
    loss = losses.CategoricalCrossentropy(label_smoothing=0.1)
    twin = loss.with_logits()
    assert twin.from_logits and not loss.from_logits and twin.label_smoothing == 0.1
    assert twin(y_true, z) == pytest.approx(loss(y_true, probs), rel=1e-10)


# ---- threads --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["mse", "mae", "huber", "bce", "bce_logits_ls", "cce", "cce_logits",
                                  "scce_logits", "kld"])
def test_bit_identical_on_1_and_2_threads(rng, threads, case, dtype):
    n, c = 40000, 10
    y_true, y_pred = make_data(case, rng, (n, c), dtype)
    w = rng.uniform(0, 2, n).astype(dtype)
    results = {}
    for count in (1, 2):
        threads(count)
        assert fastnn.get_num_threads() == count
        value, grad = make_loss(case).value_and_grad(y_true, y_pred, w)
        rows = make_loss(case, reduction=None)(y_true, y_pred, w)
        results[count] = (value, grad, rows)
    (v1, g1, r1), (v2, g2, r2) = results[1], results[2]
    assert v1 == v2
    np.testing.assert_array_equal(g1, g2)
    np.testing.assert_array_equal(r1, r2)
    assert v2 == pytest.approx(ref_reduce(reference_rows(case, y_true, y_pred), w), rel=1e-4)


# ---- bad input -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("from_logits", [False, True])
def test_sparse_labels_out_of_range(from_logits):
    loss = losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    y_pred = np.full((3, 4), 0.25)
    for labels, what in [([0, 4, 1], "4"), ([0, 1, 7], "7"), ([0, -1, 1], "-1"), ([-3, 0, 0], "-3")]:
        with pytest.raises(ValueError, match=rf"label {what} .*outside \[0, 4\)"):
            loss(np.array(labels), y_pred)
        with pytest.raises(ValueError, match="outside"):
            loss.value_and_grad(np.array(labels), y_pred)
    with pytest.raises(ValueError, match="outside"):
        loss(np.array([[0], [4], [1]]), y_pred)
    with pytest.raises(ValueError, match="outside"):
        losses.sparse_categorical_crossentropy(np.array([0, 4, 1]), y_pred)


def test_sparse_labels_must_be_integers():
    loss = losses.SparseCategoricalCrossentropy()
    y_pred = np.full((3, 4), 0.25)
    with pytest.raises(ValueError, match="integer"):
        loss(np.array([0.0, 1.5, 2.0]), y_pred)
    with pytest.raises(ValueError, match="integer"):
        loss(np.array([0.0, np.nan, 2.0]), y_pred)
    with pytest.raises(TypeError, match="integer"):
        loss(np.array(["0", "1", "2"]), y_pred)
    with pytest.raises(ValueError, match=r"shape"):
        loss(np.array([0, 1]), y_pred)
    with pytest.raises(ValueError, match=r"shape"):
        loss(np.array([[0, 1], [1, 1], [2, 2]]), y_pred)


@pytest.mark.parametrize("case", [c for c in CASE_IDS if CASES[c][2] != "scce"])
def test_mismatched_shapes(rng, case):
    y_true, y_pred = make_data(case, rng, (3, 4))
    with pytest.raises(ValueError, match=r"y_true has shape \(3, 5\) but y_pred has shape \(3, 4\)"):
        make_loss(case)(np.zeros((3, 5)), y_pred)
    with pytest.raises(ValueError, match="shape"):
        make_loss(case).value_and_grad(np.zeros((4, 4)), y_pred)
    with pytest.raises(ValueError, match="sample_weight"):
        make_loss(case)(y_true, y_pred, sample_weight=np.ones(4))
    with pytest.raises(ValueError, match="sample_weight"):
        make_loss(case).value_and_grad(y_true, y_pred, np.ones((3, 2)))


@pytest.mark.parametrize("case", CASE_IDS)
def test_strings_are_rejected(rng, case):
    y_true, y_pred = make_data(case, rng, (3, 4))
    with pytest.raises(TypeError, match="y_pred"):
        make_loss(case)(y_true, np.array([["a"] * 4] * 3))
    if CASES[case][2] == "scce":
        with pytest.raises(TypeError, match="y_true"):
            make_loss(case)(np.array(["a", "b", "c"]), y_pred)
    else:
        with pytest.raises(TypeError, match="y_true"):
            make_loss(case)(np.array([["a"] * 4] * 3), y_pred)


@pytest.mark.parametrize("case", ["mse", "scce"])
def test_string_sample_weight_is_rejected_naming_it(rng, case):
    y_true, y_pred = make_data(case, rng, (3, 4))
    with pytest.raises((TypeError, ValueError), match="sample_weight"):
        make_loss(case)(y_true, y_pred, sample_weight=np.array(["a", "b", "c"]))


@pytest.mark.parametrize("case", CASE_IDS)
def test_nan_or_inf_sample_weight(rng, case):
    y_true, y_pred = make_data(case, rng, (3, 4))
    for bad in (np.nan, np.inf):
        with pytest.raises(ValueError, match="sample_weight contains NaN or inf"):
            make_loss(case)(y_true, y_pred, sample_weight=np.array([1.0, bad, 1.0]))
        with pytest.raises(ValueError, match="sample_weight"):
            make_loss(case).value_and_grad(y_true, y_pred, np.array([[1.0], [1.0], [bad]]))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="reduction"):
        losses.MeanSquaredError(reduction="mean_of_everything")
    with pytest.raises(ValueError, match="label_smoothing"):
        losses.BinaryCrossentropy(label_smoothing=1.5)
    with pytest.raises(ValueError, match="label_smoothing"):
        losses.CategoricalCrossentropy(label_smoothing=-0.1)
    for delta in (0.0, -1.0):
        with pytest.raises(ValueError, match="delta"):
            losses.Huber(delta=delta)


# ---- built-in losses inside autodiff (a custom training loop's gradient) ----------------------------------------
@pytest.mark.parametrize("loss, targets", [
    (fastnn.losses.SparseCategoricalCrossentropy(from_logits=True), np.array([0, 2, 1])),
    (fastnn.losses.CategoricalCrossentropy(), np.eye(3)[[1, 0, 2]]),
    (fastnn.losses.MeanSquaredError(reduction="sum"), np.arange(9.0).reshape(3, 3) / 9),
    (fastnn.losses.BinaryCrossentropy(from_logits=True), (np.arange(9).reshape(3, 3) % 2).astype(float)),
])
def test_builtin_loss_is_differentiable_inside_autodiff(loss, targets):
    from finite_differences import numeric_gradient

    from fastnn import autodiff, ops

    rng = np.random.default_rng(0)
    y_pred = rng.uniform(0.1, 0.9, (3, 3))
    if isinstance(loss, fastnn.losses.CategoricalCrossentropy):
        y_pred /= y_pred.sum(axis=1, keepdims=True)
    weights = np.array([1.0, 0.5, 2.0])

    def objective(z):  # the loss plus an autodiff term: both gradients must arrive
        return loss(targets, z, sample_weight=weights) + 0.1 * ops.sum(ops.square(z))

    grad = autodiff.grad(objective, y_pred)
    fd = numeric_gradient(lambda: float(autodiff.value_of(objective(y_pred))), y_pred)
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-7)


def test_per_sample_builtin_loss_inside_autodiff():
    from fastnn import autodiff, ops

    loss = fastnn.losses.MeanSquaredError(reduction=None)
    y_true, y_pred = np.zeros((4, 2)), np.arange(8.0).reshape(4, 2)
    seed = np.array([1.0, 2.0, 0.0, -1.0])
    grad = autodiff.grad(lambda z: ops.sum(loss(y_true, z) * seed), y_pred)
    np.testing.assert_allclose(grad, seed[:, None] * 2 * y_pred / 2)  # d/dz of mean over 2 columns of z²
