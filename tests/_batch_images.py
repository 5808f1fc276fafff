"""Small synthetic 2D radiographs for batch tests (cheap scenes: no organ constraint needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk


def write_images(folder: Path, n: int, size: int = 96, spacing: float = 0.8, fmt: str = ".mha") -> list[Path]:
    """``n`` smooth random 16-bit images; MHA stores ``spacing``, PNG stores none."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1234)
    paths = []
    yy, xx = np.mgrid[:size, :size] / size
    for i in range(n):
        base = 1500 + 800 * np.sin(3 * xx + i) * np.cos(2 * yy - i) + rng.normal(0, 20, (size, size))
        img = sitk.GetImageFromArray(base.astype(np.uint16))  # 16-bit like a radiograph
        if fmt != ".png":
            img.SetSpacing((spacing, spacing))
        path = folder / f"img{i:03d}{fmt}"
        sitk.WriteImage(img, str(path))
        paths.append(path)
    return paths


def cheap_recipe(images: Path, out: Path, seed: int = 11, **changes) -> dict:
    """A recipe whose scenes take a few hundredths of a second each."""
    data = {
        "inputs": [str(images / "*.mha")],
        "seed": seed,
        "out": str(out),
        "defaults": {"modality": "CXR"},
        "lesions": {"count": [1, 2], "min_distance_mm": 2.0,
                    "sources": [{"type": "procedural", "diameter_mm": [5, 9], "blend": ["alpha"],
                                 "kinds": ["solid", "ground-glass"]}]},
        "constraint": {"organ": "none"},
    }
    data.update(changes)
    return data
