"""Batch QA of scene folders: metrics for every lesion and headless decisions."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..errors import SynthsegError
from ..scene import Scene
from ..scene.scene import SCENE_FILE
from ..utils.progress import CancelToken, ProgressCallback, report
from .metrics import LesionMetrics, scene_metrics
from .rendered import RenderedScene, RendererSpec, render, resolve_renderer
from .rules import RuleSet, apply_rules

IMAGE_QA_KEY = "qa_image"


def find_scenes(folder: str | os.PathLike) -> list[Path]:
    """Scene folders in ``folder`` (itself, or its sub-folders holding a scene.json), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SynthsegError(f"scenes folder not found: {folder}")
    if (folder / SCENE_FILE).exists():
        return [folder]
    found = sorted(p.parent for p in folder.glob(f"*/{SCENE_FILE}"))
    if not found:
        found = sorted(p.parent for p in folder.glob(f"**/{SCENE_FILE}"))
    if not found:
        raise SynthsegError(f"no scenes in {folder}: expected sub-folders with a {SCENE_FILE}")
    return found


def image_status(scene: Scene) -> str | None:
    """Image-level decision (``"rejected"``/``"flagged"``/``"accepted"``) or None."""
    qa = scene.meta.get(IMAGE_QA_KEY) or {}
    return qa.get("status")


@dataclass
class SceneQA:
    scene: Scene
    rendered: RenderedScene
    metrics: dict[str, LesionMetrics]


def qa_scene(scene: Scene, renderer: RendererSpec = None, ring_mm: float = 4.0) -> SceneQA:
    """Render ``scene`` with all its lesions and compute every lesion's QA numbers."""
    rendered = render(scene, renderer)
    original = rendered.original.array
    info = _dtype_range(original)
    metrics = scene_metrics(original, rendered.image, rendered.labels, rendered.records,
                            rendered.spacing_np, source_range=info, ring_mm=ring_mm)
    return SceneQA(scene, rendered, metrics)


def _dtype_range(array) -> tuple[float, float]:
    return float(array.min()), float(array.max())


def review_scenes(
    folders: Iterable[str | os.PathLike],
    rules: RuleSet | None = None,
    accept_all: bool = False,
    by: str = "cli:accept-all",
    overwrite: bool = False,
    renderer: RendererSpec = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> dict[str, dict[str, tuple[str | None, str, str]]]:
    """Decide lesions of many scenes with ``rules`` (rendering them) or accept all undecided.

    Returns scene folder -> lesion id -> (status, by, reason) for lesions decided now.
    """
    if (rules is None) == (not accept_all):
        raise SynthsegError("choose one of --accept-all or --rules RULES.yaml")
    folders = list(folders)
    func = resolve_renderer(renderer) if rules is not None else None
    ring_mm = float((rules.extra if rules else {}).get("ring_mm", 4.0))
    out: dict[str, dict[str, tuple[str | None, str, str]]] = {}
    for i, folder in enumerate(folders):
        if cancel is not None:
            cancel.raise_if_cancelled()
        scene = Scene.open(folder)
        decided: dict[str, tuple[str | None, str, str]] = {}
        if accept_all:
            with scene.batch("accept all"):
                for rec in list(scene.lesions):
                    if rec.status == "placed" or overwrite:
                        scene.set_decision(rec.id, "accepted", by=by, reason="accept-all")
                        decided[rec.id] = ("accepted", by, "accept-all")
        else:
            qa = qa_scene(scene, func, ring_mm=ring_mm)
            extra = None
            if rules.realism_reference is not None:
                from .realism import scene_realism_metrics

                r = qa.rendered
                extra = scene_realism_metrics(r.image, r.labels, r.records, r.spacing_np, rules.realism_reference,
                                              rules.realism_features)
            decided = apply_rules(scene, qa.metrics, rules, overwrite=overwrite, extra=extra)
        out[str(folder)] = decided
        report(progress, i + 1, len(folders), f"{Path(folder).name}: {len(decided)} decided")
    return out
