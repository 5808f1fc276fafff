"""``synthseg train-generator`` and ``synthseg datasetgan sample|fit|generate``.

The DatasetGAN workflow without a viewer: train a generator on a folder of images, write seeded
samples to label, fit the pixel-classifier ensemble on the labelled ones, generate labelled pairs.
A thin adapter over :mod:`napari_synthseg.workflow.datasetgan` (defaults, checks, provenance),
which the napari panel uses too.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..utils.progress import ConsoleProgress
from ..workflow.datasetgan import (
    FORMATS,
    LAYOUTS,
    FitSettings,
    GenerateSettings,
    SampleSettings,
    TrainGeneratorSettings,
)

_TRAIN = TrainGeneratorSettings()
_SAMPLE = SampleSettings()
_FIT = FitSettings()
_GENERATE = GenerateSettings()


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train-generator",
        help="train a StyleGAN2-style generator on a folder of images (DatasetGAN step 1)",
    )
    p.add_argument("--images", required=True, help="folder of images (all the same size)")
    p.add_argument("--size", type=int, default=_TRAIN.size,
                   help=f"output size in pixels (power of two, default {_TRAIN.size})")
    p.add_argument("--out", required=True, help="generator file to write (.safetensors)")
    p.add_argument("--steps", type=int, default=_TRAIN.steps, help=f"total training steps (default {_TRAIN.steps})")
    p.add_argument("--batch", type=int, default=_TRAIN.batch, help=f"images per step (default {_TRAIN.batch})")
    p.add_argument("--lr", type=float, default=_TRAIN.lr, help=f"Adam learning rate (default {_TRAIN.lr})")
    p.add_argument("--r1-gamma", type=float, default=None, help="R1 weight (default: 0.0002*size^2/batch)")
    p.add_argument("--augment", default=_TRAIN.augment, help="DiffAugment policy ('' for none)")
    p.add_argument("--channel-max", type=int, default=_TRAIN.channel_max,
                   help=f"widest layer (default {_TRAIN.channel_max})")
    p.add_argument("--z-dim", type=int, default=_TRAIN.z_dim, help=f"latent size (default {_TRAIN.z_dim})")
    p.add_argument("--checkpoint-every", type=int, default=_TRAIN.checkpoint_every, help="steps between checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from <out>.train.safetensors")
    p.add_argument("--seed", type=int, default=_TRAIN.seed)
    p.add_argument("--device", default=None, help="auto, cpu, cuda, mps")
    p.add_argument("--previews", help="folder for preview grids (PNG) during training")
    p.set_defaults(func=run_train)

    d = subparsers.add_parser("datasetgan", help="label generator samples and turn them into labelled data")
    sub = d.add_subparsers(dest="datasetgan_command", metavar="STEP")
    sub.required = True

    s = sub.add_parser("sample", help="write N seeded samples (and samples.json) to label by hand")
    s.add_argument("--generator", required=True)
    s.add_argument("--n", type=int, required=True)
    s.add_argument("--out", required=True, help="folder to create")
    s.add_argument("--start-seed", type=int, default=_SAMPLE.start_seed)
    s.add_argument("--truncation", type=float, default=_SAMPLE.truncation_psi,
                   help=f"truncation psi (1 = none, default {_SAMPLE.truncation_psi})")
    s.add_argument("--force", action="store_true", help="replace an existing folder")
    s.set_defaults(func=run_sample)

    f = sub.add_parser("fit", help="fit the pixel-classifier ensemble on labelled samples")
    f.add_argument("--generator", required=True)
    f.add_argument("--labels", required=True, help="sample folder holding <sample>_label.png maps")
    f.add_argument("--out", required=True, help="classifier file to write (.safetensors)")
    f.add_argument("--classes", default=None,
                   help="class names, value 0 first (default: from samples.json, else background,lung,heart,nodule)")
    f.add_argument("--ensemble", type=int, default=_FIT.ensemble, help=f"ensemble members (default {_FIT.ensemble})")
    f.add_argument("--epochs", type=int, default=_FIT.epochs)
    f.add_argument("--max-per-class", type=int, default=_FIT.max_per_class, help="pixels per class per image")
    f.add_argument("--seed", type=int, default=_FIT.seed)
    f.set_defaults(func=run_fit)

    g = sub.add_parser("generate", help="generate M labelled pairs, dropping the most uncertain")
    g.add_argument("--generator", required=True)
    g.add_argument("--classifier", required=True)
    g.add_argument("--n", type=int, required=True)
    g.add_argument("--out", required=True, help="folder to create")
    g.add_argument("--format", choices=FORMATS, default=_GENERATE.fmt)
    g.add_argument("--layout", choices=LAYOUTS, default=_GENERATE.layout,
                   help="plain: images/ + labels/; nnunet: an nnU-Net v2 raw dataset (name --out DatasetXXX_Name)")
    g.add_argument("--drop", type=float, default=_GENERATE.drop_fraction,
                   help="fraction of most uncertain candidates to drop")
    g.add_argument("--start-seed", type=int, default=_GENERATE.start_seed)
    g.add_argument("--truncation", type=float, default=None, help="default: as the labelled samples")
    g.add_argument("--force", action="store_true", help="replace an existing folder")
    g.set_defaults(func=run_generate)


def _save_grid(images, path: Path) -> None:
    import numpy as np
    import SimpleITK as sitk

    n, h, w = images.shape
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    grid = np.zeros((rows * h, cols * w), np.uint8)
    for i, img in enumerate(images):
        grid[(i // cols) * h : (i // cols + 1) * h, (i % cols) * w : (i % cols + 1) * w] = img
    sitk.WriteImage(sitk.GetImageFromArray(grid), str(path))


def run_train(args) -> int:
    from ..workflow.datasetgan import train_generator

    settings = TrainGeneratorSettings(
        size=args.size, steps=args.steps, batch=args.batch, lr=args.lr, r1_gamma=args.r1_gamma,
        augment=args.augment, channel_max=args.channel_max, z_dim=args.z_dim,
        checkpoint_every=args.checkpoint_every, seed=args.seed,
    )
    preview = None
    if args.previews:
        folder = Path(args.previews)
        folder.mkdir(parents=True, exist_ok=True)

        def preview(step, imgs):
            _save_grid(imgs, folder / f"preview_{step:07d}.png")

    result = train_generator(args.images, args.out, settings, resume=args.resume, device=args.device,
                             progress=ConsoleProgress(), preview=preview)
    print(
        f"wrote {result.generator_path} (EMA generator) and {result.state_path.name}: "
        f"{result.steps} steps, {result.images_per_second:.1f} images/s"
    )
    return 0


def run_sample(args) -> int:
    from ..workflow.datasetgan import load_generator, write_samples

    settings = SampleSettings(n=args.n, start_seed=args.start_seed, truncation_psi=args.truncation)
    gen = load_generator(args.generator)
    out = write_samples(gen, args.out, settings, overwrite=args.force, progress=ConsoleProgress())
    print(f"wrote {args.n} samples to {out}; paint label maps as <sample>_label.png beside them")
    return 0


def run_fit(args) -> int:
    from ..workflow.datasetgan import check_model_path, fit_from_folder, load_generator

    settings = FitSettings(ensemble=args.ensemble, epochs=args.epochs, max_per_class=args.max_per_class,
                           seed=args.seed)
    out = check_model_path(args.out, "classifier")
    gen = load_generator(args.generator)
    classifier = fit_from_folder(gen, args.labels, out, args.classes, settings, progress=ConsoleProgress())
    seeds = classifier.provenance.get("seeds", [])
    print(f"wrote {out}: {args.ensemble} classifiers on {len(seeds)} labelled samples")
    return 0


def run_generate(args) -> int:
    from ..datasetgan.classifier import load_classifier
    from ..workflow.datasetgan import generate, load_generator

    settings = GenerateSettings(n=args.n, start_seed=args.start_seed, truncation_psi=args.truncation,
                                drop_fraction=args.drop, fmt=args.format, layout=args.layout)
    gen = load_generator(args.generator)
    clf = load_classifier(args.classifier, generator=gen)
    prov = generate(gen, clf, args.out, settings, overwrite=args.force, progress=ConsoleProgress())
    print(
        f"wrote {len(prov['seeds'])} pairs to {args.out} (dropped {len(prov['dropped_seeds'])} most uncertain); "
        f"provenance.json: {json.dumps({'generator': prov['generator_sha256'][:12], 'classifier': prov['classifier_sha256'][:12]})}"
    )
    return 0
