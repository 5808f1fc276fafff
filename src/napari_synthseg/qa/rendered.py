"""What QA and export need from a scene: source pixels, rendered pixels, labels and records.

Rendering belongs to :mod:`napari_synthseg.render`. QA and export only need a callable
``renderer(scene) -> (image, labels)`` (or an object with ``.image`` and ``.labels``):

``image``
    The synthetic image in the source's native units (HU, detector values), float32 or the
    source dtype, same shape as the source.
``labels``
    int32 label map where every lesion drawn has its record's ``label`` value.

Keeping it a parameter lets tests and benchmarks feed scenes whose renders they build
themselves, and lets a user plug in another renderer with ``--renderer module:function``.
"""

from __future__ import annotations

import copy
import importlib
from dataclasses import dataclass
from typing import Any, Callable, Union

import numpy as np

from ..errors import SynthsegError
from ..io import MedicalImage
from ..scene import LesionRecord, Scene

Renderer = Callable[[Scene], Any]
RendererSpec = Union[str, Renderer, None]

DEFAULT_RENDERER = "napari_synthseg.render:render_scene"


@dataclass
class RenderedScene:
    """A scene's pixels: the source, the synthetic render and its label map.

    Attributes
    ----------
    original : MedicalImage
        The source image (native pixels and geometry).
    image : ndarray
        Rendered synthetic pixels in native units, same shape as ``original.array``.
    labels : ndarray of int32
        Label map; lesion ``rec.label`` where record ``rec`` is drawn, 0 elsewhere.
    records : list of LesionRecord
        The lesions that were rendered (after filtering, e.g. accepted only).
    """

    original: MedicalImage
    image: np.ndarray
    labels: np.ndarray
    records: list[LesionRecord]

    @property
    def spacing_np(self) -> tuple[float, ...]:
        """Pixel size in mm, numpy axis order."""
        return self.original.scale

    @property
    def difference(self) -> np.ndarray:
        """Signed difference synthetic - original (float32, native units)."""
        return self.image.astype(np.float32) - self.original.array.astype(np.float32)


def resolve_renderer(spec: RendererSpec = None) -> Renderer:
    """A renderer from a callable, a ``"module:function"`` string, or ``None`` (the default)."""
    if callable(spec):
        return spec
    text = spec or DEFAULT_RENDERER
    module_name, _, attr = text.partition(":")
    if not module_name or not attr:
        raise SynthsegError(f"renderer must be given as module:function, got {text!r}")
    try:
        module = importlib.import_module(module_name)
        func = getattr(module, attr)
    except (ImportError, AttributeError):
        if spec is None:
            raise SynthsegError(
                "this installation has no scene renderer (napari_synthseg.render.render_scene); "
                "update napari-synthseg or pass --renderer module:function"
            ) from None
        raise SynthsegError(f"cannot import renderer {text!r}; check the module is on PYTHONPATH") from None
    if not callable(func):
        raise SynthsegError(f"renderer {text!r} is not callable")
    return func


def renderer_name(renderer: Renderer) -> str:
    return f"{getattr(renderer, '__module__', '?')}:{getattr(renderer, '__qualname__', repr(renderer))}"


def view_with(scene: Scene, records: list[LesionRecord]) -> Scene:
    """An unsaved copy of ``scene`` holding only ``records`` (assets and image shared, no autosave).

    Export renders such a view so rejected or undecided lesions never reach the pixels of a
    training image (a visible lesion without a label would teach a detector to miss it).
    """
    view = Scene(scene.source, folder=None)
    view.assets = scene.assets
    view.lesions = [rec.copy() for rec in records]
    view.masks = dict(scene.masks)
    view.meta = copy.deepcopy(scene.meta)
    view.revision = scene.revision
    view._counter = scene._counter
    view._image = scene._image
    view.autosave = False
    return view


def _unpack(result: Any) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(result, tuple) and len(result) >= 2:
        return np.asarray(result[0]), np.asarray(result[1])
    if hasattr(result, "image") and hasattr(result, "labels"):
        image = result.image
        image = getattr(image, "array", image)
        return np.asarray(image), np.asarray(result.labels)
    raise SynthsegError("the renderer must return (image, labels) or an object with .image and .labels")


def render(scene: Scene, renderer: RendererSpec = None, statuses: tuple[str, ...] | None = None) -> RenderedScene:
    """Render ``scene`` (only lesions whose status is in ``statuses`` when given).

    Label values of lesions that were left out are cleared even if the renderer drew them.
    """
    func = resolve_renderer(renderer)
    original = scene.load_image()
    records = list(scene.lesions) if statuses is None else [r for r in scene.lesions if r.status in statuses]
    target = scene if statuses is None else view_with(scene, records)
    image, labels = _unpack(func(target))
    if image.shape != original.shape or labels.shape != original.shape:
        raise SynthsegError(
            f"renderer returned shapes {image.shape}/{labels.shape}, the source image is {original.shape}"
        )
    labels = labels.astype(np.int32, copy=False)
    if statuses is not None:
        top = int(labels.max()) if labels.size else 0
        if top > 0:
            keep = np.zeros(top + 1, dtype=bool)
            keep[[r.label for r in records if 0 < r.label <= top]] = True
            keep[0] = True
            if not keep.all() and not keep[labels].all():
                labels = np.where(keep[labels], labels, 0).astype(np.int32)
    return RenderedScene(original=original, image=image, labels=labels, records=records)
