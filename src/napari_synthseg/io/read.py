"""Read CXR, CT and MRI files with SimpleITK, keeping native values and geometry.

Supported: PNG/JPEG/TIFF (8/16-bit; RGB becomes grayscale with a warning), a single DICOM file, a
DICOM series folder (sorted by slice position; several series in one folder -> the largest by
default, the others listed in a warning), NIfTI (.nii, .nii.gz), MetaImage (.mha, .mhd) and NRRD.
Every problem the user can cause becomes a one-line :class:`SynthsegError`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import SynthsegError
from .image import MedicalImage, geometry_from_sitk
from .modality import guess_modality

# extension -> human name (used in messages)
IMAGE_EXTENSIONS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".dcm": "DICOM",
    ".dicom": "DICOM",
    ".nii": "NIfTI",
    ".nii.gz": "NIfTI",
    ".mha": "MetaImage",
    ".mhd": "MetaImage",
    ".nrrd": "NRRD",
    ".nhdr": "NRRD",
}

# ITU-R BT.601 luma, the weights PIL and OpenCV use for RGB -> L.
_LUMA = np.array([0.299, 0.587, 0.114])


def file_extension(path: str | os.PathLike) -> str:
    """Lower-case extension, treating ``.nii.gz`` as one."""
    name = Path(path).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True for a file with the DICM preamble (DICOM files often have no extension)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def is_supported_path(path: str | os.PathLike) -> bool:
    """Whether :func:`read_image` should try ``path`` (cheap: no pixel reading)."""
    p = Path(path)
    if p.is_dir():
        return any(is_dicom_file(f) or file_extension(f) == ".dcm" for f in _iter_files(p, limit=50))
    return file_extension(p) in IMAGE_EXTENSIONS or is_dicom_file(p)


def _iter_files(folder: Path, limit: int | None = None):
    count = 0
    for entry in sorted(folder.iterdir()):
        if entry.is_file() and not entry.name.startswith("."):
            yield entry
            count += 1
            if limit is not None and count >= limit:
                return


def sha256_of_files(paths: list[str]) -> str:
    """sha256 of one file, or of the ordered list of per-file digests for a series."""
    digests = []
    for path in paths:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        digests.append(h.hexdigest())
    if len(digests) == 1:
        return digests[0]
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


@dataclass
class SeriesInfo:
    """One DICOM series in a folder."""

    uid: str
    files: list[str]
    description: str = ""
    modality: str = ""

    @property
    def n_files(self) -> int:
        return len(self.files)

    def summary(self) -> str:
        desc = f" '{self.description}'" if self.description else ""
        mod = f" {self.modality}" if self.modality else ""
        return f"{self.uid}{mod}{desc}: {self.n_files} files"


def list_dicom_series(folder: str | os.PathLike) -> list[SeriesInfo]:
    """The DICOM series in ``folder``, largest first, each with its files sorted by position."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SynthsegError(f"not a folder: {folder}")
    uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not uids:
        raise SynthsegError(f"no DICOM series found in folder {folder}")
    series = []
    for uid in uids:
        files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
        info = SeriesInfo(uid=uid, files=files)
        header = _read_header(files[0])
        if header is not None:
            info.description = _tag(header, "0008|103e")
            info.modality = _tag(header, "0008|0060")
        series.append(info)
    series.sort(key=lambda s: (-s.n_files, s.uid))
    return series


def _read_header(path: str) -> sitk.ImageFileReader | None:
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    return reader


def _tag(reader: sitk.ImageFileReader, key: str) -> str:
    return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""


def _metadata(reader) -> dict[str, str]:
    out = {}
    for key in reader.GetMetaDataKeys():
        try:
            value = reader.GetMetaData(key)
        except (RuntimeError, UnicodeDecodeError):
            continue
        # Binary blobs (private tags, embedded ICC profiles) are not useful as text metadata.
        if len(value) <= 1024 and value.isprintable():
            out[key] = value.strip()
    return out


def _describe(path: Path) -> str:
    return IMAGE_EXTENSIONS.get(file_extension(path), "image")


def _to_grayscale(img: sitk.Image, name: str, warnings: list[str]) -> sitk.Image:
    ncomp = img.GetNumberOfComponentsPerPixel()
    if ncomp == 1:
        return img
    if ncomp not in (2, 3, 4):
        raise SynthsegError(
            f"{name} has {ncomp} values per pixel; only grayscale or RGB(A) images are supported"
        )
    arr = sitk.GetArrayViewFromImage(img)
    if ncomp == 2:  # gray + alpha
        gray = np.array(arr[..., 0])
        warnings.append(f"{name}: gray+alpha image, the alpha channel was dropped")
    else:
        rgb = arr[..., :3]
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
            gray = np.array(rgb[..., 0])
            warnings.append(f"{name}: RGB image with equal channels, taken as grayscale")
        else:
            dtype = arr.dtype
            gray = rgb.astype(np.float64) @ _LUMA
            if np.issubdtype(dtype, np.integer):
                gray = np.clip(np.rint(gray), np.iinfo(dtype).min, np.iinfo(dtype).max).astype(dtype)
            else:
                gray = gray.astype(dtype)
            warnings.append(
                f"{name}: RGB image converted to grayscale (0.299 R + 0.587 G + 0.114 B); "
                "medical images should be stored as grayscale"
            )
    out = sitk.GetImageFromArray(gray)
    out.CopyInformation(img) if out.GetDimension() == img.GetDimension() else None
    out.SetSpacing(img.GetSpacing())
    out.SetOrigin(img.GetOrigin())
    out.SetDirection(img.GetDirection())
    return out


class _ITKPixelBuffer:
    """Exposes an ITK image's pixel buffer to numpy and keeps the image alive while it is used.

    Why not ``sitk.GetArrayFromImage``: it copies, which doubles peak memory and time on a large
    CT volume. A bare ``GetArrayViewFromImage`` dangles once the image is freed; an array made
    from this holder keeps it as its ``base``. The array is read-only, which suits a source
    image: the plugin never edits original pixels.
    """

    def __init__(self, image: sitk.Image) -> None:
        self._image = image
        self._view = sitk.GetArrayViewFromImage(image)
        self.__array_interface__ = self._view.__array_interface__


def _array_of(img: sitk.Image) -> np.ndarray:
    return np.asarray(_ITKPixelBuffer(img))


def _squeeze_to_supported(img: sitk.Image, name: str) -> sitk.Image:
    """Drop singleton trailing axes (a one-slice DICOM, a 4D NIfTI with one volume)."""
    size = list(img.GetSize())
    if any(s == 0 for s in size):
        raise SynthsegError(f"{name} is empty (size {size})")
    while len(size) > 2 and size[-1] == 1:
        extractor = sitk.ExtractImageFilter()
        extractor.SetSize(size[:-1] + [0])
        extractor.SetIndex([0] * len(size))
        img = extractor.Execute(img)
        size = list(img.GetSize())
    if len(size) > 3:
        raise SynthsegError(
            f"{name} is a {len(size)}D image (size {size}); only 2D images and 3D volumes are "
            "supported (split time series or multi-echo data first)"
        )
    return img


def _finish(
    img: sitk.Image,
    name: str,
    metadata: dict[str, str],
    paths: list[str],
    warnings: list[str],
    modality: str | None,
    series_uid: str | None = None,
) -> MedicalImage:
    img = _squeeze_to_supported(img, name)
    img = _to_grayscale(img, name, warnings)
    array = _array_of(img)
    spacing, origin, direction = geometry_from_sitk(img)
    if array.dtype.kind == "f":
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise SynthsegError(
                f"{name} has {bad} NaN or infinite pixel(s); fix or mask them before using the image"
            )
    if array.dtype.kind == "c":
        raise SynthsegError(f"{name} holds complex values; only real-valued images are supported")
    if any(s <= 0 for s in spacing):
        raise SynthsegError(f"{name} has a non-positive pixel spacing {spacing}")
    if metadata.get("0028|0004", "").strip().upper() == "MONOCHROME1":
        warnings.append(f"{name}: MONOCHROME1 (bright = low values); shown with an inverted colormap")
    return MedicalImage(
        array=array,
        spacing=spacing,
        origin=origin,
        direction=direction,
        modality=modality or guess_modality(array, metadata),
        metadata=metadata,
        source_paths=paths,
        series_uid=series_uid,
        warnings=warnings,
    )


def read_dicom_series(
    folder: str | os.PathLike, series_uid: str | None = None, modality: str | None = None
) -> MedicalImage:
    """Read one DICOM series from ``folder`` (the largest unless ``series_uid`` is given)."""
    folder = Path(folder)
    series = list_dicom_series(folder)
    if series_uid is None:
        chosen = series[0]
    else:
        matches = [s for s in series if s.uid == series_uid]
        if not matches:
            listed = "; ".join(s.summary() for s in series)
            raise SynthsegError(f"series {series_uid} is not in {folder.name} (it has: {listed})")
        chosen = matches[0]
    warnings = []
    if len(series) > 1:
        others = ", ".join(f"{s.uid} ({s.n_files} files)" for s in series if s is not chosen)
        warnings.append(
            f"{folder.name} holds {len(series)} DICOM series; loaded {chosen.uid} "
            f"({chosen.n_files} files). Others: {others}. Pick one with --series-uid or the Series widget"
        )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(chosen.files)
    try:
        img = reader.Execute()
    except RuntimeError:
        raise SynthsegError(
            f"cannot read the DICOM series in {folder.name}: a file is corrupt, truncated or "
            "the slices do not form one volume"
        ) from None
    header = _read_header(chosen.files[0])
    metadata = _metadata(header) if header is not None else {}
    return _finish(img, folder.name, metadata, chosen.files, warnings, modality, chosen.uid)


def read_image(
    path: str | os.PathLike,
    series_uid: str | None = None,
    modality: str | None = None,
    spacing: tuple[float, ...] | None = None,
) -> MedicalImage:
    """Read a 2D image, a 3D volume or a DICOM series folder.

    Parameters
    ----------
    path : path-like
        A file, or a folder holding a DICOM series.
    series_uid : str, optional
        Which series to load from a folder with several (default: the one with most files).
    modality : str, optional
        Override the modality guess (``"CT"``, ``"CXR"``, ``"MR"``).
    spacing : tuple of float, optional
        Pixel spacing in mm, (x, y[, z]) order, for files that store none (PNG, JPEG) or a
        wrong one. A single value applies to every axis.

    Raises
    ------
    SynthsegError
        Missing, unsupported, corrupt, empty, 4D or non-finite input, with a one-line reason.
    """
    image = _read_any(Path(path), series_uid, modality)
    if spacing is not None:
        image = _override_spacing(image, spacing)
    return image


def _override_spacing(image: MedicalImage, spacing) -> MedicalImage:
    values = [float(v) for v in (spacing if np.iterable(spacing) else [spacing])]
    if len(values) == 1:
        values = values * image.ndim
    if len(values) != image.ndim or any(not np.isfinite(v) or v <= 0 for v in values):
        raise SynthsegError(
            f"spacing {spacing} does not fit a {image.ndim}D image: give {image.ndim} positive mm values (x,y[,z])"
        )
    image.spacing = tuple(values)
    image.warnings = [w for w in image.warnings if "stores no pixel spacing" not in w]
    image.metadata["synthseg|spacing_source"] = "user"
    return image


def _read_any(path: Path, series_uid: str | None, modality: str | None) -> MedicalImage:
    if not path.exists():
        raise SynthsegError(f"no such file or folder: {path}")
    if path.is_dir():
        return read_dicom_series(path, series_uid=series_uid, modality=modality)
    ext = file_extension(path)
    if ext not in IMAGE_EXTENSIONS and not is_dicom_file(path):
        supported = ", ".join(sorted(set(IMAGE_EXTENSIONS)))
        raise SynthsegError(f"{path.name}: unsupported file type; supported: {supported}, DICOM folders")
    if not os.access(path, os.R_OK):
        raise SynthsegError(f"{path.name}: permission denied (cannot read the file)")
    if path.stat().st_size == 0:
        raise SynthsegError(f"{path.name} is an empty file")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.LoadPrivateTagsOff()
    try:
        reader.ReadImageInformation()
        img = reader.Execute()
    except RuntimeError:
        raise SynthsegError(
            f"cannot read {path.name}: not a valid {_describe(path)} file, or it is corrupt or truncated"
        ) from None
    warnings = []
    if ext in (".png", ".jpg", ".jpeg") or (ext in (".tif", ".tiff") and img.GetSpacing() == (1.0, 1.0)):
        warnings.append(
            f"{path.name}: {_describe(path)} stores no pixel spacing; 1 mm per pixel assumed "
            "(give the real one with --spacing, or use DICOM, MHA or NIfTI)"
        )
    return _finish(img, path.name, _metadata(reader), [str(path)], warnings, modality)
