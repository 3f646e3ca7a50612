"""PSPNet, the Pyramid Scene Parsing Network (Zhao et al., CVPR 2017), for PyTorch."""

from pspnet.limits import set_decoder_ceiling

set_decoder_ceiling()  # before anything below imports OpenCV

# ruff: noqa: E402

from pspnet.checkpoints import build_model, load_checkpoint, load_model, save_model
from pspnet.errors import (
    CheckpointError,
    ConfigError,
    DatasetError,
    OutputError,
    PSPNetError,
    TrainingError,
)
from pspnet.inference import Segmentation, Segmenter
from pspnet.inference.settings import InferenceOverrides, RuntimeSettings
from pspnet.models import ModelConfig, PSPNet

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DatasetError",
    "InferenceOverrides",
    "ModelConfig",
    "OutputError",
    "PSPNet",
    "PSPNetError",
    "RuntimeSettings",
    "Segmentation",
    "Segmenter",
    "TrainingError",
    "build_model",
    "load_checkpoint",
    "load_model",
    "save_model",
]
