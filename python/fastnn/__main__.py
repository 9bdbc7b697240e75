"""``python -m fastnn``: trains a model on the bundled handwritten digits and reports accuracy.

A Keras program run unchanged but for the import: load data, build a Sequential model (an
MLP; with ``--model cnn`` a convolutional network on the 8×8 images; with ``--model rnn`` a
bidirectional LSTM reading each image as a sequence of 8 rows; with ``--model transformer`` a
Transformer encoder reading the 8 rows as 8 tokens: each row projected by a Dense layer plus a
learned position embedding, a block of multi-head self-attention and feed-forward network with
residual connections and layer normalization, average pooling over the rows), compile, fit
with a progress bar, evaluate. Then the build configuration.
"""

import argparse
import sys
import time

import fastnn as keras
from fastnn import layers, ops, runtime, thread_tuner

# Other processes' load, in cores, above which the demo's timing is not the machine's best.
BUSY_CORES = 0.5


class RowAndPositionEmbedding(layers.Layer):
    """Each row (token) projected to `embed_dim`, plus a learned embedding of its position."""

    def __init__(self, rows, embed_dim, **kwargs):
        super().__init__(**kwargs)
        self.projection = layers.Dense(embed_dim)
        self.pos_emb = layers.Embedding(input_dim=rows, output_dim=embed_dim)

    def call(self, x):
        positions = self.pos_emb(ops.arange(start=0, stop=ops.shape(x)[1], step=1))
        return self.projection(x) + positions


class TransformerBlock(layers.Layer):
    """Self-attention and a feed-forward network, each with dropout, a residual connection and
    layer normalization (Keras' "Text classification with Transformer" block)."""

    def __init__(self, embed_dim, num_heads, ff_dim, rate=0.1, **kwargs):
        super().__init__(**kwargs)
        self.att = layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim // num_heads)
        self.ffn = keras.Sequential([layers.Dense(ff_dim, activation="gelu"), layers.Dense(embed_dim)])
        self.layernorm1 = layers.LayerNormalization(epsilon=1e-6)
        self.layernorm2 = layers.LayerNormalization(epsilon=1e-6)
        self.dropout1 = layers.Dropout(rate)
        self.dropout2 = layers.Dropout(rate)

    def call(self, inputs):
        out1 = self.layernorm1(inputs + self.dropout1(self.att(inputs, inputs)))
        return self.layernorm2(out1 + self.dropout2(self.ffn(out1)))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastnn", description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("mlp", "cnn", "rnn", "transformer"), default="mlp",
                        help="the network: an MLP, a convolutional network, a bidirectional LSTM or a Transformer "
                             "encoder over the 8 rows (default mlp)")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs (default 20)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="fit's verbosity")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    (x_train, y_train), (x_test, y_test) = keras.datasets.digits.load_data()
    shape = {"cnn": (-1, 8, 8, 1), "rnn": (-1, 8, 8), "transformer": (-1, 8, 8)}.get(args.model, (-1, 64))
    x_train = x_train.reshape(shape).astype("float32") / 16.0
    x_test = x_test.reshape(shape).astype("float32") / 16.0

    if args.model == "cnn":
        model = keras.Sequential([
            keras.layers.Input((8, 8, 1)),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10, activation="softmax"),
        ])
    elif args.model == "rnn":
        model = keras.Sequential([
            keras.layers.Input((8, 8)),  # 8 time steps (rows) of 8 features
            keras.layers.Bidirectional(keras.layers.LSTM(64)),
            keras.layers.Dense(10, activation="softmax"),
        ])
    elif args.model == "transformer":
        model = keras.Sequential([
            keras.layers.Input((8, 8)),  # 8 tokens (rows) of 8 features
            RowAndPositionEmbedding(rows=8, embed_dim=64),
            TransformerBlock(embed_dim=64, num_heads=4, ff_dim=128),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(10, activation="softmax"),
        ])
    else:
        model = keras.Sequential([
            keras.layers.Dense(units=128, activation="relu", input_shape=(64,)),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(units=64, activation="relu"),
            keras.layers.Dense(units=10, activation="softmax"),
        ])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.002),
                  loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
    model.summary()

    steps_before = thread_tuner.steps_by_threads()
    meter = runtime.LoadMeter().start()
    start = time.perf_counter()
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size, validation_split=0.1,
              verbose=args.verbose)
    per_epoch = (time.perf_counter() - start) / max(args.epochs, 1)
    others = meter.stop()
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"\ndigits test accuracy: {accuracy:.4f} (loss {loss:.4f}) on {len(x_test)} held-out images")
    print(f"time per epoch: {per_epoch * 1e3:.1f} ms ({len(x_train)} samples, batch {args.batch_size}, "
          f"{_threads_used(steps_before)})\n")
    if others is not None and others >= BUSY_CORES:
        print(f"warning: other processes kept {others:.1f} of {runtime.processors_at_start()} cores busy during "
              f"training: the time per epoch is slower than this machine's best\n", file=sys.stderr)
    keras.show_config()
    return accuracy


def _threads_used(before):
    """"2 threads", or how the steps were shared out when the loops adapted to a busy machine."""
    after = thread_tuner.steps_by_threads()
    steps = {t: after[t] - before.get(t, 0) for t in after if after[t] > before.get(t, 0)}
    configured = keras.get_num_threads()
    total = sum(steps.values())
    if steps.get(configured, 0) >= 0.9 * total:  # all, but for the tuner's rare probes
        return f"{configured} thread{'s' if configured > 1 else ''}"
    shares = ", ".join(f"{100 * n / total:.0f}% of steps on {t}" for t, n in sorted(steps.items(), reverse=True))
    return f"{configured} threads configured; {shares} (fit keeps the count it measures fastest)"


if __name__ == "__main__":
    main()
