"""The scene model shared by GUI, CLI and batch: source image, masks, lesion records."""

from .assets import AssetStore, array_key
from .records import BLEND_MODES, LESION_STATUSES, LesionRecord
from .scene import SCHEMA_VERSION, Change, Scene, SceneConflictError, SourceInfo
from .store import SceneStore, create_scene, open_scene, scene_store

__all__ = [
    "BLEND_MODES",
    "LESION_STATUSES",
    "SCHEMA_VERSION",
    "AssetStore",
    "Change",
    "LesionRecord",
    "Scene",
    "SceneConflictError",
    "SceneStore",
    "SourceInfo",
    "array_key",
    "create_scene",
    "open_scene",
    "scene_store",
]
