"""Tuning an MLP's learning rate and hidden width on the digits with Optuna.

Each trial trains a Sequential MLP on the bundled 8×8 digits and reports its validation
accuracy after every epoch through a callback, so that Optuna's median pruner can stop
unpromising trials early. The best parameters are then retrained on the whole training
set and scored on the held-out test set.

The search is reproducible: the sampler is seeded, and every trial builds and trains
under ``fastnn.utils.set_random_seed(seed)``.

Needs Optuna: pip install "fastnn[tune]".
Run: python examples/tune_with_optuna.py [--trials 20] [--epochs 15] [--seed 0]
"""

import argparse

import numpy as np

import fastnn
from fastnn.datasets import digits


def load_digits():
    """The digits as float32 rows of 64 pixels in [0, 1]: (x_train, y_train), (x_test, y_test)."""
    (x_train, y_train), (x_test, y_test) = digits.load_data()
    x_train = x_train.reshape(len(x_train), -1).astype(np.float32) / 16
    x_test = x_test.reshape(len(x_test), -1).astype(np.float32) / 16
    return (x_train, y_train), (x_test, y_test)


def build_model(width, learning_rate):
    """A one-hidden-layer MLP for the 10 digit classes."""
    model = fastnn.Sequential([
        fastnn.Input(shape=(64,)),
        fastnn.layers.Dense(width, activation="relu"),
        fastnn.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=fastnn.optimizers.Adam(learning_rate=learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


class PruningCallback(fastnn.callbacks.Callback):
    """Reports a validation metric to an Optuna trial after each epoch; stops a pruned trial."""

    def __init__(self, trial, monitor="val_accuracy"):
        super().__init__()
        self.trial = trial
        self.monitor = monitor
        self.pruned = False

    def on_epoch_end(self, epoch, logs=None):
        self.trial.report(float(logs[self.monitor]), epoch)
        if self.trial.should_prune():
            self.pruned = True
            self.model.stop_training = True


def main(n_trials=20, epochs=15, seed=0, verbose=True):
    """Runs the search; returns {"best_params", "best_score" (validation), "test_accuracy"}."""
    import optuna

    (x_train, y_train), (x_test, y_test) = load_digits()
    split = int(len(x_train) * 0.8)  # the last 20 % of the training set validates the trials
    x_fit, y_fit, x_val, y_val = x_train[:split], y_train[:split], x_train[split:], y_train[split:]

    def objective(trial):
        learning_rate = trial.suggest_float("learning_rate", 1e-4, 3e-2, log=True)
        width = trial.suggest_int("width", 8, 128, log=True)
        fastnn.utils.set_random_seed(seed)
        model = build_model(width, learning_rate)
        pruning = PruningCallback(trial)
        history = model.fit(x_fit, y_fit, epochs=epochs, batch_size=32, validation_data=(x_val, y_val),
                            callbacks=[pruning], verbose=0)
        if pruning.pruned:
            raise optuna.TrialPruned()
        return history.history["val_accuracy"][-1]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=3))
    study.optimize(objective, n_trials=n_trials)

    best = dict(study.best_params)
    fastnn.utils.set_random_seed(seed)
    model = build_model(**best)
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    test_accuracy = float(model.evaluate(x_test, y_test, verbose=0)[1])
    if verbose:
        pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
        print(f"{len(study.trials)} trials ({pruned} pruned), best validation accuracy {study.best_value:.4f}")
        print(f"best params: learning_rate={best['learning_rate']:.5f}, width={best['width']}")
        print(f"test accuracy with the best params: {test_accuracy:.4f}")
    return {"best_params": best, "best_score": float(study.best_value), "test_accuracy": test_accuracy}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(n_trials=args.trials, epochs=args.epochs, seed=args.seed)
