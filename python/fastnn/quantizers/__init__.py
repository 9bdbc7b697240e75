"""Quantization (Keras 3's ``keras.quantizers``) and the int8 products quantized layers use.

``abs_max_quantize`` is Keras' symmetric quantizer; ``pack_int8``, ``int8_matmul`` and
``int8_dense`` run the int8 kernels (AVX-512 VNNI, AVX2 or plain C++, chosen at run time).
``model.quantize("int8")`` applies them to a whole model (``quantize_model``).
"""

from .abs_max import AbsMaxQuantizer, abs_max_quantize
from .int8 import PackedInt8, int8_best_path, int8_conv, int8_dense, int8_matmul, int8_path, pack_int8, set_int8_path

__all__ = ["AbsMaxQuantizer", "PackedInt8", "abs_max_quantize", "int8_best_path", "int8_conv", "int8_dense", "int8_matmul",
           "int8_path", "pack_int8", "set_int8_path"]
