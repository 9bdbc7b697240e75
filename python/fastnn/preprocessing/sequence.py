"""Sequence preprocessing: ``pad_sequences`` (Keras' ``keras.utils.pad_sequences``).

Also reachable as ``fastnn.preprocessing.pad_sequences`` and ``fastnn.utils.pad_sequences``,
the two places Keras exports it. This module only needs NumPy.
"""

import numbers

import numpy as np


def pad_sequences(sequences, maxlen=None, dtype="int32", padding="pre", truncating="pre", value=0.0):
    """Pads (and truncates) sequences to a common length, as Keras' ``pad_sequences``.

    Turns a list of ``num_samples`` sequences into one array of shape
    ``(num_samples, maxlen) + sample_shape``. Sequences shorter than `maxlen` are filled
    with `value`, longer ones are cut; `padding` and `truncating` say on which side. The
    elements of a sequence are scalars (``sample_shape == ()``) or arrays of one common
    shape, the trailing ``sample_shape``, taken from the first non-empty sequence.

    Args:
        sequences: list (or other iterable) of sequences, each a list, tuple or array,
            possibly empty.
        maxlen: non-negative int, default None: the length of the longest sequence.
        dtype: the output dtype, default ``"int32"``; every sequence is converted to it
            (``np.asarray(seq, dtype)``, so floats become ints by truncation toward zero
            for an integer dtype). Use ``object`` to pad variable-length strings.
        padding: ``"pre"`` (default) or ``"post"``: fill before or after each sequence.
        truncating: ``"pre"`` (default) or ``"post"``: drop the surplus steps of a long
            sequence from its beginning or from its end.
        value: the fill value, default 0.0 (cast to `dtype`, as ``np.full`` does).

    Returns:
        NumPy array of shape ``(len(sequences), maxlen) + sample_shape`` and dtype `dtype`.

    Raises:
        ValueError: `sequences` is not an iterable of sequences (Keras raises ValueError
            here too); a sequence whose elements do not share one shape, or whose element
            shape differs from the first non-empty sequence's; `padding` or `truncating`
            not ``"pre"`` / ``"post"``; a negative `maxlen`; a string `value` with a dtype
            that is neither a string dtype nor ``object`` (as Keras).
        TypeError: `maxlen` not an int, or `dtype` not a NumPy dtype.

    Example:
        >>> pad_sequences([[1], [2, 3], [4, 5, 6]])
        array([[0, 0, 1],
               [0, 2, 3],
               [4, 5, 6]], dtype=int32)
        >>> pad_sequences([[1], [2, 3], [4, 5, 6]], maxlen=2, padding="post", value=-1)
        array([[ 1, -1],
               [ 2,  3],
               [ 5,  6]], dtype=int32)
    """
    for name, given in (("padding", padding), ("truncating", truncating)):
        if not (isinstance(given, str) and given in ("pre", "post")):
            raise ValueError(f"pad_sequences: '{name}' must be 'pre' or 'post', got {given!r}")
    if maxlen is not None:
        if isinstance(maxlen, bool) or not isinstance(maxlen, numbers.Integral):
            raise TypeError(f"pad_sequences: 'maxlen' must be a non-negative int or None, got {maxlen!r}")
        maxlen = int(maxlen)
        if maxlen < 0:
            raise ValueError(f"pad_sequences: 'maxlen' must be a non-negative int or None, got {maxlen}")
    if dtype is not None:
        try:
            np_dtype = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"pad_sequences: 'dtype' {dtype!r} is not a NumPy dtype") from None
        # Keras: a string fill value needs a string dtype or object.
        if isinstance(value, str) and np_dtype.kind not in "OUS":
            raise ValueError(f"pad_sequences: 'dtype' {dtype!r} is not compatible with the string 'value' "
                             f"{value!r}; use dtype=object for variable-length strings")
    elif isinstance(value, str):  # Keras checks dtype=None the same way
        raise ValueError(f"pad_sequences: 'dtype' None is not compatible with the string 'value' {value!r}; "
                         "use dtype=object for variable-length strings")

    seqs = _as_sequence_list(sequences)
    lengths = [len(s) for s in seqs]
    if maxlen is None:
        maxlen = max(lengths, default=0)

    sample_shape = ()
    for idx, s in enumerate(seqs):
        if len(s):  # the first non-empty sequence fixes the element shape
            sample_shape = _as_array(s, dtype, idx).shape[1:]
            break

    out = np.full((len(seqs), maxlen) + sample_shape, value, dtype=dtype)
    for idx, s in enumerate(seqs):
        if not len(s) or maxlen == 0:
            continue
        kept = s[-maxlen:] if truncating == "pre" else s[:maxlen]
        kept = _as_array(kept, out.dtype, idx)
        if kept.shape[1:] != sample_shape:
            raise ValueError(f"pad_sequences: the elements of the sequence at position {idx} have shape "
                             f"{kept.shape[1:]}, expected {sample_shape} (the shape of the first non-empty "
                             "sequence's elements)")
        if padding == "pre":
            out[idx, maxlen - len(kept):] = kept
        else:
            out[idx, :len(kept)] = kept
    return out


def _as_sequence_list(sequences):
    """`sequences` as a list whose items support len() and slicing (lists or arrays)."""
    if isinstance(sequences, (str, bytes)):
        raise ValueError("pad_sequences: 'sequences' must be an iterable of sequences, got a single string")
    try:
        items = list(sequences)
    except TypeError:
        raise ValueError("pad_sequences: 'sequences' must be an iterable of sequences (lists or arrays), "
                         f"got {type(sequences).__name__}") from None
    seqs = []
    for idx, s in enumerate(items):
        if isinstance(s, np.ndarray):
            if s.ndim == 0:
                raise ValueError(f"pad_sequences: 'sequences' must hold sequences; the item at position {idx} is a "
                                 f"0-d array ({s!r})")
            seqs.append(s)
            continue
        if isinstance(s, (str, bytes)):
            raise ValueError(f"pad_sequences: 'sequences' must hold sequences; the item at position {idx} is a "
                             f"single string ({s!r}): wrap it in a list")
        try:
            seqs.append(s if isinstance(s, (list, tuple)) else list(s))
        except TypeError:
            raise ValueError(f"pad_sequences: 'sequences' must hold sequences; the item at position {idx} is not "
                             f"iterable: {s!r}") from None
    return seqs


def _as_array(seq, dtype, idx):
    try:
        return np.asarray(seq, dtype=dtype)
    except ValueError as err:
        raise ValueError(f"pad_sequences: the sequence at position {idx} cannot be made an array of dtype "
                         f"{dtype} (elements of different shapes, or values not convertible): {err}") from err


__all__ = ["pad_sequences"]
