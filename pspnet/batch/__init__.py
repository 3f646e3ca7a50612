"""Segmenting large collections on a cluster engine that already exists: Ray Data.

(One machine's processes are torchrun's job: ``torchrun -m pspnet predict`` shards the
inputs over ranks, see :mod:`pspnet.predict`.) :class:`SegmentImages` is the callable class
``ray.data.Dataset.map_batches`` runs in an actor pool, one model per actor; it needs the
``ray`` extra (``pip install 'pspnet[ray]'``).
"""

from pspnet.batch.ray_data import SegmentImages, segment_with_ray

__all__ = ["SegmentImages", "segment_with_ray"]
