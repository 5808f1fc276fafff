"""NODE21 contrast matching: a scalar that scales a pasted nodule to its surroundings.

From the NODE21 SinGAN paper (../shared/docs/seeds/node21-one-shot-singan-nodules.txt): "A
scalar is calculated as the maximum between the logarithm of intensity ratio I_nodule/I_cxr
and a threshold value (0.6 for hyposignal nodules, 0.7 for hypersignal ones). The nodule is
finally multiplied by this scalar." Hyper- vs hyposignal is decided as for their model choice:
Otsu thresholding of the CXR into four classes; hypersignal when most pixels of the lesion's
box fall in the brightest class.

Here ``I_nodule`` is the mean of the naively pasted lesion (background + residual) inside its
mask and ``I_cxr`` the mean of the radiograph over the lesion's box, both in the image's own
grey values. The result multiplies the lesion's residual.
"""

from __future__ import annotations

import math

import numpy as np
from skimage.filters import threshold_multiotsu

from ..errors import SynthsegError

HYPOSIGNAL_THRESHOLD = 0.6
HYPERSIGNAL_THRESHOLD = 0.7


def otsu4_thresholds(image: np.ndarray) -> np.ndarray:
    """The three Otsu thresholds that split ``image`` into four intensity classes."""
    step = max(1, int(image.size // 500_000))
    return threshold_multiotsu(np.asarray(image).reshape(-1)[::step].astype(np.float32), classes=4)


def is_hypersignal(box_values: np.ndarray, thresholds: np.ndarray) -> bool:
    """Whether most pixels of a lesion's box lie in the brightest of the four Otsu classes."""
    return bool(np.mean(box_values > thresholds[-1]) > 0.5)


def node21_contrast(
    box_values: np.ndarray, residual: np.ndarray, mask: np.ndarray, thresholds: np.ndarray
) -> tuple[float, bool]:
    """``(scalar, hypersignal)`` for a lesion whose box in the CXR holds ``box_values``.

    ``residual`` and ``mask`` are the lesion on the same grid as ``box_values`` (image units).
    """
    if box_values.shape != residual.shape or mask.shape != residual.shape:
        raise SynthsegError("contrast matching needs the lesion and its box on the same grid")
    if not mask.any():
        raise SynthsegError("contrast matching needs a non-empty lesion mask")
    hyper = is_hypersignal(box_values, thresholds)
    i_cxr = float(np.mean(box_values))
    i_nodule = float(np.mean((box_values + residual)[mask]))
    threshold = HYPERSIGNAL_THRESHOLD if hyper else HYPOSIGNAL_THRESHOLD
    if i_cxr <= 0 or i_nodule <= 0:
        return threshold, hyper  # log of a non-positive ratio is undefined: use the floor
    return max(math.log(i_nodule / i_cxr), threshold), hyper
