"""Fast PSPNet inference: exact rewrites (same logits to float rounding), bf16, fp16 and int8.

``fold`` merges every BatchNorm into the convolution before it, ``factorized`` moves the
pyramid half of the head's 3x3 convolution to bin resolution, before the upsampling;
``reduced`` casts a rewritten model for bf16 or fp16 inference, ``int8`` quantises its ONNX
export (for ONNX Runtime or OpenVINO), ``optimize`` picks and runs a path, and ``measured``
keeps what ``pspnet benchmark --save`` measured, which ``auto`` follows.
"""

from pspnet.inference.optimized.factorized import factorize_head
from pspnet.inference.optimized.fold import fold_batchnorm
from pspnet.inference.optimized.optimize import optimize

__all__ = ["factorize_head", "fold_batchnorm", "optimize"]
