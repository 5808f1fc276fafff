"""Batch recipes on real dask clusters: a worker killed mid-run, and `dask scheduler` + `dask worker`.

Both runs must give exactly the scenes of a reference run in this process (same lesion records,
same rendered labels): no scene lost, none duplicated, whatever ran them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from _batch_images import cheap_recipe, write_images

from napari_synthseg.batch import MARKER, parse_recipe, run_recipe
from napari_synthseg.render import render_scene
from napari_synthseg.scene import Scene

distributed = pytest.importorskip("distributed")

REPO = Path(__file__).resolve().parents[1]
N_IMAGES = 22
SCENES_PER_IMAGE = 1


def scene_fingerprints(out: Path) -> dict[str, tuple]:
    """scene name -> (lesion records without timestamps, sha256 of the rendered labels)."""
    found = {}
    for folder in sorted((out / "scenes").iterdir()):
        assert not folder.name.startswith("."), f"temporary folder left behind: {folder.name}"
        assert (folder / MARKER).exists(), folder.name
        records = json.loads((folder / "scene.json").read_text())["lesions"]
        lesions = [{k: v for k, v in r.items() if k not in ("created", "modified", "decision")} for r in records]
        labels = render_scene(Scene.open(folder)).labels
        found[folder.name] = (json.dumps(lesions, sort_keys=True), hashlib.sha256(labels.tobytes()).hexdigest())
    return found


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("images"), N_IMAGES)[0].parent


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "out"
    summary = run_recipe(parse_recipe(cheap_recipe(images, out)), "synchronous")
    assert summary["counts"]["built"] == N_IMAGES * SCENES_PER_IMAGE and summary["counts"]["failed"] == 0
    return summary, scene_fingerprints(out)


def _exit_soon() -> None:
    threading.Thread(target=lambda: (time.sleep(0.01), os._exit(1)), daemon=True).start()


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO / "tests"), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.mark.slow
def test_worker_killed_mid_run_loses_and_duplicates_nothing(images, reference, tmp_path):
    from distributed import Client, LocalCluster

    out = tmp_path / "out"
    recipe = parse_recipe(cheap_recipe(images, out))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        before = set(client.scheduler_info()["workers"])
        result: dict = {}
        runner = threading.Thread(target=lambda: result.update(run_recipe(recipe, cluster.scheduler_address)))
        runner.start()
        killed = None
        deadline = time.monotonic() + 60
        while killed is None and time.monotonic() < deadline and runner.is_alive():
            done = len(list((out / "scenes").glob(f"*/{MARKER}"))) if (out / "scenes").exists() else 0
            busy = [w for w, keys in client.processing().items() if any("synthseg-scene" in str(k) for k in keys)]
            if done >= 3 and busy:
                killed = busy[0]
                # The worker process dies at once, in the middle of a scene (from a thread, so that
                # client.run gets its answer first).
                client.run(_exit_soon, workers=[killed])
            time.sleep(0.02)
        runner.join(120)
        assert killed is not None, "the run ended before a worker could be killed"
        assert not runner.is_alive()
        after = set(client.scheduler_info()["workers"])
    assert killed not in after, "the killed worker is still registered"
    summary = result
    assert summary["counts"]["built"] == N_IMAGES * SCENES_PER_IMAGE
    assert summary["counts"]["failed"] == 0 and summary["counts"]["resumed"] == 0
    assert summary["counts"]["lesions"] == reference[0]["counts"]["lesions"]
    assert scene_fingerprints(out) == reference[1]  # every scene once, identical to the reference
    assert len(list((out / "logs").iterdir())) == N_IMAGES * SCENES_PER_IMAGE


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_dask_scheduler_and_workers_over_tcp_give_identical_scenes(images, reference, tmp_path):
    from distributed import Client

    dask_cli = shutil.which("dask", path=str(Path(sys.executable).parent)) or shutil.which("dask")
    assert dask_cli, "the dask command is part of dask.distributed"
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = []
    try:
        procs.append(subprocess.Popen([dask_cli, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                       "--no-dashboard"], env=_env(), stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        for _ in range(2):
            procs.append(subprocess.Popen([dask_cli, "worker", address, "--nworkers", "1", "--nthreads", "1",
                                           "--host", "127.0.0.1", "--no-dashboard"], env=_env(),
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 60
        while True:
            try:
                with Client(address, timeout="5s") as client:
                    client.wait_for_workers(2, timeout=60)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        out = tmp_path / "out"
        summary = run_recipe(parse_recipe(cheap_recipe(images, out)), address)
        assert summary["workers"] == 2 and summary["scheduler"] == address
        assert summary["counts"]["built"] == N_IMAGES * SCENES_PER_IMAGE and summary["counts"]["failed"] == 0
        workers = {s["worker"] for s in summary["scenes"]}
        assert len(workers) == 2  # both workers built scenes
        assert scene_fingerprints(out) == reference[1]
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
