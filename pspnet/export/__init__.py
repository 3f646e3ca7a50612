"""A trained PSPNet for other runtimes.

``onnx.py`` writes the eval-mode network as an ONNX graph whose batch, height and width stay
dynamic (the pyramid's adaptive pooling rebuilt from the runtime shape, exact at every size)
and runs such a file in onnxruntime on the CPU, callable like the model itself (the inference
package's fast paths run through it). It needs the ``onnx`` extra
(``pip install 'pspnet[onnx]'``).
"""

from pspnet.export.onnx import ExactAdaptivePool2d, OnnxRuntimeModel, export_onnx, exportable_copy

__all__ = ["ExactAdaptivePool2d", "OnnxRuntimeModel", "export_onnx", "exportable_copy"]
