"""The few exception types that cross the library's boundary; messages name the file and the fix."""


class PSPNetError(Exception):
    """Base of every error the library raises on purpose."""


class CheckpointError(PSPNetError):
    """A weights file that cannot be read, recognised or loaded strictly."""


class DatasetError(PSPNetError):
    """A dataset root, list, image or label that is missing, unreadable or inconsistent."""


class ImageTooLargeError(DatasetError):
    """An image whose pixel count is over the configured limit (refused before decoding)."""


class UnsupportedImageError(DatasetError):
    """Bytes of no image format whose size can be checked before decoding (HDR, not an image)."""


class ConfigError(PSPNetError, ValueError):
    """A configuration file or override that does not fit the typed configuration."""


class OutputError(PSPNetError):
    """A destination that cannot be written: a file where a folder must be, no permission."""


class InferenceError(PSPNetError):
    """An image the model failed on (out of memory, a broken runtime), named in the message."""


class TrainingError(PSPNetError):
    """A run that cannot go on: a non-finite loss, or a run folder holding a different run."""
