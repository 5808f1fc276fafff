"""Reading and writing medical images with their physical geometry."""

from .image import MODALITIES, MedicalImage
from .modality import guess_modality
from .read import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    MAX_PIXELS_ENV,
    SeriesInfo,
    check_same_grid,
    is_supported_path,
    list_dicom_series,
    max_pixels,
    read_dicom_series,
    read_image,
    sha256_of_files,
)
from .window import DEFAULT_PRESET, PRESETS, apply_window, window_limits
from .write import WRITE_EXTENSIONS, write_image

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MAX_PIXELS_ENV",
    "check_same_grid",
    "DEFAULT_PRESET",
    "IMAGE_EXTENSIONS",
    "MODALITIES",
    "PRESETS",
    "WRITE_EXTENSIONS",
    "MedicalImage",
    "SeriesInfo",
    "apply_window",
    "guess_modality",
    "is_supported_path",
    "list_dicom_series",
    "max_pixels",
    "read_dicom_series",
    "read_image",
    "sha256_of_files",
    "window_limits",
    "write_image",
]
