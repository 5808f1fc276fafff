"""The in-memory medical image: native pixel values plus the geometry that places them in mm.

Geometry follows SimpleITK (and so DICOM/ITK LPS physical space): ``spacing``, ``origin`` and the
row-major ``direction`` matrix are in (x, y, z) order. The pixel ``array`` is numpy-ordered
((y, x) or (z, y, x)). :attr:`MedicalImage.scale` and :attr:`MedicalImage.translate` give the
numpy-ordered values napari layers use, so napari measures in mm.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk

MODALITIES = ("CT", "CXR", "MR", "unknown")


@dataclass
class MedicalImage:
    """A 2D or 3D single-channel image in native units (HU for CT, raw detector values for CXR).

    Attributes
    ----------
    array : np.ndarray
        Pixels in numpy order, (rows, cols) or (slices, rows, cols); native dtype, never rescaled.
    spacing, origin : tuple of float
        Pixel size and position of the first pixel in mm, SimpleITK (x, y, z) order.
    direction : tuple of float
        Row-major direction cosine matrix (ndim x ndim), SimpleITK order.
    modality : str
        ``"CT"``, ``"CXR"``, ``"MR"`` or ``"unknown"``.
    metadata : dict
        Source metadata (DICOM tags as ``"gggg|eeee"`` keys, NRRD/MHA fields), written back on save.
    source_paths : list of str
        The file(s) the image came from (a DICOM series has many).
    series_uid : str or None
        DICOM SeriesInstanceUID for series read from a folder.
    warnings : list of str
        Things the user should know about the load (RGB converted, other series present...).
    """

    array: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    modality: str = "unknown"
    metadata: dict[str, str] = field(default_factory=dict)
    source_paths: list[str] = field(default_factory=list)
    series_uid: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ndim(self) -> int:
        return self.array.ndim

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def scale(self) -> tuple[float, ...]:
        """Spacing in numpy axis order (napari ``scale``)."""
        return tuple(float(s) for s in self.spacing[::-1])

    @property
    def translate(self) -> tuple[float, ...]:
        """Origin in numpy axis order (napari ``translate``)."""
        return tuple(float(o) for o in self.origin[::-1])

    @property
    def direction_matrix(self) -> np.ndarray:
        n = len(self.spacing)
        return np.asarray(self.direction, dtype=float).reshape(n, n)

    @property
    def source(self) -> str | None:
        return self.source_paths[0] if self.source_paths else None

    def geometry(self) -> dict[str, Any]:
        """JSON-ready geometry (what a scene or an export sidecar records)."""
        return {
            "shape": list(self.shape),
            "dtype": str(self.array.dtype),
            "spacing": [float(v) for v in self.spacing],
            "origin": [float(v) for v in self.origin],
            "direction": [float(v) for v in self.direction],
            "modality": self.modality,
        }

    def index_to_physical(self, index_xyz) -> np.ndarray:
        """Continuous index (x, y[, z]) -> physical point in mm (LPS)."""
        idx = np.asarray(index_xyz, dtype=float)
        return np.asarray(self.origin) + self.direction_matrix @ (np.asarray(self.spacing) * idx)

    def physical_to_index(self, point_mm) -> np.ndarray:
        """Physical point in mm -> continuous index (x, y[, z])."""
        p = np.asarray(point_mm, dtype=float) - np.asarray(self.origin)
        return np.linalg.solve(self.direction_matrix, p) / np.asarray(self.spacing)

    def to_sitk(self, array: np.ndarray | None = None) -> sitk.Image:
        """A SimpleITK image of ``array`` (default: the pixels) with this geometry and metadata."""
        data = self.array if array is None else array
        if data.dtype == bool:
            data = data.astype(np.uint8)
        img = sitk.GetImageFromArray(data)
        img.SetSpacing([float(v) for v in self.spacing])
        img.SetOrigin([float(v) for v in self.origin])
        img.SetDirection([float(v) for v in self.direction])
        return img

    def with_array(self, array: np.ndarray) -> MedicalImage:
        """The same geometry around other pixels (a render, a label map)."""
        if array.shape != self.array.shape:
            raise ValueError(f"shape {array.shape} does not match image shape {self.array.shape}")
        return MedicalImage(
            array=array,
            spacing=self.spacing,
            origin=self.origin,
            direction=self.direction,
            modality=self.modality,
            metadata=dict(self.metadata),
            source_paths=list(self.source_paths),
            series_uid=self.series_uid,
        )


def geometry_from_sitk(img: sitk.Image) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    return tuple(img.GetSpacing()), tuple(img.GetOrigin()), tuple(img.GetDirection())
