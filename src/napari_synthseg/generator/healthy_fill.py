"""The lesion generator's healthy fill behind the fill interface: ``get_filler("generated")``.

The generator learned healthy lung as its ``empty`` class (issue 16: "the same model fills
healthy tissue"), so removing a real nodule (``synthseg remove --method generated``, the
editor's *Remove*, batch) can use it wherever a fill method is chosen by name. Each mask
component (cut out with its surroundings by the shared driver, :class:`~napari_synthseg.fill.Filler`)
is resampled onto the generator's cube: 1 mm for regions up to 16 mm, coarser beyond, so the
cube always holds the region and about half its extent of real context on every side. The
``empty`` class fills the region in that context, the scan's own noise is matched on the lung
around it (:func:`~napari_synthseg.generator.sample.match_context_noise`), and the result is
resampled back onto the scan's voxels under the mask. Seeded: the same seed gives the same fill.

CT only: a radiograph has no 3D lung behind its pixels (use ``learned`` or ``biharmonic``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
from scipy import ndimage as ndi

from ..errors import SynthsegError
from ..fill.base import Filler, register_filler

#: Registry name of this filler (``--method generated``).
FILL_METHOD = "generated"


class GeneratedFiller(Filler):
    """Healthy lung from the lesion generator's ``empty`` class.

    Parameters
    ----------
    model : path, ``builtin`` or LesionGenerator
        The generator (default: the shipped one).
    steps : int, optional
        Flow steps (default: the model's).
    """

    name = FILL_METHOD
    supports_3d = True
    # the cube holds the region plus about half its extent on every side
    min_context_px = 8
    context_fraction = 0.6

    def __init__(self, model: Union[str, Path, object] = "builtin", steps: Optional[int] = None) -> None:
        from .sample import get_generator

        self.generator = get_generator(model)  # type: ignore[arg-type]
        self.steps = steps
        #: what a removal record keeps of the fill (lesions.place.remove_real_lesion)
        self.provenance = {"model": str(self.generator.path) if self.generator.path else None,
                           "model_sha256": self.generator.sha256,
                           "steps": int(steps or self.generator.config.inference_steps)}

    def fill_region(self, image: np.ndarray, mask: np.ndarray, spacing: Optional[Tuple[float, ...]],
                    rng: np.random.Generator) -> np.ndarray:
        if image.ndim != 3:
            raise SynthsegError("the generator's healthy fill works on CT volumes; for a radiograph "
                                "choose learned or biharmonic")
        from .sample import _ring_median

        cfg = self.generator.config
        sp = np.asarray(spacing if spacing is not None else (1.0, 1.0, 1.0), float)
        zyx = np.argwhere(mask)
        lo, hi = zyx.min(axis=0), zyx.max(axis=0)
        extent_mm = float(((hi - lo + 1) * sp).max())
        grid = cfg.grid_spacing(extent_mm)
        centre = (lo + hi) / 2.0
        patch = int(cfg.patch)
        offsets = (np.arange(patch, dtype=float) - (patch - 1) / 2.0) * grid
        # cube voxel (k, j, i) sits at crop index centre + offset / spacing on each axis
        axes = [centre[a] + offsets / sp[a] for a in range(3)]
        coords = np.stack(np.meshgrid(*axes, indexing="ij"))
        context = ndi.map_coordinates(image, coords, order=1, mode="nearest").astype(np.float32)
        cube_mask = ndi.map_coordinates(mask.astype(np.float32), coords, order=1, mode="constant") >= 0.5
        if not cube_mask.any():  # a region thinner than the grid: keep its nearest cube voxel
            nearest = np.round((zyx.mean(axis=0) - centre) * sp / grid + (patch - 1) / 2.0).astype(int)
            cube_mask[tuple(np.clip(nearest, 0, patch - 1))] = True
        from .network import generation_region

        region = generation_region(cube_mask, cfg.edge_voxels)
        if region.all():
            raise SynthsegError("the region to fill leaves no context in the generator's cube")
        seed = int(rng.integers(0, 2**31 - 1))
        filled = self.generator.fill([context], [cube_mask], ["empty"], [_ring_median(context, region, grid)],
                                     [seed], steps=self.steps)[0]
        # back onto the scan's voxels: crop index -> cube coordinate
        back = np.stack([(zyx[:, a] - centre[a]) * sp[a] / grid + (patch - 1) / 2.0 for a in range(3)])
        out = np.array(image, np.float32, copy=True)
        out[mask] = ndi.map_coordinates(filled, back, order=1, mode="nearest")
        return out


register_filler(FILL_METHOD, GeneratedFiller, overwrite=True)

__all__ = ["FILL_METHOD", "GeneratedFiller"]
