"""Run a recipe on dask.distributed: a LocalCluster, an existing cluster, or in this process.

One task per scene (:func:`.task.build_scene`). Scenes with a ``done.json`` marker are skipped,
so a killed run resumes where it stopped; a worker that dies mid-task makes dask run the task
again elsewhere, and the task's atomic, idempotent commit means no scene is lost or written twice.
Progress with an ETA goes to the ``napari_synthseg.batch`` logger (and an optional callback);
the run summary (counts, rejects and why, failures, time) is ``OUT/summary.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import CancelledError, SynthsegError
from ..utils.atomic import atomic_write_text
from ..utils.progress import CancelToken, ProgressCallback, report
from .draw import check_source
from .inputs import list_inputs
from .recipe import Recipe
from .task import TMP_PREFIX, SceneJob, build_scene, read_marker

log = logging.getLogger("napari_synthseg.batch")

SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class Scheduler:
    """Where tasks run: ``local`` (a LocalCluster of ``workers`` processes), ``tcp://HOST:PORT``
    (an existing cluster) or ``synchronous`` (this process; debugging and tiny batches)."""

    kind: str
    workers: int | None = None
    address: str | None = None

    def __str__(self) -> str:
        if self.kind == "local":
            return f"local:{self.workers}" if self.workers else "local"
        return self.address if self.kind == "remote" else self.kind


def parse_scheduler(text: str | None) -> Scheduler:
    """``local``, ``local:4``, ``tcp://10.0.0.5:8786`` (any dask address) or ``synchronous``."""
    text = (text or "local").strip()
    if text in ("synchronous", "sync"):
        return Scheduler("synchronous", 1)
    m = re.fullmatch(r"local(?::(\d+))?", text)
    if m:
        workers = int(m.group(1)) if m.group(1) else None
        if workers is not None and workers < 1:
            raise SynthsegError("--scheduler local:N needs N >= 1 workers")
        return Scheduler("local", workers)
    if re.fullmatch(r"(tcp|tls|ucx|inproc)://\S+", text):
        return Scheduler("remote", None, text)
    raise SynthsegError(f"--scheduler is local, local:N, tcp://HOST:PORT or synchronous, got {text!r}")


def plan_jobs(recipe: Recipe) -> list[SceneJob]:
    """Every scene of the recipe, in a fixed order; names ``NNNNN_<image>_sKK``."""
    for i, source in enumerate(recipe.lesions.sources):
        try:
            check_source(source, recipe.resolve)
        except SynthsegError as exc:
            raise SynthsegError(f"lesions.sources.{i}: {exc}") from None
    if recipe.harmonize is not None and "{stem}" not in recipe.harmonize.model \
            and not recipe.resolve(recipe.harmonize.model).is_file():
        raise SynthsegError(f"harmonize.model: no such file: {recipe.resolve(recipe.harmonize.model)}")
    if recipe.review is not None and isinstance(recipe.review.rules, str):
        from ..qa.rules import load_rules

        load_rules(recipe.resolve(recipe.review.rules))  # a bad rules file fails before the run
    jobs = []
    for item in list_inputs(recipe):
        for k in range(recipe.scenes_per_image):
            jobs.append(SceneJob(recipe, item, k, f"{item.index:05d}_{item.stem}_s{k:02d}"))
    return jobs


def sweep_temporary(scenes_dir: Path) -> int:
    """Remove temporary scene folders left by killed workers (call when no task is running)."""
    n = 0
    if scenes_dir.is_dir():
        for p in scenes_dir.iterdir():
            if p.name.startswith(TMP_PREFIX) and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
                n += 1
    return n


def _dashboard_available() -> bool:
    return importlib.util.find_spec("bokeh") is not None


@contextlib.contextmanager
def open_client(scheduler: Scheduler, n_tasks: int) -> Iterator[Any]:
    """A dask ``Client`` for ``scheduler``; a LocalCluster is closed (its workers stopped) on exit."""
    from distributed import Client, LocalCluster

    cluster = client = None
    try:
        if scheduler.kind == "local":
            workers = scheduler.workers or max(1, min(os.cpu_count() or 1, n_tasks))
            # Processes, one thread each: scenes are NumPy/SciPy-heavy and hold the GIL in places;
            # the nanny restarts a worker that dies and its task runs again.
            cluster = LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True,
                dashboard_address=":0" if _dashboard_available() else None, silence_logs=logging.ERROR,
            )
            client = Client(cluster)
        else:
            try:
                client = Client(scheduler.address, timeout="20s")
            except (OSError, TimeoutError) as exc:
                raise SynthsegError(f"cannot reach the dask scheduler at {scheduler.address}: {exc}") from None
        yield client
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()


def _probe_worker() -> str:
    import napari_synthseg

    return napari_synthseg.__version__


def _failed_record(job: SceneJob, error: str) -> dict:
    return {"scene": job.name, "image": job.item.path, "image_index": job.item.index,
            "scene_index": job.scene_index, "patient_id": job.item.patient_id, "lesions": [],
            "rejects": {}, "review": None, "error": error, "status": "failed"}


class _Progress:
    """Progress with an ETA on the batch logger (at most every ``interval`` s) and a callback."""

    def __init__(self, total: int, already: int, callback: ProgressCallback | None, interval: float = 2.0):
        self.total, self.done, self.already = total, already, already
        self.callback, self.interval = callback, interval
        self.start = self.last = time.perf_counter()

    def restart(self) -> None:
        self.start = self.last = time.perf_counter()

    def step(self, record: dict) -> None:
        self.done += 1
        now = time.perf_counter()
        built = self.done - self.already
        rate = built / max(now - self.start, 1e-9)
        left = self.total - self.done
        eta = time.strftime("%H:%M:%S", time.gmtime(left / rate)) if rate > 0 else "?"
        message = f"{record['scene']}: {record['status']}" + (f" ({record['error']})" if record.get("error") else "")
        report(self.callback, self.done, self.total, message)
        if now - self.last >= self.interval or left == 0 or record["status"] == "failed":
            self.last = now
            log.info("%d/%d scenes (%.0f%%), %.2f scenes/s, ETA %s - %s", self.done, self.total,
                     100.0 * self.done / self.total, rate, eta, message)


def run_recipe(
    recipe: Recipe,
    scheduler: str | Scheduler = "local",
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    recipe_path: str | os.PathLike | None = None,
) -> dict:
    """Build every scene of ``recipe``, then its exports; returns (and writes) the run summary.

    Parameters
    ----------
    scheduler : str or Scheduler
        ``local`` / ``local:N`` (a LocalCluster of N worker processes, default one per core),
        ``tcp://HOST:PORT`` (an existing dask cluster whose workers can import napari_synthseg and
        see the same files) or ``synchronous`` (in this process).

    Returns
    -------
    dict
        The summary written to ``OUT/summary.json``; ``summary["counts"]["failed"]`` > 0 means
        some scenes failed (their errors are in ``summary["failed"]`` and ``OUT/logs/``).
    """
    sched = parse_scheduler(scheduler) if isinstance(scheduler, str) else scheduler
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    jobs = plan_jobs(recipe)
    out = recipe.out_dir
    try:
        (out / "scenes").mkdir(parents=True, exist_ok=True)
        (out / "logs").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SynthsegError(f"cannot create the output folder {out}: {exc.strerror}") from None
    with _run_lock(out):
        return _run_locked(recipe, sched, jobs, out, started, t0, progress, cancel, recipe_path)


@contextlib.contextmanager
def _run_lock(out: Path) -> Iterator[None]:
    """One run per output folder at a time (a second one would sweep the first's temporary scenes)."""
    import fcntl

    with open(out / ".batch.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SynthsegError(f"another synthseg batch is running on {out}; wait for it or use another out") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _check_markers(jobs: list[SceneJob], records: dict[str, dict], fingerprint: str) -> None:
    others = [j.name for j in jobs if j.name in records and (
        records[j.name].get("recipe_sha256") != fingerprint or records[j.name].get("image") != j.item.path)]
    if others:
        raise SynthsegError(
            f"{len(others)} finished scenes in {jobs[0].recipe.out_dir / 'scenes'} were made by another recipe or "
            f"from other images (e.g. {others[0]}); use another out, or delete its scenes/ to start over")


def _run_locked(recipe, sched, jobs, out, started, t0, progress, cancel, recipe_path) -> dict:
    atomic_write_text(out / "recipe.json", json.dumps(recipe.model_dump(mode="json", by_alias=True), indent=1))
    sweep_temporary(out / "scenes")

    records: dict[str, dict] = {}
    todo: list[SceneJob] = []
    run_id = uuid.uuid4().hex[:12]
    jobs = [dataclasses.replace(job, run_id=run_id) for job in jobs]
    for job in jobs:
        marker = read_marker(job.final)
        if marker is not None:
            records[job.name] = {**marker, "status": "skipped"}
        else:
            todo.append(job)
    _check_markers(jobs, records, recipe.fingerprint())
    if records:
        log.info("resuming: %d of %d scenes already done (markers found), %d to build",
                 len(records), len(jobs), len(todo))
    tracker = _Progress(len(jobs), len(records), progress)
    workers_used = 1 if todo else 0
    dashboard = None
    build_start = time.perf_counter()
    if todo and sched.kind == "synchronous":
        for job in todo:
            if cancel is not None:
                cancel.raise_if_cancelled()
            records[job.name] = build_scene(job)
            tracker.step(records[job.name])
    elif todo:
        from distributed import as_completed

        with open_client(sched, len(todo)) as client:
            dashboard = client.dashboard_link if _dashboard_available() or sched.kind == "remote" else None
            if dashboard:
                log.info("dask dashboard: %s", dashboard)
            elif sched.kind == "local":
                log.info("dask dashboard off (pip install 'bokeh>=3.1' to get it)")
            versions = client.run(_probe_worker)
            workers_used = len(versions)
            if not versions:
                raise SynthsegError(f"the dask cluster at {sched} has no workers")
            log.info("%d dask workers (%s); %d scenes to build", workers_used, sched, len(todo))
            build_start = time.perf_counter()
            futures = client.map(build_scene, todo, key=[f"synthseg-scene-{job.name}-{run_id}" for job in todo],
                                 pure=False, retries=1)
            job_of = {f.key: job for f, job in zip(futures, todo)}
            tracker.restart()  # the rate (and ETA) counts from here, not from the cluster start
            try:
                for future in as_completed(futures):
                    if cancel is not None and cancel.cancelled:
                        raise CancelledError("cancelled by the user")
                    job = job_of[future.key]
                    try:
                        record = future.result()
                    except Exception as exc:  # KilledWorker: the task took down its worker repeatedly
                        record = _failed_record(job, f"worker lost while building this scene: {type(exc).__name__}: {exc}")
                    future.release()  # a result kept on a worker that later dies would be recomputed
                    records[job.name] = record
                    tracker.step(record)
            except BaseException:
                client.cancel(futures)  # Ctrl+C / cancel: stop queued scenes before the cluster closes
                raise
    build_seconds = time.perf_counter() - build_start
    sweep_temporary(out / "scenes")
    built = sum(1 for r in records.values() if r["status"] == "done")
    summary = _summary(recipe, jobs, records, sched, workers_used, started, time.perf_counter() - t0, dashboard,
                       recipe_path)
    summary["build_seconds"] = round(build_seconds, 3)  # submitting to the last scene (no cluster start-up)
    summary["exports"] = run_exports(recipe, rebuild=built > 0)
    summary["seconds_total"] = round(time.perf_counter() - t0, 3)
    atomic_write_text(out / SUMMARY_FILE, json.dumps(summary, indent=1))
    return summary


def _summary(recipe, jobs, records, sched, workers, started, seconds, dashboard, recipe_path) -> dict:
    ordered = [records[j.name] for j in jobs]
    placement, review, by_class, by_source, spacing = Counter(), Counter(), Counter(), Counter(), Counter()
    decisions, harmonize = Counter(), Counter()
    harmonized = 0
    for r in ordered:
        for reason, n in (r.get("rejects") or {}).items():
            (harmonize if reason.startswith("harmonize") else placement)[reason] += n
        harmonized += r.get("harmonized") or 0
        for lesion in r.get("lesions", []):
            by_class[lesion["class"]] += 1
            by_source[lesion["source"]["type"]] += 1
        if r.get("review"):
            for k in ("accepted", "rejected", "flagged"):
                decisions[k] += r["review"][k]
            review.update(r["review"]["reasons"])
        if r.get("spacing_source"):
            spacing[r["spacing_source"]] += 1
    failed = [r for r in ordered if r["status"] == "failed"]
    return {
        "software": f"napari-synthseg {__import__('napari_synthseg').__version__}",
        "recipe": str(recipe_path) if recipe_path else None,
        "recipe_sha256": recipe.fingerprint(),
        "seed": recipe.seed,
        "out": str(recipe.out_dir),
        "scheduler": str(sched),
        "workers": workers,
        "dashboard": dashboard,
        "started": started.isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
        "counts": {
            "images": len({j.item.index for j in jobs}),
            "scenes": len(jobs),
            "built": sum(1 for r in ordered if r["status"] == "done"),
            "resumed": sum(1 for r in ordered if r["status"] == "skipped"),
            "failed": len(failed),
            "lesions": sum(len(r.get("lesions", [])) for r in ordered),
            "lesions_by_class": dict(sorted(by_class.items())),
            "lesions_by_source": dict(sorted(by_source.items())),
            "review": dict(decisions),
            "spacing_from": dict(sorted(spacing.items())),
            "harmonized": harmonized,
        },
        "rejects": {"placement": dict(placement.most_common()), "harmonize": dict(harmonize.most_common()),
                    "review": dict(review.most_common())},
        "failed": [{"scene": r["scene"], "image": r["image"], "error": r["error"],
                    "log": str(Path(recipe.out_dir) / "logs" / f"{r['scene']}.log")} for r in failed],
        "scenes": [{k: r.get(k) for k in ("scene", "image", "status", "error", "lesions", "review",
                                          "spacing_mm", "spacing_source", "seconds", "worker")} for r in ordered],
    }


def run_exports(recipe: Recipe, rebuild: bool) -> list[dict]:
    """Write each export of the recipe from the committed scenes; an existing export is rebuilt
    only when this run built new scenes (else it is up to date)."""
    from ..export import export_dataset
    from ..export.run import dataset_folder

    results = []
    scenes_dir = recipe.out_dir / "scenes"
    for spec in recipe.export:
        entry: dict[str, Any] = {"format": spec.format}
        try:
            target_root = recipe.out_dir / ("nnUNet_raw" if spec.format == "nnunet" else f"export_{spec.format}")
            target = dataset_folder(target_root, spec.format, spec.name, spec.dataset_id)
            entry["path"] = str(target)
            if target.exists() and not rebuild:
                entry["status"] = "up to date"
                results.append(entry)
                continue
            kwargs: dict[str, Any] = {}
            if spec.format == "nnunet":
                # default: $nnUNet_preprocessed, else OUT/nnUNet_preprocessed (beside OUT/nnUNet_raw)
                kwargs["nnunet_preprocessed"] = (recipe.resolve(spec.nnunet_preprocessed)
                                                 if spec.nnunet_preprocessed else None)
            log.info("exporting %s to %s", spec.format, target)
            result = export_dataset(
                scenes_dir, target_root, fmt=spec.format, name=spec.name, dataset_id=spec.dataset_id, force=True,
                split=spec.split, real_fraction=spec.real_fraction, synthetic_ratio=spec.synthetic_ratio,
                synthetic_in=spec.synthetic_in, seed=recipe.seed, classes=spec.classes, **kwargs)
            entry.update(status="written", path=str(result.path), counts=result.plan.counts(),
                         splits_final=result.splits_final)
        except SynthsegError as exc:
            entry.update(status="failed", error=str(exc))
            log.error("export %s failed: %s", spec.format, exc)
        results.append(entry)
    return results
