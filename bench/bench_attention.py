"""Attention: the scaled dot-product attention kernel (forward, forward + backward) at batch 32,
8 heads, T = S = 128, head size 32, and on long sequences (T = S = 1,024 and 4,096); the
MultiHeadAttention layer (projections included); and one training epoch of the Transformer
encoder classifier of the attention issue (Embedding → + positions → MultiHeadAttention →
LayerNormalization → Dense(gelu) → Dense → LayerNormalization → GlobalAveragePooling1D →
Dense(softmax), Adam).

Peers: fastnn.ops.attention_forward / attention_backward (tiled, never forms T×S); NumPy from
scratch (einsum, softmax, einsum: the T×S matrix per head, as a NumPy user writes it);
PyTorch's torch.nn.functional.scaled_dot_product_attention (its CPU flash kernel) and
torch.nn.MultiheadAttention (batch_first, need_weights=False). Layouts: fastnn and NumPy read
Keras' (batch, time, heads, size), torch its (batch, heads, time, size); each peer gets its
own layout ready, as its users have it.

``notes`` measures the extra resident memory of one forward + backward at the
long lengths, each peer in a fresh process (the peak resident size during the call, VmHWM
reset through /proc/self/clear_refs, minus the size before it).
"""

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np

from harness import Case

import fastnn

F32 = np.float32
# (batch, heads, length, head size)
KERNEL = {"full": [(32, 8, 128, 32), (4, 8, 1024, 32), (1, 8, 4096, 32)],
          "quick": [(32, 8, 128, 32), (4, 8, 1024, 32)], "smoke": [(2, 2, 8, 4)]}
NUMPY_MAX_LENGTH = 1024  # NumPy's T×S matrices at 4,096 take 0.5 GB per call, and minutes
# (batch, length, model width, heads)
LAYER = {"full": (32, 128, 256, 8), "quick": (32, 128, 256, 8), "smoke": (2, 8, 8, 2)}
# (sequences, length, vocabulary, width, heads, key_dim, feed-forward, batch)
EPOCH = {"full": (2_048, 128, 5_000, 64, 4, 16, 128, 32), "quick": (512, 128, 5_000, 64, 4, 16, 128, 32),
         "smoke": (32, 8, 50, 8, 2, 4, 16, 16)}


def numpy_attention(q, k, v, scale):
    """(out, probabilities) for q (B, T, H, D): the T×S logits per head in memory."""
    logits = np.einsum("bthd,bshd->bhts", q, k, optimize=True)
    logits *= scale
    logits -= logits.max(axis=-1, keepdims=True)
    p = np.exp(logits, out=logits)
    p /= p.sum(axis=-1, keepdims=True)
    return np.einsum("bhts,bshd->bthd", p, v, optimize=True), p


def numpy_attention_backward(q, k, v, out, p, dout, scale):
    dv = np.einsum("bhts,bthd->bshd", p, dout, optimize=True)
    dp = np.einsum("bthd,bshd->bhts", dout, v, optimize=True)
    dp -= np.einsum("bthd,bthd->bht", dout, out)[..., None]
    ds = np.multiply(p, dp, out=dp)
    ds *= scale
    dq = np.einsum("bhts,bshd->bthd", ds, k, optimize=True)
    dk = np.einsum("bhts,bthd->bshd", ds, q, optimize=True)
    return dq, dk, dv


def _values(x):
    return x.detach().numpy() if hasattr(x, "detach") else np.asarray(x)


def _check_out(ours, theirs):
    theirs = _values(theirs)
    if theirs.shape != ours.shape:  # torch's (B, H, T, D)
        theirs = theirs.transpose(0, 2, 1, 3)
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-4)


def _check_grads(ours, theirs):
    for a, b in zip(ours, theirs):
        b = _values(b)
        if b.shape != a.shape:
            b = b.transpose(0, 2, 1, 3)
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-3)


def _kernel_cases(torch, size, rng):
    out = []
    for batch, heads, length, d in KERNEL[size]:
        q, k, v, dout = (rng.standard_normal((batch, length, heads, d)).astype(F32) for _ in range(4))
        scale = 1 / math.sqrt(d)
        label = f"B{batch} H{heads} T=S={length} d{d} f32"
        flops = 4.0 * batch * heads * length * length * d

        def fastnn_fwd(q=q, k=k, v=v, scale=scale):
            return fastnn.ops.attention_forward(q, k, v, scale=scale)[0]

        def fastnn_both(q=q, k=k, v=v, dout=dout, scale=scale):
            o, lse, _ = fastnn.ops.attention_forward(q, k, v, scale=scale)
            return fastnn.ops.attention_backward(dout, q, k, v, o, lse, scale=scale)

        forward, both = {"fastnn": fastnn_fwd}, {"fastnn": fastnn_both}
        if length <= NUMPY_MAX_LENGTH:
            def numpy_fwd(q=q, k=k, v=v, scale=scale):
                return numpy_attention(q, k, v, scale)[0]

            def numpy_both(q=q, k=k, v=v, dout=dout, scale=scale):
                o, p = numpy_attention(q, k, v, scale)
                return numpy_attention_backward(q, k, v, o, p, dout, scale)

            forward["numpy"], both["numpy"] = numpy_fwd, numpy_both
        if torch is not None:
            tq, tk, tv, tdo = (torch.from_numpy(np.ascontiguousarray(a.transpose(0, 2, 1, 3)))
                               for a in (q, k, v, dout))
            for t in (tq, tk, tv):
                t.requires_grad_(True)
            sdpa = torch.nn.functional.scaled_dot_product_attention

            def torch_fwd(tq=tq, tk=tk, tv=tv):
                with torch.no_grad():
                    return sdpa(tq, tk, tv)

            def torch_both(tq=tq, tk=tk, tv=tv, tdo=tdo):
                return torch.autograd.grad(sdpa(tq, tk, tv), (tq, tk, tv), tdo)

            forward["torch"], both["torch"] = torch_fwd, torch_both
        rounds = 5 if length >= 4096 else None
        out.append(Case("attention", f"SDPA fwd {label}", flops, forward, _check_out, rounds))
        out.append(Case("attention", f"SDPA fwd+bwd {label}", 3.5 * flops, both, _check_grads, rounds))
    return out


def _layer_cases(torch, size, rng):
    batch, length, width, heads = LAYER[size]
    x = rng.standard_normal((batch, length, width)).astype(F32)
    dy = rng.standard_normal((batch, length, width)).astype(F32)
    mha = fastnn.layers.MultiHeadAttention(num_heads=heads, key_dim=width // heads)
    mha(x, x)
    for var in mha.weights:  # outside a model: gradient arrays of its own
        var.grad = np.zeros(var.shape, F32)
    label = f"B{batch} T{length} d{width} H{heads} f32"

    def fastnn_fwd():
        return mha(x, x)

    def fastnn_both():
        _, cache = mha.forward(x, x, training=True)
        return mha.backward(cache, dy, True, False)

    forward, both = {"fastnn": fastnn_fwd}, {"fastnn": fastnn_both}
    check_fwd = check_both = None
    if torch is not None:
        net = torch.nn.MultiheadAttention(width, heads, batch_first=True)
        wq, bq, wk, bk, wv, bv, wo, bo = mha.get_weights()
        with torch.no_grad():  # Keras' (d, H, k) kernels as torch's (out, in) matrices
            net.in_proj_weight.copy_(torch.from_numpy(np.concatenate(
                [w.reshape(width, -1).T for w in (wq, wk, wv)])))
            net.in_proj_bias.copy_(torch.from_numpy(np.concatenate([b.reshape(-1) for b in (bq, bk, bv)])))
            net.out_proj.weight.copy_(torch.from_numpy(wo.reshape(-1, width).T.copy()))
            net.out_proj.bias.copy_(torch.from_numpy(bo))
        tx = torch.from_numpy(x).requires_grad_(True)
        tdy = torch.from_numpy(dy)
        params = [tx] + list(net.parameters())

        def torch_fwd():
            with torch.no_grad():
                return net(tx, tx, tx, need_weights=False)[0]

        def torch_both():
            return torch.autograd.grad(net(tx, tx, tx, need_weights=False)[0], params, tdy)

        forward["torch"], both["torch"] = torch_fwd, torch_both

        def check_fwd(ours, theirs):
            np.testing.assert_allclose(_values(theirs), ours, rtol=1e-4, atol=1e-4)

        def check_both(ours, theirs):  # the input gradient (self-attention: query + value paths)
            np.testing.assert_allclose(_values(theirs[0]), ours[0] + ours[1], rtol=1e-3, atol=1e-3)

    return [Case("attention", f"MultiHeadAttention fwd {label}", 0.0, forward, check_fwd),
            Case("attention", f"MultiHeadAttention fwd+bwd {label}", 0.0, both, check_both)]


def _encoder(keras, length, vocab, width, heads, key_dim, ff):
    from fastnn import layers, ops

    class PositionEmbedding(layers.Layer):
        def __init__(self, maxlen, dim, **kwargs):
            super().__init__(**kwargs)
            self.positions = layers.Embedding(maxlen, dim)

        def call(self, x):
            return x + self.positions(ops.arange(length))

    inputs = keras.Input((length,), dtype="int32")
    x = layers.Embedding(vocab, width)(inputs)
    x = PositionEmbedding(length, width)(x)
    attn = layers.MultiHeadAttention(num_heads=heads, key_dim=key_dim, dropout=0.1)(x, x)
    x = layers.LayerNormalization(epsilon=1e-6)(x + attn)
    ffn = layers.Dense(ff, activation="gelu")(x)
    x = layers.LayerNormalization(epsilon=1e-6)(x + layers.Dense(width)(ffn))
    x = layers.GlobalAveragePooling1D()(x)
    outputs = layers.Dense(2, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def _torch_encoder_epoch(torch, x, y, length, vocab, width, heads, ff, batch):
    nn = torch.nn

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.tokens, self.positions = nn.Embedding(vocab, width), nn.Embedding(length, width)
            self.attention = nn.MultiheadAttention(width, heads, dropout=0.1, batch_first=True)
            self.norm1, self.norm2 = nn.LayerNorm(width, eps=1e-6), nn.LayerNorm(width, eps=1e-6)
            self.ff1, self.ff2, self.out = nn.Linear(width, ff), nn.Linear(ff, width), nn.Linear(width, 2)

        def forward(self, ids):
            h = self.tokens(ids) + self.positions.weight[None]
            a, _ = self.attention(h, h, h, need_weights=False)
            h = self.norm1(h + a)
            h = self.norm2(h + self.ff2(nn.functional.gelu(self.ff1(h))))
            return self.out(h.mean(dim=1))

    net = Encoder()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)
    tx, ty = torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64))

    def epoch():
        net.train()
        for s in range(0, len(tx), batch):  # no shuffling (fit(shuffle=False))
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(tx[s:s + batch]), ty[s:s + batch])
            loss.backward()
            opt.step()

    return epoch


def _epoch_case(torch, size, rng):
    import fastnn as keras

    n, length, vocab, width, heads, key_dim, ff, batch = EPOCH[size]
    x = rng.integers(1, vocab, (n, length)).astype(np.int32)
    y = rng.integers(0, 2, n)
    model = _encoder(keras, length, vocab, width, heads, key_dim, ff)

    def fastnn_epoch():
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False)

    run = {"fastnn": fastnn_epoch}
    if torch is not None:
        run["torch"] = _torch_encoder_epoch(torch, x, y, length, vocab, width, heads, ff, batch)
    name = (f"epoch Transformer encoder (d{width}, {heads} heads × {key_dim}, ff {ff}), {n:,} sequences × "
            f"{length}, batch {batch}")
    return Case("attention", name, 0.0, run, None, rounds=5)


def cases(torch, size="full"):
    rng = np.random.default_rng(0)
    return _kernel_cases(torch, size, rng) + _layer_cases(torch, size, rng) + [_epoch_case(torch, size, rng)]


# ---- peak memory ----------------------------------------------------------------------------------
_MEMORY_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    peer, b, h, t, d, threads = sys.argv[1], *map(int, sys.argv[2:7])
    rng = np.random.default_rng(0)
    q, k, v, dout = (rng.standard_normal((b, t, h, d)).astype(np.float32) for _ in range(4))
    scale = d ** -0.5
    if peer == "fastnn":
        import fastnn
        fastnn.set_num_threads(threads)
        def run(q, k, v, dout):
            o, lse, _ = fastnn.ops.attention_forward(q, k, v, scale=scale)
            fastnn.ops.attention_backward(dout, q, k, v, o, lse, scale=scale)
        small = [a[:, :8] for a in (q, k, v, dout)]
    else:
        import torch
        torch.set_num_threads(threads)
        q, k, v, dout = (torch.from_numpy(np.ascontiguousarray(a.transpose(0, 2, 1, 3))) for a in (q, k, v, dout))
        for a in (q, k, v):
            a.requires_grad_(True)
        def run(q, k, v, dout):
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
            torch.autograd.grad(out, (q, k, v), dout)
        small = [a[:, :, :8].detach().clone().requires_grad_(a.requires_grad) for a in (q, k, v, dout)]
    def status_kib(field):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
    run(*small)  # libraries loaded, threads started
    with open("/proc/self/clear_refs", "w") as f:  # resets the peak (VmHWM) to the current size
        f.write("5")
    before = status_kib("VmRSS")
    run(q, k, v, dout)
    print(json.dumps({"extra_mib": (status_kib("VmHWM") - before) / 1024}))
""")


def notes(torch, size="full", threads=None):
    """Markdown for bench/RESULTS.md: the extra peak resident memory of one attention forward + backward per peer
    and length (inputs and outputs themselves excluded: they are allocated before)."""
    if size == "smoke":
        return ""
    threads = threads or os.cpu_count()
    lines = ["Peak memory of one attention forward + backward (float32, d32, 8 heads, batch 1), extra "
             f"resident MiB over the inputs, each peer in a fresh process, {threads} threads:", "",
             "| T = S | fastnn MiB | torch SDPA MiB | T×S per head, all heads (MiB) |", "| ---: | ---: | ---: | ---: |"]
    peers = ["fastnn"] + (["torch"] if torch is not None else [])
    for length in (1024, 4096):
        cells = []
        for peer in peers:
            result = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, peer, "1", "8", str(length), "32",
                                     str(threads)], capture_output=True, text=True, check=True,
                                    env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
            cells.append(f"{json.loads(result.stdout)['extra_mib']:.1f}")
        if torch is None:
            cells.append("—")
        cells.append(f"{8 * length * length * 4 / 2 ** 20:.0f}")
        lines.append(f"| {length:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
