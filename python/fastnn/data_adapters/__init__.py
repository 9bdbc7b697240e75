"""Input pipelines for fit / evaluate / predict: batches from a generator, an iterable or a PyDataset.

NumPy arrays (and anything ``np.asarray`` takes: lists, tensors, data frames) take the
trainer's own fast path: converted and checked once, batches gathered into preallocated
buffers. Everything that yields batches goes through here, as in Keras 3:

* ``adapters``: where batches come from (a generator or iterator, a re-iterable object such
  as a ``torch.utils.data.DataLoader``, a ``fastnn.utils.PyDataset`` loaded ahead by background
  workers (``enqueuer``), or arrays cut into batches for a step override);
* ``epoch_iterator``: how epochs map onto passes over the source (``steps_per_epoch``);
* ``batches``: one batch unpacked into ``(x, y, sample_weight)``, tensors made NumPy arrays.

The trainer checks and converts each batch as it checks arrays (the same messages, naming the
batch), builds an unbuilt model from the first batch, and trains.
"""

import numpy as np

from ..utils.py_dataset import PyDataset
from .adapters import ArrayAdapter, DataAdapter, GeneratorAdapter, IterableAdapter, PyDatasetAdapter
from .batches import pack_x_y_sample_weight, standardize_batch, to_numpy, unpack_x_y_sample_weight
from .epoch_iterator import EpochIterator

__all__ = ["ArrayAdapter", "DataAdapter", "EpochIterator", "GeneratorAdapter", "IterableAdapter",
           "PyDatasetAdapter", "get_data_adapter", "is_batch_source", "pack_x_y_sample_weight",
           "standardize_batch", "to_numpy", "unpack_x_y_sample_weight"]

_ARRAY_LIKE = (np.ndarray, list, tuple, dict, str, bytes, range, set, frozenset)


def is_batch_source(x):
    """Whether `x` yields batches (a PyDataset, a generator or iterator, or another iterable
    that is not array-like), rather than being the data itself."""
    if isinstance(x, PyDataset):
        return True
    if x is None or isinstance(x, _ARRAY_LIKE) or hasattr(x, "__array__") or hasattr(x, "__array_interface__"):
        return False
    return hasattr(x, "__next__") or hasattr(x, "__iter__")


def _describe_source(x):
    if isinstance(x, PyDataset):
        return "a PyDataset"
    return "a generator" if hasattr(x, "__next__") else f"an iterable ({type(x).__name__})"


def get_data_adapter(x, who, y=None, sample_weight=None, batch_size=None, shuffle=False, name="x",
                     validation_split=0.0):
    """The adapter for `x` when it yields batches, after Keras' checks of the arguments that
    do not go with it; None when `x` is array data.

    Args:
        x: what fit / evaluate / predict got.
        who: str: the caller, for messages ("fit", "fit (validation_data)", ...).
        y, sample_weight, batch_size: the call's arguments, default None: must be None with a
            batch source.
        shuffle: bool, default False: shuffle a PyDataset's batch order per pass (fit);
            ignored for other sources.
        name: str, default "x": the argument's name, for messages.
        validation_split: float, default 0.0: fit's (must be 0 with a batch source).

    Raises:
        ValueError: y, sample_weight, batch_size or validation_split given with a batch source.
    """
    if not is_batch_source(x):
        return None
    what = _describe_source(x)
    for arg, value, instead in (("y", y, "the targets"), ("sample_weight", sample_weight, "the sample weights")):
        if value is not None:
            raise ValueError(f"{who}: '{name}' is {what}, so '{arg}' must not be given: {instead} come from the "
                             f"batches it yields, (x, y) or (x, y, sample_weight)")
    if batch_size is not None:
        raise ValueError(f"{who}: do not specify '{'validation_batch_size' if 'validation' in name else 'batch_size'}'"
                         f" when '{name}' is {what} (got {batch_size!r}): it yields whole batches")
    if validation_split:
        raise ValueError(f"{who}: 'validation_split' needs array data, but '{name}' is {what}; give "
                         "'validation_data' instead")
    if isinstance(x, PyDataset):
        return PyDatasetAdapter(x, shuffle=shuffle, who=who)
    if hasattr(x, "__next__"):
        return GeneratorAdapter(x)
    return IterableAdapter(x)
