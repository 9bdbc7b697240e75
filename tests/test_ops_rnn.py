"""fastnn.ops.lstm / gru / simple_rnn / lstm_cell / embedding against NumPy step loops
(tests/rnn_reference.py), central finite differences and np.add.at."""

import zlib

import numpy as np
import pytest

import fastnn
from fastnn import ops
from rnn_reference import gru_reference, lstm_reference, sigmoid, simple_rnn_reference
from test_layers_core import _numeric_gradient

SELU_ALPHA, SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
# Keras 3's formulas (keras/src/activations/activations.py, default parameters)
ACTIVATIONS = {"tanh": np.tanh, "sigmoid": sigmoid, "relu": lambda v: np.maximum(v, 0), "linear": lambda v: v,
               "hard_sigmoid": lambda v: np.clip(v + 3, 0, 6) / 6,  # relu6(x + 3) / 6
               "softsign": lambda v: v / (np.abs(v) + 1),
               "elu": lambda v: np.where(v > 0, v, np.expm1(np.minimum(v, 0))),
               "selu": lambda v: SELU_SCALE * np.where(v > 0, v, SELU_ALPHA * np.expm1(np.minimum(v, 0))),
               "softplus": lambda v: np.logaddexp(0, v),
               "leaky_relu": lambda v: np.where(v > 0, v, 0.2 * v),
               "relu6": lambda v: np.clip(v, 0, 6),
               "hard_tanh": lambda v: np.clip(v, -1, 1)}
NEW_ACTIVATIONS = ["hard_sigmoid", "softsign", "elu", "selu", "softplus", "leaky_relu", "relu6", "hard_tanh"]
GATES = {"lstm": 4, "gru": 3, "simple_rnn": 1, "gru_rb": 3}  # gru_rb: GRU(reset_after=False)
KINDS = ["lstm", "gru", "simple_rnn", "gru_rb"]


def make_case(kind, batch, steps, features, units, dtype, rng, bias=True, initial=False, mask=False,
              scale=False):
    g = GATES[kind]
    x = rng.standard_normal((batch, steps, features)).astype(dtype)
    kernel = (rng.standard_normal((features, g * units)) * 0.5).astype(dtype)
    recurrent = (rng.standard_normal((units, g * units)) * 0.5).astype(dtype)
    b = None
    if bias:
        b = (rng.standard_normal((2, g * units) if kind == "gru" else (g * units,)) * 0.5).astype(dtype)
    states = None
    if initial:
        states = [rng.standard_normal((batch, units)).astype(dtype) for _ in range(2 if kind == "lstm" else 1)]
    m = None
    if mask:  # ragged lengths, padded at either end, one sample fully masked when possible
        m = np.ones((batch, steps), bool)
        for i in range(batch):
            length = rng.integers(0, steps + 1) if batch > 1 else steps - 1
            if rng.random() < 0.5:
                m[i, length:] = False
            else:
                m[i, :steps - length] = False
    s = None
    if scale:
        s = ((rng.random((batch, units)) > 0.3) / 0.7).astype(dtype)
    return dict(x=x, kernel=kernel, recurrent=recurrent, bias=b, states=states, mask=m, scale=s)


def run(kind, c, go_backwards=False, activation="tanh", recurrent_activation="sigmoid", return_cache=False):
    kwargs = dict(bias=c["bias"], initial_state=c["states"], mask=c["mask"], go_backwards=go_backwards,
                  activation=activation, recurrent_dropout_mask=c["scale"], return_cache=return_cache)
    if kind != "simple_rnn":
        kwargs["recurrent_activation"] = recurrent_activation
    if kind == "gru_rb":
        return ops.gru(c["x"], c["kernel"], c["recurrent"], reset_after=False, **kwargs)
    return getattr(ops, kind)(c["x"], c["kernel"], c["recurrent"], **kwargs)


def backward_of(kind):
    return ops.gru_backward if kind == "gru_rb" else getattr(ops, f"{kind}_backward")


def reference(kind, c, go_backwards=False, activation="tanh", recurrent_activation="sigmoid"):
    f = {"lstm": lstm_reference, "gru": gru_reference, "simple_rnn": simple_rnn_reference, "gru_rb": gru_reference}[kind]
    states = c["states"] or []
    kwargs = dict(mask=c["mask"], go_backwards=go_backwards, activation=ACTIVATIONS[activation],
                  recurrent_scale=c["scale"])
    if kind == "gru_rb":
        kwargs["reset_after"] = False
    if kind != "simple_rnn":
        kwargs["recurrent_activation"] = ACTIVATIONS[recurrent_activation]
    args64 = [None if a is None else np.asarray(a, np.float64) for a in (c["x"], c["kernel"], c["recurrent"], c["bias"])]
    if states:
        kwargs["h0"] = np.asarray(states[0], np.float64)
    if kind == "lstm" and states:
        kwargs["c0"] = np.asarray(states[1], np.float64)
    if c["scale"] is not None:
        kwargs["recurrent_scale"] = np.asarray(c["scale"], np.float64)
    return f(*args64, **kwargs)


def _seed(*parts):
    """A seed from the case's parameters, the same in every process (Python's hash of a
    string is salted per process, which drew new data, and a new rounding error, each run)."""
    return zlib.crc32(repr(parts).encode())


SHAPES = [(1, 1, 1, 1), (2, 3, 4, 5), (3, 7, 2, 9), (5, 4, 6, 3), (4, 11, 3, 16), (2, 2, 17, 33)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("options", ["plain", "mask", "initial+mask", "nobias", "scale"])
def test_forward_matches_the_step_loop(kind, dtype, shape, go_backwards, options):
    rng = np.random.default_rng(_seed(kind, shape, go_backwards, options))
    c = make_case(kind, *shape, dtype, rng, bias=options != "nobias", initial="initial" in options,
                  mask="mask" in options, scale=options == "scale")
    got = run(kind, c, go_backwards)
    want = reference(kind, c, go_backwards)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("activation,recurrent_activation", [("relu", "sigmoid"), ("linear", "tanh"),
                                                             ("sigmoid", "linear")])
def test_other_activations(kind, activation, recurrent_activation):
    rng = np.random.default_rng(3)
    c = make_case(kind, 3, 5, 4, 6, np.float64, rng, initial=True)
    got = run(kind, c, False, activation, recurrent_activation)
    want = reference(kind, c, False, activation, recurrent_activation)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind, as_recurrent", [(k, r) for k in KINDS for r in (False, True)
                                                 if not (k == "simple_rnn" and r)])  # (SimpleRNN: no recurrent one)
@pytest.mark.parametrize("name", NEW_ACTIVATIONS)
def test_keras_activations_forward_and_backward(kind, name, as_recurrent):
    """Each kernel activation as activation (and as recurrent_activation), against Keras'
    formula and central finite differences (inputs, every weight, the initial state)."""
    rng = np.random.default_rng(zlib.crc32(f"{kind} {name} {as_recurrent}".encode()))  # the same every run
    c = make_case(kind, 3, 5, 4, 3, np.float64, rng, initial=True, mask=True)
    # bounded ones: pre-activations across their saturations (±1, ±3); unbounded gates (an
    # elu "gate" can exceed 1) would let the states grow past what differences resolve
    factor = 2.0 if name in ("hard_sigmoid", "softsign", "hard_tanh") else 0.5 if as_recurrent else 1.0
    for key in ("x", "kernel", "recurrent"):
        c[key] *= factor
    act, ract = ("tanh", name) if as_recurrent else (name, "sigmoid")
    got = run(kind, c, False, act, ract)
    want = reference(kind, c, False, act, ract)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
    weights = loss_and_weights(kind, c, rng)

    def loss():
        return sum(float(np.sum(w * o)) for w, o in zip(weights, run(kind, c, False, act, ract)))

    *_, cache = run(kind, c, False, act, ract, return_cache=True)
    extra = {"d_c": weights[2]} if kind == "lstm" else {}
    grads = backward_of(kind)(cache, d_outputs=weights[0], d_h=weights[1], **extra)
    for key, array in (("dx", c["x"]), ("kernel", c["kernel"]), ("recurrent_kernel", c["recurrent"]),
                       ("bias", c["bias"]), ("h0", c["states"][0])):
        fd = _numeric_gradient(loss, array)
        scale = np.linalg.norm(fd)
        err = np.abs(grads[key] - fd)
        assert np.linalg.norm(err) <= 1e-6 * scale, f"{kind} {name} {key}: relative error {np.linalg.norm(err) / scale:.3g}"
        assert np.all(err <= 1e-5 * np.abs(fd) + 1e-8 * scale), f"{kind} {name} {key}: element error {err.max():.3g}"


@pytest.mark.parametrize("kind", KINDS)
def test_keras_activations_are_bit_identical_on_one_and_two_threads(kind, threads):
    rng = np.random.default_rng(8)
    c = make_case(kind, 32, 6, 20, 96, np.float32, rng, initial=True, mask=True)
    dy = rng.standard_normal((32, 6, 96)).astype(np.float32)
    act, ract = ("softsign", "hard_sigmoid") if kind != "simple_rnn" else ("selu", "sigmoid")
    results = []
    for n in (1, 2):
        threads(n)
        *outs, cache = run(kind, c, False, act, ract, return_cache=True)
        grads = backward_of(kind)(cache, d_outputs=dy)
        results.append(list(outs) + [v for v in grads.values() if v is not None])
    for a, b in zip(*results):
        assert a.tobytes() == b.tobytes()


def test_activations_outside_the_kernel_are_a_clear_error():
    rng = np.random.default_rng(0)
    c = make_case("gru", 2, 3, 4, 5, np.float32, rng)
    for bad in ("gelu", "swish", "softmax", 3, "Tanh"):
        with pytest.raises(ValueError, match=r"gru: 'recurrent_activation' must be one of linear, relu, sigmoid, "
                                             r"tanh, hard_sigmoid, softsign, .*got"):
            ops.gru(c["x"], c["kernel"], c["recurrent"], recurrent_activation=bad)
    with pytest.raises(ValueError, match=r"lstm: 'activation' must be one of .*hard_tanh \(or None\), got 'gelu'"):
        ops.lstm(c["x"], np.zeros((4, 20), np.float32), np.zeros((5, 20), np.float32), activation="gelu")
    assert ops.rnn.RNN_ACTIVATIONS == ("linear", "relu", "sigmoid", "tanh", *NEW_ACTIVATIONS)


def loss_and_weights(kind, c, rng):
    """A scalar loss of every output, for finite differences: Σ R·outputs + Σ R'·h (+ Σ R''·c)."""
    outputs = run(kind, c)
    return [rng.standard_normal(o.shape) for o in outputs]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("options", ["plain", "mask+initial", "backwards+mask", "scale", "nobias"])
def test_backward_through_time_matches_finite_differences(kind, options):
    rng = np.random.default_rng(_seed(kind, options))
    c = make_case(kind, 3, 5, 4, 3, np.float64, rng, bias=options != "nobias", initial=True,
                  mask="mask" in options, scale=options == "scale")
    go_backwards = "backwards" in options
    weights = loss_and_weights(kind, c, rng)

    def loss():
        outs = run(kind, c, go_backwards)
        return sum(float(np.sum(w * o)) for w, o in zip(weights, outs))

    *outs, cache = run(kind, c, go_backwards, return_cache=True)
    d_out = weights[0]
    backward = backward_of(kind)
    if kind == "lstm":
        grads = backward(cache, d_outputs=d_out, d_h=weights[1], d_c=weights[2])
    else:
        grads = backward(cache, d_outputs=d_out, d_h=weights[1])
    targets = {"dx": c["x"], "kernel": c["kernel"], "recurrent_kernel": c["recurrent"], "h0": c["states"][0]}
    if c["bias"] is not None:
        targets["bias"] = c["bias"]
    else:
        assert grads["bias"] is None
    if kind == "lstm":
        targets["c0"] = c["states"][1]
    for name, array in targets.items():
        np.testing.assert_allclose(grads[name], _numeric_gradient(loss, array), rtol=1e-6, atol=1e-8,
                                   err_msg=f"{kind} {name}")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bias", [True, False])
def test_backward_writes_or_adds_into_given_gradient_arrays(kind, bias):
    """dkernel, drecurrent_kernel, dbias: the weights' gradients written in place (a layer's
    variable.grad), or added to with accumulate; need_dx=False skips dx."""
    rng = np.random.default_rng(11)
    c = make_case(kind, 3, 5, 4, 3, np.float64, rng, bias=bias, initial=True, mask=True)
    *outs, cache = run(kind, c, return_cache=True)
    dy = rng.standard_normal(outs[0].shape)
    backward = backward_of(kind)
    want = backward(cache, d_outputs=dy)
    names = ["kernel", "recurrent_kernel"] + (["bias"] if bias else [])
    given = {f"d{n}": np.full_like(want[n], np.nan) for n in names}
    got = backward(cache, d_outputs=dy, need_dx=False, **given)
    assert got["dx"] is None
    for n in names:
        assert got[n] is given[f"d{n}"]
        assert got[n].tobytes() == want[n].tobytes()
    for key in ("h0", "c0") if kind == "lstm" else ("h0",):
        assert got[key].tobytes() == want[key].tobytes()
    start = {k: rng.standard_normal(v.shape) for k, v in given.items()}
    added = {k: v.copy() for k, v in start.items()}
    backward(cache, d_outputs=dy, accumulate=True, **added)
    for n in names:
        np.testing.assert_allclose(added[f"d{n}"], start[f"d{n}"] + want[n], rtol=1e-13, atol=1e-15)
    # accumulate without arrays to add to: the gradients themselves
    alone = backward(cache, d_outputs=dy, accumulate=True)
    for n in names:
        assert alone[n].tobytes() == want[n].tobytes()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bit_identical_on_one_and_two_threads(kind, dtype):
    # batch 32 x 4·128 gate values: large enough that each step's elementwise work and
    # every product run on two threads.
    rng = np.random.default_rng(7)
    c = make_case(kind, 32, 9, 40, 128, dtype, rng, initial=True, mask=True)
    dy = rng.standard_normal((32, 9, 128)).astype(dtype)
    saved = fastnn.config.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            fastnn.config.set_num_threads(threads)
            *outs, cache = run(kind, c, return_cache=True)
            grads = backward_of(kind)(cache, d_outputs=dy)
            results.append(list(outs) + [v for v in grads.values() if v is not None])
    finally:
        fastnn.config.set_num_threads(saved)
    for a, b in zip(*results):
        assert a.tobytes() == b.tobytes()


def test_zero_timesteps_return_the_initial_states():
    rng = np.random.default_rng(0)
    c = make_case("lstm", 2, 0, 3, 4, np.float64, rng, initial=True)
    outputs, h, cell, cache = run("lstm", c, return_cache=True)
    assert outputs.shape == (2, 0, 4)
    np.testing.assert_array_equal(h, c["states"][0])
    np.testing.assert_array_equal(cell, c["states"][1])
    dh = rng.standard_normal((2, 4))
    grads = ops.lstm_backward(cache, d_h=dh)
    np.testing.assert_array_equal(grads["h0"], dh)
    assert not grads["kernel"].any()


def test_gru_reset_after_false_with_zero_timesteps_returns_the_initial_state():
    rng = np.random.default_rng(0)
    c = make_case("gru_rb", 2, 0, 3, 4, np.float64, rng, initial=True)
    outputs, h, cache = run("gru_rb", c, return_cache=True)
    assert outputs.shape == (2, 0, 4)
    np.testing.assert_array_equal(h, c["states"][0])
    dh = rng.standard_normal((2, 4))
    grads = ops.gru_backward(cache, d_h=dh)
    np.testing.assert_array_equal(grads["h0"], dh)
    assert not grads["kernel"].any() and grads["bias"].shape == (12,) and not grads["bias"].any()


def test_lstm_cell_is_one_step():
    rng = np.random.default_rng(1)
    c = make_case("lstm", 4, 1, 5, 6, np.float64, rng, initial=True)
    h, cell = ops.lstm_cell(c["x"][:, 0], c["states"][0], c["states"][1], c["kernel"], c["recurrent"], c["bias"])
    _, h_ref, c_ref = reference("lstm", c)
    np.testing.assert_allclose(h, h_ref, rtol=1e-12)
    np.testing.assert_allclose(cell, c_ref, rtol=1e-12)
    # backward against finite differences of Σ A·h + Σ B·c with respect to the inputs and states
    wa, wb = rng.standard_normal(h.shape), rng.standard_normal(h.shape)
    *_, cache = ops.lstm_cell(c["x"][:, 0], c["states"][0], c["states"][1], c["kernel"], c["recurrent"], c["bias"],
                              return_cache=True)
    grads = ops.lstm_cell_backward(cache, d_h=wa, d_c=wb)
    x = c["x"][:, 0].copy()

    def loss():
        hh, cc = ops.lstm_cell(x, c["states"][0], c["states"][1], c["kernel"], c["recurrent"], c["bias"])
        return float(np.sum(wa * hh) + np.sum(wb * cc))

    for name, array in (("dx", x), ("h", c["states"][0]), ("c", c["states"][1]), ("bias", c["bias"])):
        np.testing.assert_allclose(grads[name], _numeric_gradient(loss, array), rtol=1e-6, atol=1e-8, err_msg=name)


def test_bad_input_is_a_clear_error():
    rng = np.random.default_rng(0)
    c = make_case("lstm", 2, 3, 4, 5, np.float32, rng)
    with pytest.raises(ValueError, match="3-D"):
        ops.lstm(c["x"][:, 0], c["kernel"], c["recurrent"])
    with pytest.raises(ValueError, match="initial_state"):
        ops.lstm(c["x"], c["kernel"], c["recurrent"], initial_state=[np.zeros((2, 4), np.float32)] * 2)
    with pytest.raises(ValueError, match="initial_state"):
        ops.lstm(c["x"], c["kernel"], c["recurrent"], initial_state=[np.zeros((2, 5), np.float32)])
    with pytest.raises(ValueError, match="kernel"):
        ops.lstm(c["x"], c["kernel"][:3], c["recurrent"])
    with pytest.raises(ValueError, match="recurrent_kernel"):
        ops.lstm(c["x"], c["kernel"], c["recurrent"][:, :8])
    with pytest.raises(ValueError, match="bias"):
        ops.lstm(c["x"], c["kernel"], c["recurrent"], bias=np.zeros(7, np.float32))
    with pytest.raises(ValueError, match="mask"):
        ops.lstm(c["x"], c["kernel"], c["recurrent"], mask=np.ones((2, 4), bool))
    with pytest.raises(ValueError, match="activation"):
        ops.lstm(c["x"], c["kernel"], c["recurrent"], activation="softmax")
    with pytest.raises(TypeError):
        ops.lstm(c["x"], c["kernel"].astype(np.float64), c["recurrent"])
    with pytest.raises(ValueError, match="bias"):
        ops.gru(c["x"], c["kernel"][:, :15], c["recurrent"][:, :15], bias=np.zeros(15, np.float32))
    with pytest.raises(ValueError, match="bias"):  # reset_after=False: one bias row
        ops.gru(c["x"], c["kernel"][:, :15], c["recurrent"][:, :15], bias=np.zeros((2, 15), np.float32),
                reset_after=False)
    with pytest.raises(TypeError, match="reset_after"):
        ops.gru(c["x"], c["kernel"][:, :15], c["recurrent"][:, :15], reset_after="no")


# ---- embedding ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,vocabulary,dim", [((1,), 1, 1), ((4, 7), 5, 3), ((64, 33), 1000, 17),
                                                  ((3, 2, 5), 4, 8)])
def test_embedding_gathers_and_scatters(dtype, shape, vocabulary, dim):
    rng = np.random.default_rng(vocabulary)
    table = rng.standard_normal((vocabulary, dim)).astype(dtype)
    ids = rng.integers(0, vocabulary, size=shape)  # duplicates are the rule
    out = ops.embedding(ids, table)
    np.testing.assert_array_equal(out, table[ids])
    dy = rng.standard_normal(shape + (dim,)).astype(dtype)
    want = np.zeros((vocabulary, dim), np.float64)
    np.add.at(want, ids.reshape(-1), dy.reshape(-1, dim).astype(np.float64))
    got = ops.embedding_backward(ids, dy, vocabulary)
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)
    # accumulate adds to what is there
    base = rng.standard_normal((vocabulary, dim)).astype(dtype)
    acc = base.copy()
    ops.embedding_backward(ids.astype(np.int32), dy, vocabulary, out=acc, accumulate=True)
    np.testing.assert_allclose(acc, base + want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)


def test_embedding_backward_is_bit_identical_on_one_and_two_threads():
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 50, size=(64, 256))  # heavy duplication
    dy = rng.standard_normal((64, 256, 32)).astype(np.float32)
    saved = fastnn.config.get_num_threads()
    try:
        out = []
        for threads in (1, 2):
            fastnn.config.set_num_threads(threads)
            out.append(ops.embedding_backward(ids, dy, 50))
    finally:
        fastnn.config.set_num_threads(saved)
    assert out[0].tobytes() == out[1].tobytes()


def test_embedding_bad_ids():
    table = np.zeros((10, 3), np.float32)
    with pytest.raises(ValueError, match="index 10 .*outside \\[0, 10\\)"):
        ops.embedding(np.array([[1, 10]]), table)
    with pytest.raises(ValueError, match="index -1"):
        ops.embedding(np.array([-1]), table)
    with pytest.raises(TypeError, match="indices"):
        ops.embedding(np.array([0.5]), table)
    with pytest.raises(ValueError, match="index 12"):
        ops.embedding_backward(np.array([12]), np.zeros((1, 3), np.float32), 10)
