"""Accepting an inpainted sample into a scene, without Qt: the sample must be made on the scene's image.

The rule lives in ``workflow/inpaint.py`` (the panel and ``synthseg inpaint --scene --accept``
call it): outside the region it filled, a sample is a copy of the image it was made on, which
must be the scene's source image or its current render.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_synthseg.cli import main
from napari_synthseg.errors import SynthsegError
from napari_synthseg.io import MedicalImage, read_image, write_image
from napari_synthseg.render import render_scene
from napari_synthseg.workflow.edit import SceneSource, new_session
from napari_synthseg.workflow.inpaint import InpaintSettings, accept_inpainted, inpaint
from napari_synthseg.workflow.spec import LesionSpec, PlaceSettings

BIHARMONIC = InpaintSettings(model="biharmonic", samples=1)


def _image(seed: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[:128, :128]
    rng = np.random.default_rng(seed)
    return (2000 + 400 * np.sin(xx / 9.0 + seed) + 300 * np.cos(yy / 13.0) + rng.normal(0, 20, (128, 128))).astype(np.uint16)


@pytest.fixture
def session(tmp_path):
    src = MedicalImage(array=_image(), spacing=(0.5, 0.5), origin=(0.0, 0.0), direction=(1, 0, 0, 1), modality="CXR")
    path = write_image(src, tmp_path / "cxr.mha")
    return new_session(SceneSource(path=str(path)), tmp_path / "scene")


def _mask() -> np.ndarray:
    mask = np.zeros((128, 128), bool)
    mask[40:56, 60:76] = True
    return mask


def test_a_sample_of_the_source_image_is_accepted(session):
    image = session.scene.load_image().array
    (sample,) = inpaint(image, _mask(), BIHARMONIC)
    record = accept_inpainted(session.scene, sample, _mask(), BIHARMONIC, 0)
    assert record.kind == "removal" and session.scene.lesion_ids == [record.id]


def test_a_sample_of_the_current_render_is_accepted(session):
    # A lesion placed elsewhere: the render differs from the source there.
    session.place_at_index(LesionSpec.parse("procedural:solid"), PlaceSettings(size_mm=12.0, contrast=3.0), (100, 30))
    rendered = render_scene(session.scene).image
    assert np.abs(rendered - session.scene.load_image().array).max() > 50
    (sample,) = inpaint(rendered, _mask(), BIHARMONIC)
    # Given the render (the panel passes the editor's), or rendered by the job (the CLI).
    assert accept_inpainted(session.scene, sample, _mask(), BIHARMONIC, 0, current=rendered).kind == "removal"
    session.undo()
    assert accept_inpainted(session.scene, sample, _mask(), BIHARMONIC, 0).kind == "removal"


def test_a_sample_of_another_image_is_refused_in_one_line(session):
    (sample,) = inpaint(_image(seed=7), _mask(), BIHARMONIC)
    with pytest.raises(SynthsegError, match=r"made on another image: \d+% of the pixels outside the fill region "
                                            r"differ from the scene's image \(cxr\.mha\)") as info:
        accept_inpainted(session.scene, sample, _mask(), BIHARMONIC, 0)
    assert "\n" not in str(info.value) and session.scene.lesions == []


def test_a_sample_of_another_size_is_refused(session):
    with pytest.raises(SynthsegError, match="the sample is 64x64, the scene's image 128x128"):
        accept_inpainted(session.scene, np.zeros((64, 64), np.float32), np.ones((64, 64), bool), BIHARMONIC, 0)


def test_a_slightly_different_image_is_refused(session):
    # The same image, denoised: close everywhere, equal almost nowhere -- not the scene's pixels.
    from scipy import ndimage as ndi

    image = ndi.gaussian_filter(session.scene.load_image().array.astype(np.float32), 1.0)
    (sample,) = inpaint(image, _mask(), BIHARMONIC)
    with pytest.raises(SynthsegError, match="made on another image"):
        accept_inpainted(session.scene, sample, _mask(), BIHARMONIC, 0)


def test_cli_accepts_into_a_scene_only_a_sample_of_its_image(session, tmp_path, capsys):
    scene_folder = str(session.scene.folder)
    mask_path = write_image(MedicalImage(array=_mask().astype(np.uint8), spacing=(0.5, 0.5), origin=(0.0, 0.0),
                                         direction=(1, 0, 0, 1)), tmp_path / "mask.mha")
    other = write_image(MedicalImage(array=_image(seed=7), spacing=(0.5, 0.5), origin=(0.0, 0.0),
                                     direction=(1, 0, 0, 1)), tmp_path / "other.mha")
    common = ["--mask", str(mask_path), "--model", "biharmonic", "--scene", scene_folder, "--accept", "0"]
    assert main(["inpaint", str(other), *common, "--out", str(tmp_path / "o.mha")]) == 2
    assert "made on another image" in capsys.readouterr().err
    source = session.scene.source.paths[0]
    assert main(["inpaint", source, *common, "--out", str(tmp_path / "s.mha")]) == 0
    assert "stored sample 0" in capsys.readouterr().out
    from napari_synthseg.scene import Scene

    [record] = Scene.open(scene_folder).lesions
    assert record.source["type"] == "inpaint" and record.source["seed"] == 0
    written = read_image(tmp_path / "s.mha").array
    np.testing.assert_allclose(render_scene(Scene.open(scene_folder)).image, written, atol=0.5)
    assert main(["inpaint", source, "--mask", str(mask_path), "--accept", "0", "--out", str(tmp_path / "t.mha")]) == 2
    assert "--scene and --accept go together" in capsys.readouterr().err
