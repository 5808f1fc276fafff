"""Contact sheet: one PNG showing every lesion of a batch for review outside napari.

Each tile is one lesion: the original crop on the left, the synthetic crop on the right with
the lesion outline in the colour of its decision, and a caption (scene, lesion id, status, QA
numbers). Crops are windowed with the scene's display preset (``napari_synthseg.io``) from the
whole image, so brightness is comparable between the two halves and with napari.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from scipy import ndimage as ndi

from ..errors import SynthsegError
from ..io import apply_window, window_limits
from ..utils.atomic import atomic_path
from .metrics import LesionMetrics
from .rendered import RenderedScene

# RGB, 0-255. Colour-blind-safe-ish: blue/orange distinguish accepted/rejected without green/red.
STATUS_COLORS = {
    "accepted": (40, 200, 80),
    "rejected": (230, 40, 40),
    "flagged": (255, 165, 0),
    "placed": (80, 170, 255),
}
CAPTION_H = 30
FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass
class SheetEntry:
    """One scene on the sheet: its render, its metrics (optional) and a display name."""

    name: str
    rendered: RenderedScene
    metrics: dict[str, LesionMetrics] | None = None
    window: str = "auto"


def _lesion_slice(mask: np.ndarray) -> tuple[int | None, np.ndarray]:
    """For 3D masks the axial slice with most lesion pixels; 2D masks pass through."""
    if mask.ndim == 2:
        return None, mask
    counts = mask.reshape(mask.shape[0], -1).sum(axis=1)
    z = int(np.argmax(counts))
    return z, mask[z]


def _square_box(mask2d: np.ndarray, min_px: int = 48, grow: float = 2.5) -> tuple[slice, slice]:
    found = ndi.find_objects(mask2d.astype(np.uint8))[0]
    cy = (found[0].start + found[0].stop) / 2.0
    cx = (found[1].start + found[1].stop) / 2.0
    side = max(min_px, int(grow * max(found[0].stop - found[0].start, found[1].stop - found[1].start)))
    side = min(side, max(mask2d.shape))
    y0 = int(round(cy - side / 2.0))
    x0 = int(round(cx - side / 2.0))
    y0 = min(max(0, y0), max(0, mask2d.shape[0] - side))
    x0 = min(max(0, x0), max(0, mask2d.shape[1] - side))
    return slice(y0, y0 + side), slice(x0, x0 + side)


def _to_rgb(gray01: np.ndarray, size: int) -> np.ndarray:
    g = cv2.resize((gray01 * 255.0 + 0.5).astype(np.uint8), (size, size), interpolation=cv2.INTER_AREA
                   if gray01.shape[0] > size else cv2.INTER_NEAREST)
    return np.repeat(g[:, :, None], 3, axis=2)


def _outline(rgb: np.ndarray, mask2d: np.ndarray, color: tuple[int, int, int]) -> None:
    # Contours on the crop's own grid, scaled to the tile (pixel corners -> smooth outline).
    scale = rgb.shape[0] / mask2d.shape[0]
    contours, _ = cv2.findContours(mask2d.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    shift = 4  # sub-pixel drawing precision (1/16 px)
    scaled = [np.round((c.astype(np.float32) + 0.5) * scale * (1 << shift)).astype(np.int32) for c in contours]
    cv2.polylines(rgb, scaled, True, color, 1, lineType=cv2.LINE_AA, shift=shift)


def _caption(width: int, lines: Sequence[str], color: tuple[int, int, int]) -> np.ndarray:
    bar = np.full((CAPTION_H, width, 3), 24, np.uint8)
    cv2.rectangle(bar, (0, 0), (5, CAPTION_H - 1), color, -1)
    for i, line in enumerate(lines[:2]):
        cv2.putText(bar, line, (9, 12 + 14 * i), FONT, 0.36, (235, 235, 235), 1, cv2.LINE_AA)
    return bar


def _metrics_line(m: LesionMetrics | None) -> str:
    if m is None:
        return ""
    size = f"{m.area_mm2:.0f}mm2" if m.area_mm2 is not None else f"{m.volume_mm3:.0f}mm3"
    line = f"CNR {m.cnr:.2f} C {m.contrast:+.3g} grad {m.gradient_ratio:.2f} {size}"
    return line + ("" if m.range_ok else " RANGE")


def lesion_tiles(entry: SheetEntry, tile: int = 160) -> list[np.ndarray]:
    """RGB tiles (uint8) for every lesion of one scene, or one whole-image tile if it has none."""
    r = entry.rendered
    modality = r.original.modality
    limits = window_limits(r.original.array, entry.window, modality)
    tiles = []
    for rec in r.records:
        mask = r.labels == rec.label
        color = STATUS_COLORS.get(rec.status, (200, 200, 200))
        metric = (entry.metrics or {}).get(rec.id)
        if not mask.any():
            body = np.zeros((tile, 2 * tile, 3), np.uint8)
            cv2.putText(body, "not drawn", (8, tile // 2), FONT, 0.5, color, 1, cv2.LINE_AA)
        else:
            z, m2 = _lesion_slice(mask)
            orig2 = r.original.array if z is None else r.original.array[z]
            syn2 = r.image if z is None else r.image[z]
            box = _square_box(m2)
            left = _to_rgb(apply_window(orig2[box], limits), tile)
            right = _to_rgb(apply_window(syn2[box], limits), tile)
            _outline(right, m2[box], color)
            body = np.concatenate([left, np.full((tile, 2, 3), 24, np.uint8), right], axis=1)
        slice_txt = "" if r.image.ndim == 2 or not mask.any() else f" z{_lesion_slice(mask)[0]}"
        title = f"{entry.name[:18]} {rec.id} {rec.status}{slice_txt}"
        tiles.append(np.concatenate([body, _caption(body.shape[1], [title, _metrics_line(metric)], color)], axis=0))
    if not tiles:
        img = r.image if r.image.ndim == 2 else r.image[r.image.shape[0] // 2]
        thumb = _to_rgb(apply_window(img, limits), tile)
        body = np.concatenate([thumb, np.zeros((tile, tile + 2, 3), np.uint8)], axis=1)
        tiles.append(np.concatenate([body, _caption(body.shape[1], [f"{entry.name[:18]} no lesions", ""],
                                                    (120, 120, 120))], axis=0))
    return tiles


def contact_sheet(
    entries: Sequence[SheetEntry],
    path: str | os.PathLike | None = None,
    columns: int = 4,
    tile: int = 160,
    title: str | None = None,
) -> np.ndarray:
    """Compose the sheet (RGB uint8) and write it as PNG to ``path`` if given.

    Parameters
    ----------
    entries : sequence of SheetEntry
        Scenes in display order.
    columns : int
        Tiles per row.
    tile : int
        Height of one crop in pixels (a tile is two crops wide plus a caption).
    """
    tiles = [t for entry in entries for t in lesion_tiles(entry, tile)]
    if not tiles:
        raise SynthsegError("nothing to put on the contact sheet: no scenes given")
    th, tw = tiles[0].shape[:2]
    gap = 6
    columns = max(1, min(columns, len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    head = 0
    if title:
        head = 26
    sheet = np.full((head + rows * (th + gap) + gap, columns * (tw + gap) + gap, 3), 48, np.uint8)
    if title:
        cv2.putText(sheet, title[:120], (gap, 18), FONT, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        legend_x = sheet.shape[1] - 4 * 80
        for i, (status, color) in enumerate(STATUS_COLORS.items()):
            x = legend_x + i * 80
            if x > gap:
                cv2.rectangle(sheet, (x, 8), (x + 10, 18), color, -1)
                cv2.putText(sheet, status, (x + 14, 18), FONT, 0.36, (230, 230, 230), 1, cv2.LINE_AA)
    for i, t in enumerate(tiles):
        r, c = divmod(i, columns)
        y, x = head + gap + r * (th + gap), gap + c * (tw + gap)
        sheet[y:y + th, x:x + tw] = t
    if path is not None:
        path = Path(path)
        with atomic_path(path) as tmp:
            if not cv2.imwrite(str(tmp), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
                raise SynthsegError(f"could not write the contact sheet {path}")
    return sheet
