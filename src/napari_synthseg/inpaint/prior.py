"""The smooth first guess the network refines (see ``InpainterConfig.prior``).

Kept in one place so training and inference choose it by exactly the same rule.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from skimage.restoration import inpaint_biharmonic

from .network import MODES, InpainterConfig

OUTPAINT = MODES.index("outpaint")


def prior_fill(x: np.ndarray, hole: np.ndarray, mode: int, cfg: InpainterConfig) -> Optional[np.ndarray]:
    """Biharmonic fill of ``hole`` in the normalised crop ``x``, or None for push-pull.

    None means "let the network compute its push-pull prior": outpainting (the biharmonic
    solve of a hole covering most of the crop takes seconds and extrapolates wildly), holes
    larger than ``cfg.biharmonic_max_pixels``, and models trained with ``prior="pushpull"``.
    """
    n = int(np.count_nonzero(hole))
    if cfg.prior != "biharmonic" or mode == OUTPAINT or n == 0 or n > cfg.biharmonic_max_pixels:
        return None
    out = inpaint_biharmonic(x.astype(np.float64), hole.astype(bool))
    return out.astype(np.float32)
