"""A trained PSPNet for other runtimes.

``onnx.py`` writes the eval-mode network as an ONNX graph whose batch, height and width stay
dynamic (the pyramid's adaptive pooling rebuilt from the runtime shape, exact at every size)
and runs such a file in onnxruntime on the CPU, callable like the model itself (the inference
package's fast paths run through it). It needs the ``onnx`` extra
(``pip install 'pspnet[onnx]'``).
"""

from dataclasses import dataclass
from pathlib import Path

from pspnet.export.onnx import ExactAdaptivePool2d, OnnxRuntimeModel, export_onnx, exportable_copy
from pspnet.settings import check_settings, setting

__all__ = [
    "ExactAdaptivePool2d",
    "ExportSettings",
    "OnnxRuntimeModel",
    "export_onnx",
    "exportable_copy",
]


@dataclass(frozen=True)
class ExportSettings:
    """``pspnet export``: ONNX with dynamic batch, height and width.

    Attributes:
        checkpoint: a file, a registry name (pspnet models) or a URL.
        out: the file to write, e.g. model.onnx.
        size: the square example size traced.
        optimize: export with BN folded and the factorised head (--no-optimize: the plain
            graph).
    """

    checkpoint: str = setting(positional=True)
    out: Path = setting(positional=True)
    size: int = setting(473, low=1)
    optimize: bool = setting(True, flag="--no-optimize")

    def __post_init__(self) -> None:
        check_settings(self)
