"""The schema of ``scene.json``, checked whenever a scene is opened.

``scene.json`` is plain data a user (or a bad disk, or another program) can edit. Everything in
it is validated here, at the boundary, with pydantic, before any of it is used: a missing
``source``, ``lesions: [123]``, a non-numeric revision, a NaN centre, a ``size_mm`` of 1e7 (a
render that would need petabytes), an unknown status or blend mode, or an asset key that is a
path (``../../outside/x``) become one line naming the field, instead of a traceback later or,
worse, a render that silently uses the bad value. Asset files the scene names must exist in the
scene's own store, so a scene with a missing asset is refused at open instead of being served
another scene's array from a cache.

The limits are generous physical bounds, not style rules: a lesion is at most
:data:`MAX_LESION_MM` across, a centre lies within :data:`MAX_COORD_MM` of the scanner origin.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import SynthsegError
from .assets import is_asset_key
from .records import BLEND_MODES, LESION_STATUSES, MAX_COORD_MM, MAX_LESION_MM

#: Most pixels a scene's source may declare (the reader's own budget applies when it is read).
MAX_SOURCE_PIXELS = 2**40
MAX_LESIONS = 100_000

def _finite(value: float, what: str, bound: float | None = None) -> float:
    if isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number")
    if bound is not None and abs(value) > bound:
        raise ValueError(f"{what} must be within +-{bound:g}")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class GeometryModel(BaseModel):
    model_config = ConfigDict(extra="allow")

    shape: list[int] = Field(min_length=2, max_length=3)
    spacing: list[float] = Field(min_length=2, max_length=3)
    origin: list[float] | None = None
    direction: list[float] | None = None

    @field_validator("shape")
    @classmethod
    def _shape(cls, value: list[int]) -> list[int]:
        if any(v < 1 for v in value) or math.prod(value) > MAX_SOURCE_PIXELS:
            raise ValueError(f"shape {value} is not a plausible image size")
        return value

    @field_validator("spacing")
    @classmethod
    def _spacing(cls, value: list[float]) -> list[float]:
        for v in value:
            _finite(v, "spacing", 1e4)
            if v <= 0:
                raise ValueError("spacing must be positive")
        return value

    @field_validator("origin", "direction")
    @classmethod
    def _finite_list(cls, value: list[float] | None) -> list[float] | None:
        for v in value or []:
            _finite(v, "value", MAX_COORD_MM * 10)
        return value


class SourceModel(BaseModel):
    model_config = ConfigDict(extra="allow")

    paths: list[str] = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    geometry: GeometryModel
    series_uid: str | None = None
    patient_id: str | None = None


class LesionModel(_Strict):
    kind: str = "nodule"
    source: dict[str, Any] = Field(default_factory=dict)
    center_mm: list[float] = Field(default_factory=list, max_length=3)
    size_mm: float = 0.0
    rotation_deg: float | list[float] = 0.0
    blend: dict[str, Any] = Field(default_factory=lambda: {"mode": "alpha"})
    seed: int = Field(default=0, ge=0, lt=2**63)
    status: Literal[LESION_STATUSES] = "placed"  # type: ignore[valid-type]
    decision: dict[str, Any] | None = None
    assets: dict[str, str] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    id: str = Field(default="", max_length=64)
    label: int = Field(default=0, ge=0, le=2**31)
    created: str = ""
    modified: str = ""

    @field_validator("center_mm")
    @classmethod
    def _center(cls, value: list[float]) -> list[float]:
        if value and len(value) not in (2, 3):
            raise ValueError("center_mm takes 2 or 3 numbers")
        for v in value:
            _finite(v, "center_mm", MAX_COORD_MM)
        return value

    @field_validator("size_mm")
    @classmethod
    def _size(cls, value: float) -> float:
        _finite(value, "size_mm")
        if not 0 <= value <= MAX_LESION_MM:
            raise ValueError(f"size_mm must be between 0 and {MAX_LESION_MM:g} mm")
        return value

    @field_validator("rotation_deg")
    @classmethod
    def _rotation(cls, value: float | list[float]) -> float | list[float]:
        values = value if isinstance(value, list) else [value]
        if len(values) not in (1, 3):
            raise ValueError("rotation_deg takes 1 or 3 angles")
        for v in values:
            _finite(v, "rotation_deg", 1e6)
        return value

    @field_validator("blend")
    @classmethod
    def _blend(cls, value: dict[str, Any]) -> dict[str, Any]:
        mode = value.get("mode", "alpha")
        if mode not in BLEND_MODES:
            raise ValueError(f"blend mode must be one of {', '.join(BLEND_MODES)}")
        for key, v in value.items():
            if isinstance(v, float):
                _finite(v, f"blend.{key}")
        return value

    @field_validator("assets")
    @classmethod
    def _assets(cls, value: dict[str, str]) -> dict[str, str]:
        for name, key in value.items():
            if not is_asset_key(key):
                raise ValueError(f"asset {name!r} has an invalid key (keys are 32 hex digits)")
        return value


class SceneModel(BaseModel):
    model_config = ConfigDict(extra="allow")

    schema_version: int
    source: SourceModel
    masks: dict[str, str] = Field(default_factory=dict)
    meta: dict[str, Any] = Field(default_factory=dict)
    lesions: list[LesionModel] = Field(default_factory=list, max_length=MAX_LESIONS)
    revision: int = Field(default=0, ge=0)
    counter: int = Field(default=0, ge=0)
    created: str | None = None
    modified: str | None = None

    @field_validator("masks")
    @classmethod
    def _masks(cls, value: dict[str, str]) -> dict[str, str]:
        for name, key in value.items():
            if not is_asset_key(key):
                raise ValueError(f"mask {name!r} has an invalid key (keys are 32 hex digits)")
        return value


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "top level"
    message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    more = error.error_count() - 1
    return f"{where}: {message}" + (f" (and {more} more problem(s))" if more > 0 else "")


def read_scene_json(path: Path, schema_version: int) -> dict[str, Any]:
    """Parse and validate ``scene.json`` (and check its assets exist); one-line errors.

    This is what :meth:`Scene.open` calls: nothing from the file is used before it passed.
    """
    import json

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise SynthsegError(f"{path} is corrupt (not valid JSON)") from None
    except OSError as exc:
        raise SynthsegError(f"cannot read {path}: {exc.strerror}") from None
    if not isinstance(data, dict):
        raise SynthsegError(f"{path} is not a scene (expected a JSON object)")
    version = data.get("schema_version")
    if version != schema_version:
        raise SynthsegError(
            f"{path} has schema version {version!r}; this napari-synthseg reads version {schema_version}"
        )
    validate_scene_data(data, path)
    check_assets_present(path.parent, data)
    return data


def validate_scene_data(data: Any, path: str | Path = "scene.json") -> dict[str, Any]:
    """Check parsed ``scene.json`` data; returns it unchanged or raises a one-line error."""
    name = str(path)
    if not isinstance(data, dict):
        raise SynthsegError(f"{name} is not a scene (expected a JSON object)")
    try:
        model = SceneModel.model_validate(data)
    except ValidationError as exc:
        raise SynthsegError(f"{name} is invalid: {_describe(exc)}") from None
    except (RecursionError, ValueError, TypeError) as exc:
        raise SynthsegError(f"{name} is invalid: {str(exc)[:120]}") from None
    ids = [lesion.id for lesion in model.lesions if lesion.id]
    if len(set(ids)) != len(ids):
        raise SynthsegError(f"{name} is invalid: two lesions share an id")
    return data


def referenced_keys(data: dict[str, Any]) -> set[str]:
    """Asset keys the current state of a (validated) scene uses: masks and lesion assets."""
    keys = set(data.get("masks", {}).values())
    for lesion in data.get("lesions", []):
        keys.update(lesion.get("assets", {}).values())
    return keys


def check_assets_present(folder: Path, data: dict[str, Any]) -> None:
    """Every asset the scene uses is a file in its own store (``assets/<key>.safetensors``)."""
    missing = sorted(k for k in referenced_keys(data) if not (folder / "assets" / f"{k}.safetensors").is_file())
    if missing:
        what = f"asset {missing[0]} is" if len(missing) == 1 else f"{len(missing)} assets ({missing[0]}, ...) are"
        raise SynthsegError(f"{folder} is incomplete: {what} missing from its assets/ folder")
