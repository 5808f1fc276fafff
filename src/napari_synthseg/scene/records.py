"""Lesion records: everything needed to re-render one lesion, as JSON-ready data.

A record never holds pixels. Arrays it needs (a lesion patch and its mask, a harmonized
result) live in the scene's content-addressed asset store and are referenced by key, so a record
stays small, cheap to copy into the undo history and safe to write after every edit.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..errors import SynthsegError

LESION_STATUSES = ("placed", "accepted", "rejected", "flagged")
BLEND_MODES = ("alpha", "additive", "poisson")
#: Largest lesion diameter accepted (mm): larger than any organ; 1e7 mm would need PiB to render.
MAX_LESION_MM = 1000.0
#: Largest distance of a lesion centre from the scanner origin (mm), 100 m.
MAX_COORD_MM = 1e5


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class LesionRecord:
    """One placed (or removed) lesion.

    Attributes
    ----------
    id : str
        Stable identifier within the scene (``"L0001"``); assigned by the scene.
    label : int
        Value of this lesion in the label map (> 0, unique in the scene); assigned by the scene.
    kind : str
        What the lesion is: ``"nodule"``, ``"mass"``, ``"metastasis"``, ``"removal"`` ...
    source : dict
        Where the lesion came from: ``{"type": "ct_patch" | "procedural" | "extracted" |
        "library" | "inpaint" | ..., ...}`` with file paths, sha256 and library ids.
    center_mm : tuple of float
        Lesion centre as a physical point in mm (LPS, (x, y[, z]) like SimpleITK).
    size_mm : float
        Diameter the lesion is rendered at, in mm.
    rotation_deg : float or tuple of float
        In-plane rotation (2D), or rotations about (z, y, x) for 3D, in degrees.
    blend : dict
        ``{"mode": "alpha" | "additive" | "poisson", ...}`` plus mode settings (feather_mm,
        contrast, ...).
    seed : int
        Random seed for everything stochastic in rendering this lesion.
    status : str
        QA state: ``"placed"`` (not reviewed), ``"accepted"``, ``"rejected"`` or ``"flagged"``.
    decision : dict or None
        Who or which rule set the status, why and when.
    assets : dict
        Name -> asset key of arrays in the scene's store (``"patch"``, ``"mask"`` ...).
    params : dict
        Engine parameters (model hashes, injection scale, contrast matching ...).
    """

    kind: str = "nodule"
    source: dict[str, Any] = field(default_factory=dict)
    center_mm: tuple[float, ...] = ()
    size_mm: float = 0.0
    rotation_deg: float | tuple[float, ...] = 0.0
    blend: dict[str, Any] = field(default_factory=lambda: {"mode": "alpha"})
    seed: int = 0
    status: str = "placed"
    decision: dict[str, Any] | None = None
    assets: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    id: str = ""
    label: int = 0
    created: str = ""
    modified: str = ""

    def validate(self) -> None:
        if self.status not in LESION_STATUSES:
            raise SynthsegError(f"lesion status must be one of {', '.join(LESION_STATUSES)}, got {self.status!r}")
        mode = (self.blend or {}).get("mode", "alpha")
        if mode not in BLEND_MODES:
            raise SynthsegError(f"blend mode must be one of {', '.join(BLEND_MODES)}, got {mode!r}")
        try:
            size = float(self.size_mm)
            center = [float(v) for v in self.center_mm]
        except (TypeError, ValueError):
            raise SynthsegError("lesion size and centre must be numbers") from None
        if not math.isfinite(size) or size < 0:
            raise SynthsegError(f"lesion size must be a positive number, got {self.size_mm} mm")
        if size > MAX_LESION_MM:
            raise SynthsegError(f"lesion size {size:g} mm is over the {MAX_LESION_MM:g} mm limit")
        if self.center_mm and len(center) not in (2, 3):
            raise SynthsegError(f"lesion centre takes 2 or 3 coordinates, got {len(center)}")
        if any(not math.isfinite(v) or abs(v) > MAX_COORD_MM for v in center):
            raise SynthsegError(f"lesion centre {tuple(center)} mm is not a finite point within {MAX_COORD_MM:g} mm")
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral) or not 0 <= self.seed < 2**63:
            raise SynthsegError(f"lesion seed must be a whole number from 0 to 2**63-1, got {self.seed!r}")

    def to_dict(self) -> dict[str, Any]:
        # One deep copy of the mutable fields (dataclasses.asdict would walk everything twice).
        data = {name: getattr(self, name) for name in _FIELD_NAMES}
        for name in _MUTABLE_FIELDS:
            data[name] = copy.deepcopy(data[name])
        data["center_mm"] = [float(v) for v in self.center_mm]
        if isinstance(self.rotation_deg, (tuple, list)):
            data["rotation_deg"] = [float(v) for v in self.rotation_deg]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LesionRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise SynthsegError(f"lesion record has unknown fields {sorted(unknown)}; written by a newer version?")
        data = {key: (copy.deepcopy(value) if key in _MUTABLE_FIELDS else value) for key, value in data.items()}
        data["center_mm"] = tuple(data.get("center_mm") or ())
        if isinstance(data.get("rotation_deg"), list):
            data["rotation_deg"] = tuple(data["rotation_deg"])
        return cls(**data)

    def copy(self, **changes: Any) -> LesionRecord:
        return LesionRecord.from_dict({**self.to_dict(), **copy.deepcopy(changes)})


_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(LesionRecord))
_MUTABLE_FIELDS = ("source", "blend", "decision", "assets", "params")
