"""Convolutional networks train to known accuracies: the CNN issue's Keras model on real
MNIST digits (../shared/data/mnist, skipped when absent) and a small CNN on the bundled digits."""

import pathlib

import numpy as np
import pytest

import fastnn as keras
from fastnn.datasets.mnist import read_idx

MNIST = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def keras_mnist_cnn():
    """The model from the issue, as written for Keras."""
    return keras.Sequential([
        keras.layers.Conv2D(32, (3, 3), activation='relu', input_shape=(28, 28, 1)),
        keras.layers.MaxPooling2D((2, 2)),
        keras.layers.Conv2D(64, (3, 3), padding='same', activation='relu'),
        keras.layers.MaxPooling2D((2, 2)),
        keras.layers.Dropout(0.2),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation='relu'),
        keras.layers.Dense(10, activation='softmax'),
    ])


@pytest.mark.skipif(not (MNIST / "t10k-images-idx3-ubyte.gz").exists(), reason="../shared/data/mnist is absent")
def test_keras_cnn_reaches_97_percent_on_mnist():
    images = read_idx(MNIST / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(MNIST / "t10k-labels-idx1-ubyte.gz")
    x = (images.astype("float32") / 255.0)[..., None]
    x_train, y_train, x_test, y_test = x[:8000], labels[:8000], x[8000:], labels[8000:]
    keras.utils.set_random_seed(0)
    model = keras_mnist_cnn()
    model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
    history = model.fit(x_train, y_train, epochs=5, batch_size=64, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    assert accuracy >= 0.97, f"test accuracy {accuracy:.4f}"
    # Independent check of evaluate(): NumPy argmax of predict().
    predicted = model.predict(x_test, verbose=0).argmax(axis=1)
    assert np.mean(predicted == y_test) == pytest.approx(accuracy, abs=1e-6)


def test_cnn_reaches_97_percent_on_the_digits():
    (x_train, y_train), (x_test, y_test) = keras.datasets.digits.load_data()
    x_train = (x_train.astype("float32") / 16.0)[..., None]
    x_test = (x_test.astype("float32") / 16.0)[..., None]
    keras.utils.set_random_seed(1)
    model = keras.Sequential([
        keras.layers.Input((8, 8, 1)),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=30, batch_size=32, verbose=0)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    assert accuracy >= 0.97, f"test accuracy {accuracy:.4f}"
