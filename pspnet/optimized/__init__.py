"""Kept for code written against earlier versions: the fast paths live in
:mod:`pspnet.inference.optimized` now."""

from pspnet.inference.optimized import factorize_head, fold_batchnorm, optimize

__all__ = ["factorize_head", "fold_batchnorm", "optimize"]
