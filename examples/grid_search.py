"""Grid search over an MLP's learning rate and hidden width with scikit-learn's GridSearchCV.

``fastnn.wrappers.SKLearnClassifier`` makes a fastnn model a scikit-learn estimator: the
function that builds the model takes the searched values as keyword arguments, and the
grid names them ``model_kwargs__<argument>``. GridSearchCV cross-validates every
combination on the bundled 8×8 digits, refits the best one on the whole training set,
and the result is scored on the held-out test set.

The search is reproducible: ``random_state`` makes every fit build and train under
``fastnn.utils.set_random_seed(random_state)``.

Needs scikit-learn: pip install "fastnn[tune]".
Run: python examples/grid_search.py [--epochs 15] [--cv 3] [--seed 0]
"""

import argparse

import numpy as np

import fastnn
from fastnn.datasets import digits


def build_mlp(X, y, width=32, learning_rate=1e-3):
    """The model-building function: X and y (one-hot) give the input and output sizes."""
    model = fastnn.Sequential([
        fastnn.Input(shape=X.shape[1:]),
        fastnn.layers.Dense(width, activation="relu"),
        fastnn.layers.Dense(y.shape[1], activation="softmax"),
    ])
    model.compile(optimizer=fastnn.optimizers.Adam(learning_rate=learning_rate),
                  loss="sparse_categorical_crossentropy")
    return model


def main(learning_rates=(1e-3, 1e-2), widths=(16, 64), epochs=15, cv=3, seed=0, verbose=True):
    """Runs the search; returns {"best_params", "best_score" (cross-validated), "test_accuracy"}."""
    from sklearn.model_selection import GridSearchCV

    from fastnn.wrappers import SKLearnClassifier

    (x_train, y_train), (x_test, y_test) = digits.load_data()
    x_train = x_train.reshape(len(x_train), -1).astype(np.float32) / 16
    x_test = x_test.reshape(len(x_test), -1).astype(np.float32) / 16

    estimator = SKLearnClassifier(build_mlp, fit_kwargs={"epochs": epochs, "batch_size": 32}, random_state=seed)
    grid = {"model_kwargs__learning_rate": list(learning_rates), "model_kwargs__width": list(widths)}
    search = GridSearchCV(estimator, grid, cv=cv)
    search.fit(x_train, y_train)
    test_accuracy = float(search.score(x_test, y_test))  # the best parameters, refit on all of x_train

    best = {key.replace("model_kwargs__", ""): value for key, value in search.best_params_.items()}
    if verbose:
        results = search.cv_results_
        print(f"{'learning_rate':>13}  {'width':>5}  cv accuracy")
        for params, mean, std in zip(results["params"], results["mean_test_score"], results["std_test_score"]):
            print(f"{params['model_kwargs__learning_rate']:>13g}  {params['model_kwargs__width']:>5}  "
                  f"{mean:.4f} ± {std:.4f}")
        print(f"best params: learning_rate={best['learning_rate']:g}, width={best['width']} "
              f"(cv accuracy {search.best_score_:.4f})")
        print(f"test accuracy with the best params: {test_accuracy:.4f}")
    return {"best_params": best, "best_score": float(search.best_score_), "test_accuracy": test_accuracy}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--cv", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(epochs=args.epochs, cv=args.cv, seed=args.seed)
