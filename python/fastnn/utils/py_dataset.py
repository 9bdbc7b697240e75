"""``PyDataset``: a dataset written in Python, one batch per index (Keras 3's ``keras.utils.PyDataset``).

fit, evaluate and predict load its batches in the background while the C++ kernels train
(they release the GIL): see ``fastnn.data_adapters`` for how.
"""

import itertools
import warnings

__all__ = ["PyDataset", "Sequence"]


class PyDataset:
    """Base class for a dataset whose batches are made by Python code.

    Implement ``__getitem__(index)``, returning a complete batch, and ``__len__()`` (or the
    ``num_batches`` property), the number of batches; ``on_epoch_begin`` and
    ``on_epoch_end`` may change the dataset between epochs (they are never called while a
    batch is being loaded). A batch is ``(inputs, targets)``, ``(inputs, targets,
    sample_weights)``, or for predict ``inputs`` / ``(inputs,)``; inputs may be a list or a
    dict of arrays for a model with several inputs, as with arrays.

    Args:
        workers: int, default 1: how many batches fit/evaluate/predict load at the same time,
            in background threads (or processes). 0 loads each batch in the training loop
            itself, when it is needed.
        use_multiprocessing: bool, default False: load in worker processes instead of
            threads (for ``__getitem__`` work that holds the GIL: pure-Python decoding). The
            dataset is then copied into each worker process (forked on Linux, pickled where
            processes are spawned) at the start of every epoch, after ``on_epoch_begin``, so
            that changes made by ``on_epoch_end`` / ``on_epoch_begin`` reach the workers, as
            in Keras.
        max_queue_size: int, default 10: at most this many batches are loaded ahead of the
            one being trained on (a bound on the memory the prefetching takes).

    Beyond Keras: Keras loads in the training loop when ``workers=1`` (it starts its pool only
    for ``workers > 1`` or ``use_multiprocessing``); fastnn always loads in the background
    when ``workers >= 1`` (one thread for ``workers=1``), so that loading batch i+1 overlaps
    training on batch i. ``workers=0`` gives the in-loop behaviour.

    Batches are delivered in index order, or in a new random order of the indices each epoch
    when fit's ``shuffle=True`` (its default; Keras does the same for a PyDataset with a
    length). evaluate and predict never shuffle.

    Example:
        >>> class Batches(fastnn.utils.PyDataset):
        ...     def __init__(self, x, y, batch_size, **kwargs):
        ...         super().__init__(**kwargs)
        ...         self.x, self.y, self.batch_size = x, y, batch_size
        ...     def __len__(self):
        ...         return -(-len(self.x) // self.batch_size)
        ...     def __getitem__(self, index):
        ...         s = slice(index * self.batch_size, (index + 1) * self.batch_size)
        ...         return self.x[s], self.y[s]
        >>> model.fit(Batches(x, y, 32, workers=2), epochs=3)
    """

    def __init__(self, workers=1, use_multiprocessing=False, max_queue_size=10):
        self._workers = workers
        self._use_multiprocessing = use_multiprocessing
        self._max_queue_size = max_queue_size

    def _warn_if_super_not_called(self):
        missing = [name for name in ("_workers", "_use_multiprocessing", "_max_queue_size")
                   if name not in self.__dict__]
        if missing:
            self.__dict__.setdefault("_workers", 1)
            self.__dict__.setdefault("_use_multiprocessing", False)
            self.__dict__.setdefault("_max_queue_size", 10)
            warnings.warn(f"{type(self).__name__} should call super().__init__(**kwargs) in its constructor "
                          "(kwargs may hold workers, use_multiprocessing, max_queue_size); using the defaults",
                          stacklevel=3)

    @property
    def workers(self):
        """How many batches are loaded at the same time (0: in the training loop)."""
        self._warn_if_super_not_called()
        return self._workers

    @workers.setter
    def workers(self, value):
        self._workers = value

    @property
    def use_multiprocessing(self):
        """Whether batches are loaded in worker processes rather than threads."""
        self._warn_if_super_not_called()
        return self._use_multiprocessing

    @use_multiprocessing.setter
    def use_multiprocessing(self, value):
        self._use_multiprocessing = value

    @property
    def max_queue_size(self):
        """How many batches may be loaded ahead of the one being used."""
        self._warn_if_super_not_called()
        return self._max_queue_size

    @max_queue_size.setter
    def max_queue_size(self, value):
        self._max_queue_size = value

    def __getitem__(self, index):
        """The batch at position `index` (an int in ``[0, num_batches)``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement __getitem__(index)")

    @property
    def num_batches(self):
        """The number of batches: ``len(self)`` by default; None for an endless dataset."""
        if hasattr(self, "__len__"):
            return len(self)
        raise NotImplementedError(f"{type(self).__name__} must implement __len__ or the num_batches property")

    def __iter__(self):
        """The batches in index order, in this thread (no prefetching), as Keras."""
        try:
            count = self.num_batches
        except NotImplementedError:
            count = None
        for index in (range(count) if count is not None else itertools.count()):
            yield self[index]

    def on_epoch_begin(self):
        """Called at the beginning of every epoch (before its first batch is loaded)."""

    def on_epoch_end(self):
        """Called at the end of every epoch (after its last batch was loaded)."""


Sequence = PyDataset  # Keras exports the same class under its older name
