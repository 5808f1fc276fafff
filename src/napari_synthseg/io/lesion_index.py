"""Tables of real lesions (image patch + mask pairs) and their patient-level splits.

The LIDC nodule set in ``../shared/data/ct/lidc_nodules`` (and any folder laid out like it) is an
``index.csv`` with one row per lesion: ``ct_file`` and ``seg_file`` relative to the folder, and
optionally ``diameter_mm``, ``lidc_series_uid`` (or ``series_uid`` / ``patient_id``) and
``nodule_index``. Several nodules of one series share a patient, so every split here is by
series (group), never by file: a lesion generator, a realism test and a downstream segmenter that
use :func:`split_by_group` with the same salt agree on which patients are held out.

The split is a hash of the group id, not a shuffle: it does not depend on the order of the rows,
on which other series are present, or on a random state, so a folder that grows keeps every
existing series on the side it was on.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SynthsegError

#: The salt of the project's fixed LIDC split (docs/evaluation.md). Changing it moves patients.
DEFAULT_SPLIT_SALT = "napari-synthseg-lidc-v1"
#: Fraction of groups (series) held out as the test side of the fixed split.
DEFAULT_TEST_FRACTION = 0.25

_GROUP_COLUMNS = ("lidc_series_uid", "series_uid", "patient_id")


@dataclass(frozen=True)
class LesionEntry:
    """One real lesion: where its image patch and mask are, and what the table says of it."""

    image_path: Path
    mask_path: Path
    group: str
    diameter_mm: float | None = None
    index_in_group: int = 0
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def name(self) -> str:
        """A stable, file-system safe name: ``<group>_<index>``."""
        return f"{self.group}_{self.index_in_group}"


def read_lesion_index(folder: str | os.PathLike) -> list[LesionEntry]:
    """Read ``folder/index.csv`` (``ct_file``/``seg_file`` or ``image_file``/``mask_file``).

    Raises
    ------
    SynthsegError
        When the table is missing, has no image/mask columns, or names a file that is absent.
    """
    folder = Path(folder)
    table = folder / "index.csv" if folder.is_dir() else folder
    if not table.is_file():
        raise SynthsegError(f"{folder} holds no index.csv (expected columns ct_file, seg_file)")
    root = table.parent
    try:
        with table.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise SynthsegError(f"{table} is not a readable CSV table: {exc}") from None
    if not rows:
        raise SynthsegError(f"{table} lists no lesions")
    columns = set(rows[0])
    image_col = next((c for c in ("ct_file", "image_file") if c in columns), None)
    mask_col = next((c for c in ("seg_file", "mask_file") if c in columns), None)
    if image_col is None or mask_col is None:
        raise SynthsegError(f"{table} needs columns ct_file and seg_file (or image_file and mask_file)")
    group_col = next((c for c in _GROUP_COLUMNS if c in columns), None)
    entries = []
    for number, row in enumerate(rows, start=2):
        image_path, mask_path = root / row[image_col], root / row[mask_col]
        for path in (image_path, mask_path):
            if not path.is_file():
                raise SynthsegError(f"{table}, line {number}: file not found: {path}")
        diameter = row.get("diameter_mm")
        try:
            diameter_mm = float(diameter) if diameter not in (None, "") else None
            index_in_group = int(row.get("nodule_index") or 0)
        except ValueError:
            raise SynthsegError(f"{table}, line {number}: diameter_mm / nodule_index must be numbers") from None
        group = row[group_col] if group_col else Path(row[image_col]).name
        known = {image_col, mask_col, "diameter_mm", "nodule_index", group_col}
        entries.append(
            LesionEntry(
                image_path=image_path,
                mask_path=mask_path,
                group=group,
                diameter_mm=diameter_mm,
                index_in_group=index_in_group,
                extra={k: v for k, v in row.items() if k not in known and k is not None},
            )
        )
    return entries


def group_side(group: str, salt: str = DEFAULT_SPLIT_SALT, test_fraction: float = DEFAULT_TEST_FRACTION) -> str:
    """``"test"`` or ``"train"`` for one group id, from a salted SHA-256 of the id."""
    if not 0.0 < test_fraction < 1.0:
        raise SynthsegError(f"test fraction must lie in (0, 1), got {test_fraction}")
    digest = hashlib.sha256(f"{salt}:{group}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2.0**64
    return "test" if position < test_fraction else "train"


def split_by_group(
    entries: list[LesionEntry], salt: str = DEFAULT_SPLIT_SALT, test_fraction: float = DEFAULT_TEST_FRACTION
) -> tuple[list[LesionEntry], list[LesionEntry]]:
    """(train, test) with every group (series / patient) on exactly one side."""
    train = [e for e in entries if group_side(e.group, salt, test_fraction) == "train"]
    test = [e for e in entries if group_side(e.group, salt, test_fraction) == "test"]
    return train, test
