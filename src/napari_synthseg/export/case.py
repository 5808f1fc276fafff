"""Write one case (runs in a worker process): render, write pixels, sidecar, done-marker."""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import SynthsegError
from ..io import MedicalImage
from ..qa.rendered import RendererSpec, render, renderer_name, resolve_renderer
from ..scene import Scene
from .annotations import instances
from .layout import Layout
from .pixels import image_pixels, label_pixels, write_pixels
from .plan import ANNOTATION_MASK, Case
from .staging import write_done_marker


@dataclass
class CaseJob:
    """Everything a worker needs; small and picklable."""

    case: dict
    staging: str
    fmt: str
    ending: str
    class_map: dict[str, int]  # lesion kind -> class value (semantic formats); {"*": 1} = binary
    png_compression: int
    renderer: RendererSpec
    want_rle: bool


try:
    from ..render.compose import NO_LABEL_KINDS
except ImportError:  # renderer not installed: same convention
    NO_LABEL_KINDS = ("removal",)


def _semantic(labels: np.ndarray, value_to_class: dict[int, int]) -> np.ndarray:
    top = int(labels.max()) if labels.size else 0
    lut = np.zeros(top + 1, dtype=np.uint8)
    for value, cls in value_to_class.items():
        if value <= top:
            lut[value] = cls
    return lut[labels]


def _class_of(kind: str, class_map: dict[str, int]) -> int:
    return class_map.get("*") or class_map.get(kind) or class_map.get("annotated", 1)


_SOURCES: OrderedDict[tuple, MedicalImage] = OrderedDict()
_SOURCES_MAX = 4


def _source_key(scene: Scene) -> tuple | None:
    try:
        stats = tuple((p, os.stat(p).st_mtime_ns, os.stat(p).st_size) for p in scene.source.paths)
    except OSError:
        return None
    # Spacing is part of the scene for files that store none (PNG), so it is part of the key.
    return (scene.source.sha256, stats, tuple(scene.source.geometry.get("spacing") or ()))


def _with_cached_source(scene: Scene) -> Scene:
    """Reuse the decoded source image across cases of one worker.

    Batches usually hold many scenes on the same source (variants of one radiograph); decoding
    and hashing it once per worker instead of once per case saves ~20 ms per 1024² PNG case.
    The first load of a file (same path, mtime and size) still checks its sha256.
    """
    key = _source_key(scene)
    if key is None:
        return scene
    hit = _SOURCES.get(key)
    if hit is not None:
        _SOURCES.move_to_end(key)
        scene._image = hit  # noqa: SLF001 - the scene's own cache slot, filled as load_image would
        return scene
    _SOURCES[key] = scene.load_image()
    while len(_SOURCES) > _SOURCES_MAX:
        _SOURCES.popitem(last=False)
    return scene


def check_export_labels(scene: Scene, rendered, case_id: str) -> None:
    """Refuse to export a label that disagrees with its image (issue 15, ``docs/rendering.md``).

    Every voxel outside the labels may differ from the source only inside a lesion's box and by
    at most the label tolerance times that lesion's contrast (peak change inside its label);
    healthy fills and regenerated surroundings (outpainting) may change their own box freely;
    each label must change its pixels and have no detached fragment below the size limit.
    Raises :class:`~napari_synthseg.errors.SynthsegError` naming the case otherwise.
    """
    try:
        from ..render.placement import place
        from ..render.truth import LABEL_TOLERANCE, MIN_FRAGMENT_VOXELS, check_label_truth
    except ImportError:  # no renderer installed: nothing to check against
        return
    original = rendered.original
    source = np.asarray(original.array, np.float32)
    diff = np.abs(np.asarray(rendered.image, np.float32) - source)
    allowances: list[tuple[tuple[slice, ...], float]] = []
    own_boxes = False  # set when a record cannot be placed here
    kept: set[int] = set()
    min_fragment = MIN_FRAGMENT_VOXELS
    for record in rendered.records:
        try:
            box = place(scene, record, original).box
        except SynthsegError:
            # a record this package cannot place (a plug-in renderer's own kind): judge the
            # labels on their own (each label's box, its own peak change)
            own_boxes = True
            break
        blend = record.blend or {}
        min_fragment = min(min_fragment, int(blend.get("min_fragment_voxels", MIN_FRAGMENT_VOXELS)))
        if record.kind in NO_LABEL_KINDS or "label_mask" in record.assets:
            allowances.append((box, float("inf")))
            kept.add(record.label)
            continue
        mine = rendered.labels[box] == record.label
        peak = float(diff[box][mine].max()) if mine.any() else 0.0
        allowances.append((box, float(blend.get("label_tolerance", LABEL_TOLERANCE)) * peak))
    report = check_label_truth(source, rendered.image, rendered.labels, None if own_boxes else allowances,
                               min_fragment=min_fragment, kept_labels=kept)
    report.raise_if_bad(f"export of case {case_id}")


def write_case(job: CaseJob) -> dict:
    """Write the case's files into the staging folder and return (and store) its summary."""
    case = Case.from_dict(job.case)
    root = Path(job.staging)
    layout = Layout(job.fmt, job.ending)
    scene = _with_cached_source(Scene.open(case.scene))
    func = resolve_renderer(job.renderer)
    if case.kind == "synthetic":
        rendered = render(scene, func, statuses=("accepted",))
        original: MedicalImage = rendered.original
        image, labels = rendered.image, rendered.labels
        records = [r for r in rendered.records if r.id in case.lesion_ids]
        # Removals (healthy fills of real lesions) change pixels but paint no label.
        lesions = {r.label: {"lesion_id": r.id, "kind": r.kind} for r in records if r.kind not in NO_LABEL_KINDS}
        renderer = renderer_name(func)
        check_export_labels(scene, rendered, case.case_id)
    else:
        original = scene.load_image()
        image = original.array
        annotation = scene.mask(ANNOTATION_MASK)
        labels = np.zeros(original.shape, np.int32) if annotation is None else np.asarray(annotation, np.int32)
        records = []
        lesions = {int(v): {"lesion_id": f"annotation-{int(v)}", "kind": "annotated"}
                   for v in np.unique(labels) if v != 0}
        renderer = None

    pixels, pixel_note = image_pixels(image, original.array.dtype, job.ending)
    image_rel = layout.image(case.case_id, case.split)
    write_pixels(pixels, root / image_rel, original, job.png_compression)
    label_rel = layout.label(case.case_id, case.split)
    if label_rel is not None:
        if job.fmt == "nnunet":
            value_to_class = {v: _class_of(info["kind"], job.class_map) for v, info in lesions.items()}
            out_labels = _semantic(labels, value_to_class)
        else:
            out_labels = label_pixels(labels)
        write_pixels(out_labels, root / label_rel, original, job.png_compression)

    found = instances(labels, original.scale, rle=job.want_rle)
    for entry in found:
        info = lesions.get(entry["label"], {"lesion_id": f"label-{entry['label']}", "kind": "unknown"})
        entry.update(info)
        entry["class"] = _class_of(info["kind"], job.class_map)
    drawn = {e["label"] for e in found}
    not_drawn = [info["lesion_id"] for v, info in lesions.items() if v not in drawn]

    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    sidecar = {
        "case_id": case.case_id,
        "kind": case.kind,
        "split": case.split,
        "patient": case.patient,
        "files": {"image": image_rel, "label": label_rel},
        "pixels": {"dtype": str(pixels.dtype), "note": pixel_note, "source_dtype": str(original.array.dtype)},
        "geometry": original.geometry(),
        "source": scene.source.to_dict(),
        "scene": {"folder": str(Path(case.scene).resolve()), "revision": scene.revision,
                  "modified": scene.modified},
        "lesions": [r.to_dict() for r in records],
        "label_values": {str(v): info for v, info in lesions.items()},
        "lesions_not_drawn": not_drawn,
        "renderer": renderer,
        "software": f"napari-synthseg {__version__}",
        "date": now,
    }
    (root / layout.sidecar(case.case_id)).write_text(json.dumps(sidecar, indent=1), encoding="utf-8")
    summary = {
        "case": case.to_dict(),
        "image": image_rel,
        "label": label_rel,
        "shape": list(original.shape),
        "spacing": list(original.spacing),
        "instances": found,
        "not_drawn": not_drawn,
        "classes_present": sorted({e["class"] for e in found}),
    }
    # The marker comes last: a case without one is rewritten on resume.
    write_done_marker(root, case.case_id, summary)
    return summary
