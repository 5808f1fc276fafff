"""A blinded reader study (visual Turing test): can a person tell synthetic lesions from real?

:func:`make_reader_study` writes a balanced, shuffled case set: every case is the same
lesion-centred crop (size, resampling) shown through the same window, stored as 8-bit pixels
(so no HU value, header field or file name hints at its origin) under a neutral name
``case_001.mha``... The key (which case is real) is written to a separate file that the person
running the study keeps away from readers.

:class:`ReaderSession` is what the napari widget drives: the next unanswered case, and one
answer (real / synthetic, confidence 1-5) appended to ``answers/<reader>.csv`` and flushed to
disk at once, so a closed window or a crash loses nothing and the reader resumes where they
stopped. The last answer for a case counts.

:func:`score_reader_study` joins the answers with the key: accuracy, sensitivity (synthetic
cases called synthetic), specificity (real cases called real) and the ROC AUC of the
confidence-rated answer, with bootstrap CIs over cases, per reader and pooled.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import SynthsegError
from ..utils.atomic import atomic_write_text
from ..utils.progress import CancelToken, ProgressCallback
from .lesion_sets import LesionSample
from .realism import LesionSetLike, as_lesion_set
from .report import environment, fmt_ci, write_json
from .stats import auc_with_ci, bootstrap_statistic

STUDY_FILE = "study.json"
ANSWER_COLUMNS = ["case", "answer", "confidence", "time"]
CHOICES = ("real", "synthetic")
#: Lung window for CT in HU (level -600, width 1500): the window radiologists read nodules in.
CT_LUNG_WINDOW = (-1350.0, 150.0)


def _window(samples: Sequence[LesionSample]) -> tuple[float, float]:
    values = np.concatenate([s.image.ravel()[:: max(1, s.image.size // 2048)] for s in samples])
    if values.min() < -500 and values.max() < 4000:  # Hounsfield units
        return CT_LUNG_WINDOW
    lo, hi = np.quantile(values, [0.005, 0.995])
    return float(lo), float(hi if hi > lo else lo + 1)


def make_reader_study(
    real: LesionSetLike,
    synthetic: LesionSetLike,
    out: str | os.PathLike,
    *,
    n: int = 100,
    key_path: str | os.PathLike | None = None,
    crop_mm: float = 48.0,
    spacing_mm: float = 1.0,
    window: tuple[float, float] | None = None,
    seed: int = 0,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> dict:
    """Write a blinded case set of ``n`` cases (half real, half synthetic) to ``out``.

    Parameters
    ----------
    real, synthetic : lesion sets
        Paths (any layout :mod:`.lesion_sets` reads), :class:`LesionSet` or samples.
    out : path
        The study folder readers get (``study.json``, ``cases/``, ``answers/``). Must not exist
        or be empty.
    n : int
        Number of cases (even; each set gives ``n // 2``).
    key_path : path, optional
        Where the key goes; default ``<out>.key.json`` beside the folder, never inside it.
    crop_mm, spacing_mm : float
        The crop every case shows.
    window : (float, float), optional
        Display window (low, high) in native units; default the CT lung window for HU data, else
        the 0.5-99.5 % range of the real crops.

    Returns
    -------
    dict
        ``study.json``'s content plus ``key_path``.
    """
    import SimpleITK as sitk

    if n < 2 or n % 2:
        raise SynthsegError(f"--n must be an even number of cases, at least 2; got {n}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise SynthsegError(f"{out} is not empty; a reader study goes into a new folder")
    key_path = Path(key_path) if key_path else out.parent / f"{out.name}.key.json"
    if key_path.resolve().is_relative_to(out.resolve()):
        raise SynthsegError("the key must not be inside the study folder readers get")
    real_set = as_lesion_set(real, crop_mm, spacing_mm, None, progress, cancel)
    synth_set = as_lesion_set(synthetic, crop_mm, spacing_mm, None, progress, cancel)
    half = n // 2
    if len(real_set) < half or len(synth_set) < half:
        raise SynthsegError(f"{n} cases need {half} real and {half} synthetic lesions; the sets have "
                            f"{len(real_set)} and {len(synth_set)}")
    shapes = {s.image.shape for s in real_set.samples + synth_set.samples}
    if len(shapes) > 1:
        raise SynthsegError(f"the crops differ in shape {sorted(shapes)}")
    rng = np.random.default_rng(seed)
    chosen = [(s, "real") for s in (real_set.samples[i] for i in rng.choice(len(real_set), half, replace=False))]
    chosen += [(s, "synthetic") for s in (synth_set.samples[i] for i in rng.choice(len(synth_set), half, replace=False))]
    order = rng.permutation(len(chosen))
    window = tuple(float(v) for v in window) if window else _window(real_set.samples)
    lo, hi = window
    (out / "cases").mkdir(parents=True, exist_ok=True)
    (out / "answers").mkdir(exist_ok=True)
    width = max(3, len(str(n)))
    cases, key = [], {}
    for number, k in enumerate(order, start=1):
        sample, truth = chosen[k]
        name = f"case_{number:0{width}d}"
        pixels = np.clip(np.round((sample.image - lo) / (hi - lo) * 255.0), 0, 255).astype(np.uint8)
        img = sitk.GetImageFromArray(pixels)
        img.SetSpacing(tuple(float(v) for v in sample.spacing[::-1]))
        sitk.WriteImage(img, str(out / "cases" / f"{name}.mha"), useCompression=True)
        cases.append(name)
        key[name] = {"truth": truth, "source": sample.source, "lesion": sample.name, "diameter_mm": sample.diameter_mm}
    study = {
        "kind": "synthseg-reader-study",
        "n": n,
        "cases": cases,
        "ndim": len(next(iter(shapes))),
        "crop_mm": crop_mm,
        "spacing_mm": spacing_mm,
        "display": "8-bit, window mapped to 0..255",
        "window_native": list(window),
        "instructions": "For each case: is the lesion at the centre real or synthetic? Answer R or S, then "
                        "confidence 1 (guess) to 5 (certain).",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(out / STUDY_FILE, study)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    write_json(key_path, {"kind": "synthseg-reader-study-key", "study": str(out.resolve()), "seed": seed,
                          "real": real_set.describe(), "synthetic": synth_set.describe(), "cases": key})
    return {**study, "key_path": str(key_path)}


def load_study(folder: str | os.PathLike) -> dict:
    folder = Path(folder)
    path = folder / STUDY_FILE
    try:
        study = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SynthsegError(f"{folder} is not a reader study (no {STUDY_FILE})") from None
    except json.JSONDecodeError as exc:
        raise SynthsegError(f"{path} is damaged: {exc}") from None
    if study.get("kind") != "synthseg-reader-study":
        raise SynthsegError(f"{path} is not a reader study")
    return study


def _reader_file(folder: Path, reader: str) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", reader or ""):
        raise SynthsegError(f"reader names are letters, digits, '.', '_' and '-' (got {reader!r})")
    return folder / "answers" / f"{reader}.csv"


def read_answers(path: Path) -> dict[str, tuple[str, int]]:
    """case -> (answer, confidence) from one reader's CSV; the last answer for a case wins."""
    answers: dict[str, tuple[str, int]] = {}
    if not path.is_file():
        return answers
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            try:
                answers[row["case"]] = (row["answer"], int(row["confidence"]))
            except (KeyError, TypeError, ValueError):
                continue  # a line cut by a crash mid-write
    return answers


@dataclass
class ReaderSession:
    """One reader working through a study (what the widget drives; no Qt)."""

    folder: Path
    reader: str

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        self.study = load_study(self.folder)
        self.path = _reader_file(self.folder, self.reader)
        self.answers = read_answers(self.path)

    @property
    def cases(self) -> list[str]:
        return list(self.study["cases"])

    def case_path(self, case: str) -> Path:
        return self.folder / "cases" / f"{case}.mha"

    def next_case(self) -> str | None:
        """The first case without an answer (None when done)."""
        return next((c for c in self.cases if c not in self.answers), None)

    @property
    def done(self) -> int:
        return sum(1 for c in self.cases if c in self.answers)

    def answer(self, case: str, choice: str, confidence: int) -> None:
        """Record an answer and flush it to disk before returning."""
        if case not in self.study["cases"]:
            raise SynthsegError(f"{case} is not a case of this study")
        if choice not in CHOICES:
            raise SynthsegError(f"answer real or synthetic, got {choice!r}")
        if int(confidence) not in range(1, 6):
            raise SynthsegError(f"confidence is 1..5, got {confidence}")
        new = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            if new:
                writer.writerow(ANSWER_COLUMNS)
            writer.writerow([case, choice, int(confidence), datetime.now(timezone.utc).isoformat(timespec="seconds")])
            fh.flush()
            os.fsync(fh.fileno())
        self.answers[case] = (choice, int(confidence))


def rating(choice: str, confidence: int) -> int:
    """Ordinal 1..10 of "how synthetic": certain real = 1 ... certain synthetic = 10."""
    return 6 - confidence if choice == "real" else 5 + confidence


def _metrics(truth: np.ndarray, called: np.ndarray, ratings: np.ndarray, n_boot: int, seed: int) -> dict:
    n = truth.size
    correct = truth == called

    def acc(i):
        return float(correct[i].mean()) if i.size else math.nan

    def sens(i):
        pos = i[truth[i] == 1]
        return float((called[pos] == 1).mean()) if pos.size else math.nan

    def spec(i):
        neg = i[truth[i] == 0]
        return float((called[neg] == 0).mean()) if neg.size else math.nan

    out = {"n": int(n)}
    for name, fn in (("accuracy", acc), ("sensitivity", sens), ("specificity", spec)):
        value = fn(np.arange(n))
        lo, hi = bootstrap_statistic(fn, n, n_boot, seed, strata=truth)
        out[name], out[f"{name}_ci"] = value, [lo, hi]
    auc, lo, hi = auc_with_ci(truth, ratings, n_boot, seed)
    out["auc"], out["auc_ci"] = auc, [lo, hi]
    return out


def score_reader_study(folder: str | os.PathLike, key_path: str | os.PathLike | None = None,
                       out: str | os.PathLike | None = None, n_boot: int = 1000, seed: int = 0) -> dict:
    """Accuracy, sensitivity, specificity and AUC with CIs per reader and pooled.

    Positive class = synthetic. Only answered cases count (``n`` per reader says how many).
    Writes ``out/report.json`` and ``report.md`` (default ``<study>/../<study>.score``).
    """
    folder = Path(folder)
    study = load_study(folder)
    key_path = Path(key_path) if key_path else folder.parent / f"{folder.name}.key.json"
    try:
        key = json.loads(key_path.read_text(encoding="utf-8"))["cases"]
    except FileNotFoundError:
        raise SynthsegError(f"key not found: {key_path} (give --key)") from None
    except (KeyError, json.JSONDecodeError):
        raise SynthsegError(f"{key_path} is not a reader-study key") from None
    if set(key) != set(study["cases"]):
        raise SynthsegError(f"{key_path} is the key of another study")
    readers = {}
    pooled = ([], [], [], [])
    for path in sorted((folder / "answers").glob("*.csv")):
        answers = read_answers(path)
        cases = [c for c in study["cases"] if c in answers]
        if not cases:
            continue
        truth = np.array([key[c]["truth"] == "synthetic" for c in cases], int)
        called = np.array([answers[c][0] == "synthetic" for c in cases], int)
        ratings = np.array([rating(*answers[c]) for c in cases], float)
        readers[path.stem] = _metrics(truth, called, ratings, n_boot, seed)
        readers[path.stem]["complete"] = len(cases) == len(study["cases"])
        for acc, values in zip(pooled, (truth, called, ratings, cases)):
            acc.extend(values)
    if not readers:
        raise SynthsegError(f"no answers in {folder / 'answers'} yet")
    result = {
        "kind": "synthseg-reader-study-score",
        "study": str(folder),
        "n_cases": len(study["cases"]),
        "readers": readers,
        "pooled": _metrics(np.array(pooled[0]), np.array(pooled[1]), np.array(pooled[2]), n_boot, seed),
        "positive_class": "synthetic",
        "environment": environment(),
    }
    out = Path(out) if out else folder.parent / f"{folder.name}.score"
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "report.json", result)
    lines = ["# Reader study", "", f"{len(study['cases'])} cases (half synthetic). Positive class: synthetic. "
             "Accuracy near 0.5 and AUC near 0.5 mean readers cannot tell the lesions apart.", "",
             "| reader | answered | accuracy | sensitivity | specificity | AUC |", "|---|---|---|---|---|---|"]
    for name, m in list(readers.items()) + [("pooled", result["pooled"])]:
        lines.append(f"| {name} | {m['n']} | {fmt_ci(m['accuracy'], m['accuracy_ci'])} | "
                     f"{fmt_ci(m['sensitivity'], m['sensitivity_ci'])} | {fmt_ci(m['specificity'], m['specificity_ci'])} | "
                     f"{fmt_ci(m['auc'], m['auc_ci'])} |")
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    result["out"] = str(out)
    return result
