"""Text classification with the Keras recurrent program, on sequences where order matters.

Each "review" is a variable-length list of token ids holding the words 1 ("not") and 2
("good") once each, among other words; its label says whether "not" comes before "good".
A model that only counts words cannot do better than chance (the script shows it with a
bag-of-embeddings baseline); a bidirectional LSTM reads the order. The sequences are
padded with ``pad_sequences`` and the padding is masked (``mask_zero=True``), as in Keras.

Run: python examples/text_classification.py
"""

import numpy as np

import fastnn as keras


def make_reviews(rng, n, vocab_size, max_words):
    """Lists of token ids in [1, vocab_size]; label 1 when token 1 comes before token 2."""
    reviews, labels = [], []
    for _ in range(n):
        length = int(rng.integers(5, max_words + 1))
        words = rng.integers(3, vocab_size + 1, size=length)
        i, j = rng.choice(length, 2, replace=False)
        words[i], words[j] = 1, 2
        reviews.append(words.tolist())
        labels.append(int(i < j))
    return reviews, np.array(labels)


def load_reviews(samples, vocab_size, max_words, seed):
    """((x_train, y_train), (x_test, y_test)): reviews padded with zeros at the front to
    max_words, 4/5 of them for training."""
    reviews, y = make_reviews(np.random.default_rng(seed), samples, vocab_size, max_words)
    x = keras.preprocessing.sequence.pad_sequences(reviews, maxlen=max_words)  # zeros first
    split = samples * 4 // 5
    return (x[:split], y[:split]), (x[split:], y[split:])


def bidirectional_lstm_accuracy(data, vocab_size, embedding_dim=32, epochs=4, verbose=2):
    """Trains the bidirectional LSTM on data = load_reviews(...); returns its test accuracy."""
    (x_train, y_train), (x_test, y_test) = data
    model = keras.Sequential([
        keras.layers.Embedding(vocab_size + 1, embedding_dim, input_length=x_train.shape[1], mask_zero=True),
        keras.layers.Bidirectional(keras.layers.LSTM(units=embedding_dim, dropout=0.2)),
        keras.layers.Dense(units=64, activation="relu"),
        keras.layers.Dropout(rate=0.2),
        keras.layers.Dense(units=1, activation="sigmoid"),
    ])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, validation_split=0.1, verbose=verbose)
    return model.evaluate(x_test, y_test, verbose=0)[1]


def bag_of_words_accuracy(data, vocab_size, embedding_dim=32, epochs=4):
    """Trains the bag-of-embeddings baseline (word order lost) on data; returns its test accuracy."""
    (x_train, y_train), (x_test, y_test) = data
    bag = keras.Sequential([
        keras.layers.Embedding(vocab_size + 1, embedding_dim, input_length=x_train.shape[1]),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(units=64, activation="relu"),
        keras.layers.Dense(units=1, activation="sigmoid"),
    ])
    bag.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    bag.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    return bag.evaluate(x_test, y_test, verbose=0)[1]


def main(samples=4000, vocab_size=200, max_words=40, embedding_dim=32, epochs=4, seed=0, verbose=2):
    keras.utils.set_random_seed(seed)
    data = load_reviews(samples, vocab_size, max_words, seed)
    accuracy = bidirectional_lstm_accuracy(data, vocab_size, embedding_dim, epochs, verbose)
    bag_accuracy = bag_of_words_accuracy(data, vocab_size, embedding_dim, epochs)
    print(f"bidirectional LSTM test accuracy: {accuracy:.3f}; bag of words: {bag_accuracy:.3f}")
    return accuracy, bag_accuracy


if __name__ == "__main__":
    main()
