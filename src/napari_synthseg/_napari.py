"""npe2 hooks: readers, writers and sample data. The only place where core images become layers.

Layer conventions (every widget relies on them):

- ``scale``/``translate`` come from spacing/origin (:func:`layer_transform`), so napari measures
  in mm; a volume's slice axis is drawn head up: napari draws world axis 0 downwards in a
  coronal or sagittal view, so that axis is minus the patient's superior coordinate (a negative
  z scale where SimpleITK's slice 0 is the most inferior one, as in every LPS volume);
- ``metadata["synthseg"]`` holds the source geometry (spacing, origin, direction, modality), the
  source file(s), the DICOM series uid and the source metadata, so writers and the scene model
  can put everything back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import SynthsegError
from .io import MedicalImage, is_supported_path, read_image, window_limits, write_image


def _sample_dir() -> Path:
    """Bundled samples: inside an installed wheel, or sample_data/ of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_bundled", here.parents[1] / "sample_data"):
        if candidate.is_dir():
            return candidate
    raise SynthsegError("the bundled sample images are missing from this installation")


SAMPLE_FILES = {
    "cxr": "cxr_nih_00004132_006.mha",
    "ct": "ct_lung_pet_ct_dx_A0001_tumour_slab.mha",
    "mri": "mri_mni152_t1_2009a.nii.gz",
}

SAMPLE_NAMES = {"cxr": "CXR NIH 00004132_006", "ct": "CT Lung-PET-CT-Dx A0001", "mri": "MRI MNI152 T1"}

LayerData = tuple[Any, dict[str, Any], str]


def _notify_warning(message: str) -> None:
    try:
        from napari.utils.notifications import show_warning
    except ImportError:  # headless use of the core
        import warnings

        warnings.warn(message, stacklevel=2)
        return
    show_warning(message)


def _notify_error(message: str) -> None:
    from napari.utils.notifications import show_error

    show_error(message)


def layer_metadata(image: MedicalImage) -> dict[str, Any]:
    """What a layer carries so the image can be written back or opened as a scene."""
    return {
        "synthseg": {
            "geometry": image.geometry(),
            "source_paths": list(image.source_paths),
            "series_uid": image.series_uid,
            "source_metadata": dict(image.metadata),
            "warnings": list(image.warnings),
        }
    }


def layer_transform(image: MedicalImage) -> dict[str, tuple[float, ...]]:
    """napari ``scale`` and ``translate`` of ``image``: millimetres, volumes drawn head up.

    napari draws world axis 0 downwards when a volume is resliced (dims rolled to (z, x) or
    (z, y)). For volumes, world axis 0 is therefore minus the physical z (LPS: superior is +z),
    so the superior slice is drawn at the top whichever way the slices are stored: with
    SimpleITK's usual direction (slice 0 most inferior) the z scale is negative. Rows and
    columns keep SimpleITK's order (anterior at the top of an axial slice, the patient's right
    on the screen's left: the radiological convention). 2D images are drawn as stored.
    Every layer of an image (reader, scene, QA) uses this, so they overlay, and
    ``layer.world_to_data`` maps a click to the voxel under it.
    """
    scale, translate = list(image.scale), list(image.translate)
    if image.ndim == 3:
        k_up = float(image.direction_matrix[2, 2])  # +1: slice index grows towards the head
        scale[0] = -scale[0] if k_up >= 0 else scale[0]
        translate[0] = -translate[0]
    return {"scale": tuple(scale), "translate": tuple(translate)}


def image_from_layer(data: np.ndarray, meta: dict[str, Any]) -> MedicalImage:
    """Rebuild a :class:`MedicalImage` from layer data + layer attributes (writers, widgets)."""
    info = (meta.get("metadata") or {}).get("synthseg")
    array = np.asarray(data)
    if info and list(info["geometry"]["shape"]) == list(array.shape):
        geom = info["geometry"]
        return MedicalImage(
            array=array,
            spacing=tuple(geom["spacing"]),
            origin=tuple(geom["origin"]),
            direction=tuple(geom["direction"]),
            modality=geom.get("modality", "unknown"),
            metadata=dict(info.get("source_metadata") or {}),
            source_paths=list(info.get("source_paths") or []),
            series_uid=info.get("series_uid"),
        )
    # A layer made in napari (painted labels, a plain numpy image): only scale/translate are known.
    # Read them back with the convention of layer_transform (a volume's world axis 0 is minus z).
    ndim = array.ndim
    scale = [float(v) for v in tuple(meta.get("scale") or (1.0,) * ndim)[-ndim:]]
    translate = [float(v) for v in tuple(meta.get("translate") or (0.0,) * ndim)[-ndim:]]
    direction = np.eye(ndim)
    if ndim == 3:
        direction[2, 2] = -1.0 if scale[0] > 0 else 1.0
        translate[0] = -translate[0]
    return MedicalImage(
        array=array,
        spacing=tuple(abs(v) for v in scale[::-1]),
        origin=tuple(translate[::-1]),
        direction=tuple(direction.ravel().tolist()),
    )


def image_layer_data(image: MedicalImage, window: str = "auto", name: str | None = None) -> LayerData:
    """napari LayerData for ``image`` with a window preset applied."""
    if name is None:
        src = image.source
        if src is None:
            name = "image"
        elif len(image.source_paths) > 1:  # a DICOM series: name it by its folder
            folder = Path(src).parent
            name = f"{folder.parent.name}/{folder.name}" if folder.parent.name else folder.name
        else:
            name = Path(src).name
    inverted = image.metadata.get("0028|0004", "").strip().upper() == "MONOCHROME1"
    kwargs = {
        "name": name,
        **layer_transform(image),
        "contrast_limits": window_limits(image.array, window, image.modality),
        "colormap": "gray_r" if inverted else "gray",
        "metadata": layer_metadata(image),
    }
    return (image.array, kwargs, "image")


# ---- reader ---------------------------------------------------------------------------------


def get_reader(path: str | list[str]):
    """npe2 reader contribution: returns a reader function, or None for paths we don't handle."""
    if isinstance(path, list):
        if not path or not all(is_supported_path(p) for p in path):
            return None
    elif not is_supported_path(path):
        return None
    return read_layers


def read_layers(path: str | list[str]) -> list[LayerData]:
    paths = path if isinstance(path, list) else [path]
    layers = []
    for p in paths:
        try:
            image = read_image(p)
        except SynthsegError as exc:
            # One line in the UI; re-raised so napari knows the open failed.
            _notify_error(str(exc))
            raise
        for warning in image.warnings:
            _notify_warning(warning)
        layers.append(image_layer_data(image))
    return layers


# ---- writers --------------------------------------------------------------------------------


def write_image_layer(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 single-layer writer for image layers."""
    image = image_from_layer(data, meta)
    return [str(write_image(image, path))]


def write_labels_layer(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 single-layer writer for labels: integer labels with the geometry of their image."""
    labels = np.asarray(data)
    if labels.dtype.kind not in "biu":
        raise SynthsegError("labels must be integers")
    if labels.size and labels.max() <= 255 and labels.min() >= 0:
        labels = labels.astype(np.uint8)
    elif labels.size and labels.max() <= 65535 and labels.min() >= 0:
        labels = labels.astype(np.uint16)
    image = image_from_layer(labels, meta)
    # A label map is derived data: it must never take the place of its source image.
    return [str(write_image(image, path))]


# ---- sample data ----------------------------------------------------------------------------


def sample_layer_data(key: str, window: str = "auto") -> list[LayerData]:
    if key not in SAMPLE_FILES:
        raise SynthsegError(f"unknown sample {key!r}; choose one of {', '.join(SAMPLE_FILES)}")
    path = _sample_dir() / SAMPLE_FILES[key]
    if not path.exists():
        raise SynthsegError(f"sample file missing from the installation: {path}")
    image = read_image(path)
    return [image_layer_data(image, window=window, name=SAMPLE_NAMES[key])]


def sample_cxr() -> list[LayerData]:
    return sample_layer_data("cxr")


def sample_ct() -> list[LayerData]:
    return sample_layer_data("ct")


def sample_mri() -> list[LayerData]:
    return sample_layer_data("mri")
