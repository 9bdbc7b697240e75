"""The Python face of fastnn's C++ kernels.

Every function here makes one call into ``fastnn._core`` and releases the GIL while the
kernel runs. Inputs follow one contract:

* float32 and float64 C-contiguous NumPy arrays pass through without a copy;
* other array-likes (lists, integer or bool arrays, float16, non-contiguous views) are
  converted once to a C-contiguous array of the call's dtype;
* the call's dtype is that of its float32/float64 array arguments, which must agree
  (mixing float32 and float64 raises ``TypeError`` rather than casting silently); it is
  float32 when no argument is such an array;
* bad input raises ``TypeError`` or ``ValueError`` naming the argument, what was
  expected and what came. NaN and inf propagate as in NumPy.
"""

from .gemm import linear, matmul

__all__ = ["matmul", "linear"]
