"""Neural network modules only: no data, no engine, no weights files (see pspnet.checkpoints)."""

from pspnet.models.pspnet import ModelConfig, PSPNet
from pspnet.models.pyramid import PyramidPooling
from pspnet.models.resnet import ResNet

__all__ = ["ModelConfig", "PSPNet", "PyramidPooling", "ResNet"]
