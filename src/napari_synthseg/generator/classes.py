"""Nodule classes the generator is conditioned on, and the rule that assigns them from HU.

The class of a real nodule is read off the HU values inside its mask (LIDC masks carry no
reliable texture label in this data set). The rule is the one in docs/generator.md:

* ``solid``: mean HU inside the mask above -300 HU;
* ``ground-glass``: mean HU below -600 HU;
* ``part-solid``: in between (a ground-glass body with a denser part, or a small solid nodule
  whose mean is pulled down by partial volume; the class is about appearance, not pathology).

``empty`` is the healthy-fill class: the mask covers lung without a nodule, so the same model
removes lesions (fills healthy tissue) when asked for it.
"""

from __future__ import annotations

import numpy as np

from ..errors import SynthsegError

#: Index 0 is the healthy fill; the order is part of a saved model (class embedding rows).
GENERATOR_CLASSES = ("empty", "solid", "part-solid", "ground-glass")
NODULE_CLASSES = GENERATOR_CLASSES[1:]
SOLID_MEAN_HU = -300.0
GROUND_GLASS_MEAN_HU = -600.0


def classify_nodule(hu: np.ndarray, mask: np.ndarray) -> str:
    """Class of a real nodule from the mean HU inside ``mask`` (see the module docstring)."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        raise SynthsegError("cannot classify a nodule with an empty mask")
    mean = float(np.mean(np.asarray(hu, np.float32)[mask]))
    if mean > SOLID_MEAN_HU:
        return "solid"
    if mean < GROUND_GLASS_MEAN_HU:
        return "ground-glass"
    return "part-solid"


def class_index(name: str) -> int:
    """Row of ``name`` in the class embedding; accepts 'ggo'/'ground_glass'/'healthy' spellings."""
    key = str(name).strip().lower().replace("_", "-")
    key = {"ggo": "ground-glass", "groundglass": "ground-glass", "partsolid": "part-solid",
           "healthy": "empty", "none": "empty"}.get(key, key)
    if key not in GENERATOR_CLASSES:
        raise SynthsegError(f"unknown nodule class {name!r}; choose {', '.join(NODULE_CLASSES)} (or empty)")
    return GENERATOR_CLASSES.index(key)
