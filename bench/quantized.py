"""int8 inference: ``python bench/quantized.py [--update]`` (writes bench/QUANTIZED.md).

Side by side in one process, at 1 and 2 threads, medians of alternating rounds:

- products at the MLP's shapes (batch 128 and 1 through 784 → 256 → 128 → 10) and 1024³:
  fastnn's int8 product from float inputs (``quantizers.int8_dense``: per-row quantization,
  the VNNI/AVX2 kernel, dequantization and bias fused), the pure integer product
  (``int8_matmul``, int8 in, int32 out), fastnn's float32 product (``ops.linear``), and
  PyTorch's dynamic int8 Linear (``torch.ao.quantization.quantize_dynamic``, fbgemm) and
  float32 Linear;
- the MNIST MLP's ``predict``: throughput at batch 1,024 and the latency of one sample,
  float32 fastnn against ``model.quantize("int8")``, and PyTorch's float32 and dynamic-int8
  models (``torch.inference_mode``).

PyTorch rows appear when torch is importable (pip install torch==2.13.0, the CPU build).
"""

import argparse
import os
import pathlib
import statistics
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402

import fastnn  # noqa: E402
from fastnn import quantizers  # noqa: E402

SHAPES = [(128, 784, 256), (128, 256, 128), (128, 128, 10), (1, 784, 256), (1024, 1024, 1024)]
RESULTS = HERE / "QUANTIZED.md"


def _median_time(fns, rounds, batch_seconds=0.03):
    """{name: seconds per call}: the callables timed alternately, round by round."""
    calls = {name: harness._calls_for(fn, batch_seconds) for name, fn in fns.items()}
    samples = {name: [] for name in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            samples[name].append(harness._time_batch(fns[name], calls[name]))
    return {name: statistics.median(v) for name, v in samples.items()}


def _torch_linear(torch, w, b):
    linear = torch.nn.Linear(w.shape[0], w.shape[1], bias=b is not None)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(w.T.copy()))
        if b is not None:
            linear.bias.copy_(torch.from_numpy(b))
    dynamic = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(linear), {torch.nn.Linear},
                                                     dtype=torch.qint8)
    return linear, dynamic


def product_rows(torch, threads, rounds):
    rng = np.random.default_rng(0)
    rows = []
    for m, k, n in SHAPES:
        x = rng.standard_normal((m, k)).astype(np.float32)
        w = (rng.standard_normal((k, n)) * 0.05).astype(np.float32)
        b = rng.standard_normal(n).astype(np.float32)
        w_q, w_scale = quantizers.abs_max_quantize(w, axis=0)
        packed, scale = quantizers.pack_int8(w_q), w_scale.reshape(-1)
        x_q = quantizers.abs_max_quantize(x, axis=-1)[0]
        fns = {"int8_dense": lambda: quantizers.int8_dense(x, packed, scale, b),
               "int8_matmul": lambda: quantizers.int8_matmul(x_q, packed),
               "f32": lambda: fastnn.ops.linear(x, w, b)}
        if torch is not None:
            linear, dynamic = _torch_linear(torch, w, b)
            tx = torch.from_numpy(x)

            def torch_int8(dynamic=dynamic, tx=tx):
                with torch.inference_mode():
                    return dynamic(tx)

            def torch_f32(linear=linear, tx=tx):
                with torch.inference_mode():
                    return linear(tx)

            fns["torch_int8"], fns["torch_f32"] = torch_int8, torch_f32
            with torch.inference_mode():  # the same product, to 8-bit rounding
                np.testing.assert_allclose(dynamic(tx).numpy(), x @ w + b, atol=0.05 * np.abs(x @ w).max() + 1e-3)
        np.testing.assert_allclose(fns["int8_dense"](), x @ w + b, atol=0.05 * np.abs(x @ w).max() + 1e-3)
        rows.append({"case": f"{m}×{k} @ {k}×{n}", "threads": threads, "ops": 2.0 * m * n * k,
                     **_median_time(fns, rounds)})
    return rows


def _mlp(seed=0):
    fastnn.utils.set_random_seed(seed)
    layers = fastnn.layers
    model = fastnn.Sequential([layers.Input((784,)), layers.Dense(256, activation="relu"),
                               layers.Dense(128, activation="relu"), layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def model_rows(torch, threads, rounds):
    rng = np.random.default_rng(1)
    model = _mlp()
    quantized = _mlp()
    quantized.set_weights(model.get_weights())
    quantized.quantize("int8")
    rows = []
    for batch in (1024, 1):
        x = rng.standard_normal((batch, 784)).astype(np.float32)
        fns = {"f32": lambda x=x: model.predict(x, batch_size=1024, verbose=0),
               "int8": lambda x=x: quantized.predict(x, batch_size=1024, verbose=0)}
        if batch == 1:  # one sample: the call a server makes per request
            fns = {"f32": lambda x=x: model(x), "int8": lambda x=x: quantized(x)}
        if torch is not None:
            net = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128),
                                      torch.nn.ReLU(), torch.nn.Linear(128, 10), torch.nn.Softmax(dim=-1))
            with torch.no_grad():
                for layer, (w, b) in zip([net[0], net[2], net[4]], zip(model.get_weights()[::2],
                                                                        model.get_weights()[1::2])):
                    layer.weight.copy_(torch.from_numpy(w.T.copy()))
                    layer.bias.copy_(torch.from_numpy(b))
            dynamic = torch.ao.quantization.quantize_dynamic(net, {torch.nn.Linear}, dtype=torch.qint8)
            tx = torch.from_numpy(x)

            def torch_run(net, tx=tx):
                with torch.inference_mode():
                    return net(tx)

            fns["torch_f32"] = lambda: torch_run(net)
            fns["torch_int8"] = lambda: torch_run(dynamic)
        times = _median_time(fns, rounds)
        rows.append({"case": "MLP predict, batch 1,024" if batch == 1024 else "MLP, one sample (model(x))",
                     "threads": threads, "batch": batch, **times})
    return rows


def _ms(row, key):
    return f"{row[key] * 1e3:.3f}" if key in row else "—"


def _ratio(row, slow, fast):
    return f"{row[slow] / row[fast]:.2f}×" if slow in row and fast in row else "—"


def tables(product, models):
    lines = ["| product | threads | fastnn int8 (float in/out) ms | fastnn int8 → int32 ms | fastnn f32 ms | "
             "torch dynamic int8 ms | torch f32 ms | int8 GOP/s (float in/out; int32) | fastnn f32 / int8 | "
             "torch int8 / fastnn int8 |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in product:
        lines.append(f"| {r['case']} | {r['threads']} | {_ms(r, 'int8_dense')} | {_ms(r, 'int8_matmul')} | "
                     f"{_ms(r, 'f32')} | {_ms(r, 'torch_int8')} | {_ms(r, 'torch_f32')} | "
                     f"{r['ops'] / r['int8_dense'] / 1e9:.0f}; {r['ops'] / r['int8_matmul'] / 1e9:.0f} | "
                     f"{_ratio(r, 'f32', 'int8_dense')} | {_ratio(r, 'torch_int8', 'int8_dense')} |")
    lines += ["", "| model | threads | fastnn f32 ms | fastnn int8 ms | torch f32 ms | torch dynamic int8 ms | "
              "fastnn f32 / int8 | torch int8 / fastnn int8 | fastnn int8 samples/s |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in models:
        lines.append(f"| {r['case']} | {r['threads']} | {_ms(r, 'f32')} | {_ms(r, 'int8')} | {_ms(r, 'torch_f32')} | "
                     f"{_ms(r, 'torch_int8')} | {_ratio(r, 'f32', 'int8')} | {_ratio(r, 'torch_int8', 'int8')} | "
                     f"{r['batch'] / r['int8']:,.0f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default=f"1,{os.cpu_count()}", help="thread counts (default 1,all)")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--update", action="store_true", help=f"write {RESULTS.name}")
    args = parser.parse_args(argv)
    torch = None
    if not args.no_torch:
        try:
            import torch

            torch.set_flush_denormal(True)
            torch.backends.quantized.engine = "fbgemm" if "fbgemm" in torch.backends.quantized.supported_engines \
                else torch.backends.quantized.engine
        except ImportError:
            torch = None
    product, models = [], []
    for threads in (int(t) for t in args.threads.split(",")):
        harness.set_threads(threads, torch)
        product += product_rows(torch, threads, args.rounds)
        models += model_rows(torch, threads, args.rounds)
    description = harness.machine_description(torch) + [f"- int8 path: {quantizers.int8_path()}"]
    text = "\n".join(description) + "\n\n" + tables(product, models)
    print(text)
    if args.update:
        RESULTS.write_text("# int8 inference (python bench/quantized.py --update)\n\n" + text + "\n")


if __name__ == "__main__":
    main()
