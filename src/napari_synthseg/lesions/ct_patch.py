"""Load a CT nodule patch (MHA/NRRD/NIfTI file or DICOM folder) and its mask as a 3D lesion.

The result is a :class:`LesionPatch` in HU, LPS orientation (axis 0 inferior→superior,
axis 1 anterior→posterior, axis 2 right→left), with ``intensity`` = HU minus the local lung
background inside the lesion (grown by ``edge_mm`` to keep the partial-volume rim) and
``absolute`` = the original HU.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from ..errors import SynthsegError
from .item import LesionPatch, bbox_with_margin

_SUFFIXES = (".nii.gz", ".mha", ".mhd", ".nrrd", ".nii", ".nhdr")
LUNG_HU_MAX = -400.0  # parenchyma threshold for the background estimate
DEFAULT_LUNG_HU = -850.0


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(p for p in path.iterdir() if p.is_file()):
            h.update(f.name.encode())
            h.update(f.read_bytes())
    else:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _split_suffix(path: Path) -> tuple[str, str]:
    name = path.name
    for suf in _SUFFIXES:
        if name.lower().endswith(suf):
            return name[: -len(suf)], name[-len(suf):]
    return path.stem, path.suffix


def find_mask_path(ct_path: str | Path) -> Path:
    """The mask beside a CT patch: ``*_ct``/``*_dcm`` → ``*_seg``, else ``<stem>_seg<ext>``."""
    ct_path = Path(ct_path)
    stem, suffix = _split_suffix(ct_path)
    candidates = []
    for pat in (r"_ct(?=(_\d+)?$)", r"_dcm(?=(_\d+)?$)", r"_image(?=(_\d+)?$)"):
        if re.search(pat, stem):
            candidates.append(re.sub(pat, "_seg", stem))
    candidates.append(stem + "_seg")
    for cand in candidates:
        for suf in (suffix,) + _SUFFIXES:
            p = ct_path.with_name(cand + suf)
            if p.exists() and p != ct_path:
                return p
    raise SynthsegError(
        f"no mask found beside {ct_path.name} (looked for {candidates[0]}{suffix}); pass mask_path explicitly"
    )


def _read(path: Path, what: str) -> sitk.Image:
    if not path.exists():
        raise SynthsegError(f"{what} file not found: {path}")
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            files = reader.GetGDCMSeriesFileNames(str(path))
            if not files:
                raise SynthsegError(f"{what} folder {path} holds no DICOM series; give a file or a DICOM folder")
            reader.SetFileNames(files)
            return reader.Execute()
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise SynthsegError(f"cannot read {what} {path.name}: {first[:120]}") from None


def _to_3d_lps(image: sitk.Image, path: Path, what: str) -> sitk.Image:
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise SynthsegError(f"{what} {path.name} has {image.GetNumberOfComponentsPerPixel()} channels; a grey CT is needed")
    if image.GetDimension() != 3 or image.GetSize()[2] < 2:
        raise SynthsegError(
            f"{what} {path.name} is {image.GetDimension()}D {image.GetSize()}; a 3D CT patch is needed"
        )
    if np.allclose(image.GetDirection(), np.eye(3).ravel(), atol=1e-6):
        return image  # already LPS (every LIDC/NODE21 patch): reorienting is a 15 ms copy
    return sitk.DICOMOrient(image, "LPS")


SHELL_MM = (2.0, 8.0)


def lung_background_hu(hu: np.ndarray, mask: np.ndarray, spacing, shell_mm: tuple[float, float] = SHELL_MM,
                       dist: np.ndarray | None = None) -> float:
    """Median HU of lung parenchyma in a shell ``shell_mm`` around the lesion; a default if none.

    ``dist`` (mm from the mask, same shape) may be given to avoid recomputing it.
    """
    sp = np.asarray(spacing, float)
    if dist is None:
        dist = ndi.distance_transform_edt(~mask, sampling=sp)
    shell = (dist > shell_mm[0]) & (dist <= shell_mm[1])
    lung = shell & (hu < LUNG_HU_MAX) & (hu > -1024.0)
    if lung.sum() >= 10:
        return float(np.median(hu[lung]))
    outside = (~mask) & (hu < LUNG_HU_MAX)
    if outside.sum() >= 10:
        return float(np.median(hu[outside]))
    return DEFAULT_LUNG_HU


def ct_lesion_from_arrays(
    hu: np.ndarray,
    mask: np.ndarray,
    spacing,
    *,
    kind: str = "ct-nodule",
    background_hu: float | None = None,
    edge_mm: float = 1.0,
    provenance: dict | None = None,
) -> LesionPatch:
    """A 3D CT lesion from arrays (z, y, x) in HU.

    ``intensity`` = ``hu - background_hu`` inside the mask grown by ``edge_mm``, 0 elsewhere:
    i.e. the original minus the same patch with the lesion replaced by lung tissue.
    """
    hu = np.asarray(hu)
    mask = np.asarray(mask)
    if hu.ndim != 3:
        raise SynthsegError(f"CT patch must be 3D (z, y, x), got shape {hu.shape}")
    if mask.shape != hu.shape:
        raise SynthsegError(f"CT mask shape {mask.shape} does not match CT patch shape {hu.shape}")
    hu = hu.astype(np.float32)
    if not np.isfinite(hu).all():
        raise SynthsegError("CT patch contains NaN or infinite values; clean the image first")
    if mask.dtype != bool:
        if not np.isfinite(mask).all():
            raise SynthsegError("CT mask contains NaN values; give a 0/1 label image")
        mask = mask > 0
    if not mask.any():
        raise SynthsegError("CT mask is empty; the lesion needs at least one labelled voxel")
    if not (math.isfinite(edge_mm) and edge_mm >= 0):
        raise SynthsegError(f"edge_mm must be >= 0, got {edge_mm}")
    sp = np.asarray(spacing, float)
    # every distance needed lies within the mask's box grown by the shell: one small EDT
    # there instead of full-cube ones keeps building an item cheap
    box = bbox_with_margin(mask, sp, max(edge_mm, SHELL_MM[1]) + 1.0)
    dist = ndi.distance_transform_edt(~mask[box], sampling=sp)
    if background_hu is None:
        background_hu = lung_background_hu(hu[box], mask[box], sp, dist=dist)
    intensity = np.zeros(hu.shape, np.float32)
    region = dist <= edge_mm
    intensity[box] = np.where(region, hu[box] - np.float32(background_hu), np.float32(0.0))
    prov = dict(provenance or {})
    prov.update({"background_hu": float(background_hu), "edge_mm": float(edge_mm)})
    item = LesionPatch(intensity=intensity, mask=mask, spacing=tuple(sp), kind=kind, provenance=prov,
                       absolute=hu, units="HU")
    item.provenance.setdefault("diameter_mm", round(item.diameter_mm(), 3))
    return item


def load_ct_patch(
    path: str | Path,
    mask_path: str | Path | None = None,
    *,
    label: int | None = None,
    kind: str = "ct-nodule",
    background_hu: float | None = None,
    edge_mm: float = 1.0,
) -> LesionPatch:
    """Load a CT lesion patch and its mask with SimpleITK.

    Parameters
    ----------
    path : path
        CT patch (MHA/MHD/NRRD/NIfTI file, or a DICOM series folder), in HU.
    mask_path : path, optional
        The lesion mask; by default the ``*_seg.*`` file beside ``path``.
    label : int, optional
        Use only this label value of the mask (default: every non-zero voxel).
    kind : str
        Kind tag for the item.
    background_hu : float, optional
        HU of the healthy tissue that replaces the lesion; default the median lung HU in a
        2–8 mm shell around it.
    edge_mm : float
        The lesion is replaced within the mask grown by this much (partial-volume rim).

    Returns
    -------
    LesionPatch
        3D, spacing (z, y, x) in mm, ``units='HU'``.
    """
    path = Path(path)
    image = _to_3d_lps(_read(path, "CT patch"), path, "CT patch")
    mpath = Path(mask_path) if mask_path is not None else find_mask_path(path)
    mimage = _to_3d_lps(_read(mpath, "CT mask"), mpath, "CT mask")
    if image.GetSize() != mimage.GetSize():
        raise SynthsegError(
            f"CT mask {mpath.name} has size {mimage.GetSize()} but the CT patch has {image.GetSize()}; give the matching mask"
        )
    if not np.allclose(image.GetSpacing(), mimage.GetSpacing(), rtol=1e-3):
        raise SynthsegError(
            f"CT mask spacing {mimage.GetSpacing()} differs from the CT patch spacing {image.GetSpacing()}"
        )
    hu = sitk.GetArrayFromImage(image)
    m = sitk.GetArrayFromImage(mimage)
    mask = (m == label) if label is not None else (m > 0)
    if not mask.any():
        which = f"label {label}" if label is not None else "any label"
        raise SynthsegError(f"CT mask {mpath.name} has no voxel with {which}; check the mask file")
    spacing = tuple(float(s) for s in reversed(image.GetSpacing()))  # numpy axis order
    provenance = {
        "source": "ct_patch",
        "source_file": str(path),
        "sha256": _sha256(path),
        "mask_file": str(mpath),
        "mask_sha256": _sha256(mpath),
        "label": label,
        "origin_lps_mm": [float(v) for v in image.GetOrigin()],
        "orientation": "LPS",
    }
    return ct_lesion_from_arrays(hu, mask, spacing, kind=kind, background_hu=background_hu, edge_mm=edge_mm,
                                 provenance=provenance)
