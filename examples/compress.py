"""Smaller, faster models for deployment: prune while fine-tuning, then quantize to int8.

    python examples/compress.py                          # MNIST (downloaded once; or --data-path DIR)
    python examples/compress.py --dataset digits         # the bundled 8×8 digits, no download

For an MLP and a CNN: train the float32 model; fine-tune it while pruning its kernels to 80 %
zeros (``fastnn.pruning``: PolynomialDecay, UpdatePruningStep, strip_pruning); quantize the
pruned model to int8 (``model.quantize("int8")``: the VNNI/AVX2 kernels). Then print, for
float32 / pruned / pruned + int8: test accuracy, the size of the weights file (``save_weights``:
int8 arrays, and arrays that are mostly zeros deflated), the latency of one sample
(``model(x)``) and the throughput of ``predict`` at batch 1,024.

``--data-path`` may also be a folder holding only MNIST's test files (t10k-*): its 10,000
images are then split 8,000 / 2,000 (so that the example runs offline).
"""

import argparse
import os
import pathlib
import tempfile
import time

import numpy as np

import fastnn as keras
from fastnn import layers, pruning


def load(dataset, data_path):
    """(x_train, y_train), (x_test, y_test), the image shape."""
    if dataset == "digits":
        (x_train, y_train), (x_test, y_test) = keras.datasets.digits.load_data()
        return (x_train / 16.0, y_train), (x_test / 16.0, y_test), (8, 8, 1)
    folder = pathlib.Path(data_path) if data_path else None
    if folder is not None and not list(folder.glob("train-images-idx3-ubyte*")) and list(folder.glob("t10k-*")):
        images = keras.datasets.mnist.read_idx(next(folder.glob("t10k-images-idx3-ubyte*")))
        labels = keras.datasets.mnist.read_idx(next(folder.glob("t10k-labels-idx1-ubyte*")))
        x, y = images / 255.0, labels.astype(np.int64)
        print("(only MNIST's test files were found: 8,000 of its images train, 2,000 test)")
        return (x[:8000], y[:8000]), (x[8000:], y[8000:]), (28, 28, 1)
    (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data(path=data_path)
    return (x_train / 255.0, y_train), (x_test / 255.0, y_test), (28, 28, 1)


def build(kind, shape):
    keras.utils.set_random_seed(0)
    if kind == "mlp":
        model = keras.Sequential([layers.Input((int(np.prod(shape)),)), layers.Dense(256, activation="relu"),
                                  layers.Dense(128, activation="relu"), layers.Dense(10, activation="softmax")])
    else:
        model = keras.Sequential([layers.Input(shape), layers.Conv2D(32, 3, activation="relu", padding="same"),
                                  layers.MaxPooling2D(2), layers.Conv2D(64, 3, activation="relu", padding="same"),
                                  layers.MaxPooling2D(2), layers.Flatten(), layers.Dense(128, activation="relu"),
                                  layers.Dense(10, activation="softmax")])
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def measure(model, x_test, y_test, folder, name):
    """accuracy, weights-file bytes, one-sample latency (s), samples/s at batch 1,024."""
    accuracy = model.evaluate(x_test, y_test, batch_size=1024, verbose=0)[1]
    path = os.path.join(folder, f"{name}.weights.fastnn")
    model.save_weights(path)
    one = x_test[:1]
    model(one)
    latency = min(_time(lambda: model(one)) for _ in range(200))
    batch = np.resize(x_test, (1024,) + x_test.shape[1:]).astype(np.float32)
    model.predict(batch, batch_size=1024, verbose=0)
    throughput = 1024 / min(_time(lambda: model.predict(batch, batch_size=1024, verbose=0)) for _ in range(20))
    return accuracy, os.path.getsize(path), latency, throughput


def _time(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compress(kind, data, epochs, fine_tune_epochs, sparsity, folder):
    (x_train, y_train), (x_test, y_test), shape = data
    if kind == "mlp":
        x_train, x_test = x_train.reshape(len(x_train), -1), x_test.reshape(len(x_test), -1)
    else:
        x_train, x_test = x_train.reshape((-1,) + shape), x_test.reshape((-1,) + shape)
    x_train, x_test = x_train.astype(np.float32), x_test.astype(np.float32)
    model = build(kind, shape)
    model.fit(x_train, y_train, batch_size=128, epochs=epochs, verbose=0)
    rows = {"float32": measure(model, x_test, y_test, folder, f"{kind}-float32")}

    steps = fine_tune_epochs * -(-len(x_train) // 128)
    schedule = pruning.PolynomialDecay(initial_sparsity=0.0, final_sparsity=sparsity, begin_step=0,
                                       end_step=max(1, steps * 3 // 4), frequency=max(1, steps // 20))
    pruned = pruning.prune_low_magnitude(model, pruning_schedule=schedule)
    pruned.compile(keras.optimizers.Adam(5e-4), "sparse_categorical_crossentropy", metrics=["accuracy"])
    pruned.fit(x_train, y_train, batch_size=128, epochs=fine_tune_epochs, verbose=0,
               callbacks=[pruning.UpdatePruningStep()])
    pruned = pruning.strip_pruning(pruned)
    pruned.compile(keras.optimizers.Adam(5e-4), "sparse_categorical_crossentropy", metrics=["accuracy"])
    rows[f"pruned {sparsity:.0%}"] = measure(pruned, x_test, y_test, folder, f"{kind}-pruned")

    pruned.quantize("int8", verbose=False)
    rows[f"pruned {sparsity:.0%} + int8"] = measure(pruned, x_test, y_test, folder, f"{kind}-pruned-int8")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("mnist", "digits"), default="mnist")
    parser.add_argument("--data-path", default=None, help="a folder with MNIST's IDX files (default: the cache)")
    parser.add_argument("--models", default="mlp,cnn", help="mlp, cnn or both (default)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs of the float model (default 3 on MNIST, 20 on digits)")
    parser.add_argument("--fine-tune-epochs", type=int, default=None,
                        help="epochs of fine-tuning while pruning (default 3 on MNIST, 15 on digits)")
    parser.add_argument("--sparsity", type=float, default=0.8, help="final sparsity (default 0.8)")
    args = parser.parse_args(argv)
    small = args.dataset == "digits"  # 1,437 images: more epochs for as many steps
    epochs = args.epochs if args.epochs is not None else (20 if small else 3)
    fine_tune_epochs = args.fine_tune_epochs if args.fine_tune_epochs is not None else (15 if small else 3)
    data = load(args.dataset, args.data_path)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for kind in args.models.split(","):
            results[kind] = compress(kind, data, epochs, fine_tune_epochs, args.sparsity, folder)
    print(f"\n{args.dataset}, int8 path: {keras.quantizers.int8_path()}, threads: {keras.get_num_threads()}\n")
    print("| model | version | test accuracy | weights file | 1-sample latency | predict, batch 1,024 |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for kind, rows in results.items():
        for version, (accuracy, size, latency, throughput) in rows.items():
            print(f"| {kind.upper()} | {version} | {accuracy:.2%} | {size / 1024:,.0f} KiB | {latency * 1e6:,.0f} µs | "
                  f"{throughput:,.0f} samples/s |")
    return results


if __name__ == "__main__":
    main()
