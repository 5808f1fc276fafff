"""``synthseg train-lesion-generator`` and ``synthseg generate-lesion``: the learned nodule generator."""

from __future__ import annotations

from ..errors import SynthsegError
from ..utils.progress import ConsoleProgress
from ..workflow.train_generator import NETWORKS, TrainGeneratorSettings
from ._common import add_read_options, parse_floats, read_from_args


def register(subparsers) -> None:
    t = subparsers.add_parser(
        "train-lesion-generator",
        help="train the mask-conditioned nodule generator (rectified flow) on a real-nodule table",
    )
    d = TrainGeneratorSettings()
    t.add_argument("--library", required=True,
                   help="folder with index.csv (ct_file, seg_file, lidc_series_uid, ...); only the "
                        "train side of the fixed series-level split is used")
    t.add_argument("--out", required=True, help="output MODEL.safetensors (also the checkpoint)")
    t.add_argument("--steps", type=int, default=d.steps, help=f"total optimiser steps (default {d.steps})")
    t.add_argument("--batch", type=int, default=d.batch, help=f"cubes per step (default {d.batch})")
    t.add_argument("--lr", type=float, default=d.lr, help=f"AdamW learning rate (default {d.lr:g})")
    t.add_argument("--lr-tail", type=float, default=d.lr_tail,
                   help="0 = constant rate (default); F > 0 = half-cosine decay from --lr at the step "
                        "this run starts to F x --lr at --steps (finishing a long or resumed run)")
    t.add_argument("--ema-decay", type=float, default=d.ema_decay,
                   help=f"EMA decay of the saved weights (default {d.ema_decay})")
    t.add_argument("--healthy-prob", type=float, default=d.healthy_prob,
                   help=f"fraction of healthy-fill samples (class empty; default {d.healthy_prob})")
    t.add_argument("--max-minutes", type=float, default=d.max_minutes,
                   help="stop and save after this many minutes of training (0 = no limit)")
    t.add_argument("--patch", type=int, default=d.patch, help=f"cube side in voxels (default {d.patch})")
    t.add_argument("--crop", type=int, default=d.crop,
                   help="train on windows of this many voxels of the cubes (0 = whole cube; 24 "
                        "trains ~2.4x faster per sample on CPU)")
    t.add_argument("--network", default=d.network, choices=sorted(NETWORKS),
                   help="U-Net width: " + "; ".join(f"{k} = {','.join(map(str, v))}" for k, v in NETWORKS.items())
                        + f" channels per level (default {d.network})")
    t.add_argument("--channels", help="U-Net channels per level, e.g. 8,16,32 (overrides --network)")
    t.add_argument("--no-mean-hu", action="store_true", help="do not condition on the mean HU")
    t.add_argument("--limit", type=int, default=d.limit, help="use only the first N train-side nodules")
    t.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--threads", type=int, default=d.threads, help="CPU threads (0 = torch default)")
    t.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    t.add_argument("--resume", action="store_true", help="continue training --out")
    t.add_argument("--force", action="store_true", help="start a new model over an existing --out")
    t.add_argument("--ship", metavar="SMALL.safetensors",
                   help="also write a copy without the training state (EMA weights, shape model and "
                        "contexts only; about a quarter of the size, not resumable)")
    t.set_defaults(func=run_train)

    g = subparsers.add_parser(
        "generate-lesion",
        help="generate a nodule in a CT at a point (in its own context) and save it as a lesion library item",
    )
    g.add_argument("image", help="CT image file or DICOM folder")
    where = g.add_mutually_exclusive_group(required=True)
    where.add_argument("--at", help="centre as a voxel index x,y,z")
    where.add_argument("--at-mm", help="centre as a physical (LPS) point x,y,z in mm")
    g.add_argument("--size-mm", type=float, default=10.0, help="equivalent diameter (default 10)")
    g.add_argument("--class", dest="nodule_class", default="solid",
                   help="solid, part-solid, ground-glass, or empty (healthy fill)")
    g.add_argument("--mean-hu", type=float, help="mean HU inside the mask (default: drawn for the class)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--samples", type=int, default=1, help="seeds seed..seed+N-1, one item each")
    g.add_argument("--steps", type=int, help="flow steps (default: the model's)")
    g.add_argument("--model", default="builtin", help="generator file or builtin (default)")
    g.add_argument("--library", required=True, help="lesion library folder to store the items in")
    add_read_options(g)
    g.set_defaults(func=run_generate)


def run_train(args) -> int:
    from ..models import read_model_info
    from ..workflow.train_generator import model_summary, train_generator_model

    channels = tuple(int(v) for v in parse_floats(args.channels, "--channels")) if args.channels else None
    settings = TrainGeneratorSettings(
        steps=args.steps, max_minutes=args.max_minutes, batch=args.batch, lr=args.lr, lr_tail=args.lr_tail,
        ema_decay=args.ema_decay, healthy_prob=args.healthy_prob, crop=args.crop, network=args.network,
        channels=channels, patch=args.patch, mean_hu_channel=not args.no_mean_hu, limit=args.limit,
        checkpoint_every=args.checkpoint_every, seed=args.seed, threads=args.threads)
    out = train_generator_model(args.library, args.out, settings, resume=args.resume, replace=args.force,
                                device=args.device, progress=ConsoleProgress())
    if args.ship:
        from ..generator import strip_training_state

        small = strip_training_state(out, args.ship)
        print(f"wrote {small} (for sampling only)")
    prov = read_model_info(out)["provenance"]
    print(f"wrote {out} ({prov['steps']} steps, {prov['train_seconds']:.0f} s, "
          f"{prov['data']['n_nodules']} train-side nodules from {prov['data']['split']['train_series']} series)")
    print(model_summary(out))
    return 0


def run_generate(args) -> int:
    from pathlib import Path

    from ..generator import generate_lesion
    from ..lesions import LesionLibrary
    from ..lesions.place import center_from

    if args.samples < 1:
        raise SynthsegError("--samples must be at least 1")
    image = read_from_args(args.image, args)
    at = parse_floats(args.at, "--at") if args.at else None
    at_mm = parse_floats(args.at_mm, "--at-mm") if args.at_mm else None
    center = center_from(image, at, at_mm)
    folder = Path(args.library)
    folder.mkdir(parents=True, exist_ok=True)
    library = LesionLibrary(folder)
    for k in range(args.samples):
        patch, source = generate_lesion(image, center, args.size_mm, args.nodule_class, seed=args.seed + k,
                                        model=args.model, mean_hu=args.mean_hu, steps=args.steps)
        lesion_id = library.add(patch)
        print(f"stored {lesion_id} ({source['class']}, {patch.diameter_mm():.1f} mm, seed {args.seed + k}) in {folder}")
    return 0
