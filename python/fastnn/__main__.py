"""``python -m fastnn``: trains a model on the bundled handwritten digits and reports accuracy.

A Keras program run unchanged but for the import: load data, build a Sequential model (an
MLP; with ``--model cnn`` a convolutional network on the 8×8 images; with ``--model rnn`` a
bidirectional LSTM reading each image as a sequence of 8 rows), compile, fit with a progress
bar, evaluate. Then the build configuration.
"""

import argparse
import time

import fastnn as keras


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastnn", description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("mlp", "cnn", "rnn"), default="mlp", help="the network (default mlp)")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs (default 20)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="fit's verbosity")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    (x_train, y_train), (x_test, y_test) = keras.datasets.digits.load_data()
    shape = {"cnn": (-1, 8, 8, 1), "rnn": (-1, 8, 8)}.get(args.model, (-1, 64))
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

    start = time.perf_counter()
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size, validation_split=0.1,
              verbose=args.verbose)
    per_epoch = (time.perf_counter() - start) / max(args.epochs, 1)
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"\ndigits test accuracy: {accuracy:.4f} (loss {loss:.4f}) on {len(x_test)} held-out images")
    print(f"time per epoch: {per_epoch * 1e3:.1f} ms ({len(x_train)} samples, batch {args.batch_size}, "
          f"{keras.get_num_threads()} threads)\n")
    keras.show_config()
    return accuracy


if __name__ == "__main__":
    main()
