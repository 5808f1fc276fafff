import numpy as np
import pytest

from napari_synthseg.errors import SynthsegError
from napari_synthseg.io import PRESETS, apply_window, guess_modality, window_limits


@pytest.mark.parametrize(
    "preset,expected",
    [("ct-lung", (-1350, 150)), ("ct-mediastinum", (-160, 240)), ("ct-bone", (-500, 1300)), ("brain", (0, 80))],
)
def test_ct_and_brain_presets_are_width_level(preset, expected):
    assert window_limits(np.zeros((4, 4)), preset) == expected


def test_cxr_auto_is_percentile_of_native_values():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 4096, size=(512, 512)).astype(np.uint16)
    lo, hi = window_limits(image, "auto", "CXR")
    ref = np.percentile(image, [0.5, 99.5])
    assert abs(lo - ref[0]) < 25 and abs(hi - ref[1]) < 25
    assert hi > 255  # never squeezed to 8 bit


def test_auto_picks_by_modality():
    ct = np.full((2, 4, 4), -1000, np.int16)
    assert window_limits(ct, "auto", "CT") == PRESETS["ct-lung"].limits(ct)


def test_unknown_preset():
    with pytest.raises(SynthsegError, match="unknown window preset"):
        window_limits(np.zeros((2, 2)), "ct-liver")


def test_apply_window_maps_to_unit_range():
    out = apply_window(np.array([-2000, -600, 1000], np.int16), (-1350, 150))
    np.testing.assert_allclose(out, [0.0, 0.5, 1.0])


def test_guess_modality():
    assert guess_modality(np.zeros((5, 5)), {}) == "CXR"
    assert guess_modality(np.full((3, 5, 5), -1024), {}) == "CT"
    assert guess_modality(np.zeros((3, 5, 5), np.uint8), {}) == "MR"
    assert guess_modality(np.zeros((5, 5)), {"0008|0060": "CT"}) == "CT"
    assert guess_modality(np.zeros((5, 5)), {"0008|0060": "DX"}) == "CXR"
