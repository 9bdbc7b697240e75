"""What keeps the loops that run on one model apart (README, "Thread safety").

Each model has a ``Guard`` (``guard(model)``):

* Training holds the model for its whole run (fit, train_on_batch, a direct call of the
  default train_step): a second training loop on the same model, from another thread or from
  inside the first (a callback), raises a RuntimeError that names the model, before it
  changes anything.
* A training step (forward and backward passes, the optimizer update, BatchNormalization's
  moving statistics) holds the model's step lock. Inference from another thread (predict,
  evaluate, ``__call__``, predict_on_batch, get_weights, save) runs each forward pass under
  that lock, so every batch sees the weights as they are between two steps, never half
  updated; a training thread that waits for the lock goes first. Inference from the training
  thread itself (a callback) runs between steps and needs no lock. Inference while nothing
  trains takes no lock (concurrent predicts run in parallel); it only registers the pass, so
  that a training loop that starts meanwhile waits for it before its first step.
* The compiled metrics belong to one loop at a time (``claim_metrics``): fit's running
  metrics are not reset or fed by an evaluate called from a callback or another thread,
  which accumulates into private copies instead.
* The default steps' loop state (``trainer._StepContext``) is kept per thread.

What is not covered: a model nested in the model being trained (its own guard does not know
about the outer fit), set_weights / load_weights from another thread during fit, weight
changes that callbacks make in fit's thread between steps (EarlyStopping's
restore_best_weights, SwapEMAWeights: not under the step lock), and one Metric instance shared
by models that run at once.
"""

import copy
import threading
import time

_LOCK = threading.Lock()  # makes a guard's check-and-set of its trainer atomic
_WAIT = 0.0002  # seconds between looks while waiting for the other side


class Guard:
    """The loop state of one model (see the module)."""

    __slots__ = ("trainer", "what", "step_lock", "waiting", "readers", "metrics_lock", "local")

    def __init__(self):
        self.trainer = None  # the thread ident of the running training loop
        self.what = None  # its name (fit, train_on_batch, train_step), for the error message
        self.step_lock = threading.RLock()
        self.waiting = 0  # training steps waiting for the step lock (inference lets them go first)
        self.readers = []  # one entry per inference pass running without the lock
        self.metrics_lock = threading.Lock()
        self.local = threading.local()  # .context: the thread's running loop (trainer._StepContext)


def guard(model):
    """The model's Guard (made on first use; a copy or an unpickled model gets its own)."""
    found = model.__dict__.get("_loop_guard")
    if found is None:
        found = model.__dict__.setdefault("_loop_guard", Guard())
    return found


# ---- training ----------------------------------------------------------------------------------------
class Training:
    """The model held by a training loop: ``with Training(model, "fit"):``."""

    __slots__ = ("guard",)

    def __init__(self, model, who):
        g = self.guard = guard(model)
        me = threading.get_ident()
        with _LOCK:
            if g.trainer is not None:
                raise RuntimeError(_busy_message(model, who, g, me))
            g.trainer, g.what = me, who
        try:
            while g.readers:  # inference passes that began before this loop: let them finish
                time.sleep(_WAIT)
        except BaseException:  # (KeyboardInterrupt: the model is not left marked as training)
            g.trainer = g.what = None
            raise

    def __enter__(self):
        return self.guard

    def __exit__(self, *exc):
        self.guard.trainer = self.guard.what = None
        return False


def _busy_message(model, who, g, me):
    if g.trainer == me:
        where = (f"a {g.what} of it is running in this thread ({who} was called from inside it, e.g. from one of its "
                 "callbacks)")
    else:
        name = next((t.name for t in threading.enumerate() if t.ident == g.trainer), f"ident {g.trainer}")
        where = f"a {g.what} of it is running in another thread ({name})"
    return (f"{who}: model '{model.name}' is already being trained: {where}. A model trains in one loop at a time; "
            "wait for that one to end, or train a copy (predict, evaluate and __call__ may run meanwhile).")


def step_begin(g):
    """Takes the step lock for a training step (waiting inference passes of other threads then
    wait for the step)."""
    lock = g.step_lock
    if not lock.acquire(False):
        g.waiting += 1  # (only the training thread writes it)
        try:
            lock.acquire()
        finally:
            g.waiting -= 1


def step_end(g):
    g.step_lock.release()


# ---- inference ---------------------------------------------------------------------------------------
def infer(model, fn, *args, **kwargs):
    """fn(*args, **kwargs), a pass that reads the model's weights, run as inference may run
    while the model trains (see the module)."""
    try:
        g = model._loop_guard
    except AttributeError:
        g = guard(model)
    if g.trainer is None:  # nothing trains: no lock (concurrent predicts run in parallel)
        readers = g.readers
        readers.append(None)  # (list.append and pop are atomic: a counter without a lock)
        try:
            if g.trainer is None:
                return fn(*args, **kwargs)
        finally:
            readers.pop()
    if g.trainer == threading.get_ident():
        return fn(*args, **kwargs)  # from the training thread (a callback): between two steps
    return _locked(g, fn, args, kwargs)  # (also when a loop began and ended meanwhile: the lock is safe)


def _locked(g, fn, args, kwargs):
    lock = g.step_lock
    if not lock._is_owned():  # (an inference pass inside another one holds it already)
        while g.waiting:  # a training step is waiting: it goes first
            time.sleep(_WAIT)
    with lock:
        return fn(*args, **kwargs)


class Reading:
    """``with Reading(model):`` a block that reads the weights (get_weights, save) as ``infer`` does."""

    __slots__ = ("model", "guard", "mode")

    def __init__(self, model):
        self.model, self.guard, self.mode = model, guard(model), None

    def __enter__(self):
        g = self.guard
        if g.trainer is None:
            g.readers.append(None)
            if g.trainer is None:
                self.mode = "free"
                return self
            g.readers.pop()
        if g.trainer == threading.get_ident():
            self.mode = "trainer"
            return self
        lock = g.step_lock
        if not lock._is_owned():
            while g.waiting:
                time.sleep(_WAIT)
        lock.acquire()
        self.mode = "locked"
        return self

    def __exit__(self, *exc):
        if self.mode == "free":
            self.guard.readers.pop()
        elif self.mode == "locked":
            self.guard.step_lock.release()
        return False


# ---- metrics ------------------------------------------------------------------------------------------
def claim_metrics(model):
    """Whether this loop may use the model's compiled metrics (else it takes private copies);
    a True must be returned with ``release_metrics``."""
    return guard(model).metrics_lock.acquire(False)


def release_metrics(model):
    guard(model).metrics_lock.release()


def private_compiled(compiled):
    """A copy of a CompiledOutputs whose metrics are fresh copies of its metrics (same losses)."""
    from .compile_utils import OutputConfig

    twin = copy.copy(compiled)
    twin.outputs = [OutputConfig(o.name, o.loss, o.weight, [_fresh(m) for m in o.metrics],
                                 [_fresh(m) for m in o.weighted_metrics]) for o in compiled.outputs]
    return twin


def _fresh(metric):
    try:
        twin = copy.deepcopy(metric)
    except Exception:  # (state that cannot be copied: a new one from its config)
        twin = type(metric).from_config(metric.get_config())
    twin.reset_state()
    return twin


# ---- the running loop of this thread -------------------------------------------------------------------
def context(model):
    """The step context of the loop this thread runs on `model` (None outside fit & co.)."""
    g = model.__dict__.get("_loop_guard")
    return None if g is None else getattr(g.local, "context", None)


def set_context(model, value):
    guard(model).local.context = value
