"""Exact inference-time rewrites of a trained PSPNet: same logits to float rounding, less work.

``fold`` merges every BatchNorm into the convolution before it, ``factorized`` moves the
pyramid half of the head's 3x3 convolution to bin resolution, before the upsampling.
"""

from pspnet.fast.factorized import factorize_head
from pspnet.fast.fold import fold_batchnorm
from pspnet.fast.optimize import optimize

__all__ = ["factorize_head", "fold_batchnorm", "optimize"]
