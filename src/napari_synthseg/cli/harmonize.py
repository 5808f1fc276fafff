"""``synthseg train-harmonizer`` and ``synthseg harmonize``: one-image SinGAN/ConSinGAN.

``train-harmonizer IMAGE --arch singan|consingan --preset fast|paper [--roi X,Y,W,H] --out M``
trains on a region of a 2D image and saves a safetensors model.

``harmonize SCENE_DIR --lesion ID --model M --scale N --samples K`` renders the scene with the
lesion naively placed, harmonizes it K times and writes the samples (``--out-dir``) for a side
by side look; ``--accept k`` stores sample k in the lesion record (an overlay, with the model
hash, scale and seed), so re-rendering the scene is deterministic.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import SynthsegError
from ..utils.progress import ConsoleProgress
from ..workflow.harmonize import (
    ADD_BACK_CHOICES,
    ARCHITECTURES,
    PRESETS,
    HarmonizeSettings,
    TrainHarmonizerSettings,
)
from ._common import add_read_options, parse_floats, read_from_args

_TRAIN = TrainHarmonizerSettings()
_HARMONIZE = HarmonizeSettings()


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train-harmonizer", help="train a SinGAN/ConSinGAN harmonizer on (a region of) a 2D image"
    )
    p.add_argument("image", help="2D image file (CXR, one MR/CT slice)")
    add_read_options(p)
    p.add_argument("--roi", help="training region X,Y,W,H in pixels (default: the whole image)")
    p.add_argument("--arch", choices=ARCHITECTURES, default=_TRAIN.architecture)
    p.add_argument("--preset", choices=PRESETS, default=_TRAIN.preset)
    p.add_argument("--iterations", type=int, help="iterations per scale (default: the preset's)")
    p.add_argument("--seed", type=int, default=_TRAIN.seed)
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--threads", type=int, help="torch CPU threads (1 is often fastest on a busy machine)")
    p.add_argument("--out", required=True, help="model file to write (.safetensors)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run_train)

    h = subparsers.add_parser("harmonize", help="harmonize a placed lesion of a scene with a trained model")
    h.add_argument("scene", help="scene folder")
    h.add_argument("--lesion", required=True, help="lesion id (e.g. L0001)")
    h.add_argument("--model", required=True, help="harmonizer trained on the scene's image")
    h.add_argument("--scale", type=int, default=None,
                   help="injection scale (0 = coarsest; default: SinGAN two below the finest, ConSinGAN 0)")
    h.add_argument("--samples", type=int, default=_HARMONIZE.samples)
    h.add_argument("--seed", type=int, default=_HARMONIZE.seed)
    h.add_argument("--margin", type=int, default=_HARMONIZE.margin_px, help="blend margin around the lesion, px")
    h.add_argument("--add-back", choices=ADD_BACK_CHOICES, default=_HARMONIZE.add_back,
                   help="how the GAN output enters the blend (default: original for radiographs, "
                        "i.e. the GAN's coarse part plus the fine detail of the image without the "
                        "lesion; else coarse for ConSinGAN, replace for SinGAN)")
    h.add_argument("--contrast-tolerance", type=_tolerance, default=_HARMONIZE.contrast_tolerance,
                   metavar="FRACTION|off",
                   help="contrast-preserving harmonization of added lesions: hold the lesion's mean "
                        "contrast within this fraction of the naive paste's by re-scaling its coarse "
                        "band (default %(default)s); 'off' keeps the GAN's output as it is (samples "
                        "that lost the lesion are then refused)")
    h.add_argument("--out-dir", help="write the samples here (sample_<k>.mha) to compare them")
    h.add_argument("--accept", type=int, help="store sample k (0-based) in the lesion record")
    h.add_argument("--threads", type=int)
    h.set_defaults(func=run_harmonize)


def _tolerance(text: str) -> float | None:
    if text.strip().lower() in ("off", "none"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a fraction (e.g. 0.25) or 'off', got {text!r}") from None


def _threads(n) -> None:
    if n:
        import torch

        torch.set_num_threads(int(n))


def run_train(args) -> int:
    from ..harmonize import train_harmonizer

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise SynthsegError(f"{out} exists; pass --overwrite to replace it")
    if out.suffix != ".safetensors":
        raise SynthsegError("the model file must end in .safetensors")
    settings = TrainHarmonizerSettings(
        architecture=args.arch, preset=args.preset, iterations=args.iterations, seed=args.seed
    )
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
    model = train_harmonizer(
        image.array, config=settings.config(), roi=roi, seed=settings.seed, device=args.device,
        progress=ConsoleProgress(),
        provenance={"source": str(args.image), "preset": settings.preset},
    )
    model.save(out)
    r, c, h, w = model.roi
    print(
        f"{out}: {args.arch} ({args.preset}), {model.n_scales} scales "
        f"{model.config.shapes[0][1]}..{model.config.shapes[-1][1]} px, region x {c} y {r} {w}x{h} px, "
        f"{model.provenance['train_seconds']:.0f} s"
    )
    return 0


def run_harmonize(args) -> int:
    from ..harmonize import Harmonizer
    from ..io import write_image
    from ..scene import open_scene
    from ..workflow.harmonize import accept_harmonized, harmonize_lesion

    settings = HarmonizeSettings(
        injection_scale=args.scale, samples=args.samples, seed=args.seed, margin_px=args.margin,
        add_back=args.add_back, contrast_tolerance=args.contrast_tolerance,
    )
    if args.accept is not None and not 0 <= args.accept < settings.samples:
        raise SynthsegError(f"--accept takes 0..{settings.samples - 1} (the samples made by this request)")
    _threads(args.threads)
    scene = open_scene(args.scene)
    scene.lesion(args.lesion)  # a missing id fails before the model is loaded
    model = Harmonizer.load(args.model)
    result = harmonize_lesion(scene, args.lesion, model, settings)
    if args.out_dir:
        out_dir = Path(args.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        source = scene.load_image()
        write_image(result.naive, out_dir / "naive.mha", like=source, overwrite=True)
        for k, sample in enumerate(result.samples):
            write_image(sample, out_dir / f"sample_{k}.mha", like=source, overwrite=True)
        print(f"wrote naive.mha and {len(result.samples)} samples to {out_dir}")
    for k in range(len(result.samples)):
        print(result.describe(k))
    if args.accept is not None:
        accept_harmonized(scene, result, int(args.accept))
        print(f"lesion {args.lesion}: stored sample {args.accept} ({model.architecture}, "
              f"scale {result.injection_scale}, seed {settings.seed})")
    if not args.out_dir and args.accept is None:
        print("nothing written: pass --out-dir to look at the samples and --accept K to keep one", file=sys.stderr)
    return 0
