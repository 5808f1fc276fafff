import os

import pytest

from napari_synthseg.errors import SynthsegError
from napari_synthseg.utils.atomic import atomic_directory, atomic_path, atomic_write_text


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_atomic_directory(tmp_path):
    target = tmp_path / "dataset"
    with atomic_directory(target) as tmp:
        (tmp / "x").write_text("1")
        assert not target.exists()
    assert (target / "x").read_text() == "1"
    with pytest.raises(SynthsegError, match="already exists"):
        with atomic_directory(target):
            pass
    with pytest.raises(RuntimeError):
        with atomic_directory(target, overwrite=True) as tmp:
            (tmp / "y").write_text("2")
            raise RuntimeError("interrupted")
    assert sorted(os.listdir(target)) == ["x"]
    assert sorted(os.listdir(tmp_path)) == ["dataset"]
    with atomic_directory(target, overwrite=True) as tmp:
        (tmp / "y").write_text("2")
    assert sorted(os.listdir(target)) == ["y"]
