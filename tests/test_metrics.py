"""fastnn.metrics against Keras 3's docstring values and independent NumPy references.

Every metric is stateful over an epoch: several update_state calls equal one call on the
concatenated data, integer sample weights equal repeating the samples, reset_state forgets.
"""

import numpy as np
import pytest

from fastnn import metrics
from fastnn.metrics import (AUC, F1Score, BinaryAccuracy, CategoricalAccuracy, Mean, MeanAbsoluteError,
                            MeanSquaredError, Precision, Recall, RootMeanSquaredError,
                            SparseCategoricalAccuracy, SparseTopKCategoricalAccuracy,
                            TopKCategoricalAccuracy)

EPS = 1e-7


def result_of(metric, *batches):
    metric.reset_state()
    for batch in batches:
        metric.update_state(*batch[:2], sample_weight=batch[2] if len(batch) > 2 else None)
    return np.asarray(metric.result(), np.float64)


# ---- Keras docstring values ---------------------------------------------------------------------------
def test_binary_accuracy_docstring():
    m = BinaryAccuracy()
    m.update_state([[1], [1], [0], [0]], [[0.98], [1], [0], [0.6]])
    assert m.result() == pytest.approx(0.75)
    m.reset_state()
    m.update_state([[1], [1], [0], [0]], [[0.98], [1], [0], [0.6]], sample_weight=[1, 0, 0, 1])
    assert m.result() == pytest.approx(0.5)


def test_categorical_accuracy_docstring():
    m = CategoricalAccuracy()
    m.update_state([[0, 0, 1], [0, 1, 0]], [[0.1, 0.9, 0.8], [0.05, 0.95, 0]])
    assert m.result() == pytest.approx(0.5)
    m.reset_state()
    m.update_state([[0, 0, 1], [0, 1, 0]], [[0.1, 0.9, 0.8], [0.05, 0.95, 0]], sample_weight=[0.7, 0.3])
    assert m.result() == pytest.approx(0.3)


def test_sparse_categorical_accuracy_docstring():
    m = SparseCategoricalAccuracy()
    m.update_state([[2], [1]], [[0.1, 0.6, 0.3], [0.05, 0.95, 0]])
    assert m.result() == pytest.approx(0.5)
    m.reset_state()
    m.update_state([[2], [1]], [[0.1, 0.6, 0.3], [0.05, 0.95, 0]], sample_weight=[0.7, 0.3])
    assert m.result() == pytest.approx(0.3)
    m.reset_state()
    m.update_state([2, 1], [[0.1, 0.6, 0.3], [0.05, 0.95, 0]])  # rank-1 labels too
    assert m.result() == pytest.approx(0.5)


def test_top_k_docstrings():
    m = TopKCategoricalAccuracy(k=1)
    m.update_state([[0, 0, 1], [0, 1, 0]], [[0.1, 0.9, 0.8], [0.05, 0.95, 0]])
    assert m.result() == pytest.approx(0.5)
    m.reset_state()
    m.update_state([[0, 0, 1], [0, 1, 0]], [[0.1, 0.9, 0.8], [0.05, 0.95, 0]], sample_weight=[0.7, 0.3])
    assert m.result() == pytest.approx(0.3)
    m = SparseTopKCategoricalAccuracy(k=1)
    m.update_state([2, 1], [[0.1, 0.9, 0.8], [0.05, 0.95, 0]])
    assert m.result() == pytest.approx(0.5)
    m.reset_state()
    m.update_state([2, 1], [[0.1, 0.9, 0.8], [0.05, 0.95, 0]], sample_weight=[0.7, 0.3])
    assert m.result() == pytest.approx(0.3)
    assert TopKCategoricalAccuracy().k == 5 and SparseTopKCategoricalAccuracy().k == 5


def test_precision_recall_docstrings():
    for cls in (Precision, Recall):
        m = cls()
        m.update_state([0, 1, 1, 1], [1, 0, 1, 1])
        assert m.result() == pytest.approx(2 / 3)
        m.reset_state()
        m.update_state([0, 1, 1, 1], [1, 0, 1, 1], sample_weight=[0, 0, 1, 0])
        assert m.result() == pytest.approx(1.0)


def test_precision_recall_class_id_by_hand():
    # One column of multi-class rows: class 2 only.
    y_true = [[0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 1, 0]]
    y_pred = [[0.1, 0.2, 0.9, 0.3], [0.1, 0.2, 0.8, 0.9], [0.1, 0.2, 0.3, 0.9]]
    # class 2: predicted rows 0 and 1 (> 0.5), true rows 0 and 2
    assert Precision(class_id=2)(y_true, y_pred) == pytest.approx(0.5)
    assert Recall(class_id=2)(y_true, y_pred) == pytest.approx(0.5)


def test_precision_top_k_docstring():
    # Keras docstring: with top_k=2 only y_pred[:2] count (ties keep the lowest indices).
    m = Precision(top_k=2)
    m.update_state([0, 0, 1, 1], [1, 1, 1, 1])
    assert m.result() == pytest.approx(0.0)
    m = Precision(top_k=4)
    m.update_state([0, 0, 1, 1], [1, 1, 1, 1])
    assert m.result() == pytest.approx(0.5)


def test_f1_score_docstring_and_averages():
    y_true = np.array([[1, 1, 1], [1, 0, 0], [1, 1, 0]], np.int32)
    y_pred = np.array([[0.2, 0.6, 0.7], [0.2, 0.6, 0.6], [0.6, 0.8, 0.0]], np.float32)
    m = F1Score(threshold=0.5)
    m.update_state(y_true, y_pred)
    np.testing.assert_allclose(m.result(), [0.5, 0.8, 2 / 3], rtol=1e-5)
    f = np.array([0.5, 0.8, 2 / 3])
    assert F1Score(average="macro", threshold=0.5)(y_true, y_pred) == pytest.approx(f.mean(), rel=1e-5)
    assert F1Score(average="weighted", threshold=0.5)(y_true, y_pred) == pytest.approx(
        (f * [3, 2, 1]).sum() / 6, rel=1e-5)
    # micro: tp = 4, fp = 2, fn = 2 pooled over the classes
    assert F1Score(average="micro", threshold=0.5)(y_true, y_pred) == pytest.approx(2 / 3, rel=1e-5)


def test_f1_score_threshold_none_takes_each_rows_max():
    y_true = np.array([[1, 1, 1], [1, 0, 0], [1, 1, 0]])
    y_pred = np.array([[0.2, 0.6, 0.7], [0.2, 0.6, 0.6], [0.6, 0.8, 0.0]])
    # positives: row 0 -> class 2; row 1 -> classes 1 and 2 (tie); row 2 -> class 1
    tp, fp, fn = np.array([0, 1, 1]), np.array([0, 1, 1]), np.array([3, 1, 0])
    np.testing.assert_allclose(F1Score()(y_true, y_pred), ref_f1(tp, fp, fn), rtol=1e-9)
    # a row of zeros has no positive class
    assert np.all(np.asarray(F1Score()(np.array([[1, 0]]), np.array([[0.0, 0.0]]))) == 0)


def test_auc_docstring():
    m = AUC(num_thresholds=3)
    m.update_state([0, 0, 1, 1], [0, 0.5, 0.3, 0.9])
    assert m.result() == pytest.approx(0.75)
    m.reset_state()
    m.update_state([0, 0, 1, 1], [0, 0.5, 0.3, 0.9], sample_weight=[1, 0, 0, 1])
    assert m.result() == pytest.approx(1.0)


def test_auc_from_logits_docstring():
    m = AUC(num_thresholds=3, from_logits=True)
    logits = np.array([-10.0, 0.0, -0.8472978603872037, 2.1972245773362196])  # sigmoid: 0, .5, .3, .9
    m.update_state([0, 0, 1, 1], logits)
    assert m.result() == pytest.approx(0.75)


def test_regression_docstrings():
    y_true, y_pred = [[0, 1], [0, 0]], [[1, 1], [0, 0]]
    assert MeanSquaredError()(y_true, y_pred) == pytest.approx(0.25)
    assert MeanSquaredError()(y_true, y_pred, sample_weight=[1, 0]) == pytest.approx(0.5)
    assert MeanAbsoluteError()(y_true, y_pred) == pytest.approx(0.25)
    assert MeanAbsoluteError()(y_true, y_pred, sample_weight=[1, 0]) == pytest.approx(0.5)
    assert RootMeanSquaredError()(y_true, y_pred) == pytest.approx(0.5)
    assert RootMeanSquaredError()(y_true, y_pred, sample_weight=[1, 0]) == pytest.approx(np.sqrt(0.5))


def test_mean_docstring():
    m = Mean()
    m.update_state([1, 3, 5, 7])
    assert m.result() == pytest.approx(4.0)
    m.reset_state()
    m.update_state([1, 3, 5, 7], sample_weight=[1, 1, 0, 0])
    assert m.result() == pytest.approx(2.0)


# ---- independent references on random data ----------------------------------------------------------
def ref_f1(tp, fp, fn):
    p = tp / (tp + fp + EPS)
    r = tp / (tp + fn + EPS)
    return 2 * p * r / (p + r + EPS)


def ref_counts(truth, positive, w=None):
    truth, positive = np.asarray(truth, bool).ravel(), np.asarray(positive, bool).ravel()
    w = np.ones(truth.size) if w is None else np.asarray(w, np.float64).ravel()
    return (np.sum(w * (truth & positive)), np.sum(w * (~truth & positive)),
            np.sum(w * (truth & ~positive)), np.sum(w * (~truth & ~positive)))


def top_k_mask(p, k):
    idx = np.argsort(-p, axis=-1, kind="stable")[..., :k]
    mask = np.zeros(p.shape, bool)
    np.put_along_axis(mask, idx, True, axis=-1)
    return mask


@pytest.fixture
def multiclass(rng):
    n, c = 300, 5
    labels = rng.integers(0, c, n)
    p = rng.dirichlet(np.ones(c), n)
    return labels, np.eye(c)[labels], p


def test_accuracies_on_random_data(rng, multiclass):
    labels, onehot, p = multiclass
    assert CategoricalAccuracy()(onehot, p) == pytest.approx(np.mean(p.argmax(1) == labels))
    assert SparseCategoricalAccuracy()(labels, p) == pytest.approx(np.mean(p.argmax(1) == labels))
    assert SparseCategoricalAccuracy()(labels[:, None].astype(np.float32), p) == pytest.approx(
        np.mean(p.argmax(1) == labels))
    for k in (1, 2, 3, 5):
        want = np.mean(top_k_mask(p, k)[np.arange(len(labels)), labels])
        assert TopKCategoricalAccuracy(k=k)(onehot, p) == pytest.approx(want)
        assert SparseTopKCategoricalAccuracy(k=k)(labels, p) == pytest.approx(want)
    y = rng.integers(0, 2, (200, 3))
    q = rng.random((200, 3))
    for threshold in (0.5, 0.2, 0.9):
        assert BinaryAccuracy(threshold=threshold)(y, q) == pytest.approx(np.mean(y == (q > threshold)))


def test_binary_accuracy_threshold_is_strict():
    assert BinaryAccuracy()([[1], [0]], [[0.5], [0.5]]) == pytest.approx(0.5)


@pytest.mark.parametrize("true_shape,pred_shape", [((6,), (6, 1)), ((6, 1), (6,)), ((6, 1), (6, 1)), ((6,), (6,))])
def test_binary_accuracy_label_and_prediction_ranks(true_shape, pred_shape):
    y = np.array([1, 0, 1, 1, 0, 0])
    p = np.array([0.9, 0.2, 0.1, 0.7, 0.8, 0.3])
    want = np.mean(y == (p > 0.5))  # 4/6
    assert BinaryAccuracy()(y.reshape(true_shape), p.reshape(pred_shape)) == pytest.approx(want)


@pytest.mark.parametrize("thresholds", [None, 0.3, [0.2, 0.5, 0.8]])
def test_precision_recall_thresholds(rng, thresholds):
    y = rng.integers(0, 2, 500)
    p = rng.random(500)
    ts = [0.5] if thresholds is None else np.atleast_1d(thresholds)
    want_p, want_r = [], []
    for t in ts:
        tp, fp, fn, _ = ref_counts(y, p > t)
        want_p.append(tp / (tp + fp))
        want_r.append(tp / (tp + fn))
    got_p, got_r = Precision(thresholds=thresholds)(y, p), Recall(thresholds=thresholds)(y, p)
    if isinstance(thresholds, list):
        np.testing.assert_allclose(got_p, want_p, rtol=1e-12)
        np.testing.assert_allclose(got_r, want_r, rtol=1e-12)
    else:
        assert got_p == pytest.approx(want_p[0], rel=1e-12)
        assert got_r == pytest.approx(want_r[0], rel=1e-12)


def test_precision_recall_class_id_and_top_k(rng, multiclass):
    labels, onehot, p = multiclass
    for c in range(5):
        tp, fp, fn, _ = ref_counts(onehot[:, c], p[:, c] > 0.5)
        assert Precision(class_id=c)(onehot, p) == pytest.approx(tp / (tp + fp) if tp + fp else 0.0)
        assert Recall(class_id=c)(onehot, p) == pytest.approx(tp / (tp + fn))
    for k in (1, 2):
        top = top_k_mask(p, k)
        tp, fp, fn, _ = ref_counts(onehot, top)
        assert Precision(top_k=k)(onehot, p) == pytest.approx(tp / (tp + fp))
        assert Recall(top_k=k)(onehot, p) == pytest.approx(tp / (tp + fn))
        for c in range(5):
            tp, fp, fn, _ = ref_counts(onehot[:, c], top[:, c])
            assert Precision(top_k=k, class_id=c)(onehot, p) == pytest.approx(tp / (tp + fp))
            assert Recall(top_k=k, class_id=c)(onehot, p) == pytest.approx(tp / (tp + fn))
        # top_k together with a threshold: in the top k AND above it
        tp, fp, fn, _ = ref_counts(onehot, top & (p > 0.3))
        assert Precision(thresholds=0.3, top_k=k)(onehot, p) == pytest.approx(tp / (tp + fp))
        assert Recall(thresholds=0.3, top_k=k)(onehot, p) == pytest.approx(tp / (tp + fn))


def test_precision_recall_no_positive_is_zero():
    assert Precision()([1, 0], [0.1, 0.2]) == 0.0
    assert Recall()([0, 0], [0.9, 0.2]) == 0.0
    assert Precision().result() == 0.0


@pytest.mark.parametrize("average", [None, "micro", "macro", "weighted"])
@pytest.mark.parametrize("threshold", [None, 0.3])
def test_f1_score_on_random_data(rng, average, threshold):
    n, c = 400, 4
    y = (rng.random((n, c)) < 0.4).astype(np.float64)
    p = rng.random((n, c))
    positive = p >= p.max(axis=1, keepdims=True) if threshold is None else p > threshold
    tp = (positive & (y == 1)).sum(0).astype(float)
    fp = (positive & (y == 0)).sum(0).astype(float)
    fn = (~positive & (y == 1)).sum(0).astype(float)
    if average == "micro":
        want = ref_f1(tp.sum(), fp.sum(), fn.sum())
    elif average == "macro":
        want = ref_f1(tp, fp, fn).mean()
    elif average == "weighted":
        support = y.sum(0)
        want = np.sum(ref_f1(tp, fp, fn) * support / (support.sum() + EPS))
    else:
        want = ref_f1(tp, fp, fn)
    np.testing.assert_allclose(F1Score(average=average, threshold=threshold)(y, p), want, rtol=1e-9)


def test_f1_score_errors():
    with pytest.raises(ValueError, match="average"):
        F1Score(average="samples")
    with pytest.raises(ValueError, match="2-D"):
        F1Score().update_state(np.array([1, 0]), np.array([0.3, 0.6]))


def mann_whitney_auc(y, p, w=None):
    """Exact ROC AUC: P(score_pos > score_neg) + 0.5·P(tie), weighted."""
    y = np.asarray(y, bool)
    w = np.ones(y.size) if w is None else np.asarray(w, np.float64)
    pos, neg = p[y], p[~y]
    wp, wn = w[y], w[~y]
    greater = (pos[:, None] > neg[None, :]).astype(float) + 0.5 * (pos[:, None] == neg[None, :])
    return float(wp @ greater @ wn / (wp.sum() * wn.sum()))


def test_auc_roc_equals_mann_whitney_when_scores_sit_mid_bin(rng):
    # Scores at the centres of the 199 bins of num_thresholds=200: pairs within a bin are
    # exact ties, which the trapezoid counts as 1/2, so the result equals the exact AUC.
    n = 3000
    y = rng.random(n) < 0.4
    bins = np.clip(np.round(rng.normal(100 + 25 * y, 35)), 0, 198)
    p = (bins + 0.5) / 199
    got = AUC(num_thresholds=200)(y, p)
    assert got == pytest.approx(mann_whitney_auc(y, p), abs=1e-12)
    assert 0.6 < got < 0.9


def test_auc_roc_close_to_exact_on_continuous_scores(rng):
    n = 4000
    y = rng.random(n) < 0.5
    p = 1 / (1 + np.exp(-(rng.normal(0, 1, n) + 1.0 * y)))
    exact = mann_whitney_auc(y, p)
    assert AUC(num_thresholds=200)(y, p) == pytest.approx(exact, abs=2e-3)
    assert AUC(num_thresholds=2000)(y, p) == pytest.approx(exact, abs=2e-4)


def threshold_counts(y, p, thresholds, w=None):
    y = np.asarray(y, bool)
    w = np.ones(y.size) if w is None else np.asarray(w, np.float64)
    rows = [ref_counts(y, p > t, w) for t in thresholds]
    return [np.array(c) for c in zip(*rows)]


def keras_thresholds(num):
    return [-EPS] + [(i + 1) / (num - 1) for i in range(num - 2)] + [1 + EPS]


@pytest.mark.parametrize("method", ["interpolation", "minoring", "majoring"])
def test_auc_roc_summation_methods(rng, method):
    y = rng.random(500) < 0.3
    p = np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0, 1)
    tp, fp, fn, tn = threshold_counts(y, p, keras_thresholds(21))
    tpr, fpr = tp / (tp + fn), fp / (fp + tn)
    pair = {"interpolation": lambda a, b: (a + b) / 2, "minoring": np.minimum, "majoring": np.maximum}[method]
    want = sum((fpr[i] - fpr[i + 1]) * pair(tpr[i], tpr[i + 1]) for i in range(20))
    assert AUC(num_thresholds=21, summation_method=method)(y, p) == pytest.approx(want, abs=1e-12)


def pr_auc_by_quadrature(tp, fp, fn):
    """Area under the precision-recall curve with TP linear in the predicted positives
    between thresholds (Davis & Goadrich), integrated numerically."""
    positives = tp[0] + fn[0]
    pp = tp + fp
    area = 0.0
    for i in range(len(tp) - 1):
        lo, hi = pp[i + 1], pp[i]
        if hi <= lo:
            continue
        slope = (tp[i] - tp[i + 1]) / (hi - lo)
        x = np.linspace(max(lo, 1e-9), hi, 20001)
        precision = (tp[i + 1] + slope * (x - lo)) / x
        area += np.sum((precision[1:] + precision[:-1]) / 2 * np.diff(x)) * slope / positives
    return area


def test_auc_pr_interpolation_against_quadrature(rng):
    y = rng.random(400) < 0.3
    p = np.clip(rng.normal(0.4 + 0.25 * y, 0.2), 0, 1)
    tp, fp, fn, _ = threshold_counts(y, p, keras_thresholds(11))
    want = pr_auc_by_quadrature(tp, fp, fn)
    got = AUC(num_thresholds=11, curve="PR")(y, p)
    assert got == pytest.approx(want, abs=1e-6)
    # a perfect ranking has PR AUC 1
    y2 = np.array([0, 0, 0, 1, 1])
    assert AUC(curve="PR")(y2, np.array([0.1, 0.2, 0.3, 0.8, 0.9])) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("method", ["minoring", "majoring"])
def test_auc_pr_riemann_sums(rng, method):
    y = rng.random(300) < 0.4
    p = np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0, 1)
    tp, fp, fn, _ = threshold_counts(y, p, keras_thresholds(15))
    recall = tp / (tp + fn)
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    pair = np.minimum if method == "minoring" else np.maximum
    want = np.sum((recall[:-1] - recall[1:]) * pair(precision[:-1], precision[1:]))
    assert AUC(num_thresholds=15, curve="PR", summation_method=method)(y, p) == pytest.approx(want, abs=1e-12)


def test_auc_clips_predictions_and_from_logits(rng):
    y = rng.random(200) < 0.5
    z = rng.normal(0, 2, 200) + y
    assert AUC(from_logits=True)(y, z) == pytest.approx(AUC()(y, 1 / (1 + np.exp(-z))), abs=1e-12)
    assert AUC()(y, z) == pytest.approx(AUC()(y, np.clip(z, 0, 1)), abs=1e-12)


def test_auc_errors():
    with pytest.raises(ValueError, match="curve"):
        AUC(curve="DET")
    with pytest.raises(ValueError, match="summation_method"):
        AUC(summation_method="simpson")
    with pytest.raises(ValueError, match="num_thresholds"):
        AUC(num_thresholds=1)


def test_regression_metrics_on_random_data(rng):
    y, p = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    w = rng.random(50)
    per_mse, per_mae = ((p - y) ** 2).mean(1), np.abs(p - y).mean(1)
    assert MeanSquaredError()(y, p) == pytest.approx(per_mse.mean())
    assert MeanAbsoluteError()(y, p) == pytest.approx(per_mae.mean())
    assert RootMeanSquaredError()(y, p) == pytest.approx(np.sqrt(per_mse.mean()))
    assert MeanSquaredError()(y, p, sample_weight=w) == pytest.approx((per_mse * w).sum() / w.sum())
    assert RootMeanSquaredError()(y, p, sample_weight=w) == pytest.approx(np.sqrt((per_mse * w).sum() / w.sum()))
    # labels of shape (N,) against predictions (N, 1)
    y1, p1 = rng.normal(size=20), rng.normal(size=(20, 1))
    assert MeanSquaredError()(y1, p1) == pytest.approx(np.mean((p1[:, 0] - y1) ** 2))


# ---- statefulness ------------------------------------------------------------------------------------
def test_precision_over_an_epoch_is_not_the_mean_of_batch_precisions():
    batch1 = ([1, 0, 0, 0], [0.9, 0.1, 0.2, 0.3])  # 1 predicted positive, right: 1.0
    batch2 = ([1, 0, 0, 0], [0.9, 0.8, 0.7, 0.1])  # 3 predicted positive, 1 right: 1/3
    m = Precision()
    m.update_state(*batch1)
    assert m.result() == pytest.approx(1.0)
    m.update_state(*batch2)
    assert m.result() == pytest.approx(2 / 4)  # not (1 + 1/3) / 2
    r = Recall()
    r.update_state([1, 1, 1, 0], [0.9, 0.1, 0.1, 0.1])  # 1/3
    r.update_state([1, 0, 0, 0], [0.9, 0.1, 0.1, 0.1])  # 1/1
    assert r.result() == pytest.approx(2 / 4)


def test_rmse_over_an_epoch_is_sqrt_of_the_epoch_mse():
    m = RootMeanSquaredError()
    m.update_state([[0.0]], [[1.0]])  # batch RMSE 1 (one sample)
    m.update_state([[0.0], [0.0], [0.0]], [[3.0], [3.0], [3.0]])  # batch RMSE 3 (three samples)
    assert m.result() == pytest.approx(np.sqrt((1 + 27) / 4))


def _metric_cases(rng):
    n, c = 240, 4
    labels = rng.integers(0, c, n)
    onehot = np.eye(c)[labels]
    probs = rng.dirichlet(np.ones(c), n)
    yb = (rng.random((n, 1)) < 0.4).astype(np.float64)
    pb = np.clip(rng.normal(0.4 + 0.2 * yb, 0.25), 0, 1)
    multi = (rng.random((n, c)) < 0.4).astype(np.float64)
    reg_y, reg_p = rng.normal(size=(n, 3)), rng.normal(size=(n, 3))
    return [
        (BinaryAccuracy, {}, yb, pb),
        (CategoricalAccuracy, {}, onehot, probs),
        (SparseCategoricalAccuracy, {}, labels, probs),
        (TopKCategoricalAccuracy, dict(k=2), onehot, probs),
        (SparseTopKCategoricalAccuracy, dict(k=2), labels, probs),
        (Precision, {}, yb, pb),
        (Precision, dict(thresholds=[0.3, 0.6]), yb, pb),
        (Recall, dict(top_k=2), onehot, probs),
        (Recall, dict(class_id=1), onehot, probs),
        (F1Score, dict(average=None, threshold=0.3), multi, probs),
        (F1Score, dict(average="weighted"), onehot, probs),
        (F1Score, dict(average="micro"), onehot, probs),
        (AUC, {}, yb, pb),
        (AUC, dict(curve="PR", num_thresholds=50), yb, pb),
        (MeanSquaredError, {}, reg_y, reg_p),
        (RootMeanSquaredError, {}, reg_y, reg_p),
        (MeanAbsoluteError, {}, reg_y, reg_p),
    ]


CASE_IDS = ["binary_acc", "cat_acc", "sparse_cat_acc", "topk", "sparse_topk", "precision", "precision_list",
            "recall_topk", "recall_class", "f1_none", "f1_weighted", "f1_micro", "auc", "auc_pr", "mse", "rmse",
            "mae"]


@pytest.mark.parametrize("index", range(len(CASE_IDS)), ids=CASE_IDS)
def test_batches_equal_the_concatenated_data(rng, index):
    cls, kwargs, y, p = _metric_cases(rng)[index]
    cuts = [0, 17, 100, 101, len(y)]
    batches = [(y[a:b], p[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
    m = cls(**kwargs)
    np.testing.assert_allclose(result_of(m, *batches), result_of(cls(**kwargs), (y, p)), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("index", range(len(CASE_IDS)), ids=CASE_IDS)
def test_integer_sample_weights_equal_repeated_samples(rng, index):
    cls, kwargs, y, p = _metric_cases(rng)[index]
    w = rng.integers(0, 4, len(y))
    repeated = (np.repeat(y, w, axis=0), np.repeat(p, w, axis=0))
    np.testing.assert_allclose(result_of(cls(**kwargs), (y, p, w.astype(np.float64))),
                               result_of(cls(**kwargs), repeated), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("index", range(len(CASE_IDS)), ids=CASE_IDS)
def test_reset_state_forgets(rng, index):
    cls, kwargs, y, p = _metric_cases(rng)[index]
    m = cls(**kwargs)
    m.update_state(y[:100], p[:100])
    m.reset_state()
    m.update_state(y[100:], p[100:])
    fresh = cls(**kwargs)
    fresh.update_state(y[100:], p[100:])
    np.testing.assert_allclose(np.asarray(m.result(), float), np.asarray(fresh.result(), float), rtol=1e-12)


@pytest.mark.parametrize("index", range(len(CASE_IDS)), ids=CASE_IDS)
def test_call_gives_the_batch_value_and_keeps_the_state(rng, index):
    cls, kwargs, y, p = _metric_cases(rng)[index]
    m = cls(**kwargs)
    m.update_state(y[:100], p[:100])
    before = np.asarray(m.result(), float)
    batch = np.asarray(m(y[100:], p[100:]), float)
    fresh = cls(**kwargs)
    fresh.update_state(y[100:], p[100:])
    np.testing.assert_allclose(batch, np.asarray(fresh.result(), float), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(m.result(), float), before, rtol=1e-12)


def test_mean_statefulness_and_weights():
    m = Mean()
    m.update_state([1.0, 2.0], sample_weight=[1.0, 3.0])
    m.update_state(np.array([[4.0], [8.0]]))
    assert m.result() == pytest.approx((1 + 6 + 4 + 8) / (4 + 2))
    m.update_state(10.0, sample_weight=0.0)
    assert m.result() == pytest.approx(19 / 6)
    m.reset_state()
    assert m.result() == 0.0
    m.update_state([2.0, 4.0], sample_weight=2.0)  # a scalar weight applies to every value
    assert m.result() == pytest.approx(3.0)


def test_fresh_metrics_result_zero():
    for m in (Mean(), BinaryAccuracy(), MeanSquaredError(), RootMeanSquaredError(), Precision(), Recall(), AUC()):
        assert float(m.result()) == 0.0


# ---- get ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("y_true,y_pred,want", [
    # binary: y_pred has one column
    (np.array([[1], [0], [1]]), np.array([[0.6], [0.7], [0.2]]), 1 / 3),
    (np.array([1, 0, 1]), np.array([[0.6], [0.7], [0.2]]), 1 / 3),
    # sparse: y_true has a lower rank, or one column against several
    (np.array([2, 0, 1]), np.array([[0.1, 0.2, 0.7], [0.5, 0.4, 0.1], [0.6, 0.3, 0.1]]), 2 / 3),
    (np.array([[2], [0], [1]]), np.array([[0.1, 0.2, 0.7], [0.5, 0.4, 0.1], [0.6, 0.3, 0.1]]), 2 / 3),
    # categorical: one-hot labels
    (np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]]), np.array([[0.1, 0.2, 0.7], [0.5, 0.4, 0.1], [0.6, 0.3, 0.1]]),
     2 / 3),
    (np.array([[0, 1], [1, 0]]), np.array([[0.2, 0.8], [0.3, 0.7]]), 1 / 2),
])
def test_get_accuracy_chooses_from_shapes(y_true, y_pred, want):
    for name in ("accuracy", "acc"):
        m = metrics.get(name)
        assert m.name == name
        m.update_state(y_true, y_pred)
        m.update_state(y_true, y_pred)
        assert m.result() == pytest.approx(want)


@pytest.mark.parametrize("name,cls", [
    ("binary_accuracy", BinaryAccuracy), ("categorical_accuracy", CategoricalAccuracy),
    ("sparse_categorical_accuracy", SparseCategoricalAccuracy), ("top_k_categorical_accuracy", TopKCategoricalAccuracy),
    ("sparse_top_k_categorical_accuracy", SparseTopKCategoricalAccuracy), ("precision", Precision),
    ("recall", Recall), ("auc", AUC), ("f1_score", F1Score), ("mse", MeanSquaredError),
    ("mean_squared_error", MeanSquaredError), ("mae", MeanAbsoluteError), ("mean_absolute_error", MeanAbsoluteError),
    ("rmse", RootMeanSquaredError), ("root_mean_squared_error", RootMeanSquaredError),
])
def test_get_by_name(name, cls):
    m = metrics.get(name)
    assert type(m) is cls
    assert m.name == name


def test_default_names_and_arguments():
    assert Precision().name == "precision" and Recall().name == "recall" and AUC().name == "auc"
    assert F1Score().name == "f1_score" and F1Score().average is None and F1Score().threshold is None
    assert BinaryAccuracy().name == "binary_accuracy" and BinaryAccuracy().threshold == 0.5
    assert MeanSquaredError().name == "mean_squared_error"
    assert RootMeanSquaredError().name == "root_mean_squared_error"
    auc = AUC()
    assert auc.num_thresholds == 200 and auc.curve == "ROC" and auc.summation_method == "interpolation"
    np.testing.assert_allclose(auc.thresholds, keras_thresholds(200), rtol=0, atol=1e-15)


def test_get_instances_classes_functions_and_errors():
    m = Precision(thresholds=0.7)
    assert metrics.get(m) is m
    assert type(metrics.get(Recall)) is Recall
    custom = metrics.get(lambda t, p: np.abs(np.asarray(t) - np.asarray(p)).ravel())
    custom.update_state([1.0, 2.0], [2.0, 2.0])
    assert custom.result() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="nosuchmetric"):
        metrics.get("nosuchmetric")
    with pytest.raises(TypeError):
        metrics.get(3)
    with pytest.raises(ValueError, match="threshold"):
        BinaryAccuracy(threshold=1.5)
