"""Magnitude pruning (fastnn.pruning): masks against NumPy references, schedules against tfmot's
formula, the optimizer keeping pruned weights and their state at zero, training on the digits,
saving (stripped and pruned), and every bad argument."""

import os
import warnings
import zipfile

import numpy as np
import pytest

import fastnn
from fastnn import layers, pruning
from fastnn.pruning import masks


@pytest.fixture(autouse=True)
def _seed():
    fastnn.utils.set_random_seed(0)


def _digits():
    (x, y), (xt, yt) = fastnn.datasets.digits.load_data()
    return (x.reshape(-1, 64).astype("float32") / 16, y), (xt.reshape(-1, 64).astype("float32") / 16, yt)


def _mlp(hidden=64):
    return fastnn.Sequential([layers.Dense(hidden, activation="relu", input_shape=(64,)),
                              layers.Dense(10, activation="softmax")])


def _compile(model, optimizer="adam"):
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


# ---- masks against NumPy references ------------------------------------------------------------------------
def _top_k_reference(w, sparsity):
    flat = np.abs(w).ravel()
    k = max(int(np.round(flat.size * (1 - sparsity))), 1)
    mask = np.zeros(flat.size)
    mask[np.argsort(-flat, kind="stable")[:k]] = 1
    return mask.reshape(w.shape)


@pytest.mark.parametrize("shape", [(1,), (7,), (13, 5), (64, 10), (3, 3, 4, 8)])
@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.8, 0.99])
def test_magnitude_mask_keeps_the_k_largest_magnitudes(shape, sparsity):
    w = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    mask = masks.magnitude_mask(w, sparsity)
    assert mask.shape == w.shape and mask.dtype == np.float32
    np.testing.assert_array_equal(mask, _top_k_reference(w, sparsity))
    assert mask.sum() == max(int(np.round(w.size * (1 - sparsity))), 1)  # tfmot's count, exactly


def _block_reference(w, sparsity, block, pooling):
    """Loops over the blocks of w seen as a matrix; partial edge blocks pool their real weights."""
    matrix = np.abs(w.reshape(-1, w.shape[-1]))
    bh, bw = block
    starts = [(r, c) for r in range(0, matrix.shape[0], bh) for c in range(0, matrix.shape[1], bw)]
    pooled = np.array([(np.mean if pooling == "AVG" else np.max)(matrix[r:r + bh, c:c + bw]) for r, c in starts])
    keep = _top_k_reference(pooled, sparsity)
    mask = np.zeros_like(matrix)
    for (r, c), kept in zip(starts, keep):
        mask[r:r + bh, c:c + bw] = kept
    return mask.reshape(w.shape)


@pytest.mark.parametrize("shape", [(16, 8), (10, 7), (9, 13), (3, 3, 2, 6)])
@pytest.mark.parametrize("block", [(1, 4), (4, 1), (2, 3), (1, 1)])
@pytest.mark.parametrize("pooling", ["AVG", "MAX"])
def test_block_mask_pools_each_block_and_keeps_whole_blocks(shape, block, pooling):
    w = np.random.default_rng(2).normal(size=shape)
    for sparsity in (0.25, 0.6):
        np.testing.assert_array_equal(masks.block_mask(w, sparsity, block, pooling),
                                      _block_reference(w, sparsity, block, pooling))


def _m_by_n_reference(w, m, n, axis):
    """For every line along `axis`, in each group of n consecutive weights, zero the m smallest
    (a partial last group keeps up to n - m)."""
    moved = np.moveaxis(np.abs(w), axis, -1)
    mask = np.ones_like(moved)
    for index in np.ndindex(moved.shape[:-1]):
        line = moved[index]
        for start in range(0, line.size, n):
            group = line[start:start + n]
            drop = max(group.size - (n - m), 0)
            for j in np.argsort(group, kind="stable")[:drop]:
                mask[index + (start + j,)] = 0
    return np.moveaxis(mask, -1, axis)


@pytest.mark.parametrize("shape, axis", [((16, 5), 0), ((10, 3), 0), ((3, 3, 8, 4), 2), ((5, 6, 7), 1)])
@pytest.mark.parametrize("m_by_n", [(2, 4), (1, 4), (3, 8)])
def test_m_by_n_mask_zeroes_the_m_smallest_of_every_n_along_the_input_axis(shape, axis, m_by_n):
    w = np.random.default_rng(3).normal(size=shape).astype(np.float32)
    mask = masks.m_by_n_mask(w, m_by_n, axis)
    np.testing.assert_array_equal(mask, _m_by_n_reference(w, *m_by_n, axis))


# ---- schedules -------------------------------------------------------------------------------------------
def test_polynomial_decay_follows_tfmots_formula_at_every_step():
    for initial, final, begin, end, power, frequency in [(0.0, 0.8, 0, 1000, 3, 100), (0.2, 0.9, 50, 170, 2, 7),
                                                         (0.5, 0.5, 3, 4, 1.5, 1)]:
        schedule = pruning.PolynomialDecay(initial, final, begin, end, power=power, frequency=frequency)
        for step in range(0, end + 3 * frequency + 5):
            p = min(1.0, max(0.0, (step - begin) / (end - begin)))
            expected = final + (initial - final) * (1 - p) ** power
            expected_prune = begin <= step <= end and (step - begin) % frequency == 0
            should_prune, sparsity = schedule(step)
            assert should_prune == expected_prune and sparsity == pytest.approx(expected, abs=1e-12)


def test_constant_sparsity_prunes_from_begin_step_every_frequency_steps_up_to_end_step():
    schedule = pruning.ConstantSparsity(0.6, begin_step=10, end_step=50, frequency=20)
    steps = [s for s in range(100) if schedule(s)[0]]
    assert steps == [10, 30, 50] and all(schedule(s)[1] == 0.6 for s in range(100))
    forever = pruning.ConstantSparsity(0.3, begin_step=0, frequency=25)  # end_step=-1: no end
    assert [s for s in range(200) if forever(s)[0]] == list(range(0, 200, 25))
    assert forever.end_step == -1


def test_schedules_serialize_and_come_back():
    for schedule in (pruning.ConstantSparsity(0.5, 0), pruning.PolynomialDecay(0.1, 0.9, 5, 500, power=2, frequency=7)):
        assert type(schedule).from_config(schedule.get_config()) == schedule
        description = fastnn.saving.serialize_keras_object(schedule)
        assert fastnn.saving.deserialize_keras_object(description, kind="pruning schedule") == schedule
    assert pruning.ConstantSparsity(0.5, 0).get_config() == {"target_sparsity": 0.5, "begin_step": 0, "end_step": -1,
                                                            "frequency": 100}  # tfmot's defaults


# ---- the optimizer keeps pruned weights and their state at zero ------------------------------------------------
@pytest.mark.parametrize("optimizer", [lambda: fastnn.optimizers.Adam(use_ema=True, ema_momentum=0.5),
                                       lambda: fastnn.optimizers.SGD(0.1, momentum=0.9, weight_decay=0.01),
                                       lambda: fastnn.optimizers.RMSprop(clipnorm=1.0)])
def test_pruned_weights_and_all_their_optimizer_slots_stay_exactly_zero(optimizer):
    (x, y), _ = _digits()
    x, y = x[:256], y[:256]
    model = _compile(pruning.prune_low_magnitude(_mlp(), pruning.ConstantSparsity(0.7, begin_step=0, frequency=1000)),
                     optimizer())
    callback = pruning.UpdatePruningStep()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[callback])  # masks at step 0, then 7 steps
    for epoch in range(2):
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[callback])
        for layer in model.layers:
            (kernel, mask, _), = layer.pruning_vars
            pruned = mask.value == 0
            assert pruned.sum() == kernel.value.size - round(0.3 * kernel.value.size)
            assert np.all(kernel.value[pruned] == 0) and not np.signbit(kernel.value[pruned]).any()
            assert np.all(kernel.value[~pruned] != 0)
            index = model.optimizer._variables.index(kernel)
            for name, slot in model.optimizer.variables_state(index).items():
                assert np.all(slot[pruned] == 0), name
            assert layer.layer.bias.value.any()  # biases are not pruned


def test_apply_gradients_in_a_loop_of_ones_own_masks_too():
    model = pruning.prune_low_magnitude(_mlp(), pruning.ConstantSparsity(0.5, begin_step=0))
    callback = pruning.UpdatePruningStep()
    callback.set_model(model)
    callback.on_train_begin()
    callback.on_train_batch_begin(0)  # step 0: the masks
    optimizer = fastnn.optimizers.Adam(0.01)
    variables = model.trainable_weights
    for _ in range(3):
        optimizer.apply_gradients(zip([np.ones(v.shape, np.float32) for v in variables], variables))
    kernel = model.layers[0].layer.kernel
    assert np.count_nonzero(kernel.value) == kernel.value.size // 2
    assert np.all(optimizer.variables_state(variables.index(kernel))["momentum"][kernel.value == 0] == 0)


# ---- training on the digits ----------------------------------------------------------------------------------
def test_pruning_an_mlp_to_80_percent_keeps_its_accuracy_on_the_digits(tmp_path):
    (x, y), (xt, yt) = _digits()
    dense = _compile(_mlp(128))
    dense.fit(x, y, batch_size=32, epochs=15, verbose=0)
    dense_accuracy = dense.evaluate(xt, yt, verbose=0)[1]
    assert dense_accuracy > 0.93
    dense.save_weights(tmp_path / "dense.weights.fastnn")  # (pruning shares these weights: save them first)
    dense_size = os.path.getsize(tmp_path / "dense.weights.fastnn")
    steps_per_epoch = -(-len(x) // 32)  # 45
    schedule = pruning.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=4 * steps_per_epoch, frequency=15)
    pruned = _compile(pruning.prune_low_magnitude(dense, schedule), fastnn.optimizers.Adam(1e-3))
    assert pruned.layers[-1].output_activation() == "softmax"  # the output still fuses with its loss
    pruned.fit(x, y, batch_size=32, epochs=6, verbose=0, callbacks=[pruning.UpdatePruningStep()])
    pruned_accuracy = pruned.evaluate(xt, yt, verbose=0)[1]
    assert pruned_accuracy >= dense_accuracy - 0.03
    for layer in pruned.layers:
        kernel = layer.layer.kernel.value
        assert abs(np.count_nonzero(kernel == 0) - 0.8 * kernel.size) <= 1
        assert int(layer.pruning_step.value) == 6 * steps_per_epoch - 1
    report = pruning.get_model_sparsity(pruned)
    assert report["prunable"]["sparsity"] == pytest.approx(0.8, abs=1e-3)

    final = pruning.strip_pruning(pruned)
    assert [type(layer) for layer in final.layers] == [layers.Dense, layers.Dense]
    np.testing.assert_array_equal(final.predict(xt, verbose=0), pruned.predict(xt, verbose=0))
    final.save(tmp_path / "final.fastnn")
    final.save_weights(tmp_path / "final.weights.fastnn")
    loaded = fastnn.models.load_model(tmp_path / "final.fastnn")
    assert [type(layer) for layer in loaded.layers] == [layers.Dense, layers.Dense]
    for a, b in zip(loaded.get_weights(), final.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert pruning.get_model_sparsity(loaded)["prunable"] == report["prunable"]
    # 80 % zeros in the kernels: the weights file shrinks to under half (the arrays alone: about 27 %)
    assert os.path.getsize(tmp_path / "final.weights.fastnn") < dense_size / 2
    assert os.path.getsize(tmp_path / "final.fastnn") < dense_size / 2  # the whole model, its config included
    with zipfile.ZipFile(tmp_path / "dense.weights.fastnn") as archive:  # dense arrays: stored, as before
        assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_STORED}
    with zipfile.ZipFile(tmp_path / "final.weights.fastnn") as archive:  # the pruned kernels: deflated
        kinds = {i.filename: i.compress_type for i in archive.infolist()}
        assert kinds["weights/0.npy"] == kinds["weights/2.npy"] == zipfile.ZIP_DEFLATED
    # the stripped model is an ordinary one: it trains without the callback, and saves again
    _compile(loaded).fit(x[:64], y[:64], epochs=1, verbose=0)


def test_a_pruned_model_saves_loads_and_goes_on_pruning(tmp_path):
    (x, y), _ = _digits()
    x, y = x[:320], y[:320]  # 10 steps an epoch
    schedule = pruning.PolynomialDecay(0.0, 0.6, begin_step=0, end_step=20, frequency=5)
    model = _compile(pruning.prune_low_magnitude(_mlp(), schedule))
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[pruning.UpdatePruningStep()])
    model.save(tmp_path / "pruned.fastnn")
    loaded = fastnn.models.load_model(tmp_path / "pruned.fastnn")
    assert [type(layer) for layer in loaded.layers] == [pruning.PruneLowMagnitude] * 2
    assert loaded.layers[0].pruning_schedule == schedule and loaded.optimizer.iterations == 10
    for a, b in zip(loaded.get_weights(), model.get_weights()):  # masks and steps included
        np.testing.assert_array_equal(a, b)
    assert int(loaded.layers[0].pruning_step.value) == 9
    with pytest.raises(RuntimeError, match="UpdatePruningStep"):
        loaded.fit(x, y, epochs=1, verbose=0)
    loaded.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[pruning.UpdatePruningStep()])
    for layer in loaded.layers:
        kernel = layer.layer.kernel
        assert int(layer.pruning_step.value) == 29
        assert abs(np.count_nonzero(kernel.value == 0) - 0.6 * kernel.value.size) <= 1  # the schedule's end, step 20
        index = loaded.optimizer._variables.index(kernel)
        assert all(np.all(s[kernel.value == 0] == 0) for s in loaded.optimizer.variables_state(index).values())


def test_fit_without_the_callback_is_a_clear_error_and_changes_nothing():
    (x, y), _ = _digits()
    model = _compile(pruning.prune_low_magnitude(_mlp()))
    before = model.get_weights()
    with pytest.raises(RuntimeError, match=r"UpdatePruningStep.*callbacks=\[fastnn.pruning.UpdatePruningStep\(\)\]"):
        model.fit(x[:64], y[:64], epochs=1, verbose=0)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    model.predict(x[:4], verbose=0)  # inference needs no callback
    model.evaluate(x[:64], y[:64], verbose=0)


def test_at_sparsity_zero_a_pruned_model_trains_exactly_as_the_dense_one():
    (x, y), _ = _digits()
    x, y = x[:256], y[:256]
    fastnn.utils.set_random_seed(5)
    dense = _compile(_mlp())
    fastnn.utils.set_random_seed(5)
    twin = _compile(pruning.prune_low_magnitude(_mlp(), pruning.ConstantSparsity(0.0, begin_step=0, frequency=3)))
    fastnn.utils.set_random_seed(6)
    dense.fit(x, y, batch_size=32, epochs=2, verbose=0)
    fastnn.utils.set_random_seed(6)
    twin.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[pruning.UpdatePruningStep()])
    for a, b in zip(dense.get_weights(), [w for layer in twin.layers for w in layer.layer.get_weights()]):
        np.testing.assert_array_equal(a, b)


# ---- other layers and structures ---------------------------------------------------------------------------
def test_a_functional_model_prunes_embeddings_recurrent_and_dense_kernels_and_warns_once_about_the_rest():
    tokens = fastnn.Input((6,), dtype="int32")
    h = layers.Embedding(20, 8)(tokens)
    h = layers.MultiHeadAttention(num_heads=2, key_dim=4)(h, h)
    h = layers.LayerNormalization()(h)
    h = layers.LSTM(8)(h)
    h = fastnn.ops.multiply(h, 2.0)
    outputs = layers.Dense(1, activation="sigmoid")(h)
    model = fastnn.Model(tokens, outputs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pruned = pruning.prune_low_magnitude(model, pruning.ConstantSparsity(0.5, begin_step=0))
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(messages) == 1 and "MultiHeadAttention" in messages[0] and "LayerNormalization" not in messages[0]
    wrapped = {type(layer.layer).__name__: [w.name.rsplit("/", 1)[-1] for w, _, _ in layer.pruning_vars]
               for layer in pruned.layers if isinstance(layer, pruning.PruneLowMagnitude)}
    assert wrapped == {"Embedding": ["embeddings"], "LSTM": ["kernel", "recurrent_kernel"], "Dense": ["kernel"]}
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 20, (64, 6)), rng.integers(0, 2, (64, 1)).astype("float32")
    pruned.compile(optimizer="adam", loss="binary_crossentropy")
    pruned.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[pruning.UpdatePruningStep()])
    rows = pruning.get_model_sparsity(pruned)["weights"]
    for row in rows:
        if row["masked"]:
            assert row["zeros"] == row["size"] - round(0.5 * row["size"])
    assert {r["weight"] for r in rows if r["masked"]} == {"embeddings", "kernel", "recurrent_kernel"}
    stripped = pruning.strip_pruning(pruned)
    np.testing.assert_allclose(stripped.predict(x, verbose=0), pruned.predict(x, verbose=0), rtol=0, atol=0)


def test_conv_kernels_prune_in_2_by_4_groups_along_the_input_channels_and_in_blocks():
    rng = np.random.default_rng(0)
    x, y = rng.random((32, 8, 8, 4)).astype("float32"), rng.integers(0, 3, 32)

    def model():
        return fastnn.Sequential([layers.Conv2D(8, 3, activation="relu", input_shape=(8, 8, 4)),
                                  layers.Conv2D(8, 3), layers.Flatten(), layers.Dense(3, activation="softmax")])

    pruned = _compile(pruning.prune_low_magnitude(model(), sparsity_m_by_n=(2, 4)))
    pruned.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[pruning.UpdatePruningStep()])
    for layer in pruned.layers:
        if isinstance(layer, pruning.PruneLowMagnitude):
            kernel = layer.layer.kernel.value
            axis = kernel.ndim - 2 if kernel.ndim == 4 else 0
            groups = np.moveaxis(kernel, axis, -1).reshape(-1, 4)  # 4 and 8 inputs: whole groups of 4
            assert np.all(np.count_nonzero(groups, axis=1) == 2)
    blocks = _compile(pruning.prune_low_magnitude(model(), pruning.ConstantSparsity(0.5, 0), block_size=(1, 4),
                                                  block_pooling_type="MAX"))
    blocks.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[pruning.UpdatePruningStep()])
    kernel = blocks.layers[1].layer.kernel.value.reshape(-1, 8).reshape(-1, 2, 4)
    zero_blocks = np.all(kernel == 0, axis=-1)
    assert np.all(zero_blocks | np.all(kernel != 0, axis=-1)) and zero_blocks.mean() == 0.5


def test_a_custom_prunable_layer_and_pruned_layers_inside_a_subclassed_model():
    class Linear(layers.Layer, pruning.PrunableLayer):
        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(input_shape[-1], 10), name="kernel")
            self.offset = self.add_weight(shape=(10,), initializer="zeros", name="offset")

        def call(self, x):
            return fastnn.ops.matmul(x, self.kernel) + self.offset

        def get_prunable_weights(self):
            return [self.kernel]

    class Net(fastnn.Model):
        def __init__(self):
            super().__init__()
            self.hidden = pruning.prune_low_magnitude(layers.Dense(32, activation="relu"),
                                                      pruning.ConstantSparsity(0.75, begin_step=0))
            self.out = pruning.prune_low_magnitude(Linear(), pruning.ConstantSparsity(0.5, begin_step=0))

        def call(self, x):
            return self.out(self.hidden(x))

    (x, y), _ = _digits()
    net = Net()
    net.compile(optimizer="adam", loss=fastnn.losses.SparseCategoricalCrossentropy(from_logits=True))
    net.fit(x[:128], y[:128], batch_size=32, epochs=1, verbose=0, callbacks=[pruning.UpdatePruningStep()])
    assert np.count_nonzero(net.hidden.layer.kernel.value) == 64 * 32 // 4
    assert np.count_nonzero(net.out.layer.kernel.value) == 32 * 10 // 2
    with pytest.raises(ValueError, match="subclassed"):
        pruning.prune_low_magnitude(net)
    with pytest.raises(ValueError, match="subclassed"):
        pruning.strip_pruning(net)


def test_the_sparsity_report_counts_zeros_per_weight_and_prints_a_table():
    model = _mlp(8)
    model.layers[0].kernel.value[:2] = 0  # 16 of 512 zeros
    lines = []
    report = pruning.get_model_sparsity(model, print_fn=lines.append)
    first = report["weights"][0]
    assert (first["layer"], first["weight"], first["shape"], first["zeros"], first["prunable"], first["masked"]) == \
        (model.layers[0].name, "kernel", (64, 8), 16, True, False)
    assert report["weights"][1]["weight"] == "bias" and not report["weights"][1]["prunable"]
    total = sum(w.size for w in model.get_weights())
    assert report["total"]["size"] == total and report["total"]["zeros"] == 16 + 8 + 10  # the zero biases too
    assert report["prunable"] == {"size": 512 + 80, "zeros": 16, "sparsity": 16 / 592}
    assert any("kernel" in line and "16/512" in line for line in lines) and "all weights" in lines[-1]


# ---- bad arguments ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, error, name", [
    (lambda: pruning.ConstantSparsity(1.0, 0), ValueError, "target_sparsity"),
    (lambda: pruning.ConstantSparsity(-0.1, 0), ValueError, "target_sparsity"),
    (lambda: pruning.ConstantSparsity("0.5", 0), ValueError, "target_sparsity"),
    (lambda: pruning.ConstantSparsity(0.5, -1), ValueError, "begin_step"),
    (lambda: pruning.ConstantSparsity(0.5, 1.5), ValueError, "begin_step"),
    (lambda: pruning.ConstantSparsity(0.5, 10, end_step=5), ValueError, "end_step"),
    (lambda: pruning.ConstantSparsity(0.5, 0, end_step=-2), ValueError, "end_step"),
    (lambda: pruning.ConstantSparsity(0.5, 0, frequency=0), ValueError, "frequency"),
    (lambda: pruning.ConstantSparsity(0.5, 0, frequency=True), ValueError, "frequency"),
    (lambda: pruning.PolynomialDecay(0.0, 1.2, 0, 10), ValueError, "final_sparsity"),
    (lambda: pruning.PolynomialDecay(float("nan"), 0.5, 0, 10), ValueError, "initial_sparsity"),
    (lambda: pruning.PolynomialDecay(0.0, 0.5, 0, -1), ValueError, "end_step"),
    (lambda: pruning.PolynomialDecay(0.0, 0.5, 5, 5), ValueError, "end_step"),
    (lambda: pruning.PolynomialDecay(0.0, 0.5, 0, 10, power=float("inf")), ValueError, "power"),
    (lambda: pruning.PolynomialDecay(0.0, 0.5, 0, 10, frequency=-3), ValueError, "frequency"),
    (lambda: pruning.prune_low_magnitude(_mlp(), pruning_schedule=0.5), TypeError, "pruning_schedule"),
    (lambda: pruning.prune_low_magnitude(_mlp(), block_size=(0, 1)), ValueError, "block_size"),
    (lambda: pruning.prune_low_magnitude(_mlp(), block_size=(1, 4, 1)), ValueError, "block_size"),
    (lambda: pruning.prune_low_magnitude(_mlp(), block_size=4), ValueError, "block_size"),
    (lambda: pruning.prune_low_magnitude(_mlp(), block_size=(1.0, 4)), ValueError, "block_size"),
    (lambda: pruning.prune_low_magnitude(_mlp(), block_pooling_type="MEAN"), ValueError, "block_pooling_type"),
    (lambda: pruning.prune_low_magnitude(_mlp(), sparsity_m_by_n=(4, 2)), ValueError, "sparsity_m_by_n"),
    (lambda: pruning.prune_low_magnitude(_mlp(), sparsity_m_by_n=(0, 4)), ValueError, "sparsity_m_by_n"),
    (lambda: pruning.prune_low_magnitude(_mlp(), sparsity_m_by_n=(2,)), ValueError, "sparsity_m_by_n"),
    (lambda: pruning.prune_low_magnitude(_mlp(), sparsity_m_by_n=(2.0, 4)), ValueError, "sparsity_m_by_n"),
    (lambda: pruning.prune_low_magnitude(_mlp(), sparsity_m_by_n="2:4"), ValueError, "sparsity_m_by_n"),
    (lambda: pruning.prune_low_magnitude(_mlp(), block_size=(1, 4), sparsity_m_by_n=(2, 4)), ValueError, "not both"),
    (lambda: pruning.prune_low_magnitude(layers.Dropout(0.5)), ValueError, "Dropout"),
    (lambda: pruning.prune_low_magnitude(layers.MultiHeadAttention(2, 4)), ValueError, "MultiHeadAttention"),
    (lambda: pruning.prune_low_magnitude(layers.LSTM(4, stateful=True)), ValueError, "LSTM"),
    (lambda: pruning.prune_low_magnitude("dense"), TypeError, "to_prune"),
    (lambda: pruning.PruneLowMagnitude(np.zeros(3)), TypeError, "layer"),
    (lambda: pruning.strip_pruning(3), TypeError, "model"),
    (lambda: pruning.get_model_sparsity([1]), TypeError, "model"),
    (lambda: pruning.prune_low_magnitude(fastnn.Sequential([layers.Dense(3, input_shape=(2,))]),
                                         sparsity_m_by_n=(2, 4)), ValueError, "sparsity_m_by_n"),
])
def test_every_bad_argument_raises_an_error_that_names_it(make, error, name):
    with pytest.raises(error, match=name):
        make()


def test_list_and_single_layer_forms():
    dense = layers.Dense(4)
    wrapped = pruning.prune_low_magnitude(dense)
    assert isinstance(wrapped, pruning.PruneLowMagnitude) and wrapped.name == f"prune_low_magnitude_{dense.name}"
    assert pruning.prune_low_magnitude(wrapped) is wrapped and pruning.strip_pruning(wrapped) is dense
    both = pruning.prune_low_magnitude([layers.Dense(2), layers.Conv1D(2, 3)])
    assert [type(layer.layer) for layer in both] == [layers.Dense, layers.Conv1D]
    model = fastnn.Sequential([pruning.prune_low_magnitude(layers.Dense(4, input_shape=(3,))), layers.Dense(2)])
    assert model.built and model.input_shape == (None, 3)
    with pruning.prune_scope():
        pass


def test_a_prunable_layer_without_get_prunable_weights_is_refused_where_it_is_defined():
    with pytest.raises(TypeError, match="must implement get_prunable_weights"):
        class Incomplete(layers.Layer, pruning.PrunableLayer):
            pass
