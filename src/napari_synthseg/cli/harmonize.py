"""``synthseg train-harmonizer`` and ``synthseg harmonize``: one-image SinGAN/ConSinGAN.

``train-harmonizer IMAGE --arch singan|consingan --preset fast|paper [--roi X,Y,W,H] --out M``
trains on a region of a 2D image and saves a safetensors model.

``harmonize SCENE_DIR --lesion ID --model M --scale N --samples K`` renders the scene with the
lesion naively placed, harmonizes it K times and writes the samples (``--out-dir``) for a side
by side look; ``--accept k`` stores sample k in the lesion record (an overlay, with the model
hash, scale and seed), so re-rendering the scene is deterministic.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

from ..errors import SynthsegError
from ..utils.progress import ConsoleProgress
from ._common import add_read_options, parse_floats, read_from_args


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train-harmonizer", help="train a SinGAN/ConSinGAN harmonizer on (a region of) a 2D image"
    )
    p.add_argument("image", help="2D image file (CXR, one MR/CT slice)")
    add_read_options(p)
    p.add_argument("--roi", help="training region X,Y,W,H in pixels (default: the whole image)")
    p.add_argument("--arch", choices=["singan", "consingan"], default="consingan")
    p.add_argument("--preset", choices=["fast", "paper"], default="fast")
    p.add_argument("--iterations", type=int, help="iterations per scale (default: the preset's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--threads", type=int, help="torch CPU threads (1 is often fastest on a busy machine)")
    p.add_argument("--out", required=True, help="model file to write (.safetensors)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run_train)

    h = subparsers.add_parser("harmonize", help="harmonize a placed lesion of a scene with a trained model")
    h.add_argument("scene", help="scene folder")
    h.add_argument("--lesion", required=True, help="lesion id (e.g. L0001)")
    h.add_argument("--model", required=True, help="harmonizer trained on the scene's image")
    h.add_argument("--scale", type=int, required=True, help="injection scale (0 = coarsest)")
    h.add_argument("--samples", type=int, default=4)
    h.add_argument("--seed", type=int, default=0)
    h.add_argument("--margin", type=int, default=8, help="blend margin around the lesion, px")
    h.add_argument("--add-back", choices=["replace", "coarse", "detail", "original"], default=None,
                   help="how the GAN output enters the blend (default: original for radiographs, "
                        "i.e. the GAN's coarse part plus the fine detail of the image without the "
                        "lesion; else coarse for ConSinGAN, replace for SinGAN)")
    h.add_argument("--out-dir", help="write the samples here (sample_<k>.mha) to compare them")
    h.add_argument("--accept", type=int, help="store sample k (0-based) in the lesion record")
    h.add_argument("--threads", type=int)
    h.set_defaults(func=run_harmonize)


#: Harmonized samples are held in memory to compare and pick from (each is a whole 2D image).
MAX_HARMONIZE_SAMPLES = 64


def _threads(n) -> None:
    if n:
        import torch

        torch.set_num_threads(int(n))


def run_train(args) -> int:
    from ..harmonize import preset, train_harmonizer

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise SynthsegError(f"{out} exists; pass --overwrite to replace it")
    if out.suffix != ".safetensors":
        raise SynthsegError("the model file must end in .safetensors")
    image = read_from_args(args.image, args)
    if image.array.ndim != 2:
        raise SynthsegError(
            f"{Path(args.image).name} is {image.array.ndim}D {image.array.shape}; harmonizers are "
            "trained on 2D images (export one slice first)"
        )
    roi = None
    if args.roi:
        x, y, w, h = parse_floats(args.roi, "--roi", (4,))
        if any(v != int(v) for v in (x, y, w, h)):
            raise SynthsegError("--roi takes whole pixels X,Y,W,H")
        roi = (int(y), int(x), int(h), int(w))
    _threads(args.threads)
    config = preset(args.arch, args.preset)
    if args.iterations:
        config = dataclasses.replace(config, niter=int(args.iterations))
    model = train_harmonizer(
        image.array, config=config, roi=roi, seed=args.seed, device=args.device,
        progress=ConsoleProgress(),
        provenance={"source": str(args.image), "preset": args.preset},
    )
    model.save(out)
    r, c, h, w = model.roi
    print(
        f"{out}: {args.arch} ({args.preset}), {model.n_scales} scales "
        f"{model.config.shapes[0][1]}..{model.config.shapes[-1][1]} px, region x {c} y {r} {w}x{h} px, "
        f"{model.provenance['train_seconds']:.0f} s"
    )
    return 0


def _naive_render(scene, record):
    """The scene rendered with ``record`` placed but without its stored harmonization."""
    from ..render import SceneRenderer

    renderer = SceneRenderer(scene, follow=False, without_overlay={record.id})
    return renderer.source, np.array(renderer.image), renderer.lesion_mask(record.id)


def run_harmonize(args) -> int:
    from ..harmonize import Harmonizer, blend_weights, harmonize
    from ..harmonize.apply import default_add_back
    from ..io import write_image
    from ..lesions.place import attach_overlay
    from ..render import render_without
    from ..scene import Scene

    # Validate first, write last: nothing is computed or written for arguments that must fail.
    if not 1 <= args.samples <= MAX_HARMONIZE_SAMPLES:
        raise SynthsegError(
            f"--samples takes 1..{MAX_HARMONIZE_SAMPLES} (all samples are held to choose from), got {args.samples}"
        )
    if args.accept is not None and not 0 <= args.accept < args.samples:
        raise SynthsegError(f"--accept takes 0..{args.samples - 1} (the sample to keep), got {args.accept}")
    if args.out_dir and Path(args.out_dir).exists() and not Path(args.out_dir).is_dir():
        raise SynthsegError(f"--out-dir {args.out_dir} exists and is not a folder")
    _threads(args.threads)
    scene = Scene.open(args.scene)
    if args.lesion not in scene.lesion_ids:
        raise SynthsegError(f"scene has no lesion {args.lesion!r}; it has {', '.join(scene.lesion_ids) or 'none'}")
    record = scene.lesion(args.lesion)
    model = Harmonizer.load(args.model)
    source, naive, mask = _naive_render(scene, record)
    if source.array.ndim != 2:
        raise SynthsegError("harmonization works on 2D scenes")
    if not mask.any():
        raise SynthsegError(f"lesion {args.lesion} has no pixels inside the image")
    add_back = args.add_back or default_add_back(model, source.modality, record.kind)
    original = render_without(scene, args.lesion) if add_back == "original" else None
    samples = harmonize(
        model, naive, mask, args.scale, args.samples, args.seed, args.margin,
        reference_image=source.array, add_back=add_back, original_image=original,
    )
    if args.out_dir:
        out_dir = Path(args.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_image(naive, out_dir / "naive.mha", like=source, overwrite=True)
        for k, sample in enumerate(samples):
            write_image(sample, out_dir / f"sample_{k}.mha", like=source, overwrite=True)
        print(f"wrote naive.mha and {len(samples)} samples to {out_dir}")
    if args.accept is not None:
        k = int(args.accept)
        if not 0 <= k < len(samples):
            raise SynthsegError(f"--accept takes 0..{len(samples) - 1}")
        weight = blend_weights(mask, args.margin)
        rows, cols = np.nonzero(weight > 0)
        box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
        # The sample already holds the margin blend; the overlay replaces its box as shown.
        attach_overlay(
            scene, args.lesion, samples[k][box], np.ones(samples[k][box].shape, np.float32),
            [box[0].start, box[1].start],
            provenance={
                "engine": model.architecture, "model_sha256": model.sha256, "injection_scale": args.scale,
                "seed": args.seed, "sample": k, "blend_margin_px": args.margin,
                "add_back": add_back,
            },
        )
        print(f"lesion {args.lesion}: stored sample {k} ({model.architecture}, scale {args.scale}, seed {args.seed})")
    if not args.out_dir and args.accept is None:
        print("nothing written: pass --out-dir to look at the samples and --accept K to keep one", file=sys.stderr)
    return 0
