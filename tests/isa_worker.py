"""Computes a fixed set of kernel results in a fresh process, for tests/test_isa.py.

    FASTNN_ISA=v3 python tests/isa_worker.py OUT.npz

runs each computation on 1 and on 2 threads and saves the results as ``<name>@<threads>`` arrays,
plus ``level`` (the level that ran). Every input comes from a fixed seed, so two processes at
different levels compute the same mathematics.
"""

import sys

import numpy as np

import fastnn
from fastnn import ops


def computations():
    rng = np.random.default_rng(19)
    a = rng.standard_normal((193, 301)).astype("float32")
    b = rng.standard_normal((301, 157)).astype("float32")
    images = rng.standard_normal((4, 17, 15, 6)).astype("float32")
    filters = (0.2 * rng.standard_normal((3, 3, 6, 8))).astype("float32")
    bias = rng.standard_normal(8).astype("float32")
    sequence = rng.standard_normal((5, 12, 7)).astype("float32")
    kernel = (0.3 * rng.standard_normal((7, 36))).astype("float32")
    recurrent_kernel = (0.3 * rng.standard_normal((9, 36))).astype("float32")
    lstm_bias = (0.1 * rng.standard_normal(36)).astype("float32")
    (x_train, y_train), _ = fastnn.datasets.digits.load_data()
    x_train = x_train.reshape(len(x_train), -1)[:512].astype("float32") / 16
    y_train = y_train[:512]

    def conv_forward_backward():
        y = ops.conv(images, filters, padding="same", bias=bias)
        dy = np.cos(y)  # a fixed, non-trivial output gradient
        dw, db = np.empty_like(filters), np.empty_like(bias)
        dx = ops.conv_backward(images, filters, dy, y, dw, db, padding="same")
        return {"y": y, "dx": dx, "dw": dw, "db": db}

    def lstm_forward_backward():
        y, h, c, cache = ops.lstm(sequence, kernel, recurrent_kernel, lstm_bias, return_cache=True)
        grads = ops.lstm_backward(cache, d_outputs=np.cos(y))
        return {"y": y, "h": h, "c": c, **{name: grads[name] for name in ("dx", "kernel", "recurrent_kernel", "bias")}}

    def mlp_fit():
        fastnn.utils.set_random_seed(5)
        model = fastnn.Sequential([fastnn.Input((64,)), fastnn.layers.Dense(32, activation="relu"),
                                   fastnn.layers.Dense(10, activation="softmax")])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        history = model.fit(x_train, y_train, batch_size=64, epochs=2, shuffle=False, verbose=0)
        return {"loss": np.asarray(history.history["loss"]),
                **{f"w{i}": w for i, w in enumerate(model.get_weights())}}

    return {
        "gemm": lambda: {"c": np.asarray(ops.matmul(a, b))},
        "conv": conv_forward_backward,
        "lstm": lstm_forward_backward,
        "mlp": mlp_fit,
    }


def main(out):
    results = {"level": np.array(fastnn.isa.level())}
    for threads in (1, 2):
        fastnn.set_num_threads(threads)
        for name, compute in computations().items():
            for key, value in compute().items():
                results[f"{name}.{key}@{threads}"] = np.asarray(value)
    np.savez(out, **results)


if __name__ == "__main__":
    main(sys.argv[1])
