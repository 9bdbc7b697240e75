"""fastnn: a CPU-first neural-network library with a Keras-style API.

The hot paths are C++ kernels (Eigen + OpenMP) in the extension ``fastnn._core``;
``fastnn.ops`` is their documented Python face.

Example:
    >>> import numpy as np, fastnn
    >>> fastnn.ops.matmul(np.ones((2, 3), np.float32), np.ones((3, 4), np.float32)).shape
    (2, 4)
"""

from ._version import __version__
from . import _core
from ._config import get_num_threads, set_num_threads, show_config
from . import ops

__all__ = ["__version__", "get_num_threads", "set_num_threads", "show_config", "ops"]
