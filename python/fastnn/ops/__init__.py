"""The Python face of fastnn's C++ kernels, and array maths with Keras 3 names.

Kernel functions make one call into ``fastnn._core`` and release the GIL while it runs.
Inputs follow one contract:

* float32 and float64 C-contiguous NumPy arrays pass through without a copy;
* other array-likes (lists, integer or bool arrays, float16, non-contiguous views) are
  converted once to a C-contiguous array of the call's dtype;
* the call's dtype is that of its float32/float64 array arguments, which must agree
  (mixing float32 and float64 raises ``TypeError`` rather than casting silently); it is
  float32 when no argument is such an array;
* bad input raises ``TypeError`` or ``ValueError`` naming the argument, what was
  expected and what came. NaN and inf propagate as in NumPy.

The maths functions (``mean``, ``square``, ``log``, ``clip``, ``where``...) compute with
NumPy and are differentiable: custom losses written with them train without a
hand-written gradient (see ``fastnn.autodiff``).
"""

import types as _types

from .attention import attention_backward, attention_forward, dot_product_attention
from .conv import conv, conv_backward
from .gemm import linear, matmul
from .image import affine_transform, affine_transform_backward
from .math import (abs, absolute, add, arange, argmax, cast, clip, concatenate, convert_to_numpy, convert_to_tensor,
                   cos, divide, equal, exp, expand_dims, expm1, greater, greater_equal, less,
                   less_equal, log, log1p, log_softmax, logsumexp, max, maximum, mean, min,
                   minimum, multiply, negative, not_equal, one_hot, ones, ones_like, power, relu,
                   reshape, shape, sigmoid, sin, softmax, softplus, sqrt, square, squeeze, stack,
                   stop_gradient, subtract, sum, take_index, tanh, transpose, where, zeros,
                   zeros_like)
from .nn import (activation_backward, activation_forward, activation_needs_input, dense, dense_backward, dropout,
                 dropout_backward, prelu, prelu_backward)
from .optim import (adadelta_update, adagrad_update, adam_update, clip_by_value, ema_update, l1_l2_regularize,
                    nadam_update, rmsprop_update, scale_segments, sgd_update, sum_squares)
from .pool import (average_pool, average_pool_backward, global_average_pool, global_average_pool_backward,
                   global_max_pool, global_max_pool_backward, global_max_pool_with_argmax, max_pool,
                   max_pool_backward, max_pool_with_argmax, upsample2d, upsample2d_backward, zero_pad2d,
                   zero_pad2d_backward)
from .rnn import (embedding, embedding_backward, gru, gru_backward, lstm, lstm_backward, lstm_cell,
                  lstm_cell_backward, simple_rnn, simple_rnn_backward)
from .normalization import (batch_norm_backward, batch_norm_forward, batch_normalization, layer_norm_backward,
                            layer_norm_forward, layer_normalization, rms_normalization)

# The public names: every function imported above, and not the submodules they come from
# (computed, so that a function added to an import line above is exported with nothing else to edit).
__all__ = [_name for _name, _value in list(globals().items())
           if not _name.startswith("_") and not isinstance(_value, _types.ModuleType)]
