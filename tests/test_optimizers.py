"""fastnn.optimizers against an independent float64 NumPy implementation of Keras 3's formulas.

The reference (``KerasRef`` below) follows keras/src/optimizers/*.py step by step: clip the
gradients, decoupled weight decay ``w -= w·wd·lr``, the algorithm's ``update_step`` with
``t = iterations + 1``, the moving average, then ``iterations += 1``. It shares no code with
fastnn. Also: the flat (one buffer) path against the per-variable path, bit for bit; the
thread count does not change any bit; defaults, names and argument errors; the raw kernels
of fastnn.ops reject bad buffers.
"""

import math
import re

import numpy as np
import pytest

import fastnn
from fastnn import ops, optimizers
from fastnn.layers import Variable

DTYPES = [np.float32, np.float64]

# Keras 3 defaults of each optimizer's own arguments (keras/src/optimizers/*.py).
KERAS_DEFAULTS = {
    "SGD": dict(learning_rate=0.01, momentum=0.0, nesterov=False),
    "Adagrad": dict(learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7),
    "RMSprop": dict(learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False),
    "Adadelta": dict(learning_rate=0.001, rho=0.95, epsilon=1e-7),
    "Adam": dict(learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False),
    "AdamW": dict(learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                  amsgrad=False),
    "Nadam": dict(learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7),
}
KERAS_NAMES = {"SGD": "SGD", "Adagrad": "adagrad", "RMSprop": "rmsprop", "Adadelta": "adadelta",
               "Adam": "adam", "AdamW": "adamw", "Nadam": "nadam"}
BASE_DEFAULTS = dict(weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None, use_ema=False,
                     ema_momentum=0.99, ema_overwrite_frequency=None)
BASE_KEYS = ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm", "use_ema", "ema_momentum",
             "exclude")


# ---- the reference ------------------------------------------------------------------------------
class KerasRef:
    """Keras 3's optimizer step in float64 NumPy, one variable at a time."""

    def __init__(self, kind, **kwargs):
        self.kind = kind
        hp = dict(KERAS_DEFAULTS[kind])
        base = dict(weight_decay=hp.pop("weight_decay", None), clipnorm=None, clipvalue=None,
                    global_clipnorm=None, use_ema=False, ema_momentum=0.99, exclude=())
        for k, v in kwargs.items():
            (base if k in BASE_KEYS else hp)[k] = v
        self.lr = hp.pop("learning_rate")
        self.hp, self.base = hp, base
        self.iterations = 0
        self.state = None
        self.u_product = 1.0
        self.average = None

    def _clip(self, grads):
        b = self.base
        if b["clipnorm"]:
            return [g * b["clipnorm"] / max(np.sqrt(np.sum(g * g)), b["clipnorm"]) for g in grads]
        if b["global_clipnorm"]:
            norm = np.sqrt(sum(np.sum(g * g) for g in grads))
            scale = b["global_clipnorm"] * min(1.0 / norm, 1.0 / b["global_clipnorm"])
            return [g * scale for g in grads]
        if b["clipvalue"]:
            return [np.clip(g, -b["clipvalue"], b["clipvalue"]) for g in grads]
        return grads

    def step(self, weights, grads, names=None):
        """Returns the new weights (float64) after one apply()."""
        weights = [np.array(w, np.float64) for w in weights]
        grads = self._clip([np.array(g, np.float64) for g in grads])
        names = names or [f"v{i}" for i in range(len(weights))]
        if self.state is None:
            self.state = [self._init_state(w) for w in weights]
            self.average = [np.zeros_like(w) for w in weights]
        lr = float(self.lr(self.iterations)) if callable(self.lr) else self.lr
        wd = self.base["weight_decay"]
        if wd is not None:
            import re
            for i, name in enumerate(names):
                if not any(re.search(p, name) for p in self.base["exclude"]):
                    weights[i] = weights[i] - weights[i] * wd * lr
        if self.kind == "Nadam":
            self.u_product *= self.hp["beta_1"] * (1 - 0.5 * 0.96 ** (self.iterations + 1))
        for i in range(len(weights)):
            weights[i] = self._update(weights[i], grads[i], self.state[i], lr)
        if self.base["use_ema"]:
            m = self.base["ema_momentum"] * (self.iterations != 0)
            self.average = [m * a + (1 - m) * w for a, w in zip(self.average, weights)]
        self.iterations += 1
        return weights

    def _init_state(self, w):
        z = np.zeros_like(w)
        if self.kind == "Adagrad":
            return {"acc": np.full_like(w, self.hp["initial_accumulator_value"])}
        return {k: z.copy() for k in ("m", "v", "vhat", "mg", "mom", "acc_g", "acc_dx")}

    def _update(self, w, g, s, lr):
        hp, t = self.hp, self.iterations + 1
        if self.kind == "SGD":
            mu = hp["momentum"]
            if mu != 0:
                s["m"] = s["m"] * mu - g * lr
                return w + (s["m"] * mu - g * lr if hp["nesterov"] else s["m"])
            return w - g * lr
        if self.kind == "Adagrad":
            s["acc"] = s["acc"] + g ** 2
            return w - lr * g / np.sqrt(s["acc"] + hp["epsilon"])
        if self.kind == "RMSprop":
            rho, eps = hp["rho"], hp["epsilon"]
            s["v"] = rho * s["v"] + (1 - rho) * g ** 2
            if hp["centered"]:
                s["mg"] = rho * s["mg"] + (1 - rho) * g
                denom = s["v"] - s["mg"] ** 2 + eps
            else:
                denom = s["v"] + eps
            inc = lr * g / np.sqrt(denom)
            if hp["momentum"] > 0:
                s["mom"] = hp["momentum"] * s["mom"] + inc
                return w - s["mom"]
            return w - inc
        if self.kind == "Adadelta":
            rho, eps = hp["rho"], hp["epsilon"]
            rms = lambda x: np.sqrt(x + eps)  # noqa: E731
            s["acc_g"] = rho * s["acc_g"] + (1 - rho) * g ** 2
            delta = -rms(s["acc_dx"]) * g / rms(s["acc_g"])
            s["acc_dx"] = rho * s["acc_dx"] + (1 - rho) * delta ** 2
            return w + lr * delta
        if self.kind in ("Adam", "AdamW"):
            b1, b2 = hp["beta_1"], hp["beta_2"]
            alpha = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
            s["m"] = s["m"] + (g - s["m"]) * (1 - b1)
            s["v"] = s["v"] + (g ** 2 - s["v"]) * (1 - b2)
            v = s["v"]
            if hp["amsgrad"]:
                s["vhat"] = np.maximum(s["vhat"], s["v"])
                v = s["vhat"]
            return w - s["m"] * alpha / (np.sqrt(v) + hp["epsilon"])
        if self.kind == "Nadam":
            b1, b2 = hp["beta_1"], hp["beta_2"]
            u_t = b1 * (1 - 0.5 * 0.96 ** t)
            u_t1 = b1 * (1 - 0.5 * 0.96 ** (t + 1))
            u_prod_t = self.u_product
            u_prod_t1 = u_prod_t * u_t1
            s["m"] = s["m"] + (g - s["m"]) * (1 - b1)
            s["v"] = s["v"] + (g ** 2 - s["v"]) * (1 - b2)
            m_hat = u_t1 * s["m"] / (1 - u_prod_t1) + (1 - u_t) * g / (1 - u_prod_t)
            v_hat = s["v"] / (1 - b2 ** t)
            return w - m_hat * lr / (np.sqrt(v_hat) + hp["epsilon"])
        raise AssertionError(self.kind)


def make(kind, **kwargs):
    kwargs = {k: v for k, v in kwargs.items() if k != "exclude"}
    return getattr(optimizers, kind)(**kwargs)


def tol(dtype):
    return dict(rtol=1e-11, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-5)


# Hyperparameters chosen so each step moves the weights by far more than the tolerance.
GOLDEN = [
    ("SGD", dict(learning_rate=0.1)),
    ("SGD", dict(learning_rate=0.1, momentum=0.9)),
    ("SGD", dict(learning_rate=0.1, momentum=0.9, nesterov=True)),
    ("Adagrad", dict(learning_rate=0.1)),
    ("Adagrad", dict(learning_rate=0.2, initial_accumulator_value=0.5, epsilon=1e-3)),
    ("RMSprop", dict(learning_rate=0.01)),
    ("RMSprop", dict(learning_rate=0.01, momentum=0.9)),
    ("RMSprop", dict(learning_rate=0.01, centered=True)),
    ("RMSprop", dict(learning_rate=0.01, rho=0.8, momentum=0.5, centered=True, epsilon=1e-4)),
    ("Adadelta", dict(learning_rate=1.0, epsilon=1e-3)),
    ("Adadelta", dict(learning_rate=2.0, rho=0.8, epsilon=1e-2)),
    ("Adam", dict(learning_rate=0.05)),
    ("Adam", dict(learning_rate=0.05, beta_1=0.8, beta_2=0.99, epsilon=1e-3)),
    ("Adam", dict(learning_rate=0.05, amsgrad=True)),
    ("AdamW", dict(learning_rate=0.05, weight_decay=0.2)),
    ("AdamW", dict(learning_rate=0.05, weight_decay=0.2, amsgrad=True)),
    ("Nadam", dict(learning_rate=0.05)),
    ("Nadam", dict(learning_rate=0.05, beta_1=0.8, beta_2=0.99)),
]
def case_id(kind, kwargs):
    return f"{kind}-" + "-".join(f"{a}={b}" for a, b in kwargs.items())


GOLDEN_IDS = [case_id(k, kw) for k, kw in GOLDEN]

SHAPES = [(4, 3), (5,), (2, 2, 2)]
NAMES = ["dense/kernel", "dense/bias", "conv/kernel"]
# Gradient scale per step: a large step then small ones exercises amsgrad's max.
SCALES = [1.0, 3.0, 0.2, 0.05, 1.0]


def initial_weights(rng, dtype):
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def step_grads(rng, dtype, steps=len(SCALES)):
    return [[(rng.standard_normal(s) * SCALES[k % len(SCALES)]).astype(dtype) for s in SHAPES]
            for k in range(steps)]


def run_fastnn(opt, w0, grads):
    variables = [Variable(n, w.copy()) for n, w in zip(NAMES, w0)]
    history = []
    for gs in grads:
        opt.apply([g.copy() for g in gs], variables)
        history.append([v.value.copy() for v in variables])
    return variables, history


def run_ref(ref, w0, grads):
    weights = [w.astype(np.float64) for w in w0]
    history = []
    for gs in grads:
        weights = ref.step(weights, gs, NAMES)
        history.append(weights)
    return history


# ---- golden steps ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind,kwargs", GOLDEN, ids=GOLDEN_IDS)
def test_consecutive_steps_match_keras_formulas(rng, kind, kwargs, dtype):
    w0 = initial_weights(rng, dtype)
    grads = step_grads(rng, dtype)
    opt = make(kind, **kwargs)
    variables, got = run_fastnn(opt, w0, grads)
    want = run_ref(KerasRef(kind, **kwargs), w0, grads)
    for step, (g_step, w_step) in enumerate(zip(got, want)):
        for name, g, w, v in zip(NAMES, g_step, w_step, variables):
            assert g.dtype == dtype and v.value.dtype == dtype
            np.testing.assert_allclose(g, w, err_msg=f"{kind} step {step + 1} {name}", **tol(dtype))
    moved = max(np.max(np.abs(w - a)) for w, a in zip(want[-1], w0))
    assert moved > 1000 * tol(dtype)["atol"]  # the comparison is not vacuous
    assert opt.iterations == len(grads)


@pytest.mark.parametrize("kind,kwargs", GOLDEN, ids=GOLDEN_IDS)
def test_first_step_of_each_optimizer(kind, kwargs):
    # A single step on a single scalar-like variable, float64, tight tolerance.
    w0, g = np.array([0.5, -1.5, 2.0]), np.array([0.3, -2.0, 0.01])
    v = Variable("w", w0.copy())
    make(kind, **kwargs).apply([g], [v])
    want = KerasRef(kind, **kwargs).step([w0], [g])[0]
    np.testing.assert_allclose(v.value, want, rtol=1e-13, atol=1e-15)


def test_sgd_docstring_values():
    # Keras' SGD docstring: lr=0.1, momentum=0.9, loss=var²/2: steps of 0.1 then 0.18.
    v = Variable("var", np.array([1.0]))
    opt = optimizers.SGD(learning_rate=0.1, momentum=0.9)
    deltas = []
    for _ in range(2):
        before = v.value.copy()
        opt.apply([v.value.copy()], [v])
        deltas.append(float(before[0] - v.value[0]))
    np.testing.assert_allclose(deltas, [0.1, 0.18], rtol=1e-12)


def test_rmsprop_docstring_value():
    # Keras' RMSprop docstring: lr=0.1, var=10, grad=var: one step gives 9.683772.
    v = Variable("var", np.array([10.0]))
    optimizers.RMSprop(learning_rate=0.1).apply([np.array([10.0])], [v])
    assert abs(v.value[0] - 9.683772) < 1e-6


def test_adam_epsilon_goes_on_the_uncorrected_sqrt():
    # g = 1e-4 on step 1: Keras' step is lr·sqrt(1-b2)/(1-b1)·m/(sqrt(v)+eps), not m̂/(sqrt(v̂)+eps).
    v = Variable("w", np.array([0.0]))
    optimizers.Adam(learning_rate=1.0, epsilon=1e-3).apply([np.array([1e-4])], [v])
    m, vv = 0.1 * 1e-4, 0.001 * 1e-8
    keras = -1.0 * np.sqrt(1 - 0.999) / (1 - 0.9) * m / (np.sqrt(vv) + 1e-3)
    textbook = -1.0 * (m / 0.1) / (np.sqrt(vv / 0.001) + 1e-3)
    assert abs(keras - textbook) > 1e-3
    np.testing.assert_allclose(v.value[0], keras, rtol=1e-12)


def test_nadam_momentum_schedule_over_many_steps():
    # u_t = beta_1·(1 - 0.5·0.96^t): over 30 steps the product differs strongly from any
    # other schedule; a constant gradient makes the weight trajectory depend on it.
    v = Variable("w", np.array([1.0, -2.0]))
    opt = optimizers.Nadam(learning_rate=0.01)
    ref = KerasRef("Nadam", learning_rate=0.01)
    w = [v.value.copy()]
    g = np.array([0.5, 0.25])
    for _ in range(30):
        opt.apply([g], [v])
        w = ref.step(w, [g])
    np.testing.assert_allclose(v.value, w[0], rtol=1e-12, atol=1e-14)


def test_state_slots_hold_keras_values_after_one_step():
    g = np.array([2.0, -1.0])
    v = Variable("w", np.array([0.0, 0.0]))
    opt = optimizers.Adam()
    opt.apply([g], [v])
    state = opt.variables_state(0)
    np.testing.assert_allclose(state["momentum"], 0.1 * g, rtol=1e-15)
    np.testing.assert_allclose(state["velocity"], 0.001 * g ** 2, rtol=1e-12)
    v = Variable("w", np.array([0.0, 0.0]))
    opt = optimizers.Adagrad()
    opt.apply([g], [v])
    np.testing.assert_allclose(opt.variables_state(0)["accumulator"], 0.1 + g ** 2, rtol=1e-15)


def test_none_gradients_are_skipped():
    a, b = Variable("a", np.array([1.0, 2.0])), Variable("b", np.array([3.0]))
    opt = optimizers.SGD(learning_rate=0.5, momentum=0.5)
    opt.apply([np.array([1.0, 1.0]), None], [a, b])
    opt.apply([None, np.array([2.0])], [a, b])
    ref = KerasRef("SGD", learning_rate=0.5, momentum=0.5)
    wa = ref.step([np.array([1.0, 2.0])], [np.array([1.0, 1.0])])[0]
    np.testing.assert_array_equal(a.value, wa)
    np.testing.assert_array_equal(b.value, [3.0 - 0.5 * 2.0])  # b's momentum slot starts at 0
    assert opt.iterations == 2


def test_gradient_shape_mismatch_is_an_error():
    v = Variable("w", np.zeros((2, 3)))
    with pytest.raises(ValueError, match="shape"):
        optimizers.Adam().apply([np.zeros((3, 2))], [v])


# ---- the flat path ----------------------------------------------------------------------------------
def flat_variables(w0, dtype):
    total = sum(w.size for w in w0)
    params, grads = np.zeros(total, dtype), np.zeros(total, dtype)
    variables, off = [], 0
    for name, w in zip(NAMES, w0):
        view = params[off:off + w.size].reshape(w.shape)
        view[...] = w
        var = Variable(name, view)
        var.grad = grads[off:off + w.size].reshape(w.shape)
        variables.append(var)
        off += w.size
    return params, grads, variables


FLAT_CASES = GOLDEN + [
    ("Adam", dict(learning_rate=0.05, clipnorm=0.5)),
    ("SGD", dict(learning_rate=0.1, momentum=0.9, global_clipnorm=1.0)),
    ("RMSprop", dict(learning_rate=0.01, clipvalue=0.3)),
    ("SGD", dict(learning_rate=0.1, weight_decay=0.3)),
    ("Adam", dict(learning_rate=0.05, weight_decay=0.3, exclude=("bias",))),
    ("AdamW", dict(learning_rate=0.05, weight_decay=0.3, exclude=("bias", "conv"))),
    ("Nadam", dict(learning_rate=0.05, weight_decay=0.3, exclude=("bias",))),
    ("RMSprop", dict(learning_rate=0.01, weight_decay=0.1, exclude=("kernel",), momentum=0.5)),
    ("Adam", dict(learning_rate=0.05, use_ema=True, ema_momentum=0.9)),
    ("SGD", dict(learning_rate=0.1, use_ema=True, ema_momentum=0.5, momentum=0.5)),
]


def run_flat_and_separate(w0, grads, kind, kwargs, dtype):
    """The same steps through apply_flat() on views of one buffer and through apply() on
    separate variables; yields after each step."""
    exclude = list(kwargs.get("exclude", ()))
    params, flat_g, flat_vars = flat_variables(w0, dtype)
    flat_opt = make(kind, **kwargs)
    sep_vars = [Variable(n, w.copy()) for n, w in zip(NAMES, w0)]
    sep_opt = make(kind, **kwargs)
    if exclude:
        flat_opt.exclude_from_weight_decay(var_names=exclude)
        sep_opt.exclude_from_weight_decay(var_names=exclude)
    flat_opt.build(flat_vars, flat=(params, flat_g))
    for gs in grads:
        flat_g[...] = np.concatenate([g.ravel() for g in gs])
        flat_opt.apply_flat()
        sep_opt.apply([g.copy() for g in gs], sep_vars)
        yield gs, params, flat_vars, flat_opt, sep_vars, sep_opt


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind,kwargs", FLAT_CASES, ids=[case_id(*c) for c in FLAT_CASES])
def test_flat_path_equals_per_variable_path_exactly(rng, kind, kwargs, dtype):
    w0, grads = initial_weights(rng, dtype), step_grads(rng, dtype)
    for step, (_, params, flat_vars, flat_opt, sep_vars, sep_opt) in enumerate(
            run_flat_and_separate(w0, grads, kind, kwargs, dtype)):
        np.testing.assert_array_equal(params, np.concatenate([v.value.ravel() for v in sep_vars]),
                                      err_msg=f"step {step + 1}")
        assert all(np.shares_memory(v.value, params) for v in flat_vars)
    assert flat_opt.iterations == sep_opt.iterations == len(SCALES)
    if kwargs.get("use_ema"):
        flat_opt.finalize_variable_values()
        sep_opt.finalize_variable_values()
        np.testing.assert_array_equal(params, np.concatenate([v.value.ravel() for v in sep_vars]))


# Clipping, decay with exclusions and EMA on the flat path against the reference (the plain
# algorithms are covered by the golden tests and the exact equality above).
FLAT_EXTRAS = [c for c in FLAT_CASES[len(GOLDEN):] if c[0] != "Nadam"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind,kwargs", FLAT_EXTRAS, ids=[case_id(*c) for c in FLAT_EXTRAS])
def test_flat_path_matches_reference(rng, kind, kwargs, dtype):
    w0, grads = initial_weights(rng, dtype), step_grads(rng, dtype)
    ref = KerasRef(kind, **kwargs)
    ref_w = [w.astype(np.float64) for w in w0]
    for gs, params, flat_vars, flat_opt, _, _ in run_flat_and_separate(w0, grads, kind, kwargs, dtype):
        ref_w = ref.step(ref_w, gs, NAMES)
        for var, w in zip(flat_vars, ref_w):
            np.testing.assert_allclose(var.value, w, **tol(dtype))
    if kwargs.get("use_ema"):
        flat_opt.finalize_variable_values()
        for var, avg in zip(flat_vars, ref.average):
            np.testing.assert_allclose(var.value, avg, **tol(dtype))


# ---- clipping ---------------------------------------------------------------------------------------
def _two_vars():
    return [Variable("a", np.array([1.0, 2.0])), Variable("b", np.array([0.5, -0.5, 1.0]))]


G_BIG, G_SMALL = np.array([6.0, 8.0]), np.array([0.3, 0.0, -0.4])  # norms 10 and 0.5


def test_clipnorm_is_per_variable():
    a, b = _two_vars()
    opt = optimizers.SGD(learning_rate=1.0, clipnorm=1.0)
    opt.apply([G_BIG.copy(), G_SMALL.copy()], [a, b])
    np.testing.assert_allclose(a.value, [1.0 - 0.6, 2.0 - 0.8], rtol=1e-15)
    np.testing.assert_allclose(b.value, np.array([0.5, -0.5, 1.0]) - G_SMALL, rtol=1e-15)


def test_global_clipnorm_scales_all_gradients_together():
    a, b = _two_vars()
    opt = optimizers.SGD(learning_rate=1.0, global_clipnorm=2.0)
    opt.apply([G_BIG.copy(), G_SMALL.copy()], [a, b])
    scale = 2.0 / np.sqrt(100.0 + 0.25)
    np.testing.assert_allclose(a.value, [1.0, 2.0] - scale * G_BIG, rtol=1e-14)
    np.testing.assert_allclose(b.value, [0.5, -0.5, 1.0] - scale * G_SMALL, rtol=1e-14)
    # under the limit: untouched
    a, b = _two_vars()
    optimizers.SGD(learning_rate=1.0, global_clipnorm=20.0).apply([G_BIG.copy(), G_SMALL.copy()], [a, b])
    np.testing.assert_allclose(a.value, [1.0, 2.0] - G_BIG, rtol=1e-15)


def test_clipvalue_clips_each_value():
    a, b = _two_vars()
    optimizers.SGD(learning_rate=1.0, clipvalue=0.35).apply([G_BIG.copy(), G_SMALL.copy()], [a, b])
    np.testing.assert_allclose(a.value, [1.0 - 0.35, 2.0 - 0.35], rtol=1e-15)
    np.testing.assert_allclose(b.value, [0.5 - 0.3, -0.5, 1.0 + 0.35], rtol=1e-15)


@pytest.mark.parametrize("clip", [dict(clipnorm=1.0), dict(global_clipnorm=1.0), dict(clipvalue=0.1)])
def test_clipping_leaves_the_callers_gradients_alone(clip):
    a, b = _two_vars()
    ga, gb = G_BIG.copy(), G_SMALL.copy()
    optimizers.Adam(**clip).apply([ga, gb], [a, b])
    np.testing.assert_array_equal(ga, G_BIG)
    np.testing.assert_array_equal(gb, G_SMALL)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("clip", [dict(clipnorm=0.7), dict(global_clipnorm=1.5), dict(clipvalue=0.4)])
def test_clipping_then_adam_matches_reference(rng, clip, dtype):
    w0 = initial_weights(rng, dtype)
    grads = step_grads(rng, dtype)
    _, got = run_fastnn(optimizers.Adam(learning_rate=0.05, **clip), w0, grads)
    want = run_ref(KerasRef("Adam", learning_rate=0.05, **clip), w0, grads)
    for g_step, w_step in zip(got, want):
        for g, w in zip(g_step, w_step):
            np.testing.assert_allclose(g, w, **tol(dtype))


# ---- weight decay ---------------------------------------------------------------------------------
def test_weight_decay_on_sgd_is_multiplied_by_lr_and_applied_first():
    v = Variable("w", np.array([2.0, -4.0]))
    g = np.array([1.0, 1.0])
    optimizers.SGD(learning_rate=0.1, weight_decay=0.5).apply([g], [v])
    w = np.array([2.0, -4.0])
    np.testing.assert_allclose(v.value, w - w * 0.5 * 0.1 - 0.1 * g, rtol=1e-15)


def test_adam_with_weight_decay_equals_adamw(rng):
    w0 = initial_weights(rng, np.float64)
    grads = step_grads(rng, np.float64)
    _, a = run_fastnn(optimizers.Adam(learning_rate=0.05, weight_decay=0.1), w0, grads)
    _, b = run_fastnn(optimizers.AdamW(learning_rate=0.05, weight_decay=0.1), w0, grads)
    for x, y in zip(a[-1], b[-1]):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("when", ["before_build", "after_build"])
def test_exclude_from_weight_decay_by_name(when):
    kernel = Variable("dense/kernel", np.array([1.0, 2.0]))
    bias = Variable("dense/bias", np.array([3.0]))
    opt = optimizers.SGD(learning_rate=0.1, weight_decay=0.5)
    zero = [np.zeros(2), np.zeros(1)]
    if when == "before_build":
        opt.exclude_from_weight_decay(var_names=["bias"])
    else:
        opt.build([kernel, bias])
        opt.exclude_from_weight_decay(var_names=["bias"])
    opt.apply(zero, [kernel, bias])
    np.testing.assert_allclose(kernel.value, [0.95, 1.9], rtol=1e-15)
    np.testing.assert_array_equal(bias.value, [3.0])


def test_exclude_from_weight_decay_by_variable():
    kernel = Variable("dense/kernel", np.array([1.0, 2.0]))
    bias = Variable("dense/bias", np.array([3.0]))
    opt = optimizers.AdamW(learning_rate=0.1, weight_decay=0.5)
    opt.exclude_from_weight_decay(var_list=[kernel])
    opt.apply([np.zeros(2), np.zeros(1)], [kernel, bias])
    np.testing.assert_array_equal(kernel.value, [1.0, 2.0])
    np.testing.assert_allclose(bias.value, [3.0 * 0.95], rtol=1e-15)


# ---- EMA ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_ema_follows_keras_and_finalize_copies_it(rng, dtype):
    w0 = initial_weights(rng, dtype)
    grads = step_grads(rng, dtype)
    opt = optimizers.SGD(learning_rate=0.1, use_ema=True, ema_momentum=0.8)
    variables, history = run_fastnn(opt, w0, grads)
    ref = KerasRef("SGD", learning_rate=0.1, use_ema=True, ema_momentum=0.8)
    want = run_ref(ref, w0, grads)
    for v, w in zip(variables, want[-1]):  # training weights are the raw ones
        np.testing.assert_allclose(v.value, w, **tol(dtype))
    # the first average is the weights after step 1 (momentum 0 at iterations == 0)
    avg = [w.astype(np.float64) for w in history[0]]
    for step in history[1:]:
        avg = [0.8 * a + 0.2 * w for a, w in zip(avg, step)]
    opt.finalize_variable_values()
    for v, a, r in zip(variables, avg, ref.average):
        np.testing.assert_allclose(v.value, r, **tol(dtype))
        np.testing.assert_allclose(v.value, a, **tol(dtype))
        assert v.value.dtype == dtype


def test_ema_overwrite_frequency():
    v = Variable("w", np.array([1.0]))
    opt = optimizers.SGD(learning_rate=0.1, use_ema=True, ema_momentum=0.5, ema_overwrite_frequency=2)
    opt.apply([np.array([1.0])], [v])  # w = 0.9, avg = 0.9
    assert v.value[0] == pytest.approx(0.9)
    opt.apply([np.array([1.0])], [v])  # w = 0.8, avg = 0.85, then overwritten
    assert v.value[0] == pytest.approx(0.85, abs=1e-14)


def test_finalize_without_ema_changes_nothing():
    v = Variable("w", np.array([1.0]))
    opt = optimizers.SGD(learning_rate=0.1)
    opt.apply([np.array([1.0])], [v])
    opt.finalize_variable_values()
    assert v.value[0] == pytest.approx(0.9)


# ---- iterations and learning-rate schedules --------------------------------------------------------
def test_iterations_count_steps_on_both_paths(rng):
    w0 = initial_weights(rng, np.float32)
    opt = optimizers.Adam()
    assert opt.iterations == 0
    variables = [Variable(n, w.copy()) for n, w in zip(NAMES, w0)]
    for k in range(3):
        opt.apply([np.ones(s, np.float32) for s in SHAPES], variables)
        assert opt.iterations == k + 1
    params, grads, flat_vars = flat_variables(w0, np.float32)
    opt = optimizers.Nadam()
    opt.build(flat_vars, flat=(params, grads))
    for k in range(4):
        opt.apply_flat()
        assert opt.iterations == k + 1


def test_learning_rate_schedule_is_evaluated_at_iterations():
    calls = []

    def schedule(step):
        calls.append(step)
        return 0.1 / (1 + step)

    v = Variable("w", np.array([1.0]))
    opt = optimizers.SGD(learning_rate=schedule)
    assert opt.learning_rate == pytest.approx(0.1)
    for _ in range(3):
        opt.apply([np.array([1.0])], [v])
    np.testing.assert_allclose(v.value, [1.0 - 0.1 - 0.05 - 0.1 / 3], rtol=1e-14)
    assert set(calls) >= {0, 1, 2} and max(calls) <= 3
    assert opt.learning_rate == pytest.approx(0.1 / 4)


@pytest.mark.parametrize("kind", ["Adam", "Nadam", "RMSprop", "AdamW"])
def test_schedule_matches_reference(rng, kind):
    w0 = initial_weights(rng, np.float64)
    grads = step_grads(rng, np.float64)
    schedule = lambda it: 0.05 * 0.5 ** it  # noqa: E731
    _, got = run_fastnn(make(kind, learning_rate=schedule), w0, grads)
    want = run_ref(KerasRef(kind, learning_rate=schedule), w0, grads)
    for g, w in zip(got[-1], want[-1]):
        np.testing.assert_allclose(g, w, **tol(np.float64))


def test_learning_rate_can_be_reassigned():
    v = Variable("w", np.array([1.0]))
    opt = optimizers.SGD(learning_rate=0.1)
    opt.apply([np.array([1.0])], [v])
    opt.learning_rate = 0.5
    assert opt.learning_rate == 0.5
    opt.apply([np.array([1.0])], [v])
    np.testing.assert_allclose(v.value, [0.4], rtol=1e-14)


# ---- defaults, names, configs ---------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(KERAS_DEFAULTS))
def test_defaults_equal_keras(kind):
    opt = getattr(optimizers, kind)()
    for attr, value in KERAS_DEFAULTS[kind].items():
        assert getattr(opt, attr) == value, attr
    for attr, value in BASE_DEFAULTS.items():
        if attr == "weight_decay" and kind == "AdamW":
            continue
        assert getattr(opt, attr) == value, attr
    assert opt.name == KERAS_NAMES[kind]
    assert opt.iterations == 0


@pytest.mark.parametrize("name,cls", [("adam", "Adam"), ("Adam", "Adam"), ("sgd", "SGD"), ("SGD", "SGD"),
                                      ("rmsprop", "RMSprop"), ("adagrad", "Adagrad"), ("adadelta", "Adadelta"),
                                      ("adamw", "AdamW"), ("nadam", "Nadam")])
def test_get_by_name(name, cls):
    opt = optimizers.get(name)
    assert type(opt) is getattr(optimizers, cls)
    for attr, value in KERAS_DEFAULTS[cls].items():
        assert getattr(opt, attr) == value


def test_get_passes_instances_and_classes():
    opt = optimizers.Adam(learning_rate=0.3)
    assert optimizers.get(opt) is opt
    assert type(optimizers.get(optimizers.RMSprop)) is optimizers.RMSprop


def test_get_unknown_name_or_type():
    with pytest.raises(ValueError, match="nosuchopt"):
        optimizers.get("nosuchopt")
    with pytest.raises(TypeError):
        optimizers.get(42)


@pytest.mark.parametrize("kind,kwargs", [
    ("Adam", dict(learning_rate=0.01, amsgrad=True, clipnorm=2.0)),
    ("SGD", dict(momentum=0.5, nesterov=True, use_ema=True, ema_momentum=0.9)),
    ("RMSprop", dict(rho=0.8, centered=True, global_clipnorm=1.0)),
    ("AdamW", dict(weight_decay=0.1, beta_2=0.99)),
])
def test_config_round_trip(kind, kwargs):
    opt = make(kind, **kwargs)
    clone = type(opt).from_config(opt.get_config())
    for k, v in kwargs.items():
        assert getattr(clone, k) == v
    assert clone.learning_rate == opt.learning_rate


# ---- argument errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [dict(clipnorm=1.0, clipvalue=1.0), dict(clipnorm=1.0, global_clipnorm=1.0),
                                    dict(clipvalue=1.0, global_clipnorm=1.0)])
def test_two_clip_options_rejected(kwargs):
    with pytest.raises(ValueError, match="clip"):
        optimizers.Adam(**kwargs)


@pytest.mark.parametrize("lr", [-0.1, "fast", float("nan"), float("inf"), None, [0.1]])
def test_bad_learning_rate(lr):
    with pytest.raises((ValueError, TypeError), match="learning_rate"):
        optimizers.Adam(learning_rate=lr)


def test_bad_learning_rate_assignment():
    opt = optimizers.SGD()
    with pytest.raises((ValueError, TypeError), match="learning_rate"):
        opt.learning_rate = -1.0
    assert opt.learning_rate == 0.01


@pytest.mark.parametrize("momentum", [1.5, -0.1])
def test_bad_sgd_momentum(momentum):
    with pytest.raises(ValueError, match="momentum"):
        optimizers.SGD(momentum=momentum)


@pytest.mark.parametrize("arg", ["clipnorm", "clipvalue", "global_clipnorm", "weight_decay", "ema_momentum"])
def test_bad_base_arguments_name_themselves(arg):
    with pytest.raises(ValueError, match=arg):
        optimizers.Adam(**{arg: -1.0})


def test_unknown_keyword_and_adamw_without_decay():
    with pytest.raises(TypeError, match="bogus"):
        optimizers.Adam(bogus=1)
    with pytest.raises(ValueError, match="weight_decay"):
        optimizers.AdamW(weight_decay=None)


# ---- raw kernels in fastnn.ops ------------------------------------------------------------------------
def _kernel_calls(n, dtype, bad=None):
    """(name, callable) for each update kernel; `bad` replaces one argument by name."""
    def arr():
        return np.zeros(n, dtype)

    def pick(name, default):
        return bad[1] if bad is not None and bad[0] == name else default

    w, g = pick("w", arr()), pick("g", np.ones(n, dtype))
    return {
        "sgd_update": lambda: ops.sgd_update(w, g, pick("m", arr()), 0.1, 0.9),
        "adagrad_update": lambda: ops.adagrad_update(w, g, pick("acc", arr())),
        "rmsprop_update": lambda: ops.rmsprop_update(w, g, pick("v", arr()), pick("mean_g", arr()),
                                                     pick("m", arr()), momentum=0.5),
        "adadelta_update": lambda: ops.adadelta_update(w, g, pick("acc_g", arr()), pick("acc_d", arr())),
        "adam_update": lambda: ops.adam_update(w, g, pick("m", arr()), pick("v", arr()), 1,
                                               v_max=pick("v_max", arr())),
        "nadam_update": lambda: ops.nadam_update(w, g, pick("m", arr()), pick("v", arr()), 1, 0.5, 0.25),
    }


KERNEL_STATE = {"sgd_update": ["m"], "adagrad_update": ["acc"], "rmsprop_update": ["v", "mean_g", "m"],
                "adadelta_update": ["acc_g", "acc_d"], "adam_update": ["m", "v", "v_max"],
                "nadam_update": ["m", "v"]}
KERNEL_ARGS = [(k, a) for k, names in KERNEL_STATE.items() for a in ["g"] + names]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", list(KERNEL_STATE))
def test_kernels_accept_good_buffers(kernel, dtype):
    _kernel_calls(8, dtype)[kernel]()


@pytest.mark.parametrize("kernel,arg", KERNEL_ARGS)
def test_kernels_reject_wrong_size(kernel, arg):
    with pytest.raises(ValueError, match=f"'{arg}'"):
        _kernel_calls(8, np.float32, (arg, np.zeros(7, np.float32)))[kernel]()


@pytest.mark.parametrize("kernel,arg", KERNEL_ARGS)
def test_kernels_reject_mixed_precision(kernel, arg):
    # fastnn.ops contract: mixing float32 and float64 raises TypeError, never a silent cast.
    with pytest.raises(TypeError, match=f"'{arg}'"):
        _kernel_calls(8, np.float32, (arg, np.zeros(8, np.float64)))[kernel]()


@pytest.mark.parametrize("kernel,arg", [(k, a) for k, a in KERNEL_ARGS if a != "g"] +
                         [(k, "w") for k in KERNEL_STATE])
def test_kernels_reject_non_contiguous_and_read_only_state(kernel, arg):
    strided = np.zeros(16, np.float32)[::2]
    with pytest.raises(ValueError, match="contiguous"):
        _kernel_calls(8, np.float32, (arg, strided))[kernel]()
    readonly = np.zeros(8, np.float32)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        _kernel_calls(8, np.float32, (arg, readonly))[kernel]()


def test_kernels_reject_non_float_parameters():
    with pytest.raises(TypeError, match="'w'"):
        ops.adam_update(np.zeros(4, np.int32), np.zeros(4, np.float32), np.zeros(4, np.float32),
                        np.zeros(4, np.float32), 1)
    with pytest.raises(TypeError, match="'w'"):
        ops.sgd_update([0.0, 0.0], np.zeros(2, np.float32))
    with pytest.raises(TypeError, match="'m'"):
        ops.adam_update(np.zeros(4, np.float32), np.zeros(4, np.float32), [0.0] * 4, np.zeros(4, np.float32), 1)


def test_kernel_reads_a_strided_gradient_correctly():
    big = np.arange(16, dtype=np.float64)
    w1, w2 = np.ones(8), np.ones(8)
    m1, v1, m2, v2 = (np.zeros(8) for _ in range(4))
    ops.adam_update(w1, big[::2], m1, v1, 1, learning_rate=0.1)
    ops.adam_update(w2, big[::2].copy(), m2, v2, 1, learning_rate=0.1)
    np.testing.assert_array_equal(w1, w2)
    np.testing.assert_array_equal(big, np.arange(16))


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_kernel_matches_reference(rng, dtype):
    w0, g = rng.standard_normal(100).astype(dtype), rng.standard_normal(100).astype(dtype)
    w, m, v, vmax = w0.copy(), np.zeros(100, dtype), np.zeros(100, dtype), np.zeros(100, dtype)
    ops.adam_update(w, g, m, v, 1, v_max=vmax, learning_rate=0.05, weight_decay=0.1)
    ref = KerasRef("AdamW", learning_rate=0.05, weight_decay=0.1, amsgrad=True).step([w0], [g])[0]
    np.testing.assert_allclose(w, ref, **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_clipping_scaling_and_ema_kernels_match_numpy(rng, dtype):
    g0 = rng.standard_normal(10).astype(dtype)
    offsets = np.array([0, 3, 3, 10], np.int64)
    sums = ops.sum_squares(g0, offsets)
    assert sums.dtype == np.float64
    np.testing.assert_allclose(sums, [np.sum(np.square(g0[a:b], dtype=np.float64))
                                      for a, b in zip(offsets[:-1], offsets[1:])], rtol=1e-12)
    g = g0.copy()
    assert ops.scale_segments(g, offsets, np.array([2.0, 5.0, -1.0])) is None
    np.testing.assert_array_equal(g, np.concatenate([g0[:3] * dtype(2.0), -g0[3:]]))
    g = g0.copy()
    ops.clip_by_value(g, 0.5)
    np.testing.assert_array_equal(g, np.clip(g0, -0.5, 0.5))
    ema, w = g0.copy(), rng.standard_normal(10).astype(dtype)
    ops.ema_update(ema, w, 0.0)
    np.testing.assert_array_equal(ema, w)
    ops.ema_update(ema, g0, 0.75)
    np.testing.assert_allclose(ema, 0.75 * w + 0.25 * g0, **tol(dtype))


# ---- thread count ----------------------------------------------------------------------------------
N_BIG = 1_000_000


@pytest.mark.parametrize("kind,kwargs", [
    ("Adam", dict(learning_rate=0.01, global_clipnorm=100.0, weight_decay=0.01)),
    ("Nadam", dict(learning_rate=0.01, clipnorm=50.0)),
    ("RMSprop", dict(learning_rate=0.01, momentum=0.9, centered=True, clipvalue=1.0)),
    ("SGD", dict(learning_rate=0.01, momentum=0.9, nesterov=True, use_ema=True)),
    ("Adagrad", dict(learning_rate=0.01)),
    ("Adadelta", dict(learning_rate=1.0)),
])
def test_results_bit_identical_for_1_and_2_threads(rng, threads, kind, kwargs):
    w0 = rng.standard_normal(N_BIG).astype(np.float32)
    grads = [rng.standard_normal(N_BIG).astype(np.float32) for _ in range(3)]
    split = [0, 1000, 400_000, N_BIG]  # three variables of uneven size
    results = []
    for n in (1, 2):
        threads(n)
        assert fastnn.get_num_threads() == n
        params, flat_g = w0.copy(), np.zeros(N_BIG, np.float32)
        variables = [Variable(f"v{i}", params[split[i]:split[i + 1]]) for i in range(3)]
        opt = make(kind, **kwargs)
        opt.build(variables, flat=(params, flat_g))
        for g in grads:
            flat_g[...] = g
            opt.apply_flat()
        sep = [Variable(f"v{i}", w0[split[i]:split[i + 1]].copy()) for i in range(3)]
        opt2 = make(kind, **kwargs)
        for g in grads:
            opt2.apply([g[split[i]:split[i + 1]] for i in range(3)], sep)
        results.append((params, np.concatenate([v.value for v in sep])))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    np.testing.assert_array_equal(results[0][0], results[0][1])
    assert not np.array_equal(results[0][0], w0)


# ---- the step and the scalars of the raw kernels ---------------------------------------------------
def _adam_like(fn, step, **kwargs):
    """(w before, w after, m, v) of one adam_update / nadam_update call."""
    w = np.array([0.5, -1.0, 2.0], np.float64)
    before = w.copy()
    g, m, v = np.array([0.1, -0.2, 0.3]), np.zeros(3), np.zeros(3)
    if fn == "adam_update":
        ops.adam_update(w, g, m, v, step, **kwargs)
    else:
        ops.nadam_update(w, g, m, v, step, kwargs.pop("u_product_t", 0.45), kwargs.pop("u_product_t1", 0.2),
                         **kwargs)
    return before, w, m, v


@pytest.mark.parametrize("fn", ["adam_update", "nadam_update"])
@pytest.mark.parametrize("step, error", [(0, ValueError), (-1, ValueError), (-(2**70), ValueError),
                                         (1.0, TypeError), (2.5, TypeError), (True, TypeError), ("1", TypeError),
                                         (None, TypeError), (np.float64(3), TypeError)])
def test_update_step_must_be_an_int_of_at_least_one(fn, step, error):
    """step 0 made 1 - beta**0 = 0 a divisor: the weights became NaN. Now nothing is written."""
    w = np.array([0.5, -1.0, 2.0])
    m, v = np.zeros(3), np.zeros(3)
    with pytest.raises(error, match=rf"{fn}: 'step' must be an int >= 1, got {re.escape(repr(step))}"):
        if fn == "adam_update":
            ops.adam_update(w, np.ones(3), m, v, step, v_max=np.zeros(3))  # AMSGrad too
        else:
            ops.nadam_update(w, np.ones(3), m, v, step, 0.45, 0.2)
    np.testing.assert_array_equal(w, [0.5, -1.0, 2.0])
    assert not m.any() and not v.any()


@pytest.mark.parametrize("fn", ["adam_update", "nadam_update"])
@pytest.mark.parametrize("step", [1, np.int64(7), np.uint8(2), 2**40])
def test_update_step_accepts_ints_and_numpy_ints(fn, step):
    before, w, m, v = _adam_like(fn, step)
    assert np.all(np.isfinite(w)) and not np.array_equal(w, before)
    if fn == "adam_update":  # the bias correction with t = step: lr·sqrt(1-β2ᵗ)/(1-β1ᵗ)·m/(sqrt(v)+ε)
        t = int(step)
        g = np.array([0.1, -0.2, 0.3])
        m_ref, v_ref = 0.1 * g, 0.001 * g * g
        lr_t = 0.001 * math.sqrt(1 - 0.999**t) / (1 - 0.9**t)
        np.testing.assert_allclose(w, before - lr_t * m_ref / (np.sqrt(v_ref) + 1e-7), rtol=1e-12)


KERNEL_SCALARS = [  # (kernel, argument, bad value, error, expected)
    ("sgd_update", "learning_rate", -0.1, ValueError, r"a float >= 0"),
    ("sgd_update", "learning_rate", float("nan"), ValueError, r"a float >= 0"),
    ("sgd_update", "learning_rate", "0.1", TypeError, r"a float >= 0"),
    ("sgd_update", "momentum", 1.5, ValueError, r"a float in \[0, 1\]"),
    ("sgd_update", "momentum", True, TypeError, r"a float in \[0, 1\]"),
    ("adagrad_update", "epsilon", 0.0, ValueError, r"a float > 0"),
    ("adagrad_update", "learning_rate", float("inf"), ValueError, r"a float >= 0"),
    ("rmsprop_update", "rho", -0.1, ValueError, r"a float in \[0, 1\]"),
    ("rmsprop_update", "momentum", 2.0, ValueError, r"a float in \[0, 1\]"),
    ("rmsprop_update", "epsilon", -1e-7, ValueError, r"a float > 0"),
    ("adadelta_update", "rho", float("nan"), ValueError, r"a float in \[0, 1\]"),
    ("adadelta_update", "epsilon", None, TypeError, r"a float > 0"),
    ("adam_update", "beta_1", 1.0, ValueError, r"a float in \[0, 1\)"),
    ("adam_update", "beta_2", -0.5, ValueError, r"a float in \[0, 1\)"),
    ("adam_update", "epsilon", 0.0, ValueError, r"a float > 0"),
    ("adam_update", "weight_decay", -0.01, ValueError, r"a float >= 0"),
    ("nadam_update", "beta_1", 1.0, ValueError, r"a float in \[0, 1\)"),
    ("nadam_update", "u_product_t1", 1.0, ValueError, r"a float in \[0, 1\)"),
    ("nadam_update", "u_product_t", float("nan"), ValueError, r"a float in \[0, 1\)"),
    ("nadam_update", "weight_decay", [0.1], TypeError, r"a float >= 0"),
]


def _call_kernel(kernel, **scalars):
    w, g = np.zeros(4), np.ones(4)
    z = np.zeros
    calls = {
        "sgd_update": lambda: ops.sgd_update(w, g, z(4), **scalars),
        "adagrad_update": lambda: ops.adagrad_update(w, g, z(4), **scalars),
        "rmsprop_update": lambda: ops.rmsprop_update(w, g, z(4), z(4), z(4), **scalars),
        "adadelta_update": lambda: ops.adadelta_update(w, g, z(4), z(4), **scalars),
        "adam_update": lambda: ops.adam_update(w, g, z(4), z(4), 1, **scalars),
        "nadam_update": lambda: ops.nadam_update(w, g, z(4), z(4), 1, **{"u_product_t": 0.45, "u_product_t1": 0.2,
                                                                         **scalars}),
    }
    calls[kernel]()
    return w


@pytest.mark.parametrize("kernel, arg, value, error, expected", KERNEL_SCALARS,
                         ids=[f"{k}-{a}-{v!r}" for k, a, v, _, _ in KERNEL_SCALARS])
def test_kernel_scalars_are_checked_by_name(kernel, arg, value, error, expected):
    with pytest.raises(error, match=rf"{kernel}: '{arg}' must be {expected}, got {re.escape(repr(value))}"):
        _call_kernel(kernel, **{arg: value})


def test_kernel_scalar_edges_are_accepted():
    assert np.all(np.isfinite(_call_kernel("sgd_update", learning_rate=0, momentum=1)))
    assert np.all(np.isfinite(_call_kernel("rmsprop_update", rho=1.0, momentum=0)))
    assert np.all(np.isfinite(_call_kernel("adam_update", beta_1=0.0, beta_2=0, weight_decay=0)))
    assert np.all(np.isfinite(_call_kernel("nadam_update", u_product_t=0.0, u_product_t1=0.0)))
    g = np.array([-2.0, 0.5, 3.0])
    with pytest.raises(ValueError, match=r"clip_by_value: 'clipvalue' must be a float > 0, got 0"):
        ops.clip_by_value(g, 0)
    with pytest.raises(ValueError, match=r"ema_update: 'momentum' must be a float in \[0, 1\], got 1.5"):
        ops.ema_update(np.zeros(3), g, 1.5)
    np.testing.assert_array_equal(g, [-2.0, 0.5, 3.0])


# ---- constructor arguments ---------------------------------------------------------------------
OPTIMIZER_BAD = [  # (class, kwargs, error, message)
    (optimizers.Adam, dict(beta_1=1.0), ValueError, r"Adam: 'beta_1' must be a float in \[0, 1\), got 1.0"),
    (optimizers.Adam, dict(beta_1=-0.1), ValueError, r"Adam: 'beta_1' must be a float in \[0, 1\)"),
    (optimizers.Adam, dict(beta_2=float("nan")), ValueError, r"Adam: 'beta_2' must be a float in \[0, 1\), got nan"),
    (optimizers.Adam, dict(beta_2="0.999"), TypeError, r"Adam: 'beta_2' must be a float in \[0, 1\), got '0.999'"),
    (optimizers.Adam, dict(epsilon=0), ValueError, r"Adam: 'epsilon' must be a float > 0, got 0"),
    (optimizers.Adam, dict(epsilon=True), TypeError, r"Adam: 'epsilon' must be a float > 0, got True"),
    (optimizers.AdamW, dict(beta_1=1.5), ValueError, r"AdamW: 'beta_1' must be a float in \[0, 1\), got 1.5"),
    (optimizers.AdamW, dict(weight_decay=-0.1), ValueError, r"AdamW: 'weight_decay' must be a float >= 0, got -0.1"),
    (optimizers.Nadam, dict(beta_1=1.0), ValueError, r"Nadam: 'beta_1' must be a float in \[0, 1\), got 1.0"),
    (optimizers.Nadam, dict(epsilon=-1e-7), ValueError, r"Nadam: 'epsilon' must be a float > 0"),
    (optimizers.RMSprop, dict(rho=1.5), ValueError, r"RMSprop: 'rho' must be a float in \[0, 1\], got 1.5"),
    (optimizers.RMSprop, dict(momentum=-0.5), ValueError, r"RMSprop: 'momentum' must be a float in \[0, 1\]"),
    (optimizers.RMSprop, dict(epsilon=float("inf")), ValueError, r"RMSprop: 'epsilon' must be a float > 0, got inf"),
    (optimizers.Adagrad, dict(initial_accumulator_value=-0.1), ValueError,
     r"Adagrad: 'initial_accumulator_value' must be a float >= 0, got -0.1"),
    (optimizers.Adagrad, dict(epsilon=0.0), ValueError, r"Adagrad: 'epsilon' must be a float > 0, got 0.0"),
    (optimizers.Adadelta, dict(rho=-0.01), ValueError, r"Adadelta: 'rho' must be a float in \[0, 1\], got -0.01"),
    (optimizers.Adadelta, dict(epsilon=None), TypeError, r"Adadelta: 'epsilon' must be a float > 0, got None"),
    (optimizers.SGD, dict(momentum="0.9"), ValueError, r"SGD: 'momentum' must be a float in \[0, 1\], got '0.9'"),
    (optimizers.SGD, dict(momentum=float("nan")), ValueError, r"SGD: 'momentum' must be a float in \[0, 1\], got nan"),
    (optimizers.SGD, dict(clipnorm=0), ValueError, r"SGD: 'clipnorm' must be a float > 0, got 0"),
    (optimizers.SGD, dict(clipvalue="1"), TypeError, r"SGD: 'clipvalue' must be a float > 0, got '1'"),
    (optimizers.SGD, dict(global_clipnorm=float("nan")), ValueError, r"SGD: 'global_clipnorm' must be a float > 0"),
    (optimizers.SGD, dict(clipnorm=1.0, clipvalue=0.5), ValueError,
     r"SGD: set at most one of clipnorm, clipvalue, global_clipnorm \(as Keras\), got clipnorm=1.0, clipvalue=0.5"),
    (optimizers.Adam, dict(weight_decay=True), TypeError, r"Adam: 'weight_decay' must be a float >= 0, got True"),
    (optimizers.Adam, dict(ema_momentum=1.5), ValueError, r"Adam: 'ema_momentum' must be a float in \[0, 1\]"),
    (optimizers.Adam, dict(ema_momentum="high"), TypeError, r"Adam: 'ema_momentum' must be a float in \[0, 1\]"),
    (optimizers.Adam, dict(use_ema=True, ema_overwrite_frequency=2.5), ValueError,
     r"Adam: 'ema_overwrite_frequency' must be None or an int >= 1 \(0: never\), got 2.5"),
    (optimizers.Adam, dict(use_ema=True, ema_overwrite_frequency=-1), ValueError, r"'ema_overwrite_frequency'"),
    (optimizers.Adam, dict(use_ema=True, ema_overwrite_frequency=True), ValueError, r"'ema_overwrite_frequency'"),
    (optimizers.Adam, dict(name=3), TypeError, r"Adam: 'name' must be a string or None, got 3"),
    (optimizers.Adam, dict(learning_rate=float("nan")), ValueError,
     r"Adam: 'learning_rate' must be a float >= 0 or a schedule, got nan"),
]


@pytest.mark.parametrize("cls, kwargs, error, message", OPTIMIZER_BAD,
                         ids=[f"{c.__name__}-{sorted(k)}" for c, k, _, _ in OPTIMIZER_BAD])
def test_optimizer_constructor_arguments_are_checked(cls, kwargs, error, message):
    with pytest.raises(error, match=message) as info:
        cls(**kwargs)
    assert type(info.value) is error


def test_optimizer_constructor_normalises_what_keras_accepts():
    opt = optimizers.SGD(learning_rate=1, momentum=1, clipnorm=np.float32(2))
    assert (repr(opt.learning_rate), repr(opt.momentum), repr(opt.clipnorm)) == ("1.0", "1.0", "2.0")
    opt = optimizers.Adam(beta_1=0, beta_2=np.float64(0.5), epsilon=1, weight_decay=0, use_ema=True,
                          ema_momentum=1, ema_overwrite_frequency=np.int64(3))
    assert (opt.beta_1, opt.beta_2, opt.epsilon, opt.weight_decay, opt.ema_momentum) == (0.0, 0.5, 1.0, 0.0, 1.0)
    assert repr(opt.ema_overwrite_frequency) == "3"
    assert optimizers.Adam(use_ema=True, ema_overwrite_frequency=0).ema_overwrite_frequency == 0  # Keras: as None
    assert optimizers.RMSprop(rho=1.0, momentum=1).rho == 1.0
    assert optimizers.Adagrad(initial_accumulator_value=0).initial_accumulator_value == 0.0
    with pytest.warns(UserWarning, match="Adam: argument 'decay' is no longer supported and will be ignored"):
        opt = optimizers.Adam(decay=1e-4)  # Keras 2's argument: Keras 3 warns and ignores it
    assert "decay" not in opt.get_config()
    optimizers.Adam(decay=None)  # nothing to warn about


def test_the_normalised_configs_round_trip():
    opt = optimizers.RMSprop(learning_rate=1, rho=np.float32(0.5), momentum=0, epsilon=1, clipvalue=3)
    clone = optimizers.RMSprop.from_config(opt.get_config())
    assert clone.get_config() == opt.get_config()
    assert all(type(v) in (float, bool, str, type(None)) for v in opt.get_config().values())
