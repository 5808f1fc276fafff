"""Batch generation: reproducible, lesions inside the constraint, failures reported per image."""

from __future__ import annotations

import json
import shutil

import numpy as np

from napari_synthseg.batch import BatchConfig, generate_batch, list_images
from napari_synthseg.cli import main
from napari_synthseg.render import render_scene
from napari_synthseg.scene import Scene


def _lesions(folder):
    return [json.loads((p / "scene.json").read_text())["lesions"] for p in sorted(folder.iterdir()) if p.is_dir()]


def test_batch_is_reproducible_and_inside_constraint(shared_data, tmp_path):
    images = list_images([str(shared_data / "cxr/nih_nodule")])[:3]
    config = BatchConfig(lesions_per_image=(2, 2), size_mm=(8, 14), spacing=(0.4, 0.4), seed=7)
    first = generate_batch(images, tmp_path / "a", config, scheduler="processes", workers=2)
    again = generate_batch(images, tmp_path / "b", config, scheduler="synchronous")
    assert [s.error for s in first] == [None] * 3
    strip = lambda scenes: [[{k: v for k, v in rec.items() if k not in ("created", "modified")} for rec in s] for s in scenes]  # noqa: E731
    assert strip(_lesions(tmp_path / "a")) == strip(_lesions(tmp_path / "b"))
    for folder in sorted(p for p in (tmp_path / "a").iterdir() if p.is_dir()):
        scene = Scene.open(folder)
        assert len(scene.lesions) == 2
        labels = render_scene(scene).labels
        constraint = scene.mask("constraint")
        assert labels.any() and np.all(constraint[labels > 0])
    manifest = json.loads((tmp_path / "a/batch.json").read_text())
    assert manifest["placed"] == 6 and manifest["failed"] == 0


def test_batch_reports_bad_images_and_uses_ct_patches(shared_data, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(shared_data / "cxr/nih_other/00000001_000.png", images / "good.png")
    (images / "broken.png").write_bytes(b"not a png at all")
    patches = tmp_path / "patches"
    patches.mkdir()
    for name in ("nodule_05_ct.mha", "nodule_05_seg.mha"):
        shutil.copy(shared_data / "ct/nodule_patches" / name, patches / name)
    code = main(["generate", str(images), "--out", str(tmp_path / "out"), "--per-image", "1", "--lesion", str(patches),
                 "--spacing", "0.75", "--scheduler", "synchronous", "--blend", "poisson"])
    out = capsys.readouterr().out
    assert code == 1 and "failed:" in out and "broken.png" in out
    manifest = json.loads((tmp_path / "out/batch.json").read_text())
    good = [s for s in manifest["scenes"] if s["error"] is None]
    assert len(good) == 1 and good[0]["lesions"][0]["source"]["type"] == "ct_patch"
