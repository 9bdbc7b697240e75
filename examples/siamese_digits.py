"""A Siamese network with the functional API: do two handwritten digits show the same number?

One encoder (a shared layer stack: the same weights for both images) embeds each image; the
cosine similarity of the two embeddings (``layers.Dot(normalize=True)``) feeds a logistic
output. Trained on pairs of the bundled 8×8 digits, half of them matching; evaluated on pairs
of held-out digits the encoder never saw.

Run: ``python examples/siamese_digits.py``.
"""

import numpy as np

import fastnn as keras
from fastnn import layers


def make_pairs(x, y, n, rng):
    """n pairs of images, half showing the same digit (label 1), half different ones (label 0)."""
    by_digit = [np.flatnonzero(y == d) for d in range(10)]
    first = rng.integers(0, len(x), n)
    same = rng.random(n) < 0.5
    second = np.empty(n, np.int64)
    for i, (a, s) in enumerate(zip(first, same)):
        digit = y[a] if s else rng.choice([d for d in range(10) if d != y[a]])
        second[i] = rng.choice(by_digit[digit])
    return x[first], x[second], same.astype(np.float32)


def build_model():
    encoder = keras.Sequential([layers.Dense(64, activation="relu"), layers.Dense(32)], name="encoder")
    left, right = keras.Input((64,), name="left"), keras.Input((64,), name="right")
    similarity = layers.Dot(axes=1, normalize=True)([encoder(left), encoder(right)])  # the shared encoder
    same = layers.Dense(1, activation="sigmoid", name="same")(similarity)
    return keras.Model([left, right], same)


def main(epochs=15, seed=0, verbose=0):
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    (x_train, y_train), (x_test, y_test) = keras.datasets.digits.load_data()
    x_train, x_test = x_train.reshape(-1, 64).astype("float32") / 16, x_test.reshape(-1, 64).astype("float32") / 16
    train = make_pairs(x_train, y_train, 8000, rng)
    test = make_pairs(x_test, y_test, 2000, rng)
    model = build_model()
    model.compile(keras.optimizers.Adam(0.002), "binary_crossentropy", metrics=["accuracy"])
    model.fit([train[0], train[1]], train[2], epochs=epochs, batch_size=64, verbose=verbose)
    _, accuracy = model.evaluate([test[0], test[1]], test[2], verbose=0)
    print(f"same-digit accuracy on held-out pairs: {accuracy:.3f} (chance: 0.5)")
    return accuracy


if __name__ == "__main__":
    main(verbose=2)
