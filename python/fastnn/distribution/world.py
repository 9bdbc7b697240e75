"""The processes of a run: a world of one, or the ranks of an MPI job (through mpi4py).

``python train.py`` is a world of one: nothing here imports MPI and every collective is the
identity. ``mpiexec -n 4 python train.py`` (or Slurm's ``srun``) starts four processes; the
first use of the world imports ``mpi4py`` (``pip install "fastnn[mpi]"``) and joins them.

Collectives (``sum_in_rank_order``, ``allgather_vector``, ``broadcast``) are non-blocking MPI
operations waited on in a loop that also listens for a peer's failure: a rank whose training
raises tells the others (``fail``), and they raise ``DistributedError`` naming it instead of
waiting forever in a collective its peer will never join. An exception nobody handles ends
the whole job (``MPI_Abort``) after its traceback is printed with the rank, so that a rank
failing outside fit (loading data, out of memory) does not leave the others hanging either;
Ctrl-C under mpiexec reaches every rank as KeyboardInterrupt and ends the job the same way.

Sums are computed in a fixed order, rank 0 + rank 1 + ... (reduce-scatter by all-to-all,
then all-gather), never by ``MPI_SUM``, whose order the standard leaves open: a run is
bit-identical from run to run for a given number of processes.
"""

import atexit
import json
import os
import sys
import time
import traceback

import numpy as np

# Set by the launchers this module recognises (MPICH's hydra, Open MPI, PMIx, Intel MPI, Slurm's
# PMI/PMIx plugins): a process started by one of them joins the MPI job.
_LAUNCH_VARIABLES = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS",
                     "MV2_COMM_WORLD_SIZE", "PMI_FD")
_ERROR_TAG = 7103
_ERROR_BYTES = 4096
_NOTIFY_SECONDS = 2.0  # how long a failing rank waits for its notices to leave before going on
_SPINS = 200  # tests (~0.1 ms) before a waiting process yields its core between tests


class DistributedError(RuntimeError):
    """Another process of a data-parallel job failed, so this one stops too.

    Attributes:
        rank: the failing process's rank.
    """

    def __init__(self, message, rank):
        super().__init__(message)
        self.rank = rank


def launched_by_mpi(environ=None):
    """Whether this process was started by an MPI launcher (mpiexec, mpirun, srun with PMI)."""
    environ = os.environ if environ is None else environ
    return any(name in environ for name in _LAUNCH_VARIABLES)


class World:
    """A world of one process: rank 0 of 1, every collective the identity."""

    rank = 0
    size = 1
    local_size = 1
    threads_set = None  # the threads per process this module chose (None: it left the default)

    def __init__(self):
        self.stats = CommunicationStats()

    def describe(self):
        return "1 process"

    def sum_in_rank_order(self, buffer, gradients=True):
        """Sums `buffer` (a flat C-contiguous float array) over the processes, in place
        (`gradients`: count it in stats as the gradient all-reduce)."""

    def allgather_vector(self, vector):
        """Every process's float64 vector (any lengths): a list indexed by rank."""
        return [np.asarray(vector, np.float64)]

    def allgather_json(self, value):
        """Every process's JSON-able value, a list indexed by rank."""
        return [value]

    def any(self, flag):
        """Whether `flag` is true on any process."""
        return bool(flag)

    def broadcast(self, array, root=0):
        """Overwrites `array` (C-contiguous) with root's, in place."""

    def broadcast_json(self, value, root=0):
        return value

    def barrier(self):
        """Returns when every process has called it."""

    def fail(self, error):
        """Tells the other processes this one failed with `error` (nothing to tell here)."""


class CommunicationStats:
    """Time spent in the gradient all-reduce: calls, seconds, bytes per process (bench/ reads it)."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.allreduce_calls = 0
        self.allreduce_seconds = 0.0
        self.allreduce_bytes = 0

    def as_dict(self):
        return {"allreduce_calls": self.allreduce_calls, "allreduce_seconds": self.allreduce_seconds,
                "allreduce_bytes": self.allreduce_bytes}


class MPIWorld(World):
    """The ranks of an MPI job, over private duplicates of MPI_COMM_WORLD (a user's own MPI
    traffic on COMM_WORLD cannot interleave with fastnn's)."""

    def __init__(self, MPI):
        super().__init__()
        self.MPI = MPI
        world = MPI.COMM_WORLD
        self.comm = world.Dup()
        self.errors = world.Dup()  # the failure notices: one pending receive, tested in every wait
        # the bucketed all-reduce's two kinds of collectives, each started in its own order
        self.scatter_comm, self.gather_comm = world.Dup(), world.Dup()
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        node = world.Split_type(MPI.COMM_TYPE_SHARED)
        self.local_size = node.Get_size()
        node.Free()
        self._notice = bytearray(_ERROR_BYTES)
        self._notice_request = self.errors.Irecv([self._notice, MPI.BYTE], source=MPI.ANY_SOURCE, tag=_ERROR_TAG)
        self._status = MPI.Status()
        self.broken = None  # the failure that ended this world's collectives
        self._partitions = {}
        self._slot = 15  # allgather_vector's values per process (grows as needed, alike everywhere)
        self._scratch = {}
        self._split_threads()
        atexit.register(self._close)
        if self.size > 1:
            _install_exit_handlers(self)

    def _close(self):
        """Before mpi4py's MPI_Finalize (atexit runs this first): the pending notice receive is
        cancelled, so that MPI does not report it as leaked."""
        if self.broken is None and self._notice_request:
            self._notice_request.Cancel()
            self._notice_request.Wait()

    def describe(self):
        threads = f" × {self.threads_set} thread{'s' if self.threads_set != 1 else ''}" if self.threads_set else ""
        return f"rank {self.rank} of {self.size} processes{threads}"

    def _split_threads(self):
        """Processes sharing a machine split its cores (cores / processes each) unless
        OMP_NUM_THREADS says otherwise: N processes of all-core thread teams oversubscribe
        the cores, and a team waiting at a barrier for a thread whose core is taken runs many
        times slower."""
        if self.local_size <= 1 or "OMP_NUM_THREADS" in os.environ:
            return
        from .. import config, runtime

        threads = max(1, runtime.available_processors() // self.local_size)
        config.set_num_threads(threads)
        self.threads_set = threads

    # ---- waiting, failures ---------------------------------------------------------------------
    def _wait(self, request):
        """Completes `request`; raises DistributedError as soon as a peer reports a failure.

        Polls (each test drives MPI's progress), first spinning, then giving the core away
        between tests: a process spinning on a core another process needs (more processes
        than free cores) would otherwise hold it for a whole scheduler time slice."""
        if self.broken is not None:
            raise self._broken_error()
        test, notice = request.Test, self._notice_request
        spins = 0
        while not test():
            if notice.Test(self._status):
                self._peer_failed()
            spins += 1
            if spins > _SPINS:
                os.sched_yield()

    def _peer_failed(self):
        try:
            text = bytes(self._notice).rstrip(b"\0").decode("utf-8", "replace")
            report = json.loads(text)
        except ValueError:
            report = {"rank": self._status.Get_source(), "error": "an error"}
        self.broken = report
        raise self._broken_error()

    def _broken_error(self):
        report = self.broken
        return DistributedError(f"data-parallel training stopped on rank {self.rank}: rank {report['rank']} "
                                f"failed with {report['error']}", report["rank"])

    def fail(self, error):
        if self.broken is not None:
            return  # a peer's failure (or this one's, told already): nothing new to tell
        text = f"{type(error).__name__}: {error}"
        self.broken = {"rank": self.rank, "error": text}
        payload = json.dumps(self.broken).encode("utf-8")[:_ERROR_BYTES - 1]
        requests = [self.errors.Isend([payload, self.MPI.BYTE], dest=r, tag=_ERROR_TAG)
                    for r in range(self.size) if r != self.rank]
        deadline = time.monotonic() + _NOTIFY_SECONDS
        while requests and not self.MPI.Request.Testall(requests) and time.monotonic() < deadline:
            time.sleep(0.001)

    # ---- collectives ----------------------------------------------------------------------------------
    def _partition(self, n):
        """Rank r's shard of n values: counts and offsets (the first n % size ranks get one more)."""
        found = self._partitions.get(n)
        if found is None:
            counts = np.full(self.size, n // self.size, np.int64)
            counts[:n % self.size] += 1
            offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
            found = self._partitions[n] = (counts, offsets)
        return found

    def _buffer(self, key, n, dtype):
        found = self._scratch.get((key, dtype))
        if found is None or found.size < n:
            found = self._scratch[(key, dtype)] = np.empty(n, dtype)
        return found[:n]

    def sum_in_rank_order(self, buffer, gradients=True):
        """(gradients=False: not counted in stats, which time the gradient all-reduce.)"""
        if buffer.ndim != 1 or not buffer.flags.c_contiguous:
            raise ValueError(f"sum_in_rank_order: expects a flat C-contiguous array, got shape {buffer.shape}")
        start = time.perf_counter()
        counts, offsets = self._partition(buffer.size)
        mine = int(counts[self.rank])
        pieces = self._buffer("pieces", self.size * mine, buffer.dtype)
        # reduce-scatter: rank r receives every rank's copy of shard r and adds them in rank order
        self._wait(self.comm.Ialltoallv([buffer, (counts, offsets)],
                                        [pieces, ([mine] * self.size, [k * mine for k in range(self.size)])]))
        pieces = pieces.reshape(self.size, mine)
        shard = self._buffer("shard", mine, buffer.dtype)
        shard[...] = pieces[0]
        for k in range(1, self.size):
            shard += pieces[k]
        self._wait(self.comm.Iallgatherv(shard, [buffer, (counts, offsets)]))
        if gradients:
            self.stats.allreduce_calls += 1
            self.stats.allreduce_seconds += time.perf_counter() - start
            self.stats.allreduce_bytes += buffer.nbytes

    def allgather_vector(self, vector):
        """One all-gather of fixed-size slots (the length, then the values), in the steady
        state: every process knows every length, so when one outgrows the slot they all
        gather again with a larger one, which later calls keep."""
        vector = np.ascontiguousarray(vector, np.float64).ravel()
        while True:
            slot = self._slot
            sent = np.zeros(slot + 1, np.float64)
            sent[0] = vector.size
            fits = vector.size <= slot
            if fits:
                sent[1:vector.size + 1] = vector
            gathered = np.empty((self.size, slot + 1), np.float64)
            self._wait(self.comm.Iallgather(sent, gathered))
            lengths = gathered[:, 0].astype(np.int64)
            if int(lengths.max()) <= slot:
                return [gathered[r, 1:n + 1] for r, n in enumerate(lengths)]
            self._slot = int(lengths.max())

    def allgather_json(self, value):
        data = np.frombuffer(json.dumps(value).encode("utf-8"), np.uint8)
        lengths = np.empty(self.size, np.int64)
        self._wait(self.comm.Iallgather(np.array([data.size], np.int64), lengths))
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        gathered = np.empty(int(lengths.sum()), np.uint8)
        self._wait(self.comm.Iallgatherv(data, [gathered, (lengths, offsets)]))
        return [json.loads(gathered[o:o + n].tobytes().decode("utf-8")) for o, n in zip(offsets, lengths)]

    def any(self, flag):
        result = np.zeros(1, np.int32)
        self._wait(self.comm.Iallreduce(np.array([int(bool(flag))], np.int32), result, op=self.MPI.MAX))
        return bool(result[0])

    def broadcast(self, array, root=0):
        if not array.flags.c_contiguous:
            raise ValueError("broadcast: expects a C-contiguous array")
        if array.size:
            self._wait(self.comm.Ibcast(array.reshape(-1), root=root))

    def broadcast_json(self, value, root=0):
        return self.allgather_json(value if self.rank == root else None)[root]

    def barrier(self):
        self._wait(self.comm.Ibarrier())


# ---- the world of this process ---------------------------------------------------------------------------
_world = None


def world():
    """This process's world: joins the MPI job at the first call when an MPI launcher started
    the process, else a world of one (MPI is not imported)."""
    global _world
    if _world is None:
        _world = _join() if launched_by_mpi() else World()
    return _world


def _join():
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise ImportError('this process was started by an MPI launcher (mpiexec, srun), and data-parallel '
                          'training needs mpi4py and an MPI runtime: pip install "fastnn[mpi]" '
                          f"({error})") from None
    return MPIWorld(MPI)


def _install_exit_handlers(mpi_world):
    """An exception nobody handles, on any rank, ends the whole job after its traceback (with the
    rank) is printed: the other ranks may be waiting in a collective this one will never join."""
    previous = sys.excepthook

    def excepthook(kind, value, tb):
        sys.stderr.write(f"[fastnn] rank {mpi_world.rank} of {mpi_world.size}: an unhandled "
                         f"{kind.__name__} ends the data-parallel job\n")
        previous(kind, value, tb)
        _abort(mpi_world, value)

    sys.excepthook = excepthook
    atexit.register(_abort_if_broken, mpi_world)


def _abort(mpi_world, error):
    """Ends the job from this rank. The failing rank waits a second first and the others two:
    every rank prints its line and mpiexec forwards the output before the first MPI_Abort
    ends them all."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        if mpi_world.broken is None and error is not None:
            mpi_world.fail(error)
        own = mpi_world.broken is None or mpi_world.broken.get("rank") == mpi_world.rank
        time.sleep(1.0 if own else 2.0)
    except Exception:  # noqa: BLE001 - ending the job matters more than telling the peers
        traceback.print_exc()
    mpi_world.MPI.COMM_WORLD.Abort(1)


def _abort_if_broken(mpi_world):
    """At exit after a failure the collectives are in disarray and MPI_Finalize could wait
    forever for them: end the job instead."""
    if mpi_world.broken is not None:
        _abort(mpi_world, None)
