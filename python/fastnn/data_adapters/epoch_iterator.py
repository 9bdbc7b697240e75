"""``EpochIterator``: the batches of each epoch, from a DataAdapter, with Keras 3's semantics.

* Without ``steps_per_epoch``, an epoch is one pass: until a generator is exhausted, or the
  ``len()`` batches of a PyDataset / iterable. A generator cannot start over: once it is
  exhausted, training stops before the next epoch, with a warning.
* With ``steps_per_epoch``, each epoch takes that many batches, continuing the pass where
  the previous epoch stopped. When a generator runs out first, the epoch ends there and
  training stops, with a warning (Keras' "Your input ran out of data; interrupting
  training"). When a PyDataset's or iterable's pass ends first, the epoch ends there, with a
  warning, and the next epoch starts a new pass (as Keras).
* Evaluation (``restart=True``) starts a new pass at every run (validation sees the same
  batches each epoch), except for a generator, which can only go on.
"""

import collections
import os
import sys
import warnings

__all__ = ["EpochIterator"]

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _warn(message):
    """A warning pointing at the first caller outside fastnn (the user's fit call)."""
    frame, level = sys._getframe(0), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, stacklevel=level)


class EpochIterator:
    """Hands out the batches of one epoch after another.

    Args:
        adapter: a DataAdapter.
        steps_per_epoch: int or None, default None: batches per epoch (None: one pass).
        restart: bool, default False: every epoch starts a new pass (evaluation).
        who: str, default "fit": the caller, for warnings.
        name: str, default "'x'": the argument, for messages.
    """

    def __init__(self, adapter, steps_per_epoch=None, restart=False, who="fit", name="'x'"):
        self.adapter = adapter
        self.steps_per_epoch = steps_per_epoch
        self.restart = restart or adapter.restarts_each_epoch
        self.who = who
        self.description = f"the {adapter.kind} {name}"
        self._iterator = None
        self._buffer = collections.deque()  # batches taken ahead of their epoch (peeked)
        self._seen = 0  # batches of the current pass handed out
        self._fresh = False  # the current pass has not been used by an epoch yet
        self._in_epoch = False  # the adapter's on_epoch_begin called, on_epoch_end not yet
        self._warned = False

    @property
    def num_batches(self):
        """Batches per epoch, or None when unknown (the progress bar then counts without a total)."""
        return self.steps_per_epoch or self.adapter.num_batches

    def _begin(self):
        if not self._in_epoch:
            self.adapter.on_epoch_begin()
            self._in_epoch = True

    def _end(self):
        if self._in_epoch:
            self._in_epoch = False
            self.adapter.on_epoch_end()

    def _new_pass(self):
        self._iterator = iter(self.adapter.new_pass())
        self._seen = 0
        self._fresh = True
        if not self.adapter.one_shot:
            self._buffer.clear()

    def _warn_once(self, message):
        if not self._warned:
            self._warned = True
            _warn(f"{self.who}: {message}")

    def first_batch(self):
        """The first batch of the coming epoch, left in place for it (the epoch begins now: a
        PyDataset's on_epoch_begin runs), or None when there is none."""
        self._begin()
        if self._iterator is None:
            self._new_pass()
        if not self._buffer:
            try:
                self._buffer.append(next(self._iterator))
            except StopIteration:
                return None
        return self._buffer[0]

    def exhausted(self, consequence="interrupting training"):
        """Whether a generator has nothing left for another epoch (then: a warning, once)."""
        if not self.adapter.one_shot or self.first_batch() is not None:
            return False
        self._warn_once(f"{self.description} ran out of data; {consequence}. Make sure that it can generate at "
                        "least steps_per_epoch * epochs batches (or give a PyDataset or a re-iterable object such "
                        "as a DataLoader: they start over at each epoch)")
        return True

    def epoch(self):
        """Yields ``(step, raw batch)`` for one epoch. Close the generator to stop early (that
        ends the epoch for the dataset); after an error, close this EpochIterator instead."""
        self._begin()
        try:
            yield from self._batches()
        except GeneratorExit:
            self._end()
            raise
        self._end()  # not after an error: the dataset's on_epoch_end is for epochs that ended

    def _batches(self):
        steps = self.steps_per_epoch
        if self._iterator is None or ((self.restart or not steps) and not self._fresh):
            self._new_pass()
        self._fresh = False
        known = self.adapter.num_batches
        limit = steps or known
        step = 0
        while limit is None or step < limit:
            if known is not None and self._seen >= known:  # the pass ended before steps_per_epoch
                self._iterator = None
                _warn(f"{self.who}: {self.description} has no batch left in this pass ({known} batches) after "
                      f"{step} of the {steps} this epoch needs (steps_per_epoch): the epoch ends there and the next "
                      "one starts a new pass")
                return
            try:
                batch = self._buffer.popleft() if self._buffer else next(self._iterator)
            except StopIteration:
                self._iterator = None
                if steps and not self.restart:
                    if self.adapter.one_shot:
                        self._warn_once(f"{self.description} ran out of data after {step} of the {steps} batches "
                                        "of this epoch (steps_per_epoch); interrupting training. Make sure that it "
                                        "can generate at least steps_per_epoch * epochs batches")
                    else:
                        _warn(f"{self.who}: {self.description} ran out of data after {step} of the {steps} batches "
                              "of this epoch (steps_per_epoch): the next epoch starts a new pass")
                return
            self._seen += 1
            yield step, batch
            step += 1
        if known is not None and self._seen >= known:
            self._iterator = None

    def close(self):
        """Ends the adapter's background work (without the dataset's on_epoch_end: after an
        error, or when the call is over)."""
        self._in_epoch = False
        self.adapter.close()
