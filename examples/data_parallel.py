"""Data-parallel training: the same script on one process or many.

    python examples/data_parallel.py                 # one process
    mpiexec -n 2 python examples/data_parallel.py    # two (pip install ".[mpi]")

Every process loads the same data and holds the whole model; each trains on its share of
every batch (``batch_size`` is the global batch) and the gradients are summed over the
processes once per step. Rank 0 prints the progress and writes the checkpoint.
"""

import argparse
import os
import tempfile

import fastnn as keras


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128, help="the global batch (default 128)")
    args = parser.parse_args()

    keras.distribution.set_distribution(keras.distribution.DataParallel())
    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test) = keras.datasets.digits.load_data()
    x_train, x_test = x_train.reshape(-1, 64) / 16, x_test.reshape(-1, 64) / 16

    model = keras.Sequential([
        keras.layers.Input((64,)),
        keras.layers.Dense(256, activation="relu"),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(keras.optimizers.Adam(0.002), "sparse_categorical_crossentropy", metrics=["accuracy"])
    checkpoint = os.path.join(tempfile.gettempdir(), "fastnn-data-parallel.fastnn")
    model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs, validation_split=0.1,
              callbacks=[keras.callbacks.EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True),
                         keras.callbacks.ModelCheckpoint(checkpoint, save_best_only=True)])
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)  # sharded too: every process calls it
    if keras.distribution.process_id() == 0:
        print(f"{keras.distribution.num_processes()} process(es): test accuracy {accuracy:.4f}, loss {loss:.4f}; "
              f"checkpoint {checkpoint}")


if __name__ == "__main__":
    main()
