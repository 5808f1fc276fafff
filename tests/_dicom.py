"""Write small synthetic DICOM series for tests (SimpleITK's documented recipe)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk


def write_series(
    folder: Path,
    volume: np.ndarray,
    series_uid: str,
    spacing=(0.8, 0.8, 2.0),
    origin=(-100.0, -120.0, -300.0),
    prefix: str = "",
    description: str = "test series",
) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(volume.astype(np.int16))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    direction = image.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    paths = []
    # Write slices in reverse order so the reader must sort by position, not by file name.
    for k in reversed(range(volume.shape[0])):
        slice_ = image[:, :, k]
        tags = {
            "0008|0060": "CT",
            "0008|103e": description,
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": series_uid,
            "0008|0018": f"{series_uid}.{k + 1}",
            # ImageOrientationPatient from the direction's columns (see ci-notes.md).
            "0020|0037": "\\".join(map(str, (direction[0], direction[3], direction[6], direction[1], direction[4], direction[7]))),
            "0020|0032": "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, k)))),
            "0020|0013": str(k + 1),
            "0028|1052": "0",
            "0028|1053": "1",
        }
        for key, value in tags.items():
            slice_.SetMetaData(key, value)
        path = folder / f"{prefix}IMG{volume.shape[0] - k:04d}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(slice_)
        paths.append(path)
    return paths
