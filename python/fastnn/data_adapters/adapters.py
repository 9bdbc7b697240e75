"""Where the batches of one fit / evaluate / predict call come from: a generator, a re-iterable
iterable (a ``torch.utils.data.DataLoader``...), a PyDataset, or arrays cut into batches (for a
``train_step`` / ``test_step`` / ``predict_step`` override; arrays otherwise take the trainer's
own fast path).

An adapter hands out passes (``new_pass``: an iterator of raw batches) and the dataset's epoch
hooks; ``EpochIterator`` decides how epochs map onto passes.
"""

import abc
import itertools

import numpy as np

from ..structure import map_leaves
from ..utils import rng
from .batches import pack_x_y_sample_weight
from .enqueuer import OrderedEnqueuer

__all__ = ["ArrayAdapter", "DataAdapter", "GeneratorAdapter", "IterableAdapter", "PyDatasetAdapter"]


class DataAdapter(abc.ABC):
    """The batches of one call, pass by pass.

    Attributes:
        kind: what the source is, for messages ("generator", "PyDataset", ...).
        one_shot: bool: a pass cannot start over (a generator or iterator): a new pass
            continues where the last one stopped.
        restarts_each_epoch: bool: every epoch starts a new pass, even with steps_per_epoch
            (arrays, as fastnn's array path does).
        num_batches: int or None: batches in one pass (None: unknown until it ends, or endless).
    """

    kind = "data"
    one_shot = False
    restarts_each_epoch = False
    num_batches = None

    @abc.abstractmethod
    def new_pass(self):
        """An iterator over the raw batches of a new pass."""

    def on_epoch_begin(self):
        """Before the first batch of an epoch is taken."""

    def on_epoch_end(self):
        """After the last batch of an epoch was taken."""

    def close(self):
        """Ends any background work (the end of the call, or an error)."""


class GeneratorAdapter(DataAdapter):
    """A generator or iterator: one stream for the whole call (it cannot start over)."""

    kind = "generator"
    one_shot = True

    def __init__(self, iterator):
        self.iterator = iterator

    def new_pass(self):
        return self.iterator


class IterableAdapter(DataAdapter):
    """An iterable that can be iterated again (a ``torch.utils.data.DataLoader``, a list-like
    object of batches...): each pass is a fresh ``iter()``; its ``len()`` (if any) is the
    number of batches."""

    kind = "iterable"

    def __init__(self, iterable):
        self.iterable = iterable
        try:
            self.num_batches = len(iterable)
        except TypeError:
            self.num_batches = None

    def new_pass(self):
        return iter(self.iterable)


def _count(value, name, who, allow_zero=True):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < (0 if allow_zero else 1):
        raise ValueError(f"{who}: the PyDataset's '{name}' must be an int >= {0 if allow_zero else 1}, got "
                         f"{value!r}")
    return int(value)


class PyDatasetAdapter(DataAdapter):
    """A ``fastnn.utils.PyDataset``: batches by index, loaded ahead in background workers
    (``workers`` threads, or processes with ``use_multiprocessing``; ``workers=0``: in the
    loop), in index order or shuffled per pass.

    Args:
        dataset: the PyDataset.
        shuffle: bool, default False: a new random order of the batch indices for each pass
            (fastnn's seeded generator); an endless dataset (``num_batches`` None) is never
            shuffled.
        who: str, default "fit": the caller, for messages.
    """

    kind = "PyDataset"

    def __init__(self, dataset, shuffle=False, who="fit"):
        self.dataset = dataset
        count = dataset.num_batches
        self.num_batches = None if count is None else _count(count, "num_batches", who)
        self.shuffle = bool(shuffle) and self.num_batches is not None
        workers = _count(dataset.workers, "workers", who)
        queue = _count(dataset.max_queue_size, "max_queue_size", who, allow_zero=False)
        self.enqueuer = OrderedEnqueuer(dataset, workers, dataset.use_multiprocessing, queue) if workers else None
        self._endless = None

    def new_pass(self):
        if self.num_batches is None:  # endless: one stream of indices for the whole call, as Keras
            if self._endless is None:
                self._endless = self._load(itertools.count())
            return self._endless
        order = rng.global_generator().permutation(self.num_batches) if self.shuffle else range(self.num_batches)
        return self._load(int(i) for i in order)

    def _load(self, indices):
        if self.enqueuer is not None:
            return self.enqueuer.start(indices)
        return (self.dataset[i] for i in indices)

    def on_epoch_begin(self):
        self.dataset.on_epoch_begin()
        if self.enqueuer is not None:
            self.enqueuer.resume()

    def on_epoch_end(self):
        if self.enqueuer is not None:
            self.enqueuer.pause()  # no __getitem__ runs while the dataset's on_epoch_end does
        self.dataset.on_epoch_end()

    def close(self):
        if self.enqueuer is not None:
            self.enqueuer.close()


class ArrayAdapter(DataAdapter):
    """Arrays cut into batches in the user's structure (for step overrides), in the order fit's
    array path uses (a permutation from fastnn's generator per epoch when shuffling).

    Args:
        x: array, or list / dict of arrays. y, sample_weight: likewise, or None.
        n: int: number of samples. batch_size: int.
        shuffle: bool, default False: a new permutation of the samples for each pass.
        targets: bool, default True: batches are ``(x, y[, sample_weight])``; else ``x`` as
            predict gets it.
    """

    kind = "arrays"
    restarts_each_epoch = True

    def __init__(self, x, y, sample_weight, n, batch_size, shuffle=False, targets=True):
        self.x, self.y, self.sample_weight = x, y, sample_weight
        self.n, self.batch_size, self.shuffle, self.targets = n, batch_size, shuffle, targets
        self.num_batches = -(-n // batch_size)

    def new_pass(self):
        order = rng.global_generator().permutation(self.n) if self.shuffle else None
        for start in range(0, self.n, self.batch_size):
            if order is None:
                part = slice(start, start + self.batch_size)
                take = lambda a: None if a is None else a[part]  # noqa: E731
            else:
                idx = order[start:start + self.batch_size]
                take = lambda a: None if a is None else np.take(a, idx, axis=0)  # noqa: E731
            x = map_leaves(self.x, take)
            if not self.targets:
                yield pack_x_y_sample_weight(x)
            else:
                yield pack_x_y_sample_weight(x, map_leaves(self.y, take), map_leaves(self.sample_weight, take))
