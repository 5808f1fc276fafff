"""Procedural lung nodules: solid, part-solid and ground-glass, seeded and reproducible.

A nodule is a lobulated body (radius modulated by a few smooth von Mises-Fisher bumps on the
sphere, rescaled so the equivalent-sphere diameter matches the request) with a Gaussian edge
profile (CT point-spread), optional spicules (thin rays that taper to a point) and a smooth
texture. Part-solid nodules are ground glass with a solid core. HU defaults are drawn per seed
from plausible ranges: solid +20..+60 HU, ground glass -600..-300 HU, on lung at -850 HU.

The 3D result (``units='HU'``, LPS (z, y, x)) is for CT insertion; :func:`procedural_cxr_nodule`
projects it with :mod:`.projection` for CXR insertion. All randomness comes from
``np.random.default_rng(seed)`` in a fixed order, so the same arguments and seed give
identical arrays.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import ndimage as ndi
from scipy.special import erfc

from ..errors import SynthsegError
from .item import LesionPatch, _as_spacing
from .projection import MU_WATER_PER_MM, project_ct_lesion

GENERATOR = "napari_synthseg.lesions.procedural/1"
PROCEDURAL_KINDS = ("solid", "part-solid", "ground-glass")
SOLID_HU_RANGE = (20.0, 60.0)
GGO_HU_RANGE = (-600.0, -300.0)
N_LOBES = 12
LOBE_KAPPA_RANGE = (5.0, 15.0)  # bump concentration: broad to tight lobes
MAX_SPICULES = 16
_FIB_N = 2000


def _fibonacci_sphere(n: int) -> np.ndarray:
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    theta = math.pi * (1 + 5 ** 0.5) * i
    return np.stack([np.cos(phi), np.sin(phi) * np.sin(theta), np.sin(phi) * np.cos(theta)], axis=1)


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


class _RadiusField:
    """r(u) = R * (1 + amp * g(u)); g = weighted vMF bumps minus their sphere mean."""

    def __init__(self, radius: float, amp: float, dirs: np.ndarray, weights: np.ndarray, kappa: np.ndarray) -> None:
        self.dirs, self.weights, self.amp, self.kappa = dirs, weights, amp, kappa
        self.mean = (1 - np.exp(-2 * kappa)) / (2 * kappa)
        # rescale so the body's volume equals that of a sphere of the requested radius
        r = self._rel(_fibonacci_sphere(_FIB_N))
        self.radius = radius / float(np.mean(r ** 3)) ** (1 / 3)

    def _rel(self, u: np.ndarray) -> np.ndarray:
        g = (np.exp(self.kappa * (u @ self.dirs.T - 1.0)) - self.mean) @ self.weights
        return 1.0 + self.amp * g

    def __call__(self, u: np.ndarray) -> np.ndarray:
        return self.radius * self._rel(u)

    def max(self) -> float:
        return float(self(_fibonacci_sphere(_FIB_N)).max())


def _occupancy(signed_mm: np.ndarray, sigma_mm: float) -> np.ndarray:
    return (0.5 * erfc(signed_mm / (sigma_mm * math.sqrt(2.0)))).astype(np.float32)


def procedural_nodule(
    diameter_mm: float,
    kind: str = "solid",
    *,
    spacing: float | Sequence[float] = 1.0,
    lobulation: float = 0.0,
    spiculation: float = 0.0,
    seed: int | None = None,
    solid_hu: float | None = None,
    ggo_hu: float | None = None,
    background_hu: float = -850.0,
    core_fraction: float = 0.5,
    edge_mm: float = 0.6,
    texture: float | None = None,
) -> LesionPatch:
    """A 3D procedural nodule in HU.

    Parameters
    ----------
    diameter_mm : float
        Equivalent-sphere diameter of the body (spicules come on top), mm.
    kind : {'solid', 'part-solid', 'ground-glass'}
    spacing : float or (z, y, x) mm
        Voxel size of the output grid.
    lobulation : float in [0, 1]
        Depth of the surface lobes (1: lobes reach about +30 % of the radius).
    spiculation : float in [0, 1]
        Number and length of spicules (1: 16 rays up to about 1.5 radii long).
    seed : int, optional
        Seed for ``np.random.default_rng``; drawn and recorded in the provenance if omitted.
    solid_hu, ggo_hu : float, optional
        Absolute HU of solid tissue / ground glass; drawn from +20..+60 and -600..-300 if omitted.
    background_hu : float
        Lung HU the residual is relative to.
    core_fraction : float
        Part-solid: core diameter as a fraction of the nodule diameter.
    edge_mm : float
        Standard deviation of the Gaussian edge profile, mm.
    texture : float, optional
        Standard deviation of the smooth internal texture in HU (default 15 HU solid, 60 HU
        ground glass).

    Returns
    -------
    LesionPatch
        3D; ``intensity`` = HU minus ``background_hu``; ``absolute`` = HU; exact mask = where the
        modelled tissue fraction is at least 0.5.
    """
    if kind not in PROCEDURAL_KINDS:
        raise SynthsegError(f"unknown procedural nodule kind {kind!r}; use one of {', '.join(PROCEDURAL_KINDS)}")
    for name, val, lo, hi in (("diameter_mm", diameter_mm, 0.5, 200.0), ("lobulation", lobulation, 0.0, 1.0),
                              ("spiculation", spiculation, 0.0, 1.0), ("core_fraction", core_fraction, 0.05, 0.95),
                              ("edge_mm", edge_mm, 0.05, 10.0)):
        if not (isinstance(val, (int, float, np.number)) and math.isfinite(val) and lo <= val <= hi):
            raise SynthsegError(f"{name} must be between {lo} and {hi}, got {val}")
    sp = np.asarray(_as_spacing(spacing, 3), float)
    if seed is None:
        entropy = np.random.SeedSequence().entropy
        assert isinstance(entropy, int), "a SeedSequence made without entropy draws an int"
        seed = int(entropy % (2 ** 63))
    rng = np.random.default_rng(seed)

    # fixed draw order (never conditional), so one parameter never reshuffles the others
    solid = float(rng.uniform(*SOLID_HU_RANGE)) if solid_hu is None else float(solid_hu)
    ggo = float(rng.uniform(*GGO_HU_RANGE)) if ggo_hu is None else float(ggo_hu)
    lobe_dirs, lobe_w = _unit(rng, N_LOBES), rng.uniform(0.3, 1.0, N_LOBES)
    lobe_k = rng.uniform(*LOBE_KAPPA_RANGE, N_LOBES)
    core_dirs, core_w = _unit(rng, N_LOBES), rng.uniform(0.3, 1.0, N_LOBES)
    core_k = rng.uniform(*LOBE_KAPPA_RANGE, N_LOBES)
    core_shift = rng.uniform(-0.15, 0.15, 3)
    sp_dirs = _unit(rng, MAX_SPICULES)
    sp_len = rng.uniform(0.5, 1.0, MAX_SPICULES)
    sp_width = rng.uniform(0.35, 0.7, MAX_SPICULES)

    radius = diameter_mm / 2.0
    body = _RadiusField(radius, 0.35 * lobulation, lobe_dirs, lobe_w, lobe_k)
    core = _RadiusField(radius * core_fraction, 0.35 * lobulation, core_dirs, core_w, core_k)
    n_spic = int(round(spiculation * MAX_SPICULES))
    spic_len = radius * (0.5 + spiculation) * sp_len[:n_spic]
    spic_w = sp_width[:n_spic] * (1.0 + radius / 15.0)
    reach = body.max() + (float(spic_len.max()) if n_spic else 0.0) + 3 * edge_mm + 2.0
    shape = tuple(int(v) for v in np.ceil(2 * reach / sp))
    half = np.asarray(shape) * sp / 2.0

    axes = [(np.arange(n) + 0.5) * s - h for n, s, h in zip(shape, sp, half)]
    z, y, x = np.meshgrid(*axes, indexing="ij", sparse=True)
    dist = np.sqrt(z * z + y * y + x * x)
    pts = np.stack(np.broadcast_arrays(z, y, x), axis=-1).reshape(-1, 3)
    u = pts / np.maximum(dist.reshape(-1, 1), 1e-6)
    d_body = (dist.reshape(-1) - body(u)).reshape(shape)

    ggo_sigma = edge_mm * 1.5  # ground glass fades more gently than solid tissue
    if kind == "solid":
        occ_body = _occupancy(d_body, edge_mm)
        contrast = solid - background_hu
        tex_amp = 15.0 if texture is None else texture
        resid = occ_body * contrast
        occ_core = None
    else:
        occ_body = _occupancy(d_body, ggo_sigma)
        tex_amp = 60.0 if texture is None else texture
        resid = occ_body * (ggo - background_hu)
        occ_core = None
        if kind == "part-solid":
            c = core_shift * radius * (1 - core_fraction)
            pc = pts - c
            dc = np.linalg.norm(pc, axis=1)
            occ_core = _occupancy((dc - core(pc / np.maximum(dc[:, None], 1e-6))).reshape(shape), edge_mm)
            resid = resid + occ_core * (solid - ggo)

    # spicules: thin rays that taper from the surface to a point, computed in their own box
    occ_spic = np.zeros(shape, np.float32)
    for v, length, w0 in zip(sp_dirs[:n_spic], spic_len, spic_w):
        p0 = v * float(body(v[None])[0]) * 0.85
        p1 = p0 + v * (length + 0.15 * radius)
        pad = w0 + 3 * edge_mm
        lo = np.floor((np.minimum(p0, p1) - pad + half) / sp).astype(int).clip(0, np.asarray(shape))
        hi = np.ceil((np.maximum(p0, p1) + pad + half) / sp).astype(int).clip(0, np.asarray(shape))
        if np.any(hi <= lo):
            continue
        sub = np.meshgrid(*[axes[i][lo[i]:hi[i]] for i in range(3)], indexing="ij")
        q = np.stack(sub, axis=-1) - p0
        seg = p1 - p0
        t = np.clip(q @ seg / float(seg @ seg), 0.0, 1.0)
        perp = np.linalg.norm(q - t[..., None] * seg, axis=-1)
        width = w0 * (1.0 - t) + 0.05
        occ = _occupancy(perp - width, edge_mm * 0.7)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        np.maximum(occ_spic[box], occ, out=occ_spic[box])
    # spicules are strands of the nodule's own tissue: solid ones for solid nodules, hazy ones
    # for (part-)ground-glass nodules
    spic_contrast = (solid if kind == "solid" else ggo) - background_hu
    resid = np.maximum(resid, occ_spic * spic_contrast) if n_spic else resid

    noise = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma=1.5 / sp)
    noise /= max(float(noise.std()), 1e-6)
    occ_all = np.maximum(occ_body, occ_spic)
    if occ_core is not None:
        np.maximum(occ_all, occ_core, out=occ_all)
    resid = resid + occ_all * np.float32(tex_amp) * noise
    resid[np.abs(resid) < 0.5] = 0.0  # exact zeros outside keep crops and projections small

    mask = occ_body >= 0.5
    if occ_core is not None:
        mask |= occ_core >= 0.5
    mask |= occ_spic >= 0.5
    if not mask.any():
        raise SynthsegError(f"a {diameter_mm} mm nodule is smaller than one voxel of {tuple(sp)} mm; use a finer spacing")
    resid = resid.astype(np.float32)
    provenance = {
        "source": "procedural",
        "generator": GENERATOR,
        "seed": int(seed),
        "diameter_mm": float(diameter_mm),
        "parameters": {
            "kind": kind, "lobulation": float(lobulation), "spiculation": float(spiculation),
            "solid_hu": solid, "ggo_hu": ggo, "background_hu": float(background_hu),
            "core_fraction": float(core_fraction), "edge_mm": float(edge_mm), "texture": float(tex_amp),
            "spacing": sp.tolist(), "n_spicules": n_spic,
        },
        "background_hu": float(background_hu),
    }
    return LesionPatch(intensity=resid, mask=mask, spacing=tuple(sp), kind=kind, provenance=provenance,
                       absolute=resid + np.float32(background_hu), units="HU")


def procedural_cxr_nodule(
    diameter_mm: float,
    kind: str = "solid",
    target_spacing: float | Sequence[float] = 0.4,
    *,
    mu_water: float = MU_WATER_PER_MM,
    **kwargs,
) -> LesionPatch:
    """A procedural nodule projected for a CXR with ``target_spacing`` mm pixels.

    Takes :func:`procedural_nodule`'s keyword arguments (the 3D model is built at 1 mm voxels
    unless ``spacing`` is given, finer for small nodules) and returns a 2D ``'attenuation'``
    lesion from :func:`.projection.project_ct_lesion`.
    """
    if "spacing" not in kwargs:
        kwargs["spacing"] = min(1.0, max(0.25, diameter_mm / 12.0))
    vol = procedural_nodule(diameter_mm, kind, **kwargs)
    return project_ct_lesion(vol, target_spacing, mu_water=mu_water)
