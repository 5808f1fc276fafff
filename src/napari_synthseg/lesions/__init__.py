"""Lesion sources and the lesion library item.

* :class:`LesionPatch` (``item``): residual ``intensity`` + optional ``absolute`` + exact mask.
* :class:`LesionLibrary` (``library``): a folder of items (safetensors + JSON, atomic, indexed).
* :func:`load_ct_patch` (``ct_patch``): a CT nodule patch and its mask as a 3D item.
* :func:`project_ct_lesion` (``projection``): 3D CT item → 2D CXR item (attenuation residual).
* :func:`procedural_nodule` / :func:`procedural_cxr_nodule` (``procedural``).
* :func:`extract_residual` (``extract``): original minus healthy fill.
"""

from .ct_patch import ct_lesion_from_arrays, find_mask_path, load_ct_patch
from .extract import extract_residual
from .item import LesionPatch, mask_diameter_mm
from .library import LesionLibrary
from .procedural import procedural_cxr_nodule, procedural_nodule
from .projection import hu_to_mu, project_ct_lesion

__all__ = [
    "LesionPatch",
    "LesionLibrary",
    "ct_lesion_from_arrays",
    "extract_residual",
    "find_mask_path",
    "hu_to_mu",
    "load_ct_patch",
    "mask_diameter_mm",
    "procedural_cxr_nodule",
    "procedural_nodule",
    "project_ct_lesion",
]
