"""``synthseg train-inpainter`` and ``synthseg inpaint``: learned fill from the command line."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

from ..errors import SynthsegError
from ..io import WRITE_EXTENSIONS, check_same_grid
from ..io.read import file_extension
from ..utils.progress import ConsoleProgress
from ._common import add_read_options, read_from_args


def register(subparsers) -> None:
    t = subparsers.add_parser(
        "train-inpainter",
        help="train a learned inpainting model from a folder of images (CPU or GPU)",
    )
    t.add_argument("--images", required=True, action="append",
                   help="folder (or file) of training images; repeat for several")
    t.add_argument("--masks", help="folder of lesion masks named like the images "
                                   "(healthy holes avoid them; enables --modes lesion)")
    t.add_argument("--organ-masks", help="folder of organ masks named like the images: "
                                         "training holes stay inside them")
    t.add_argument("--exclude", action="append", default=[],
                   help="image file name or stem to hold out (repeatable)")
    t.add_argument("--val-images", action="append", default=[],
                   help="held-out folder/file scored at the end (metrics in the model file)")
    t.add_argument("--out", required=True, help="output MODEL.safetensors (also the checkpoint)")
    t.add_argument("--steps", type=int, default=2000, help="total optimiser steps (default 2000)")
    t.add_argument("--size", type=int, default=128, help="training crop side in pixels (default 128)")
    t.add_argument("--batch", type=int, default=8, help="crops per step (default 8)")
    t.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    t.add_argument("--adv-weight", type=float, default=0.0,
                   help="PatchGAN hinge loss weight (0 = no discriminator)")
    t.add_argument("--fm-weight", type=float, default=0.0, help="feature-matching loss weight")
    t.add_argument("--adv-start", type=int, default=0, help="step at which adversarial terms start")
    t.add_argument("--grad-weight", type=float, default=0.5, help="gradient L1 weight")
    t.add_argument("--ring-weight", type=float, default=0.1,
                   help="L1 weight on a 4-px ring around the hole (default 0.1)")
    t.add_argument("--hole-loss", default="l1", choices=["l1", "mse", "psnr", "mse-native"],
                   help="loss in the hole: l1 (default), mse, psnr (mean per-crop log MSE), or "
                        "mse-native (pooled MSE in the image's own units, as a PSNR benchmark "
                        "pools errors; used for the shipped CXR model)")
    t.add_argument("--nodule-prob", type=float, default=0.0,
                   help="fraction of healthy samples with a nodule-sized blob hole centred in "
                        "the crop, in aerated lung on 2D CXRs (default 0)")
    t.add_argument("--nodule-radius", type=float, nargs=2, default=(6.0, 25.0),
                   metavar=("MIN", "MAX"),
                   help="radius range of those blobs, px per 1024 px of image height (default 6 25)")
    t.add_argument("--half-scale-prob", type=float, default=0.0,
                   help="fraction of nodule samples from the image averaged 2x2 (default 0)")
    t.add_argument("--intensity-jitter", type=float, default=0.0,
                   help="random gamma exp(U(-j, j)) per crop (default 0 = off)")
    t.add_argument("--lesion-prob", type=float, default=0.5,
                   help="fraction of lesion-fill samples when the model has that mode")
    t.add_argument("--outpaint-prob", type=float, default=0.1,
                   help="fraction of outpaint samples when the model has that mode")
    t.add_argument("--modes", default=None,
                   help="comma list of healthy,lesion,outpaint (default: healthy,outpaint; "
                        "plus lesion when --masks is given)")
    t.add_argument("--channels", type=int, default=16, help="base channels (default 16)")
    t.add_argument("--bottleneck", type=int, default=96, help="FFC bottleneck channels (default 96)")
    t.add_argument("--blocks", type=int, default=3, help="FFC blocks (default 3)")
    t.add_argument("--body", default="ffc", choices=["ffc", "local"],
                   help="network body: ffc (global FFC bottleneck, default) or local (plain and "
                        "dilated convolutions to 1/4 resolution; learns nodule-sized healthy fills)")
    t.add_argument("--nodule-jitter", type=float, default=0.1,
                   help="std of a nodule hole's offset from the crop centre, fraction of the crop "
                        "(default 0.1; 0 = centred, as at inference)")
    t.add_argument("--noise-channels", type=int, default=1,
                   help="Gaussian noise input channels (default 1; 0 makes the network "
                        "deterministic: seeded samples then differ only by --texture grain)")
    t.add_argument("--norm-scale", default="crop", choices=["crop", "image"],
                   help="intensity scale the network sees: each crop's percentile range (crop, "
                        "default) or the whole image's (image: keeps each region's real "
                        "contrast; used for the shipped CXR model)")
    t.add_argument("--pushpull-mix", type=float, default=0.2,
                   help="fraction of small holes trained on the push-pull prior instead of "
                        "biharmonic (inference uses push-pull for large holes; default 0.2)")
    t.add_argument("--context-slices", type=int, default=0,
                   help="neighbouring slices per side as extra channels (volumes)")
    t.add_argument("--prior", default="biharmonic", choices=["biharmonic", "pushpull"],
                   help="smooth first guess the network refines (default biharmonic)")
    t.add_argument("--modality", default="any", help="modality label stored in the model")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--checkpoint-every", type=int, default=500)
    t.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch default)")
    t.add_argument("--device", default=None, help="auto, cpu, cuda, mps")
    t.add_argument("--resume", action="store_true", help="continue training --out up to --steps")
    t.set_defaults(func=run_train)

    p = subparsers.add_parser("inpaint", help="fill a masked region with a learned or classical model")
    p.add_argument("image", help="image file or DICOM series folder")
    p.add_argument("--mask", required=True, help="mask image (nonzero = fill; for outpaint: the lesion)")
    p.add_argument("--model", default="builtin",
                   help="MODEL.safetensors, builtin (default: the shipped CXR model for --mode, "
                        "builtin:cxr_inpainter_small for healthy, builtin:cxr_outpainter_small for "
                        "outpaint), or a classical method: biharmonic, telea")
    p.add_argument("--mode", default="healthy", choices=["healthy", "lesion", "outpaint"])
    p.add_argument("--samples", type=int, default=1, help="number of seeded samples (1..64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first sample")
    p.add_argument("--margin", type=int, default=8,
                   help="outpaint: pixels kept around the lesion's box (default 8)")
    p.add_argument("--out", required=True,
                   help="output file (one sample), a pattern with {i} (e.g. fill_{i}.nii.gz) "
                        "or an existing folder (written as <image>_<mode>_<i>.nii.gz)")
    p.add_argument("--texture", type=float, default=None,
                   help="seeded grain strength for learned fills in [0, 1] (0 = smooth best-PSNR "
                        "fill, 1 = grain like the surroundings; default: 0 for one sample, 1 for "
                        "several so the samples differ)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for the network (default: torch's; 1 is faster on busy machines)")
    p.add_argument("--force", action="store_true", help="replace existing outputs")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, mps")
    p.add_argument("--scene", help="with --accept: the scene folder to store a sample in (IMAGE must be "
                                   "the scene's image or its render)")
    p.add_argument("--accept", type=int, help="store sample k (0-based) in --scene as an undoable record")
    add_read_options(p)
    p.set_defaults(func=run_inpaint)


def _modes(arg, has_masks: bool):
    if arg:
        modes = tuple(m.strip().lower() for m in arg.split(",") if m.strip())
        bad = [m for m in modes if m not in ("healthy", "lesion", "outpaint")]
        if bad or not modes:
            raise SynthsegError(f"--modes takes healthy,lesion,outpaint; got {arg!r}")
        return modes
    return ("healthy", "lesion", "outpaint") if has_masks else ("healthy", "outpaint")


def run_train(args) -> int:
    from ..inpaint import InpainterConfig, TrainConfig, train_inpainter

    for name, val in (("--steps", args.steps), ("--size", args.size), ("--batch", args.batch)):
        if val < 1:
            raise SynthsegError(f"{name} must be at least 1, got {val}")
    if args.noise_channels < 0:
        raise SynthsegError(f"--noise-channels must be 0 or more, got {args.noise_channels}")
    if args.size < 16 or args.size % 8:
        raise SynthsegError(f"--size must be a multiple of 8 and at least 16, got {args.size}")
    mc = InpainterConfig(base_channels=args.channels, bottleneck_channels=args.bottleneck,
                         n_ffc_blocks=args.blocks, context_slices=args.context_slices,
                         modes=_modes(args.modes, bool(args.masks)), modality=args.modality,
                         prior=args.prior, body=args.body, norm_scale=args.norm_scale,
                         noise_channels=args.noise_channels)
    tc = TrainConfig(steps=args.steps, batch=args.batch, crop=args.size, lr=args.lr,
                     adv_weight=args.adv_weight, fm_weight=args.fm_weight,
                     adv_start=args.adv_start, grad_weight=args.grad_weight, seed=args.seed,
                     ring_weight=args.ring_weight, hole_loss=args.hole_loss,
                     nodule_prob=args.nodule_prob, nodule_radius=tuple(args.nodule_radius),
                     half_scale_prob=args.half_scale_prob,
                     intensity_jitter=args.intensity_jitter, pushpull_mix=args.pushpull_mix,
                     nodule_jitter=args.nodule_jitter,
                     lesion_prob=args.lesion_prob, outpaint_prob=args.outpaint_prob,
                     checkpoint_every=args.checkpoint_every, threads=args.threads)
    out = train_inpainter(args.images, args.out, masks_dir=args.masks, organ_dir=args.organ_masks,
                          exclude=args.exclude, model_config=mc, train_config=tc,
                          resume=args.resume, device=args.device, progress=ConsoleProgress(),
                          val_images=args.val_images)
    from ..models import read_model_info

    prov = read_model_info(out)["provenance"]
    print(f"wrote {out}: {prov['steps']} steps, {prov['train_seconds']} s, "
          f"metrics {prov.get('metrics')}")
    return 0


def _outputs(out: str, n: int, stem: str, mode: str) -> list[Path]:
    p = Path(out)
    if p.is_dir():
        outs = [p / f"{stem}_{mode}_{i}.nii.gz" for i in range(n)]
    elif "{" in out or "}" in out:
        try:
            outs = [Path(out.format(i=i)) for i in range(n)]
        except (KeyError, IndexError, ValueError, AttributeError):
            raise SynthsegError(
                f"--out {out!r} is not a valid pattern: use {{i}} for the sample number, e.g. fill_{{i}}.nii.gz"
            ) from None
        if len(set(outs)) != len(outs):
            raise SynthsegError(f"--out {out!r} gives every sample the same name; put {{i}} in it")
    elif n == 1:
        outs = [p]
    else:
        raise SynthsegError("--out must be a folder or contain {i} when --samples is more than 1")
    for o in outs:
        if not o.parent.is_dir():
            raise SynthsegError(f"output folder does not exist: {o.parent}")
        if file_extension(o) not in WRITE_EXTENSIONS:
            raise SynthsegError(f"cannot write {o.name}: use one of {', '.join(WRITE_EXTENSIONS)}")
    return outs


def _as_output(arr: np.ndarray, out: Path, source_dtype: np.dtype) -> np.ndarray:
    if out.suffix == ".png":
        return np.clip(np.rint(arr), 0, 65535).astype(
            source_dtype if source_dtype in (np.uint8, np.uint16) else np.uint16)
    if np.issubdtype(source_dtype, np.integer):
        info = np.iinfo(source_dtype)
        return np.clip(np.rint(arr), info.min, info.max).astype(source_dtype)
    return arr


def run_inpaint(args) -> int:
    from ..io import write_image
    from ..workflow.inpaint import InpaintSettings, fill_mask, inpaint

    settings = InpaintSettings(model=args.model, mode=args.mode, samples=args.samples, seed=args.seed,
                               margin_px=args.margin, texture=args.texture)
    stem = Path(args.image).name.split(".")[0] or "image"
    if (args.scene is None) != (args.accept is None):
        raise SynthsegError("--scene and --accept go together: --accept K stores sample K in --scene")
    if args.accept is not None and not 0 <= args.accept < args.samples:
        raise SynthsegError(f"--accept takes 0..{args.samples - 1} (the samples made by this request)")
    scene = None
    if args.scene is not None:
        from ..scene import open_scene

        scene = open_scene(args.scene)
    # Validate first (outputs, then inputs), write last.
    outs = _outputs(args.out, args.samples, stem, args.mode)
    for o in outs:
        if o.exists() and not args.force:
            raise SynthsegError(f"{o} exists; use --force to replace it")
    image = read_from_args(args.image, args)
    mask_img = read_from_args(args.mask, args)
    check_same_grid(mask_img, image, f"mask {Path(args.mask).name}")
    mask = fill_mask(mask_img.array, image.shape, what=f"mask {Path(args.mask).name}")
    from ._provenance import clip_to_source, model_reference, write_sidecar

    model = model_reference(args.model, args.mode)
    source_dtype = np.asarray(image.array).dtype
    progress = ConsoleProgress()
    # The texture of the whole request (automatic: grain when several samples are asked for),
    # fixed before the samples are made one at a time.
    texture = settings.effective_texture()
    for i, o in enumerate(outs):
        # One sample at a time (sample i is seeded seed + i, as in one call for all): each is
        # written as soon as it exists, so memory holds one sample whatever --samples is.
        one = dataclasses.replace(settings, samples=1, seed=settings.seed + i, texture=texture)
        (sample,) = inpaint(image.array, mask, one, spacing=tuple(reversed(image.spacing)), device=args.device,
                            threads=args.threads)
        sample, clipping = clip_to_source(sample, image.array)
        written = write_image(_as_output(sample, o, source_dtype), o, like=image, overwrite=args.force)
        write_sidecar(written, command="synthseg inpaint", method=f"inpaint:{args.mode}", image=image,
                      mask_path=args.mask, model=model, clipping=clipping,
                      extra={"seed": settings.seed + i, "sample": i, "samples": args.samples,
                             "margin": args.margin, "texture": texture})
        progress(i + 1, len(outs), f"sample {i + 1}/{len(outs)}")
        print(f"wrote {o}", file=sys.stdout)
        if scene is not None and i == args.accept:
            from ..workflow.inpaint import accept_inpainted

            # The stored sample is the one written (clipped to the source's range).
            record = accept_inpainted(scene, sample, mask, settings, i)
            print(f"stored sample {i} in {args.scene} as {record.id} ({record.kind})")
        del sample
    return 0
