"""Tiny lesion sets for the evaluate tests, written in every layout the readers take."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk


def lesion_volume(rng: np.random.Generator, size: int = 24, radius: float = 4.0, noisy: bool = True,
                  centre_shift: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A lung-like noisy background (HU) with one round lesion; ``noisy=False`` makes the lesion a
    smooth, noise-free ball (what a naive procedural nodule looks like)."""
    zz, yy, xx = np.mgrid[:size, :size, :size]
    c = size / 2 - 0.5 + centre_shift
    r = np.sqrt((zz - c) ** 2 + (yy - c) ** 2 + (xx - c) ** 2)
    mask = r <= radius
    image = -820 + rng.normal(0, 40, (size,) * 3)
    if noisy:
        image[mask] = 20 + rng.normal(0, 60, int(mask.sum()))
    else:
        image[mask] = 20.0
    return image.astype(np.int16), mask.astype(np.uint8)


def write_mha(array: np.ndarray, path: Path, spacing=(1.0, 1.0, 1.0)) -> Path:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing[: array.ndim])
    sitk.WriteImage(img, str(path))
    return path


def index_set(folder: Path, n: int, noisy: bool, seed: int, groups: int | None = None,
              radius=(3.0, 6.0)) -> Path:
    """``folder/index.csv`` with ``n`` lesions (``groups`` patients; default one per lesion)."""
    rng = np.random.default_rng(seed)
    (folder / "patches").mkdir(parents=True, exist_ok=True)
    lines = ["ct_file,seg_file,diameter_mm,lidc_series_uid,nodule_index"]
    for i in range(n):
        rad = float(rng.uniform(*radius))
        image, mask = lesion_volume(rng, radius=rad, noisy=noisy, centre_shift=int(rng.integers(-1, 2)))
        write_mha(image, folder / "patches" / f"c{i:03d}_ct.mha")
        write_mha(mask, folder / "patches" / f"c{i:03d}_seg.mha")
        group = f"pat{i % groups if groups else i}"
        lines.append(f"patches/c{i:03d}_ct.mha,patches/c{i:03d}_seg.mha,{2 * rad:.1f},{group},{i}")
    (folder / "index.csv").write_text("\n".join(lines) + "\n")
    return folder


def nnunet_set(folder: Path, n: int, seed: int, noisy: bool = True) -> Path:
    """An nnU-Net v2 raw dataset (imagesTr/labelsTr, .nii.gz), one lesion per case."""
    rng = np.random.default_rng(seed)
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    for i in range(n):
        image, mask = lesion_volume(rng, radius=float(rng.uniform(3, 6)), noisy=noisy)
        write_mha(image, folder / "imagesTr" / f"case_{i:03d}_0000.nii.gz")
        write_mha(mask, folder / "labelsTr" / f"case_{i:03d}.nii.gz")
    (folder / "dataset.json").write_text('{"channel_names": {"0": "CT"}, "labels": {"background": 0, "lesion": 1}, '
                                        f'"numTraining": {n}, "file_ending": ".nii.gz"}}')
    return folder
