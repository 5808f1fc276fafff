"""Provenance sidecars and range clipping for images the CLI writes (``remove``, ``inpaint``).

Every such output gets ``<output>.provenance.json`` beside it: what made it (command, method,
model and its SHA-256), from what (source image and mask, with their SHA-256), the software
version, the seed, and whether values had to be clipped to the source's range. An image whose
origin cannot be traced is not fit for a training set.

Values are clipped to the *source image's own* range (its min and max), not the dtype's: a
12-bit CT stored in int16 must not come back with values no scanner of that series produces.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..io import MedicalImage


def _sha256_file(path: Path) -> str | None:
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sha256_paths(paths) -> str | None:
    from ..io import sha256_of_files

    paths = [str(p) for p in paths or []]
    return sha256_of_files(paths) if paths else None


def clip_to_source(values: np.ndarray, source: np.ndarray) -> tuple[np.ndarray, dict]:
    """``values`` clipped to ``source``'s [min, max]; and a record of what was clipped."""
    lo, hi = float(np.min(source)), float(np.max(source))
    values = np.asarray(values)
    below, above = int((values < lo).sum()), int((values > hi).sum())
    record = {"range": [lo, hi], "clipped_below": below, "clipped_above": above,
              "min_before": float(values.min()), "max_before": float(values.max())}
    if below or above:
        values = np.clip(values, lo, hi)
    return values, record


def model_reference(model: Any, mode: str | None = None) -> dict:
    """Name and SHA-256 of the model a fill used (a classical method has no file)."""
    text = str(model)
    if text in ("biharmonic", "telea", "ns", "mean", "median") or model is None:
        return {"name": text, "kind": "classical", "sha256": None}
    if text == "generated":  # the lesion generator's healthy fill (its built-in model)
        from ..generator import resolve_model_path as generator_path

        path = generator_path("builtin")
        return {"name": text, "kind": "generator", "path": str(path), "sha256": _sha256_file(path)}
    try:
        from ..inpaint.infer import resolve_model_path

        path = resolve_model_path(text, mode)
    except Exception:  # noqa: BLE001 - an unknown name is recorded as given
        return {"name": text, "kind": "unknown", "sha256": None}
    return {"name": text, "kind": "learned", "path": str(path), "sha256": _sha256_file(Path(path))}


def write_sidecar(
    output: str | Path,
    *,
    command: str,
    method: str,
    image: MedicalImage,
    mask_path: str | Path | None,
    model: dict | None = None,
    clipping: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Write ``<output>.provenance.json`` and return its path."""
    output = Path(output)
    mask_path = Path(mask_path) if mask_path is not None else None
    record = {
        "output": output.name,
        "output_sha256": _sha256_file(output),
        "command": command,
        "method": method,
        "model": model,
        "source": {"path": str(image.source) if getattr(image, "source", None) else None,
                   "sha256": _sha256_paths(image.source_paths)},
        "mask": None if mask_path is None else {
            "path": str(mask_path),
            "sha256": _sha256_paths(sorted(mask_path.iterdir())) if mask_path.is_dir() else _sha256_file(mask_path)},
        "software": {"name": "napari-synthseg", "version": __version__},
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "clipping": clipping,
    }
    if extra:
        record.update(extra)
    sidecar = output.with_name(output.name + ".provenance.json")
    from ..utils.atomic import atomic_write_text

    atomic_write_text(sidecar, json.dumps(record, indent=1, sort_keys=True))
    return sidecar
