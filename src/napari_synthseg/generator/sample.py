"""Sampling: fill a region of a CT cube in its own context, and make placeable lesions from it.

:class:`LesionGenerator` wraps a trained file: it integrates the rectified flow with MONAI's
``RFlowScheduler`` while holding everything outside the generation region on the real context
(noised to the current level at each step, then pasted back exactly at the end), so only the
region is generated and the surroundings are the target's own voxels.

:func:`generate_lesion` is what ``place --lesion generated:CLASS`` and the batch path call: it
cuts the target CT around the site on the nodule's grid, samples a new mask from the shape model,
generates, and returns a 3D :class:`~napari_synthseg.lesions.LesionPatch` (``absolute`` = the
generated cube in HU, ``intensity`` = generated minus the target's own voxels, exact mask) and the
``source`` dict a lesion record keeps (model hash, seed, class, mean HU, mask key), so the same
call reproduces the same lesion. A radiograph has no 3D context: the nodule is generated in a
neutral lung cube carried by the model file (:mod:`.contexts`); ``place_lesion`` then projects
the 3D patch with the existing CT-to-CXR path.
"""

from __future__ import annotations

import math
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from monai.networks.schedulers import RFlowScheduler
from scipy import ndimage as ndi

from ..errors import SynthsegError
from ..io import MedicalImage
from ..lesions.item import LesionPatch
from ..models import LoadedModel, load_extra_tensors, load_model, select_device
from ..utils.progress import CancelToken, ProgressCallback, report
from .classes import class_index
from .data import resample_cube
from .histograms import HistogramTable, match_histogram
from .network import ARCHITECTURE, LesionGeneratorConfig, generation_region
from .shapes import ShapeModel

WEIGHTS_DIR = Path(__file__).with_name("weights")
#: name -> file in the package's weights folder (model card: docs/model_cards/)
BUILTIN_MODELS = {"lesion_generator_small": "lesion_generator_small.safetensors"}
DEFAULT_BUILTIN = "lesion_generator_small"
SOURCE_TYPE = "generated"
#: Lung nodules are <= 30 mm by definition and the LIDC training set reaches 46 mm: larger
#: requests (masses) lie outside anything the model has seen and are refused.
MAX_DIAMETER_MM = 50.0
#: Train-side nodules of the class nearest in diameter a default mean HU is drawn from.
MEAN_HU_POOL = 8
#: Revision of what ``generate_lesion`` draws from a seed (kept in every record, so a cache or a
#: reader can tell two samplings of the same model and seed apart): 1 = mean HU from the class
#: statistics; 2 = mean HU from the train-side nodules of the class and size, the flow's noise
#: on a seed stream of its own, a border roughness drawn per mask (``shapes.ROUGHNESS_LOG_SD``),
#: no denoising Gaussian before histogram control.
SAMPLER_REVISION = 2


def resolve_model_path(model: Union[str, Path, None] = "builtin") -> Path:
    """A generator file from a path, ``builtin`` or ``builtin:NAME``."""
    text = str(model if model is not None else "builtin").strip()
    if text == "builtin" or text.startswith("builtin:"):
        key = text.split(":", 1)[1] if ":" in text else DEFAULT_BUILTIN
        if key not in BUILTIN_MODELS:
            raise SynthsegError(f"unknown built-in generator {key!r}; choose {', '.join(BUILTIN_MODELS)}")
        path = WEIGHTS_DIR / BUILTIN_MODELS[key]
        if not path.is_file():
            raise SynthsegError(f"the built-in generator file {path.name} is missing from this install")
        return path
    path = Path(text)
    if not path.is_file():
        raise SynthsegError(f"generator model not found: {path}")
    return path


class LesionGenerator:
    """A loaded lesion generator.

    Parameters
    ----------
    model : path, ``builtin``, ``builtin:NAME`` or LoadedModel
    device : str, optional
        ``auto`` (default), ``cpu``, ``cuda``...
    threads : int, optional
        CPU threads during sampling (restored afterwards); default 1. Measured on the 2-core
        benchmark machine under load: a 16^3 forward pass takes 0.025 s with 1 thread and
        0.9-1.4 s with 2 (the threads spin against each other and against other jobs).
    """

    def __init__(self, model: Union[str, Path, LoadedModel] = "builtin", device: Optional[str] = None,
                 threads: Optional[int] = 1) -> None:
        if isinstance(model, LoadedModel):
            loaded, extras = model, {}
            self.path = None
        else:
            self.path = resolve_model_path(model)
            loaded = load_model(self.path, expected=ARCHITECTURE, device=None)
            extras = load_extra_tensors(self.path)
        if loaded.architecture != ARCHITECTURE:
            raise SynthsegError(f"a {loaded.architecture!r} model is not a lesion generator")
        self.loaded = loaded
        self.config: LesionGeneratorConfig = loaded.config
        self.sha256 = loaded.sha256
        self.device = select_device(device)
        self.net = loaded.module.float().eval().to(self.device)
        self.threads = threads
        self._shape_model = ShapeModel.from_tensors(extras) if any(k.startswith("shape/") for k in extras) else None
        ctx = extras.get("contexts")
        self.contexts = ctx.numpy().astype(np.float32) if ctx is not None and len(ctx) else None
        #: in-mask HU quantiles of the train-side nodules (histogram control); None in older files
        self.histograms = HistogramTable.from_tensors(extras)
        self._lock = threading.Lock()

    @property
    def shape_model(self) -> ShapeModel:
        if self._shape_model is None:
            raise SynthsegError("this generator file carries no mask shape model; give a mask or retrain")
        return self._shape_model

    def default_mean_hu(self, nodule_class: str, rng: np.random.Generator,
                        diameter_mm: Optional[float] = None) -> float:
        """A mean HU for a nodule of this class (and size) when the user gives none.

        With a histogram table and a diameter: the mean HU of one of the
        :data:`MEAN_HU_POOL` train-side nodules of the class closest in diameter, measured as the
        calibration and histogram control measure it (inside the mask on the generation grid).
        Without: a normal draw from the class's mean and spread of the training nodules' mean
        HU (the network's conditioning statistics).

        Why the table: the class statistics are measured at the nodules' native resolution,
        where a thin-slice mask holds less partial-volume rim, and they ignore size. On the
        generation grid the train-side solid nodules' mean is about 70 HU lower (-200 vs -130),
        and small nodules are darker than large ones; the generated nodules came out 0.4
        standard deviations denser than held-out real ones (docs/benchmarks.md, "Lesion
        generator", fourth pass).
        """
        index = class_index(nodule_class)
        table = self.histograms
        if diameter_mm is not None and index > 0 and table is not None and len(table):
            nearest = table.nearest(index, diameter_mm, MEAN_HU_POOL)
            if nearest.size:
                return float(table.means_hu[nearest[int(rng.integers(len(nearest)))]])
        mean, std = self.config.class_mean_hu[index]
        return float(mean + std * rng.standard_normal())

    def histogram_target(self, nodule_class: str, diameter_mm: float, mean_hu: float, seed: int) -> Optional[np.ndarray]:
        """The HU quantiles a nodule sample is mapped onto (None: healthy fill, or no table)."""
        index = class_index(nodule_class)
        if index == 0 or self.histograms is None or len(self.histograms) == 0:
            return None
        row = self.histograms.donor(index, diameter_mm, mean_hu, seed)
        return None if row is None else self.histograms.target(row, mean_hu)

    # ------------------------------------------------------------------ sampling
    @torch.inference_mode()
    def fill(self, contexts: Sequence[np.ndarray], masks: Sequence[np.ndarray], classes: Sequence[str],
             mean_hus: Sequence[float], seeds: Sequence[int], steps: Optional[int] = None,
             progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None,
             match_noise: Optional[bool] = None, calibrate_mean: Optional[bool] = None,
             match_histogram: Optional[bool] = None, diameters_mm: Optional[Sequence[float]] = None) -> list:
        """Generate inside each mask (grown by ``edge_voxels``) of cubes in HU; context kept.

        Returns a list of float32 HU cubes equal to the input outside the generation region.
        Each row's noise comes from its own seed, so a sample does not depend on what else is in
        the batch.

        Two corrections of the small model's known biases follow the flow (docs/generator.md,
        "Sampling"; measured in docs/benchmarks.md, "Lesion generator"):

        ``calibrate_mean`` (default: on for nodules, off for ``empty``)
            :func:`calibrate_to_mean_hu`: the generated contrast against the context is scaled
            so the mean inside the mask is the requested mean HU (the model alone reaches
            about 0.8 x the requested contrast).
        ``match_histogram`` (default: on for nodules when the file carries the table)
            Histogram control (:mod:`.histograms`): the values inside the mask are mapped rank
            for rank onto a real train-side nodule's HU quantiles (same class, near in diameter
            and mean HU; the seed picks it among five), shifted to the requested mean.
            ``diameters_mm`` (default: the mask's equivalent diameter at the finest grid)
            steers the choice.
        ``match_noise`` (default: on)
            Healthy fill: :func:`match_context_noise` (the target scan's noise, measured on the
            lung around the region). Nodules without histogram control: a Gaussian of
            :data:`NODULE_DENOISE_SIGMA` voxels over the generated voxels (real nodule
            interiors are noisier than the lung around them, so matching the ring would flatten
            them; the width was chosen on train-side nodules). With histogram control nodules
            are not smoothed (measured better on the train side).
        """
        cfg = self.config
        n = len(contexts)
        if not (len(masks) == len(classes) == len(mean_hus) == len(seeds) == n) or n == 0:
            raise SynthsegError("give one mask, class, mean HU and seed per context cube")
        steps = int(steps or cfg.inference_steps)
        if not 1 <= steps <= cfg.num_train_timesteps:
            raise SynthsegError(f"the number of flow steps must lie in 1..{cfg.num_train_timesteps}, got {steps}")
        shape = np.asarray(contexts[0]).shape
        for cube_in, mask_in in zip(contexts, masks):
            if np.asarray(cube_in).shape != shape or np.asarray(mask_in).shape != shape or len(shape) != 3:
                raise SynthsegError("context cubes and masks must be 3D and all of one shape")
            if not np.asarray(mask_in).any():
                raise SynthsegError("a generation mask is empty")
        # torch's CPU 3D convolution takes a ~2x slower path for a batch of one (its oneDNN
        # heuristic wants batch > 1 for 3x3x3 kernels on small inputs): pad with a copy of row 0
        pad = 1 if n == 1 and self.device.type == "cpu" else 0
        dev = self.device
        ctx_hu = np.stack([np.asarray(c, np.float32) for c in contexts] + [np.asarray(contexts[0], np.float32)] * pad)
        mask_np = np.stack([np.asarray(mk, bool) for mk in masks] + [np.asarray(masks[0], bool)] * pad)
        x_ctx = torch.from_numpy(cfg.normalise(ctx_hu))[:, None].to(dev)
        m = torch.from_numpy(mask_np.astype(np.float32))[:, None].to(dev)
        e = int(cfg.edge_voxels)
        region = torch.nn.functional.max_pool3d(m, 2 * e + 1, stride=1, padding=e) if e > 0 else m
        channels = [x_ctx * (1 - region), region]
        if cfg.mean_hu_channel:
            levels = torch.tensor([cfg.normalise(float(v)) for v in list(mean_hus) + [mean_hus[0]] * pad],
                                  dtype=torch.float32, device=dev).view(-1, 1, 1, 1, 1)
            channels.append(m * levels)
        condition = torch.cat(channels, dim=1)
        labels = torch.tensor([class_index(c) for c in list(classes) + [classes[0]] * pad], device=dev)
        noise = torch.stack([torch.randn((1,) + shape, generator=torch.Generator().manual_seed(int(s)))
                             for s in list(seeds) + [seeds[0]] * pad]).to(dev)
        scheduler = RFlowScheduler(num_train_timesteps=cfg.num_train_timesteps, use_discrete_timesteps=False,
                                   sample_method="logit-normal")
        scheduler.set_timesteps(steps, device=dev)
        times = scheduler.timesteps.float()
        nexts = torch.cat([times[1:], torch.zeros(1, device=dev)])
        x = noise.clone()
        before = torch.get_num_threads()
        with self._lock:
            if self.threads and dev.type == "cpu":
                torch.set_num_threads(int(self.threads))
            try:
                for i, (t, t_next) in enumerate(zip(times, nexts)):
                    if cancel is not None and cancel.cancelled:
                        cancel.raise_if_cancelled()
                    level = float(t) / cfg.num_train_timesteps
                    # outside the region the sample is the real context at the current noise level
                    x = region * x + (1 - region) * ((1 - level) * x_ctx + level * noise)
                    velocity = self.net(x, t.expand(x.shape[0]), condition, labels)
                    # continuous timesteps (use_discrete_timesteps=False): MONAI's int hint is too narrow
                    x, _ = scheduler.step(velocity.float(), float(t), x, float(t_next))  # type: ignore[arg-type]
                    report(progress, i + 1, steps, "generating")
            finally:
                if torch.get_num_threads() != before:
                    torch.set_num_threads(before)
        out = cfg.denormalise(x[:n, 0].float().cpu().numpy())
        reg = region[:n, 0].cpu().numpy() > 0.5
        results = []
        for k in range(n):
            cube = np.array(ctx_hu[k], np.float32, copy=True)
            cube[reg[k]] = np.clip(out[k][reg[k]], cfg.hu_min, cfg.hu_max)
            diameter = (float(diameters_mm[k]) if diameters_mm is not None
                        else (6.0 * mask_np[k].sum() / math.pi) ** (1 / 3) * cfg.spacing_mm)
            target = (self.histogram_target(classes[k], diameter, float(mean_hus[k]), int(seeds[k]))
                      if match_histogram is not False else None)
            cube = correct_sample(cube, ctx_hu[k], mask_np[k], reg[k], classes[k], float(mean_hus[k]),
                                  match_noise=match_noise, calibrate_mean=calibrate_mean, histogram=target)
            cube[reg[k]] = np.clip(cube[reg[k]], cfg.hu_min, cfg.hu_max)
            results.append(cube)
        return results


#: Width (voxels) of the Gaussian over a generated nodule's voxels (``fill(match_noise=...)``):
#: chosen on 40 train-side nodules among 0.5, 0.7, 1.0 and a 0.6 x high-pass (feature-forest AUC
#: 0.85 -> 0.72 after mean calibration), then measured on the held-out benchmark.
NODULE_DENOISE_SIGMA = 0.5
#: Bounds of the contrast factor :func:`calibrate_to_mean_hu` applies.
MEAN_CALIBRATION_BOUNDS = (0.5, 2.0)


def calibrate_to_mean_hu(cube: np.ndarray, context: np.ndarray, mask: np.ndarray, region: np.ndarray,
                         mean_hu: float) -> np.ndarray:
    """Scale the generated contrast so the mean HU inside ``mask`` is ``mean_hu``.

    Inside ``region`` the result is ``context + k (cube - context)`` with ``k`` chosen so that
    the mask's mean is the requested one, bounded by :data:`MEAN_CALIBRATION_BOUNDS`. Scaling the
    difference (rather than adding a constant) keeps the shape of the generated density: its
    partial-volume rim stays between lesion and lung, and where the model drew nothing nothing is
    added. A request on the other side of the context's level (a "nodule" darker than the lung
    around it), or a sample that barely differs from its context, is returned unchanged.
    Measured on held-out nodules, the small model reaches ``0.82 x requested - 99`` HU without it.
    """
    mask = np.asarray(mask, bool)
    region = np.asarray(region, bool)
    out = np.array(cube, np.float32, copy=True)
    if not mask.any():
        return out
    diff = out - np.asarray(context, np.float32)
    have = float(diff[mask].mean())
    want = float(mean_hu) - float(np.asarray(context, np.float32)[mask].mean())
    if abs(have) < 1.0 or have * want <= 0:
        return out
    k = float(np.clip(want / have, *MEAN_CALIBRATION_BOUNDS))
    out[region] = (np.asarray(context, np.float32) + np.float32(k) * diff)[region]
    return out


def correct_sample(cube: np.ndarray, context: np.ndarray, mask: np.ndarray, region: np.ndarray, nodule_class: str,
                   mean_hu: float, *, match_noise: Optional[bool] = None,
                   calibrate_mean: Optional[bool] = None, histogram: Optional[np.ndarray] = None) -> np.ndarray:
    """The corrections :meth:`LesionGenerator.fill` applies to a raw flow sample (see there).

    ``histogram``: target HU quantiles (:meth:`LesionGenerator.histogram_target`) the values
    inside ``mask`` are mapped onto last (nodules only), after the mean calibration. Without
    one (a file without the table, or ``match_histogram=False``) a nodule gets the denoising
    Gaussian instead.
    """
    healthy = class_index(nodule_class) == 0
    out = np.array(cube, np.float32, copy=True)
    if (not healthy) if calibrate_mean is None else bool(calibrate_mean):
        out = calibrate_to_mean_hu(out, context, mask, region, mean_hu)
    if True if match_noise is None else bool(match_noise):
        if healthy:
            out = match_context_noise(out, region)
        elif histogram is None:
            # with histogram control the Gaussian only costs realism: on 240 and 120
            # train-side nodules (two model versions) calibrate + histogram beat calibrate +
            # 0.5-voxel Gaussian + histogram (forest AUC 0.550 vs 0.583, 0.665 vs 0.707;
            # benchmarks/tune_generator_corrections.py, docs/benchmarks.md, fourth pass)
            region = np.asarray(region, bool)
            out[region] = ndi.gaussian_filter(out, NODULE_DENOISE_SIGMA)[region]
    if histogram is not None and not healthy:
        # last, so the mask's values are exactly a real nodule's distribution; the order was
        # chosen on train-side nodules (benchmarks/tune_generator_corrections.py)
        out = match_histogram(out, mask, histogram)
    return out


#: Gaussian smoothing widths (voxels) :func:`match_context_noise` chooses from.
NOISE_MATCH_SIGMAS = (0.0, 0.3, 0.5, 0.7, 0.9, 1.1, 1.4)


def match_context_noise(cube: np.ndarray, region: np.ndarray, ring_voxels: int = 4) -> np.ndarray:
    """Bring the fine-grain noise of ``cube`` inside ``region`` down to the context's.

    A small, undertrained flow model leaves its samples with about twice the high-frequency
    content of real CT (measured on held-out lung: Laplacian 150 vs 90 HU, the healthy fill's
    main give-away). The target scan's own noise level is measured with the estimator that
    placement uses for noise matching (:func:`napari_synthseg.render.noise.lesion_noise`: robust
    sigma of the in-plane high-pass) on a ``ring_voxels`` ring of context around the region;
    the generated voxels are then smoothed with the Gaussian width (from
    :data:`NOISE_MATCH_SIGMAS`) whose region noise comes closest to it. A sharp-kernel scan
    keeps a noisy fill, a soft-kernel scan gets a smoother one. The smoothing also reads the
    context just outside the region, which softens the seam. Outside ``region`` nothing changes.
    Only ever smooths: a region quieter than its context is returned as it is (placement adds
    missing noise for nodules, :mod:`napari_synthseg.render.noise`).
    """
    from ..render.noise import lesion_noise

    region = np.asarray(region, bool)
    cube = np.asarray(cube, np.float32)
    ring = (ndi.distance_transform_edt(~region) <= ring_voxels) & ~region
    if not region.any() or not ring.any():
        return cube
    want = lesion_noise(cube, ring)
    have = lesion_noise(cube, region)
    if not (want > 0 and have > want):
        return cube
    best, best_err = cube, abs(have - want)
    for sigma in NOISE_MATCH_SIGMAS[1:]:
        candidate = cube.copy()
        candidate[region] = ndi.gaussian_filter(cube, sigma)[region]
        err = abs(lesion_noise(candidate, region) - want)
        if err < best_err:
            best, best_err = candidate, err
    return best


@lru_cache(maxsize=4)
def _cached(path: str, sha_key: float) -> LesionGenerator:
    return LesionGenerator(path)


def get_generator(model: Union[str, Path, LesionGenerator, None] = "builtin") -> LesionGenerator:
    """A loaded generator, cached per file (and its modification time)."""
    if isinstance(model, LesionGenerator):
        return model
    path = resolve_model_path(model)
    return _cached(str(path.resolve()), path.stat().st_mtime)


def context_cube(image: MedicalImage, center_mm: Sequence[float], patch: int,
                 grid_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """``patch``-voxel cube of a CT at ``grid_mm`` around a physical point (image axes, HU).

    Returns the cube and the requested point's continuous index in it. Along an axis whose voxels
    already are ``grid_mm`` the cube is snapped onto the image's voxels, so the context is the
    image's own values rather than a half-voxel interpolation of them.
    """
    if image.ndim != 3:
        raise SynthsegError("a 3D context needs a CT volume")
    center_index = np.asarray(image.physical_to_index(center_mm)[::-1], float)
    if np.any(center_index < -0.5) or np.any(center_index > np.asarray(image.shape) - 0.5):
        raise SynthsegError("the lesion centre lies outside the image")
    step = grid_mm / np.asarray(image.scale, float)
    half = (patch - 1) / 2.0
    cube_center = center_index.copy()
    for a in range(3):
        if abs(step[a] - 1.0) < 1e-6:
            cube_center[a] = np.round(center_index[a] - half) + half
    cube = resample_cube(np.asarray(image.array, np.float32), image.scale, cube_center, patch, grid_mm)
    return cube, (center_index - cube_center) / step + half


def _centre_mask_on(mask: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Shift ``mask`` by whole voxels so its box centre is within half a voxel of ``where``.

    The renderer places a patch by its mask's box centre: this makes the generated voxels land
    exactly on the context they were generated in.
    """
    box = ndi.find_objects(mask.astype(np.uint8))[0]
    centre = np.array([(b.start + b.stop - 1) / 2.0 for b in box])
    shift = np.round(np.asarray(where) - centre).astype(int)
    lo = np.array([b.start for b in box]) + shift
    hi = np.array([b.stop for b in box]) + shift
    if np.any(lo < 1) or np.any(hi > np.asarray(mask.shape) - 1):
        raise SynthsegError("the lesion does not fit the generator's cube at this position")
    out = np.zeros_like(mask)
    out[tuple(slice(a, b) for a, b in zip(lo, hi))] = mask[box]
    return out


def _ring_median(cube: np.ndarray, region: np.ndarray, grid_mm: float) -> float:
    dist = ndi.distance_transform_edt(~region) * grid_mm
    ring = (dist > 1.0) & (dist <= 4.0)
    return float(np.median(cube[ring])) if ring.any() else float(np.median(cube))


def generate_lesion(
    image: Optional[MedicalImage],
    center_mm: Optional[Sequence[float]],
    diameter_mm: float,
    nodule_class: str = "solid",
    *,
    seed: int = 0,
    model: Union[str, Path, LesionGenerator, None] = "builtin",
    mean_hu: Optional[float] = None,
    steps: Optional[int] = None,
    mask: Optional[np.ndarray] = None,
    margin_mm: float = 3.0,
) -> tuple[LesionPatch, dict[str, Any]]:
    """A generated 3D nodule (or healthy fill, class ``empty``) in the target's own context.

    Parameters
    ----------
    image : MedicalImage or None
        The target. A CT (3D) gives the context around ``center_mm``; a radiograph (2D) or
        None uses the model's neutral lung context (the caller projects the 3D result).
    center_mm : (x, y, z) LPS mm
        Site of the lesion in a CT (ignored for a radiograph).
    diameter_mm : float
        Equivalent-sphere diameter of the new mask.
    nodule_class : {'solid', 'part-solid', 'ground-glass', 'empty'}
    seed : int
        Seeds the mask, the mean HU draw, the neutral context choice and the flow noise.
    mean_hu : float, optional
        Mean HU inside the mask (default: drawn from the class's training distribution; for
        ``empty``, the median of the lung ring around the site).
    mask : ndarray of bool (patch, patch, patch), optional
        Use this mask (on the nodule's grid) instead of sampling one.
    margin_mm : float
        The returned patch is cropped to the mask's box plus this margin.

    Returns
    -------
    (LesionPatch, dict)
        A 3D ``units='HU'`` patch on the generation grid, and the record's ``source`` dict.
    """
    gen = get_generator(model)
    cfg = gen.config
    name = cfg.class_names[class_index(nodule_class)]
    if not (np.isfinite(diameter_mm) and diameter_mm > 0):
        raise SynthsegError(f"the nodule diameter must be a positive number of mm, got {diameter_mm}")
    p = int(cfg.patch)
    grid = cfg.grid_spacing(diameter_mm)
    if diameter_mm > MAX_DIAMETER_MM:
        raise SynthsegError(f"a {diameter_mm:g} mm lesion is larger than the generator was trained for "
                            f"(nodules up to {MAX_DIAMETER_MM:g} mm); use a library or procedural lesion")
    rng = np.random.default_rng(seed)
    if mask is None:
        mask = gen.shape_model.sample_mask(diameter_mm, name if name != "empty" else "solid", grid, rng,
                                           shape=(p, p, p))
    mask = np.asarray(mask, bool)
    if mask.shape != (p, p, p):
        raise SynthsegError(f"the mask must be a {p}^3 cube on the nodule's grid, got {mask.shape}")
    if image is not None and image.ndim == 3:
        if image.modality not in ("CT", "unknown"):
            raise SynthsegError(f"the lesion generator makes CT nodules; a {image.modality} volume is not CT")
        if center_mm is None:
            raise SynthsegError("give the lesion centre in mm")
        context, where = context_cube(image, center_mm, p, grid)
        mask = _centre_mask_on(mask, where)
        context_id: Any = "target"
    else:
        if gen.contexts is None:
            raise SynthsegError("this generator file carries no neutral lung context for radiographs")
        k = int(rng.integers(len(gen.contexts)))
        context = gen.contexts[k]
        if abs(grid - cfg.spacing_mm) > 1e-6:
            zoom = cfg.spacing_mm / grid  # the neutral cubes are at the finest grid: cover the bigger box
            context = _stretch(context, zoom)
        context_id = k
    region = generation_region(mask, cfg.edge_voxels)
    if mean_hu is None:
        mean_hu = (_ring_median(context, region, grid) if name == "empty"
                   else gen.default_mean_hu(name, np.random.default_rng([int(seed), 1]), diameter_mm))
    # the flow's noise has its own stream: a re-generation that passes the record's mean HU
    # (no draw) gets the same noise as the first render
    noise_seed = int(np.random.default_rng([int(seed), 2]).integers(2 ** 31))
    (cube,) = gen.fill([context], [mask], [name], [float(mean_hu)], [noise_seed], steps=steps,
                       diameters_mm=[float(diameter_mm)])
    intensity = np.where(region, cube - context, 0.0).astype(np.float32)
    from ..scene.assets import array_key  # content key the scene's asset store gives this mask

    source = {"type": SOURCE_TYPE, "model": str(model) if not isinstance(model, LesionGenerator) else "loaded",
              "model_sha256": gen.sha256, "sampler_revision": SAMPLER_REVISION, "seed": int(seed), "class": name,
              "mean_hu": round(float(mean_hu), 2),
              "diameter_mm": float(diameter_mm), "steps": int(steps or cfg.inference_steps),
              "grid_mm": float(grid), "context": context_id,
              # what fill() did after the flow (docs/generator.md, "Corrections after the flow")
              "corrections": ["match_noise"] if name == "empty" else (
                  ["calibrate_mean"]
                  + (["histogram"] if gen.histogram_target(name, diameter_mm, float(mean_hu), noise_seed) is not None
                     else ["denoise_0.5vox"]))}
    patch = LesionPatch(intensity=intensity, mask=mask, spacing=(grid,) * 3,
                        kind=name if name != "empty" else "removal", absolute=cube, units="HU",
                        provenance={"source": SOURCE_TYPE, **{k: v for k, v in source.items() if k != "type"}})
    patch = patch.crop_to_mask(margin_mm)
    source["mask_asset"] = array_key(patch.mask)
    return patch, source


def _stretch(cube: np.ndarray, zoom: float) -> np.ndarray:
    """Resample a neutral cube to a coarser grid keeping its shape (reflect beyond its edge)."""
    n = cube.shape[0]
    coords = (np.arange(n) - (n - 1) / 2.0) / zoom + (n - 1) / 2.0
    grid = np.meshgrid(coords, coords, coords, indexing="ij")
    return ndi.map_coordinates(cube, grid, order=1, mode="mirror").astype(np.float32)


def regenerate_at_site(scene, record, image: MedicalImage, changes: dict) -> dict:
    """Remake a generated CT lesion at its new centre/size from the same seed (an edit hook).

    Registered with :func:`napari_synthseg.lesions.place.register_site_regenerator`: moving or
    resizing a generated nodule in a CT re-generates it in the context of its new site with the
    record's seed, class, mean HU and model, so the mask shape and noise stay those of the
    original sample. Radiographs (neutral context) and lesions whose model file is no longer
    available keep their pixels and are transformed as any patch.
    """
    import logging

    source = dict(record.source or {})
    if image.ndim != 3:
        return {}
    model = source.get("model", "builtin")
    try:
        gen = get_generator(model)
    except SynthsegError as exc:
        logging.getLogger(__name__).warning("lesion %s keeps its pixels: %s", record.id, exc)
        return {}
    if source.get("model_sha256") and gen.sha256 != source["model_sha256"]:
        logging.getLogger(__name__).warning("lesion %s keeps its pixels: its generator file changed", record.id)
        return {}
    center = tuple(changes.get("center_mm", record.center_mm))
    size = float(changes.get("size_mm", record.size_mm) or source.get("diameter_mm", 10.0))
    patch, new_source = generate_lesion(image, center, size, source.get("class", "solid"),
                                        seed=int(source.get("seed", record.seed)), model=gen,
                                        mean_hu=source.get("mean_hu"), steps=source.get("steps"))
    new_source["model"] = model
    new_source["patch"] = {k: v for k, v in patch.provenance.items() if k != "history"}
    kept = {k: v for k, v in source.items() if k not in new_source}
    assets = dict(record.assets, intensity=scene.assets.put(patch.intensity), mask=scene.assets.put(patch.mask),
                  absolute=scene.assets.put(patch.absolute))
    params = dict(record.params, patch_spacing=list(patch.spacing), units=patch.units)
    return {"assets": assets, "params": params, "source": dict(kept, **new_source, regenerated=True),
            "size_mm": size}


def _register() -> None:
    from ..lesions.place import register_site_regenerator

    register_site_regenerator(SOURCE_TYPE, regenerate_at_site)


_register()
