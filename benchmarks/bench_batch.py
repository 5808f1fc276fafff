"""Batch recipes on dask.distributed: scenes/s with 1 and 2 workers, memory per worker, scheduler cost.

Run: .venv/bin/python benchmarks/bench_batch.py [--images 20] [--scenes-per-image 1]

Workload: the 20 NIH radiographs of ../shared/data/cxr/nih_nodule (1024², PNG, 0.4 mm given as
the recipe default), organ constraint ``auto`` (CXR lung fields), 1-3 procedural nodules per scene
(6-20 mm, alpha or Poisson blend), accept all; no export. Each configuration gets a fresh
LocalCluster (processes, one thread each) that the recipe reaches by its tcp:// address, so
cluster start-up is not counted; the time is ``build_seconds`` (first submission to last scene).

Prints
1. scenes/s with 1 and 2 workers and the ratio (target >= 1.7x), with the CPU time the workers
   got: on a machine shared with other jobs, "cores obtained" (worker CPU s per wall s) says
   whether two workers had two cores to run on, and scenes per CPU-second whether a scene
   costs the same in both runs (then the speed-up follows the cores obtained);
2. peak RSS per worker after N/4, N and 2N scenes (a fresh cluster each: flat means the
   per-process caches are bounded and nothing accumulates per scene);
3. scheduler cost per task: a no-op task through the cluster vs a direct call, and the same
   tiny scene built through the cluster vs directly in this process.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
DATA = Path(os.environ.get("SYNTHSEG_SHARED_DATA", REPO.parent / "shared" / "data"))


def recipe_data(out: Path, scenes_per_image: int, images: int, seed: int = 0) -> dict:
    files = sorted((DATA / "cxr" / "nih_nodule").glob("*.png"))[:images]
    return {
        "inputs": [str(p) for p in files],
        "seed": seed,
        "out": str(out),
        "defaults": {"spacing_mm": 0.4, "modality": "CXR"},
        "scenes_per_image": scenes_per_image,
        "lesions": {"count": [1, 3], "sources": [{"type": "procedural", "diameter_mm": [6, 20],
                                                  "blend": ["alpha", "poisson"]}]},
        "constraint": {"organ": "auto"},
        "review": {"accept": "all"},
    }


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _noop(x):
    return x


def run_on_cluster(workers: int, data: dict) -> tuple[dict, list[float], float]:
    from distributed import Client, LocalCluster

    from napari_synthseg.batch import parse_recipe, run_recipe

    shutil.rmtree(data["out"], ignore_errors=True)
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=40) as cluster, Client(cluster) as client:
        cpu0 = sum(client.run(_cpu_seconds).values())
        summary = run_recipe(parse_recipe(data), cluster.scheduler_address)
        rss = sorted(client.run(_peak_rss_mb).values())
        cpu = sum(client.run(_cpu_seconds).values()) - cpu0
    return summary, rss, cpu


def scheduler_cost(tmp: Path, n: int = 1000) -> dict:
    from distributed import Client, LocalCluster

    from napari_synthseg.batch import build_scene, parse_recipe, plan_jobs

    sys.path.insert(0, str(REPO / "tests"))
    from _batch_images import cheap_recipe, write_images

    write_images(tmp / "tiny", 16)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=40) as cluster, Client(cluster) as client:
        client.gather(client.map(_noop, range(20), pure=False))  # warm
        t = time.perf_counter()
        client.gather(client.map(_noop, range(n), pure=False))
        via_cluster = (time.perf_counter() - t) / n
        t = time.perf_counter()
        for i in range(n):
            _noop(i)
        direct = (time.perf_counter() - t) / n
        # The same tiny scenes: in this process, then one at a time through the cluster.
        jobs_a = plan_jobs(parse_recipe(cheap_recipe(tmp / "tiny", tmp / "direct")))
        jobs_b = plan_jobs(parse_recipe(cheap_recipe(tmp / "tiny", tmp / "cluster")))
        build_scene(jobs_a[0]), client.submit(build_scene, jobs_b[0], pure=False).result()  # warm imports
        t = time.perf_counter()
        for job in jobs_a[1:]:
            build_scene(job)
        scene_direct = (time.perf_counter() - t) / (len(jobs_a) - 1)
        t = time.perf_counter()
        for job in jobs_b[1:]:
            client.submit(build_scene, job, pure=False).result()
        scene_cluster = (time.perf_counter() - t) / (len(jobs_b) - 1)
    return {"noop_cluster_ms": via_cluster * 1e3, "noop_direct_us": direct * 1e6,
            "scene_direct_ms": scene_direct * 1e3, "scene_cluster_ms": scene_cluster * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--scenes-per-image", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    tmp = Path(tempfile.mkdtemp(prefix="synthseg-bench-batch-"))
    load = os.getloadavg()
    print(f"# bench_batch: {args.images} NIH radiographs x {args.scenes_per_image} scenes, "
          f"{os.cpu_count()} CPUs, load average before {load[0]:.1f}")
    try:
        print("\n## 1. throughput (build_seconds: first submission to last scene)")
        print("| workers | scenes (failed) | seconds | scenes/s | ratio vs 1 worker | worker CPU s | cores obtained "
              "(CPU s / s) | scenes per worker CPU s |")
        print("|---|---|---|---|---|---|---|---|")
        rates = {}
        for workers in (1, 2):
            data = recipe_data(tmp / f"w{workers}", args.scenes_per_image, args.images)
            summary, _, cpu = run_on_cluster(workers, data)
            # A failed scene (e.g. no lung fields found) cost time too: count every finished scene.
            n = summary["counts"]["built"] + summary["counts"]["failed"]
            secs = summary["build_seconds"]
            rates[workers] = n / secs
            print(f"| {workers} | {n} ({summary['counts']['failed']} failed) | {secs:.1f} | {rates[workers]:.2f} | "
                  f"{rates[workers] / rates[1]:.2f}x | {cpu:.1f} | {cpu / secs:.2f} | {n / cpu:.3f} |", flush=True)
        print(f"\nload average after: {os.getloadavg()[0]:.1f}")

        print("\n## 2. peak RSS per worker (2 workers, a fresh cluster each)")
        print("| scenes | worker peak RSS MB (min, max) | ratio vs smallest |")
        print("|---|---|---|")
        base = None
        for n_images, per_image in ((args.images // 4, 1), (args.images, 1), (args.images, 2)):
            data = recipe_data(tmp / f"m{n_images}x{per_image}", per_image, n_images)
            summary, rss, _ = run_on_cluster(2, data)
            base = base or max(rss)
            n = summary["counts"]["built"] + summary["counts"]["failed"]
            print(f"| {n} | {rss[0]:.0f}, {rss[-1]:.0f} | {max(rss) / base:.2f}x |", flush=True)

        print("\n## 3. scheduler cost per task (1 worker)")
        cost = scheduler_cost(tmp)
        print("| task | direct call | through the cluster | cost per task |")
        print("|---|---|---|---|")
        print(f"| no-op | {cost['noop_direct_us']:.2f} us | {cost['noop_cluster_ms']:.2f} ms | "
              f"{cost['noop_cluster_ms'] - cost['noop_direct_us'] / 1e3:.2f} ms |")
        print(f"| tiny 96² scene (submitted one at a time) | {cost['scene_direct_ms']:.1f} ms | "
              f"{cost['scene_cluster_ms']:.1f} ms | {cost['scene_cluster_ms'] - cost['scene_direct_ms']:.1f} ms |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
