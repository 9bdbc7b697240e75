"""The programs tests/test_distribution.py runs under ``mpiexec -n 2`` (and on one process).

``python distributed_worker.py MODE OUT`` runs one scenario and rank 0 writes what it saw
to OUT (a .npz of arrays, or JSON lines each rank writes to OUT.rank<r>.json). Each
scenario is an ordinary Keras-style script: the same code runs on one process or many.
"""

import json
import os
import sys

import numpy as np

import fastnn as keras
from fastnn.distribution import world as world_module


def data(n=200, features=20, classes=4, seed=0):
    g = np.random.default_rng(seed)
    x = g.normal(size=(n, features)).astype(np.float32)
    y = (np.abs(x[:, :classes]).argmax(axis=1)).astype(np.int64)
    return x, y


def mlp(seed, features=20, classes=4, dropout=0.0, regularized=True, batch_norm=False):
    keras.utils.set_random_seed(seed)
    layers = [keras.layers.Input((features,)),
              keras.layers.Dense(16, activation="tanh",
                                 kernel_regularizer=keras.regularizers.L2(0.01) if regularized else None)]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization())
    if dropout:
        layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(classes, activation="softmax"))
    model = keras.Sequential(layers)
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def flat_weights(model):
    return np.concatenate([w.ravel() for w in model.get_weights()])


def write(out, **arrays):
    if keras.distribution.process_id() == 0:
        np.savez(out, **arrays)


def history_arrays(history):
    return {f"history_{k}": np.array(v, np.float64) for k, v in history.history.items()}


def parallel():
    keras.distribution.set_distribution(keras.distribution.DataParallel())


def mode_fit(out, n, batch_size, epochs, shuffle, seed_offset):
    """A fit; every rank builds its model with a different seed (rank 0's weights win)."""
    parallel()
    x, y = data(n)
    model = mlp(7 + seed_offset * keras.distribution.process_id())
    keras.utils.set_random_seed(3)  # the shuffles: rank 0's generator state is shared
    history = model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=shuffle, verbose=0,
                        validation_data=data(50, seed=1))
    evaluated = model.evaluate(*data(70, seed=2), batch_size=16, verbose=0, return_dict=True)
    write(out, weights=flat_weights(model), evaluate_loss=evaluated["loss"],
          evaluate_accuracy=evaluated["accuracy"], **history_arrays(history))
    rank_view(out, threads=keras.get_num_threads(), weights_sum=float(flat_weights(model).astype(np.float64).sum()))


def rank_view(out, **values):
    """Each rank's own view, to compare ranks with each other."""
    with open(f"{out}.rank{keras.distribution.process_id()}.json", "w") as f:
        json.dump(values, f)


def mode_dropout(out):
    """Dropout and augmentation in fit: each rank its own masks; reruns the same."""
    parallel()
    x, y = data(128)
    model = mlp(5, dropout=0.5, regularized=False)
    drawn = []
    probe = keras.layers.Dropout(0.5)
    flip = keras.layers.RandomFlip("horizontal")
    images = np.arange(2 * 4 * 4 * 1, dtype=np.float32).reshape(2, 4, 4, 1)

    class Probe(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            mask = np.asarray(probe(np.ones((1, 64), np.float32), training=True)) != 0
            flipped = np.asarray(flip(np.repeat(images, 16, axis=0), training=True))
            drawn.append(np.concatenate([mask.ravel(), (flipped != np.repeat(images, 16, axis=0)).any(axis=(1, 2, 3))]))

    keras.utils.set_random_seed(11)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[Probe()])
    rank_view(out, drawn=np.array(drawn).astype(int).tolist(), weights=flat_weights(model).tolist())


def mode_batchnorm(out):
    """Each process's moving statistics after its last step, and the averaged ones after fit."""
    parallel()
    x, y = data(96)
    model = mlp(5, batch_norm=True)
    bn = model.layers[1]
    local = []

    class Capture(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            local[:] = [np.concatenate([bn.moving_mean.numpy(), bn.moving_variance.numpy()]).tolist()]

    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[Capture()])
    rank_view(out, local=local[0], moving=np.concatenate([bn.moving_mean.numpy(), bn.moving_variance.numpy()]).tolist(),
              predictions=model.predict(x[:8], verbose=0).tolist())


def mode_progress(out):
    """verbose=2: rank 0 prints, saying how many processes and threads train."""
    parallel()
    x, y = data(64)
    mlp(5).fit(x, y, batch_size=32, epochs=2, verbose=2)


def mode_writers(out):
    """ModelCheckpoint, CSVLogger: each rank names its own files; only rank 0's are written.
    Then model.save (collective) and load_model on every rank."""
    parallel()
    folder = out
    rank = keras.distribution.process_id()
    x, y = data(64)
    model = mlp(5)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, validation_split=0.25, callbacks=[
        keras.callbacks.ModelCheckpoint(os.path.join(folder, f"rank{rank}-epoch{{epoch}}.fastnn")),
        keras.callbacks.CSVLogger(os.path.join(folder, f"rank{rank}.csv"))])
    shared = os.path.join(folder, "model.fastnn")
    model.save(shared)
    loaded = keras.models.load_model(shared)
    rank_view(os.path.join(folder, "view"), same=bool(np.array_equal(flat_weights(loaded), flat_weights(model))),
              predictions=loaded.predict(x[:4], verbose=0).tolist())


def mode_raise(out, at_start):
    """Rank 1 fails: its data holds a NaN (fit refuses it before the first step), or a callback
    raises at the end of the first epoch (while rank 0 waits in the next step's all-reduce)."""
    parallel()
    x, y = data(64)
    model = mlp(5)
    rank = keras.distribution.process_id()
    if at_start and rank == 1:
        x[3, 2] = np.nan

    class Break(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if rank == 1:
                raise ValueError("rank 1's broken data")

    model.fit(x, y, batch_size=32, epochs=50, verbose=0, callbacks=[Break()])


def mode_mismatch(out):
    parallel()
    x, y = data(64)
    keras.utils.set_random_seed(0)
    units = 16 + keras.distribution.process_id()
    model = keras.Sequential([keras.layers.Input((20,)), keras.layers.Dense(units, activation="relu"),
                              keras.layers.Dense(4, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    try:
        model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    except ValueError as error:
        rank_view(out, error=str(error))
        return
    rank_view(out, error=None)


def mode_batch_logs(out):
    """A callback that reads each batch's logs gets the global ones."""
    parallel()
    x, y = data(150)
    model = mlp(7)
    seen = []
    keras.utils.set_random_seed(3)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, validation_data=data(40, seed=1),
              callbacks=[keras.callbacks.LambdaCallback(
                  on_train_batch_end=lambda b, logs: seen.append([logs["loss"], logs["accuracy"]]),
                  on_test_batch_end=lambda b, logs: seen.append([logs["loss"], logs["accuracy"]]))])
    write(out, seen=np.array(seen))


def mode_buckets(out):
    """The all-reduce overlapped with the backward in buckets of 64 bytes (a shared layer's
    weights final only after its second call) against one all-reduce after the backward."""
    x, y = data(100)
    results = {}
    for bucket_bytes in (None, 64, 10**9):
        keras.distribution.set_distribution(keras.distribution.DataParallel(bucket_bytes=bucket_bytes))
        keras.utils.set_random_seed(5)
        inputs = keras.Input((20,))
        shared = keras.layers.Dense(8, activation="tanh")
        left = shared(keras.layers.Dense(20, activation="relu")(inputs))
        right = shared(inputs)
        merged = keras.layers.Concatenate()([left, keras.layers.Dense(8)(right)])
        model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(merged))
        model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
        model.fit(x, y, batch_size=32, epochs=2, verbose=0)
        results[str(bucket_bytes)] = flat_weights(model)
    write(out, **results)


def mode_stop(out):
    """A callback on rank 1 alone stops training mid-epoch: every rank stops at that batch."""
    parallel()
    x, y = data(320)
    model = mlp(5)
    seen = []

    class StopOnOneRank(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(batch)
            if keras.distribution.process_id() == 1 and len(seen) == 7:
                self.model.stop_training = True

    history = model.fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=[StopOnOneRank()])
    rank_view(out, batches=len(seen), epochs=len(history.epoch), weights=flat_weights(model).tolist())


def mode_sleep(out):
    """A long fit for the Ctrl-C test: rank 0 says when training has started."""
    parallel()
    x, y = data(4096)
    model = mlp(5)

    class Started(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 2 and keras.distribution.process_id() == 0:
                open(out, "w").close()

    model.fit(x, y, batch_size=8, epochs=1000, verbose=0, callbacks=[Started()])


class Handwritten(keras.Model):
    """A train_step override from fastnn's public pieces (forward, loss gradient, backward,
    optimizer.apply_gradients, compute_metrics)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(16, activation="tanh")
        self.out = keras.layers.Dense(4, activation="softmax")

    def call(self, inputs, training=False):
        return self.out(self.hidden(inputs))

    def train_step(self, data):
        x, y = data
        y_pred, cache = self.forward(x, training=True)
        loss, d_y_pred = self.compute_loss_and_grad(x, y, y_pred)
        self.backward(cache, d_y_pred, need_input_grad=False)
        self.optimizer.apply_gradients(zip([v.grad for v in self.trainable_weights], self.trainable_weights))
        return {"loss": loss, **self.compute_metrics(x, y, y_pred)}

    def test_step(self, data):
        x, y = data
        y_pred = self(x, training=False)
        return {"loss": self.compute_loss(x, y, y_pred), **self.compute_metrics(x, y, y_pred)}


def mode_sources(out, custom):
    """Batches from a generator (uneven sizes), or a train_step override on arrays."""
    parallel()
    x, y = data(150)
    if custom:
        keras.utils.set_random_seed(7)
        model = Handwritten()
        model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"])
        model(x[:1])
        history = model.fit(x, y, batch_size=40, epochs=2, shuffle=False, verbose=0, validation_data=data(50, seed=1))
    else:
        model = mlp(7)

        def batches():
            for start, stop in ((0, 40), (40, 41), (41, 100), (100, 150)):
                yield x[start:stop], y[start:stop]

        history = None
        for _ in range(2):
            history = model.fit(batches(), epochs=1, verbose=0)
    evaluated = model.evaluate(*data(70, seed=2), batch_size=16, verbose=0, return_dict=True)
    write(out, weights=flat_weights(model), **history_arrays(history),
          **{f"evaluate_{k}": np.float64(v) for k, v in evaluated.items()})


def mode_own_shards(out):
    """auto_shard_dataset=False: each rank is given its own half of the data."""
    keras.distribution.set_distribution(keras.distribution.DataParallel(auto_shard_dataset=False))
    x, y = data(128)
    rank = keras.distribution.process_id()
    model = mlp(7)
    model.fit(x[rank::2], y[rank::2], batch_size=32, epochs=1, shuffle=False, verbose=0)
    write(out, weights=flat_weights(model))


if __name__ == "__main__":
    mode, out, *args = sys.argv[1:]
    globals()[f"mode_{mode}"](out, *[int(a) for a in args])
    if world_module.world().size > 1:
        world_module.world().barrier()
