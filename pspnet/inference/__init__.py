"""Running a trained PSPNet: the one inference routine, its result and the Python API.

- :mod:`.protocol`: the test protocol (scales, sliding windows, flips), the network's stride
  logits assembled into labels, confidence and probabilities by :mod:`.bands`, a band of
  output rows at a time, so memory follows the image and not classes x pixels;
- :mod:`.result`: :class:`Segmentation`, what every output is made of;
- :mod:`.segmenter`: :class:`Segmenter`, a loaded checkpoint with its settings and fast path;
- :mod:`.optimized`: the exact rewrites and reduced precisions, picked by ``optimize``.

``predict``, ``serve``, ``pspnet.batch``, the demo and ``eval`` are adapters over these.
"""

from pspnet.inference.protocol import Network, RawSegmentation, segment_tensor
from pspnet.inference.result import UNKNOWN, Segmentation
from pspnet.inference.segmenter import Segmenter

__all__ = ["UNKNOWN", "Network", "RawSegmentation", "Segmentation", "Segmenter", "segment_tensor"]
