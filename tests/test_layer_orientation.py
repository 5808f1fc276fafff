"""How images become napari layers, without Qt: millimetres, and volumes drawn head up."""

from __future__ import annotations

import numpy as np
import pytest

from napari_synthseg._napari import image_from_layer, image_layer_data, layer_transform
from napari_synthseg.io import MedicalImage


def _volume(direction_z: float) -> MedicalImage:
    direction = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, direction_z)
    return MedicalImage(array=np.zeros((6, 4, 5), np.int16), spacing=(0.8, 0.7, 2.5), origin=(-100.0, -50.0, -300.0),
                        direction=direction, modality="CT")


@pytest.mark.parametrize("direction_z", [1.0, -1.0])
def test_superior_slice_is_drawn_at_the_top(direction_z):
    image = _volume(direction_z)
    transform = layer_transform(image)
    # World axis 0 (drawn downwards in a coronal view) is minus the physical z: up the screen is
    # towards the head, whichever way the slices are stored.
    for k in range(image.shape[0]):
        world = transform["translate"][0] + transform["scale"][0] * k
        assert world == pytest.approx(-image.index_to_physical((0, 0, k))[2])
    assert transform["scale"][1:] == (0.7, 0.8) and transform["translate"][1:] == (-50.0, -100.0)
    # The reader uses the same transform.
    _, kwargs, _ = image_layer_data(image)
    assert kwargs["scale"] == transform["scale"] and kwargs["translate"] == transform["translate"]


def test_radiographs_are_drawn_as_stored():
    image = MedicalImage(array=np.zeros((4, 5), np.uint16), spacing=(0.14, 0.15), origin=(1.0, 2.0),
                         direction=(1.0, 0.0, 0.0, 1.0))
    assert layer_transform(image) == {"scale": (0.15, 0.14), "translate": (2.0, 1.0)}


@pytest.mark.parametrize("direction_z", [1.0, -1.0])
def test_a_layer_made_in_napari_is_written_where_it_was_drawn(direction_z):
    image = _volume(direction_z)
    transform = layer_transform(image)
    # A labels layer painted in napari carries only scale and translate (no metadata).
    back = image_from_layer(np.zeros(image.shape, np.uint8), dict(transform))
    assert back.spacing == pytest.approx(image.spacing)
    for index in ((0, 0, 0), (4, 3, 5), (2, 1, 3)):
        np.testing.assert_allclose(back.index_to_physical(index), image.index_to_physical(index))
    for key in ("scale", "translate"):
        np.testing.assert_allclose(layer_transform(back)[key], transform[key])
