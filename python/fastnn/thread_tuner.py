"""Chooses, by measuring, how many of the configured threads a loop of equal steps uses.

A parallel region ends when its slowest thread ends. On a machine where another process keeps
a core busy, the thread that shares that core runs at a fraction of its speed, and every
parallel region waits for it: on 2 cores with one busy neighbour a training step on 2 threads
was measured 4-5x slower than on 1 (an MLP epoch 430-640 ms against 118 ms). No setting fixes
this ahead of time, since whether a neighbour is there changes while a model trains.

fastnn's kernels partition work by shape, never by thread count, so the count can change at
any step without changing a result. The training, evaluation and prediction loops therefore
time their steps and now and then try one thread fewer (or, after dropping, one more) for a
few steps, keeping the faster count. When the probes keep losing they become rarer (from every
quarter second to every 4 s, a schedule shared by all loops of the process), so a quiet machine
pays well under 1 % for them; a neighbour that comes or goes is noticed within seconds.

The cap is process-wide, so one loop at a time is in charge of it: the first tuner made while
no other is active. A loop that starts while another runs (an evaluate or predict from a
callback of fit, or from another thread) gets a passive tuner: it neither probes nor moves
the cap (it runs at the running loop's count) and does not lift it when it ends, so the loop
in charge keeps its cap and its measurements, and two threads' tuners never fight over it.
"""

import collections
import os
import statistics
import threading
import time
import weakref

from . import _core

_enabled = [os.environ.get("FASTNN_ADAPTIVE_THREADS", "1").strip().lower() not in ("0", "false", "no", "off")]
# The count the last loop settled on: the next loop starts from it (a neighbour that slowed
# training slows validation and prediction as well).
_last_choice = [None]
# When the next probe is due and the interval after it: shared by all loops, so that a program
# calling fit(epochs=1) or predict in a loop does not probe afresh in every call.
_schedule = {"next": 0.0, "interval": None}
# The cap last given to the kernels (set only when it changes: a call per step costs).
_applied = [0]
# The tuner in charge of the cap (a weak reference: a tuner dropped without close() frees it).
_owner = [None]
_lock = threading.RLock()  # (re-entrant: a dropped tuner's weakref callback may run while it is held)


def _apply(limit):
    if _applied[0] != limit:
        _core.set_thread_limit(limit)
        _applied[0] = limit


def _in_charge(tuner):
    owner = _owner[0]
    return owner is not None and owner() is tuner


def _take_charge(tuner):
    """Makes `tuner` the one in charge of the cap unless another live tuner is (True if so)."""
    with _lock:
        owner = _owner[0]
        if owner is not None and owner() is not None:
            return False
        _owner[0] = weakref.ref(tuner, _released)
        return True


def _released(ref):
    """A tuner in charge was dropped without close(): lift its cap."""
    with _lock:
        if _owner[0] is ref:
            _owner[0] = None
            _apply(0)


# Steps run at each thread count, for the demo's report.
_steps_by_threads = collections.Counter()


def set_enabled(enabled):
    """Turns the adaptive thread count of the training loops on or off (see the module)."""
    if not isinstance(enabled, bool):
        raise TypeError(f"set_adaptive_threads: 'enabled' must be a bool, got {type(enabled).__name__}")
    _enabled[0] = enabled


def enabled():
    """Whether the loops adapt their thread count to the machine's load."""
    return _enabled[0]


def steps_by_threads():
    """How many loop steps ran at each thread count since the process started (a dict)."""
    return dict(_steps_by_threads)


class ThreadTuner:
    """Times the steps of one loop and picks the thread count that runs them fastest.

    Usage: ``tuner.step_begin()`` before each step and ``tuner.step_end(measure)`` after it
    (``measure=False`` for a step unlike the others, e.g. a smaller last batch), and
    ``tuner.close()`` when the loop ends (it lifts the cap it set).

    Args:
        baseline_steps: steps timed at the current count before the first probe. Defaults to 8.
        probe_steps: steps a probe times at the other count, after untimed steps that let the
            threads settle (1 when dropping a thread; when adding one, 4 steps and at least
            30 ms: a woken thread often runs beside its waker until the scheduler moves it).
            Defaults to 5.
        margin: how much faster (relative median step time) a probe must be to be adopted.
            Defaults to 0.07.
        abort_ratio: a probe step this many times slower than the current median ends the
            probe at once (a quiet machine then pays one slow step per probe). Defaults to 1.2.
        first_interval: seconds between probes after a change. Defaults to 0.25.
        max_interval: the longest interval; each probe that loses doubles it. Defaults to 4.0.
        clock: the time source (a callable returning seconds). Defaults to time.perf_counter.
        max_threads: the most threads to use. Defaults to the configured thread count.
    """

    def __init__(self, baseline_steps=8, probe_steps=5, margin=0.07, abort_ratio=1.2, first_interval=0.25,
                 max_interval=4.0, clock=time.perf_counter, max_threads=None):
        self.max_threads = max_threads or _core.get_num_threads()
        self.active = _enabled[0] and self.max_threads > 1 and _take_charge(self)
        start = _last_choice[0] if _last_choice[0] is not None else self.max_threads
        self.current = min(max(start, 1), self.max_threads)
        self._baseline_steps = baseline_steps
        self._probe_steps = probe_steps
        self._margin = margin
        self._first_interval = first_interval
        self._max_interval = max_interval
        self._interval = _schedule["interval"] or first_interval
        self._clock = clock
        self._times = collections.defaultdict(lambda: collections.deque(maxlen=baseline_steps))
        self._probe = None  # thread count being tried
        self._probe_left = 0
        self._kept = None  # the current count's median step time when the probe began
        self._abort = abort_ratio
        self._steps = 0
        self._warmup_steps = 3
        self._settle_up = 4
        self._settle_seconds = 0.03
        self._settle_steps = 0
        self._settle_until = 0.0
        self._next_probe = _schedule["next"] if clock is time.perf_counter else clock()
        self._fewer_first = True
        self._threads = self.current
        self._began = None

    def step_begin(self):
        """Sets the thread count of the coming step and starts its clock."""
        self._threads = self._probe or self.current
        if self.active:
            _apply(0 if self._threads >= self.max_threads else self._threads)
        self._began = self._clock()

    def step_end(self, measure=True):
        """Records the step's time (when ``measure``) and decides the next steps' count."""
        end = self._clock()
        with _lock:
            _steps_by_threads[self._threads if self.active else (_applied[0] or self.max_threads)] += 1
        if not self.active or not measure or self._began is None:
            return
        elapsed = end - self._began
        self._steps += 1
        if self._steps <= self._warmup_steps:  # a loop's first steps warm caches and buffers up
            return
        if self._probe is not None:
            if self._settle_steps > 0 or end < self._settle_until:  # settling at the new count: untimed
                self._settle_steps -= 1
                return
            self._probe_left -= 1
            self._times[self._threads].append(elapsed)
            if elapsed > self._abort * self._kept:  # clearly slower: stop paying for this probe
                self._decide(end, lost=True)
            elif self._probe_left == 0:
                self._decide(end)
            return
        self._times[self._threads].append(elapsed)
        if len(self._times[self.current]) >= self._baseline_steps and end >= self._next_probe:
            self._start_probe()

    def _start_probe(self):
        fewer, more = self.current - 1, self.current + 1
        options = [n for n in ((fewer, more) if self._fewer_first else (more, fewer)) if 1 <= n <= self.max_threads]
        self._fewer_first = not self._fewer_first
        self._probe = options[0]
        # Untimed steps first: parked threads wake where the scheduler puts them (at first often
        # beside the thread that woke them) and need a few steps to spread to idle cores.
        up = self._probe > self.current
        self._probe_left = self._probe_steps
        self._settle_steps = self._settle_up if up else 1
        self._settle_until = self._clock() + (self._settle_seconds if up else 0.0)
        self._times[self._probe].clear()
        self._kept = statistics.median(self._times[self.current])

    def _decide(self, now, lost=False):
        tried = statistics.median(self._times[self._probe])
        if not lost and tried < (1.0 - self._margin) * self._kept:
            self.current = self._probe
            self._interval = self._first_interval
        else:
            self._interval = min(2 * self._interval, self._max_interval)
        self._probe = None
        self._next_probe = now + self._interval
        _last_choice[0] = self.current
        if self._clock is time.perf_counter:
            _schedule.update(next=self._next_probe, interval=self._interval)

    def close(self):
        """Ends the loop: lifts the thread cap (direct kernel calls use every configured thread).
        A passive tuner (see the module) leaves the cap to the loop in charge."""
        if self.active:
            self.active = False
            with _lock:
                if _in_charge(self):
                    _owner[0] = None
                    _apply(0)
            _last_choice[0] = self.current
