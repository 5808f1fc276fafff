"""One batch task: build one scene, atomically and idempotently, on whatever worker runs it.

A scene is built in a temporary folder beside its final place (``scenes/.tmp-<name>-<id>``),
its ``done.json`` marker is written last inside it, and the folder is renamed into place. The
rename is the commit: a worker killed at any point leaves at most a temporary folder (swept at
the start and end of a run), never a half scene. When dask re-runs a task whose worker died, or
a second run races a first, the second rename finds the scene already there and the task returns
the committed scene's record: a scene is never lost and never duplicated. The same job always
draws the same lesions (its seed is spawned from the recipe seed and the scene's indices).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
import traceback
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ..errors import SynthsegError
from ..utils.atomic import atomic_write_text
from .draw import draw_patch, harmonizer, inpainter
from .inputs import ImageItem
from .recipe import InpaintedSource, Recipe

log = logging.getLogger(__name__)

MARKER = "done.json"
TMP_PREFIX = ".tmp-"
_NO_SPACING = "stores no pixel spacing"


@dataclass(frozen=True)
class SceneJob:
    """Everything a worker needs to build one scene (small and picklable)."""

    recipe: Recipe
    item: ImageItem
    scene_index: int
    name: str
    run_id: str = ""  # which run built a scene: a task re-run by dask after its result was lost
    #                   finds its own marker and still reports "done", not "skipped"

    @property
    def scenes_dir(self) -> Path:
        return self.recipe.out_dir / "scenes"

    @property
    def final(self) -> Path:
        return self.scenes_dir / self.name

    @property
    def log_path(self) -> Path:
        return self.recipe.out_dir / "logs" / f"{self.name}.log"

    def seed_sequence(self) -> np.random.SeedSequence:
        # The scene's stream depends on (recipe seed, image index, scene index) only.
        return np.random.SeedSequence(self.recipe.seed, spawn_key=(self.item.index, self.scene_index))


@dataclass
class _Log:
    """The per-scene log, kept in memory and written once (workers may share a file system)."""

    name: str
    lines: list[str] = field(default_factory=list)
    start: float = field(default_factory=time.perf_counter)

    def __call__(self, message: str) -> None:
        self.lines.append(f"{time.perf_counter() - self.start:8.2f}s {message}")
        log.debug("%s: %s", self.name, message)


def read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _read_with_spacing(job: SceneJob, note: _Log):
    """The image with the recipe's spacing rule applied (see :mod:`.inputs`)."""
    from ..io import read_image
    from ..io.read import _override_spacing

    item, defaults = job.item, job.recipe.defaults
    image = read_image(item.path, modality=item.modality or defaults.modality)
    for warning in image.warnings:
        if _NO_SPACING not in warning:
            note(f"warning: {warning}")
    stores_spacing = not any(_NO_SPACING in w for w in image.warnings)
    if stores_spacing:
        source = "file"
        if item.spacing_mm is not None and not np.allclose(_full(item.spacing_mm, image.ndim), image.spacing, rtol=0.01):
            note(f"warning: the CSV spacing {item.spacing_mm} is ignored: the file stores {tuple(image.spacing)} mm")
    elif item.spacing_mm is not None:
        image, source = _override_spacing(image, item.spacing_mm), "csv"
    elif defaults.spacing_mm is not None:
        image, source = _override_spacing(image, defaults.spacing_mm), "default"
    else:
        raise SynthsegError(
            f"{Path(item.path).name} stores no pixel spacing: give it in the inputs CSV (spacing_mm) or as "
            "defaults.spacing_mm in the recipe (lesion sizes are in mm)")
    note(f"read {item.path}: {image.modality} {image.shape}, spacing {tuple(round(s, 4) for s in image.spacing)} mm "
         f"({source})")
    return image, source


def _full(spacing, ndim: int) -> tuple[float, ...]:
    return tuple(spacing) * ndim if len(spacing) == 1 else tuple(spacing)


def _place_lesions(job: SceneJob, scene, image, allowed, rng, note: _Log, rejects: Counter) -> list[dict]:
    from ..lesions.place import place_lesion
    from ..render import SceneRenderer
    from ..render.visibility import MIN_CNR

    plan = job.recipe.lesions
    weights = np.array([s.weight for s in plan.sources], float)
    weights /= weights.sum()
    wanted = int(rng.integers(plan.count[0], plan.count[1] + 1))
    spacing = np.asarray(image.scale)
    placed: list[dict] = []
    renderer = SceneRenderer(scene)
    try:
        for n in range(wanted):
            for _attempt in range(plan.max_tries):
                source = plan.sources[int(rng.choice(len(plan.sources), p=weights))]
                size = float(rng.uniform(*source.diameter_mm))
                gap = size / 2 + plan.min_distance_mm
                free = allowed & (ndi.distance_transform_edt(renderer.labels == 0, sampling=spacing) > gap)
                # Padded with "outside" so the image border counts as an edge, like the organ's.
                inner = (ndi.distance_transform_edt(np.pad(free, 1), sampling=spacing)[(slice(1, -1),) * free.ndim]
                         > size / 2) if free.any() else free
                candidates = np.argwhere(inner)
                if len(candidates) == 0:
                    rejects["no room left in the constraint"] += 1
                    note(f"lesion {n + 1}: no room for {size:.1f} mm")
                    break
                at = candidates[int(rng.integers(len(candidates)))][::-1]
                if isinstance(source, InpaintedSource):
                    try:
                        record = _inpaint_lesion(job, scene, image, allowed, source, size, at, rng)
                    except SynthsegError as exc:
                        rejects[f"placement refused: {_reason(exc)}"] += 1
                        note(f"lesion {n + 1}: refused ({exc})")
                        continue
                    placed.append({"id": record.id, "class": record.kind, "size_mm": round(size, 4),
                                   "blend": "inpainted", "contrast": None,
                                   "center_mm": [round(v, 4) for v in record.center_mm], "source": record.source})
                    note(f"lesion {n + 1}: {record.id} {record.kind} {size:.1f} mm inpainted at "
                         f"{tuple(int(v) for v in at)}")
                    break
                site_mm = tuple(float(v) for v in image.index_to_physical(np.asarray(at, dtype=float)))
                patch, origin = draw_patch(source, size, image, rng, job.recipe.resolve, center_mm=site_mm)
                origin = dict(origin, placed_by="batch")
                if source.contrast == "node21":
                    # NODE21's contrast matching is defined for radiographs; volumes keep the patch's
                    contrast: float | str = "node21" if image.ndim == 2 else 1.0
                else:
                    contrast = float(rng.uniform(*source.contrast))
                blend = source.blend[int(rng.integers(len(source.blend)))]
                # A generated lesion was made in the image's own context at this site: turning it
                # would misalign it with that context.
                rotation = 0.0 if getattr(source, "type", "") == "generated" else float(rng.uniform(0, 360))
                lesion_seed = int(rng.integers(2**31 - 1))
                try:
                    record = place_lesion(
                        scene, patch, at_xyz=tuple(float(v) for v in at), size_mm=size, rotation_deg=rotation,
                        blend=blend, contrast=contrast, feather_mm=source.feather_mm, seed=lesion_seed,
                        kind=source.lesion_class, source=origin, min_inside=job.recipe.constraint.min_inside,
                        min_cnr=MIN_CNR,  # issue 15: a lesion too faint to see is refused and drawn again
                    )
                except SynthsegError as exc:
                    # e.g. the transformed mask pokes out of the constraint: count why, draw again
                    rejects[f"placement refused: {_reason(exc)}"] += 1
                    note(f"lesion {n + 1}: refused ({exc})")
                    continue
                placed.append({"id": record.id, "class": record.kind, "size_mm": round(record.size_mm, 4),
                               "blend": record.blend["mode"], "contrast": record.blend["contrast"],
                               "center_mm": [round(v, 4) for v in record.center_mm], "source": origin})
                note(f"lesion {n + 1}: {record.id} {record.kind} {size:.1f} mm {blend} at {tuple(int(v) for v in at)} "
                     f"from {origin['type']}")
                break
            else:
                rejects[f"gave up after {plan.max_tries} tries"] += 1
    finally:
        renderer.close()
    return placed


def _inpaint_lesion(job: SceneJob, scene, image, allowed, source, size: float, at, rng):
    """LINOP: a lesion-shaped hole at ``at`` (x, y) filled by a lesion-fill model, kept as one record."""
    from ..inpaint import inpaint_samples
    from ..inpaint.masks import blob_mask
    from ..lesions.accept import accept_fill_sample
    from ..workflow.inpaint import InpaintSettings, fill_mask, sample_provenance

    if image.ndim != 2:
        raise SynthsegError("inpainted lesions go into 2D images")
    seed = int(rng.integers(2**31 - 1))
    radius_px = size / 2 / float(np.mean(image.scale))
    mask = blob_mask(image.shape, rng, radius=radius_px, centre=(float(at[1]), float(at[0])),
                     irregularity=source.irregularity)
    mask = fill_mask(mask, image.shape, "the lesion hole")
    if (mask & allowed).sum() < job.recipe.constraint.min_inside * mask.sum() - 1e-9:
        raise SynthsegError("the inpainted lesion reaches outside the organ constraint")
    model = source.model if source.model.startswith("builtin") else str(job.recipe.resolve(source.model))
    settings = InpaintSettings(model=model, mode="lesion", samples=1, seed=seed, texture=source.texture)
    sample = inpaint_samples(image.array, mask, model=inpainter(model), mode="lesion", n_samples=1, seed=seed,
                             texture=source.texture, spacing=image.scale)[0]
    provenance = dict(sample_provenance(settings, 0), type="inpainted", placed_by="batch")
    return accept_fill_sample(scene, sample, mask, "lesion", provenance, kind=source.lesion_class)


def _reason(exc: Exception) -> str:
    """A short, countable reason: the message without numbers (sizes, positions, fractions)."""
    import re

    text = re.sub(r"[-+]?\d[\d.,e-]*", "N", str(exc))
    return re.sub(r"\s*\([^)]*\)", "", text).strip()[:90]


def harmonizer_path(job: SceneJob) -> Path:
    """The harmonizer file for this job's image (``{stem}`` in the recipe becomes the image name)."""
    assert job.recipe.harmonize is not None
    return job.recipe.resolve(job.recipe.harmonize.model.replace("{stem}", job.item.stem))


def _harmonize(job: SceneJob, scene, note: _Log, rejects: Counter) -> int:
    """Harmonize each placed lesion; a lesion the model cannot take stays naive (counted, logged)."""
    from ..harmonize import blend_weights, harmonize
    from ..harmonize.apply import default_add_back
    from ..lesions.place import attach_overlay
    from ..render import SceneRenderer, render_without

    spec = job.recipe.harmonize
    assert spec is not None
    path = harmonizer_path(job)
    if not path.is_file():
        raise SynthsegError(f"harmonize.model: no such file for this image: {path}")
    model = harmonizer(str(path))
    done = 0
    for record in list(scene.lesions):
        if record.source.get("type") == "inpainted":
            continue  # its pixels are a learned fill already, not a paste to harmonize
        renderer = SceneRenderer(scene, follow=False, without_overlay={record.id})
        try:
            source, naive, mask = renderer.source, np.array(renderer.image), renderer.lesion_mask(record.id)
        finally:
            renderer.close()
        add_back = spec.add_back or default_add_back(model, source.modality, record.kind)
        original = render_without(scene, record.id) if add_back == "original" else None
        seed = int(record.seed)
        try:
            sample = harmonize(model, naive, mask, spec.scale, 1, seed, spec.margin_px,
                               reference_image=source.array, add_back=add_back, original_image=original)[0]
        except SynthsegError as exc:  # e.g. the lesion lies outside the region the model learnt
            rejects[f"harmonize skipped: {_reason(exc)}"] += 1
            note(f"harmonize: {record.id} left naive ({exc})")
            continue
        weight = blend_weights(mask, spec.margin_px)
        rows, cols = np.nonzero(weight > 0)
        box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
        attach_overlay(scene, record.id, sample[box], np.ones(sample[box].shape, np.float32),
                       [box[0].start, box[1].start],
                       provenance={"engine": model.architecture, "model_sha256": model.sha256,
                                   "injection_scale": spec.scale, "seed": seed, "sample": 0,
                                   "blend_margin_px": spec.margin_px, "add_back": add_back})
        note(f"harmonize: {record.id} with {model.architecture} scale {spec.scale} ({add_back})")
        done += 1
    return done


def _review(job: SceneJob, scene, note: _Log) -> dict:
    from ..qa.review import qa_scene
    from ..qa.rules import apply_rules, load_rules, parse_rules

    spec = job.recipe.review
    assert spec is not None
    if spec.accept == "all":
        with scene.batch("accept all"):
            for rec in scene.lesions:
                scene.set_decision(rec.id, "accepted", by="batch:accept-all", reason="accept-all")
        return {"accepted": len(scene.lesions), "rejected": 0, "flagged": 0, "reasons": {}}
    rules = (load_rules(job.recipe.resolve(spec.rules)) if isinstance(spec.rules, str)
             else parse_rules(spec.rules, source="recipe"))
    qa = qa_scene(scene, ring_mm=float(rules.extra.get("ring_mm", 4.0)))
    decided = apply_rules(scene, qa.metrics, rules)
    out: dict[str, Any] = {"accepted": 0, "rejected": 0, "flagged": 0, "reasons": {}}
    for lesion_id, (status, by, reason) in decided.items():
        if status in ("accepted", "rejected", "flagged"):
            out[status] += 1
        if status in ("rejected", "flagged"):
            key = f"{status}: {by.split('#')[-1]}"
            out["reasons"][key] = out["reasons"].get(key, 0) + 1
        note(f"review: {lesion_id} {status} ({reason})")
    return out


def _commit(tmp: Path, final: Path) -> bool:
    """Rename ``tmp`` to ``final``; False when a complete scene is already there (idempotent)."""
    try:
        os.rename(tmp, final)
        return True
    except OSError:
        if read_marker(final) is not None:
            shutil.rmtree(tmp, ignore_errors=True)
            return False
        # A folder without a marker (an older, interrupted layout): replace it.
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
        return True


def build_scene(job: SceneJob) -> dict:
    """Build ``job``'s scene and return its record (never raises for a bad image: the error is in
    the record and in the scene's log)."""
    from ..constraints import organ_constraint
    from ..scene import Scene

    done = read_marker(job.final)
    if done is not None:
        return {**done, "status": "done" if job.run_id and done.get("run_id") == job.run_id else "skipped"}
    note = _Log(job.name)
    started = time.time()
    result: dict[str, Any] = {
        "scene": job.name, "image": job.item.path, "image_index": job.item.index, "scene_index": job.scene_index,
        "patient_id": job.item.patient_id, "lesions": [], "rejects": {}, "review": None, "error": None,
        "worker": f"{socket.gethostname()}:{os.getpid()}", "recipe_sha256": job.recipe.fingerprint(),
        "run_id": job.run_id,
    }
    tmp = job.scenes_dir / f"{TMP_PREFIX}{job.name}-{uuid.uuid4().hex[:8]}"
    try:
        rng = np.random.default_rng(job.seed_sequence())
        image, spacing_source = _read_with_spacing(job, note)
        result.update(spacing_mm=list(image.spacing), spacing_source=spacing_source, modality=image.modality)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        scene = Scene.create(image, tmp, patient_id=job.item.patient_id)
        # Saved once at the end: the temporary folder is only ever seen complete (after the
        # rename), so the per-change autosave (an fsync each) would buy nothing here.
        scene.autosave = False
        allowed = np.ones(image.shape, bool)
        if job.recipe.constraint.organ == "auto":
            allowed = organ_constraint(image.array, image.scale, image.modality)
            if not allowed.any():
                raise SynthsegError("the organ constraint is empty (wrong modality? set constraint.organ: none)")
            scene.set_mask("constraint", allowed, label="organ constraint (auto)")
            note(f"constraint: {int(allowed.sum())} px inside")
        rejects: Counter = Counter()
        with scene.batch("batch lesions"):
            result["lesions"] = _place_lesions(job, scene, image, allowed, rng, note, rejects)
        if job.recipe.harmonize is not None and result["lesions"]:
            if image.ndim != 2:
                raise SynthsegError("harmonize works on 2D images; remove it from recipes with volumes")
            result["harmonized"] = _harmonize(job, scene, note, rejects)
        result["rejects"] = dict(rejects)
        if job.recipe.review is not None and result["lesions"]:
            result["review"] = _review(job, scene, note)
        scene.set_meta("batch", {"recipe_sha256": result["recipe_sha256"], "image_index": job.item.index,
                                 "scene_index": job.scene_index, "seed": job.recipe.seed})
        scene.save()
        result["seconds"] = round(time.time() - started, 3)
        atomic_write_text(tmp / MARKER, json.dumps(result, indent=1))  # the marker last ...
        committed = _commit(tmp, job.final)  # ... and the rename is the commit
        if not committed:
            note("a complete copy of this scene was already committed (a retried task): kept that one")
            kept = read_marker(job.final) or result
            return {**kept, "status": "done" if kept.get("run_id") == job.run_id else "skipped"}
        result["status"] = "done"
    except Exception as exc:  # a bad image (or a bug) must not stop a 10,000-image batch
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, SynthsegError):
            result["error"] = str(exc)
        else:
            result["error"] = f"internal error: {type(exc).__name__}: {exc}"
            note(traceback.format_exc())
        note(f"FAILED: {result['error']}")
        result["status"] = "failed"
        result["seconds"] = round(time.time() - started, 3)
    finally:
        _write_log(job, note)
    return result


def _write_log(job: SceneJob, note: _Log) -> None:
    try:
        job.log_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(job.log_path, "\n".join(note.lines) + "\n")
    except OSError as exc:  # a full disk must not turn a built scene into a failure
        log.warning("cannot write %s: %s", job.log_path, exc)
