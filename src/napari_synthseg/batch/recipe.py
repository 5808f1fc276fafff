"""The batch recipe: one declarative YAML file, validated with pydantic before any work starts.

Three top-level keys are stable so that scripts can rewrite a recipe: ``inputs`` (a list of
globs, or a CSV path), ``seed`` and ``out`` (the output folder). Every other key has a default.
Relative paths in a recipe are resolved against the folder of the recipe file, so a recipe and
its images can move together. A bad recipe is one line naming the bad key (``SynthsegError``:
exit status 2 on the command line). ``docs/batch.md`` is the reference.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ..errors import SynthsegError

BLENDS = ("alpha", "additive", "poisson")
PROCEDURAL_KINDS = ("solid", "part-solid", "ground-glass")
EXPORT_FORMATS = ("nnunet", "coco", "csv", "nifti")

Range = tuple[float, float]


class _Strict(BaseModel):
    # Unknown keys are errors: a typo ("diamter_mm") must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _as_range(value: Any) -> Any:
    """``8`` -> (8, 8); ``[6, 20]`` stays; anything else is left for pydantic to refuse."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (value, value)
    return value


#: Upper bound of ``lesions.count`` (a recipe asking for 100000 lesions per scene is a typo).
MAX_LESIONS_PER_SCENE = 1000


def _check_range(value: tuple[float, float], low: float, what: str) -> tuple[float, float]:
    lo, hi = value
    if not (low <= lo <= hi):
        raise ValueError(f"{what} must be [min, max] with {low:g} <= min <= max, got [{lo:g}, {hi:g}]")
    return value


class InputDefaults(_Strict):
    """What applies to an image when neither the file nor the CSV says it."""

    spacing_mm: float | list[float] | None = Field(
        default=None, description="pixel size for files that store none (PNG/JPEG/TIFF); never overrides a stored one")
    modality: Literal["CT", "CXR", "MR", None] = None

    @field_validator("spacing_mm")
    @classmethod
    def _positive(cls, v):
        values = v if isinstance(v, list) else [v] if v is not None else []
        if any(not (x > 0) for x in values) or (isinstance(v, list) and not 1 <= len(v) <= 3):
            raise ValueError("spacing_mm is one positive number or a list of 2-3 (x, y[, z]) in mm")
        return v


class _Drawn(_Strict):
    weight: float = Field(default=1.0, gt=0, description="relative chance this source draws a lesion")
    diameter_mm: Range = Field(default=(6.0, 20.0), description="uniform range of lesion diameters, mm")
    lesion_class: str = Field(default="nodule", alias="class", description="label class (record kind)")

    _diameter = field_validator("diameter_mm", mode="before")(_as_range)

    @field_validator("diameter_mm")
    @classmethod
    def _diameter_ok(cls, v):
        return _check_range(v, 1e-6, "diameter_mm")

    @field_validator("lesion_class")
    @classmethod
    def _class_ok(cls, v):
        if not v or v == "removal":
            raise ValueError("class is a lesion kind such as 'nodule' or 'mass'")
        return v


class _SourceBase(_Drawn):
    blend: list[Literal["alpha", "additive", "poisson"]] = Field(default=["alpha", "poisson"], min_length=1)
    contrast: Literal["node21"] | Range = Field(default=(0.8, 1.2), description="[min, max] factor or 'node21'")
    feather_mm: float = Field(default=1.0, ge=0)

    _contrast = field_validator("contrast", mode="before")(_as_range)

    @field_validator("contrast")
    @classmethod
    def _contrast_ok(cls, v):
        return v if v == "node21" else _check_range(v, 0.0, "contrast")


class ProceduralSource(_SourceBase):
    """Seeded procedural nodules (CT volume; projected onto radiographs)."""

    type: Literal["procedural"]
    kinds: list[Literal["solid", "part-solid", "ground-glass"]] = Field(
        default=["solid", "part-solid", "ground-glass"], min_length=1)
    lobulation: Range = (0.0, 0.6)
    spiculation: Range = (0.0, 0.4)

    _lob = field_validator("lobulation", "spiculation", mode="before")(_as_range)


class LibrarySource(_SourceBase):
    """Real lesions: a lesion library folder (``index.json``), a table of patch + mask pairs
    (``index.csv``, e.g. the LIDC nodules) or a folder of CT patches (``*_ct`` + ``*_seg``)."""

    type: Literal["library"]
    path: str
    split: Literal["all", "train", "test"] = Field(
        default="train", description="index.csv only: the side of the fixed series-level split to draw from "
        "(default train: held-out series never reach training data)")
    attachments: Literal["remove", "keep"] = Field(
        default="remove", description="vessels attached to a real nodule in its donor patch: removed (the nodule "
        "alone replaces the lung) or kept as stubs faded over 5 mm and labelled with the nodule")


class GeneratedSource(_SourceBase):
    """Nodules made by the lesion generator (``generator/``, issue 16) in the target CT's own
    context at the drawn site, or in a neutral lung context and projected onto radiographs."""

    type: Literal["generated"]
    kinds: list[Literal["solid", "part-solid", "ground-glass"]] = Field(
        default=["solid", "part-solid", "ground-glass"], min_length=1)
    model: str | None = Field(default=None, description="generator model file (default: the shipped one)")


class InpaintedSource(_Drawn):
    """Lesions drawn by a learned inpainting model into a lesion-shaped hole (LINOP; 2D). The
    model must be trained for ``lesion`` fill (``synthseg train-inpainter --masks DIR``); the
    sample is stored as the record's pixels, so blend and contrast do not apply."""

    type: Literal["inpainted"]
    model: str
    irregularity: float = Field(default=0.25, ge=0, le=1, description="lobulation of the hole's outline")
    texture: float = Field(default=0.0, ge=0, le=1, description="seeded grain added to the fill")


LesionSource = Annotated[ProceduralSource | LibrarySource | GeneratedSource | InpaintedSource,
                         Field(discriminator="type")]


def _default_source() -> LesionSource:
    return ProceduralSource.model_validate({"type": "procedural"})


def _default_sources() -> list:
    """Real nodules where a library is present (``$SYNTHSEG_LESION_LIBRARY``, issue 15), else
    procedural ones."""
    from ..lesions.library import default_lesion_source

    found = default_lesion_source()
    if found == "procedural":
        return [ProceduralSource(type="procedural")]
    return [LibrarySource(type="library", path=found)]


class LesionPlan(_Strict):
    count: tuple[int, int] = Field(default=(1, 3), description="lesions per scene, [min, max] inclusive")
    sources: list[LesionSource] = Field(default_factory=lambda: _default_sources(), min_length=1)
    min_distance_mm: float = Field(default=5.0, ge=0, description="gap between lesion edges")
    max_tries: int = Field(default=30, ge=1, description="placement attempts per lesion before giving up")

    _count = field_validator("count", mode="before")(_as_range)

    @field_validator("count")
    @classmethod
    def _count_ok(cls, v):
        if v[1] > MAX_LESIONS_PER_SCENE:
            raise ValueError(f"count: at most {MAX_LESIONS_PER_SCENE} lesions per scene, got {v[1]:g}")
        return _check_range(v, 0, "count")


class ConstraintSpec(_Strict):
    organ: Literal["auto", "none"] = Field(default="auto", description="auto: CT lungs, CXR lung fields, MR brain")
    min_inside: float = Field(default=1.0, ge=0, le=1, description="fraction of each lesion mask inside the organ")


class HarmonizeSpec(_Strict):
    """Harmonize every placed lesion (2D scenes) with a trained SinGAN/ConSinGAN file.

    A harmonizer is trained on one image (``synthseg train-harmonizer``): write ``{stem}`` in
    ``model`` for one file per image (``models/{stem}.safetensors``)."""

    model: str
    scale: int = Field(default=1, ge=0, description="injection scale")
    margin_px: int = Field(default=8, ge=0)
    add_back: Literal["replace", "coarse", "detail", "original", None] = None


class ReviewSpec(_Strict):
    """Decide lesions right after placing them: accept all, or QA rules (a file or inline)."""

    accept: Literal["all", None] = None
    rules: str | dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one(self):
        if (self.accept is None) == (self.rules is None):
            raise ValueError("give exactly one of 'accept: all' or 'rules: RULES.yaml' (or an inline rules mapping)")
        return self


class ExportSpec(_Strict):
    format: Literal["nnunet", "coco", "csv", "nifti"]
    split: list[float] | None = Field(default=None, description="train, val[, test] fractions of PATIENTS")
    name: str = "Synthseg"
    dataset_id: int = Field(default=501, ge=1, le=999)
    classes: Literal["binary", "kind"] = "binary"
    real_fraction: float = Field(default=0.0, ge=0, le=1, description="fraction of the real training images included")
    synthetic_ratio: float | None = Field(default=None, ge=0, description="synthetic per real training case")
    synthetic_in: Literal["train", "all"] = Field(default="train", description="train: val/test measure on real images")
    nnunet_folds: int = Field(default=1, ge=1, le=20, description="1: the train/val split; K: K folds by patient")
    nnunet_preprocessed: str | None = Field(
        default=None, description="nnunet: where splits_final.json goes (default: $nnUNet_preprocessed, else "
        "OUT/nnUNet_preprocessed)")

    @field_validator("split")
    @classmethod
    def _split_ok(cls, v):
        if v is not None and (not 1 <= len(v) <= 3 or any(x < 0 for x in v) or sum(v) <= 0):
            raise ValueError("split is 1 to 3 non-negative fractions: [train, val, test]")
        return v


class Recipe(_Strict):
    """A whole batch. ``inputs``, ``seed`` and ``out`` are the stable top-level keys."""

    inputs: list[str] | str = Field(description="globs (a list), or the path of a CSV")
    seed: int = 0
    out: str
    defaults: InputDefaults = Field(default_factory=lambda: InputDefaults.model_validate({}))
    scenes_per_image: int = Field(default=1, ge=1)
    lesions: LesionPlan = Field(default_factory=lambda: LesionPlan.model_validate({}))
    constraint: ConstraintSpec = Field(default_factory=lambda: ConstraintSpec.model_validate({}))
    harmonize: HarmonizeSpec | None = None
    review: ReviewSpec | None = None
    export: list[ExportSpec] = Field(default_factory=list)
    base_dir: str = Field(default="", exclude=True, description="folder relative paths resolve against (internal)")

    @field_validator("inputs")
    @classmethod
    def _inputs_ok(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("inputs is an empty list: give globs or a CSV path")
        return v

    @model_validator(mode="after")
    def _export_needs_review(self):
        if self.export and self.review is None:
            raise ValueError("export writes only accepted lesions: add 'review: {accept: all}' or review rules")
        return self

    # ---- paths -----------------------------------------------------------------------------

    def resolve(self, path: str | os.PathLike) -> Path:
        """A recipe path: ``~`` expanded, relative ones against the recipe's folder."""
        p = Path(os.path.expanduser(str(path)))
        return p if p.is_absolute() else Path(self.base_dir or ".") / p

    @property
    def out_dir(self) -> Path:
        return self.resolve(self.out).resolve()

    def fingerprint(self) -> str:
        """sha256 of what decides each scene, recorded in every marker. Not the export, nor
        ``inputs``/``out`` (images may be appended and a folder moved; each marker also records
        its image, checked on resume)."""
        data = self.model_dump(mode="json", by_alias=True, exclude={"export", "base_dir", "inputs", "out"})
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _format_error(exc: ValidationError, where: str) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if not (isinstance(p, str) and p in
                                                       ("procedural", "library", "inpainted")))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling; docs/batch.md lists every key)"
    elif err["type"] == "missing":
        msg = "missing (required)"
    more = len(exc.errors()) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{where}: {loc or 'recipe'}: {msg}{tail}"


def parse_recipe(data: Any, base_dir: str | os.PathLike = ".", where: str = "recipe") -> Recipe:
    """Validate a recipe mapping; relative paths will resolve against ``base_dir``."""
    if not isinstance(data, dict):
        raise SynthsegError(f"{where}: a recipe is a YAML mapping with at least 'inputs' and 'out'")
    try:
        return Recipe.model_validate({**data, "base_dir": str(Path(base_dir).resolve())})
    except ValidationError as exc:
        raise SynthsegError(_format_error(exc, where)) from None


def load_recipe(path: str | os.PathLike) -> Recipe:
    """Read and validate ``path`` (YAML); one-line :class:`SynthsegError` for any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SynthsegError(f"recipe not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SynthsegError(f"cannot read recipe {path}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SynthsegError(f"{path.name} is not valid YAML: {str(exc).splitlines()[0]}") from None
    return parse_recipe(data, path.resolve().parent, where=path.name)
