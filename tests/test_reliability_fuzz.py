"""Property tests (hypothesis) of the boundaries: readers, scene, model and rules loaders.

For any input the loader either returns a value or raises :class:`SynthsegError` (one line);
never another exception type. Each property runs a bounded number of examples with no
per-example deadline (reads hit the disk); the whole file takes well under a minute.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from napari_synthseg.errors import SynthsegError
from napari_synthseg.io import read_image
from napari_synthseg.models.weights import read_model_info
from napari_synthseg.qa.rules import parse_rules
from napari_synthseg.scene.schema import validate_scene_data

FUZZ = settings(max_examples=80, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


def _one_line(exc: SynthsegError) -> None:
    assert "\n" not in str(exc)


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("fuzz_src")
    rng = np.random.default_rng(0)
    out = {}
    img2 = sitk.GetImageFromArray(rng.integers(0, 4000, (24, 20)).astype(np.uint16))
    vol = sitk.GetImageFromArray(rng.integers(-1000, 1000, (3, 12, 10)).astype(np.int16))
    for ext, image in ((".png", img2), (".tif", img2), (".nii", vol), (".nii.gz", vol), (".mha", vol),
                       (".nrrd", vol)):
        path = folder / f"v{ext}"
        sitk.WriteImage(image, str(path), useCompression=ext != ".nii")
        out[ext] = path.read_bytes()
    from _dicom import write_series

    (dcm,) = write_series(folder / "series", rng.integers(-1000, 1000, (1, 16, 16)), "1.2.826.0.1.3680043.2.1125.55")
    out[".dcm"] = dcm.read_bytes()
    path = folder / "v.jpg"
    sitk.WriteImage(sitk.GetImageFromArray(rng.integers(0, 255, (24, 20)).astype(np.uint8)), str(path))
    out[".jpg"] = path.read_bytes()
    return out


@FUZZ
@given(ext=st.sampled_from([".png", ".tif", ".nii", ".nii.gz", ".mha", ".nrrd", ".jpg", ".dcm"]),
       cut=st.floats(0.0, 1.0), edits=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), max_size=6))
# found by hypothesis: a MetaImage header whose first key is not UTF-8 (0x80 for the "O" of ObjectType)
@example(ext=".mha", cut=1.0, edits=[(0.0, 128)])
def test_readers_return_an_image_or_one_line(tmp_path, valid_files, ext, cut, edits):
    data = bytearray(valid_files[ext])
    for where, value in edits:
        data[int(where * (len(data) - 1))] = value
    data = data[: max(0, int(len(data) * cut))] if cut < 0.999 else data
    path = tmp_path / f"fuzz{ext}"
    path.write_bytes(bytes(data))
    try:
        image = read_image(path)
    except SynthsegError as exc:
        _one_line(exc)
        return
    assert image.array.size > 0
    if image.array.dtype.kind == "f":
        assert np.isfinite(image.array).all()


@pytest.fixture(scope="module")
def scene_data() -> dict:
    return {
        "schema_version": 1,
        "revision": 3,
        "counter": 1,
        "source": {"paths": ["/data/a.mha"], "sha256": "0" * 64,
                   "geometry": {"shape": [64, 64], "spacing": [0.5, 0.5], "origin": [0, 0], "direction": [1, 0, 0, 1]}},
        "masks": {"constraint": "0123456789abcdef0123456789abcdef"},
        "meta": {},
        "lesions": [{"kind": "nodule", "center_mm": [10.0, 12.0], "size_mm": 8.0, "status": "placed",
                     "blend": {"mode": "alpha"}, "assets": {"mask": "fedcba9876543210fedcba9876543210"},
                     "id": "L0001", "label": 1}],
    }


def _paths(data, prefix=()):
    yield prefix
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _paths(value, (*prefix, i))


@FUZZ
@given(choice=st.integers(0, 10**6), value=json_values, drop=st.booleans())
def test_scene_schema_accepts_or_refuses_in_one_line(scene_data, choice, value, drop):
    data = json.loads(json.dumps(scene_data))
    paths = [p for p in _paths(data) if p]
    path = paths[choice % len(paths)]
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    if drop and isinstance(parent, dict):
        parent.pop(path[-1])
    else:
        parent[path[-1]] = value
    try:
        validate_scene_data(data)
    except SynthsegError as exc:
        _one_line(exc)
        return
    # what passes is usable: finite numbers within the bounds the renderer relies on
    for lesion in data.get("lesions", []):
        assert all(np.isfinite(v) and abs(v) <= 1e5 for v in lesion.get("center_mm", []))
        assert 0 <= lesion.get("size_mm", 0) <= 1000


@FUZZ
@given(header=json_values, meta=st.dictionaries(st.sampled_from(["format", "format_version", "architecture",
                                                                  "config", "provenance", "x"]),
                                                json_values | st.text(max_size=30), max_size=5),
       tail=st.binary(max_size=64), lie=st.integers(-5, 5))
def test_model_header_reader_returns_or_refuses(tmp_path, header, meta, tail, lie):
    if isinstance(header, dict):
        header = {**header, "__metadata__": meta}
    raw = json.dumps(header).encode()
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", max(0, len(raw) + lie)) + raw + tail)
    try:
        info = read_model_info(path)
    except SynthsegError as exc:
        _one_line(exc)
        return
    assert isinstance(info["config"], dict) and isinstance(info["provenance"], dict)


@FUZZ
@given(data=json_values, rule=st.dictionaries(st.sampled_from(["name", "when", "status", "reason"]), json_values,
                                              max_size=4),
       metrics=st.dictionaries(st.sampled_from(["cnr", "range_ok", "gradient_ratio", "equivalent_diameter_mm"]),
                               json_values, max_size=4))
def test_rules_parse_or_refuse_and_decisions_never_crash(data, rule, metrics):
    candidates = [data, {"rules": [rule]}, {"rules": [rule], "default": data}]
    for candidate in candidates:
        try:
            rules = parse_rules(candidate, source="fuzz.yaml")
        except SynthsegError as exc:
            _one_line(exc)
            continue
        status, _by, _reason = rules.decide(metrics)
        assert status in (None, "accepted", "rejected", "flagged")


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.sampled_from(["--at", "--spacing", "--force", "--"]) | st.text(alphabet="-0123456789.,e ab", max_size=12), max_size=8))
def test_negative_value_joining_keeps_every_token(argv):
    from napari_synthseg.cli._common import join_negative_values

    joined = join_negative_values(argv, {"--at", "--spacing"})
    assert "".join(joined).replace("=", "") == "".join(argv)
