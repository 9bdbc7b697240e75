"""Text classification with Transformer: Keras' example program, on reviews where word order decides.

The data are those of ``examples/text_classification.py``: each "review" is a variable-length
list of token ids holding the words 1 ("not") and 2 ("good") once each among other words, and
its label says whether "not" comes before "good". Counting words cannot tell (its bag-of-words
baseline stays at chance); a model has to read the order.

The model is that of Keras' example "Text classification with Transformer"
(keras.io/examples/nlp/text_classification_with_transformer), written the same way: a
``TokenAndPositionEmbedding`` layer (a token embedding plus a learned embedding of the
positions ``ops.arange(maxlen)``), a ``TransformerBlock`` layer (``MultiHeadAttention``
self-attention and a feed-forward network, each with dropout, a residual connection and
``LayerNormalization(epsilon=1e-6)``), then ``GlobalAveragePooling1D``, dropout, a small
Dense layer and a softmax over the 2 classes. One addition: ``pad_sequences`` puts zeros in
front of the shorter reviews, and here they are masked, with Keras' own mechanisms (Keras'
example does not mask). ``Embedding(mask_zero=True)`` makes the padding mask, which
``TokenAndPositionEmbedding.compute_mask`` gives as its output's mask; ``TransformerBlock``
receives it in ``call(inputs, mask=None)``, hands it to the attention as its query and value
masks, and passes it on (``supports_masking``), so that the pooling averages the words only.

The script trains the Transformer, then the bidirectional LSTM and the bag-of-words model of
``examples/text_classification.py`` on the same reviews, and prints the three test accuracies
on one line. ``main(...)`` takes the sizes and returns the accuracies.

Run: python examples/transformer_classification.py   (about 15 s on 2 cores)
"""

import pathlib
import sys
import time

import fastnn as keras
from fastnn import layers, ops

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # (for runpy and imports from elsewhere)
import text_classification  # noqa: E402  (the data and the recurrent and bag-of-words models)


class TransformerBlock(layers.Layer):
    def __init__(self, embed_dim, num_heads, ff_dim, rate=0.1, activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True  # the padding mask goes on to the pooling
        self.att = layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
        self.ffn = keras.Sequential([layers.Dense(ff_dim, activation=activation), layers.Dense(embed_dim)])
        self.layernorm1 = layers.LayerNormalization(epsilon=1e-6)
        self.layernorm2 = layers.LayerNormalization(epsilon=1e-6)
        self.dropout1 = layers.Dropout(rate)
        self.dropout2 = layers.Dropout(rate)

    def call(self, inputs, mask=None):
        attn_output = self.att(inputs, inputs, query_mask=mask, value_mask=mask)
        attn_output = self.dropout1(attn_output)
        out1 = self.layernorm1(inputs + attn_output)
        ffn_output = self.ffn(out1)
        ffn_output = self.dropout2(ffn_output)
        return self.layernorm2(out1 + ffn_output)


class TokenAndPositionEmbedding(layers.Layer):
    def __init__(self, maxlen, vocab_size, embed_dim, **kwargs):
        super().__init__(**kwargs)
        self.token_emb = layers.Embedding(input_dim=vocab_size, output_dim=embed_dim, mask_zero=True)
        self.pos_emb = layers.Embedding(input_dim=maxlen, output_dim=embed_dim)

    def call(self, x):
        maxlen = ops.shape(x)[-1]
        positions = ops.arange(start=0, stop=maxlen, step=1)
        positions = self.pos_emb(positions)
        x = self.token_emb(x)
        return x + positions

    def compute_mask(self, inputs, mask=None):
        return self.token_emb.compute_mask(inputs)  # the padding (token 0) is masked


def transformer_classifier(maxlen, vocab_size, embed_dim=32, num_heads=2, ff_dim=32, activation="relu"):
    inputs = layers.Input(shape=(maxlen,))
    embedding_layer = TokenAndPositionEmbedding(maxlen, vocab_size, embed_dim)
    x = embedding_layer(inputs)
    transformer_block = TransformerBlock(embed_dim, num_heads, ff_dim, activation=activation)
    x = transformer_block(x)
    x = layers.GlobalAveragePooling1D()(x)
    x = layers.Dropout(0.1)(x)
    x = layers.Dense(20, activation="relu")(x)
    x = layers.Dropout(0.1)(x)
    outputs = layers.Dense(2, activation="softmax")(x)
    return keras.Model(inputs=inputs, outputs=outputs)


def main(samples=10000, vocab_size=200, max_words=40, embed_dim=32, num_heads=2, ff_dim=32, activation="relu",
         epochs=15, learning_rate=1e-3, batch_size=32, baseline_epochs=4, seed=0, verbose=2):
    """Trains the Transformer and the two models of text_classification.py on the same reviews.

    Returns:
        (Transformer test accuracy, bidirectional LSTM test accuracy, bag-of-words test accuracy).
    """
    keras.utils.set_random_seed(seed)
    data = text_classification.load_reviews(samples, vocab_size, max_words, seed)
    (x_train, y_train), (x_test, y_test) = data

    start = time.perf_counter()
    model = transformer_classifier(max_words, vocab_size + 1, embed_dim, num_heads, ff_dim, activation)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, validation_split=0.1, verbose=verbose)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    seconds = time.perf_counter() - start

    keras.utils.set_random_seed(seed)  # the baselines as text_classification.py trains them
    lstm_accuracy = text_classification.bidirectional_lstm_accuracy(data, vocab_size, epochs=baseline_epochs,
                                                                     verbose=0)
    bag_accuracy = text_classification.bag_of_words_accuracy(data, vocab_size, epochs=baseline_epochs)
    print(f"Transformer test accuracy: {accuracy:.3f} ({seconds:.1f} s); bidirectional LSTM: {lstm_accuracy:.3f}; "
          f"bag of words: {bag_accuracy:.3f}")
    return accuracy, lstm_accuracy, bag_accuracy


if __name__ == "__main__":
    main()
