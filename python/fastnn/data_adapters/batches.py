"""One batch as a generator, iterable or PyDataset gives it: unpacked into (x, y, sample_weight)
as Keras does, its tensors turned into NumPy arrays."""

import numpy as np

from ..structure import map_leaves

__all__ = ["pack_x_y_sample_weight", "standardize_batch", "to_numpy", "unpack_x_y_sample_weight"]


def unpack_x_y_sample_weight(data):
    """Unpacks a batch into ``(x, y, sample_weight)`` (Keras' ``keras.utils.unpack_x_y_sample_weight``).

    For ``train_step`` / ``test_step`` / ``predict_step`` overrides, which receive the batch as
    fit / evaluate / predict got it.

    Args:
        data: ``x``, ``(x,)``, ``(x, y)`` or ``(x, y, sample_weight)`` (a list counts as a tuple).

    Returns:
        ``(x, y, sample_weight)``, with None for what the batch does not hold.

    Raises:
        ValueError: a tuple of more than 3 elements.

    Example:
        >>> x, y, sample_weight = unpack_x_y_sample_weight((features, labels))
        >>> sample_weight is None
        True
    """
    if isinstance(data, list):
        data = tuple(data)
    if not isinstance(data, tuple):
        return data, None, None
    if len(data) == 1:
        return data[0], None, None
    if len(data) == 2:
        return data[0], data[1], None
    if len(data) == 3:
        return data
    raise ValueError(f"unpack_x_y_sample_weight: expected x, (x,), (x, y) or (x, y, sample_weight), got a tuple "
                     f"of {len(data)} elements")


def pack_x_y_sample_weight(x, y=None, sample_weight=None):
    """Packs ``x`` (and ``y``, ``sample_weight``) as fit passes a batch to ``train_step``
    (Keras' ``keras.utils.pack_x_y_sample_weight``).

    Args:
        x: the inputs. y: the targets, default None. sample_weight: default None.

    Returns:
        ``x`` alone (``(x,)`` when x is a list or tuple), ``(x, y)`` or ``(x, y, sample_weight)``.
    """
    if y is None:
        return (x,) if isinstance(x, (list, tuple)) else x
    if sample_weight is None:
        return x, y
    return x, y, sample_weight


def _leaf_to_numpy(value):
    if value is None or isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor (maybe on a device, with grad)
        return value.detach().cpu().numpy()
    if hasattr(value, "__array__"):
        return np.asarray(value)
    return value


def to_numpy(structure):
    """`structure` (nested tuples, lists, dicts) with each tensor (anything with ``__array__``,
    e.g. a torch or TensorFlow tensor) turned into a NumPy array; other leaves as they are."""
    return map_leaves(structure, _leaf_to_numpy)


def _describe(batch):
    if isinstance(batch, (list, tuple)):
        return f"a {type(batch).__name__} of {len(batch)} elements"
    if isinstance(batch, np.ndarray):
        return f"an array of shape {batch.shape}"
    return f"a {type(batch).__name__}"


def standardize_batch(batch, who, targets):
    """``(x, y, sample_weight)`` of one batch, its tensors as NumPy arrays.

    Args:
        batch: what the source yielded.
        who: the caller and batch, for messages (e.g. "fit (batch 3 from the generator 'x')").
        targets: bool: the batch must hold targets (fit, evaluate); for predict a bare ``x``
            is a batch too.

    Raises:
        ValueError: a tuple of another length, or no targets where they are needed.
    """
    if isinstance(batch, list):
        batch = tuple(batch)
    if isinstance(batch, tuple):
        if not 1 <= len(batch) <= 3:
            raise ValueError(f"{who}: a batch must be (x, y) or (x, y, sample_weight)"
                             f"{' (or x, or (x,) for predict)' if not targets else ''}, got {_describe(batch)}")
        x, y, sample_weight = batch + (None,) * (3 - len(batch))
    else:
        x, y, sample_weight = batch, None, None
    if targets and y is None:
        raise ValueError(f"{who}: the batch has no targets: it must be (x, y) or (x, y, sample_weight), got "
                         f"{_describe(batch)}")
    if x is None:
        raise ValueError(f"{who}: the batch has no inputs (x is None)")
    return to_numpy(x), to_numpy(y), to_numpy(sample_weight)
