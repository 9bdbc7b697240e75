"""The pruning masks: which weights to keep, from their magnitudes (NumPy, a few passes per weight).

Each function returns a 0/1 array shaped and typed like the weights (1 keeps a weight, 0
zeroes it):

* ``magnitude_mask``: keeps the k = max(round(n·(1 − sparsity)), 1) weights of largest
  magnitude (tfmot's count; exactly k, ties broken deterministically by the selection);
* ``block_mask``: the same over blocks: the weights seen as a matrix (rows = every axis but
  the last, columns = the last), cut into ``block_size`` blocks (partial blocks at the edges),
  each block's magnitude pooled by "AVG" (the mean over its real weights, as TensorFlow's
  SAME pooling) or "MAX"; whole blocks are kept or zeroed;
* ``m_by_n_mask``: in every group of n consecutive weights along the input axis, zeroes the m
  smallest (2:4: keeps 2 of every 4); a last, partial group loses only what it holds beyond
  n − m weights.
"""

import numpy as np


def kept_count(size, sparsity):
    """How many of `size` weights a mask of `sparsity` keeps: max(round(size·(1 − sparsity)), 1)
    (round half to even, as tf.math.round), at most size."""
    if size == 0:
        return 0
    return int(min(max(np.round(size * (1.0 - sparsity)), 1), size))


def magnitude_mask(weights, sparsity):
    """Keeps the k largest |weights| (k = ``kept_count(weights.size, sparsity)``).

    Args:
        weights: array.
        sparsity: float in [0, 1): the fraction to zero.

    Returns:
        0/1 array shaped and typed like `weights`.
    """
    weights = np.asarray(weights)
    magnitudes = np.abs(weights).ravel()
    n = magnitudes.size
    k = kept_count(n, sparsity)
    mask = np.zeros(n, weights.dtype if weights.dtype.kind == "f" else np.float64)
    if k == n:
        mask[:] = 1
    elif k:
        mask[np.argpartition(magnitudes, n - k)[n - k:]] = 1
    return mask.reshape(weights.shape)


def _as_matrix(weights):
    """The weights as a matrix: every axis but the last as rows, the last as columns."""
    if weights.ndim == 0:
        return weights.reshape(1, 1)
    if weights.ndim == 1:
        return weights.reshape(1, -1)
    return weights.reshape(-1, weights.shape[-1])


def block_mask(weights, sparsity, block_size, pooling="AVG"):
    """Keeps the blocks of largest pooled magnitude (`block_size` = (rows, columns) of a block).

    Args:
        weights: array (seen as a matrix: rows = every axis but the last).
        sparsity: float in [0, 1): the fraction of blocks to zero.
        block_size: (int, int), each >= 1.
        pooling: "AVG" (mean |w| over the block's real weights) or "MAX".

    Returns:
        0/1 array shaped and typed like `weights`.
    """
    weights = np.asarray(weights)
    bh, bw = block_size
    if (bh, bw) == (1, 1):
        return magnitude_mask(weights, sparsity)
    matrix = np.abs(_as_matrix(weights)).astype(np.float64)
    rows, cols = matrix.shape
    grid_r, grid_c = -(-rows // bh), -(-cols // bw)
    padded = np.zeros((grid_r * bh, grid_c * bw))
    padded[:rows, :cols] = matrix
    blocks = padded.reshape(grid_r, bh, grid_c, bw)
    if pooling == "MAX":
        pooled = blocks.max(axis=(1, 3))  # the padding (0) never exceeds a magnitude
    else:
        counts = np.zeros_like(padded)
        counts[:rows, :cols] = 1
        pooled = blocks.sum(axis=(1, 3)) / counts.reshape(grid_r, bh, grid_c, bw).sum(axis=(1, 3))
    kept = magnitude_mask(pooled, sparsity)
    mask = np.repeat(np.repeat(kept, bh, axis=0), bw, axis=1)[:rows, :cols]
    return mask.reshape(weights.shape).astype(weights.dtype if weights.dtype.kind == "f" else np.float64)


def m_by_n_mask(weights, m_by_n, axis=0):
    """Zeroes the m smallest |weights| of every group of n consecutive ones along `axis`.

    Args:
        weights: array.
        m_by_n: (m, n) with 0 < m < n: m zeros in every n weights (tfmot's convention: (2, 4)
            keeps the 2 largest of every 4).
        axis: int, default 0: the input axis (Dense kernel (in, out): 0; Conv2D kernel
            (kh, kw, in, out): 2).

    Returns:
        0/1 array shaped and typed like `weights`.
    """
    weights = np.asarray(weights)
    m, n = m_by_n
    moved = np.moveaxis(np.abs(weights).astype(np.float64), axis, -1)
    width = moved.shape[-1]
    rows = moved.reshape(-1, width)
    groups = -(-width // n)
    # Padding ranks below every real magnitude: a partial group drops its padding first.
    padded = np.full((rows.shape[0], groups * n), -1.0)
    padded[:, :width] = rows
    grouped = padded.reshape(rows.shape[0], groups, n)
    mask = np.ones_like(grouped)
    smallest = np.argpartition(grouped, m - 1, axis=-1)[..., :m]
    np.put_along_axis(mask, smallest, 0.0, axis=-1)
    mask = mask.reshape(rows.shape[0], groups * n)[:, :width].reshape(moved.shape)
    return np.moveaxis(mask, -1, axis).astype(weights.dtype if weights.dtype.kind == "f" else np.float64)
