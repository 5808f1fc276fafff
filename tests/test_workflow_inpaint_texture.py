"""The inpainting texture rule, without Qt: None means auto (0 for one sample, 1 for several)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_synthseg.cli import build_parser
from napari_synthseg.errors import SynthsegError
from napari_synthseg.workflow.inpaint import (
    AUTO_TEXTURE,
    InpaintSettings,
    TrainInpainterSettings,
    check_training_paths,
    inpaint,
    sample_provenance,
    train_modes,
)


@pytest.mark.parametrize("settings, texture", [
    (InpaintSettings(samples=1), 0.0),  # one sample: the smooth best-PSNR fill
    (InpaintSettings(samples=3), AUTO_TEXTURE),  # several: grain, so they differ
    (InpaintSettings(samples=3, texture=0.0), 0.0),  # an explicit value wins
    (InpaintSettings(samples=1, texture=0.5), 0.5),
    (InpaintSettings(samples=3, model="biharmonic"), 0.0),  # classical fills take no grain
    (InpaintSettings(samples=3, model="telea", texture=1.0), 0.0),
])
def test_texture_rule(settings, texture):
    assert settings.effective_texture() == texture
    assert sample_provenance(settings, 0)["texture"] == texture  # the record says what was used


def test_default_is_auto_in_the_workflow_and_the_cli():
    assert InpaintSettings().texture is None
    args = build_parser().parse_args(["inpaint", "img.png", "--mask", "m.png", "--out", "o.nii.gz"])
    assert args.texture is None
    settings = InpaintSettings(samples=args.samples, texture=args.texture)
    assert settings.effective_texture() == 0.0  # the CLI's one default sample stays smooth
    with pytest.raises(SynthsegError, match=r"texture must lie in \[0, 1\]"):
        InpaintSettings(texture=1.5)


def test_auto_texture_makes_learned_samples_differ():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :96]
    image = (400 + 2 * yy + 30 * np.sin(xx / 5.0) + rng.normal(0, 8, (96, 96))).astype(np.float32)
    mask = ((yy - 48) ** 2 + (xx - 48) ** 2) < 12**2
    auto = inpaint(image, mask, InpaintSettings(samples=2, seed=1), threads=1)
    smooth = inpaint(image, mask, InpaintSettings(samples=2, seed=1, texture=0.0), threads=1)
    for samples in (auto, smooth):
        for sample in samples:
            np.testing.assert_array_equal(sample[~mask], image[~mask])
    auto_spread = float(np.abs(auto[0] - auto[1])[mask].mean())
    smooth_spread = float(np.abs(smooth[0] - smooth[1])[mask].mean())
    assert auto_spread > 0.5 and auto_spread > 3 * smooth_spread, (auto_spread, smooth_spread)


def test_training_settings_and_paths(tmp_path):
    assert train_modes(False) == ("healthy", "outpaint")
    assert train_modes(True) == ("healthy", "lesion", "outpaint")
    with pytest.raises(SynthsegError, match="multiple of 8"):
        TrainInpainterSettings(crop_px=20)
    with pytest.raises(SynthsegError, match="folder of training images"):
        check_training_paths(tmp_path / "none", tmp_path / "m.safetensors")
    with pytest.raises(SynthsegError, match=".safetensors"):
        check_training_paths(tmp_path, tmp_path / "m.pt")
    with pytest.raises(SynthsegError, match="lesion mask folder"):
        check_training_paths(tmp_path, tmp_path / "m.safetensors", tmp_path / "masks")
