"""``export_dataset``: scenes -> an nnU-Net v2, COCO, CSV-box or NIfTI training set, atomically."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import sys
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import CancelledError, SynthsegError
from ..qa.rendered import RendererSpec, renderer_name, resolve_renderer
from ..qa.review import find_scenes
from ..scene import Scene
from ..utils.atomic import atomic_write_text
from ..utils.progress import CancelToken, ProgressCallback, report
from . import assemble
from .case import CaseJob, write_case
from .layout import FORMATS, Layout
from .pixels import DEFAULT_PNG_COMPRESSION, check_ending
from .plan import ANNOTATION_MASK, ExportPlan, plan_export
from .staging import StagingDirectory


@dataclass
class ExportResult:
    path: Path
    plan: ExportPlan
    written: int
    resumed: int
    splits_final: str | None = None  # nnunet: where splits_final.json was written


def nnunet_preprocessed_folder(raw: str | os.PathLike, explicit: str | os.PathLike | None = None) -> Path:
    """The ``nnUNet_preprocessed`` folder nnU-Net reads ``DatasetXXX_Name/splits_final.json`` from.

    ``explicit`` if given, else ``$nnUNet_preprocessed`` (what nnU-Net itself uses), else a
    sibling ``nnUNet_preprocessed`` of the ``nnUNet_raw`` folder ``raw``.
    """
    if explicit:
        return Path(explicit)
    if os.environ.get("nnUNet_preprocessed"):
        return Path(os.environ["nnUNet_preprocessed"])
    return Path(raw).resolve().parent / "nnUNet_preprocessed"


def _splits_from_plan(plan: ExportPlan) -> list[dict] | None:
    cases = [{"case": c.to_dict()} for c in plan.cases]
    return assemble.nnunet_splits(cases)


def dataset_folder(out: str | os.PathLike, fmt: str, name: str, dataset_id: int) -> Path:
    """nnU-Net: ``out/DatasetXXX_Name`` (``out`` is nnUNet_raw); other formats: ``out`` itself."""
    out = Path(out)
    if fmt != "nnunet":
        return out
    if not 1 <= dataset_id <= 999:
        raise SynthsegError(f"nnU-Net dataset ids are 1..999, got {dataset_id}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", name):
        raise SynthsegError(f"dataset name {name!r} must be letters, digits and dashes (no spaces or underscores)")
    return out / f"Dataset{dataset_id:03d}_{name}"


def _class_map(plan: ExportPlan, classes: str) -> dict[str, int]:
    if classes == "binary":
        return {"*": 1}
    if classes != "kind":
        raise SynthsegError(f"--classes must be binary or kind, got {classes!r}")
    kinds: set[str] = set()
    for case in plan.cases:
        scene = Scene.open(case.scene)
        if case.kind == "synthetic":
            kinds.update(r.kind for r in scene.lesions if r.id in case.lesion_ids and r.kind != "removal")
        elif ANNOTATION_MASK in scene.masks:
            kinds.add("annotated")
    return {k: i for i, k in enumerate(sorted(kinds), start=1)}


def _modality(plan: ExportPlan) -> str:
    mods = {Scene.open(c.scene).source.geometry.get("modality", "unknown") for c in plan.cases[:50]}
    return sorted(mods)[0] if len(mods) == 1 else "image"


def export_dataset(
    scenes: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    fmt: str = "nnunet",
    name: str = "Synthseg",
    dataset_id: int = 501,
    force: bool = False,
    split: str | Sequence[float] | None = None,
    real_fraction: float = 0.0,
    synthetic_ratio: float | None = None,
    synthetic_in: str = "train",
    seed: int = 0,
    classes: str = "binary",
    file_ending: str | None = None,
    png_compression: int = DEFAULT_PNG_COMPRESSION,
    renderer: RendererSpec = None,
    workers: int | None = None,
    mp_context: str | None = None,
    nnunet_preprocessed: str | os.PathLike | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> ExportResult:
    """Export the accepted lesions of ``scenes`` as a training set.

    Parameters
    ----------
    scenes : path or sequence of paths
        A folder of scene folders, or the scene folders themselves.
    out : path
        nnU-Net: the ``nnUNet_raw`` folder the dataset goes into; other formats: the dataset folder.
    fmt : {"nnunet", "coco", "csv", "nifti"}
    force : bool
        Replace an existing dataset (only after the new one is complete).
    split : "train,val,test" fractions of patients, e.g. "0.8,0.1,0.1".
    real_fraction, synthetic_ratio, synthetic_in, seed
        Mix of real and synthetic cases, see :mod:`napari_synthseg.export.plan`.
    classes : {"binary", "kind"}
        nnU-Net/COCO classes: one "lesion" class, or one class per lesion kind.
    file_ending : str, optional
        ``.png`` (2D, default for 2D) or ``.nii.gz`` (default for 3D), ``.nii``, ``.mha``, ``.nrrd``.
    png_compression : int
        zlib level 0-9 for PNG (lossless at every level; 1 is fast).
    renderer : callable or "module:function", optional
        Scene renderer (default :data:`napari_synthseg.qa.rendered.DEFAULT_RENDERER`).
    workers : int, optional
        Worker processes (default: CPU count, at most 8); 1 writes in this process.
    nnunet_preprocessed : path, optional
        nnunet with a validation split: the ``nnUNet_preprocessed`` folder that receives
        ``DatasetXXX_Name/splits_final.json``, where nnU-Net reads it (default: see
        :func:`nnunet_preprocessed_folder`). An existing, different file is replaced only with
        ``force``.
    """
    if fmt not in FORMATS:
        raise SynthsegError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not 0 <= int(png_compression) <= 9:
        raise SynthsegError(f"PNG compression is a zlib level 0..9, got {png_compression}")
    folders = find_scenes(scenes) if isinstance(scenes, (str, os.PathLike)) else [Path(p) for p in scenes]
    folders = [f.resolve() for f in folders]  # a resumed run may name the folder differently
    target = dataset_folder(out, fmt, name, dataset_id)
    if fmt == "nnunet" and not Path(out).exists():
        try:
            Path(out).mkdir(parents=True)  # a fresh nnUNet_raw folder
        except OSError as exc:
            raise SynthsegError(f"cannot create {out}: {exc.strerror}") from None
    staging = StagingDirectory(target, force=force)
    staging.check_target()  # fail before any work

    plan = plan_export(folders, split, real_fraction, synthetic_ratio, synthetic_in, seed)
    splits_path = None
    splits = _splits_from_plan(plan) if fmt == "nnunet" else None
    if splits:
        splits_path = nnunet_preprocessed_folder(out, nnunet_preprocessed) / target.name / "splits_final.json"
        if splits_path.exists() and not force:
            try:
                same = json.loads(splits_path.read_text(encoding="utf-8")) == splits
            except (OSError, ValueError):
                same = False
            if not same:
                raise SynthsegError(f"{splits_path} exists with other folds (nnU-Net trains on it); "
                                    "pass --force to replace it")
    ndims = {c.ndim for c in plan.cases}
    if len(ndims) > 1:
        raise SynthsegError("the scenes mix 2D and 3D images; export them separately")
    ndim = ndims.pop()
    if fmt in ("coco", "csv") and ndim != 2:
        raise SynthsegError(f"{fmt} export holds 2D images; export 3D scenes with --format nnunet or nifti")
    ending = check_ending(file_ending or (".png" if ndim == 2 and fmt != "nifti" else ".nii.gz"), ndim)
    if fmt == "coco" and ending != ".png":
        raise SynthsegError("COCO images are written as PNG; drop --file-ending or use --format nifti")
    class_map = _class_map(plan, classes)
    func = resolve_renderer(renderer)
    spec = renderer if isinstance(renderer, str) or renderer is None else func
    revisions = {c.scene: Scene.open(c.scene).revision for c in plan.cases}
    fingerprint = {
        "cases": [c.to_dict() for c in plan.cases],
        "revisions": revisions,
        "options": plan.options,
        "fmt": fmt,
        "ending": ending,
        "classes": class_map,
        "png_compression": int(png_compression),
        "renderer": renderer_name(func),
    }
    done = staging.open(fingerprint)
    layout = Layout(fmt, ending)
    for folder in layout.folders():
        (staging.path / folder).mkdir(exist_ok=True)

    summaries: dict[str, dict] = {}
    for case_id in done:
        try:
            summaries[case_id] = staging.read_done(case_id)
        except (OSError, ValueError):
            pass  # unreadable marker: write the case again
    # Grouped by source image so each worker decodes a shared source once (see case.py).
    todo = sorted((c for c in plan.cases if c.case_id not in summaries), key=lambda c: (c.source_sha256, c.case_id))
    jobs = [
        CaseJob(c.to_dict(), str(staging.path), fmt, ending, class_map, int(png_compression), spec, fmt == "coco")
        for c in todo
    ]
    total = len(plan.cases)
    report(progress, len(summaries), total, f"{len(summaries)} cases already written" if summaries else "exporting")
    try:
        for summary in _run_jobs(jobs, workers, mp_context, cancel):
            summaries[summary["case"]["case_id"]] = summary
            report(progress, len(summaries), total, summary["case"]["case_id"])
        if cancel is not None:
            cancel.raise_if_cancelled()
        ordered = [summaries[c.case_id] for c in plan.cases]
        _write_dataset_files(staging.path, plan, ordered, fmt, ending, class_map, name,
                             renderer_name(func), folders, _modality(plan), splits_path)
        # nnU-Net keeps no empty test folders; other formats never create them.
        for folder in layout.folders():
            path = staging.path / folder
            if path.is_dir() and not any(path.iterdir()) and folder not in ("imagesTr", "labelsTr"):
                path.rmdir()
        path = staging.commit()
    except BaseException:
        staging.release()  # keep the partial folder: the next run resumes from it
        raise
    if splits_path is not None:
        # After the dataset is complete: nnU-Net's trainer reads this file, never one in nnUNet_raw.
        try:
            splits_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(splits_path, assemble.dumps(splits))
        except OSError as exc:
            raise SynthsegError(f"cannot write {splits_path}: {exc.strerror or exc}") from None
    return ExportResult(path, plan, written=len(todo), resumed=total - len(todo),
                        splits_final=str(splits_path) if splits_path else None)


def _run_jobs(jobs: list[CaseJob], workers: int | None, mp_context: str | None, cancel: CancelToken | None):
    if not jobs:
        return
    if workers is None:
        workers = min(8, os.cpu_count() or 1)
    workers = max(1, min(workers, len(jobs)))
    if workers == 1:
        for job in jobs:
            if cancel is not None:
                cancel.raise_if_cancelled()
            yield _checked(job)
        return
    ctx = multiprocessing.get_context(mp_context or _default_context())
    pending: set[Future] = set()
    queue = iter(jobs)
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init) as pool:
        try:
            # Bounded in flight: memory stays flat however many cases there are.
            for job in queue:
                pending.add(pool.submit(_checked, job))
                if len(pending) >= 2 * workers:
                    break
            while pending:
                if cancel is not None and cancel.cancelled:
                    raise CancelledError("cancelled by the user")
                finished, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
                for fut in finished:
                    yield fut.result()
                    nxt = next(queue, None)
                    if nxt is not None:
                        pending.add(pool.submit(_checked, nxt))
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise


def _worker_init() -> None:
    # A worker must not outlive an export killed with SIGKILL: it would keep writing into the
    # staging folder (and hold its lock) while the user re-runs the export.
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _default_context() -> str:
    # fork is fastest and works from scripts without a __main__ guard, but forking a process
    # with other threads running (napari, Qt) can deadlock: use forkserver there.
    if sys.platform.startswith("linux") and threading.active_count() == 1:
        return "fork"
    return "forkserver" if os.name == "posix" else "spawn"


def _checked(job: CaseJob) -> dict:
    try:
        return write_case(job)
    except SynthsegError as exc:
        raise SynthsegError(f"case {job.case['case_id']} ({Path(job.case['scene']).name}): {exc}") from None


def _write_dataset_files(root: Path, plan: ExportPlan, summaries: list[dict], fmt: str, ending: str,
                         class_map: dict, name: str, renderer: str, folders: list[Path], modality: str,
                         splits_path: Path | None = None) -> None:
    extra: dict = {}
    if fmt == "nnunet":
        assemble.write_text(root / "dataset.json", assemble.dumps(
            assemble.nnunet_dataset_json(plan, summaries, class_map, ending, modality, name)))
        if splits_path is not None:
            # nnU-Net's trainer reads nnUNet_preprocessed/DatasetXXX/splits_final.json (written
            # after the commit). A copy in the raw dataset keeps it self-contained; nnunetv2 2.8.1's
            # planner copies it to nnUNet_preprocessed when none is there, or checks they agree.
            assemble.write_text(root / "splits_final.json", assemble.dumps(assemble.nnunet_splits(summaries)))
            extra["nnunet_splits_final"] = str(splits_path)
    elif fmt == "coco":
        files = {}
        for split, data in assemble.coco_files(summaries, class_map).items():
            rel = f"annotations/instances_{split}.json"
            assemble.write_text(root / rel, assemble.dumps(data))
            files[split] = rel
        extra["coco_files"] = files
    elif fmt == "csv":
        assemble.write_text(root / "boxes_px.csv", assemble.csv_boxes(summaries, "px"))
        assemble.write_text(root / "boxes_mm.csv", assemble.csv_boxes(summaries, "mm"))
    splits = {s: sorted(x["case"]["case_id"] for x in summaries if x["case"]["split"] == s)
              for s in ("train", "val", "test")}
    assemble.write_text(root / "splits.json", assemble.dumps({"cases": splits, "patients": plan.patients}))
    scenes_dir = str(Path(os.path.commonpath([str(Path(f).resolve()) for f in folders]))) if folders else ""
    assemble.write_text(root / "manifest.json", assemble.dumps(
        assemble.manifest(plan, summaries, fmt, ending, class_map, renderer, scenes_dir, extra)))
