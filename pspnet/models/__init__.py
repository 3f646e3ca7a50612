"""Neural network modules only: no data, no engine, no I/O beyond the model's own save."""

from pspnet.models.pspnet import ModelConfig, PSPNet
from pspnet.models.pyramid import PyramidPooling
from pspnet.models.resnet import ResNet

__all__ = ["ModelConfig", "PSPNet", "PyramidPooling", "ResNet"]
