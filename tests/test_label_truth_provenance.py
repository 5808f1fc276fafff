"""Provenance sidecars and source-range clipping for remove / inpaint / render outputs (issue 15)."""

from __future__ import annotations

import json

import numpy as np

from napari_synthseg.cli import main
from napari_synthseg.cli._provenance import clip_to_source
from napari_synthseg.io import read_image, write_image
from napari_synthseg.lesions import procedural_nodule
from napari_synthseg.lesions.place import place_lesion
from napari_synthseg.scene import Scene


def test_clip_to_source_records_what_it_clipped():
    source = np.array([0, 100, 4095], np.int16)
    values, record = clip_to_source(np.array([-5.0, 50.0, 10447.0]), source)
    assert values.tolist() == [0.0, 50.0, 4095.0]
    assert record["clipped_below"] == 1 and record["clipped_above"] == 1 and record["max_before"] == 10447.0


def test_remove_writes_provenance(shared_data, tmp_path, capsys):
    cxr = shared_data / "cxr/nih_other/00000001_000.png"
    image = read_image(cxr)
    mask = np.zeros(image.shape, np.uint8)
    mask[400:430, 300:330] = 1
    mask_path = write_image(mask, tmp_path / "mask.png", like=image)
    out = tmp_path / "removed.png"
    assert main(["remove", str(cxr), "--mask", str(mask_path), "--out", str(out)]) == 0
    side = json.loads((tmp_path / "removed.png.provenance.json").read_text())
    assert side["command"] == "synthseg remove" and side["method"] == "biharmonic"
    assert side["model"]["kind"] == "classical"
    assert len(side["source"]["sha256"]) == 64 and len(side["mask"]["sha256"]) == 64
    assert side["output_sha256"] and side["software"]["name"] == "napari-synthseg"
    assert side["clipping"]["range"] == [float(image.array.min()), float(image.array.max())]


def test_render_clips_to_the_source_range(shared_data, tmp_path, capsys):
    ct = read_image(shared_data / "ct/lung_pet_ct_dx_A0001/dicom")
    scene = Scene.create(ct, tmp_path / "scene")
    place_lesion(scene, procedural_nodule(12.0, "solid", spacing=1.0, seed=1), at_xyz=(150, 250, 40),
                 blend="additive", contrast=8.0)
    scene.save()
    assert main(["render", str(tmp_path / "scene"), str(tmp_path / "out"), "--float"]) == 0
    written = read_image(tmp_path / "out" / "image.nii.gz")
    assert float(written.array.max()) <= float(ct.array.max())
    side = json.loads((tmp_path / "out" / "image.nii.gz.provenance.json").read_text())
    assert side["clipping"]["range"][1] == float(ct.array.max())
    assert side["clipping"]["max_before"] >= side["clipping"]["range"][1] or side["clipping"]["clipped_above"] == 0
