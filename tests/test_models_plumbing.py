"""Device choice, config dataclasses and safetensors weights."""

from __future__ import annotations

import dataclasses
import pickle
import zipfile

import pytest
import torch

from napari_synthseg.errors import SynthsegError
from napari_synthseg.models import (
    config_from_dict,
    config_to_dict,
    load_extra_tensors,
    load_model,
    read_model_info,
    register_architecture,
    save_model,
    select_device,
)


@dataclasses.dataclass
class TinyConfig:
    channels: int = 4
    kernel: tuple = (3, 3)


@register_architecture("test-tiny", TinyConfig)
class Tiny(torch.nn.Module):
    def __init__(self, config: TinyConfig):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, config.channels, config.kernel)


def test_select_device_order_and_override(monkeypatch):
    monkeypatch.delenv("SYNTHSEG_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert select_device().type == expected
    assert select_device("cpu").type == "cpu"
    monkeypatch.setenv("SYNTHSEG_DEVICE", "cpu")
    assert select_device().type == "cpu"
    with pytest.raises(SynthsegError, match="unknown device"):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(SynthsegError, match="CUDA is not available"):
            select_device("cuda")


def test_config_round_trip_and_refusals():
    cfg = TinyConfig(channels=7, kernel=(5, 5))
    back = config_from_dict(TinyConfig, config_to_dict(cfg))
    assert back == cfg and isinstance(back.kernel, tuple)
    with pytest.raises(SynthsegError, match="does not know"):
        config_from_dict(TinyConfig, {"channels": 3, "depth": 2})


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = Tiny(TinyConfig(channels=6))
    path = save_model(model, TinyConfig(channels=6), tmp_path / "m.safetensors", provenance={"steps": 3},
                      extra_tensors={"noise": torch.ones(2, 2)})
    loaded = load_model(path, expected="test-tiny")
    assert loaded.config == TinyConfig(channels=6)
    assert loaded.provenance == {"steps": 3}
    assert len(loaded.sha256) == 64
    for a, b in zip(model.state_dict().values(), loaded.module.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(load_extra_tensors(path)["noise"], torch.ones(2, 2))
    assert read_model_info(path)["architecture"] == "test-tiny"


def test_wrong_architecture_refused(tmp_path):
    path = save_model(Tiny(TinyConfig()), TinyConfig(), tmp_path / "m.safetensors")
    with pytest.raises(SynthsegError, match="'test-tiny' model, but a inpainter model is needed"):
        load_model(path, expected="inpainter")


def test_pickles_are_never_loaded(tmp_path):
    pt = tmp_path / "model.pt"
    torch.save(Tiny(TinyConfig()).state_dict(), pt)
    assert zipfile.is_zipfile(pt)
    with pytest.raises(SynthsegError, match="pickle"):
        load_model(pt)
    raw = tmp_path / "model.pkl"
    raw.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(SynthsegError, match="pickle"):
        load_model(raw)


def test_header_length_starting_with_a_pickle_byte_loads(tmp_path):
    """A header of 128 + 256k bytes begins with 0x80, a pickle's first byte: still a model."""
    import struct

    found = None
    for pad in range(300):
        path = save_model(Tiny(TinyConfig()), TinyConfig(), tmp_path / f"m{pad}.safetensors",
                          provenance={"note": "x" * pad})
        (n,) = struct.unpack("<Q", path.read_bytes()[:8])
        if n % 256 == 128:
            found = path
            break
        path.unlink()
    assert found is not None and found.read_bytes()[:1] == b"\x80"
    assert load_model(found, expected="test-tiny").provenance["note"].startswith("x")


def test_foreign_or_truncated_safetensors_refused(tmp_path):
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(SynthsegError, match="not a napari-synthseg model"):
        load_model(foreign)
    good = save_model(Tiny(TinyConfig()), TinyConfig(), tmp_path / "m.safetensors")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:20])
    with pytest.raises(SynthsegError):
        load_model(cut)


def test_mismatched_weights_refused(tmp_path):
    path = save_model(Tiny(TinyConfig(channels=4)), TinyConfig(channels=4), tmp_path / "m.safetensors")
    # Rewrite the header's config so the weights no longer fit it.
    from safetensors.torch import load_file, save_file

    from napari_synthseg.models.weights import _header

    meta = _header(path)["__metadata__"]
    meta["config"] = '{"channels": 9, "kernel": [3, 3]}'
    save_file(load_file(str(path)), str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(SynthsegError, match="does not match"):
        load_model(tmp_path / "bad.safetensors")
