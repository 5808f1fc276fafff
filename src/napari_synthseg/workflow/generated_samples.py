"""Several seeded samples of a generated lesion at one site, side by side; accept one.

``--lesion generated[:CLASS]`` makes one nodule per seed with the learned lesion generator
(:mod:`napari_synthseg.generator`) in the target's own context. A reader choosing a lesion wants
to see a few of them first: :func:`preview_generated` makes ``N`` seeded candidates at the site
with the same settings as a placement, *without changing the scene* (each is placed into a
scratch copy that shares the scene's content-addressed asset store, exactly as ``place`` would,
constraint and visibility checks included), and renders each into a crop of the image around the
site. :func:`accept_generated` adds the chosen candidate to the scene as the ordinary
``generated`` record that ``place`` with that seed gives: the record keeps model hash, seed,
class, mean HU and mask, so its render is deterministic and moving or resizing it re-generates
it in the new context from the same seed.

Each candidate's picture is what the lesion looks like in that image: for a CT the axial slice
through the site (lung window), for a radiograph the projected nodule in the radiograph around
the site (the image's own window). The crop shows the image without the scene's other lesions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import SynthsegError
from ..scene import LesionRecord, Scene
from ..utils.progress import CancelToken, ProgressCallback, report
from .spec import LesionSourceKind, LesionSpec, PlaceSettings

if TYPE_CHECKING:
    from .edit import EditSession

logger = logging.getLogger(__name__)

#: Samples offered side by side by default (four fit across the 340 px editor panel).
DEFAULT_SAMPLE_COUNT = 4
#: At most this many per request (each costs about 1.5 s on a 2-core CPU).
MAX_SAMPLE_COUNT = 8
#: Picture edge of a candidate (pixels).
CANDIDATE_PX = 72
#: Context shown around the lesion: the crop spans this many lesion diameters.
CONTEXT_DIAMETERS = 3.0
#: CT pictures use the lung window (HU), where solid, part-solid and ground-glass nodules all show.
CT_WINDOW_HU = (-1000.0, 400.0)
#: Outline colour of the lesion in a candidate's picture (the library thumbnails' yellow).
OUTLINE_RGB = (255, 200, 0)


@dataclass
class GeneratedCandidate:
    """One seeded sample at the site, not (yet) in the scene.

    Attributes
    ----------
    seed : int
        The seed the lesion is made from (record ``seed`` and ``source['seed']``).
    record : LesionRecord
        The record :func:`accept_generated` adds (its assets are already in the scene's store).
    before, after : ndarray
        The image crop around the site without and with this lesion (CT: the axial slice).
    picture : ndarray
        RGB ``uint8`` (CANDIDATE_PX, CANDIDATE_PX, 3) of ``after`` for a thumbnail.
    caption : str
        A short line under the picture (seed, measured diameter, mean HU).
    """

    seed: int
    record: LesionRecord
    before: np.ndarray
    after: np.ndarray
    picture: np.ndarray
    caption: str
    settings: PlaceSettings = field(default_factory=PlaceSettings)
    spec_text: str = ""

    @property
    def source(self) -> dict[str, Any]:
        return dict(self.record.source)


def sample_seeds(first_seed: int, count: int = DEFAULT_SAMPLE_COUNT) -> list[int]:
    """The seeds of one request: ``first_seed, first_seed + 1, ...`` (reproducible, distinct)."""
    count = int(count)
    if not 1 <= count <= MAX_SAMPLE_COUNT:
        raise SynthsegError(f"ask for 1 to {MAX_SAMPLE_COUNT} samples, got {count}")
    first = int(first_seed)
    if not 0 <= first <= 2**32 - count:
        raise SynthsegError(f"the first seed must be a whole number in [0, 2^32 - {count}], got {first_seed}")
    return list(range(first, first + count))


def generated_spec(spec: LesionSpec | str) -> LesionSpec:
    """``spec`` parsed, refused unless it names the lesion generator."""
    parsed = LesionSpec.parse(spec) if isinstance(spec, str) else spec
    if parsed.source is not LesionSourceKind.GENERATED:
        raise SynthsegError(f"samples side by side are for generated lesions, not {parsed.text()}")
    return parsed


def _scratch(scene: Scene, image) -> Scene:
    """A scene that places exactly as ``scene`` does and changes nothing in it."""
    scratch = Scene(scene.source, folder=None)
    scratch.assets = scene.assets  # content-addressed: accepted candidates need no copy
    scratch.masks = dict(scene.masks)  # the organ constraint applies to candidates too
    scratch._image = image
    return scratch


def preview_generated(
    session: EditSession,
    spec: LesionSpec | str,
    settings: PlaceSettings,
    seeds: Sequence[int],
    *,
    at_xyz: Sequence[float] | None = None,
    at_mm: Sequence[float] | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> list[GeneratedCandidate]:
    """One candidate per seed at the site, rendered; the scene is not changed.

    Slow (about 1.5 s per sample on a 2-core CPU): call it off the UI thread. Every candidate
    is checked as a placement is (inside the image, organ constraint); a site that fails
    fails the whole request before any sampling.
    """
    from ..lesions.place import center_from
    from .edit import EditSession

    spec = generated_spec(spec)
    seeds = [int(s) for s in seeds]
    if not seeds or len(seeds) > MAX_SAMPLE_COUNT or len(set(seeds)) != len(seeds):
        raise SynthsegError(f"give 1 to {MAX_SAMPLE_COUNT} distinct seeds, got {seeds}")
    for s in seeds:
        settings.with_changes(seed=s)  # each seed within PlaceSettings' bounds
    image = session.image
    site_mm = center_from(image, at_xyz, at_mm)
    limits = _window(image)
    candidates = []
    total = len(seeds)
    for k, seed in enumerate(seeds):
        if cancel is not None:
            cancel.raise_if_cancelled()
        report(progress, k, total, f"sample {k + 1} of {total} (seed {seed})…")
        scratch = _scratch(session.scene, image)
        chosen = settings.with_changes(seed=seed)
        # placing into the scratch scene runs every rule of a placement (same call as `place`)
        record = EditSession(scratch, session.actor).place(spec, chosen, at_mm=site_mm)
        before, after, label = _render_crop(scratch, record, image)
        picture = _picture(after, limits, label)
        diameter = float(record.source.get("diameter_mm", record.size_mm))
        caption = f"seed {seed}\n{diameter:.0f} mm {record.source.get('mean_hu', 0):.0f} HU"
        candidates.append(GeneratedCandidate(seed=seed, record=record, before=before, after=after, picture=picture,
                                             caption=caption, settings=chosen, spec_text=spec.text()))
    report(progress, total, total, f"{total} samples")
    return candidates


def accept_generated(session: EditSession, candidate: GeneratedCandidate) -> LesionRecord:
    """Add the chosen candidate to the scene as an ordinary ``generated`` lesion (undoable).

    The site is checked again against the scene as it is now (the organ constraint may have
    changed while the samples were made).
    """
    from ..render.placement import footprint_check, place

    if candidate.record.source.get("type") != "generated":
        raise SynthsegError("only a generated sample can be accepted here")
    image = session.image
    record = candidate.record.copy(id="", label=0)
    footprint_check(place(session.scene, record, image), image.shape, session.scene.mask("constraint"),
                    float(record.params.get("min_inside", 1.0)))
    added = session.scene.add_lesion(
        record, label=f"place generated:{record.source.get('class', 'solid')} (seed {candidate.seed})")
    logger.info("accepted sample seed %d as %s", candidate.seed, added.id)
    return added


# ---- pictures ---------------------------------------------------------------------------------


def _render_crop(scratch: Scene, record: LesionRecord, image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The image around the lesion without and with it, and its label (CT: the axial slice
    through the site)."""
    from ..render.compose import composite
    from ..render.placement import center_index, place

    placed = place(scratch, record, image)
    center = center_index(image, record.center_mm)
    half_mm = max(record.size_mm, 4.0) * CONTEXT_DIAMETERS / 2.0
    scale = np.asarray(image.scale, float)
    shape = np.asarray(image.shape)
    half = np.ceil(half_mm / scale).astype(int)
    if image.ndim == 3:
        half[0] = 0  # one axial slice: the one through the site
    lo = np.clip(np.rint(center).astype(int) - half, 0, shape - 1)
    hi = np.clip(np.rint(center).astype(int) + half + 1, 1, shape)
    # the blend may reach beyond the crop (Poisson solves over the lesion's box): render the
    # union of both, then cut the crop out
    box = tuple(slice(min(int(a), p.start), max(int(b), p.stop)) for a, b, p in zip(lo, hi, placed.box))
    canvas = np.array(image.array[box], dtype=np.float32, copy=True)
    before = canvas.copy()
    derived = composite(canvas, None, box, placed, image.scale)
    label = np.zeros(canvas.shape, bool)
    if derived is not None:  # the label as the renderer derives it (image coordinates)
        label[tuple(slice(d.start - b.start, d.stop - b.start) for d, b in zip(derived.box, box))] = derived.label
    crop = tuple(slice(int(a) - b.start, int(c) - b.start) for a, c, b in zip(lo, hi, box))
    before, after, label = before[crop], canvas[crop], label[crop]
    if image.ndim == 3:
        before, after, label = before[0], after[0], label[0]
    return before, after, label


def _window(image) -> tuple[float, float]:
    """CT in the lung window, other images in the window the viewer opens them with."""
    from ..io import window_limits

    if image.modality == "CT":
        return CT_WINDOW_HU
    return window_limits(np.asarray(image.array), "auto", image.modality)


def _picture(values: np.ndarray, limits: tuple[float, float], label: np.ndarray | None = None,
             size: int = CANDIDATE_PX) -> np.ndarray:
    """RGB thumbnail of a crop (square, padded with its edge, zoomed to ``size``).

    The label's outline is drawn one pixel *outside* the label, half transparent: a faint
    projected nodule can be found, and its own edge (what a reader judges) stays uncovered.
    """
    from scipy import ndimage as ndi

    from ..io import apply_window

    grey = apply_window(values, limits)
    side = max(grey.shape)
    pad = [((side - n) // 2, side - n - (side - n) // 2) for n in grey.shape]
    grey = np.pad(grey, pad, mode="edge")
    zoom = size / side
    grey = np.clip(ndi.zoom(grey, zoom, order=1, grid_mode=True, mode="nearest"), 0, 1)[:size, :size]
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    if label is not None and label.any():
        small = ndi.zoom(np.pad(label, pad).astype(np.float32), zoom, order=1, grid_mode=True,
                         mode="grid-constant")[:size, :size] > 0.5
        ring = ndi.binary_dilation(small) & ~small
        rgb[ring] = 0.5 * rgb[ring] + 0.5 * np.array(OUTLINE_RGB, np.float32) / 255.0
    return (rgb * 255.0 + 0.5).astype(np.uint8)


__all__ = [
    "CANDIDATE_PX",
    "DEFAULT_SAMPLE_COUNT",
    "MAX_SAMPLE_COUNT",
    "GeneratedCandidate",
    "accept_generated",
    "generated_spec",
    "preview_generated",
    "sample_seeds",
]
