"""fit / evaluate / predict fed by generators, re-iterable iterables and PyDatasets
(fastnn.data_adapters, fastnn.utils.PyDataset): against the same batches given as arrays."""

import itertools
import multiprocessing
import threading
import time
import tracemalloc
import warnings

import numpy as np
import pytest

import fastnn as keras

N, FEATURES, CLASSES, BATCH = 96, 6, 3, 16


@pytest.fixture(scope="module")
def data():
    r = np.random.default_rng(7)
    x = r.normal(size=(N, FEATURES)).astype("float32")
    y = r.integers(0, CLASSES, N)
    w = r.uniform(0.5, 2.0, N)
    return x, y, w


def make_model(build=True, seed=3):
    keras.utils.set_random_seed(seed)
    first = keras.layers.Dense(8, activation="relu", input_shape=(FEATURES,) if build else None) if build else \
        keras.layers.Dense(8, activation="relu")
    model = keras.Sequential([first, keras.layers.Dense(CLASSES, activation="softmax")])
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def batches(*arrays, size=BATCH, start=0, stop=None):
    """The batches of the arrays in order, as tuples."""
    stop = len(arrays[0]) if stop is None else stop
    for s in range(start, stop, size):
        yield tuple(a[s:min(s + size, stop)] for a in arrays)


def no_workers_left():
    """No loader thread (fastnn names them) and no worker process is alive."""
    return not [t for t in threading.enumerate() if t.name.startswith("fastnn-loader")] and \
        multiprocessing.active_children() == []


def same_weights(a, b):
    return all(np.array_equal(p, q) for p, q in zip(a.get_weights(), b.get_weights()))


class BatchCounter(keras.callbacks.Callback):
    """The number of batches trained in each epoch."""

    def __init__(self):
        super().__init__()
        self.counts = []

    def on_epoch_begin(self, epoch, logs=None):
        self.counts.append(0)

    def on_train_batch_end(self, batch, logs=None):
        self.counts[-1] += 1


class Batches(keras.utils.PyDataset):
    """A PyDataset over arrays, recording which indices were loaded, in which thread."""

    def __init__(self, *arrays, size=BATCH, delay=0.0, **kwargs):
        super().__init__(**kwargs)
        self.arrays, self.size, self.delay = arrays, size, delay
        self.loaded, self.threads = [], set()

    def __len__(self):
        return -(-len(self.arrays[0]) // self.size)

    def __getitem__(self, index):
        self.loaded.append(index)
        self.threads.add(threading.current_thread().name)
        if self.delay:
            time.sleep(self.delay)
        return tuple(a[index * self.size:(index + 1) * self.size] for a in self.arrays)


# ---- the same training as arrays ---------------------------------------------------------------------
@pytest.mark.parametrize("weighted", [False, True])
def test_generator_fit_is_bit_identical_to_the_array_fit(data, weighted):
    x, y, w = data
    arrays = (x, y, w) if weighted else (x, y)
    reference = make_model()
    expected = reference.fit(x, y, sample_weight=w if weighted else None, batch_size=BATCH, epochs=2,
                             shuffle=False, verbose=0)
    model = make_model()
    stream = itertools.chain(batches(*arrays), batches(*arrays))
    history = model.fit(stream, steps_per_epoch=N // BATCH, epochs=2, verbose=0)
    assert same_weights(model, reference)
    assert history.history == expected.history


def test_a_generator_without_steps_per_epoch_runs_until_exhausted_then_training_stops(data):
    x, y, _ = data
    reference = make_model()
    reference.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    model = make_model()
    with pytest.warns(UserWarning, match="ran out of data; interrupting training"):
        history = model.fit(batches(x, y), epochs=3, verbose=0)
    assert history.epoch == [0]
    assert same_weights(model, reference)


def test_steps_per_epoch_continues_the_generator_and_running_out_ends_training(data):
    x, y, _ = data
    reference = make_model()  # 6 batches in a row = 2 epochs of 3 batches: continued, not restarted
    reference.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    model = make_model()
    model.fit(batches(x, y), steps_per_epoch=3, epochs=2, verbose=0)
    assert same_weights(model, reference)
    stop = 5 * BATCH + BATCH // 2  # 6 batches, the last one half full
    reference = make_model()
    reference.fit(x[:stop], y[:stop], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    model, counter = make_model(), BatchCounter()
    with pytest.warns(UserWarning, match=r"ran out of data after 2 of the 4 batches of this epoch"):
        history = model.fit(batches(x, y, stop=stop), steps_per_epoch=4, epochs=5, callbacks=[counter], verbose=0)
    assert counter.counts == [4, 2] and history.epoch == [0, 1]  # then training stops
    assert same_weights(model, reference)


def _fits_like_the_arrays(loader, x, y):
    """3 epochs on `loader` give the weights, History and evaluation of the same batches as arrays."""
    reference = make_model()
    expected = reference.fit(x, y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0)
    model = make_model()
    history = model.fit(loader, epochs=3, verbose=0)
    assert same_weights(model, reference)
    assert history.history == expected.history
    assert model.evaluate(loader, verbose=0) == reference.evaluate(x, y, batch_size=BATCH, verbose=0)
    return model, reference


class Reiterable:
    """What a DataLoader is to fit: an object (not an iterator) that gives a fresh pass per iter()."""

    def __init__(self, x, y):
        self.x, self.y, self.passes = x, y, 0

    def __iter__(self):
        self.passes += 1
        return ((self.x[s:s + BATCH], self.y[s:s + BATCH]) for s in range(0, len(self.x), BATCH))


def test_a_reiterable_object_is_iterated_afresh_each_epoch(data):
    x, y, _ = data
    loader = Reiterable(x, y)
    _fits_like_the_arrays(loader, x, y)
    assert loader.passes == 4  # 3 epochs, then evaluate


def test_a_torch_dataloader_is_iterated_afresh_each_epoch(data):
    torch = pytest.importorskip("torch")  # an optional peer: its tensors are converted with np.asarray
    x, y, _ = data
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                                         batch_size=BATCH, shuffle=False)
    model, reference = _fits_like_the_arrays(loader, x, y)
    np.testing.assert_array_equal(model.predict(loader), reference.predict(x, batch_size=BATCH))


@pytest.mark.parametrize("options", [dict(workers=0), dict(workers=1), dict(workers=3, max_queue_size=2),
                                     dict(workers=2, use_multiprocessing=True)],
                         ids=["inline", "1-thread", "3-threads", "2-processes"])
def test_pydataset_fit_evaluate_predict_equal_the_arrays(data, options):
    x, y, w = data
    reference = make_model()
    expected = reference.fit(x, y, sample_weight=w, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    model = make_model()
    history = model.fit(Batches(x, y, w, **options), epochs=2, shuffle=False, verbose=0)
    assert same_weights(model, reference)
    assert history.history == expected.history
    assert model.evaluate(Batches(x, y, **options), verbose=0, return_dict=True) == \
        reference.evaluate(x, y, batch_size=BATCH, verbose=0, return_dict=True)
    np.testing.assert_array_equal(model.predict(Batches(x, **options)), reference.predict(x, batch_size=BATCH))
    assert no_workers_left()


def test_pydataset_batch_order_is_shuffled_per_epoch_when_shuffle_is_true(data):
    x, y, _ = data
    dataset = Batches(x, y, workers=0)
    model = make_model()
    model.fit(dataset, epochs=3, verbose=0)  # shuffle=True, fit's default (as Keras for a PyDataset)
    orders = [dataset.loaded[i * 6:(i + 1) * 6] for i in range(3)]
    assert all(sorted(order) == list(range(6)) for order in orders)
    assert len({tuple(order) for order in orders}) > 1
    # the same training as arrays given in that order, unshuffled
    order = np.concatenate([np.arange(i * BATCH, (i + 1) * BATCH) for i in itertools.chain(*orders)])
    reference = make_model()
    reference.fit(x[order], y[order], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    assert same_weights(model, reference)
    dataset.loaded.clear()
    model.fit(dataset, epochs=2, shuffle=False, verbose=0)
    model.evaluate(dataset, verbose=0)
    assert dataset.loaded == list(range(6)) * 3


def test_pydataset_loads_ahead_in_background_threads_within_max_queue_size(data):
    x, y, _ = data
    dataset = Batches(x, y, workers=2, max_queue_size=2)
    ahead, start = [], [0]

    class Watch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            start[0] = len(dataset.loaded)  # the next epoch's loads come after

        def on_train_batch_end(self, batch, logs=None):
            ahead.append(max(dataset.loaded[start[0]:]) - batch)

    make_model().fit(dataset, epochs=2, shuffle=False, callbacks=[Watch()], verbose=0)
    assert dataset.threads and threading.main_thread().name not in dataset.threads
    assert max(ahead) <= 2  # never more than max_queue_size batches requested ahead of the one trained on
    assert no_workers_left()


def test_pydataset_epoch_hooks_run_once_per_epoch_and_never_while_a_batch_loads(data):
    x, y, _ = data
    events, loading = [], [0]
    lock = threading.Lock()

    class Hooked(Batches):
        def __getitem__(self, index):
            with lock:
                loading[0] += 1
            try:
                return super().__getitem__(index)
            finally:
                with lock:
                    loading[0] -= 1

        def on_epoch_begin(self):
            events.append(("begin", loading[0]))

        def on_epoch_end(self):
            events.append(("end", loading[0]))

    make_model().fit(Hooked(x, y, workers=3, delay=0.002), epochs=3, steps_per_epoch=3, verbose=0)
    assert [e for e, _ in events] == ["begin", "end"] * 3
    assert all(count == 0 for e, count in events if e == "end")


def test_a_pydataset_pass_that_ends_mid_epoch_ends_the_epoch_and_the_next_starts_a_new_pass(data):
    x, y, _ = data
    model, counter = make_model(), BatchCounter()
    with pytest.warns(UserWarning, match=r"no batch left in this pass \(6 batches\) after 2 of the 4"):
        model.fit(Batches(x, y), steps_per_epoch=4, epochs=3, shuffle=False, callbacks=[counter], verbose=0)
    assert counter.counts == [4, 2, 4]  # as Keras
    order = np.r_[0:N, 0:4 * BATCH]
    reference = make_model()
    reference.fit(x[order], y[order], batch_size=BATCH, shuffle=False, verbose=0)
    assert same_weights(model, reference)


# ---- errors and clean shutdown ---------------------------------------------------------------------------
@pytest.mark.parametrize("options", [dict(workers=0), dict(workers=2), dict(workers=2, use_multiprocessing=True)],
                         ids=["inline", "threads", "processes"])
def test_an_error_in_getitem_reaches_the_caller_and_no_worker_is_left(data, options):
    x, y, _ = data

    class Broken(Batches):
        def __getitem__(self, index):
            if index == 3:
                raise RuntimeError(f"cannot read batch {index}")
            return super().__getitem__(index)

    model = make_model()
    before = model.get_weights()
    with pytest.raises(RuntimeError, match="cannot read batch 3") as info:
        model.fit(Broken(x, y, **options), epochs=2, shuffle=False, verbose=0)
    if options.get("use_multiprocessing"):
        assert "__getitem__" in str(info.value.__cause__)  # the worker's traceback
    else:
        assert info.traceback[-1].name == "__getitem__"
    assert not all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # 3 batches trained
    assert no_workers_left()

    class Interrupted(Batches):
        def __getitem__(self, index):
            if index == 2:
                raise KeyboardInterrupt
            return super().__getitem__(index)

    with pytest.raises(KeyboardInterrupt):
        model.predict(Interrupted(x, **options))
    assert no_workers_left()


def _bad(kind, x, y):
    yield x[:BATCH], y[:BATCH]
    if kind == "features":
        yield x[:BATCH, :4], y[:BATCH]
    elif kind == "lengths":
        yield x[:BATCH], y[:BATCH - 1]
    elif kind == "text":
        yield np.array(["a"] * BATCH), y[:BATCH]
    elif kind == "tuple":
        yield x[:BATCH], y[:BATCH], None, None
    elif kind == "no targets":
        yield (x[:BATCH],)


@pytest.mark.parametrize("kind, error, message", [
    ("features", ValueError, r"\(epoch 1, batch 1 of the generator 'x'\): 'x' has per-sample shape \(4,\) but the "
                             r"model expects \(6,\)"),
    ("lengths", ValueError, r"batch 1 of the generator 'x'\): 'x' has 16 samples but 'y' has 15"),
    ("text", TypeError, r"batch 1 of the generator 'x'\): 'x' must be numeric"),
    ("tuple", ValueError, r"batch 1 of the generator 'x'\): a batch must be \(x, y\) or \(x, y, sample_weight\), "
                          "got a tuple of 4 elements"),
    ("no targets", ValueError, r"batch 1 of the generator 'x'\): the batch has no targets"),
])
def test_a_bad_batch_gets_the_array_error_naming_the_batch(data, kind, error, message):
    x, y, _ = data
    with pytest.raises(error, match=message):
        make_model().fit(_bad(kind, x, y), verbose=0)


def test_arguments_that_do_not_go_with_a_generator_are_refused(data):
    x, y, w = data
    model = make_model()
    with pytest.raises(ValueError, match="do not specify 'batch_size' when 'x' is a generator"):
        model.fit(batches(x, y), batch_size=BATCH)
    with pytest.raises(ValueError, match="'x' is a PyDataset, so 'y' must not be given"):
        model.fit(Batches(x, y), y)
    with pytest.raises(ValueError, match="'sample_weight' must not be given"):
        model.evaluate(batches(x, y), sample_weight=w)
    with pytest.raises(ValueError, match="'validation_split' needs array data"):
        model.fit(batches(x, y), validation_split=0.2)
    with pytest.raises(ValueError, match="'steps_per_epoch' must be a positive int"):
        model.fit(batches(x, y), steps_per_epoch=0)
    with pytest.raises(ValueError, match="the generator 'x' yielded no batch"):
        model.fit(iter([]))
    with pytest.raises(ValueError, match="do not specify 'validation_batch_size'"):
        model.fit(x, y, validation_data=batches(x, y), validation_batch_size=8, verbose=0)
    # the old message for a generator is gone: it is read, not turned into an object array
    assert model.fit(batches(x, y), verbose=0).epoch == [0]


# ---- the rest of fit --------------------------------------------------------------------------------------
def test_an_unbuilt_model_is_built_from_the_first_batch(data):
    x, y, _ = data
    reference = make_model(build=False)
    reference.fit(x, y, batch_size=BATCH, shuffle=False, verbose=0)
    model = make_model(build=False)
    assert not model.built
    model.fit(batches(x, y), verbose=0)
    assert model.input_shape == (None, FEATURES)
    assert same_weights(model, reference)


def test_class_weight_applies_to_each_batch(data):
    x, y, _ = data
    weights = {0: 0.5, 1: 2.0, 2: 1.0}
    reference = make_model()
    reference.fit(x, y, class_weight=weights, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    model = make_model()
    model.fit(Batches(x, y), class_weight=weights, epochs=2, shuffle=False, verbose=0)
    assert same_weights(model, reference)


def test_validation_data_as_pydataset_or_generator_with_validation_steps(data):
    x, y, _ = data
    xv, yv = x[:48], y[:48]
    reference = make_model()
    expected = reference.fit(x, y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0,
                             validation_data=(xv[:2 * BATCH], yv[:2 * BATCH]))
    model = make_model()
    history = model.fit(x, y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0,
                        validation_data=Batches(xv, yv), validation_steps=2)
    assert history.history == expected.history  # the first 2 batches every epoch
    model = make_model()
    endless = itertools.cycle(list(batches(xv[:2 * BATCH], yv[:2 * BATCH])))
    history = model.fit(batches(x, y), epochs=1, verbose=0, validation_data=endless, validation_steps=2)
    assert history.history["val_loss"] == expected.history["val_loss"][:1]


def test_an_exhausted_validation_generator_stops_validation_with_a_warning(data):
    x, y, _ = data
    reference = make_model()
    expected = reference.fit(x, y, batch_size=BATCH, shuffle=False, validation_data=(x[:32], y[:32]), verbose=0)
    model = make_model()
    with pytest.warns(UserWarning, match="the generator 'validation_data' ran out of data; no validation from now on"):
        history = model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, validation_data=batches(x[:32], y[:32]),
                            verbose=0)
    assert history.history["val_loss"] == expected.history["val_loss"]  # the first epoch's only
    assert len(history.history["loss"]) == 2


def test_evaluate_and_predict_on_generators_equal_the_arrays(data):
    x, y, w = data
    model = make_model()
    model.fit(x, y, batch_size=BATCH, verbose=0)
    assert model.evaluate(batches(x, y, w), verbose=0) == model.evaluate(x, y, sample_weight=w, batch_size=BATCH,
                                                                         verbose=0)
    assert model.evaluate(batches(x, y), steps=2, verbose=0) == model.evaluate(x, y, batch_size=BATCH, steps=2,
                                                                               verbose=0)
    expected = model.predict(x, batch_size=BATCH)
    for form in (lambda b: b[0], lambda b: (b[0],), lambda b: (b[0], b[1])):  # x, (x,), (x, y)
        np.testing.assert_array_equal(model.predict(form(b) for b in batches(x, y)), expected)
    np.testing.assert_array_equal(model.predict(batches(x), steps=2), expected[:2 * BATCH])


def test_multi_input_batches_as_dicts_and_lists(data):
    x, y, _ = data
    a, b = x[:, :4], x[:, 4:]

    def make():
        keras.utils.set_random_seed(5)
        ia, ib = keras.Input((4,), name="a"), keras.Input((2,), name="b")
        merged = keras.layers.Concatenate()([ia, ib])
        model = keras.Model([ia, ib], keras.layers.Dense(CLASSES, activation="softmax")(merged))
        model.compile("adam", "sparse_categorical_crossentropy")
        return model

    reference = make()
    reference.fit([a, b], y, batch_size=BATCH, shuffle=False, verbose=0)
    model = make()
    model.fit((({"a": a[s:s + BATCH], "b": b[s:s + BATCH]}, y[s:s + BATCH]) for s in range(0, N, BATCH)), verbose=0)
    assert same_weights(model, reference)
    np.testing.assert_array_equal(model.predict(([a[s:s + BATCH], b[s:s + BATCH]],) for s in range(0, N, BATCH)),
                                  reference.predict([a, b], batch_size=BATCH))


def test_progress_bar_counts_without_a_total_until_the_size_is_known(data, capsys):
    x, y, _ = data

    class NoLength:  # re-iterable, of unknown length
        def __iter__(self):
            return batches(x, y)

    make_model().fit(NoLength(), epochs=2, verbose=1)
    lines = [line for line in capsys.readouterr().out.splitlines() if "loss" in line]
    assert lines[0].split()[0] == "6/Unknown" and lines[1].split()[0] == "6/6"


def test_memory_stays_flat_over_100_epochs(data):
    x, y, _ = data

    def endless():
        while True:
            yield from batches(x[:32], y[:32])

    sizes = {}

    class Probe(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch in (9, 99):
                sizes[epoch] = tracemalloc.get_traced_memory()[0]

    for source, kwargs in ((endless(), dict(steps_per_epoch=2)), (Batches(x[:32], y[:32], workers=1), {})):
        tracemalloc.start()
        try:
            make_model().fit(source, epochs=100, verbose=0, callbacks=[Probe()], **kwargs)
        finally:
            tracemalloc.stop()
        assert sizes[99] - sizes[9] < 1_000_000


def test_pydataset_api_matches_keras():
    class Plain(keras.utils.PyDataset):
        def __len__(self):
            return 2

        def __getitem__(self, index):
            return np.full((1, 1), index), np.zeros(1)

    dataset = Plain(workers=4, use_multiprocessing=True, max_queue_size=3)
    assert (dataset.workers, dataset.use_multiprocessing, dataset.max_queue_size) == (4, True, 3)
    assert Plain().workers == 1 and Plain().max_queue_size == 10 and not Plain().use_multiprocessing
    assert dataset.num_batches == 2 and [b[0][0, 0] for b in dataset] == [0, 1]
    assert keras.utils.Sequence is keras.utils.PyDataset

    class NoSuper(keras.utils.PyDataset):
        def __init__(self):
            pass

        def __len__(self):
            return 1

    with pytest.warns(UserWarning, match="should call super"):
        assert NoSuper().workers == 1
    with pytest.raises(ValueError, match="'workers' must be an int >= 0"):
        make_model().fit(Plain(workers=-1))
    assert keras.utils.unpack_x_y_sample_weight((1, 2)) == (1, 2, None)
    assert keras.utils.unpack_x_y_sample_weight([1]) == (1, None, None)
    assert keras.utils.pack_x_y_sample_weight(1, 2) == (1, 2)
    with pytest.raises(ValueError, match="tuple of 4 elements"):
        keras.utils.unpack_x_y_sample_weight((1, 2, 3, 4))
