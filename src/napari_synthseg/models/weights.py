"""Save and load models as safetensors with their config and provenance.

The file header carries ``format`` (always ``napari-synthseg``), ``format_version``,
``architecture`` (a registered name), ``config`` (JSON) and ``provenance`` (JSON: data hashes,
steps, time, metrics...). Loading checks all of these before building the module, and refuses
anything that is not a safetensors file (a pickle, a zip ``.pt``, a truncated file) without ever
unpickling it.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import SynthsegError
from ..utils.atomic import atomic_path
from .config import config_from_dict, config_to_dict

FORMAT_NAME = "napari-synthseg"
FORMAT_VERSION = 1

# architecture name -> (module class, config class)
_REGISTRY: dict[str, tuple[type[torch.nn.Module], type]] = {}


def register_architecture(name: str, config_cls: type) -> Callable[[type], type]:
    """Class decorator: make a ``torch.nn.Module`` loadable by name.

    The module's ``__init__`` must take its config dataclass as the only argument.
    """

    def decorate(module_cls: type) -> type:
        if name in _REGISTRY and _REGISTRY[name][0] is not module_cls:
            raise RuntimeError(f"architecture {name!r} registered twice")
        _REGISTRY[name] = (module_cls, config_cls)
        module_cls.architecture = name
        return module_cls

    return decorate


@dataclass
class LoadedModel:
    """What :func:`load_model` returns."""

    module: torch.nn.Module
    config: Any
    architecture: str
    provenance: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""


def _header(path: Path) -> dict[str, Any]:
    """Read and sanity-check the safetensors JSON header without touching tensors."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(9)
            if len(head) < 9:
                raise SynthsegError(f"{path.name} is not a model file (too short)")
            (n,) = struct.unpack("<Q", head[:8])
            # A safetensors file is its header length (u64, little endian) and then a JSON
            # object. Only when that does not fit is the file checked for a pickle's or a zip's
            # signature: a header length of 128 + 256k bytes also starts with 0x80.
            if not (head[8:9] == b"{" and 0 < n <= min(size - 8, 100_000_000)):
                if head[:2] == b"PK":
                    raise SynthsegError(
                        f"{path.name} is a zip/pickle checkpoint (torch.save); only safetensors "
                        "files are loaded, because pickles can run arbitrary code"
                    )
                if head[:1] == b"\x80":
                    raise SynthsegError(
                        f"{path.name} is a pickle; only safetensors files are loaded, because "
                        "pickles can run arbitrary code"
                    )
                raise SynthsegError(f"{path.name} is not a safetensors file (bad header length)")
            raw = head[8:] + fh.read(n - 1)
        header = json.loads(raw)
    except FileNotFoundError:
        raise SynthsegError(f"model file not found: {path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SynthsegError(f"{path.name} is not a safetensors file (unreadable header)") from None
    return header


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_model(
    module: torch.nn.Module,
    config: Any,
    path: str | os.PathLike,
    provenance: dict[str, Any] | None = None,
    extra_tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``module``'s weights with its config and provenance, atomically.

    ``extra_tensors`` are stored under the ``extra/`` prefix (e.g. fixed noise maps, optimiser-free
    state a model needs at inference).
    """
    architecture = getattr(module, "architecture", None)
    if architecture not in _REGISTRY:
        raise RuntimeError(f"{type(module).__name__} is not a registered architecture")
    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    for key, value in (extra_tensors or {}).items():
        tensors[f"extra/{key}"] = value.detach().to("cpu").contiguous()
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "architecture": architecture,
        "config": json.dumps(config_to_dict(config)),
        "provenance": json.dumps(provenance or {}, default=str),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_model_info(path: str | os.PathLike) -> dict[str, Any]:
    """Header information of a saved model: architecture, config dict, provenance."""
    path = Path(path)
    meta = _header(path).get("__metadata__") or {}
    if meta.get("format") != FORMAT_NAME:
        raise SynthsegError(
            f"{path.name} is a safetensors file but not a napari-synthseg model (no format tag)"
        )
    if int(meta.get("format_version", "0")) > FORMAT_VERSION:
        raise SynthsegError(
            f"{path.name} was written by a newer napari-synthseg (format "
            f"{meta.get('format_version')}); update the plugin"
        )
    return {
        "architecture": meta.get("architecture", ""),
        "config": json.loads(meta.get("config", "{}")),
        "provenance": json.loads(meta.get("provenance", "{}")),
    }


def load_model(
    path: str | os.PathLike,
    expected: str | tuple[str, ...] | None = None,
    device: torch.device | str | None = "cpu",
) -> LoadedModel:
    """Load a model saved by :func:`save_model`.

    Parameters
    ----------
    expected : str or tuple of str, optional
        Architecture name(s) the caller can use; anything else is refused with a clear message.
    """
    path = Path(path)
    info = read_model_info(path)
    architecture = info["architecture"]
    if expected is not None:
        allowed = (expected,) if isinstance(expected, str) else tuple(expected)
        if architecture not in allowed:
            raise SynthsegError(
                f"{path.name} holds a {architecture!r} model, but a {' or '.join(allowed)} "
                "model is needed here"
            )
    if architecture not in _REGISTRY:
        raise SynthsegError(f"{path.name} holds an unknown architecture {architecture!r}")
    module_cls, config_cls = _REGISTRY[architecture]
    config = config_from_dict(config_cls, info["config"])
    module = module_cls(config)
    state = {}
    with safe_open(str(path), framework="pt", device="cpu") as fh:
        for key in fh.keys():
            if not key.startswith("extra/"):
                state[key] = fh.get_tensor(key)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "shape mismatch"
        raise SynthsegError(
            f"{path.name} does not match its {architecture} config ({first})"
        ) from None
    if device is not None:
        module = module.to(device)
    module.eval()
    return LoadedModel(
        module=module,
        config=config,
        architecture=architecture,
        provenance=info["provenance"],
        sha256=file_sha256(path),
    )


def load_extra_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors saved with ``extra_tensors=`` in :func:`save_model`."""
    out = {}
    with safe_open(str(path), framework="pt", device="cpu") as fh:
        for key in fh.keys():
            if key.startswith("extra/"):
                out[key[len("extra/"):]] = fh.get_tensor(key)
    return out
