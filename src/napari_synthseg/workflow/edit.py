"""Editing a scene: the one job behind the lesion editor, ``synthseg place`` and batch scenes.

An :class:`EditSession` holds the live scene of a folder (from the process's scene store) and
offers every edit as one call that validates first and changes nothing when it refuses:
place a lesion from a :class:`~.spec.LesionSpec`, move, resize, rotate, re-contrast,
re-blend (each on its own, so one out-of-range field never blocks another edit), delete,
undo/redo, set the organ constraint, remove or extract a real lesion. The widgets translate
clicks into these calls; they hold no rule of their own.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import SynthsegError
from ..io import MedicalImage, read_image
from ..scene import LesionRecord, Scene, create_scene, open_scene, scene_store
from .spec import DEFAULT_PLACE, BlendMode, LesionSpec, PlaceSettings, blend_mode

logger = logging.getLogger(__name__)

CONSTRAINT = "constraint"
CONSTRAINT_CHOICES = ("scene", "auto", "none")


def default_scene_folder(source_paths: Sequence[str], sample_dir: Path | None = None) -> Path:
    """``<image folder>/<name>_scene`` beside the user's image.

    Under ``~/synthseg-scenes`` for the bundled samples (``sample_dir``) and wherever the
    image's folder is not writable: a scene never goes where it cannot be saved.
    """
    src = Path(source_paths[0])
    series = len(source_paths) > 1
    folder = src.parent.parent if series else src.parent
    name = f"{(src.parent.name if series else src.name).split('.')[0]}_scene"
    try:
        bundled = sample_dir is not None and folder.resolve() == Path(sample_dir).resolve()
    except OSError:
        bundled = False
    if bundled or not os.access(folder, os.W_OK):
        return Path.home() / "synthseg-scenes" / name
    return folder / name


@dataclass(frozen=True)
class SceneSource:
    """The image a new scene is made on, as the user picked it."""

    path: str
    series_uid: str | None = None
    spacing: tuple[float, ...] | None = None
    modality: str | None = None

    def read(self) -> MedicalImage:
        return read_image(self.path, series_uid=self.series_uid, spacing=self.spacing, modality=self.modality)


class EditSession:
    """Every edit of one scene, validated, undoable and autosaved.

    Parameters
    ----------
    scene : Scene
        The live scene (get it from :func:`open_session` / :func:`new_session`, which use the
        process's scene store so every widget shares it).
    actor : str
        Who edits (``"editor"``, ``"cli"``, ``"batch"``), written into each placed record's
        provenance.
    """

    def __init__(self, scene: Scene, actor: str = "editor") -> None:
        self.scene = scene
        self.actor = actor

    # ---- lookups ------------------------------------------------------------------------------

    @property
    def image(self) -> MedicalImage:
        return self.scene.load_image()

    def record(self, lesion_id: str) -> LesionRecord:
        return self.scene.lesion(lesion_id)

    def describe(self, lesion_id: str) -> str:
        """One line for lists and messages: id, kind, size, blend, status (no raw floats)."""
        rec = self.scene.lesion(lesion_id)
        size = f"{rec.size_mm:.1f} mm" if rec.size_mm else "fill"
        return f"{rec.id}  {rec.kind}  {size}  {rec.blend.get('mode', 'alpha')}  {rec.status}"

    def index_of(self, lesion_id: str) -> tuple[float, ...]:
        """The lesion centre as a numpy-order pixel index (for handles in a viewer)."""
        rec = self.scene.lesion(lesion_id)
        return tuple(float(v) for v in self.image.physical_to_index(rec.center_mm)[::-1])

    # ---- placing ------------------------------------------------------------------------------

    def place(
        self,
        spec: LesionSpec | str,
        settings: PlaceSettings = DEFAULT_PLACE,
        *,
        at_xyz: Sequence[float] | None = None,
        at_mm: Sequence[float] | None = None,
        rng: np.random.Generator | None = None,
    ) -> LesionRecord:
        """Place one lesion (position as an x-first pixel index or an LPS point in mm)."""
        from ..lesions.place import place_lesion

        spec = LesionSpec.parse(spec) if isinstance(spec, str) else spec
        image = self.image
        site = None
        if spec.needs_site:
            from ..lesions.place import center_from

            site = center_from(image, at_xyz, at_mm)
        resolved = spec.resolve(image, settings, rng=rng, center_mm=site)
        source = dict(resolved.source, placed_by=self.actor)
        record = place_lesion(
            self.scene, resolved.patch, at_xyz=at_xyz, at_mm=at_mm, size_mm=settings.size_mm,
            rotation_deg=settings.rotation_deg, blend=settings.blend.value, contrast=settings.contrast,
            feather_mm=settings.feather_mm, seed=settings.seed, kind=resolved.kind, source=source,
            min_inside=settings.min_inside,
        )
        logger.info("placed %s (%s, %.1f mm, %s)", record.id, spec.text(), record.size_mm, record.blend["mode"])
        return record

    def place_at_index(
        self, spec: LesionSpec | str, settings: PlaceSettings, index_numpy: Sequence[float]
    ) -> LesionRecord:
        """Place at a numpy-order data index (a click in a viewer)."""
        return self.place(spec, settings, at_xyz=tuple(float(v) for v in np.asarray(index_numpy)[::-1]))

    # ---- generated samples side by side (workflow/generated_samples.py) -----------------------

    def preview_generated(self, spec: LesionSpec | str, settings: PlaceSettings, seeds: Sequence[int], *,
                          at_xyz: Sequence[float] | None = None, at_mm: Sequence[float] | None = None,
                          progress=None, cancel=None) -> list:
        """Seeded candidates of a generated lesion at one site, rendered; the scene is unchanged."""
        from .generated_samples import preview_generated

        return preview_generated(self, spec, settings, seeds, at_xyz=at_xyz, at_mm=at_mm, progress=progress,
                                 cancel=cancel)

    def accept_generated(self, candidate) -> LesionRecord:
        """Add one candidate of :meth:`preview_generated` as an ordinary generated lesion."""
        from .generated_samples import accept_generated

        return accept_generated(self, candidate)

    # ---- editing one property at a time ------------------------------------------------------

    def _edit(self, lesion_id: str, label: str, **changes: Any) -> LesionRecord:
        from ..lesions.place import edit_lesion

        if (self.scene.lesion(lesion_id).source or {}).get("type") == "generated":
            from .. import generator  # noqa: F401  (registers how generated lesions are remade)

        return edit_lesion(self.scene, lesion_id, label=label, **changes)

    def move(self, lesion_id: str, *, at_xyz: Sequence[float] | None = None,
             at_mm: Sequence[float] | None = None) -> LesionRecord:
        return self._edit(lesion_id, f"move {lesion_id}", at_xyz=at_xyz, at_mm=at_mm)

    def move_to_index(self, lesion_id: str, index_numpy: Sequence[float]) -> LesionRecord:
        return self.move(lesion_id, at_xyz=tuple(float(v) for v in np.asarray(index_numpy)[::-1]))

    def resize(self, lesion_id: str, size_mm: float) -> LesionRecord:
        PlaceSettings(size_mm=size_mm)  # the same bounds as placing
        return self._edit(lesion_id, f"resize {lesion_id}", size_mm=float(size_mm))

    def rotate(self, lesion_id: str, rotation_deg: float | Sequence[float]) -> LesionRecord:
        angles = tuple(float(v) for v in np.atleast_1d(np.asarray(rotation_deg, dtype=float)))
        value: float | tuple[float, ...] = angles[0] if np.isscalar(rotation_deg) else angles
        if not np.all(np.isfinite(angles)):
            raise SynthsegError("rotation must be finite degrees")
        return self._edit(lesion_id, f"rotate {lesion_id}", rotation_deg=value)

    def set_contrast(self, lesion_id: str, contrast: float) -> LesionRecord:
        PlaceSettings(contrast=contrast)
        return self._edit(lesion_id, f"contrast {lesion_id}", blend={"contrast": float(contrast)})

    def set_blend(self, lesion_id: str, mode: BlendMode | str) -> LesionRecord:
        return self._edit(lesion_id, f"blend {lesion_id}", blend={"mode": blend_mode(mode).value})

    def set_feather(self, lesion_id: str, feather_mm: float) -> LesionRecord:
        PlaceSettings(feather_mm=feather_mm)
        return self._edit(lesion_id, f"feather {lesion_id}", blend={"feather_mm": float(feather_mm)})

    def delete(self, lesion_id: str) -> None:
        self.scene.remove_lesion(lesion_id, label=f"delete {lesion_id}")

    def undo(self) -> bool:
        return self.scene.undo() is not None

    def redo(self) -> bool:
        return self.scene.redo() is not None

    # ---- constraint ---------------------------------------------------------------------------

    def compute_constraint(self) -> np.ndarray:
        """The automatic organ mask of the scene's image (slow: call it off the UI thread)."""
        from ..constraints import organ_constraint

        image = self.image
        mask = organ_constraint(image.array, image.scale, image.modality)
        if not mask.any():
            raise SynthsegError("the organ constraint is empty; check the image or paint one by hand")
        return mask

    def set_constraint(self, mask: np.ndarray | None, label: str = "set organ constraint") -> None:
        """Store the organ constraint (None removes it)."""
        self.scene.set_mask(CONSTRAINT, mask, label=label)

    def apply_constraint_choice(self, choice: str) -> None:
        """``'scene'`` (keep), ``'auto'``, ``'none'`` or a mask file on the image's grid."""
        if choice == "scene":
            return
        if choice == "none":
            self.set_constraint(None)
        elif choice == "auto":
            self.set_constraint(self.compute_constraint(), label="organ constraint (auto)")
        else:
            mask = read_mask(choice, self.image)
            if not mask.any():
                raise SynthsegError(f"the constraint mask {Path(choice).name} is empty")
            self.set_constraint(mask)

    # ---- real lesions -------------------------------------------------------------------------

    def remove_real(self, mask: np.ndarray, method: str = "biharmonic") -> LesionRecord:
        """Replace a painted real lesion by healthy tissue (one undoable record)."""
        return self.add_prepared(self.prepare_removal(mask, method))

    def prepare_removal(self, mask: np.ndarray, method: str = "biharmonic") -> LesionRecord:
        """The removal record of a painted real lesion, not yet in the scene.

        The fill is the slow part (seconds): a panel computes it in a worker with this and
        adds the record on the UI thread with :meth:`add_prepared`, so the scene's listeners
        (renderer, layers) always run on the UI thread.
        """
        from ..lesions.place import remove_real_lesion
        from .fillers import ensure_registered

        ensure_registered(method)
        scratch = Scene(self.scene.source, folder=None)
        scratch.assets = self.scene.assets  # content-addressed: the fill's arrays land in the scene's store
        scratch._image = self.image
        return remove_real_lesion(scratch, mask, method=method)

    def add_prepared(self, record: LesionRecord) -> LesionRecord:
        """Add a record made by a ``prepare_*`` call (it gets a fresh id in this scene)."""
        label = f"remove lesion ({record.source.get('method', 'fill')})" if record.kind == "removal" else "add lesion"
        return self.scene.add_lesion(record.copy(id="", label=0), label=label)

    def extract_real(self, mask: np.ndarray, library: str | os.PathLike, method: str = "biharmonic",
                     margin_mm: float = 3.0) -> str:
        """Store a painted real lesion (original minus healthy fill) in a lesion library."""
        return extract_to_library(self.image, mask, library, method=method, margin_mm=margin_mm,
                                  source_sha256=self.scene.source.sha256)


def read_mask(path: str | os.PathLike, image: MedicalImage) -> np.ndarray:
    """A mask file on ``image``'s grid as booleans (non-zero = inside)."""
    from ..io import check_same_grid

    mask = read_image(path)
    check_same_grid(mask, image, f"mask {Path(path).name}")
    return np.asarray(mask.array) != 0


def extract_to_library(
    image: MedicalImage,
    mask: np.ndarray,
    library: str | os.PathLike,
    *,
    method: str = "biharmonic",
    margin_mm: float = 3.0,
    kind: str = "extracted",
    source_sha256: str | None = None,
) -> str:
    """Original minus healthy fill inside ``mask``, stored in ``library``; returns the new id."""
    from ..io import sha256_of_files
    from ..lesions import LesionLibrary, extract_residual
    from .fillers import filler

    mask = np.asarray(mask).astype(bool)
    if not mask.any():
        raise SynthsegError("the lesion mask is empty; paint the real lesion first")
    if not str(library).strip():
        raise SynthsegError("give a lesion library folder")
    filled = filler(method).fill(image.array, mask, spacing=image.scale, seed=0)
    item = extract_residual(
        image.array, filled, mask, image.scale, margin_mm, kind=kind,
        units="HU" if image.modality == "CT" else "image",
        provenance={"source_file": image.source, "modality": image.modality, "fill_method": method,
                    "sha256": source_sha256 or sha256_of_files(image.source_paths)},
    )
    folder = Path(library)
    folder.mkdir(parents=True, exist_ok=True)
    return LesionLibrary(folder).add(item)


def open_session(folder: str | os.PathLike, actor: str = "editor") -> EditSession:
    """Edit the scene in ``folder`` (the process's live one; its image is read and verified)."""
    scene = open_scene(folder)
    scene.load_image()
    return EditSession(scene, actor)


def new_session(source: SceneSource, folder: str | os.PathLike, *, overwrite: bool = False,
                actor: str = "editor") -> EditSession:
    """A new scene on ``source`` in ``folder``."""
    if Path(folder).exists() and (Path(folder) / "scene.json").exists() and not overwrite:
        raise SynthsegError(f"{folder} already holds a scene; open it, or start over")
    image = source.read()
    return EditSession(create_scene(image, folder, overwrite=overwrite), actor)


__all__ = [
    "CONSTRAINT_CHOICES",
    "EditSession",
    "SceneSource",
    "default_scene_folder",
    "extract_to_library",
    "new_session",
    "open_session",
    "read_mask",
    "scene_store",
]
