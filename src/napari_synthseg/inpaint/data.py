"""Training data: a folder of images (2D or volumes), optional lesion masks, random crops + holes.

Each sample is a normalised crop, its hole, a mode index (0 healthy, 1 lesion, 2 outpaint) and,
for volumes, the neighbouring slices. Healthy holes never touch a lesion (dilated by a few
pixels), so "healthy" targets are what is outside the given lesion masks; lesion samples put the
hole over a real lesion so the model learns to draw one where a mask says so.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
from scipy import ndimage as ndi

from ..errors import SynthsegError
from ..io import is_supported_path, read_image
from .masks import blob_mask, box_mask, dilate, random_training_mask
from .network import MODES
from .normalize import Normalizer, image_half_range
from .prior import prior_fill

MASK_SUFFIXES = ("", "_mask", "_seg", "_label", "_lesion")


@dataclass
class TrainImage:
    """One training image (float32, (z, y, x); 2D images get z = 1) and its masks."""

    path: Path
    array: np.ndarray
    lesion: Optional[np.ndarray] = None
    organ: Optional[np.ndarray] = None
    sha256: str = ""
    lesion_slices: List[int] = field(default_factory=list)
    #: (z, y, x) where nodule-shaped training holes may be centred (None: anywhere)
    centres: Optional[np.ndarray] = None
    #: the whole image's percentile half range (the scale of ``norm_scale="image"``)
    half_range: Optional[float] = None


def _stem(p: Path) -> str:
    name = p.name
    for ext in (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".png", ".jpg", ".jpeg", ".tif",
                ".tiff", ".dcm"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return p.stem


def _find_partner(folder: Optional[Path], stem: str) -> Optional[Path]:
    if folder is None:
        return None
    for suffix in MASK_SUFFIXES:
        for cand in sorted(folder.glob(f"{stem}{suffix}.*")):
            if cand.is_file() and is_supported_path(cand):
                return cand
    return None


def _hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def list_image_files(folder: str | Path, exclude: Sequence[str] = ()) -> List[Path]:
    """Supported image files directly in ``folder`` (sorted), minus names in ``exclude``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SynthsegError(f"image folder not found: {folder}")
    skip = set(exclude)
    files = [p for p in sorted(folder.iterdir())
             if p.is_file() and is_supported_path(p) and p.name not in skip and _stem(p) not in skip
             and not any(_stem(p).endswith(s) for s in MASK_SUFFIXES[1:])]
    return files


def aerated_lung_centres(image: np.ndarray, organ: Optional[np.ndarray] = None) -> np.ndarray:
    """Pixels of a 2D CXR where a nodule-sized healthy-lung hole may be centred.

    The lung fields (``organ`` if given, else the package's classical CXR lung mask) eroded by
    30 px per 1024 px of height, keeping pixels whose 41-px local mean is darker than the lung
    median: aerated lung rather than hila, heart border or rib crossings. This is the rule
    benchmarks/bench_inpaint.py uses to place its test holes, so the training holes come from the
    same distribution (on other images). Falls back to the whole image if the mask fails.
    """
    from ..constraints.cxr_lungs import cxr_lung_mask

    img = np.asarray(image, np.float32)
    f = img.shape[0] / 1024.0
    try:
        lungs = organ.astype(bool) if organ is not None else cxr_lung_mask(img)
        lungs = ndi.binary_erosion(lungs, iterations=max(1, int(30 * f)))
    except (SynthsegError, ValueError):
        lungs = np.zeros(img.shape, bool)
    if lungs.sum() < 0.02 * lungs.size:
        return np.ones(img.shape, bool)
    local = ndi.uniform_filter(img, max(3, int(41 * f)))
    dark = lungs & (local <= np.median(img[lungs]))
    return dark if dark.any() else lungs


def load_training_images(
    images: Sequence[str | Path],
    masks_dir: Optional[str | Path] = None,
    organ_dir: Optional[str | Path] = None,
    exclude: Sequence[str] = (),
    nodule_centres: bool = False,
) -> List[TrainImage]:
    """Read every image in the given folders/files, with lesion and organ masks matched by name.

    A mask matches ``NAME.ext`` if it is called ``NAME[_mask|_seg|_label|_lesion].*`` in
    ``masks_dir`` (lesions) or ``organ_dir`` (allowed region for holes). With
    ``nodule_centres``, 2D images also get :func:`aerated_lung_centres` (CXR only).
    """
    files: List[Path] = []
    for source in images:
        p = Path(source)
        files.extend(list_image_files(p, exclude) if p.is_dir() else [p])
    if not files:
        raise SynthsegError("no training images found; give a folder of PNG/DICOM/NIfTI/MHA images")
    mdir = Path(masks_dir) if masks_dir else None
    odir = Path(organ_dir) if organ_dir else None
    out = []
    for path in files:
        img = read_image(path)
        arr = np.asarray(img.array, np.float32)
        arr = arr[None] if arr.ndim == 2 else arr
        item = TrainImage(path=path, array=arr, sha256=_hash(path), half_range=image_half_range(arr))
        for folder, attr in ((mdir, "lesion"), (odir, "organ")):
            partner = _find_partner(folder, _stem(path))
            if partner is None:
                continue
            m = np.asarray(read_image(partner).array) > 0
            m = m[None] if m.ndim == 2 else m
            if m.shape != arr.shape:
                raise SynthsegError(f"{partner.name} has shape {m.shape[1:] if m.shape[0] == 1 else m.shape}"
                                    f" but {path.name} has {arr.shape[1:] if arr.shape[0] == 1 else arr.shape};"
                                    " masks must match their image")
            setattr(item, attr, m)
        if item.lesion is not None:
            item.lesion_slices = [int(z) for z in np.flatnonzero(item.lesion.any(axis=(1, 2)))]
        if nodule_centres and arr.shape[0] == 1:
            c = aerated_lung_centres(arr[0], None if item.organ is None else item.organ[0])
            if item.lesion is not None:
                c &= ~dilate(item.lesion[0], 30)
            item.centres = c[None] if c.any() else None
        out.append(item)
    return out


@dataclass
class Sample:
    image: np.ndarray      # (S, S) normalised target
    hole: np.ndarray       # (S, S) float 0/1
    mode: int
    neighbours: np.ndarray  # (2k, S, S) normalised
    coarse: Optional[np.ndarray] = None  # (S, S) prior fill, None = push-pull in the network
    scale: float = 1.0  # native units per normalised unit (the crop's Normalizer.half_range)


class CropSampler:
    """Draws training samples (see module docstring) with a private random generator."""

    def __init__(self, items: List[TrainImage], crop: int, modes: Sequence[str],
                 context_slices: int = 0, lesion_prob: float = 0.5, outpaint_prob: float = 0.15,
                 percentiles=(1.0, 99.0), seed: int = 0, config=None,
                 pushpull_mix: float = 0.2, nodule_prob: float = 0.0,
                 nodule_radius: Sequence[float] = (6.0, 25.0), half_scale_prob: float = 0.0,
                 intensity_jitter: float = 0.0, nodule_jitter: float = 0.1) -> None:
        self.items = [it for it in items if min(it.array.shape[1:]) >= 16]
        if not self.items:
            raise SynthsegError("all training images are smaller than 16 pixels")
        self.crop = int(crop)
        self.modes = tuple(modes)
        self.k = int(context_slices)
        self.lesion_prob = lesion_prob if "lesion" in self.modes else 0.0
        self.outpaint_prob = outpaint_prob if "outpaint" in self.modes else 0.0
        self.percentiles = tuple(percentiles)
        self.rng = np.random.default_rng(seed)
        self.config = config
        self.pushpull_mix = pushpull_mix
        self.lesion_items = [i for i, it in enumerate(self.items) if it.lesion_slices]
        self.nodule_prob = float(nodule_prob)
        low_radius, high_radius = (float(r) for r in nodule_radius)
        self.nodule_radius = (low_radius, high_radius)
        self.half_scale_prob = float(half_scale_prob)
        self.intensity_jitter = float(intensity_jitter)
        self.nodule_jitter = float(nodule_jitter)
        self._centre_idx = [None if it.centres is None else np.flatnonzero(it.centres.ravel())
                            for it in self.items]

    def _crop_at(self, item: TrainImage, z: int, r0: int, c0: int, s: int):
        nz = item.array.shape[0]
        sl = (slice(r0, r0 + s), slice(c0, c0 + s))
        img = item.array[z][sl]
        nb = [item.array[int(np.clip(z + d, 0, nz - 1))][sl]
              for d in list(range(-self.k, 0)) + list(range(1, self.k + 1))]
        les = item.lesion[z][sl] if item.lesion is not None else None
        org = item.organ[z][sl] if item.organ is not None else None
        return img, nb, les, org

    def _pad(self, a: np.ndarray) -> np.ndarray:
        s = self.crop
        ph, pw = s - a.shape[0], s - a.shape[1]
        if ph <= 0 and pw <= 0:
            return a
        return np.pad(a, ((0, max(ph, 0)), (0, max(pw, 0))), mode="reflect" if a.dtype != bool else "constant")

    def sample(self) -> Sample:
        rng = self.rng
        u = rng.uniform()
        if self.lesion_items and u < self.lesion_prob:
            return self._lesion_sample()
        if (self.nodule_prob > 0 and u >= self.lesion_prob + self.outpaint_prob
                and rng.uniform() < self.nodule_prob):
            return self._nodule_sample()
        item = self.items[int(rng.integers(len(self.items)))]
        nz, h, w = item.array.shape
        s = min(self.crop, h, w)
        z = int(rng.integers(nz))
        r0 = int(rng.integers(0, h - s + 1))
        c0 = int(rng.integers(0, w - s + 1))
        img, nb, les, org = self._crop_at(item, z, r0, c0, s)
        mode = 0
        if u < self.lesion_prob + self.outpaint_prob:
            keep = box_mask((s, s), rng, 0.15, 0.5)
            hole = ~keep
            mode = 2
        else:
            allowed = None if org is None else org.copy()
            if les is not None and les.any():
                free = ~dilate(les, 4)
                allowed = free if allowed is None else (allowed & free)
                if not allowed.any():
                    allowed = None
            hole = random_training_mask((s, s), rng, allowed=allowed)
        return self._finish(img, nb, hole, mode, rng, item)

    def _nodule_sample(self) -> Sample:
        """A healthy hole shaped and sized like a nodule, centred (with jitter) in the crop.

        Radii are ``nodule_radius`` pixels per 1024 px of image height; with probability
        ``half_scale_prob`` the crop is taken from the image averaged 2 x 2 (a 512-px radiograph
        of the same anatomy, hole radii halved).
        """
        rng = self.rng
        i = int(rng.integers(len(self.items)))
        item = self.items[i]
        nz, h, w = item.array.shape
        f = 2 if (self.half_scale_prob > 0 and rng.uniform() < self.half_scale_prob
                  and min(h, w) >= 2 * self.crop) else 1
        s = min(self.crop, h // f, w // f)
        idx = self._centre_idx[i]
        if idx is not None and item.centres is not None:  # idx is None exactly when centres is
            z, cy, cx = (int(v) for v in np.unravel_index(int(idx[int(rng.integers(len(idx)))]),
                                                          item.centres.shape))
        else:
            z, cy, cx = int(rng.integers(nz)), int(rng.integers(h)), int(rng.integers(w))
        radius = rng.uniform(*self.nodule_radius) * (h / 1024.0) / f
        radius = float(min(max(radius, 2.0), 0.3 * s))
        span = s * f
        jy, jx = rng.normal(0, s * self.nodule_jitter, 2) * f if self.nodule_jitter > 0 else (0.0, 0.0)
        r0 = int(np.clip(round(cy + jy - span / 2), 0, h - span))
        c0 = int(np.clip(round(cx + jx - span / 2), 0, w - span))
        img, nb, _, _ = self._crop_at(item, int(z), r0, c0, span)
        if f > 1:
            img = img.reshape(s, f, s, f).mean(axis=(1, 3))
            nb = [n.reshape(s, f, s, f).mean(axis=(1, 3)) for n in nb]
        centre = (float(np.clip((cy - r0) / f, radius, s - radius)),
                  float(np.clip((cx - c0) / f, radius, s - radius)))
        hole = blob_mask((s, s), rng, radius=radius, centre=centre)
        return self._finish(img, nb, hole, 0, rng, item)

    def _lesion_sample(self) -> Sample:
        rng = self.rng
        item = self.items[self.lesion_items[int(rng.integers(len(self.lesion_items)))]]
        nz, h, w = item.array.shape
        s = min(self.crop, h, w)
        # lesion_items are the items with lesion slices, hence with a lesion mask
        assert item.lesion is not None
        z = int(rng.choice(item.lesion_slices))
        lab, n = ndi.label(item.lesion[z])
        comp = lab == int(rng.integers(1, n + 1))
        ys, xs = np.nonzero(comp)
        cy, cx = ys.mean() + rng.normal(0, s / 8), xs.mean() + rng.normal(0, s / 8)
        r0 = int(np.clip(round(cy - s / 2), 0, h - s))
        c0 = int(np.clip(round(cx - s / 2), 0, w - s))
        img, nb, les, _ = self._crop_at(item, z, r0, c0, s)
        hole = dilate(les, int(rng.integers(1, 4)))
        if hole.all() or not hole.any():
            hole = random_training_mask((s, s), rng)
            return self._finish(img, nb, hole, 0, rng, item)
        return self._finish(img, nb, hole, 1, rng, item)

    def _finish(self, img, nb, hole, mode, rng, item: TrainImage) -> Sample:
        if rng.uniform() < 0.5:  # left-right flip: anatomy is roughly mirror-symmetric
            img, hole, nb = img[:, ::-1], hole[:, ::-1], [n[:, ::-1] for n in nb]
        if self.intensity_jitter > 0:
            # a monotone gamma on the crop's own range: other exposures and detector curves
            img, nb = self._gamma(img, nb, rng)
        image_scale = None
        if self.config is not None and self.config.norm_scale == "image":
            image_scale = item.half_range  # the gamma above keeps the crop's min and max
        norm = Normalizer.from_context(img, hole, self.percentiles, half_range=image_scale)
        x = np.clip(norm.forward(self._pad(np.ascontiguousarray(img))), -6, 6)
        nbs = [np.clip(norm.forward(self._pad(np.ascontiguousarray(n))), -6, 6) for n in nb]
        hole_p = self._pad(np.ascontiguousarray(hole))
        nb_arr = np.stack(nbs) if nbs else np.zeros((0,) + x.shape, np.float32)
        coarse = None
        # a fraction of small holes keeps the push-pull prior, as inference uses it for big ones
        if self.config is not None and rng.uniform() >= self.pushpull_mix:
            coarse = prior_fill(x, hole_p, mode, self.config)
        return Sample(x, hole_p.astype(np.float32), mode, nb_arr, coarse, norm.half_range)

    def _gamma(self, img, nb, rng):
        lo, hi = float(img.min()), float(img.max())
        if not hi > lo:
            return img, nb
        g = float(np.exp(rng.uniform(-1, 1) * self.intensity_jitter))

        def tf(a):
            return (lo + (hi - lo) * np.clip((a - lo) / (hi - lo), 0, 1) ** g).astype(np.float32)

        return tf(img), [tf(n) for n in nb]

    def batch(self, n: int):
        """(image, hole, mode, neighbours, coarse, has_coarse, scale) as arrays with a batch axis.

        ``coarse`` holds zeros where ``has_coarse`` is False (push-pull is used there);
        ``scale`` is each crop's native units per normalised unit.
        """
        samples = [self.sample() for _ in range(n)]
        coarse = np.stack([s.coarse if s.coarse is not None else np.zeros_like(s.image)
                           for s in samples])[:, None]
        return (np.stack([s.image for s in samples])[:, None],
                np.stack([s.hole for s in samples])[:, None],
                np.array([s.mode for s in samples], np.int64),
                np.stack([s.neighbours for s in samples]),
                coarse,
                np.array([s.coarse is not None for s in samples], np.float32),
                np.array([s.scale for s in samples], np.float32))


def mode_index(mode: str) -> int:
    key = str(mode).strip().lower()
    if key not in MODES:
        raise SynthsegError(f"unknown inpainting mode {mode!r}; choose {', '.join(MODES)}")
    return MODES.index(key)
