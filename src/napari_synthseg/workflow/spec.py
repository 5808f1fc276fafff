"""The lesion spec, defined once: what a lesion is made of and how it is blended.

The CLI (``--lesion procedural:solid``), the lesion editor's source picker and batch recipes all
name a lesion source with the same text, parse it with :meth:`LesionSpec.parse` and turn it into
pixels with :meth:`LesionSpec.resolve`, which also writes the record's provenance (absolute
paths and sha256 of every file read). Wave 1 had three copies of this logic that disagreed
(only the CLI hashed files; batch ignored the image's dimensionality); there is now one.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SynthsegError
from ..io import MedicalImage
from ..lesions import LesionPatch
from ..lesions.attachments import Attachments, apply_attachments, attachments_mode


class LesionSourceKind(str, Enum):
    """Where a lesion's pixels come from."""

    PROCEDURAL = "procedural"
    LIBRARY = "library"
    LIBRARY_ITEM = "library-item"
    CT_PATCH = "ct_patch"
    CT_FOLDER = "ct_folder"
    GENERATED = "generated"


class ProceduralKind(str, Enum):
    """Nodule types (Fleischner): by attenuation."""

    SOLID = "solid"
    PART_SOLID = "part-solid"
    GROUND_GLASS = "ground-glass"


class BlendMode(str, Enum):
    """How a lesion goes into the image (``docs/rendering.md`` defines each mode's label)."""

    ALPHA = "alpha"
    ADDITIVE = "additive"
    POISSON = "poisson"


def _enum_value(enum: type[Enum], text: str, what: str) -> Any:
    try:
        return enum(text)
    except ValueError:
        choices = ", ".join(str(m.value) for m in enum)  # type: ignore[attr-defined]
        raise SynthsegError(f"{what} must be one of {choices}, got {text!r}") from None


def blend_mode(text: str | BlendMode) -> BlendMode:
    """``"poisson"`` → :attr:`BlendMode.POISSON`, with one clear error for anything else."""
    return text if isinstance(text, BlendMode) else _enum_value(BlendMode, str(text), "blend")


def procedural_kind(text: str | ProceduralKind) -> ProceduralKind:
    return text if isinstance(text, ProceduralKind) else _enum_value(ProceduralKind, str(text), "nodule type")


@dataclass(frozen=True)
class PlaceSettings:
    """Every default of placing a lesion, in one place (CLI flags and widget fields start here).

    Attributes
    ----------
    size_mm : float
        Diameter to render at; None keeps the lesion's own (library, CT patch).
    rotation_deg : float or tuple of float
        In-plane angle, or (z, y, x) angles for 3D.
    blend : BlendMode
    contrast : float or 'node21'
        Multiplies the lesion's residual; ``'node21'`` matches NODE21's contrast rule (CXR).
    feather_mm : float
        Alpha ramp across the mask border.
    seed : int
        Seed of everything random in the lesion (procedural shape, noise).
    lobulation, spiculation : float
        Shape of procedural nodules, 0..1.
    min_inside : float
        Fraction of the lesion mask that must lie inside the organ constraint.
    attachments : {'remove', 'keep'}
        Real nodules (library items, CT patches): the vessels and other bright structures
        attached to the nodule in its donor patch are removed (default: the nodule alone
        replaces the target's lung) or kept as stubs faded over 5 mm, which are then labelled
        with the nodule (the label is what changed). See
        :mod:`napari_synthseg.lesions.attachments`.
    """

    size_mm: float | None = 10.0
    rotation_deg: float | tuple[float, ...] = 0.0
    blend: BlendMode = BlendMode.ALPHA
    contrast: float | str = 1.0
    feather_mm: float = 1.0
    seed: int = 0
    lobulation: float = 0.3
    spiculation: float = 0.0
    min_inside: float = 1.0
    attachments: Attachments = Attachments.REMOVE

    def __post_init__(self) -> None:
        object.__setattr__(self, "blend", blend_mode(self.blend))
        object.__setattr__(self, "attachments", attachments_mode(self.attachments))
        if self.size_mm is not None and not (np.isfinite(self.size_mm) and 0 < self.size_mm <= 500):
            raise SynthsegError(f"lesion size must be between 0 and 500 mm, got {self.size_mm}")
        if self.contrast != "node21" and not (
            isinstance(self.contrast, (int, float)) and np.isfinite(self.contrast) and 0 < self.contrast <= 100
        ):
            raise SynthsegError(f"contrast must be a number in (0, 100] or 'node21', got {self.contrast!r}")
        if not (np.isfinite(self.feather_mm) and 0 <= self.feather_mm <= 50):
            raise SynthsegError(f"feather must be between 0 and 50 mm, got {self.feather_mm}")
        for name in ("lobulation", "spiculation", "min_inside"):
            value = getattr(self, name)
            if not (np.isfinite(value) and 0 <= value <= 1):
                raise SynthsegError(f"{name.replace('_', ' ')} must lie in [0, 1], got {value}")
        if not 0 <= int(self.seed) < 2**32:
            raise SynthsegError(f"seed must be a whole number in [0, 2^32), got {self.seed}")

    def with_changes(self, **changes: Any) -> PlaceSettings:
        return replace(self, **changes)


DEFAULT_PLACE = PlaceSettings()


@dataclass(frozen=True)
class ResolvedLesion:
    """Pixels of a lesion and the provenance its record keeps."""

    patch: LesionPatch
    source: dict[str, Any]
    kind: str = "nodule"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_PATCH_SUFFIXES = (".mha", ".mhd", ".nii", ".nii.gz", ".nrrd")


@dataclass(frozen=True)
class LesionSpec:
    """A lesion source, parsed from text once and resolved into pixels on demand.

    Text forms (the same in ``synthseg place --lesion``, the editor and batch recipes):

    ``procedural:solid`` | ``procedural:part-solid`` | ``procedural:ground-glass``
        A procedural nodule of that type.
    ``LIBRARY_DIR`` (a folder with ``index.json``)
        Any library item, picked by size (and class) per lesion.
    ``LIBRARY_DIR/<id>.json``
        One library item.
    ``PATCH.mha`` (mask beside it as ``*_seg.*``, or ``mask_path``)
        A CT patch with its mask.
    ``FOLDER`` (CT patches with ``*_seg.*`` masks)
        One of them, picked at random per lesion.
    ``generated[:solid|part-solid|ground-glass][@MODEL.safetensors]``
        A nodule made by the learned lesion generator (:mod:`napari_synthseg.generator`) in the
        target's own context at the placement site (radiographs: in a neutral lung context, then
        projected); ``@MODEL`` names a generator file (default the built-in one).
    """

    source: LesionSourceKind
    kind: ProceduralKind | None = None
    path: Path | None = None
    item_id: str | None = None
    mask_path: Path | None = None
    shape: dict[str, float] = field(default_factory=dict)

    # ---- parsing ------------------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str, mask_path: str | os.PathLike | None = None) -> LesionSpec:
        """The spec a text names; files are checked now, so a typo fails before any work."""
        text = (text or "").strip()
        if not text:
            raise SynthsegError("name a lesion: procedural:<solid|part-solid|ground-glass>, a library or a CT patch")
        if text.startswith("procedural"):
            _, _, kind = text.partition(":")
            return cls(LesionSourceKind.PROCEDURAL, kind=procedural_kind(kind or "solid"))
        if text == "generated" or text.startswith(("generated:", "generated@")):
            body, _, model = text.partition("@")
            _, _, kind = body.partition(":")
            model_path = Path(model).expanduser().resolve() if model and model != "builtin" else None
            if model_path is not None and not model_path.is_file():
                raise SynthsegError(f"generator model not found: {model}")
            return cls(LesionSourceKind.GENERATED, kind=procedural_kind(kind or "solid"), path=model_path)
        path = Path(text).expanduser()
        if path.is_dir():
            path = path.resolve()
            if (path / "index.json").exists():
                return cls(LesionSourceKind.LIBRARY, path=path)
            if cls._ct_files(path):
                return cls(LesionSourceKind.CT_FOLDER, path=path)
            raise SynthsegError(f"{text} is neither a lesion library (no index.json) nor a folder of CT patches")
        if path.suffix in (".json", ".safetensors") and (path.parent / "index.json").exists():
            return cls(LesionSourceKind.LIBRARY_ITEM, path=path.parent.resolve(), item_id=path.stem)
        if not path.is_file():
            raise SynthsegError(f"lesion not found: {text} (a procedural:<type>, a library, or a CT patch file)")
        mask = Path(mask_path).expanduser().resolve() if mask_path else None
        if mask is not None and not mask.is_file():
            raise SynthsegError(f"lesion mask not found: {mask_path}")
        return cls(LesionSourceKind.CT_PATCH, path=path.resolve(), mask_path=mask)

    @staticmethod
    def _ct_files(folder: Path) -> list[Path]:
        return sorted(
            p for p in folder.iterdir()
            if p.is_file() and "_seg" not in p.name and any(p.name.endswith(s) for s in _PATCH_SUFFIXES)
        )

    @property
    def where(self) -> Path:
        """The file or folder this spec reads (procedural specs have none)."""
        if self.path is None:
            raise SynthsegError(f"a {self.source.value} lesion source names no file")
        return self.path

    def text(self) -> str:
        """The text this spec parses from (for logs, recipes and the editor)."""
        if self.source is LesionSourceKind.PROCEDURAL:
            return f"procedural:{self.kind.value if self.kind else 'solid'}"
        if self.source is LesionSourceKind.LIBRARY_ITEM:
            return str(Path(self.path or ".") / f"{self.item_id}.json")
        if self.source is LesionSourceKind.GENERATED:
            kind = self.kind.value if self.kind else "solid"
            return f"generated:{kind}" + (f"@{self.path}" if self.path else "")
        return str(self.path)

    @property
    def needs_site(self) -> bool:
        """True when the pixels depend on where the lesion goes (generated in the target's context)."""
        return self.source is LesionSourceKind.GENERATED

    # ---- pixels -------------------------------------------------------------------------------

    def resolve(
        self,
        image: MedicalImage,
        settings: PlaceSettings = DEFAULT_PLACE,
        rng: np.random.Generator | None = None,
        center_mm: tuple[float, ...] | None = None,
    ) -> ResolvedLesion:
        """The lesion's pixels for ``image`` and the provenance its record keeps.

        ``rng`` picks among several candidates (library items by size, CT patches); without
        it, the pick follows ``settings.seed``, so the same settings give the same lesion.
        ``center_mm`` is the site (LPS mm); generated lesions need it in a CT.
        """
        if self.source is LesionSourceKind.GENERATED:
            from ..generator import generate_lesion

            if image.ndim == 3 and center_mm is None:
                raise SynthsegError("a generated lesion needs its site: give the position")
            patch, source = generate_lesion(
                image, center_mm if image.ndim == 3 else None, settings.size_mm or DEFAULT_PLACE.size_mm or 10.0,
                (self.kind or ProceduralKind.SOLID).value, seed=int(settings.seed),
                model=str(self.path) if self.path else "builtin")
            return ResolvedLesion(patch, source)
        from ..lesions import load_ct_patch, procedural_nodule
        from ..lesions.library import open_library

        rng = rng if rng is not None else np.random.default_rng(int(settings.seed))
        if self.source is LesionSourceKind.PROCEDURAL:
            size = settings.size_mm or DEFAULT_PLACE.size_mm or 10.0
            kind = (self.kind or ProceduralKind.SOLID).value
            lobulation = float(self.shape.get("lobulation", settings.lobulation))
            spiculation = float(self.shape.get("spiculation", settings.spiculation))
            # Radiographs: sample the shape finely (the projection is resampled to the
            # image); CT: at the image's own finest spacing.
            spacing = min(1.0, max(0.25, size / 12.0)) if image.ndim == 2 else min(image.scale)
            patch = procedural_nodule(
                size, kind, spacing=spacing, lobulation=lobulation, spiculation=spiculation, seed=int(settings.seed)
            )
            source = {"type": "procedural", "kind": kind, "seed": int(settings.seed),
                      "lobulation": lobulation, "spiculation": spiculation}
            return ResolvedLesion(patch, source)
        if self.source in (LesionSourceKind.LIBRARY, LesionSourceKind.LIBRARY_ITEM):
            library = open_library(self.where)
            if self.item_id is not None:
                lesion_id = self.item_id
            else:
                size = settings.size_mm or 10.0
                lesion_id = library.pick(size, rng)
            # checks the id and that the item's files are there; attachments removed or kept
            patch = library.get_prepared(lesion_id, settings.attachments.value)
            source = {"type": "library", "library": str(self.where), "id": lesion_id,
                      "sha256": library.item_sha256(lesion_id)}
            reference = library.metadata(lesion_id).get("reference")
            if reference:
                # a referenced item (the imported LIDC nodules): name its source files and their
                # hashes too, so the record says which real scan the nodule came from
                source.update(reference=reference.get("image"), image_sha256=reference.get("image_sha256"),
                              mask_sha256=reference.get("mask_sha256"))
            return ResolvedLesion(patch, source)
        if self.source is LesionSourceKind.CT_FOLDER:
            files = self._ct_files(self.where)
            chosen = files[int(rng.integers(len(files)))]
            return self._ct_patch(chosen, None, load_ct_patch, settings.attachments)
        return self._ct_patch(self.where, self.mask_path, load_ct_patch, settings.attachments)

    @staticmethod
    def _ct_patch(path: Path, mask: Path | None, loader, attachments: Attachments = Attachments.REMOVE
                  ) -> ResolvedLesion:
        patch = apply_attachments(loader(path, mask), attachments)
        source = {"type": "ct_patch", "path": str(path), "sha256": patch.provenance.get("sha256") or _sha256(path)}
        if mask is not None:
            source["mask_path"] = str(mask)
        return ResolvedLesion(patch, source)
