"""``synthseg train-generator`` and ``synthseg datasetgan sample|fit|generate``.

The DatasetGAN workflow without a viewer: train a generator on a folder of images, write seeded
samples to label, fit the pixel-classifier ensemble on the labelled ones, generate labelled pairs.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import SynthsegError
from ..utils.progress import ConsoleProgress


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train-generator",
        help="train a StyleGAN2-style generator on a folder of images (DatasetGAN step 1)",
    )
    p.add_argument("--images", required=True, help="folder of images (all the same size)")
    p.add_argument("--size", type=int, default=128, help="output size in pixels (power of two, default 128)")
    p.add_argument("--out", required=True, help="generator file to write (.safetensors)")
    p.add_argument("--steps", type=int, default=2000, help="total training steps (default 2000)")
    p.add_argument("--batch", type=int, default=16, help="images per step (default 16)")
    p.add_argument("--lr", type=float, default=0.0025, help="Adam learning rate (default 0.0025)")
    p.add_argument("--r1-gamma", type=float, default=None, help="R1 weight (default: 0.0002*size^2/batch)")
    p.add_argument("--augment", default="color,translation,cutout", help="DiffAugment policy ('' for none)")
    p.add_argument("--channel-max", type=int, default=128, help="widest layer (default 128)")
    p.add_argument("--z-dim", type=int, default=128, help="latent size (default 128)")
    p.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from <out>.train.safetensors")
    p.add_argument("--seed", type=int, default=0)
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
    s.add_argument("--start-seed", type=int, default=0)
    s.add_argument("--truncation", type=float, default=0.7, help="truncation psi (1 = none, default 0.7)")
    s.add_argument("--force", action="store_true", help="replace an existing folder")
    s.set_defaults(func=run_sample)

    f = sub.add_parser("fit", help="fit the pixel-classifier ensemble on labelled samples")
    f.add_argument("--generator", required=True)
    f.add_argument("--labels", required=True, help="sample folder holding <sample>_label.png maps")
    f.add_argument("--out", required=True, help="classifier file to write (.safetensors)")
    f.add_argument("--classes", default=None,
                   help="class names, value 0 first (default: from samples.json, else background,lung,heart,nodule)")
    f.add_argument("--ensemble", type=int, default=5, help="ensemble members (default 5)")
    f.add_argument("--epochs", type=int, default=3)
    f.add_argument("--max-per-class", type=int, default=2000, help="pixels per class per image")
    f.add_argument("--seed", type=int, default=0)
    f.set_defaults(func=run_fit)

    g = sub.add_parser("generate", help="generate M labelled pairs, dropping the most uncertain")
    g.add_argument("--generator", required=True)
    g.add_argument("--classifier", required=True)
    g.add_argument("--n", type=int, required=True)
    g.add_argument("--out", required=True, help="folder to create")
    g.add_argument("--format", choices=["png", "nifti"], default="png")
    g.add_argument("--layout", choices=["plain", "nnunet"], default="plain",
                   help="plain: images/ + labels/; nnunet: an nnU-Net v2 raw dataset (name --out DatasetXXX_Name)")
    g.add_argument("--drop", type=float, default=0.1, help="fraction of most uncertain candidates to drop")
    g.add_argument("--start-seed", type=int, default=1_000_000)
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
    from ..datasetgan.generator import GanConfig
    from ..datasetgan.train import TrainConfig, load_image_folder, state_path_for, train_generator

    out = Path(args.out)
    if not out.parent.is_dir():
        raise SynthsegError(f"output folder does not exist: {out.parent}")
    gan = GanConfig(size=args.size, z_dim=args.z_dim, w_dim=args.z_dim, channel_max=args.channel_max)
    images = load_image_folder(args.images, args.size, progress=ConsoleProgress())
    tc = TrainConfig(
        steps=args.steps,
        batch_size=args.batch,
        lr=args.lr,
        r1_gamma=args.r1_gamma,
        augment=args.augment,
        checkpoint_every=args.checkpoint_every,
        seed=args.seed,
    )
    resume = None
    if args.resume:
        resume = state_path_for(out)
        if not resume.exists():
            raise SynthsegError(f"--resume: no training state {resume.name} beside {out.name}")
    preview = None
    if args.previews:
        folder = Path(args.previews)
        folder.mkdir(parents=True, exist_ok=True)

        def preview(step, imgs):
            _save_grid(imgs, folder / f"preview_{step:07d}.png")

    result = train_generator(
        images, out, gan, tc, resume=resume, device=args.device, progress=ConsoleProgress(), preview=preview
    )
    print(
        f"wrote {result.generator_path} (EMA generator) and {result.state_path.name}: "
        f"{result.steps} steps, {result.images_per_second:.1f} images/s"
    )
    return 0


def run_sample(args) -> int:
    from ..datasetgan.sampling import write_samples
    from ..datasetgan.train import load_generator

    gen = load_generator(args.generator)
    out = write_samples(
        gen, args.n, args.out, args.start_seed, args.truncation, overwrite=args.force, progress=ConsoleProgress()
    )
    print(f"wrote {args.n} samples to {out}; paint label maps as <sample>_label.png beside them")
    return 0


def run_fit(args) -> int:
    from ..datasetgan.classifier import (
        DEFAULT_CLASSES,
        FitConfig,
        PixelClassifierConfig,
        fit_ensemble,
        save_classifier,
    )
    from ..datasetgan.features import feature_channels
    from ..datasetgan.sampling import read_labelled_samples
    from ..datasetgan.train import load_generator

    out = Path(args.out)
    if not out.parent.is_dir():
        raise SynthsegError(f"output folder does not exist: {out.parent}")
    gen = load_generator(args.generator)
    labelled = read_labelled_samples(args.labels, gen)
    if args.classes:
        classes = tuple(c.strip() for c in args.classes.split(",") if c.strip())
    else:
        classes = labelled.class_names or DEFAULT_CLASSES
    if len(classes) < 2:
        raise SynthsegError("--classes needs at least two names (background first)")
    ensemble, provenance = fit_ensemble(
        gen.module,
        labelled.seeds,
        labelled.labels,
        classes,
        generator_sha256=gen.sha256,
        truncation_psi=labelled.truncation_psi,
        config=PixelClassifierConfig(in_features=feature_channels(gen.module), ensemble_size=args.ensemble),
        fit=FitConfig(epochs=args.epochs, max_per_class=args.max_per_class, seed=args.seed),
        progress=ConsoleProgress(),
    )
    provenance["label_files"] = labelled.names
    save_classifier(ensemble, out, provenance)
    print(f"wrote {out}: {args.ensemble} classifiers on {len(labelled.seeds)} labelled samples")
    return 0


def run_generate(args) -> int:
    from ..datasetgan.classifier import load_classifier
    from ..datasetgan.sampling import generate_pairs
    from ..datasetgan.train import load_generator

    gen = load_generator(args.generator)
    clf = load_classifier(args.classifier, generator=gen)
    prov = generate_pairs(
        gen,
        clf,
        args.n,
        args.out,
        start_seed=args.start_seed,
        truncation_psi=args.truncation,
        drop_fraction=args.drop,
        fmt=args.format,
        overwrite=args.force,
        progress=ConsoleProgress(),
        layout=args.layout,
    )
    print(
        f"wrote {len(prov['seeds'])} pairs to {args.out} (dropped {len(prov['dropped_seeds'])} most uncertain); "
        f"provenance.json: {json.dumps({'generator': prov['generator_sha256'][:12], 'classifier': prov['classifier_sha256'][:12]})}"
    )
    return 0
