"""The gradient all-reduce overlapped with the backward pass, bucket by bucket (as PyTorch's
DDP does), in the same fixed rank order as ``World.sum_in_rank_order``.

The flat gradient buffer holds the trainable weights in layer order, and the backward walk
finishes the last layers' gradients first. The buffer is cut into buckets of consecutive
weights, about ``bucket_bytes`` each, from its end; a bucket is final once the walk has
passed the last node that writes any of its weights. Then its reduce-scatter starts (an
all-to-all of the bucket's shards), and between the following nodes the bucket moves on: its
shard summed in rank order, then its all-gather started. After the walk the rest is waited
for. Each number is still summed as rank 0 + rank 1 + ..., so the result is bit-identical
to the one all-reduce without buckets; what changes is that a network transfers the late
layers' gradients while the early layers' backward runs (bench/SCALING.md's model, from
steps measured here, predicts the CNN's step ~13 % shorter at 8-64 nodes on 10 Gb/s links).

MPI moves a bucket only when called: between the backward's nodes (``after_node``) and in
the final wait, not inside one long node (a big convolution). An MPI library's own progress
thread (MPICH: ``MPIR_CVAR_ASYNC_PROGRESS=1``) moves it there too, at the price of a core.

Collectives must start in the same order on every process: the reduce-scatters start in the
walk's order and the all-gathers in the order their reduce-scatters started, each kind on a
communicator of its own.
"""

import time

import numpy as np

BUCKET_BYTES = 256 * 1024  # DDP's 25 MB would make one bucket of every model in bench/


class Buckets:
    """The buckets of one backward plan over one gradient buffer."""

    def __init__(self, plan, grads, variables, bucket_bytes):
        base = grads.__array_interface__["data"][0]
        item = grads.itemsize
        spans = []  # (start, stop, variable) of each trainable weight in the buffer
        for v in variables:
            if v.grad is None or not np.shares_memory(v.grad, grads):
                continue
            start = (v.grad.__array_interface__["data"][0] - base) // item
            spans.append((start, start + v.grad.size, v))
        spans.sort(key=lambda s: s[0])
        # the walk step after which each weight's gradient is final (after the walk: never written)
        last = {}
        for i, entry in enumerate(plan.walk):
            for v in entry[-1]:
                last[id(v)] = i
        end_of_walk = len(plan.walk)
        ranges, ready = [], []
        stop, size, when = None, 0, -1
        for start, end, v in reversed(spans):  # from the buffer's end: the first layers to finish
            if stop is None:
                stop, size, when = end, 0, -1
            size += (end - start) * item
            when = max(when, last.get(id(v), end_of_walk))
            if size >= bucket_bytes:
                ranges.append((start, stop))
                ready.append(when)
                stop = None
        if stop is not None:
            ranges.append((spans[0][0], stop))
            ready.append(when)
        if ranges:  # the whole buffer, whatever lies outside the weights' spans
            ranges[0] = (ranges[0][0], grads.size)
            ranges[-1] = (0, ranges[-1][1])
        self.ranges = ranges
        # the order every process starts the reduce-scatters in: when final, then by position
        self.order = sorted(range(len(ranges)), key=lambda j: (ready[j], j))
        self.starts_after = {}  # walk step -> the buckets final after it
        for j, when in enumerate(ready):
            self.starts_after.setdefault(when, []).append(j)


class OverlappedSum:
    """One step's bucketed, overlapped sum of `grads` over the processes (see the module)."""

    def __init__(self, world, grads, buckets):
        self.world, self.grads, self.buckets = world, grads, buckets
        self.started = []  # bucket indices in the order their reduce-scatters started
        self.scatter = {}  # bucket -> (request, pieces, shard, counts, offsets)
        self.gathers = []  # all-gather requests, in start order
        self.next_gather = 0  # position in self.started of the next all-gather to start
        self.seconds = 0.0

    def after_node(self, i):
        """The backward walk has finished step i: start the buckets it made final, move the others."""
        begin = time.perf_counter()
        for j in self.buckets.starts_after.get(i, ()):
            self._start(j)
        self._progress()
        self.seconds += time.perf_counter() - begin

    def finish(self):
        """Starts what the walk left, waits for everything; the buffer then holds the sums."""
        begin = time.perf_counter()
        for j in self.buckets.order:  # (a process without a share of the batch starts them all here)
            if j not in self.scatter:
                self._start(j)
        while self.next_gather < len(self.started):
            j = self.started[self.next_gather]
            self.world._wait(self.scatter[j][0])
            self._gather(j)
        for request in self.gathers:
            self.world._wait(request)
        self.seconds += time.perf_counter() - begin
        stats = self.world.stats
        stats.allreduce_calls += 1
        stats.allreduce_seconds += self.seconds
        stats.allreduce_bytes += self.grads.nbytes

    def _start(self, j):
        world = self.world
        start, stop = self.buckets.ranges[j]
        view = self.grads[start:stop]
        counts, offsets = world._partition(stop - start)
        mine = int(counts[world.rank])
        pieces = world._buffer(("pieces", j), world.size * mine, view.dtype)
        request = world.scatter_comm.Ialltoallv(
            [view, (counts, offsets)], [pieces, ([mine] * world.size, [k * mine for k in range(world.size)])])
        self.scatter[j] = (request, pieces, mine, counts, offsets)
        self.started.append(j)

    def _progress(self):
        """Starts the next all-gathers whose reduce-scatters are done (in start order)."""
        while self.next_gather < len(self.started):
            j = self.started[self.next_gather]
            if not self.scatter[j][0].Test():
                return
            self._gather(j)

    def _gather(self, j):
        world = self.world
        _, pieces, mine, counts, offsets = self.scatter[j]
        start, stop = self.buckets.ranges[j]
        pieces = pieces.reshape(world.size, mine)
        shard = world._buffer(("shard", j), mine, self.grads.dtype)
        shard[...] = pieces[0]
        for k in range(1, world.size):
            shard += pieces[k]
        self.gathers.append(world.gather_comm.Iallgatherv(shard, [self.grads[start:stop], (counts, offsets)]))
        self.next_gather += 1
