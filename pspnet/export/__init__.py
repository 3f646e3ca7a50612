"""A trained PSPNet for other runtimes.

``onnx.py`` writes the eval-mode network as an ONNX graph whose batch, height and width stay
dynamic (the pyramid's adaptive pooling rebuilt from the runtime shape, exact at every size)
and runs such a file in onnxruntime on the CPU, callable like the model itself (the inference
package's fast paths run through it). It needs the ``onnx`` extra
(``pip install 'pspnet[onnx]'``). ``openvino.py`` compiles that graph with OpenVINO for the
CPU, writes it as an OpenVINO IR and runs either the same way (the ``openvino`` extra).
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pspnet.errors import ConfigError
from pspnet.export.onnx import ExactAdaptivePool2d, OnnxRuntimeModel, export_onnx, exportable_copy
from pspnet.export.openvino import OpenVinoModel, export_openvino
from pspnet.settings import check_settings, setting

__all__ = [
    "ExactAdaptivePool2d",
    "ExportSettings",
    "OnnxRuntimeModel",
    "OpenVinoModel",
    "export_onnx",
    "export_openvino",
    "exportable_copy",
]


@dataclass(frozen=True)
class ExportSettings:
    """``pspnet export``: ONNX or an OpenVINO IR with dynamic batch, height and width.

    Attributes:
        checkpoint: a file, a registry name (pspnet models) or a URL.
        out: the file to write, e.g. model.onnx, or model.xml for openvino (its weights go
            to model.bin beside it).
        size: the square example size traced.
        optimize: export with BN folded and the factorised head (--no-optimize: the plain
            graph).
        format: onnx, or openvino: the same graph as an OpenVINO IR with fp32 weights (needs
            pspnet[openvino]).
    """

    checkpoint: str = setting(positional=True)
    out: Path = setting(positional=True)
    size: int = setting(473, low=1)
    optimize: bool = setting(True, flag="--no-optimize")
    format: Literal["onnx", "openvino"] = "onnx"

    def __post_init__(self) -> None:
        check_settings(self)
        if self.format == "openvino" and Path(self.out).suffix != ".xml":
            raise ConfigError(
                f"--format openvino writes an IR: give OUT as an .xml file (got {self.out}); "
                "its weights go to the .bin beside it"
            )
