"""The scene model shared by GUI, CLI and batch: source image, masks, lesion records."""

from .assets import AssetStore, array_key
from .records import BLEND_MODES, LESION_STATUSES, LesionRecord
from .scene import SCHEMA_VERSION, Change, Scene, SourceInfo

__all__ = [
    "BLEND_MODES",
    "LESION_STATUSES",
    "SCHEMA_VERSION",
    "AssetStore",
    "Change",
    "LesionRecord",
    "Scene",
    "SourceInfo",
    "array_key",
]
