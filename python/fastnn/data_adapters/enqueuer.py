"""Background loading of a PyDataset's batches, in order, at most ``max_queue_size`` ahead.

The training loop asks for the batches of a pass one after the other; the enqueuer keeps up
to ``max_queue_size`` ``dataset[i]`` calls submitted to a pool of ``workers`` threads (or
processes) ahead of the one being consumed, so that loading overlaps training (fastnn's
kernels release the GIL). Work is submitted from the consuming thread only (no scheduler
thread): taking a batch submits the next index. Results come back in submission order, so
batches arrive in index order whatever the workers' timing.

An exception raised by ``__getitem__`` in a worker is raised in the training loop, with its
traceback (a worker process's traceback is attached as the exception's cause), when that
batch is reached; a worker process that dies raises ``BrokenProcessPool`` rather than hang.
``close`` cancels what has not started and waits for what has (threads cannot be killed),
so that no worker outlives the fit / evaluate / predict call.
"""

import collections
import concurrent.futures
import multiprocessing
import signal

__all__ = ["OrderedEnqueuer"]

_WORKER_DATASET = None  # the dataset, in a worker process


def _init_worker_process(dataset):
    global _WORKER_DATASET
    _WORKER_DATASET = dataset
    # Ctrl-C reaches the whole process group: let the main process handle it and shut the
    # pool down, instead of every worker printing a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _load_in_worker_process(index):
    return _WORKER_DATASET[index]


class OrderedEnqueuer:
    """Loads ``dataset[i]`` for the indices of a pass in background workers.

    Args:
        dataset: the PyDataset (anything indexable).
        workers: int >= 1: threads (or processes) loading at the same time.
        use_multiprocessing: bool, default False: processes instead of threads; the pool is
            made anew at each ``resume`` (each epoch), so that the workers see the dataset as
            its ``on_epoch_begin`` / ``on_epoch_end`` left it (Keras does the same).
        max_queue_size: int, default 10: batches submitted ahead of the one being consumed
            (at least 1).
    """

    def __init__(self, dataset, workers, use_multiprocessing=False, max_queue_size=10):
        self.dataset = dataset
        self.workers = int(workers)
        self.use_multiprocessing = bool(use_multiprocessing)
        self.max_queue_size = max(1, int(max_queue_size))
        self._executor = None
        self._pending = collections.deque()  # [index, future or None (to submit again)], in order
        self._indices = iter(())
        self._paused = False
        self._orphans = []  # dropped futures that had already started: waited for by pause and close

    # ---- the pool ---------------------------------------------------------------------------------
    def _make_executor(self):
        if self.use_multiprocessing:
            return concurrent.futures.ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context(), initializer=_init_worker_process,
                initargs=(self.dataset,))
        return concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="fastnn-loader")

    def _submit(self, index):
        if self._executor is None:
            self._executor = self._make_executor()
        if self.use_multiprocessing:
            return self._executor.submit(_load_in_worker_process, index)
        return self._executor.submit(self.dataset.__getitem__, index)

    def _fill(self):
        """Submits indices until max_queue_size batches are pending (not while paused)."""
        if self._paused:
            return
        for entry in self._pending:  # those cancelled by pause, first (they come first)
            if entry[1] is None:
                entry[1] = self._submit(entry[0])
        while len(self._pending) < self.max_queue_size:
            index = next(self._indices, None)
            if index is None:
                return
            self._pending.append([index, self._submit(index)])

    # ---- a pass -------------------------------------------------------------------------------------
    def start(self, indices):
        """Starts a pass over `indices` (an iterable of ints, possibly endless); returns the
        iterator of its batches. Work left from the previous pass is dropped."""
        self._drop_pending()
        self._indices = iter(indices)
        self._fill()
        return self._batches()

    def _batches(self):
        while self._pending:
            index, future = self._pending.popleft()
            if future is None:  # cancelled by a pause and not submitted again yet
                future = self._submit(index)
            self._fill()  # keep the workers busy while this batch is waited for and used
            yield future.result()

    def pause(self):
        """Stops loading (between epochs): what has not started is cancelled (and will be
        submitted again by ``resume``), what has started is waited for, so that the dataset's
        ``on_epoch_end`` never runs while ``__getitem__`` does."""
        self._paused = True
        running = []
        for entry in self._pending:
            future = entry[1]
            if future is not None and not future.cancel():
                running.append(future)
            elif future is not None:
                entry[1] = None
        concurrent.futures.wait(running + self._orphans)
        self._orphans = []

    def resume(self):
        """Starts loading again (at the beginning of an epoch)."""
        if self.use_multiprocessing and self._executor is not None:
            self._executor.shutdown(wait=True)  # new processes see the dataset as it is now
            self._executor = None
        self._paused = False
        self._fill()

    def _drop_pending(self):
        for _, future in self._pending:
            if future is not None and not future.cancel():
                self._orphans.append(future)
        self._pending.clear()

    def close(self):
        """Cancels what has not started, waits for what has, and ends the workers."""
        self._drop_pending()
        self._indices = iter(())
        self._orphans = []
        if self._executor is not None:
            executor, self._executor = self._executor, None
            executor.shutdown(wait=True, cancel_futures=True)
