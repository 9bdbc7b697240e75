"""Recurrent networks: fastnn.ops.lstm / gru (+ backward) vs torch.nn.LSTM / GRU vs a NumPy
from-scratch implementation, on the recurrent-network issue's shapes (batch 32, 100 steps,
128 inputs, 256 units, float32); and one training epoch of Embedding(10000, 128) → LSTM(128)
→ Dense(1, sigmoid), binary cross-entropy, Adam, on 2,000 random sequences of 256 ids.

Layouts: Keras'. LSTM kernel (D, 4U), recurrent kernel (U, 4U), bias (4U,), gates i, f, c, o
(torch's i, f, g, o: weight_ih = kernelᵀ, weight_hh = recurrentᵀ, bias_ih = bias, bias_hh = 0).
GRU reset_after=True: kernel (D, 3U), recurrent (U, 3U), bias (2, 3U) = (input, recurrent),
gates z, r, h (torch's r, z, n: the first two blocks swap). GRU reset_after=False (bias (3U,)):
fastnn alone computes it; its row shows torch's reset_after=True GRU for context."""

import numpy as np

from harness import Case

import fastnn

F32 = np.float32
# (batch, steps, inputs, units)
LAYER = {"full": (32, 100, 128, 256), "quick": (32, 50, 128, 256), "smoke": (4, 5, 8, 16)}
# (sequences, length, vocabulary, embedding, units, batch)
EPOCH = {"full": (2_000, 256, 10_000, 128, 128, 64), "quick": (512, 256, 10_000, 128, 128, 64),
         "smoke": (64, 8, 100, 8, 8, 16)}


# ---------------------------------------------------------------------------------------------
# NumPy from scratch. The cores work time-major (T, B, ·): one matmul projects every step's
# inputs, a Python loop runs the recurrence (h @ R per step, gate maths on whole (B, U) blocks,
# in place), the backward loop stores the gate pre-activation gradients of every step, and the
# weight and input gradients are then one big matmul each (faster than per-step accumulation).

def _sigmoid_(a):
    np.negative(a, out=a)
    np.exp(a, out=a)
    a += 1
    np.reciprocal(a, out=a)
    return a


def numpy_lstm_forward(xt, kernel, recurrent, bias):
    """xt (T, B, D) -> (hs (T+1, B, U) with hs[0] = 0, c_T, cache)."""
    t_steps, batch, d = xt.shape
    u = recurrent.shape[0]
    gates = (xt.reshape(t_steps * batch, d) @ kernel).reshape(t_steps, batch, 4 * u)
    gates += bias
    hs = np.zeros((t_steps + 1, batch, u), F32)
    cs = np.zeros((t_steps + 1, batch, u), F32)
    tanh_c = np.empty((t_steps, batch, u), F32)
    rec = np.empty((batch, 4 * u), F32)
    for t in range(t_steps):
        g = gates[t]
        np.matmul(hs[t], recurrent, out=rec)
        g += rec
        _sigmoid_(g[:, :2 * u])            # i, f
        _sigmoid_(g[:, 3 * u:])            # o
        np.tanh(g[:, 2 * u:3 * u], out=g[:, 2 * u:3 * u])
        i, f, cc, o = g[:, :u], g[:, u:2 * u], g[:, 2 * u:3 * u], g[:, 3 * u:]
        c = cs[t + 1]
        np.multiply(f, cs[t], out=c)
        c += i * cc
        np.tanh(c, out=tanh_c[t])
        np.multiply(o, tanh_c[t], out=hs[t + 1])
    return hs, cs[t_steps], (xt, kernel, recurrent, gates, hs, cs, tanh_c)


def numpy_lstm_backward(cache, dyt=None, dh_last=None, need_dx=True):
    """dyt: (T, B, U) gradient of every output (or None); dh_last: (B, U) of the last one."""
    xt, kernel, recurrent, gates, hs, cs, tanh_c = cache
    t_steps, batch, d = xt.shape
    u = recurrent.shape[0]
    dz = np.empty_like(gates)
    dh = np.zeros((batch, u), F32) if dh_last is None else dh_last.astype(F32, copy=True)
    dc = np.zeros((batch, u), F32)
    rt = recurrent.T
    for t in range(t_steps - 1, -1, -1):
        if dyt is not None:
            dh += dyt[t]
        g = gates[t]
        i, f, cc, o = g[:, :u], g[:, u:2 * u], g[:, 2 * u:3 * u], g[:, 3 * u:]
        tc = tanh_c[t]
        dzt = dz[t]
        do = dzt[:, 3 * u:]
        np.multiply(dh, tc, out=do)
        do *= o * (1 - o)
        tmp = dh * o
        tmp *= 1 - tc * tc
        dc += tmp
        di, df, dcc = dzt[:, :u], dzt[:, u:2 * u], dzt[:, 2 * u:3 * u]
        np.multiply(dc, cc, out=di)
        di *= i * (1 - i)
        np.multiply(dc, cs[t], out=df)
        df *= f * (1 - f)
        np.multiply(dc, i, out=dcc)
        dcc *= 1 - cc * cc
        dc *= f
        np.matmul(dzt, rt, out=dh)
    flat = dz.reshape(t_steps * batch, 4 * u)
    grads = {"kernel": xt.reshape(t_steps * batch, d).T @ flat,
             "recurrent_kernel": hs[:-1].reshape(t_steps * batch, u).T @ flat,
             "bias": flat.sum(axis=0), "h0": dh, "c0": dc}
    if need_dx:
        grads["dx"] = (flat @ kernel.T).reshape(t_steps, batch, d)  # time-major
    return grads


def numpy_gru_forward(xt, kernel, recurrent, bias):
    """Keras reset_after=True: z, r = σ(x·W + b₀ + h·R + b₁) (their blocks),
    ĥ = tanh(x·W_h + b₀_h + r ⊙ (h·R_h + b₁_h)), h' = z ⊙ h + (1 - z) ⊙ ĥ."""
    t_steps, batch, d = xt.shape
    u = recurrent.shape[0]
    gates = (xt.reshape(t_steps * batch, d) @ kernel).reshape(t_steps, batch, 3 * u)
    gates += bias[0]
    hs = np.zeros((t_steps + 1, batch, u), F32)
    rec_h = np.empty((t_steps, batch, u), F32)   # h·R_h + b₁_h, for the backward
    rec = np.empty((batch, 3 * u), F32)
    for t in range(t_steps):
        g = gates[t]
        np.matmul(hs[t], recurrent, out=rec)
        rec += bias[1]
        zr = g[:, :2 * u]
        zr += rec[:, :2 * u]
        _sigmoid_(zr)
        z, r, hh = g[:, :u], g[:, u:2 * u], g[:, 2 * u:]
        np.copyto(rec_h[t], rec[:, 2 * u:])
        hh += r * rec_h[t]
        np.tanh(hh, out=hh)
        h = hs[t + 1]
        np.subtract(hs[t], hh, out=h)
        h *= z
        h += hh
    return hs, (xt, kernel, recurrent, gates, hs, rec_h)


def numpy_gru_backward(cache, dyt=None, dh_last=None, need_dx=True):
    xt, kernel, recurrent, gates, hs, rec_h = cache
    t_steps, batch, d = xt.shape
    u = recurrent.shape[0]
    dg = np.empty_like(gates)   # input-side pre-activation gradients (z, r, ĥ)
    drec = np.empty_like(gates)  # recurrent-side: (z, r, r ⊙ dĥ)
    dh = np.zeros((batch, u), F32) if dh_last is None else dh_last.astype(F32, copy=True)
    step = np.empty((batch, u), F32)
    rt = recurrent.T
    for t in range(t_steps - 1, -1, -1):
        if dyt is not None:
            dh += dyt[t]
        g = gates[t]
        z, r, hh = g[:, :u], g[:, u:2 * u], g[:, 2 * u:]
        dgt, drt = dg[t], drec[t]
        dz, dr, dhh = dgt[:, :u], dgt[:, u:2 * u], dgt[:, 2 * u:]
        np.multiply(dh, 1 - z, out=dhh)
        dhh *= 1 - hh * hh
        np.subtract(hs[t], hh, out=dz)
        dz *= dh
        dz *= z * (1 - z)
        np.multiply(dhh, rec_h[t], out=dr)
        dr *= r * (1 - r)
        np.copyto(drt[:, :2 * u], dgt[:, :2 * u])
        np.multiply(dhh, r, out=drt[:, 2 * u:])
        dh *= z
        np.matmul(drt, rt, out=step)
        dh += step
    flat = dg.reshape(t_steps * batch, 3 * u)
    rflat = drec.reshape(t_steps * batch, 3 * u)
    grads = {"kernel": xt.reshape(t_steps * batch, d).T @ flat,
             "recurrent_kernel": hs[:-1].reshape(t_steps * batch, u).T @ rflat,
             "bias": np.stack([flat.sum(axis=0), rflat.sum(axis=0)]), "h0": dh}
    if need_dx:
        grads["dx"] = (flat @ kernel.T).reshape(t_steps, batch, d)
    return grads


def _time_major(x):
    return np.ascontiguousarray(x.transpose(1, 0, 2))


def numpy_lstm(x, kernel, recurrent, bias):
    """Batch-major like the other peers: (outputs (B, T, U), h, c)."""
    hs, c, _ = numpy_lstm_forward(_time_major(x), kernel, recurrent, bias)
    return hs[1:].transpose(1, 0, 2), hs[-1], c


def numpy_lstm_fwd_bwd(x, kernel, recurrent, bias, dy):
    hs, c, cache = numpy_lstm_forward(_time_major(x), kernel, recurrent, bias)
    grads = numpy_lstm_backward(cache, dy.transpose(1, 0, 2))
    grads["dx"] = grads["dx"].transpose(1, 0, 2)
    return grads


def numpy_gru(x, kernel, recurrent, bias):
    hs, _ = numpy_gru_forward(_time_major(x), kernel, recurrent, bias)
    return hs[1:].transpose(1, 0, 2), hs[-1]


def numpy_gru_fwd_bwd(x, kernel, recurrent, bias, dy):
    hs, cache = numpy_gru_forward(_time_major(x), kernel, recurrent, bias)
    grads = numpy_gru_backward(cache, dy.transpose(1, 0, 2))
    grads["dx"] = grads["dx"].transpose(1, 0, 2)
    return grads


class NumpyTextLSTM:
    """Embedding → LSTM (last output) → Dense(1, sigmoid), binary cross-entropy, Adam
    (Keras' initialisers and epsilon); the embedding gradient by np.add.at, dense Adam."""

    def __init__(self, rng, vocab, dim, units):
        def glorot(shape):
            limit = np.sqrt(6 / (shape[0] + shape[1]))
            return rng.uniform(-limit, limit, shape).astype(F32)

        q, _ = np.linalg.qr(rng.standard_normal((4 * units, units)))
        bias = np.zeros(4 * units, F32)
        bias[units:2 * units] = 1  # unit_forget_bias
        self.params = [rng.uniform(-0.05, 0.05, (vocab, dim)).astype(F32),
                       glorot((dim, 4 * units)), np.ascontiguousarray(q.T, dtype=F32), bias,
                       glorot((units, 1)), np.zeros(1, F32)]
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.t = 0

    def step(self, ids, y, lr=1e-3, b1=0.9, b2=0.999, eps=1e-7):
        emb, kernel, recurrent, bias, w, b = self.params
        ids_t = ids.T                                   # time-major gather
        hs, _, cache = numpy_lstm_forward(emb[ids_t], kernel, recurrent, bias)
        h = hs[-1]
        p = 1 / (1 + np.exp(-(h @ w + b)))
        d = (p - y) / F32(len(y))                       # BCE through the sigmoid
        g_w, g_b = h.T @ d, d.sum(axis=0)
        grads = numpy_lstm_backward(cache, dh_last=d @ w.T)
        g_emb = np.zeros_like(emb)
        np.add.at(g_emb, ids_t, grads["dx"])
        g = [g_emb, grads["kernel"], grads["recurrent_kernel"], grads["bias"], g_w, g_b]
        self.t += 1
        alpha = lr * np.sqrt(1 - b2 ** self.t) / (1 - b1 ** self.t)
        for p_, gp, m, v in zip(self.params, g, self.m, self.v):
            m += (gp - m) * (1 - b1)
            v += (gp * gp - v) * (1 - b2)
            p_ -= alpha * m / (np.sqrt(v) + eps)

    def epoch(self, x, y, batch):
        for s in range(0, len(x), batch):  # no shuffling (fit(shuffle=False)); last batch partial
            self.step(x[s:s + batch], y[s:s + batch])


# ---------------------------------------------------------------------------------------------
# PyTorch: torch.nn.LSTM / GRU (batch_first) with the same weights.

_GRU_TO_TORCH = (1, 0, 2)  # Keras blocks (z, r, h) in torch's order (r, z, n)


def _blocks(a, order, axis=0):
    parts = np.split(a, 3, axis=axis)
    return np.concatenate([parts[i] for i in order], axis=axis)


def _torch_rnn(torch, kind, kernel, recurrent, bias):
    d, u = kernel.shape[0], recurrent.shape[0]
    cls = torch.nn.LSTM if kind == "lstm" else torch.nn.GRU
    net = cls(d, u, batch_first=True)
    if kind == "lstm":
        w_ih, w_hh, b_ih, b_hh = kernel.T, recurrent.T, bias, np.zeros_like(bias)
    else:
        w_ih, w_hh = _blocks(kernel.T, _GRU_TO_TORCH), _blocks(recurrent.T, _GRU_TO_TORCH)
        b_ih, b_hh = _blocks(bias[0], _GRU_TO_TORCH), _blocks(bias[1], _GRU_TO_TORCH)
    with torch.no_grad():
        for name, value in (("weight_ih_l0", w_ih), ("weight_hh_l0", w_hh),
                            ("bias_ih_l0", b_ih), ("bias_hh_l0", b_hh)):
            getattr(net, name).copy_(torch.from_numpy(np.ascontiguousarray(value)))
    return net


def _torch_runs(torch, kind, x, kernel, recurrent, bias, dy):
    net = _torch_rnn(torch, kind, kernel, recurrent, bias)
    params = (net.weight_ih_l0, net.weight_hh_l0, net.bias_ih_l0, net.bias_hh_l0)
    tx = torch.from_numpy(x)
    txg = torch.from_numpy(x.copy()).requires_grad_()
    tdy = torch.from_numpy(dy)

    def fwd():
        with torch.no_grad():
            return net(tx)

    def fwd_bwd():
        y, _ = net(txg)
        return torch.autograd.grad(y, (txg, *params), tdy)

    return fwd, fwd_bwd


def _torch_text_epoch(torch, x, y, vocab, dim, units, batch):
    torch.manual_seed(0)
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(vocab, dim)
            self.lstm = nn.LSTM(dim, units, batch_first=True)
            self.fc = nn.Linear(units, 1)

        def forward(self, ids):
            _, (h, _) = self.lstm(self.emb(ids))
            return self.fc(h[-1])

    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    tx, ty = torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y)
    n = len(x)

    def epoch():
        net.train()
        for s in range(0, n, batch):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(tx[s:s + batch]), ty[s:s + batch])
            loss.backward()
            opt.step()

    return epoch


# ---------------------------------------------------------------------------------------------
# Checks: fastnn's result (or any peer's) against a peer's, in Keras layout.

def _np(v):
    return v.detach().numpy() if hasattr(v, "detach") else np.asarray(v)


def _close(name, ours, theirs, tol):
    ours, theirs = _np(ours), _np(theirs)
    assert ours.shape == theirs.shape, f"{name}: shape {ours.shape} vs {theirs.shape}"
    scale = max(float(np.abs(theirs).max()), 1.0)
    err = float(np.abs(ours - theirs).max())
    assert err <= tol * scale, f"{name}: max |difference| {err:.3g} > {tol:g} × {scale:.3g}"


def _check_fwd(ours, theirs):
    """Sequence outputs (B, T, U): element 0 of every peer's result."""
    _close("outputs", ours[0], theirs[0], 1e-4)


def _keras_grads(kind, result):
    """A peer's fwd+bwd result as {dx, kernel, recurrent_kernel, bias} in Keras layout."""
    if isinstance(result, dict):
        return result
    dx, w_ih, w_hh, b_ih, b_hh = (_np(v) for v in result)  # torch.autograd.grad's tuple
    if kind == "lstm":
        return {"dx": dx, "kernel": w_ih.T, "recurrent_kernel": w_hh.T, "bias": b_ih}
    return {"dx": dx, "kernel": _blocks(w_ih, _GRU_TO_TORCH).T, "recurrent_kernel": _blocks(w_hh, _GRU_TO_TORCH).T,
            "bias": np.stack([_blocks(b_ih, _GRU_TO_TORCH), _blocks(b_hh, _GRU_TO_TORCH)])}


def _check_grads(kind):
    def check(ours, theirs):
        a, b = _keras_grads(kind, ours), _keras_grads(kind, theirs)
        for key in ("dx", "kernel", "recurrent_kernel", "bias"):
            _close(key, a[key], b[key], 1e-3)
    return check


# ---------------------------------------------------------------------------------------------

def _layer_cases(torch, size, rng):
    b, t, d, u = LAYER[size]
    x = rng.standard_normal((b, t, d)).astype(F32)
    dy = rng.standard_normal((b, t, u)).astype(F32)
    out = []
    for kind, gates in (("lstm", 4), ("gru", 3)):
        kernel = (rng.standard_normal((d, gates * u)) / np.sqrt(d)).astype(F32)
        recurrent = (rng.standard_normal((u, gates * u)) / np.sqrt(u)).astype(F32)
        bias = (rng.standard_normal(gates * u if kind == "lstm" else (2, gates * u)) * 0.1).astype(F32)
        args = (x, kernel, recurrent, bias)
        if kind == "lstm":
            fwd = {"fastnn": lambda a=args: fastnn.ops.lstm(*a),
                   "numpy": lambda a=args: numpy_lstm(*a)}
            both = {"fastnn": lambda a=args, dy=dy: fastnn.ops.lstm_backward(
                        fastnn.ops.lstm(*a, return_cache=True)[3], d_outputs=dy),
                    "numpy": lambda a=args, dy=dy: numpy_lstm_fwd_bwd(*a, dy)}
        else:
            fwd = {"fastnn": lambda a=args: fastnn.ops.gru(*a),
                   "numpy": lambda a=args: numpy_gru(*a)}
            both = {"fastnn": lambda a=args, dy=dy: fastnn.ops.gru_backward(
                        fastnn.ops.gru(*a, return_cache=True)[2], d_outputs=dy),
                    "numpy": lambda a=args, dy=dy: numpy_gru_fwd_bwd(*a, dy)}
        if torch is not None:
            fwd["torch"], both["torch"] = _torch_runs(torch, kind, *args, dy)
        flops = 2.0 * b * t * (d + u) * gates * u
        label = f"{kind.upper()} {b}×{t}×{d} → {u} f32"
        out += [Case("rnn", f"{label} fwd", flops, fwd, _check_fwd),
                Case("rnn", f"{label} fwd+bwd", 3 * flops, both, _check_grads(kind))]
        if kind == "gru":
            out.append(_gru_reset_before_case(torch, x, kernel, recurrent, bias, dy, label, flops))
    return out


def _gru_reset_before_case(torch, x, kernel, recurrent, bias, dy, label, flops):
    """GRU(reset_after=False) fwd+bwd (Keras 1/2's form: two recurrent products per step, one
    bias). No peer computes this form: torch's nn.GRU (the reset_after=True form, same flops)
    is there as context, unchecked; the kernel's correctness is tests/test_ops_rnn.py's."""
    args = (x, kernel, recurrent, bias[0] + bias[1])

    def fastnn_run(a=args):
        cache = fastnn.ops.gru(*a, reset_after=False, return_cache=True)[2]
        return fastnn.ops.gru_backward(cache, d_outputs=dy)

    run = {"fastnn": fastnn_run}
    if torch is not None:
        run["torch"] = _torch_runs(torch, "gru", x, kernel, recurrent, bias, dy)[1]
    name = label.replace("GRU", "GRU reset_after=False") + " fwd+bwd (torch: its reset_after=True GRU)"
    return Case("rnn", name, 3 * flops, run)


def _epoch_case(torch, size, rng):
    n, length, vocab, dim, units, batch = EPOCH[size]
    x = rng.integers(1, vocab, (n, length)).astype(np.int32)
    y = rng.integers(0, 2, (n, 1)).astype(F32)
    model = []

    def fastnn_epoch():
        if not model:  # built on the first (untimed) call: the layers are newer than this file
            fastnn.utils.set_random_seed(0)
            layers = fastnn.layers
            m = fastnn.Sequential([layers.Embedding(vocab, dim), layers.LSTM(units),
                                   layers.Dense(1, activation="sigmoid")])
            m.compile(optimizer=fastnn.optimizers.Adam(1e-3), loss="binary_crossentropy")
            model.append(m)
        model[0].fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False)

    numpy_net = NumpyTextLSTM(np.random.default_rng(1), vocab, dim, units)
    run = {"fastnn": fastnn_epoch, "numpy": lambda: numpy_net.epoch(x, y, batch)}
    if torch is not None:
        run["torch"] = _torch_text_epoch(torch, x, y, vocab, dim, units, batch)
    flops = 3 * 2.0 * length * (dim + units) * 4 * units * n  # the LSTM: forward, backward's two products
    name = (f"epoch Embedding({vocab}, {dim}) → LSTM({units}) → Dense(1), {n:,} sequences × {length}, "
            f"batch {batch}, Adam")
    return Case("rnn", name, flops, run, rounds=3 if size == "full" else None)


def cases(torch, size="full"):
    rng = np.random.default_rng(0)
    return _layer_cases(torch, size, rng) + [_epoch_case(torch, size, rng)]
