"""The NumPy recurrent references of rnn_reference.py: against torch's LSTM / GRU / RNN, and Keras' mask semantics by hand."""

import numpy as np
import pytest

from rnn_reference import gru_reference, lstm_reference, sigmoid, simple_rnn_reference

SHAPES = [(1, 1, 1, 1), (2, 5, 3, 4), (3, 7, 6, 2), (4, 1, 2, 5)]  # (batch, timesteps, features, units)


def keras_to_torch_gru(w, units):
    """Keras' GRU gate blocks z | r | h along the last axis -> torch's r | z | n."""
    return np.concatenate([w[..., units:2 * units], w[..., :units], w[..., 2 * units:]], axis=-1)


def torch_rnn(torch, kind, d, u, w_ih, w_hh, b_ih, b_hh):
    module = getattr(torch.nn, kind)(d, u, batch_first=True).double()
    with torch.no_grad():
        module.weight_ih_l0.copy_(torch.from_numpy(np.ascontiguousarray(w_ih.T)))
        module.weight_hh_l0.copy_(torch.from_numpy(np.ascontiguousarray(w_hh.T)))
        module.bias_ih_l0.copy_(torch.from_numpy(b_ih))
        module.bias_hh_l0.copy_(torch.from_numpy(b_hh))
    return module


# ---- against torch (no masks) ------------------------------------------------------------------------------
@pytest.mark.parametrize("b,t,d,u", SHAPES)
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("with_state", [True, False])
def test_lstm_matches_torch(rng, b, t, d, u, with_bias, with_state):
    torch = pytest.importorskip("torch")
    x = rng.normal(size=(b, t, d))
    kernel, recurrent = rng.normal(0, 0.7, (d, 4 * u)), rng.normal(0, 0.7, (u, 4 * u))
    bias = rng.normal(size=4 * u) if with_bias else None
    h0, c0 = (rng.normal(size=(b, u)), rng.normal(size=(b, u))) if with_state else (None, None)
    module = torch_rnn(torch, "LSTM", d, u, kernel, recurrent, bias if with_bias else np.zeros(4 * u), np.zeros(4 * u))
    with torch.no_grad():
        state = None if h0 is None else (torch.from_numpy(h0)[None], torch.from_numpy(c0)[None])
        want, (h_want, c_want) = module(torch.from_numpy(x), state)
    out, h, c = lstm_reference(x, kernel, recurrent, bias, h0, c0)
    assert out.shape == (b, t, u) and h.shape == c.shape == (b, u) and out.dtype == np.float64
    np.testing.assert_allclose(out, want.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(h, h_want[0].numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(c, c_want[0].numpy(), rtol=0, atol=1e-10)
    np.testing.assert_array_equal(out[:, -1], h)


@pytest.mark.parametrize("b,t,d,u", SHAPES)
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("with_state", [True, False])
def test_gru_reset_after_matches_torch(rng, b, t, d, u, with_bias, with_state):
    torch = pytest.importorskip("torch")
    x = rng.normal(size=(b, t, d))
    kernel, recurrent = rng.normal(size=(d, 3 * u)), rng.normal(size=(u, 3 * u))
    bias = rng.normal(size=(2, 3 * u)) if with_bias else None
    h0 = rng.normal(size=(b, u)) if with_state else None
    torch_bias = keras_to_torch_gru(bias if with_bias else np.zeros((2, 3 * u)), u)
    module = torch_rnn(torch, "GRU", d, u, keras_to_torch_gru(kernel, u), keras_to_torch_gru(recurrent, u),
                       torch_bias[0], torch_bias[1])
    with torch.no_grad():
        want, h_want = module(torch.from_numpy(x), None if h0 is None else torch.from_numpy(h0)[None])
    out, h = gru_reference(x, kernel, recurrent, bias, h0)
    assert out.shape == (b, t, u) and h.shape == (b, u)
    np.testing.assert_allclose(out, want.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(h, h_want[0].numpy(), rtol=0, atol=1e-10)


@pytest.mark.parametrize("b,t,d,u", SHAPES)
def test_simple_rnn_matches_torch(rng, b, t, d, u):
    torch = pytest.importorskip("torch")
    x = rng.normal(size=(b, t, d))
    kernel, recurrent, bias = rng.normal(size=(d, u)), rng.normal(size=(u, u)), rng.normal(size=u)
    h0 = rng.normal(size=(b, u))
    module = torch_rnn(torch, "RNN", d, u, kernel, recurrent, bias, np.zeros(u))
    with torch.no_grad():
        want, h_want = module(torch.from_numpy(x), torch.from_numpy(h0)[None])
    out, h = simple_rnn_reference(x, kernel, recurrent, bias, h0)
    np.testing.assert_allclose(out, want.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(h, h_want[0].numpy(), rtol=0, atol=1e-10)


def test_go_backwards_is_torch_on_the_reversed_sequence(rng):
    torch = pytest.importorskip("torch")
    b, t, d, u = 3, 6, 4, 3
    x = rng.normal(size=(b, t, d))
    kernel, recurrent, bias = rng.normal(0, 0.7, (d, 4 * u)), rng.normal(0, 0.7, (u, 4 * u)), rng.normal(size=4 * u)
    module = torch_rnn(torch, "LSTM", d, u, kernel, recurrent, bias, np.zeros(4 * u))
    with torch.no_grad():
        want, (h_want, _) = module(torch.from_numpy(np.ascontiguousarray(x[:, ::-1])))
    out, h, _ = lstm_reference(x, kernel, recurrent, bias, go_backwards=True)
    # outputs stay in processing order: out[:, 0] is the step on x[:, -1]
    np.testing.assert_allclose(out, want.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(h, h_want[0].numpy(), rtol=0, atol=1e-10)


def test_sigmoid():
    torch = pytest.importorskip("torch")
    z = np.concatenate([np.linspace(-50, 50, 101), [-1000.0, 1000.0, 0.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # no overflow for large |z|
        got = sigmoid(z)
    np.testing.assert_allclose(got, torch.sigmoid(torch.from_numpy(z)).numpy(), rtol=1e-15, atol=0)
    assert sigmoid(np.float32(3.0)).dtype == np.float32
    assert sigmoid(0.0) == 0.5


# ---- Keras' mask semantics, by hand ------------------------------------------------------------------------
def linear_rnn(x, mask=None, h0=None, go_backwards=False):
    """SimpleRNN with units=1, features=1, h = x_t + 0.5*h (identity activation): easy to follow by hand."""
    x = np.asarray(x, float)[:, :, None]
    out, h = simple_rnn_reference(x, [[1.0]], [[0.5]], None, h0=h0, mask=mask, go_backwards=go_backwards,
                                  activation=lambda v: v)
    return out[:, :, 0], h[:, 0]


def test_hand_computed_simple_rnn():
    out, h = linear_rnn([[2.0, 4.0, 2.0]])
    np.testing.assert_array_equal(out, [[2.0, 5.0, 4.5]])
    np.testing.assert_array_equal(h, [4.5])
    out, h = linear_rnn([[2.0, 4.0, 2.0]], h0=[[8.0]])
    np.testing.assert_array_equal(out, [[6.0, 7.0, 5.5]])


def test_hand_computed_masks():
    x = [[2.0, 4.0, 2.0, 8.0]]
    # masked step 1: output repeats step 0's, the state carries over it
    out, h = linear_rnn(x, mask=[[True, False, True, True]])
    np.testing.assert_array_equal(out, [[2.0, 2.0, 3.0, 9.5]])
    np.testing.assert_array_equal(h, [9.5])
    # masked last step: the final state is the carried one
    out, h = linear_rnn(x, mask=[[True, True, True, False]])
    np.testing.assert_array_equal(out, [[2.0, 5.0, 4.5, 4.5]])
    np.testing.assert_array_equal(h, [4.5])
    # leading masked steps output zeros even with a nonzero initial state, which is then used at step 2
    out, h = linear_rnn(x, mask=[[False, False, True, True]], h0=[[8.0]])
    np.testing.assert_array_equal(out, [[0.0, 0.0, 6.0, 11.0]])
    np.testing.assert_array_equal(h, [11.0])
    # go_backwards: processes 8, 2, 4, 2 with the mask read in the original order (step 2 masked)
    out, h = linear_rnn(x, mask=[[True, True, False, True]], go_backwards=True)
    np.testing.assert_array_equal(out, [[8.0, 8.0, 8.0, 6.0]])
    np.testing.assert_array_equal(h, [6.0])


def test_all_masked_sample_gives_zero_outputs_and_the_initial_state(rng):
    b, t, d, u = 3, 5, 2, 4
    x = rng.normal(size=(b, t, d))
    h0, c0 = rng.normal(size=(b, u)), rng.normal(size=(b, u))
    mask = np.ones((b, t), bool)
    mask[1] = False  # sample 1 entirely masked
    mask[2, 2] = False
    for go_backwards in (False, True):
        out, h, c = lstm_reference(x, rng.normal(size=(d, 4 * u)), rng.normal(size=(u, 4 * u)),
                                   rng.normal(size=4 * u), h0, c0, mask=mask, go_backwards=go_backwards)
        np.testing.assert_array_equal(out[1], 0.0)
        np.testing.assert_array_equal(h[1], h0[1])
        np.testing.assert_array_equal(c[1], c0[1])
        step = 2 if not go_backwards else t - 1 - 2  # processing position of input step 2
        np.testing.assert_array_equal(out[2, step], out[2, step - 1])
        for ref, w in ((gru_reference, 3), (simple_rnn_reference, 1)):
            out, h = ref(x, rng.normal(size=(d, w * u)), rng.normal(size=(u, w * u)), None, h0, mask=mask,
                         go_backwards=go_backwards)
            np.testing.assert_array_equal(out[1], 0.0)
            np.testing.assert_array_equal(h[1], h0[1])


@pytest.mark.parametrize("name", ["lstm", "gru", "simple_rnn"])
def test_a_masked_step_is_a_skipped_step(rng, name):
    """With step 2 masked, the run equals the unmasked run on the sequence without step 2, its output repeated."""
    b, t, d, u = 2, 6, 3, 4
    gates = {"lstm": 4, "gru": 3, "simple_rnn": 1}[name]
    ref = {"lstm": lstm_reference, "gru": gru_reference, "simple_rnn": simple_rnn_reference}[name]
    x = rng.normal(size=(b, t, d))
    kernel, recurrent = rng.normal(0, 0.6, (d, gates * u)), rng.normal(0, 0.6, (u, gates * u))
    bias = rng.normal(size=(2, 3 * u) if name == "gru" else (gates * u,))
    h0 = rng.normal(size=(b, u))
    mask = np.ones((b, t), bool)
    mask[:, 2] = False
    masked = ref(x, kernel, recurrent, bias, h0, mask=mask)
    skipped = ref(np.delete(x, 2, axis=1), kernel, recurrent, bias, h0)
    np.testing.assert_allclose(masked[0], np.insert(skipped[0], 2, skipped[0][:, 1], axis=1), rtol=0, atol=1e-14)
    for got, want in zip(masked[1:], skipped[1:]):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-14)
    # go_backwards with the mask is the forward run on the reversed inputs and mask
    back = ref(x, kernel, recurrent, bias, h0, mask=mask, go_backwards=True)
    fwd = ref(x[:, ::-1], kernel, recurrent, bias, h0, mask=mask[:, ::-1])
    for got, want in zip(back, fwd):
        np.testing.assert_array_equal(got, want)


def test_dtypes_and_shapes(rng):
    x = rng.normal(size=(2, 3, 4)).astype(np.float32)
    out, h, c = lstm_reference(x, rng.normal(size=(4, 8)).astype(np.float32),
                               rng.normal(size=(2, 8)).astype(np.float32), None)
    assert out.dtype == h.dtype == c.dtype == np.float32
    out, h = gru_reference(x.astype(np.float64), rng.normal(size=(4, 6)), rng.normal(size=(2, 6)), None)
    assert out.dtype == np.float64 and out.shape == (2, 3, 2)
    out, h = simple_rnn_reference(np.zeros((2, 0, 4)), np.ones((4, 3)), np.ones((3, 3)), None)
    assert out.shape == (2, 0, 3) and np.all(h == 0)
    with pytest.raises(ValueError, match="bias"):
        gru_reference(x, np.ones((4, 6)), np.ones((2, 6)), np.ones(6))  # reset_after=True needs (2, 3*units)
    with pytest.raises(ValueError, match="kernel"):
        lstm_reference(x, np.ones((3, 8)), np.ones((2, 8)), None)
    with pytest.raises(ValueError, match="mask"):
        lstm_reference(x, np.ones((4, 8)), np.ones((2, 8)), None, mask=np.ones((2, 4), bool))


@pytest.mark.parametrize("with_state", [True, False])
def test_gru_reset_before_matches_a_scalar_loop_of_keras_formula(rng, with_state):
    """reset_after=False against Keras' GRUCell formula written unit by unit (implementation 1:
    z = ra(x·W_z + b_z + h·U_z), r likewise, hh = a(x·W_h + b_h + (r⊙h)·U_h))."""
    b, t, d, u = 3, 4, 2, 3
    x = rng.normal(size=(b, t, d))
    kernel, recurrent, bias = rng.normal(size=(d, 3 * u)), rng.normal(size=(u, 3 * u)), rng.normal(size=3 * u)
    h0 = rng.normal(size=(b, u)) if with_state else np.zeros((b, u))
    out, h_t = gru_reference(x, kernel, recurrent, bias, h0 if with_state else None, reset_after=False)
    want = np.zeros((b, t, u))
    for n in range(b):
        h = list(h0[n])
        for s in range(t):
            pre = [sum(x[n, s, k] * kernel[k, j] for k in range(d)) + bias[j] for j in range(3 * u)]
            z = [1 / (1 + np.exp(-(pre[j] + sum(h[i] * recurrent[i, j] for i in range(u))))) for j in range(u)]
            r = [1 / (1 + np.exp(-(pre[u + j] + sum(h[i] * recurrent[i, u + j] for i in range(u))))) for j in range(u)]
            hh = [np.tanh(pre[2 * u + j] + sum(r[i] * h[i] * recurrent[i, 2 * u + j] for i in range(u)))
                  for j in range(u)]
            h = [z[j] * h[j] + (1 - z[j]) * hh[j] for j in range(u)]
            want[n, s] = h
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(out[:, -1], h_t)
    # the two forms differ (the reset gate acts on h, not on h·U_h + b)
    other, _ = gru_reference(x, kernel, recurrent, np.stack([bias, np.zeros(3 * u)]), h0 if with_state else None)
    assert not np.allclose(other, out)
