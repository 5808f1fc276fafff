"""DatasetGAN benchmarks: generator training speed, ensemble fitting memory/time, few-shot quality.

Run ``.venv/bin/python benchmarks/bench_datasetgan.py --generator G64.safetensors`` (a generator
trained with ``synthseg train-generator``; without it the quality part is skipped).

Parts
-----
speed    generator training images/s on this machine (CPU; GPU with AMP if present).
fit      peak RSS and wall time of fitting the classifier ensemble on 16 labelled samples at
         128 and 256 px, each in a fresh subprocess; reference: the official DatasetGAN's
         layout (all pixels' features of all labelled images in RAM as float32), measured at
         128 px and computed at 256 px.
fewshot  train on k = 2, 4, 8 labelled samples, test on 8 other labelled samples (both methods).
quality  leave-one-out mIoU per class over N labelled generator samples: DatasetGAN ensemble
         vs a small U-Net trained on the same labelled images in the same run. The "hand"
         labels are a classical proxy, NOT a radiologist's: lung = the project's CXR lung-field
         constraint (napari_synthseg.constraints.cxr_lung_mask) on the generated image;
         nodule-proxy = small bright spots (white top-hat) inside the lung fields, which on
         64 px images are mostly vessel/rib crossings; background = everything else.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
CXR = REPO.parent / "shared" / "data" / "cxr" / "nih_nodule"


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# ------------------------------------------------------------------------------------ speed
def bench_speed(sizes=(64, 128), steps: int = 6, batch: int = 8) -> list[dict]:
    from napari_synthseg.datasetgan import GanConfig, TrainConfig, load_image_folder, train_generator

    rows = []
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for size in sizes:
        images = load_image_folder(CXR, size)
        for channel_max in (32, 128):
            for dev in devices:
                out = Path(f"/tmp/bench_dgan_speed_{size}_{channel_max}.safetensors")
                tc = TrainConfig(steps=steps, batch_size=batch, checkpoint_every=0, preview_every=0, r1_every=4)
                res = train_generator(images, out, GanConfig(size=size, channel_max=channel_max), tc, device=dev)
                rows.append({"size": size, "channel_max": channel_max, "device": dev,
                             "images_per_s": res.images_per_second, "steps": steps, "batch": batch})
                print(f"  speed size {size} ch {channel_max} {dev}: {res.images_per_second:.2f} img/s", flush=True)
    return rows


# -------------------------------------------------------------------------------------- fit
def _blob_labels(n: int, size: int, n_classes: int, seed: int = 0) -> list[np.ndarray]:
    """Label maps with every class present: big regions plus small 'nodules' (class K-1)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    out = []
    for _ in range(n):
        lab = np.zeros((size, size), np.int64)
        for k in range(1, n_classes - 1):
            cy, cx, r = rng.uniform(0.25, 0.75), rng.uniform(0.25, 0.75), rng.uniform(0.15, 0.3)
            lab[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = k
        for _ in range(3):
            cy, cx = rng.uniform(0.1, 0.9, 2)
            lab[(yy - cy) ** 2 + (xx - cx) ** 2 < 0.02**2] = n_classes - 1
        out.append(lab)
    return out


def child_fit(size: int, mode: str, n: int, epochs: int, ensemble: int, max_per_class: int) -> dict:
    from napari_synthseg.datasetgan import FitConfig, GanConfig, Generator, PixelClassifierConfig, fit_ensemble
    from napari_synthseg.datasetgan.features import feature_channels, image_and_features

    torch.set_num_threads(2)
    torch.manual_seed(0)
    # Feature memory depends on the architecture, not on training: an untrained G is enough here.
    G = Generator(GanConfig(size=size)).eval()
    labels = _blob_labels(n, size, 4)
    seeds = list(range(n))
    base = _rss_gib()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = ru0.ru_utime + ru0.ru_stime
    t0 = time.perf_counter()
    if mode == "streamed":
        fit_ensemble(G, seeds, labels, ("background", "lung", "heart", "nodule"),
                     config=PixelClassifierConfig(in_features=0, ensemble_size=ensemble),
                     fit=FitConfig(epochs=epochs, max_per_class=max_per_class))
    else:
        # The official DatasetGAN layout: every pixel of every labelled image, float32, in RAM.
        c = feature_channels(G)
        allf = np.empty((n, size * size, c), np.float32)
        for i, seed in enumerate(seeds):
            _, f = image_and_features(G, seed)
            allf[i] = f.reshape(c, -1).T.float().numpy()
        allf.sum()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"size": size, "mode": mode, "peak_rss_gib": _rss_gib(), "baseline_rss_gib": base,
            "seconds": time.perf_counter() - t0, "cpu_seconds": ru.ru_utime + ru.ru_stime - cpu0,
            "channels": feature_channels(G)}


def bench_fit(sizes=(128, 256), n: int = 16, epochs: int = 3, ensemble: int = 5, max_per_class: int = 2000,
              naive_sizes=(128,)) -> list[dict]:
    from napari_synthseg.datasetgan import GanConfig, Generator
    from napari_synthseg.datasetgan.features import feature_channels

    rows = []
    for size in sizes:
        modes = ["streamed"] + (["naive"] if size in naive_sizes else [])
        for mode in modes:
            cmd = [sys.executable, __file__, "--child-fit", str(size), mode, str(n), str(epochs), str(ensemble),
                   str(max_per_class)]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                print(res.stderr[-2000:])
                raise SystemExit(f"child failed: {cmd}")
            row = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"  fit {size}px {mode}: peak RSS {row['peak_rss_gib']:.2f} GiB, {row['seconds']:.0f} s wall, "
                  f"{row['cpu_seconds']:.0f} CPU s", flush=True)
        if size not in naive_sizes:
            c = feature_channels(Generator(GanConfig(size=size)))
            rows.append({"size": size, "mode": "naive (computed)", "peak_rss_gib": n * size * size * c * 4 / 2**30,
                         "seconds": float("nan"), "cpu_seconds": float("nan"), "channels": c})
    return rows


# ---------------------------------------------------------------------------------- quality
def proxy_labels(image: np.ndarray) -> np.ndarray | None:
    """0 background, 1 lung (project lung-field constraint), 2 nodule-proxy (bright spots in lung)."""
    import cv2

    from napari_synthseg.constraints import cxr_lung_mask
    from napari_synthseg.errors import SynthsegError

    try:
        lung = cxr_lung_mask(image)
    except SynthsegError:
        return None
    lab = lung.astype(np.int64)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    tophat = cv2.morphologyEx(image, cv2.MORPH_TOPHAT, k).astype(np.float32)
    inside = tophat[lung]
    if inside.size == 0:
        return None
    spots = (tophat > max(np.percentile(inside, 97), 8)) & cv2.erode(lung.astype(np.uint8), k).astype(bool)
    lab[spots] = 2
    return lab


class SmallUNet(torch.nn.Module):
    """Reference segmenter: 3-level U-Net, 16-32-64 channels."""

    def __init__(self, n_classes: int, ch: int = 16):
        super().__init__()
        nn = torch.nn

        def block(a, b):
            return nn.Sequential(nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(inplace=True),
                                 nn.Conv2d(b, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(inplace=True))

        self.e1, self.e2, self.e3 = block(1, ch), block(ch, 2 * ch), block(2 * ch, 4 * ch)
        self.u2, self.d2 = nn.ConvTranspose2d(4 * ch, 2 * ch, 2, 2), block(4 * ch, 2 * ch)
        self.u1, self.d1 = nn.ConvTranspose2d(2 * ch, ch, 2, 2), block(2 * ch, ch)
        self.out = nn.Conv2d(ch, n_classes, 1)

    def forward(self, x):
        e1 = self.e1(x)
        e2 = self.e2(torch.nn.functional.max_pool2d(e1, 2))
        e3 = self.e3(torch.nn.functional.max_pool2d(e2, 2))
        d2 = self.d2(torch.cat([self.u2(e3), e2], 1))
        d1 = self.d1(torch.cat([self.u1(d2), e1], 1))
        return self.out(d1)


def fit_unet(images: np.ndarray, labels: np.ndarray, n_classes: int, iters: int, seed: int,
             batch: int = 4) -> SmallUNet:
    torch.manual_seed(seed)
    net = SmallUNet(n_classes)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    x = torch.from_numpy(images).float().div(127.5).sub(1).unsqueeze(1)
    y = torch.from_numpy(labels).long()
    counts = np.bincount(labels.reshape(-1), minlength=n_classes).astype(float)
    w = torch.tensor((counts.sum() / np.maximum(counts, 1) / n_classes) ** 0.5, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    for _ in range(iters):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        xb, yb = x[idx], y[idx]
        # Small random shifts: the same data-efficiency help DatasetGAN gets from its features.
        dy, dx = (int(v) for v in torch.randint(-4, 5, (2,), generator=g))
        xb, yb = torch.roll(xb, (dy, dx), (2, 3)), torch.roll(yb, (dy, dx), (1, 2))
        loss = torch.nn.functional.cross_entropy(net(xb), yb, weight=w)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


NAMES = ("background", "lung", "nodule-proxy")


def labelled_samples(G, n: int, truncation: float):
    """The first n seeds whose samples get proxy labels with all classes present."""
    from napari_synthseg.datasetgan.sampling import sample_images

    seeds, images, labels, rejected = [], [], [], 0
    seed = 0
    while len(seeds) < n and seed < 20 * n:
        img = sample_images(G, [seed], truncation)[0]
        lab = proxy_labels(img)
        if lab is None or not (lab == 2).any():
            rejected += 1
        else:
            seeds.append(seed)
            images.append(img)
            labels.append(lab)
        seed += 1
    if len(seeds) < n:
        raise SystemExit(f"only {len(seeds)} generator samples gave proxy labels")
    return seeds, np.stack(images), np.stack(labels), rejected


def bench_fewshot(generator_path: Path, train_sizes=(2, 4, 8), n_test: int = 8, epochs: int = 3,
                  ensemble: int = 5, unet_iters: int = 400, truncation: float = 0.7) -> dict:
    """Train on the first k labelled samples, test on n_test fixed other ones."""
    from napari_synthseg.datasetgan import FitConfig, PixelClassifierConfig, fit_ensemble, load_generator
    from napari_synthseg.datasetgan.classifier import predict_features
    from napari_synthseg.datasetgan.features import image_and_features

    G = load_generator(generator_path).module
    kmax = max(train_sizes)
    seeds, images, labels, _ = labelled_samples(G, kmax + n_test, truncation)
    test = list(range(kmax, kmax + n_test))
    K = len(NAMES)
    out = {}
    for k in train_sizes:
        train = list(range(k))
        ens, _ = fit_ensemble(G, [seeds[j] for j in train], [labels[j] for j in train], NAMES,
                              truncation_psi=truncation,
                              config=PixelClassifierConfig(in_features=0, ensemble_size=ensemble),
                              fit=FitConfig(epochs=epochs, seed=k))
        net = fit_unet(images[train], labels[train], K, unet_iters, seed=k)
        inter = {m: np.zeros(K) for m in ("datasetgan", "unet")}
        union = {m: np.zeros(K) for m in ("datasetgan", "unet")}
        for i in test:
            _, feats = image_and_features(G, seeds[i], truncation)
            pred_dg = predict_features(ens, feats).labels
            with torch.no_grad():
                x = torch.from_numpy(images[i : i + 1]).float().div(127.5).sub(1).unsqueeze(1)
                pred_un = net(x).argmax(1)[0].numpy()
            for m, pred in (("datasetgan", pred_dg), ("unet", pred_un)):
                for c in range(K):
                    inter[m][c] += np.sum((pred == c) & (labels[i] == c))
                    union[m][c] += np.sum((pred == c) | (labels[i] == c))
        out[k] = {m: (inter[m] / np.maximum(union[m], 1)).tolist() for m in inter}
        print(f"  few-shot k={k}: " + ", ".join(f"{m} {np.round(v, 3).tolist()}" for m, v in out[k].items()), flush=True)
    return {"classes": NAMES, "n_test": n_test, "iou": out}


def bench_quality(generator_path: Path, n: int, epochs: int, ensemble: int, unet_iters: int,
                  max_per_class: int = 2000, truncation: float = 0.7) -> dict:
    from napari_synthseg.datasetgan import FitConfig, PixelClassifierConfig, fit_ensemble, load_generator
    from napari_synthseg.datasetgan.classifier import predict_features
    from napari_synthseg.datasetgan.features import image_and_features

    gen = load_generator(generator_path)
    G = gen.module
    names = NAMES
    seeds, images, labels, rejected = labelled_samples(G, n, truncation)
    K = len(names)
    inter = {m: np.zeros(K) for m in ("datasetgan", "unet")}
    union = {m: np.zeros(K) for m in ("datasetgan", "unet")}
    t_dg = t_un = 0.0
    for i in range(n):
        train = [j for j in range(n) if j != i]
        t0 = time.perf_counter()
        ens, _ = fit_ensemble(G, [seeds[j] for j in train], [labels[j] for j in train], names,
                              truncation_psi=truncation,
                              config=PixelClassifierConfig(in_features=0, ensemble_size=ensemble),
                              fit=FitConfig(epochs=epochs, seed=i, max_per_class=max_per_class))
        _, feats = image_and_features(G, seeds[i], truncation)
        pred_dg = predict_features(ens, feats).labels
        t_dg += time.perf_counter() - t0
        t0 = time.perf_counter()
        net = fit_unet(images[train], labels[train], K, unet_iters, seed=i)
        with torch.no_grad():
            x = torch.from_numpy(images[i : i + 1]).float().div(127.5).sub(1).unsqueeze(1)
            pred_un = net(x).argmax(1)[0].numpy()
        t_un += time.perf_counter() - t0
        for m, pred in (("datasetgan", pred_dg), ("unet", pred_un)):
            for k in range(K):
                inter[m][k] += np.sum((pred == k) & (labels[i] == k))
                union[m][k] += np.sum((pred == k) | (labels[i] == k))
        print(f"  fold {i + 1}/{n}: DatasetGAN {t_dg:.0f} s, U-Net {t_un:.0f} s so far", flush=True)
    iou = {m: (inter[m] / np.maximum(union[m], 1)).tolist() for m in inter}
    frac = [float((labels == k).mean()) for k in range(K)]
    return {"classes": names, "iou": iou, "class_fraction": frac, "n": n, "rejected_samples": rejected,
            "settings": {"ensemble": ensemble, "epochs": epochs, "max_per_class": max_per_class,
                         "unet_iters": unet_iters, "unet_batch": 4, "truncation": truncation},
            "seconds": {"datasetgan": t_dg, "unet": t_un}, "generator_steps": gen.provenance.get("steps"),
            "size": G.config.size}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="speed,fit,fewshot,quality")
    ap.add_argument("--generator", type=Path)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--ensemble", type=int, default=5)
    ap.add_argument("--max-per-class", type=int, default=2000)
    ap.add_argument("--unet-iters", type=int, default=200)
    ap.add_argument("--fit-sizes", default="128,256")
    ap.add_argument("--speed-sizes", default="64,128")
    ap.add_argument("--json", type=Path, help="write all results here")
    ap.add_argument("--child-fit", nargs=6, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_fit:
        size, mode, n, epochs, ens, mpc = args.child_fit
        print(json.dumps(child_fit(int(size), mode, int(n), int(epochs), int(ens), int(mpc))))
        return
    torch.set_num_threads(2)
    parts = args.parts.split(",")
    results: dict = {"machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}, "
                                f"cuda={torch.cuda.is_available()}"}
    if "speed" in parts:
        results["speed"] = bench_speed(tuple(int(s) for s in args.speed_sizes.split(",")))
        print("\n| size | channel_max | device | images/s |\n|---|---|---|---|")
        for r in results["speed"]:
            print(f"| {r['size']} | {r['channel_max']} | {r['device']} | {r['images_per_s']:.2f} |")
    if "fit" in parts:
        rows = bench_fit(tuple(int(s) for s in args.fit_sizes.split(",")), args.n, args.epochs, args.ensemble,
                         args.max_per_class)
        results["fit"] = rows
        print("\n| size | method | feature channels | peak RSS GiB | wall s | CPU s (/2 = 2 free cores) | RSS ratio vs naive |"
              "\n|---|---|---|---|---|---|---|")
        naive = {r["size"]: r["peak_rss_gib"] for r in rows if r["mode"].startswith("naive")}
        for r in rows:
            ratio = r["peak_rss_gib"] / naive[r["size"]] if r["size"] in naive else float("nan")
            print(f"| {r['size']} | {r['mode']} | {r['channels']} | {r['peak_rss_gib']:.2f} | {r['seconds']:.0f} | "
                  f"{r['cpu_seconds']:.0f} | {ratio:.2f} |")
    if "quality" in parts and args.generator:
        q = bench_quality(args.generator, args.n, args.epochs, args.ensemble, args.unet_iters, args.max_per_class)
        results["quality"] = q
        print(f"\nleave-one-out over {q['n']} labelled {q['size']} px samples (generator at {q['generator_steps']} steps; "
              f"{q['rejected_samples']} samples rejected: no proxy labels)")
        print("| class | pixel fraction | IoU DatasetGAN | IoU U-Net | ratio |\n|---|---|---|---|---|")
        for k, name in enumerate(q["classes"]):
            a, b = q["iou"]["datasetgan"][k], q["iou"]["unet"][k]
            print(f"| {name} | {q['class_fraction'][k]:.3f} | {a:.3f} | {b:.3f} | {a / max(b, 1e-9):.2f} |")
        ma, mb = np.mean(q["iou"]["datasetgan"]), np.mean(q["iou"]["unet"])
        print(f"| mean | | {ma:.3f} | {mb:.3f} | {ma / max(mb, 1e-9):.2f} |")
        print(f"time for all folds: DatasetGAN {q['seconds']['datasetgan']:.0f} s, U-Net {q['seconds']['unet']:.0f} s")
    if "fewshot" in parts and args.generator:
        fs = bench_fewshot(args.generator, unet_iters=args.unet_iters, epochs=args.epochs, ensemble=args.ensemble)
        results["fewshot"] = fs
        print(f"\ntrain on k labelled samples, test on {fs['n_test']} other labelled samples (IoU)")
        print("| k | " + " | ".join(f"{c} DatasetGAN | {c} U-Net" for c in fs["classes"]) + " |")
        print("|---|" + "---|---|" * len(fs["classes"]))
        for k, r in fs["iou"].items():
            cells = " | ".join(f"{a:.3f} | {b:.3f}" for a, b in zip(r["datasetgan"], r["unet"]))
            print(f"| {k} | {cells} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main()
