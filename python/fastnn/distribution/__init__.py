"""Data-parallel training over processes (Keras 3's ``keras.distribution`` names).

The same script trains on one process or many::

    import fastnn as keras
    keras.distribution.set_distribution(keras.distribution.DataParallel())
    model.fit(x, y, batch_size=256, epochs=5)   # batch_size: the global batch

``python train.py`` runs it on this process alone, exactly as without the two lines;
``mpiexec -n 4 python train.py`` (MPI from ``pip install "fastnn[mpi]"``) runs it on four
processes, each training on a quarter of every batch, the flat gradient buffer summed over
the processes once per step in a fixed rank order (runs are bit-identical for a given number
of processes), across machines in buckets overlapped with the backward (``buckets``). See
``replicas`` for the semantics (weights and optimizer state from rank 0, global logs,
callbacks that write run on rank 0, BatchNormalization statistics averaged at each epoch's
end) and ``world`` for failures (a failing rank stops them all, naming itself).
"""

from .distribution_lib import (DataParallel, DeviceMesh, Distribution, distribution, get_device_count, initialize,
                               list_devices, num_processes, process_id, set_distribution)
from .world import DistributedError

__all__ = ["DataParallel", "DeviceMesh", "Distribution", "DistributedError", "distribution", "get_device_count",
           "initialize", "list_devices", "num_processes", "process_id", "set_distribution"]
