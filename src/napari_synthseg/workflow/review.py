"""QA review and export: the job behind the Lesion QA panel, ``synthseg review`` and ``export``.

A reviewer's decision is a record change in the live scene of the folder (the same object the
lesion editor edits, from the scene store), signed with who decided and why. Export settings
are parsed from text once, with the same checks for the panel and the CLI.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import SynthsegError
from ..qa.review import IMAGE_QA_KEY
from ..scene import LESION_STATUSES, LesionRecord, Scene, open_scene

DECISION_KEYS = {"a": "accepted", "r": "rejected", "f": "flagged"}


def reviewer(prefix: str = "user") -> str:
    """Who decides, as written into each decision (``user:<login>``)."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no login name in a container
        name = os.environ.get("USER", "unknown")
    return f"{prefix}:{name}"


class ReviewSession:
    """Decide lesions of one scene at a time; every decision is saved at once."""

    def __init__(self, by: str | None = None) -> None:
        self.by = by or reviewer()

    @staticmethod
    def open(folder: str | os.PathLike) -> Scene:
        """The live scene of ``folder`` (shared with any editor of it in this process)."""
        return open_scene(folder)

    def decide(self, scene: Scene, lesion_id: str, status: str, reason: str = "") -> LesionRecord:
        if status not in LESION_STATUSES:
            raise SynthsegError(f"a decision is one of {', '.join(LESION_STATUSES)}, got {status!r}")
        return scene.set_decision(lesion_id, status, by=self.by, reason=reason.strip())

    def decide_image(self, scene: Scene, status: str, reason: str = "") -> None:
        """A decision on the whole image (``rejected`` leaves it out of every export)."""
        if status not in ("accepted", "rejected", "flagged"):
            raise SynthsegError(f"an image decision is accepted, rejected or flagged, got {status!r}")
        scene.set_meta(IMAGE_QA_KEY, {"status": status, "by": self.by, "reason": reason.strip()})


@dataclass(frozen=True)
class ExportSettings:
    """Export options as the panel and the CLI give them, checked once."""

    fmt: str = "nnunet"
    name: str = "Synthseg"
    split: str | None = None
    real_fraction: float = 0.0
    synthetic_ratio: float | None = None
    workers: int = 2

    @classmethod
    def from_text(cls, fmt: str, name: str = "", split: str = "", real_fraction: float = 0.0,
                  synthetic_ratio: str = "", workers: int = 2) -> "ExportSettings":
        from ..export import FORMATS

        if fmt not in FORMATS:
            raise SynthsegError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        ratio_text = (synthetic_ratio or "").strip()
        try:
            ratio = float(ratio_text) if ratio_text else None
        except ValueError:
            raise SynthsegError(f"synthetic ratio must be a number, got {ratio_text!r}") from None
        if ratio is not None and not 0 <= ratio <= 1000:
            raise SynthsegError(f"synthetic ratio must lie in 0..1000, got {ratio}")
        if not 0 <= real_fraction <= 1:
            raise SynthsegError(f"real fraction must lie in [0, 1], got {real_fraction}")
        if not 1 <= int(workers) <= 64:
            raise SynthsegError(f"workers must lie in 1..64, got {workers}")
        return cls(fmt=fmt, name=(name or "").strip() or "Synthseg", split=(split or "").strip() or None,
                   real_fraction=float(real_fraction), synthetic_ratio=ratio, workers=int(workers))

    def run(self, folders: list[Path], out: str | os.PathLike, renderer=None, progress=None, cancel=None):
        """Export ``folders`` to ``out`` (slow: off the UI thread)."""
        from ..export import export_dataset

        if not str(out).strip():
            raise SynthsegError("choose an output folder for the export")
        if not folders:
            raise SynthsegError("load a folder of scenes first")
        return export_dataset(
            list(folders), out, fmt=self.fmt, name=self.name, renderer=renderer, split=self.split,
            real_fraction=self.real_fraction, synthetic_ratio=self.synthetic_ratio, workers=self.workers,
            progress=progress, cancel=cancel,
        )
