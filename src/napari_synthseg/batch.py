"""Batch generation: many images in, one scene per image out, lesions placed at random.

This is the headless data factory: for every image, compute (or take) the organ constraint,
then place a random number of lesions of random size, kind, rotation and blend at random
positions inside it (the TUM report's "semi-random spot inside the lungs", NODE21's
"nodule whose diameter is close to the box"), each through the same validated
:func:`~napari_synthseg.lesions.place.place_lesion` the editor uses. Scenes are ordinary scene
folders: open them in the editor, review them in QA, export them.

Every image gets its own seed spawned from the batch seed (``numpy.random.SeedSequence``), so a
batch is reproducible whatever the number of workers and the order they finish in. Work is
spread with ``dask.bag`` (processes by default: each scene is independent and NumPy-heavy).
"""

from __future__ import annotations

import json
import os
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import ndimage as ndi

from .errors import SynthsegError
from .utils.atomic import atomic_write_text
from .utils.progress import CancelToken, ProgressCallback, report

BLENDS = ("alpha", "additive", "poisson")
PROCEDURAL_KINDS = ("solid", "part-solid", "ground-glass")


@dataclass
class BatchConfig:
    """How lesions are drawn for each image."""

    lesions_per_image: tuple[int, int] = (1, 3)
    size_mm: tuple[float, float] = (6.0, 20.0)
    # 'auto' (the library in $SYNTHSEG_LESION_LIBRARY if there is one, else procedural),
    # 'procedural', a LesionLibrary folder, or a folder of CT patches
    lesion_source: str = "auto"
    kinds: tuple[str, ...] = PROCEDURAL_KINDS
    blends: tuple[str, ...] = ("alpha", "poisson")
    contrast: tuple[float, float] = (0.8, 1.2)
    node21_contrast: bool = False
    constraint: str = "auto"  # 'auto' (organ mask), 'none'
    min_inside: float = 1.0
    min_distance_mm: float = 5.0  # between lesion edges
    max_tries: int = 30
    seed: int = 0
    modality: str | None = None
    spacing: tuple[float, ...] | None = None

    def validate(self) -> None:
        lo, hi = self.lesions_per_image
        if not (0 <= lo <= hi):
            raise SynthsegError(f"lesions per image must be 0 <= min <= max, got {lo}-{hi}")
        if not (0 < self.size_mm[0] <= self.size_mm[1]):
            raise SynthsegError(f"sizes must be 0 < min <= max mm, got {self.size_mm}")
        bad = [b for b in self.blends if b not in BLENDS]
        if bad or not self.blends:
            raise SynthsegError(f"blends must be some of {', '.join(BLENDS)}, got {self.blends}")
        if self.constraint not in ("auto", "none"):
            raise SynthsegError("constraint must be 'auto' or 'none'")


@dataclass
class SceneSummary:
    image: str
    scene: str | None
    lesions: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


class _LesionSource:
    """Draws a lesion patch of about a given diameter."""

    def __init__(self, spec: str, kinds: Sequence[str]) -> None:
        if spec == "auto":
            from .lesions.library import default_lesion_source

            spec = default_lesion_source()
        self.spec, self.kinds = spec, tuple(kinds)
        self.library = None
        self.ct_files: list[Path] = []
        if spec != "procedural":
            folder = Path(spec)
            if (folder / "index.json").exists():
                from .lesions import LesionLibrary

                self.library = LesionLibrary(folder)
            elif folder.is_dir():
                self.ct_files = sorted(p for p in folder.iterdir() if "_seg" not in p.name and p.suffix in (".mha", ".nii", ".gz", ".nrrd"))
            if self.library is None and not self.ct_files:
                raise SynthsegError(f"lesion source {spec!r} is neither 'procedural', a lesion library nor a folder of CT patches")

    def draw(self, size_mm: float, image_ndim: int, rng: np.random.Generator):
        from .lesions import load_ct_patch, procedural_nodule

        if self.library is not None:
            # real nodules of the requested classes (measured from HU at import); all three: any item
            classes = None if set(PROCEDURAL_KINDS) <= set(self.kinds) else [k for k in self.kinds if k in PROCEDURAL_KINDS]
            lesion_id = self.library.pick(size_mm, rng, cls=classes or None)
            return self.library.get(lesion_id), {"type": "library", "library": self.spec, "id": lesion_id}
        if self.ct_files:
            path = self.ct_files[int(rng.integers(len(self.ct_files)))]
            return load_ct_patch(path), {"type": "ct_patch", "path": str(path)}
        kind = self.kinds[int(rng.integers(len(self.kinds)))]
        seed = int(rng.integers(2**31 - 1))
        spacing = min(1.0, max(0.25, size_mm / 12.0))
        lobulation, spiculation = float(rng.uniform(0, 0.6)), float(rng.uniform(0, 0.4))
        patch = procedural_nodule(size_mm, kind, spacing=spacing, lobulation=lobulation, spiculation=spiculation, seed=seed)
        return patch, {"type": "procedural", "kind": kind, "seed": seed, "lobulation": lobulation, "spiculation": spiculation}


def _candidates(allowed: np.ndarray, radius_px: np.ndarray) -> np.ndarray:
    """Indices where a lesion of the given radius (pixels per axis) fits inside ``allowed``."""
    if np.all(radius_px < 1):
        inner = allowed
    else:
        dist = ndi.distance_transform_edt(allowed, sampling=1.0 / np.maximum(radius_px, 1e-6))
        inner = dist > 1.0
    return np.argwhere(inner)


def generate_scene(image_path: str, out_folder: str, config: BatchConfig, seed_entropy: tuple[int, ...]) -> SceneSummary:
    """Build one scene with random lesions; returns what was placed (never raises for bad images)."""
    from .constraints import organ_constraint
    from .io import read_image
    from .lesions.place import place_lesion
    from .render import SceneRenderer
    from .render.visibility import MIN_CNR
    from .scene import Scene

    summary = SceneSummary(image=str(image_path), scene=None)
    try:
        rng = np.random.default_rng(np.random.SeedSequence(seed_entropy))
        image = read_image(image_path, modality=config.modality, spacing=config.spacing)
        scene = Scene.create(image, out_folder, overwrite=True)
        summary.scene = str(out_folder)
        allowed = np.ones(image.shape, bool)
        if config.constraint == "auto":
            allowed = organ_constraint(image.array, image.scale, image.modality)
            if not allowed.any():
                raise SynthsegError("the organ constraint is empty")
            scene.set_mask("constraint", allowed, label="organ constraint (auto)")
        renderer = SceneRenderer(scene)
        source = _LesionSource(config.lesion_source, config.kinds)
        wanted = int(rng.integers(config.lesions_per_image[0], config.lesions_per_image[1] + 1))
        spacing = np.asarray(image.scale)
        for _ in range(wanted):
            for _attempt in range(config.max_tries):
                size = float(rng.uniform(*config.size_mm))
                radius_px = (size / 2 + config.min_distance_mm) / spacing
                free = allowed & (ndi.distance_transform_edt(renderer.labels == 0, sampling=spacing) > size / 2 + config.min_distance_mm)
                cands = _candidates(free, (size / 2) / spacing)
                if len(cands) == 0:
                    break
                at = cands[int(rng.integers(len(cands)))][::-1]
                patch, source_info = source.draw(size, image.ndim, rng)
                contrast: float | str = "node21" if config.node21_contrast and image.ndim == 2 else float(rng.uniform(*config.contrast))
                try:
                    record = place_lesion(
                        scene, patch, at_xyz=tuple(float(v) for v in at), size_mm=size,
                        rotation_deg=float(rng.uniform(0, 360)), blend=config.blends[int(rng.integers(len(config.blends)))],
                        contrast=contrast, seed=int(rng.integers(2**31 - 1)), source=source_info, min_inside=config.min_inside,
                        min_cnr=MIN_CNR,  # issue 15: a lesion too faint to see is refused and drawn again
                    )
                except SynthsegError:
                    continue  # e.g. the transformed mask pokes out of the constraint: draw again
                summary.lesions.append({"id": record.id, "label": record.label, "size_mm": record.size_mm,
                                        "blend": record.blend["mode"], "source": source_info})
                break
            del radius_px
        renderer.close()
    except SynthsegError as exc:
        summary.error = str(exc)
    except Exception:  # a bug must not kill a 1000-image batch; it is reported per image
        summary.error = "internal error: " + traceback.format_exc(limit=3).strip().splitlines()[-1]
    return summary


def _run_task(task: tuple[str, str, tuple[int, ...]], config: BatchConfig) -> SceneSummary:
    return generate_scene(task[0], task[1], config, task[2])


def _scene_name(path: Path, index: int) -> str:
    stem = path.name
    for ext in (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm"):
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    return f"{index:05d}_{stem}"


def list_images(inputs: Sequence[str]) -> list[Path]:
    """Image files (and DICOM series folders) from files, folders and globs."""
    from .io.read import IMAGE_EXTENSIONS, file_extension

    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            if any(f.suffix.lower() == ".dcm" for f in path.iterdir()):
                found.append(path)
                continue
            found.extend(sorted(p for p in path.iterdir() if p.is_file() and file_extension(p) in IMAGE_EXTENSIONS))
        elif path.exists():
            found.append(path)
        else:
            found.extend(sorted(Path().glob(item)))
    if not found:
        raise SynthsegError(f"no images found in {', '.join(inputs)}")
    return found


def generate_batch(
    images: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    config: BatchConfig,
    *,
    scheduler: str = "processes",
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> list[SceneSummary]:
    """One scene per image under ``out_dir`` (``NNNNN_<name>/``) plus ``batch.json``.

    Parameters
    ----------
    scheduler : {'processes', 'threads', 'synchronous'}
        Dask scheduler; 'synchronous' runs in this process (debugging, tiny batches).
    workers : int, optional
        Worker count (default: all cores).
    """
    import dask
    import dask.bag as db

    config.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [Path(p) for p in images]
    seeds = np.random.SeedSequence(config.seed)
    tasks = [(str(p), str(out / _scene_name(p, i)), tuple(int(v) for v in seeds.spawn(1)[0].generate_state(4)))
             for i, p in enumerate(paths)]
    summaries: list[SceneSummary] = []
    n_workers = workers or os.cpu_count() or 1
    chunk = max(1, n_workers * 2)
    settings: dict[str, Any] = {"scheduler": scheduler, "num_workers": n_workers}
    pool = None
    if scheduler == "processes":
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # One pool for the whole batch (dask would start one per compute); 'spawn' because
        # forking a process that holds Qt or torch threads is unsafe.
        pool = ProcessPoolExecutor(n_workers, mp_context=multiprocessing.get_context("spawn"))
        settings["pool"] = pool
    try:
        for start in range(0, len(tasks), chunk):  # chunks: progress and cancel between them
            if cancel is not None:
                cancel.raise_if_cancelled()
            part = tasks[start:start + chunk]
            bag = db.from_sequence(part, npartitions=len(part)).map(_run_task, config)
            with dask.config.set(**settings):
                summaries.extend(bag.compute())
            report(progress, len(summaries), len(tasks), f"{len(summaries)}/{len(tasks)} scenes")
    finally:
        if pool is not None:
            pool.shutdown()
    manifest = {
        "config": asdict(config),
        "scenes": [asdict(s) for s in summaries],
        "placed": sum(len(s.lesions) for s in summaries),
        "failed": sum(1 for s in summaries if s.error),
    }
    atomic_write_text(out / "batch.json", json.dumps(manifest, indent=1))
    return summaries
