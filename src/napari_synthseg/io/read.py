"""Read CXR, CT and MRI files with SimpleITK, keeping native values and geometry.

Supported: PNG/JPEG/TIFF (8/16-bit; RGB becomes grayscale with a warning), a single DICOM file, a
DICOM series folder (sorted by slice position; several series in one folder -> the largest by
default, the others listed in a warning), NIfTI (.nii, .nii.gz), MetaImage (.mha, .mhd) and NRRD.
Every problem the user can cause becomes a one-line :class:`SynthsegError`.

Before any pixel is decoded, the header's declared size is checked against the file (a
truncated NIfTI, JPEG, PNG or DICOM is refused instead of being padded with zeros or noise) and
against a pixel budget (:func:`max_pixels`, ``SYNTHSEG_MAX_PIXELS``), so a 39 KB file claiming
65535 x 65535 pixels is one line, not gigabytes of memory. Messages the C libraries print
(libpng, libtiff, GDCM, ITK) are captured and logged at debug level instead of preceding our
one line on stderr.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import math
import os
import re
import sys
import tempfile
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

logger = logging.getLogger(__name__)

# ITK's own warnings (e.g. "Non uniform sampling or missing slices") would print before our
# message; the checks below turn the ones that matter into errors or warnings of our own.
sitk.ProcessObject_SetGlobalWarningDisplay(False)

#: Default pixel (voxel) budget for one image: 2**30 = a 1024 x 1024 x 1024 volume, more than
#: a whole-body CT at 0.5 mm. Raise it with ``SYNTHSEG_MAX_PIXELS`` (or ``synthseg --max-pixels``).
DEFAULT_MAX_PIXELS = 2**30
MAX_PIXELS_ENV = "SYNTHSEG_MAX_PIXELS"

# Deflate cannot compress better than about 1032:1, so a PNG whose pixels would need more than
# this many times its file size is truncated or a decompression bomb.
_PNG_MAX_RATIO = 1100
# A JPEG spends at least one bit per 8 x 8 block (its DC code, even with progressive EOB runs),
# so it cannot hold more than 512 pixels per byte; twice that is the bound.
_JPEG_MAX_PIXELS_PER_BYTE = 1024
_UNCOMPRESSED_DICOM = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99")


def max_pixels() -> int:
    """The pixel budget for one image (``SYNTHSEG_MAX_PIXELS``, default 2**30)."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(text))
    except ValueError:
        raise SynthsegError(f"{MAX_PIXELS_ENV} must be a number of pixels, got {text!r}") from None
    if value < 1:
        raise SynthsegError(f"{MAX_PIXELS_ENV} must be at least 1, got {text!r}")
    return value


_QUIET_LOCK = threading.Lock()
_QUIET_DEPTH = 0
_QUIET_SAVED: list = []


@contextlib.contextmanager
def quiet_c_libraries():
    """Capture what C libraries write to file descriptor 2 and log it at debug level.

    libpng, libtiff, libjpeg, GDCM and ITK print straight to fd 2, so ``sys.stderr`` cannot
    catch them. Overlapping uses (threads) share one redirection: the first one in redirects,
    the last one out restores. ``SYNTHSEG_SHOW_C_WARNINGS=1`` turns this off.
    """
    global _QUIET_DEPTH
    if os.environ.get("SYNTHSEG_SHOW_C_WARNINGS"):
        yield
        return
    with _QUIET_LOCK:
        if _QUIET_DEPTH == 0:
            try:
                with contextlib.suppress(Exception):
                    sys.stderr.flush()
                capture = tempfile.TemporaryFile()
                saved = os.dup(2)
                os.dup2(capture.fileno(), 2)
                _QUIET_SAVED[:] = [saved, capture]
            except OSError:
                _QUIET_SAVED[:] = []
        _QUIET_DEPTH += 1
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _QUIET_DEPTH -= 1
            if _QUIET_DEPTH == 0 and _QUIET_SAVED:
                saved, capture = _QUIET_SAVED
                _QUIET_SAVED[:] = []
                os.dup2(saved, 2)
                os.close(saved)
                capture.seek(0)
                text = capture.read(4000).decode("utf-8", "replace").strip()
                capture.close()
                if text:
                    logger.debug("C library output: %s", text)


def _component_bytes(reader) -> int:
    text = reader.GetPixelIDTypeAsString() if hasattr(reader, "GetPixelIDTypeAsString") else ""
    if not text:
        text = sitk.GetPixelIDValueAsString(reader.GetPixelIDValue())
    match = re.search(r"(\d+)-bit", text)
    bits = int(match.group(1)) if match else 8
    return max(1, bits // 8) * (2 if "complex" in text else 1)


def _check_budget(n_pixels: int, size, name: str) -> None:
    budget = max_pixels()
    if n_pixels > budget:
        shown = " x ".join(str(int(v)) for v in size)
        raise SynthsegError(
            f"{name} declares {shown} pixels ({n_pixels:.3g}), over the pixel budget of {budget:.3g}; "
            f"if the file is genuine, raise {MAX_PIXELS_ENV} (or --max-pixels)"
        )


def _check_nifti(path: Path, name: str) -> None:
    """Data length, and (for float data) finiteness, read from the raw file.

    ITK pads a truncated NIfTI with zeros and silently turns NaN/Inf into 0, so both are
    checked here on the stored bytes: the data is streamed in 4 MiB chunks (decompressed on the
    fly for ``.nii.gz``), never held twice.
    """
    import nibabel as nib

    try:
        # The array proxy knows where the data really starts (the header's vox_offset may be 0).
        # nibabel prints header repairs ("sform_code 254 not valid") through its own handler;
        # ITK has already accepted the header, so they are only noise before our message.
        nib_logger = logging.getLogger("nibabel.global")
        level = nib_logger.level
        nib_logger.setLevel(logging.CRITICAL)
        try:
            proxy: Any = nib.load(str(path)).dataobj  # type: ignore[attr-defined]
        finally:
            nib_logger.setLevel(level)
        shape, dtype, offset = proxy.shape, np.dtype(proxy.dtype), int(proxy.offset)
        slope, inter = proxy.slope, proxy.inter
    except Exception:  # nibabel raises many types for a broken header; ITK already parsed it
        raise SynthsegError(f"cannot read {name}: not a valid NIfTI file, or it is corrupt or truncated") from None
    for value in (slope, inter):
        if value is not None and not math.isfinite(float(value)):
            raise SynthsegError(f"{name} has a NaN or infinite intensity scaling (scl_slope/scl_inter)")
    needed = math.prod(int(v) for v in shape) * dtype.itemsize
    scan = dtype.kind in "fc"
    total, bad = 0, 0
    try:
        opener = gzip.open if file_extension(path) == ".nii.gz" else open
        with opener(path, "rb") as fh:
            fh.seek(offset) if opener is open else fh.read(offset)
            chunk_bytes = max(dtype.itemsize, (1 << 22) // dtype.itemsize * dtype.itemsize)
            while total < needed:
                chunk = fh.read(min(chunk_bytes, needed - total))
                if not chunk:
                    break
                total += len(chunk)
                if scan:
                    usable = len(chunk) - len(chunk) % dtype.itemsize
                    values = np.frombuffer(chunk[:usable], dtype=dtype)
                    bad += int(values.size - np.count_nonzero(np.isfinite(values)))
            if opener is not open and total >= needed:
                # read to the end so gzip checks its CRC and length trailer (a cut or damaged
                # .nii.gz whose pixels happen to be complete is still a damaged file)
                while fh.read(1 << 22):
                    pass
    except (EOFError, OSError, zlib.error):
        total = -1
    if total < needed:
        raise SynthsegError(f"{name} is truncated or corrupt: its header declares more pixel data than the file holds")
    if bad:
        raise SynthsegError(f"{name} has {bad} NaN or infinite pixel(s); fix or mask them before using the image")


def _check_dicom_pixels(path: Path, name: str) -> None:
    """Uncompressed DICOM: the PixelData element must hold what Rows x Columns x ... declare.

    Read by pydicom without loading the pixels (ITK reads a short PixelData as noise and does
    not expose the transfer syntax).
    """
    import pydicom

    truncated = f"{name} is truncated or corrupt: its header declares more pixel data than the file holds"
    try:
        dataset = pydicom.dcmread(str(path), defer_size=1024, force=True)
        syntax = str(getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", "") or "")
        rows, cols = int(dataset.get("Rows", 0) or 0), int(dataset.get("Columns", 0) or 0)
        bits = int(dataset.get("BitsAllocated", 0) or 0)
        frames = int(float(dataset.get("NumberOfFrames", 1) or 1))
        samples = int(dataset.get("SamplesPerPixel", 1) or 1)
        element = dataset.get_item(0x7FE00010)
    except Exception:  # pydicom raises many types on a cut or hostile file
        raise SynthsegError(f"cannot read {name}: not a valid DICOM file, or it is corrupt or truncated") from None
    if rows and cols:
        _check_budget(rows * cols * max(frames, 1), (cols, rows, max(frames, 1)), name)
    if syntax and syntax not in _UNCOMPRESSED_DICOM:
        return  # encapsulated (compressed) pixel data: no fixed length to check
    if element is None or not (rows and cols and bits):
        return
    length = getattr(element, "length", None)
    if length is None:
        length = len(element.value) if element.value is not None else 0
    if length == 0xFFFFFFFF:
        return
    declared = rows * cols * max(frames, 1) * samples * bits // 8
    # A cut file can still declare the full element length; the bytes must really be there.
    if min(int(length), path.stat().st_size) < declared:
        raise SynthsegError(truncated + " (DICOM PixelData is short)")


def _sniff(path: Path) -> str | None:
    """The format a file's content shows (ITK picks its reader by content, not by name)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(352)
    except OSError:
        return None
    if head.startswith(b"\x89PNG"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x1f\x8b"):
        return "nifti-gz" if file_extension(path) == ".nii.gz" else None
    if head[344:348] in (b"n+1\x00",) or head[4:8] == b"n+2\x00":
        return "nifti"
    if head[128:132] == b"DICM":
        return "dicom"
    return None


def check_complete(path: str | os.PathLike, reader, name: str | None = None) -> None:
    """Refuse a file whose header promises more pixels than it holds, or more than the budget.

    ``reader`` is an :class:`sitk.ImageFileReader` after ``ReadImageInformation()``: nothing has
    been decoded yet. Checks: the pixel budget; NIfTI data length (``.nii`` by file size,
    ``.nii.gz`` by a streamed decompression); JPEG end-of-image marker; PNG end chunk and the
    deflate ratio bound; uncompressed DICOM pixel data length.
    """
    path = Path(path)
    name = name or path.name
    size = tuple(int(v) for v in reader.GetSize())
    n_pixels = math.prod(size)
    _check_budget(n_pixels, size, name)
    kind = _sniff(path)
    file_size = path.stat().st_size
    if kind in ("nifti", "nifti-gz"):
        _check_nifti(path, name)
    elif kind == "jpeg":
        with open(path, "rb") as fh:
            fh.seek(max(0, file_size - 4096))
            tail = fh.read().rstrip(b"\x00\r\n ")
        # The end-of-image marker cannot occur inside entropy-coded data (0xFF is stuffed).
        if b"\xff\xd9" not in tail[-64:]:
            raise SynthsegError(f"{name} is truncated or corrupt: the JPEG has no end-of-image marker")
        if n_pixels > _JPEG_MAX_PIXELS_PER_BYTE * file_size:
            raise SynthsegError(
                f"{name} declares {' x '.join(map(str, size))} pixels, more than its {file_size} bytes "
                "can encode: truncated, corrupt or a decompression bomb"
            )
    elif kind == "png":
        with open(path, "rb") as fh:
            fh.seek(max(0, file_size - 64))
            tail = fh.read()
        if b"IEND" not in tail:
            raise SynthsegError(f"{name} is truncated or corrupt: the PNG has no end chunk")
        raw = n_pixels * reader.GetNumberOfComponents() * _component_bytes(reader)
        if raw > _PNG_MAX_RATIO * file_size:
            raise SynthsegError(
                f"{name} declares {' x '.join(map(str, size))} pixels, more than its {file_size} bytes "
                "can hold (PNG compresses at most ~1000:1): truncated or a decompression bomb"
            )
    elif kind == "dicom" or reader.HasMetaDataKey("0028|0010"):
        _check_dicom_pixels(path, name)


def _read_information(path: Path, name: str | None = None) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.LoadPrivateTagsOff()
    try:
        with quiet_c_libraries():
            reader.ReadImageInformation()
    except RuntimeError:
        raise SynthsegError(
            f"cannot read {name or path.name}: not a valid {_describe(path)} file, or it is corrupt or truncated"
        ) from None
    return reader


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
    with quiet_c_libraries():
        uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not uids:
        raise SynthsegError(f"no DICOM series found in folder {folder}")
    series = []
    for uid in uids:
        with quiet_c_libraries():
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
        with quiet_c_libraries():
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
        except (RuntimeError, UnicodeDecodeError, TypeError):
            # TypeError: a key that is not valid UTF-8 (a damaged header) comes back from
            # SimpleITK with surrogate escapes, which its own GetMetaData then refuses
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


def _position(reader) -> tuple[float, ...] | None:
    if not reader.HasMetaDataKey("0020|0032"):
        return None
    try:
        values = tuple(float(v) for v in reader.GetMetaData("0020|0032").strip().strip("\x00").split("\\"))
    except ValueError:
        return None
    return values if len(values) == 3 and all(math.isfinite(v) for v in values) else None


def _check_series_files(folder: Path, chosen: SeriesInfo, series: list[SeriesInfo]) -> None:
    """Every slice readable, complete, of one size, at its own position; no DICOM file left out.

    ITK would otherwise load a series with a truncated slice (padding it or dropping it with
    only a warning), stack two slices at one position, or guess the order of slices without
    positions.
    """
    listed = {os.path.abspath(f) for s in series for f in s.files}
    for candidate in _iter_files(folder):
        if candidate.name.upper() == "DICOMDIR" or os.path.abspath(candidate) in listed:
            continue
        if is_dicom_file(candidate):
            raise SynthsegError(
                f"{folder.name}/{candidate.name} is a DICOM file that cannot be read as part of a series "
                "(corrupt or truncated); remove or replace it"
            )
    sizes: set[tuple[int, ...]] = set()
    positions: dict[tuple[float, ...], str] = {}
    for path in chosen.files:
        name = f"{folder.name}/{Path(path).name}"
        header = _read_header(path)
        if header is None:
            raise SynthsegError(f"cannot read {name}: not a valid DICOM file, or it is corrupt or truncated")
        check_complete(path, header, name)
        sizes.add(tuple(header.GetSize()[:2]))
        if len(chosen.files) > 1:
            position = _position(header)
            if position is None:
                raise SynthsegError(
                    f"{name} has no ImagePositionPatient (0020,0032): the slice order of the series is unknown"
                )
            rounded = tuple(round(v, 3) for v in position)
            if rounded in positions:
                raise SynthsegError(
                    f"{name} and {positions[rounded]} are at the same slice position {rounded}: "
                    "duplicate slices (two series or a repeated acquisition in one folder?)"
                )
            positions[rounded] = Path(path).name
    if len(sizes) > 1:
        raise SynthsegError(f"the slices of the series in {folder.name} differ in size: {sorted(sizes)}")
    rows_cols = next(iter(sizes))
    _check_budget(math.prod(rows_cols) * len(chosen.files), (*rows_cols, len(chosen.files)), folder.name)


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
    _check_series_files(folder, chosen, series)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(chosen.files)
    try:
        with quiet_c_libraries():
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
    reader = _read_information(path)
    check_complete(path, reader)
    try:
        with quiet_c_libraries():
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


def _stores_geometry(image: MedicalImage) -> bool:
    return image.metadata.get("synthseg|spacing_source") != "user" and not any(
        "stores no pixel spacing" in w for w in image.warnings
    )


def check_same_grid(mask: MedicalImage, image: MedicalImage, what: str = "mask") -> None:
    """Refuse a mask that is not on the image's pixel grid.

    The shapes must match; when both files store geometry (not PNG/JPEG), spacing, direction
    and origin must too (origin within half a pixel): a mask from another scan with the same
    matrix size would otherwise be used silently.
    """
    if tuple(mask.shape) != tuple(image.shape):
        raise SynthsegError(f"{what} has shape {tuple(mask.shape)}, the image {tuple(image.shape)}")
    if not (_stores_geometry(mask) and _stores_geometry(image)):
        return
    spacing_m, spacing_i = np.asarray(mask.spacing, float), np.asarray(image.spacing, float)
    if not np.allclose(spacing_m, spacing_i, rtol=1e-3, atol=1e-6):
        raise SynthsegError(f"{what} has pixel spacing {tuple(spacing_m)} mm, the image {tuple(spacing_i)} mm")
    if not np.allclose(np.asarray(mask.direction, float), np.asarray(image.direction, float), atol=1e-3):
        raise SynthsegError(f"{what} has another orientation (direction) than the image")
    offset = float(np.max(np.abs(np.asarray(mask.origin, float) - np.asarray(image.origin, float))))
    if not math.isfinite(offset) or offset > 0.5 * float(spacing_i.min()):
        raise SynthsegError(
            f"{what}'s origin is {offset:.4g} mm away from the image's: it belongs to another image or scan"
        )
