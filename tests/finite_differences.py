"""Central finite differences, the independent reference of the gradient tests of graphs."""

import numpy as np


def numeric_gradient(loss, target, h=1e-6):
    """d loss() / d target by central differences, perturbing the array `target` in place."""
    fd = np.zeros(target.shape, np.float64)
    for i in np.ndindex(target.shape):
        keep = target[i]
        target[i] = keep + h
        up = loss()
        target[i] = keep - h
        down = loss()
        target[i] = keep
        fd[i] = (up - down) / (2 * h)
    return fd
