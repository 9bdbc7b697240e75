"""Keras 3's distribution API over processes: each process of an MPI job is one device.

``set_distribution(DataParallel())`` makes ``fit``/``evaluate`` data-parallel over the
processes that ``mpiexec -n N`` started (see ``fastnn.distribution.replicas`` for what a
step does); under ``python train.py`` the world is one process and nothing changes.
"""

import contextlib

import numpy as np

from . import buckets as buckets_module
from . import world as world_module

_current = None


def process_id():
    """This process's rank, 0 to ``num_processes() - 1`` (0 when not started by an MPI launcher)."""
    return world_module.world().rank


def num_processes():
    """The number of processes of the job (1 when not started by an MPI launcher)."""
    return world_module.world().size


def list_devices(device_type=None):
    """The devices of the job: one per process, ``["cpu:0", ..., "cpu:N-1"]``.

    A process runs its kernels on all the cores it is given (its threads), so the unit of
    data parallelism is the process.

    Args:
        device_type: None or "cpu" (default None). fastnn has no GPU or TPU devices.

    Raises:
        ValueError: another device type.
    """
    _check_device_type(device_type, "list_devices")
    return [f"cpu:{r}" for r in range(num_processes())]


def get_device_count(device_type=None):
    """The number of devices, ``len(list_devices(device_type))``.

    Args:
        device_type: None or "cpu" (default None).
    """
    _check_device_type(device_type, "get_device_count")
    return num_processes()


def _check_device_type(device_type, who):
    if device_type is not None and (not isinstance(device_type, str) or device_type.lower() != "cpu"):
        raise ValueError(f"{who}: 'device_type' must be None or 'cpu' (fastnn runs on CPUs), got {device_type!r}")


def initialize(job_addresses=None, num_processes=None, process_id=None):
    """Joins the processes of the job (Keras' signature); under MPI the launcher has said it all.

    The launcher (``mpiexec -n N``, ``srun``) starts the processes and tells each its rank, so
    this only checks what it is given against them; calling it is optional (the first
    ``DataParallel()`` or ``process_id()`` joins the job). Keras' environment variables
    ``KERAS_DISTRIBUTION_NUM_PROCESSES`` / ``KERAS_DISTRIBUTION_PROCESS_ID`` are checked too.

    Args:
        job_addresses: None (default), or the job's addresses, which MPI does not need
            (accepted for Keras scripts and ignored).
        num_processes: None (default) or the int the launcher must have started.
        process_id: None (default) or this process's expected rank.

    Raises:
        ValueError: the numbers differ from the launcher's (for instance num_processes=4 in a
            script started without mpiexec).
    """
    import os

    if num_processes is None and "KERAS_DISTRIBUTION_NUM_PROCESSES" in os.environ:
        num_processes = int(os.environ["KERAS_DISTRIBUTION_NUM_PROCESSES"])
    if process_id is None and "KERAS_DISTRIBUTION_PROCESS_ID" in os.environ:
        process_id = int(os.environ["KERAS_DISTRIBUTION_PROCESS_ID"])
    world = world_module.world()
    for name, given, actual in (("num_processes", num_processes, world.size), ("process_id", process_id, world.rank)):
        if given is None:
            continue
        if isinstance(given, bool) or not isinstance(given, (int, np.integer)):
            raise TypeError(f"initialize: '{name}' must be an int or None, got {given!r}")
        if given != actual:
            hint = "" if world.size > 1 else " (start the script with mpiexec -n N python script.py)"
            raise ValueError(f"initialize: '{name}' is {given}, but the launcher started this process as rank "
                             f"{world.rank} of {world.size}{hint}")


class DeviceMesh:
    """A named grid of devices (Keras' DeviceMesh); data parallelism uses a 1-D one.

    Args:
        shape: tuple of ints, the mesh's shape (its product is the number of devices).
        axis_names: sequence of str, one name per axis.
        devices: None (default: ``list_devices()``) or a list of device names such as "cpu:0".
    """

    def __init__(self, shape, axis_names, devices=None):
        if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
            shape = (int(shape),)
        if not isinstance(shape, (tuple, list)) or not all(
                isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in shape):
            raise ValueError(f"DeviceMesh: 'shape' must be a tuple of ints >= 1, got {shape!r}")
        axis_names = [axis_names] if isinstance(axis_names, str) else list(axis_names)
        if len(axis_names) != len(shape) or not all(isinstance(a, str) for a in axis_names):
            raise ValueError(f"DeviceMesh: 'axis_names' must be {len(shape)} strings (one per axis of shape "
                             f"{tuple(shape)}), got {axis_names!r}")
        devices = list_devices() if devices is None else [str(d) for d in np.asarray(devices).ravel()]
        if len(devices) != int(np.prod(shape)):
            raise ValueError(f"DeviceMesh: shape {tuple(shape)} holds {int(np.prod(shape))} devices, got "
                             f"{len(devices)} devices")
        self._shape = tuple(int(s) for s in shape)
        self._axis_names = axis_names
        self._devices = np.array(devices, dtype=object).reshape(self._shape)

    @property
    def shape(self):
        return self._shape

    @property
    def axis_names(self):
        return self._axis_names

    @property
    def devices(self):
        return self._devices

    def __repr__(self):
        return f"<DeviceMesh shape={self._shape}, axis_names={self._axis_names}>"


class Distribution:
    """Base class of the distributions (Keras' names): the mesh, the batch axis, the scope.

    Args:
        device_mesh: a DeviceMesh.
        batch_dim_name: str or None, default None.
        auto_shard_dataset: bool, default True: each process takes its share of every batch
            of the (same) dataset; False: each process was given its own part of the data.
    """

    def __init__(self, device_mesh, batch_dim_name=None, auto_shard_dataset=True):
        if not isinstance(auto_shard_dataset, (bool, np.bool_)):
            raise TypeError(f"{type(self).__name__}: 'auto_shard_dataset' must be a bool, got {auto_shard_dataset!r}")
        self._device_mesh = device_mesh
        self._batch_dim_name = batch_dim_name
        self._auto_shard_dataset = bool(auto_shard_dataset)
        self._num_processes = num_processes()
        self._process_id = process_id()

    @property
    def device_mesh(self):
        return self._device_mesh

    @property
    def batch_dim_name(self):
        return self._batch_dim_name

    @property
    def auto_shard_dataset(self):
        return self._auto_shard_dataset

    @auto_shard_dataset.setter
    def auto_shard_dataset(self, value):
        self._auto_shard_dataset = bool(value)

    @property
    def num_processes(self):
        """Total number of processes in the job."""
        return self._num_processes

    @property
    def process_id(self):
        return self._process_id

    @property
    def num_model_replicas(self):
        return self._num_processes

    @property
    def num_data_shards(self):
        """Total number of data shards: one per process."""
        return self._num_processes

    @property
    def data_shard_id(self):
        """The shard of the data this process trains on: its rank."""
        return self._process_id

    @contextlib.contextmanager
    def scope(self):
        """``with distribution.scope():`` makes it the current distribution for the block."""
        original = distribution()
        set_distribution(self)
        try:
            yield
        finally:
            set_distribution(original)

    def __repr__(self):
        return f"<{type(self).__name__} device_mesh={self.device_mesh}>"


class DataParallel(Distribution):
    """Data parallelism over the processes of an MPI job: every process holds the whole model,
    trains on its share of each batch, and the gradients are summed over the processes.

    ``batch_size`` stays the global batch. Launched as ``mpiexec -n 4 python train.py``, the
    same script trains on 4 processes; as ``python train.py``, on one, exactly as without it.

    Args:
        device_mesh: None (default) or a 1-D DeviceMesh over ``list_devices()``.
        devices: None (default: all processes) or the list of ``list_devices()``; a subset
            is refused (every process of the job trains).
        auto_shard_dataset: bool, default True: every process is given the same data and
            takes its share of each batch; False: each process was given its own part (its
            batches are its share of the global batch, ``batch_size // num_processes()``).
        bucket_bytes: "auto", an int > 0 or None; keyword only, default "auto" (fastnn's
            argument, not Keras'): the gradients are summed over the processes in buckets of
            about this many bytes, each as soon as the backward has finished it, so that the
            network carries them while the rest of the backward runs (as PyTorch's DDP with
            its ``bucket_cap_mb``); None: one all-reduce after the backward. "auto": buckets
            of 256 KiB when the processes span several machines, None when they share one
            (there the copies run on the cores the backward needs, so overlapping gains
            nothing). The sums are bit-identical either way.

    Example:
        >>> import fastnn as keras
        >>> keras.distribution.set_distribution(keras.distribution.DataParallel())
    """

    def __init__(self, device_mesh=None, devices=None, auto_shard_dataset=True, *, bucket_bytes="auto"):
        if bucket_bytes == "auto":
            world = world_module.world()
            bucket_bytes = buckets_module.BUCKET_BYTES if world.local_size < world.size else None
        elif bucket_bytes is not None and (isinstance(bucket_bytes, (bool, np.bool_))
                                           or not isinstance(bucket_bytes, (int, np.integer)) or bucket_bytes <= 0):
            raise ValueError(f"DataParallel: 'bucket_bytes' must be 'auto', an int > 0 or None, got {bucket_bytes!r}")
        self.bucket_bytes = None if bucket_bytes is None else int(bucket_bytes)
        every = list_devices()
        if device_mesh is not None and devices is not None:
            raise ValueError("DataParallel: give 'device_mesh' or 'devices', not both")
        if device_mesh is not None:
            if not isinstance(device_mesh, DeviceMesh):
                raise ValueError(f"DataParallel: 'device_mesh' must be a DeviceMesh, got {type(device_mesh).__name__}")
            if len(device_mesh.shape) != 1:
                raise ValueError(f"DataParallel: 'device_mesh' must be 1-D (data parallelism only), got shape "
                                 f"{device_mesh.shape}")
            mesh = device_mesh
        else:
            mesh = DeviceMesh((len(every),), ["batch"], every if devices is None else devices)
        if sorted(mesh.devices.ravel().tolist()) != sorted(every):
            raise ValueError(f"DataParallel: the devices must be every process of the job {every}, got "
                             f"{mesh.devices.ravel().tolist()}")
        super().__init__(mesh, mesh.axis_names[0], auto_shard_dataset)


def distribution():
    """The current distribution (None when training runs on this process alone)."""
    return _current


def set_distribution(value):
    """Sets the distribution ``fit``/``evaluate`` use from now on (None: this process alone).

    Args:
        value: a DataParallel, or None.

    Raises:
        TypeError: anything else.
    """
    global _current
    if value is not None and not isinstance(value, Distribution):
        raise TypeError(f"set_distribution: expected a DataParallel or None, got {type(value).__name__}")
    _current = value
